"""SpanStore: spans in memory, with indices, FIFO eviction by trace, budgets, and an optional log on disk.

Layout (chosen for memory: a full default store must stay under 256 MB RSS)
-------------------------------------------------------------------------
The store keeps no span objects: every span is packed into a row of :class:`~spanstore.columns.SpanColumns`
(integer columns in chunks of 1,024 rows, a string table, one msgpack blob a row), and a fresh immutable
``StoredSpan`` is built only for a span a query returns. Every attribute value is indexed (strings exactly by their
string-table id, long strings by hash, ints, floats and bools by value), as are name, service, status, error type and
duration; see :mod:`spanstore.columns` for the layout and :mod:`spanstore.query` for the planner.

This module keeps what is not layout: the lock, the trace index (trace id -> seqs of its spans, and the traces in
arrival order), budgets and FIFO eviction by whole trace, stats, the inbox, the log, observers and fork hooks.

Ingest without blocking the application
---------------------------------------
:meth:`SpanStore.submit` takes a raw SDK ``ReadableSpan`` and only appends it to a lock-free inbox (a ``deque``).
The inbox is converted and indexed by :meth:`SpanStore.drain`, which every query calls first (so a query right after
``span.end()`` sees the span) and which the log writer's thread calls on every tick.

Concurrency: every public method is thread-safe. One lock guards the rows and indices; a query holds it only while
it collects its result list, never while the caller reads it. Results are fresh immutable ``StoredSpan`` objects.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from spanstore import forksafe
from spanstore.columns import (
    CHUNK_ROWS,
    MAX_REF_STRING,
    SEQ_TYPE,
    SHARED_STRING_BYTES,
    TRACE_BYTES,
    SpanColumns,
    duration_bucket,
    row_bytes,
)
from spanstore.columns import bool_key as bool_key  # re-exported: callers imported it from here
from spanstore.errors import InvalidQueryError, InvalidSpanError, StorageError, StoreClosedError
from spanstore.model import AttributeMap, StatusCode, StoredSpan, from_readable_span

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

#: Default span budget. Measured by ``python -m benchmarks --only memory``: a fresh process holding this many spans of
#: the benchmark workload stays under 256 MB RSS (~216 MB; see the README's Performance section).
DEFAULT_MAX_SPANS = 1_000_000
#: Default budget for the store's estimate of the memory its spans take (see :meth:`SpanStore.stats`). With the
#: imports (~23 MB) and the estimate's error on the workload families (within a few percent, see
#: ``python -m benchmarks --only families``), a full store of any shape stays under 256 MB RSS.
DEFAULT_MAX_BYTES = 192 << 20
#: Spans of one trace beyond this are dropped, so one runaway trace cannot take the whole store.
DEFAULT_MAX_SPANS_PER_TRACE = 10_000

#: Attribute strings up to this length are indexed exactly (by string-table id); longer ones by hash, then checked.
MAX_INDEXED_STRING = MAX_REF_STRING

# Above this many spans waiting in the inbox, ``submit`` converts them on the caller's thread: it bounds memory
# when nobody queries and no writer thread drains.
_INBOX_DRAIN_THRESHOLD = 8192
#: An open that decoded this many bytes of the log after its index file (or without one) writes a new one.
INDEX_AFTER_BYTES = 1 << 20
#: The store's counters an index file keeps (see spanstore.index_file).
_INDEXED_COUNTERS = (
    "_span_count",
    "_row_bytes",
    "_error_count",
    "_added",
    "_evicted_traces",
    "_evicted_spans",
    "_dropped_trace_cap",
    "_dropped_invalid",
    "_dead_since_compaction",
    "_service_counts",
)
# Freed chunks (of 1,024 rows) between two hand-backs of free C heap pages to the operating system.
_TRIM_EVERY_CHUNKS = 8
# How long a fork waits for a busy store's lock before it goes ahead without it (see SpanStore._before_fork).
_FORK_LOCK_TIMEOUT_SECONDS = 10.0


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
    #: How the store was opened: ``loaded`` (the index file used, or None: the log was replayed), ``spans_loaded``
    #: from it, ``rejected`` index files (``problem``: why), ``written`` (the index file this open wrote, if any).
    index: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready builtins."""
        return msgspec.to_builtins(self)


