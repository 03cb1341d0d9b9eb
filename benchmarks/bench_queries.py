"""Query latency: spanstore against a list scan over the SDK's spans and stdlib sqlite3, on the same workload.

Run: ``python -m benchmarks --only queries`` (``--quick`` for 10^4 spans only; ``--check`` to enforce the p95 budget).

For each size (10^4, 10^5, 3·10^5 and the full default capacity, ``spanstore.store.DEFAULT_MAX_SPANS``) one seeded
workload (``benchmarks.workload``) is generated once into both forms: ``StoredSpan``s loaded into a default
``SpanStore`` and into the sqlite3 peer, and SDK ``ReadableSpan``s held by an ``InMemorySpanExporter`` for the list
scan. When the store's default budgets evict some of a workload (its byte budget may bind before its span count),
the peers get exactly the spans the store kept, so all three answer over the same data.

The query set (each a method of the same name on every implementation, see ``benchmarks.peers``):

========================  ===========================================================================================
get_trace                 ``get_trace(trace_id)``, a random trace id of the workload per call
recent_failures           ``recent_failures(hours=1, limit=100)``
error_type                ``filter_by_error_type(type, limit=100)``, rotating over the workload's error types
attr_eq_low_cardinality   ``filter_by_attribute("http.request.method", "GET", limit=100)`` (newest first)
attr_eq_high_cardinality  ``filter_by_attribute("user.id", <a random user>, limit=100)``
attr_range                ``filter_by_attribute("http.response.status_code", 500, ">=", limit=100)``
duration_threshold        ``query_spans(min_duration_ns=<p99 span duration>, limit=100)``
combined                  ``query_spans(since=<now - 15 min>, status="ERROR", service=X, limit=100)``
find_traces               ``find_traces(service=X, min_duration_ns=<p90 span duration>, limit=20)``
========================  ===========================================================================================

Before timing, every query's first calls are run on all three and their result ids compared (span ids in result
order; for ``find_traces`` trace id, root name, span count, error count and duration): a peer that answered a
different question would make the comparison dishonest, so a mismatch aborts the run. "15 minutes ago" is a fixed
``since`` taken when the workload is generated, so the three cannot disagree about a span on the boundary.

Timing: rounds of calls, implementations interleaved per round (so drift hits all alike); a round stops at 200
calls or after its time budget with at least 3 calls, so a slow peer still gets a few samples. The data sets are
``gc.freeze()``-d after loading (see ``report.settle_gc``). "vs." columns are median(peer) / median(spanstore).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import report
from benchmarks.peers import ListScan, SpanIds, Sqlite, TraceRows
from benchmarks.workload import DEFAULT_SEED, generate

__all__ = ["QUERIES", "Params", "SpanStoreSubject", "run"]

QUICK_SIZES = (10_000,)
_NS_PER_MINUTE = 60 * 1_000_000_000
_CHECKED_CALLS = 3  # per query, compared across implementations before timing


@dataclass(frozen=True)
class Params:
    """Query parameters drawn from one workload (rotated through by call number)."""

    trace_ids: tuple[str, ...]
    error_types: tuple[str, ...]
    user_ids: tuple[str, ...]
    services: tuple[str, ...]
    p99_duration_ns: int
    p90_duration_ns: int
    since_15_minutes_unix_nano: int


def pick_params(spans: list[Any], now_unix_nano: int, seed: int = DEFAULT_SEED) -> Params:
    """Draw the parameters of the query set from the ``StoredSpan``s a store holds."""
    rng = random.Random(seed)
    trace_ids = sorted({s.trace_id for s in spans})
    users = sorted({s.attributes.get("user.id") for s in spans} - {None})
    durations = sorted(s.end_time_unix_nano - s.start_time_unix_nano for s in spans)
    return Params(
        trace_ids=tuple(rng.sample(trace_ids, min(256, len(trace_ids)))),
        error_types=tuple(sorted({s.error_type for s in spans} - {None})),
        user_ids=tuple(rng.sample(users, min(256, len(users)))),
        services=tuple(sorted({s.service_name for s in spans})),
        p99_duration_ns=report.percentile(durations, 0.99),
        p90_duration_ns=report.percentile(durations, 0.90),
        since_15_minutes_unix_nano=now_unix_nano - 15 * _NS_PER_MINUTE,
    )


class SpanStoreSubject:
    """spanstore behind the peers' query protocol (result ids are built from the returned spans)."""

    name = "spanstore"

    def __init__(self, store: Any) -> None:
        from spanstore import query

        self.store = store
        self.q = query

    @staticmethod
    def _ids(spans: list[Any]) -> SpanIds:
        return [(s.trace_id, s.span_id) for s in spans]

    def get_trace(self, trace_id: str) -> SpanIds:
        return self._ids(self.q.get_trace(self.store, trace_id))

    def recent_failures(self, hours: float = 1.0, limit: int | None = 100) -> SpanIds:
        return self._ids(self.q.recent_failures(self.store, hours=hours, limit=limit))

    def filter_by_error_type(self, error_type: str, limit: int | None = 100) -> SpanIds:
        return self._ids(self.q.filter_by_error_type(self.store, error_type, limit=limit))

    def filter_by_attribute(self, key: str, value: Any, op: str = "==", limit: int | None = 100) -> SpanIds:
        return self._ids(self.q.filter_by_attribute(self.store, key, value, op=op, limit=limit))

    def query_spans(
        self,
        *,
        service: str | None = None,
        status_error: bool = False,
        since: int | None = None,
        min_duration_ns: int | None = None,
        limit: int | None = 100,
    ) -> SpanIds:
        return self._ids(
            self.q.query_spans(
                self.store,
                service=service,
                status="ERROR" if status_error else None,
                since=since,
                min_duration_ns=min_duration_ns,
                limit=limit,
            )
        )

    def find_traces(
        self, *, service: str | None = None, min_duration_ns: int | None = None, limit: int = 20
    ) -> TraceRows:
        found = self.q.find_traces(self.store, service=service, min_duration_ns=min_duration_ns, limit=limit)
        return [(t.trace_id, t.root_name, t.span_count, t.error_count, t.duration_ns) for t in found]


