"""Memory and replay: RSS of a process holding a full default store, and the time to open (replay) a store directory.

Run: ``python -m benchmarks --only memory`` (``--quick``: 10^4 spans only; ``--check`` fails when the RSS of the
process holding a full default store is 256 MB or more).

Every figure comes from a fresh subprocess (``python -c``), so nothing the parent allocated counts:

* **hold**: imports spanstore and the workload, reads its RSS (``VmRSS``: the *imports-only* baseline), then streams
  ``spanstore.store.DEFAULT_MAX_SPANS`` workload spans, a trace at a time, into a ``SpanStore()`` with default
  budgets (so it holds what those budgets allow), and reads its RSS again. Reported: the total RSS (the budget is
  on this), ``bytes/span = (RSS - baseline) / spans held``, and the store's own ``memory_estimate_bytes`` beside it.
* **write**: a subprocess adds the workload to ``SpanStore(path)`` and closes it (the log on disk).
* **open**: fresh subprocesses run ``SpanStore(path)`` on that directory (replay of the OTLP JSON Lines) and report
  the time it took, the spans loaded and the RSS after; at 10^5 spans and at full default capacity; the median
  of a few runs is reported.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]

_HOLD = """
import gc, json, time
from benchmarks.report import peak_rss_bytes, rss_bytes
from benchmarks.workload import iter_stored_spans
from spanstore.store import SpanStore
import spanstore.query
gc.collect()
baseline = rss_bytes()
store = SpanStore()
t0 = time.perf_counter()
for batch in iter_stored_spans({size}, now_unix_nano=time.time_ns()):
    store.add_many(batch)
del batch
seconds = time.perf_counter() - t0
gc.collect()
stats = store.stats()
print(json.dumps({{"baseline_rss": baseline, "rss": rss_bytes(), "load_seconds": seconds,
                  "span_count": stats.span_count, "trace_count": stats.trace_count,
                  "evicted_spans": stats.evicted_spans, "memory_estimate_bytes": stats.memory_estimate_bytes,
                  "peak_rss": peak_rss_bytes()}}))
"""

_WRITE = """
import json, time
from benchmarks.workload import iter_stored_spans
from spanstore.store import SpanStore
t0 = time.perf_counter()
store = SpanStore({path!r}, max_spans={size}, max_bytes=1 << 40)
for batch in iter_stored_spans({size}, now_unix_nano=time.time_ns()):
    store.add_many(batch)
store.close()
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

_OPEN = """
import gc, json, time
from benchmarks.report import peak_rss_bytes, rss_bytes
from spanstore.store import SpanStore
gc.collect()
baseline = rss_bytes()
t0 = time.perf_counter()
store = SpanStore({path!r})
seconds = time.perf_counter() - t0
stats = store.stats()
rss = rss_bytes()
store.close()
print(json.dumps({{"seconds": seconds, "span_count": stats.span_count, "baseline_rss": baseline, "rss": rss,
                  "peak_rss": peak_rss_bytes()}}))
"""


def _child(code: str, timeout: float) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter at the repository root; return the JSON it printed last."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"benchmark child failed (exit {completed.returncode}): expected JSON on stdout, got\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _hold(size: int) -> dict[str, Any]:
    result = _child(_HOLD.format(size=size), timeout=1800)
    held = result["span_count"]
    result["workload_spans"] = size
    result["bytes_per_span"] = (result["rss"] - result["baseline_rss"]) / held if held else None
    result["estimate_per_span"] = result["memory_estimate_bytes"] / held if held else None
    return result


