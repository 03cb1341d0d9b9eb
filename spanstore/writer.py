"""LogWriter: the write-behind queue between the in-memory store and the log on disk.

The store hands every span it keeps to :meth:`LogWriter.enqueue`, which only appends it to a bounded queue; a daemon
thread wakes every ``flush_interval_seconds`` (sooner when ``max_batch`` spans are waiting), calls ``on_tick`` (the
store's inbox drain), and appends the queue to the :class:`~spanstore.log.SpanLog` in batches of ``max_batch``.

Why a write-behind thread: an append costs a lock across processes, encoding and a ``write`` (and an ``fsync`` per the
log's policy). Done inline, it would cost the application thread that ends a span ~15 µs and serialise every thread
on a lock; batched on one thread it costs ~1.5 µs a span and nobody waits.

Failure policy. When an append raises :class:`~spanstore.errors.StorageError` or ``OSError`` (disk full, read-only
directory, lock timeout), the batch stays at the head and is retried with a doubling backoff capped at
:data:`RETRY_BACKOFF_MAX_SECONDS`; meanwhile spans keep queueing, and when the queue is full the oldest waiting span
is dropped and counted, so memory stays bounded and writes resume by themselves when the disk recovers. Any other
exception from ``append`` means the batch itself cannot be written (retrying would fail forever): it is dropped and
counted. Failures are logged at most once per :data:`LOG_INTERVAL_SECONDS` per kind.

Fork safety. After ``os.fork()`` the child gets a fresh lock, events and an empty queue (the spans queued before the
fork belong to the parent, which writes them); the writer thread is restarted lazily by the next :meth:`enqueue`,
:meth:`enqueue_many`, :meth:`flush`, :meth:`start` or :meth:`ensure_started` in the child.

Exit. ``multiprocessing`` children started with ``fork`` leave through ``os._exit``: no ``atexit`` handler (and so
not the SDK's shutdown) runs there. Every writer therefore registers a ``multiprocessing.util.Finalize``, renewed in
each forked ``multiprocessing`` child, that flushes it (up to :data:`EXIT_FLUSH_SECONDS`) when such a process ends
normally. A child killed by a signal (``Pool.terminate()``, which ``with Pool()`` calls) loses what it ended in its
last flush interval, as any process killed that way does.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

from spanstore import forksafe

if TYPE_CHECKING:
    from spanstore.log import SpanLog
    from spanstore.model import StoredSpan

__all__ = ["LOG_INTERVAL_SECONDS", "RETRY_BACKOFF_MAX_SECONDS", "LogWriter", "WriterStats"]

logger = logging.getLogger(__name__)

#: The longest wait between two attempts to append a batch that failed (the backoff doubles up to this).
RETRY_BACKOFF_MAX_SECONDS = 5.0
#: The first wait after a failed append.
RETRY_BACKOFF_INITIAL_SECONDS = 0.05
#: At most one log message per kind of trouble (append failure, drop, tick error) in this many seconds.
LOG_INTERVAL_SECONDS = 10.0
#: How long a process's exit waits for its writer to put the last spans on disk.
EXIT_FLUSH_SECONDS = 5.0


class WriterStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a :class:`LogWriter`'s counters (this process's only: a forked child starts from zero).

    ``queued`` counts spans waiting, the batch being appended included; ``dropped_spans`` counts spans that will never
    reach the log (queue full, writer closed, or a batch the log rejected as unwritable); ``failed_appends`` counts
    ``append`` calls that raised; ``tick_errors`` counts exceptions raised by ``on_tick``. ``last_error`` is the
    message of the latest failure and ``last_error_time`` its Unix time in seconds.
    """

    queued: int
    written_spans: int
    written_batches: int
    dropped_spans: int
    failed_appends: int
    tick_errors: int
    last_error: str | None
    last_error_time: float | None
    running: bool
    closed: bool

    def to_dict(self) -> dict[str, object]:
        """The stats as plain JSON-ready builtins."""
        return msgspec.to_builtins(self)


