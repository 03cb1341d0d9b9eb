"""SpanStore: spans in memory, with indices, FIFO eviction by trace, budgets, and an optional log on disk.

Layout (chosen for memory: a full default store must stay under 256 MB RSS)
-------------------------------------------------------------------------
Every stored span gets a sequence number (``seq``) in arrival order. ``_rows[seq - _base]`` is the span, or ``None``
once evicted. Indices are *posting lists*: ``array('q')`` of seqs in ascending order, 8 bytes an entry, no Python
objects (a ``set`` per value would cost ~450 bytes a span). They are maintained lazily on eviction: an evicted seq
stays in the arrays until a compaction pass drops it, and readers skip rows that are ``None``. Eviction is FIFO by
trace, so dead entries gather at the front of every array, where compaction cuts them with one slice.

Only the start-time index is a ``SortedKeyList`` of span objects (its keys are the spans' own ``int`` objects, so it
costs ~16 bytes a span): it answers time windows and newest/oldest-first scans that stop at ``limit``.

What is indexed: trace id, span name, service, status, error type, duration (in buckets of a quarter power of two),
and span attributes whose value is a ``str`` of at most 64 characters, an ``int`` or a ``bool``. Anything else
(floats, long strings, arrays, resource attributes) is answered by filtering candidates from another index or by a
time scan; see :mod:`spanstore.query` for the planner.

Ingest without blocking the application
---------------------------------------
:meth:`SpanStore.submit` takes a raw SDK ``ReadableSpan`` and only appends it to a lock-free inbox (a ``deque``).
The inbox is converted and indexed by :meth:`SpanStore.drain`, which every query calls first (so a query right after
``span.end()`` sees the span) and which the log writer's thread calls on every tick.

Concurrency: every public method is thread-safe. One lock guards the indices; a query holds it only while it
collects its result list, never while the caller reads it. Results are the stored immutable spans themselves.
"""

from __future__ import annotations

import collections
import gc
import logging
import math
import os
import threading
import time
import weakref
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec
from sortedcontainers import SortedKeyList

from spanstore import forksafe
from spanstore.errors import InvalidQueryError, InvalidSpanError, StoreClosedError
from spanstore.model import AttributeMap, Resource, StatusCode, StoredSpan, from_readable_span

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SPANS",
    "DEFAULT_MAX_SPANS_PER_TRACE",
    "SpanStore",
    "StoreStats",
]

#: Default span budget. Measured by ``python -m benchmarks``: a process holding this many workload spans stays under
#: 256 MB RSS (see the README's Performance section).
DEFAULT_MAX_SPANS = 300_000
#: Default budget for the store's own estimate of the memory its spans take (see :meth:`SpanStore.stats`).
DEFAULT_MAX_BYTES = 220 << 20
#: Spans of one trace beyond this are dropped, so one runaway trace cannot take the whole store.
DEFAULT_MAX_SPANS_PER_TRACE = 10_000

#: Attribute strings longer than this are not indexed (they are still stored and filterable).
MAX_INDEXED_STRING = 64

# A key with more distinct values than this is checked for near-uniqueness (see _demote_if_high_cardinality).
_HIGH_CARDINALITY_VALUES = 4096

# Above this many spans waiting in the inbox, ``submit`` converts them on the caller's thread: it bounds memory
# when nobody queries and no writer thread drains.
_INBOX_DRAIN_THRESHOLD = 8192
# How long a fork waits for a busy store's lock before it goes ahead without it (see SpanStore._before_fork).
_FORK_LOCK_TIMEOUT_SECONDS = 10.0

_start_time = attrgetter("start_time_unix_nano")


def duration_bucket(duration_ns: int) -> int:
    """The duration index bucket of a duration: four buckets per power of two, so a bucket spans ~19%."""
    if duration_ns <= 1:
        return 0
    return int(math.log2(duration_ns) * 4)


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a store's counters and budgets (see :meth:`SpanStore.stats`).

    >>> stats = SpanStore(max_spans=1_000).stats()
    >>> stats.span_count, stats.max_spans, stats.to_dict()["evicted_traces"]
    (0, 1000, 0)
    """

    span_count: int
    trace_count: int
    error_span_count: int
    max_spans: int
    max_bytes: int
    max_spans_per_trace: int
    memory_estimate_bytes: int
    added_spans: int
    evicted_traces: int
    evicted_spans: int
    dropped_spans_trace_cap: int
    dropped_spans_invalid: int
    oldest_start_time_unix_nano: int | None
    newest_start_time_unix_nano: int | None
    services: dict[str, int]
    path: str | None = None
    log: dict[str, Any] | None = None
    writer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready builtins."""
        return msgspec.to_builtins(self)


