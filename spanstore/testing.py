"""Helpers for asserting on spans in tests, usable with or without pytest (the pytest plugin is fixtures over them).

The problem they solve: the OpenTelemetry SDK lets the global tracer provider be set once per process, so a test
suite cannot give each test a fresh provider. Instead, one :class:`SpanRouter` (a span processor) is attached once
to the global SDK provider, and to any provider a test builds; it hands every ended span to the captures active
*at that moment*. A capture is a :class:`CapturedSpans` (a fresh in-memory :class:`~spanstore.SpanStore` plus
assertion helpers) made active for a block of code, such as one test:

>>> from opentelemetry.sdk.trace import TracerProvider
>>> provider = attach(TracerProvider(shutdown_on_exit=False))
>>> tracer = provider.get_tracer("doc")
>>> with CapturedSpans() as spans:
...     with tracer.start_as_current_span("checkout", attributes={"cart.items": 3}):
...         with tracer.start_as_current_span("db.query"):
...             pass
>>> tracer.start_span("after the block: not captured").end()
>>> spans.assert_span(name="db.query", parent="checkout").name
'db.query'
>>> print(spans.tree())
trace 1
└── checkout {cart.items=3}
    └── db.query

Routing is by *trace*: a trace belongs to the captures active when its first span started, and its spans go to
them whichever thread or asyncio task ends them. So a thread or task that test A started and left running, ending
a span of A's trace while test B runs, never lands in B: once every capture that owned the trace has ended, such a
*late* span is dropped and counted (:attr:`SpanRouter.late_spans`), since A's result is already final. A trace that
began while no capture was active (a span opened at import time, or continued from a remote parent before any
capture) is routed by time: its spans go to every capture active when they end. Captures nest: a capture opened
inside a running trace gets that trace's later spans while the trace's owner is still active. Routing state is
per process (each pytest-xdist worker has its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from spanstore.model import AttributeMap, SpanKind, StatusCode, StoredSpan
from spanstore.query import AttributeFilter, SpanQuery, get_trace, query_spans
from spanstore.store import DEFAULT_MAX_SPANS, SpanStore

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span

__all__ = [
    "CRITERIA",
    "UNSTABLE_EVENT_ATTRIBUTES",
    "CapturedSpans",
    "SpanRouter",
    "SpanSink",
    "attach",
    "attach_global",
    "capture_spans",
    "format_tree",
    "router",
]

logger = logging.getLogger(__name__)


class SpanSink(Protocol):
    """Anything a :class:`SpanRouter` can hand ended SDK spans to (a :class:`~spanstore.SpanStore` is one)."""

    def submit(self, span: ReadableSpan) -> None: ...


class SpanRouter(SpanProcessor):
    """A span processor handing every ended, sampled span to each sink active at that moment.

    One router serves a whole process (:func:`router`): attach it once to the global provider and to any provider
    a test builds; make a sink active for the duration of a test with :meth:`activate` / :meth:`deactivate`.

    Cost and concurrency: ``on_end`` runs on the thread that ends the span; it reads the tuple of active sinks (no
    lock) and calls ``submit`` on each (a ``deque`` append for a store). It never raises. ``activate`` and
    ``deactivate`` are thread-safe (copy-on-write under a lock). ``shutdown`` does nothing, on purpose: a provider
    a test built and shut down must not stop the routing every other provider relies on.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from spanstore import SpanStore
    >>> route = SpanRouter()
    >>> provider = TracerProvider(shutdown_on_exit=False)
    >>> route.attach(provider) is provider
    True
    >>> store = SpanStore()
    >>> route.activate(store)
    >>> provider.get_tracer("doc").start_span("job").end()
    >>> route.deactivate(store)
    >>> provider.get_tracer("doc").start_span("ignored").end()
    >>> [span.name for span in store.spans()]
    ['job']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: tuple[SpanSink, ...] = ()
        self._providers: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
        self._errors = 0
        # trace id -> the sinks active when its first span started (a trace that began under a capture); an
        # empty tuple once they have all ended: then the trace's spans are late. Bounded: the oldest entries go.
        self._owners: dict[int, tuple[SpanSink, ...]] = {}
        self._owned: dict[int, list[int]] = {}  # id(sink) -> the trace ids it owns, to release them on deactivate
        #: Spans dropped because they ended after every capture that owned their trace had ended.
        self.late_spans = 0

    def __repr__(self) -> str:
        return f"<SpanRouter sinks={len(self._sinks)} providers={len(self._providers)}>"

    def attach(self, provider: TracerProvider) -> TracerProvider:
        """Add this router to an SDK ``TracerProvider`` (once: attaching again does nothing) and return the provider.

        Raises ``TypeError`` for anything that is not an SDK ``TracerProvider`` (its spans could never reach a
        processor). Thread-safe.
        """
        if not isinstance(provider, TracerProvider):
            raise TypeError(
                "expected an opentelemetry.sdk.trace.TracerProvider to attach the span router to, "
                f"got {type(provider).__module__}.{type(provider).__qualname__}"
            )
        with self._lock:
            if provider in self._providers:
                return provider
            self._providers.add(provider)
        provider.add_span_processor(self)
        return provider

    def is_attached(self, provider: object) -> bool:
        """True when :meth:`attach` has added this router to ``provider``."""
        try:
            return provider in self._providers
        except TypeError:  # not weak-referenceable: never attached
            return False

    def activate(self, sink: SpanSink) -> None:
        """Start handing ended spans to ``sink`` (in addition to any other active sink). Thread-safe."""
        with self._lock:
            if not any(active is sink for active in self._sinks):
                self._sinks = (*self._sinks, sink)

    def deactivate(self, sink: SpanSink) -> None:
        """Stop handing spans to ``sink``; spans ending afterwards do not reach it. Thread-safe; idempotent.

        The traces ``sink`` owned lose it as an owner (they keep no reference to it); once a trace has no owner
        left, its spans that still end are late (see the module docstring).
        """
        with self._lock:
            self._sinks = tuple(active for active in self._sinks if active is not sink)
            owners = self._owners
            for trace_id in self._owned.pop(id(sink), ()):
                held = owners.get(trace_id)
                if held is not None:
                    owners[trace_id] = tuple(owner for owner in held if owner is not sink)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Record which captures own a trace that begins now (O(1); nothing when no capture is active)."""
        sinks = self._sinks
        if not sinks:
            return
        try:
            trace_id = span.get_span_context().trace_id
            if trace_id in self._owners:
                return
            with self._lock:
                sinks = self._sinks  # the captures active now, under the lock deactivate takes
                if trace_id in self._owners or not sinks:
                    return
                self._owners[trace_id] = sinks
                for sink in sinks:
                    self._owned.setdefault(id(sink), []).append(trace_id)
                if len(self._owners) > _MAX_TRACKED_TRACES:
                    self._forget_oldest_locked()
        except Exception:
            self._count_error("could not record the trace of span %r", span)

    def _forget_oldest_locked(self) -> None:
        for trace_id in list(self._owners)[: _MAX_TRACKED_TRACES // 10]:
            if not self._owners[trace_id]:  # only ended traces: an active capture keeps its own
                del self._owners[trace_id]

    def on_end(self, span: ReadableSpan) -> None:
        """Hand a finished, sampled span to the captures its trace belongs to. O(active sinks); never raises."""
        sinks = self._sinks
        owners = self._owners
        if not sinks and not owners:
            return
        try:
            context = span.context
            if context is None or not context.trace_flags.sampled:
                return
            owned_by = owners.get(context.trace_id)
            if owned_by is not None and not any(owner is sink for owner in owned_by for sink in sinks):
                self.late_spans += 1  # every capture of its trace has ended: it belongs to none of the others
                return
            for sink in sinks:
                sink.submit(span)
        except Exception:
            self._count_error("could not hand span %r to a capture", span)

    def _count_error(self, what: str, span: object) -> None:
        self._errors += 1
        if self._errors == 1:  # once: a broken sink would otherwise log on every span
            logger.exception("spanstore: the span router %s", what % (getattr(span, "name", span),))

    def shutdown(self) -> None:
        """Do nothing: the router outlives any one provider (see the class docstring)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: spans reach their sink in ``on_end``. Always True."""
        return True


#: Trace ids whose owners the router remembers (about 100 bytes each); beyond this, the oldest ended ones go.
_MAX_TRACKED_TRACES = 100_000

_ROUTER = SpanRouter()


def router() -> SpanRouter:
    """The process's one :class:`SpanRouter`, shared by every capture and by the pytest plugin."""
    return _ROUTER


