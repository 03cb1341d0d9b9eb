"""spanstore.otlp against the sample files other projects wrote (../shared/otlp-samples, described in SOURCES.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spanstore.errors import CorruptLineError
from spanstore.model import SpanKind, StatusCode
from spanstore.otlp import ReadResult, decode_line, encode_spans, read_file

SAMPLES = Path(__file__).parents[1].parent / "shared" / "otlp-samples"

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(),
    reason=f"the optional corpus of other projects' OTLP files ({SAMPLES}) is absent; "
    "tests/test_otlp_quirks.py covers the same behaviours with repository fixtures",
)


def sample(name: str) -> ReadResult:
    """read_file on one sample, by file name."""
    return read_file(SAMPLES / name)


# file -> (spans, traces) as SOURCES.md lists them: every OTLP file loads exactly that, with no issue.
TIER_1 = {
    "otel-tui__test_data.json": (547, 141),
    "tempo__pkg_tempopb_trace.json": (1, 1),
    "jaeger__internal_storage_v2_memory_fixtures_otel_traces_01.json": (4, 2),
    "jaeger__internal_storage_v2_cassandra_tracestore_fixtures_otel_traces_01.json": (1, 1),
    "jaeger__internal_storage_integration_fixtures_traces_link_attributes_trace.json": (1, 1),
    "jaeger__internal_storage_integration_fixtures_traces_example_trace.json": (5, 1),
    "jaeger-ui__packages_jaeger-ui_src_utils_fixtures_otlp2jaeger-multi-in.jsonl": (4, 1),
    "jaeger-ui__packages_jaeger-ui_src_utils_fixtures_otlp2jaeger-in-error.json": (1, 1),
    "opentelemetry-proto__examples_trace.json": (1, 1),
    "opentelemetry-rust__opentelemetry-otlp_tests_integration_test_expected_traces.json": (2, 1),
    "opentelemetry-rust__opentelemetry-otlp_tests_integration_test_expected_serialized_traces.json": (2, 1),
    "opentelemetry-collector-contrib__connector_countconnector_testdata_traces_input.json": (3, 1),
    "fluent-bit__tests_integration_scenarios_in_opentelemetry_tests_data_files_test_traces_002.in.json": (2, 1),
    "otlp2parquet__testdata_traces.jsonl": (19, 19),
    # A span that is its own parent (a one-span cycle) and its child: kept as written, as the Collector does.
    "ottl-playground__testdata_traces.json": (2, 1),
}

# Invalid on purpose: file -> (spans that load, JSON path of the one issue, words its message must contain).
INVALID = {
    "otlp2parquet__testdata_invalid_trace_invalid_base64.json": (0, "spans[0].traceId", "'!!!INVALID_BASE64!!!'"),
    "otlp2parquet__testdata_invalid_trace_invalid_kind.json": (0, "spans[0].kind", "'SPAN_KIND_INVALID_TYPE'"),
    "otlp2parquet__testdata_invalid_trace_mixed_encoding.json": (0, "spans[0].traceId", "'zzz'"),
}

# Not OTLP (tier 2, and the fluent-bit table of test cases): one CorruptLineError naming what the file looks like.
# Tier 2, Jaeger and Zipkin JSON: read_file converts them (spanstore.foreign). file -> (spans, traces, services,
# error spans, the hint decode_line gives, since a log line must be OTLP), as SOURCES.md counts them.
FOREIGN = {
    "jaeger-ui__packages_jaeger-ui_src_components_TracePage_TraceFlamegraph_testTrace.json": (
        4,
        1,
        2,
        0,
        "Jaeger query-API",
    ),
    "jaeger__internal_uimodel_converter_v1_json_fixtures_ui_01.json": (5, 1, 2, 1, "Jaeger JSON"),
    "zipkin__zipkin-lens_testdata_smartthings-mobile-web-install.json": (1041, 1, 16, 2, "Zipkin v2"),
    "zipkin__zipkin-lens_testdata_messaging-kafka.json": (28, 1, 2, 3, "Zipkin v2"),
    "zipkin__zipkin-lens_testdata_skew.json": (4, 1, 2, 0, "Zipkin v2"),
    "zipkin__benchmarks_src_test_resources_zipkin2-chinese.json": (1, 1, 1, 1, "Zipkin v2 span"),
}

# Not traces at all: one corrupt "document", saying what it looks like.
NOT_OTLP = {
    "fluent-bit__tests_internal_data_opentelemetry_traces.json": "'resourceSpans_missing'",
}


def test_every_sample_is_covered() -> None:
    """Every data file in the sample folder is pinned by one of the tables here."""
    files = {path.name for path in SAMPLES.iterdir() if path.name != "SOURCES.md"}
    assert files == set(TIER_1) | set(INVALID) | set(FOREIGN) | set(NOT_OTLP)


@pytest.mark.parametrize(("name", "counts"), TIER_1.items(), ids=list(TIER_1))
def test_otlp_sample_counts(name: str, counts: tuple[int, int]) -> None:
    """An OTLP sample loads the spans and traces SOURCES.md counts, with no issue and no corrupt line."""
    result = sample(name)
    assert (len(result.spans), len({span.trace_id for span in result.spans})) == counts
    assert result.issues == [] and result.corrupt_lines == [] and result.skipped_spans == 0


@pytest.mark.parametrize("name", list(TIER_1), ids=list(TIER_1))
def test_otlp_sample_reencodes_to_the_same_spans(name: str) -> None:
    """What a sample decodes to survives our canonical encoding unchanged (as a set of spans; order is regrouped)."""
    spans = sample(name).spans
    again = [span for line in encode_spans(spans) for span in decode_line(line).spans]
    assert len(again) == len(spans)
    assert sorted(map(repr, again)) == sorted(map(repr, spans))


@pytest.mark.parametrize(("name", "expected"), INVALID.items(), ids=list(INVALID))
def test_invalid_sample_reports_issue(name: str, expected: tuple[int, str, str]) -> None:
    """An invalid sample reports a per-span issue with its path and the bad value; valid spans beside it load."""
    loads, where, words = expected
    result = sample(name)
    assert len(result.spans) == loads
    [issue] = result.issues
    assert issue.where == f"resourceSpans[0].scopeSpans[0].{where}"
    assert words in issue.message
    assert "expected" in issue.message or "cannot" in issue.message
    assert issue.source == str(SAMPLES / name) and issue.line_number == 1
    assert result.skipped_spans == 1 and result.corrupt_lines == []


@pytest.mark.parametrize(("name", "expected"), FOREIGN.items(), ids=list(FOREIGN))
def test_jaeger_and_zipkin_samples_are_converted(name: str, expected: tuple[int, int, int, int, str]) -> None:
    """read_file converts Jaeger and Zipkin JSON into the spans SOURCES.md counts; decode_line still says not OTLP."""
    spans, traces, services, errors, hint = expected
    result = sample(name)
    assert result.issues == [] and result.corrupt_lines == []
    assert len(result.spans) == spans and len({span.trace_id for span in result.spans}) == traces
    assert len({span.service_name for span in result.spans}) == services
    assert sum(span.status_code == StatusCode.ERROR for span in result.spans) == errors
    assert all(len(span.trace_id) == 32 and len(span.span_id) == 16 for span in result.spans)
    with pytest.raises(CorruptLineError, match=re.escape(hint)):
        decode_line((SAMPLES / name).read_bytes())


def test_zipkin_and_jaeger_fields_map_as_the_collector_maps_them() -> None:
    """Kinds, parents, times (us -> ns), tags, annotations/logs as events and references as links survive."""
    skew = sample("zipkin__zipkin-lens_testdata_skew.json").spans
    # A "shared" span: client and server halves carry one span id, and both are kept.
    halves = sorted(span.kind.name for span in skew if span.span_id == "74280ae0c10d8062")
    assert halves == ["CLIENT", "SERVER"]
    post = next(span for span in skew if span.span_id == "74280ae0c10d8062" and span.kind == SpanKind.SERVER)
    assert post.parent_span_id == "bf396325699c84bf"
    assert post.start_time_unix_nano == 1470150004008761000 and post.duration_ns == 93577000
    assert post.attributes["zipkin.shared"] is True and post.service_name == "serviceb"
    jaeger = sample("jaeger__internal_uimodel_converter_v1_json_fixtures_ui_01.json").spans
    tagged = next(span for span in jaeger if "temperature" in span.attributes)
    assert tagged.attributes["temperature"] == 72.5 and tagged.attributes["blob"] == b"\x00\x0009"
    assert tagged.attributes["javascript_limit"] == 9223372036854775222 and tagged.status_code == StatusCode.ERROR
    linked = next(span for span in jaeger if span.span_id == "0000000000000004")
    assert linked.parent_span_id == "0000000000000002"
    assert sorted(link.attributes["opentracing.ref_type"] for link in linked.links) == ["child_of", "follows_from"]
    logged = next(span for span in jaeger if span.events)
    assert [event.name for event in logged.events] == ["some-event", "log"]


@pytest.mark.parametrize(("name", "hint"), NOT_OTLP.items(), ids=list(NOT_OTLP))
def test_not_otlp_sample_is_one_clear_error(name: str, hint: str) -> None:
    """A JSON file that holds no traces in any known shape gives one corrupt 'document', saying what it looks like."""
    result = sample(name)
    assert result.spans == [] and result.lines == 1
    [error] = result.corrupt_lines
    assert isinstance(error, CorruptLineError)
    assert "expected an OTLP TracesData object with 'resourceSpans'" in str(error)
    assert hint in str(error)


def test_otel_tui_capture_details() -> None:
    """The mixed-signal demo capture: 41 span lines, 56 metric/log lines skipped, its errors, events and links."""
    result = sample("otel-tui__test_data.json")
    assert (result.lines, result.other_signal_lines) == (97, 56)
    spans = result.spans
    errors = [span for span in spans if span.status_code is StatusCode.ERROR]
    assert (len(errors), sum(1 for span in errors if span.status_message)) == (107, 27)
    assert sum(len(span.events) for span in spans) == 139
    assert sum(len(span.links) for span in spans) == 53
    assert sum(span.is_root for span in spans) == 140
    assert {span.flags for span in spans} == {0, 256, 768}
    assert max(len(event.attributes.get("exception.stacktrace", "")) for span in spans for event in span.events) == 5749
    assert len({span.service_name for span in spans}) == 8
    # 41 resourceSpans entries, 8 distinct resources: equal ones are one shared object.
    assert len({id(span.resource) for span in spans}) == len({span.resource for span in spans}) == 8


def test_jaeger_fixture_value_types() -> None:
    """Bytes (base64) and double attributes, trace state, flags, scopes with versions, events and links."""
    spans = sample("jaeger__internal_storage_v2_memory_fixtures_otel_traces_01.json").spans
    assert [span.kind for span in spans] == [SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER]
    first = spans[0]
    assert first.attributes["blob"] == b"\x00\x0009" and first.attributes["temperature"] == 72.5
    assert (first.trace_state, first.flags, first.status_code) == ("state.2", 1, StatusCode.ERROR)
    assert sum(len(span.events) for span in spans) == 8 and sum(len(span.links) for span in spans) == 8
    assert {(span.scope.name, span.scope.version) for span in spans} == {
        ("testing-library-2", "1.1.1"),
        ("testing-library-3", "1.1.2"),
    }


def test_rust_encodings_import_identically() -> None:
    """The protojson and the serde (every default written) forms of the same spans import to identical spans."""
    compact = sample("opentelemetry-rust__opentelemetry-otlp_tests_integration_test_expected_traces.json").spans
    verbose = sample("opentelemetry-rust__opentelemetry-otlp_tests_integration_test_expected_serialized_traces.json")
    assert verbose.spans == compact
    assert compact[0].service_name == "basic-otlp-tracing-example"


def test_countconnector_empty_ids() -> None:
    """All-empty ids load as all-zero ids and roots; dropped counts and the error status are kept."""
    spans = sample("opentelemetry-collector-contrib__connector_countconnector_testdata_traces_input.json").spans
    assert {(span.trace_id, span.span_id, span.parent_span_id) for span in spans} == {("0" * 32, "0" * 16, None)}
    assert [span.name for span in spans] == ["operationA", "operationB", "operationC"]
    assert (spans[0].status_code, spans[0].status_message) == (StatusCode.ERROR, "status-cancelled")
    assert (spans[0].dropped_attributes_count, spans[0].dropped_events_count, spans[1].dropped_links_count) == (1, 1, 3)
    assert spans[0].kind is SpanKind.UNSPECIFIED


def test_uppercase_hex_and_tempo_batches() -> None:
    """Tempo's batches and the proto example both use UPPERCASE ids: they load as the same lowercase span."""
    [tempo] = sample("tempo__pkg_tempopb_trace.json").spans
    [proto] = sample("opentelemetry-proto__examples_trace.json").spans
    assert tempo.trace_id == "5b8efff798038103d269b633813fc60c" and tempo.parent_span_id == "eee19b7ec3c1b173"
    assert tempo == proto
    assert proto.scope.attributes == {"my.scope.attribute": "some scope attribute"}


