"""Zipkin v2 and Jaeger JSON, converted into spans: for importing traces that other systems wrote.

spanstore's own format is OTLP (see :mod:`spanstore.otlp`); these converters only serve
:func:`spanstore.otlp.read_file` (and so ``spanstore import``) when a file holds one of these documents:

* **Zipkin v2**: a JSON array of span objects (or one span object), as Zipkin's API and ``zipkin-lens`` write;
* **Jaeger**: the query API's ``{"data": [trace, ...]}`` (or ``{"data": trace}``), or one trace object
  ``{"traceID", "spans", "processes"}`` as the Jaeger UI downloads it.

The mapping follows the OpenTelemetry Collector's Zipkin and Jaeger translators: 64-bit ids are left-padded to
128 bits; microseconds become nanoseconds; the ``error`` tag (and Jaeger's ``otel.status_code``) gives status
ERROR; Zipkin annotations and Jaeger logs become events; Jaeger's ``span.kind`` tag becomes the kind; a Jaeger
span's first ``CHILD_OF`` reference is its parent and every other reference a link; the local endpoint / process
becomes the resource (``service.name``). A span that cannot be converted is skipped and reported.

>>> spans, issues = convert([{"traceId": "1e223ff1f80f1c69", "id": "bf396325699c84bf", "kind": "SERVER",
...     "name": "get", "timestamp": 1470150004071068, "duration": 99411,
...     "localEndpoint": {"serviceName": "servicea"}, "tags": {"error": "timeout"}}], "zipkin.json", 1)
>>> span = spans[0]
>>> span.trace_id, span.kind.name, span.service_name, span.status_code.name, span.duration_ns, issues
('00000000000000001e223ff1f80f1c69', 'SERVER', 'servicea', 'ERROR', 99411000, [])
"""

from __future__ import annotations

import base64
import binascii
import sys
from typing import Any

from spanstore.model import (
    EMPTY_ATTRIBUTES,
    AttributeMap,
    Resource,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
)

__all__ = ["convert", "recognize"]

_HEX = frozenset("0123456789abcdefABCDEF")
_ZIPKIN_KINDS = {
    "CLIENT": SpanKind.CLIENT,
    "SERVER": SpanKind.SERVER,
    "PRODUCER": SpanKind.PRODUCER,
    "CONSUMER": SpanKind.CONSUMER,
}
_JAEGER_KINDS = {
    "client": SpanKind.CLIENT,
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}


def recognize(document: Any) -> str | None:
    """``"zipkin"``, ``"jaeger"`` or None (not a document this module converts).

    >>> recognize([{"traceId": "1", "id": "2"}]), recognize({"data": []}), recognize({"resourceSpans": []})
    ('zipkin', 'jaeger', None)
    """
    if isinstance(document, list):
        if document and all(isinstance(item, dict) for item in document) and "traceId" in document[0]:
            return "zipkin"
        return None
    if not isinstance(document, dict) or "resourceSpans" in document or "resource_spans" in document:
        return None
    if "traceId" in document and "id" in document:
        return "zipkin"
    data = document.get("data")
    if isinstance(data, list) or (isinstance(data, dict) and "spans" in data):
        return "jaeger"
    if isinstance(document.get("spans"), list) and ("traceID" in document or "processes" in document):
        return "jaeger"
    return None


class _Invalid(ValueError):
    pass


_MAX_NANOS = 2**64  # OTLP times are fixed64 nanoseconds

#: What a reader puts in place of a value nested too deep to parse (see ``spanstore.otlp._cut_deep``): a string no
#: JSON writer emits, so the span (resource, scope) holding it is rejected and its neighbours are kept.
TOO_DEEP = "\x00spanstore:nested-too-deep"
TOO_DEEP_JSON = b'"\\u0000spanstore:nested-too-deep"'


