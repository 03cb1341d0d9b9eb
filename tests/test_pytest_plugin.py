"""Tests for spanstore.pytest_plugin: the fixtures and --spanstore-dir, run in inner pytest sessions (issue #7).

Inner sessions that touch the global tracer provider run in subprocesses (the SDK lets it be set once per
process). Each subprocess costs about a second, so each one checks several behaviours at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spanstore.log import SpanLog
from spanstore.store import SpanStore

pytest_plugins = ["pytester"]

README = Path(__file__).parents[1] / "README.md"
INNER_INI = """
[pytest]
addopts = -p no:cacheprovider --strict-markers
filterwarnings =
    error
"""


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner session with the project's strictness (warnings are errors) and no OTEL_* configuration."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    pytester.makeini(INNER_INI)
    return pytester


BEHAVIOUR = """
import asyncio
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

tracer = trace.get_tracer("shop")  # a proxy tracer: no provider is set yet
tracer.start_span("at import").end()  # outside any test: never captured


def place_order(items):
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
        with tracer.start_as_current_span("reserve", attributes={"items": items}) as span:
            if items > 5:
                span.set_status(trace.StatusCode.ERROR, "out of stock")


def test_global_provider(spans):
    place_order(2)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    spans.assert_span(name="reserve", attributes={"items": 2}, parent="POST /orders")
    assert spans.tree() == "trace 1\\n└── POST /orders [SERVER]\\n    └── reserve {items=2}"


def test_without_the_fixture():
    place_order(1)


def test_sees_only_its_own_spans(spans):
    place_order(3)
    assert [span.attributes["items"] for span in spans.find(name="reserve")] == [3]
    assert len(spans) == 2


def test_explicit_providers(tracer_provider, spans):
    tracer_provider.get_tracer("fixture").start_span("from the fixture").end()
    mine = spans.attach(TracerProvider(shutdown_on_exit=False))
    mine.get_tracer("mine").start_span("from mine").end()
    assert sorted(span.name for span in spans) == ["from mine", "from the fixture"]


def test_threads_and_asyncio(spans):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(place_order, range(4)))

    async def task():
        with tracer.start_as_current_span("task"):
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(asyncio.to_thread(place_order, n) for n in (10, 11)), task())

    asyncio.run(main())
    spans.assert_span(name="reserve", count=6)
    spans.assert_span(name="reserve", status="ERROR", count=2)
    spans.one(name="task", parent=None)


def test_failing_assertion(spans):
    place_order(7)
    spans.assert_span(name="reserve", status="OK", attributes={"items": 5})
"""


def test_fixtures_in_a_real_session(pytester: pytest.Pytester) -> None:
    """Global and explicit providers, threads and asyncio are captured per test, and a failure explains itself."""
    pytester.makepyfile(test_behaviour=BEHAVIOUR)
    result = pytester.runpytest_subprocess("-v", timeout=120)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*::test_failing_assertion FAILED*"])
    explained = [line[1:].strip() for line in result.outlines if line.startswith("E ")]
    assert explained[:7] == [
        "AssertionError: expected 1 span with name='reserve', status='OK', attributes={'items': 5}; "
        "found none among 2 captured spans",
        "closest:",
        "'reserve' (trace 1, child of 'POST /orders'): 2 differences",
        "status: expected OK, got ERROR ('out of stock')",
        "attributes['items']: expected 5, got 7",
        "'POST /orders' (trace 1, root): 3 differences",
        "name: expected 'reserve', got 'POST /orders'",
    ]
    assert "testing.py" not in result.stdout.str()  # the helpers hide their own frames from the traceback


def test_option_is_documented_and_a_bad_directory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """--help lists --spanstore-dir; a path that is not a store directory stops the session before any test."""
    assert any("--spanstore-dir=DIR" in line for line in pytester.runpytest_inprocess("--help").outlines)
    (pytester.path / "not-a-store").write_text("hello")
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest_inprocess("--spanstore-dir", "not-a-store")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--spanstore-dir not-a-store: expected a span log directory*got a file*"])


# --- --spanstore-dir under pytest-xdist -------------------------------------------------------------------------------
RECORDED = {
    "test_fine.py": """
from opentelemetry import trace

tracer = trace.get_tracer("suite")


def test_passes():  # no fixture: recorded all the same
    with tracer.start_as_current_span("checkout-fine", attributes={"cart.items": 1}):
        tracer.start_span("db.query").end()


def test_skipped():
    tracer.start_span("before-skip").end()
    import pytest

    pytest.skip("not today")


def test_unwritable():
    tracer.start_span("unwritable").end()
""",
    "conftest.py": """
import spanstore.log
from spanstore.errors import StorageError

append = spanstore.log.SpanLog.append


def append_or_fail(self, spans):  # a full disk, for the spans of one test
    if any(span.name == "unwritable" for span in spans):
        raise StorageError("disk full (simulated)")
    return append(self, spans)


spanstore.log.SpanLog.append = append_or_fail
""",
    "test_broken.py": """
from opentelemetry import trace

tracer = trace.get_tracer("suite")


def test_fails(spans):
    with tracer.start_as_current_span("checkout-broken"):
        tracer.start_span("db.query").end()
    assert len(spans) == 3
