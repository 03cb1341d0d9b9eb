"""What a span processor costs the application: spanstore's next to the SDK's own, in one run.

Run: ``python -m benchmarks.bench_processor`` (or ``python -m benchmarks --only processor``; ``--quick`` for a
smoke run whose numbers mean nothing).

Subjects, each on a fresh ``TracerProvider`` per round (rounds interleave the subjects, against drift):

* ``no processor``: the SDK alone (the baseline every ratio divides by);
* ``SimpleSpanProcessor(InMemorySpanExporter())``: the SDK's cheapest real processor (exports inline, under a lock);
* ``BatchSpanProcessor(FileSpanExporter(path))``: the official OTLP JSON file exporter behind the SDK's batch
  processor (``max_queue_size`` raised to the span count, so it drops nothing and does all its work);
* ``FileBasedSpanProcessor(path)``: spanstore with its defaults (memory + indices + the log on disk, ``fsync`` at
  most once a second);
* ``FileBasedSpanProcessor(SpanStore())``: spanstore in memory only (no writer thread: the inbox is converted when
  it exceeds its threshold, on the thread that ends the span, or by a query).

Workload: spans with 8 attributes (strings, ints, a float, a bool), children of a sampled parent, 10 to a trace,
on 1 thread and on 2 threads at once (the spans split between them).

Two figures per subject:

* **on-thread**: ``tracer.start_span(...)`` + ``span.end()`` timed span by span on the application thread
  (median, p95, p99 in µs; the ~0.1 µs of the two clock reads is in every row alike). This is the latency the
  application sees, including the occasional inline drain.
* **full**: wall time from the first span to the end of a final ``force_flush()`` divided by the span count: the
  background work (conversion, indexing, encoding, writing) counts, as it competes for the same cores and GIL.

"vs. none" is the ratio to the SDK alone; "added" is the difference in µs.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["main", "run"]

BLOCK_SPANS = 5_000
BLOCKS = 10
QUICK_BLOCK_SPANS = 500
QUICK_BLOCKS = 2
THREADS = (1, 2)
TRACE_SIZE = 10

ATTRIBUTES = {
    "http.request.method": "GET",
    "http.route": "/api/v1/cart/{id}",
    "http.response.status_code": 200,
    "server.address": "cart.internal",
    "server.port": 8443,
    "url.scheme": "https",
    "app.cart.total": 129.95,
    "app.cache.hit": True,
}

SUBJECTS = ("none", "simple_in_memory", "batch_file_exporter", "spanstore", "spanstore_memory")
LABELS = {
    "none": "no processor",
    "simple_in_memory": "SimpleSpanProcessor(InMemorySpanExporter())",
    "batch_file_exporter": "BatchSpanProcessor(FileSpanExporter(path))",
    "spanstore": "FileBasedSpanProcessor(path)",
    "spanstore_memory": "FileBasedSpanProcessor(SpanStore())",
}


def _provider(
    subject: str, directory: Path, spans: int
) -> tuple[Any, Callable[[], dict[str, Any]], Callable[[], None]]:
    """A fresh provider wired for ``subject``; a function saying what it kept; one forgetting what it holds."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": "bench", "service.version": "1.0.0"}), shutdown_on_exit=False
    )
    if subject == "none":
        return provider, dict, _nothing
    if subject == "simple_in_memory":
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        forgotten = [0]

        def forget() -> None:  # else it would hold every block's SDK spans (~4 KB each) and slow the later blocks
            forgotten[0] += len(exporter.get_finished_spans())
            exporter.clear()

        return provider, lambda: {"kept": forgotten[0] + len(exporter.get_finished_spans())}, forget
    if subject == "batch_file_exporter":
        from opentelemetry.exporter.otlp.json.file import FileSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        path = directory / "spans.jsonl"
        provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(path), max_queue_size=max(spans, 2048)))

        def kept() -> dict[str, Any]:
            with open(path, "rb") as lines:
                return {"lines": sum(1 for _ in lines)}

        return provider, kept, _nothing
    from spanstore.processor import FileBasedSpanProcessor
    from spanstore.store import SpanStore

    if subject == "spanstore":
        processor = FileBasedSpanProcessor(directory / "store")
    else:
        processor = FileBasedSpanProcessor(SpanStore())
    provider.add_span_processor(processor)

    def stats() -> dict[str, Any]:
        writer = processor.store.stats().writer
        result: dict[str, Any] = {"kept": len(processor.store)}
        if writer is not None:
            result.update(written=writer["written_spans"], dropped=writer["dropped_spans"])
        return result

    return provider, stats, _nothing


def _nothing() -> None:
    pass


