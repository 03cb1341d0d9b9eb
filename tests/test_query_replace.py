"""A query passed through replace() or merged with keyword criteria means what the single query means (#11.2)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from spanstore import AttributeMap, SpanQuery, SpanStore, StoredSpan, find_traces, query_spans
from spanstore.store import now_unix_nano
from tests.span_factory import criteria, to_query_kwargs

SECOND = 1_000_000_000


def test_replace_keeps_last_in_nanoseconds() -> None:
    """SpanQuery(last=300).replace(...) keeps a 300-second window (it once became 300 billion seconds)."""
    query = SpanQuery(last=300)
    assert query.replace(limit=None).last == 300 * SECOND
    assert query.replace(limit=5).replace(order="oldest").last == 300 * SECOND
    assert SpanQuery(last=timedelta(minutes=1)).replace(limit=None).last == 60 * SECOND


def recent_store() -> SpanStore:
    """Spans that started 10 s, 2 min and 2 h ago: `last` windows of a minute, an hour, a day tell them apart."""
    now = now_unix_nano()
    store = SpanStore()
    for i, age in enumerate([10, 120, 7200], start=1):
        start = now - age * SECOND
        store.add(
            StoredSpan(
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                name=f"age-{age}",
                start_time_unix_nano=start,
                end_time_unix_nano=start + 1000,
                attributes=AttributeMap.of({"age": age}),
            )
        )
    return store


def test_a_last_window_survives_replace_and_keyword_merging() -> None:
    """query_spans(store, SpanQuery(last=60), limit=100) and find_traces(last=60) return only the last minute."""
    store = recent_store()
    names = lambda spans: [span.name for span in spans]  # noqa: E731
    assert names(query_spans(store, last=60)) == ["age-10"]
    assert names(query_spans(store, SpanQuery(last=60), limit=100)) == ["age-10"]
    assert names(query_spans(store, SpanQuery(last=60).replace(limit=None))) == ["age-10"]
    assert len(find_traces(store, last=60)) == 1
    assert len(find_traces(store, last=3600)) == 2


@settings(max_examples=150, deadline=None)
@given(criteria(), criteria(), st.sampled_from([None, 30, 600, timedelta(hours=1), 86400.5]))
def test_replace_and_merge_equal_the_single_query(first: dict, second: dict, last) -> None:
    """For any two criteria sets A and B: SpanQuery(A).replace(B) == SpanQuery(A | B), and query_spans with
    SpanQuery(A) plus keywords B returns what the single query A | B returns."""
    a, b = to_query_kwargs(first), to_query_kwargs(second)
    a["last"] = last
    b.pop("since", None)  # keep the merged since <= until (both queries are valid on their own)
    b.pop("until", None)
    b.pop("max_duration_ns", None)
    b.pop("min_duration_ns", None)
    merged = {**a, **b}
    single = SpanQuery(**merged)
    assert SpanQuery(**a).replace(**b) == single
    assert dataclasses.replace(SpanQuery(**a)) == SpanQuery(**a)
    store = recent_store()
    assert query_spans(store, SpanQuery(**a), **b) == query_spans(store, single)