def attach(provider: TracerProvider) -> TracerProvider:
    """Route the spans of an SDK ``TracerProvider`` you built to the active captures; return the provider.

    Idempotent and thread-safe. See :meth:`SpanRouter.attach`.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> provider = attach(TracerProvider(shutdown_on_exit=False))
    >>> router().is_attached(provider)
    True
    """
    return _ROUTER.attach(provider)


_global_lock = threading.Lock()


def attach_global() -> TracerProvider:
    """Make sure the global tracer provider is an SDK ``TracerProvider`` with the router attached; return it.

    When the global provider is still the API's default proxy, this sets a new SDK ``TracerProvider`` (resource from
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``) globally: tracers already obtained from the proxy, such as a
    module's ``tracer = trace.get_tracer(__name__)``, start delegating to it. When the application already set an SDK
    provider, the router is added to that one, next to its own processors. Idempotent and thread-safe.

    Raises ``RuntimeError`` when the global provider is set to something that is not an SDK ``TracerProvider``
    (such as ``NoOpTracerProvider``): its spans could never be captured, and the SDK forbids replacing it.
    """
    from opentelemetry import trace

    with _global_lock:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider) and isinstance(provider, trace.ProxyTracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            raise RuntimeError(
                "spanstore expected the global tracer provider to be an SDK TracerProvider (or unset), got "
                f"{type(provider).__module__}.{type(provider).__qualname__}, which cannot be replaced once set; "
                "capture spans from a provider you build instead (CapturedSpans.attach(provider))"
            )
        return _ROUTER.attach(provider)


@contextlib.contextmanager
def capture_spans(*, global_provider: bool = True) -> Iterator[CapturedSpans]:
    """Capture every span ended inside the ``with`` block into a fresh :class:`CapturedSpans`.

    ``global_provider=True`` first calls :func:`attach_global`, so code using ``trace.get_tracer(...)`` is
    captured; spans of a provider you build are captured once you :func:`attach` it. Spans ended on other threads
    while the block runs are captured too. Captures nest: a span reaches every capture active when it ends.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> provider = attach(TracerProvider(shutdown_on_exit=False))
    >>> with capture_spans(global_provider=False) as spans:  # the default also captures trace.get_tracer(...)
    ...     provider.get_tracer("doc").start_span("work").end()
    >>> [span.name for span in spans]
    ['work']
    """
    if global_provider:
        attach_global()
    with CapturedSpans() as captured:
        yield captured


class _Check(NamedTuple):
    """One criterion of a span search: how to test a span, and how to explain a mismatch."""

    label: str
    expected: str
    test: Callable[[StoredSpan], bool]
    actual: Callable[[StoredSpan], str]


_ANY: Any = object()  # "not given" for ``parent``, where None means "a root span"

#: The criteria :meth:`CapturedSpans.find` and friends accept (besides ``name``).
CRITERIA = ("kind", "status", "status_message", "attributes", "parent", "service", "error_type", "trace_id")

#: How many non-matching spans an assertion failure explains.
_CLOSEST_SHOWN = 5


class CapturedSpans:
    """Spans captured for a test: a fresh in-memory :class:`~spanstore.SpanStore` plus assertions and a text dump.

    Use it as a context manager (or through :func:`capture_spans` / the pytest fixture ``spans``): every span
    ended, on any thread, while it is active lands in :attr:`store`. Search with :meth:`find` / :meth:`one` /
    :meth:`assert_span` by name and attributes, never by position (under pytest-xdist or threads the order of
    spans is not yours to rely on); dump with :meth:`tree` for snapshot tests.

    ``store`` defaults to a fresh in-memory ``SpanStore`` holding up to ``DEFAULT_MAX_SPANS`` spans, any number of
    them in one trace (beyond that the oldest traces are evicted, as :meth:`SpanStore.stats` counts).

    Iteration and :meth:`find` give spans by start time, oldest first. Thread-safe (the store is); the assertion
    helpers read a snapshot, so spans still ending on other threads never corrupt a result.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> tracer = attach(TracerProvider(shutdown_on_exit=False)).get_tracer("doc")
    >>> with CapturedSpans() as spans:
    ...     tracer.start_span("a").end()
    >>> len(spans), [span.name for span in spans]
    (1, ['a'])
    """

    def __init__(self, store: SpanStore | None = None) -> None:
        # One trace may fill the whole store: a test looping over an instrumented call must not lose spans to the
        # per-trace cap that protects long-running applications.
        self.store = store if store is not None else SpanStore(max_spans_per_trace=DEFAULT_MAX_SPANS)

    def __repr__(self) -> str:
        stats = self.store.stats()
        return f"<CapturedSpans spans={stats.span_count} traces={stats.trace_count}>"

    # --- capturing ----------------------------------------------------------------------------------------------
    def __enter__(self) -> CapturedSpans:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start capturing: spans ended from now on, on any thread, reach :attr:`store`. Idempotent."""
        _ROUTER.activate(self.store)

    def stop(self) -> None:
        """Stop capturing; what was captured stays readable. Idempotent."""
        _ROUTER.deactivate(self.store)

    def attach(self, provider: TracerProvider) -> TracerProvider:
        """Capture the spans of a ``TracerProvider`` you built (see :func:`attach`); return the provider."""
        return attach(provider)

    def clear(self) -> None:
        """Forget every span captured so far (capturing goes on). Thread-safe."""
        self.store.clear()

    # --- reading ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[StoredSpan]:
        """The captured spans by start time, oldest first (a snapshot)."""
        return iter(self.store.spans())

    def query(self, query: SpanQuery | None = None, **criteria: Any) -> list[StoredSpan]:
        """:func:`~spanstore.query_spans` on the captured spans: every ``SpanQuery`` criterion, newest first."""
        return query_spans(self.store, query, **criteria)

    def get_trace(self, trace_id: str) -> list[StoredSpan]:
        """Every captured span of one trace, oldest first (see :func:`~spanstore.get_trace`)."""
        return get_trace(self.store, trace_id)

    def find(self, name: str | None = None, **criteria: Any) -> list[StoredSpan]:
        """The captured spans meeting every criterion given, oldest first. O(captured spans).

        Criteria: ``name``; ``kind`` and ``status`` (enum, name such as ``"ERROR"``, or OTLP number);
        ``status_message``; ``attributes`` (``{key: value}`` equality, typed as in queries, or
        :class:`~spanstore.AttributeFilter` objects / ``(key, op, value)`` tuples); ``parent`` (the parent's name,
        or a :class:`~spanstore.StoredSpan`, or ``None`` for a root span); ``service``; ``error_type``; ``trace_id``.
        """
        spans = self.store.spans()
        checks = _build_checks(name, criteria, spans)
        return [span for span in spans if all(check.test(span) for check in checks)]

    def one(self, name: str | None = None, **criteria: Any) -> StoredSpan:
        """The one captured span meeting the criteria (as :meth:`find`); an ``AssertionError`` unless exactly one.

        The error lists the matches, or the closest spans and how each differs.
        """
        __tracebackhide__ = True
        return self.assert_span(name, **criteria)  # type: ignore[return-value]

    def assert_span(self, name: str | None = None, *, count: int | None = None, **criteria: Any) -> Any:
        """Assert that spans meeting the criteria (as :meth:`find`) were captured; return them.

        ``count=None``: exactly one must match; it is returned. ``count=n``: exactly ``n`` must match; the list is
        returned (oldest first; ``count=0`` asserts that none did). On failure the ``AssertionError`` says what was
        expected and lists the spans closest to it, fewest differences first, each with every difference
        (``attributes['http.route']: expected '/cart', got '/pay'``). O(captured spans x criteria).

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> tracer = attach(TracerProvider(shutdown_on_exit=False)).get_tracer("doc")
        >>> with CapturedSpans() as spans:
        ...     tracer.start_span("charge", attributes={"amount": 5}).end()
        >>> spans.assert_span(name="charge", attributes={"amount": 5}).name
        'charge'
        >>> spans.assert_span(name="charge", attributes={"amount": 7})
        Traceback (most recent call last):
        ...
        AssertionError: expected 1 span with name='charge', attributes={'amount': 7}; found none among 1 captured span
        closest:
          'charge' (trace 1, root): 1 difference
            attributes['amount']: expected 7, got 5
        """
        __tracebackhide__ = True
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise TypeError(f"count must be an int >= 0 or None, got {count!r}")
        spans = self.store.spans()
        checks = _build_checks(name, criteria, spans)
        matches = [span for span in spans if all(check.test(span) for check in checks)]
        wanted = 1 if count is None else count
        if len(matches) == wanted:
            return matches[0] if count is None else matches
        raise AssertionError(_explain_failure(name, criteria, wanted, matches, checks, spans))

    def tree(
        self,
        *,
        times: str | None = None,
        sort: str = "time",
        attributes: bool = True,
        events: bool = True,
    ) -> str:
        """The captured spans as a deterministic text tree, for snapshot assertions (see :func:`format_tree`)."""
        return format_tree(self.store.spans(), times=times, sort=sort, attributes=attributes, events=events)


# --- criteria and failure messages ------------------------------------------------------------------------------------
def _build_checks(name: str | None, criteria: Mapping[str, Any], spans: list[StoredSpan]) -> list[_Check]:
    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise TypeError(f"unexpected span criteria {', '.join(unknown)}; expected some of name, {', '.join(CRITERIA)}")
    # SpanQuery validates and normalizes ("error" -> StatusCode.ERROR) with the library's own messages.
    query = SpanQuery(
        name=name,
        kind=criteria.get("kind"),
        status=criteria.get("status"),
        service=criteria.get("service"),
        error_type=criteria.get("error_type"),
        trace_id=criteria.get("trace_id"),
        attributes=criteria.get("attributes"),
    )
    checks: list[_Check] = []
    if query.name is not None:
        checks.append(_Check("name", repr(query.name), lambda s, v=query.name: s.name == v, lambda s: repr(s.name)))
    if query.kind is not None:
        checks.append(_Check("kind", query.kind.name, lambda s, v=query.kind: s.kind == v, lambda s: s.kind.name))
    if query.status is not None:
        checks.append(
            _Check("status", query.status.name, lambda s, v=query.status: s.status_code == v, _describe_status)
        )
    if "status_message" in criteria:
        message = criteria["status_message"]
        if not isinstance(message, str):
            raise TypeError(f"status_message must be a str, got {message!r}")
        checks.append(
            _Check(
                "status_message",
                repr(message),
                lambda s: s.status_message == message,
                lambda s: repr(s.status_message),
            )
        )
    for attribute_filter in query.attributes:
        checks.append(_attribute_check(attribute_filter))
    if "parent" in criteria:
        checks.append(_parent_check(criteria["parent"], spans))
    if query.service is not None:
        checks.append(
            _Check("service", repr(query.service), lambda s, v=query.service: s.service_name == v, _repr_service)
        )
    if query.error_type is not None:
        checks.append(
            _Check(
                "error_type",
                repr(query.error_type),
                lambda s, v=query.error_type: s.error_type == v,
                lambda s: repr(s.error_type),
            )
        )
    if query.trace_id is not None:
        checks.append(
            _Check("trace_id", query.trace_id, lambda s, v=query.trace_id: s.trace_id == v, lambda s: s.trace_id)
        )
    return checks


def _describe_status(span: StoredSpan) -> str:
    if span.status_message:
        return f"{span.status_code.name} ({span.status_message!r})"
    return span.status_code.name


def _repr_service(span: StoredSpan) -> str:
    return repr(span.service_name)


_MISSING = object()


def _attribute_check(attribute_filter: AttributeFilter) -> _Check:
    key, op, value = attribute_filter.key, attribute_filter.op, attribute_filter.value
    resource = attribute_filter.scope == "resource"
    label = f"{'resource.' if resource else ''}attributes[{key!r}]"
    if op == "==":
        expected = repr(value)
    elif op == "exists":
        expected = "present"
    else:
        expected = f"{op} {value!r}"

    def actual(span: StoredSpan) -> str:
        found = (span.resource.attributes if resource else span.attributes).get(key, _MISSING)
        return "missing" if found is _MISSING else repr(found)

    return _Check(label, expected, attribute_filter.matches, actual)


def _parent_check(parent: object, spans: list[StoredSpan]) -> _Check:
    by_id = {(span.trace_id, span.span_id): span for span in spans}

    def actual(span: StoredSpan) -> str:
        if span.parent_span_id is None:
            return "no parent (a root span)"
        found = by_id.get((span.trace_id, span.parent_span_id))
        return repr(found.name) if found is not None else f"a span not captured ({span.parent_span_id})"

    if parent is None:
        return _Check("parent", "no parent (a root span)", lambda s: s.parent_span_id is None, actual)
    if isinstance(parent, StoredSpan):
        return _Check(
            "parent",
            f"{parent.name!r} (span {parent.span_id})",
            lambda s: s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id,
            lambda s: actual(s) if s.parent_span_id is None else f"{actual(s)} (span {s.parent_span_id})",
        )
    if isinstance(parent, str):

        def test(span: StoredSpan) -> bool:
            if span.parent_span_id is None:
                return False
            found = by_id.get((span.trace_id, span.parent_span_id))
            return found is not None and found.name == parent

        return _Check("parent", repr(parent), test, actual)
    raise TypeError(f"parent must be a span name, a StoredSpan or None (a root span), got {parent!r}")


def _trace_ordinals(spans: list[StoredSpan]) -> dict[str, int]:
    """Trace id -> 1, 2, ... in order of each trace's first start time (spans come oldest first)."""
    ordinals: dict[str, int] = {}
    for span in spans:
        if span.trace_id not in ordinals:
            ordinals[span.trace_id] = len(ordinals) + 1
    return ordinals


def _describe_span(span: StoredSpan, ordinals: Mapping[str, int], by_id: Mapping[tuple[str, str], StoredSpan]) -> str:
    if span.parent_span_id is None:
        where = "root"
    else:
        parent = by_id.get((span.trace_id, span.parent_span_id))
        where = f"child of {parent.name!r}" if parent is not None else "parent not captured"
    return f"{span.name!r} (trace {ordinals[span.trace_id]}, {where})"


def _format_given(value: object) -> str:
    if isinstance(value, (SpanKind, StatusCode)):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, StoredSpan):
        return f"<span {value.name!r} {value.span_id}>"
    return repr(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _explain_failure(
    name: str | None,
    criteria: Mapping[str, Any],
    wanted: int,
    matches: list[StoredSpan],
    checks: list[_Check],
    spans: list[StoredSpan],
) -> str:
    given = ([f"name={name!r}"] if name is not None else []) + [
        f"{key}={_format_given(value)}" for key, value in criteria.items()
    ]
    what = f"with {', '.join(given)}" if given else "(any)"
    found = "none" if not matches else str(len(matches))
    lines = [f"expected {_plural(wanted, 'span')} {what}; found {found} among {_plural(len(spans), 'captured span')}"]
    if not spans:
        lines.append(
            "no spans were captured: does the code under test use the global tracer provider, or a provider "
            "passed to spans.attach(provider) (or the tracer_provider fixture)? Spans must end before the assertion."
        )
        return "\n".join(lines)
    ordinals = _trace_ordinals(spans)
    by_id = {(span.trace_id, span.span_id): span for span in spans}
    if matches:
        lines.append("matching:")
        lines.extend(f"  {_describe_span(span, ordinals, by_id)}" for span in matches[:20])
        if len(matches) > 20:
            lines.append(f"  ... and {len(matches) - 20} more")
    if len(matches) < wanted:
        matched = {id(span) for span in matches}
        ranked = []
        for position, span in enumerate(spans):
            if id(span) in matched:
                continue
            failed = [check for check in checks if not check.test(span)]
            ranked.append((len(failed), position, span, failed))
        ranked.sort(key=lambda item: item[:2])
        if ranked:
            lines.append("closest:")
        for misses, _, span, failed in ranked[:_CLOSEST_SHOWN]:
            lines.append(f"  {_describe_span(span, ordinals, by_id)}: {_plural(misses, 'difference')}")
            lines.extend(f"    {check.label}: expected {check.expected}, got {check.actual(span)}" for check in failed)
        if len(ranked) > _CLOSEST_SHOWN:
            lines.append(f"  ... and {len(ranked) - _CLOSEST_SHOWN} more spans, further off")
    return "\n".join(lines)


# --- the text tree ----------------------------------------------------------------------------------------------------
_TIME_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_SORTS = ("time", "name")
#: Event attributes left out of :func:`format_tree`: they differ between machines and runs.
UNSTABLE_EVENT_ATTRIBUTES = frozenset({"exception.stacktrace"})


def _format_value(value: object) -> str:
    if isinstance(value, AttributeMap):
        return "{" + ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(value.items())) + "}"
    return repr(value)


