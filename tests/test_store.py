"""SpanStore: indices, FIFO eviction by trace, budgets, stats, thread safety, checked against a brute-force model."""

from __future__ import annotations

import operator
import threading
from pathlib import Path
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import spanstore.query as query_module
from spanstore import (
    AttributeMap,
    InvalidQueryError,
    InvalidSpanError,
    SpanStore,
    StatusCode,
    StoreClosedError,
    StoredSpan,
)
from spanstore.columns import CHUNK_ROWS, RUN_ROWS, posting_seqs
from spanstore.query import get_trace, query_spans
from spanstore.store import StoreStats
from tests.model_reference import ReferenceStore, estimated_bytes
from tests.span_factory import NOW as NOW_SECONDS
from tests.span_factory import TRACE_IDS, criteria, matching_criteria, spans, to_query_kwargs

NOW = 10**18  # queries with `last` resolve against the wall clock; the generated spans sit near the epoch


def same_spans(got: list[StoredSpan], want: list[StoredSpan]) -> bool:
    """Results are fresh objects built from packed rows: equal field by field (repr: exact types, NaN), in order."""
    return [repr(s) for s in got] == [repr(s) for s in want]


def make_span(trace: int, span: int, *, start: int = 0, duration: int = 10, **fields) -> StoredSpan:
    return StoredSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        name=fields.pop("name", "op"),
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        **fields,
    )


def _counts(stats: StoreStats) -> dict:
    """A store's stats without what describes the process rather than the spans (reads made, the index used)."""
    counts = stats.to_dict()
    for key in ("log", "writer", "index"):
        counts.pop(key)
    return counts


