"""``spanstore serve``: receiver ingest rate and the server-side render of a large trace page.

Run: ``python -m benchmarks --only serve`` (``--quick``: a few batches and renders; ``--check`` fails when ingest
from protobuf batches is under 50,000 spans/s or the 1,000-span trace page takes over 200 ms at the median).

* **ingest**: ``spanstore serve`` runs in its own process (as a user runs it) on a fresh store directory; a client
  process posts workload spans (``benchmarks.workload``, real SDK ``ReadableSpan``\\ s) in batches of 512, the
  ``BatchSpanProcessor`` default, one request after the other over one keep-alive connection, as the Python
  exporter does. Bodies are made before the clock starts: protobuf by the official exporter's own encoder
  (``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``), JSON by spanstore's codec (the
  OTLP/JSON that the JavaScript exporter sends). Every request is answered only after its spans are appended to the
  log and indexed in memory. Figures: spans/s over all requests, and per-request latency.
* **render**: one trace of 1,000 spans (999 workload spans, their roots re-parented under one root: mixed services,
  attributes, error spans with stack traces) rendered into the trace page (``webui.respond`` for
  ``/trace/<id>``: the waterfall rows, every span's details, the page frame), in process.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
BATCH = 512
INGEST_BUDGET_SPANS_PER_SECOND = 50_000
RENDER_BUDGET_SECONDS = 0.200
TRACE_SPANS = 1_000


def _start_server(path: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "spanstore", "--path", str(path), "serve", "--otlp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=_REPO,
    )
    lines = [process.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
    if not lines[1]:
        raise RuntimeError("spanstore serve did not start: " + process.stderr.read())  # type: ignore[union-attr]
    return process, lines[1].split()[2]


def _bodies(batches: int) -> tuple[list[bytes], list[bytes]]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_protobuf

    from benchmarks.workload import generate
    from spanstore.otlp import encode_spans as encode_json

    stored, exporter = generate(batches * BATCH, seed=11)
    assert stored is not None and exporter is not None
    readable = exporter.get_finished_spans()
    protobuf, json_bodies = [], []
    for start in range(0, len(readable), BATCH):
        protobuf.append(encode_protobuf(readable[start : start + BATCH]).SerializeToString())
        lines = encode_json(stored[start : start + BATCH], max_line_bytes=1 << 30)
        json_bodies.append(lines[0].strip())
    return protobuf, json_bodies


def _post_all(url: str, bodies: list[bytes], content_type: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    latencies = []
    started = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        connection.request("POST", parts.path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200:
            raise RuntimeError(f"the receiver answered {response.status}")
    elapsed = time.perf_counter() - started
    connection.close()
    spans = len(bodies) * BATCH
    return {
        "spans": spans,
        "seconds": elapsed,
        "spans_per_second": spans / elapsed,
        "request": report.summarize(latencies),
        "bytes_per_span": sum(map(len, bodies)) / spans,
    }


def _ingest(quick: bool) -> dict[str, Any]:
    batches = 6 if quick else 100
    protobuf, json_bodies = _bodies(batches)
    results: dict[str, Any] = {}
    for name, bodies, content_type in (
        ("protobuf", protobuf, "application/x-protobuf"),
        ("json", json_bodies, "application/json"),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            process, url = _start_server(Path(tmp) / "store")
            try:
                _post_all(url, bodies[:2], content_type)  # warm up: imports, first segment, connection
                result = _post_all(url, bodies, content_type)
                info = json.loads(urllib.request.urlopen(url.replace("/v1/traces", "/api/info"), timeout=10).read())
                result["accepted_spans"] = info["accepted_spans"]
            finally:
                process.terminate()
                process.communicate(timeout=30)
        results[name] = result
    return results


def _big_trace() -> list[Any]:
    import msgspec

    from benchmarks.workload import generate_stored_spans
    from spanstore.model import AttributeMap, Resource, SpanKind, StoredSpan

    spans = generate_stored_spans(TRACE_SPANS - 1, seed=5)
    trace_id = "7" * 32
    start = min(s.start_time_unix_nano for s in spans)
    end = max(s.end_time_unix_nano for s in spans)
    root = StoredSpan(
        trace_id=trace_id,
        span_id="1" * 16,
        name="GET /batch",
        kind=SpanKind.SERVER,
        start_time_unix_nano=start - 1000,
        end_time_unix_nano=end + 1000,
        attributes=AttributeMap.of({"http.route": "/batch", "http.request.method": "GET"}),
        resource=Resource(attributes=AttributeMap.of({"service.name": "gateway"})),
    )
    return [root] + [
        msgspec.structs.replace(s, trace_id=trace_id, parent_span_id=s.parent_span_id or root.span_id) for s in spans
    ]


class _App:
    """What the UI reads from a SpanServer: its store, path and generation."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.path = Path("bench")
        self.generation = 0


