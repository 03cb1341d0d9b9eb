"""The typed fast path of spanstore.otlp against the lenient path, on generated and damaged lines.

``decode_line`` first tries ``_fast_spans`` (msgspec typed structs, one pass) and hands every line it refuses to the
lenient path. These tests take canonical lines (what ``encode_spans`` writes for random spans), damage them with the
quirks and errors real files hold (ids in other forms, times and counts out of range or of the wrong type, enum
names, AnyValues with two fields or none, unknown and snake_case keys...), and check that:

* ``decode_line`` gives exactly what the lenient path alone gives (spans, issues, skipped counts);
* whenever the fast path accepts a line, its spans equal the lenient path's, resources and scopes shared alike.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanstore.errors import CorruptLineError
from spanstore.otlp import DecodedLine, _decode_document, _fast_spans, decode_line, encode_spans
from tests.strategies import span_batches

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def lenient(line: bytes | str) -> DecodedLine:
    """What the lenient path alone makes of a line."""
    return _decode_document(msgspec.json.decode(line), "<memory>", 1)


def check_paths_agree(line: bytes | str) -> None:
    try:
        expected = lenient(line)
    except CorruptLineError as error:
        with pytest.raises(CorruptLineError) as raised:
            decode_line(line)
        assert str(raised.value) == str(error)
        return
    assert decode_line(line) == expected
    fast = _fast_spans(line)
    if fast is not None:
        assert expected.issues == [] and expected.skipped_spans == 0
        assert fast == expected.spans
        assert [(s.resource, s.scope) for s in fast] == [(s.resource, s.scope) for s in expected.spans]
        assert all(
            a.resource is b.resource and a.scope is b.scope and a.attributes.keys_ is b.attributes.keys_
            for a, b in zip(fast, expected.spans, strict=True)
        )


# Replacement values for fields, valid and invalid, in forms the fast path must take or hand over.
ID_FORMS = [
    TRACE_ID.upper(),
    "",
    "zz" * 16,
    "AAECAwQFBgcICQoLDA0ODw==",  # base64 of 16 bytes
    "AAECAwQFBgc=",  # base64 of 8 bytes
    TRACE_ID[:16],
    SPAN_ID.upper(),
    TRACE_ID + "0",
    " " + SPAN_ID[1:],
    None,
    123,
]
TIME_FORMS = [
    5,
    0,
    "0",
    "",
    "-1",
    "+5",
    "1e3",
    " 12",
    "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes, OTLP says no
    "1_000",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "1" * 21,
    1.0,
    1.5,
    None,
]
KIND_FORMS = [-1, 0, 5, 6, "SERVER", "SPAN_KIND_CLIENT", "2", 2.0, True, None, "bogus"]
COUNT_FORMS = [-1, 0, 7, 2**32 - 1, 2**32, "3", 1.0, 1.5, None, True]
STATUS_FORMS = [
    None,
    {},
    {"code": 0},
    {"code": 2, "message": "boom"},
    {"code": 3},
    {"code": "STATUS_CODE_ERROR"},
    {"code": "1"},
    {"message": None},
    {"message": 5},
    {"code": 1, "extra": True},
    [],
    "x",
]
NAME_FORMS = [None, 5, "", "caf\u00e9", "x" * 100]
ANY_VALUES: list[Any] = [
    {"stringValue": "x"},
    {"stringValue": "y" * 80},
    {"stringValue": None},
    {"stringValue": 5},
    {"stringValue": "x", "intValue": "1"},
    {"intValue": "1", "boolValue": True},
    {"doubleValue": 1.5, "bytesValue": "AP8="},
    {"intValue": "12"},
    {"intValue": "-12"},
    {"intValue": "+7"},
    {"intValue": "9223372036854775807"},
    {"intValue": "9223372036854775808"},
    {"intValue": "-9223372036854775808"},
    {"intValue": "123456789012345678"},
    {"intValue": ""},
    {"intValue": "x"},
    {"intValue": 5},
    {"intValue": 5.0},
    {"boolValue": False},
    {"boolValue": "true"},
    {"boolValue": 1},
    {"doubleValue": 2},
    {"doubleValue": 2.5},
    {"doubleValue": "NaN"},
    {"doubleValue": "-Infinity"},
    {"doubleValue": "1.5"},
    {"doubleValue": "x"},
    {"bytesValue": "AP8="},
    {"bytesValue": "AP8"},
    {"bytesValue": "!!"},
    {"arrayValue": {}},
    {"arrayValue": {"values": [{"stringValue": "a"}, {}, {"intValue": "3"}]}},
    {"arrayValue": {"values": [{"intValue": 5}]}},
    {"arrayValue": {"values": [{"stringValue": "a", "boolValue": True}]}},
    {"arrayValue": {"values": None}},
    {"kvlistValue": {}},
    {"kvlistValue": {"values": [{"key": "k"}, {"value": {"intValue": "1"}}]}},
    {"kvlistValue": {"values": [{"key": "k", "value": {"doubleValue": "Infinity"}}]}},
    {"kvlistValue": {"values": [{"key": 5, "value": {}}]}},
    {"unknownValue": 1},
    {},
    None,
    [],
    "x",
]
KEY_VALUES: list[Any] = [
    *({"key": "k", "value": value} for value in ANY_VALUES),
    {"value": {"stringValue": "no key"}},
    {"key": "no value"},
    {"key": None, "value": {"stringValue": "x"}},
    {"key": "k", "value": {"stringValue": "x"}, "extra": 1},
    {"key": "caf\u00e9", "value": {"stringValue": "\u00e9t\u00e9"}},
    "not a key value",
    None,
]
EVENT_FORMS: list[Any] = [
    {"timeUnixNano": "5", "name": "exception"},
    {"name": "no time"},
    {"timeUnixNano": "", "name": "e"},
    {"timeUnixNano": "18446744073709551616"},
    {"timeUnixNano": 5},
    {"timeUnixNano": "5", "droppedAttributesCount": -1},
    {"timeUnixNano": "5", "attributes": [{"key": "a", "value": {"intValue": "x"}}]},
    {"timeUnixNano": "5", "attributes": None},
    {"time_unix_nano": "5"},
    None,
]
LINK_FORMS: list[Any] = [
    {"traceId": TRACE_ID, "spanId": SPAN_ID},
    {"traceId": TRACE_ID, "spanId": SPAN_ID, "traceState": "a=b", "flags": 256, "droppedAttributesCount": 1},
    {"traceId": TRACE_ID},
    {"traceId": TRACE_ID.upper(), "spanId": SPAN_ID},
    {"traceId": TRACE_ID, "spanId": "zz" * 8},
    {"traceId": TRACE_ID, "spanId": SPAN_ID, "flags": -1},
    {"traceId": TRACE_ID, "spanId": SPAN_ID, "attributes": [{"key": "a", "value": {"boolValue": True}}]},
    None,
]

SPAN_FIELD_FORMS: dict[str, list[Any]] = {
    "traceId": ID_FORMS,
    "spanId": ID_FORMS,
    "parentSpanId": ID_FORMS,
    "startTimeUnixNano": TIME_FORMS,
    "endTimeUnixNano": TIME_FORMS,
    "kind": KIND_FORMS,
    "flags": COUNT_FORMS,
    "droppedAttributesCount": COUNT_FORMS,
    "droppedEventsCount": COUNT_FORMS,
    "droppedLinksCount": COUNT_FORMS,
    "status": STATUS_FORMS,
    "name": NAME_FORMS,
    "traceState": ["", "a=b", None, 5],
    "attributes": [None, [], "x", [{"key": "a", "value": {"stringValue": "b"}}]],
    "events": [None, [], "x"],
    "links": [None, [], "x"],
    "unknownField": [1, None],
}

SNAKE_TO_CAMEL = {
    "trace_id": "traceId",
    "start_time_unix_nano": "startTimeUnixNano",
    "dropped_links_count": "droppedLinksCount",
}

mutations = st.one_of(
    st.tuples(st.just("span"), st.sampled_from(sorted(SPAN_FIELD_FORMS))).flatmap(
        lambda where: st.tuples(st.just(where), st.sampled_from(SPAN_FIELD_FORMS[where[1]]))
    ),
    st.tuples(st.just(("attribute", "")), st.sampled_from(KEY_VALUES)),
    st.tuples(st.just(("event", "")), st.sampled_from(EVENT_FORMS)),
    st.tuples(st.just(("link", "")), st.sampled_from(LINK_FORMS)),
    st.tuples(st.just(("resource attribute", "")), st.sampled_from(KEY_VALUES)),
    st.tuples(st.just(("scope attribute", "")), st.sampled_from(KEY_VALUES)),
    st.tuples(
        st.just(("scope", "")),
        st.sampled_from([None, {}, {"name": None}, {"name": 5}, {"version": "1"}, {"droppedAttributesCount": -1}]),
    ),
    st.tuples(st.just(("resource", "")), st.sampled_from([None, {}, {"droppedAttributesCount": -1}, {"x": 1}])),
    st.tuples(st.just(("snake_case", "")), st.sampled_from(sorted(SNAKE_TO_CAMEL))),
    st.tuples(st.just(("delete", "")), st.sampled_from(sorted(SPAN_FIELD_FORMS))),
)


def list_at(obj: dict[str, Any], key: str) -> list[Any]:
    """``obj[key]``, made a list first if an earlier mutation left something else there."""
    if type(obj.get(key)) is not list:
        obj[key] = []
    return obj[key]


def mutate(document: dict[str, Any], mutation: tuple[tuple[str, str], Any], pick: int) -> None:
    """Apply one mutation to the ``pick``-th span of ``document`` (or its resource or scope)."""
    (what, field), value = mutation
    groups = [(r, s) for r in document["resourceSpans"] for s in r["scopeSpans"]]
    resource_spans, scope_spans = groups[pick % len(groups)]
    spans = scope_spans["spans"]
    span = spans[pick % len(spans)]
    value = copy.deepcopy(value)
    if what == "span":
        span[field] = value
    elif what == "delete":
        span.pop(value, None)
    elif what == "snake_case":
        camel = SNAKE_TO_CAMEL[value]
        if camel in span:
            span[value] = span.pop(camel)
    elif what == "attribute":
        list_at(span, "attributes").insert(pick % 3, value)
    elif what == "event":
        list_at(span, "events").append(value)
    elif what == "link":
        list_at(span, "links").append(value)
    elif what == "resource attribute":
        resource = resource_spans.get("resource")
        if type(resource) is not dict:
            resource = resource_spans["resource"] = {}
        list_at(resource, "attributes").append(value)
    elif what == "scope attribute":
        scope = scope_spans.get("scope")
        if type(scope) is not dict:
            scope = scope_spans["scope"] = {}
        list_at(scope, "attributes").append(value)
    elif what == "scope":
        scope_spans["scope"] = value
    elif what == "resource":
        resource_spans["resource"] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    span_batches(max_size=4),
    st.lists(st.tuples(mutations, st.integers(0, 100)), max_size=3),
    st.booleans(),
)
def test_fast_and_lenient_paths_agree_on_damaged_lines(
    spans: list[Any], damage: list[tuple[Any, int]], ascii_only: bool
) -> None:
    """Any mix of quirks and errors: decode_line gives the lenient verdict, and the fast path never disagrees."""
    for line in encode_spans(spans):
        check_paths_agree(line)  # undamaged: the fast path takes it
        assert _fast_spans(line) is not None
        document = json.loads(line)
        for mutation, pick in damage:
            mutate(document, mutation, pick)
        check_paths_agree(json.dumps(document, ensure_ascii=ascii_only))


@pytest.mark.parametrize("value", KEY_VALUES, ids=repr)
def test_every_attribute_form_alone(value: Any) -> None:
    """Each KeyValue form, alone on a span and beside a good neighbour, on spans, events, links, resources, scopes."""
    good = {"key": "good", "value": {"stringValue": "v"}}
    event = {"timeUnixNano": "5", "name": "e", "attributes": [good, value]}
    link = {"traceId": TRACE_ID, "spanId": SPAN_ID, "attributes": [value]}
    span = {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "op", "attributes": [value, good]}
    for resource, scope, spans in [
        (None, None, [span]),
        (None, None, [{**span, "attributes": [good], "events": [event], "links": [link]}]),
        ({"attributes": [value]}, None, [{**span, "attributes": [good]}]),
        (None, {"name": "s", "attributes": [good, value]}, [{**span, "attributes": [good]}]),
    ]:
        resource_spans: dict[str, Any] = {"scopeSpans": [{"spans": spans}]}
        if resource is not None:
            resource_spans["resource"] = resource
        if scope is not None:
            resource_spans["scopeSpans"][0]["scope"] = scope
        check_paths_agree(json.dumps({"resourceSpans": [resource_spans]}))


@pytest.mark.parametrize("field", sorted(SPAN_FIELD_FORMS))
def test_every_span_field_form_alone(field: str) -> None:
    """Each value form of each span field, beside a good neighbour span."""
    neighbour = {"traceId": TRACE_ID, "spanId": "eee19b7ec3c1b173", "name": "neighbour", "startTimeUnixNano": "1"}
    for value in SPAN_FIELD_FORMS[field]:
        span = {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "op", field: value}
        check_paths_agree(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [neighbour, span]}]}]}))


def test_common_canonical_forms_take_the_fast_path() -> None:
    """What spanstore and the official exporters write for ordinary spans is never handed to the lenient path."""
    line = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
                    "scopeSpans": [
                        {
                            "scope": {"name": "lib", "version": "1.0"},
                            "spans": [
                                {
                                    "traceId": TRACE_ID,
                                    "spanId": SPAN_ID,
                                    "parentSpanId": "eee19b7ec3c1b173",
                                    "flags": 256,
                                    "name": "GET /cart",
                                    "kind": 2,
                                    "startTimeUnixNano": "1796050658414361115",
                                    "endTimeUnixNano": "18446744073709551615",
                                    "attributes": [
                                        {"key": "s", "value": {"stringValue": "x"}},
                                        {"key": "i", "value": {"intValue": "-3"}},
                                        {"key": "d", "value": {"doubleValue": 0.5}},
                                        {"key": "b", "value": {"boolValue": True}},
                                        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
                                    ],
                                    "events": [{"timeUnixNano": "5", "name": "exception"}],
                                    "links": [{"traceId": TRACE_ID, "spanId": SPAN_ID, "flags": 256}],
                                    "status": {"code": 2, "message": "boom"},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )
    assert _fast_spans(line) is not None
    check_paths_agree(line)
