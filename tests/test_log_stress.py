"""Stress tests for spanstore.log: several processes, crashes (SIGKILL), fork, retention under load."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from spanstore.errors import LockTimeoutError
from spanstore.log import SpanLog, segment_name
from spanstore.model import StoredSpan
from spanstore.otlp import read_file
from tests.test_log import make_spans

pytestmark = pytest.mark.stress

REPO_ROOT = Path(__file__).resolve().parents[1]

# A writer process: makes real SDK spans named "w{worker}-{i:06d}", waits for "go", appends them in batches of
# varying size (1..97), reports "done".
APPEND_WORKER = r"""
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spanstore.log import SpanLog
from spanstore.model import StoredSpan

path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
segment_max_bytes, max_bytes = int(sys.argv[4]), (int(sys.argv[5]) or None)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("stress")
for i in range(count):
    with tracer.start_as_current_span(f"w{worker}-{i:06d}", attributes={"worker": worker, "i": i, "pad": "x" * 40}):
        pass
spans = [StoredSpan.from_readable_span(s) for s in exporter.get_finished_spans()]
log = SpanLog(path, fsync="never", segment_max_bytes=segment_max_bytes, max_bytes=max_bytes)
print("ready", flush=True)
sys.stdin.readline()
i = 0
step = 1
while i < count:
    log.append(spans[i : i + step])
    i += step
    step = step * 7 % 97 + 1
log.close()
print("done", flush=True)
"""

# A writer that appends batch after batch (fsync="always") of `size` spans and reports each batch number once append
# returned. With `tear_at` >= 0, the append of that batch writes only the first `cut` bytes of its data (a fraction
# when below 1) and then the process SIGKILLs itself: a real writer dying in the middle of its write() call.
CRASH_WORKER = r"""
import os
import signal
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spanstore.log import SpanLog
from spanstore.model import StoredSpan

path, size, tear_at, cut = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("crash")
log = SpanLog(path, fsync="always", segment_max_bytes=20_000, max_bytes=None)
real_write = os.write


def torn_write(fd, data):
    data = bytes(data)
    keep = int(len(data) * cut) if cut < 1 else min(int(cut), len(data) - 1)
    real_write(fd, data[:keep])
    os.kill(os.getpid(), signal.SIGKILL)


batch = 0
while True:
    for j in range(size):
        with tracer.start_as_current_span(f"b{batch:06d}-{j}", attributes={"pad": "y" * 100, "j": j}):
            pass
    spans = [StoredSpan.from_readable_span(s) for s in exporter.get_finished_spans()]
    exporter.clear()
    if batch == tear_at:
        os.write = torn_write
    log.append(spans)
    print(batch, flush=True)
    batch += 1
"""


def _start(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def _close(workers: list[subprocess.Popen[str]]) -> None:
    """Kill what still runs and close every pipe (unclosed pipes are ResourceWarnings, errors here)."""
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        for stream in (worker.stdin, worker.stdout):
            if stream is not None:
                stream.close()


def _segment_bytes(path: Path) -> int:
    total = 0
    for file in path.glob("spans-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # deleted by a writer's retention meanwhile
            total += file.stat().st_size
    return total


def _by_worker(spans: list[StoredSpan]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for span in spans:
        worker, index = span.name.split("-")
        grouped[worker].append(int(index))
    return grouped


def test_four_processes_append_concurrently_without_losing_or_interleaving(tmp_path: Path) -> None:
    """4 processes x 5,000 spans at once: 20,000 spans read back, every line parses, each process's order kept."""
    path = tmp_path / "store"
    SpanLog(path).close()
    workers = [_start(APPEND_WORKER, path, w, 5000, 256 * 1024, 0) for w in range(4)]
    try:
        _four_processes(path, workers)
    finally:
        _close(workers)


