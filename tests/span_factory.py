"""Hypothesis strategies for spans with deliberately small domains (so queries, ties and evictions collide).

``spans()``/``criteria()`` draw both sides independently (most such queries match nothing); ``batches()`` and
``matching_criteria()`` draw a bigger batch first and then queries whose values come from the stored spans, with
times exactly on the window bounds, so that most queries return several spans and order, ties and ``limit`` matter.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

from spanstore.model import AttributeMap, Resource, SpanEvent, SpanKind, StatusCode, StoredSpan
from spanstore.query import AttributeFilter

TRACE_IDS = [f"{i:032x}" for i in range(1, 9)]
NAMES = ["GET /cart", "POST /pay", "db.query", "render"]
RESOURCES = [Resource(attributes=AttributeMap.of({"service.name": name})) for name in ("cart", "payment", "web")]
RESOURCES.append(Resource())  # no service.name: "unknown_service"
# Resources with more than a service name, for resource-scoped filters (and a service.name that is not a str).
RESOURCES += [
    Resource(attributes=AttributeMap.of({"service.name": "cart", "deployment.environment": "prod", "host.cpus": 4})),
    Resource(attributes=AttributeMap.of({"service.name": "web", "deployment.environment": "dev", "host.cpus": 2.0})),
    Resource(attributes=AttributeMap.of({"service.name": 7, "deployment.environment": b"prod"})),
]
KEYS = ["http.route", "code", "flag", "ratio"]
VALUES = st.sampled_from(
    # "y" * 300 is indexed by hash, 2**60 beyond a float's exact ints: every path of the value index is drawn
    [0, 1, 2, 500, 503, -1, 1.0, 2.5, float("nan"), True, False, "1", "500", "a", "b", "x" * 70, "y" * 300, "", 2**60]
    + [2.0**60, (1, 2), ("a",)]
)
ERROR_TYPES = ["TimeoutError", "ValueError"]
#: Span attribute values: the scalars above plus every other type an attribute can hold (bytes, nested arrays,
#: key/value maps, NaN and infinite floats, -0.0), so that no operator meets only the easy types.
SPAN_VALUES = st.one_of(
    VALUES,
    st.sampled_from(
        [
            b"",
            b"a",
            b"500",
            b"\x00\xff",
            ((1, 2), ("a",)),
            (1, "a", b"a"),
            (True, 1),
            AttributeMap.of({"a": 1, "nested": AttributeMap.of({"b": b"b"})}),
            AttributeMap.of({}),
            -0.0,
            float("inf"),
            float("-inf"),
            "ab" * 10,
        ]
    ),
)
SECOND = 1_000_000_000
#: The clock generated ``last`` windows resolve against (spans from ``batches()`` start at 0..60 s).
NOW = 70 * SECOND


@st.composite
def spans(draw: st.DrawFn, trace_id: str | None = None, unit: int = 1) -> StoredSpan:
    """A span with small-domain fields: ids, names, times and attribute values repeat across draws.

    Starts are 0..60 times ``unit`` ns; durations are a few ns to 1 ms whatever the unit."""
    start = draw(st.integers(0, 60)) * unit
    duration = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 13, 100, 1000, 1_000_000]))
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
    attributes = {key: draw(SPAN_VALUES) for key in keys}
    status = draw(st.sampled_from(list(StatusCode)))
    events: tuple[SpanEvent, ...] = ()
    if status == StatusCode.ERROR and draw(st.booleans()):
        if draw(st.booleans()):
            attributes["error.type"] = draw(st.sampled_from(ERROR_TYPES))
        else:
            exception = AttributeMap.of({"exception.type": draw(st.sampled_from(ERROR_TYPES))})
            events = (SpanEvent(name="exception", time_unix_nano=start, attributes=exception),)
    return StoredSpan(
        trace_id=trace_id or draw(st.sampled_from(TRACE_IDS)),
        span_id=f"{draw(st.integers(1, 2**64 - 1)):016x}",
        parent_span_id=draw(st.none() | st.just("00000000000000aa")),
        name=draw(st.sampled_from(NAMES)),
        kind=draw(st.sampled_from(list(SpanKind))),
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        status_code=status,
        attributes=AttributeMap.of(attributes),
        events=events,
        resource=draw(st.sampled_from(RESOURCES)),
    )


@st.composite
def filters(draw: st.DrawFn) -> tuple[str, str, object]:
    """An attribute filter as (key, op, value), valid for AttributeFilter."""
    key = draw(st.sampled_from(KEYS + ["error.type", "missing"]))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "exists", "contains", "matches"]))
    if op == "exists":
        value = None
    elif op == "in":
        value = tuple(draw(st.lists(VALUES.filter(lambda v: not isinstance(v, tuple)), min_size=1, max_size=3)))
    elif op in ("<", "<=", ">", ">="):
        value = draw(st.sampled_from([0, 1, 2, 500, 1.5, "a", "500"]))
    elif op == "matches":
        value = draw(st.sampled_from(["a", ".*", "5.*", "[ab]"]))
    elif op == "contains":
        value = draw(st.sampled_from(["a", "", "0", 1, 2, "x"]))
    else:
        value = draw(VALUES)
    return key, op, value


@st.composite
def criteria(draw: st.DrawFn) -> dict:
    """A random query, as a dict the reference model reads and SpanQuery accepts (via to_query_kwargs)."""
    c: dict = {}
    if draw(st.booleans()):
        c["name"] = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        c["service"] = draw(st.sampled_from(["cart", "payment", "web", "unknown_service"]))
    if draw(st.booleans()):
        c["status"] = draw(st.sampled_from(list(StatusCode)))
    if draw(st.integers(0, 4)) == 0:
        c["kind"] = draw(st.sampled_from(list(SpanKind)))
    if draw(st.integers(0, 3)) == 0:
        c["error_type"] = draw(st.sampled_from(ERROR_TYPES))
    if draw(st.booleans()):
        c["since"] = draw(st.integers(0, 60))
    if draw(st.booleans()):
        c["until"] = draw(st.integers(c.get("since", 0), 70))
    if draw(st.booleans()):
        c["min_duration_ns"] = draw(st.sampled_from([0, 1, 3, 6, 100, 999, 1000]))
    if draw(st.integers(0, 3)) == 0:
        c["max_duration_ns"] = draw(st.integers(c.get("min_duration_ns", 0), 2000))
    if draw(st.integers(0, 4)) == 0:
        c["root_only"] = True
    c["filters"] = draw(st.lists(filters(), max_size=2))
    c["limit"] = draw(st.none() | st.integers(0, 12))
    c["order"] = draw(st.sampled_from(["newest", "oldest", "longest"]))
    return c


def to_query_kwargs(c: dict) -> dict:
    """The keyword arguments of query_spans for a criteria dict (a filter is (key, op, value[, scope]))."""
    kwargs = {k: v for k, v in c.items() if k != "filters"}
    kwargs["attributes"] = [AttributeFilter(f[0], f[2], f[1], *f[3:]) for f in c.get("filters", ())]
    return kwargs


@st.composite
def batches(draw: st.DrawFn, min_size: int = 20, max_size: int = 80) -> list[StoredSpan]:
    """A batch of 20-80 spans whose starts are whole seconds from 0 to 60 (so ``last`` windows land on them)."""
    return draw(st.lists(spans(unit=SECOND), min_size=min_size, max_size=max_size))


def _scalar(value: object) -> bool:
    return type(value) in (str, bool, int, float, bytes)


def _service_of(span: StoredSpan) -> str:
    value = span.resource.attributes.get("service.name")
    return value if type(value) is str and value else "unknown_service"


OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "exists", "contains", "matches")


def _supports(op: str, actual: object) -> bool:
    """Whether a filter with ``op`` can take its value from an attribute holding ``actual``."""
    if op in ("exists", "!="):
        return True
    if op == "==":
        return _scalar(actual) or (type(actual) is tuple and all(map(_scalar, actual)))
    if op == "in":
        return _scalar(actual)
    if op in ("<", "<=", ">", ">="):
        return type(actual) in (int, float, str)
    if op == "matches":
        return type(actual) is str
    return type(actual) is str or (type(actual) is tuple and any(map(_scalar, actual)))  # contains


@st.composite
def filter_from(draw: st.DrawFn, stored: list[StoredSpan], scope: str = "span") -> tuple | None:
    """A filter whose operator is drawn first (all ten equally likely) and whose key and value come from a stored
    span's attribute that operator can test; None when no stored span has one."""
    op = draw(st.sampled_from(OPERATORS))
    candidates = [
        (key, value)
        for span in stored
        for key, value in (span.attributes if scope == "span" else span.resource.attributes).items()
        if _supports(op, value)
    ]
    if not candidates:
        return None
    key, actual = draw(st.sampled_from(candidates))
    if op == "exists":
        value = None
    elif op == "!=":
        value = actual if _supports("==", actual) else draw(VALUES)
    elif op == "in":
        value = (actual, *draw(st.lists(VALUES.filter(_scalar), max_size=2)))
    elif op == "matches":
        value = re.escape(actual[: draw(st.integers(0, len(actual)))]) + draw(st.sampled_from([".*", "", "."]))
    elif op == "contains":
        if type(actual) is str:
            start = draw(st.integers(0, len(actual)))
            value = actual[start : draw(st.integers(start, len(actual)))]
        else:
            value = draw(st.sampled_from([item for item in actual if _scalar(item)]))
    else:  # ==, and the range operators exactly on the value
        value = actual
    return (key, op, value) if scope == "span" else (key, op, value, scope)