def _replay(size: int, repetitions: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="spanstore-bench-"))
    try:
        path = directory / "store"
        written = _child(_WRITE.format(path=str(path), size=size), timeout=1800)
        disk_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        runs = [_child(_OPEN.format(path=str(path)), timeout=1800) for _ in range(repetitions)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "workload_spans": size,
        "write_seconds": written["seconds"],
        "disk_bytes": disk_bytes,
        "open_seconds": [r["seconds"] for r in runs],
        "open_seconds_median": statistics.median(r["seconds"] for r in runs),
        "span_count": runs[-1]["span_count"],
        "rss_after_open": runs[-1]["rss"],
        "peak_rss_during_open": runs[-1]["peak_rss"],
        "baseline_rss": runs[-1]["baseline_rss"],
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure RSS holding a full default store and open/replay times; print the tables; return the results."""
    from spanstore.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_SPANS

    hold_size = 10_000 if quick else DEFAULT_MAX_SPANS
    replay_sizes = (10_000,) if quick else tuple(sorted({100_000, DEFAULT_MAX_SPANS}))
    repetitions = 1 if quick else 3

    hold = _hold(hold_size)
    budgets = f"max_spans={DEFAULT_MAX_SPANS:,}, max_bytes={report.format_bytes(DEFAULT_MAX_BYTES)}"
    print(f"\nHolding a default SpanStore ({budgets}), fresh process")
    hold_rows = [
        [
            f"{hold['workload_spans']:,}",
            f"{hold['span_count']:,}",
            report.format_bytes(hold["rss"]),
            report.format_bytes(hold["baseline_rss"]),
            f"{hold['bytes_per_span']:,.0f} B" if hold["bytes_per_span"] else "-",
            report.format_bytes(hold["memory_estimate_bytes"]),
            f"{hold['estimate_per_span']:,.0f} B" if hold["estimate_per_span"] else "-",
            report.format_bytes(hold["peak_rss"]),
            f"{hold['load_seconds']:.1f} s",
        ]
    ]
    hold_headers = [
        "workload spans",
        "spans held",
        "RSS",
        "imports-only RSS",
        "bytes/span",
        "store estimate",
        "estimate/span",
        "peak RSS",
        "add time",
    ]
    print(report.format_table(hold_headers, hold_rows))

    replays = [_replay(size, repetitions) for size in replay_sizes]
    replay_headers = [
        "spans on disk",
        "disk",
        "write",
        "open (replay) median",
        "spans loaded",
        "RSS after open",
        "peak RSS",
    ]
    replay_rows = [
        [
            f"{r['workload_spans']:,}",
            report.format_bytes(r["disk_bytes"]),
            f"{r['write_seconds']:.1f} s",
            f"{r['open_seconds_median']:.2f} s",
            f"{r['span_count']:,}",
            report.format_bytes(r["rss_after_open"]),
            report.format_bytes(r["peak_rss_during_open"]),
        ]
        for r in replays
    ]
    print("\nOpening (replaying) a store directory, fresh process each time")
    print(report.format_table(replay_headers, replay_rows))

    violations = []
    if not quick and hold["rss"] >= report.RSS_BUDGET_BYTES:
        violations.append(
            f"memory: RSS holding a full default store is {report.format_bytes(hold['rss'])} "
            f">= {report.format_bytes(report.RSS_BUDGET_BYTES)} ({hold['span_count']:,} spans held)"
        )
    full_replay = replays[-1]
    if not quick and full_replay["rss_after_open"] >= report.RSS_BUDGET_BYTES:
        violations.append(
            f"memory: RSS after opening a full store directory is {report.format_bytes(full_replay['rss_after_open'])}"
            f" >= {report.format_bytes(report.RSS_BUDGET_BYTES)} ({full_replay['span_count']:,} spans loaded)"
        )
    # Per span, so that a --quick run (10,000 spans) is held to the README's 300,000-span figures too.
    aim_violations, aims = report.check_aims(
        "memory",
        {
            "bytes held per span": hold["bytes_per_span"] or 0.0,
            "add time per span": hold["load_seconds"] / hold["workload_spans"],
            "open (replay) per span on disk": full_replay["open_seconds_median"] / full_replay["workload_spans"],
        },
    )
    violations.extend(aim_violations)
    return {
        "aims": aims,
        "default_max_spans": DEFAULT_MAX_SPANS,
        "default_max_bytes": DEFAULT_MAX_BYTES,
        "hold": hold,
        "replay": replays,
        "markdown": [
            report.format_markdown_table(hold_headers, hold_rows),
            report.format_markdown_table(replay_headers, replay_rows),
        ],
        "violations": violations,
    }
