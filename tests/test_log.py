"""Tests for spanstore.log: the append-only span log (segments, locking, recovery, retention, follow)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import portalocker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanstore.log as log_module
from spanstore.errors import LockTimeoutError, NotAStoreError, StorageError, StoreClosedError
from spanstore.log import LOCK_NAME, MARKER_NAME, LogPosition, SkippedLine, SpanLog, segment_name
from spanstore.model import StoredSpan
from spanstore.otlp import encode_spans, read_file


def make_spans(n: int, prefix: str = "s") -> list[StoredSpan]:
    """``n`` finished spans from a real TracerProvider, named ``{prefix}-{i:06d}``, with 8 attributes each."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "log-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.test_log", "1.0")
    for i in range(n):
        attributes = {
            "http.route": f"/items/{i % 7}",
            "http.request.method": "GET",
            "http.response.status_code": 200 + i % 3,
            "user.id": f"user-{i % 11}",
            "app.ratio": i / 7,
            "app.flag": i % 2 == 0,
            "app.tags": ("a", "b"),
            "app.index": i,
        }
        with tracer.start_as_current_span(f"{prefix}-{i:06d}", attributes=attributes):
            pass
    provider.shutdown()
    return [StoredSpan.from_readable_span(span) for span in exporter.get_finished_spans()]


@functools.cache
def pool() -> tuple[StoredSpan, ...]:
    """A shared pool of spans for tests that only need some spans (made once)."""
    return tuple(make_spans(400, "pool"))


def names(spans: list[StoredSpan]) -> list[str]:
    return [span.name for span in spans]


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("spans-*.jsonl"))


def line_spans(line_count: int, per_line: int = 3) -> list[list[StoredSpan]]:
    """``line_count`` batches of ``per_line`` pool spans: one batch appended is one line."""
    spans = pool()
    return [list(spans[i * per_line : (i + 1) * per_line]) for i in range(line_count)]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


# --- basics -----------------------------------------------------------------------------------------------------


def test_append_then_read_round_trips_spans_in_order(store_path: Path) -> None:
    """Spans appended in batches read back equal, in append order, and the end position reads nothing more."""
    spans = make_spans(50)
    with SpanLog(store_path, fsync="never") as log:
        written = log.append(spans[:20]) + log.append(spans[20:])
        got, position = log.read()
        assert got == spans
        assert written == sum(f.stat().st_size for f in segment_files(store_path))
        assert position == log.end_position() == LogPosition(1, written)
        assert log.read(position) == ([], position)


def test_follow_reads_only_what_was_appended_after_the_position(store_path: Path) -> None:
    """Reading from a saved position returns exactly the spans appended since, and a new position."""
    first, second = make_spans(5, "a"), make_spans(7, "b")
    with SpanLog(store_path, fsync="never") as log:
        log.append(first)
        _, position = log.read()
        log.append(second)
        got, later = log.read(position)
        assert got == second
        assert later > position


def test_empty_log_reads_nothing(store_path: Path) -> None:
    """A new log has no segments: reads return no spans and the start position."""
    with SpanLog(store_path) as log:
        assert log.read() == ([], LogPosition(0, 0))
        assert log.read(max_spans=5) == ([], LogPosition(0, 0))
        assert log.end_position() == LogPosition(0, 0)
        assert log.append([]) == 0
        assert segment_files(store_path) == []


def test_segments_roll_past_segment_max_bytes_and_stay_readable(store_path: Path) -> None:
    """Past segment_max_bytes the log starts spans-000002.jsonl and so on; each stays under the limit."""
    batches = line_spans(30, per_line=2)
    with SpanLog(store_path, fsync="never", segment_max_bytes=4000, max_bytes=None) as log:
        for batch in batches:
            log.append(batch)
        files = segment_files(store_path)
        assert [f.name for f in files] == [segment_name(i) for i in range(1, len(files) + 1)]
        assert len(files) > 3
        assert all(f.stat().st_size <= 4000 for f in files)
        assert log.read()[0] == [span for batch in batches for span in batch]
        assert log.stats().segments == len(files)


def test_one_batch_larger_than_a_segment_is_split_at_line_boundaries(store_path: Path) -> None:
    """A batch whose lines exceed a segment is spread over several segments, whole lines only."""
    spans = list(pool()[:60])
    with SpanLog(store_path, fsync="never", segment_max_bytes=3000, max_bytes=None) as log:
        log.append(spans)
        assert log.read()[0] == spans
        files = segment_files(store_path)
        assert len(files) > 3
        for file in files:
            assert file.read_bytes().endswith(b"\n")
            assert file.stat().st_size <= 3000


def test_segments_are_otlp_json_lines_the_codec_reads(store_path: Path) -> None:
    """Every segment line is an OTLP TracesData object, so OTLP JSON Lines readers take the files as they are."""
    spans = make_spans(20)
    with SpanLog(store_path, fsync="never", segment_max_bytes=3000, max_bytes=None) as log:
        for i in range(0, 20, 4):
            log.append(spans[i : i + 4])
    read_back = []
    for file in segment_files(store_path):
        result = read_file(file)
        assert result.corrupt_lines == [] and result.issues == []
        for line in file.read_bytes().splitlines():
            assert "resourceSpans" in msgspec.json.decode(line)
        read_back.extend(result.spans)
    assert read_back == spans


