"""Fault injection for spanstore.log: hostile segment contents, planted files and unsafe directories (issue 12)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import spanstore.log as log_module
from spanstore.errors import StorageError
from spanstore.log import LOCK_NAME, MARKER_NAME, SpanLog, segment_name
from tests.test_log import line_spans


def _store_with_bad_lines(path: Path, bad: int) -> list:
    """A store whose one segment holds a good line, ``bad`` corrupt lines, and a good line."""
    batches = line_spans(2)
    with SpanLog(path, fsync="never") as log:
        log.append(batches[0])
    segment = path / segment_name(1)
    with open(segment, "ab") as f:
        f.write(b"{not json}\n" * bad)
    with SpanLog(path, fsync="never") as log:
        log.append(batches[1])
    return batches[0] + batches[1]


def test_skipping_corrupt_lines_is_linear_in_their_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Numbering n corrupt lines counts each byte of the segment at most twice, forward or newest first, not once per
    corrupt line (O(n²)): the count goes on from the last line numbered."""
    bad = 3_000
    expected = _store_with_bad_lines(tmp_path / "store", bad)
    size = (tmp_path / "store" / segment_name(1)).stat().st_size
    newlines = log_module._SegmentRead._newlines
    counted = [0]

    def counting(self, lo: int, hi: int) -> int:  # type: ignore[no-untyped-def]
        counted[0] += hi - lo
        return newlines(self, lo, hi)

    monkeypatch.setattr(log_module._SegmentRead, "_newlines", counting)
    for read in ("forward", "newest first"):
        counted[0] = 0
        with SpanLog(tmp_path / "store", create=False) as log:
            spans, _ = log.read() if read == "forward" else log.read(max_spans=len(expected))
            stats = log.stats()
        assert spans == expected
        assert stats.skipped_line_count == bad
        # the last 100 met: lines 2 to bad + 1 are the corrupt ones, met last to first when reading newest first
        kept = range(bad + 2 - 100, bad + 2) if read == "forward" else range(101, 1, -1)
        assert [s.line_number for s in stats.skipped_lines] == list(kept), read
        assert counted[0] <= 2 * size, read  # quadratic would be ~bad/2 segments' worth


def test_skipped_lines_make_one_summarized_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of corrupt lines log the first few one by one, then one summary with the count, not a line each."""
    _store_with_bad_lines(tmp_path / "store", 2_000)
    with caplog.at_level(logging.WARNING, logger=log_module.__name__), SpanLog(tmp_path / "store") as log:
        log.read()
        log.read()  # re-reading finds nothing new to say
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == log_module._SKIPS_WARNED_MAX + 1
    assert all("skipped line" in m for m in messages[:-1])
    assert "skipped 1995 more corrupt or torn lines (2000 in all" in messages[-1]


# --- planted files and unsafe directories ---------------------------------------------------------------------------


def _existing_store(path: Path, lines: int = 1) -> list:
    batches = line_spans(lines)
    with SpanLog(path, fsync="never") as log:
        for batch in batches:
            log.append(batch)
    return batches


@pytest.mark.parametrize("planted", [segment_name(999_999), segment_name(2)])
def test_a_symlink_planted_as_a_segment_is_refused_not_written_through(tmp_path: Path, planted: str) -> None:
    """A link planted as the newest segment or the next segment's name is refused; its target gets no byte."""
    store = tmp_path / "store"
    batches = _existing_store(store)
    target = tmp_path / "victim.txt"
    target.write_bytes(b"precious\n")
    (store / planted).symlink_to(target)
    with SpanLog(store, fsync="never", segment_max_bytes=1) as log, pytest.raises(StorageError) as caught:
        for batch in batches:
            log.append(batch)  # segment_max_bytes=1: the next append rolls onto segment 2
    assert "expected a regular file" in str(caught.value)
    assert "found a symbolic link" in str(caught.value) and planted in str(caught.value)
    assert target.read_bytes() == b"precious\n"
    if planted == segment_name(999_999):
        with SpanLog(store, create=False) as log, pytest.raises(StorageError, match="symbolic link"):
            log.read()  # nor read through: the link could point at any file the reader may read