def _format_attributes(attributes: AttributeMap, leave_out: frozenset[str] = frozenset()) -> str:
    pairs = zip(attributes.keys_, attributes.values_, strict=True)
    items = sorted(((key, value) for key, value in pairs if key not in leave_out), key=lambda item: item[0])
    if not items:
        return ""
    return "{" + ", ".join(f"{key}={_format_value(value)}" for key, value in items) + "}"


def format_tree(
    spans: Iterable[StoredSpan],
    *,
    times: str | None = None,
    sort: str = "time",
    attributes: bool = True,
    events: bool = True,
) -> str:
    """Spans as text trees, one per trace, identical from run to run for the same behaviour: for snapshot tests.

    Ids never appear: traces are numbered ``trace 1``, ``trace 2``, ... in order of their first start time, and a
    span sits under its parent (a span whose parent was not captured is a root marked ``(parent not captured)``).
    A line holds the name, the kind unless INTERNAL, the status unless UNSET (with its message), and the
    attributes sorted by key. ``events=True`` adds a ``•`` line per event (attributes sorted;
    ``exception.stacktrace`` left out, as it names files and lines) and per link.

    ``times=None`` (the default) omits times, which differ on every run; ``"ns"``/``"us"``/``"ms"``/``"s"``
    adds ``[+start duration]`` relative to the trace's start, rounded to that unit. ``sort="time"`` orders
    siblings (and traces) by start time, then name; ``sort="name"`` by name, then content, then start time: use it
    when siblings run concurrently and their order varies. O(n log n).

    >>> from spanstore.model import SpanKind, StatusCode, StoredSpan
    >>> trace = "ab" * 16
    >>> spans = [
    ...     StoredSpan(trace_id=trace, span_id="1" * 16, name="GET /cart", kind=SpanKind.SERVER,
    ...                start_time_unix_nano=1_000_000, end_time_unix_nano=9_000_000),
    ...     StoredSpan(trace_id=trace, span_id="2" * 16, parent_span_id="1" * 16, name="db.query",
    ...                start_time_unix_nano=2_000_000, end_time_unix_nano=5_000_000,
    ...                status_code=StatusCode.ERROR, status_message="timeout")]
    >>> print(format_tree(spans, times="ms"))
    trace 1
    └── GET /cart [SERVER] [+0ms 8ms]
        └── db.query ERROR 'timeout' [+1ms 3ms]
    """
    if times is not None and times not in _TIME_UNITS:
        raise ValueError(f"times must be None or one of {', '.join(_TIME_UNITS)}, got {times!r}")
    if sort not in _SORTS:
        raise ValueError(f"sort must be 'time' or 'name', got {sort!r}")
    grouped: dict[str, list[StoredSpan]] = {}
    for span in spans:
        grouped.setdefault(span.trace_id, []).append(span)
    views = sorted(
        (_TraceView(trace_spans, times=times, sort=sort, attributes=attributes) for trace_spans in grouped.values()),
        key=lambda view: view.sort_key,
    )
    ordinals = {view.trace_id: position for position, view in enumerate(views, 1)}
    names = {(span.trace_id, span.span_id): span.name for view in views for span in view.spans}
    lines: list[str] = []
    for position, view in enumerate(views, 1):
        lines.append(f"trace {position}")
        view.render(lines, events=events, ordinals=ordinals, names=names)
    return "\n".join(lines)