def _render(quick: bool) -> dict[str, Any]:
    from spanstore import SpanStore
    from spanstore.webui import respond

    spans = _big_trace()
    store = SpanStore()
    store.add_many(spans)
    app = _App(store)
    path = f"/trace/{spans[0].trace_id}"
    status, body, _, _ = respond(app, path, {})
    assert status == 200 and body.count(b'class="row') == TRACE_SPANS
    samples, rounds = report.measure(
        lambda i: respond(app, path, {}), rounds=1 if quick else 3, max_samples_per_round=3 if quick else 30
    )
    return {"spans": TRACE_SPANS, "page_bytes": len(body), **report.summarize(samples, rounds)}


def _ms(seconds: float) -> str:
    return report.format_seconds(seconds)


def run(quick: bool) -> dict[str, Any]:
    """Measure ingest through a served store and the trace page's render; print and return the tables."""
    ingest = _ingest(quick)
    render = _render(quick)
    headers = ["request body", "batch", "spans", "spans/s", "request p50", "request p95", "bytes/span"]
    rows = [
        [
            label,
            BATCH,
            f"{result['spans']:,}",
            f"{result['spans_per_second']:,.0f}",
            _ms(result["request"]["median"]),
            _ms(result["request"]["p95"]),
            f"{result['bytes_per_span']:.0f}",
        ]
        for label, result in (
            ("protobuf (official Python exporter's encoder)", ingest["protobuf"]),
            ("JSON (OTLP/JSON, as the JS exporter sends)", ingest["json"]),
        )
    ]
    title = "Receiver ingest: `spanstore serve` in its own process, one client posting 512-span batches in turn"
    print(f"\n{title}\n{report.format_table(headers, rows, align='lrrrrrr')}", flush=True)
    render_headers = ["page", "spans", "page size", "median", "p95", "max", "budget"]
    render_rows = [
        [
            "/trace/<id> (server-side render)",
            f"{render['spans']:,}",
            report.format_bytes(render["page_bytes"]),
            _ms(render["median"]),
            _ms(render["p95"]),
            _ms(render["max"]),
            "≤ 200 ms",
        ]
    ]
    render_title = "Trace page render, one 1,000-span trace"
    print(f"\n{render_title}\n{report.format_table(render_headers, render_rows, align='lrrrrrl')}", flush=True)
    violations = []
    if not quick:
        rate = ingest["protobuf"]["spans_per_second"]
        if rate < INGEST_BUDGET_SPANS_PER_SECOND:
            violations.append(f"serve: protobuf ingest {rate:,.0f} spans/s < {INGEST_BUDGET_SPANS_PER_SECOND:,}")
        if render["median"] > RENDER_BUDGET_SECONDS:
            violations.append(f"serve: 1,000-span trace page median {_ms(render['median'])} > 200 ms")
    for name, result in ingest.items():
        if result["accepted_spans"] != result["spans"] + 2 * BATCH:
            violations.append(f"serve: {name} ingest lost spans ({result['accepted_spans']} accepted)")
    return {
        "ingest": ingest,
        "render": render,
        "markdown": [
            f"{title}\n\n{report.format_markdown_table(headers, rows)}",
            f"{render_title}\n\n{report.format_markdown_table(render_headers, render_rows)}",
        ],
        "violations": violations,
    }


if __name__ == "__main__":
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    run(quick="--quick" in sys.argv[1:])
