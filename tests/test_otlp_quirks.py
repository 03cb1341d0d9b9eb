"""The OTLP/JSON quirks real producers show, each in a small file the repository holds (tests/fixtures/quirks).

tests/test_otlp_samples.py reads the same quirks from the real files in ../shared/otlp-samples when that optional
corpus is present; this module covers every behaviour it checks on a fresh clone, without it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status
from opentelemetry.trace import StatusCode as SdkStatusCode

from spanstore import SpanStore, get_trace
from spanstore.errors import CorruptLineError
from spanstore.model import SpanKind, StatusCode, from_readable_span
from spanstore.otlp import ReadResult, _decode_document, _fast_spans, decode_line, encode_spans, read_file

QUIRKS = Path(__file__).parent / "fixtures" / "quirks"


def quirk(name: str) -> ReadResult:
    return read_file(QUIRKS / name)


def test_every_quirk_file_is_documented_and_tested() -> None:
    """Each fixture is listed in the folder's README and named in this module."""
    listed = (QUIRKS / "README.md").read_text()
    source = Path(__file__).read_text()
    for path in QUIRKS.glob("*.json*"):
        assert f"`{path.name}`" in listed and f'"{path.name}"' in source, path.name


def test_files_written_by_the_official_exporter_read_back_as_the_sdk_spans(tmp_path) -> None:
    """A file written by opentelemetry-exporter-otlp-json-file (the real producer) loads as exactly the spans the
    SDK ended: ids, parents, kinds, statuses, attributes of every type, events and links."""
    path = tmp_path / "official.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    with open(path, "w") as out:
        provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(stream=out)))
        recorded = []
        provider.add_span_processor(SimpleSpanProcessor(_Collect(recorded)))
        tracer = provider.get_tracer("shop", "1.2.3")
        with tracer.start_as_current_span("POST /pay", attributes={"amount": 12.5, "items": 3, "ok": False}) as root:
            root.add_event("validated", {"tags": ("a", "b")})
            with tracer.start_as_current_span("charge", links=[Link(root.get_span_context(), {"why": "retry"})]) as s:
                s.set_status(Status(SdkStatusCode.ERROR, "card declined"))
                s.record_exception(ValueError("declined"))
        provider.shutdown()
    result = read_file(path)
    assert result.issues == [] and result.corrupt_lines == []
    assert sorted(result.spans, key=lambda s: s.span_id) == sorted(recorded, key=lambda s: s.span_id)


