"""The OTLP JSON codec: :class:`~spanstore.StoredSpan` to and from OTLP/JSON ``TracesData`` lines.

Writing is canonical: exactly what the official ``opentelemetry-exporter-otlp-json-file`` writes for the same
spans (protojson: lowerCamelCase keys, lowercase hex ids, enums as integers, 64-bit integers as decimal strings,
bytes as base64, default values left out, ``"status": {}`` always present), key order aside. Two deliberate
differences, both because the official exporter's output would be lossy or rejected downstream:

* a link's ``traceState`` is written (the official exporter drops it);
* an integer attribute outside the signed 64-bit range, which OTLP cannot hold, is written as a ``stringValue``
  of its decimal digits (the official exporter writes an ``intValue`` that the Collector rejects, losing the
  whole batch).

A string holding a lone surrogate (not encodable as UTF-8) is written with U+FFFD in its place.

Reading is lenient, as the OpenTelemetry Collector is: camelCase or snake_case keys; ids in lowercase or
UPPERCASE hex, or base64 (as some exporters write bytes fields); an empty id string is the all-zero id (and an
empty ``parentSpanId`` means a root); enums as integers, full names (``"SPAN_KIND_SERVER"``) or short names
(``"SERVER"``); 64-bit integers as strings or numbers; ``status`` missing or ``{}``; unknown fields ignored;
``instrumentationLibrarySpans`` (OTLP before 0.15) read as ``scopeSpans``; Tempo's ``{"batches": [...]}``.
A span that is not valid OTLP (a bad id, an unknown kind, a time out of range) is skipped and reported as a
:class:`DecodeIssue`; the valid spans beside it load. A line that is not JSON, or not a ``TracesData`` object at
all, raises :class:`~spanstore.errors.CorruptLineError`.

Decoded resources and scopes are shared by value (equal resources are the same object, across lines and files),
ids and names are interned, attribute key tuples are shared: the memory layout :mod:`spanstore.model` expects.

How it is fast: a canonical line (what spanstore and the official exporters write) is decoded by msgspec straight
into typed structs, which also check in C the id and time lengths and the range of every enum and count, and is
converted in one pass (no Python call per span but the StoredSpan's own, which is given only its non-default
fields); any line the typed path cannot take exactly (snake_case, unknown fields, names for enums, base64 ids, an
invalid value...) is decoded again by the lenient path, which explains every problem. Both give the same spans for
every line the typed path accepts (tests/test_otlp_fast_path.py damages generated lines to check it). Encoding
builds one msgspec struct per span (and per attribute), positionally, and lets one reused ``msgspec.json.Encoder``
write 64 spans a call (one by one only where a line must be split); resource and scope envelopes are encoded once
and cached across calls.

Limits, by choice: attribute values nested more deeply than Python can recurse (a few hundred levels) make that
span an issue (or, deeper still, the line corrupt). A span that names itself as its parent is kept as written
(the Collector accepts it too): it is data, and readers that walk the tree (the CLI, ``tree()``) break the cycle.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import operator
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Union

import msgspec

from spanstore import foreign
from spanstore.errors import CorruptLineError, StorageError
from spanstore.model import (
    EMPTY_ATTRIBUTES,
    EMPTY_RESOURCE,
    EMPTY_SCOPE,
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
    _shared_key_tuples,
    share_keys,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DecodeIssue",
    "DecodedLine",
    "ReadResult",
    "decode_line",
    "encode_spans",
    "read_file",
]

#: The default cap on one encoded line, newline included: the Collector's file receiver truncates longer lines.
DEFAULT_MAX_LINE_BYTES = 1 << 20

_intern = sys.intern
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
_UINT32_MAX = (1 << 32) - 1
_INTERN_MAX_LEN = 64  # short values repeat (enums, routes), long ones rarely do

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


# ==================================================================================================================
# Encoding
# ==================================================================================================================


def _float_json(value: float) -> float | str:
    if value - value == 0.0:  # finite
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _any_value(value: Any) -> dict[str, Any]:
    """The protojson ``AnyValue`` of an attribute value."""
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if kind is float:
        return {"doubleValue": _float_json(value)}
    if kind is tuple:
        return {"arrayValue": {"values": [_any_value(item) for item in value]}} if value else {"arrayValue": {}}
    if kind is AttributeMap:
        return (
            {"kvlistValue": {"values": _key_values(value.keys_, value.values_)}} if value.keys_ else {"kvlistValue": {}}
        )
    if kind is bytes:
        return {"bytesValue": value}  # msgspec writes bytes as base64
    if value is None:
        return {}
    return _any_value_slow(value)


def _any_value_slow(value: Any) -> dict[str, Any]:
    """Subclasses and near-misses of the attribute types (IntEnum, str subclasses, lists, dicts, bytearray)."""
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, str):
        return {"stringValue": str(value)}
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytesValue": bytes(value)}
    if isinstance(value, (list, tuple)):
        return _any_value(tuple(value))
    if isinstance(value, Mapping):
        return _any_value(AttributeMap.from_pairs([str(k) for k in value], list(value.values())))
    # Not an attribute type at all: keep the information rather than lose the span.
    return {"stringValue": str(value)}


def _key_values(keys: tuple[str, ...], values: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The protojson ``KeyValue`` list (an empty key is left out, as protojson leaves out empty strings)."""
    if "" in keys:
        return [
            {"key": k, "value": _any_value(v)} if k else {"value": _any_value(v)}
            for k, v in zip(keys, values, strict=True)
        ]
    return [
        {"key": k, "value": {"stringValue": v}} if type(v) is str else {"key": k, "value": _any_value(v)}
        for k, v in zip(keys, values, strict=True)
    ]


