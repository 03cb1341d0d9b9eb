"""Fault injection for imports: mutated OTLP, Zipkin v2 and Jaeger files never raise, and say where (issue 12).

The fixtures in ``tests/fixtures/import/`` are small hand-made files of each format. Hypothesis mutates them two
ways: bytes (flips, insertions, deletions, splices of JSON tokens) and structure (one value anywhere in the
document replaced by a hostile JSON value: huge or non-finite numbers, wrong types, deep nesting). The longer
run of the same mutators is ``python -m benchmarks --only faults``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spanstore.log as log_module
from benchmarks.bench_faults import json_paths, replace_at
from spanstore import otlp
from spanstore.cli import main
from spanstore.log import SpanLog
from spanstore.otlp import read_file
from tests.test_log import line_spans

FIXTURES = Path(__file__).parent / "fixtures" / "import"
FORMATS = ("otlp.jsonl", "zipkin.json", "jaeger.json")

# Tokens that broke importers before: non-finite and out-of-range numbers, wrong types, odd ids.
_TOKENS = [
    b"1e999", b"-1e999", b"NaN", b"Infinity", b"18446744073709551616", b"-1", b"null", b"true", b"[]", b"{}",
    b'"x"', b"5", b'""', b'"ffffffffffffffffffffffffffffffff"', b"0.5", b"[[[[[[[[", b"]]]]", b"\\ud800", b"\xff",
]  # fmt: skip


def hostile_values() -> st.SearchStrategy[Any]:
    """JSON values that are wrong in every way an importer might not expect."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**64, 2**64 // 1000, 2**63, -1, 0, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "SERVER", "CHILD_OF", "int64"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["key", "value", "type", "spans", "traceId", "id", "tags", "process", "data", "x"]),
                inner,
                max_size=3,
            ),
        ),
        max_leaves=6,
    )


@st.composite
def structural_mutants(draw: st.DrawFn, name: str) -> bytes:
    """A fixture with one to three values replaced by hostile ones (each line of JSON Lines a document)."""
    lines = (FIXTURES / name).read_bytes().splitlines() if name.endswith(".jsonl") else [(FIXTURES / name).read_bytes()]
    documents = [json.loads(line) for line in lines]
    for _ in range(draw(st.integers(1, 3))):
        which = draw(st.integers(0, len(documents) - 1))
        path = draw(st.sampled_from(json_paths(documents[which])))
        documents[which] = replace_at(documents[which], path, draw(hostile_values()))
    return b"\n".join(json.dumps(document).encode() for document in documents) + b"\n"


@st.composite
def byte_mutants(draw: st.DrawFn, name: str) -> bytes:
    """A fixture with a few bytes flipped, inserted, deleted, or replaced by a JSON token."""
    data = bytearray((FIXTURES / name).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "token"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at : at + draw(st.integers(0, 6))] = draw(st.sampled_from(_TOKENS))
    return bytes(data)


def check_read(path: Path) -> None:
    """read_file never raises on content, and every problem it reports names the file and a line."""
    result = read_file(path)
    for issue in result.issues:
        assert issue.source == str(path) and issue.line_number >= 1, issue
    for error in result.corrupt_lines:
        assert error.source == str(path) and error.line_number >= 1, error
    for span in result.spans:
        assert 0 <= span.start_time_unix_nano < 2**64 and 0 <= span.end_time_unix_nano < 2**64


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", FORMATS)
@_FUZZ
@given(data=st.data())
def test_structurally_mutated_files_never_raise(tmp_path_factory: pytest.TempPathFactory, name: str, data) -> None:
    """Any value of any fixture replaced by a hostile one: problems are reported per span or line, never raised."""
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data.draw(structural_mutants(name)))
    check_read(path)


@pytest.mark.parametrize("name", FORMATS)
@_FUZZ
@given(data=st.data())
def test_byte_mutated_files_never_raise(tmp_path_factory: pytest.TempPathFactory, name: str, data) -> None:
    """Flipped, inserted and deleted bytes in any fixture: problems are reported, never raised."""
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data.draw(byte_mutants(name)))
    check_read(path)