def holds_too_deep(value: Any) -> bool:
    """True when ``value`` holds :data:`TOO_DEEP` anywhere (an iterative walk: O(size), no recursion)."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        if type(item) is dict:
            push(item.values())
        elif type(item) is list:
            push(item)
        elif item == TOO_DEEP:
            return True
    return False


def _clip(value: Any, width: int = 60) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # ValueError: an integer past sys.get_int_max_str_digits()
        text = f"<a {type(value).__name__} too big to show>"
    return text if len(text) <= width else text[: width - 3] + "..."


def _span_or_issue(
    make: Any, where: str, spans: list[StoredSpan], issues: list[Any], source: str, line: int, item: Any, deep: bool
) -> None:
    """Convert one span into ``spans``, or explain in ``issues`` why not: never raises, whatever the input."""
    from spanstore.otlp import DecodeIssue

    try:
        if deep and holds_too_deep(item):
            raise RecursionError
        spans.append(make())
    except _Invalid as error:
        issues.append(DecodeIssue(source, line, where, str(error)))
    except RecursionError:
        issues.append(DecodeIssue(source, line, where, "expected values nested a few hundred levels at most"))
    except Exception as error:  # hostile input must cost one span, never the import: say what it was
        issues.append(
            DecodeIssue(
                source, line, where, f"expected a valid span, got one that is not ({type(error).__name__}: {error})"
            )
        )


def convert(document: Any, source: str, line_number: int, deep: bool = False) -> tuple[list[StoredSpan], list[Any]]:
    """The spans of a Zipkin or Jaeger document and a :class:`~spanstore.otlp.DecodeIssue` per skipped span.

    Never raises: a span that cannot be converted (whatever its shape) costs that span alone, and a trace or
    document of the wrong shape costs its spans; each gets an issue saying where (``source``, ``line_number``,
    a JSON path) and what was expected. ``deep``: values nested too deep to parse were replaced by
    :data:`TOO_DEEP`, and a span holding one is rejected.
    """
    from spanstore.otlp import DecodeIssue

    kind = recognize(document)
    spans: list[StoredSpan] = []
    issues: list[Any] = []
    if kind == "zipkin":
        items = document if isinstance(document, list) else [document]
        for index, item in enumerate(items):
            _span_or_issue(
                lambda item=item: _zipkin_span(item),
                f"[{index}] (Zipkin span)",
                spans,
                issues,
                source,
                line_number,
                item,
                deep,
            )
    elif kind == "jaeger":
        data = document.get("data", document)
        traces = data if isinstance(data, list) else [data]
        for t, trace in enumerate(traces):
            if not isinstance(trace, dict):
                issues.append(
                    DecodeIssue(source, line_number, f"data[{t}]", f"expected a trace object, got {_clip(trace)}")
                )
                continue
            processes = trace.get("processes") or {}
            if not isinstance(processes, dict):
                processes = {}
                issues.append(
                    DecodeIssue(
                        source,
                        line_number,
                        f"data[{t}].processes",
                        f"expected an object of processes, got {_clip(trace.get('processes'))} (ignored)",
                    )
                )
            if deep:
                for key in [key for key, process in processes.items() if holds_too_deep(process)]:
                    del processes[key]
                    issues.append(
                        DecodeIssue(
                            source,
                            line_number,
                            f"data[{t}].processes.{key}",
                            "expected values nested a few hundred levels at most (process ignored)",
                        )
                    )
            trace_spans = trace.get("spans") or []
            if not isinstance(trace_spans, list):
                issues.append(
                    DecodeIssue(
                        source, line_number, f"data[{t}].spans", f"expected an array of spans, got {_clip(trace_spans)}"
                    )
                )
                continue
            for index, item in enumerate(trace_spans):
                _span_or_issue(
                    lambda item=item, processes=processes: _jaeger_span(item, processes),
                    f"data[{t}].spans[{index}] (Jaeger span)",
                    spans,
                    issues,
                    source,
                    line_number,
                    item,
                    deep,
                )
    return spans, issues


def _object(value: Any, name: str) -> dict[str, Any]:
    """``value`` if a JSON object, ``{}`` if absent or null; else the span is invalid."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{name}: expected an object, got {_clip(value)}")
    return value