def _produce(tracer: Any, count: int, samples: list[int], start: threading.Barrier) -> None:
    """End ``count`` spans (children of a sampled parent, 10 to a trace), timing each one."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    random_bits = int.from_bytes(os.urandom(8), "big")
    contexts = [
        trace.set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    trace_id=(random_bits << 64) | (i + 1),
                    span_id=i + 1,
                    is_remote=False,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
            )
        )
        for i in range(count // TRACE_SIZE + 1)
    ]
    clock = time.perf_counter_ns
    start_span = tracer.start_span
    append = samples.append
    attributes = ATTRIBUTES
    start.wait()
    for i in range(count):
        t0 = clock()
        start_span("GET /api/v1/cart/{id}", context=contexts[i // TRACE_SIZE], attributes=attributes).end()
        append(clock() - t0)


class _Subject:
    """One subject's provider, kept across blocks (its store, file and threads stay warm), and its temp dir."""

    def __init__(self, name: str, root: Path, spans: int) -> None:
        self.name = name
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.provider, self.kept, self._forget = _provider(name, self.directory, spans)
        self.tracer = self.provider.get_tracer("bench_processor", "1.0")
        self.on_thread_ns: list[int] = []
        self.block_ns_per_span: list[float] = []
        self.flushed = True

    def run_block(self, threads: int, spans: int) -> None:
        """End ``spans`` spans on ``threads`` threads, then force_flush; record per-span and whole-block costs."""
        per_thread = spans // threads
        samples: list[list[int]] = [[] for _ in range(threads)]
        started: list[int] = []
        # The clock starts in the barrier's action, as the producers are released: the main thread may not run
        # again until they are done.
        start = threading.Barrier(threads, action=lambda: started.append(time.perf_counter_ns()))
        workers = [
            threading.Thread(target=_produce, args=(self.tracer, per_thread, samples[k], start), name=f"producer-{k}")
            for k in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        t0 = started[0]
        self.flushed &= self.provider.force_flush(timeout_millis=600_000)
        t1 = time.perf_counter_ns()
        for thread_samples in samples:
            self.on_thread_ns.extend(thread_samples)
        self.block_ns_per_span.append((t1 - t0) / (per_thread * threads))
        self._forget()

    def close(self) -> dict[str, Any]:
        result = self.kept()
        self.provider.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)
        return result