@pytest.mark.parametrize(
    ("name", "document", "where"),
    [
        ("zipkin.json", [{"traceId": "1", "id": "2", "timestamp": 1e999}], "timestamp"),
        ("zipkin.json", [{"traceId": "1", "id": "2", "remoteEndpoint": "x"}], "remoteEndpoint"),
        ("zipkin.json", [{"traceId": "1", "id": "2", "annotations": 5}], "annotations"),
        ("jaeger.json", {"data": [{"spans": 5}]}, "spans"),
        ("jaeger.json", {"data": [{"spans": [{"traceID": "1", "spanID": "2", "process": "x"}]}]}, "process"),
        ("jaeger.json", {"data": [{"processes": 5, "spans": [{"traceID": "1", "spanID": "2"}]}]}, "processes"),
        ("jaeger.json", {"data": [{"spans": [{"traceID": "1", "spanID": "2", "tags": 5}]}]}, "tags"),
        ("jaeger.json", {"data": [{"spans": [{"traceID": "1", "spanID": "2", "logs": [{"fields": 1}]}]}]}, "fields"),
        (
            "jaeger.json",
            {"data": [{"spans": [{"traceID": "1", "spanID": "2", "tags": [{"key": "k", "type": "int64"}]}]}]},
            None,
        ),
    ],
)
def test_inputs_that_raised_tracebacks_are_reported(tmp_path: Path, name: str, document: Any, where: str) -> None:
    """Each input that crashed the Zipkin/Jaeger import (OverflowError, TypeError, AttributeError) is a problem."""
    path = tmp_path / name
    path.write_text(json.dumps(document))
    result = read_file(path)
    if where is None:
        assert len(result.spans) == 1
    else:
        assert where in str(result.issues[0]) and str(path) in str(result.issues[0])
        assert len(result.spans) == (1 if where == "processes" else 0)  # bad processes: ignored, spans kept


