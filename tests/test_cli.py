"""The ``spanstore`` command (spanstore/cli.py, render.py, demo.py, __main__.py): every command in-process and as a
real subprocess, JSON output parsed back, errors and exit statuses, the demo, and the sample OTLP files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanstore.cli import build_parser, main, parse_attribute_filter, parse_duration_ns, parse_time_unix_nano
from spanstore.demo import run_demo
from spanstore.log import SpanLog
from spanstore.model import AttributeMap, Resource, StatusCode, StoredSpan
from spanstore.otlp import encode_spans, read_file
from spanstore.query import find_traces, get_trace, query_spans
from spanstore.render import format_duration, trace_rows
from spanstore.store import SpanStore

ROOT = Path(__file__).parents[1]
SAMPLES = ROOT.parent / "shared" / "otlp-samples"
OTEL_DEMO = "otel-tui__test_data.json"
SELF_PARENT = "ottl-playground__testdata_traces.json"
COMMANDS = [
    "demo",
    "run",
    "stats",
    "traces",
    "trace",
    "spans",
    "failures",
    "errors",
    "tail",
    "import",
    "export",
    "similar",
    "diff",
    "ops",
    "serve",
]
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(),
    reason=f"the optional corpus of other projects' OTLP files ({SAMPLES}) is absent; "
    "tests/fixtures/quirks covers the same behaviours",
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[dict]:
    """Parse JSON Lines output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output as when piped: rich's own width for non-terminals (no COLUMNS from the runner), no colour."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    """A store holding one default demo run (the library call, not the command): (path, DemoResult)."""
    path = str(tmp_path_factory.mktemp("demo") / "store")
    return path, run_demo(path)


@pytest.fixture(scope="module")
def demo_spans(demo_store: tuple[str, object]) -> SpanStore:
    """The demo store's spans in a memory-only store, for comparing the CLI with the query API."""
    spans, _ = SpanLog(demo_store[0], create=False).read()
    store = SpanStore()
    store.add_many(spans)
    return store


@pytest.fixture(scope="module")
def samples_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding every sample file, imported by the command."""
    if not SAMPLES.is_dir():
        pytest.skip(f"the optional corpus of other projects' OTLP files ({SAMPLES}) is absent")
    path = str(tmp_path_factory.mktemp("samples") / "store")
    assert main(["--path", path, "--json", "import", str(SAMPLES)]) == 0
    return path


def stored(path: str) -> list[StoredSpan]:
    """Every span in the log at ``path``."""
    with SpanLog(path, create=False) as log:
        return log.read()[0]


# --- help, README, entry points -----------------------------------------------------------------------------------
def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """Every subcommand answers --help with exit 0, a description and at least one `spanstore <command>` example."""
    subcommands = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert sorted(subcommands.choices) == sorted(COMMANDS)
    for command in COMMANDS:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0, command
        assert "example" in out and f"spanstore {command}" in out.split("example")[-1], command
        assert "--path" in out and "--json" in out, command
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(command in out for command in COMMANDS)


def test_every_command_appears_in_the_readme() -> None:
    """README.md at the repository root documents every command as `spanstore <command>`."""
    path = ROOT / "README.md"
    assert path.is_file(), f"{path} is missing (the lead writes it from /tmp/fragments/cli.md)"
    readme = path.read_text(encoding="utf-8")
    missing = [command for command in COMMANDS if f"spanstore {command}" not in readme]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"


def test_no_command_prints_help_and_version_works(capsys: pytest.CaptureFixture[str]) -> None:
    """`spanstore` alone prints the help (exit 0); --version prints the version."""
    code, out, _ = run(capsys)
    assert code == 0 and "commands:" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("spanstore ")


# --- values ---------------------------------------------------------------------------------------------------------
@given(
    st.integers(0, 10**6), st.sampled_from([("ns", 1), ("us", 10**3), ("ms", 10**6), ("s", 10**9), ("h", 3600 * 10**9)])
)
def test_durations_parse_to_exact_nanoseconds(number: int, unit: tuple[str, int]) -> None:
    """`<n><unit>` parses to exactly n times the unit, and format_duration never raises on it."""
    assert parse_duration_ns(f"{number}{unit[0]}") == number * unit[1]
    assert format_duration(number * unit[1])


def test_value_parsers() -> None:
    """Decimal durations, ISO 8601 times (naive = UTC, Z, offsets, relative) and typed attribute values parse."""
    assert parse_duration_ns("1.5s") == 1_500_000_000 and parse_duration_ns("250ms") == 250_000_000
    assert parse_duration_ns("500µs") == 500_000 and parse_duration_ns("10ns") == 10
    assert parse_time_unix_nano("2024-05-01T12:00:00") == parse_time_unix_nano("2024-05-01T12:00:00Z")
    assert parse_time_unix_nano("2024-05-01T14:00:00+02:00") == parse_time_unix_nano("2024-05-01T12:00:00Z")
    assert parse_time_unix_nano("15m", now_unix_nano=10**12) == 10**12 - 15 * 60 * 10**9
    assert parse_attribute_filter("code=500").value == 500
    assert parse_attribute_filter('code="500"').value == "500"
    assert parse_attribute_filter("ok=true").value is True
    assert parse_attribute_filter("ratio<0.5").value == 0.5 and parse_attribute_filter("ratio<0.5").op == "<"
    assert parse_attribute_filter("route ~ /api/.*").op == "matches"
    assert parse_attribute_filter("user.id").op == "exists"
    for bad in ("", "=5", "k>true"):
        with pytest.raises(ValueError):
            parse_attribute_filter(bad)
    for bad in ("5", "fast", "1.5.5s", "-1s"):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration_ns(bad)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time_unix_nano("yesterday")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["spans", "--min-duration", "5x"], ["--min-duration", "expected a duration", "'5x'"]),
        (["traces", "--last", "soon"], ["--last", "expected a duration", "'soon'"]),
        (["spans", "--since", "yesterday"], ["--since", "ISO 8601", "'yesterday'"]),
        (["trace", "xyz"], ["TRACE_ID", "32 hex characters", "'xyz'"]),
        (["spans", "--attr", "=5"], ["--attr", "'=5'"]),
        (["spans", "--kind", "sideways"], ["--kind", "invalid choice"]),
        (["spans", "--limit", "-3"], ["--limit", "'-3'"]),
        (["spans", "--errors", "--status", "ok"], ["--errors", "--status ok"]),
        (["spans", "--since", "2024-05-02", "--until", "2024-05-01"], ["since must not be after until"]),
        (["spans", "{ status = eror }"], ["status", "'eror'"]),
        (["frobnicate"], ["invalid choice", "frobnicate"]),
    ],
)
def test_usage_errors_exit_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], argv: list[str], words: list[str]
) -> None:
    """A malformed option or query exits 2 with a message naming the option, the expected form and what was got."""
    code, out, err = run(capsys, "--path", demo_store[0], *argv)
    assert code == 2, err
    assert out == ""
    for word in words:
        assert word in err, (word, err)


def test_reading_commands_need_a_store_and_never_create_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every reading command on a missing (or empty) directory fails with exit 1 and the hint, creating nothing."""
    missing = tmp_path / "nothing-here"
    for argv in (["stats"], ["traces"], ["trace", "ab" * 16], ["spans"], ["failures"], ["errors"], ["tail"]):
        code, out, err = run(capsys, "--path", str(missing), *argv)
        assert code == 1, argv
        hint = "run `spanstore demo` or attach FileBasedSpanProcessor first"
        assert err == f"spanstore: error: no store at {missing} ({hint})\n"
        assert not missing.exists()
    code, _, err = run(capsys, "export", "--path", str(missing), "--out", str(tmp_path / "x.jsonl"))
    assert code == 1 and "no store at" in err and not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "--path", str(empty), "stats")
    assert code == 1 and "no store at" in err and list(empty.iterdir()) == []


