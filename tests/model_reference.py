"""A brute-force reference for the store and the query API: plain lists, no indices, written independently.

The property tests compare :mod:`spanstore.store` and :mod:`spanstore.query` against this model. It restates the
documented semantics (typed comparisons, FIFO eviction by trace, the result orders) in the simplest code possible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from spanstore.model import AttributeMap, StatusCode, StoredSpan

MISSING = object()


def is_number(value: object) -> bool:
    return type(value) in (int, float)


def typed_equal(actual: object, expected: object) -> bool:
    if is_number(expected):
        return is_number(actual) and actual == expected
    if type(actual) is not type(expected):
        return False
    if type(actual) is tuple:  # arrays compare element by element, strictly typed
        return len(actual) == len(expected) and all(
            type(a) is type(b) and a == b for a, b in zip(actual, expected, strict=True)
        )
    return actual == expected


def filter_holds(op: str, expected: object, actual: object) -> bool:
    if actual is MISSING:
        return False
    if op == "exists":
        return True
    if op == "==":
        return typed_equal(actual, expected)
    if op == "!=":
        return not typed_equal(actual, expected)
    if op == "in":
        return any(typed_equal(actual, item) for item in expected)
    if op == "contains":
        if type(actual) is str:
            return type(expected) is str and expected in actual
        if type(actual) is tuple:
            return any(typed_equal(item, expected) for item in actual)
        return False
    if op == "matches":
        return type(actual) is str and re.fullmatch(expected, actual) is not None
    comparable = (is_number(expected) and is_number(actual)) or (type(expected) is str and type(actual) is str)
    if not comparable:
        return False
    return {"<": actual < expected, "<=": actual <= expected, ">": actual > expected, ">=": actual >= expected}[op]


def service_of(span: StoredSpan) -> str:
    """The resource's ``service.name`` when it is a non-empty string, else the SDK's ``unknown_service``."""
    for key, value in zip(span.resource.attributes.keys_, span.resource.attributes.values_, strict=True):
        if key == "service.name":
            return value if type(value) is str and value != "" else "unknown_service"
    return "unknown_service"


def error_types_of(span: StoredSpan) -> set[str]:
    """Each exception event's ``exception.type``, qualified and after its last dot, and ``error.type``."""
    names = set()
    for event in span.events:
        if event.name == "exception":
            recorded = dict(event.attributes.items()).get("exception.type")
            if recorded not in (None, ""):
                names.add(str(recorded))
                names.add(str(recorded).split(".")[-1])
    raw = dict(zip(span.attributes.keys_, span.attributes.values_, strict=True))
    if raw.get("error.type") not in (None, ""):
        names.add(str(raw["error.type"]))
    names.discard("")
    return names


def duration_of(span: StoredSpan) -> int:
    return span.end_time_unix_nano - span.start_time_unix_nano


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def nested_bytes(value: object) -> int:
    """What a value packed inside a row costs, by the formula on ``spanstore.store._estimate_bytes``."""
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):  # msgpack's int sizes
        for low, high, size in ((-32, 128, 1), (-128, 256, 2), (-(2**15), 2**16, 3), (-(2**31), 2**32, 5)):
            if low <= value < high:
                return size
        return 9
    if isinstance(value, float):
        return 9
    if isinstance(value, str):
        return 2 + utf8_length(value)
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, (tuple, list)):
        return 5 + sum(nested_bytes(item) for item in value)
    if isinstance(value, AttributeMap):
        return 5 + sum(2 + utf8_length(k) + nested_bytes(v) for k, v in value.items())
    return 64


def is_canonical_id(value: str | None) -> bool:
    return value is not None and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def estimated_bytes(span: StoredSpan) -> int:
    """The documented per-span estimate, restated from its docstring (not imported): per attribute a str of at most
    256 characters 9, a longer one 24 plus its UTF-8 length, an int 15 plus its msgpack size, a float 24, a bool 7,
    anything else nested; extras (status message, trace state, events, links, dropped counts, an odd id) 40 plus the
    message's UTF-8 length and the state's length, 24 an event plus its name and its attributes as a nested map, 64 a
    link plus its attributes; over 512 so far adds 96 and a 32nd of the sum; and 84 a row."""
    total = 0
    for value in span.attributes.values_:
        if isinstance(value, str):
            total += 9 if len(value) <= 256 else 24 + utf8_length(value)
        elif isinstance(value, bool):
            total += 7
        elif isinstance(value, int):
            total += 15 + nested_bytes(value)
        elif isinstance(value, float):
            total += 24
        else:
            total += nested_bytes(value)
    odd_ids = not is_canonical_id(span.span_id) or (
        span.parent_span_id is not None and not is_canonical_id(span.parent_span_id)
    )
    extras = (
        span.status_message,
        span.trace_state,
        span.events,
        span.links,
        span.dropped_attributes_count,
        span.dropped_events_count,
        span.dropped_links_count,
    )
    if any(extras) or odd_ids:
        total += 40 + utf8_length(span.status_message) + len(span.trace_state)
        for event in span.events:
            total += 24 + len(event.name) + nested_bytes(event.attributes)
        for link in span.links:
            total += 64 + nested_bytes(link.attributes)
    if total > 512:
        total += 96 + total // 32
    return total + 84