class RateLimitedLog:
    """Log a message at most once per ``interval_seconds`` per key, counting what was held back in between.

    Thread-safe (a race may let two messages through at once, which is harmless). Arguments are formatted lazily by
    ``logging``, only for messages that are emitted.

    >>> limit = RateLimitedLog(logging.getLogger("doc"), interval_seconds=60.0)
    >>> limit.allow("disk"), limit.allow("disk"), limit.allow("other")
    (0, None, 0)
    """

    __slots__ = ("_interval", "_last", "_logger", "_suppressed")

    def __init__(self, target: logging.Logger, interval_seconds: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger = target
        self._interval = interval_seconds
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None when a message for ``key`` was emitted recently; else how many were held back since the last."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def warning(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        """``logger.warning`` of ``message % args`` and the count held back, if allowed for ``key``."""
        held_back = self.allow(key)
        if held_back is not None:
            # Formatted here only for the messages that pass the limit.
            text = message % args if args else message
            self._logger.warning("%s (%d similar messages suppressed)", text, held_back, exc_info=exc_info)


class _FlushTicket:
    """One waiting :meth:`LogWriter.flush`: every span with a sequence number below ``target`` must be appended."""

    __slots__ = ("dropped", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.dropped = False


class LogWriter:
    """Append spans to a :class:`~spanstore.log.SpanLog` in batches, on a background thread.

    ``enqueue`` is O(1), never blocks on disk and never raises; it is meant for the store (which calls it for
    every span it keeps) but works on its own. At most ``max_queue`` spans wait (plus one batch being appended):
    when full, the oldest waiting span is dropped and counted in :meth:`stats`.

    Thread-safe: every method may be called from any thread. Fork-aware (see the module docstring).

    >>> import tempfile
    >>> from spanstore.log import SpanLog
    >>> from spanstore.model import StoredSpan
    >>> log = SpanLog(tempfile.mkdtemp())
    >>> writer = LogWriter(log, flush_interval_seconds=0.1)
    >>> writer.enqueue(StoredSpan(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    ...                           name="GET /cart", start_time_unix_nano=1_000, end_time_unix_nano=2_000))
    >>> writer.flush(timeout_seconds=10)
    True
    >>> writer.stats().written_spans, [span.name for span in log.read()[0]]
    (1, ['GET /cart'])
    >>> writer.close(); log.close()
    """

    def __init__(
        self,
        log: SpanLog,
        *,
        flush_interval_seconds: float = 0.5,
        max_batch: int = 1024,
        max_queue: int = 100_000,
        on_tick: Callable[[], object] | None = None,
    ) -> None:
        if not isinstance(flush_interval_seconds, (int, float)) or not flush_interval_seconds > 0:
            raise ValueError(f"flush_interval_seconds must be a positive number, got {flush_interval_seconds!r}")
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._log = log
        self._interval = float(flush_interval_seconds)
        self._max_batch = max_batch
        self._max_queue = max_queue
        # Wake the thread early once a full batch waits (or the queue is full, when it is smaller than a batch).
        self._wake_at = min(max_batch, max_queue)
        self._on_tick = on_tick
        self._closed = False
        self._limit = RateLimitedLog(logger)
        self._reset_state()
        forksafe.register(self)
        _flush_at_process_exit(self)

    def _after_fork_in_child(self) -> None:
        self._reset_state()

    def _reset_state(self) -> None:
        """Fresh synchronisation, an empty queue and zero counters (at start, and in a forked child)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # notified whenever spans leave the queue
        self._wake = threading.Event()  # interval over early: a full batch is waiting, or flush/close asked
        self._urgent = threading.Event()  # flush/close asked: also cuts a retry backoff short
        self._queue: collections.deque[StoredSpan] = collections.deque()
        self._queue_head_seq = 0  # sequence number of _queue[0]; spans are numbered in enqueue order
        self._inflight: list[StoredSpan] = []  # the batch being appended (or waiting to be retried)
        self._inflight_seq = 0  # sequence number of _inflight[0]
        self._tickets: list[_FlushTicket] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._written_spans = 0
        self._written_batches = 0
        self._dropped_spans = 0
        self._failed_appends = 0
        self._tick_errors = 0
        self._last_error: str | None = None
        self._last_error_time: float | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread is not None else "idle"
        return f"<LogWriter {state} queued={len(self._queue) + len(self._inflight)}>"

    # --- producers ----------------------------------------------------------------------------------------------
    def enqueue(self, span: StoredSpan) -> None:
        """Queue one span for appending. O(1); never blocks on disk, never raises.

        When ``max_queue`` spans already wait, the oldest waiting one is dropped (and counted). After :meth:`close`
        the span is dropped (and counted).
        """
        self._enqueue((span,))

    def enqueue_many(self, spans: Iterable[StoredSpan]) -> None:
        """Queue spans for appending, in one lock acquisition (see :meth:`enqueue`). O(len(spans))."""
        spans = tuple(spans)
        if spans:
            self._enqueue(spans)

    def _enqueue(self, spans: tuple[StoredSpan, ...]) -> None:
        with self._lock:
            if self._closed:
                self._dropped_spans += len(spans)
                closed, overflow = True, 0
            else:
                closed = False
                queue = self._queue
                queue.extend(spans)
                overflow = len(queue) - self._max_queue
                if overflow > 0:
                    self._drop_oldest_locked(overflow)
                if len(queue) >= self._wake_at and not self._wake.is_set():
                    self._wake.set()
                if self._thread is None:
                    self._start_locked()
        if closed or overflow > 0:  # logged outside the lock: a logging handler may end spans of its own
            self._warn_dropped(closed)

    def _drop_oldest_locked(self, count: int) -> None:
        queue = self._queue
        for _ in range(count):
            queue.popleft()
        first = self._queue_head_seq
        self._queue_head_seq += count
        self._dropped_spans += count
        if self._tickets:
            for ticket in self._tickets:
                if first < ticket.target:
                    ticket.dropped = True
            self._drained.notify_all()

    def _warn_dropped(self, closed: bool) -> None:
        if closed:
            self._limit.warning("closed", "spanstore: spans added after the log writer was closed are dropped")
        else:
            self._limit.warning(
                "queue-full",
                "spanstore: the write queue is full (max_queue=%d): dropping the oldest spans, %d dropped so far",
                self._max_queue,
                self._dropped_spans,
            )

    # --- the background thread ----------------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask the thread for a tick now (``on_tick``, then write) instead of at the end of its interval.

        O(1), never blocks, never raises; cheap enough for a hot path (one attribute read when already asked). Does
        not cut a retry backoff short. Starts the thread if it is not running (e.g. in a forked child).
        """
        wake = self._wake
        if not wake.is_set():
            wake.set()
        if self._thread is None and not self._closed:
            self.start()

    def ensure_started(self) -> None:
        """Start the writer thread unless it runs (or the writer is closed). One attribute read when it runs.

        Called for every span the store receives, so spans reach the disk within one flush interval from the first
        one, even in an application that ends only a few (the thread's wake-ups are time-based).
        """
        if self._thread is None and not self._closed:
            self.start()

    def start(self) -> None:
        """Start the writer thread if it is not running (idempotent; a no-op after :meth:`close`). O(1).

        Needed only in a forked child that wants its writes to begin before its next :meth:`enqueue`.
        """
        with self._lock:
            if self._thread is None and not self._closed:
                self._start_locked()

    def _start_locked(self) -> None:
        # The thread holds only a weak reference: a writer dropped without close() lets its thread end.
        thread = threading.Thread(
            target=_run, args=(weakref.ref(self), self._wake, self._urgent), name="spanstore-writer", daemon=True
        )
        self._thread = thread
        thread.start()

    def _tick(self) -> None:
        on_tick = self._on_tick
        if on_tick is None:
            return
        try:
            on_tick()
        except Exception as exc:  # the drain is the store's; a bug there must not stop the writes
            with self._lock:
                self._tick_errors += 1
                self._record_error_locked(exc)
            self._limit.warning("tick", "spanstore: on_tick raised %r", exc, exc_info=True)

    def _record_error_locked(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._last_error_time = time.time()

    def _write_pending(self) -> bool:
        """Append everything waiting, batch by batch. False when an append failed (the batch is kept for a retry)."""
        log = self._log
        while True:
            with self._lock:
                batch = self._inflight
                if not batch:
                    if not self._queue:
                        return True
                    queue = self._queue
                    count = min(self._max_batch, len(queue))
                    batch = self._inflight = [queue.popleft() for _ in range(count)]
                    self._inflight_seq = self._queue_head_seq
                    self._queue_head_seq += count
            try:
                log.append(batch)
            except OSError as exc:  # StorageError and LockTimeoutError are OSErrors: the disk may recover, retry
                if getattr(exc, "lines_written", False):
                    # The lines are in the file (only the fsync failed): a retry would write them twice.
                    with self._lock:
                        self._failed_appends += 1
                        self._record_error_locked(exc)
                    self._limit.warning("fsync", "spanstore: spans written but not synced to disk: %s", exc)
                    self._mark_written(batch)
                    continue
                with self._lock:
                    self._failed_appends += 1
                    self._record_error_locked(exc)
                    queued = len(self._queue) + len(self._inflight)
                self._limit.warning(
                    "append", "spanstore: appending to the log failed, will retry (%d spans queued): %s", queued, exc
                )
                return False
            except Exception as exc:  # the batch itself cannot be written: retrying would fail forever
                with self._lock:
                    self._failed_appends += 1
                    self._record_error_locked(exc)
                    self._dropped_spans += len(batch)
                    first = self._inflight_seq
                    for ticket in self._tickets:
                        if first < ticket.target:
                            ticket.dropped = True
                    self._inflight = []
                    self._drained.notify_all()
                self._limit.warning(
                    "unwritable", "spanstore: dropped a batch of %d spans the log rejected", len(batch), exc_info=True
                )
                continue
            self._mark_written(batch)

    def _mark_written(self, batch: list[StoredSpan]) -> None:
        with self._lock:
            self._written_spans += len(batch)
            self._written_batches += 1
            self._inflight = []
            if self._tickets:
                self._drained.notify_all()

    def _run_once(self) -> bool:
        """One tick of the thread: drain the store, write what waits. Returns the append outcome."""
        self._tick()
        return self._write_pending()

    # --- flush and close ----------------------------------------------------------------------------------------
    def _oldest_pending_seq_locked(self) -> int:
        if self._inflight:
            return self._inflight_seq
        return self._queue_head_seq  # == the next sequence number when the queue is empty

    def flush(self, timeout_seconds: float | None = None) -> bool:
        """Wait until every span enqueued before this call is appended to the log (per its fsync policy).

        Calls ``on_tick`` first, on this thread, so spans waiting in the store's inbox are included. Returns True
        when all of them were appended within ``timeout_seconds`` (None waits as long as it takes), False on timeout,
        when one of them was dropped, or when the writer is closed with spans left. Thread-safe; blocks only the
        caller. O(spans waiting) for the writer thread.
        """
        deadline = None if timeout_seconds is None else time.monotonic() + max(0.0, timeout_seconds)
        self._tick()
        with self._lock:
            target = self._queue_head_seq + len(self._queue)
            if self._oldest_pending_seq_locked() >= target:
                return True
            if self._closed or (self._thread is None and self._stopping):
                return False
            ticket = _FlushTicket(target)
            self._tickets.append(ticket)
            if self._thread is None:
                self._start_locked()
            try:
                self._urgent.set()
                self._wake.set()
                while self._oldest_pending_seq_locked() < target and not ticket.dropped:
                    if self._thread is None:  # stopped by close() meanwhile
                        break
                    if deadline is None:
                        self._drained.wait(1.0)
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._drained.wait(min(remaining, 1.0))
                return self._oldest_pending_seq_locked() >= target and not ticket.dropped
            finally:
                self._tickets.remove(ticket)

    def close(self, timeout_seconds: float | None = 30.0) -> None:
        """Flush (waiting up to ``timeout_seconds``), stop the thread. Idempotent; thread-safe.

        Spans still queued after the timeout (the disk never recovered) are dropped, counted and logged. Spans
        enqueued after close are dropped and counted.
        """
        with self._lock:
            if self._closed:
                return
        start = time.monotonic()
        flushed = self.flush(timeout_seconds)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            thread = self._thread
            self._urgent.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            remaining = None if timeout_seconds is None else max(0.0, timeout_seconds - (time.monotonic() - start))
            thread.join(remaining)
        with self._lock:
            self._thread = None
            left = len(self._queue) + len(self._inflight)
            if left:
                self._dropped_spans += left
                self._queue_head_seq += len(self._queue)
                self._queue.clear()
                self._inflight = []
            self._drained.notify_all()
        if left or not flushed:
            logger.warning("spanstore: the log writer closed with %d span(s) not written (see stats())", left)

    def stats(self) -> WriterStats:
        """A snapshot of the counters. O(1); thread-safe."""
        with self._lock:
            return WriterStats(
                queued=len(self._queue) + len(self._inflight),
                written_spans=self._written_spans,
                written_batches=self._written_batches,
                dropped_spans=self._dropped_spans,
                failed_appends=self._failed_appends,
                tick_errors=self._tick_errors,
                last_error=self._last_error,
                last_error_time=self._last_error_time,
                running=self._thread is not None,
                closed=self._closed,
            )


def _flush_at_process_exit(writer: LogWriter) -> None:
    """Flush ``writer`` when this process, or a ``multiprocessing`` child forked from it, ends normally."""
    import multiprocessing.util  # ~14 ms; imported only once a store has a log

    ref = weakref.ref(writer)

    def flush_if_alive() -> None:
        alive = ref()
        if alive is not None and not alive._closed:
            try:
                alive.flush(EXIT_FLUSH_SECONDS)
            except Exception:  # at exit there is nobody to raise to
                logger.exception("spanstore: flushing the log writer at process exit failed")

    multiprocessing.util.Finalize(writer, flush_if_alive, exitpriority=10)  # dropped with the writer
    # A forked multiprocessing child clears the finalizers it inherited, then runs these hooks: register again there.
    multiprocessing.util.register_after_fork(writer, _flush_at_process_exit)


def _run(ref: weakref.ReferenceType[LogWriter], wake: threading.Event, urgent: threading.Event) -> None:
    """The writer thread: tick, write, sleep; back off after a failed append; end on close or when dropped."""
    backoff = 0.0
    while True:
        writer = ref()
        if writer is None or writer._wake is not wake:  # dropped, or a forked child reset the writer
            return
        interval = writer._interval
        del writer
        if backoff:
            # Only flush/close cut a backoff short: a full batch must not turn a retry loop into a busy loop.
            urgent.wait(backoff)
        else:
            wake.wait(interval)
        urgent.clear()
        wake.clear()
        writer = ref()
        if writer is None or writer._wake is not wake:
            return
        try:
            ok = writer._run_once()
        except Exception:  # a bug here must not silently end all writes: log it and go on
            logger.exception("spanstore: unexpected error in the log writer thread")
            ok = False
        backoff = 0.0 if ok else min(RETRY_BACKOFF_MAX_SECONDS, max(RETRY_BACKOFF_INITIAL_SECONDS, backoff * 2))
        if writer._stopping:
            with writer._lock:
                if writer._thread is threading.current_thread():
                    writer._thread = None
                writer._drained.notify_all()
            return
        del writer
