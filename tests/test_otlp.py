"""Tests for spanstore.otlp: canonical encoding, lenient decoding, interop with the official exporter, read_file."""

from __future__ import annotations

import base64
import io
import json
import os
import sys

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, TraceFlags, TraceState
from opentelemetry.trace import SpanKind as SdkSpanKind
from opentelemetry.trace import StatusCode as SdkStatusCode

from spanstore.errors import CorruptLineError, StorageError
from spanstore.model import (
    EMPTY_RESOURCE,
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
)
from spanstore.otlp import DecodedLine, DecodeIssue, ReadResult, decode_line, encode_spans, read_file
from tests.strategies import span_batches, stored_spans

HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "eee19b7ec3c1b173"


# --- helpers ------------------------------------------------------------------------------------------------------


def grouped(spans: list[StoredSpan]) -> list[StoredSpan]:
    """Brute-force model of encode_spans' order: by resource, then scope (by value, first appearance), stable."""
    resources: list[Resource] = []
    for span in spans:
        if span.resource not in resources:
            resources.append(span.resource)
    out: list[StoredSpan] = []
    for resource in resources:
        scopes: list[Scope] = []
        for span in spans:
            if span.resource == resource and span.scope not in scopes:
                scopes.append(span.scope)
        for scope in scopes:
            out.extend(span for span in spans if span.resource == resource and span.scope == scope)
    return out


def decode_all(lines: list[bytes]) -> list[StoredSpan]:
    """Decode every line, asserting that none reports an issue."""
    spans: list[StoredSpan] = []
    for number, line in enumerate(lines, start=1):
        decoded = decode_line(line, line_number=number)
        assert decoded.issues == [], decoded.issues
        assert decoded.skipped_spans == 0
        spans.extend(decoded.spans)
    return spans


def document(*spans: dict, resource: dict | None = None, scope: dict | None = None) -> dict:
    """A TracesData object holding the given span objects under one resource and scope."""
    return {
        "resourceSpans": [
            {"resource": resource or {}, "scopeSpans": [{"scope": scope or {}, "spans": list(spans)}]},
        ]
    }


def span_object(**fields: object) -> dict:
    """A minimal valid protojson span object, with fields overridden or added."""
    base: dict[str, object] = {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "op"}
    base.update(fields)
    return base


def decode_one(span: dict, **kwargs: object) -> StoredSpan:
    """Decode a single span object and return the span, asserting there are no issues."""
    decoded = decode_line(json.dumps(document(span, **kwargs)))  # type: ignore[arg-type]
    assert decoded.issues == [], decoded.issues
    [stored] = decoded.spans
    return stored


def make_span(**fields: object) -> StoredSpan:
    """A StoredSpan with sensible defaults."""
    base: dict[str, object] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "name": "op",
        "start_time_unix_nano": 1_000,
        "end_time_unix_nano": 2_000,
    }
    base.update(fields)
    return StoredSpan(**base)  # type: ignore[arg-type]


@pytest.fixture
def sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A real TracerProvider whose finished spans land in an InMemorySpanExporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "cart", "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def official_line(spans: object) -> str:
    """What the official OTLP JSON file exporter writes for one export call."""
    stream = io.StringIO()
    FileSpanExporter(stream=stream).export(spans)  # type: ignore[arg-type]
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    return text


def record_rich_trace(provider: TracerProvider) -> None:
    """Nested spans with exceptions, error status, events, links and every SDK attribute type, in two scopes."""
    tracer = provider.get_tracer(
        "shop.checkout", "2.1.0", schema_url="https://opentelemetry.io/schemas/1.26.0", attributes={"scope.flag": True}
    )
    db_tracer = provider.get_tracer("shop.db")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    attributes = {
        "str": "value",
        "empty.str": "",
        "unicode": "héllo ☃ 日本",
        "bool": True,
        "false": False,
        "int": 42,
        "negative": -7,
        "big": (1 << 63) - 1,
        "float": 0.25,
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "strs": ("a", "b"),
        "ints": (1, 2, 3),
        "floats": (1.5, -0.0),
        "bools": (True, False),
        "empty.seq": (),
    }
    with tracer.start_as_current_span(
        "checkout", kind=SdkSpanKind.SERVER, attributes=attributes, links=[Link(remote, {"link.kind": "follows"})]
    ) as root:
        root.add_event("cart.loaded", {"items": 3, "ids": ("x", "y")})
        with db_tracer.start_as_current_span("SELECT cart", kind=SdkSpanKind.CLIENT) as query:
            query.set_attribute("db.system", "postgresql")
        try:
            with tracer.start_as_current_span("charge", kind=SdkSpanKind.PRODUCER):
                raise TimeoutError("payment gateway timed out")
        except TimeoutError:
            pass
        root.set_status(Status(SdkStatusCode.ERROR, "checkout failed"))
    with tracer.start_as_current_span("ok", kind=SdkSpanKind.CONSUMER) as ok:
        ok.set_status(Status(SdkStatusCode.OK))
    context = trace_api.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("remote.child", context=context, kind=SdkSpanKind.INTERNAL):
        pass


# --- encoding: round trips --------------------------------------------------------------------------------------