def _estimate_bytes(span: StoredSpan) -> int:
    """The bytes one span's row takes in the packed layout, its index entries included (shared strings aside).

    The store's estimate (:meth:`SpanStore.stats` ``memory_estimate_bytes``, what ``max_bytes`` bounds) is the sum
    of this over the spans held, plus 240 bytes a trace held, plus 300 bytes and the length of every *distinct*
    attribute string of at most 256 characters held (per key): such strings sit once in the string table, however
    many spans use them. Calibrated against RSS in steady state on every workload family (a store fed 4-10x its
    capacity: ``python -m benchmarks --only families``), heap fragmentation included.

    The formula (:func:`spanstore.columns.row_bytes`): 84 a row; per attribute: a str of at most 256 characters 9,
    a longer str 24 plus its UTF-8 length, an int 15 plus its msgpack size (1 from -32 to 127, 2 from -128 to 255, 3
    within int16/uint16, 5 within int32/uint32, else 9), a float 24, a bool 7, anything else nested; a span with a
    status message, trace state, events, links, dropped counts or an id that is not 16 lowercase hex characters
    adds 40, its status message's UTF-8 length and trace state's length, per event 24 plus its name's length plus
    its attributes as a nested map, per link 64 plus its attributes; over 512 bytes so far adds 96 and a 32nd of
    that sum (kept out of line). Nested (inside arrays, maps, events, links): str 2 plus its UTF-8 length,
    bool/None 1, int its msgpack size, float 9, bytes 5 plus its length, an array 5 plus its items, a map 5 plus per
    entry 2 plus its key's UTF-8 length plus its value.
    """
    return row_bytes(span)


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
    appends every span added afterwards through a background writer (the caller never waits on disk). Opening
    loads the index file when there is a usable one and decodes only what was appended after it
    (see :mod:`spanstore.index_file`); ``read_only=True`` opens an existing directory to query it: no writer, nothing
    appended (``add`` raises), though it may refresh the derived index file.

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
        segment_max_bytes: int | None = None,
        flush_interval_seconds: float = 0.5,
        max_batch: int = 1024,
        max_queue: int = 100_000,
        read_only: bool = False,
        write_index_in_child: bool = False,
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
        self.read_only = read_only
        # A short-lived reader (the CLI) answers without waiting for the index file it refreshes: a forked child
        # writes it from a copy-on-write image of the state.
        self._write_index_in_child = write_index_in_child
        self._index_report: dict[str, Any] = {"loaded": None, "spans_loaded": 0, "rejected": 0, "written": None}
        if path is not None:
            self._open_log(path, fsync, disk_max_bytes, segment_max_bytes, flush_interval_seconds, max_batch, max_queue)
        elif read_only:
            raise InvalidQueryError("read_only needs a path: a memory-only store has nothing to read")
        forksafe.register(self)

    # --- setup --------------------------------------------------------------------------------------------------
    def _reset_indices(self) -> None:
        self._columns = SpanColumns()
        self._traces: dict[str, array] = {}  # trace id -> seqs of its live spans
        self._trace_order: collections.deque[str] = collections.deque()  # live traces, arrival order
        self._span_count = 0
        self._row_bytes = 0  # sum of _estimate_bytes over the spans held
        self._error_count = 0
        self._service_counts: collections.Counter[str] = collections.Counter()
        self._added = 0
        self._evicted_traces = 0
        self._evicted_spans = 0
        self._dropped_trace_cap = 0
        self._dropped_invalid = 0
        self._dead_since_compaction = 0
        self._chunks_since_trim = 0

    @property
    def _bytes(self) -> int:
        """The memory estimate: every held row's estimate plus the distinct strings of the string table."""
        return self._row_bytes + self._columns.shared_bytes + TRACE_BYTES * len(self._traces)

    def _open_log(
        self, path, fsync, disk_max_bytes, segment_max_bytes, flush_interval_seconds, max_batch, max_queue
    ) -> None:
        from spanstore.log import SpanLog
        from spanstore.writer import LogWriter

        if self.read_only:
            self._log = SpanLog(path, create=False, fsync="never", max_bytes=None)
        else:
            sizes = {} if segment_max_bytes is None else {"segment_max_bytes": segment_max_bytes}
            self._log = SpanLog(path, fsync=fsync, max_bytes=disk_max_bytes, **sizes)
        self.path = self._log.path
        with self._lock:
            self._load_log()
        release_free_memory()
        if self.read_only:
            return
        self._writer = LogWriter(
            self._log,
            flush_interval_seconds=flush_interval_seconds,
            max_batch=max_batch,
            max_queue=max_queue,
            on_tick=self.drain,
        )

    # --- opening: an index file, then the segments after it ---------------------------------------------------------
    def _load_log(self) -> None:
        """Load the log's newest spans: from the index file when one is usable (then only what was appended after
        it is decoded), else by replaying the log; write a fresh index file when enough was decoded that the next
        open should not decode it again (see :mod:`spanstore.index_file`)."""
        from spanstore.index_file import find_index
        from spanstore.log import LogPosition

        segments = self._log.segment_files()
        if not segments:
            self._log_position = LogPosition(0, 0)
            return
        loaded, problem = find_index(str(self.path), self._budgets(), segments)
        if problem is not None:
            self._index_report["rejected"] += 1
            self._index_report["problem"] = problem.reason
            # Built under other budgets (another process's configuration) is no fault: no warning for it.
            logger.log(
                logging.WARNING if problem.damaged else logging.INFO,
                "span store %s: not using an index file (%s); rebuilding it from the log",
                self.path,
                problem.reason,
            )
        if loaded is not None:
            end_segment, end_offset = loaded.header.end
            behind = sum(segment.size for segment in segments if segment.sequence > end_segment)
            behind += sum(segment.size - end_offset for segment in segments if segment.sequence == end_segment)
            held = sum(entry[1] for entry in loaded.header.segments)
            if behind > held:
                loaded = None  # far behind: replaying the newest spans reads less than the index and what follows
        if loaded is None:
            first_rows = self._replay_newest()
            entries: list[tuple[int, int, int, int]] = []
            skipped: list[Any] = []
            unindexed = sum(segment.size for segment in segments)
        else:
            self._adopt_index(loaded, segments)
            present = {segment.sequence for segment in segments}
            entries = [entry for entry in loaded.header.segments[:-1] if entry[0] in present]
            skipped = [line for line in loaded.header.skipped if line.segment in {segment.name for segment in segments}]
            first_rows = {loaded.header.segments[-1][0]: loaded.header.segments[-1][3]}
            position = LogPosition(*loaded.header.end)
            # Segment by segment, to know where each one's rows start (retention may delete the oldest later).
            for segment in segments:
                if segment.sequence < position.segment:
                    continue
                first_rows.setdefault(segment.sequence, self._columns.next_seq)
                spans, position = self._log.read(position, until_segment=segment.sequence)
                for span in spans:
                    self._add_locked(span)
                del spans
            self._log_position = position
            unindexed = behind
        # Worth a new index file: enough was decoded, or segments rolled since (tiny segments, in tests, also count).
        rolled = self._log_position.segment > (loaded.header.end[0] if loaded is not None else segments[0].sequence)
        if unindexed >= INDEX_AFTER_BYTES or rolled:
            self._index_through(entries, first_rows, skipped)

    def _index_through(
        self, entries: list[tuple[int, int, int, int]], first_rows: dict[int, int], skipped: list[Any]
    ) -> None:
        """Write the index file of the state now held: the log read up to ``self._log_position``.

        ``entries``: the segments an earlier index file covered whole (kept as they are); ``first_rows``: the seq of
        the first row of each later segment read.
        """
        from spanstore.index_file import segment_identity

        end_segment, end_offset = self._log_position
        covered = {entry[0] for entry in entries}
        first_row = self._columns.next_seq  # a segment that gave no row starts where the next newer one does
        later = []
        for segment in reversed(self._log.segment_files()):
            if segment.sequence > end_segment or segment.sequence in covered:
                continue
            size = end_offset if segment.sequence == end_segment else segment.size
            first_row = first_rows.get(segment.sequence, first_row)
            later.append((segment.sequence, size, segment_identity(str(self.path), segment.name, size), first_row))
        entries = sorted(entries + later)
        if not entries or entries[-1][0] != end_segment:
            return  # the segment the read ended in is gone (retention): nothing consistent to write
        skipped = skipped + self._log.skipped_in(entry[0] for entry in later)
        self._write_index_locked(entries, skipped)

    def _budgets(self) -> tuple[int, int, int]:
        return (self.max_spans, self.max_bytes, self.max_spans_per_trace)

    def _adopt_index(self, loaded: Any, segments: list[Any]) -> None:
        from spanstore.log import index_name

        self._columns, self._traces, self._trace_order, counters = loaded.state
        for name in _INDEXED_COUNTERS:  # only these: a file names no other attribute of the store
            if name in counters:
                setattr(self, name, counters[name])
        name = os.path.splitext(index_name(loaded.last_segment))[0]
        self._index_report.update(loaded=name, spans_loaded=self._span_count)
        self._log.restore_skipped(loaded.header.skipped)
        # Rows of segments that retention deleted since the file was written: the oldest traces, evicted whole.
        present = {segment.sequence for segment in segments}
        cut = next(first_row for sequence, _, _, first_row in loaded.header.segments if sequence in present)
        evicted = False
        while self._trace_order and self._traces[self._trace_order[0]][0] < cut:
            self._evict_trace_locked(self._trace_order.popleft())
            evicted = True
        if evicted:
            self._columns.drop_dead_chunks()
            self._compact_locked()
        if self._span_count > self.max_spans or self._bytes > self.max_bytes:
            self._evict_locked()

    def _replay_newest(self) -> dict[int, int]:
        """Load the log's newest spans by decoding them; return the seq of the first row of each segment read."""
        # The newest max_spans spans of the log, packed as they are decoded (newest first) into scratch columns, then
        # added oldest first. A million decoded spans alive at once would cost ~800 MB, and the small-object
        # allocator would keep that much after they are gone; packed, they cost ~200 bytes each, and the scratch
        # columns are freed chunk by chunk as the store takes their rows.
        scratch = SpanColumns(indexed=False)  # its rows are only read back: no posting list beside the store's
        wanted = self.max_spans
        # The byte budget too: the newest spans up to the one whose estimates add up past max_bytes, so a log of
        # huge spans is never decoded (or held) beyond what the store can keep.
        budget = self.max_bytes
        taken = 0
        starts: list[tuple[int, int]] = []  # (segment, first scratch seq of its lines), newest segment first

        def pack(line_spans: list[StoredSpan]) -> bool:
            nonlocal taken
            for span in reversed(line_spans):
                if scratch.next_seq >= wanted or taken >= budget:
                    return True
                scratch.append(span, span.trace_id, span.error_types)
                taken += _estimate_bytes(span)
            return scratch.next_seq >= wanted or taken >= budget

        def on_segment(sequence: int) -> None:
            starts.append((sequence, scratch.next_seq))

        _, self._log_position = self._log.read_newest_lines(wanted, pack, on_segment)
        # Scratch seq ranges of each segment, oldest segment first (scratch holds the newest spans first).
        ranges = sorted(((start, sequence) for sequence, start in starts), reverse=True)
        first_rows: dict[int, int] = {}
        chunks = scratch.chunks
        range_index = 0
        for seq in range(scratch.next_seq - 1, -1, -1):
            while range_index < len(ranges) and seq < ranges[range_index][0]:
                range_index += 1
            if range_index < len(ranges):
                first_rows.setdefault(ranges[range_index][1], self._columns.next_seq)
            # take(): a big row's bytes leave the scratch as the store packs its own copy (else a store of huge
            # spans would be held twice until a whole scratch chunk is done)
            self._add_locked(scratch.take(seq))
            if not seq & (CHUNK_ROWS - 1):
                chunks.pop()  # every row of the last chunk is in the store now
        return first_rows

    def _write_index_locked(self, segments: list[tuple[int, int, int, int]], skipped: list[Any]) -> None:
        from spanstore.index_file import FORMAT_VERSION, IndexHeader, StoreState, native_layout, write_index
        from spanstore.log import index_name

        header = IndexHeader(FORMAT_VERSION, native_layout(), self._budgets(), segments, skipped)
        counters = {name: getattr(self, name) for name in _INDEXED_COUNTERS}
        state = StoreState(self._columns, self._traces, self._trace_order, counters)
        if self._write_index_in_child and hasattr(os, "fork") and threading.active_count() == 1:
            # Only single-threaded: a child forked from a threaded process may inherit a lock another thread held.
            pid = os.fork()
            if pid == 0:  # the child: write, and leave without running the parent's exit handlers
                code = 1
                try:
                    write_index(str(self.path), header, state)
                    code = 0
                finally:
                    os._exit(code)
            threading.Thread(target=os.waitpid, args=(pid, 0), name="spanstore-index-child", daemon=True).start()
            self._index_report["written"] = f"{index_name(segments[-1][0])} (by process {pid})"
            return
        try:
            written = write_index(str(self.path), header, state)
        except Exception as exc:  # an index file only saves time: no failure of it may fail the open
            logger.warning(
                "span store %s: could not write an index file (the next open will replay the log): %s: %s",
                self.path,
                type(exc).__name__,
                exc,
            )
            return
        self._index_report["written"] = os.path.basename(written)

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
        self._check_writable()
        with self._lock:
            if self._inbox:
                self._drain_locked()
            added = self._add_locked(span)
        if added and self._writer is not None:
            self._writer.enqueue(span)
        return added

    def add_many(self, spans: Iterable[StoredSpan]) -> int:
        """Add spans in one lock acquisition; return how many were kept (see :meth:`add`)."""
        self._check_writable()
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
        # The hot path of ingest and replay.
        trace_id = span.trace_id
        columns = self._columns
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = array(SEQ_TYPE)
            self._trace_order.append(trace_id)
        elif len(trace) >= self.max_spans_per_trace:
            self._dropped_trace_cap += 1
            return False
        else:
            trace_id = columns.trace_id_of(trace[0])  # one id string for every row of the trace
        if columns.next_seq >= columns.seq_limit:
            self._rebase_locked()
            trace = self._traces[span.trace_id]
        seq, service, size = columns.append(span, trace_id, span.error_types)
        trace.append(seq)
        if span.status_code == 2:
            self._error_count += 1
        self._span_count += 1
        self._row_bytes += size
        self._service_counts[service] += 1
        self._added += 1
        if self._observers:
            self._notify_locked(trace_id, False)
        if (
            self._span_count > self.max_spans
            or self._row_bytes + columns.shared_bytes + TRACE_BYTES * len(self._traces) > self.max_bytes
        ):
            self._evict_locked()
        return True

    def _rebase_locked(self) -> None:
        """Renumber every row from 0: seqs are 32-bit (see spanstore.columns.SEQ_LIMIT)."""
        shift = self._columns.rebase()
        for trace_id, seqs in self._traces.items():
            self._traces[trace_id] = array(SEQ_TYPE, [seq - shift for seq in seqs])

    def _evict_locked(self) -> None:
        columns = self._columns
        while (self._span_count > self.max_spans or self._bytes > self.max_bytes) and self._trace_order:
            self._evict_trace_locked(self._trace_order.popleft())
        dropped = columns.drop_dead_chunks()
        if self._dead_since_compaction > max(4096, self._span_count // 8):
            self._compact_locked()
        elif dropped:
            # Freed chunks leave holes in the C heap that later allocations dirty again: between two compactions a
            # store of near-unique values swung ~50 MB above what it holds (past 256 MB at capacity). Trimming every
            # few chunks (~0.2 ms) keeps RSS near the live data.
            self._chunks_since_trim += dropped
            if self._chunks_since_trim >= _TRIM_EVERY_CHUNKS:
                self._chunks_since_trim = 0
                trim_free_memory()

    def _evict_trace_locked(self, trace_id: str) -> None:
        """Drop a trace already taken off ``_trace_order``: kill its rows, update the counts, tell observers."""
        columns = self._columns
        seqs = self._traces.pop(trace_id)
        for seq in seqs:
            size, service, status = columns.kill(seq)
            self._span_count -= 1
            self._row_bytes -= size
            count = self._service_counts[service] - 1
            if count:
                self._service_counts[service] = count
            else:
                del self._service_counts[service]
            if status == 2:
                self._error_count -= 1
        self._evicted_traces += 1
        self._evicted_spans += len(seqs)
        self._dead_since_compaction += len(seqs)
        if self._observers:
            self._notify_locked(trace_id, True)

    def _compact_locked(self) -> None:
        """Drop dead seqs from every posting list (cut the front, filter holes), and empty lists.

        Then hand the freed memory back to the operating system: rows evicted since the last compaction (an eighth
        of the store) leave holes in the C heap that glibc keeps otherwise, and RSS would creep ~30% above what the
        store holds (measured on the workload families fed to 10x capacity).
        """
        self._columns.compact()
        self._dead_since_compaction = 0
        trim_free_memory()

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
        """Fresh spans of the live rows of a posting list, in seq order (dead entries skipped)."""
        columns = self._columns
        alive = columns.alive
        span = columns.span
        for seq in seqs:
            if alive(seq):
                yield span(seq)

    def _trace_spans(self, trace_id: str) -> list[StoredSpan]:
        """Fresh spans of one trace, in arrival order."""
        seqs = self._traces.get(trace_id)
        if seqs is None:
            return []
        span = self._columns.span
        return [span(seq) for seq in seqs]

    def spans(self) -> list[StoredSpan]:
        """Every span held, oldest start time first (a fresh list). O(n)."""

        def collect(store: SpanStore) -> list[StoredSpan]:
            columns = store._columns
            seqs = sorted(columns.live_seqs(), key=columns.start)  # stable: ties stay in arrival order
            return [columns.span(seq) for seq in seqs]

        return self._read(collect)

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
        span_id = span.span_id
        span_id_of = self._columns.span_id_of
        return any(span_id_of(seq) == span_id for seq in seqs)

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

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StorageError(f"{self!r} was opened read_only: open it without read_only=True to add spans")

    # --- stats and invariants -------------------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Counts, budgets, evictions, drops, time range, services and the memory estimate. O(services)."""

        def collect(store: SpanStore) -> StoreStats:
            oldest, newest = store._columns.oldest_newest()
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
                oldest_start_time_unix_nano=oldest,
                newest_start_time_unix_nano=newest,
                services=dict(sorted(store._service_counts.items())),
                path=str(store.path) if store.path is not None else None,
            )

        stats = self._read(collect)
        if self._log is None:
            return stats
        log_stats = msgspec.to_builtins(self._log.stats())
        writer_stats = msgspec.to_builtins(self._writer.stats()) if self._writer is not None else None
        return msgspec.structs.replace(stats, log=log_stats, writer=writer_stats, index=dict(self._index_report))

    def _check(self) -> None:
        """Assert every invariant of the rows and indices (for tests; O(n log n))."""
        with self._lock:
            columns = self._columns
            live = {seq: columns.span(seq) for seq in columns.live_seqs()}
            assert self._span_count == len(live), (self._span_count, len(live))
            latest = 0
            for index, chunk in enumerate(columns.chunks):
                assert len(chunk.starts) == len(chunk.bits) == len(chunk.offsets) == len(chunk.traces)
                assert chunk.alive == sum(not bits & 0x80 for bits in chunk.bits)
                if chunk.starts:
                    latest = max(latest, max(chunk.starts))
                assert chunk.max_start >= latest, (index, chunk.max_start, latest)
                assert chunk.min_start <= min(chunk.starts, default=chunk.min_start)
            assert self._row_bytes == sum(_estimate_bytes(span) for span in live.values())
            shared = {
                (key, value)
                for span in live.values()
                for key, value in span.attributes.items()
                if type(value) is str and len(value) <= MAX_REF_STRING
            }
            assert columns.shared_bytes == sum(SHARED_STRING_BYTES + len(v) for _, v in shared), "string accounting"
            assert sum(len(a.strings) for a in columns.keys.values()) == len(shared)
            contexts = collections.Counter(
                chunk.contexts[seq & 1023] for seq in live for chunk in [columns.chunk_of(seq)]
            )
            assert {i: columns.contexts.refs[i] for i in columns.contexts.ids.values()} == contexts
            assert {span.name for span in live.values()} == set(columns.names.ids)
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
            assert self._error_count == sum(span.status_code == StatusCode.ERROR for span in live.values())
            services = collections.Counter(span.resource.service_name for span in live.values())
            assert services == self._service_counts

            def seqs_of(posting: Any, listed: bool = True) -> list[int]:
                found = [posting] if type(posting) is int else list(posting)
                assert found == sorted(found)
                if listed:  # a posting list (a numeric run keeps its holes until the front passes them)
                    # A dead seq is only ever left in the band compaction filters (see SpanColumns.compact).
                    assert all(seq in live or seq <= columns.dead_high for seq in found), (found, columns.dead_high)
                return [seq for seq in found if seq in live]

            def expect(index: dict[Any, Any], key_of: Callable[[StoredSpan], Any], many: bool = False) -> None:
                wanted: dict[Any, list[int]] = collections.defaultdict(list)
                for seq, span in live.items():
                    for key in key_of(span) if many else (key_of(span),):
                        if key is not None:
                            wanted[key].append(seq)
                got = {}
                for key, posting in index.items():
                    kept = seqs_of(posting)
                    if kept:
                        got[key] = kept
                assert got == dict(wanted), set(got) ^ set(wanted)

            expect(columns.by_name, attrgetter("name"))
            expect(columns.by_service, lambda span: span.resource.service_name)
            expect(columns.by_status, lambda span: int(span.status_code) or None)
            expect(columns.by_error_type, attrgetter("error_types"), many=True)
            expect(columns.by_duration, lambda span: duration_bucket(span.duration_ns))
            expect(columns.by_failing_service, lambda span: span.service_name if span.is_error else None)
            # Every attribute value is found through the index by a query for it.
            for seq, span in live.items():
                for key, value in span.attributes.items():
                    found = columns.attribute_postings(key, value)
                    if found is None or (type(value) is float and value != value):
                        continue
                    postings = found[0]
                    assert any(seq in seqs_of(p, listed=False) for p in postings), (key, value, seq)
            for key, attribute in columns.keys.items():
                for value, ident in attribute.strings.ids.items():
                    holders = [
                        s
                        for s, span in live.items()
                        if type(span.attributes.get(key)) is str and span.attributes.get(key) == value
                    ]
                    assert seqs_of(attribute.postings[ident]) == holders, (key, value)
                    assert attribute.strings.refs[ident] == len(holders)