@dataclass(frozen=True)
class Query:
    """One query of the set: its name, what it asks, and how to call it on an implementation."""

    name: str
    description: str
    call: Callable[[Any, Params, int], list[Any]]


def _pick(values: tuple[Any, ...], i: int) -> Any:
    return values[i % len(values)]


QUERIES: tuple[Query, ...] = (
    Query("get_trace", "get_trace(random trace id)", lambda impl, p, i: impl.get_trace(_pick(p.trace_ids, i))),
    Query("recent_failures", "recent_failures(hours=1, limit=100)", lambda impl, p, i: impl.recent_failures(1.0, 100)),
    Query(
        "error_type",
        "filter_by_error_type(type, limit=100)",
        lambda impl, p, i: impl.filter_by_error_type(_pick(p.error_types, i), 100),
    ),
    Query(
        "attr_eq_low_cardinality",
        'http.request.method == "GET", limit=100',
        lambda impl, p, i: impl.filter_by_attribute("http.request.method", "GET", "==", 100),
    ),
    Query(
        "attr_eq_high_cardinality",
        "user.id == <random user>, limit=100",
        lambda impl, p, i: impl.filter_by_attribute("user.id", _pick(p.user_ids, i), "==", 100),
    ),
    Query(
        "attr_range",
        "http.response.status_code >= 500, limit=100",
        lambda impl, p, i: impl.filter_by_attribute("http.response.status_code", 500, ">=", 100),
    ),
    Query(
        "duration_threshold",
        "duration >= p99, limit=100",
        lambda impl, p, i: impl.query_spans(min_duration_ns=p.p99_duration_ns, limit=100),
    ),
    Query(
        "combined",
        "last 15 min + status ERROR + service, limit=100",
        lambda impl, p, i: impl.query_spans(
            service=_pick(p.services, i), status_error=True, since=p.since_15_minutes_unix_nano, limit=100
        ),
    ),
    Query(
        "find_traces",
        "find_traces(service, duration >= p90, limit=20)",
        lambda impl, p, i: impl.find_traces(service=_pick(p.services, i), min_duration_ns=p.p90_duration_ns, limit=20),
    ),
)