@HYPOTHESIS
@given(span_batches())
def test_round_trip_any_batch(spans: list[StoredSpan]) -> None:
    """Any batch of valid spans decodes back to equal spans, grouped by resource then scope in first-seen order."""
    lines = encode_spans(spans)
    assert decode_all(lines) == grouped(spans)
    assert len(lines) == (1 if spans else 0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(span_batches(max_size=5), st.integers(min_value=200, max_value=4_000))
def test_round_trip_split_lines(spans: list[StoredSpan], max_line_bytes: int) -> None:
    """Lines split at max_line_bytes still decode to every span in order; only a lone span may exceed the limit."""
    lines = encode_spans(spans, max_line_bytes=max_line_bytes)
    assert decode_all(lines) == grouped(spans)
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        if len(line) > max_line_bytes:
            assert len(decode_line(line).spans) == 1


@settings(max_examples=20, deadline=None)
@given(stored_spans())
def test_round_trip_one_span_is_stable(span: StoredSpan) -> None:
    """Encoding a decoded span again gives the same bytes (the canonical form is a fixed point)."""
    [line] = encode_spans([span])
    [again] = encode_spans(decode_line(line).spans)
    assert again == line


def test_encode_nothing() -> None:
    """No spans give no lines."""
    assert encode_spans([]) == []
    assert encode_spans(iter(())) == []


def test_encode_minimal_span_exact_bytes() -> None:
    """A minimal root span is written as protojson: defaults left out, times as strings, status always present."""
    span = make_span(kind=SpanKind.INTERNAL)
    assert encode_spans([span]) == [
        b'{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{"traceId":"'
        + TRACE_ID.encode()
        + b'","spanId":"'
        + SPAN_ID.encode()
        + b'","name":"op","kind":1,"startTimeUnixNano":"1000",'
        b'"endTimeUnixNano":"2000","status":{}}]}]}]}\n'
    ]


def test_encode_every_field() -> None:
    """Every field is written under its protojson name, with ints as strings where OTLP says int64."""
    span = make_span(
        parent_span_id=PARENT_ID,
        kind=SpanKind.CLIENT,
        status_code=StatusCode.ERROR,
        status_message="boom",
        trace_state="k=v",
        flags=257,
        dropped_attributes_count=1,
        dropped_events_count=2,
        dropped_links_count=3,
        attributes=AttributeMap.of({"n": 1}),
        events=(
            SpanEvent(
                name="e", time_unix_nano=5, attributes=AttributeMap.of({"b": b"\x00\xff"}), dropped_attributes_count=4
            ),
        ),
        links=(
            SpanLink(trace_id=TRACE_ID, span_id=PARENT_ID, trace_state="a=b", flags=256, dropped_attributes_count=6),
        ),
        resource=Resource(
            attributes=AttributeMap.of({"service.name": "cart"}), schema_url="https://r", dropped_attributes_count=7
        ),
        scope=Scope(
            name="lib",
            version="1.0",
            attributes=AttributeMap.of({"x": ()}),
            schema_url="https://s",
            dropped_attributes_count=8,
        ),
    )
    [line] = encode_spans([span])
    assert json.loads(line) == {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}],
                    "droppedAttributesCount": 7,
                },
                "scopeSpans": [
                    {
                        "scope": {
                            "name": "lib",
                            "version": "1.0",
                            "attributes": [{"key": "x", "value": {"arrayValue": {}}}],
                            "droppedAttributesCount": 8,
                        },
                        "spans": [
                            {
                                "traceId": TRACE_ID,
                                "spanId": SPAN_ID,
                                "traceState": "k=v",
                                "parentSpanId": PARENT_ID,
                                "flags": 257,
                                "name": "op",
                                "kind": 3,
                                "startTimeUnixNano": "1000",
                                "endTimeUnixNano": "2000",
                                "attributes": [{"key": "n", "value": {"intValue": "1"}}],
                                "droppedAttributesCount": 1,
                                "events": [
                                    {
                                        "timeUnixNano": "5",
                                        "name": "e",
                                        "droppedAttributesCount": 4,
                                        "attributes": [{"key": "b", "value": {"bytesValue": "AP8="}}],
                                    }
                                ],
                                "droppedEventsCount": 2,
                                "links": [
                                    {
                                        "traceId": TRACE_ID,
                                        "spanId": PARENT_ID,
                                        "traceState": "a=b",
                                        "flags": 256,
                                        "droppedAttributesCount": 6,
                                    }
                                ],
                                "droppedLinksCount": 3,
                                "status": {"message": "boom", "code": 2},
                            }
                        ],
                        "schemaUrl": "https://s",
                    }
                ],
                "schemaUrl": "https://r",
            }
        ]
    }


def test_encode_attribute_value_forms() -> None:
    """Special floats are strings, bytes base64, empty arrays/kvlists empty objects, None an empty AnyValue."""
    values = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "bytes": b"hi",
        "empty.bytes": b"",
        "none": None,
        "empty.tuple": (),
        "empty.map": AttributeMap(),
        "nested": (1, ("a", None)),
        "map": AttributeMap.of({"k": 1.5, "": "no key"}),
        "": "empty key",
    }
    [line] = encode_spans([make_span(attributes=AttributeMap.of(values))])
    attributes = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    assert attributes == [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "inf", "value": {"doubleValue": "Infinity"}},
        {"key": "ninf", "value": {"doubleValue": "-Infinity"}},
        {"key": "bytes", "value": {"bytesValue": "aGk="}},
        {"key": "empty.bytes", "value": {"bytesValue": ""}},
        {"key": "none", "value": {}},
        {"key": "empty.tuple", "value": {"arrayValue": {}}},
        {"key": "empty.map", "value": {"kvlistValue": {}}},
        {
            "key": "nested",
            "value": {
                "arrayValue": {"values": [{"intValue": "1"}, {"arrayValue": {"values": [{"stringValue": "a"}, {}]}}]}
            },
        },
        {
            "key": "map",
            "value": {
                "kvlistValue": {
                    "values": [{"key": "k", "value": {"doubleValue": 1.5}}, {"value": {"stringValue": "no key"}}]
                }
            },
        },
        {"value": {"stringValue": "empty key"}},
    ]


def test_encode_int_outside_int64_as_string() -> None:
    """An int OTLP cannot hold (outside int64) is written as a stringValue of its digits, not a rejected intValue."""
    span = make_span(attributes=AttributeMap.of({"huge": 1 << 64, "tiny": -(1 << 63) - 1, "max": (1 << 63) - 1}))
    [decoded] = decode_line(encode_spans([span])[0]).spans
    assert decoded.attributes == {"huge": str(1 << 64), "tiny": str(-(1 << 63) - 1), "max": (1 << 63) - 1}