def test_path_comes_from_the_option_then_the_environment(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPANSTORE_PATH names the store when --path is absent; --path works before or after the command."""
    monkeypatch.setenv("SPANSTORE_PATH", demo_store[0])
    code, out, _ = run(capsys, "stats", "--json")
    assert code == 0 and json_lines(out)[0]["path"] == demo_store[0]
    monkeypatch.setenv("SPANSTORE_PATH", "/nonexistent/store")
    code, out, _ = run(capsys, "stats", "--path", demo_store[0], "--json")
    assert code == 0 and json_lines(out)[0]["span_count"] > 0


# --- demo -----------------------------------------------------------------------------------------------------------
def test_demo_then_failures_and_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`demo` writes a realistic store and shows failures and a failing trace; `failures` and `trace` then work."""
    path = str(tmp_path / "shop")
    code, out, err = run(capsys, "--path", path, "demo")
    assert code == 0, err
    assert "4 services (frontend, cart, inventory, payment)" in out
    assert "Recent failures" in out and "The failing trace with the most errors" in out
    assert "StatementTimeoutError" in out or "CardDeclinedError" in out
    assert "└─" in out and "█" in out  # the tree and its waterfall
    assert "\x1b[" not in out  # no colour codes when the output is not a terminal
    spans = stored(path)
    assert 100 <= len(spans) <= 300
    assert {s.service_name for s in spans} == {"frontend", "cart", "inventory", "payment"}
    assert any(
        e.name == "exception" and "Traceback" in e.attributes["exception.stacktrace"] for s in spans for e in s.events
    )
    assert any(s.kind.name == "CLIENT" and s.attributes.get("db.system") == "postgresql" for s in spans)

    code, out, _ = run(capsys, "--path", path, "failures")
    assert code == 0 and "Error" in out and "Trace ID" in out
    code, out, _ = run(capsys, "--path", path, "--json", "failures", "--limit", "all")
    failures = json_lines(out)
    assert failures and all(f["status"] == "ERROR" for f in failures)
    trace_id = max(failures, key=lambda f: f["duration_ns"])["trace_id"]
    code, out, _ = run(capsys, "--path", path, "trace", trace_id)
    assert code == 0 and trace_id in out and "frontend" in out and "✗" in out


def test_demo_is_seeded_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The same seed gives the same workload (names, durations, statuses); --json prints one summary object."""
    shapes = []
    for name in ("a", "b"):
        code, out, _ = run(capsys, "--path", str(tmp_path / name), "--json", "demo", "--requests", "8", "--seed", "5")
        [summary] = json_lines(out)
        assert code == 0 and summary["requests"] == 8 and len(summary["trace_ids"]) == 8
        spans = sorted(stored(str(tmp_path / name)), key=lambda s: (s.name, s.duration_ns))
        shapes.append([(s.name, s.service_name, s.duration_ns, s.status_code) for s in spans])
    assert shapes[0] == shapes[1]


# --- stats, traces, trace, spans, failures, errors ------------------------------------------------------------------
def test_stats(capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore) -> None:
    """`stats` reports counts, services, time range, error rate, disk and memory; --json gives the same figures."""
    path, _ = demo_store
    code, out, _ = run(capsys, "--path", path, "stats")
    assert code == 0
    for word in ("Spans", "Errors", "Services", "Time range", "Disk", "Memory", "Skipped", "Dropped", "frontend"):
        assert word in out
    code, out, _ = run(capsys, "--path", path, "stats", "--json")
    [stats] = json_lines(out)
    expected = demo_spans.stats()
    assert stats["span_count"] == expected.span_count and stats["trace_count"] == expected.trace_count
    assert stats["error_span_count"] == expected.error_span_count and stats["services"] == expected.services
    assert stats["log"]["segments"] >= 1 and stats["log"]["disk_bytes"] > 0


def test_traces_search(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore
) -> None:
    """`traces` lists one line per trace, matching find_traces for the same criteria (options and TraceQL alike)."""
    path, _ = demo_store
    code, out, _ = run(capsys, "--path", path, "--json", "traces", "--errors", "--limit", "all")
    got = json_lines(out)
    expected = find_traces(demo_spans, status="ERROR", limit=1000)
    assert [t["trace_id"] for t in got] == [t.trace_id for t in expected] and got
    assert set(got[0]) >= {"trace_id", "root_name", "root_service", "duration_ns", "span_count", "error_count"}
    code, out, _ = run(capsys, "--path", path, "--json", "traces", "{ status = error }", "--limit", "all")
    assert [t["trace_id"] for t in json_lines(out)] == [t.trace_id for t in expected]
    code, out, _ = run(
        capsys, "--path", path, "--json", "traces", "--service", "inventory", "--attr", "http.response.status_code=503"
    )
    assert [t["trace_id"] for t in json_lines(out)] == [
        t.trace_id for t in find_traces(demo_spans, service="inventory", attributes={"http.response.status_code": 503})
    ]
    code, out, _ = run(capsys, "--path", path, "traces", "--limit", "3")
    assert code == 0 and "Root span" in out and "Showing the first 3 traces" in out
    assert len([line for line in out.splitlines() if "frontend" in line]) == 3
    code, out, _ = run(capsys, "--path", path, "traces", "--service", "no-such-service")
    assert code == 0 and out.startswith("No traces match")
    code, out, _ = run(capsys, "--path", path, "--json", "traces", "--service", "no-such-service")
    assert code == 0 and out == ""


def test_trace_shows_a_tree_and_full_details(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore
) -> None:
    """`trace` draws every span once under its parent; a prefix finds it; --full shows attributes and stack traces."""
    path, result = demo_store
    trace_id = result.error_trace_ids[0]
    spans = get_trace(demo_spans, trace_id)
    code, out, _ = run(capsys, "--path", path, "trace", trace_id[:10])
    assert code == 0
    assert f"trace {trace_id}" in out and f"{len(spans)} spans" in out
    assert sum(1 for line in out.splitlines() if any(line.endswith(c) for c in "█▏▎▍▌▋▊▉")) == len(spans)
    code, out, _ = run(capsys, "--path", path, "trace", trace_id.upper(), "--full")
    assert "Traceback (most recent call last):" in out and "exception.type" in out and "Resources" in out
    assert "http.request.method" in out and "service.name" in out
    code, out, _ = run(capsys, "--path", path, "--json", "trace", trace_id)
    records = json_lines(out)
    assert [r["span_id"] for r in records] == [s.span_id for s in spans]
    code, _, err = run(capsys, "--path", path, "trace", "f" * 32)
    assert code == 1 and err.startswith("spanstore: error: no trace ffff") and "`spanstore traces`" in err


def test_spans_options_match_the_query_api(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore
) -> None:
    """Each `spans` option maps to its SpanQuery criterion: the CLI returns what query_spans returns."""
    path, _ = demo_store
    starts = sorted(s.start_time_unix_nano // 1000 * 1000 for s in demo_spans.spans())  # the CLI parses microseconds
    since, until = starts[len(starts) // 4], starts[len(starts) // 2]
    iso = lambda ns: (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)).isoformat()  # noqa: E731
    cases = [
        (["--service", "payment"], {"service": "payment"}),
        (["--name", "SELECT stock"], {"name": "SELECT stock"}),
        (["--kind", "client", "--status", "error"], {"kind": "CLIENT", "status": "ERROR"}),
        (["--errors", "--root"], {"status": "ERROR", "root_only": True}),
        (["--error-type", "StatementTimeoutError"], {"error_type": "StatementTimeoutError"}),
        (["--attr", "http.response.status_code>=400"], {"attributes": [("http.response.status_code", ">=", 400)]}),
        (["--attr", "db.system"], {"attributes": [("db.system", "exists", None)]}),
        (["--attr", "url.full~http://cart.*"], {"attributes": [("url.full", "matches", "http://cart.*")]}),
        (["--resource-attr", "service.name=cart"], {"service": "cart"}),
        (["--min-duration", "1s", "--max-duration", "3s"], {"min_duration_ns": 10**9, "max_duration_ns": 3 * 10**9}),
        (["--last", "1h", "--order", "longest"], {"last": 3600, "order": "longest"}),
        (["--since", "2h", "--until", "now", "--order", "oldest"], {"last": 7200, "order": "oldest"}),
        (
            ["--since", iso(since), "--until", iso(until), "--order", "oldest"],
            {"since": since, "until": until, "order": "oldest"},
        ),
        (["{ kind = server && duration > 100ms }"], {"kind": "SERVER", "min_duration_ns": 100_000_001}),
    ]
    for argv, criteria in cases:
        code, out, _ = run(capsys, "--path", path, "--json", "spans", "--limit", "all", *argv)
        assert code == 0, argv
        expected = [s.span_id for s in query_spans(demo_spans, limit=None, **criteria)]
        assert len(expected) >= 2, argv  # the demo's data matches every case: an empty answer proves nothing
        got = [r["span_id"] for r in json_lines(out)]
        if "longest" in argv or "oldest" in argv:
            assert got == expected, argv
        else:
            assert sorted(got) == sorted(expected), argv
    assert 0 < len(query_spans(demo_spans, since=since, until=until, limit=None)) < len(demo_spans) // 2
    code, out, _ = run(capsys, "--path", path, "spans", "--limit", "5")
    assert code == 0 and "Showing the first 5 spans" in out
    code, out, _ = run(capsys, "--path", path, "spans", "--attr", "http.response.status_code=999")
    assert code == 0 and out.startswith("No spans match")


def test_spans_attr_values_are_typed_as_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`--attr k=503` matches the int 503 (and 503.0), `--attr 'k="503"'` only the string "503": each returns spans."""
    path = str(tmp_path / "store")
    values = [503, "503", 503.0, 503, "503", 200]
    with SpanStore(path) as store:
        for i, value in enumerate(values, start=1):
            store.add(
                StoredSpan(
                    trace_id=f"{i:032x}",
                    span_id=f"{i:016x}",
                    name="op",
                    start_time_unix_nano=i,
                    end_time_unix_nano=i + 1,
                    attributes=AttributeMap.of({"code": value}),
                )
            )
    for argv, want in [
        ("code=503", [1, 3, 4]),
        ('code="503"', [2, 5]),
        ("code!=503", [2, 5, 6]),
        ("code>=500", [1, 3, 4]),
    ]:
        code, out, _ = run(capsys, "--path", path, "--json", "spans", "--limit", "all", "--attr", argv)
        assert code == 0, argv
        assert sorted(int(r["span_id"], 16) for r in json_lines(out)) == want, argv


def test_failures_and_errors(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore
) -> None:
    """`failures` lists recent ERROR spans; `errors` summarises error types and `errors --type` lists their spans."""
    path, _ = demo_store
    code, out, _ = run(capsys, "--path", path, "--json", "failures", "--limit", "all")
    assert [r["span_id"] for r in json_lines(out)] == [s.span_id for s in query_spans(demo_spans, status="ERROR")]
    code, out, _ = run(capsys, "--path", path, "failures", "--last", "1s")
    assert code == 0 and "No failures in the last 1s." in out and "try --last 1h" in out  # the demo ran just now
    code, out, _ = run(capsys, "--path", path, "--json", "failures", "--since", "2000-01-01", "--service", "payment")
    assert all(r["service"] == "payment" and r["status"] == "ERROR" for r in json_lines(out))
    code, out, _ = run(capsys, "--path", path, "--json", "errors")
    rows = json_lines(out)
    counts = {row["error_type"]: row["span_count"] for row in rows}
    for error_type, count in counts.items():
        assert count == len(query_spans(demo_spans, error_type=error_type)), error_type
    assert "StatementTimeoutError" in counts  # the demo sets error.type to the class name
    code, out, _ = run(capsys, "--path", path, "errors")
    assert code == 0 and "Error type" in out and "StatementTimeoutError" in out
    # Found by error.type and by exception.type as the SDK records it, module-qualified.
    for name in ("StatementTimeoutError", "spanstore.demo.StatementTimeoutError"):
        code, out, _ = run(capsys, "--path", path, "--json", "errors", "--type", name, "--limit", "all")
        assert len(json_lines(out)) == counts["StatementTimeoutError"]
    code, out, _ = run(capsys, "--path", path, "errors", "--type", "NoSuchError")
    assert code == 0 and out.startswith("No spans with error type NoSuchError")


# --- tail -----------------------------------------------------------------------------------------------------------
def _span(index: int, trace: int = 1, parent: int | None = None, **fields: object) -> StoredSpan:
    return StoredSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{index:016x}",
        parent_span_id=f"{parent:016x}" if parent is not None else None,
        name=f"op{index}",
        start_time_unix_nano=1_700_000_000_000_000_000 + index * 1_000_000,
        end_time_unix_nano=1_700_000_000_000_000_000 + index * 1_000_000 + 500_000,
        resource=Resource(attributes=AttributeMap.of({"service.name": "svc"})),
        **fields,
    )