def shared_string_bytes(spans: list[StoredSpan]) -> int:
    """Attribute strings of at most 256 characters are stored once per key: 300 bytes plus the length for each
    distinct (key, string) that a held span has."""
    distinct = {
        (key, value)
        for span in spans
        for key, value in zip(span.attributes.keys_, span.attributes.values_, strict=True)
        if isinstance(value, str) and len(value) <= 256
    }
    return sum(300 + len(value) for _, value in distinct)


def span_matches(span: StoredSpan, criteria: dict, now: int) -> bool:
    c = criteria
    if c.get("trace_id") is not None and span.trace_id != c["trace_id"].lower():
        return False
    if c.get("name") is not None and span.name != c["name"]:
        return False
    if c.get("service") is not None and service_of(span) != c["service"]:
        return False
    if c.get("status") is not None and span.status_code != c["status"]:
        return False
    if c.get("kind") is not None and span.kind != c["kind"]:
        return False
    if c.get("error_type") is not None and c["error_type"] not in error_types_of(span):
        return False
    if c.get("since") is not None and span.start_time_unix_nano < c["since"]:
        return False
    if c.get("until") is not None and span.start_time_unix_nano >= c["until"]:
        return False
    if c.get("last") is not None and span.start_time_unix_nano < now - c["last"] * 1_000_000_000:  # seconds
        return False
    duration = duration_of(span)
    if c.get("min_duration_ns") is not None and duration < c["min_duration_ns"]:
        return False
    if c.get("max_duration_ns") is not None and duration > c["max_duration_ns"]:
        return False
    if c.get("root_only") and span.parent_span_id is not None:
        return False
    for key, op, value, *scope in c.get("filters", ()):
        attributes = span.resource.attributes if scope == ["resource"] else span.attributes
        if not filter_holds(op, value, dict(attributes.items()).get(key, MISSING)):
            return False
    return True


def ordered(spans: list[StoredSpan], order: str) -> list[StoredSpan]:
    """``spans`` given in arrival order, sorted as the query module documents."""
    indexed = list(enumerate(spans))
    if order == "oldest":
        indexed.sort(key=lambda p: (p[1].start_time_unix_nano, p[0]))
    elif order == "newest":
        indexed.sort(key=lambda p: (-p[1].start_time_unix_nano, -p[0]))
    else:
        indexed.sort(key=lambda p: (-duration_of(p[1]), -p[1].start_time_unix_nano, -p[0]))
    return [span for _, span in indexed]


@dataclass
class ReferenceStore:
    """A list of spans in arrival order, with FIFO eviction by trace as the store documents it."""

    max_spans: int
    max_bytes: int
    max_spans_per_trace: int
    spans: list[StoredSpan] = field(default_factory=list)
    trace_order: list[str] = field(default_factory=list)
    evicted_traces: int = 0
    dropped: int = 0

    def add(self, span: StoredSpan) -> bool:
        in_trace = sum(1 for s in self.spans if s.trace_id == span.trace_id)
        if in_trace >= self.max_spans_per_trace:
            self.dropped += 1
            return False
        if in_trace == 0:
            self.trace_order.append(span.trace_id)
        self.spans.append(span)
        while (len(self.spans) > self.max_spans or self.bytes > self.max_bytes) and self.trace_order:
            oldest = self.trace_order.pop(0)
            self.spans = [s for s in self.spans if s.trace_id != oldest]
            self.evicted_traces += 1
        return True

    @property
    def bytes(self) -> int:
        # 240 bytes a trace held, besides its spans
        return sum(map(estimated_bytes, self.spans)) + shared_string_bytes(self.spans) + 240 * len(self.trace_order)

    def query(self, criteria: dict, now: int) -> list[StoredSpan]:
        found = ordered([s for s in self.spans if span_matches(s, criteria, now)], criteria.get("order", "newest"))
        limit = criteria.get("limit")
        return found if limit is None else found[:limit]

    def trace(self, trace_id: str) -> list[StoredSpan]:
        return ordered([s for s in self.spans if s.trace_id == trace_id], "oldest")

    def errors(self) -> int:
        return sum(s.status_code == StatusCode.ERROR for s in self.spans)
