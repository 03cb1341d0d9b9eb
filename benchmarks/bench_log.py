"""The span log on disk: SpanLog append and replay throughput, next to the official OTLP JSON file exporter.

Run: ``python -m benchmarks.bench_log`` (or ``python -m benchmarks --only log``; ``--quick`` for a smoke run).

Spans come from real ``TracerProvider``s (4 services, 8 attributes a span: strings, ints, a float, a bool, as an
HTTP service's spans have; 2% errors) converted with ``StoredSpan.from_readable_span``; the official exporter gets
the very same SDK spans. Logs bigger than the workload repeat it. Everything is measured in the same run, round
after round:

* **append**: ``SpanLog.append(batch)`` for each fsync policy (``never``, ``interval`` at 1 s, ``always``) and
  batch size (1, 100, 1000 spans), into a fresh directory per round, next to
  ``opentelemetry.exporter.otlp.json.file.FileSpanExporter(path).export(batch)`` (which flushes to the OS per call
  and never fsyncs: compare it with ``never``). Throughput is spans / time of a round (median and the slowest
  rounds as p95/p99 of per-round throughput); latency is per append call.
* **replay**: ``SpanLog.read()`` of a log of 10^5 spans (and 10^6 without ``--quick``), appended in batches of
  1000 (one line per batch, as the processor writes them); ``SpanLog.read(max_spans=10_000)`` (the newest spans
  only, as a store opens); stdlib ``json.loads`` of every line of the same files (dicts only, no validation: the
  parse alone); and ``spanstore.otlp.read_file`` of the official exporter's file of the same spans (10^5 only).

Aims (issue #3): appends >= 150,000 spans/s with ``fsync="never"`` (batches of 1000); replay >= 200,000 spans/s.
Both are bounded by the codec (``spanstore.otlp``): the log's own work is the lock, one ``write`` per batch, and
one ``read`` plus a ``split`` per segment; the "log overhead" rows measure that part alone.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

POLICIES = ("never", "interval", "always")
BATCH_SIZES = (1, 100, 1_000)
REPLAY_SIZES = (100_000, 1_000_000)
QUICK_REPLAY_SIZES = (100_000,)
REPLAY_BATCH = 1_000
WORKLOAD_SPANS = 20_000
QUICK_WORKLOAD_SPANS = 3_000


def _sdk_spans(count: int) -> Sequence[Any]:
    """``count`` finished SDK spans with 8 attributes each, from 4 services' TracerProviders."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    exporter = InMemorySpanExporter()
    tracers = []
    for service in ("frontend", "cart", "checkout", "payment"):
        resource = Resource.create({"service.name": service, "service.version": "1.4.2", "host.name": "bench-1"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers.append(provider.get_tracer("bench_log", "1.0"))
    routes = [f"/api/v1/items/{i}" for i in range(40)]
    for i in range(count):
        tracer = tracers[i % 4]
        failed = i % 50 == 7
        attributes = {
            "http.request.method": "POST" if i % 5 == 0 else "GET",
            "http.route": routes[i % 40],
            "http.response.status_code": 500 if failed else 200,
            "url.scheme": "https",
            "user.id": f"user-{i % 997}",
            "network.peer.port": 40_000 + i % 20_000,
            "app.cart.total": (i % 1000) / 7,
            "app.cache.hit": i % 3 == 0,
        }
        with tracer.start_as_current_span(routes[i % 40], kind=SpanKind.SERVER, attributes=attributes) as span:
            if failed:
                span.set_status(Status(StatusCode.ERROR, "upstream timed out"))
    return exporter.get_finished_spans()


def _spans_per_round(policy: str, batch: int, workload: int, quick: bool) -> int:
    """How many spans one append round writes: enough batches to time, little enough to finish."""
    if batch == 1:
        count = 100 if policy == "always" else 2_000  # an fsync costs ~3 ms here: 1 span a batch is that slow
        return count // 4 if quick else count
    if policy == "always" and batch == 100:
        return min(workload, 2_000 if quick else 10_000)
    return workload


def _append_round(
    make_sink: Callable[[Path], tuple[Callable[[Any], object], Callable[[], object]]],
    batches: Sequence[Any],
    spans: int,
    root: Path,
) -> tuple[float, list[float]]:
    """Append ``batches`` to a fresh sink; return the round's seconds and each call's seconds."""
    directory = Path(tempfile.mkdtemp(dir=root))
    append, close = make_sink(directory)
    clock = time.perf_counter
    latencies = []
    started = clock()
    for batch in batches:
        t0 = clock()
        append(batch)
        latencies.append(clock() - t0)
    elapsed = clock() - started
    close()
    shutil.rmtree(directory)
    return elapsed, latencies


def _spanlog_sink(policy: str) -> Callable[[Path], tuple[Callable[[Any], object], Callable[[], object]]]:
    from spanstore.log import SpanLog

    def make(directory: Path) -> tuple[Callable[[Any], object], Callable[[], object]]:
        log = SpanLog(directory / "store", fsync=policy, max_bytes=None)  # type: ignore[arg-type]
        return log.append, log.close

    return make


def _official_sink(directory: Path) -> tuple[Callable[[Any], object], Callable[[], object]]:
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter

    exporter = FileSpanExporter(directory / "spans.jsonl")
    return exporter.export, exporter.shutdown


def _throughput_row(label: str, batch: int, spans: int, rounds: list[tuple[float, list[float]]]) -> dict[str, Any]:
    rates = sorted(spans / elapsed for elapsed, _ in rounds)  # slowest first
    latencies = sorted(sample for _, samples in rounds for sample in samples)
    return {
        "sink": label,
        "batch": batch,
        "spans_per_round": spans,
        "rounds": len(rounds),
        "spans_per_second": {
            "median": report.percentile(rates, 0.5),
            # The slow tail of throughput is its low end: p95 here is the rate 95% of rounds beat.
            "p95": report.percentile(rates, 0.05),
            "p99": report.percentile(rates, 0.01),
        },
        "append_seconds": report.summarize(latencies),
    }


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def _bench_append(stored: list[Any], readable: Sequence[Any], quick: bool, root: Path) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    rows = []
    for batch in BATCH_SIZES:
        sinks: list[tuple[str, str, Any, Callable[..., Any]]] = [
            (f"SpanLog fsync={policy}", policy, stored, _spanlog_sink(policy)) for policy in POLICIES
        ]
        sinks.append(("official FileSpanExporter", "never", readable, _official_sink))
        results: dict[str, list[tuple[float, list[float]]]] = {label: [] for label, *_ in sinks}
        for _ in range(rounds):  # interleaved: a noisy moment hurts every sink alike
            for label, policy, source, make_sink in sinks:
                spans = _spans_per_round(policy, batch, len(source), quick)
                batches = [source[start : start + batch] for start in range(0, spans, batch)]
                results[label].append(_append_round(make_sink, batches, spans, root))
        for label, policy, source, _ in sinks:
            spans = _spans_per_round(policy, batch, len(source), quick)
            rows.append(_throughput_row(label, batch, spans, results[label]))
    return rows


def _write_log(path: Path, stored: list[Any], total: int) -> None:
    from spanstore.log import SpanLog

    with SpanLog(path, fsync="never", max_bytes=None) as log:
        written = 0
        while written < total:
            start = written % len(stored)
            batch = stored[start : start + min(REPLAY_BATCH, total - written)]
            log.append(batch)
            written += len(batch)


def _write_official(path: Path, readable: Sequence[Any], total: int) -> None:
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter

    exporter = FileSpanExporter(path)
    written = 0
    while written < total:
        start = written % len(readable)
        batch = readable[start : start + min(REPLAY_BATCH, total - written)]
        exporter.export(batch)
        written += len(batch)
    exporter.shutdown()


def _time_rounds(call: Callable[[], int], rounds: int) -> tuple[list[float], int]:
    samples = []
    count = 0
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        count = call()
        samples.append(time.perf_counter() - started)
    return samples, count


def _json_lines(path: Path) -> int:
    count = 0
    loads = json.loads
    for segment in sorted(path.glob("spans-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            document = loads(line)
            count += sum(len(s["spans"]) for r in document["resourceSpans"] for s in r["scopeSpans"])
    return count


def _split_only(path: Path) -> int:
    """What SpanLog.read does besides decoding: list, read each segment whole, split on newlines."""
    lines = 0
    for segment in sorted(path.glob("spans-*.jsonl")):
        with open(segment, "rb", buffering=0) as f:
            lines += len(f.readall().split(b"\n"))
    return lines


def _bench_replay(stored: list[Any], readable: Sequence[Any], quick: bool, root: Path) -> list[dict[str, Any]]:
    from spanstore.log import SpanLog
    from spanstore.otlp import read_file

    rows = []
    for size in QUICK_REPLAY_SIZES if quick else REPLAY_SIZES:
        rounds = 3 if size <= 100_000 else 2
        directory = Path(tempfile.mkdtemp(dir=root))
        store = directory / "store"
        _write_log(store, stored, size)
        disk = sum(f.stat().st_size for f in store.glob("spans-*.jsonl"))

        def full_read(store: Path = store) -> int:
            with SpanLog(store, create=False) as log:
                spans, _ = log.read()
                assert log.stats().skipped_line_count == 0
                return len(spans)

        def newest(store: Path = store) -> int:
            with SpanLog(store, create=False) as log:
                return len(log.read(max_spans=10_000)[0])

        candidates: list[tuple[str, Callable[[], int], int]] = [
            ("SpanLog.read()", full_read, size),
            ("SpanLog.read(max_spans=10_000)", newest, 10_000),
            ("log overhead: read + split only", lambda store=store: _split_only(store), size),
            ("stdlib json.loads per line (parse only)", lambda store=store: _json_lines(store), size),
        ]
        if size <= 100_000:
            official = directory / "official.jsonl"
            _write_official(official, readable, size)

            def official_read(official: Path = official) -> int:
                return len(read_file(official).spans)

            candidates.append(("otlp.read_file(official exporter file)", official_read, size))
        for label, call, expected in candidates:
            samples, count = _time_rounds(call, rounds)
            if not label.startswith("log overhead"):
                assert count == expected, (label, count, expected)
            stats = report.summarize(samples)
            rows.append(
                {
                    "reader": label,
                    "log_spans": size,
                    "spans": expected,
                    "disk_bytes": disk,
                    "rounds": rounds,
                    "seconds": stats,
                    "spans_per_second": expected / stats["median"],
                }
            )
        shutil.rmtree(directory)
    return rows


def run(quick: bool) -> dict[str, Any]:
    """Measure appends and replays (see the module docstring); print the tables; return the results."""
    from spanstore.model import StoredSpan

    workload = QUICK_WORKLOAD_SPANS if quick else WORKLOAD_SPANS
    readable = _sdk_spans(workload)
    stored = [StoredSpan.from_readable_span(span) for span in readable]
    root = Path(tempfile.mkdtemp(prefix="bench_log-"))
    os.chmod(root, 0o700)
    try:
        append_rows = _bench_append(stored, readable, quick, root)
        replay_rows = _bench_replay(stored, readable, quick, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    append_headers = ["batch", "sink", "spans/s median", "p95 (slow)", "p99 (slow)", "µs/append p50", "p95", "p99"]
    append_table = [
        [
            f"{row['batch']:,}",
            row["sink"],
            _rate(row["spans_per_second"]["median"]),
            _rate(row["spans_per_second"]["p95"]),
            _rate(row["spans_per_second"]["p99"]),
            _us(row["append_seconds"]["median"]),
            _us(row["append_seconds"]["p95"]),
            _us(row["append_seconds"]["p99"]),
        ]
        for row in append_rows
    ]
    replay_headers = ["log spans", "reader", "spans", "median", "p95", "p99", "spans/s"]
    replay_table = [
        [
            f"{row['log_spans']:,}",
            row["reader"],
            f"{row['spans']:,}",
            report.format_seconds(row["seconds"]["median"]),
            report.format_seconds(row["seconds"]["p95"]),
            report.format_seconds(row["seconds"]["p99"]),
            _rate(row["spans_per_second"]),
        ]
        for row in replay_rows
    ]
    append_title = f"SpanLog.append vs. the official FileSpanExporter (workload of {workload:,} SDK spans)"
    replay_title = "SpanLog replay (logs written in batches of 1,000 spans)"
    print(f"\n{append_title}\n{report.format_table(append_headers, append_table, align='llrrrrrr')}")
    print(f"\n{replay_title}\n{report.format_table(replay_headers, replay_table, align='lllrrrr')}", flush=True)
    # Appends at batches of 1,000, replay of the 100,000-span log: the README's rows (a --quick run has both).
    append_rate = {row["sink"]: row["spans_per_second"]["median"] for row in append_rows if row["batch"] == 1_000}
    replay_rate = next(
        row["spans_per_second"]
        for row in replay_rows
        if row["reader"] == "SpanLog.read()" and row["log_spans"] == 100_000
    )
    violations, aims = report.check_aims(
        "log",
        {
            'append fsync="never"': append_rate["SpanLog fsync=never"],
            'append fsync="always"': append_rate["SpanLog fsync=always"],
            "replay": replay_rate,
        },
    )
    return {
        "aims": aims,
        "violations": violations,
        "workload_spans": workload,
        "append": append_rows,
        "replay": replay_rows,
        "markdown": [
            f"{append_title}\n\n{report.format_markdown_table(append_headers, append_table)}",
            f"{replay_title}\n\n{report.format_markdown_table(replay_headers, replay_table)}",
        ],
    }


if __name__ == "__main__":
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    run(quick="--quick" in sys.argv[1:])