def test_tail_prints_the_newest_and_follows_appends(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tail -n N` prints the N newest spans in log order; `tail -f` prints what another writer appends until Ctrl-C."""
    path = tmp_path / "store"
    with SpanLog(path) as log:
        log.append([_span(i) for i in range(1, 6)])
    code, out, _ = run(capsys, "--path", str(path), "tail", "-n", "2")
    assert code == 0 and [line.split()[2] for line in out.splitlines()] == ["op4", "op5"]

    polls = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            with SpanLog(path) as writer:  # another process's writer, as far as the follower can tell
                writer.append([_span(6, status_code=StatusCode.ERROR, status_message="boom")])
        elif len(polls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("spanstore.cli._sleep", fake_sleep)
    code, out, _ = run(capsys, "--path", str(path), "--json", "tail", "-f", "-n", "1")
    assert code == 0 and polls == [0.5, 0.5, 0.5]
    assert [r["name"] for r in json_lines(out)] == ["op5", "op6"]
    code, out, _ = run(capsys, "--path", str(path), "tail", "-n", "0")
    assert code == 0 and out == ""


def test_tail_follow_started_before_the_store_exists_waits_for_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tail -f` started before the application creates the store waits for it, then follows (no 'no store')."""
    path = tmp_path / "store"
    polls = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:  # the application starts and writes its first span
            with SpanLog(path) as writer:
                writer.append([_span(1)])
        elif len(polls) == 4:
            with SpanLog(path) as writer:
                writer.append([_span(2)])
        elif len(polls) == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr("spanstore.cli._sleep", fake_sleep)
    code, out, err = run(capsys, "--path", str(path), "tail", "-f")
    assert code == 0 and "no store" not in err and f"Waiting for a store at {path}" in err
    assert [line.split()[2] for line in out.splitlines()] == ["op1", "op2"]
    code, _, err = run(capsys, "--path", str(tmp_path / "absent"), "tail")  # without -f: nothing to wait for
    assert code == 1 and "no store" in err


# --- import and export ----------------------------------------------------------------------------------------------
QUIRKS = Path(__file__).parent / "fixtures" / "quirks"


@pytest.mark.parametrize(
    "folder",
    [QUIRKS, pytest.param(SAMPLES, marks=needs_samples)],
    ids=["repository-quirk-fixtures", "optional-shared-corpus"],
)
def test_import_loads_every_valid_span_of_a_folder_and_reports_the_rest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, folder: Path
) -> None:
    """Importing a folder loads each distinct valid span once, reports invalid spans and lines, exits 0; a
    second import of the same files adds nothing."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl"))
    results = [read_file(p) for p in files]
    distinct = {(s.trace_id, s.span_id, s.kind, s.start_time_unix_nano) for r in results for s in r.spans}
    invalid = sum(r.skipped_spans for r in results)
    corrupt = sum(len(r.corrupt_lines) for r in results)
    assert invalid and corrupt and len(distinct) < sum(len(r.spans) for r in results)  # every case is exercised
    path = str(tmp_path / "store")
    code, out, err = run(capsys, "--path", path, "import", str(folder))
    assert code == 0, err
    assert f"Imported {len(distinct):,} spans" in out and f"of {len(files)} files" in out
    lines = f"{corrupt} line that is not" if corrupt == 1 else f"{corrupt} lines that are not"
    invalid_text = f"{invalid} invalid span" + ("" if invalid == 1 else "s")
    assert invalid_text in out and f"{lines} OTLP traces" in out
    problems = corrupt + sum(len(r.issues) for r in results)
    assert ("Problems (first 5 of" in out and "-v lists all" in out) if problems > 5 else "Problems:" in out
    keys = [(s.trace_id, s.span_id, s.kind, s.start_time_unix_nano) for s in stored(path)]
    assert set(keys) == distinct and len(keys) == len(distinct)
    code, out, _ = run(capsys, "--path", path, "--json", "import", str(folder))
    [summary] = json_lines(out)
    assert (
        code == 0 and summary["spans_loaded"] == 0 and summary["duplicate_spans"] == sum(len(r.spans) for r in results)
    )


