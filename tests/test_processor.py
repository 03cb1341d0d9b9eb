"""Tests for spanstore.processor: the span processor, the exporter and install(), with a real TracerProvider."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags, TraceState

from spanstore.errors import StoreClosedError
from spanstore.log import SpanLog
from spanstore.processor import FileBasedSpanProcessor, SpanStoreExporter, options_from_env
from spanstore.query import filter_by_error_type, get_trace, query_spans, recent_failures
from spanstore.store import SpanStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def provider_and_processor(tmp_path):
    """A fresh SDK provider (never the global one) with a FileBasedSpanProcessor on a temporary directory."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(tmp_path / "store", fsync="never", flush_interval_seconds=0.05)
    provider.add_span_processor(processor)
    yield provider, processor
    provider.shutdown()


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run code in a fresh interpreter; return its stdout (fail the test with its stderr otherwise)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_query_right_after_end_sees_the_span(provider_and_processor):
    """A span is visible to queries as soon as span.end() returns, before any flush."""
    provider, processor = provider_and_processor
    provider.get_tracer("t").start_span("visible-now").end()
    assert [span.name for span in query_spans(processor.store)] == ["visible-now"]


def test_nested_spans_keep_their_parent_links(provider_and_processor):
    """Children stored by the processor point at their parents, all in one trace."""
    provider, processor = provider_and_processor
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("root") as root,
        tracer.start_as_current_span("child") as child,
        tracer.start_as_current_span("grandchild"),
    ):
        pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    spans = {span.name: span for span in get_trace(processor.store, trace_id)}
    assert set(spans) == {"root", "child", "grandchild"}
    assert spans["root"].parent_span_id is None
    assert spans["child"].parent_span_id == spans["root"].span_id
    assert (
        spans["grandchild"].parent_span_id == spans["child"].span_id == format(child.get_span_context().span_id, "016x")
    )
    assert all(span.service_name == "checkout" for span in spans.values())


def test_recorded_exceptions_and_error_status_are_found_by_the_failure_queries(provider_and_processor):
    """record_exception / set_status(ERROR) spans are found by recent_failures and filter_by_error_type."""
    provider, processor = provider_and_processor
    tracer = provider.get_tracer("t")
    with pytest.raises(KeyError), tracer.start_as_current_span("lookup"):  # the SDK records and sets ERROR itself
        raise KeyError("sku-42")
    with tracer.start_as_current_span("pay") as span:
        span.record_exception(TimeoutError("gateway slow"))
        span.set_status(Status(StatusCode.ERROR, "gateway timeout"))
    with tracer.start_as_current_span("ok"):
        pass
    assert sorted(span.name for span in recent_failures(processor.store)) == ["lookup", "pay"]
    assert [span.name for span in filter_by_error_type(processor.store, "KeyError")] == ["lookup"]
    (pay,) = filter_by_error_type(processor.store, "TimeoutError")
    assert pay.status_message == "gateway timeout"
    assert pay.events[0].attributes["exception.message"] == "gateway slow"


ROUND_TRIP_ATTRIBUTES = {
    "str": "héllo wörld ✓",
    "empty.str": "",
    "bool": True,
    "int": -42,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "float": 3.25,
    "float.negative.zero": -0.0,
    "float.inf": float("inf"),
    "float.nan": float("nan"),
    "str.array": ("a", "b", ""),
    "bool.array": (True, False),
    "int.array": (1, -2, 2**62),
    "float.array": (0.5, -1.5),
    "long.str": "x" * 5000,
}

DUMP_STORE = """
    import sys
    from spanstore.store import SpanStore
    with SpanStore(sys.argv[1]) as store:
        for span in sorted(store.spans(), key=lambda span: span.span_id):
            print(repr(span))
"""


