"""OTLP protobuf: an ``ExportTraceServiceRequest`` body to :class:`~spanstore.StoredSpan`\\ s, and responses back.

The receiver of ``spanstore serve`` takes OTLP/HTTP in both encodings: JSON goes through the JSON codec
(:func:`spanstore.otlp.decode_line`), protobuf comes here. Parsing is ``opentelemetry-proto``'s generated
messages (the ``upb`` C parser under ``protobuf``), then one pass converts the messages into the same immutable,
interned spans the JSON codec makes: ids as lowercase hex, enums as :class:`~spanstore.SpanKind` and
:class:`~spanstore.StatusCode`, every ``AnyValue`` kind (arrays, key-value lists and bytes included).

A span that is not valid OTLP is skipped and explained, the spans beside it kept (the receiver reports them as a
``partial_success``): a trace id that is not 16 bytes or is all zero, a span id that is not 8 bytes or is all zero,
a parent span id that is neither empty nor 8 bytes, a link with such ids, a kind or status code outside the enum.
An all-zero parent span id means a root, as an empty one does (some clients send zeros).

``opentelemetry-proto`` is optional (``pip install 'spanstore[serve]'``): importing it happens on the first
decode, and a missing package raises :class:`ProtobufUnavailableError` saying what to install.

Thread-safe: no shared state but a bounded cache of equal resources and scopes (shared by value, as the JSON codec
shares them).
"""

from __future__ import annotations

import sys
from typing import Any

from spanstore.errors import SpanStoreError
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
)
from spanstore.otlp import DecodedLine, DecodeIssue

__all__ = [
    "ProtobufUnavailableError",
    "decode_request",
    "encode_response",
    "encode_status",
    "invalid_id_issue",
]

_intern = sys.intern
_INTERN_MAX_LEN = 64
_SHARED_MAX = 4096
_shared: dict[Any, Any] = {}
_KINDS = tuple(SpanKind)
_CODES = tuple(StatusCode)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SOURCE = "request"


class ProtobufUnavailableError(SpanStoreError, ImportError):
    """``opentelemetry-proto`` (the ``serve`` extra) is not installed, so protobuf bodies cannot be read."""


_messages: Any = None


def _load() -> Any:
    global _messages
    if _messages is None:
        try:
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        except ImportError as error:
            raise ProtobufUnavailableError(
                "OTLP protobuf needs the opentelemetry-proto package: pip install 'spanstore[serve]' "
                f"(or send application/json) ({error})"
            ) from None
        _messages = trace_service_pb2
    return _messages


class _Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _share(obj: Any) -> Any:
    found = _shared.get(obj)
    if found is not None:
        return found
    if len(_shared) >= _SHARED_MAX:
        _shared.clear()
    _shared[obj] = obj
    return obj