""",
}


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One `pytest -n 2 --dist loadfile --spanstore-dir` run over two files (one per worker), one write failing."""
    root = tmp_path_factory.mktemp("xdist-run")
    (root / "pytest.ini").write_text(INNER_INI)
    for name, code in RECORDED.items():
        (root / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "--spanstore-dir", "runs/spans"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return root / "runs" / "spans", completed


@pytest.mark.stress
def test_spanstore_dir_under_xdist_holds_both_workers_spans_tagged(recorded_run) -> None:
    """Both workers append to one store the library reads; every span carries its test's node id and outcome."""
    path, completed = recorded_run
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "1 failed, 2 passed, 1 skipped" in completed.stdout
    assert (
        f"could not record the spans of 1 test to {path}:\n"
        "  test_fine.py::test_unwritable: StorageError: disk full (simulated)\n"
    ) in completed.stdout  # a worker's write error reaches the main process's summary; the test still passed
    with SpanStore(path) as store:
        spans = store.spans()
    seen = {(span.name, span.attributes["test.nodeid"], span.attributes["test.outcome"]) for span in spans}
    assert seen == {
        ("checkout-fine", "test_fine.py::test_passes", "passed"),
        ("db.query", "test_fine.py::test_passes", "passed"),
        ("before-skip", "test_fine.py::test_skipped", "skipped"),
        ("checkout-broken", "test_broken.py::test_fails", "failed"),
        ("db.query", "test_broken.py::test_fails", "failed"),
    }
    assert len(spans) == 5
    assert {span.attributes["test.worker"] for span in spans} == {"gw0", "gw1"}
    assert len({span.attributes["test.run_id"] for span in spans}) == 1
    fine = next(span for span in spans if span.name == "checkout-fine")
    assert fine.attributes["cart.items"] == 1  # the span's own attributes are kept
    with SpanLog(path, create=False) as log:
        assert len(log.read()[0]) == 5
    assert stat_mode(path) == 0o700


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.stress
def test_cli_lists_the_failing_tests_trace(recorded_run) -> None:
    """`spanstore --path DIR traces --attr test.outcome=failed` lists the failing test's trace, not the others."""
    path, _ = recorded_run
    with SpanStore(path) as store:
        trace_of = {span.name: span.trace_id for span in store.spans() if span.is_root}
    command = [sys.executable, "-m", "spanstore", "--path", str(path), "traces", "--attr", "test.outcome=failed"]
    env = {**os.environ, "COLUMNS": "200"}  # room for whole trace ids in the table
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert trace_of["checkout-broken"] in listed.stdout
    assert trace_of["checkout-fine"] not in listed.stdout and trace_of["before-skip"] not in listed.stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert [json.loads(line)["root_name"] for line in as_json.stdout.splitlines()] == ["checkout-broken"]


# --- the README example -----------------------------------------------------------------------------------------------
def readme_example(text: str, heading: str = "Testing with spanstore") -> str:
    """The first ```python block of the README section titled ``heading`` (up to the next heading of its level)."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.MULTILINE)
    if match is None:
        raise LookupError(f"README.md has no heading {heading!r}")
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    section = rest[: end.start()] if end else rest
    block = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise LookupError(f"README.md section {heading!r} has no ```python block")
    return block.group(1)


def test_readme_example_finder() -> None:
    """The example finder takes the first python block of the right section only."""
    text = "# A\n```python\nx = 1\n```\n## Testing with spanstore\nprose\n```python\ny = 2\n```\n```python\nz\n```\n"
    assert readme_example(text) == "y = 2\n"
    with pytest.raises(LookupError, match="no ```python block"):
        readme_example("## Testing with spanstore\n## Next\n```python\nx\n```\n")


def test_readme_example_runs(pytester: pytest.Pytester) -> None:
    """The README's "Testing with spanstore" example is a test file that passes."""
    if not README.exists():
        pytest.skip("README.md is absent")
    pytester.makepyfile(test_readme=readme_example(README.read_text(encoding="utf-8")))
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(passed=1)


# --- spans that outlive their test ------------------------------------------------------------------------------------
LATE_SPANS = """
import asyncio
import threading

from opentelemetry import trace

tracer = trace.get_tracer("late")
release = threading.Event()
done = threading.Event()
loop = asyncio.new_event_loop()  # outlives every test, as an app's background loop does
threading.Thread(target=loop.run_forever, daemon=True).start()


def test_a_leaves_a_thread_and_a_task_running(spans):
    with tracer.start_as_current_span("A request"):
        context = trace.set_span_in_context(trace.get_current_span())

        def late_thread():
            release.wait(30)
            tracer.start_span("A late thread", context=context).end()

        async def late_task():
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
            tracer.start_span("A late task", context=context).end()
            done.set()

        threading.Thread(target=late_thread).start()
        asyncio.run_coroutine_threadsafe(late_task(), loop)
    assert [s.name for s in spans] == ["A request"]


def test_b_runs_while_a_s_spans_end(spans):
    with tracer.start_as_current_span("B request"):
        release.set()
        assert done.wait(30)
    import time; time.sleep(0.1)  # the late thread ends its span too
    from spanstore.testing import router
    assert [s.name for s in spans] == ["B request"], [s.name for s in spans]
    assert router().late_spans == 2
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_spans_of_a_trace_that_began_in_another_test_never_leak_into_this_one(pytester, xdist) -> None:
    """A thread and an asyncio task started by test A end spans of A's trace during test B: B sees only its own,
    and the late spans are dropped and counted, with and without pytest-xdist (both tests on one worker)."""
    pytester.makepyfile(test_late=LATE_SPANS)
    args = ["-n", "1"] if xdist else []
    result = pytester.runpytest_subprocess(*args, "-v", timeout=120)
    result.assert_outcomes(passed=2)
