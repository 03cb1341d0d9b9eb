"""Index files beside sealed segments: an open from one answers as a full replay does, and a bad one is rebuilt.

The faults (issue 15): truncated, bit-flipped, another format version, stale (its segment changed), left
half-written by ``kill -9``, a planted symlink; and processes sealing and opening the same directory at once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from spanstore import SpanStore, StorageError
from spanstore.index_file import FORMAT_VERSION
from spanstore.log import SpanLog
from spanstore.model import AttributeMap, Resource, SpanEvent, StatusCode, StoredSpan
from spanstore.query import find_traces, get_trace, query_spans
from tests.span_factory import batches

SEGMENT_BYTES = 6000  # a few lines a segment: every store below has many sealed segments
RESOURCES = [Resource(attributes=AttributeMap.of({"service.name": name})) for name in ("cart", "pay", "web")]


def workload(count: int, seed: int = 1, first_trace: int = 0) -> list[StoredSpan]:
    """Spans of traces of 1-6 spans with every attribute value type (long strings, tuples, maps, big ints)."""
    rng = random.Random(seed)
    spans = []
    trace = first_trace
    while len(spans) < count:
        trace += 1
        root = f"{trace:016x}"
        for position in range(rng.randint(1, 6)):
            start = 1_000_000 * trace + position
            error = rng.random() < 0.1
            attributes = {
                "user.id": f"user-{rng.randint(1, 10_000)}",
                "http.status_code": rng.choice([200, 200, 404, 500]),
                "ratio": rng.random(),
                "cached": rng.random() < 0.5,
                "big": 2**60 + trace,
                "tags": ("a", str(position)),
            }
            if position == 0:
                attributes["payload"] = "p" * 300 + str(trace % 7)  # long: indexed by hash
                attributes["nested"] = AttributeMap.of({"k": trace, "b": b"\x00\x01"})
            events = ()
            if error:
                events = (
                    SpanEvent(
                        name="exception",
                        time_unix_nano=start,
                        attributes=AttributeMap.of({"exception.type": rng.choice(["TimeoutError", "KeyError"])}),
                    ),
                )
            spans.append(
                StoredSpan(
                    trace_id=f"{trace:032x}",
                    span_id=f"{trace:08x}{position + 1:08x}",
                    parent_span_id=None if position == 0 else root[:8] + f"{1:08x}",
                    name=rng.choice(["GET /cart", "POST /pay", "db.query"]),
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + rng.randint(1, 10**9),
                    status_code=StatusCode.ERROR if error else StatusCode.UNSET,
                    status_message="boom" if error else "",
                    attributes=AttributeMap.of(attributes),
                    events=events,
                    resource=rng.choice(RESOURCES),
                )
            )
    return spans[:count]


def write_log(path: Path, spans: list[StoredSpan], batch: int = 10) -> None:
    with SpanLog(path, segment_max_bytes=SEGMENT_BYTES, max_bytes=None, fsync="never") as log:
        for start in range(0, len(spans), batch):
            log.append(spans[start : start + batch])


def index_files(path: Path) -> list[Path]:
    return sorted(path.glob("index-*.spanstore"))


def remove_index_files(path: Path) -> None:
    for index in index_files(path):
        index.unlink()


def answers(store: SpanStore) -> dict:
    """What a user asks of a store, as comparable text: every span in order, traces, and indexed queries."""
    spans = store.spans()
    ids = [span.trace_id for span in spans]
    result = {
        "spans": [repr(span) for span in spans],
        "count": len(store),
        "traces": store.trace_ids(),
        "errors": [repr(s) for s in query_spans(store, status="error", limit=None)],
        "by type": [repr(s) for s in query_spans(store, error_type="TimeoutError", limit=None)],
        "by user": [repr(s) for s in query_spans(store, attributes={"user.id": "user-42"}, limit=None)],
        "by long": [repr(s) for s in query_spans(store, attributes={"payload": "p" * 300 + "3"}, limit=None)],
        "by big": [repr(s) for s in query_spans(store, attributes={"big": 2**60 + 5}, limit=None)],
        "by ratio": [repr(s) for s in query_spans(store, attributes=[("ratio", ">", 0.9)], limit=None)],
        "by bool": len(query_spans(store, attributes={"cached": True}, limit=None)),
        "by service": len(query_spans(store, service="pay", limit=None)),
        "trace": [repr(s) for s in get_trace(store, ids[len(ids) // 2])] if ids else [],
        "traces with errors": [t.trace_id for t in find_traces(store, status="error", limit=10**6)],
    }
    stats = store.stats().to_dict()
    for key in ("log", "writer", "index", "path"):
        stats.pop(key)
    result["stats"] = stats
    return result


def replayed(path: Path, **options) -> dict:
    """The answers of a full replay: the same directory copied without its index files."""
    remove_index_files(path)
    with SpanStore(path, read_only=True, **options) as store:
        assert store.stats().index["loaded"] is None
        return answers(store)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    write_log(path, workload(600))
    return path


def test_an_open_from_the_index_file_answers_as_a_full_replay(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True) as first:  # replays, then writes the index of the sealed segments
        written = first.stats().index["written"]
        want = answers(first)
    assert written is not None and (store_dir / written).exists()
    with SpanStore(store_dir, read_only=True) as second:
        index = second.stats().index
        got = answers(second)
    assert index["loaded"] == Path(written).stem and index["spans_loaded"] > 0 and index["rejected"] == 0
    assert got == want
    assert got == replayed(store_dir)


def test_segments_sealed_after_the_index_are_decoded_and_indexed_next(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True):
        pass
    before = index_files(store_dir)
    write_log(store_dir, workload(300, seed=2, first_trace=10_000))  # more sealed segments after the index's
    with SpanStore(store_dir, read_only=True) as store:
        index = store.stats().index
        got = answers(store)
    assert index["loaded"] == before[0].stem
    assert index["written"] is not None and index_files(store_dir) != before  # replaced by the newer one
    assert len(index_files(store_dir)) == 1
    with SpanStore(store_dir, read_only=True) as store:
        assert store.stats().index["loaded"] == index_files(store_dir)[0].stem
        assert answers(store) == got
    assert got == replayed(store_dir)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(first=batches(min_size=30, max_size=120), second=batches(min_size=0, max_size=60))
def test_index_then_tail_equals_a_replay_for_any_spans(tmp_path_factory, first, second) -> None:
    """Generated spans of every attribute type (bytes, nested arrays, maps, NaN, huge ints, odd resources)."""
    path = tmp_path_factory.mktemp("store") / "store"
    write_log(path, first, batch=7)
    with SpanStore(path, read_only=True):
        pass
    write_log(path, second, batch=5)
    with SpanStore(path, read_only=True) as store:
        got = answers(store)
    assert got == replayed(path)


def test_a_full_store_from_its_index_keeps_the_newest_traces_within_budget(tmp_path: Path) -> None:
    """At capacity an index open evicts whole traces, oldest first, as the store does: a bounded, newest suffix."""
    path = tmp_path / "store"
    spans = workload(900)
    write_log(path, spans[:600])
    options = dict(max_spans=250, max_spans_per_trace=5)
    with SpanStore(path, read_only=True, **options):
        pass
    write_log(path, spans[600:])
    with SpanStore(path, read_only=True, **options) as store:
        assert store.stats().index["loaded"] is not None
        store._check()
        held = store.spans()
        traces = store.trace_ids()
    assert 0 < len(held) <= 250
    assert traces[-1] == spans[-1].trace_id  # the newest trace is there
    with SpanLog(path, fsync="never") as log:
        in_log_order, _ = log.read()  # a line groups its spans by resource: the log's order is the arrival order
    logged = {repr(span) for span in in_log_order}
    assert all(repr(span) in logged for span in held)
    order = list(dict.fromkeys(span.trace_id for span in in_log_order))
    assert traces == order[order.index(traces[0]) :][: len(traces)]  # a run of consecutive traces


# --- faults: each ignored with a warning, answered as a replay, and rebuilt ----------------------------------------
def _flip_bytes(data: bytearray) -> None:
    rng = random.Random(7)
    for _ in range(3):
        data[rng.randrange(16, len(data))] ^= 0x10


def _truncate(data: bytearray) -> None:
    del data[len(data) * 2 // 3 :]


def _cut_header(data: bytearray) -> None:
    del data[20:]


def _other_magic(data: bytearray) -> None:
    data[:4] = b"JUNK"


@pytest.mark.parametrize("damage", [_flip_bytes, _truncate, _cut_header, _other_magic])
def test_a_damaged_index_file_is_ignored_and_rebuilt(store_dir: Path, damage, caplog) -> None:
    with SpanStore(store_dir, read_only=True) as store:
        want = answers(store)
    (index,) = index_files(store_dir)
    data = bytearray(index.read_bytes())
    damage(data)
    index.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="spanstore.store"), SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        assert answers(store) == want
    assert report["loaded"] is None and report["rejected"] == 1 and report["written"] == index.name
    assert any("not using an index file" in message and index.name in message for message in caplog.messages)
    with SpanStore(store_dir, read_only=True) as store:  # rebuilt: the next open uses it
        assert store.stats().index["loaded"] == index.stem and store.stats().index["rejected"] == 0
        assert answers(store) == want


def test_an_index_file_of_another_format_version_is_rebuilt(store_dir: Path, monkeypatch) -> None:
    import spanstore.index_file as index_module

    monkeypatch.setattr(index_module, "FORMAT_VERSION", FORMAT_VERSION + 1)
    with SpanStore(store_dir, read_only=True) as store:
        want = answers(store)
    monkeypatch.undo()
    with SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        assert answers(store) == want
    assert report["loaded"] is None and "format version" in report["problem"] and report["written"]


def test_an_index_file_older_than_its_segment_is_rebuilt(store_dir: Path) -> None:
    """A sealed segment that changed after the index was built (same size, other bytes; or another size)."""
    with SpanStore(store_dir, read_only=True):
        pass
    segments = sorted(store_dir.glob("spans-*.jsonl"))
    target = segments[len(segments) // 2]
    text = target.read_bytes()
    target.write_bytes(text.replace(b"GET /cart", b"GET /cars"))  # same size, other content
    want = replayed(store_dir)
    with SpanStore(store_dir, read_only=True):
        pass  # rebuilds from the changed segment
    target.write_bytes(text)  # and back to the original: the new index is stale again
    with SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        got = answers(store)
    assert report["loaded"] is None and "stale" in report["problem"]
    assert got == replayed(store_dir) != want


def test_an_index_built_under_other_budgets_is_not_used(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True, max_spans=100):
        pass
    with SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        got = answers(store)
    assert report["loaded"] is None and "max_spans" in report["problem"]
    assert got == replayed(store_dir)


_KILLED_WRITER = """
import os, sys, time
import spanstore.index_file as index_file
from spanstore import SpanStore

