"""Memory across workload families: does the byte budget bound real memory, whatever the spans look like?

Run: ``python -m benchmarks --only families`` (``--quick``: a small store, 3x feeding; ``--check`` fails when a
family breaks a budget).

For each family of :mod:`benchmarks.families`, a fresh subprocess (``python -c``) imports spanstore, builds the
family's generator (the benchmark family's pool of traces counts in the baseline), reads its RSS (the *baseline*),
then feeds whole traces into a default ``SpanStore()`` with ``add_many``:

* **at capacity**: the moment the store first evicts; its span count is the family's capacity C;
* **2x** and **10x**: after 2·C and 10·C spans fed (the store keeps evicting the oldest traces).

Reported per family: spans held, RSS at capacity / 2x / 10x, growth from 2x to 10x (must stay within 5%: no
creep), the store's ``memory_estimate_bytes`` beside the measured growth ``RSS - baseline`` (the estimate must be
within ±15% of it), and ``add_many`` throughput while filling. RSS is ``VmRSS`` after ``gc.collect()``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.families import FAMILIES

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]

_FEED = """
import gc, json, time
from benchmarks.families import iter_family
from benchmarks.report import rss_bytes
from spanstore.store import SpanStore
import spanstore.query
stream = iter_family({family!r}, pool_spans={pool})
first = next(stream)
gc.collect()
baseline = rss_bytes()
store = SpanStore(**{options!r})
fed = 0
add_seconds = 0.0
capacity = None
points = {{}}
batch = first
while True:
    t0 = time.perf_counter()
    store.add_many(batch)
    elapsed = time.perf_counter() - t0
    fed += len(batch)
    if capacity is None:
        add_seconds += elapsed
        if store._evicted_traces:
            capacity = fed
            fill_rate = fed / add_seconds
            gc.collect()
            stats = store.stats()
            points["1x"] = dict(fed=fed, rss=rss_bytes(), held=stats.span_count, estimate=stats.memory_estimate_bytes)
    else:
        for label, factor in (("2x", 2), ("10x", {factor})):
            if label not in points and fed >= factor * capacity:
                gc.collect()
                stats = store.stats()
                points[label] = dict(fed=fed, rss=rss_bytes(), held=stats.span_count,
                                     estimate=stats.memory_estimate_bytes)
        if len(points) == 3:
            break
    batch = next(stream)
print(json.dumps(dict(baseline=baseline, capacity=capacity, add_rate=fill_rate, points=points,
                      max_spans=store.max_spans, max_bytes=store.max_bytes)))
"""


def _feed(family: str, quick: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"max_spans": 2_000, "max_bytes": 4 << 20} if quick else {}
    code = textwrap.dedent(
        _FEED.format(family=family, pool=2_000 if quick else 20_000, options=options, factor=3 if quick else 10)
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=_REPO, capture_output=True, text=True, timeout=7200, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"family {family} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict[str, Any]:
    """Feed every family into a default store (10x its capacity); print the table; return the results."""
    last = "3x" if quick else "10x"
    results = {}
    rows = []
    violations = []
    for family in FAMILIES:
        print(f"  {family} ...", flush=True)
        result = _feed(family, quick)
        points = result["points"]
        results[family] = result
        baseline = result["baseline"]
        at_2x = points["2x"]["rss"]
        at_last = points["10x"]["rss"]
        growth = (at_last - at_2x) / at_2x
        measured = at_last - baseline
        estimate = points["10x"]["estimate"]
        ratio = estimate / measured if measured > 0 else float("inf")
        result.update(growth_2x_to_last=growth, estimate_over_measured=ratio)
        rows.append(
            [
                family,
                f"{points['10x']['held']:,}",
                report.format_bytes(points["1x"]["rss"]),
                report.format_bytes(at_2x),
                report.format_bytes(at_last),
                f"{growth:+.1%}",
                report.format_bytes(measured),
                report.format_bytes(estimate),
                f"{ratio - 1:+.0%}",
                f"{measured / max(1, points['10x']['held']):,.0f} B",
                f"{result['add_rate']:,.0f}/s",
            ]
        )
        if not quick:
            if at_last >= report.RSS_BUDGET_BYTES or points["1x"]["rss"] >= report.RSS_BUDGET_BYTES:
                violations.append(f"families: {family} RSS {report.format_bytes(at_last)} >= 256 MB")
            if growth > 0.05:
                violations.append(f"families: {family} RSS grew {growth:.1%} from 2x to 10x capacity (> 5%)")
            if abs(ratio - 1) > 0.15:
                violations.append(f"families: {family} estimate is {ratio - 1:+.0%} off the measured RSS growth")
    headers = [
        "family",
        f"spans held at {last}",
        "RSS at capacity",
        "RSS at 2x",
        f"RSS at {last}",
        f"growth 2x→{last}",
        "measured (RSS - baseline)",
        "store estimate",
        "estimate error",
        "RSS/span",
        "add_many",
    ]
    print(report.format_table(headers, rows))
    return {"families": results, "markdown": [report.format_markdown_table(headers, rows)], "violations": violations}
