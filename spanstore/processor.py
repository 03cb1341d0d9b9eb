"""Getting spans into a store: a span processor, a span exporter and a one-line ``install()``.

Three ways in, from most direct to most hands-off:

* :class:`FileBasedSpanProcessor`, an SDK ``SpanProcessor``: ``provider.add_span_processor(FileBasedSpanProcessor())``.
  The cheapest: ``on_end`` only appends the SDK span to the store's inbox (a ``deque.append``); conversion and
  indexing happen on the store's writer thread or at the next query, whichever comes first, and the disk write
  happens in batches on the writer thread. A query right after ``span.end()`` sees the span.
* :class:`SpanStoreExporter`, an SDK ``SpanExporter``, for ``OTEL_TRACES_EXPORTER=spanstore`` with
  ``opentelemetry-instrument``: configured from ``SPANSTORE_*`` environment variables; the SDK's
  ``BatchSpanProcessor`` calls it on its own thread, so spans reach the store a batch delay later.
* :func:`install`: attach a :class:`FileBasedSpanProcessor` to the global tracer provider (creating an SDK provider
  when there is none), for local development in one line.

Environment variables (read by :class:`SpanStoreExporter`, and by :class:`FileBasedSpanProcessor` and
:func:`install` for the path when none is given; an explicit argument always wins):

=================================== ============================================================ ==============
variable                            meaning                                                      default
=================================== ============================================================ ==============
``SPANSTORE_PATH``                  the store directory                                          ``.spanstore``
``SPANSTORE_FSYNC``                 ``never``, ``interval`` or ``always`` (see ``SpanLog``)      ``interval``
``SPANSTORE_MAX_SPANS``             spans held in memory (oldest trace evicted first)            1000000
``SPANSTORE_MAX_BYTES``             estimated memory budget for the spans, in bytes              192 MiB
``SPANSTORE_MAX_SPANS_PER_TRACE``   spans of one trace beyond this are dropped                   10000
``SPANSTORE_DISK_MAX_BYTES``        disk budget of the log (oldest segments deleted first)       1 GiB
``SPANSTORE_FLUSH_INTERVAL_SECONDS`` how often the writer thread appends to the log              0.5
``SPANSTORE_MAX_QUEUE``             spans waiting for the disk before the oldest are dropped     100000
=================================== ============================================================ ==============
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spanstore.model import from_readable_span
from spanstore.store import SpanStore
from spanstore.writer import RateLimitedLog

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span

__all__ = ["DEFAULT_PATH", "ENV_OPTIONS", "FileBasedSpanProcessor", "SpanStoreExporter", "install", "options_from_env"]

logger = logging.getLogger(__name__)

#: The store directory when neither an argument nor ``SPANSTORE_PATH`` names one (relative to the working directory).
DEFAULT_PATH = ".spanstore"

#: ``SPANSTORE_*`` environment variable -> (``SpanStore`` option, parser). ``SPANSTORE_PATH`` is handled apart.
ENV_OPTIONS: Mapping[str, tuple[str, type]] = {
    "SPANSTORE_FSYNC": ("fsync", str),
    "SPANSTORE_MAX_SPANS": ("max_spans", int),
    "SPANSTORE_MAX_BYTES": ("max_bytes", int),
    "SPANSTORE_MAX_SPANS_PER_TRACE": ("max_spans_per_trace", int),
    "SPANSTORE_DISK_MAX_BYTES": ("disk_max_bytes", int),
    "SPANSTORE_FLUSH_INTERVAL_SECONDS": ("flush_interval_seconds", float),
    "SPANSTORE_MAX_QUEUE": ("max_queue", int),
}

_FSYNC_POLICIES = ("never", "interval", "always")


def _path_from_env() -> str:
    return os.environ.get("SPANSTORE_PATH") or DEFAULT_PATH


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``SpanStore`` options set by ``SPANSTORE_*`` environment variables (see the module docstring).

    Unset or empty variables are left out. Raises ``ValueError`` naming the variable for a value that does not parse.

    >>> options_from_env({"SPANSTORE_MAX_SPANS": "1000", "SPANSTORE_FSYNC": "never", "SPANSTORE_MAX_QUEUE": ""})
    {'fsync': 'never', 'max_spans': 1000}
    >>> options_from_env({"SPANSTORE_MAX_SPANS": "many"})
    Traceback (most recent call last):
    ...
    ValueError: SPANSTORE_MAX_SPANS must be an integer, got 'many'
    """
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for variable, (option, parse) in ENV_OPTIONS.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        if parse is str:
            value: Any = raw.lower()
            if value not in _FSYNC_POLICIES:
                raise ValueError(f"{variable} must be one of {', '.join(_FSYNC_POLICIES)}, got {raw!r}")
        else:
            try:
                value = parse(raw.replace("_", ""))
            except ValueError:
                kind = "an integer" if parse is int else "a number"
                raise ValueError(f"{variable} must be {kind}, got {raw!r}") from None
        options[option] = value
    return options


