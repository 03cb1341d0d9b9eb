"""Crash loops, multiprocessing children and fork under busy threads: what reaches the disk (issue #12).

Run: ``python -m benchmarks --only crashes`` (``--quick`` for a smoke run). The long form of the fault tests in
``tests/test_faults.py``: real applications (SDK ``TracerProvider`` + ``FileBasedSpanProcessor``) in
subprocesses, killed with SIGKILL at random moments, then the store directory is read back.

* **busy**: an app ends spans as fast as it can and calls ``force_flush()`` after every 200; a span counts as
  *confirmed* once a ``force_flush`` that followed it returned True. Segments are made small (64 KiB) so the
  log rolls many times a run. Every confirmed span must be found after the kill.
* **quiet**: an app ends 1 to 50 spans, then idles; killed 0.1-1.5 s later. Every span ended more than two
  flush intervals (0.1 s each) before the kill must be found: the writer starts with the first span and wakes on
  time, with no ``force_flush`` and no shutdown.
* **multiprocessing**: 4 children through ``Process`` and ``Pool`` under ``fork``, ``spawn`` and
  ``forkserver``, each ending spans and exiting normally: every child span must be on disk.

Nothing found that was never ended, and no span twice (the writer never re-appends a batch it wrote).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]

APP = """
    import sys, time
    import spanstore.log

    spanstore.log.SpanLog.__init__.__kwdefaults__["segment_max_bytes"] = 64 << 10  # many rolls per run
    from opentelemetry.sdk.trace import TracerProvider
    from spanstore.processor import FileBasedSpanProcessor

    path, mode, run_id, quiet_count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    provider = TracerProvider(shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(path, flush_interval_seconds=0.1, disk_max_bytes=None)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("crash")
    if mode == "quiet":
        for i in range(quiet_count):
            tracer.start_span(f"{run_id}-{i}").end()
        print(quiet_count, time.monotonic(), flush=True)
        time.sleep(600)
    i = 0
    while True:
        for _ in range(200):
            tracer.start_span(f"{run_id}-{i}", attributes={"payload": "x" * 200}).end()
            i += 1
        if processor.force_flush(10_000):
            print(i, flush=True)  # confirmed: spans 0..i-1 of this run
"""

MULTIPROCESSING_APP = """
    import multiprocessing, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from spanstore.processor import FileBasedSpanProcessor

    def setup():
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            provider = TracerProvider()
            provider.add_span_processor(FileBasedSpanProcessor(sys.argv[1], flush_interval_seconds=3600))
            trace.set_tracer_provider(provider)

    def work(k):
        setup()
        tracer = trace.get_tracer("mp")
        for i in range(int(sys.argv[3])):
            tracer.start_span(f"{sys.argv[2]}-{k}-{i}").end()
        return k

    if __name__ == "__main__":
        method, how = sys.argv[2].split("-")
        multiprocessing.set_start_method(method)
        setup()
        if how == "process":
            children = [multiprocessing.Process(target=work, args=(k,)) for k in range(4)]
            for child in children:
                child.start()
            for child in children:
                child.join()
        else:
            with multiprocessing.Pool(2) as pool:
                pool.map(work, range(4))
                pool.close()
                pool.join()
"""


FORK_UNDER_LOAD_APP = """
    import os, sys, threading, warnings
    from spanstore.model import AttributeMap, StoredSpan
    from spanstore.store import SpanStore

    store = SpanStore(max_spans=1000)
    stop = threading.Event()

    def add(k):
        batches = [
            [StoredSpan(trace_id=f"{k:08x}{n:024x}", span_id=f"{j + 1:016x}", name=f"op-{j % 7}",
                        start_time_unix_nano=n * 1000 + j, end_time_unix_nano=n * 1000 + j + 5,
                        attributes=AttributeMap.of({"k": k, "n": n % 50})) for j in range(20)]
            for n in range(200)
        ]
        while not stop.is_set():
            for batch in batches:
                store.add_many(batch)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    whole = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(int(sys.argv[1])):
            pid = os.fork()
            if pid == 0:
                try:
                    store._check()
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            whole += os.waitstatus_to_exitcode(status) == 0
    stop.set()
    for thread in threads:
        thread.join()
    print(whole)
"""

SHUTDOWN_APP = """
    import shutil, sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from spanstore.processor import FileBasedSpanProcessor

    path, fault = sys.argv[1], sys.argv[2]
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(FileBasedSpanProcessor(path, flush_interval_seconds=0.1))
    tracer = provider.get_tracer("shutdown")
    for i in range(100):
        tracer.start_span(f"before-{i}").end()
    provider.force_flush()
    if fault == "deleted":
        shutil.rmtree(path)
    else:
        print("ready", flush=True)
        sys.stdin.readline()  # the harness now holds the directory lock
    for i in range(100):
        tracer.start_span(f"after-{i}").end()
    started = time.monotonic()
    provider.shutdown()
    print(f"{time.monotonic() - started:.2f}", flush=True)
"""


def _fork_under_load(folder: Path, forks: int) -> dict[str, Any]:
    app = _script(folder, "fork_app.py", FORK_UNDER_LOAD_APP)
    result = subprocess.run(
        [sys.executable, str(app), str(forks)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    whole = int(result.stdout.strip() or 0)
    return {
        "scenario": "fork while 4 threads add spans (children with whole indices)",
        "runs": forks,
        "owed": forks,
        "found": whole,
        "lost": forks - whole,
        "twice": 0,
    }


def _shutdown_time(folder: Path, fault: str) -> dict[str, Any]:
    """Seconds provider.shutdown() takes with the store directory deleted, or its lock held by another process."""
    import portalocker

    app = _script(folder, "shutdown_app.py", SHUTDOWN_APP)
    store = folder / f"store-shutdown-{fault}"
    process = subprocess.Popen(
        [sys.executable, str(app), str(store), fault],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    holder = None
    if fault == "locked":
        process.stdout.readline()
        holder = open(store / "spanstore.lock", "a")  # noqa: SIM115 - held across the child's shutdown
        portalocker.lock(holder, portalocker.LockFlags.EXCLUSIVE)
        process.stdin.write("go\n")
        process.stdin.flush()
    seconds = float(process.stdout.readline().strip() or "nan")
    process.wait(timeout=120)
    if holder is not None:
        portalocker.unlock(holder)
        holder.close()
    found = _names(store)
    return {
        "fault": fault,
        "shutdown_seconds": seconds,
        "after_spans_found": sum(found[f"after-{i}"] for i in range(100)),
    }


def _names(path: Path) -> Counter[str]:
    from spanstore.log import SpanLog

    if not path.exists():
        return Counter()
    with SpanLog(path, create=False) as log:
        spans, _ = log.read()
    return Counter(span.name for span in spans)


def _script(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def _crash_loop(folder: Path, mode: str, runs: int, rng: random.Random) -> dict[str, Any]:
    """``runs`` app runs into one store, each SIGKILLed at a random moment; what was owed vs what is there."""
    app = _script(folder, "app.py", APP)
    store = folder / f"store-{mode}"
    owed: set[str] = set()
    ended = 0
    for run_index in range(runs):
        run_id = f"{mode}{run_index}"
        count = rng.randint(1, 50)
        process = subprocess.Popen(
            [sys.executable, str(app), str(store), mode, run_id, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert process.stdout is not None
        if mode == "quiet":
            line = process.stdout.readline().split()
            ended_at = float(line[1])
            time.sleep(rng.uniform(0.1, 1.5))
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait()
            ended += count
            if killed_at - ended_at > 2 * 0.1:
                owed.update(f"{run_id}-{i}" for i in range(count))
        else:
            deadline = time.monotonic() + rng.uniform(0.3, 1.5)
            fd = process.stdout.fileno()
            os.set_blocking(fd, False)
            received = ""
            while time.monotonic() < deadline:
                time.sleep(0.01)
                with contextlib.suppress(BlockingIOError):  # nothing printed since the last look
                    received += os.read(fd, 1 << 16).decode()
            process.send_signal(signal.SIGKILL)
            process.wait()
            complete = received[: received.rfind("\n") + 1].split()  # whole lines only: printed after a flush
            confirmed = int(complete[-1]) if complete else 0
            ended += confirmed
            owed.update(f"{run_id}-{i}" for i in range(confirmed))
        process.stdout.close()
    found = _names(store)
    return {
        "scenario": f"{mode} app, SIGKILL",
        "runs": runs,
        "owed": len(owed),
        "found": sum(found.values()),
        "lost": len(owed - set(found)),
        "twice": sum(1 for count in found.values() if count > 1),
    }


def _multiprocessing(folder: Path, mode: str, per_child: int) -> dict[str, Any]:
    app = _script(folder, "mp_app.py", MULTIPROCESSING_APP)
    store = folder / f"store-{mode}"
    result = subprocess.run(
        [sys.executable, str(app), str(store), mode, str(per_child)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    found = _names(store)
    owed = {f"{mode}-{k}-{i}" for k in range(4) for i in range(per_child)}
    return {
        "scenario": f"multiprocessing {mode} (exit status {result.returncode})",
        "runs": 1,
        "owed": len(owed),
        "found": sum(found.values()),
        "lost": len(owed - set(found)),
        "twice": sum(1 for count in found.values() if count > 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Every scenario; returns the rows, a markdown table and a violation per lost or doubled span."""
    rng = random.Random(12)
    runs = 2 if quick else 30
    per_child = 50 if quick else 2_000
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spanstore-crashes-") as tmp:
        folder = Path(tmp)
        rows.append(_crash_loop(folder, "busy", runs, rng))
        rows.append(_crash_loop(folder, "quiet", runs, rng))
        modes = ["fork-process", "fork-pool"] if quick else ["fork-process", "fork-pool", "spawn-process"]
        modes += [] if quick else ["spawn-pool", "forkserver-process", "forkserver-pool"]
        rows.extend(_multiprocessing(folder, mode, per_child) for mode in modes)
        rows.append(_fork_under_load(folder, 5 if quick else 20))
        shutdowns = [] if quick else [_shutdown_time(folder, "deleted"), _shutdown_time(folder, "locked")]
    for shutdown in shutdowns:
        print(
            f"provider.shutdown() with the store directory {shutdown['fault']}: {shutdown['shutdown_seconds']:.2f} s, "
            f"{shutdown['after_spans_found']} of the 100 spans ended after the fault on disk"
        )
    headers = ["scenario", "runs", "spans owed", "found", "lost", "twice"]
    table = [[r["scenario"], r["runs"], r["owed"], r["found"], r["lost"], r["twice"]] for r in rows]
    print(report.format_table(headers, table, align="lrrrrr"))
    print(f"({time.perf_counter() - started:.0f} s)")
    violations = [
        f"crashes: {r['scenario']}: {r['lost']} spans lost, {r['twice']} found twice"
        for r in rows
        if r["lost"] or r["twice"]
    ]
    violations += [
        f"crashes: shutdown with the directory {shutdown['fault']} took {shutdown['shutdown_seconds']:.1f} s (> 31 s)"
        for shutdown in shutdowns
        if not shutdown["shutdown_seconds"] <= 31
    ]
    return {
        "rows": rows,
        "shutdowns": shutdowns,
        "violations": violations,
        "markdown": [report.format_markdown_table(headers, table)],
    }


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