class StoreMachine(RuleBasedStateMachine):
    """Random adds, queries, traces and reopens; every answer equals the reference model's."""

    @initialize(
        max_spans=st.integers(1, 40),
        max_bytes=st.sampled_from([10**9, 2_000, 5_000]),
        cap=st.integers(1, 12),
        persistent=st.booleans(),
        segment_bytes=st.sampled_from([16 << 20, 700, 3000]),
    )
    def setup(self, max_spans: int, max_bytes: int, cap: int, persistent: bool, segment_bytes: int) -> None:
        import tempfile

        self.limits = dict(max_spans=max_spans, max_bytes=max_bytes, max_spans_per_trace=cap)
        self.directory = tempfile.TemporaryDirectory() if persistent else None
        self.path = self.directory.name + "/store" if self.directory else None
        # Small segments: reopens go through index files of sealed segments (see reopen).
        self.log_options = dict(segment_max_bytes=segment_bytes, disk_max_bytes=None)
        self.store = SpanStore(self.path, **self.limits, **self.log_options)
        self.model = ReferenceStore(**self.limits)
        self.written: list[StoredSpan] = []  # what the log holds, in order

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        if getattr(self, "directory", None):
            self.directory.cleanup()

    @rule(span=spans())
    def add(self, span: StoredSpan) -> None:
        kept = self.store.add(span)
        assert kept == self.model.add(span)
        if kept:
            self.written.append(span)

    @rule(trace_id=st.sampled_from(TRACE_IDS), data=st.data())
    def add_many(self, trace_id: str, data: st.DataObject) -> None:
        batch = data.draw(st.lists(spans(trace_id=trace_id), min_size=1, max_size=6))
        kept = [span for span in batch if self.model.add(span)]
        assert self.store.add_many(batch) == len(kept)
        self.written.extend(kept)

    @rule(c=criteria())
    def query(self, c: dict) -> None:
        got = query_spans(self.store, **to_query_kwargs(c))
        want = self.model.query(c, NOW)
        assert same_spans(got, want), (got, want)

    @precondition(lambda self: hasattr(self, "model") and self.model.spans)
    @rule(data=st.data())
    def query_drawn_from_stored(self, data: st.DataObject) -> None:
        """A query built from the spans held now (after evictions and reopens), ``last`` against a fixed clock."""
        c = data.draw(matching_criteria(self.model.spans))
        with mock.patch.object(query_module, "now_unix_nano", lambda: NOW_SECONDS):
            got = query_spans(self.store, **to_query_kwargs(c))
        assert same_spans(got, self.model.query(c, NOW_SECONDS)), c

    @rule(trace_id=st.sampled_from(TRACE_IDS))
    def trace(self, trace_id: str) -> None:
        assert same_spans(get_trace(self.store, trace_id), self.model.trace(trace_id))

    @precondition(lambda self: self.path is not None)
    @rule()
    def reopen(self) -> None:
        """Closing and reopening loads the newest spans of the log through the same budgets.

        The log holds every kept span; within one written batch it groups spans by resource (as OTLP lines do), so
        the arrival order after a reopen is the log's order.
        """
        from spanstore.log import SpanLog

        self.store.close()
        with SpanLog(self.path) as log:
            logged, _ = log.read()
        assert sorted(map(repr, logged)) == sorted(map(repr, self.written))
        for index_file in Path(self.path).glob("index-*.spanstore"):
            index_file.unlink()  # a full replay first, for the model below
        self.store = SpanStore(self.path, **self.limits, **self.log_options)
        self.model = ReferenceStore(**self.limits)
        newest = logged[-self.limits["max_spans"] :]
        total = 0  # replay also stops at the byte budget: the newest spans up to the one that crosses it
        for index in range(len(newest) - 1, -1, -1):
            total += estimated_bytes(newest[index])
            if total >= self.limits["max_bytes"]:
                newest = newest[index:]
                break
        for span in newest:
            self.model.add(span)
        assert sorted(map(repr, self.store.spans())) == sorted(map(repr, self.model.spans))
        self.written = list(logged)
        # Then the open the next process makes: from the index file that replay wrote (when segments were sealed),
        # decoding only the live segment. It must hold the same spans, in the same order, with the same counts.
        replayed_spans = [repr(span) for span in self.store.spans()]
        replayed_stats = self.store.stats()
        self.store.close()
        self.store = SpanStore(self.path, **self.limits, **self.log_options)
        assert [repr(span) for span in self.store.spans()] == replayed_spans
        assert _counts(self.store.stats()) == _counts(replayed_stats)
        if replayed_stats.index["written"]:
            assert self.store.stats().index["loaded"] is not None

    @invariant()
    def consistent(self) -> None:
        if hasattr(self, "store"):
            self.store._check()
            assert len(self.store) == len(self.model.spans)
            stats = self.store.stats()
            assert stats.error_span_count == self.model.errors()
            assert stats.trace_count == len(self.model.trace_order)


StoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreMachine = StoreMachine.TestCase


def test_eviction_removes_the_oldest_trace_whole() -> None:
    """When the span budget is exceeded, every span of the first-arrived trace leaves together."""
    store = SpanStore(max_spans=4)
    for i in range(3):
        store.add(make_span(1, i + 1, start=i))
    store.add(make_span(2, 10, start=100))
    store.add(make_span(2, 11, start=101))
    assert get_trace(store, f"{1:032x}") == []
    assert [s.span_id for s in get_trace(store, f"{2:032x}")] == [f"{10:016x}", f"{11:016x}"]
    stats = store.stats()
    assert (stats.evicted_traces, stats.evicted_spans, stats.span_count, stats.added_spans) == (1, 3, 2, 5)
    store._check()