def test_max_spans_returns_the_newest_spans_without_decoding_older_segments(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read(max_spans=k) returns the last k spans and decodes only the lines it needs, newest segment first."""
    batches = line_spans(40, per_line=3)
    everything = [span for batch in batches for span in batch]
    with SpanLog(store_path, fsync="never", segment_max_bytes=5000, max_bytes=None) as log:
        for batch in batches:
            log.append(batch)
        end = log.end_position()
        decoded = []
        real_decode = log_module.decode_line
        monkeypatch.setattr(log_module, "decode_line", lambda line, **kw: decoded.append(1) or real_decode(line, **kw))
        got, position = log.read(max_spans=7)
        assert got == everything[-7:]
        assert position == end
        assert len(decoded) == 3  # ceil(7 / 3) lines
        assert log.read(max_spans=0) == ([], end)
        assert log.read(max_spans=10_000)[0] == everything
        assert log.read(LogPosition(2, 0), max_spans=10_000)[0] == log.read(LogPosition(2, 0))[0]


# --- property: the log against a list ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 12)),
            st.tuples(st.just("follow"), st.just(0)),
            st.tuples(st.just("newest"), st.integers(0, 30)),
        ),
        max_size=25,
    ),
    segment_max_bytes=st.sampled_from([700, 2500, 1 << 20]),
)
def test_log_behaves_like_a_list(ops: list[tuple[str, int]], segment_max_bytes: int) -> None:
    """Whatever appends and reads interleave, reads agree with a plain list of the appended spans."""
    source = pool()
    model: list[StoredSpan] = []
    followed: list[StoredSpan] = []
    position = None
    with (
        tempfile.TemporaryDirectory() as tmp,
        SpanLog(Path(tmp, "s"), fsync="never", segment_max_bytes=segment_max_bytes, max_bytes=None) as log,
    ):
        for op, n in ops:
            if op == "append":
                start = len(model) % (len(source) - 12)
                batch = list(source[start : start + n])
                log.append(batch)
                model.extend(batch)
            elif op == "follow":
                got, position = log.read(position)
                followed.extend(got)
                assert followed == model
            else:
                assert log.read(max_spans=n)[0] == (model[-n:] if n else [])
        assert log.read()[0] == model
        got, _ = log.read(position)
        assert followed + got == model
        assert log.stats().skipped_line_count == 0


# --- corruption and torn lines -----------------------------------------------------------------------------------


def _line_bounds(data: bytes, index: int) -> tuple[int, int]:
    """Byte range of line ``index`` (0-based), newline excluded."""
    start = 0
    for _ in range(index):
        start = data.index(b"\n", start) + 1
    return start, data.index(b"\n", start)


def test_flipped_bytes_lose_only_that_line_and_say_where(store_path: Path) -> None:
    """Bytes flipped inside lines 3 and 5 lose those lines alone, each reported with segment and line number."""
    batches = line_spans(6)
    with SpanLog(store_path, fsync="never") as log:
        for batch in batches:
            log.append(batch)
    segment = store_path / segment_name(1)
    data = bytearray(segment.read_bytes())
    start, _ = _line_bounds(bytes(data), 2)
    for i in range(start + 5, start + 25):
        data[i] ^= 0xFF  # not even UTF-8 any more
    start, _ = _line_bounds(bytes(data), 4)
    data[start + 1 : start + 3] = b"#!"  # still ASCII, no longer JSON
    segment.write_bytes(bytes(data))
    with SpanLog(store_path) as log:
        got, _ = log.read()
        assert got == batches[0] + batches[1] + batches[3] + batches[5]
        stats = log.stats()
        assert stats.skipped_line_count == 2
        assert [(s.segment, s.line_number, s.torn) for s in stats.skipped_lines] == [
            ("spans-000001.jsonl", 3, False),
            ("spans-000001.jsonl", 5, False),
        ]
        assert all("JSON" in s.reason or "UTF-8" in s.reason for s in stats.skipped_lines)
        log.read()
        assert log.stats().skipped_line_count == 2  # counted once, however often it is read


def test_line_truncated_mid_segment_is_skipped_as_torn(store_path: Path) -> None:
    """A line cut short in the middle of a segment is skipped (torn) and the lines around it are kept."""
    batches = line_spans(4)
    with SpanLog(store_path, fsync="never") as log:
        for batch in batches:
            log.append(batch)
    segment = store_path / segment_name(1)
    data = segment.read_bytes()
    start, end = _line_bounds(data, 1)
    segment.write_bytes(data[: start + (end - start) // 2] + data[end:])
    with SpanLog(store_path) as log:
        assert log.read()[0] == batches[0] + batches[2] + batches[3]
        [skipped] = log.stats().skipped_lines
        assert skipped == SkippedLine("spans-000001.jsonl", 2, skipped.reason, torn=True)
        assert "torn" in skipped.reason


def test_corrupt_line_is_numbered_correctly_when_reading_from_a_saved_position(store_path: Path) -> None:
    """A fresh log reading from the middle of a segment still reports the corrupt line's true line number."""
    batches = line_spans(5)
    with SpanLog(store_path, fsync="never") as log:
        for batch in batches[:3]:
            log.append(batch)
        _, position = log.read()
        with open(store_path / segment_name(1), "ab") as f:
            f.write(b"this is not json\n")
        log.append(batches[3])
    with SpanLog(store_path) as reader:
        assert reader.read(position)[0] == batches[3]
        [skipped] = reader.stats().skipped_lines
        assert (skipped.line_number, skipped.torn) == (4, False)


def _write_half_line(segment: Path) -> bytes:
    line = encode_spans(list(pool()[:2]))[0]
    half = line[: len(line) // 2]
    with open(segment, "ab") as f:
        f.write(half)
    return line


def test_torn_tail_is_counted_once_no_writer_holds_the_lock(store_path: Path) -> None:
    """A partial last line with no writer holding the lock is torn: skipped, counted, and consumed."""
    batches = line_spans(2)
    with SpanLog(store_path, fsync="never") as log:
        for batch in batches:
            log.append(batch)
    segment = store_path / segment_name(1)
    _write_half_line(segment)
    with SpanLog(store_path) as log:
        got, position = log.read()
        assert got == batches[0] + batches[1]
        assert position == LogPosition(1, segment.stat().st_size)
        stats = log.stats()
        assert stats.torn_tails == 1
        assert [(s.line_number, s.torn) for s in stats.skipped_lines] == [(3, True)]


def test_partial_tail_is_left_alone_while_a_writer_holds_the_lock(store_path: Path) -> None:
    """A partial last line may be a write in progress: while the lock is held it is not consumed, then read."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:2]))
        _, position = log.read()
        segment = store_path / segment_name(1)
        with open(store_path / LOCK_NAME, "a") as holder:
            portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
            line = _write_half_line(segment)
            assert log.read(position) == ([], position)
            assert log.end_position() == position
            with open(segment, "ab") as f:
                f.write(line[len(line) // 2 :])  # the "writer" finishes its line
            portalocker.unlock(holder)
        got, _ = log.read(position)
        assert got == list(pool()[:2])
        assert log.stats().torn_tails == 0


def test_append_after_a_torn_tail_ends_it_so_later_lines_stay_whole(store_path: Path) -> None:
    """After a crash left half a line, the next append ends it with a newline: only the torn line is lost."""
    batches = line_spans(3)
    with SpanLog(store_path, fsync="never") as log:
        log.append(batches[0])
    segment = store_path / segment_name(1)
    _write_half_line(segment)
    with SpanLog(store_path, fsync="never") as log:
        log.append(batches[1])
        log.append(batches[2])
        assert log.stats().torn_tails == 1
        assert log.read()[0] == batches[0] + batches[1] + batches[2]
        stats = log.stats()
        assert stats.torn_tails == 1  # the writer's repair and the reader's skip are one torn tail
        assert [(s.line_number, s.torn) for s in stats.skipped_lines] == [(2, True)]
    for line in segment.read_bytes().splitlines()[2:]:
        assert "resourceSpans" in msgspec.json.decode(line)


def test_reader_that_consumed_a_torn_tail_continues_cleanly_after_the_repair(store_path: Path) -> None:
    """A follower that skipped a torn tail keeps following after a writer ends the torn line and appends."""
    batches = line_spans(3)
    with SpanLog(store_path, fsync="never") as writer:
        writer.append(batches[0])
        _write_half_line(store_path / segment_name(1))
        with SpanLog(store_path) as reader:
            got, position = reader.read()
            assert got == batches[0]
            writer.append(batches[1])
            got, _ = reader.read(position)
            assert got == batches[1]
            assert reader.stats().skipped_line_count == 1


def test_partial_tail_of_an_older_segment_is_torn(store_path: Path) -> None:
    """A partial last line in a segment followed by a newer segment is torn even while the lock is busy."""
    with SpanLog(store_path, fsync="never", max_bytes=None) as log:
        log.append(list(pool()[:3]))
        _write_half_line(store_path / segment_name(1))
        (store_path / segment_name(2)).write_bytes(encode_spans(list(pool()[3:5]))[0])
        with open(store_path / LOCK_NAME, "a") as holder:
            portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
            got, position = log.read()
            portalocker.unlock(holder)
        assert got == list(pool()[:5])
        assert position.segment == 2
        assert log.stats().torn_tails == 1


def test_torn_tails_of_two_segments_are_two(store_path: Path) -> None:
    """Each torn tail is counted: two segments a crash cut mid-line give two torn tails, and both lines are skipped."""
    with SpanLog(store_path, fsync="never", max_bytes=None) as log:
        log.append(list(pool()[:3]))
    _write_half_line(store_path / segment_name(1))
    (store_path / segment_name(2)).write_bytes(encode_spans(list(pool()[3:5]))[0])
    _write_half_line(store_path / segment_name(2))
    with SpanLog(store_path) as log:
        assert log.read()[0] == list(pool()[:5])
        stats = log.stats()
        assert stats.torn_tails == 2
        assert [s.torn for s in stats.skipped_lines] == [True, True]


def test_other_signal_lines_are_counted_not_skipped(store_path: Path) -> None:
    """A metrics line in a segment is not corrupt: it is counted as another signal and passed over."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:2]))
        with open(store_path / segment_name(1), "ab") as f:
            f.write(b'{"resourceMetrics":[]}\n')
        log.append(list(pool()[2:4]))
        assert log.read()[0] == list(pool()[:4])
        stats = log.stats()
        assert (stats.other_signal_lines, stats.skipped_line_count) == (1, 0)


# --- retention and follow -----------------------------------------------------------------------------------------


def test_retention_deletes_oldest_segments_and_keeps_the_directory_under_budget(store_path: Path) -> None:
    """With a small disk budget the oldest segments go first and segments stay within max_bytes + one segment."""
    spans = list(pool())
    seg, budget = 3000, 9000
    with SpanLog(store_path, fsync="never", segment_max_bytes=seg, max_bytes=budget) as log:
        for i in range(0, 300, 2):
            log.append(spans[i : i + 2])
            total = sum(f.stat().st_size for f in segment_files(store_path))
            assert total <= budget + seg
        numbers = [int(f.name[6:12]) for f in segment_files(store_path)]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # a contiguous newest run
        assert numbers[0] > 1
        got, _ = log.read()
        assert got == spans[300 - len(got) : 300]  # what is left is the newest suffix
        stats = log.stats()
        assert stats.segments_deleted == numbers[0] - 1
        assert stats.disk_bytes <= budget + seg


def test_retention_by_age_deletes_old_segments_but_never_the_current_one(store_path: Path) -> None:
    """Segments last written before max_age_seconds are deleted; the segment being written stays, however old."""
    spans = list(pool())
    with SpanLog(store_path, fsync="never", segment_max_bytes=3000, max_bytes=None) as log:
        for i in range(0, 40, 2):
            log.append(spans[i : i + 2])
    files = segment_files(store_path)
    assert len(files) >= 3
    old = time.time() - 7200
    for file in files:
        os.utime(file, (old, old))
    with SpanLog(store_path, fsync="never", max_bytes=None, max_age_seconds=3600) as log:
        log.append(spans[40:41])  # no roll; the first append checks ages: only the current (newest) segment stays
        remaining = segment_files(store_path)
        assert [f.name for f in remaining] == [files[-1].name]
        assert log.stats().segments_deleted == len(files) - 1
        assert log.read()[0][-1] == spans[40]


def test_follow_keeps_working_across_rolls_and_deletions(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A follower whose segment was deleted continues from the oldest remaining one, counts the gap and says so."""
    spans = list(pool())
    with (
        SpanLog(store_path, fsync="never", segment_max_bytes=2500, max_bytes=5000) as writer,
        SpanLog(store_path, create=False) as reader,
    ):
        writer.append(spans[:2])
        got, position = reader.read()
        assert got == spans[:2]
        writer.append(spans[2:4])
        got, position = reader.read(position)
        assert got == spans[2:4]
        for i in range(4, 100, 2):  # roll many times: the follower's segment is long gone
            writer.append(spans[i : i + 2])
        assert not (store_path / segment_name(position.segment)).exists()
        missed_from = position.segment
        with caplog.at_level(logging.WARNING, logger="spanstore.log"):
            got, position = reader.read(position)
        assert got and got == spans[100 - len(got) : 100]
        stats = reader.stats()
        assert stats.read_gaps == 1 and stats.segments_missed >= 1
        oldest = missed_from + stats.segments_missed
        assert (store_path / segment_name(oldest)).exists()
        assert (
            f"segments {missed_from} to {oldest - 1} were deleted before being read; continuing at "
            + (segment_name(oldest))
            in caplog.text
        )
        writer.append(spans[100:103])
        assert reader.read(position)[0] == spans[100:103]


# --- files, permissions, errors -----------------------------------------------------------------------------------


def test_directory_and_files_are_owner_only(tmp_path: Path) -> None:
    """With umask 022, the store directory is 0700 and the marker, lock and segment files are 0600."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "store"
        with SpanLog(path, fsync="never", segment_max_bytes=2000, max_bytes=None) as log:
            for i in range(0, 12, 2):
                log.append(list(pool()[i : i + 2]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    files = list(path.iterdir())
    assert {MARKER_NAME, LOCK_NAME} <= {f.name for f in files} and len(files) > 3
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_reopening_a_store_and_adopting_an_empty_directory(tmp_path: Path) -> None:
    """An existing store reopens with its spans; an empty existing directory becomes a store."""
    path = tmp_path / "store"
    with SpanLog(path) as log:
        log.append(list(pool()[:3]))
    with SpanLog(path, create=False) as log:
        assert log.read()[0] == list(pool()[:3])
    empty = tmp_path / "empty"
    empty.mkdir()
    with SpanLog(empty) as log:
        assert log.read()[0] == []
    assert (empty / MARKER_NAME).exists()


def test_path_that_is_a_file_is_not_a_store(tmp_path: Path) -> None:
    """A path naming a regular file raises NotAStoreError saying so."""
    file = tmp_path / "spans.jsonl"
    file.write_text("{}\n")
    with pytest.raises(NotAStoreError, match=r"got a file"):
        SpanLog(file)


def test_foreign_directory_is_not_a_store(tmp_path: Path) -> None:
    """A non-empty directory without the spanstore marker raises NotAStoreError naming what is in it."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAStoreError, match=r"notes\.txt"):
        SpanLog(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER_NAME).write_text('{"format": "something-else"}')
    with pytest.raises(NotAStoreError, match="expected format"):
        SpanLog(other)
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / MARKER_NAME).write_text('{"format": "spanstore-log", "version": 99}')
    with pytest.raises(NotAStoreError, match="newer spanstore"):
        SpanLog(newer)


def test_missing_directory_with_create_false_is_a_storage_error(tmp_path: Path) -> None:
    """create=False (read-only use) on a missing directory raises StorageError, and creates nothing."""
    with pytest.raises(StorageError, match="does not exist"):
        SpanLog(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(StorageError, match="cannot be created"):
        SpanLog(tmp_path / "no" / "such" / "parent")


def test_invalid_arguments_raise_value_error(store_path: Path) -> None:
    """Bad policies and sizes are rejected with a message naming the argument."""
    with pytest.raises(ValueError, match="fsync must be one of"):
        SpanLog(store_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_max_bytes"):
        SpanLog(store_path, segment_max_bytes=0)
    with pytest.raises(ValueError, match="max_age_seconds"):
        SpanLog(store_path, max_age_seconds=0)
    with SpanLog(store_path) as log, pytest.raises(ValueError, match="max_spans"):
        log.read(max_spans=-1)


def _store_fds(path: Path):
    """A predicate: does this file descriptor point into the store directory?"""

    def inside(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:
            return False

    return inside


def test_read_only_directory_raises_storage_error_and_still_reads(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the directory cannot be written, append raises StorageError saying permission denied; reads work."""
    with SpanLog(store_path, fsync="never", segment_max_bytes=2500) as log:
        log.append(list(pool()[:3]))
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(store_path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with SpanLog(store_path, create=False) as log:
        with pytest.raises(StorageError, match="permission denied") as info:
            log.append(list(pool()[3:5]))
        assert str(store_path) in str(info.value)
        assert log.read()[0] == list(pool()[:3])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_really_read_only_directory_raises_storage_error(store_path: Path) -> None:
    """On a chmod 0500 directory, append raises StorageError and the spans already there still read."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:3]))
    (store_path / LOCK_NAME).unlink()
    os.chmod(store_path, 0o500)
    try:
        with SpanLog(store_path, create=False) as log:
            with pytest.raises(StorageError, match="permission denied"):
                log.append(list(pool()[3:5]))
            assert log.read()[0] == list(pool()[:3])
    finally:
        os.chmod(store_path, 0o700)


def test_disk_full_raises_storage_error_and_leaves_no_partial_line(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC after part of a batch was written: StorageError says disk full, and the file is cut back whole."""
    inside = _store_fds(store_path)
    real_write = os.write
    state = {"calls": 0}

    def full_disk_write(fd, data):
        if not inside(fd):
            return real_write(fd, data)
        state["calls"] += 1
        if state["calls"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:3]))
        segment = store_path / segment_name(1)
        before = segment.read_bytes()
        monkeypatch.setattr(os, "write", full_disk_write)
        with pytest.raises(StorageError, match=r": disk full \(no space left on device\)$") as info:
            log.append(list(pool()[3:6]))
        assert info.value.errno == errno.ENOSPC
        assert segment.name in str(info.value)
        assert segment.read_bytes() == before
        monkeypatch.setattr(os, "write", real_write)
        log.append(list(pool()[6:8]))
        assert log.read()[0] == list(pool()[:3]) + list(pool()[6:8])
        assert log.stats().skipped_line_count == 0


def test_lock_timeout_when_another_holder_keeps_the_lock(store_path: Path) -> None:
    """While another holder keeps the directory lock, append gives up after the timeout with LockTimeoutError."""
    with SpanLog(store_path, fsync="never", lock_timeout_seconds=0.05) as log:
        log.append(list(pool()[:1]))
        with open(store_path / LOCK_NAME, "a") as holder:
            portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
            with pytest.raises(LockTimeoutError, match=r"within 0\.05 s") as info:
                log.append(list(pool()[1:2]))
            assert LOCK_NAME in str(info.value)
            assert isinstance(info.value, TimeoutError)
            portalocker.unlock(holder)
        log.append(list(pool()[2:3]))
        assert log.read()[0] == [pool()[0], pool()[2]]


def test_append_waits_for_a_briefly_held_lock(store_path: Path) -> None:
    """A lock held for less than the timeout only delays the append."""
    with SpanLog(store_path, fsync="never", lock_timeout_seconds=10) as log:
        holder = open(store_path / LOCK_NAME, "a")  # noqa: SIM115 - released from another thread
        portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
        timer = threading.Timer(0.05, lambda: (portalocker.unlock(holder), holder.close()))
        timer.start()
        log.append(list(pool()[:2]))
        timer.join()
        assert log.read()[0] == list(pool()[:2])


def test_end_position_names_the_segment_it_cannot_open(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment that cannot be opened (an I/O error) makes end_position raise StorageError saying what failed,
    where and why."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:2]))
        segment = store_path / segment_name(1)
        real_open = log_module._open_regular

        def failing_open(path, flags):
            if os.fspath(path) == os.fspath(segment):
                raise OSError(errno.EIO, "Input/output error")
            return real_open(path, flags)

        monkeypatch.setattr(log_module, "_open_regular", failing_open)
        with pytest.raises(StorageError) as info:
            log.end_position()
        assert str(info.value) == f"cannot open segment {segment}: Input/output error"
        assert info.value.errno == errno.EIO


def test_stats_count_the_segments_left_when_one_vanishes_meanwhile(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment deleted between listing and measuring (another process's retention) is passed over; the segments
    after it are still counted."""
    with SpanLog(store_path, fsync="never", max_bytes=None) as log:
        log.append(list(pool()[:3]))
        first = store_path / segment_name(1)
        second = store_path / segment_name(2)
        second.write_bytes(encode_spans(list(pool()[3:5]))[0])
        real_lstat = os.lstat

        def lstat(path, *args, **kwargs):
            if os.fspath(path) == os.fspath(first):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", os.fspath(path))
            return real_lstat(path, *args, **kwargs)

        monkeypatch.setattr(os, "lstat", lstat)
        stats = log.stats()
        monkeypatch.undo()
        assert (stats.segments, stats.disk_bytes) == (1, second.stat().st_size)


def test_a_second_close_closes_no_other_descriptor(store_path: Path) -> None:
    """close() is idempotent down to the file descriptors: a second close leaves the process's other open files (its
    stdout, fd 1, here) alone."""
    stdout = os.fstat(1)
    log = SpanLog(store_path, fsync="never")
    log.append(list(pool()[:1]))
    log.close()
    log.close()
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (stdout.st_dev, stdout.st_ino)


def test_a_failed_unlock_is_logged_with_the_lock_file(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unlock that fails after an append is not an error (closing the descriptor releases the lock): it is
    logged as a warning naming the lock file and the reason, and the data is in the log."""
    failure = OSError(errno.EIO, "Input/output error")

    def failing_unlock(fd: int) -> None:
        raise failure

    with SpanLog(store_path, fsync="never") as log:
        monkeypatch.setattr(log_module, "_unlock_fd", failing_unlock)
        with caplog.at_level(logging.WARNING, logger="spanstore.log"):
            log.append(list(pool()[:2]))
        monkeypatch.undo()
        assert log.read()[0] == list(pool()[:2])
    messages = [record.getMessage() for record in caplog.records if record.name == "spanstore.log"]
    assert f"cannot unlock {store_path / LOCK_NAME}: {failure}" in messages


def test_a_segment_that_cannot_be_created_raises_storage_error(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a segment fails (an I/O error): append raises StorageError saying what failed, where and why."""
    with SpanLog(store_path, fsync="never") as log:
        segment = store_path / segment_name(1)
        real_open = log_module._open_regular

        def failing_open(path, flags):
            if os.fspath(path) == os.fspath(segment) and flags & os.O_CREAT:
                raise OSError(errno.EIO, "Input/output error")
            return real_open(path, flags)

        monkeypatch.setattr(log_module, "_open_regular", failing_open)
        with pytest.raises(StorageError) as info:
            log.append(list(pool()[:1]))
        assert str(info.value) == f"cannot create segment {segment}: Input/output error"
        assert info.value.errno == errno.EIO


def test_a_directory_planted_as_a_segment_is_refused(store_path: Path) -> None:
    """A directory under a segment's name is refused with a StorageError that says what was found there."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:1]))
    planted = store_path / segment_name(2)
    planted.mkdir()
    with SpanLog(store_path) as log, pytest.raises(StorageError) as info:
        log.read()
    assert f"expected a regular file at {planted}, found a directory;" in str(info.value)


def test_a_span_the_codec_refuses_is_reported_with_its_segment_and_line(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line whose span is invalid (a bad trace id) is read without that span, counted, and reported at debug level
    with the segment and line it came from."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:1]))
    bad = encode_spans(list(pool()[1:2]))[0].replace(pool()[1].trace_id.encode(), b"zz")
    with open(store_path / segment_name(1), "ab") as f:
        f.write(bad)
    with SpanLog(store_path) as log, caplog.at_level(logging.DEBUG, logger="spanstore.log"):
        assert log.read()[0] == list(pool()[:1])
        assert (log.stats().invalid_spans, log.stats().decode_issues) == (1, 1)
    assert f"{segment_name(1)} line 2, " in caplog.text


def test_the_default_fsync_interval_is_one_second(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default policy, "interval", syncs an append made 1 s after the last sync and not one made sooner (the
    README: it loses up to 1 s of appends)."""
    clock = [1000.0]
    fake_time = type("FakeTime", (), {"monotonic": staticmethod(lambda: clock[0]), "time": time.time})
    fake_time.time_ns, fake_time.sleep = time.time_ns, time.sleep
    monkeypatch.setattr(log_module, "time", fake_time)
    synced: list[int] = []
    monkeypatch.setattr(log_module, "_fdatasync", lambda fd: synced.append(fd))
    with SpanLog(store_path) as log:
        log.append(list(pool()[:1]))
        clock[0] += 0.9
        log.append(list(pool()[1:2]))
        assert synced == []
        clock[0] += 0.1
        log.append(list(pool()[2:3]))
        assert len(synced) == 1


def test_a_directory_deleted_while_in_use_is_recreated_and_logged(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store directory deleted under an open log: the next append recreates it (marker included), its spans
    land there, and a warning says what happened."""
    import shutil

    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:2]))
        shutil.rmtree(store_path)
        with caplog.at_level(logging.WARNING, logger="spanstore.log"):
            log.append(list(pool()[2:4]))
        assert (store_path / MARKER_NAME).is_file()
        assert log.read()[0] == list(pool()[2:4])
    assert [r.getMessage() for r in caplog.records if "while in use" in r.getMessage()] == [
        f"spanstore: the store directory {store_path} was deleted while in use; recreated it as a store, spans go "
        "there from now on"
    ]


def test_a_line_the_codec_fails_on_unexpectedly_is_skipped_naming_the_error(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while decoding one line (not a CorruptLineError) skips that line with a reason that
    names the exception, and the other lines still read."""
    with SpanLog(store_path, fsync="never") as log:
        for span in pool()[:3]:
            log.append([span])
    real_decode = log_module.decode_line
    poisoned = pool()[1].span_id.encode()

    def decode(piece, **kwargs):
        if poisoned in piece:
            raise RuntimeError("codec bug")
        return real_decode(piece, **kwargs)

    monkeypatch.setattr(log_module, "decode_line", decode)
    with SpanLog(store_path) as log:
        assert log.read()[0] == [pool()[0], pool()[2]]
        [skipped] = log.stats().skipped_lines
    assert (skipped.line_number, skipped.torn) == (2, False)
    assert skipped.reason == "expected a JSON TracesData line, got RuntimeError: codec bug"


def test_a_line_with_many_invalid_spans_logs_only_the_first_three(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Five invalid spans in one line are all counted, but only the first three issues are logged (at debug level):
    a bad producer cannot flood the log with one line."""
    spans = list(pool()[:5])
    line = encode_spans(spans)[0]
    for span in spans:
        line = line.replace(span.trace_id.encode(), b"zz")
    store_path.mkdir()
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[5:6]))
    with open(store_path / segment_name(1), "ab") as f:
        f.write(line)
    with SpanLog(store_path) as log, caplog.at_level(logging.DEBUG, logger="spanstore.log"):
        assert log.read()[0] == list(pool()[5:6])
        assert log.stats().invalid_spans == 5
    assert sum("traceId: expected a trace id" in r.getMessage() for r in caplog.records) == 3


def test_a_segment_retention_cannot_delete_is_logged_and_kept(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention that cannot delete an old segment (a permission error) logs a warning naming it and the reason,
    keeps it, and the append that triggered it still succeeds."""
    with SpanLog(store_path, fsync="never", segment_max_bytes=1) as log:
        for i in range(3):
            log.append(list(pool()[i : i + 1]))
    failure = PermissionError(errno.EACCES, "Permission denied")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == segment_name(1):
            raise failure
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with SpanLog(store_path, fsync="never", segment_max_bytes=1, max_bytes=1) as log:
        with caplog.at_level(logging.WARNING, logger="spanstore.log"):
            log.append(list(pool()[3:4]))
        monkeypatch.undo()
        assert (store_path / segment_name(1)).exists()
    assert f"retention could not delete {segment_name(1)}: {failure}" in [r.getMessage() for r in caplog.records]


def test_a_refused_newer_segment_leaves_no_stale_descriptor(store_path: Path, tmp_path: Path) -> None:
    """A newer segment (another writer's roll) turns out to be a planted link: the append is refused, and closing the
    log afterwards closes only the log's own files (not the process's stdout, fd 1)."""
    stdout = os.fstat(1)
    target = tmp_path / "victim.txt"
    target.write_bytes(b"")
    log = SpanLog(store_path, fsync="never")
    log.append(list(pool()[:1]))
    (store_path / segment_name(2)).symlink_to(target)
    with pytest.raises(StorageError, match="symbolic link"):
        log.append(list(pool()[1:2]))
    log.close()
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (stdout.st_dev, stdout.st_ino)
    assert target.read_bytes() == b""


def test_a_reader_that_may_not_write_the_lock_file_still_reads(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader whose lock file is read-only to it (another user's store, say) still takes the lock, through a
    read-only descriptor, to tell a torn tail from a write in progress: it reads every whole line and skips the
    torn one."""
    with SpanLog(store_path, fsync="never") as log:
        log.append(list(pool()[:3]))
    _write_half_line(store_path / segment_name(1))
    lock_path = os.fspath(store_path / LOCK_NAME)
    real_open = log_module._open_regular

    def open_regular(path, flags):
        if os.fspath(path) == lock_path and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(errno.EACCES, "Permission denied", lock_path)
        return real_open(path, flags)

    monkeypatch.setattr(log_module, "_open_regular", open_regular)
    with SpanLog(store_path, create=False) as log:
        assert log.read()[0] == list(pool()[:3])
        assert log.stats().torn_tails == 1


def test_closed_log_raises_store_closed_error(store_path: Path) -> None:
    """close is idempotent; afterwards every operation raises StoreClosedError."""
    log = SpanLog(store_path)
    log.append(list(pool()[:1]))
    log.close()
    log.close()
    for call in (
        lambda: log.append(list(pool()[:1])),
        log.read,
        log.stats,
        log.end_position,
    ):
        with pytest.raises(StoreClosedError, match="closed"):
            call()
    assert "closed" in repr(log)


# --- fsync policies -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "interval", "during", "at_close"),
    [("never", 0.0, 0, 0), ("always", 0.0, 3, 0), ("interval", 0.0, 3, 0), ("interval", 3600.0, 0, 1)],
)
def test_fsync_policy_decides_when_data_is_synced(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, interval: float, during: int, at_close: int
) -> None:
    """always syncs every append, interval at most once per interval and on close, never not at all."""
    synced = []
    monkeypatch.setattr(log_module, "_fdatasync", lambda fd: synced.append(fd))
    log = SpanLog(store_path, fsync=policy, fsync_interval_seconds=interval)  # type: ignore[arg-type]
    for i in range(3):
        log.append(list(pool()[i : i + 1]))
    assert len(synced) == during == log.stats().fsyncs
    log.close()
    assert len(synced) == during + at_close


def test_always_syncs_every_segment_a_batch_touched(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync="always", a batch spread over two segments is synced in both before append returns."""
    synced_paths = []
    monkeypatch.setattr(log_module, "_fdatasync", lambda fd: synced_paths.append(os.readlink(f"/proc/self/fd/{fd}")))
    spans = list(pool()[:40])
    with SpanLog(store_path, fsync="always", segment_max_bytes=6000, max_bytes=None) as log:
        log.append(spans)
        files = segment_files(store_path)
        assert len(files) >= 2
        assert {Path(p).name for p in synced_paths} == {f.name for f in files}


# --- threads --------------------------------------------------------------------------------------------------------


def test_threads_appending_at_once_keep_every_line_whole_and_in_order(store_path: Path) -> None:
    """Four threads appending at once: every span is read back once, each thread's spans in its order."""
    per_thread = {t: make_spans(200, f"t{t}") for t in range(4)}
    with SpanLog(store_path, fsync="never", segment_max_bytes=20_000, max_bytes=None) as log:

        def work(t: int) -> None:
            spans = per_thread[t]
            for i in range(0, len(spans), 7):
                log.append(spans[i : i + 7])

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        followed = []
        position = None
        while any(thread.is_alive() for thread in threads):
            got, position = log.read(position)
            followed.extend(got)
        for thread in threads:
            thread.join()
        got, _ = log.read(position)
        followed.extend(got)
        everything = log.read()[0]
        assert names(followed) == names(everything)
        assert len(everything) == 800
        for t in range(4):
            assert [s for s in everything if s.name.startswith(f"t{t}-")] == per_thread[t]
        assert log.stats().skipped_line_count == 0


def test_a_failed_fsync_says_the_lines_were_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync failing after a complete write raises StorageError marked lines_written, and the lines are readable."""
    import spanstore.log as log_module

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with SpanLog(tmp_path / "store", fsync="always") as log:
        monkeypatch.setattr(log_module, "_fdatasync", broken_fsync)
        with pytest.raises(StorageError) as raised:
            log.append(make_spans(3))
        assert raised.value.lines_written is True
        segment = log.path / "spans-000001.jsonl"
        assert str(raised.value) == f"cannot fsync segment {segment}: Input/output error"  # what, where, why
        monkeypatch.undo()
        assert len(log.read()[0]) == 3


def test_read_containing_decodes_only_matching_lines(tmp_path: Path) -> None:
    """read(containing=...) returns the spans of the lines holding those bytes, newest budget included."""
    with SpanLog(tmp_path / "store") as log:
        batches = [make_spans(3, prefix=f"b{i}") for i in range(4)]
        for batch in batches:
            log.append(batch)
        wanted = batches[2][1]
        needle = f'"traceId":"{wanted.trace_id}'.encode()
        found, _ = log.read(containing=needle)
        assert found == batches[2]  # the whole line that holds the trace, and nothing else
        assert log.read(containing=b'"traceId":"' + b"f" * 32)[0] == []
        assert wanted in log.read(max_spans=100, containing=needle)[0]


# --- reading in blocks: a read holds a block and the line in hand, whatever the segment's size ---------------------


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Segments read 512 bytes at a time: a line of a few KB spans several blocks, a segment many."""
    monkeypatch.setattr(log_module, "_READ_BLOCK_BYTES", 512)
    return 512


def _skips(log: SpanLog) -> list[tuple[str, int, bool]]:
    return [(s.segment, s.line_number, s.torn) for s in log.stats().skipped_lines]


def _reads(store_path: Path, middle: LogPosition) -> tuple[object, ...]:
    """What a fresh log reads every way: forward, from ``middle``, newest first, line by line newest first."""
    with SpanLog(store_path, create=False) as log:
        handed: list[list[StoredSpan]] = []
        segments: list[int] = []
        newest_lines = log.read_newest_lines(10**6, handed.append, segments.append)
        return (
            log.read(),
            log.read(middle),
            [log.read(max_spans=k) for k in (0, 1, 2, 3, 4, 50, 10**6)],
            log.read(middle, max_spans=10),
            (handed, segments, newest_lines),
            log.stats(),
        )


@pytest.mark.parametrize("block", [512, 4096])
def test_segments_of_many_blocks_read_as_in_one_block(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Segments of many blocks give the spans, positions and counters a read of each segment as one block gives:
    forward, from a saved position, newest first (any max_spans) and line by line newest first."""
    batches = line_spans(60)  # lines of ~2.6 KB: one spans several 512-byte blocks; a 4 KB block holds a line or two
    everything = [span for batch in batches for span in batch]
    with SpanLog(store_path, fsync="never", segment_max_bytes=60_000, max_bytes=None) as log:
        for batch in batches[:25]:
            log.append(batch)
        middle = log.end_position()
        for batch in batches[25:]:
            log.append(batch)
        end = log.end_position()
    sizes = [f.stat().st_size for f in segment_files(store_path)]
    assert len(sizes) == 3 and min(sizes) > 8 * block
    assert max(sizes) < log_module._READ_BLOCK_BYTES  # as before: each segment read whole
    in_one_block = _reads(store_path, middle)
    monkeypatch.setattr(log_module, "_READ_BLOCK_BYTES", block)
    in_blocks = _reads(store_path, middle)
    assert in_blocks == in_one_block
    forward, from_middle, newest, _, (handed, segments, newest_lines), _ = in_blocks
    assert forward == (everything, end)
    assert from_middle == (everything[75:], end)
    assert newest == [([], end)] + [(everything[-k:], end) for k in (1, 2, 3, 4, 50)] + [(everything, end)]
    assert (handed, segments, newest_lines) == (batches[::-1], [3, 2, 1], (len(everything), end))


def test_a_line_longer_than_the_block_is_read_whole(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: int
) -> None:
    """Lines of ~140 KB (big batches) first and last in a segment, read 512 bytes at a time: every span, forward and
    newest first; no read takes more than a block, except one that takes a whole line (not the segment's)."""
    big_a, big_b, small = list(pool()[:200]), list(pool()[200:]), list(pool()[:3])
    with SpanLog(store_path, fsync="never") as log:
        for batch in (big_a, small, big_b):
            log.append(batch)
        end = log.end_position()
    lines = (store_path / segment_name(1)).read_bytes().split(b"\n")
    assert min(len(lines[0]), len(lines[2])) > 200 * small_blocks
    real_pread = os.pread
    taken: list[int] = []

    def pread(fd: int, size: int, offset: int) -> bytes:
        taken.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    with SpanLog(store_path, create=False) as log:
        assert log.read() == (big_a + small + big_b, end)
        for k in (1, 150, 203, 250, 10**6):
            assert log.read(max_spans=k) == ((big_a + small + big_b)[-k:], end)
    # blocks, and 64 KB reads that look for the last newline from the end: bounded, however big the segment
    assert set(taken) - {len(line) for line in lines} <= {*range(small_blocks + 1), 1 << 16}
    assert max(taken) == max(len(line) for line in lines) < sum(map(len, lines)) // 2


def test_a_torn_last_line_across_a_block_boundary(store_path: Path, small_blocks: int) -> None:
    """A partial last line running over block boundaries: left alone while a writer holds the lock (maybe a write in
    progress), else skipped as torn line 3 and consumed, forward and newest first; torn in a sealed segment even while
    the lock is held."""
    batches = line_spans(2)
    with SpanLog(store_path, fsync="never") as log:
        for batch in batches:
            log.append(batch)
        lines_end = log.end_position()
    segment = store_path / segment_name(1)
    _write_half_line(segment)
    size = segment.stat().st_size
    assert (size - 1) // small_blocks > lines_end.offset // small_blocks  # the tail crosses a boundary
    with open(store_path / LOCK_NAME, "a") as holder:
        portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
        with SpanLog(store_path, create=False) as log:
            assert log.read() == (batches[0] + batches[1], lines_end)
            assert log.read(max_spans=10) == (batches[0] + batches[1], lines_end)
            assert log.stats().torn_tails == 0
        portalocker.unlock(holder)
    for newest_first in (False, True):
        with SpanLog(store_path, create=False) as log:
            got = log.read(max_spans=10) if newest_first else log.read()
            assert got == (batches[0] + batches[1], LogPosition(1, size))
            assert log.stats().torn_tails == 1
            assert _skips(log) == [(segment_name(1), 3, True)]
    (store_path / segment_name(2)).write_bytes(encode_spans(list(pool()[10:12]))[0])
    with open(store_path / LOCK_NAME, "a") as holder:
        portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
        with SpanLog(store_path, create=False) as log:
            assert log.read(until_segment=1) == (batches[0] + batches[1], LogPosition(1, size))
            assert _skips(log) == [(segment_name(1), 3, True)]
        portalocker.unlock(holder)


def test_corrupt_lines_past_the_first_block_are_numbered_right(store_path: Path, small_blocks: int) -> None:
    """Lines 7 and 9 corrupt and a torn line 12, many blocks into the segment: a fresh log reports those numbers
    whether it reads forward or newest first, from the start or from a saved position (whose line count it has to
    work out)."""
    batches = line_spans(9)
    store_path.mkdir()
    with SpanLog(store_path, fsync="never") as log:
        for i, batch in enumerate(batches):
            if i in (6, 7):  # before the 7th and the 9th line
                with open(store_path / segment_name(1), "ab") as f:
                    f.write(b"{this is line %d, not json}\n" % (i + 1 if i == 6 else 9))
            log.append(batch)
    segment = store_path / segment_name(1)
    _write_half_line(segment)
    data = segment.read_bytes()
    assert data.index(b"{this is line 7") > 4 * small_blocks
    after_line_3 = LogPosition(1, [i for i, byte in enumerate(data) if byte == ord("\n")][2] + 1)
    goods = [span for batch in batches for span in batch]
    cases = [
        (None, None, goods, [7, 9, 12]),
        (None, 1000, goods, [9, 7, 12]),
        (after_line_3, None, goods[9:], [7, 9, 12]),
        (after_line_3, 1000, goods[9:], [9, 7, 12]),
    ]
    for position, max_spans, expected, numbers in cases:
        with SpanLog(store_path, create=False) as log:
            assert log.read(position, max_spans=max_spans) == (expected, LogPosition(1, len(data)))
            assert _skips(log) == [(segment_name(1), n, n == 12) for n in numbers], (position, max_spans)


_LINE_KINDS = st.sampled_from(["good", "good", "good", "big", "blank", "spaces", "corrupt", "truncated", "metrics"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(_LINE_KINDS, max_size=12),
    tail=st.sampled_from([b"", b"{", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0af7']),
    block=st.sampled_from([1, 3, 64, 700]),
)
def test_any_segment_reads_in_any_block_size_as_in_one_block(kinds: list[str], tail: bytes, block: int) -> None:
    """Whatever lines a segment holds (blank, corrupt, truncated, other signals, longer than a block) and however it
    ends, reading it in blocks of any size gives the spans, positions, counters and skipped lines of one block."""
    spans = pool()
    lines = []
    for i, kind in enumerate(kinds):
        line = encode_spans(list(spans[i * 5 : i * 5 + 1 + i % 4]))[0][:-1]
        lines.append(
            {
                "good": line,
                "big": encode_spans(list(spans[100:160]))[0][:-1],
                "blank": b"",
                "spaces": b"  \t",
                "corrupt": b"{not json: line %d}" % i,
                "truncated": line[: len(line) // 2],
                "metrics": b'{"resourceMetrics":[]}',
            }[kind]
        )
    data = b"".join(line + b"\n" for line in lines) + tail
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        SpanLog(path).close()
        (path / segment_name(1)).write_bytes(data)
        middle = LogPosition(1, data.find(b"\n", len(data) // 2) + 1)  # a line start, or (1, 0)
        in_one_block = _reads(path, middle)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(log_module, "_READ_BLOCK_BYTES", block)
            assert _reads(path, middle) == in_one_block