@needs_samples
def test_import_loads_every_valid_sample_span_and_reports_the_rest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Importing the sample folder loads each distinct valid span once, reports invalid spans and lines, exits 0."""
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".json", ".jsonl"))
    results = [read_file(p) for p in files]
    distinct = {(s.trace_id, s.span_id, s.kind, s.start_time_unix_nano) for r in results for s in r.spans}
    invalid = sum(r.skipped_spans for r in results)
    corrupt = sum(len(r.corrupt_lines) for r in results)
    path = str(tmp_path / "store")
    code, out, err = run(capsys, "--path", path, "import", str(SAMPLES))
    assert code == 0, err
    assert f"Imported {len(distinct):,} spans" in out and f"of {len(files)} files" in out
    lines = f"{corrupt} line that is not" if corrupt == 1 else f"{corrupt} lines that are not"
    assert f"{invalid} invalid spans" in out and f"{lines} OTLP traces" in out
    problems = corrupt + sum(len(r.issues) for r in results)
    assert ("Problems (first 5 of" in out and "-v lists all" in out) if problems > 5 else "Problems:" in out
    keys = [(s.trace_id, s.span_id, s.kind, s.start_time_unix_nano) for s in stored(path)]
    assert set(keys) == distinct and len(keys) == len(distinct)
    code, out, _ = run(capsys, "--path", path, "--json", "import", "-v", str(SAMPLES / OTEL_DEMO))
    [summary] = json_lines(out)
    assert code == 0 and summary["spans_loaded"] == 0 and summary["duplicate_spans"] == 547  # nothing twice
    assert len(stored(path)) == len(distinct)


def test_import_with_nothing_valid_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Import exits 1 (creating no store) when no input holds a valid span; partly valid input still exits 0."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zzz"}]}]}]}\n')
    path = tmp_path / "store"
    code, out, err = run(capsys, "--path", str(path), "import", str(bad), str(tmp_path / "missing.json"))
    assert code == 1 and "spanstore: error: nothing to import" in err
    assert "line 1 in" in out and "'zzz'" in out and "missing.json: no such file or directory" in out
    assert not path.exists()
    code, _, err = run(capsys, "--path", str(path), "import", str(tmp_path / "*.nothing"))
    assert code == 1 and "nothing to import" in err
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(encode_spans([_span(1), _span(2, parent=1)])) + b"garbage\n")
    code, out, _ = run(capsys, "--path", str(path), "import", str(tmp_path / "*.jsonl"))
    assert code == 0 and "Imported 2 spans (1 trace) from 1 of 2 files" in out
    assert "2 lines that are not OTLP traces" in out and "1 invalid span" in out


def test_export_round_trips_through_import(
    capsys: pytest.CaptureFixture[str], demo_store: tuple[str, object], demo_spans: SpanStore, tmp_path: Path
) -> None:
    """`export` writes OTLP JSON Lines (owner-only) that `import` reads back to the same spans; criteria filter."""
    path, _ = demo_store
    out_file = tmp_path / "all.jsonl"
    code, out, _ = run(capsys, "--path", path, "export", "--out", str(out_file))
    assert code == 0 and f"Exported {len(demo_spans):,} spans" in out
    assert out_file.stat().st_mode & 0o777 == 0o600
    assert sorted(read_file(out_file).spans, key=lambda s: s.span_id) == sorted(
        demo_spans.spans(), key=lambda s: s.span_id
    )
    code, out, _ = run(capsys, "--path", path, "--json", "export", "--out", str(out_file), "--errors", "--limit", "3")
    [summary] = json_lines(out)
    newest = query_spans(demo_spans, status="ERROR", limit=3)
    assert summary["spans"] == 3 and {s.span_id for s in read_file(out_file).spans} == {s.span_id for s in newest}
    code, out, _ = run(capsys, "--path", path, "export", "--out", "-", "--service", "cart")
    lines = out.encode().splitlines(keepends=True)
    assert code == 0 and all(line.startswith(b'{"resourceSpans"') for line in lines)
    code, _, err = run(capsys, "--path", path, "--json", "export", "--out", "-")
    assert code == 2 and "--json and --out -" in err


# --- the sample captures: the OpenTelemetry Demo, orphans, cycles ----------------------------------------------------
@needs_samples
def test_otel_demo_capture_shows_sensibly(capsys: pytest.CaptureFixture[str], samples_store: str) -> None:
    """The OpenTelemetry Demo capture lists as traces and its largest trace renders every span in a tree."""
    code, out, _ = run(capsys, "--path", samples_store, "--json", "traces", "--service", "frontend", "--limit", "all")
    summaries = json_lines(out)
    assert code == 0 and len(summaries) > 10
    biggest = max(summaries, key=lambda t: t["span_count"])
    code, out, _ = run(capsys, "--path", samples_store, "trace", biggest["trace_id"])
    assert code == 0 and f"{biggest['span_count']} spans" in out and "├─" in out
    code, out, _ = run(capsys, "--path", samples_store, "--json", "trace", biggest["trace_id"])
    assert len(json_lines(out)) == biggest["span_count"]
    code, out, _ = run(capsys, "--path", samples_store, "traces", "--errors", "--service", "checkoutservice")
    assert code == 0 and "Trace ID" in out
    code, out, _ = run(
        capsys, "--path", samples_store, "trace", max(summaries, key=lambda t: t["error_count"])["trace_id"], "--full"
    )
    assert code == 0 and "exception.stacktrace =" in out


@needs_samples
def test_orphans_and_rootless_samples_render(capsys: pytest.CaptureFixture[str], samples_store: str) -> None:
    """The self-parent sample renders both spans once, the cycle noted; an all-orphan trace renders every span."""
    cycle, child = sorted(read_file(SAMPLES / SELF_PARENT).spans, key=lambda span: span.parent_span_id != span.span_id)
    assert cycle.parent_span_id == cycle.span_id and child.parent_span_id == cycle.span_id
    code, out, _ = run(capsys, "--path", samples_store, "trace", cycle.trace_id)
    # Other samples share this trace id (and give it a root); the cycle is drawn, noted, without looping.
    assert code == 0 and "its own parent" in out and cycle.name in out and child.name in out
    jaeger = read_file(SAMPLES / "jaeger__internal_storage_v2_memory_fixtures_otel_traces_01.json").spans
    code, out, _ = run(capsys, "--path", samples_store, "trace", jaeger[0].trace_id)
    assert code == 0 and "(no root span in the store)" in out


def test_a_self_parent_span_renders_once_noted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The self-parent quirk file: both spans drawn once, the cycle noted, no loop (and an orphan's note)."""
    path = str(tmp_path / "store")
    assert run(capsys, "--path", path, "import", str(QUIRKS / "self_parent.json"))[0] == 0
    cycle, child = read_file(QUIRKS / "self_parent.json").spans
    code, out, _ = run(capsys, "--path", path, "trace", cycle.trace_id)
    tree = out.split("\n\n", 1)[1]  # below the header, which names the first span
    assert code == 0 and "its own parent" in tree and tree.count(cycle.name) == 1 and child.name in tree