def _flush(store: SpanStore, timeout_millis: float) -> bool:
    """The SDK's force_flush contract: True when done, False on timeout or failure, never an exception."""
    try:
        return store.flush(timeout_millis / 1000)
    except Exception:
        logger.exception("spanstore: force_flush of %r failed", store)
        return False


#: SpanStore options that only a store with a log on disk takes.
_DISK_OPTIONS = frozenset({"fsync", "disk_max_bytes", "flush_interval_seconds", "max_batch", "max_queue"})


def _open_or_fall_back(path: str | os.PathLike[str], options: dict[str, Any], who: str) -> SpanStore:
    """``SpanStore(path, **options)``; when the directory cannot be used (read-only disk, not a store, no
    permission), a memory-only store and one warning: a span processor must never raise into the application."""
    try:
        return SpanStore(path, **options)
    except OSError as exc:  # StorageError, NotAStoreError and LockTimeoutError are OSErrors
        logger.warning(
            "spanstore: %s cannot use the store directory %s (%s); keeping spans in memory only, nothing is written "
            "to disk by this process",
            who,
            os.fspath(path),
            exc,
        )
        return SpanStore(**{key: value for key, value in options.items() if key not in _DISK_OPTIONS})


def _release(store: SpanStore, *, owned: bool) -> None:
    """At shutdown: close a store we created, flush one we were given (its owner closes it); never raise."""
    try:
        if owned:
            store.close()
        else:
            store.flush(30.0)
    except Exception:
        logger.exception("spanstore: shutdown of %r failed", store)


