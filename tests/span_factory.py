"""Hypothesis strategies for spans with deliberately small domains (so queries, ties and evictions collide)."""

from __future__ import annotations

from hypothesis import strategies as st

from spanstore.model import AttributeMap, Resource, SpanEvent, SpanKind, StatusCode, StoredSpan
from spanstore.query import AttributeFilter

TRACE_IDS = [f"{i:032x}" for i in range(1, 9)]
NAMES = ["GET /cart", "POST /pay", "db.query", "render"]
RESOURCES = [Resource(attributes=AttributeMap.of({"service.name": name})) for name in ("cart", "payment", "web")]
RESOURCES.append(Resource())  # no service.name: "unknown_service"
KEYS = ["http.route", "code", "flag", "ratio"]
VALUES = st.sampled_from(
    # "y" * 300 is indexed by hash, 2**60 beyond a float's exact ints: every path of the value index is drawn
    [0, 1, 2, 500, 503, -1, 1.0, 2.5, float("nan"), True, False, "1", "500", "a", "b", "x" * 70, "y" * 300, "", 2**60]
    + [2.0**60, (1, 2), ("a",)]
)
ERROR_TYPES = ["TimeoutError", "ValueError"]


@st.composite
def spans(draw: st.DrawFn, trace_id: str | None = None) -> StoredSpan:
    """A span with small-domain fields: ids, names, times and attribute values repeat across draws."""
    start = draw(st.integers(0, 60))
    duration = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 13, 100, 1000, 1_000_000]))
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
    attributes = {key: draw(VALUES) for key in keys}
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
    """The keyword arguments of query_spans for a criteria dict."""
    kwargs = {k: v for k, v in c.items() if k != "filters"}
    kwargs["attributes"] = [AttributeFilter(key, value, op) for key, op, value in c["filters"]]
    return kwargs