def test_spans_beyond_the_per_trace_cap_are_dropped_and_counted() -> None:
    """A runaway trace keeps its first max_spans_per_trace spans; the rest are dropped and counted."""
    store = SpanStore(max_spans_per_trace=3)
    results = [store.add(make_span(1, i + 1, start=i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert store.stats().dropped_spans_trace_cap == 2
    assert len(get_trace(store, f"{1:032x}")) == 3


def test_memory_budget_evicts_by_estimate() -> None:
    """Spans of very unequal sizes under a byte budget: after every add the estimate is the independently computed
    sum of the held spans, stays within the budget, and the oldest traces left whole, as many as the budget needed."""
    import random

    from tests.model_reference import estimated_bytes

    rng = random.Random(13)
    budget = 20_000
    store = SpanStore(max_bytes=budget)
    model = ReferenceStore(max_spans=10**6, max_bytes=budget, max_spans_per_trace=10**6)
    payloads = [
        lambda n: "s" * n,
        lambda n: b"b" * n,
        lambda n: tuple(range(n // 10)),
        lambda n: AttributeMap.of({"inner": "m" * n, "n": n}),
        lambda n: 1.5,
    ]
    multi_evictions = 0
    for i in range(300):
        size = rng.choice([0, 10, 100, 1_000, 4_000, 12_000])
        attributes = AttributeMap.of({"payload": rng.choice(payloads)(size)})
        span = make_span(i // rng.choice([1, 2, 3]) + 1, i + 1, start=i, attributes=attributes)
        before = model.evicted_traces
        assert store.add(span) == model.add(span)
        multi_evictions += model.evicted_traces - before >= 2
        stats = store.stats()
        assert stats.memory_estimate_bytes == model.bytes <= budget
        assert stats.evicted_traces == model.evicted_traces
        assert same_spans(store.spans(), model.spans)
    assert multi_evictions >= 10  # a big span arriving after small ones must push out several traces at once
    sizes = {estimated_bytes(s) for s in model.spans}
    assert max(sizes) > 10 * min(sizes)
    store._check()


def test_refresh_loads_what_another_store_appended(tmp_path) -> None:
    """refresh() adds the spans another store wrote to the same directory since the last open or refresh, once
    each, skipping the spans this store wrote itself; a memory-only store has nothing to refresh."""
    path = tmp_path / "store"
    with SpanStore(path) as reader, SpanStore(path) as writer:
        reader.add(make_span(1, 1, start=1))
        assert reader.flush(timeout_seconds=30)
        writer.add_many([make_span(2, 2, start=2), make_span(2, 3, start=3), make_span(3, 4, start=4)])
        assert writer.flush(timeout_seconds=30)
        assert reader.refresh() == 3  # its own span came back from the log too, and was recognised
        assert sorted(int(s.span_id, 16) for s in reader.spans()) == [1, 2, 3, 4]
        assert reader.refresh() == 0
        writer.add(make_span(2, 5, start=5))
        assert writer.flush(timeout_seconds=30)
        assert reader.refresh() == 1
        assert [int(s.span_id, 16) for s in get_trace(reader, f"{2:032x}")] == [2, 3, 5]
        reader._check()
    assert SpanStore().refresh() == 0


def test_refresh_reads_only_what_was_appended_since_the_last_one(tmp_path) -> None:
    """A second refresh() with nothing new appended adds nothing, even after the budget evicted spans the first one
    loaded: it reads on from where the last one stopped, not the whole log again."""
    path = tmp_path / "store"
    with SpanStore(path, max_spans=2) as reader, SpanStore(path) as writer:
        writer.add_many([make_span(trace, trace, start=trace) for trace in (1, 2, 3)])
        assert writer.flush(timeout_seconds=30)
        assert reader.refresh() == 3
        held = [s.span_id for s in reader.spans()]
        assert len(held) == 2
        assert reader.refresh() == 0
        assert [s.span_id for s in reader.spans()] == held
        writer.add(make_span(4, 4, start=4))
        assert writer.flush(timeout_seconds=30)
        assert reader.refresh() == 1
        assert sorted(int(s.span_id, 16) for s in reader.spans()) == [3, 4]


@pytest.mark.parametrize("field", ["start_time_unix_nano", "end_time_unix_nano"])
@pytest.mark.parametrize("bad", [-1, 2**64, 1.5])
def test_one_time_out_of_range_is_refused_naming_its_field(field: str, bad: object) -> None:
    """One of the two times outside 0..2**64-1 (or not an int), the other fine: the span is refused with an
    InvalidSpanError that names the field, and the store is unchanged."""
    store = SpanStore()
    span = msgspec.structs.replace(make_span(1, 1, start=5), **{field: bad})
    with pytest.raises(InvalidSpanError, match=field):
        store.add(span)
    assert len(store) == 0
    store._check()


def test_close_without_a_timeout_waits_until_everything_is_written(tmp_path) -> None:
    """close(timeout_seconds=None) waits as long as it takes: every span added before it is on disk after it."""
    path = tmp_path / "store"
    store = SpanStore(path)
    store.add_many([make_span(1, i, start=i) for i in range(1, 6)])
    store.close(timeout_seconds=None)
    with SpanStore(path) as reopened:
        assert sorted(int(s.span_id, 16) for s in reopened.spans()) == [1, 2, 3, 4, 5]


def test_close_returns_within_its_timeout_while_the_directory_lock_is_held(tmp_path) -> None:
    """close(timeout_seconds) returns about then even while another holder keeps the directory lock (the log's close
    included): the spans not yet written are dropped, not waited for."""
    import time

    import portalocker

    path = tmp_path / "store"
    store = SpanStore(path, flush_interval_seconds=0.05)
    store.add_many([make_span(1, i, start=i) for i in range(1, 4)])
    assert store.flush(timeout_seconds=10)
    with open(path / "spanstore.lock", "a") as holder:
        portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
        store.add_many([make_span(2, i, start=i) for i in range(4, 7)])
        time.sleep(0.2)  # the writer is now waiting for the lock, in the middle of an append
        closer = threading.Thread(target=store.close, kwargs={"timeout_seconds": 0.5})
        started = time.monotonic()
        closer.start()
        closer.join(timeout=5)
        returned = not closer.is_alive()
        elapsed = time.monotonic() - started
        portalocker.unlock(holder)
    closer.join()
    assert returned and elapsed < 3.0, elapsed  # 0.5 s asked; the margin is for a loaded machine
    with SpanStore(path) as reopened:
        held = sorted(int(s.span_id, 16) for s in reopened.spans())
    # The batch the writer had taken before close gave up is written whole once the lock frees, or not at all
    # (whether it had been taken by then is timing); never in part, and nothing flushed before is lost.
    assert held in ([1, 2, 3], [1, 2, 3, 4, 5, 6]), held


def test_disk_max_bytes_is_the_retention_of_the_store_log(tmp_path) -> None:
    """disk_max_bytes bounds the store's directory: at the next append the oldest segments past it are deleted (never
    the one being written)."""
    from spanstore.log import SpanLog, segment_name

    path = tmp_path / "store"
    with SpanLog(path, fsync="never", segment_max_bytes=1) as log:
        for i in range(1, 6):
            log.append([make_span(i, i, start=i, name="n" * 500)])
    with SpanStore(path, disk_max_bytes=2048, fsync="never") as store:
        store.add(make_span(10, 10, start=10))
        assert store.flush(timeout_seconds=30)
        log_stats = store.stats().log
    assert log_stats["segments_deleted"] >= 1 and log_stats["disk_bytes"] <= 2048
    assert not (path / segment_name(1)).exists() and (path / segment_name(5)).exists()


def test_stats_of_a_persistent_store_name_its_path_log_and_writer(tmp_path) -> None:
    """A store with a directory reports where it is, and its log's and writer's counters."""
    path = tmp_path / "store"
    with SpanStore(path) as store:
        store.add(make_span(1, 1))
        assert store.flush(timeout_seconds=30)
        stats = store.stats()
        assert stats.path == str(path)
        assert stats.log is not None and stats.log["spans_appended"] == 1
        assert stats.writer is not None and stats.writer["written_spans"] == 1
    memory = SpanStore().stats()
    assert (memory.path, memory.log, memory.writer) == (None, None, None)


def test_stats_report_services_time_range_and_errors() -> None:
    """stats() summarizes what a user asks first: how many, which services, when, how many failed."""
    from spanstore import AttributeMap, Resource

    web = Resource(attributes=AttributeMap.of({"service.name": "web"}))
    store = SpanStore()
    store.add(make_span(1, 1, start=5, resource=web, status_code=StatusCode.ERROR))
    store.add(make_span(1, 2, start=9))
    stats = store.stats()
    assert stats.services == {"unknown_service": 1, "web": 1}
    assert (stats.oldest_start_time_unix_nano, stats.newest_start_time_unix_nano) == (5, 9)
    assert stats.error_span_count == 1
    assert stats.to_dict()["span_count"] == 2


def test_results_are_immutable_and_fresh() -> None:
    """A caller cannot change the store through a result: spans are frozen and result lists are copies."""
    store = SpanStore()
    store.add(make_span(1, 1))
    result = query_spans(store)
    result.clear()
    assert len(query_spans(store)) == 1
    with pytest.raises(AttributeError):
        query_spans(store)[0].name = "changed"  # type: ignore[misc]


def test_bad_budgets_raise_clear_errors() -> None:
    """Budgets must be positive ints; the message says what was got."""
    with pytest.raises(InvalidQueryError, match="max_spans must be a positive int, got 0"):
        SpanStore(max_spans=0)
    with pytest.raises(TypeError, match="expects a StoredSpan, got dict"):
        SpanStore().add({"name": "x"})  # type: ignore[arg-type]


def test_closed_store_refuses_use() -> None:
    """After close(), queries and adds raise StoreClosedError; close() again is a no-op."""
    store = SpanStore()
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        query_spans(store)
    with pytest.raises(StoreClosedError):
        store.add(make_span(1, 1))


def test_clear_forgets_everything() -> None:
    """clear() empties memory and every index."""
    store = SpanStore()
    store.add(make_span(1, 1))
    store.clear()
    assert len(store) == 0 and query_spans(store) == []
    store._check()


def test_compaction_keeps_indices_exact_through_a_long_eviction_run() -> None:
    """Many evictions trigger posting-list compaction; the indices stay exact and queries stay right."""
    from spanstore import AttributeMap

    store = SpanStore(max_spans=500)
    for i in range(20_000):
        attributes = AttributeMap.of({"n": i % 7, "route": f"/r{i % 3}"})
        store.add(make_span(i // 4 + 1, i + 1, start=i, attributes=attributes))
    store._check()
    newest = query_spans(store, attributes={"n": 3}, limit=5)
    assert [s.attributes["n"] for s in newest] == [3] * 5
    assert newest[0].start_time_unix_nano == max(i for i in range(20_000) if i % 7 == 3)
    assert sum(len(posting_seqs(v)) for v in store._columns.by_name.values()) < 2 * 500 + 4096
    assert len(store._columns.chunks) <= 2 + 500 // CHUNK_ROWS  # chunks of evicted rows are freed whole
    with store._lock:
        store._compact_locked()
    assert store._columns.dead_high == -1
    store._check()  # and so no posting list holds a dead row


def test_compaction_drops_every_dead_row_when_traces_interleave() -> None:
    """Spans of concurrent traces arrive interleaved, so evicting the oldest trace leaves holes between live rows:
    compaction filters them out of every posting list, and queries see only live spans."""
    from spanstore import AttributeMap

    store = SpanStore(max_spans=500)
    for i in range(20_000):
        trace = (i // 12) * 3 + i % 3 + 1  # three traces at a time, their spans alternating
        attributes = AttributeMap.of({"n": i % 7, "user": f"u{i % 501}"})
        store.add(make_span(trace, i + 1, start=i, attributes=attributes))
        if i % 4999 == 0:
            with store._lock:
                store._compact_locked()
            store._check()
    with store._lock:
        store._compact_locked()
    store._check()
    held = query_spans(store)
    assert 0 < len(held) <= 500
    found = query_spans(store, attributes={"user": "u7"})
    assert found and [s.span_id for s in found] == [s.span_id for s in held if s.attributes["user"] == "u7"]


def test_seqs_are_renumbered_before_they_overflow() -> None:
    """Seqs are 32-bit: when they would overflow, the rows held are renumbered from 0 and every index follows."""
    store = SpanStore(max_spans=700)
    store._columns.seq_limit = 3 * CHUNK_ROWS
    for i in range(12_000):
        attributes = AttributeMap.of({"n": i % 7, "route": f"/r{i % 3}", "ratio": i / 7})
        store.add(make_span(i // 4 + 1, i + 1, start=i, attributes=attributes))
        if i % 997 == 0:
            store._check()
    store._check()
    assert store._columns.next_seq <= 3 * CHUNK_ROWS
    newest = query_spans(store, attributes={"n": 3}, limit=3)
    assert [s.start_time_unix_nano for s in newest] == [i for i in range(11_999, 0, -1) if i % 7 == 3][:3]
    assert [s.start_time_unix_nano for s in query_spans(store, attributes=[("ratio", ">=", 11_990 / 7)])] == list(
        range(11_999, 11_989, -1)
    )


def test_numeric_filters_find_the_rows_of_sealed_runs() -> None:
    """Past RUN_ROWS values of one key the numeric index keeps sorted, sealed runs: equality and every range operator
    find each match held there, values on the bound included, ints and floats alike."""
    store = SpanStore(max_spans=3 * RUN_ROWS)
    for i in range(2 * RUN_ROWS + 100):
        attributes = AttributeMap.of({"n": i % 10, "half": (i % 10) / 2})
        store.add(make_span(i // 4 + 1, i + 1, start=i, attributes=attributes))
    assert len(store._columns.keys["n"].numbers.runs) == 2  # two sealed runs and an open one hold the values
    held = store.spans()
    bounds = [("n", "==", 3), ("n", ">=", 7), ("n", "<=", 2), ("n", ">", 8), ("n", "<", 1)]
    bounds += [("half", "==", 1.5), ("half", ">=", 3.5), ("half", "<=", 0.5)]
    for key, op, bound in bounds:
        want = [s.span_id for s in held if _OPERATORS[op](s.attributes[key], bound)]
        got = [s.span_id for s in query_spans(store, attributes=[(key, op, bound)])]
        assert sorted(got) == sorted(want) and want, (key, op, bound, len(got), len(want))
    store._check()


_OPERATORS = {"==": operator.eq, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def test_newest_first_holds_when_an_earlier_block_of_rows_started_later() -> None:
    """Arrival order is not start order: 32 rows (one block) that started late, then a block that started early.
    Newest-first queries, with or without a limit, still return the late block first, in start order."""
    store = SpanStore()
    starts = [1000 + i for i in range(32)] + list(range(32))
    for seq, start in enumerate(starts):
        store.add(make_span(seq + 1, seq + 1, start=start, name="op" if seq % 2 else "other"))
    for wanted in ({}, {"name": "op"}):
        want = sorted(
            (s for s in store.spans() if wanted.get("name", s.name) == s.name),
            key=lambda s: s.start_time_unix_nano,
            reverse=True,
        )
        for limit in (3, 20, None):
            got = query_spans(store, limit=limit, **wanted)
            assert [s.start_time_unix_nano for s in got] == [s.start_time_unix_nano for s in want[:limit]], wanted


def test_longest_first_after_evictions_freed_the_first_chunks() -> None:
    """Once eviction has dropped whole chunks from the front, longest-first queries still rank by each span's own
    duration (ties: the later start first)."""
    store = SpanStore(max_spans=3 * CHUNK_ROWS // 2)
    for i in range(5 * CHUNK_ROWS):
        store.add(make_span(i + 1, i + 1, start=i, duration=(i * 7919) % 1000, name=f"op{i % 3}"))
    assert store._columns.first_chunk > 0
    held = [s for s in store.spans() if s.name == "op1"]
    want = sorted(held, key=lambda s: (s.duration_ns, s.start_time_unix_nano), reverse=True)
    for limit in (5, None):
        got = query_spans(store, name="op1", order="longest", limit=limit)
        assert [s.span_id for s in got] == [s.span_id for s in want[:limit]]


def test_lone_surrogates_in_a_span_built_by_hand_read_back_exactly() -> None:
    """A StoredSpan built in Python may hold lone surrogates (the SDK and OTLP paths replace them; a hand-built span
    keeps them): in an array, a nested array, a long string, or a status message beside an array, the store takes
    the span whole and reads it back exactly."""
    store = SpanStore()
    in_array = make_span(1, 1, attributes=AttributeMap.of({"tags": ("ok", "bad \ud800"), "deep": [("x\udc00",), "y"]}))
    beside = make_span(
        2,
        2,
        start=1,
        status_code=StatusCode.ERROR,
        status_message="bad \udfff",
        attributes=AttributeMap.of({"t": (1, "b")}),
    )
    long_text = make_span(3, 3, start=2, attributes=AttributeMap.of({"body": "z" * 300 + "\ud800", "t": ("a",)}))
    assert store.add_many([in_array, beside, long_text]) == 3
    store._check()
    assert same_spans(query_spans(store, order="oldest"), [in_array, beside, long_text])


def test_links_and_events_read_back_with_their_dropped_counts() -> None:
    """The dropped counts the SDK's limits produce (of a span's attributes, events and links, and of an event's and a
    link's attributes) read back from the store as the span was given."""
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanContext

    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=1, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1)
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = SpanContext(0x1, 0x2, is_remote=False)
    links = [Link(context), Link(context, {"a": 1, "b": 2, "c": 3})]  # the SDK keeps the latest
    with provider.get_tracer("t").start_as_current_span("s", attributes={"a": 1, "b": 2}, links=links) as span:
        span.add_event("e1", {"a": 1, "b": 2})
        span.add_event("e2", {"a": 1, "b": 2, "c": 3})
    [finished] = exporter.get_finished_spans()
    store = SpanStore()
    store.submit(finished)
    [stored] = store.spans()
    assert stored == StoredSpan.from_readable_span(finished)
    assert (stored.dropped_attributes_count, stored.dropped_events_count, stored.dropped_links_count) == (1, 1, 1)
    assert stored.links[0].dropped_attributes_count == 2 and stored.events[0].dropped_attributes_count == 2


@pytest.mark.stress
def test_concurrent_writers_and_readers_stay_consistent() -> None:
    """4 writer threads and 4 query threads: no exception, _check() holds, final counts exact."""
    store = SpanStore(max_spans=50_000)
    errors: list[BaseException] = []
    stop = threading.Event()
    per_writer = 5_000

    def write(worker: int) -> None:
        try:
            for i in range(per_writer):
                store.add(make_span(worker * 100_000 + i // 5 + 1, worker * 100_000 + i + 1, start=i))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def read() -> None:
        try:
            while not stop.is_set():
                for span in query_spans(store, limit=20):
                    assert get_trace(store, span.trace_id)
                query_spans(store, min_duration_ns=5, order="longest", limit=5)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert len(store) == 4 * per_writer
    store._check()


def test_a_memory_store_converts_bursts_in_the_background() -> None:
    """Without a log writer, a burst of submitted SDK spans is drained by a background thread, which ends on close."""
    import time

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(3000):
        with tracer.start_as_current_span(f"op-{i % 3}"):
            pass
    store = SpanStore()
    spans = exporter.get_finished_spans()
    for span in spans[:1000]:
        store.submit(span)
    assert store._drainer._thread is None  # a small store starts no thread
    for span in spans[1000:]:
        store.submit(span)
    drainer = store._drainer._thread
    assert drainer is not None
    assert drainer.name == "spanstore-drain"  # what a thread dump (py-spy, faulthandler) shows it as
    deadline = time.monotonic() + 10
    while store._inbox and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store._inbox, "the background drainer converted the inbox without any query"
    assert store.stats().span_count == 3000
    store.close()
    drainer.join(timeout=10)
    assert not drainer.is_alive()


def test_a_span_with_plain_dict_attributes_is_refused_and_leaves_the_store_whole():
    """add_many checks every span before adding any: a dict where an AttributeMap belongs changes nothing."""
    store = SpanStore()
    good = StoredSpan(trace_id="1" * 32, span_id="1" * 16, name="ok", start_time_unix_nano=1, end_time_unix_nano=2)
    bad = msgspec.structs.replace(good, span_id="2" * 16, attributes={"k": 1})
    with pytest.raises(TypeError, match="AttributeMap"):
        store.add_many([good, bad])
    assert len(store) == 0
    store._check()


@pytest.mark.parametrize(
    "make_value",
    [
        lambda i: tuple(range(i, i + 5_000)),  # a big int array
        lambda i: tuple(f"item-{i}-{j:06d}-padding" for j in range(2_000)),  # a big string array
        lambda i: bytes([i]) * 50_000,  # bytes (OTLP bytesValue)
        lambda i: str(i) * 50_000,  # one long string
        lambda i: AttributeMap.of({f"k{j}": f"value-{i}-{j:08d}-padding" for j in range(1_000)}),  # a nested kvlist
    ],
    ids=["int-array", "str-array", "bytes", "long-str", "kvlist"],
)
def test_memory_estimate_counts_every_value_type_against_measured_memory(make_value) -> None:
    """The byte estimate follows what the store really allocates for a value (tracemalloc around add_many), whatever
    its type: within 0.67x-1.5x."""
    import tracemalloc

    store = SpanStore(max_bytes=1 << 40)
    spans = [
        StoredSpan(
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            name="big",
            start_time_unix_nano=i,
            end_time_unix_nano=i + 1,
            attributes=AttributeMap.of({"payload": make_value(i)}),
        )
        for i in range(20)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store.add_many(spans)
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimate = store.stats().memory_estimate_bytes
    assert 0.67 * measured <= estimate <= 1.5 * measured, (estimate, measured)


def test_a_query_converts_only_what_was_waiting_when_it_began(monkeypatch) -> None:
    """Producers that keep ending spans while a query drains the inbox cannot keep that query busy forever."""
    from opentelemetry.sdk.trace import TracerProvider

    import spanstore.store as store_module

    provider = TracerProvider()
    tracer = provider.get_tracer("overload")
    ended = [tracer.start_span(f"s{i}") for i in range(10_100)]
    for span in ended:
        span.end()
    store = SpanStore()
    for span in ended[:100]:
        store.submit(span)
    convert = store_module.from_readable_span
    more = iter(ended[100:])
    calls = 0

    def convert_while_producers_add(raw):  # each conversion races with a producer ending another span
        nonlocal calls
        calls += 1
        extra = next(more, None)
        if extra is not None:
            store._inbox.append(extra)
        return convert(raw)

    monkeypatch.setattr(store_module, "from_readable_span", convert_while_producers_add)
    assert len(query_spans(store, limit=None)) == 100  # the 100 that were waiting, not the 10,000 that came after
    assert calls == 100
    monkeypatch.undo()
    assert len(store) == 200  # the next drain takes what arrived meanwhile (and no more)
