"""Tests for benchmarks/: the workload generator, the peers' honesty, the report helpers and the harness.

No timing assertions: only that the harness runs, agrees with itself, and writes what it promises.
"""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import __main__ as harness
from benchmarks import report, workload
from benchmarks.bench_queries import QUERIES, SpanStoreSubject, check_results, pick_params
from benchmarks.peers import ListScan, Sqlite
from spanstore.model import StatusCode, from_readable_span
from spanstore.store import SpanStore

REPO = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000 * 10**9  # a fixed "now" keeps generated workloads comparable between calls
HOUR = 3600 * 10**9


@pytest.fixture(scope="module")
def small_workload():
    """One workload of 3,000 spans in both forms."""
    stored, exporter = workload.generate(3000, seed=11, now_unix_nano=NOW)
    return stored, exporter


def test_fast_path_equals_sdk_conversion(small_workload):
    """The StoredSpan fast path builds exactly what from_readable_span makes of the real SDK spans, in order."""
    stored, exporter = small_workload
    converted = [from_readable_span(span) for span in exporter.get_finished_spans()]
    assert len(stored) == len(converted) == 3000
    assert stored == converted


def test_workload_is_deterministic():
    """One seed and now give the same spans every time; another seed gives other spans."""
    first = workload.generate_stored_spans(500, seed=5, now_unix_nano=NOW)
    assert first == workload.generate_stored_spans(500, seed=5, now_unix_nano=NOW)
    assert first != workload.generate_stored_spans(500, seed=6, now_unix_nano=NOW)
    streamed = [span for batch in workload.iter_stored_spans(500, seed=5, now_unix_nano=NOW) for span in batch]
    assert streamed == first


def test_workload_shape(small_workload):
    """Traces are trees of 5-50 spans within the last hour, ~2% errors carry error.type and an exception event."""
    stored, _ = small_workload
    by_trace: dict[str, list] = {}
    for span in stored:
        by_trace.setdefault(span.trace_id, []).append(span)
    sizes = sorted(len(spans) for spans in by_trace.values())
    assert sizes[-1] <= workload.MAX_TRACE_SPANS
    assert sum(size < workload.MIN_TRACE_SPANS for size in sizes) <= 1  # only the last trace may be cut short
    for spans in by_trace.values():
        ids = {span.span_id: span for span in spans}
        assert sum(span.parent_span_id is None for span in spans) == 1
        for span in spans:
            if span.parent_span_id is not None:
                parent = ids[span.parent_span_id]
                assert parent.start_time_unix_nano <= span.start_time_unix_nano
                assert span.end_time_unix_nano <= parent.end_time_unix_nano + 1  # +1: a start nudged to be unique
    assert len({span.start_time_unix_nano for span in stored}) == len(stored)
    assert all(s.start_time_unix_nano >= NOW - HOUR and s.end_time_unix_nano < NOW for s in stored)
    errors = [span for span in stored if span.status_code == StatusCode.ERROR]
    assert 0.01 < len(errors) / len(stored) < 0.035
    for span in errors:
        assert span.attributes["error.type"] == span.error_type
        exception = span.events[0]
        assert exception.name == "exception"
        assert {"exception.type", "exception.message", "exception.stacktrace"} <= set(exception.attributes)
    services = Counter(span.service_name for span in stored)
    assert set(services) <= set(workload.SERVICES) and len(services) >= 15
    routes = {span.attributes.get("http.route") for span in stored} - {None}
    assert 50 <= len(routes) <= 100
    assert any(type(span.attributes.get("app.feature_flags")) is tuple for span in stored)
    assert any(type(span.attributes.get("app.cart.total")) is float for span in stored)


def test_peers_and_spanstore_answer_the_same(small_workload):
    """spanstore, the list scan and sqlite3 return identical results for every query of the benchmark set."""
    stored, exporter = small_workload
    store = SpanStore()
    store.add_many(stored)
    sqlite = Sqlite(stored)
    try:
        # recent_failures measures "the last hour" from the real clock: shift the workload's frame instead.
        params = pick_params(stored, NOW)
        queries = tuple(q for q in QUERIES if q.name != "recent_failures")
        counts = check_results([SpanStoreSubject(store), ListScan(exporter), sqlite], params, queries)
    finally:
        sqlite.close()
    assert set(counts) == {q.name for q in queries}
    assert counts["attr_eq_low_cardinality"] == 100 and counts["get_trace"] >= workload.MIN_TRACE_SPANS


def test_recent_failures_agree_on_a_fresh_workload():
    """recent_failures (last hour by the real clock) agrees across all three on a workload ending now."""
    stored, exporter = workload.generate(2000, seed=3)
    store = SpanStore()
    store.add_many(stored)
    sqlite = Sqlite(stored)
    try:
        implementations = [SpanStoreSubject(store), ListScan(exporter), sqlite]
        results = [impl.recent_failures(1.0, 100) for impl in implementations]
    finally:
        sqlite.close()
    assert results[0] and results[0] == results[1] == results[2]


def test_check_results_catches_a_dishonest_peer(small_workload):
    """A peer that answers a different question makes check_results raise, naming the query."""
    stored, exporter = small_workload

    class Dishonest(ListScan):
        name = "dishonest"

        def get_trace(self, trace_id):
            return super().get_trace(trace_id)[1:]

    store = SpanStore()
    store.add_many(stored)
    params = pick_params(stored, NOW)
    with pytest.raises(AssertionError, match="get_trace call 0: dishonest"):
        check_results([SpanStoreSubject(store), Dishonest(exporter)], params, QUERIES[:1])


def test_report_helpers_doctests():
    """The statistics and table helpers do what their examples say."""
    for module in (report, workload):
        failures, _ = doctest.testmod(module)
        assert failures == 0