#: The criteria matching_criteria() can build; each generated query uses one or two of them.
CRITERIA = (
    "name",
    "service",
    "status",
    "kind",
    "error_type",
    "trace_id",
    *["since", "until", "window", "last"] * 2,  # window bounds exactly on stored spans: where off-by-ones hide
    "min_duration_ns",
    "max_duration_ns",
    "root_only",
    *["attribute"] * 5,  # ten operators and eight value types: drawn more often than the one-value criteria
    *["resource_attribute"] * 2,
)


@st.composite
def matching_criteria(draw: st.DrawFn, stored: list[StoredSpan]) -> dict:
    """A query whose values come from the stored spans: one or two criteria, each taken from a span drawn from
    ``stored`` (so the span meets it), window bounds exactly on stored start times, ``last`` exactly reaching a
    stored span (against ``NOW``). The dict is read by the reference model and by ``to_query_kwargs``."""
    c: dict = {"filters": []}
    for kind in draw(st.lists(st.sampled_from(CRITERIA), min_size=1, max_size=2)):
        span = draw(st.sampled_from(stored))
        start = span.start_time_unix_nano
        if kind == "name":
            c["name"] = span.name
        elif kind == "service":
            c["service"] = _service_of(span)
        elif kind == "status":
            c["status"] = span.status_code
        elif kind == "kind":
            c["kind"] = span.kind
        elif kind == "error_type":
            names = [e.attributes.get("exception.type") for e in span.events] + [span.attributes.get("error.type")]
            c["error_type"] = draw(st.sampled_from([n for n in names if type(n) is str] or ERROR_TYPES))
        elif kind == "trace_id":
            c["trace_id"] = draw(st.sampled_from([span.trace_id, span.trace_id.upper()]))
        elif kind in ("since", "until") and kind not in c:
            c[kind] = start
        elif kind == "window" and "since" not in c and "until" not in c:
            other = draw(st.sampled_from(stored)).start_time_unix_nano
            c["since"], c["until"] = min(start, other), max(start, other)
        elif kind == "last":
            c["last"] = (NOW - start) // SECOND
        elif kind in ("min_duration_ns", "max_duration_ns"):
            c[kind] = span.end_time_unix_nano - start
        elif kind == "root_only":
            c["root_only"] = True
        elif kind in ("attribute", "resource_attribute") and not c["filters"]:
            drawn = draw(filter_from(stored, "span" if kind == "attribute" else "resource"))
            c["filters"] += [drawn] if drawn else []
    if c.get("since", 0) > c.get("until", 1 << 62):
        c["since"], c["until"] = c["until"], c["since"]
    if c.get("min_duration_ns", 0) > c.get("max_duration_ns", 1 << 62):
        c["min_duration_ns"], c["max_duration_ns"] = c["max_duration_ns"], c["min_duration_ns"]
    c["limit"] = draw(st.sampled_from([None, None, None, 1, 2, 3, 10]))
    c["order"] = draw(st.sampled_from(["newest", "oldest", "longest"]))
    return c