def _any(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        text = value.string_value
        return _intern(text) if len(text) <= _INTERN_MAX_LEN else text
    if which == "array_value":
        return tuple(_any(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)  # bool, int (int64), float (double), bytes


def _attributes(pairs: Any) -> AttributeMap:
    if not pairs:
        return EMPTY_ATTRIBUTES
    keys = []
    values = []
    for pair in pairs:
        keys.append(pair.key)
        value = pair.value
        if value.WhichOneof("value") == "string_value":
            text = value.string_value
            values.append(_intern(text) if len(text) <= _INTERN_MAX_LEN else text)
        else:
            values.append(_any(value))
    return AttributeMap.from_pairs(keys, values)


def _trace_id(raw: bytes, where: str) -> str:
    if len(raw) != 16:
        raise _Invalid(where, f"expected a trace id of 16 bytes, got {len(raw)} bytes")
    text = raw.hex()
    if text == _ZERO_TRACE:
        raise _Invalid(where, "expected a trace id that is not all zero, got 00000000000000000000000000000000")
    return _intern(text)


def _span_id(raw: bytes, where: str) -> str:
    if len(raw) != 8:
        raise _Invalid(where, f"expected a span id of 8 bytes, got {len(raw)} bytes")
    text = raw.hex()
    if text == _ZERO_SPAN:
        raise _Invalid(where, "expected a span id that is not all zero, got 0000000000000000")
    return _intern(text)


def _parent_id(raw: bytes) -> str | None:
    if not raw:
        return None
    if len(raw) != 8:
        raise _Invalid("parentSpanId", f"expected an empty parent span id or 8 bytes, got {len(raw)} bytes")
    text = raw.hex()
    return None if text == _ZERO_SPAN else _intern(text)


def _resource(resource_spans: Any) -> Resource:
    if not resource_spans.HasField("resource") and not resource_spans.schema_url:
        return EMPTY_RESOURCE
    resource = resource_spans.resource
    attributes = _attributes(resource.attributes)
    dropped = resource.dropped_attributes_count
    schema_url = resource_spans.schema_url
    if not attributes and not dropped and not schema_url:
        return EMPTY_RESOURCE
    return _share(Resource(attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped))


def _scope(scope_spans: Any) -> Scope:
    scope = scope_spans.scope
    name = _intern(scope.name)
    version = _intern(scope.version)
    attributes = _attributes(scope.attributes)
    dropped = scope.dropped_attributes_count
    schema_url = scope_spans.schema_url
    if not name and not version and not attributes and not dropped and not schema_url:
        return EMPTY_SCOPE
    return _share(
        Scope(
            name=name, version=version, attributes=attributes, schema_url=schema_url, dropped_attributes_count=dropped
        )
    )


def _event(event: Any) -> SpanEvent:
    return SpanEvent(
        name=_intern(event.name),
        time_unix_nano=event.time_unix_nano,
        attributes=_attributes(event.attributes),
        dropped_attributes_count=event.dropped_attributes_count,
    )


def _link(link: Any, index: int) -> SpanLink:
    return SpanLink(
        trace_id=_trace_id(link.trace_id, f"links[{index}].traceId"),
        span_id=_span_id(link.span_id, f"links[{index}].spanId"),
        trace_state=link.trace_state,
        attributes=_attributes(link.attributes),
        dropped_attributes_count=link.dropped_attributes_count,
        flags=link.flags,
    )


def _span(span: Any, resource: Resource, scope: Scope) -> StoredSpan:
    kind = span.kind
    if not 0 <= kind < len(_KINDS):
        raise _Invalid("kind", f"expected a SpanKind (0 to 5), got {kind}")
    status = span.status
    code = status.code
    if not 0 <= code < len(_CODES):
        raise _Invalid("status.code", f"expected a status code (0 to 2), got {code}")
    events = span.events
    links = span.links
    return StoredSpan(
        trace_id=_trace_id(span.trace_id, "traceId"),
        span_id=_span_id(span.span_id, "spanId"),
        parent_span_id=_parent_id(span.parent_span_id),
        name=_intern(span.name),
        kind=_KINDS[kind],
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        status_code=_CODES[code],
        status_message=status.message,
        attributes=_attributes(span.attributes),
        events=tuple(map(_event, events)) if events else (),
        links=tuple(_link(link, i) for i, link in enumerate(links)) if links else (),
        resource=resource,
        scope=scope,
        trace_state=span.trace_state,
        flags=span.flags,
        dropped_attributes_count=span.dropped_attributes_count,
        dropped_events_count=span.dropped_events_count,
        dropped_links_count=span.dropped_links_count,
    )


def decode_request(body: bytes) -> DecodedLine:
    """Decode a protobuf ``ExportTraceServiceRequest`` into spans, skipping (and explaining) invalid spans.

    Returns a :class:`~spanstore.otlp.DecodedLine`: the valid spans, one :class:`~spanstore.otlp.DecodeIssue` per
    skipped span (``where`` a path such as ``resourceSpans[0].scopeSpans[0].spans[3].traceId``), and
    ``skipped_spans``. Raises ValueError when the body is not a protobuf ``ExportTraceServiceRequest`` at all, and
    :class:`ProtobufUnavailableError` without ``opentelemetry-proto``. Cost: O(body). Thread-safe.
    """
    messages = _load()
    request = messages.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as error:  # protobuf's DecodeError; the upb backend raises it with little detail
        raise ValueError(
            f"expected a protobuf ExportTraceServiceRequest, got bytes that do not parse ({error})"
        ) from None
    spans: list[StoredSpan] = []
    issues: list[DecodeIssue] = []
    skipped = 0
    for r_index, resource_spans in enumerate(request.resource_spans):
        resource = _resource(resource_spans)
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            scope = _scope(scope_spans)
            for index, span in enumerate(scope_spans.spans):
                try:
                    spans.append(_span(span, resource, scope))
                except _Invalid as problem:
                    skipped += 1
                    where = f"resourceSpans[{r_index}].scopeSpans[{s_index}].spans[{index}].{problem.where}"
                    issues.append(DecodeIssue(_SOURCE, 1, where, problem.message))
    return DecodedLine(spans=spans, issues=issues, skipped_spans=skipped)


def invalid_id_issue(span: StoredSpan) -> str | None:
    """Why a decoded span's ids make it invalid OTLP (all-zero trace or span id), or None when they are fine.

    The JSON codec reads an empty id as the all-zero id (lenient, for files); a receiver refuses such spans.
    """
    if span.trace_id == _ZERO_TRACE:
        return "traceId: expected a trace id that is not all zero"
    if span.span_id == _ZERO_SPAN:
        return "spanId: expected a span id that is not all zero"
    return None


def encode_response(rejected_spans: int, error_message: str) -> bytes:
    """A protobuf ``ExportTraceServiceResponse``; ``partial_success`` set when spans were rejected or a message
    is given (an all-accepted response leaves it unset, as the specification asks)."""
    messages = _load()
    response = messages.ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    return response.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_status(code: int, message: str) -> bytes:
    """A protobuf ``google.rpc.Status`` (``code``, ``message``): the body of an OTLP/HTTP error response.

    Hand-encoded (two fields) so the receiver needs no googleapis-common-protos.

    >>> encode_status(3, "bad")
    b'\\x08\\x03\\x12\\x03bad'
    """
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