def _sizes(quick: bool) -> tuple[int, ...]:
    if quick:
        return QUICK_SIZES
    from spanstore.store import DEFAULT_MAX_SPANS

    return tuple(sorted({10_000, 100_000, 300_000, DEFAULT_MAX_SPANS}))


def check_results(implementations: list[Any], params: Params, queries: tuple[Query, ...] = QUERIES) -> dict[str, int]:
    """Run each query's first calls on every implementation and insist the results are identical.

    Returns the median result count per query. Raises ``AssertionError`` naming the query, the call and the
    implementations that disagree.
    """
    counts = {}
    for query in queries:
        sizes = []
        for i in range(_CHECKED_CALLS):
            reference = query.call(implementations[0], params, i)
            sizes.append(len(reference))
            for other in implementations[1:]:
                got = query.call(other, params, i)
                if got != reference:
                    first = next(
                        (k for k, (a, b) in enumerate(zip(got, reference, strict=False)) if a != b),
                        min(len(got), len(reference)),
                    )
                    raise AssertionError(
                        f"{query.name} call {i}: {other.name} returned {len(got)} results, "
                        f"{implementations[0].name} {len(reference)}; they differ from result {first} on"
                    )
        counts[query.name] = int(statistics.median(sizes))
    return counts


def _time_queries(implementations: list[Any], params: Params, quick: bool) -> dict[str, dict[str, Any]]:
    rounds = 2 if quick else 3
    budget = 0.02 if quick else 1.0
    per_round = 30 if quick else 200
    timings: dict[str, dict[str, Any]] = {}
    for query in QUERIES:
        samples: dict[str, list[float]] = {impl.name: [] for impl in implementations}
        by_round: dict[str, list[list[float]]] = {impl.name: [] for impl in implementations}
        offset = 0
        for _ in range(rounds):
            for impl in implementations:
                got, _rounds = report.measure(
                    lambda i, impl=impl, o=offset, call=query.call: call(impl, params, i + o),
                    rounds=1,
                    max_samples_per_round=per_round,
                    round_budget_seconds=budget,
                )
                samples[impl.name].extend(got)
                by_round[impl.name].append(got)
            offset += per_round
        timings[query.name] = {name: report.summarize(samples[name], by_round[name]) for name in samples}
    return timings