def _resource_dict(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resource.attributes.keys_:
        out["attributes"] = _key_values(resource.attributes.keys_, resource.attributes.values_)
    if resource.dropped_attributes_count:
        out["droppedAttributesCount"] = resource.dropped_attributes_count
    return out


def _scope_dict(scope: Scope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scope.name:
        out["name"] = scope.name
    if scope.version:
        out["version"] = scope.version
    if scope.attributes.keys_:
        out["attributes"] = _key_values(scope.attributes.keys_, scope.attributes.values_)
    if scope.dropped_attributes_count:
        out["droppedAttributesCount"] = scope.dropped_attributes_count
    return out


def _event_dict(event: SpanEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if event.time_unix_nano:
        out["timeUnixNano"] = str(event.time_unix_nano)
    if event.name:
        out["name"] = event.name
    attributes = event.attributes
    if attributes.keys_:  # the tuple, not len(): no Python-level call
        out["attributes"] = _key_values(attributes.keys_, attributes.values_)
    if event.dropped_attributes_count:
        out["droppedAttributesCount"] = event.dropped_attributes_count
    return out


def _link_dict(link: SpanLink) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": link.trace_id, "spanId": link.span_id}
    if link.trace_state:
        out["traceState"] = link.trace_state
    attributes = link.attributes
    if attributes.keys_:
        out["attributes"] = _key_values(attributes.keys_, attributes.values_)
    if link.dropped_attributes_count:
        out["droppedAttributesCount"] = link.dropped_attributes_count
    if link.flags:
        out["flags"] = link.flags
    return out


def _span_dict(span: StoredSpan) -> dict[str, Any]:
    """The protojson ``Span`` object, keys in the proto field order the official exporter writes."""
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_span_id is not None:
        out["parentSpanId"] = span.parent_span_id
    if span.flags:
        out["flags"] = span.flags
    if span.name:
        out["name"] = span.name
    if span.kind:
        out["kind"] = span.kind  # msgspec writes an IntEnum as its int
    if span.start_time_unix_nano:
        out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        out["endTimeUnixNano"] = str(span.end_time_unix_nano)
    attributes = span.attributes
    if attributes.keys_:
        out["attributes"] = _key_values(attributes.keys_, attributes.values_)
    if span.dropped_attributes_count:
        out["droppedAttributesCount"] = span.dropped_attributes_count
    if span.events:
        out["events"] = [_event_dict(event) for event in span.events]
    if span.dropped_events_count:
        out["droppedEventsCount"] = span.dropped_events_count
    if span.links:
        out["links"] = [_link_dict(link) for link in span.links]
    if span.dropped_links_count:
        out["droppedLinksCount"] = span.dropped_links_count
    status: dict[str, Any] = {}
    if span.status_message:
        status["message"] = span.status_message
    if span.status_code:
        status["code"] = span.status_code
    out["status"] = status
    return out


# --- what encode_spans gives the encoder per span: structs, not dicts ---------------------------------------------
#
# A struct is built in one positional call and msgspec writes its field names pre-encoded; a field left None is
# left out (omit_defaults), as protojson leaves out default values. The bytes are exactly _span_dict's (the same
# keys in the same order), which stays for the rare span whose strings hold a lone surrogate (see _encode_span).


class _ESpan(msgspec.Struct, omit_defaults=True, gc=False):
    traceId: str
    spanId: str
    traceState: Any = None
    parentSpanId: Any = None
    flags: Any = None
    name: Any = None
    kind: Any = None
    startTimeUnixNano: Any = None
    endTimeUnixNano: Any = None
    attributes: Any = None
    droppedAttributesCount: Any = None
    events: Any = None
    droppedEventsCount: Any = None
    links: Any = None
    droppedLinksCount: Any = None
    status: Any = None  # always given: written, as {} when empty


class _EStatus(msgspec.Struct, omit_defaults=True, gc=False):
    message: Any = None
    code: Any = None


class _EKeyValue(msgspec.Struct, gc=False):
    key: str
    value: Any


class _EString(msgspec.Struct, gc=False):
    stringValue: str


class _EInt(msgspec.Struct, gc=False):
    intValue: str


class _EDouble(msgspec.Struct, gc=False):
    doubleValue: float


class _EBool(msgspec.Struct, gc=False):
    boolValue: bool


_EMPTY_STATUS = _EStatus()
_ETRUE = _EBool(True)
_EFALSE = _EBool(False)


def _scalar_struct(value: Any) -> Any:
    """The AnyValue of a non-string attribute value: a struct for the common scalars, else _any_value's dict."""
    kind = type(value)
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return _EInt(str(value))
    elif kind is bool:
        return _ETRUE if value else _EFALSE
    elif kind is float and value - value == 0.0:  # finite
        return _EDouble(value)
    return _any_value(value)


def _key_value_structs(keys: tuple[str, ...], values: tuple[Any, ...]) -> list[Any]:
    """_key_values, as structs."""
    if "" in keys:
        return _key_values(keys, values)
    return [
        _EKeyValue(k, _EString(v)) if type(v) is str else _EKeyValue(k, _scalar_struct(v))
        for k, v in zip(keys, values, strict=True)
    ]


def _span_struct(span: StoredSpan) -> _ESpan:
    """_span_dict, as a struct."""
    attributes = span.attributes
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    message = span.status_message
    code = span.status_code
    return _ESpan(
        span.trace_id,
        span.span_id,
        span.trace_state or None,
        span.parent_span_id,
        span.flags or None,
        span.name or None,
        span.kind or None,
        str(start) if start else None,
        str(end) if end else None,
        _key_value_structs(attributes.keys_, attributes.values_) if attributes.keys_ else None,
        span.dropped_attributes_count or None,
        [_event_dict(event) for event in span.events] if span.events else None,
        span.dropped_events_count or None,
        [_link_dict(link) for link in span.links] if span.links else None,
        span.dropped_links_count or None,
        _EStatus(message or None, code or None) if message or code else _EMPTY_STATUS,
    )


def _encode_span(span: StoredSpan) -> bytes:
    try:
        return _encoder.encode(_span_struct(span))
    except UnicodeEncodeError:  # a lone surrogate: _encode replaces it, in dicts
        return _encode(_span_dict(span))


#: How many spans encode_spans encodes in one call (as one JSON array); a chunk that does not fit in the line
#: being built is encoded again span by span, so at most this many spans are encoded twice per line split.
_CHUNK_SPANS = 64


def _encode_chunk(spans: list[StoredSpan]) -> bytes | None:
    """``[span,span,...]`` as one JSON array, or None when a string holds a lone surrogate (encode one by one)."""
    try:
        return _encoder.encode(list(map(_span_struct, spans)))
    except UnicodeEncodeError:
        return None


def _without_surrogates(obj: Any) -> Any:
    """``obj`` with every lone surrogate in its strings replaced by U+FFFD (they cannot be written as UTF-8)."""
    if isinstance(obj, str):
        return obj.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(obj, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_surrogates(item) for item in obj]
    return obj


def _encode(obj: Any) -> bytes:
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError:
        return _encoder.encode(_without_surrogates(obj))


class _Envelope:
    """The encoded JSON around the spans of one resource (or scope) value: ``open``, the spans, then ``close``.

    One envelope per distinct value: equal resources (even distinct objects) get the very same envelope, so it
    also serves as their group key (hashed by identity).
    """

    __slots__ = ("open", "close", "overhead")

    def __init__(self, open_bytes: bytes, close_bytes: bytes) -> None:
        self.open = open_bytes
        self.close = close_bytes
        self.overhead = len(open_bytes) + len(close_bytes)


class _EnvelopeCache:
    """Envelopes by object identity (fast path) and by value, kept across calls: resources and scopes repeat.

    ``by_id`` holds the object itself beside its envelope, so an id is never reused while cached. Reset (at the
    start of an ``encode_spans`` call, never in the middle of one) when it holds more than ``_MAX`` objects.
    Plain dict operations: safe under the GIL; a reset racing another thread's call can only cost that call the
    merging of two equal values into one group (both still written correctly).
    """

    __slots__ = ("by_id", "by_value", "_make")
    _MAX = 4096

    def __init__(self, make: Any) -> None:
        self.by_id: dict[int, tuple[Any, _Envelope]] = {}
        self.by_value: dict[Any, _Envelope] = {}
        self._make = make

    def reset_if_full(self) -> None:
        if len(self.by_id) > self._MAX:
            self.by_id = {}
            self.by_value = {}

    def envelope(self, obj: Any) -> _Envelope:
        """The envelope of ``obj``'s value (made and cached when new)."""
        entry = self.by_id.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        try:
            envelope = self.by_value.get(obj)
            hashable = True
        except TypeError:  # an unhashable value (a list someone put in an AttributeMap): by identity only
            envelope = None
            hashable = False
        if envelope is None:
            envelope = _Envelope(*self._make(obj))
            if hashable:
                self.by_value[obj] = envelope
        self.by_id[id(obj)] = (obj, envelope)
        return envelope


def _resource_envelope(resource: Resource) -> tuple[bytes, bytes]:
    return (
        b'{"resource":' + _encode(_resource_dict(resource)) + b',"scopeSpans":[',
        b"]" + _schema_url_suffix(resource.schema_url),
    )


def _scope_envelope(scope: Scope) -> tuple[bytes, bytes]:
    return b'{"scope":' + _encode(_scope_dict(scope)) + b',"spans":[', b"]" + _schema_url_suffix(scope.schema_url)


_resource_envelopes = _EnvelopeCache(_resource_envelope)
_scope_envelopes = _EnvelopeCache(_scope_envelope)


def _group(spans: Iterable[StoredSpan]) -> dict[_Envelope, dict[_Envelope, list[StoredSpan]]]:
    """Group by resource, then scope, by value, in order of first appearance (span order kept in a group)."""
    _resource_envelopes.reset_if_full()
    _scope_envelopes.reset_if_full()
    resource_by_id = _resource_envelopes.by_id
    scope_by_id = _scope_envelopes.by_id
    groups: dict[_Envelope, dict[_Envelope, list[StoredSpan]]] = {}  # dicts keep first-appearance order
    for span in spans:
        resource = span.resource
        entry = resource_by_id.get(id(resource))
        resource_key = (
            entry[1] if entry is not None and entry[0] is resource else _resource_envelopes.envelope(resource)
        )
        scopes = groups.get(resource_key)
        if scopes is None:
            scopes = groups[resource_key] = {}
        scope = span.scope
        entry = scope_by_id.get(id(scope))
        scope_key = entry[1] if entry is not None and entry[0] is scope else _scope_envelopes.envelope(scope)
        bucket = scopes.get(scope_key)
        if bucket is None:
            scopes[scope_key] = [span]
        else:
            bucket.append(span)
    return groups


def _schema_url_suffix(schema_url: str) -> bytes:
    return b',"schemaUrl":' + _encode(schema_url) + b"}" if schema_url else b"}"


_LINE_OPEN = b'{"resourceSpans":['
_LINE_CLOSE = b"]}\n"


def encode_spans(spans: Iterable[StoredSpan], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[bytes]:
    """Encode spans as canonical OTLP/JSON ``TracesData`` lines, each ending in ``b"\\n"``.

    Spans are grouped by resource, then by scope (both compared by value), in order of first appearance; span
    order is kept within a group. Each distinct resource and scope envelope is encoded once and cached (they
    repeat from batch to batch), so a batch costs little more than its spans' own JSON. A batch whose line
    would be longer than ``max_line_bytes`` (newline included) is split into several lines, each repeating the
    envelopes it needs; a single span too large for the limit on its own is written alone on its own line, whole
    and over the limit (nothing is ever truncated). No spans give no lines.

    Cost: O(total size of the spans); about 8x faster than the official exporter's encoder (benchmarks/bench_codec.py).
    Concurrency: thread-safe; it keeps no state between calls.

    >>> span = StoredSpan(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    ...                   name="GET /cart", start_time_unix_nano=1_000, end_time_unix_nano=2_000,
    ...                   attributes=AttributeMap.of({"http.status_code": 200}))
    >>> [line] = encode_spans([span])
    >>> line[:68], line[-19:]
    (b'{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[', b'"status":{}}]}]}]}\\n')
    >>> decode_line(line).spans == [span]
    True
    """
    groups = _group(spans)
    if not groups:
        return []
    lines: list[bytes] = []
    # The line being built: [(resource_open, resource_close, [(scope_open, scope_close, [span_bytes])])], where
    # span_bytes is one span, or the spans of a chunk joined by commas
    line: list[tuple[bytes, bytes, list[tuple[bytes, bytes, list[bytes | memoryview]]]]] = []
    size = len(_LINE_OPEN) + len(_LINE_CLOSE)

    def flush() -> None:
        lines.append(
            b"".join(
                (
                    _LINE_OPEN,
                    b",".join(
                        b"".join(
                            (
                                res_open,
                                b",".join(
                                    b"".join((scope_open, b",".join(span_parts), scope_close))
                                    for scope_open, scope_close, span_parts in scope_parts
                                ),
                                res_close,
                            )
                        )
                        for res_open, res_close, scope_parts in line
                    ),
                    _LINE_CLOSE,
                )
            )
        )

    for resource_envelope, scopes in groups.items():
        res_open = resource_envelope.open
        res_close = resource_envelope.close
        res_overhead = resource_envelope.overhead
        res_entry: list[tuple[bytes, bytes, list[bytes | memoryview]]] | None = None
        for scope_envelope, scope_spans in scopes.items():
            scope_open = scope_envelope.open
            scope_close = scope_envelope.close
            scope_overhead = scope_envelope.overhead
            span_parts: list[bytes | memoryview] | None = None
            for start in range(0, len(scope_spans), _CHUNK_SPANS):
                chunk = scope_spans[start : start + _CHUNK_SPANS]
                whole = _encode_chunk(chunk) if len(chunk) > 1 else None
                if whole is not None:
                    # The common case: the whole chunk fits in the line being built (spans joined by commas).
                    added = len(whole) - 2
                    if span_parts is not None:
                        added += 1  # comma
                    else:
                        added += scope_overhead + (1 if res_entry else 0)
                        if res_entry is None:
                            added += res_overhead + (1 if line else 0)
                    if size + added <= max_line_bytes:
                        if res_entry is None:
                            res_entry = []
                            line.append((res_open, res_close, res_entry))
                        if span_parts is None:
                            span_parts = []
                            res_entry.append((scope_open, scope_close, span_parts))
                        span_parts.append(memoryview(whole)[1:-1])
                        size += added
                        continue
                for span in chunk:  # one by one: the line must be split in this chunk (or a surrogate)
                    data = _encode_span(span)
                    if span_parts is not None and size + len(data) + 1 <= max_line_bytes:
                        span_parts.append(data)  # the common case: one more span in the open scope, with a comma
                        size += len(data) + 1
                        continue
                    while True:
                        added = len(data)
                        if span_parts is not None:
                            added += 1  # comma
                        else:
                            added += scope_overhead + (1 if res_entry else 0)
                            if res_entry is None:
                                added += res_overhead + (1 if line else 0)
                        if size + added <= max_line_bytes or not line:
                            break
                        flush()
                        line = []
                        size = len(_LINE_OPEN) + len(_LINE_CLOSE)
                        res_entry = None
                        span_parts = None
                    if res_entry is None:
                        res_entry = []
                        line.append((res_open, res_close, res_entry))
                    if span_parts is None:
                        span_parts = []
                        res_entry.append((scope_open, scope_close, span_parts))
                    span_parts.append(data)
                    size += added
    flush()
    return lines


# ==================================================================================================================
# Decoding
# ==================================================================================================================


class DecodeIssue(msgspec.Struct, frozen=True, gc=False):
    """One problem found while decoding: a span, event, link or resource that is not valid OTLP.

    ``where`` is a JSON path into the line (``"resourceSpans[0].scopeSpans[1].spans[3].traceId"``) and
    ``message`` says what was expected and what was got.

    >>> str(DecodeIssue("spans.jsonl", 3, "resourceSpans[0].scopeSpans[0].spans[2].kind", "expected ..., got 9"))
    'spans.jsonl line 3, resourceSpans[0].scopeSpans[0].spans[2].kind: expected ..., got 9'
    """

    source: str
    line_number: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.source} line {self.line_number}, {self.where}: {self.message}"


class DecodedLine(msgspec.Struct):
    """What one line (or one whole JSON document) decoded into.

    ``spans`` are the valid spans, ``issues`` the problems found (each skipped span has one; a skipped resource or
    scope has one for all its spans), ``skipped_spans`` how many spans were not loaded. ``other_signal`` is
    ``"resourceMetrics"``, ``"resourceLogs"`` or ``"resourceProfiles"`` when the line holds another signal (no
    spans; not an error).
    """

    spans: list[StoredSpan]
    issues: list[DecodeIssue] = msgspec.field(default_factory=list)
    other_signal: str | None = None
    skipped_spans: int = 0


#: How many corrupt lines and how many issues a :class:`ReadResult` keeps with their text (the rest are counted).
MAX_PROBLEMS_KEPT = 1000


class ReadResult(msgspec.Struct):
    """What :func:`read_file` found in a file.

    ``lines`` counts the non-blank lines read (1 for a whole JSON document); ``corrupt_lines`` holds a
    :class:`~spanstore.errors.CorruptLineError` (without traceback) for each of the first
    :data:`MAX_PROBLEMS_KEPT` lines that are not a ``TracesData`` object (its ``source`` and ``line_number`` say
    where), and ``corrupt_line_count`` counts them all; ``other_signal_lines`` counts metric, log and profile lines
    (skipped); ``skipped_spans`` counts the spans of valid lines that were not loaded, explained by ``issues``
    (the first :data:`MAX_PROBLEMS_KEPT` of them; ``issue_count`` counts them all). So a hostile file of a
    million bad lines costs counters, not a million kept errors.
    """

    spans: list[StoredSpan]
    issues: list[DecodeIssue] = msgspec.field(default_factory=list)
    lines: int = 0
    corrupt_lines: list[CorruptLineError] = msgspec.field(default_factory=list)
    other_signal_lines: int = 0
    skipped_spans: int = 0
    corrupt_line_count: int = 0
    issue_count: int = 0

    def add_corrupt_line(self, error: CorruptLineError) -> None:
        """Count a corrupt line; keep it (its text, not its traceback and frames) if fewer than the cap are kept."""
        self.corrupt_line_count += 1
        if len(self.corrupt_lines) < MAX_PROBLEMS_KEPT:
            error.__traceback__ = None
            error.__context__ = None
            self.corrupt_lines.append(error)

    def add_issues(self, issues: list[DecodeIssue]) -> None:
        """Count issues; keep those that fit under the cap."""
        self.issue_count += len(issues)
        room = MAX_PROBLEMS_KEPT - len(self.issues)
        if room > 0:
            self.issues.extend(issues[:room])


class _Invalid(Exception):
    """A value is not valid OTLP; ``path`` is relative to the object being converted (extended on the way up)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def under(self, segment: str) -> _Invalid:
        """The same problem, seen from one level up (``segment`` is this level's key or index)."""
        if not self.path:
            self.path = segment
        elif self.path[0] == "[":
            self.path = segment + self.path
        else:
            self.path = f"{segment}.{self.path}"
        return self


def _describe(value: Any) -> str:
    """A short description of a JSON value for messages: its type and, for scalars, a clipped repr."""
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__.replace('str', 'string').replace('int', 'number')} {text}"


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
    return value


_LOWER_HEX = "0123456789abcdef"
_ZERO_TRACE_ID = _intern("0" * 32)
_ZERO_SPAN_ID = _intern("0" * 16)


def _base64_bytes(text: str) -> bytes | None:
    """Standard or URL-safe base64, padded or not; None when ``text`` is not base64."""
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _id(value: Any, n_bytes: int, what: str) -> str:
    """A trace (16 bytes) or span (8 bytes) id from hex (either case) or base64, as interned lowercase hex."""
    if type(value) is str:
        if len(value) == 2 * n_bytes:
            if not value.strip(_LOWER_HEX):  # canonical lowercase hex: the common case, one C call
                return _intern(value)
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""
            if len(raw) == n_bytes:  # fromhex skips spaces: a short result means it was not plain hex
                return _intern(raw.hex())
        elif not value:
            return _ZERO_TRACE_ID if n_bytes == 16 else _ZERO_SPAN_ID
        raw = _base64_bytes(value)
        if raw is not None and len(raw) == n_bytes:
            return _intern(raw.hex())
        got = repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
        raise _Invalid(
            "", f"expected a {what} of {2 * n_bytes} hex characters (or base64 of {n_bytes} bytes), got {got}"
        )
    raise _Invalid("", f"expected a {what} as a hex string, got {_describe(value)}")


def _unsigned(value: Any, maximum: int, what: str) -> int:
    """An unsigned integer written as a JSON number or a decimal string (protojson writes 64-bit ones as strings)."""
    kind = type(value)
    if kind is int:
        number = value
    elif (kind is str and value.isascii() and value.isdigit() and len(value) <= 20) or (
        kind is float and value.is_integer()
    ):
        number = int(value)
    else:
        raise _Invalid("", f"expected {what} (a non-negative integer or decimal string), got {_describe(value)}")
    if not 0 <= number <= maximum:
        raise _Invalid("", f"expected {what} between 0 and {maximum}, got {_describe(value)}")
    return number


def _time(value: Any) -> int:
    if type(value) is str and len(value) < 20 and value.isascii() and value.isdigit():
        return int(value)  # the canonical form, fast; 19 digits is always below 2**64
    if value is None:
        return 0
    return _unsigned(value, _UINT64_MAX, "Unix nanoseconds")


def _count(value: Any) -> int:
    if value is None:
        return 0
    return _unsigned(value, _UINT32_MAX, "a 32-bit count")


def _enum_names(enum_type: type[SpanKind] | type[StatusCode], prefix: str) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for member in enum_type:
        names[member.name] = member
        names[prefix + member.name] = member
    return names


_KINDS = tuple(SpanKind)
_KIND_NAMES = _enum_names(SpanKind, "SPAN_KIND_")
_STATUS_CODES = tuple(StatusCode)
_STATUS_NAMES = _enum_names(StatusCode, "STATUS_CODE_")


def _enum(value: Any, members: tuple[Any, ...], names: dict[str, Any], prefix: str) -> Any:
    if type(value) is int and 0 <= value < len(members):
        return members[value]
    if type(value) is str:
        member = names.get(value.upper())
        if member is not None:
            return member
        if value.isascii() and value.isdigit() and int(value) < len(members):
            return members[int(value)]
    expected = ", ".join(f"{prefix}{m.name}" for m in members)
    raise _Invalid("", f"expected 0..{len(members) - 1} or one of {expected}, got {_describe(value)}")


def _string(value: Any, what: str = "a string") -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _Invalid("", f"expected {what}, got {_describe(value)}")


def _int64_value(value: Any) -> int:
    kind = type(value)
    if kind is str:
        if len(value) < 19 and value.isdigit() and value.isascii():
            return int(value)
        digits = value[1:] if value[:1] in ("-", "+") else value
        if digits.isascii() and digits.isdigit() and len(digits) <= 19:
            number = int(value)
            if _INT64_MIN <= number <= _INT64_MAX:
                return number
    elif kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
    elif kind is float and value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
        return int(value)
    raise _Invalid("", f"expected a signed 64-bit integer (a decimal string or number), got {_describe(value)}")


_SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _double_value(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    if kind is str:
        special = _SPECIAL_FLOATS.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise _Invalid("", f'expected a number (or "NaN", "Infinity", "-Infinity"), got {_describe(value)}')


def _bool_value(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _Invalid("", f"expected true or false, got {_describe(value)}")


def _string_value(value: Any) -> str:
    if type(value) is str:
        return _intern(value) if len(value) <= _INTERN_MAX_LEN else value
    raise _Invalid("", f"expected a string, got {_describe(value)}")


def _bytes_value(value: Any) -> bytes:
    if type(value) is str:
        raw = _base64_bytes(value)
        if raw is not None:
            return raw
    raise _Invalid("", f"expected base64 bytes, got {_describe(value)}")


def _array_value(value: Any) -> tuple[Any, ...]:
    if type(value) is not dict:
        raise _Invalid("", f"expected an ArrayValue object with 'values', got {_describe(value)}")
    items = value.get("values")
    if not items:
        return ()
    if type(items) is not list:
        raise _Invalid("values", f"expected an array of AnyValue, got {_describe(items)}")
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_any(item))
        except _Invalid as problem:
            raise problem.under(f"[{index}]").under("values") from None
    return tuple(out)


def _kvlist_value(value: Any) -> AttributeMap:
    if type(value) is not dict:
        raise _Invalid("", f"expected a KeyValueList object with 'values', got {_describe(value)}")
    try:
        return _attributes(value.get("values"))
    except _Invalid as problem:
        raise problem.under("values") from None


_ANY_VALUE_FIELDS = {
    "stringValue": _string_value,
    "intValue": _int64_value,
    "boolValue": _bool_value,
    "doubleValue": _double_value,
    "arrayValue": _array_value,
    "kvlistValue": _kvlist_value,
    "bytesValue": _bytes_value,
    "string_value": _string_value,
    "int_value": _int64_value,
    "bool_value": _bool_value,
    "double_value": _double_value,
    "array_value": _array_value,
    "kvlist_value": _kvlist_value,
    "bytes_value": _bytes_value,
}


def _any(value: Any) -> Any:
    """An attribute value from a protojson ``AnyValue`` (``{}`` or null is None)."""
    if type(value) is dict and len(value) == 1:
        for key, item in value.items():
            convert = _ANY_VALUE_FIELDS.get(key)
            if convert is not None and item is not None:
                try:
                    return convert(item)
                except _Invalid as problem:
                    raise problem.under(key) from None
    return _any_slow(value)


def _any_slow(value: Any) -> Any:
    if type(value) is not dict:
        if value is None:
            return None
        raise _Invalid("", f"expected an AnyValue object like {{'stringValue': ...}}, got {_describe(value)}")
    fields = [(key, item) for key, item in value.items() if item is not None]
    if not fields:
        return None
    if len(fields) > 1:
        raise _Invalid("", f"expected one AnyValue field, got {', '.join(repr(key) for key, _ in fields)}")
    key, item = fields[0]
    convert = _ANY_VALUE_FIELDS.get(key)
    if convert is None:
        raise _Invalid(
            key,
            "expected one of stringValue, intValue, boolValue, doubleValue, arrayValue, kvlistValue, bytesValue, "
            f"got {key!r}",
        )
    try:
        return convert(item)
    except _Invalid as problem:
        raise problem.under(key) from None


def _attributes(items: Any) -> AttributeMap:
    """An AttributeMap from a protojson ``KeyValue`` list (missing or empty is the shared empty map)."""
    if type(items) is not list:
        if items is None or items == {}:
            return EMPTY_ATTRIBUTES
        raise _Invalid("", f"expected an array of KeyValue objects, got {_describe(items)}")
    if not items:
        return EMPTY_ATTRIBUTES
    keys = []
    values = []
    append_key = keys.append
    append_value = values.append
    any_value = _any
    for pair in items:
        try:
            key = pair["key"]
            value = pair["value"]
        except (KeyError, TypeError):
            key, value = _key_value_slow(pair, items)
        if type(key) is not str:
            key = _key_value_slow(pair, items)[0]
        if type(value) is dict and len(value) == 1:
            # Inline the canonical scalar forms; anything else goes through _any.
            ((field, item),) = value.items()
            if field == "stringValue" and type(item) is str:
                append_key(key)
                append_value(_intern(item) if len(item) <= _INTERN_MAX_LEN else item)
                continue
            if field == "intValue" and type(item) is str and len(item) < 19 and item.isdigit() and item.isascii():
                append_key(key)
                append_value(int(item))
                continue
            if (field == "boolValue" and type(item) is bool) or (field == "doubleValue" and type(item) is float):
                append_key(key)
                append_value(item)
                continue
        try:
            append_value(any_value(value))
        except _Invalid as problem:
            raise problem.under("value").under(f"[{_index_of(items, pair)}]") from None
        append_key(key)
    return AttributeMap.from_pairs(keys, values)


def _index_of(items: list[Any], item: Any) -> int:
    """The index of ``item`` (by identity) in ``items``: only for error paths, to keep the hot loop lean."""
    for index, candidate in enumerate(items):
        if candidate is item:
            return index
    return -1  # pragma: no cover - item always comes from items


def _key_value_slow(pair: Any, items: list[Any]) -> tuple[str, Any]:
    """A ``KeyValue`` other than the plain ``{"key": str, "value": ...}``: no key is "", no value is null."""
    if type(pair) is not dict:
        raise _Invalid(
            f"[{_index_of(items, pair)}]",
            f"expected a KeyValue object like {{'key': ..., 'value': ...}}, got {_describe(pair)}",
        )
    key = pair.get("key")
    if key is None:
        key = ""
    elif type(key) is not str:
        raise _Invalid(f"[{_index_of(items, pair)}].key", f"expected a string, got {_describe(key)}")
    return key, pair.get("value")


def _attributes_at(obj: dict[str, Any]) -> AttributeMap:
    items = obj.get("attributes")
    if not items:
        return EMPTY_ATTRIBUTES
    try:
        return _attributes(items)
    except _Invalid as problem:
        raise problem.under("attributes") from None


def _checked(convert: Any, value: Any, segment: str) -> Any:
    try:
        return convert(value)
    except _Invalid as problem:
        raise problem.under(segment) from None


def _event(obj: Any) -> SpanEvent:
    if type(obj) is not dict:
        raise _Invalid("", f"expected an Event object, got {_describe(obj)}")
    name = _checked(_string, obj.get("name"), "name")
    return SpanEvent(
        name=_intern(name),
        time_unix_nano=_checked(_time, _field(obj, "timeUnixNano", "time_unix_nano"), "timeUnixNano"),
        attributes=_attributes_at(obj),
        dropped_attributes_count=_checked(
            _count, _field(obj, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount"
        ),
    )


def _required_id(obj: dict[str, Any], camel: str, snake: str, n_bytes: int, what: str) -> str:
    value = _field(obj, camel, snake)
    if value is None:
        raise _Invalid(camel, f"expected a {what} ({2 * n_bytes} hex characters), got nothing (the field is missing)")
    try:
        return _id(value, n_bytes, what)
    except _Invalid as problem:
        raise problem.under(camel) from None


def _link(obj: Any) -> SpanLink:
    if type(obj) is not dict:
        raise _Invalid("", f"expected a Link object, got {_describe(obj)}")
    return SpanLink(
        trace_id=_required_id(obj, "traceId", "trace_id", 16, "trace id"),
        span_id=_required_id(obj, "spanId", "span_id", 8, "span id"),
        trace_state=_checked(_string, _field(obj, "traceState", "trace_state"), "traceState"),
        attributes=_attributes_at(obj),
        dropped_attributes_count=_checked(
            _count, _field(obj, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount"
        ),
        flags=_checked(_flags, obj.get("flags"), "flags"),
    )


def _flags(value: Any) -> int:
    if value is None:
        return 0
    return _unsigned(value, _UINT32_MAX, "32-bit span flags")


def _list_of(obj: dict[str, Any], key: str, convert: Any) -> tuple[Any, ...]:
    items = obj.get(key)
    if not items and (items is None or items == []):
        return ()
    if type(items) is not list:
        raise _Invalid(key, f"expected an array, got {_describe(items)}")
    out = []
    for index, item in enumerate(items):
        try:
            out.append(convert(item))
        except _Invalid as problem:
            raise problem.under(f"[{index}]").under(key) from None
    return tuple(out)


def _camel_case(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel_keys(obj: Any) -> Any:
    """``obj`` with every object key in camelCase (protojson accepts the proto's snake_case field names too)."""
    if type(obj) is dict:
        return {(_camel_case(key) if "_" in key else key): _camel_keys(value) for key, value in obj.items()}
    if type(obj) is list:
        return [_camel_keys(item) for item in obj]
    return obj


def _span(obj: Any, resource: Resource, scope: Scope) -> StoredSpan:
    """A StoredSpan from a protojson ``Span`` object; raises _Invalid (path relative to the span)."""
    if type(obj) is not dict:
        raise _Invalid("", f"expected a Span object, got {_describe(obj)}")
    if "traceId" not in obj:
        obj = _camel_keys(obj)  # snake_case (proto field names): rare, so normalise rather than look up twice
    get = obj.get
    trace_id = get("traceId")
    if trace_id is None:
        raise _Invalid("traceId", "expected a trace id (32 hex characters), got nothing (the field is missing)")
    trace_id = _checked(_trace_id, trace_id, "traceId")
    span_id = get("spanId")
    if span_id is None:
        raise _Invalid("spanId", "expected a span id (16 hex characters), got nothing (the field is missing)")
    span_id = _checked(_span_id, span_id, "spanId")
    parent = get("parentSpanId")
    if parent:
        parent = _checked(_span_id, parent, "parentSpanId")
    elif parent is not None and parent != "":
        raise _Invalid("parentSpanId", f"expected a span id as a hex string, got {_describe(parent)}")
    else:
        parent = None
    name = get("name", "")
    if type(name) is not str:
        name = _checked(_string, name, "name")
    kind = get("kind")
    kind = _KINDS[kind] if type(kind) is int and 0 <= kind <= 5 else _checked(_kind, kind, "kind")
    start = get("startTimeUnixNano")
    if type(start) is str and len(start) < 20 and start.isdigit() and start.isascii():
        start = int(start)  # the canonical form, fast; 19 digits is always below 2**64
    else:
        start = _checked(_time, start, "startTimeUnixNano")
    end = get("endTimeUnixNano")
    if type(end) is str and len(end) < 20 and end.isdigit() and end.isascii():
        end = int(end)
    else:
        end = _checked(_time, end, "endTimeUnixNano")
    status = get("status")
    if status:
        if type(status) is not dict:
            raise _Invalid("status", f"expected a Status object, got {_describe(status)}")
        code = status.get("code")
        status_code = StatusCode.UNSET if code is None else _checked(_status_code, code, "status.code")
        status_message = status.get("message", "")
        if type(status_message) is not str:
            status_message = _checked(_string, status_message, "status.message")
    else:
        status_code = StatusCode.UNSET
        status_message = ""
    attributes = get("attributes")
    if attributes:
        try:
            attributes = _attributes(attributes)
        except _Invalid as problem:
            raise problem.under("attributes") from None
    else:
        attributes = EMPTY_ATTRIBUTES
    trace_state = get("traceState", "")
    if type(trace_state) is not str:
        trace_state = _checked(_string, trace_state, "traceState")
    flags = get("flags", 0)
    if type(flags) is not int or not 0 <= flags <= _UINT32_MAX:
        flags = _checked(_flags, flags, "flags")
    return StoredSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=_intern(name),
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status_code=status_code,
        status_message=status_message,
        attributes=attributes,
        events=_list_of(obj, "events", _event) if "events" in obj else (),
        links=_list_of(obj, "links", _link) if "links" in obj else (),
        resource=resource,
        scope=scope,
        trace_state=trace_state,
        flags=flags,
        dropped_attributes_count=_optional_count(get("droppedAttributesCount"), "droppedAttributesCount"),
        dropped_events_count=_optional_count(get("droppedEventsCount"), "droppedEventsCount"),
        dropped_links_count=_optional_count(get("droppedLinksCount"), "droppedLinksCount"),
    )


def _optional_count(value: Any, segment: str) -> int:
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= _UINT32_MAX:
        return value
    return _checked(_count, value, segment)


def _trace_id(value: Any) -> str:
    return _id(value, 16, "trace id")


def _span_id(value: Any) -> str:
    return _id(value, 8, "span id")


def _kind(value: Any) -> SpanKind:
    if value is None:
        return SpanKind.UNSPECIFIED
    return _enum(value, _KINDS, _KIND_NAMES, "SPAN_KIND_")


def _status_code(value: Any) -> StatusCode:
    return _enum(value, _STATUS_CODES, _STATUS_NAMES, "STATUS_CODE_")


# Equal resources and scopes decode to one shared object, across lines and files. Bounded: cleared when full,
# which only costs sharing (never correctness). Plain dict operations: safe under the GIL from many threads.
_SHARED_MAX = 4096
_shared_resources: dict[Resource, Resource] = {}
_shared_scopes: dict[Scope, Scope] = {}


def _shared(cache: dict[Any, Any], obj: Any) -> Any:
    found = cache.get(obj)
    if found is not None:
        return found
    if len(cache) >= _SHARED_MAX:
        cache.clear()
    cache[obj] = obj
    return obj


def _resource(obj: Any, schema_url: Any) -> Resource:
    if obj is None or obj == {}:
        attributes = EMPTY_ATTRIBUTES
        dropped = 0
    elif type(obj) is not dict:
        raise _Invalid("resource", f"expected a Resource object, got {_describe(obj)}")
    else:
        try:
            attributes = _attributes_at(obj)
            dropped = _checked(
                _count, _field(obj, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount"
            )
        except _Invalid as problem:
            raise problem.under("resource") from None
    schema_url = _checked(_string, schema_url, "schemaUrl")
    if not attributes and not dropped and not schema_url:
        return EMPTY_RESOURCE
    return _shared(
        _shared_resources, Resource(attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped)
    )


def _scope(obj: Any, schema_url: Any, key: str) -> Scope:
    if obj is None or obj == {}:
        name = version = ""
        attributes = EMPTY_ATTRIBUTES
        dropped = 0
    elif type(obj) is not dict:
        raise _Invalid(key, f"expected an InstrumentationScope object, got {_describe(obj)}")
    else:
        try:
            name = _intern(_checked(_string, obj.get("name"), "name"))
            version = _intern(_checked(_string, obj.get("version"), "version"))
            attributes = _attributes_at(obj)
            dropped = _checked(
                _count, _field(obj, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount"
            )
        except _Invalid as problem:
            raise problem.under(key) from None
    schema_url = _checked(_string, schema_url, "schemaUrl")
    if not name and not version and not attributes and not dropped and not schema_url:
        return EMPTY_SCOPE
    return _shared(
        _shared_scopes,
        Scope(
            name=name, version=version, attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped
        ),
    )


_RESOURCE_SPANS_KEYS = ("resourceSpans", "resource_spans", "batches")
_SCOPE_SPANS_KEYS = ("scopeSpans", "scope_spans", "instrumentationLibrarySpans", "instrumentation_library_spans")
_SCOPE_KEYS = {
    "scopeSpans": ("scope", "scope"),
    "scope_spans": ("scope", "scope"),
    "instrumentationLibrarySpans": ("instrumentationLibrary", "instrumentation_library"),
    "instrumentation_library_spans": ("instrumentationLibrary", "instrumentation_library"),
}
_OTHER_SIGNALS = {
    "resourceMetrics": "resourceMetrics",
    "resource_metrics": "resourceMetrics",
    "resourceLogs": "resourceLogs",
    "resource_logs": "resourceLogs",
    "resourceProfiles": "resourceProfiles",
    "resource_profiles": "resourceProfiles",
}


def _not_traces(document: Any) -> str:
    """The CorruptLineError message for a JSON value that is not a TracesData object: what it looks like."""
    expected = "expected an OTLP TracesData object with 'resourceSpans'"
    if isinstance(document, list):
        if document and isinstance(document[0], dict) and "traceId" in document[0]:
            return f"{expected}, got a JSON array of span objects (Zipkin v2 JSON?)"
        return f"{expected}, got a JSON array"
    if not isinstance(document, dict):
        return f"{expected}, got {_describe(document)}"
    if not document:
        return f"{expected}, got an empty object"
    keys = ", ".join(repr(key) for key in list(document)[:6])
    if "data" in document:
        hint = " (Jaeger query-API JSON?)"
    elif "traceID" in document or "spans" in document or "processes" in document:
        hint = " (Jaeger JSON?)"
    elif "traceId" in document and ("id" in document or "localEndpoint" in document):
        hint = " (a Zipkin v2 span?)"
    else:
        hint = ""
    return f"{expected}, got an object with keys {keys}{hint}"


def _decode_document(document: Any, source: str, line_number: int, deep: bool = False) -> DecodedLine:
    """The spans of a parsed line; ``deep``: values nested too deep were cut (reject the spans holding one)."""
    if type(document) is not dict:
        message = _DEEP_LINE_MESSAGE if deep else _not_traces(document)
        raise CorruptLineError(message, source=source, line_number=line_number)
    for top in _RESOURCE_SPANS_KEYS:
        if top in document:
            resource_spans = document[top]
            break
    else:
        for key, signal in _OTHER_SIGNALS.items():
            if key in document:
                return DecodedLine(spans=[], other_signal=signal)
        message = _DEEP_LINE_MESSAGE if deep else _not_traces(document)
        raise CorruptLineError(message, source=source, line_number=line_number)
    if resource_spans is None:  # protojson: null is the default value, an empty list
        resource_spans = []
    if type(resource_spans) is not list:
        raise CorruptLineError(
            f"expected '{top}' to be an array of ResourceSpans, got {_describe(resource_spans)}",
            source=source,
            line_number=line_number,
        )
    spans: list[StoredSpan] = []
    issues: list[DecodeIssue] = []
    skipped = 0
    append = spans.append
    for r_index, entry in enumerate(resource_spans):
        r_where = f"{top}[{r_index}]"
        if type(entry) is not dict:
            issues.append(
                DecodeIssue(source, line_number, r_where, f"expected a ResourceSpans object, got {_describe(entry)}")
            )
            continue
        scope_key = ""
        scope_spans = None
        for scope_key in _SCOPE_SPANS_KEYS:
            scope_spans = entry.get(scope_key)
            if scope_spans is not None:
                break
        if type(scope_spans) is not list:
            message = (
                "expected 'scopeSpans' (an array of ScopeSpans), got nothing"
                if scope_spans is None
                else f"expected 'scopeSpans' to be an array of ScopeSpans, got {_describe(scope_spans)}"
            )
            issues.append(DecodeIssue(source, line_number, r_where, message))
            continue
        try:
            if deep and foreign.holds_too_deep([v for k, v in entry.items() if k != scope_key]):
                raise RecursionError  # a value of the resource was nested too deep to parse: the same verdict
            resource = _resource(entry.get("resource"), _field(entry, "schemaUrl", "schema_url"))
        except RecursionError:
            problem = _too_deep("resource")
            count = _count_spans(scope_spans)
            skipped += count
            issues.append(
                DecodeIssue(
                    source, line_number, f"{r_where}.{problem.path}", f"{problem.message} ({count} spans skipped)"
                )
            )
            continue
        except _Invalid as problem:
            count = _count_spans(scope_spans)
            skipped += count
            issues.append(
                DecodeIssue(
                    source, line_number, f"{r_where}.{problem.path}", f"{problem.message} ({count} spans skipped)"
                )
            )
            continue
        scope_field, scope_snake = _SCOPE_KEYS[scope_key]
        for s_index, group in enumerate(scope_spans):
            s_where = f"{r_where}.{scope_key}[{s_index}]"
            if type(group) is not dict:
                issues.append(
                    DecodeIssue(source, line_number, s_where, f"expected a ScopeSpans object, got {_describe(group)}")
                )
                continue
            span_list = group.get("spans")
            if type(span_list) is not list:
                message = (
                    "expected 'spans' (an array of Span), got nothing"
                    if span_list is None
                    else f"expected 'spans' to be an array of Span, got {_describe(span_list)}"
                )
                issues.append(DecodeIssue(source, line_number, s_where, message))
                continue
            try:
                try:
                    if deep and foreign.holds_too_deep([v for k, v in group.items() if k != "spans"]):
                        raise RecursionError
                    scope = _scope(
                        _field(group, scope_field, scope_snake), _field(group, "schemaUrl", "schema_url"), scope_field
                    )
                except RecursionError:
                    raise _too_deep(scope_field) from None
            except _Invalid as problem:
                skipped += len(span_list)
                issues.append(
                    DecodeIssue(
                        source,
                        line_number,
                        f"{s_where}.{problem.path}",
                        f"{problem.message} ({len(span_list)} spans skipped)",
                    )
                )
                continue
            for index, obj in enumerate(span_list):
                if deep and foreign.holds_too_deep(obj):
                    skipped += 1
                    issues.append(DecodeIssue(source, line_number, f"{s_where}.spans[{index}]", _TOO_DEEP_MESSAGE))
                    continue
                try:
                    try:
                        append(_span(obj, resource, scope))
                    except RecursionError:
                        raise _too_deep("") from None
                except _Invalid as problem:
                    skipped += 1
                    where = f"{s_where}.spans[{index}]"
                    if problem.path:
                        where = f"{where}{'' if problem.path[0] == '[' else '.'}{problem.path}"
                    issues.append(DecodeIssue(source, line_number, where, problem.message))
    return DecodedLine(spans=spans, issues=issues, skipped_spans=skipped)


_DEEP_LINE_MESSAGE = "expected JSON nested a few hundred levels deep at most, got deeper nesting"
_TOO_DEEP_MESSAGE = "expected attribute values nested a few hundred levels deep at most, got deeper nesting"


def _too_deep(path: str) -> _Invalid:
    return _Invalid(path, _TOO_DEEP_MESSAGE)


def _count_spans(scope_spans: list[Any]) -> int:
    return sum(len(group["spans"]) for group in scope_spans if type(group) is dict and type(group.get("spans")) is list)


# --- the fast path: canonical camelCase lines, decoded by msgspec into typed structs -------------------------------
#
# What spanstore and the official exporters write is decoded into the typed structs below (msgspec validates the
# shape in C and allocates no dict per object), then converted by _fast_spans. Anything else -- an unknown or
# snake_case field, a number where a string is canonical, an id that is not lowercase hex, any invalid value --
# makes the fast path give up on the whole line (_Fallback), and the lenient path decodes it again from scratch and
# explains every problem. The two paths give identical results for every line the fast path accepts
# (tests/test_otlp.py checks this on random batches and on every sample file).


class _Fallback(Exception):
    """The fast path cannot decode this line exactly: decode it with the lenient path instead."""


# Constraints msgspec checks in C while decoding (a value outside them fails the typed decode: lenient path).
# Ids have their exact length here (their hex digits are checked in _fast_spans); times are 1-20 characters (their
# digits and the 64-bit range are checked there); counts fit 32 bits.
_FTraceId = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]
_FSpanId = Annotated[str, msgspec.Meta(min_length=16, max_length=16)]
_FTime = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
_FCount = Annotated[int, msgspec.Meta(ge=0, le=_UINT32_MAX)]
_FKind = Annotated[int, msgspec.Meta(ge=0, le=5)]
_FCode = Annotated[int, msgspec.Meta(ge=0, le=2)]


class _FAnyValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    stringValue: Union[str, None] = None  # noqa: UP007 - msgspec resolves these annotations at runtime on 3.10
    intValue: Union[str, None] = None  # noqa: UP007
    boolValue: Union[bool, None] = None  # noqa: UP007
    doubleValue: Union[float, str, None] = None  # noqa: UP007
    arrayValue: Union[_FArrayValue, None] = None  # noqa: UP007
    kvlistValue: Union[_FKeyValueList, None] = None  # noqa: UP007
    bytesValue: Union[bytes, None] = None  # noqa: UP007


# Sequences are tuples, not lists: an absent one is the shared empty tuple (no allocation), and tuples of these
# untracked structs leave the cyclic GC little to do while a line is decoded.
class _FArrayValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    values: tuple[_FAnyValue, ...] = ()


class _FKeyValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    key: str = ""
    value: Union[_FAnyValue, None] = None  # noqa: UP007


class _FKeyValueList(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    values: tuple[_FKeyValue, ...] = ()


class _FStatus(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    message: str = ""
    code: _FCode = 0


class _FEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    timeUnixNano: _FTime = "0"
    name: str = ""
    attributes: tuple[_FKeyValue, ...] = ()
    droppedAttributesCount: _FCount = 0


class _FLink(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    traceId: _FTraceId
    spanId: _FSpanId
    traceState: str = ""
    attributes: tuple[_FKeyValue, ...] = ()
    droppedAttributesCount: _FCount = 0
    flags: _FCount = 0


class _FSpan(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    traceId: _FTraceId
    spanId: _FSpanId
    traceState: str = ""
    parentSpanId: str = ""
    flags: _FCount = 0
    name: str = ""
    kind: _FKind = 0
    startTimeUnixNano: _FTime = "0"
    endTimeUnixNano: _FTime = "0"
    attributes: tuple[_FKeyValue, ...] = ()
    droppedAttributesCount: _FCount = 0
    events: tuple[_FEvent, ...] = ()
    droppedEventsCount: _FCount = 0
    links: tuple[_FLink, ...] = ()
    droppedLinksCount: _FCount = 0
    status: Union[_FStatus, None] = None  # noqa: UP007


class _FScope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: str = ""
    version: str = ""
    attributes: tuple[_FKeyValue, ...] = ()
    droppedAttributesCount: _FCount = 0


class _FResource(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    attributes: tuple[_FKeyValue, ...] = ()
    droppedAttributesCount: _FCount = 0


class _FScopeSpans(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    spans: tuple[_FSpan, ...]  # required: the lenient path reports a ScopeSpans without spans
    scope: Union[_FScope, None] = None  # noqa: UP007
    schemaUrl: str = ""


class _FResourceSpans(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    scopeSpans: tuple[_FScopeSpans, ...]  # required: the lenient path reports a ResourceSpans without scopeSpans
    resource: Union[_FResource, None] = None  # noqa: UP007
    schemaUrl: str = ""


class _FTracesData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    resourceSpans: tuple[_FResourceSpans, ...]


_fast_decoder = msgspec.json.Decoder(_FTracesData)


def _fast_any(value: _FAnyValue | None) -> Any:
    if value is None:
        return None
    text = value.stringValue
    rest_unset = (
        value.arrayValue is None and value.kvlistValue is None and value.bytesValue is None
    )  # checked below with the scalars: exactly one field may be set, as the lenient path insists
    if text is not None:
        if rest_unset and value.intValue is None and value.boolValue is None and value.doubleValue is None:
            return _intern(text) if len(text) <= _INTERN_MAX_LEN else text
        raise _Fallback
    number = value.intValue
    if number is not None:
        if rest_unset and value.boolValue is None and value.doubleValue is None:
            if len(number) < 19 and number.isdigit() and number.isascii():
                return int(number)
            try:
                return _int64_value(number)
            except _Invalid:
                raise _Fallback from None
        raise _Fallback
    flag = value.boolValue
    if flag is not None:
        if rest_unset and value.doubleValue is None:
            return flag
        raise _Fallback
    double = value.doubleValue
    if double is not None:
        if not rest_unset:
            raise _Fallback
        if type(double) is float:
            return double
        special = _SPECIAL_FLOATS.get(double)
        if special is None:
            raise _Fallback
        return special
    if value.arrayValue is not None:
        if value.kvlistValue is not None or value.bytesValue is not None:
            raise _Fallback
        return tuple(map(_fast_any, value.arrayValue.values))
    if value.kvlistValue is not None:
        if value.bytesValue is not None:
            raise _Fallback
        pairs = value.kvlistValue.values
        return _fast_attributes(pairs) if pairs else EMPTY_ATTRIBUTES
    return value.bytesValue  # bytes (msgspec checked the base64), or None for an empty AnyValue


def _fast_attributes(pairs: tuple[_FKeyValue, ...]) -> AttributeMap:
    """The AttributeMap of a non-empty KeyValue tuple (the key tuple shared, as AttributeMap.from_pairs shares it)."""
    values = []
    append = values.append
    intern = _intern
    for pair in pairs:
        value = pair.value
        # Strings and small non-negative ints (most values) here; the rest, and every oddity, in _fast_any.
        if value is not None and value.arrayValue is None and value.kvlistValue is None and value.bytesValue is None:
            text = value.stringValue
            if text is not None:
                if value.intValue is None and value.boolValue is None and value.doubleValue is None:
                    append(intern(text) if len(text) <= _INTERN_MAX_LEN else text)
                    continue
            else:
                text = value.intValue
                if (
                    text is not None
                    and value.boolValue is None
                    and value.doubleValue is None
                    and len(text) < 19
                    and text.isdigit()
                    and text.isascii()
                ):
                    append(int(text))
                    continue
        append(_fast_any(value))
    keys = tuple(map(_key_of, pairs))
    shared = _shared_key_tuples.get(keys)
    return AttributeMap(shared if shared is not None else share_keys(keys), tuple(values))


_key_of = operator.attrgetter("key")


def _fast_time(value: str) -> int:
    if value.isdigit() and value.isascii():  # msgspec checked the length: 1 to 20
        number = int(value)
        if number <= _UINT64_MAX:
            return number
    raise _Fallback


def _fast_event(event: _FEvent) -> SpanEvent:
    attributes = event.attributes
    return SpanEvent(
        name=_intern(event.name),
        time_unix_nano=_fast_time(event.timeUnixNano),
        attributes=_fast_attributes(attributes) if attributes else EMPTY_ATTRIBUTES,
        dropped_attributes_count=event.droppedAttributesCount,
    )


def _fast_link(link: _FLink) -> SpanLink:
    trace_id = link.traceId
    span_id = link.spanId
    if (trace_id + span_id).strip(_LOWER_HEX):
        raise _Fallback
    attributes = link.attributes
    return SpanLink(
        trace_id=_intern(trace_id),
        span_id=_intern(span_id),
        trace_state=link.traceState,
        attributes=_fast_attributes(attributes) if attributes else EMPTY_ATTRIBUTES,
        dropped_attributes_count=link.droppedAttributesCount,
        flags=link.flags,
    )


def _fast_resource(resource: _FResource | None, schema_url: str) -> Resource:
    if resource is None:
        attributes = EMPTY_ATTRIBUTES
        dropped = 0
    else:
        attributes = _fast_attributes(resource.attributes) if resource.attributes else EMPTY_ATTRIBUTES
        dropped = resource.droppedAttributesCount
    if not attributes and not dropped and not schema_url:
        return EMPTY_RESOURCE
    return _shared(
        _shared_resources, Resource(attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped)
    )


def _fast_scope(scope: _FScope | None, schema_url: str) -> Scope:
    if scope is None:
        name = version = ""
        attributes = EMPTY_ATTRIBUTES
        dropped = 0
    else:
        name = _intern(scope.name)
        version = _intern(scope.version)
        attributes = _fast_attributes(scope.attributes) if scope.attributes else EMPTY_ATTRIBUTES
        dropped = scope.droppedAttributesCount
    if not name and not version and not attributes and not dropped and not schema_url:
        return EMPTY_SCOPE
    return _shared(
        _shared_scopes,
        Scope(
            name=name, version=version, attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped
        ),
    )


def _fast_spans(line: bytes | str) -> list[StoredSpan] | None:
    """Every span of a canonical line, or None when the lenient path must decode it (see _Fallback).

    msgspec has checked the shape, the types, the id and time lengths and the ranges of every number; what is left
    per span is the hex digits of its ids and the decimal digits of its times (one C call for each group), interning
    and building the StoredSpan: everything in this one loop, no function call per span but the StoredSpan's own.
    """
    try:
        document = _fast_decoder.decode(line)
        spans: list[StoredSpan] = []
        append = spans.append
        kinds = _KINDS
        codes = _STATUS_CODES
        unset = StatusCode.UNSET
        intern = _intern
        hex_digits = _LOWER_HEX
        attributes_of = _fast_attributes
        no_attributes = EMPTY_ATTRIBUTES
        uint64_max = _UINT64_MAX
        trace_ids: dict[str, str] = {}  # the trace ids of this line already checked, interned
        for resource_spans in document.resourceSpans:
            resource = _fast_resource(resource_spans.resource, resource_spans.schemaUrl)
            for scope_spans in resource_spans.scopeSpans:
                scope = _fast_scope(scope_spans.scope, scope_spans.schemaUrl)
                for span in scope_spans.spans:
                    trace_id = span.traceId
                    known = trace_ids.get(trace_id)  # spans of a trace travel together: one check per trace
                    if known is None:
                        if trace_id.strip(hex_digits):
                            raise _Fallback
                        known = trace_ids[trace_id] = intern(trace_id)
                    span_id = span.spanId
                    parent = span.parentSpanId
                    if parent:
                        if len(parent) != 16 or (span_id + parent).strip(hex_digits):
                            raise _Fallback
                        parent = intern(parent)
                    elif span_id.strip(hex_digits):
                        raise _Fallback
                    else:
                        parent = None
                    start = span.startTimeUnixNano
                    end = span.endTimeUnixNano
                    digits = start + end
                    if not digits.isdigit() or not digits.isascii():
                        raise _Fallback
                    start_ns = int(start)
                    end_ns = int(end)
                    if start_ns > uint64_max or end_ns > uint64_max:  # only 20 digits can be
                        raise _Fallback
                    status = span.status
                    attributes = span.attributes
                    attributes = attributes_of(attributes) if attributes else no_attributes
                    if status is None:
                        code = unset
                        message = ""
                    else:
                        code = codes[status.code]
                        message = status.message
                    events = span.events
                    links = span.links
                    trace_state = span.traceState
                    dropped_attributes = span.droppedAttributesCount
                    dropped_events = span.droppedEventsCount
                    dropped_links = span.droppedLinksCount
                    if (
                        message
                        or events
                        or links
                        or trace_state
                        or dropped_attributes
                        or dropped_events
                        or dropped_links
                    ):
                        append(
                            StoredSpan(
                                trace_id=known,
                                span_id=intern(span_id),
                                parent_span_id=parent,
                                name=intern(span.name),
                                kind=kinds[span.kind],
                                start_time_unix_nano=start_ns,
                                end_time_unix_nano=end_ns,
                                status_code=code,
                                status_message=message,
                                attributes=attributes,
                                events=tuple(map(_fast_event, events)) if events else (),
                                links=tuple(map(_fast_link, links)) if links else (),
                                resource=resource,
                                scope=scope,
                                trace_state=trace_state,
                                flags=span.flags,
                                dropped_attributes_count=dropped_attributes,
                                dropped_events_count=dropped_events,
                                dropped_links_count=dropped_links,
                            )
                        )
                    else:  # the common span: the fields left out are their defaults (each keyword costs ~40 ns)
                        append(
                            StoredSpan(
                                trace_id=known,
                                span_id=intern(span_id),
                                parent_span_id=parent,
                                name=intern(span.name),
                                kind=kinds[span.kind],
                                start_time_unix_nano=start_ns,
                                end_time_unix_nano=end_ns,
                                status_code=code,
                                attributes=attributes,
                                resource=resource,
                                scope=scope,
                                flags=span.flags,
                            )
                        )
    except (msgspec.DecodeError, _Fallback, RecursionError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    return spans


def decode_line(line: bytes | str, *, source: str = "<memory>", line_number: int = 1) -> DecodedLine:
    """Decode one OTLP/JSON line (or a whole JSON document) into spans, leniently.

    Accepts ``TracesData``, ``ExportTraceServiceRequest`` (the same shape) and Tempo's ``{"batches": [...]}``, in
    camelCase or snake_case. Spans that are not valid OTLP are skipped and explained in ``.issues`` (with
    ``source``/``line_number`` and a JSON path); the valid spans beside them load. A metrics, logs or profiles
    line gives no spans and sets ``.other_signal``.

    Raises :class:`~spanstore.errors.CorruptLineError` (carrying ``source`` and ``line_number``) when the line is
    not JSON or not a ``TracesData``-shaped object.

    Cost: O(line length). Concurrency: thread-safe.

    >>> good = b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","kind":"SERVER"}'
    >>> decoded = decode_line(b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + good + b',{"traceId":"zzz"}]}]}]}')
    >>> [(s.trace_id, s.kind.name) for s in decoded.spans]
    [('5b8efff798038103d269b633813fc60c', 'SERVER')]
    >>> print(decoded.issues[0].where); print(decoded.issues[0].message)
    resourceSpans[0].scopeSpans[0].spans[1].traceId
    expected a trace id of 32 hex characters (or base64 of 16 bytes), got 'zzz'
    """
    spans = _fast_spans(line)
    if spans is not None:
        return DecodedLine(spans=spans)
    document, deep = _parse(line, source, line_number)
    return _decode_document(document, source, line_number, deep)


#: Containers nested deeper than this in a line too deep for msgspec are replaced by TOO_DEEP before decoding.
_CUT_DEPTH = 200
_JSON_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _cut_deep(data: bytes) -> bytes:
    """``data`` with every JSON array or object opened deeper than ``_CUT_DEPTH`` replaced by the TOO_DEEP string.

    O(len(data)), no recursion: so a line holding one absurdly nested value still parses, and only the span (or
    resource, or scope) holding that value is rejected, not its valid neighbours on the line.
    """
    out = []
    depth = 0
    last = 0
    cut_from = -1
    limit = _CUT_DEPTH
    for match in _JSON_STRING_OR_BRACKET.finditer(data):
        start = match.start()
        char = data[start]
        if char == 0x22:  # a string: skipped whole, brackets inside it do not count
            continue
        if char == 0x5B or char == 0x7B:  # [ {
            depth += 1
            if depth == limit + 1:
                cut_from = start
        else:
            if depth == limit + 1 and cut_from >= 0:
                out.append(data[last:cut_from])
                out.append(foreign.TOO_DEEP_JSON)
                last = match.end()
                cut_from = -1
            depth -= 1
    out.append(data[last:])
    return b"".join(out)


def _parse(data: bytes | str, source: str, line_number: int) -> tuple[Any, bool]:
    """JSON to builtins with msgspec; stdlib json as a fallback for what msgspec refuses but JSON writers emit.

    The fallback covers escaped lone surrogates (``"\\ud800"``, which Python's json writes for such strings)
    and bare ``NaN``/``Infinity``; it costs nothing on the normal path. Returns the document and whether values
    nested too deep were replaced by :data:`spanstore.foreign.TOO_DEEP` (the spans holding one must be rejected).
    """
    try:
        return _parse_flat(data, source, line_number), False
    except RecursionError:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        try:
            return _parse_flat(_cut_deep(bytes(data)), source, line_number), True
        except RecursionError:
            raise CorruptLineError(
                _DEEP_LINE_MESSAGE,
                source=source,
                line_number=line_number,
            ) from None


def _parse_flat(data: bytes | str, source: str, line_number: int) -> Any:
    """_parse for a line nested less deeply than msgspec's limit (RecursionError otherwise)."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as error:
        raise CorruptLineError(
            f"expected UTF-8 text, got invalid bytes ({error})", source=source, line_number=line_number
        ) from None
    except msgspec.DecodeError as error:
        # Classify by our own checks, never by msgspec's wording, which changes between releases.
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError as utf8_error:
                raise CorruptLineError(
                    f"expected UTF-8 text, got invalid bytes ({utf8_error})", source=source, line_number=line_number
                ) from None
        try:
            # The stdlib reads escaped lone surrogates ("\ud800") that msgspec refuses: replace them here, as
            # the log would on writing, so an imported span in memory equals the same span read back.
            return _without_surrogates(json.loads(data))
        except json.JSONDecodeError as json_error:
            if json_error.msg == "Extra data":  # more than one document on the line
                raise CorruptLineError(
                    f"expected one JSON object, got more after it ({error})", source=source, line_number=line_number
                ) from None
            raise CorruptLineError(
                f"expected a JSON object, got invalid JSON ({error})", source=source, line_number=line_number
            ) from None
        except (ValueError, RecursionError):
            raise CorruptLineError(
                f"expected a JSON object, got invalid JSON ({error})", source=source, line_number=line_number
            ) from None


def read_file(path: str | os.PathLike[str]) -> ReadResult:
    """Read every span of an OTLP/JSON file: one JSON document, or JSON Lines, whatever the extension.

    A file that starts with ``{`` or ``[`` and parses as a whole is one document (``TracesData``,
    ``ExportTraceServiceRequest`` or Tempo's ``{"batches": [...]}``); anything else is read line by line (blank
    lines skipped). Bad content never raises: corrupt lines, other signals and invalid spans are counted and
    explained in the result. Raises :class:`~spanstore.errors.StorageError` only when the file cannot be read.

    Cost: O(file size), all in memory. Concurrency: thread-safe.

    >>> import pathlib, tempfile
    >>> span = StoredSpan(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    ...                   name="GET /cart", start_time_unix_nano=1_000, end_time_unix_nano=2_000)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     file = pathlib.Path(tmp, "spans.jsonl")
    ...     _ = file.write_bytes(b"".join(encode_spans([span])) + b"not json\\n")
    ...     result = read_file(file)
    >>> result.spans == [span], result.lines, len(result.corrupt_lines)
    (True, 2, 1)
    """
    source = os.fspath(path)
    if isinstance(source, bytes):
        source = source.decode(errors="replace")
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise StorageError(f"cannot read {source!r}: {error.strerror or error}") from error
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    result = ReadResult(spans=[])
    head = data.lstrip()[:1]
    if head in (b"{", b"["):
        spans = _fast_spans(data)
        if spans is not None:
            result.lines = 1
            result.spans = spans
            return result
        try:
            document, deep = _parse(data, source, 1)
        except CorruptLineError:
            pass
        else:
            result.lines = 1
            _add(result, document, source, 1, deep)
            return result
    # BytesIO yields one line at a time (split at "\n" only): no list of a million line objects at once.
    for number, line in enumerate(io.BytesIO(data), start=1):
        if not line.strip():
            continue
        result.lines += 1
        if line[-1:] == b"\n":
            line = line[:-1]
        spans = _fast_spans(line)
        if spans is not None:
            result.spans.extend(spans)
            continue
        try:
            document, deep = _parse(line, source, number)
        except CorruptLineError as error:
            result.add_corrupt_line(error)
            continue
        _add(result, document, source, number, deep)
    return result


def _add(result: ReadResult, document: Any, source: str, line_number: int, deep: bool = False) -> None:
    if foreign.recognize(document) is not None:  # a Zipkin or Jaeger file: converted, for import
        spans, issues = foreign.convert(document, source, line_number, deep)
        result.spans.extend(spans)
        result.add_issues(issues)
        result.skipped_spans += len(issues)
        return
    try:
        decoded = _decode_document(document, source, line_number, deep)
    except CorruptLineError as error:
        result.add_corrupt_line(error)
        return
    if decoded.other_signal is not None:
        result.other_signal_lines += 1
    result.spans.extend(decoded.spans)
    result.add_issues(decoded.issues)
    result.skipped_spans += decoded.skipped_spans