class _Collect:
    """A span exporter keeping StoredSpans converted straight from the SDK's spans (the reference)."""

    def __init__(self, into: list) -> None:
        self.into = into

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.into.extend(from_readable_span(span) for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_uppercase_hex_and_tempo_batches() -> None:
    """UPPERCASE ids load lowercase; Tempo's {"batches": [...]} is the same span as resourceSpans."""
    [proto] = quirk("proto_example_uppercase.json").spans
    [tempo] = quirk("tempo_batches_uppercase.json").spans
    assert proto.trace_id == "5b8efff798038103d269b633813fc60c" and proto.parent_span_id == "eee19b7ec3c1b173"
    assert tempo == proto
    assert proto.scope.attributes == {"my.scope.attribute": "some scope attribute"}
    assert proto.kind is SpanKind.SERVER and proto.service_name == "my.service"


def test_base64_ids_and_enum_names() -> None:
    """Base64 ids load as lowercase hex of the right length; enum names (SPAN_KIND_*, STATUS_CODE_*) as enums."""
    spans = quirk("base64_ids_enum_names.jsonl").spans
    assert [span.trace_id for span in spans] == ["69842a979911036cf3e822086ecaa007"] * 2
    assert [span.span_id for span in spans] == ["0101010101010101", "0202020202020202"]
    assert [(span.kind, span.status_code) for span in spans] == [
        (SpanKind.SERVER, StatusCode.ERROR),
        (SpanKind.INTERNAL, StatusCode.OK),
    ]
    assert spans[0].status_message == "card declined"


def test_snake_case_keys() -> None:
    """Proto field names (resource_spans, trace_id, string_value, int_value...) load like lowerCamelCase."""
    spans = quirk("snake_case_keys.json").spans
    assert {(span.status_code, span.status_message) for span in spans} == {
        (StatusCode.OK, "ok"),
        (StatusCode.ERROR, "db timeout"),
    }
    child = next(span for span in spans if span.parent_span_id)
    assert child.parent_span_id == "eee19b7ec3c1b174" and child.events[0].attributes == {"attempt": 2}
    assert {span.service_name for span in spans} == {"checkout"}


def test_empty_ids_and_empty_scope() -> None:
    """All-empty ids load as all-zero ids and roots, as the Collector reads them; no kind is UNSPECIFIED; the
    dropped counts and the error status are kept; no service.name is unknown_service."""
    spans = quirk("empty_ids_empty_scope.json").spans
    assert {(span.trace_id, span.span_id, span.parent_span_id) for span in spans} == {("0" * 32, "0" * 16, None)}
    assert (spans[0].status_code, spans[0].status_message) == (StatusCode.ERROR, "status-cancelled")
    assert (spans[0].dropped_attributes_count, spans[0].dropped_events_count, spans[1].dropped_links_count) == (1, 1, 3)
    assert spans[0].kind is SpanKind.UNSPECIFIED and spans[0].service_name == "unknown_service"
    assert spans[1].links[0].trace_id == "0" * 32


def test_mixed_signals_in_one_file() -> None:
    """Metrics and logs lines in a traces file are skipped and counted, never errors; flags and roots kept."""
    result = quirk("mixed_signals.jsonl")
    assert (result.lines, result.other_signal_lines, len(result.spans)) == (4, 2, 2)
    assert result.corrupt_lines == [] and result.issues == []
    root, child = result.spans
    assert root.is_root and child.parent_span_id == root.span_id
    assert (root.flags, child.flags) == (256, 768) and root.status_code is StatusCode.ERROR
    assert {span.service_name for span in result.spans} == {"frontend", "cart"}


def test_defaults_written_or_omitted_import_identically() -> None:
    """protojson (defaults left out, int64 as strings) and serde (every default written, int64 as numbers)."""
    omitted = quirk("defaults_omitted.json").spans
    written = quirk("defaults_written.json").spans
    assert written == omitted and omitted[0].events[0].attributes == {"bogons": 100}


def test_one_trace_spread_over_lines_is_reassembled() -> None:
    """Collector-style JSON Lines, one span per line, children first: one trace of four spans in a store."""
    spans = quirk("one_trace_over_lines.jsonl").spans
    store = SpanStore()
    store.add_many(spans)
    trace = get_trace(store, "5b8efff798038103d269b633813fc60c")
    assert [span.name for span in trace] == ["fetch", "db", "auth", "GET /"]  # by start time, as written
    assert sum(span.is_root for span in trace) == 1


def test_a_span_that_is_its_own_parent_is_kept_as_written() -> None:
    """A one-span cycle and its child load as written (the Collector keeps them; the tree shows them apart)."""
    spans = quirk("self_parent.json").spans
    assert [(span.span_id, span.parent_span_id) for span in spans] == [
        ("eee19b7ec3c1b174", "eee19b7ec3c1b174"),
        ("eee19b7ec3c1b175", "eee19b7ec3c1b174"),
    ]


def test_a_link_with_every_scalar_type() -> None:
    """Link attributes of every scalar type, int64 from a string and bytes from base64, keep their types."""
    [span] = quirk("link_every_scalar.json").spans
    assert span.links[0].attributes == {
        "string": "s",
        "int": 9223372036854775807,
        "bool": True,
        "double": 72.5,
        "bytes": b"\x00\x0009",
    }
    assert encode_spans([span])  # and it writes back


@pytest.mark.parametrize(
    ("name", "path", "words"),
    [
        ("invalid_base64_id.json", "spans[0].traceId", "'!!!INVALID_BASE64!!!'"),
        ("invalid_kind.json", "spans[0].kind", "'SPAN_KIND_INVALID_TYPE'"),
        ("invalid_mixed_encoding.json", "spans[0].traceId", "'zzz'"),
    ],
)
def test_an_invalid_span_is_one_issue_naming_where_and_what(name: str, path: str, words: str) -> None:
    """A span with an invalid field is skipped with one issue giving file, line, JSON path and the bad value."""
    result = quirk(name)
    assert result.spans == [] and result.skipped_spans == 1
    [issue] = result.issues
    assert path in str(issue) and words in str(issue) and "expected" in str(issue) and name in str(issue)


def test_json_that_holds_no_traces_is_one_clear_error() -> None:
    """JSON in no known shape: one corrupt 'document', saying what was expected and what the file looks like."""
    result = quirk("not_otlp.json")
    assert result.spans == [] and result.lines == 1
    [error] = result.corrupt_lines
    assert isinstance(error, CorruptLineError)
    assert "expected an OTLP TracesData object with 'resourceSpans'" in str(error)
    assert "'resourceSpans_missing'" in str(error)


def test_zipkin_v2_maps_as_the_collector_maps_it() -> None:
    """Zipkin v2: 64-bit ids padded, microseconds to ns, both halves of a shared span kept, annotations as events,
    the error tag as status ERROR, localEndpoint as the service; a log line must still be OTLP."""
    spans = quirk("zipkin_v2.json").spans
    halves = sorted(span.kind.name for span in spans if span.span_id == "74280ae0c10d8062")
    assert halves == ["CLIENT", "SERVER"]
    server = next(span for span in spans if span.span_id == "74280ae0c10d8062" and span.kind is SpanKind.SERVER)
    assert server.trace_id == "00000000000000001e223ff1f80f1c69" and server.parent_span_id == "bf396325699c84bf"
    assert server.start_time_unix_nano == 1470150004008761000 and server.duration_ns == 93577000
    assert server.attributes["zipkin.shared"] is True and server.service_name == "serviceb"
    assert [event.name for event in server.events] == ["wr"]
    client = next(span for span in spans if span.kind is SpanKind.CLIENT)
    assert client.status_code is StatusCode.ERROR and client.service_name == "servicea"
    with pytest.raises(CorruptLineError, match=re.escape("Zipkin v2")):
        decode_line((QUIRKS / "zipkin_v2.json").read_bytes().replace(b"\n", b""))


def test_jaeger_query_api_maps_as_the_collector_maps_it() -> None:
    """Jaeger JSON: typed tags keep their types, the error tag gives ERROR, logs become events (named by their
    'event' field, else 'log'), the first CHILD_OF is the parent and every other reference a link."""
    spans = quirk("jaeger_query_api.json").spans
    child = next(span for span in spans if span.span_id == "0000000000000004")
    assert child.attributes["temperature"] == 72.5 and child.attributes["blob"] == b"\x00\x0009"
    assert child.attributes["javascript_limit"] == 9223372036854775222 and child.status_code is StatusCode.ERROR
    assert child.parent_span_id == "0000000000000002"
    assert [link.attributes["opentracing.ref_type"] for link in child.links] == ["follows_from"]
    assert [event.name for event in child.events] == ["some-event", "log"]
    assert {span.service_name for span in spans} == {"service-a", "service-b"}
    parent = next(span for span in spans if span.span_id == "0000000000000002")
    assert parent.kind is SpanKind.SERVER and parent.is_root


def test_the_fast_path_agrees_with_the_lenient_path_on_every_quirk() -> None:
    """Where the typed fast path takes a document or line, it returns what the validating path returns."""
    taken = 0
    for path in sorted(QUIRKS.glob("*.json*")):
        data = path.read_bytes()
        for piece in data.splitlines() if path.suffix == ".jsonl" else [data]:
            fast = _fast_spans(piece)
            if fast is None:
                continue
            taken += 1
            assert fast == _decode_document(msgspec.json.decode(piece), path.name, 1).spans, path.name
    assert taken >= 5  # the canonical ones (lowerCamelCase, hex ids, int enums) take it


def test_quirk_spans_round_trip_through_our_own_lines() -> None:
    """Every span the quirk files hold writes as canonical OTLP and reads back equal."""
    for path in sorted(QUIRKS.glob("*.json*")):
        spans = read_file(path).spans
        for line in encode_spans(spans):
            assert json.loads(line)["resourceSpans"]
        again = [span for line in encode_spans(spans) for span in decode_line(line).spans]
        assert again == spans, path.name
