"""Hypothesis strategies for the span model, shared by the test files.

Everything generated is a valid :class:`~spanstore.StoredSpan` as the codec must preserve it: lowercase hex ids,
times and counts in their OTLP ranges, attribute values of every type OTLP can carry (strings empty to huge,
int64, NaN/inf floats, bytes, None, nested tuples and kvlists), a parent never equal to the span itself.

Use ``stored_spans()`` for one span and ``span_batches()`` for a list sharing a few resources and scopes.
"""

from __future__ import annotations

from hypothesis import strategies as st

from spanstore.model import (
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
)

__all__ = [
    "attribute_maps",
    "attribute_values",
    "resources",
    "scopes",
    "span_batches",
    "span_ids",
    "stored_spans",
    "trace_ids",
]

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
UINT32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
UINT64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
SMALL_COUNTS = st.one_of(st.just(0), UINT32)

trace_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
span_ids = st.binary(min_size=8, max_size=8).map(bytes.hex)

#: Text of every kind: empty, short, unicode (astral planes, control characters, quotes), and rarely huge. No lone
#: surrogates (codec="utf-8", as st.text() draws): UTF-8 cannot carry them, so the codec writes U+FFFD instead.
_huge_texts = st.builds(
    lambda char, n: char * n, st.characters(codec="utf-8"), st.integers(min_value=10_000, max_value=40_000)
)
_small_texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "GET /cart", 'quote " back \\ slash', "new\nline\ttab", "日本語 ☃ 😀", "\x00\x1f\x7f"]),
)
# One text in 40 is huge: enough to be exercised, few enough to keep examples fast.
texts = st.integers(min_value=0, max_value=39).flatmap(lambda i: _huge_texts if i == 39 else _small_texts)
names = st.one_of(st.text(max_size=12), st.sampled_from(["", "GET /cart", "SELECT", "exception"]))

scalar_values = st.one_of(
    texts,
    st.booleans(),
    INT64,
    st.sampled_from([0, -1, (1 << 63) - 1, -(1 << 63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]),
    st.binary(max_size=24),
    st.none(),
)


def _maps(values: st.SearchStrategy) -> st.SearchStrategy[AttributeMap]:
    return st.dictionaries(st.text(max_size=10), values, max_size=4).map(AttributeMap.of)


#: Attribute values: scalars, tuples (homogeneous or not, nested) and kvlists (AttributeMap values), recursively.
attribute_values = st.recursive(
    scalar_values,
    lambda children: st.one_of(st.lists(children, max_size=4).map(tuple), _maps(children)),
    max_leaves=8,
)


def attribute_maps(max_size: int = 5) -> st.SearchStrategy[AttributeMap]:
    """AttributeMaps with text keys (including "" and unicode) and any attribute values."""
    return st.dictionaries(st.text(max_size=16), attribute_values, max_size=max_size).map(AttributeMap.of)


resources = st.builds(
    Resource,
    attributes=st.one_of(
        attribute_maps(4),
        st.builds(lambda n: AttributeMap.of({"service.name": n}), st.sampled_from(["cart", "checkout", "☃"])),
    ),
    schema_url=st.sampled_from(["", "https://opentelemetry.io/schemas/1.26.0"]),
    dropped_attributes_count=st.sampled_from([0, 0, 3]),
)
scopes = st.builds(
    Scope,
    name=st.sampled_from(["", "my.library", "opentelemetry.instrumentation.flask"]),
    version=st.sampled_from(["", "1.0.0"]),
    attributes=st.one_of(st.just(AttributeMap()), attribute_maps(2)),
    schema_url=st.sampled_from(["", "https://opentelemetry.io/schemas/1.21.0"]),
    dropped_attributes_count=st.sampled_from([0, 0, 1]),
)

events = st.builds(
    SpanEvent,
    name=names,
    time_unix_nano=UINT64,
    attributes=attribute_maps(3),
    dropped_attributes_count=SMALL_COUNTS,
)
links = st.builds(
    SpanLink,
    trace_id=trace_ids,
    span_id=span_ids,
    trace_state=st.sampled_from(["", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]),
    attributes=attribute_maps(3),
    dropped_attributes_count=SMALL_COUNTS,
    flags=st.one_of(st.sampled_from([0, 1, 256, 768, 769]), UINT32),
)


@st.composite
def stored_spans(
    draw: st.DrawFn,
    resource: st.SearchStrategy[Resource] = resources,
    scope: st.SearchStrategy[Scope] = scopes,
) -> StoredSpan:
    """One valid StoredSpan; resource and scope drawn from the given strategies."""
    span_id = draw(span_ids)
    parent = draw(st.one_of(st.none(), span_ids))
    if parent == span_id:
        parent = None
    start = draw(UINT64)
    return StoredSpan(
        trace_id=draw(trace_ids),
        span_id=span_id,
        parent_span_id=parent,
        name=draw(names),
        kind=draw(st.sampled_from(SpanKind)),
        start_time_unix_nano=start,
        end_time_unix_nano=draw(st.one_of(st.just(start), UINT64)),
        status_code=draw(st.sampled_from(StatusCode)),
        status_message=draw(st.one_of(st.just(""), texts)),
        attributes=draw(attribute_maps()),
        events=tuple(draw(st.lists(events, max_size=2))),
        links=tuple(draw(st.lists(links, max_size=2))),
        resource=draw(resource),
        scope=draw(scope),
        trace_state=draw(st.sampled_from(["", "rojo=00f067aa0ba902b7"])),
        flags=draw(st.one_of(st.sampled_from([0, 1, 256, 257, 768]), UINT32)),
        dropped_attributes_count=draw(SMALL_COUNTS),
        dropped_events_count=draw(SMALL_COUNTS),
        dropped_links_count=draw(SMALL_COUNTS),
    )


@st.composite
def span_batches(draw: st.DrawFn, max_size: int = 6) -> list[StoredSpan]:
    """A list of spans drawing their resources and scopes from a small pool, so that groups repeat."""
    resource_pool = draw(st.lists(resources, min_size=1, max_size=3))
    scope_pool = draw(st.lists(scopes, min_size=1, max_size=3))
    return draw(
        st.lists(
            stored_spans(resource=st.sampled_from(resource_pool), scope=st.sampled_from(scope_pool)),
            max_size=max_size,
        )
    )
