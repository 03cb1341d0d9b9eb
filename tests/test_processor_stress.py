"""Stress tests for the processor and its writer: many threads, disk faults, fork (sized for seconds on 2 cores)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider

import spanstore.log
from spanstore.errors import StorageError
from spanstore.log import SpanLog
from spanstore.processor import FileBasedSpanProcessor
from spanstore.query import query_spans

pytestmark = pytest.mark.stress

REPO = Path(__file__).resolve().parents[1]


def run_threads(target, count: int) -> list[BaseException]:
    """Run target(k) on count threads at once; return what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(k: int) -> None:
        try:
            start.wait()
            target(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def segment_lines(path: Path) -> list[bytes]:
    """Every line of every segment, raw, checking each is whole (newline-terminated, a JSON object)."""
    lines = []
    for segment in sorted(path.glob("spans-*.jsonl")):
        data = segment.read_bytes()
        assert data.endswith(b"\n"), f"{segment.name} ends in a partial line"
        for line in data.splitlines():
            assert isinstance(msgspec.json.decode(line), dict), f"{segment.name}: not a JSON object"
            lines.append(line)
    return lines


def test_eight_threads_of_ten_thousand_spans_all_reach_memory_and_disk(tmp_path):
    """80,000 spans ended on 8 threads through one processor are all queryable, and all on disk after force_flush."""
    provider = TracerProvider(shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(tmp_path / "store", fsync="never")
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("stress")

    def produce(k: int) -> None:
        name = f"t{k}"
        for i in range(10_000):
            tracer.start_span(name, attributes={"i": i}).end()

    assert run_threads(produce, 8) == []
    assert len(processor.store) == 80_000
    assert processor.force_flush(timeout_millis=60_000)
    provider.shutdown()
    segment_lines(tmp_path / "store")
    with SpanLog(tmp_path / "store") as log:
        spans, _ = log.read()
    assert Counter(span.name for span in spans) == {f"t{k}": 10_000 for k in range(8)}
    assert len({span.span_id for span in spans}) == 80_000


@pytest.mark.parametrize(
    "fault",
    [
        StorageError(errno.ENOSPC, "No space left on device: append 4096 bytes to spans-000001.jsonl"),
        StorageError(errno.EROFS, "Read-only file system: append 4096 bytes to spans-000001.jsonl"),
    ],
    ids=["disk-full", "read-only"],
)
def test_a_disk_fault_never_reaches_the_app_and_writes_resume_when_it_clears(tmp_path, monkeypatch, fault):
    """During a disk fault spans stay queryable, overflow is dropped and counted, and writing resumes after it."""

    class FaultySpanLog(SpanLog):
        failing = False

        def append(self, spans):
            if FaultySpanLog.failing:
                raise fault
            return super().append(spans)

    monkeypatch.setattr(spanstore.log, "SpanLog", FaultySpanLog)  # the store opens its log through this name
    provider = TracerProvider(shutdown_on_exit=False)
    # Sizes: each phase but the faulty one fits the queue, so only the fault can cause drops, and it must.
    max_queue, threads, per_thread = 3000, 4, {"before": 500, "during": 1500, "after": 500}
    processor = FileBasedSpanProcessor(
        tmp_path / "store", fsync="never", flush_interval_seconds=0.01, max_queue=max_queue
    )
    provider.add_span_processor(processor)
    store = processor.store
    tracer = provider.get_tracer("faults")
    phase = threading.Barrier(threads + 1)

    def produce(k: int) -> None:
        for name, count in per_thread.items():
            for i in range(count):
                with tracer.start_as_current_span(name, attributes={"i": i, "thread": k}):
                    pass
            phase.wait()  # phase done: the main thread toggles the fault
            phase.wait()  # go on

    errors: list[BaseException] = []
    producers = threading.Thread(target=lambda: errors.extend(run_threads(produce, threads)))
    producers.start()
    phase.wait()  # "before" done
    assert processor.force_flush()
    FaultySpanLog.failing = True
    phase.wait()
    phase.wait()  # "during" done
    during = threads * per_thread["during"]
    assert len(store) == threads * per_thread["before"] + during  # queryable in spite of the fault
    assert len(query_spans(store, name="during")) == during
    assert not processor.force_flush(timeout_millis=100)  # cannot reach the disk
    FaultySpanLog.failing = False
    phase.wait()
    phase.wait()  # "after" done
    phase.wait()
    producers.join()
    assert errors == []
    total = threads * sum(per_thread.values())
    assert len(store) == total
    assert processor.force_flush(timeout_millis=60_000)
    writer = store.stats().writer
    assert writer["failed_appends"] >= 1 and writer["queued"] == 0
    assert writer["dropped_spans"] >= during - max_queue - 1024  # at most the queue and one batch held back
    assert writer["written_spans"] + writer["dropped_spans"] == total
    assert fault.strerror in writer["last_error"]
    provider.shutdown()
    segment_lines(tmp_path / "store")
    with SpanLog(tmp_path / "store") as log:
        spans, _ = log.read()
    counts = Counter(span.name for span in spans)
    assert len({span.span_id for span in spans}) == len(spans) == writer["written_spans"]
    assert counts["before"] == threads * per_thread["before"]  # written before the fault
    assert counts["after"] == threads * per_thread["after"]  # the newest max_queue spans are never dropped
    assert counts["during"] == during - writer["dropped_spans"]  # only the oldest waiting spans were dropped


FORK_SCRIPT = """
    import json, os, sys, threading, warnings
    from opentelemetry.sdk.trace import TracerProvider
    from spanstore.processor import FileBasedSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(sys.argv[1], fsync="never", flush_interval_seconds=3600)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("fork")
    for i in range(300):
        tracer.start_span(f"before-{i}").end()
    assert processor.force_flush()
    for i in range(300):
        tracer.start_span(f"queued-{i}").end()
    processor.store.drain()  # converted: in the parent's writer queue at the fork (no tick for an hour)
    for i in range(300):
        tracer.start_span(f"inbox-{i}").end()  # in the parent's store inbox at the fork

    stop = threading.Event()
    def background():  # keeps the parent's locks busy while it forks
        i = 0
        while not stop.is_set():
            tracer.start_span(f"background-{i}").end()
            i += 1
    thread = threading.Thread(target=background)
    thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking a process that has threads
        pid = os.fork()
    who = "child" if pid == 0 else "parent"
    for i in range(3000):
        with tracer.start_as_current_span(f"{who}-{i}", attributes={"pid": os.getpid()}):
            pass
    if pid == 0:
        os._exit(0 if processor.force_flush(60_000) else 3)
    stop.set()
    thread.join()
    ok = processor.force_flush(60_000)
    _, status = os.waitpid(pid, 0)
    stats = processor.store.stats().writer
    provider.shutdown()
    print(json.dumps({"parent_flushed": ok, "child_exit": os.waitstatus_to_exitcode(status),
                      "parent_written": stats["written_spans"], "parent_dropped": stats["dropped_spans"]}))
"""


def test_a_forked_child_and_its_parent_both_keep_writing(tmp_path):
    """After os.fork() parent and child both store their spans; the log holds each span once, every line whole."""
    script = tmp_path / "fork_script.py"
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parent_flushed"] and report["child_exit"] == 0 and report["parent_dropped"] == 0
    lines = segment_lines(tmp_path / "store")
    assert lines
    with SpanLog(tmp_path / "store") as log:
        spans, _ = log.read()
        assert log.stats().skipped_line_count == 0
    counts = Counter(span.name.rsplit("-", 1)[0] for span in spans)
    assert counts["before"] == 300 and counts["parent"] == 3000 and counts["child"] == 3000
    duplicates = Counter((span.name, span.span_id) for span in spans) - Counter(set((s.name, s.span_id) for s in spans))
    assert not duplicates, f"{len(duplicates)} spans written twice, e.g. {sorted(duplicates)[:3]}"
    # The parent's, written once: the child does not write what it inherited (writer queue, store inbox).
    assert counts["queued"] == 300 and counts["inbox"] == 300
    pids = {span.attributes["pid"] for span in spans if "pid" in span.attributes}
    assert len(pids) == 2
