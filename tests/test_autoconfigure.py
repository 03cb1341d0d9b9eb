"""Tests for OTEL_TRACES_EXPORTER=spanstore: zero-code configuration through opentelemetry-instrument."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spanstore.query import get_trace
from spanstore.store import SpanStore

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

SCRIPT = """
    from opentelemetry import trace

    tracer = trace.get_tracer("autoconfigure.script")
    with tracer.start_as_current_span("handle-request", attributes={"http.route": "/cart", "retries": 2}):
        with tracer.start_as_current_span("query-db") as span:
            span.add_event("rows", {"count": 3})
    print(type(trace.get_tracer_provider()).__name__)
"""


def run_instrumented(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SPANSTORE_"))}
    environ.update(
        OTEL_TRACES_EXPORTER="spanstore",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="autoconfigured",
        SPANSTORE_PATH=str(tmp_path / "store"),
        **env,
    )
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        cwd=tmp_path,
    )


@pytest.fixture(autouse=True)
def _needs_instrument() -> None:
    if not INSTRUMENT.exists():
        pytest.skip(
            f"opentelemetry-instrument not installed next to {sys.executable} (pip install opentelemetry-distro)"
        )


def test_opentelemetry_instrument_stores_the_spans_of_a_script(tmp_path):
    """OTEL_TRACES_EXPORTER=spanstore under opentelemetry-instrument writes the script's spans to SPANSTORE_PATH."""
    result = run_instrumented(tmp_path, SPANSTORE_FSYNC="always")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TracerProvider"
    with SpanStore(tmp_path / "store") as store:
        spans = {span.name: span for span in store.spans()}
        assert set(spans) == {"handle-request", "query-db"}
        root, child = spans["handle-request"], spans["query-db"]
        assert child.parent_span_id == root.span_id
        assert [span.name for span in get_trace(store, root.trace_id)] == ["handle-request", "query-db"]
        assert root.service_name == "autoconfigured"
        assert root.attributes == {"http.route": "/cart", "retries": 2}
        assert child.events[0].attributes == {"count": 3}
        assert root.scope.name == "autoconfigure.script"


def test_a_bad_spanstore_variable_is_reported_not_silently_ignored(tmp_path):
    """A malformed SPANSTORE_* value is reported with the variable's name, and the application still runs."""
    result = run_instrumented(tmp_path, SPANSTORE_MAX_SPANS="lots")
    assert result.returncode == 0, result.stderr
    assert "SPANSTORE_MAX_SPANS must be an integer, got 'lots'" in result.stderr


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """The environment of a new shell: no OTEL_* or SPANSTORE_* variable, this venv's scripts on PATH."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SPANSTORE_"))}
    environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    return environ


def test_the_readme_zero_code_command_works_with_no_other_variable_set(tmp_path):
    """`spanstore run --service checkout -- python app.py`, as the README gives it, stores the program's spans
    with only opentelemetry-distro installed (no OTLP exporter packages, no OTEL_* variable)."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    spanstore_command = Path(sys.executable).parent / "spanstore"
    result = subprocess.run(
        [str(spanstore_command), "run", "--service", "checkout", "--", "python", "app.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TracerProvider"
    with SpanStore(tmp_path / ".spanstore") as store:
        assert {span.name for span in store.spans()} == {"handle-request", "query-db"}
        assert {span.service_name for span in store.spans()} == {"checkout"}


def test_plain_opentelemetry_instrument_needs_the_metrics_and_logs_exporters_off(tmp_path):
    """Why `spanstore run` exists: with only OTEL_TRACES_EXPORTER=spanstore, opentelemetry-distro asks for OTLP
    metrics and logs exporters, which are not installed, and configures nothing. The README documents both forms."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    environ = clean_environment(tmp_path)
    environ.update(OTEL_TRACES_EXPORTER="spanstore", SPANSTORE_PATH=str(tmp_path / "store"))
    result = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=environ
    )
    try:
        grpc_exporter = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc")
    except ModuleNotFoundError:  # its parent package is absent too
        grpc_exporter = None
    if grpc_exporter is None:
        assert "otlp" in result.stderr and not (tmp_path / "store").exists()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "spanstore run --service checkout -- python app.py" in readme
    assert "OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none" in readme