def test_snake_case_fluent_bit_sample() -> None:
    """The proto-field-name (snake_case) sample loads with its statuses, messages and event."""
    spans = sample("fluent-bit__tests_integration_scenarios_in_opentelemetry_tests_data_files_test_traces_002.in.json")
    assert {(span.status_code, span.status_message) for span in spans.spans} == {
        (StatusCode.OK, "ok"),
        (StatusCode.ERROR, "db timeout"),
    }
    assert sum(len(span.events) for span in spans.spans) == 1
    assert {span.service_name for span in spans.spans} == {"checkout"}


def test_base64_ids_and_enum_names() -> None:
    """otlp2parquet's JSON Lines use base64 ids and enum names: ids load as 32/16 lowercase hex characters."""
    spans = sample("otlp2parquet__testdata_traces.jsonl").spans
    assert all(len(span.trace_id) == 32 and span.trace_id == span.trace_id.lower() for span in spans)
    assert all(len(span.span_id) == 16 for span in spans)
    assert spans[0].trace_id == bytes.fromhex("69842a979911036cf3e822086ecaa007").hex()
    assert spans[0].kind is SpanKind.INTERNAL


# The fluent-bit table's invalid cases that spanstore reads, as the OpenTelemetry Collector does: an empty id is
# the all-zero id (SOURCES.md counts the countconnector file's empty-id spans), and an event may have no name
# (the Jaeger example trace has ten).
LENIENT_CASES = {
    "trace_id_zero_length",
    "span_id_zero_length",
    "link_trace_id_zero_length",
    "link_span_id_zero_length",
    "event_missing_name",
}


