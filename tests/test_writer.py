"""Tests for spanstore.writer: the write-behind queue between the store and the log."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from spanstore.errors import LockTimeoutError, StorageError
from spanstore.log import SpanLog
from spanstore.model import StoredSpan
from spanstore.writer import LogWriter, RateLimitedLog


def make_span(i: int) -> StoredSpan:
    return StoredSpan(
        trace_id=f"{i // 4 + 1:032x}",
        span_id=f"{i + 1:016x}",
        name=f"op-{i}",
        start_time_unix_nano=1_000 + i,
        end_time_unix_nano=2_000 + i,
    )


class FakeLog:
    """A SpanLog stand-in that records batches and can be made to fail or to block."""

    def __init__(self) -> None:
        self.batches: list[list[StoredSpan]] = []
        self.fault: BaseException | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        self._lock = threading.Lock()

    def append(self, spans):
        self.calls += 1
        self.gate.wait()
        if self.fault is not None:
            raise self.fault
        with self._lock:
            self.batches.append(list(spans))
        return len(spans)

    @property
    def spans(self) -> list[StoredSpan]:
        with self._lock:
            return [span for batch in self.batches for span in batch]

    def names(self) -> list[str]:
        return [span.name for span in self.spans]


@pytest.fixture
def fake_log() -> FakeLog:
    return FakeLog()


@pytest.fixture
def writers():
    """Close every writer a test made, so no thread outlives it."""
    made: list[LogWriter] = []
    yield made
    for writer in made:
        writer.close(timeout_seconds=0.5)


def new_writer(made: list[LogWriter], log, **options) -> LogWriter:
    options.setdefault("flush_interval_seconds", 60.0)  # ticks only when a test asks, unless it sets otherwise
    writer = LogWriter(log, **options)
    made.append(writer)
    return writer


def test_flush_appends_every_enqueued_span_in_order(fake_log, writers):
    """flush() returns True once every span enqueued before it is appended, in enqueue order."""
    writer = new_writer(writers, fake_log)
    for i in range(2500):
        writer.enqueue(make_span(i))
    assert writer.flush(timeout_seconds=10)
    assert fake_log.names() == [f"op-{i}" for i in range(2500)]
    stats = writer.stats()
    assert (stats.queued, stats.written_spans, stats.dropped_spans, stats.failed_appends) == (0, 2500, 0, 0)
    assert stats.written_batches == len(fake_log.batches)


def test_batches_hold_at_most_max_batch_spans(fake_log, writers):
    """Appends are cut into batches of at most max_batch spans."""
    writer = new_writer(writers, fake_log, max_batch=100)
    writer.enqueue_many(make_span(i) for i in range(1050))
    assert writer.flush(timeout_seconds=10)
    assert max(len(batch) for batch in fake_log.batches) <= 100
    assert len(fake_log.spans) == 1050


def test_a_full_batch_wakes_the_thread_before_the_interval(fake_log, writers):
    """When max_batch spans wait, the thread writes them without waiting for the (long) interval."""
    writer = new_writer(writers, fake_log, max_batch=10, flush_interval_seconds=3600)
    for i in range(10):
        writer.enqueue(make_span(i))
    deadline = time.monotonic() + 10
    while len(fake_log.spans) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(fake_log.spans) == 10


def test_the_interval_writes_without_a_flush(fake_log, writers):
    """A lone span reaches the log on the next tick, with nobody calling flush()."""
    writer = new_writer(writers, fake_log, flush_interval_seconds=0.02)
    writer.enqueue(make_span(0))
    deadline = time.monotonic() + 10
    while not fake_log.spans and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake_log.names() == ["op-0"]


def test_wake_runs_a_tick_before_the_interval(fake_log, writers):
    """wake() makes the thread tick (drain and write) now rather than at the end of its interval."""
    inbox = [make_span(0)]
    holder: list[LogWriter] = []
    ticked = threading.Event()

    def drain() -> None:
        while inbox:
            holder[0].enqueue(inbox.pop())
        ticked.set()

    writer = new_writer(writers, fake_log, on_tick=drain, flush_interval_seconds=3600)
    holder.append(writer)
    writer.wake()  # also starts the thread
    assert ticked.wait(10)
    deadline = time.monotonic() + 10
    while not fake_log.spans and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake_log.names() == ["op-0"]


def test_the_thread_starts_lazily(fake_log, writers):
    """No thread runs until the first span is enqueued (or start/flush is called)."""
    writer = new_writer(writers, fake_log)
    assert not writer.stats().running
    assert writer.flush(timeout_seconds=1)  # nothing to write: no thread needed
    assert not writer.stats().running
    writer.enqueue(make_span(0))
    assert writer.stats().running


def test_a_full_queue_drops_the_oldest_waiting_spans_and_counts_them(fake_log, writers):
    """Beyond max_queue waiting spans the oldest are dropped, counted exactly; the newest max_queue survive."""
    writer = new_writer(writers, fake_log, max_batch=1000, max_queue=10)
    fake_log.gate.clear()  # the thread blocks inside its first append
    for i in range(25):
        writer.enqueue(make_span(i))
    fake_log.gate.set()
    writer.flush(timeout_seconds=10)
    stats = writer.stats()
    written = fake_log.names()
    assert stats.dropped_spans + stats.written_spans == 25
    assert len(written) == stats.written_spans
    assert written == sorted(written, key=lambda name: int(name[3:]))  # order kept, no duplicates
    assert set(written) >= {f"op-{i}" for i in range(15, 25)}  # the newest max_queue are never dropped
    assert stats.queued == 0


def test_a_storage_error_is_retried_until_the_disk_recovers(fake_log, writers, caplog):
    """A failing append (disk full) keeps the spans queued, never raises, and writes them all once cleared."""
    writer = new_writer(writers, fake_log)
    fake_log.fault = StorageError("No space left on device: spans-000001.jsonl")
    with caplog.at_level(logging.WARNING, logger="spanstore.writer"):
        for i in range(50):
            writer.enqueue(make_span(i))
        assert writer.flush(timeout_seconds=0.2) is False
    stats = writer.stats()
    assert stats.failed_appends >= 1 and stats.queued == 50 and stats.written_spans == 0
    assert "No space left" in (stats.last_error or "") and stats.last_error_time is not None
    assert sum("appending to the log failed" in record.getMessage() for record in caplog.records) == 1
    fake_log.fault = None
    assert writer.flush(timeout_seconds=10)
    assert fake_log.names() == [f"op-{i}" for i in range(50)]
    assert writer.stats().dropped_spans == 0


def test_a_failed_fsync_after_a_complete_write_is_not_retried(fake_log, writers, caplog):
    """When the lines reached the file and only the fsync failed, the batch is not appended again (no duplicates)."""
    writer = new_writer(writers, fake_log)
    error = StorageError("fsync failed: Input/output error")
    error.lines_written = True  # as SpanLog.append marks it
    fake_log.fault = error
    with caplog.at_level(logging.WARNING, logger="spanstore.writer"):
        writer.enqueue(make_span(1))
        assert writer.flush(timeout_seconds=5)
    assert fake_log.calls == 1
    stats = writer.stats()
    assert (stats.written_spans, stats.failed_appends, stats.queued) == (1, 1, 0)
    assert any("written but not synced" in record.getMessage() for record in caplog.records)


def test_a_lock_timeout_is_retried_too(fake_log, writers):
    """LockTimeoutError (another process holds the lock too long) is a transient failure: retried, not dropped."""
    writer = new_writer(writers, fake_log)
    fake_log.fault = LockTimeoutError("lock on /tmp/x not acquired within 10 s")
    writer.enqueue(make_span(0))
    assert not writer.flush(timeout_seconds=0.1)
    fake_log.fault = None
    assert writer.flush(timeout_seconds=10)
    assert fake_log.names() == ["op-0"]


def test_an_unwritable_batch_is_dropped_and_later_spans_still_written(fake_log, writers, caplog):
    """An append failing with a non-OS error (the batch cannot be encoded) drops that batch only, counted."""
    writer = new_writer(writers, fake_log)
    fake_log.fault = ValueError("cannot encode")
    writer.enqueue_many(make_span(i) for i in range(3))
    with caplog.at_level(logging.WARNING, logger="spanstore.writer"):
        assert writer.flush(timeout_seconds=10) is False  # its spans were dropped, not appended
    fake_log.fault = None
    writer.enqueue(make_span(3))
    assert writer.flush(timeout_seconds=10)
    stats = writer.stats()
    assert (stats.dropped_spans, stats.written_spans, stats.failed_appends) == (3, 1, 1)
    assert fake_log.names() == ["op-3"]


def test_on_tick_runs_on_every_tick_and_before_a_flush(fake_log, writers):
    """on_tick runs before flush() takes its snapshot, so spans it enqueues are included."""
    inbox: list[StoredSpan] = [make_span(i) for i in range(5)]
    holder: list[LogWriter] = []

    def drain() -> None:
        while inbox:
            holder[0].enqueue(inbox.pop(0))

    writer = new_writer(writers, fake_log, on_tick=drain)
    holder.append(writer)
    assert writer.flush(timeout_seconds=10)
    assert fake_log.names() == [f"op-{i}" for i in range(5)]


def test_on_tick_errors_are_counted_not_raised(fake_log, writers, caplog):
    """An exception from on_tick is counted and logged; the writer keeps writing."""

    def broken() -> None:
        raise RuntimeError("drain bug")

    writer = new_writer(writers, fake_log, on_tick=broken, flush_interval_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="spanstore.writer"):
        writer.enqueue(make_span(0))
        assert writer.flush(timeout_seconds=10)
    stats = writer.stats()
    assert stats.tick_errors >= 1 and "drain bug" in (stats.last_error or "")
    assert fake_log.names() == ["op-0"]


def test_flush_is_false_when_a_span_it_waits_for_is_dropped(fake_log, writers):
    """A span enqueued before flush() but dropped (queue full during a fault) makes that flush return False."""
    writer = new_writer(writers, fake_log, max_batch=2, max_queue=4)
    fake_log.fault = StorageError("read-only file system")
    writer.enqueue_many(make_span(i) for i in range(4))
    result: list[bool] = []
    flusher = threading.Thread(target=lambda: result.append(writer.flush(timeout_seconds=10)))
    flusher.start()
    deadline = time.monotonic() + 10
    while not (writer.stats().failed_appends and writer._tickets) and time.monotonic() < deadline:
        time.sleep(0.005)  # until the append has failed and the flush is waiting
    writer.enqueue_many(make_span(i) for i in range(4, 12))  # overflows: drops waiting spans the flush waits for
    fake_log.fault = None
    flusher.join(10)
    assert result == [False]
    assert writer.flush(timeout_seconds=10)
    stats = writer.stats()
    assert stats.written_spans + stats.dropped_spans == 12 and stats.dropped_spans > 0


def test_close_flushes_stops_the_thread_and_is_idempotent(fake_log):
    """close() writes what is queued, stops the thread; a second close is a no-op; later spans are counted drops."""
    writer = LogWriter(fake_log, flush_interval_seconds=60)
    writer.enqueue_many(make_span(i) for i in range(10))
    writer.close()
    writer.close()
    assert len(fake_log.spans) == 10
    stats = writer.stats()
    assert stats.closed and not stats.running
    assert not any(thread.name == "spanstore-writer" and thread.is_alive() for thread in _threads_of(writer))
    writer.enqueue(make_span(10))
    writer.enqueue_many([make_span(11)])
    assert writer.stats().dropped_spans == 2
    assert writer.flush(timeout_seconds=0.1)


def test_close_gives_up_after_its_timeout_and_counts_what_is_left(fake_log):
    """close() during a fault that never clears returns after its timeout, counting the spans left as dropped."""
    writer = LogWriter(fake_log, flush_interval_seconds=60)
    fake_log.fault = StorageError("disk full")
    writer.enqueue_many(make_span(i) for i in range(7))
    writer.close(timeout_seconds=0.2)
    stats = writer.stats()
    assert stats.closed and stats.dropped_spans == 7 and stats.queued == 0


def test_a_writer_dropped_without_close_lets_its_thread_end(fake_log):
    """The thread holds the writer weakly: forgetting a writer ends its thread within an interval."""
    writer = LogWriter(fake_log, flush_interval_seconds=0.01)
    writer.enqueue(make_span(0))
    assert writer.flush(timeout_seconds=10)
    thread = writer._thread
    assert thread is not None
    ref = weakref.ref(writer)
    del writer
    gc.collect()
    assert ref() is None
    thread.join(10)
    assert not thread.is_alive()


def test_many_threads_enqueue_each_span_exactly_once(fake_log, writers):
    """Spans enqueued from 8 threads at once are all appended, each exactly once."""
    writer = new_writer(writers, fake_log, max_batch=64, flush_interval_seconds=0.01)

    def produce(offset: int) -> None:
        for i in range(offset, offset + 2000):
            writer.enqueue(make_span(i))

    threads = [threading.Thread(target=produce, args=(k * 2000,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(timeout_seconds=30)
    names = fake_log.names()
    assert len(names) == len(set(names)) == 16_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flush_interval_seconds": 0}, "flush_interval_seconds must be a positive number, got 0"),
        ({"max_batch": 0}, "max_batch must be a positive int, got 0"),
        ({"max_queue": True}, "max_queue must be a positive int, got True"),
    ],
)
def test_bad_options_are_rejected_with_what_was_got(fake_log, options, message):
    """Invalid sizes raise ValueError naming the option and the value."""
    with pytest.raises(ValueError, match=message):
        LogWriter(fake_log, **options)


def test_rate_limited_log_emits_once_per_interval_and_counts_the_rest(caplog):
    """RateLimitedLog lets one message per key through per interval and reports how many it held back."""
    limit = RateLimitedLog(logging.getLogger("spanstore.test"), interval_seconds=3600)
    with caplog.at_level(logging.WARNING, logger="spanstore.test"):
        for i in range(5):
            limit.warning("k", "failure %d", i)
        limit.warning("other", "other failure")
    assert [record.getMessage() for record in caplog.records] == [
        "failure 0 (0 similar messages suppressed)",
        "other failure (0 similar messages suppressed)",
    ]
    limit._interval = 0
    with caplog.at_level(logging.WARNING, logger="spanstore.test"):
        limit.warning("k", "failure %d", 5)
    assert caplog.records[-1].getMessage() == "failure 5 (4 similar messages suppressed)"


def test_real_log_round_trip(tmp_path, writers):
    """Spans written through a real SpanLog read back equal, in order."""
    log = SpanLog(tmp_path / "store")
    try:
        writer = new_writer(writers, log, max_batch=128)
        spans = [make_span(i) for i in range(1000)]
        writer.enqueue_many(spans)
        assert writer.flush(timeout_seconds=30)
        read, _ = log.read()
        assert read == spans
    finally:
        for writer in writers:
            writer.close()
        log.close()


def _threads_of(writer: LogWriter) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "spanstore-writer"]


class WriterMachine(RuleBasedStateMachine):
    """Random enqueues, faults and flushes: the writer's counts always add up and the log stays an ordered set."""

    def __init__(self) -> None:
        super().__init__()
        self.log = FakeLog()
        self.writer = LogWriter(self.log, flush_interval_seconds=0.005, max_batch=7, max_queue=20)
        self.enqueued = 0

    @rule(count=st.integers(1, 30))
    def enqueue(self, count: int) -> None:
        if count % 2:
            for _ in range(count):
                self.writer.enqueue(make_span(self.enqueued))
                self.enqueued += 1
        else:
            self.writer.enqueue_many(make_span(self.enqueued + i) for i in range(count))
            self.enqueued += count

    @rule()
    def fail(self) -> None:
        self.log.fault = StorageError("disk full")

    @rule()
    def recover(self) -> None:
        self.log.fault = None

    @precondition(lambda self: self.log.fault is None)
    @rule()
    def flush(self) -> None:
        before = self.writer.stats().dropped_spans
        flushed = self.writer.flush(timeout_seconds=30)
        stats = self.writer.stats()
        assert stats.queued == 0
        assert flushed or stats.dropped_spans > before

    @invariant()
    def counts_add_up(self) -> None:
        stats = self.writer.stats()  # one snapshot under the writer's lock: every span is in exactly one count
        assert stats.written_spans + stats.dropped_spans + stats.queued == self.enqueued
        assert stats.queued <= 20 + 7  # max_queue waiting plus one batch in flight
        written = [int(span.name[3:]) for span in self.log.spans]
        assert written == sorted(set(written))  # order kept, never twice
        assert len(written) >= stats.written_spans  # read after the snapshot: the thread may have written more

    def teardown(self) -> None:
        self.log.fault = None
        self.writer.close(timeout_seconds=10)
        stats = self.writer.stats()
        assert stats.written_spans + stats.dropped_spans == self.enqueued
        assert len(self.log.spans) == stats.written_spans


WriterMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_writer_state_machine = WriterMachine.TestCase