def test_every_field_survives_to_disk_and_back_in_a_new_process(provider_and_processor, tmp_path):
    """Events, links, trace state and every attribute type read back in another process equal what was stored."""
    provider, processor = provider_and_processor
    tracer = provider.get_tracer("lib.checkout", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0")
    linked = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value1")]),
    )
    with tracer.start_as_current_span(
        "parent", kind=trace.SpanKind.SERVER, attributes=ROUND_TRIP_ATTRIBUTES, links=[Link(linked, {"link.n": 7})]
    ) as span:
        span.add_event("cache.miss", {"key": "sku-1", "sizes": (1, 2, 3)})
        span.add_event("plain")
        with tracer.start_as_current_span("child", kind=trace.SpanKind.CLIENT) as child:
            child.record_exception(ValueError("bad input"))
            child.set_status(Status(StatusCode.ERROR, "bad input"))
    assert processor.force_flush()
    here = sorted(processor.store.spans(), key=lambda span: span.span_id)
    assert len(here) == 2
    there = run_python(DUMP_STORE.replace("sys.argv[1]", repr(str(tmp_path / "store"))), cwd=REPO)
    assert there.splitlines() == [repr(span) for span in here]


def test_unsampled_spans_are_skipped(tmp_path):
    """A recording but unsampled span (RECORD_ONLY) is not stored, as the SDK's own processors do."""

    class RecordOnly(Sampler):
        def should_sample(
            self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None
        ):
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "RecordOnly"

    provider = TracerProvider(sampler=RecordOnly(), shutdown_on_exit=False)
    with SpanStore() as store:
        provider.add_span_processor(FileBasedSpanProcessor(store))
        provider.get_tracer("t").start_span("unsampled").end()
        assert len(store) == 0


