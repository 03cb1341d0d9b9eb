"""Tests for spanstore.model: StoredSpan.from_readable_span field by field, and AttributeMap's semantics."""

from __future__ import annotations

import math
import sys

import msgspec
import pytest
from hypothesis import given, settings
from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, TraceFlags, TraceState
from opentelemetry.trace import SpanKind as SdkSpanKind
from opentelemetry.trace import StatusCode as SdkStatusCode

from spanstore.model import (
    AttributeMap,
    Resource,
    Scope,
    SpanKind,
    StatusCode,
    StoredSpan,
    attribute_values_equal,
    from_readable_span,
)
from tests.strategies import attribute_maps, attribute_values

HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


@pytest.fixture
def recorder() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A real TracerProvider with a resource, whose finished spans land in an InMemorySpanExporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "cart", "service.version": "1.2"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def finished(exporter: InMemorySpanExporter) -> dict[str, StoredSpan]:
    """The finished spans, converted, by name."""
    return {span.name: from_readable_span(span) for span in exporter.get_finished_spans()}


@pytest.mark.parametrize(
    ("sdk_kind", "kind"),
    [
        (SdkSpanKind.INTERNAL, SpanKind.INTERNAL),
        (SdkSpanKind.SERVER, SpanKind.SERVER),
        (SdkSpanKind.CLIENT, SpanKind.CLIENT),
        (SdkSpanKind.PRODUCER, SpanKind.PRODUCER),
        (SdkSpanKind.CONSUMER, SpanKind.CONSUMER),
    ],
)
def test_kind_uses_otlp_numbering(recorder, sdk_kind: SdkSpanKind, kind: SpanKind) -> None:
    """SDK kinds (INTERNAL=0..) map to OTLP kinds (INTERNAL=1..)."""
    provider, exporter = recorder
    with provider.get_tracer("t").start_as_current_span("s", kind=sdk_kind):
        pass
    stored = finished(exporter)["s"]
    assert stored.kind is kind and stored.kind == sdk_kind.value + 1


class _EdgeIds(IdGenerator):
    """Ids at both ends of their range: the smallest valid ones and the largest."""

    def __init__(self) -> None:
        self.span_ids = iter([1, (1 << 64) - 1])

    def generate_span_id(self) -> int:
        return next(self.span_ids)

    def generate_trace_id(self) -> int:
        return 1


def test_ids_are_zero_padded_at_both_ends_of_their_range() -> None:
    """Small ids keep their leading zeros, the largest convert whole: ids are always 32 and 16 hex characters."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_EdgeIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
        pass
    spans = finished(exporter)
    assert spans["parent"].trace_id == "0" * 31 + "1" and spans["parent"].span_id == "0" * 15 + "1"
    assert spans["child"].span_id == "f" * 16 and spans["child"].parent_span_id == "0" * 15 + "1"


def test_ids_parent_and_times(recorder) -> None:
    """Ids are lowercase hex (a trace id interned: its spans share it while they wait to be written); a child's parent
    id is its parent's span id; times are integer ns."""
    provider, exporter = recorder
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child"):
        pass
    spans = finished(exporter)
    root, child = spans["parent"], spans["child"]
    context = parent.get_span_context()
    assert root.trace_id == format(context.trace_id, "032x") and root.span_id == format(context.span_id, "016x")
    assert root.trace_id is sys.intern(root.trace_id) and child.trace_id is root.trace_id
    assert root.parent_span_id is None and root.is_root
    assert child.parent_span_id == root.span_id and not child.is_root
    assert isinstance(root.start_time_unix_nano, int) and root.duration_ns == (
        root.end_time_unix_nano - root.start_time_unix_nano
    )
    assert root.duration_ns >= child.duration_ns >= 0


def test_flags_record_parent_remoteness(recorder) -> None:
    """flags carry HAS_IS_REMOTE always, plus IS_REMOTE when the parent context came from another process."""
    provider, exporter = recorder
    tracer = provider.get_tracer("t")
    remote = SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("local.child"):
        pass
    with tracer.start_as_current_span("remote.child", context=trace_api.set_span_in_context(NonRecordingSpan(remote))):
        pass
    spans = finished(exporter)
    assert spans["root"].flags == HAS_IS_REMOTE
    assert spans["local.child"].flags == HAS_IS_REMOTE
    child = spans["remote.child"]
    assert child.flags == HAS_IS_REMOTE | IS_REMOTE
    assert child.parent_span_id == format(0xDEF, "016x") and child.trace_id == format(0xABC, "032x")
    assert child.trace_state == "vendor=v1,other=x"
    assert spans["root"].trace_state == ""