class FileBasedSpanProcessor(SpanProcessor):
    """An SDK span processor that keeps every sampled span in a :class:`~spanstore.SpanStore` and its log on disk.

    ``store_or_path`` is a ``SpanStore`` (used as is; :meth:`shutdown` flushes it but leaves it open), or a
    directory path, or None for ``SPANSTORE_PATH`` / ``.spanstore``: then the processor creates
    ``SpanStore(path, **store_options)`` (``fsync``, ``max_spans``, ``flush_interval_seconds``, ``max_queue``, ...)
    and closes it on :meth:`shutdown`. The store is :attr:`store`. A directory it cannot use (a read-only disk, a
    directory that is not a store, no permission) never raises into the application: the processor logs one warning
    and keeps spans in memory only.

    Cost and concurrency: ``on_end`` runs on the thread that ends the span; it checks the sampled flag and appends the
    SDK span to the store's inbox (O(1), no lock, no disk), never raises and never blocks. Conversion, indexing and
    the disk write happen on the store's writer thread, or at the next query (which drains the inbox first, so a
    query right after ``span.end()`` sees the span). :meth:`force_flush` waits for the disk. Thread-safe. After
    ``os.fork()`` the child keeps working: its writer thread restarts with its first span.

    >>> import tempfile
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from spanstore.query import query_spans
    >>> provider = TracerProvider()
    >>> processor = FileBasedSpanProcessor(tempfile.mkdtemp())
    >>> provider.add_span_processor(processor)
    >>> with provider.get_tracer("doc").start_as_current_span("checkout", attributes={"cart.items": 3}):
    ...     pass
    >>> [(span.name, span.attributes["cart.items"]) for span in query_spans(processor.store)]
    [('checkout', 3)]
    >>> processor.force_flush(), processor.store.stats().writer["written_spans"]
    (True, 1)
    >>> provider.shutdown()
    """

    def __init__(self, store_or_path: SpanStore | str | os.PathLike[str] | None = None, **store_options: Any) -> None:
        if isinstance(store_or_path, SpanStore):
            if store_options:
                raise ValueError(
                    f"store options apply only when the processor creates the store; got a SpanStore and "
                    f"{', '.join(sorted(store_options))}"
                )
            self.store = store_or_path
            self._owns_store = False
        elif store_or_path is None or isinstance(store_or_path, (str, os.PathLike)):
            where = _path_from_env() if store_or_path is None else store_or_path
            self.store = _open_or_fall_back(where, store_options, "FileBasedSpanProcessor")
            self._owns_store = True
        else:
            raise TypeError(f"store_or_path must be a SpanStore, a path or None, got {type(store_or_path).__name__}")
        self._submit = self.store.submit  # bound once: on_end is the hot path
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._warned_after_shutdown = False
        self._errors = 0
        self._limit = RateLimitedLog(logger)

    def __repr__(self) -> str:
        return f"<FileBasedSpanProcessor {self.store!r}{' shut down' if self._shutdown else ''}>"

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Hand a finished span to the store. O(1); never raises, never blocks on disk.

        Unsampled spans are skipped (as the SDK's processors do); after :meth:`shutdown` spans are ignored, with one
        warning.
        """
        try:
            context = span.context
            if context is None or not context.trace_flags & 1:  # the W3C sampled bit; cheaper than `.sampled`
                return
            if self._shutdown:
                if not self._warned_after_shutdown:
                    self._warned_after_shutdown = True
                    logger.warning("spanstore: FileBasedSpanProcessor is shut down; ignoring span %r", span.name)
                return
            self._submit(span)
        except Exception:
            self._errors += 1
            self._limit.warning(
                "on_end", "spanstore: could not store a span (%d errors so far)", self._errors, exc_info=True
            )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Index every span ended so far and wait until it is on disk; False on timeout or failure. Thread-safe."""
        return _flush(self.store, timeout_millis)

    def shutdown(self) -> None:
        """Flush; close the store when the processor created it. Idempotent (a second call does nothing)."""
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        _release(self.store, owned=self._owns_store)


class SpanStoreExporter(SpanExporter):
    """An SDK span exporter writing to a spanstore directory: ``OTEL_TRACES_EXPORTER=spanstore``.

    Registered under the ``opentelemetry_traces_exporter`` entry point, so ``opentelemetry-instrument`` builds it with
    no arguments and wraps it in a ``BatchSpanProcessor``. It then reads ``SPANSTORE_PATH`` (the directory, default
    ``.spanstore``) and the ``SPANSTORE_*`` variables of :data:`ENV_OPTIONS`:

    * ``SPANSTORE_FSYNC``: ``never`` | ``interval`` (default) | ``always``;
    * ``SPANSTORE_MAX_SPANS``, ``SPANSTORE_MAX_BYTES``, ``SPANSTORE_MAX_SPANS_PER_TRACE``: the memory budgets;
    * ``SPANSTORE_DISK_MAX_BYTES``: the disk budget;
    * ``SPANSTORE_FLUSH_INTERVAL_SECONDS``, ``SPANSTORE_MAX_QUEUE``: the background writer.

    Arguments, when given, win over the environment: ``path``, ``store`` (an existing ``SpanStore``, not closed by
    :meth:`shutdown`), or any ``SpanStore`` option. Unlike :class:`FileBasedSpanProcessor` this converts and indexes
    on the caller's thread (the ``BatchSpanProcessor``'s worker), which is the exporter contract; the disk write still
    happens on the store's writer thread. Thread-safe.

    >>> import tempfile
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> exporter = SpanStoreExporter(tempfile.mkdtemp(), fsync="never")
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
    >>> provider.get_tracer("doc").start_span("job").end()
    >>> [span.name for span in exporter.store.spans()]
    ['job']
    >>> provider.shutdown()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: SpanStore | None = None,
        **store_options: Any,
    ) -> None:
        if store is not None:
            if path is not None or store_options:
                raise ValueError("pass either store= or a path and SpanStore options, not both")
            self.store = store
            self._owns_store = False
        else:
            options = {**options_from_env(), **store_options}
            self.store = _open_or_fall_back(_path_from_env() if path is None else path, options, "SpanStoreExporter")
            self._owns_store = True
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._limit = RateLimitedLog(logger)

    def __repr__(self) -> str:
        return f"<SpanStoreExporter {self.store!r}{' shut down' if self._shutdown else ''}>"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Convert and add a batch of finished spans; O(len(spans)). Never raises: FAILURE on any error."""
        if self._shutdown:
            self._limit.warning("shutdown", "spanstore: SpanStoreExporter is shut down; dropped %d spans", len(spans))
            return SpanExportResult.FAILURE
        try:
            self.store.add_many([from_readable_span(span) for span in spans])
        except Exception:
            self._limit.warning("export", "spanstore: could not export %d spans", len(spans), exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every exported span is on disk; False on timeout or failure."""
        return _flush(self.store, timeout_millis)

    def shutdown(self) -> None:
        """Flush; close the store when the exporter created it. Idempotent."""
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        _release(self.store, owned=self._owns_store)


_installed: dict[str, FileBasedSpanProcessor] = {}
_install_lock = threading.Lock()


def install(
    path: str | os.PathLike[str] | None = DEFAULT_PATH, service_name: str | None = None, **options: Any
) -> SpanStore:
    """Store every span of this process in ``path``: the one line for local development.

    Attaches a :class:`FileBasedSpanProcessor` to the global tracer provider. When the global provider is not an SDK
    ``TracerProvider`` yet (the API's default proxy), creates one, with ``service.name`` = ``service_name`` when given
    (else ``OTEL_SERVICE_NAME`` / the SDK default), and sets it globally. ``path=None`` reads ``SPANSTORE_PATH``.
    ``options`` go to :class:`~spanstore.SpanStore`. The store is flushed and closed at exit.

    Idempotent per directory: a second call with the same path returns the same store and attaches nothing. Raises
    ``RuntimeError`` when the global provider is set to something that is not an SDK ``TracerProvider`` (such as
    ``NoOpTracerProvider``), since its spans could never reach a processor. Thread-safe.

    >>> import spanstore.processor
    >>> callable(spanstore.processor.install)
    True
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    where = _path_from_env() if path is None else path
    key = os.path.abspath(Path(where).expanduser())
    with _install_lock:
        installed = _installed.get(key)
        if installed is not None and not installed._shutdown:
            return installed.store
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            attributes = {"service.name": service_name} if service_name else {}
            trace.set_tracer_provider(TracerProvider(resource=Resource.create(attributes)))
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                raise RuntimeError(
                    "spanstore.install expected the global tracer provider to be an SDK TracerProvider (or unset), "
                    f"got {type(provider).__name__}, which cannot be replaced once set"
                )
        elif service_name is not None:
            current = provider.resource.attributes.get("service.name")
            if current != service_name:
                logger.warning(
                    "spanstore.install: the global TracerProvider already has service.name=%r; "
                    "service_name=%r is ignored",
                    current,
                    service_name,
                )
        processor = FileBasedSpanProcessor(where, **options)
        provider.add_span_processor(processor)
        atexit.register(processor.shutdown)
        _installed[key] = processor
        return processor.store