def _finished_spans(count: int) -> list[Any]:
    """``count`` finished SDK spans like the workload's (for timing ``on_end`` alone)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _produce(provider.get_tracer("bench_processor", "1.0"), count, [], threading.Barrier(1))
    return list(exporter.get_finished_spans())


def _on_end_subjects(root: Path) -> list[tuple[str, Any, Callable[[], None]]]:
    """(subject, processor, reset between rounds) for the on_end-alone measurement."""
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanstore.processor import FileBasedSpanProcessor
    from spanstore.store import SpanStore

    memory = InMemorySpanExporter()
    batch = BatchSpanProcessor(FileSpanExporter(root / "on_end.jsonl"), max_queue_size=1 << 20)
    # An hour between ticks: the writer thread stays out of the timing; reset() converts and writes in between.
    on_disk = FileBasedSpanProcessor(root / "on_end-store", flush_interval_seconds=3600)
    in_memory = FileBasedSpanProcessor(SpanStore())
    return [
        ("simple_in_memory", SimpleSpanProcessor(memory), memory.clear),
        ("batch_file_exporter", batch, lambda: batch.force_flush()),
        ("spanstore", on_disk, lambda: on_disk.force_flush()),
        ("spanstore_memory", in_memory, lambda: in_memory.store.clear()),
    ]


def _bench_on_end(quick: bool, root: Path) -> list[dict[str, Any]]:
    """Time ``processor.on_end(span)`` alone, call by call, on already finished spans (no SDK cost around it)."""
    spans = _finished_spans(QUICK_BLOCK_SPANS if quick else BLOCK_SPANS)
    subjects = _on_end_subjects(root)
    samples: dict[str, list[int]] = {name: [] for name, _, _ in subjects}
    clock = time.perf_counter_ns
    for block in range(QUICK_BLOCKS if quick else BLOCKS):
        for k in range(len(subjects)):
            name, processor, reset = subjects[(block + k) % len(subjects)]
            on_end = processor.on_end
            out = samples[name]
            for span in spans:
                t0 = clock()
                on_end(span)
                out.append(clock() - t0)
            reset()
    rows = []
    for name, processor, _ in subjects:
        processor.shutdown()
        stats = report.summarize(samples[name])
        rows.append(
            {
                "subject": name,
                "label": LABELS[name],
                "calls": stats["n"],
                "on_end_ns": {k: stats[k] for k in ("median", "p95", "p99", "max")},
            }
        )
    return rows


def _us(nanoseconds: float) -> str:
    return f"{nanoseconds / 1000:.2f}"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def run(quick: bool) -> dict[str, Any]:
    """Measure every subject on 1 and 2 threads (see the module docstring); print the table; return the results."""
    block_spans = QUICK_BLOCK_SPANS if quick else BLOCK_SPANS
    blocks = QUICK_BLOCKS if quick else BLOCKS
    root = Path(tempfile.mkdtemp(prefix="bench_processor-"))
    os.chmod(root, 0o700)
    rows: list[dict[str, Any]] = []
    try:
        for threads in THREADS:
            subjects = [_Subject(name, root, block_spans) for name in SUBJECTS]
            gc.collect()
            for block in range(blocks):
                # Blocks rotate the subjects' order: drift and noise from other processes fall on all alike.
                for k in range(len(subjects)):
                    subjects[(block + k) % len(subjects)].run_block(threads, block_spans)
            for subject in subjects:
                kept = subject.close()
                on_thread = report.summarize(subject.on_thread_ns)
                full = sorted(subject.block_ns_per_span)
                rows.append(
                    {
                        "subject": subject.name,
                        "label": LABELS[subject.name],
                        "threads": threads,
                        "spans": len(subject.on_thread_ns),
                        "blocks": blocks,
                        "on_thread_ns": {k: on_thread[k] for k in ("median", "p95", "p99", "max")},
                        "full_ns_per_span": {
                            "median": report.percentile(full, 0.5),
                            "min": full[0],
                            "max": full[-1],
                        },
                        "spans_per_second": 1e9 / report.percentile(full, 0.5),
                        "all_flushed": subject.flushed,
                        "kept": kept,
                    }
                )
        on_end_rows = _bench_on_end(quick, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = {row["threads"]: row for row in rows if row["subject"] == "none"}
    headers = [
        "processor",
        "threads",
        "on-thread µs p50",
        "p95",
        "p99",
        "added µs p50",
        "vs. none",
        "full µs/span",
        "vs. none",
        "spans/s",
    ]
    table = []
    for row in rows:
        none = base[row["threads"]]
        median = row["on_thread_ns"]["median"]
        full = row["full_ns_per_span"]["median"]
        row["vs_none_on_thread"] = median / none["on_thread_ns"]["median"]
        row["vs_none_full"] = full / none["full_ns_per_span"]["median"]
        table.append(
            [
                row["label"],
                row["threads"],
                _us(median),
                _us(row["on_thread_ns"]["p95"]),
                _us(row["on_thread_ns"]["p99"]),
                _us(median - none["on_thread_ns"]["median"]),
                _ratio(median, none["on_thread_ns"]["median"]),
                _us(full),
                _ratio(full, none["full_ns_per_span"]["median"]),
                f"{row['spans_per_second']:,.0f}",
            ]
        )
    title = (
        f"Cost per span of a processor ({blocks} blocks of {block_spans:,} spans with 8 attributes per subject, "
        "subjects interleaved; on-thread = start + end on the app thread; full = block wall time including "
        "force_flush, per span)"
    )
    print(f"\n{title}\n{report.format_table(headers, table, align='lrrrrrrrrr')}", flush=True)
    on_end_headers = ["processor", "on_end µs p50", "p95", "p99", "max"]
    on_end_table = [
        [row["label"], *(_us(row["on_end_ns"][k]) for k in ("median", "p95", "p99", "max"))] for row in on_end_rows
    ]
    on_end_title = (
        f"processor.on_end(span) alone, call by call ({on_end_rows[0]['calls']:,} calls each, finished SDK spans)"
    )
    print(f"\n{on_end_title}\n{report.format_table(on_end_headers, on_end_table)}", flush=True)
    for row in rows:
        dropped = row["kept"].get("dropped")
        if not row["all_flushed"] or dropped:
            print(f"note: {row['label']} on {row['threads']} thread(s): {row['kept']}, flushed={row['all_flushed']}")
    spanstore_row = next(row for row in rows if row["subject"] == "spanstore" and row["threads"] == 1)
    on_end = next(row for row in on_end_rows if row["subject"] == "spanstore")
    violations, aims = report.check_aims(
        "processor",
        {
            "FileBasedSpanProcessor on_end p50": on_end["on_end_ns"]["median"] / 1e9,
            "FileBasedSpanProcessor on-thread p50": spanstore_row["on_thread_ns"]["median"] / 1e9,
            "FileBasedSpanProcessor full per span": spanstore_row["full_ns_per_span"]["median"] / 1e9,
        },
    )
    return {
        "aims": aims,
        "violations": violations,
        "block_spans": block_spans,
        "blocks": blocks,
        "attributes_per_span": len(ATTRIBUTES),
        "results": rows,
        "on_end": on_end_rows,
        "markdown": [
            f"{title}\n\n{report.format_markdown_table(headers, table)}",
            f"{on_end_title}\n\n{report.format_markdown_table(on_end_headers, on_end_table)}",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_processor [--quick]``."""
    args = sys.argv[1:] if argv is None else argv
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    run(quick="--quick" in args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