def test_a_dangling_lock_symlink_does_not_create_its_target(tmp_path: Path) -> None:
    """A dangling spanstore.lock link is refused; the file it names is never created."""
    store = tmp_path / "store"
    batches = _existing_store(store)
    (store / LOCK_NAME).unlink()
    target = tmp_path / "created-by-spanstore"
    (store / LOCK_NAME).symlink_to(target)
    with SpanLog(store, fsync="never") as log, pytest.raises(StorageError, match="found a symbolic link"):
        log.append(batches[0])
    assert not target.exists() and not target.is_symlink()


def test_a_symlinked_marker_is_refused(tmp_path: Path) -> None:
    """The marker itself is read only if it is a regular file in the directory."""
    store = tmp_path / "store"
    _existing_store(store)
    real = tmp_path / "marker.json"
    real.write_bytes((store / MARKER_NAME).read_bytes())
    (store / MARKER_NAME).unlink()
    (store / MARKER_NAME).symlink_to(real)
    with pytest.raises(StorageError, match="symbolic link"):
        SpanLog(store)


def test_a_fifo_planted_as_a_segment_is_refused_without_hanging(tmp_path: Path) -> None:
    """A named pipe under a segment's name would block a reader forever: it is refused at once."""
    store = tmp_path / "store"
    _existing_store(store)
    os.mkfifo(store / segment_name(2))
    with SpanLog(store) as log, pytest.raises(StorageError, match="named pipe"):
        log.read()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777], ids=oct)
def test_a_store_directory_writable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    """An existing store writable by group or others is refused, and the message says `chmod go-w`."""
    store = tmp_path / "store"
    _existing_store(store)
    os.chmod(store, mode)
    with pytest.raises(StorageError) as caught:
        SpanLog(store, create=False)
    assert f"chmod go-w {store}" in str(caught.value) and f"{mode:04o}" in str(caught.value)
    os.chmod(store, 0o700)
    SpanLog(store, create=False).close()


def test_a_store_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A store owned by another user (not root) is refused, and the message says `chown`."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    store = tmp_path / "store"
    _existing_store(store)
    os.chown(store, 54321, 54321)
    with pytest.raises(StorageError) as caught:
        SpanLog(store)
    assert "owned by you" in str(caught.value) and "uid 54321" in str(caught.value) and "chown" in str(caught.value)


def test_nothing_is_written_outside_the_store_directory(tmp_path: Path) -> None:
    """With links planted under every name a log writes, appending changes no file outside the directory."""
    store = tmp_path / "store"
    batches = _existing_store(store, 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in (LOCK_NAME, segment_name(2), segment_name(3)):
        target = outside / name
        if name != LOCK_NAME:
            target.write_bytes(b"x")
        (store / name).unlink(missing_ok=True)
        (store / name).symlink_to(target)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    for _ in range(3):
        with SpanLog(store, segment_max_bytes=1) as log, pytest.raises(StorageError):
            log.append(batches[0])
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


def test_read_trace_ids_returns_every_span_of_those_traces(tmp_path: Path) -> None:
    """read(trace_ids=...) holds every span of the named traces that a full read holds (lines are whole batches)."""
    batches = _existing_store(tmp_path / "store", 20)
    wanted = {batches[3][0].trace_id, batches[17][2].trace_id}
    with SpanLog(tmp_path / "store") as log:
        everything, end = log.read()
        some, some_end = log.read(trace_ids=wanted)
        with pytest.raises(ValueError, match="not both"):
            log.read(containing=b"x", trace_ids=wanted)
    assert some_end == end
    assert [s for s in some if s.trace_id in wanted] == [s for s in everything if s.trace_id in wanted] != []
    assert len(some) < len(everything)


def test_a_hard_link_planted_as_a_segment_is_not_written_through(tmp_path: Path) -> None:
    """A hard link under a segment's name (another name for a file outside the store) is refused for writing."""
    store = tmp_path / "store"
    batches = _existing_store(store)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    os.link(victim, store / segment_name(999_999))
    with SpanLog(store, fsync="never") as log, pytest.raises(StorageError, match="2 hard links"):
        log.append(batches[0])
    assert victim.read_bytes() == b"precious\n"