def test_parent_cycles_render_every_span_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A trace whose spans are each other's parents (no root) renders each span once, noted, without looping."""
    cycle = [_span(1, parent=2), _span(2, parent=1), _span(3, parent=1), _span(4, parent=9)]
    file = tmp_path / "cycle.jsonl"
    file.write_bytes(b"".join(encode_spans(cycle)))
    path = str(tmp_path / "store")
    assert run(capsys, "--path", path, "import", str(file))[0] == 0
    code, out, _ = run(capsys, "--path", path, "trace", cycle[0].trace_id)
    assert code == 0 and "in a parent cycle" in out and "parent 0000000000000009 not in the store" in out
    tree = out.split("\n\n", 1)[1]  # below the header
    for span in cycle:
        assert tree.count(f"svc {span.name} ") == 1, span.name


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["root", "self", "missing", *range(8)]), min_size=1, max_size=8))
def test_trace_rows_lay_out_any_parent_graph(parents: list[object]) -> None:
    """Whatever the parent links (roots, orphans, self-parents, cycles), each span is one row under its parent."""
    spans = []
    for index, parent in enumerate(parents, start=1):
        if parent == "root":
            parent_id = None
        elif parent == "self":
            parent_id = index
        elif parent == "missing":
            parent_id = 99
        else:
            parent_id = int(parent) % len(parents) + 1
        spans.append(_span(index, parent=parent_id))
    rows = trace_rows(spans)
    assert sorted(id(row.span) for row in rows) == sorted(id(span) for span in spans)
    for position, row in enumerate(rows):
        if row.depth:
            above = next(r for r in reversed(rows[:position]) if r.depth == row.depth - 1)
            assert row.span.parent_span_id == above.span.span_id
        else:
            assert row.prefix == ""