def fluent_bit_cases() -> list[tuple[str, dict]]:
    """The (name, case) pairs of the fluent-bit table, or none when the folder is absent."""
    path = SAMPLES / "fluent-bit__tests_internal_data_opentelemetry_traces.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).items())


@pytest.mark.parametrize(("name", "case"), fluent_bit_cases(), ids=[name for name, _ in fluent_bit_cases()])
def test_fluent_bit_case(name: str, case: dict) -> None:
    """Each fluent-bit case: valid ones load one span; invalid ones raise CorruptLineError or report an issue."""
    line = json.dumps(case["input"])
    if "expected_error" not in case or name in LENIENT_CASES:
        decoded = decode_line(line)
        assert decoded.issues == [] and len(decoded.spans) == 1
        return
    try:
        decoded = decode_line(line, source=name)
    except CorruptLineError as error:
        assert "expected" in str(error)
        return
    assert decoded.spans == []
    [issue] = decoded.issues
    assert "expected" in issue.message and issue.source == name


def test_fast_path_agrees_on_every_sample() -> None:
    """On every OTLP sample document or line, the typed fast path (when it applies) equals the lenient path."""
    import msgspec

    from spanstore.otlp import _decode_document, _fast_spans

    taken = 0
    for name in TIER_1:
        data = (SAMPLES / name).read_bytes()
        pieces = [data] if name.endswith(".json") and not name.startswith("otel-tui") else data.splitlines()
        for piece in pieces:
            if not piece.strip():
                continue
            fast = _fast_spans(piece)
            if fast is None:
                continue
            taken += 1
            decoded = _decode_document(msgspec.json.decode(piece), name, 1)
            assert decoded.issues == [] and fast == decoded.spans
    assert taken >= 30  # the Collector-style captures (otel-tui, jaeger-ui, rust) are canonical enough