real = index_file._write_state

def slow(out, *args):
    # Write part of the file, then wait to be killed: a writer dying mid-write.
    out.obj([0])
    out.file.flush()
    print("writing", flush=True)
    time.sleep(60)

index_file._write_state = slow
SpanStore(sys.argv[1], read_only=True)
"""


def test_a_writer_killed_while_writing_the_index_leaves_no_half_file(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True) as store:
        want = answers(store)
    remove_index_files(store_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(store_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
        child.stdout.close()
    leftovers = [p for p in store_dir.iterdir() if p.name.startswith(".index-")]
    assert leftovers and not index_files(store_dir)  # only the temporary file: never a half index
    with SpanStore(store_dir, read_only=True) as store:
        assert store.stats().index["loaded"] is None
        assert answers(store) == want
    assert len(index_files(store_dir)) == 1
    # A temporary file an hour old belongs to a dead writer: the next index written removes it.
    old = time.time() - 7200
    for leftover in leftovers:
        os.utime(leftover, (old, old))
    remove_index_files(store_dir)
    with SpanStore(store_dir, read_only=True):
        pass
    assert not any(leftover.exists() for leftover in leftovers)


def test_index_files_are_private_and_never_written_through_a_planted_symlink(store_dir: Path, tmp_path: Path) -> None:
    with SpanStore(store_dir, read_only=True) as store:
        (index,) = index_files(store_dir)
        name = index.name
        want = answers(store)
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    index.unlink()
    index.symlink_to(target)
    with SpanStore(store_dir, read_only=True) as store:
        assert store.stats().index["loaded"] is None  # not read through the link
        assert answers(store) == want
    assert target.read_bytes() == b"precious"
    assert not (store_dir / name).is_symlink()  # replaced by a real file of the store's own


def test_retention_deletes_a_segment_with_its_index_and_an_open_drops_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "store"
    spans = workload(600)
    write_log(path, spans)
    with SpanStore(path, read_only=True):
        pass
    (index,) = index_files(path)
    # Retention (a disk budget) deletes the oldest segments as a writer rolls on.
    with SpanLog(path, segment_max_bytes=SEGMENT_BYTES, max_bytes=40_000, fsync="never") as log:
        log.append(workload(3, seed=3, first_trace=50_000))
        log.append(workload(60, seed=4, first_trace=60_000))
        oldest_left = log.segment_files()[0].sequence
    assert oldest_left > 1
    assert index.exists() == (int(index.stem.split("-")[1]) >= oldest_left)
    with SpanStore(path, read_only=True) as store:
        got = answers(store)
        store._check()
    assert got == replayed(path)


def test_skipped_lines_of_indexed_segments_are_still_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    spans = workload(300)
    write_log(path, spans[:100])
    segment = sorted(path.glob("spans-*.jsonl"))[0]
    with open(segment, "ab") as f:
        f.write(b'{"resourceSpans": [oops\n')
    write_log(path, spans[100:])
    with SpanStore(path, read_only=True) as store:
        first = store.stats().log["skipped_line_count"]
    with SpanStore(path, read_only=True) as store:
        assert store.stats().index["loaded"] is not None
        second = store.stats().log
    assert first == second["skipped_line_count"] == 1
    assert second["skipped_lines"][0]["segment"] == segment.name


def test_a_read_only_store_refuses_spans(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True) as store, pytest.raises(StorageError, match="read_only"):
        store.add(workload(1, seed=9, first_trace=90_000)[0])
    assert not (store_dir.parent / "elsewhere").exists()
    with pytest.raises(Exception, match="expected|no span log|not"):
        SpanStore(store_dir.parent / "elsewhere", read_only=True)
    assert not (store_dir.parent / "elsewhere").exists()


def test_opening_from_an_index_does_not_wait_for_a_writer_holding_the_lock(store_dir: Path) -> None:
    with SpanStore(store_dir, read_only=True):
        pass
    with SpanLog(store_dir, fsync="never") as log:
        log._lock_directory()  # a writer in the middle of a batch
        try:
            started = time.monotonic()
            with SpanStore(store_dir, read_only=True) as store:
                assert store.stats().index["loaded"] is not None
            assert time.monotonic() - started < 10
        finally:
            log._unlock_directory()


# --- several processes ------------------------------------------------------------------------------------------------
def _keep_writing(path: str, stop_at: float, seed: int) -> None:
    rng = random.Random(seed)
    trace = 100_000 * seed
    with SpanLog(path, segment_max_bytes=SEGMENT_BYTES, max_bytes=None, fsync="never") as log:
        while time.time() < stop_at:
            log.append(workload(rng.randint(1, 8), seed=rng.randrange(10**6), first_trace=trace))
            trace += 10
            time.sleep(0.005)  # a busy service, not a flood: a segment seals every few batches


def _keep_opening(path: str, stop_at: float, problems) -> None:
    opens = 0
    while time.time() < stop_at or opens < 3:
        with SpanStore(path, read_only=True) as store:
            report = store.stats().index
            store._check()
        if report["rejected"]:
            problems.put(report.get("problem"))
        opens += 1
    problems.put(f"opens {opens}")


def test_processes_sealing_and_opening_at_once_never_read_a_half_written_index(store_dir: Path) -> None:
    context = multiprocessing.get_context("spawn")
    problems = context.Queue()
    stop_at = time.time() + 4
    workers = [context.Process(target=_keep_writing, args=(str(store_dir), stop_at, 1))]
    workers += [context.Process(target=_keep_opening, args=(str(store_dir), stop_at, problems)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    reports = [problems.get(timeout=10) for _ in range(2)]
    while not problems.empty():
        reports.append(problems.get())
    damaged = [
        r for r in reports if not r.startswith("opens") and ("damaged" in r or "truncated" in r or "checksum" in r)
    ]
    assert not damaged, damaged
    assert sum(int(r.split()[1]) for r in reports if r.startswith("opens")) >= 6


def test_the_cli_answers_without_waiting_for_the_index_file_it_refreshes(store_dir: Path) -> None:
    """`spanstore` commands open the store read-only; a forked child writes the refreshed index file."""
    command = [sys.executable, "-m", "spanstore", "--path", str(store_dir), "stats", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 60
    while not index_files(store_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    (index,) = index_files(store_dir)
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".index-")]  # renamed into place, whole
    with SpanStore(store_dir, read_only=True) as store:
        assert store.stats().index["loaded"] == index.stem
        held = len(store)
    second = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    before, after = json.loads(first.stdout), json.loads(second.stdout)
    assert before["index"]["loaded"] is None and before["index"]["written"].startswith(index.name)
    assert after["index"]["loaded"] == index.stem and after["index"]["written"] is None
    for key in ("span_count", "trace_count", "error_span_count", "services", "memory_estimate_bytes"):
        assert before[key] == after[key]
    assert after["span_count"] == held


def test_an_index_covers_part_of_the_segment_being_written_and_the_next_open_decodes_only_the_rest(
    tmp_path: Path,
) -> None:
    """One segment, still being written: the index file covers what was there; later lines are decoded on top."""
    path = tmp_path / "store"
    with SpanLog(path, max_bytes=None, fsync="never") as log:  # default segments: everything stays in one
        for start in range(0, 2500, 50):
            log.append(workload(2500)[start : start + 50])
    with SpanStore(path, read_only=True) as store:
        first = store.stats().index
    assert first["written"] == "index-000001.spanstore"
    with SpanLog(path, max_bytes=None, fsync="never") as log:
        log.append(workload(40, seed=5, first_trace=70_000))
        assert len(log.segment_files()) == 1
    with SpanStore(path, read_only=True) as store:
        report = store.stats().index
        got = answers(store)
        decoded = store.stats().log["spans_read"]
    assert report["loaded"] == "index-000001" and report["spans_loaded"] == 2500
    assert decoded == 40  # only the lines appended after the index file's place
    assert got["count"] == 2540 and got == replayed(path)


def test_an_index_file_with_intact_checksums_but_inconsistent_columns_is_refused(store_dir: Path) -> None:
    """Frames that each check out but do not fit together (a column one row short, as a buggy writer might leave)
    are refused as a whole, not loaded into a store that would fail at its first query."""
    import struct
    import zlib

    with SpanStore(store_dir, read_only=True) as store:
        want = answers(store)
        rows = store._columns.next_seq  # one chunk: every row is in it
    (index,) = index_files(store_dir)
    data = bytearray(index.read_bytes())
    frame = struct.Struct("<BQI")
    at = 16
    while at < len(data):
        kind, length, _ = frame.unpack_from(data, at)
        if kind == 2 and length == rows:  # the chunk's status/kind bits: one byte a row
            payload = bytes(data[at + frame.size : at + frame.size + length - 1])
            data[at : at + frame.size + length] = frame.pack(2, len(payload), zlib.crc32(payload)) + payload
            break
        at += frame.size + length
    else:
        pytest.fail("no column of one byte a row found")
    index.write_bytes(bytes(data))
    with SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        assert answers(store) == want
    assert report["loaded"] is None and "differ in length" in report["problem"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), ValueError("unexpected")])
def test_a_store_opens_when_its_index_file_cannot_be_written(store_dir: Path, failure, monkeypatch, caplog) -> None:
    """A disk that refuses the index file (full, say), or any fault writing it, costs the next open time, never this
    one: the store opens with every span, and no partial or temporary file stays behind."""
    import spanstore.index_file as index_module

    def fail_midway(out, *args):
        out.obj([0])  # part of the file is written, then the fault
        raise failure

    monkeypatch.setattr(index_module, "_write_state", fail_midway)
    with caplog.at_level(logging.WARNING, logger="spanstore.store"), SpanStore(store_dir, read_only=True) as store:
        report = store.stats().index
        got = answers(store)
    monkeypatch.undo()
    assert report["written"] is None and not index_files(store_dir)
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".index-")]
    assert any("could not write an index file" in message for message in caplog.messages)
    assert got == replayed(store_dir)