def _load(size: int, seed: int) -> tuple[Any, list[Any], Any, int, dict[str, float]]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanstore.store import SpanStore

    now = time.time_ns()
    seconds = {}
    t0 = time.perf_counter()
    stored, exporter = generate(size, seed=seed, now_unix_nano=now)
    assert stored is not None and exporter is not None
    seconds["generate_both"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = SpanStore()
    store.add_many(stored)
    len(store)
    seconds["spanstore_add_many"] = time.perf_counter() - t0
    held = store.stats().span_count
    if held < len(stored):
        # The default budgets evicted the oldest traces: give the peers exactly what the store kept.
        kept = set(store.trace_ids())
        stored = [s for s in stored if s.trace_id in kept]
        readable = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") in kept]
        exporter = InMemorySpanExporter()
        exporter.export(readable)
        del readable
    return store, stored, exporter, now, seconds


def _table(size: int, held: int, timings: dict[str, dict[str, Any]], counts: dict[str, int]) -> tuple[list, list]:
    headers = [
        "query",
        "results",
        "spanstore median",
        "p95",
        "p99",
        "max",
        "list scan median",
        "sqlite3 median",
        "vs. list scan",
        "vs. sqlite3",
    ]
    rows = []
    for query in QUERIES:
        t = timings[query.name]
        ours = t["spanstore"]
        rows.append(
            [
                query.name,
                counts[query.name],
                report.format_seconds(ours["median"]),
                report.format_seconds(ours["p95"]),
                report.format_seconds(ours["p99"]),
                report.format_seconds(ours["max"]),
                report.format_seconds(t["list scan"]["median"]),
                report.format_seconds(t["sqlite3"]["median"]),
                report.format_speedup(ours["median"], t["list scan"]["median"]),
                report.format_speedup(ours["median"], t["sqlite3"]["median"]),
            ]
        )
    return headers, rows


def run(quick: bool) -> dict[str, Any]:
    """Run the query benchmark at every size; print a table per size; return the JSON-ready results."""
    sizes = _sizes(quick)
    results: dict[str, Any] = {}
    violations: list[str] = []
    markdown: list[str] = []
    for size in sizes:
        store, stored, exporter, now, load_seconds = _load(size, DEFAULT_SEED)
        t0 = time.perf_counter()
        sqlite = Sqlite(stored)
        load_seconds["sqlite3_load_and_index"] = time.perf_counter() - t0
        params = pick_params(stored, now)
        stats = store.stats()
        held = stats.span_count
        del stored
        implementations = [SpanStoreSubject(store), ListScan(exporter), sqlite]
        report.settle_gc()
        try:
            counts = check_results(implementations, params)
            timings = _time_queries(implementations, params, quick)
        finally:
            gc.unfreeze()
        headers, rows = _table(size, held, timings, counts)
        title = f"Queries over {held:,} spans (workload of {size:,}; {stats.trace_count:,} traces)"
        print(f"\n{title}\n{report.format_table(headers, rows)}", flush=True)
        markdown.append(f"{title}\n\n{report.format_markdown_table(headers, rows)}")
        for query in QUERIES:
            p95 = timings[query.name]["spanstore"]["p95"]
            if p95 >= report.QUERY_P95_BUDGET_SECONDS:
                violations.append(
                    f"queries: {query.name} p95 {report.format_seconds(p95)} >= "
                    f"{report.format_seconds(report.QUERY_P95_BUDGET_SECONDS)} at {held:,} spans"
                )
        # The README's p95s are at 300,000 spans; a smaller store (a --quick run) must meet them too.
        aim_violations, aims = report.check_aims(
            "queries",
            {f"{query.name} p95": timings[query.name]["spanstore"]["p95"] for query in QUERIES},
            where=f" at {held:,} spans",
        )
        violations.extend(aim_violations)
        results[str(size)] = {
            "workload_spans": size,
            "held_spans": held,
            "traces": stats.trace_count,
            "store_evicted_spans": stats.evicted_spans,
            "store_memory_estimate_bytes": stats.memory_estimate_bytes,
            "load_seconds": {k: round(v, 3) for k, v in load_seconds.items()},
            "aims": aims,
            "queries": {
                query.name: {
                    "description": query.description,
                    "result_count_median": counts[query.name],
                    "seconds": timings[query.name],
                    "speedup_vs": {
                        peer: (
                            timings[query.name][peer]["median"] / timings[query.name]["spanstore"]["median"]
                            if timings[query.name]["spanstore"]["median"]
                            else None
                        )
                        for peer in ("list scan", "sqlite3")
                    },
                }
                for query in QUERIES
            },
        }
        sqlite.close()
        del implementations, store, exporter, sqlite
        gc.collect()
    return {
        "workload": {"seed": DEFAULT_SEED, "sizes": list(sizes), "generator": "benchmarks.workload.generate"},
        "peers": {
            "list scan": "InMemorySpanExporter.get_finished_spans() scanned with a comprehension per query",
            "sqlite3": "stdlib sqlite3 in memory (':memory:'), spans + attributes tables, an index per filtered column",
        },
        "results": results,
        "markdown": markdown,
        "violations": violations,
    }