def test_encode_non_attribute_types_kept_as_values() -> None:
    """Near-miss types (IntEnum, str subclass, list, dict) encode as their OTLP type; others as their str()."""

    class Name(str):
        pass

    values = {"enum": SpanKind.SERVER, "sub": Name("x"), "list": [1, 2], "dict": {"a": 1}, "obj": complex(1, 2)}
    span = make_span(attributes=AttributeMap(tuple(values), tuple(values.values())))
    [decoded] = decode_line(encode_spans([span])[0]).spans
    assert decoded.attributes == {
        "enum": 2,
        "sub": "x",
        "list": (1, 2),
        "dict": AttributeMap.of({"a": 1}),
        "obj": "(1+2j)",
    }


def test_encode_lone_surrogate_replaced() -> None:
    """A string that cannot be UTF-8 (a lone surrogate) is written with U+FFFD instead of failing the batch."""
    span = make_span(name="bad\ud800name", attributes=AttributeMap.of({"k": "x\udfffy"}))
    [decoded] = decode_line(encode_spans([span])[0]).spans
    assert decoded.name == "bad\ufffdname"
    assert decoded.attributes["k"] == "x\ufffdy"


def test_encode_groups_by_value_in_first_appearance_order() -> None:
    """Equal resources (distinct objects) share one envelope; groups follow first appearance, spans keep order."""
    cart = Resource(attributes=AttributeMap.of({"service.name": "cart"}))
    cart_copy = Resource(attributes=AttributeMap.of({"service.name": "cart"}))
    shop = Resource(attributes=AttributeMap.of({"service.name": "shop"}))
    lib_a, lib_b = Scope(name="a"), Scope(name="b")
    spans = [
        make_span(name="1", resource=shop, scope=lib_b),
        make_span(name="2", resource=cart, scope=lib_a),
        make_span(name="3", resource=shop, scope=lib_a),
        make_span(name="4", resource=cart_copy, scope=lib_a),
        make_span(name="5", resource=shop, scope=lib_b),
    ]
    [line] = encode_spans(spans)
    parsed = json.loads(line)["resourceSpans"]
    assert [[[s["name"] for s in group["spans"]] for group in rs["scopeSpans"]] for rs in parsed] == [
        [["1", "5"], ["3"]],
        [["2", "4"]],
    ]


def test_encode_splits_at_default_limit() -> None:
    """A batch larger than 1 MiB becomes several lines, each at most 1 MiB, repeating the envelopes."""
    resource = Resource(attributes=AttributeMap.of({"service.name": "cart"}))
    spans = [
        make_span(name=f"s{i}", resource=resource, attributes=AttributeMap.of({"blob": "x" * 5_000}))
        for i in range(500)
    ]
    lines = encode_spans(spans)
    assert len(lines) == 3
    assert all(len(line) <= 1 << 20 for line in lines)
    assert all(b'"service.name"' in line for line in lines)
    assert decode_all(lines) == spans


def test_encode_oversized_span_alone_and_whole() -> None:
    """A span larger than the limit is written whole, alone on its line; its neighbours go on other lines."""
    small = [make_span(name=f"small{i}") for i in range(3)]
    big = make_span(name="big", attributes=AttributeMap.of({"blob": "y" * 10_000}))
    lines = encode_spans([small[0], big, small[1], small[2]], max_line_bytes=2_000)
    assert [[s.name for s in decode_line(line).spans] for line in lines] == [["small0"], ["big"], ["small1", "small2"]]
    assert len(lines[1]) > 2_000 and all(len(line) <= 2_000 for line in (lines[0], lines[2]))


def test_encode_exact_limit_is_allowed() -> None:
    """A line of exactly max_line_bytes (newline included) is not split."""
    spans = [make_span(name="a"), make_span(name="b")]
    [line] = encode_spans(spans)
    assert encode_spans(spans, max_line_bytes=len(line)) == [line]
    assert len(encode_spans(spans, max_line_bytes=len(line) - 1)) == 2


# --- interop with the official exporter and a real TracerProvider ------------------------------------------------