def _array(value: Any, name: str) -> list[Any]:
    """``value`` if a JSON array, ``[]`` if absent or null; else the span is invalid."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{name}: expected an array, got {_clip(value)}")
    return value


def _end_time(start: int, duration: int, name: str) -> int:
    end = start + duration
    if end >= _MAX_NANOS:
        raise _Invalid(f"{name}: expected an end time before 2^64 ns (year 2554), got {end} ns")
    return end


def _hex_id(value: Any, length: int, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > length or not set(value) <= _HEX:
        raise _Invalid(f"{name}: expected up to {length} hex characters, got {value!r}")
    return sys.intern(value.lower().zfill(length))


def _micros(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(f"{name}: expected microseconds as an integer, got {_clip(value)}")
    try:
        micros = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 parses as infinity
        raise _Invalid(f"{name}: expected microseconds as an integer, got {_clip(value)}") from None
    if not 0 <= micros < _MAX_NANOS // 1000:
        raise _Invalid(f"{name}: expected microseconds in range (0 to 2^64 ns), got {_clip(value)}")
    return micros * 1000


_resources: dict[tuple[Any, ...], Resource] = {}


def _resource(service: Any, extra: dict[str, Any] | None = None) -> Resource:
    attributes = {"service.name": _tag_text(service)} if service else {}
    if extra:
        attributes.update(extra)
    key = tuple(attributes.items())
    resource = _resources.get(key)
    if resource is None:
        if len(_resources) > 4096:
            _resources.clear()
        resource = _resources[key] = Resource(attributes=AttributeMap.of(attributes))
    return resource


def _zipkin_span(item: Any) -> StoredSpan:
    if not isinstance(item, dict):
        raise _Invalid(f"expected a span object, got {type(item).__name__}")
    trace_id = _hex_id(item.get("traceId"), 32, "traceId")
    span_id = _hex_id(item.get("id"), 16, "id")
    parent = item.get("parentId")
    start = _micros(item.get("timestamp"), "timestamp")
    duration = _micros(item.get("duration"), "duration")
    end = _end_time(start, duration, "timestamp + duration")
    tags = _object(item.get("tags"), "tags")
    attributes: dict[str, Any] = {str(key): _tag_text(value) for key, value in tags.items()}
    remote = _object(item.get("remoteEndpoint"), "remoteEndpoint")
    if remote.get("serviceName"):
        attributes["peer.service"] = _tag_text(remote["serviceName"])
    if remote.get("ipv4") or remote.get("ipv6"):
        attributes["net.peer.ip"] = _tag_text(remote.get("ipv4") or remote.get("ipv6"))
    port = remote.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 <= port < 2**63:
        attributes["net.peer.port"] = port
    if item.get("shared"):
        attributes["zipkin.shared"] = True
    error = tags.get("error")
    events = tuple(
        SpanEvent(
            name=_tag_text(a.get("value", "")), time_unix_nano=_micros(a.get("timestamp"), "annotations.timestamp")
        )
        for a in _array(item.get("annotations"), "annotations")
        if isinstance(a, dict)
    )
    local = _object(item.get("localEndpoint"), "localEndpoint")
    return StoredSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_hex_id(parent, 16, "parentId") if parent else None,
        name=sys.intern(_tag_text(item.get("name") or "")),
        kind=_ZIPKIN_KINDS.get(_tag_text(item.get("kind", "")).upper(), SpanKind.INTERNAL),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status_code=StatusCode.ERROR if error is not None else StatusCode.UNSET,
        status_message=_tag_text(error) if error else "",
        attributes=AttributeMap.of(attributes) if attributes else EMPTY_ATTRIBUTES,
        events=events,
        resource=_resource(local.get("serviceName")),
    )


def _tag_text(value: Any) -> str:
    """A tag or annotation value as text: strings as they are, anything else as its JSON-ish repr, clipped."""
    return value if isinstance(value, str) else _clip(value, 1000)


def _jaeger_value(tag: dict[str, Any]) -> Any:
    kind = _tag_text(tag.get("type", "string")).lower()
    value = tag.get("value")
    if kind == "bool":
        return value if isinstance(value, bool) else _tag_text(value).lower() == "true"
    if kind == "int64":
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return _tag_text(value)
        return number if -(2**63) <= number < 2**63 else _tag_text(value)
    if kind == "float64":
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except (ValueError, OverflowError):
                pass
        return _tag_text(value)
    if kind == "binary":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        return _tag_text(value)
    return "" if value is None else _tag_text(value)


def _jaeger_tags(tags: Any, name: str = "tags") -> dict[str, Any]:
    return {_tag_text(t["key"]): _jaeger_value(t) for t in _array(tags, name) if isinstance(t, dict) and "key" in t}


def _jaeger_span(item: Any, processes: dict[str, Any]) -> StoredSpan:
    if not isinstance(item, dict):
        raise _Invalid(f"expected a span object, got {type(item).__name__}")
    trace_id = _hex_id(item.get("traceID"), 32, "traceID")
    span_id = _hex_id(item.get("spanID"), 16, "spanID")
    start = _micros(item.get("startTime"), "startTime")
    duration = _micros(item.get("duration"), "duration")
    attributes = _jaeger_tags(item.get("tags"))
    kind = _JAEGER_KINDS.get(_tag_text(attributes.pop("span.kind", "")).lower(), SpanKind.INTERNAL)
    status = StatusCode.UNSET
    message = _tag_text(attributes.pop("otel.status_description", ""))
    otel_status = _tag_text(attributes.pop("otel.status_code", "")).upper()
    if otel_status == "ERROR" or attributes.get("error") is True or attributes.get("error") == "true":
        status = StatusCode.ERROR
    elif otel_status == "OK":
        status = StatusCode.OK
    parent = None
    links = []
    for reference in _array(item.get("references"), "references"):
        if not isinstance(reference, dict):
            continue
        ref_span = _hex_id(reference.get("spanID"), 16, "references.spanID")
        ref_trace = _hex_id(reference.get("traceID"), 32, "references.traceID")
        if parent is None and reference.get("refType") == "CHILD_OF" and ref_trace == trace_id:
            parent = ref_span
        else:
            ref_type = _tag_text(reference.get("refType", "")).lower()
            links.append(
                SpanLink(
                    trace_id=ref_trace, span_id=ref_span, attributes=AttributeMap.of({"opentracing.ref_type": ref_type})
                )
            )
    events = []
    for log in _array(item.get("logs"), "logs"):
        if not isinstance(log, dict):
            continue
        fields = _jaeger_tags(log.get("fields"), "logs.fields")
        name = _tag_text(fields.pop("event", "log"))
        events.append(
            SpanEvent(
                name=name,
                time_unix_nano=_micros(log.get("timestamp"), "logs.timestamp"),
                attributes=AttributeMap.of(fields),
            )
        )
    process_id = item.get("processID")
    process = _object(
        item.get("process") or (processes.get(process_id) if isinstance(process_id, str) else None), "process"
    )
    end = _end_time(start, duration, "startTime + duration")
    return StoredSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=sys.intern(_tag_text(item.get("operationName") or "")),
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status_code=status,
        status_message=message,
        attributes=AttributeMap.of(attributes) if attributes else EMPTY_ATTRIBUTES,
        events=tuple(events),
        links=tuple(links),
        resource=_resource(process.get("serviceName"), _jaeger_tags(process.get("tags"), "process.tags")),
    )