def _four_processes(path: Path, workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    followed: list[StoredSpan] = []
    with SpanLog(path, create=False) as reader:
        position = None
        while any(worker.poll() is None for worker in workers):
            got, position = reader.read(position)  # a follower racing the writers' lines
            followed.extend(got)
            time.sleep(0.01)
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        followed.extend(reader.read(position)[0])
        everything, _ = reader.read()
        assert reader.stats().skipped_line_count == 0
    assert len(everything) == 20_000
    assert [s.name for s in followed] == [s.name for s in everything]
    grouped = _by_worker(everything)
    assert sorted(grouped) == ["w0", "w1", "w2", "w3"]
    for indices in grouped.values():
        assert indices == list(range(5000))
    segments = sorted(path.glob("spans-*.jsonl"))
    assert len(segments) > 1
    total = 0
    for segment in segments:
        result = read_file(segment)
        assert result.corrupt_lines == [] and result.issues == []
        total += len(result.spans)
    assert total == 20_000


def _crash(path: Path, size: int, tear_at: int, cut: float, kill_after: int | None = None) -> list[int]:
    """Run CRASH_WORKER until it dies (torn by itself, or killed by us after `kill_after` batches); return the batch
    numbers it reported as appended."""
    worker = _start(CRASH_WORKER, path, size, tear_at, cut)
    assert worker.stdout is not None
    reported: list[int] = []
    try:
        if kill_after is not None:
            while len(reported) < kill_after:
                line = worker.stdout.readline()
                assert line, f"the writer died before reporting {kill_after} batches"
                reported.append(int(line))
            worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
        reported.extend(int(line) for line in worker.stdout.read().split())
    finally:
        _close([worker])
    assert worker.returncode == -signal.SIGKILL
    return reported


def _recovered_cleanly(path: Path, reported: list[int], size: int) -> tuple[dict[int, list[int]], int]:
    """Every reported batch is read back whole, the log stays usable; return the batches read and torn tails."""
    with SpanLog(path, fsync="always") as log:
        spans, position = log.read()
        batches = _by_batch(spans)
        for batch in reported:
            assert batches[batch] == list(range(size)), batch
        stats = log.stats()
        torn = stats.torn_tails
        assert stats.skipped_line_count == torn and all(s.torn for s in stats.skipped_lines)
        after = make_spans(5, "after")
        log.append(after)
        got, _ = log.read(position)
        assert got == after
        assert log.read()[0][-5:] == after
    for segment in sorted(path.glob("spans-*.jsonl")):
        assert segment.read_bytes().endswith(b"\n")
    with SpanLog(path, create=False) as reopened:  # the torn line is skipped again, and counted once
        assert reopened.read()[0][-5:] == after
        assert reopened.stats().torn_tails == torn
    return batches, torn


@pytest.mark.parametrize(
    "cut",
    [1, 0.5, 10**9],  # 10**9: all but the newline, a whole JSON document that must not become data
    ids=["one-byte", "half", "all-but-the-newline"],
)
def test_sigkill_mid_append_loses_nothing_that_append_returned_for(tmp_path: Path, cut: float) -> None:
    """A writer killed inside its write() call, after writing part of a batch: every batch append returned for is
    recovered whole, the partial batch is one torn tail (never read as spans), and the log is clean to use after."""
    path = tmp_path / "store"
    reported = _crash(path, size=10, tear_at=30, cut=cut)
    assert reported == list(range(30))  # it died in the 31st append, before returning
    batches, torn = _recovered_cleanly(path, reported, size=10)
    assert torn == 1
    assert sorted(batches) == reported  # nothing of the torn batch is read back


def test_sigkill_at_random_moments_of_large_appends(tmp_path: Path) -> None:
    """Killed from outside at varying moments while appending batches of 300 spans (several lines, rolling
    segments): in every run the reported batches are whole and whatever was cut is at most one torn tail."""
    for run in range(4):
        path = tmp_path / f"store{run}"
        reported = _crash(path, size=300, tear_at=-1, cut=0, kill_after=2 + 3 * run)
        batches, torn = _recovered_cleanly(path, reported, size=300)
        assert torn <= 1
        unreported = set(batches) - set(reported)
        assert len(unreported) <= 1  # only the batch being written when the kill came may show up, in part
        for batch in unreported:
            indices = batches[batch]
            assert indices == list(range(len(indices)))  # whole lines only: a prefix of the batch


def _by_batch(spans: list[StoredSpan]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for span in spans:
        batch, index = span.name[1:].split("-")
        grouped[int(batch)].append(int(index))
    return grouped


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_children_use_their_own_descriptors_and_lock(tmp_path: Path) -> None:
    """After fork a child reopens its files: it does not share the parent's lock, and its lines stay whole."""
    path = tmp_path / "store"
    children_spans = {c: make_spans(300, f"c{c}") for c in range(2)}
    parent_spans = make_spans(300, "p")
    log = SpanLog(path, fsync="never", segment_max_bytes=50_000, max_bytes=None, lock_timeout_seconds=0.05)
    log.append(parent_spans[:1])
    # While the parent holds the directory lock, a forked child must time out rather than slip in beside it.
    log._lock_directory()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            log.append(children_spans[0][:1])
        except LockTimeoutError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    log._unlock_directory()
    assert os.waitstatus_to_exitcode(status) == 0
    log.lock_timeout_seconds = 30.0
    pids = []
    for c in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                spans = children_spans[c]
                for i in range(0, len(spans), 9):
                    log.append(spans[i : i + 9])
                log.close()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for i in range(1, len(parent_spans), 11):
        log.append(parent_spans[i : i + 11])
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    spans, _ = log.read()
    log.close()
    assert len(spans) == 900
    grouped = _by_worker(spans)
    assert {key: len(value) for key, value in grouped.items()} == {"p": 300, "c0": 300, "c1": 300}
    for indices in grouped.values():
        assert indices == sorted(indices)
    assert segment_name(1) in os.listdir(path)


def test_processes_under_a_tight_disk_budget_while_a_follower_reads(tmp_path: Path) -> None:
    """Writers rolling and deleting segments under a small budget: the follower reads both writers' spans, whole
    lines in order, each writer's newest among them."""
    path = tmp_path / "store"
    SpanLog(path).close()
    seg, budget = 32 * 1024, 128 * 1024
    workers = [_start(APPEND_WORKER, path, w, 3000, seg, budget) for w in range(2)]
    try:
        _tight_budget(path, workers, seg, budget)
    finally:
        _close(workers)


def _tight_budget(path: Path, workers: list[subprocess.Popen[str]], seg: int, budget: int) -> None:
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    followed: list[StoredSpan] = []
    with SpanLog(path, create=False) as reader:
        position = None
        while any(worker.poll() is None for worker in workers):
            got, position = reader.read(position)
            followed.extend(got)
            assert _segment_bytes(path) <= budget + 2 * seg  # one segment of slack, + one rolled meanwhile
            time.sleep(0.005)
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        followed.extend(reader.read(position)[0])
        remaining, _ = reader.read()
        stats = reader.stats()
        assert stats.skipped_line_count == 0
        assert stats.segments_deleted == 0  # the reader deletes nothing; the writers did
    # What the budget kept (the newest segments) the follower read too, as the end of what it followed.
    assert len(remaining) >= 100
    assert [s.name for s in followed[-len(remaining) :]] == [s.name for s in remaining]
    grouped = _by_worker(followed)
    assert sorted(grouped) == ["w0", "w1"]  # the follower read both writers' spans, not nothing
    for indices in grouped.values():
        assert indices == sorted(set(indices))  # in order, no duplicates (gaps only where segments were deleted)
    assert _segment_bytes(path) <= budget + seg
    assert not (path / segment_name(1)).exists()