def test_official_line_decodes_to_from_readable_span(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Spans written by the official FileSpanExporter decode into exactly what from_readable_span makes of them."""
    provider, exporter = sdk
    record_rich_trace(provider)
    spans = exporter.get_finished_spans()
    decoded = decode_line(official_line(spans))
    assert decoded.issues == []
    assert decoded.spans == grouped([StoredSpan.from_readable_span(span) for span in spans])


def test_our_line_equals_official_line(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Our line for the same spans parses into the very object the official exporter wrote (key order aside)."""
    provider, exporter = sdk
    record_rich_trace(provider)
    spans = exporter.get_finished_spans()
    [ours] = encode_spans([StoredSpan.from_readable_span(span) for span in spans])
    assert json.loads(ours) == json.loads(official_line(spans))


def test_two_resources_in_one_batch(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Spans of two providers (two resources) exported together match the official grouping and decode back."""
    provider, exporter = sdk
    other = TracerProvider(resource=SdkResource.create({"service.name": "payments"}))
    other.add_span_processor(SimpleSpanProcessor(exporter))
    for tracer in (provider.get_tracer("a"), other.get_tracer("b"), provider.get_tracer("c"), other.get_tracer("b")):
        with tracer.start_as_current_span("work"):
            pass
    spans = exporter.get_finished_spans()
    stored = [StoredSpan.from_readable_span(span) for span in spans]
    official = official_line(spans)
    [ours] = encode_spans(stored)
    assert json.loads(ours) == json.loads(official)
    assert decode_line(official).spans == grouped(stored)
    assert len(json.loads(ours)["resourceSpans"]) == 2


def test_span_limits_dropped_counts_interop(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Dropped attribute, event and link counts survive both ways and match the official encoding."""
    _, exporter = sdk
    provider = TracerProvider(
        span_limits=SpanLimits(
            max_span_attributes=1, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(1))
    links = [Link(context, {"a": 1, "b": 2}), Link(context)]
    with provider.get_tracer("t").start_as_current_span("s", attributes={"a": 1, "b": 2}, links=links) as span:
        span.add_event("e1", {"a": 1, "b": 2})
        span.add_event("e2")
    spans = exporter.get_finished_spans()
    [stored] = [StoredSpan.from_readable_span(s) for s in spans]
    assert (stored.dropped_attributes_count, stored.dropped_events_count, stored.dropped_links_count) == (1, 1, 1)
    assert decode_line(official_line(spans)).spans == [stored]
    assert json.loads(encode_spans([stored])[0]) == json.loads(official_line(spans))


def test_link_trace_state_written_unlike_official(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """A link's traceState is kept (the official exporter drops it): the only difference from its output."""
    provider, exporter = sdk
    context = SpanContext(0x1, 0x2, is_remote=True, trace_state=TraceState([("vendor", "v1")]))
    with provider.get_tracer("t").start_as_current_span("s", links=[Link(context)]):
        pass
    spans = exporter.get_finished_spans()
    [stored] = [StoredSpan.from_readable_span(s) for s in spans]
    ours = json.loads(encode_spans([stored])[0])
    link = ours["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"][0]
    assert link.pop("traceState") == "vendor=v1"
    assert ours == json.loads(official_line(spans))
    assert decode_line(encode_spans([stored])[0]).spans == [stored]


# --- decoding: leniency ------------------------------------------------------------------------------------------


def test_decode_snake_case_same_as_camel_case() -> None:
    """Proto field names (snake_case) decode exactly as lowerCamelCase does."""
    camel = span_object(
        parentSpanId=PARENT_ID,
        startTimeUnixNano="5",
        endTimeUnixNano="9",
        traceState="a=b",
        droppedAttributesCount=1,
        attributes=[{"key": "k", "value": {"intValue": "3"}}],
        events=[{"timeUnixNano": "7", "name": "e", "droppedAttributesCount": 2}],
        links=[{"traceId": TRACE_ID, "spanId": PARENT_ID, "traceState": "x=y"}],
    )
    snake = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "name": "op",
        "parent_span_id": PARENT_ID,
        "start_time_unix_nano": "5",
        "end_time_unix_nano": "9",
        "trace_state": "a=b",
        "dropped_attributes_count": 1,
        "attributes": [{"key": "k", "value": {"int_value": "3"}}],
        "events": [{"time_unix_nano": "7", "name": "e", "dropped_attributes_count": 2}],
        "links": [{"trace_id": TRACE_ID, "span_id": PARENT_ID, "trace_state": "x=y"}],
    }
    snake_doc = {
        "resource_spans": [
            {
                "resource": {"attributes": []},
                "schema_url": "u",
                "scope_spans": [{"scope": {"name": "s"}, "spans": [snake]}],
            }
        ]
    }
    camel_doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "schemaUrl": "u",
                "scopeSpans": [{"scope": {"name": "s"}, "spans": [camel]}],
            }
        ]
    }
    assert decode_line(json.dumps(snake_doc)).spans == decode_line(json.dumps(camel_doc)).spans
    assert decode_line(json.dumps(camel_doc)).spans[0].parent_span_id == PARENT_ID


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        (TRACE_ID.upper(), SPAN_ID.upper()),
        (base64.b64encode(bytes.fromhex(TRACE_ID)).decode(), base64.b64encode(bytes.fromhex(SPAN_ID)).decode()),
        (
            base64.b64encode(bytes.fromhex(TRACE_ID)).decode().rstrip("="),
            base64.b64encode(bytes.fromhex(SPAN_ID)).decode().rstrip("="),
        ),
        (
            base64.urlsafe_b64encode(bytes.fromhex(TRACE_ID)).decode(),
            base64.urlsafe_b64encode(bytes.fromhex(SPAN_ID)).decode(),
        ),
    ],
    ids=["uppercase-hex", "base64", "base64-unpadded", "base64-urlsafe"],
)
def test_decode_id_forms(trace_id: str, span_id: str) -> None:
    """Ids in UPPERCASE hex or base64 (standard, unpadded or URL-safe) decode to interned lowercase hex."""
    span = decode_one(span_object(traceId=trace_id, spanId=span_id))
    assert (span.trace_id, span.span_id) == (TRACE_ID, SPAN_ID)
    assert span.trace_id is sys.intern(TRACE_ID)


def test_decode_empty_ids_are_all_zero() -> None:
    """Empty id strings are the all-zero ids (as the Collector reads them); an empty parentSpanId means a root."""
    span = decode_one(span_object(traceId="", spanId="", parentSpanId="", links=[{"traceId": "", "spanId": ""}]))
    assert (span.trace_id, span.span_id, span.parent_span_id) == ("0" * 32, "0" * 16, None)
    assert (span.links[0].trace_id, span.links[0].span_id) == ("0" * 32, "0" * 16)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (2, SpanKind.SERVER),
        ("SPAN_KIND_CLIENT", SpanKind.CLIENT),
        ("PRODUCER", SpanKind.PRODUCER),
        ("span_kind_consumer", SpanKind.CONSUMER),
        ("3", SpanKind.CLIENT),
        (None, SpanKind.UNSPECIFIED),
    ],
)
def test_decode_kind_forms(kind: object, expected: SpanKind) -> None:
    """kind as an int, a full or short enum name (any case), or absent (UNSPECIFIED, the protobuf default)."""
    fields = {} if kind is None else {"kind": kind}
    assert decode_one(span_object(**fields)).kind is expected


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (None, StatusCode.UNSET, ""),
        ({}, StatusCode.UNSET, ""),
        ({"code": 2, "message": "m"}, StatusCode.ERROR, "m"),
        ({"code": "STATUS_CODE_OK"}, StatusCode.OK, ""),
        ({"code": "ERROR"}, StatusCode.ERROR, ""),
        ({"message": "", "code": 0}, StatusCode.UNSET, ""),
    ],
)
def test_decode_status_forms(status: object, code: StatusCode, message: str) -> None:
    """status missing, {}, with int or named codes, with or without a message."""
    fields = {} if status is None else {"status": status}
    span = decode_one(span_object(**fields))
    assert (span.status_code, span.status_message) == (code, message)