_UINT64_MAX = 2**64 - 1


def _check_span(span: object) -> None:
    """Refuse what the indices cannot hold, before anything changes."""
    if type(span) is not StoredSpan and not isinstance(span, StoredSpan):
        raise TypeError(f"SpanStore.add expects a StoredSpan, got {type(span).__name__}")
    attributes = span.attributes
    if type(attributes) is not AttributeMap and not isinstance(attributes, AttributeMap):
        # msgspec does not validate a Struct built in Python
        raise TypeError(
            f"StoredSpan.attributes must be an AttributeMap (AttributeMap.of(mapping)), got "
            f"{type(attributes).__name__} in span {span.span_id} of trace {span.trace_id}"
        )
    for value in attributes.values_:
        if type(value) not in _SCALARS:
            _check_value(value, span)
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    if type(start) is int and type(end) is int and 0 <= start <= _UINT64_MAX and 0 <= end <= _UINT64_MAX:
        return
    for name in ("start_time_unix_nano", "end_time_unix_nano"):
        value = getattr(span, name)
        if type(value) is not int or not 0 <= value <= _UINT64_MAX:
            raise InvalidSpanError(
                f"{name} must be an int of Unix nanoseconds in 0..2**64-1, got {value!r}",
                where=f"span {span.span_id} of trace {span.trace_id}",
            )


