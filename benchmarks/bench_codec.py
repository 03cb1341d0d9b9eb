"""The OTLP JSON codec: spanstore.otlp against the official exporter's encoder and stdlib json, on the same spans.

Run: ``python -m benchmarks.bench_codec`` (or ``python -m benchmarks --only codec``; ``--quick`` for a smoke run).

One seeded workload (``benchmarks.workload``: real SDK ``ReadableSpan``s and the equal ``StoredSpan``s, mixed
services, ~2% errors with stack traces) is cut into batches of 10^2 and 10^3 spans, as an exporter sees them.
Per batch, in the same run, interleaved round by round:

* **encode**: ``spanstore.otlp.encode_spans(stored_batch)`` against what ``FileSpanExporter`` does for one export
  call: ``json.dumps(encode_spans(readable_batch).to_dict(), separators=(",", ":"))`` with ``encode_spans`` from
  ``opentelemetry.exporter.otlp.json.common`` (the official protojson classes, then stdlib json);
* **decode**: ``spanstore.otlp.decode_line(line)`` (to validated, interned ``StoredSpan``s) against stdlib
  ``json.loads(line)`` alone (dicts only, no validation) and ``TracesData.from_dict(json.loads(line))`` of the
  official ``opentelemetry.proto_json`` (its typed objects, the nearest official decoder).

Figures are microseconds per span (a batch's time / its span count): median, p95, p99 over every batch timed.
"vs." is median(peer) / median(spanstore): how many times faster spanstore is.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import report

__all__ = ["run"]

BATCH_SIZES = (100, 1_000)
WORKLOAD_SPANS = 20_000
QUICK_WORKLOAD_SPANS = 1_000
QUICK_BATCH_SIZES = (100,)


def _batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[start : start + size]) for start in range(0, len(items) - size + 1, size)]


def _time_all(
    candidates: dict[str, Callable[[int], object]], quick: bool
) -> dict[str, tuple[list[float], list[list[float]]]]:
    """Time every candidate, interleaved: round r of each before round r + 1 of any (drift hits all alike)."""
    rounds = 1 if quick else 5
    budget = 0.05 if quick else 1.5
    samples: dict[str, tuple[list[float], list[list[float]]]] = {name: ([], []) for name in candidates}
    for _ in range(rounds):
        for name, call in candidates.items():
            flat, per_round = report.measure(call, rounds=1, round_budget_seconds=budget, max_samples_per_round=400)
            samples[name][0].extend(flat)
            samples[name][1].extend(per_round)
    return samples


def _candidates(
    stored_batches: list[list[Any]], readable_batches: list[list[Any]], lines: list[bytes]
) -> tuple[dict[str, Callable[[int], object]], dict[str, Callable[[int], object]]]:
    """The timed calls, spanstore first; call ``i`` takes batch ``i`` (rotating through the batches)."""
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as official_encode
    from opentelemetry.proto_json.trace.v1.trace import TracesData

    from spanstore.otlp import decode_line, encode_spans

    n = len(stored_batches)
    encode = {
        "spanstore encode_spans": lambda i: encode_spans(stored_batches[i % n]),
        "official encode_spans + json.dumps": lambda i: json.dumps(
            official_encode(readable_batches[i % n]).to_dict(), separators=(",", ":")
        ),
    }
    decode = {
        "spanstore decode_line": lambda i: decode_line(lines[i % n]),
        "stdlib json.loads (dicts only)": lambda i: json.loads(lines[i % n]),
        "json.loads + proto_json TracesData.from_dict": lambda i: TracesData.from_dict(json.loads(lines[i % n])),
    }
    return encode, decode


def _per_span(stats: dict[str, Any], batch_size: int) -> dict[str, Any]:
    out = dict(stats)
    for key in ("median", "p95", "p99", "max", "min"):
        out[key] = stats[key] / batch_size
    return out


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}"


def run(quick: bool) -> dict[str, Any]:
    """Measure encoding and decoding per batch size; print one table; return the JSON-ready results."""
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as official_encode

    from benchmarks.workload import DEFAULT_SEED, generate
    from spanstore.otlp import decode_line, encode_spans

    workload = QUICK_WORKLOAD_SPANS if quick else WORKLOAD_SPANS
    stored, exporter = generate(workload, seed=DEFAULT_SEED)
    assert stored is not None and exporter is not None
    readable = exporter.get_finished_spans()

    results: dict[str, Any] = {"workload_spans": workload, "batch_sizes": {}}
    headers = ["batch", "operation", "implementation", "median µs/span", "p95", "p99", "vs."]
    rows: list[list[object]] = []
    for size in QUICK_BATCH_SIZES if quick else BATCH_SIZES:
        stored_batches = _batches(stored, size)
        readable_batches = _batches(readable, size)
        lines = [encode_spans(batch)[0] for batch in stored_batches]
        official_lines = [json.dumps(official_encode(b).to_dict(), separators=(",", ":")) for b in readable_batches]
        # Honesty checks: both encoders write the same objects, and decoding gives back the very spans.
        assert json.loads(lines[0]) == json.loads(official_lines[0]), "encoders disagree: the comparison is unfair"
        assert decode_line(official_lines[0]).spans == decode_line(lines[0]).spans
        encode_candidates, decode_candidates = _candidates(stored_batches, readable_batches, lines)
        report.settle_gc()
        try:
            timings = {
                "encode": _time_all(encode_candidates, quick),
                "decode": _time_all(decode_candidates, quick),
            }
        finally:
            gc.unfreeze()
        size_results: dict[str, Any] = {"line_bytes_per_span": round(sum(map(len, lines)) / (len(lines) * size), 1)}
        for operation, per_impl in timings.items():
            summaries = {
                name: _per_span(report.summarize(flat, per_round), size) for name, (flat, per_round) in per_impl.items()
            }
            subject = next(iter(summaries.values()))["median"]
            for index, (name, stats) in enumerate(summaries.items()):
                vs = "" if index == 0 else report.format_speedup(subject, stats["median"])
                rows.append(
                    [f"{size:,}", operation, name, _us(stats["median"]), _us(stats["p95"]), _us(stats["p99"]), vs]
                )
            size_results[operation] = summaries
        results["batch_sizes"][str(size)] = size_results

    # The README's figures are medians at batches of 1,000 (a --quick run measures batches of 100: about the same).
    largest = results["batch_sizes"][str(max(QUICK_BATCH_SIZES if quick else BATCH_SIZES))]
    violations, aims = report.check_aims(
        "codec",
        {
            "encode per span": largest["encode"]["spanstore encode_spans"]["median"],
            "decode per span": largest["decode"]["spanstore decode_line"]["median"],
        },
    )
    results["aims"] = aims
    results["violations"] = violations
    title = f"OTLP JSON codec, µs per span (workload of {workload:,} spans, same spans for every implementation)"
    table = report.format_table(headers, rows, align="lllrrrr")
    print(f"\n{title}\n{table}", flush=True)
    results["markdown"] = [f"{title}\n\n{report.format_markdown_table(headers, rows)}"]
    return results


if __name__ == "__main__":
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    run(quick="--quick" in sys.argv[1:])