def test_decode_numbers_for_int64_and_unknown_fields() -> None:
    """int64 fields as JSON numbers decode like decimal strings; unknown fields are ignored."""
    span = decode_one(
        span_object(
            startTimeUnixNano=1_544_712_660_000_000_000,
            endTimeUnixNano=1.5e18,
            futureField={"x": 1},
            attributes=[
                {"key": "n", "value": {"intValue": -5}},
                {"key": "d", "value": {"doubleValue": 2}},
                {"key": "s", "value": {"intValue": "-12"}},
            ],
        ),
        resource={"attributes": [], "entityRefs": []},
    )
    assert span.start_time_unix_nano == 1_544_712_660_000_000_000
    assert span.end_time_unix_nano == 1_500_000_000_000_000_000
    assert span.attributes == {"n": -5, "d": 2.0, "s": -12}


def test_decode_nested_values() -> None:
    """kvlistValue becomes an AttributeMap, arrayValue a tuple, bytesValue bytes, {} None, special floats floats."""
    value = {
        "kvlistValue": {
            "values": [
                {"key": "arr", "value": {"arrayValue": {"values": [{"boolValue": True}, {}, {"bytesValue": "AP8="}]}}},
                {"key": "nan", "value": {"doubleValue": "NaN"}},
                {"key": "inf", "value": {"doubleValue": "-Infinity"}},
                {"key": "empty", "value": {"arrayValue": {}}},
                {"key": "nokv", "value": {"kvlistValue": {}}},
            ]
        }
    }
    span = decode_one(span_object(attributes=[{"key": "m", "value": value}, {"key": "novalue"}]))
    nested = span.attributes["m"]
    assert isinstance(nested, AttributeMap)
    assert nested == {
        "arr": (True, None, b"\x00\xff"),
        "nan": float("nan"),
        "inf": float("-inf"),
        "empty": (),
        "nokv": AttributeMap(),
    }
    assert span.attributes["novalue"] is None


def test_decode_instrumentation_library_spans() -> None:
    """Pre-0.15 OTLP (instrumentationLibrarySpans / instrumentationLibrary) reads as scopeSpans / scope."""
    doc = {
        "resourceSpans": [
            {
                "instrumentationLibrarySpans": [
                    {"instrumentationLibrary": {"name": "old", "version": "0.1"}, "spans": [span_object()]}
                ]
            }
        ]
    }
    [span] = decode_line(json.dumps(doc)).spans
    assert (span.scope.name, span.scope.version) == ("old", "0.1")


def test_decode_tempo_batches() -> None:
    """Tempo's {"batches": [...]} is a list of ResourceSpans."""
    doc = {
        "batches": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "t"}}]},
                "scopeSpans": [{"spans": [span_object()]}],
            }
        ]
    }
    [span] = decode_line(json.dumps(doc)).spans
    assert span.service_name == "t"


def test_decode_shares_resources_scopes_and_strings() -> None:
    """Equal resources and scopes on different lines decode to one shared object; ids and keys are interned."""
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "shared-svc"}}]}
    scope = {"name": "shared-lib"}
    first = decode_line(json.dumps(document(span_object(), resource=resource, scope=scope)), line_number=1)
    second = decode_line(
        json.dumps(document(span_object(spanId=PARENT_ID), resource=resource, scope=scope)), line_number=2
    )
    a, b = first.spans[0], second.spans[0]
    assert a.resource is b.resource and a.scope is b.scope
    assert a.trace_id is b.trace_id
    keyed = [{"key": "http.route", "value": {"stringValue": "/x"}}, {"key": "n", "value": {"intValue": "1"}}]
    c, d = decode_one(span_object(attributes=keyed)), decode_one(span_object(attributes=keyed, name="other"))
    assert c.attributes.keys_ is d.attributes.keys_  # one key tuple per key set (model.share_keys)
    assert c.attributes["http.route"] is d.attributes["http.route"]  # short string values are interned
    assert decode_one(span_object()).resource is EMPTY_RESOURCE  # no resource: the model's shared empty one


def test_decode_accepts_str_and_bytes() -> None:
    """decode_line takes str or bytes alike."""
    text = json.dumps(document(span_object()))
    assert decode_line(text).spans == decode_line(text.encode()).spans


# --- decoding: errors and issues ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"not json", "invalid JSON"),
        (b'{"resourceSpans": [', "invalid JSON"),
        (b"[]", "got a JSON array"),
        (b'[{"traceId": "a", "id": "b"}]', "Zipkin v2"),
        (b'{"traceId": "a", "id": "b", "localEndpoint": {}}', "Zipkin v2 span"),
        (b'{"traceId": "a", "id": "b"}', "Zipkin v2 span"),
        (b'{"traceId": "a", "localEndpoint": {}}', "Zipkin v2 span"),
        (b'{"data": [{"traceID": "x", "spans": []}]}', "Jaeger"),
        (b'{"traceID": "x", "spans": [], "processes": {}}', "Jaeger"),
        (b"{}", "got an empty object"),
        (b"42", "got number 42"),
        (b'"text"', "got string"),
        (b'{"resourceSpans": {}}', "'resourceSpans' to be an array"),
    ],
)
def test_decode_not_traces_data_raises(line: bytes, expected: str) -> None:
    """A line that is not JSON or not a TracesData object raises CorruptLineError saying what it got, and where."""
    with pytest.raises(CorruptLineError) as raised:
        decode_line(line, source="spans.jsonl", line_number=7)
    assert expected in str(raised.value)
    assert "expected" in str(raised.value)
    assert (raised.value.source, raised.value.line_number) == ("spans.jsonl", 7)