_SCALARS = frozenset((str, int, float, bool))
_NESTED = (str, int, float, bool, bytes, type(None))


def _check_value(value: object, span: StoredSpan) -> None:
    """Refuse an attribute value the file format cannot hold (OTLP's AnyValue: scalars, bytes, arrays, maps)."""
    if isinstance(value, _NESTED):
        return
    if isinstance(value, (tuple, list)):
        for item in value:
            _check_value(item, span)
        return
    if isinstance(value, AttributeMap):
        for item in value.values_:
            _check_value(item, span)
        return
    raise InvalidSpanError(
        f"attribute values must be str, bool, int, float, bytes, None, arrays or AttributeMaps, got "
        f"{type(value).__name__} {value!r}",
        where=f"span {span.span_id} of trace {span.trace_id}",
    )


_malloc_trim: Any = None


def trim_free_memory() -> None:
    """``malloc_trim(0)``: return the C heap's free pages to the operating system (glibc only; else a no-op)."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def release_free_memory() -> None:
    """Hand memory freed by a bulk load back to the operating system (glibc only; elsewhere a no-op).

    Replaying a log frees as much as it keeps (file buffers, lines, decoder temporaries), interleaved with the
    spans that stay; glibc keeps such freed blocks in the process, ~90 MB at a full default store, unless asked.
    """
    gc.collect()
    trim_free_memory()


def now_unix_nano() -> int:
    """The current time in Unix nanoseconds (one place, so tests and queries agree)."""
    return time.time_ns()