class _TraceView:
    """One trace laid out for :func:`format_tree`: parents, children in display order, a label per span.

    Siblings are ordered by a key that ends in a digest of the sibling's whole rendered subtree, so two siblings
    compare equal only when they render identically: the output never depends on the order spans came in.
    """

    def __init__(self, spans: list[StoredSpan], *, times: str | None, sort: str, attributes: bool) -> None:
        self.spans = spans
        self.trace_id = spans[0].trace_id
        self.start = min(span.start_time_unix_nano for span in spans)
        self.times = times
        self.unit = _TIME_UNITS[times] if times is not None else 0
        self.sort = sort
        self.attributes = attributes
        by_id: dict[str, StoredSpan] = {}
        for span in sorted(spans, key=_start_then_id):  # a duplicated span id: the first takes the children
            by_id.setdefault(span.span_id, span)
        self.ids = by_id.keys()
        self.children: dict[int, list[StoredSpan]] = {}
        roots = []
        for span in spans:
            parent = by_id.get(span.parent_span_id) if span.parent_span_id is not None else None
            if parent is None:
                roots.append(span)
            else:
                self.children.setdefault(id(parent), []).append(span)
        roots.extend(self._break_cycles(roots))
        self.labels = {id(span): self.label(span) for span in spans}
        self.digests: dict[int, str] = {}
        self._digest_all(roots)
        self.roots = sorted(roots, key=self.key)
        whole = hashlib.sha1(usedforsecurity=False)
        for root in self.roots:
            whole.update(self.digests[id(root)].encode())
        self.sort_key = (*self.key(self.roots[0]), whole.hexdigest())

    def _walk(self, roots: Iterable[StoredSpan]) -> Iterator[StoredSpan]:
        stack = list(roots)
        while stack:
            span = stack.pop()
            yield span
            stack.extend(self.children.get(id(span), ()))

    def _break_cycles(self, roots: list[StoredSpan]) -> list[StoredSpan]:
        """Spans unreachable from a root sit on a parent cycle (only corrupt data has one): cut each cycle."""
        reached = {id(span) for span in self._walk(roots)}
        cut: list[StoredSpan] = []
        while len(reached) < len(self.spans):
            span = min((s for s in self.spans if id(s) not in reached), key=_start_then_id)
            for kids in self.children.values():
                if any(kid is span for kid in kids):
                    kids[:] = [kid for kid in kids if kid is not span]
            cut.append(span)
            reached.update(id(s) for s in self._walk([span]))
        return cut

    def _digest_all(self, roots: list[StoredSpan]) -> None:
        order = list(self._walk(roots))
        for span in reversed(order):  # children before parents
            digest = hashlib.sha1(self.labels[id(span)].encode(), usedforsecurity=False)
            for line in self._detail_lines(span, ordinals=None, names=None):
                digest.update(line.encode())
            for kid_digest in sorted(self.digests[id(kid)] for kid in self.children.get(id(span), ())):
                digest.update(kid_digest.encode())
            self.digests[id(span)] = digest.hexdigest()

    def label(self, span: StoredSpan) -> str:
        parts = [span.name]
        if span.kind != SpanKind.INTERNAL:
            parts.append(f"[{span.kind.name}]")
        if span.status_code != StatusCode.UNSET:
            parts.append(span.status_code.name)
            if span.status_message:
                parts.append(repr(span.status_message))
        if self.unit:
            offset = round((span.start_time_unix_nano - self.start) / self.unit)
            parts.append(f"[+{offset}{self.times} {round(span.duration_ns / self.unit)}{self.times}]")
        if self.attributes:
            text = _format_attributes(span.attributes)
            if text:
                parts.append(text)
        if span.parent_span_id is not None and span.parent_span_id not in self.ids:
            parts.append("(parent not captured)")
        return " ".join(parts)

    def key(self, span: StoredSpan) -> tuple[Any, ...]:
        if self.sort == "name":
            return (span.name, self.labels[id(span)], self.digests[id(span)])
        return (span.start_time_unix_nano, span.name, self.labels[id(span)], self.digests[id(span)])

    def _detail_lines(
        self,
        span: StoredSpan,
        *,
        ordinals: Mapping[str, int] | None,
        names: Mapping[tuple[str, str], str] | None,
    ) -> Iterator[str]:
        """The event and link lines of a span (links name their trace by ordinal once ``ordinals`` are known)."""
        for event in span.events:
            text = _format_attributes(event.attributes, UNSTABLE_EVENT_ATTRIBUTES) if self.attributes else ""
            yield f"• {event.name}{' ' + text if text else ''}"
        for link in span.links:
            if names is None or ordinals is None:
                yield f"• link {link.trace_id == self.trace_id}"
                continue
            target = names.get((link.trace_id, link.span_id))
            if target is None:
                yield "• link to a span not captured"
            else:
                yield f"• link to trace {ordinals[link.trace_id]} {target!r}"

    def render(
        self,
        lines: list[str],
        *,
        events: bool,
        ordinals: Mapping[str, int],
        names: Mapping[tuple[str, str], str],
    ) -> None:
        # An explicit stack, not recursion: a deep trace must not hit the recursion limit.
        stack = [(root, "", index == len(self.roots) - 1) for index, root in enumerate(self.roots)]
        stack.reverse()
        while stack:
            span, prefix, last = stack.pop()
            lines.append(f"{prefix}{'└── ' if last else '├── '}{self.labels[id(span)]}")
            inner = prefix + ("    " if last else "│   ")
            kids = sorted(self.children.get(id(span), ()), key=self.key)
            if events:
                gutter = inner + ("│ " if kids else "  ")
                lines.extend(gutter + line for line in self._detail_lines(span, ordinals=ordinals, names=names))
            for index in range(len(kids) - 1, -1, -1):
                stack.append((kids[index], inner, index == len(kids) - 1))


def _start_then_id(span: StoredSpan) -> tuple[int, str]:
    return (span.start_time_unix_nano, span.span_id)