# --- as real processes ----------------------------------------------------------------------------------------------
def test_every_command_as_a_subprocess(tmp_path: Path, demo_store: tuple[str, object]) -> None:
    """`python -m spanstore` runs every command (concurrently here, to stay fast); --json parses; errors exit right."""
    path, result = demo_store
    spans_file = tmp_path / "spans.jsonl"
    spans_file.write_bytes(b"".join(encode_spans([_span(1), _span(2, parent=1)])))
    env = {**os.environ, "NO_COLOR": "1", "SPANSTORE_PATH": path}
    env.pop("COLUMNS", None)
    runs = {
        "demo": ["--path", str(tmp_path / "demo"), "--json", "demo", "--requests", "5"],
        "stats": ["--json", "stats"],
        "traces": ["traces", "--json", "--errors"],
        "trace": ["trace", result.error_trace_ids[0]],
        "spans": ["spans", "--json", "--attr", "http.response.status_code>=500", "--limit", "3"],
        "failures": ["failures", "--json"],
        "errors": ["errors"],
        "tail": ["tail", "-n", "3", "--json"],
        "import": ["import", str(spans_file), "--path", str(tmp_path / "imported"), "--json"],
        "export": ["export", "--out", "-", "--errors"],
        "bad trace id": ["trace", "not-hex"],
        "unknown path": ["stats", "--path", str(tmp_path / "missing")],
        "bad duration": ["spans", "--max-duration", "fast"],
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "spanstore", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for name, argv in runs.items()
    }
    lazy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, spanstore.cli; print([m for m in ('rich', 'opentelemetry.sdk.trace') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    done = {name: (p.wait(timeout=60), *p.communicate()) for name, p in processes.items()}
    for name in ("demo", "stats", "traces", "spans", "failures", "tail", "import"):
        code, out, err = done[name]
        assert code == 0, (name, err)
        assert json_lines(out), name
    assert json_lines(done["demo"][1])[0]["requests"] == 5
    assert json_lines(done["import"][1])[0]["spans_loaded"] == 2
    assert all(r["status"] == "ERROR" for r in json_lines(done["failures"][1]))
    assert done["trace"][0] == 0 and result.error_trace_ids[0] in done["trace"][1] and "\x1b[" not in done["trace"][1]
    assert done["errors"][0] == 0 and "Error type" in done["errors"][1]
    assert done["export"][0] == 0 and read_file_text(done["export"][1]) > 0
    assert done["bad trace id"][0] == 2 and "argument TRACE_ID" in done["bad trace id"][2]
    assert done["unknown path"][0] == 1 and done["unknown path"][2].startswith("spanstore: error: no store at")
    assert done["bad duration"][0] == 2 and "--max-duration" in done["bad duration"][2]
    assert lazy.stdout.strip() == "[]"  # the CLI module imports neither rich nor the SDK until a command needs them


def read_file_text(text: str) -> int:
    """How many spans the OTLP JSON Lines ``text`` holds."""
    from spanstore.otlp import decode_line

    return sum(len(decode_line(line).spans) for line in text.splitlines() if line.strip())


def test_limit_means_what_it_means_in_python(capsys, demo_store, demo_spans):
    """--limit 0 returns nothing, as limit=0 does in Python; --limit all returns every match; junk is a usage error."""
    path, _ = demo_store
    every = query_spans(demo_spans, limit=None)
    code, out, _ = run(capsys, "--path", path, "--json", "spans", "--limit", "0")
    assert code == 0 and json_lines(out) == [] == query_spans(demo_spans, limit=0)
    code, out, _ = run(capsys, "--path", path, "--json", "spans", "--limit", "all")
    assert len(json_lines(out)) == len(every) > 20  # more than the default limit
    code, _, err = run(capsys, "--path", path, "spans", "--limit", "many")
    assert code == 2 and "'all' for no limit" in err


def test_failures_hint_reaches_back_to_the_newest_error(capsys, tmp_path):
    """An empty window suggests a --last (or --since) that would reach the newest error, never a useless one."""
    path = str(tmp_path / "store")
    now = time.time_ns()
    with SpanStore(path) as store:
        for i, age_days in enumerate([9, 400], start=1):
            start = now - age_days * 86_400 * 10**9
            store.add(
                msgspec.structs.replace(
                    _span(i, trace=i),
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + 1,
                    status_code=StatusCode.ERROR,
                )
            )
    code, out, _ = run(capsys, "--path", path, "failures", "--last", "7d")
    assert code == 0 and "try --last 30d" in out and "2 error spans" in out and "9d ago" in out
    assert "try --last 7d" not in out


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("user.id contains 0017 extra", None),  # accepted: a substring with a space
        ("code >= 500x", "expected a number or a quoted string"),
        ("user id = 3", "a key has no spaces"),
        ("user.id exists now", "expected nothing after 'exists'"),
    ],
)
def test_attr_input_is_parsed_or_refused_with_the_accepted_forms(capsys, demo_store, attr, message):
    """--attr accepts contains/exists as the Python API does, and refuses what does not parse (exit status 2)."""
    path, _ = demo_store
    code, _, err = run(capsys, "--path", path, "spans", "--attr", attr)
    if message is None:
        assert code == 0, err
    else:
        assert code == 2 and message in err


