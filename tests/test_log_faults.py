"""Fault injection for spanstore.log: hostile segment contents, planted files and unsafe directories (issue 12)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import spanstore.log as log_module
from spanstore.log import SpanLog, segment_name
from tests.test_log import line_spans


class _CountingList(list):  # type: ignore[type-arg]
    """A list that counts indexing: the work a reader does per line, without timing anything."""

    indexed = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        _CountingList.indexed += 1
        return super().__getitem__(index)


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
    """Reading a segment with n corrupt lines indexes its lines O(n) times, not O(n²) (offsets computed once)."""
    bad = 3_000
    expected = _store_with_bad_lines(tmp_path / "store", bad)
    load = SpanLog._load

    def counting_load(self, *args):  # type: ignore[no-untyped-def]
        chunk = load(self, *args)
        if chunk is not None:
            chunk.pieces = _CountingList(chunk.pieces)
        return chunk

    monkeypatch.setattr(SpanLog, "_load", counting_load)
    _CountingList.indexed = 0
    with SpanLog(tmp_path / "store", create=False) as log:
        spans, _ = log.read()
        stats = log.stats()
    assert spans == expected
    assert stats.skipped_line_count == bad
    assert [s.line_number for s in stats.skipped_lines][-1] == bad + 1
    assert _CountingList.indexed <= 4 * (bad + 2)  # quadratic would be ~bad²/2 = 4.5 million


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