def test_summarize_statistics():
    """summarize gives nearest-rank percentiles and the round-to-round spread."""
    stats = report.summarize([float(i) for i in range(1, 101)], rounds=[[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    assert (stats["median"], stats["p95"], stats["p99"], stats["max"], stats["n"]) == (50.0, 95.0, 99.0, 100.0, 100)
    assert stats["spread"] == pytest.approx(1 / 50)
    assert report.summarize([1.0])["spread"] is None


def _fake_bench(monkeypatch, run):
    module = types.ModuleType("benchmarks.bench_fake")
    module.run = run
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", module)
    monkeypatch.setattr(harness, "discover", lambda: ["fake"])
    monkeypatch.setattr(report, "machine_info", lambda: {"cpu": "test", "cores": 1, "python": "", "platform": ""})


def test_harness_check_fails_on_a_budget_violation(monkeypatch, tmp_path, capsys):
    """--check exits 1 when a module reports a violation; without --check the run succeeds and writes JSON."""
    _fake_bench(monkeypatch, lambda quick: {"value": 1, "violations": ["queries: x p95 200 ms >= 100 ms"]})
    assert harness.main(["--quick", "--results-dir", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "fake.quick.json").read_text())
    assert document["value"] == 1 and document["quick"] is True and document["machine"]["cpu"] == "test"
    assert harness.main(["--quick", "--check", "--results-dir", str(tmp_path)]) == 1
    assert "BUDGET: queries: x p95" in capsys.readouterr().out


def test_harness_reports_a_failing_module(monkeypatch, tmp_path, capsys):
    """A module that raises makes the run exit 2 with its traceback, and writes no JSON for it."""

    def broken(quick):
        raise RuntimeError("boom")

    _fake_bench(monkeypatch, broken)
    assert harness.main(["--results-dir", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_harness_rejects_an_unknown_module(tmp_path, capsys):
    """--only with a name no bench module has exits 2 and lists the known ones."""
    assert harness.main(["--only", "nope", "--results-dir", str(tmp_path)]) == 2
    assert "queries" in capsys.readouterr().out


def test_quick_run_writes_json_for_every_module(tmp_path):
    """python -m benchmarks --quick runs every bench module in a subprocess and writes one JSON document each."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for name in harness.discover():
        document = json.loads((tmp_path / f"{name}.quick.json").read_text())
        assert document["benchmark"] == name and document["quick"] is True
        assert document["machine"]["cores"] >= 1 and document["machine"]["packages"]["spanstore"]
    queries = json.loads((tmp_path / "queries.quick.json").read_text())
    assert set(queries["results"]["10000"]["queries"]) == {q.name for q in QUERIES}
    memory = json.loads((tmp_path / "memory.quick.json").read_text())
    assert memory["hold"]["span_count"] == 10_000 and memory["replay"][0]["span_count"] == 10_000
    for name in ("queries", "memory", "codec", "log", "processor"):  # each holds its figures to the README's
        document = json.loads((tmp_path / f"{name}.quick.json").read_text())
        aims = document["aims"] if name != "queries" else document["results"]["10000"]["aims"]
        assert {row["aim"] for row in aims} == {aim.name for aim in report.AIMS if aim.module == name}
        assert all(row["measured"] > 0 for row in aims) and "violations" in document


def test_every_aim_is_the_readme_figure():
    """Each figure --check holds runs to is the one the README's Performance section prints, in the row it names."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    performance = readme[readme.index("## Performance") : readme.index("## Design")]
    for aim in report.AIMS:
        rows = [line for line in performance.splitlines() if line.startswith(aim.readme_row)]
        assert rows, f"no README line starts with {aim.readme_row!r} ({aim.name})"
        assert any(aim.readme_text in row for row in rows), (aim.name, aim.readme_text, rows)
    assert {aim.module for aim in report.AIMS} == {"queries", "memory", "codec", "log", "processor"}


def test_check_aims_flags_a_regression_beyond_the_margin(capsys):
    """A figure within 3x of the README's passes; beyond it, --check gets a violation naming the aim and both values."""
    aims = [aim for aim in report.AIMS if aim.module == "log"]
    fine = {aim.name: aim.value / 2.5 if aim.higher_is_better else aim.value for aim in aims}
    assert report.check_aims("log", fine)[0] == []
    slow = {**fine, "replay": fine["replay"] / 2}  # 5x below the README's replay rate
    violations, rows = report.check_aims("log", slow)
    assert violations == ["log: replay 20,219 spans/s < 33,698 spans/s (3x the README's 101,095 spans/s)"]
    assert [row["ok"] for row in rows] == [True, True, False]
    assert "REGRESSION" in capsys.readouterr().out
    queries = {f"{q.name} p95": 0.00001 for q in QUERIES}
    (get_trace,) = [aim for aim in report.AIMS if aim.name == "get_trace p95"]
    assert report.check_aims("queries", queries)[0] == []
    violations, _ = report.check_aims("queries", {**queries, "get_trace p95": get_trace.limit() * 2})
    assert len(violations) == 1 and violations[0].startswith("queries: get_trace p95 ")
    with pytest.raises(KeyError):
        report.check_aims("codec", {"encode per span": 1e-6})  # a module may not leave an aim unmeasured


def test_quick_run_leaves_no_result_files_unless_asked(monkeypatch, tmp_path):
    """`python -m benchmarks --quick` writes no JSON into the tree (or anywhere) unless --results-dir is given."""
    _fake_bench(monkeypatch, lambda quick: {"value": 1})
    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path / "results")
    assert harness.main(["--quick"]) == 0
    assert not (tmp_path / "results").exists()
    assert harness.main([]) == 0  # a full run keeps writing the published results
    assert (tmp_path / "results" / "fake.json").exists()