@pytest.mark.parametrize("key", ["resourceMetrics", "resourceLogs", "resourceProfiles", "resource_metrics"])
def test_decode_other_signal(key: str) -> None:
    """A metrics, logs or profiles line yields no spans and names its signal; it is not an error."""
    decoded = decode_line(json.dumps({key: [{"resource": {}}]}))
    assert decoded == DecodedLine(spans=[], other_signal=key if "_" not in key else "resourceMetrics")


@pytest.mark.parametrize(
    ("override", "where", "message"),
    [
        ({"traceId": "zzz"}, "traceId", "got 'zzz'"),
        ({"traceId": "!!!INVALID_BASE64!!!"}, "traceId", "32 hex characters"),
        ({"spanId": "INVALID=="}, "spanId", "16 hex characters"),
        ({"spanId": "000000000000001"}, "spanId", "got '000000000000001'"),
        ({"traceId": 5}, "traceId", "got number 5"),
        ({"traceId": None}, "traceId", "missing"),
        ({"parentSpanId": "1234"}, "parentSpanId", "16 hex"),
        ({"kind": "SPAN_KIND_INVALID_TYPE"}, "kind", "SPAN_KIND_SERVER"),
        ({"kind": 9}, "kind", "got number 9"),
        ({"startTimeUnixNano": "1" * 70}, "startTimeUnixNano", "got string"),
        ({"endTimeUnixNano": -1}, "endTimeUnixNano", "between 0 and"),
        ({"endTimeUnixNano": "soon"}, "endTimeUnixNano", "decimal string"),
        ({"status": {"code": "NOT_A_STATUS"}}, "status.code", "STATUS_CODE_ERROR"),
        ({"status": "ok"}, "status", "Status object"),
        ({"name": 3}, "name", "expected a string"),
        ({"flags": 1 << 40}, "flags", "between 0 and 4294967295"),
        ({"droppedEventsCount": "x"}, "droppedEventsCount", "non-negative integer"),
        ({"attributes": {"k": "v"}}, "attributes", "array of KeyValue"),
        (
            {"attributes": [{"key": "a", "value": {"stringValue": "ok"}}, {"key": "b", "value": {"intValue": "x"}}]},
            "attributes[1].value.intValue",
            "signed 64-bit",
        ),
        (
            {"attributes": [{"key": "a", "value": {"intValue": str(1 << 63)}}]},
            "attributes[0].value.intValue",
            "signed 64-bit",
        ),
        (
            {"attributes": [{"key": "a", "value": {"stringValueStrindex": 3}}]},
            "attributes[0].value.stringValueStrindex",
            "stringValue",
        ),
        (
            {"attributes": [{"key": "a", "value": {"stringValue": "x", "intValue": "1"}}]},
            "attributes[0].value",
            "one AnyValue field",
        ),
        (
            {"attributes": [{"key": "a", "value": {"arrayValue": {"values": [{}, {"bytesValue": "!"}]}}}]},
            "attributes[0].value.arrayValue.values[1].bytesValue",
            "base64",
        ),
        ({"attributes": [{"key": 1, "value": {}}]}, "attributes[0].key", "expected a string"),
        ({"attributes": ["k"]}, "attributes[0]", "KeyValue object"),
        ({"events": [{"name": "e", "timeUnixNano": "1" * 70}]}, "events[0].timeUnixNano", "Unix nanoseconds"),
        ({"events": [1]}, "events[0]", "Event object"),
        ({"events": {}}, "events", "expected an array"),
        ({"links": [{}]}, "links[0].traceId", "missing"),
        ({"links": [{"traceId": TRACE_ID, "spanId": "1234"}]}, "links[0].spanId", "16 hex"),
        ({"links": [{"traceId": TRACE_ID, "spanId": SPAN_ID, "flags": "x"}]}, "links[0].flags", "32-bit span flags"),
    ],
)
def test_decode_invalid_span_is_an_issue(override: dict, where: str, message: str) -> None:
    """An invalid span is skipped with an issue naming its JSON path and what was expected; its neighbours load."""
    bad = span_object(spanId=PARENT_ID)
    bad.update(override)
    if override.get("traceId", "") is None:
        del bad["traceId"]
    decoded = decode_line(
        json.dumps(document(span_object(name="before"), bad, span_object(name="after"))),
        source="in.json",
        line_number=4,
    )
    assert [span.name for span in decoded.spans] == ["before", "after"]
    assert decoded.skipped_spans == 1
    [issue] = decoded.issues
    assert issue.where == f"resourceSpans[0].scopeSpans[0].spans[1].{where}"
    assert message in issue.message
    assert "expected" in issue.message or "cannot" in issue.message
    assert (issue.source, issue.line_number) == ("in.json", 4)


def test_decode_issue_str() -> None:
    """DecodeIssue prints as '<source> line <n>, <where>: <message>' and is an immutable value."""
    issue = DecodeIssue("a.jsonl", 3, "resourceSpans[0].scopeSpans[0].spans[2].kind", "expected X, got Y")
    assert str(issue) == "a.jsonl line 3, resourceSpans[0].scopeSpans[0].spans[2].kind: expected X, got Y"
    with pytest.raises(AttributeError):
        issue.where = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(issue), type=DecodeIssue) == issue