@pytest.mark.parametrize(("field", "micros"), [("timestamp", 2**64 // 1000 - 1), ("duration", 2**64 // 1000 - 1)])
def test_zipkin_end_past_2_64_rejects_that_span_only(tmp_path: Path, field: str, micros: int) -> None:
    """A Zipkin span whose timestamp + duration passes 2^64 ns is rejected at import, its neighbour kept."""
    spans = json.loads((FIXTURES / "zipkin.json").read_bytes())
    spans[0]["timestamp"], spans[0]["duration"] = 1_000_000, 1_000_000
    spans[0][field] = micros
    path = tmp_path / "zipkin.json"
    path.write_text(json.dumps(spans))
    result = read_file(path)
    assert [span.span_id for span in result.spans] == ["9a1b2c3d4e5f6071"]
    assert "before 2^64" in str(result.issues[0]) and "[0]" in str(result.issues[0])


def test_jaeger_end_past_2_64_rejects_that_span_only(tmp_path: Path) -> None:
    """A Jaeger span whose startTime + duration passes 2^64 ns is rejected at import, its neighbour kept."""
    document = json.loads((FIXTURES / "jaeger.json").read_bytes())
    document["data"][0]["spans"][0]["duration"] = 2**64 // 1000 - 1
    path = tmp_path / "jaeger.json"
    path.write_text(json.dumps(document))
    result = read_file(path)
    assert [span.span_id for span in result.spans] == ["eee19b7ec3c1b175"]
    assert "before 2^64" in str(result.issues[0])


def test_import_goes_on_past_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`spanstore import` of broken Zipkin and Jaeger files beside good ones imports the good ones, no traceback."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a-broken-zipkin.json").write_text('[{"traceId": "1", "id": "2", "timestamp": 1e999}]')
    (inputs / "b-broken-jaeger.json").write_text('{"data": [{"spans": 5}]}')
    (inputs / "c-good.json").write_bytes((FIXTURES / "jaeger.json").read_bytes())
    (inputs / "d-good.jsonl").write_bytes((FIXTURES / "otlp.jsonl").read_bytes())
    status = main(["--path", str(tmp_path / "store"), "import", str(inputs), "--json"])
    out, err = capsys.readouterr()
    assert status == 0 and "Traceback" not in err
    summary = json.loads(out)
    assert summary["spans_loaded"] == 4 and summary["invalid_spans"] == 2
    assert any("a-broken-zipkin.json" in p for p in summary["problems"])
    assert any("b-broken-jaeger.json" in p for p in summary["problems"])


def test_many_corrupt_lines_keep_a_bounded_number_of_problems_without_tracebacks(tmp_path: Path) -> None:
    """10,000 corrupt lines and 2,000 invalid spans: counted exactly, at most MAX_PROBLEMS_KEPT of each kept,
    and no kept error holds a traceback (whose frames cost ~3 KB a line)."""
    good = (FIXTURES / "otlp.jsonl").read_bytes().splitlines()[1]
    invalid = good.replace(b'"traceId":"0af7651916cd43dd8448eb211c80319c"', b'"traceId":"zz"')
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"{x}\n" * 10_000 + invalid + b"\n" + (invalid + b"\n") * 1_999 + good + b"\n")
    result = read_file(path)
    assert result.corrupt_line_count == 10_000 and len(result.corrupt_lines) == otlp.MAX_PROBLEMS_KEPT
    assert result.issue_count == 2_000 and len(result.issues) == otlp.MAX_PROBLEMS_KEPT
    assert result.skipped_spans == 2_000 and len(result.spans) == 1
    assert all(e.__traceback__ is None and e.__context__ is None for e in result.corrupt_lines)
    assert result.corrupt_lines[-1].line_number == otlp.MAX_PROBLEMS_KEPT


def test_import_of_many_bad_lines_lists_a_bounded_number_of_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spanstore import --json` of 3,000 bad lines counts them all and lists the first 1,000 problems."""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{x}\n" * 3_000 + (FIXTURES / "otlp.jsonl").read_bytes())
    assert main(["--path", str(tmp_path / "store"), "import", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["corrupt_lines"] == 3_000 and summary["spans_loaded"] == 2
    assert len(summary["problems"]) == 1_000 and summary["problems_not_listed"] == 2_000


def test_import_finds_duplicates_without_decoding_the_whole_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing into a big store decodes only the store's lines naming the imported traces, yet still finds the
    spans it already holds."""
    store = tmp_path / "store"
    with SpanLog(store, fsync="never") as log:
        for batch in line_spans(100, per_line=4):  # 100 lines of other traces
            log.append(batch)
    first = tmp_path / "first.jsonl"
    first.write_bytes((FIXTURES / "otlp.jsonl").read_bytes())
    assert main(["--path", str(store), "import", str(first), "--json"]) == 0
    capsys.readouterr()
    decoded: list[int] = []
    real_decode = log_module.decode_line
    monkeypatch.setattr(log_module, "decode_line", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    assert main(["--path", str(store), "import", str(first), str(FIXTURES / "zipkin.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["duplicate_spans"] == 2 and summary["spans_loaded"] == 2  # the OTLP file again; Zipkin is new
    assert len(decoded) <= 2  # the store's 102 lines: only the 2 naming the OTLP file's trace were decoded


def _deep_value(depth: int) -> bytes:
    return b'{"kvlistValue":{"values":[{"key":"k","value":' * depth + b'{"stringValue":"x"}' + b"}]}}" * depth


@pytest.mark.parametrize("depth", [400, 100_000])
def test_a_span_nested_too_deep_rejects_only_that_span(tmp_path: Path, depth: int) -> None:
    """A span whose attribute is nested 400 (or 100,000) levels deep is rejected alone; its neighbours on the same
    line load, from an imported file and from a store's segment alike."""
    good = (FIXTURES / "otlp.jsonl").read_bytes().splitlines()[0]
    span_start = good.index(b'{"traceId"')
    span_end = good.rindex(b"]}]}]}")
    span = good[span_start:span_end]
    deep = span.replace(b'"attributes":[', b'"attributes":[{"key":"deep","value":' + _deep_value(depth) + b"},", 1)
    assert deep != span
    deep = deep.replace(b'"b7ad6b7169203331"', b'"d7ad6b7169203333"', 1)
    line = good[:span_start] + b",".join([span, deep, span.replace(b"b7ad6b", b"e7ad6b", 1)]) + good[span_end:]
    path = tmp_path / "deep.jsonl"
    path.write_bytes(line + b"\n")
    result = read_file(path)
    assert [s.span_id for s in result.spans] == ["b7ad6b7169203331", "e7ad6b7169203331"]
    [issue] = result.issues
    assert issue.where.endswith("spans[1]") and "nested" in issue.message and result.corrupt_lines == []
    store = tmp_path / "store"
    SpanLog(store).close()
    (store / "spans-000001.jsonl").write_bytes(line + b"\n")
    with SpanLog(store) as log:
        assert [s.span_id for s in log.read()[0]] == ["b7ad6b7169203331", "e7ad6b7169203331"]
        assert log.stats().invalid_spans == 1 and log.stats().skipped_line_count == 0


def test_a_zipkin_span_nested_too_deep_rejects_only_that_span(tmp_path: Path) -> None:
    """In a Zipkin array, one span with a tag nested 5,000 levels deep is rejected; the others load."""
    spans = (FIXTURES / "zipkin.json").read_bytes()
    deep = spans.replace(b'"tags":{"db.statement":"select 1"}', b'"tags":{"q":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert deep != spans
    path = tmp_path / "zipkin.json"
    path.write_bytes(deep)
    result = read_file(path)
    assert [s.span_id for s in result.spans] == ["bf396325699c84bf"]
    assert "[1]" in result.issues[0].where and "nested" in result.issues[0].message