def test_links_keep_context_attributes_and_flags(recorder) -> None:
    """Links keep their trace/span ids, trace state, attributes and remoteness flags."""
    provider, exporter = recorder
    remote = SpanContext(0x1, 0x2, is_remote=True, trace_state=TraceState([("k", "v")]))
    local = SpanContext(0x3, 0x4, is_remote=False)
    with provider.get_tracer("t").start_as_current_span("s", links=[Link(remote, {"a": 1}), Link(local)]):
        pass
    first, second = finished(exporter)["s"].links
    assert (first.trace_id, first.span_id, first.trace_state) == ("0" * 31 + "1", "0" * 15 + "2", "k=v")
    assert first.attributes == {"a": 1} and first.flags == HAS_IS_REMOTE | IS_REMOTE
    assert (second.trace_state, second.flags, second.attributes) == ("", HAS_IS_REMOTE, {})


def test_dropped_counts(recorder) -> None:
    """Attributes, events, links and their attributes beyond the SDK limits are counted as dropped."""
    _, exporter = recorder
    provider = TracerProvider(
        span_limits=SpanLimits(
            max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = SpanContext(0x1, 0x2, is_remote=False)
    with provider.get_tracer("t").start_as_current_span(
        "s", attributes={"a": 1, "b": 2, "c": 3}, links=[Link(context), Link(context, {"x": 1, "y": 2})]
    ) as span:
        span.add_event("e1")
        span.add_event("e2")
        span.add_event("e3", {"p": 1, "q": 2, "r": 3})  # the SDK keeps the latest events
    stored = finished(exporter)["s"]
    assert (stored.dropped_attributes_count, stored.dropped_events_count, stored.dropped_links_count) == (1, 2, 1)
    assert len(stored.attributes) == 2 and len(stored.events) == 1 and len(stored.links) == 1
    assert stored.events[0].dropped_attributes_count == 2
    assert stored.links[0].dropped_attributes_count == 1


def test_status_and_error_type(recorder) -> None:
    """Status code and message map 1:1; error_type comes from error.type, else the first exception event."""
    provider, exporter = recorder
    tracer = provider.get_tracer("t")
    with pytest.raises(KeyError), tracer.start_as_current_span("raised"):
        raise KeyError("missing")
    with tracer.start_as_current_span("explicit") as span:
        span.set_attribute("error.type", "Timeout")
        span.record_exception(ValueError("v"))
        span.set_status(Status(SdkStatusCode.ERROR, "gave up"))
    with tracer.start_as_current_span("numeric") as span:
        span.set_attribute("error.type", 503)
    with pytest.raises(ZeroDivisionError), tracer.start_as_current_span("status code and exception") as span:
        span.set_attribute("error.type", "500")  # as HTTP server instrumentations set it
        raise ZeroDivisionError("division by zero")
    with tracer.start_as_current_span("ok") as span:
        span.add_event("exception", {"exception.message": "no type"})
        span.set_status(Status(SdkStatusCode.OK))
    with tracer.start_as_current_span("unset"):
        pass
    spans = finished(exporter)
    raised = spans["raised"]
    assert (raised.status_code, raised.status_message) == (StatusCode.ERROR, "KeyError: 'missing'")
    assert raised.is_error and raised.error_type == "KeyError"
    assert raised.events[0].name == "exception"
    assert {"exception.type", "exception.message", "exception.stacktrace"} <= set(raised.events[0].attributes)
    explicit = spans["explicit"]
    assert (explicit.status_code, explicit.status_message, explicit.error_type) == (
        StatusCode.ERROR,
        "gave up",
        "Timeout",
    )
    assert spans["numeric"].error_type == "503"
    both = spans["status code and exception"]
    assert both.error_type == "ZeroDivisionError" and both.error_types == ("ZeroDivisionError", "500")
    assert explicit.error_types == ("ValueError", "Timeout")
    assert (spans["ok"].status_code, spans["ok"].error_type, spans["ok"].is_error) == (StatusCode.OK, None, False)
    assert (spans["unset"].status_code, spans["unset"].status_message) == (StatusCode.UNSET, "")


def test_attribute_types_survive(recorder) -> None:
    """Every SDK attribute type keeps its type: no bool becomes int, no sequence becomes a list."""
    provider, exporter = recorder
    values = {
        "s": "x",
        "b": True,
        "i": 7,
        "f": 1.0,
        "strs": ["a", "b"],
        "ints": (1, 2),
        "floats": [0.5],
        "bools": [False],
        "empty": [],
    }
    with provider.get_tracer("t").start_as_current_span("s", attributes=values) as span:
        span.add_event("e", {"n": 1})
    stored = finished(exporter)["s"]
    assert stored.attributes == {
        "s": "x",
        "b": True,
        "i": 7,
        "f": 1.0,
        "strs": ("a", "b"),
        "ints": (1, 2),
        "floats": (0.5,),
        "bools": (False,),
        "empty": (),
    }
    assert [type(value) for value in stored.attributes.values()] == [str, bool, int, float] + [tuple] * 5
    assert stored.events[0].attributes == {"n": 1} and stored.events[0].name == "e"


def test_resource_and_scope_are_shared(recorder) -> None:
    """Spans of one provider and tracer share one Resource and one Scope object, converted faithfully."""
    provider, exporter = recorder
    tracer = provider.get_tracer("lib", "2.0", schema_url="https://s", attributes={"scope.k": "v"})
    for name in ("a", "b"):
        with tracer.start_as_current_span(name):
            pass
    with provider.get_tracer("other").start_as_current_span("c"):
        pass
    spans = finished(exporter)
    a, b, c = spans["a"], spans["b"], spans["c"]
    assert a.resource is b.resource is c.resource
    assert a.scope is b.scope and a.scope is not c.scope
    assert a.scope == Scope(
        name="lib", version="2.0", attributes=AttributeMap.of({"scope.k": "v"}), schema_url="https://s"
    )
    assert c.scope == Scope(name="other")
    assert a.service_name == "cart" and a.resource.attributes["service.version"] == "1.2"
    assert a.attributes.keys_ is b.attributes.keys_  # the empty map is shared too


def test_same_key_sets_share_one_tuple(recorder) -> None:
    """Spans with the same attribute keys share one interned key tuple (the memory layout the store relies on)."""
    provider, exporter = recorder
    tracer = provider.get_tracer("t")
    for index in range(2):
        with tracer.start_as_current_span(f"s{index}", attributes={"http.route": "/x", "n": index}):
            pass
    spans = finished(exporter)
    assert spans["s0"].attributes.keys_ is spans["s1"].attributes.keys_


def test_unknown_service_default() -> None:
    """A resource without a string service.name reports the SDK's default, unknown_service."""
    assert Resource().service_name == "unknown_service"
    assert Resource(attributes=AttributeMap.of({"service.name": 5})).service_name == "unknown_service"
    assert (
        StoredSpan(
            trace_id="0" * 32, span_id="0" * 16, name="n", start_time_unix_nano=0, end_time_unix_nano=0
        ).service_name
        == "unknown_service"
    )


def test_stored_span_is_immutable(recorder) -> None:
    """A StoredSpan and its AttributeMap cannot be changed."""
    provider, exporter = recorder
    with provider.get_tracer("t").start_as_current_span("s", attributes={"a": 1}):
        pass
    stored = finished(exporter)["s"]
    with pytest.raises(AttributeError):
        stored.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        stored.attributes["a"] = 2  # type: ignore[index]


# --- AttributeMap semantics ---------------------------------------------------------------------------------------


def test_attribute_map_is_a_strict_mapping() -> None:
    """Mapping protocol in insertion order; equality is strict by type (1, 1.0, True and "1" all differ)."""
    m = AttributeMap.of({"b": 1, "a": "x"})
    assert list(m) == ["b", "a"] and list(m.items()) == [("b", 1), ("a", "x")] and len(m) == 2
    assert m["b"] == 1 and m.get("missing", 0) == 0 and "a" in m and "z" not in m
    with pytest.raises(KeyError):
        m["missing"]
    assert m == {"a": "x", "b": 1}  # order does not matter for equality
    assert m != {"a": "x", "b": True} and m != {"a": "x", "b": 1.0} and m != {"a": "x", "b": "1"}
    assert AttributeMap.of({"f": float("nan")}) == AttributeMap.of({"f": float("nan")})
    assert m != {"a": "x"} and m != {"a": "x", "b": 1, "c": 2}
    assert (m == 5) is False
    assert AttributeMap.of(None) is AttributeMap.of({}) and not AttributeMap.of(None)
    assert m.to_dict() == {"b": 1, "a": "x"} and repr(m) == "AttributeMap({'b': 1, 'a': 'x'})"
    nested = AttributeMap.of({"m": AttributeMap.of({"k": (1, 2)})})
    assert nested.to_dict() == {"m": {"k": (1, 2)}}


def test_attribute_values_equal_is_strict() -> None:
    """attribute_values_equal: same type and value, NaN equal to NaN, tuples element-wise."""
    assert attribute_values_equal(math.nan, math.nan)
    assert not attribute_values_equal(1, True) and not attribute_values_equal(0, 0.0)
    assert attribute_values_equal((1, (math.nan, "a")), (1, (math.nan, "a")))
    assert not attribute_values_equal((1, 2), (1, 2, 3)) and not attribute_values_equal((1,), [1])


@settings(max_examples=30, deadline=None)
@given(attribute_maps(), attribute_maps())
def test_attribute_map_hash_consistent_with_equality(a: AttributeMap, b: AttributeMap) -> None:
    """Equal maps hash equal (so they can key the codec's resource cache), whatever their values."""
    assert a == a and hash(a) == hash(AttributeMap(a.keys_, a.values_))
    if a == b:
        assert hash(a) == hash(b)


@settings(max_examples=60, deadline=None)
@given(attribute_values)
def test_attribute_values_equal_reflexive(value: object) -> None:
    """Every attribute value equals itself (NaN included) under the strict comparison."""
    assert attribute_values_equal(value, value)


def test_stored_span_encodes_with_msgspec() -> None:
    """StoredSpan is a plain msgspec Struct: msgspec can encode it (the store may rely on this for snapshots)."""
    span = StoredSpan(trace_id="a" * 32, span_id="b" * 16, name="n", start_time_unix_nano=1, end_time_unix_nano=2)
    assert msgspec.json.decode(msgspec.json.encode(span))["name"] == "n"


def test_lone_surrogates_are_normalized_at_ingest_so_memory_equals_disk(tmp_path) -> None:
    """A span with lone surrogates (name, keys, values, arrays, events, status, resource) reads the same from the
    store in memory and after a restart: U+FFFD in their place on both sides."""
    from spanstore import FileBasedSpanProcessor, SpanStore

    provider = TracerProvider(resource=SdkResource.create({"service.name": "s\udc00"}), shutdown_on_exit=False)
    processor = FileBasedSpanProcessor(tmp_path / "store", fsync="never")
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("scope\ud800")
    with tracer.start_as_current_span("name \ud800", attributes={"k\udfff": "v\ud800", "a": ("x", "y\udc00")}) as s:
        s.add_event("event \ud801", {"e": "\udbff"})
        s.set_status(Status(SdkStatusCode.ERROR, "bad \udc80"))
    in_memory = processor.store.spans()
    provider.shutdown()
    with SpanStore(tmp_path / "store") as reopened:
        from_disk = reopened.spans()
    assert from_disk == in_memory
    [span] = in_memory
    assert span.name == "name \ufffd" and span.attributes["k\ufffd"] == "v\ufffd"
    assert span.status_message == "bad \ufffd"
    assert span.attributes["a"] == ("x", "y\ufffd") and span.events[0].name == "event \ufffd"
    assert span.service_name == "s\ufffd"


def test_clean_text_leaves_valid_text_alone() -> None:
    """ASCII, accented and astral text is returned as it is (the same object)."""
    from spanstore.model import clean_text

    for text in ("GET /cart", "café", "😀 ok", ""):
        assert clean_text(text) is text