def _estimate_bytes(span: StoredSpan) -> int:
    """A cheap estimate of the memory one span takes in the store, indices included.

    Calibrated against measured RSS (``benchmarks/bench_memory.py``): the struct, its id strings and times, and
    ~8 bytes per index entry are fixed; every attribute value (strings, bytes, arrays, nested maps), event and link
    adds what it holds, so a span of 100 KB arrays counts its 100 KB (issue #12: the estimate once saw only strings).

    The formula: 480; per attribute 24 plus its value (a string of at most 16 characters is interned: free); per
    event 120 plus its name's length, per link 200, and per event or link attribute 16 plus its value; plus the
    status message's length. A value costs: bool/None 0, int/float 28, str 49 + length, bytes 33 + length, an array
    56 + 8 per item plus its items, a key/value map 64 + 16 per entry plus its values.
    """
    size = 480 + 24 * len(span.attributes.keys_)
    for value in span.attributes.values_:
        if type(value) is not str or len(value) > 16:  # short strings are interned: shared between spans
            size += _value_bytes(value)
    for event in span.events:
        size += 120 + 16 * len(event.attributes.keys_) + len(event.name)
        for value in event.attributes.values_:
            size += _value_bytes(value)
    for link in span.links:
        size += 200 + 16 * len(link.attributes.keys_)
        for value in link.attributes.values_:
            size += _value_bytes(value)
    if span.status_message:
        size += len(span.status_message)
    return size