def test_decode_invalid_resource_skips_its_spans() -> None:
    """A bad resource skips its spans with one issue counting them; other resources still load."""
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "n", "value": {"intValue": "x"}}]},
                "scopeSpans": [{"spans": [span_object(), span_object(spanId=PARENT_ID)]}],
            },
            {"resource": {}, "scopeSpans": [{"scope": {"name": 5}, "spans": [span_object()]}]},
            {"resource": {}, "scopeSpans": [{"spans": [span_object(name="good")]}]},
        ]
    }
    decoded = decode_line(json.dumps(doc))
    assert [span.name for span in decoded.spans] == ["good"]
    assert decoded.skipped_spans == 3
    assert [issue.where for issue in decoded.issues] == [
        "resourceSpans[0].resource.attributes[0].value.intValue",
        "resourceSpans[1].scopeSpans[0].scope.name",
    ]
    assert "(2 spans skipped)" in decoded.issues[0].message


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"resourceSpans": [1]}, "resourceSpans[0]"),
        ({"resourceSpans": [{}]}, "resourceSpans[0]"),
        ({"resourceSpans": [{"scopeSpans": {}}]}, "resourceSpans[0]"),
        ({"resourceSpans": [{"scopeSpans": [1]}]}, "resourceSpans[0].scopeSpans[0]"),
        ({"resourceSpans": [{"scopeSpans": [{}]}]}, "resourceSpans[0].scopeSpans[0]"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]}, "resourceSpans[0].scopeSpans[0]"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}, "resourceSpans[0].scopeSpans[0].spans[0]"),
    ],
)
def test_decode_malformed_structure_is_an_issue(doc: dict, where: str) -> None:
    """Missing or mistyped resourceSpans entries, scopeSpans or spans are reported where they are."""
    decoded = decode_line(json.dumps(doc))
    assert decoded.spans == []
    [issue] = decoded.issues
    assert issue.where == where
    assert "expected" in issue.message


def test_decode_empty_traces_data() -> None:
    """An empty resourceSpans array is a valid line with no spans and no issues."""
    assert decode_line(b'{"resourceSpans":[]}') == DecodedLine(spans=[])


# --- read_file ---------------------------------------------------------------------------------------------------


def test_read_file_whole_document(tmp_path: object) -> None:
    """A pretty-printed document (any extension) is read as one document."""
    path = os.path.join(str(tmp_path), "trace.txt")
    spans = [make_span(name="a"), make_span(name="b", span_id=PARENT_ID)]
    with open(path, "w", encoding="utf-8") as file:
        json.dump(json.loads(encode_spans(spans)[0]), file, indent=2)
    result = read_file(path)
    assert result == ReadResult(spans=spans, lines=1)


def test_read_file_json_lines_with_damage(tmp_path: object) -> None:
    """JSON Lines: blank lines skipped; corrupt and torn lines counted with their line numbers; the rest load."""
    path = os.path.join(str(tmp_path), "spans.json")
    good = [make_span(name=f"s{i}") for i in range(3)]
    lines = [encode_spans([span])[0] for span in good]
    metrics = b'{"resourceMetrics":[]}\n'
    bad_span = json.dumps(document(span_object(kind="NOPE"))).encode() + b"\n"
    content = lines[0] + b"\n  \n" + b"garbage\n" + lines[1] + metrics + bad_span + b"[1, 2]\n" + lines[2][:-30]
    with open(path, "wb") as file:
        file.write(lines[2] + content)
    result = read_file(path)
    assert [span.name for span in result.spans] == ["s2", "s0", "s1"]
    assert result.lines == 8
    assert [error.line_number for error in result.corrupt_lines] == [5, 9, 10]
    assert all(error.source == path for error in result.corrupt_lines)
    assert result.other_signal_lines == 1
    assert result.skipped_spans == 1
    assert [issue.line_number for issue in result.issues] == [8]


def test_read_file_bom_and_crlf(tmp_path: object) -> None:
    """A UTF-8 byte order mark and CRLF line ends are tolerated."""
    path = os.path.join(str(tmp_path), "spans.jsonl")
    lines = [encode_spans([make_span(name=n)])[0].rstrip(b"\n") for n in "ab"]
    with open(path, "wb") as file:
        file.write(b"\xef\xbb\xbf" + lines[0] + b"\r\n" + lines[1] + b"\r\n")
    assert [span.name for span in read_file(path).spans] == ["a", "b"]


def test_read_file_pathlike_and_io_errors(tmp_path: object) -> None:
    """A missing file or a directory raises StorageError; a PathLike works like a str."""
    import pathlib

    directory = pathlib.Path(str(tmp_path))
    with pytest.raises(StorageError, match="cannot read"):
        read_file(directory / "missing.jsonl")
    with pytest.raises(StorageError):
        read_file(directory)
    (directory / "empty.jsonl").write_bytes(b"")
    assert read_file(directory / "empty.jsonl") == ReadResult(spans=[])