def test_spans_after_shutdown_are_ignored_with_one_warning(tmp_path, caplog):
    """After shutdown, on_end ignores spans and warns once, however many arrive."""
    provider = TracerProvider(shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(tmp_path / "store")
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    tracer.start_span("before").end()
    processor.shutdown()
    with caplog.at_level(logging.WARNING, logger="spanstore.processor"):
        for _ in range(3):
            tracer.start_span("after").end()
    assert sum("shut down" in record.getMessage() for record in caplog.records) == 1
    spans, _ = SpanLog(tmp_path / "store").read()
    assert [span.name for span in spans] == ["before"]


def test_shutdown_closes_an_owned_store_once(tmp_path):
    """shutdown() closes the store the processor created; a second shutdown() does nothing."""
    processor = FileBasedSpanProcessor(tmp_path / "store")
    processor.shutdown()
    processor.shutdown()
    with pytest.raises(StoreClosedError):
        query_spans(processor.store)


def test_shutdown_flushes_but_leaves_a_given_store_open(tmp_path):
    """A store passed in belongs to the caller: shutdown() flushes it to disk and leaves it open."""
    with SpanStore(tmp_path / "store", flush_interval_seconds=60) as store:
        provider = TracerProvider(shutdown_on_exit=False)
        processor = FileBasedSpanProcessor(store)
        provider.add_span_processor(processor)
        provider.get_tracer("t").start_span("kept").end()
        provider.shutdown()
        assert [span.name for span in query_spans(store)] == ["kept"]
        assert [span.name for span in SpanLog(tmp_path / "store").read()[0]] == ["kept"]


def test_on_end_never_raises_and_counts_the_failure(provider_and_processor, caplog):
    """An error while storing a span is logged (rate-limited) and counted, never raised into the application."""
    provider, processor = provider_and_processor

    def broken(span):
        raise RuntimeError("store exploded")

    processor._submit = broken
    with caplog.at_level(logging.WARNING, logger="spanstore.processor"):
        for _ in range(5):
            provider.get_tracer("t").start_span("lost").end()
    assert processor._errors == 5
    assert sum("could not store a span" in record.getMessage() for record in caplog.records) == 1


def test_force_flush_puts_every_ended_span_on_disk(provider_and_processor, tmp_path):
    """force_flush() returns True once every span ended before it can be read back from the directory."""
    provider, processor = provider_and_processor
    tracer = provider.get_tracer("t")
    for i in range(500):
        tracer.start_span(f"s{i}").end()
    assert processor.force_flush(timeout_millis=30_000)
    spans, _ = SpanLog(tmp_path / "store").read()
    assert sorted(span.name for span in spans) == sorted(f"s{i}" for i in range(500))


def test_the_default_path_comes_from_spanstore_path(tmp_path, monkeypatch):
    """With no argument the processor opens SPANSTORE_PATH, else .spanstore in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPANSTORE_PATH", str(tmp_path / "from-env"))
    processor = FileBasedSpanProcessor()
    assert Path(processor.store.path) == tmp_path / "from-env"
    processor.shutdown()
    monkeypatch.delenv("SPANSTORE_PATH")
    processor = FileBasedSpanProcessor()
    assert Path(processor.store.path).resolve() == (tmp_path / ".spanstore").resolve()
    processor.shutdown()


def test_bad_arguments_say_what_was_expected(tmp_path):
    """Options with a ready store, or a store of the wrong type, are rejected with a clear message."""
    with SpanStore() as store, pytest.raises(ValueError, match="store options apply only when the processor creates"):
        FileBasedSpanProcessor(store, max_spans=10)
    with pytest.raises(TypeError, match="must be a SpanStore, a path or None, got int"):
        FileBasedSpanProcessor(42)  # type: ignore[arg-type]


def test_options_from_env_reads_every_documented_variable():
    """Each SPANSTORE_* variable maps to its SpanStore option, typed; bad values name the variable."""
    env = {
        "SPANSTORE_FSYNC": "Always",
        "SPANSTORE_MAX_SPANS": "1_000",
        "SPANSTORE_MAX_BYTES": "1048576",
        "SPANSTORE_MAX_SPANS_PER_TRACE": "50",
        "SPANSTORE_DISK_MAX_BYTES": "2048",
        "SPANSTORE_FLUSH_INTERVAL_SECONDS": "0.25",
        "SPANSTORE_MAX_QUEUE": "10",
    }
    assert options_from_env(env) == {
        "fsync": "always",
        "max_spans": 1000,
        "max_bytes": 1048576,
        "max_spans_per_trace": 50,
        "disk_max_bytes": 2048,
        "flush_interval_seconds": 0.25,
        "max_queue": 10,
    }
    with pytest.raises(ValueError, match="SPANSTORE_FSYNC must be one of never, interval, always, got 'sometimes'"):
        options_from_env({"SPANSTORE_FSYNC": "sometimes"})
    with pytest.raises(ValueError, match="SPANSTORE_FLUSH_INTERVAL_SECONDS must be a number, got 'soon'"):
        options_from_env({"SPANSTORE_FLUSH_INTERVAL_SECONDS": "soon"})


def test_the_exporter_reads_its_configuration_from_the_environment(tmp_path, monkeypatch):
    """SpanStoreExporter() with no arguments uses SPANSTORE_PATH and the SPANSTORE_* options."""
    monkeypatch.setenv("SPANSTORE_PATH", str(tmp_path / "env-store"))
    monkeypatch.setenv("SPANSTORE_MAX_SPANS", "3")
    exporter = SpanStoreExporter()
    try:
        assert Path(exporter.store.path) == tmp_path / "env-store"
        assert exporter.store.max_spans == 3
    finally:
        exporter.shutdown()


def test_the_exporter_under_a_batch_processor_stores_and_flushes(tmp_path):
    """Behind the SDK's BatchSpanProcessor the exporter stores every span, and force_flush reaches the disk."""
    exporter = SpanStoreExporter(tmp_path / "store", fsync="never")
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(100):
        tracer.start_span(f"b{i}").end()
    assert provider.force_flush()
    assert len(exporter.store) == 100
    provider.shutdown()
    assert len(SpanLog(tmp_path / "store").read()[0]) == 100


def test_the_exporter_fails_exports_after_shutdown(tmp_path):
    """export() after shutdown returns FAILURE (the SDK convention) instead of raising; shutdown is idempotent."""
    with SpanStore() as store:
        exporter = SpanStoreExporter(store=store)
        provider = TracerProvider(shutdown_on_exit=False)
        captured = []
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(_Capture(captured))
        provider.get_tracer("t").start_span("x").end()
        exporter.shutdown()
        exporter.shutdown()
        assert exporter.export(captured) is SpanExportResult.FAILURE
        assert len(store) == 1  # a given store stays open


class _Capture(SimpleSpanProcessor):
    def __init__(self, into: list) -> None:
        self.into = into

    def on_end(self, span) -> None:
        self.into.append(span)

    def shutdown(self) -> None:
        pass


INSTALL_SCRIPT = """
    import json, sys
    from opentelemetry import trace
    import spanstore.processor as processor

    store = processor.install(sys.argv[1], service_name="install-test")
    again = processor.install(sys.argv[1])
    provider = trace.get_tracer_provider()
    with trace.get_tracer("t").start_as_current_span("installed"):
        pass
    print(json.dumps({
        "same_store": store is again,
        "processors": sum(type(p).__name__ == "FileBasedSpanProcessor"
                          for p in provider._active_span_processor._span_processors),
        "provider": type(provider).__module__ + "." + type(provider).__name__,
        "names": [span.name for span in store.spans()],
        "service": store.spans()[0].service_name,
    }))
"""


def test_install_sets_up_a_global_sdk_provider_once_and_stores_at_exit(tmp_path):
    """install() creates an SDK provider with the service name, is idempotent per path, and flushes at exit."""
    store_path = tmp_path / "store"
    out = run_python(INSTALL_SCRIPT.replace("sys.argv[1]", repr(str(store_path))), cwd=REPO)
    assert json.loads(out) == {
        "same_store": True,
        "processors": 1,
        "provider": "opentelemetry.sdk.trace.TracerProvider",
        "names": ["installed"],
        "service": "install-test",
    }
    spans, _ = SpanLog(store_path).read()  # written by the atexit shutdown, no explicit flush in the script
    assert [(span.name, span.service_name) for span in spans] == [("installed", "install-test")]


def test_install_attaches_to_an_existing_sdk_provider(tmp_path):
    """When the global provider is already an SDK provider, install() adds its processor to it."""
    code = """
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        import spanstore.processor as processor

        mine = TracerProvider(resource=Resource.create({"service.name": "app"}))
        trace.set_tracer_provider(mine)
        store = processor.install(PATH)
        assert trace.get_tracer_provider() is mine
        trace.get_tracer("t").start_span("on-existing").end()
        print([(span.name, span.service_name) for span in store.spans()])
    """
    out = run_python(code.replace("PATH", repr(str(tmp_path / "s"))), cwd=REPO)
    assert out.strip() == "[('on-existing', 'app')]"


def test_install_refuses_a_global_provider_that_is_not_the_sdks(tmp_path):
    """With a NoOpTracerProvider set globally, install() raises a RuntimeError naming it."""
    code = """
        from opentelemetry import trace
        import spanstore.processor as processor

        trace.set_tracer_provider(trace.NoOpTracerProvider())
        try:
            processor.install(PATH)
        except RuntimeError as exc:
            print(exc)
    """
    out = run_python(code.replace("PATH", repr(str(tmp_path / "s"))), cwd=REPO)
    assert "got NoOpTracerProvider" in out


@pytest.mark.parametrize("factory", [FileBasedSpanProcessor, SpanStoreExporter], ids=["processor", "exporter"])
def test_an_unusable_directory_never_raises_into_the_app(tmp_path, caplog, factory):
    """A store path that cannot be created (here: under a regular file, as on a read-only disk) gives a working
    memory-only store and one warning naming the path, instead of an exception at application start."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's parent directory should be")
    where = blocker / "store"
    with caplog.at_level(logging.WARNING, logger="spanstore"):
        component = factory(where, flush_interval_seconds=0.1)
    warnings = [r for r in caplog.records if "memory only" in r.getMessage()]
    assert len(warnings) == 1 and str(where) in warnings[0].getMessage()
    provider = TracerProvider()
    provider.add_span_processor(component if factory is FileBasedSpanProcessor else SimpleSpanProcessor(component))
    provider.get_tracer("app").start_span("still works").end()
    assert [span.name for span in query_spans(component.store)] == ["still works"]
    assert component.store.path is None
    provider.shutdown()
    assert blocker.read_text().startswith("a file")  # nothing written


def test_the_documented_environment_defaults_are_the_real_ones() -> None:
    """The processor module's table of SPANSTORE_* variables states the defaults the code has."""
    import re

    import spanstore.processor
    from spanstore.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_SPANS, DEFAULT_MAX_SPANS_PER_TRACE

    table = spanstore.processor.__doc__
    documented = dict(re.findall(r"``(SPANSTORE_\w+)``.*?\s{2,}(\S+(?: MiB| GiB)?)\n", table))
    assert documented["SPANSTORE_MAX_SPANS"] == str(DEFAULT_MAX_SPANS)
    assert documented["SPANSTORE_MAX_BYTES"] == f"{DEFAULT_MAX_BYTES >> 20} MiB"
    assert documented["SPANSTORE_MAX_SPANS_PER_TRACE"] == str(DEFAULT_MAX_SPANS_PER_TRACE)