def _value_bytes(value: object) -> int:
    """Bytes an attribute value holds beyond its slot (CPython object sizes, rounded)."""
    kind = type(value)
    if kind is str:
        return 49 + len(value)  # type: ignore[arg-type]
    if kind is bool or value is None:
        return 0  # singletons
    if kind is int or kind is float:
        return 28
    if kind is bytes:
        return 33 + len(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        return 56 + 8 * len(value) + sum(map(_value_bytes, value))  # type: ignore[arg-type]
    if isinstance(value, AttributeMap):
        return 64 + 16 * len(value.keys_) + sum(map(_value_bytes, value.values_))
    return 64


def _index_key(value: object) -> object:
    """The key an attribute value is indexed under, or ``None`` when it is not indexed.

    Numbers (int, and float queries against them) share one key space so ``500`` and ``500.0`` meet; bools get their
    own, since ``True == 1`` in Python but not in a typed attribute store.
    """
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_INDEXED_STRING else None
    if kind is int:
        return value
    if kind is bool:
        return _BoolKey.TRUE if value else _BoolKey.FALSE
    return None


class _BoolKey:
    """Distinct dict keys for booleans (so ``True`` does not collide with ``1``)."""

    TRUE: _BoolKey
    FALSE: _BoolKey
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_BoolKey({self.value})"


_BoolKey.TRUE = _BoolKey(True)
_BoolKey.FALSE = _BoolKey(False)


def bool_key(value: bool) -> _BoolKey:
    """The index key of a boolean attribute value."""
    return _BoolKey.TRUE if value else _BoolKey.FALSE


class _InboxDrainer:
    """Converts a memory-only store's inbox on a background thread (a store with a path has its LogWriter for that).

    Started lazily, by the first burst of 1,024 waiting spans, so a small store (a test's) never starts a thread;
    then it also drains every ``interval`` seconds. The thread holds the store weakly and ends with it.
    """

    def __init__(self, store: SpanStore, interval: float = 0.5) -> None:
        self._store = weakref.ref(store)
        self._interval = interval
        self._after_fork_in_child()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def wake(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopped:
                    self._thread = threading.Thread(
                        target=_drain_until_gone,
                        args=(self._store, self._wake, self._interval),
                        daemon=True,
                        name="spanstore-drain",
                    )
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()


def _drain_until_gone(store_ref: weakref.ref[SpanStore], wake: threading.Event, interval: float) -> None:
    while True:
        wake.wait(interval)
        wake.clear()
        store = store_ref()
        if store is None or store._closed or store._drainer._stopped:
            return
        try:
            store.drain()
        except Exception:  # never let a bad span end the thread: drain() already drops and counts bad spans
            logger.exception("spanstore: background drain of %r failed", store)
        del store


class SpanStore:
    """A thread-safe, indexed store of finished spans, in memory and optionally backed by a log directory.

    ``path=None`` keeps spans in memory only. With a path, the store opens (creating it if needed) a
    :class:`~spanstore.log.SpanLog` directory of OTLP JSON Lines, loads the newest ``max_spans`` spans from it, and
    appends every span added afterwards through a background writer (the caller never waits on disk).

    When a budget is exceeded (``max_spans`` spans or ``max_bytes`` of estimated memory), the trace that arrived
    first is evicted whole, so :func:`~spanstore.query.get_trace` never returns a torso. Spans of one trace beyond
    ``max_spans_per_trace`` are dropped. Both are counted in :meth:`stats`.

    Thread-safe; may be shared by every thread of a process. Several processes may share one directory: each appends
    under a cross-process lock, and :meth:`refresh` loads what the others appended.

    >>> from spanstore.model import StoredSpan
    >>> store = SpanStore(max_spans=2)
    >>> for i in range(3):
    ...     _ = store.add(StoredSpan(trace_id=f"{i:032x}", span_id=f"{i + 1:016x}", name=f"op{i}",
    ...                              start_time_unix_nano=i, end_time_unix_nano=i + 10))
    >>> len(store), store.stats().evicted_traces
    (2, 1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_spans_per_trace: int = DEFAULT_MAX_SPANS_PER_TRACE,
        fsync: str = "interval",
        disk_max_bytes: int | None = 1 << 30,
        flush_interval_seconds: float = 0.5,
        max_batch: int = 1024,
        max_queue: int = 100_000,
    ) -> None:
        for name, value in (("max_spans", max_spans), ("max_bytes", max_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidQueryError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(max_spans_per_trace, int) or max_spans_per_trace < 1:
            raise InvalidQueryError(f"max_spans_per_trace must be a positive int, got {max_spans_per_trace!r}")
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        self.max_spans_per_trace = max_spans_per_trace
        self._lock = threading.Lock()
        self._held_for_fork = False
        self._inbox: collections.deque[ReadableSpan] = collections.deque()
        self._closed = False
        self._reset_indices()
        self._log: Any = None
        self._writer: Any = None
        self._log_position: Any = None
        self._drainer = _InboxDrainer(self)
        self._observers: list[Callable[[str, bool], None]] = []
        self.path = None
        if path is not None:
            self._open_log(path, fsync, disk_max_bytes, flush_interval_seconds, max_batch, max_queue)
        forksafe.register(self)

    # --- setup --------------------------------------------------------------------------------------------------
    def _reset_indices(self) -> None:
        self._rows: list[StoredSpan | None] = []
        self._base = 0  # seq of _rows[0]
        self._sizes = array("l")  # estimated bytes per row, parallel to _rows
        # _max_start[i]: the latest start time among rows 0..i (evicted ones included). Arrival order is nearly
        # start order, so walking a posting list backwards, the planner can stop as soon as no earlier row can
        # start late enough to matter (see spanstore.query._walk_newest).
        self._max_start = array("Q")
        self._max_start_floor = 0  # _max_start of the rows already cut from the front
        self._traces: dict[str, array] = {}  # trace id -> seqs of its live spans
        self._trace_order: collections.deque[str] = collections.deque()  # live traces, arrival order
        self._by_time: SortedKeyList = SortedKeyList(key=_start_time)
        self._by_name: dict[str, array] = {}
        self._by_service: dict[str, array] = {}
        self._by_status: dict[int, array] = {}
        self._by_error_type: dict[str, array] = {}
        self._by_duration: dict[int, array] = {}
        self._by_attribute: dict[str, dict[object, array]] = {}
        self._span_count = 0
        self._bytes = 0
        self._error_count = 0
        self._service_counts: collections.Counter[str] = collections.Counter()
        self._added = 0
        self._evicted_traces = 0
        self._evicted_spans = 0
        self._dropped_trace_cap = 0
        self._dropped_invalid = 0
        self._dead_since_compaction = 0
        self._float_keys: set[str] = set()  # attribute keys seen with float values (not in the value index)
        self._unindexed_keys: set[str] = set()  # high-cardinality keys demoted from the value index
        self._service_names: dict[int, tuple[Resource, str]] = {}

    def _open_log(self, path, fsync, disk_max_bytes, flush_interval_seconds, max_batch, max_queue) -> None:
        from spanstore.log import SpanLog
        from spanstore.writer import LogWriter

        self._log = SpanLog(path, fsync=fsync, max_bytes=disk_max_bytes)
        self.path = self._log.path
        # Newest first, at most the budgets' worth: a log of huge spans never sits in memory whole while it loads.
        spans, self._log_position = self._log.read(
            max_spans=self.max_spans, max_bytes=self.max_bytes, size_of=_estimate_bytes
        )
        with self._lock:
            for span in spans:
                self._add_locked(span)
        del spans
        release_free_memory()
        self._writer = LogWriter(
            self._log,
            flush_interval_seconds=flush_interval_seconds,
            max_batch=max_batch,
            max_queue=max_queue,
            on_tick=self.drain,
        )

    def _before_fork(self) -> None:
        # Held across fork(): the child's indices are then never halfway through another thread's update. Bounded,
        # so a fork from a thread that holds the lock itself (a callback under it) cannot deadlock.
        self._held_for_fork = self._lock.acquire(timeout=_FORK_LOCK_TIMEOUT_SECONDS)
        if not self._held_for_fork:
            logger.warning("spanstore: forking while %r stays busy: the child may see a partial update", self)

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        # A fresh lock: the parent's is held (by _before_fork, or by a thread that does not exist in the child).
        self._held_for_fork = False
        self._lock = threading.Lock()
        # Spans still in the inbox were ended by the parent, which indexes and writes them; the child writing them
        # too would duplicate them on disk.
        self._inbox = collections.deque()

    # --- context manager ----------------------------------------------------------------------------------------
    def __enter__(self) -> SpanStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        return f"<SpanStore {where} spans={self._span_count} traces={len(self._traces)}>"

    @property
    def writer(self) -> Any:
        """The background :class:`~spanstore.writer.LogWriter` of a store with a path (None in memory)."""
        return self._writer

    def __len__(self) -> int:
        """The number of spans held (after converting any waiting in the inbox). O(1)."""
        self.drain()
        return self._span_count

    # --- ingest -------------------------------------------------------------------------------------------------
    def submit(self, span: ReadableSpan) -> None:
        """Queue a finished SDK span for conversion; O(1), lock-free, never raises for a valid span.

        This is the span processor's hot path: the span becomes visible to the next query (which converts the
        inbox first). Called on the application thread that ends the span.
        """
        inbox = self._inbox
        inbox.append(span)
        waiting = len(inbox)
        writer = self._writer
        if writer is not None:
            # The writer thread starts with the first span and wakes every flush interval: a quiet application's
            # spans reach the disk as soon as a busy one's.
            writer.ensure_started()
        if waiting > _INBOX_DRAIN_THRESHOLD:
            self.drain()
        elif not waiting & 1023:
            # A burst: convert it in the background before the inline threshold is reached.
            if writer is not None:
                writer.wake()
            else:
                self._drainer.wake()

    def drain(self) -> int:
        """Convert and index every span waiting in the inbox; return how many. Thread-safe.

        Queries call this first. A span that cannot be converted is dropped and counted, never raised.
        """
        if not self._inbox:
            return 0
        with self._lock:
            return self._drain_locked()

    def _drain_locked(self) -> int:
        inbox = self._inbox
        count = 0
        kept: list[StoredSpan] = []
        # At most what waits now: producers that keep adding during the drain must not keep a query (or the
        # writer's tick) converting forever; their spans wait for the next drain.
        for _ in range(len(inbox)):
            try:
                raw = inbox.popleft()
            except IndexError:
                break
            try:
                span = from_readable_span(raw)
            except Exception:  # a malformed SDK span must not poison the inbox for everyone after it
                self._dropped_invalid += 1
                continue
            if self._add_locked(span):
                kept.append(span)
            count += 1
        if kept and self._writer is not None:
            self._writer.enqueue_many(kept)  # one writer-lock acquisition for the whole inbox
        return count

    def add(self, span: StoredSpan) -> bool:
        """Add one span (and append it to the log, in the background, when the store has a path).

        Returns False when the span was dropped because its trace is at ``max_spans_per_trace``.
        Amortized O(log n + a) for a span with a indexed attributes.
        """
        _check_span(span)
        self._check_open()
        with self._lock:
            if self._inbox:
                self._drain_locked()
            added = self._add_locked(span)
        if added and self._writer is not None:
            self._writer.enqueue(span)
        return added

    def add_many(self, spans: Iterable[StoredSpan]) -> int:
        """Add spans in one lock acquisition; return how many were kept (see :meth:`add`)."""
        self._check_open()
        spans = list(spans)
        for span in spans:  # all checked before any is added: a bad span leaves the store unchanged
            _check_span(span)
        kept: list[StoredSpan] = []
        with self._lock:
            if self._inbox:
                self._drain_locked()
            for span in spans:
                if self._add_locked(span):
                    kept.append(span)
        if self._writer is not None:
            self._writer.enqueue_many(kept)
        return len(kept)

    def _add_locked(self, span: StoredSpan) -> bool:
        # The hot path of ingest and replay: inlined dict/array work, no helper calls per index.
        trace_id = span.trace_id
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = array("q")
            self._trace_order.append(trace_id)
        elif len(trace) >= self.max_spans_per_trace:
            self._dropped_trace_cap += 1
            return False
        rows = self._rows
        seq = self._base + len(rows)
        rows.append(span)
        size = _estimate_bytes(span)
        self._sizes.append(size)
        start = span.start_time_unix_nano
        max_start = self._max_start
        latest = max_start[-1] if max_start else self._max_start_floor
        max_start.append(start if start > latest else latest)
        trace.append(seq)
        self._by_time.add(span)

        seqs = self._by_name.get(span.name)
        if seqs is None:
            self._by_name[span.name] = array("q", (seq,))
        else:
            seqs.append(seq)
        service = self._service_name(span.resource)
        seqs = self._by_service.get(service)
        if seqs is None:
            self._by_service[service] = array("q", (seq,))
        else:
            seqs.append(seq)
        status = span.status_code
        seqs = self._by_status.get(status)
        if seqs is None:
            self._by_status[status] = array("q", (seq,))
        else:
            seqs.append(seq)
        duration = span.end_time_unix_nano - span.start_time_unix_nano
        bucket = int(math.log2(duration) * 4) if duration > 1 else 0
        seqs = self._by_duration.get(bucket)
        if seqs is None:
            self._by_duration[bucket] = array("q", (seq,))
        else:
            seqs.append(seq)
        if status == 2:
            self._error_count += 1
        for error_type in span.error_types:
            _post(self._by_error_type, error_type, seq)

        attributes = span.attributes
        if attributes.keys_:
            by_attribute = self._by_attribute
            unindexed = self._unindexed_keys
            for key, value in zip(attributes.keys_, attributes.values_, strict=True):
                kind = type(value)
                if kind is str:
                    if len(value) > MAX_INDEXED_STRING:
                        continue
                elif kind is int:
                    pass
                elif kind is bool:
                    value = _BoolKey.TRUE if value else _BoolKey.FALSE
                else:
                    if kind is float:
                        self._float_keys.add(key)
                    continue
                if key in unindexed:
                    continue
                values = by_attribute.get(key)
                if values is None:
                    values = by_attribute[key] = {}
                seqs = values.get(value)
                if seqs is None:
                    values[value] = array("q", (seq,))
                    distinct = len(values)
                    # Checked at powers of two only: amortized O(1) a span.
                    if distinct >= _HIGH_CARDINALITY_VALUES and not distinct & (distinct - 1):
                        self._demote_if_high_cardinality(key, values)
                else:
                    seqs.append(seq)

        self._span_count += 1
        self._bytes += size
        self._service_counts[service] += 1
        self._added += 1
        if self._observers:
            self._notify_locked(trace_id, False)
        if self._span_count > self.max_spans or self._bytes > self.max_bytes:
            self._evict_locked()
        return True

    def _service_name(self, resource: Resource) -> str:
        """``resource.service_name``, cached by the resource's identity (resources are shared by many spans)."""
        entry = self._service_names.get(id(resource))
        if entry is not None and entry[0] is resource:
            return entry[1]
        name = resource.service_name
        if len(self._service_names) > 4096:
            self._service_names.clear()
        self._service_names[id(resource)] = (resource, name)
        return name

    def _demote_if_high_cardinality(self, key: str, values: dict[object, array]) -> None:
        """Stop indexing a key whose values are nearly all distinct (ids, ports, timestamps).

        Such an index costs ~130 bytes a span (an array and a dict entry per value) and serves only equality on
        one id; those queries filter candidates of other criteria instead.
        """
        entries = sum(map(len, values.values()))
        if len(values) * 2 > entries:
            del self._by_attribute[key]
            self._unindexed_keys.add(key)

    def _evict_locked(self) -> None:
        while (self._span_count > self.max_spans or self._bytes > self.max_bytes) and self._trace_order:
            trace_id = self._trace_order.popleft()
            seqs = self._traces.pop(trace_id)
            base = self._base
            rows = self._rows
            for seq in seqs:
                span = rows[seq - base]
                rows[seq - base] = None
                _remove_identical(self._by_time, span)
                self._span_count -= 1
                self._bytes -= self._sizes[seq - base]
                service = self._service_name(span.resource)
                count = self._service_counts[service] - 1
                if count:
                    self._service_counts[service] = count
                else:
                    del self._service_counts[service]
                if span.status_code == StatusCode.ERROR:
                    self._error_count -= 1
            self._evicted_traces += 1
            self._evicted_spans += len(seqs)
            self._dead_since_compaction += len(seqs)
            if self._observers:
                self._notify_locked(trace_id, True)
        # Drop the evicted rows at the front; a hole further in waits until the front reaches it.
        rows = self._rows
        front = 0
        while front < len(rows) and rows[front] is None:
            front += 1
        if front > 1024 or (front and front == len(rows)):
            del rows[:front]
            del self._sizes[:front]
            self._max_start_floor = self._max_start[front - 1]
            del self._max_start[:front]
            self._base += front
        if self._dead_since_compaction > max(4096, self._span_count // 4):
            self._compact_locked()

    def _compact_locked(self) -> None:
        """Drop dead seqs from every posting list (cut the front, filter holes), and empty lists."""
        base = self._base
        rows = self._rows
        for index in self._posting_indices():
            empty = []
            for key, seqs in index.items():
                cut = bisect_left(seqs, base)
                if cut:
                    del seqs[:cut]
                if any(rows[seq - base] is None for seq in seqs):
                    index[key] = seqs = array("q", [seq for seq in seqs if rows[seq - base] is not None])
                if not seqs:
                    empty.append(key)
            for key in empty:
                del index[key]
        for key in [key for key, values in self._by_attribute.items() if not values]:
            del self._by_attribute[key]
        self._dead_since_compaction = 0

    def _posting_indices(self) -> Iterator[dict[Any, array]]:
        yield self._by_name
        yield self._by_service
        yield self._by_status
        yield self._by_error_type
        yield self._by_duration
        yield from self._by_attribute.values()

    # --- observers: the one hook for indices derived from whole traces (spanstore.analysis) -------------------------
    def observe_traces(self, observer: Callable[[str, bool], None]) -> None:
        """Call ``observer(trace_id, evicted)`` for every trace change, under the store's lock.

        ``evicted=False``: a span of the trace was added (first, once for every trace already held, at
        registration); ``evicted=True``: the trace left (evicted whole, or :meth:`clear`). The observer runs on
        whichever thread changes the store (never the application's ``on_end``), must be quick, must not call the
        store, and should only note the change; an exception it raises is logged and swallowed. There is no way to
        unregister: an observer lives as long as the store. Thread-safe.

        >>> from spanstore.model import StoredSpan
        >>> store, seen = SpanStore(max_spans=1), []
        >>> store.observe_traces(lambda trace_id, evicted: seen.append((trace_id[-1], evicted)))
        >>> for i in (1, 2):
        ...     _ = store.add(StoredSpan(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="op",
        ...                              start_time_unix_nano=i, end_time_unix_nano=i + 1))
        >>> seen
        [('1', False), ('2', False), ('1', True)]
        """
        with self._lock:
            if self._inbox:
                self._drain_locked()
            self._observers.append(observer)
            for trace_id in self._trace_order:
                self._notify_locked(trace_id, False, (observer,))

    def _notify_locked(
        self, trace_id: str, evicted: bool, observers: Iterable[Callable[[str, bool], None]] = ()
    ) -> None:
        for observer in observers or self._observers:
            try:
                observer(trace_id, evicted)
            except Exception:  # a derived index must never break ingest or eviction
                logger.exception("spanstore: trace observer %r failed", observer)

    # --- reading (used by spanstore.query; callers hold no lock) --------------------------------------------------
    def _read(self, function: Callable[[SpanStore], Any]) -> Any:
        """Run ``function(self)`` under the lock, after draining the inbox: the query planner's entry point."""
        self._check_open()
        with self._lock:
            if self._inbox:
                self._drain_locked()
            return function(self)

    def _live(self, seqs: Iterable[int]) -> Iterator[StoredSpan]:
        """The live spans of a posting list, in seq order (dead entries skipped)."""
        rows = self._rows
        base = self._base
        for seq in seqs:
            if seq >= base:
                span = rows[seq - base]
                if span is not None:
                    yield span

    def _trace_spans(self, trace_id: str) -> list[StoredSpan]:
        seqs = self._traces.get(trace_id)
        if seqs is None:
            return []
        rows = self._rows
        base = self._base
        return [rows[seq - base] for seq in seqs]  # type: ignore[misc]

    def spans(self) -> list[StoredSpan]:
        """Every span held, oldest start time first (a fresh list). O(n)."""
        return self._read(lambda store: list(store._by_time))

    def trace_ids(self) -> list[str]:
        """Ids of the traces held, in arrival order (a fresh list). O(t)."""
        return self._read(lambda store: list(store._trace_order))

    # --- persistence ----------------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Load spans other processes appended to this store's directory since the last open/refresh.

        Returns how many spans were added. Spans this store already holds (its own, written back by its writer)
        are recognised by (trace id, span id) and skipped. A memory-only store returns 0.
        """
        self._check_open()
        if self._log is None:
            return 0
        spans, position = self._log.read(self._log_position)
        added = 0
        with self._lock:
            self._log_position = position
            for span in spans:
                if self._holds_locked(span) or not self._add_locked(span):
                    continue
                added += 1
        return added

    def _holds_locked(self, span: StoredSpan) -> bool:
        seqs = self._traces.get(span.trace_id)
        if seqs is None:
            return False
        rows = self._rows
        base = self._base
        span_id = span.span_id
        return any(rows[seq - base].span_id == span_id for seq in seqs)  # type: ignore[union-attr]

    def flush(self, timeout_seconds: float | None = None) -> bool:
        """Convert the inbox and wait until every span added so far is appended to the log.

        True when done within the timeout (always True for a memory-only store).
        """
        self.drain()
        if self._writer is None:
            return True
        return self._writer.flush(timeout_seconds)

    def clear(self) -> None:
        """Forget every span held in memory (the log on disk is kept). Thread-safe."""
        with self._lock:
            self._inbox.clear()
            for trace_id in self._trace_order if self._observers else ():
                self._notify_locked(trace_id, True)
            self._reset_indices()

    def close(self, timeout_seconds: float | None = 30.0) -> None:
        """Flush to disk, stop the writer, close the log. Idempotent; later use raises StoreClosedError.

        Returns within about ``timeout_seconds`` (the SDK's shutdown default) even when the disk cannot be written
        (another process holding the directory lock, a failing disk): spans still unwritten then are dropped,
        counted in ``stats().writer`` and logged.
        """
        if self._closed:
            return
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        try:
            self._drainer.stop()
            if self._writer is not None:
                self.drain()
                self._writer.close(timeout_seconds)
            if self._log is not None:
                self._log.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finally:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    # --- stats and invariants -------------------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Counts, budgets, evictions, drops, time range, services and the memory estimate. O(services)."""

        def collect(store: SpanStore) -> StoreStats:
            by_time = store._by_time
            return StoreStats(
                span_count=store._span_count,
                trace_count=len(store._traces),
                error_span_count=store._error_count,
                max_spans=store.max_spans,
                max_bytes=store.max_bytes,
                max_spans_per_trace=store.max_spans_per_trace,
                memory_estimate_bytes=store._bytes,
                added_spans=store._added,
                evicted_traces=store._evicted_traces,
                evicted_spans=store._evicted_spans,
                dropped_spans_trace_cap=store._dropped_trace_cap,
                dropped_spans_invalid=store._dropped_invalid,
                oldest_start_time_unix_nano=by_time[0].start_time_unix_nano if by_time else None,
                newest_start_time_unix_nano=by_time[-1].start_time_unix_nano if by_time else None,
                services=dict(sorted(store._service_counts.items())),
                path=str(store.path) if store.path is not None else None,
            )

        stats = self._read(collect)
        if self._log is None:
            return stats
        log_stats = msgspec.to_builtins(self._log.stats())
        writer_stats = msgspec.to_builtins(self._writer.stats()) if self._writer is not None else None
        return msgspec.structs.replace(stats, log=log_stats, writer=writer_stats)

    def _check(self) -> None:
        """Assert every invariant of the indices (for tests; O(n log n))."""
        with self._lock:
            rows = self._rows
            base = self._base
            live = {base + i: span for i, span in enumerate(rows) if span is not None}
            assert self._span_count == len(live), (self._span_count, len(live))
            assert len(self._sizes) == len(rows) == len(self._max_start)
            latest = self._max_start_floor
            for i, span in enumerate(rows):
                if span is not None:
                    latest = max(latest, span.start_time_unix_nano)
                    assert self._max_start[i] >= latest
                latest = max(latest, self._max_start[i])
            assert self._bytes == sum(self._sizes[seq - base] for seq in live)
            # The budgets hold after every change (eviction runs until both do, or nothing is left to evict).
            assert self._span_count <= self.max_spans or not live
            assert self._bytes <= self.max_bytes or not live, (self._bytes, self.max_bytes)
            assert list(self._trace_order) == list(self._traces)
            assert len(set(self._trace_order)) == len(self._trace_order)
            traced = set()
            for trace_id, seqs in self._traces.items():
                assert seqs, trace_id
                assert list(seqs) == sorted(seqs)
                assert len(seqs) <= self.max_spans_per_trace
                for seq in seqs:
                    assert live[seq].trace_id == trace_id
                    traced.add(seq)
            assert traced == set(live)
            self._by_time._check()
            assert len(self._by_time) == len(live)
            assert {id(span) for span in self._by_time} == {id(span) for span in live.values()}
            assert self._error_count == sum(span.status_code == StatusCode.ERROR for span in live.values())
            services = collections.Counter(span.resource.service_name for span in live.values())
            assert services == self._service_counts

            def expect(index: dict[Any, array], key_of: Callable[[StoredSpan], Any], many: bool = False) -> None:
                wanted: dict[Any, list[int]] = collections.defaultdict(list)
                for seq, span in live.items():
                    for key in key_of(span) if many else (key_of(span),):
                        if key is not None:
                            wanted[key].append(seq)
                got = {}
                for key, seqs in index.items():
                    assert list(seqs) == sorted(seqs), key
                    kept = [seq for seq in seqs if seq in live]
                    if kept:
                        got[key] = kept
                assert got == dict(wanted), set(got) ^ set(wanted)

            expect(self._by_name, attrgetter("name"))
            expect(self._by_service, lambda span: span.resource.service_name)
            expect(self._by_status, lambda span: int(span.status_code))
            expect(self._by_error_type, attrgetter("error_types"), many=True)
            expect(self._by_duration, lambda span: duration_bucket(span.duration_ns))
            keys = set(self._by_attribute)
            for span in live.values():
                keys.update(k for k, v in span.attributes.items() if _index_key(v) is not None)
            assert not set(self._by_attribute) & self._unindexed_keys
            for key in keys - self._unindexed_keys:
                for index_key in set(self._by_attribute.get(key, {})) | {
                    _index_key(v) for span in live.values() for k, v in span.attributes.items() if k == key
                }:
                    if index_key is None:
                        continue
                    seqs = self._by_attribute.get(key, {}).get(index_key, array("q"))
                    got = [seq for seq in seqs if seq in live]
                    wanted = [
                        seq
                        for seq, span in live.items()
                        if key in span.attributes and _same_key(_index_key(span.attributes[key]), index_key)
                    ]
                    assert got == wanted, (key, index_key)


def _same_key(a: object, b: object) -> bool:
    return a is b if isinstance(a, _BoolKey) or isinstance(b, _BoolKey) else a == b


_UINT64_MAX = 2**64 - 1


def _check_span(span: object) -> None:
    """Refuse what the indices cannot hold, before anything changes."""
    if not isinstance(span, StoredSpan):
        raise TypeError(f"SpanStore.add expects a StoredSpan, got {type(span).__name__}")
    if not isinstance(span.attributes, AttributeMap):  # msgspec does not validate a Struct built in Python
        raise TypeError(
            f"StoredSpan.attributes must be an AttributeMap (AttributeMap.of(mapping)), got "
            f"{type(span.attributes).__name__} in span {span.span_id} of trace {span.trace_id}"
        )
    for name in ("start_time_unix_nano", "end_time_unix_nano"):
        value = getattr(span, name)
        if type(value) is not int or not 0 <= value <= _UINT64_MAX:
            raise InvalidSpanError(
                f"{name} must be an int of Unix nanoseconds in 0..2**64-1, got {value!r}",
                where=f"span {span.span_id} of trace {span.trace_id}",
            )


def _remove_identical(index: SortedKeyList, span: StoredSpan) -> None:
    """Remove this very span object (not merely an equal one: re-imported duplicates are distinct rows)."""
    key = span.start_time_unix_nano
    position = index.bisect_key_left(key)
    while True:
        candidate = index[position]
        if candidate is span:
            del index[position]
            return
        position += 1


def _post(index: dict[Any, array], key: object, seq: int) -> None:
    seqs = index.get(key)
    if seqs is None:
        index[key] = array("q", (seq,))
    else:
        seqs.append(seq)


def release_free_memory() -> None:
    """Hand memory freed by a bulk load back to the operating system (glibc only; elsewhere a no-op).

    Replaying a log frees as much as it keeps (file buffers, lines, decoder temporaries), interleaved with the
    spans that stay; glibc keeps such freed blocks in the process, ~90 MB at a full default store, unless asked.
    """
    import ctypes
    import ctypes.util

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def now_unix_nano() -> int:
    """The current time in Unix nanoseconds (one place, so tests and queries agree)."""
    return time.time_ns()