def test_decode_lone_surrogate_escape_from_stdlib_json(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """A line the official exporter wrote for a string with a lone surrogate (escaped "\\ud800") still decodes."""
    provider, exporter = sdk
    with provider.get_tracer("t").start_as_current_span("s", attributes={"k": "x\ud800y"}):
        pass
    spans = exporter.get_finished_spans()
    [decoded] = decode_line(official_line(spans)).spans
    assert decoded == StoredSpan.from_readable_span(spans[0])
    assert decode_line(encode_spans([decoded])[0]).spans[0].attributes["k"] == "x\ufffdy"


def test_decode_too_deep_nesting_is_an_issue() -> None:
    """Values nested deeper than Python can recurse skip that span with an issue (or the line), never crash."""
    from spanstore.otlp import _decode_document

    deep: dict = {}
    for _ in range(5_000):
        deep = {"arrayValue": {"values": [deep]}}
    doc = document(span_object(attributes=[{"key": "k", "value": deep}]), span_object(name="fine"))
    decoded = _decode_document(doc, "<memory>", 1)  # already parsed: the converter's own recursion is what fails
    assert [span.name for span in decoded.spans] == ["fine"]
    [issue] = decoded.issues
    assert issue.where == "resourceSpans[0].scopeSpans[0].spans[0]" and "nested" in issue.message
    with pytest.raises(CorruptLineError, match="nested"):
        decode_line(b"[" * 100_000 + b"]" * 100_000)


def test_decode_null_resource_spans_is_empty() -> None:
    """ "resourceSpans": null is protojson's default (empty), not an error."""
    assert decode_line(b'{"resourceSpans": null}') == DecodedLine(spans=[])


def test_encode_unhashable_resource_attribute() -> None:
    """A resource holding a list (unhashable, built by hand) is still encoded, grouped by identity."""
    resource = Resource(attributes=AttributeMap.from_pairs(["hosts"], [["a", "b"]]))
    [line] = encode_spans([make_span(resource=resource), make_span(name="two", resource=resource)])
    decoded = decode_line(line).spans
    assert [span.name for span in decoded] == ["op", "two"]
    assert decoded[0].resource.attributes["hosts"] == ("a", "b")


# --- the fast path and the lenient path agree --------------------------------------------------------------------


def lenient(line: bytes | str) -> DecodedLine:
    """What the lenient path alone makes of a line (decode_line tries the typed fast path first)."""
    from spanstore.otlp import _decode_document

    return _decode_document(msgspec.json.decode(line), "<memory>", 1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(span_batches())
def test_fast_path_equals_lenient_path(spans: list[StoredSpan]) -> None:
    """On canonical lines the typed fast path is taken and gives exactly what the lenient path gives."""
    from spanstore.otlp import _fast_spans

    for line in encode_spans(spans):
        fast = _fast_spans(line)
        assert fast is not None
        assert fast == lenient(line).spans
        assert all(
            a.resource is b.resource and a.scope is b.scope for a, b in zip(fast, lenient(line).spans, strict=True)
        )


@pytest.mark.parametrize("zero", [0, "0"])
def test_lenient_path_reads_enum_zero(zero: object) -> None:
    """The lenient path (any line the fast path hands over) reads kind 0 and status code 0 as the defaults."""
    line = json.dumps(document(span_object(kind=zero, status={"code": zero}, unknown=1)))  # `unknown`: lenient
    (span,) = lenient(line).spans
    assert (span.kind, span.status_code) == (SpanKind.UNSPECIFIED, StatusCode.UNSET)


@pytest.mark.parametrize(
    "span",
    [
        span_object(traceId=TRACE_ID.upper()),
        span_object(traceId=""),
        span_object(kind=7),
        span_object(kind="SERVER"),
        span_object(startTimeUnixNano=5),
        span_object(status={"code": 3}),
        span_object(flags=-1),
        span_object(unknown=1),
        span_object(attributes=[{"key": "a", "value": {"stringValue": "x", "intValue": "1"}}]),
        span_object(attributes=[{"key": "a", "value": {"intValue": "x"}}]),
        span_object(attributes=[{"key": "a", "value": {"intValue": str(1 << 63)}}]),
        span_object(attributes=[{"key": "a", "value": {"doubleValue": "1.5"}}]),
        span_object(attributes=[{"key": "a", "value": {"bytesValue": "AP8"}}]),
        span_object(attributes=[{"key": "a", "value": {"arrayValue": {"values": [{"intValue": 5}]}}}]),
        span_object(events=[{"timeUnixNano": "1" * 70}]),
        span_object(links=[{"traceId": TRACE_ID}]),
        {"trace_id": TRACE_ID, "span_id": SPAN_ID},
    ],
)
def test_fast_path_falls_back_exactly(span: dict) -> None:
    """Whatever the fast path cannot decode exactly, it hands to the lenient path: decode_line gives its result."""
    from spanstore.otlp import _fast_spans

    line = json.dumps(document(span_object(name="neighbour", spanId=PARENT_ID), span))
    assert _fast_spans(line) is None
    assert decode_line(line) == lenient(line)


@pytest.mark.parametrize(
    "value",
    [
        {"stringValue": "x"},
        {"intValue": "-12"},
        {"intValue": "+7"},
        {"boolValue": False},
        {"doubleValue": 2},
        {"doubleValue": "NaN"},
        {"doubleValue": "-Infinity"},
        {"bytesValue": "AP8="},
        {},
        None,
        {"stringValue": None},
        {"arrayValue": {}},
        {"arrayValue": {"values": [{"stringValue": "a"}, {}]}},
        {"kvlistValue": {"values": [{"key": "k"}, {"value": {"intValue": "1"}}]}},
        {"kvlistValue": {}},
    ],
)
def test_fast_path_attribute_values_match_lenient(value: object) -> None:
    """Every AnyValue form the fast path accepts decodes exactly as the lenient path decodes it."""
    from spanstore.otlp import _fast_spans

    line = json.dumps(document(span_object(attributes=[{"key": "k", "value": value}])))
    fast = _fast_spans(line)
    assert fast is not None and fast == lenient(line).spans


def test_invalid_utf8_is_a_corrupt_line() -> None:
    """Bytes that are not UTF-8 inside a line make that line corrupt (CorruptLineError), never a UnicodeDecodeError."""
    line = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\xff\xfe"}]}]}]}'
    with pytest.raises(CorruptLineError, match="line 7 in spans.jsonl: expected UTF-8 text"):
        decode_line(line, source="spans.jsonl", line_number=7)


def test_a_span_that_is_its_own_parent_is_kept() -> None:
    """A one-span cycle (parentSpanId == spanId) is data, kept as written, as the Collector keeps it."""
    decoded = decode_line(json.dumps(document(span_object(parentSpanId=SPAN_ID))))
    assert decoded.issues == [] and decoded.spans[0].parent_span_id == decoded.spans[0].span_id