def test_compound_durations_and_singular_counts(capsys, tmp_path):
    """1h30m is a duration on the CLI as 1m30s is in TraceQL; one span is '1 span', not '1 spans'."""
    path = str(tmp_path / "store")
    with SpanStore(path) as store:
        store.add(_span(1))
    code, out, err = run(capsys, "--path", path, "spans", "--last", "1h30m")
    assert code == 0 and "No spans match (the store holds 1 span)." in out, err


def test_import_of_another_store_directory_reads_its_segments(capsys, demo_store, tmp_path):
    """`spanstore --path b import a/` with a a store: its spans arrive, its marker file is not reported as a problem."""
    path, _ = demo_store
    target = str(tmp_path / "copy")
    code, out, err = run(capsys, "--path", target, "--json", "import", path)
    summary = json_lines(out)[-1]
    assert code == 0, err
    with SpanStore(path) as original, SpanStore(target) as copy:
        assert summary["spans_loaded"] == len(copy) == len(original) > 0
    assert summary["corrupt_lines"] == 0 and "spanstore.json" not in out + err


def test_the_error_marker_survives_a_long_span_name_at_80_columns(capsys, tmp_path, monkeypatch):
    """A failed span whose name is wider than the tree's label column keeps its ✗ (the name is cut instead)."""
    monkeypatch.setenv("COLUMNS", "80")
    path = str(tmp_path / "store")
    long_name = "SELECT orders.id, orders.total FROM orders JOIN customers ON orders.customer_id = customers.id"
    with SpanStore(path) as store:
        store.add(msgspec.structs.replace(_span(1), name=long_name, status_code=StatusCode.ERROR))
    code, out, _ = run(capsys, "--path", path, "trace", f"{1:032x}")
    line = next(line for line in out.splitlines() if "SELECT" in line and "µs  " in line)  # the waterfall row
    assert code == 0 and ("✗" in line or " x " in line) and len(line) <= 80, out
