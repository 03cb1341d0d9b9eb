"""Trace analysis: ``find_similar_traces``, ``operation_stats`` (``spanstore ops``) and the similarity index's memory.

Run: ``python -m benchmarks --only analysis`` (``--quick``: 10^4 spans, a few samples; ``--check`` fails when
``find_similar_traces`` p95 exceeds 20 ms, ``ops`` over the whole store 1 s, or over the last hour 200 ms).

One fresh subprocess fills a default ``SpanStore()`` with ``spanstore.store.DEFAULT_MAX_SPANS`` workload spans
(``benchmarks.workload``: start times over the last hour, so "the last hour" is the whole store; a 10-minute window
is timed beside it), then measures:

* **index build**: the first ``find_similar_traces`` call, which builds the similarity index (O(spans)), and the RSS
  it adds (``VmRSS`` after ``gc.collect()``, before and after);
* **similar**: ``find_similar_traces(store, id, limit=10)`` for trace ids drawn at random (seeded);
* **similar after arrivals**: the same after each batch of 10 new traces (the index re-reads the changed traces);
* **ops**: ``operation_stats(store)`` (whole store), ``operation_stats(store, last=1h)`` and ``last=10m``.

Figures: median, p95, p99, max over every call (``benchmarks.report.measure``: several rounds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
SIMILAR_P95_BUDGET_SECONDS = 0.020
OPS_ALL_BUDGET_SECONDS = 1.0
OPS_HOUR_BUDGET_SECONDS = 0.200

_CHILD = """
import gc, json, random, time
from benchmarks import report
from benchmarks.workload import iter_stored_spans
from spanstore.analysis import find_similar_traces, operation_stats
from spanstore.store import SpanStore

size, quick = {size}, {quick}
store = SpanStore()
now = time.time_ns()
for batch in iter_stored_spans(size, now_unix_nano=now):
    store.add_many(batch)
report.settle_gc()
rng = random.Random(7)
ids = store.trace_ids()
gc.collect()
before = report.rss_bytes()
t0 = time.perf_counter()
find_similar_traces(store, ids[-1])
build = time.perf_counter() - t0
gc.collect()
index_bytes = report.rss_bytes() - before
stats = store.stats()
rounds = 1 if quick else 3
budget = 0.2 if quick else 2.0
result = {{"span_count": stats.span_count, "trace_count": stats.trace_count, "build_seconds": build,
          "index_rss_bytes": index_bytes, "rss_bytes": report.rss_bytes()}}
picks = [rng.choice(ids) for _ in range(1000)]
samples, per_round = report.measure(lambda i: find_similar_traces(store, picks[i % len(picks)]), rounds=rounds,
                                    round_budget_seconds=budget, max_samples_per_round=300)
result["similar"] = report.summarize(samples, per_round)
result["similar_results"] = len(find_similar_traces(store, picks[0]))
arrivals = []
arrivals_in = iter_stored_spans(20_000, seed=99, now_unix_nano=now)
for _ in range(5 if quick else 30):
    for _ in range(10):
        store.add_many(next(arrivals_in))
    ids = store.trace_ids()
    t0 = time.perf_counter()
    find_similar_traces(store, rng.choice(ids))
    arrivals.append(time.perf_counter() - t0)
result["similar_after_arrivals"] = report.summarize(arrivals)
for name, criteria in (("ops_all", {{}}), ("ops_last_hour", {{"last": 3600}}), ("ops_last_10m", {{"last": 600}})):
    samples, per_round = report.measure(lambda i: operation_stats(store, **criteria), rounds=rounds,
                                        round_budget_seconds=budget, max_samples_per_round=50, min_samples_per_round=3)
    result[name] = report.summarize(samples, per_round)
    result[name + "_rows"] = len(operation_stats(store, **criteria))
    result[name + "_spans"] = sum(r.span_count for r in operation_stats(store, **criteria))
print(json.dumps(result))
"""


def _child(size: int, quick: bool) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD.format(size=size, quick=quick))],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"benchmark child failed (exit {completed.returncode}): expected JSON on stdout, got\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _ms(seconds: float) -> str:
    return report.format_seconds(seconds)


def run(quick: bool) -> dict[str, Any]:
    """Fill a store, time the analysis calls, measure the index's memory; print and return the table."""
    from spanstore.store import DEFAULT_MAX_SPANS

    size = 10_000 if quick else DEFAULT_MAX_SPANS
    result = _child(size, quick)
    headers = ["operation", "spans", "results", "median", "p95", "p99", "max", "budget"]
    rows: list[list[object]] = []
    for key, label, results, budget in (
        ("similar", "find_similar_traces(limit=10)", result["similar_results"], "p95 ≤ 20 ms"),
        ("similar_after_arrivals", "find_similar_traces after 10 new traces", 10, ""),
        ("ops_all", "operation_stats() (whole store)", result["ops_all_rows"], "≤ 1 s"),
        ("ops_last_hour", "operation_stats(last=1h)", result["ops_last_hour_rows"], "≤ 200 ms"),
        ("ops_last_10m", "operation_stats(last=10m)", result["ops_last_10m_rows"], ""),
    ):
        stats = result[key]
        spans = result.get(f"{key}_spans", result["span_count"])
        rows.append(
            [
                label,
                f"{spans:,}",
                results,
                _ms(stats["median"]),
                _ms(stats["p95"]),
                _ms(stats["p99"]),
                _ms(stats["max"]),
                budget,
            ]
        )
    title = (
        f"Trace analysis at {result['span_count']:,} spans ({result['trace_count']:,} traces): similarity index "
        f"built in {result['build_seconds']:.2f} s, adding {report.format_bytes(result['index_rss_bytes'])} RSS "
        f"({result['index_rss_bytes'] / result['span_count']:.0f} B/span); process RSS "
        f"{report.format_bytes(result['rss_bytes'])}"
    )
    print(f"\n{title}\n{report.format_table(headers, rows, align='lrrrrrrl')}", flush=True)
    violations = []
    if not quick:
        checks = (
            ("find_similar_traces p95", result["similar"]["p95"], SIMILAR_P95_BUDGET_SECONDS),
            ("operation_stats whole store median", result["ops_all"]["median"], OPS_ALL_BUDGET_SECONDS),
            ("operation_stats last hour median", result["ops_last_hour"]["median"], OPS_HOUR_BUDGET_SECONDS),
        )
        for what, value, limit in checks:
            if value > limit:
                violations.append(f"analysis: {what} {_ms(value)} > {_ms(limit)}")
    result["markdown"] = [f"{title}\n\n{report.format_markdown_table(headers, rows)}"]
    result["violations"] = violations
    return result


if __name__ == "__main__":
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    run(quick="--quick" in sys.argv[1:])
