"""The query API: validation, semantics, planner, find_traces — checked against the brute-force reference."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from hypothesis import Phase, event, given, settings, target
from hypothesis import strategies as st

import spanstore.query as query_module
from spanstore import (
    AttributeFilter,
    AttributeMap,
    InvalidQueryError,
    Resource,
    SpanEvent,
    SpanQuery,
    SpanStore,
    StatusCode,
    StoredSpan,
    filter_by_attribute,
    filter_by_error_type,
    find_traces,
    get_trace,
    query_spans,
    recent_failures,
)
from spanstore.store import now_unix_nano
from tests.model_reference import ReferenceStore, ordered, span_matches
from tests.span_factory import NOW, SECOND, batches, criteria, matching_criteria, spans, to_query_kwargs

WEB = Resource(attributes=AttributeMap.of({"service.name": "web"}))
DB = Resource(attributes=AttributeMap.of({"service.name": "db"}))


def span(trace: int, span_id: int, *, start: int, duration: int = 1_000, parent: int | None = None, **fields):
    return StoredSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{span_id:016x}",
        parent_span_id=f"{parent:016x}" if parent else None,
        name=fields.pop("name", "op"),
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        **fields,
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(spans(), max_size=60), st.lists(criteria(), min_size=1, max_size=8))
def test_queries_equal_brute_force(batch: list[StoredSpan], queries: list[dict]) -> None:
    """For any spans and any query, query_spans returns exactly what a filter over a plain list returns."""
    store = SpanStore()
    reference = ReferenceStore(max_spans=10**6, max_bytes=10**12, max_spans_per_trace=10**6)
    for item in batch:
        store.add(item)
        reference.add(item)
    for c in queries:
        got = query_spans(store, **to_query_kwargs(c))
        assert [repr(s) for s in got] == [repr(s) for s in reference.query(c, now_unix_nano())]


@settings(max_examples=25, deadline=None)
@given(st.lists(spans(), max_size=60), criteria(), st.integers(0, 6))
def test_find_traces_equals_brute_force(batch: list[StoredSpan], c: dict, limit: int) -> None:
    """find_traces returns the traces holding a matching span, ordered by their newest matching span."""
    store = SpanStore()
    store.add_many(batch)
    kwargs = to_query_kwargs(c)
    kwargs.pop("limit")
    kwargs.pop("order")
    got = find_traces(store, limit=limit, **kwargs)
    matching = ordered([s for s in batch if span_matches(s, c, now_unix_nano())], "newest")
    want: list[str] = []
    for item in matching:
        if item.trace_id not in want:
            want.append(item.trace_id)
    assert [t.trace_id for t in got] == want[:limit]
    for summary in got:
        members = [s for s in batch if s.trace_id == summary.trace_id]
        assert summary.span_count == len(members)
        assert summary.error_count == sum(s.status_code == StatusCode.ERROR for s in members)
        assert summary.start_time_unix_nano == min(s.start_time_unix_nano for s in members)


def _bucket(count: int) -> str:
    return "0" if count == 0 else "1" if count == 1 else "2-9" if count < 10 else "10+"


def _deciding_bounds(reference: ReferenceStore, c: dict) -> list[str]:
    """The window bounds of ``c`` that decide a result: moving the bound by 1 ns changes what the model returns."""
    everything = {**c, "limit": None}
    want = reference.query(everything, NOW)
    moved = {"since": ("since", 1), "until": ("until", 1), "last": ("last", 0)}
    deciding = []
    for bound, (key, step) in moved.items():
        if c.get(bound) is None:
            continue
        if bound == "last":  # a 1 ns shorter window: resolve `last` into `since` first
            shifted = {**everything, "last": None, "since": max(NOW - c["last"] * SECOND, c.get("since") or 0) + 1}
        else:
            shifted = {**everything, key: c[key] + step}
        if reference.query(shifted, NOW) != want:
            deciding.append(bound)
    return deciding


def _run_generated(batch: list[StoredSpan], queries: list[dict], record=lambda c, got, deciding, batch: None) -> None:
    """Store ``batch``, run each query against the store and the reference model (``last`` against NOW)."""
    store = SpanStore()
    reference = ReferenceStore(max_spans=10**6, max_bytes=10**12, max_spans_per_trace=10**6)
    for item in batch:
        store.add(item)
        reference.add(item)
    with mock.patch.object(query_module, "now_unix_nano", lambda: NOW):
        for c in queries:
            got = query_spans(store, **to_query_kwargs(c))
            want = reference.query(c, NOW)
            assert [repr(s) for s in got] == [repr(s) for s in want], c  # fresh objects from packed rows
            record(c, got, _deciding_bounds(reference, c), batch)
        c = queries[0]
        kwargs = {k: v for k, v in to_query_kwargs(c).items() if k not in ("order", "limit")}
        matching = reference.query({**c, "order": "newest", "limit": None}, NOW)
        want_traces = list(dict.fromkeys(s.trace_id for s in matching))
        assert [t.trace_id for t in find_traces(store, limit=5, **kwargs)] == want_traces[:5]


def _record_events(c: dict, got: list[StoredSpan], deciding: list[str], batch: list[StoredSpan]) -> None:
    event(f"spans returned: {_bucket(len(got))}")
    for key in ("name", "service", "status", "kind", "error_type", "trace_id", "since", "until", "last"):
        if c.get(key) is not None:
            event(f"criterion: {key}")
    for f in c["filters"]:
        event(f"operator: {f[1]} ({f[3] if len(f) > 3 else 'span'})")
    for bound in deciding:
        event(f"a span exactly on the {bound} bound decides")


# No Phase.target: target() records the distribution (shown with --hypothesis-show-statistics); hill-climbing on
# it could run for minutes, which a CI suite cannot spend.
@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(st.data())
def test_queries_drawn_from_stored_spans_equal_brute_force(data: st.DataObject) -> None:
    """Queries built from the stored spans' own values (every criterion, every operator, window bounds exactly on
    stored start times) return exactly what the brute-force reference returns, in its order; so does find_traces."""
    batch = data.draw(batches(), label="batch")
    queries = [data.draw(matching_criteria(batch), label=f"query {i}") for i in range(6)]
    returned: list[int] = []
    _run_generated(batch, queries, lambda c, *more: (returned.append(len(more[0])), _record_events(c, *more)))
    target(float(sorted(returned)[len(returned) // 2]), label="median spans returned by a query")


def test_generated_queries_mostly_return_several_spans() -> None:
    """Over a fixed-seed run of the strategy, most generated queries return at least 2 spans, every criterion and
    every operator is drawn, and window bounds exactly on a stored span decide results (the printed figures are the
    README's)."""
    results: list[int] = []
    kinds: Counter[str] = Counter()
    deciders: Counter[str] = Counter()
    value_types: Counter[str] = Counter()

    seen: set[str] = set()
    drawn = 0

    def record(c: dict, got: list[StoredSpan], deciding: list[str], batch: list[StoredSpan]) -> None:
        nonlocal drawn
        drawn += 1
        key = repr((c, [s.span_id for s in got]))
        if key in seen:  # hypothesis explores around earlier examples: count each distinct query once
            return
        seen.add(key)
        results.append(len(got))
        kinds.update(k for k in ("since", "until", "last", "trace_id", "error_type") if c.get(k) is not None)
        kinds.update(f"{f[1]} {f[3] if len(f) > 3 else 'span'}" for f in c["filters"])
        deciders.update(deciding)
        for f in c["filters"]:  # the types of the values each filter was tested against
            for span in batch:
                value = (span.resource.attributes if len(f) > 3 else span.attributes).get(f[0])
                value_types[type(value).__name__ if type(value) is not float or value == value else "nan"] += 1

    @settings(max_examples=150, deadline=None, derandomize=True, database=None, phases=[Phase.generate])
    @given(st.data())
    def run(data: st.DataObject) -> None:
        batch = data.draw(batches())
        _run_generated(batch, [data.draw(matching_criteria(batch)) for _ in range(4)], record)

    run()
    several = sum(n >= 2 for n in results) / len(results)
    bounded = sum(kinds[b] for b in ("since", "until", "last"))
    print(
        f"{drawn} queries drawn, {len(results)} distinct: {several:.0%} return >= 2 spans, "
        f"{sum(n == 0 for n in results) / len(results):.0%} none; median {sorted(results)[len(results) // 2]}; "
        f"{bounded} window bounds, "
        f"{sum(deciders.values())} decided by a span exactly on them {dict(deciders)}; {dict(kinds)}; "
        f"attribute value types the filters tested {dict(value_types)}"
    )
    assert several >= 0.6, several
    assert min(deciders[b] for b in ("since", "until", "last")) >= 5, deciders
    for op in ("==", "!=", "<", "<=", ">", ">=", "in", "exists", "contains", "matches"):
        assert kinds[f"{op} span"] + kinds[f"{op} resource"] >= 1, (op, kinds)
    assert sum(n for k, n in kinds.items() if k.endswith(" resource")) >= 10, kinds
    assert min(kinds["trace_id"], kinds["error_type"]) >= 3, kinds
    assert {"bytes", "tuple", "AttributeMap", "nan", "float", "bool", "int", "str"} <= set(value_types), value_types
    assert min(value_types.values()) >= 5, value_types


def test_typed_attribute_comparisons() -> None:
    """ "500" is not 500, True is not 1, and numbers compare across int and float."""
    store = SpanStore()
    store.add(span(1, 1, start=1, attributes=AttributeMap.of({"code": 500})))
    store.add(span(1, 2, start=2, attributes=AttributeMap.of({"code": "500"})))
    store.add(span(1, 3, start=3, attributes=AttributeMap.of({"code": True})))
    store.add(span(1, 4, start=4, attributes=AttributeMap.of({"code": 500.0})))
    ids = lambda result: sorted(int(s.span_id, 16) for s in result)  # noqa: E731
    assert ids(filter_by_attribute(store, "code", 500)) == [1, 4]
    assert ids(filter_by_attribute(store, "code", "500")) == [2]
    assert ids(filter_by_attribute(store, "code", True)) == [3]
    assert ids(filter_by_attribute(store, "code", 1)) == []
    assert ids(filter_by_attribute(store, "code", 499.5, ">")) == [1, 4]
    assert ids(filter_by_attribute(store, "code", "500", "!=")) == [1, 3, 4]
    assert ids(filter_by_attribute(store, "code", None, "exists")) == [1, 2, 3, 4]
    assert ids(filter_by_attribute(store, "missing", 1, "!=")) == []


def test_string_operators_and_resource_scope() -> None:
    """contains, matches (anchored) and resource-scoped filters behave as documented."""
    store = SpanStore()
    store.add(span(1, 1, start=1, resource=WEB, attributes=AttributeMap.of({"route": "/api/cart", "tags": ("a", "b")})))
    store.add(span(1, 2, start=2, resource=DB, attributes=AttributeMap.of({"route": "/health"})))
    assert [s.span_id[-1] for s in filter_by_attribute(store, "route", "api", "contains")] == ["1"]
    assert filter_by_attribute(store, "route", "api", "matches") == []
    assert len(filter_by_attribute(store, "route", "/api/.*", "matches")) == 1
    assert len(filter_by_attribute(store, "tags", "b", "contains")) == 1
    assert [s.service_name for s in filter_by_attribute(store, "service.name", "db", scope="resource")] == ["db"]


def test_recent_failures_and_error_types() -> None:
    """recent_failures finds ERROR spans of the last hours, newest first; error types come from attribute or event."""
    now = now_unix_nano()
    hour = 3_600 * 10**9
    store = SpanStore()
    exception = SpanEvent("exception", now, AttributeMap.of({"exception.type": "KeyError"}))
    store.add(span(1, 1, start=now - 2 * hour, status_code=StatusCode.ERROR))
    store.add(span(2, 2, start=now - 60 * 10**9, status_code=StatusCode.ERROR, events=(exception,)))
    store.add(
        span(
            3,
            3,
            start=now - 30 * 10**9,
            status_code=StatusCode.ERROR,
            attributes=AttributeMap.of({"error.type": "Timeout"}),
        )
    )
    store.add(span(4, 4, start=now - 10 * 10**9))
    assert [s.span_id[-1] for s in recent_failures(store, hours=1)] == ["3", "2"]
    assert len(recent_failures(store, hours=3)) == 3
    assert [s.error_type for s in filter_by_error_type(store, "KeyError")] == ["KeyError"]
    assert [s.error_type for s in filter_by_error_type(store, "Timeout")] == ["Timeout"]


def test_time_windows_accept_aware_datetimes_and_nanoseconds() -> None:
    """since/until take aware datetimes or Unix ns; last takes a timedelta or seconds."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base_ns = int(base.timestamp()) * 10**9
    store = SpanStore()
    for i in range(5):
        store.add(span(1, i + 1, start=base_ns + i * 10**9))
    window = query_spans(store, since=base + timedelta(seconds=1), until=base_ns + 3 * 10**9, order="oldest")
    assert [s.start_time_unix_nano - base_ns for s in window] == [10**9, 2 * 10**9]
    assert query_spans(store, last=timedelta(minutes=5)) == []


def test_get_trace_orders_by_start_and_accepts_uppercase() -> None:
    """get_trace returns the spans of one trace by start time, and [] for an unknown trace."""
    store = SpanStore()
    store.add(span(7, 2, start=20, parent=1))
    store.add(span(7, 1, start=10))
    store.add(span(8, 3, start=5))
    assert [s.span_id[-1] for s in get_trace(store, f"{7:032X}")] == ["1", "2"]
    assert get_trace(store, "f" * 32) == []


def test_find_traces_summaries_describe_the_trace() -> None:
    """A trace summary names its root, spans its time range and counts spans, errors and services."""
    store = SpanStore()
    store.add(span(1, 2, start=150, duration=50, parent=1, resource=DB, status_code=StatusCode.ERROR))
    store.add(span(1, 1, start=100, duration=200, name="GET /cart", resource=WEB))
    store.add(span(2, 3, start=400, parent=9, name="orphan", resource=DB))
    summaries = find_traces(store)
    assert [t.trace_id[-1] for t in summaries] == ["2", "1"]
    orphan, cart = summaries
    assert (cart.root_name, cart.root_service, cart.has_root) == ("GET /cart", "web", True)
    assert (cart.start_time_unix_nano, cart.duration_ns, cart.span_count, cart.error_count) == (100, 200, 2, 1)
    assert cart.services == ("db", "web")
    assert (orphan.root_name, orphan.has_root) == ("orphan", False)
    assert [t.trace_id[-1] for t in find_traces(store, service="db", status="ERROR")] == ["1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trace_id": "abc"}, "trace_id must be 32 hex characters, got 'abc'"),
        ({"trace_id": "g" * 32}, "trace_id must be 32 hex characters"),
        ({"limit": -1}, "limit must be an int >= 0 or None, got -1"),
        ({"limit": 2.5}, "limit must be an int >= 0 or None, got 2.5"),
        ({"order": "random"}, "order must be one of newest, oldest, longest; got 'random'"),
        ({"status": "BROKEN"}, "status must be one of UNSET, OK, ERROR"),
        ({"kind": 9}, "kind must be one of UNSPECIFIED, INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER"),
        ({"since": datetime(2026, 1, 1)}, "since must be a timezone-aware datetime"),
        (
            {"since": datetime(2026, 1, 1), "until": datetime(2026, 1, 2, tzinfo=timezone.utc)},
            "since and until must both be timezone-aware",
        ),
        ({"since": 10, "until": 5}, "since must not be after until"),
        ({"min_duration_ns": -5}, "min_duration_ns must be a non-negative int"),
        ({"min_duration_ns": 10, "max_duration_ns": 5}, "min_duration_ns must not exceed max_duration_ns"),
        ({"last": "1h"}, "last must be a timedelta or a number of seconds, got '1h'"),
        ({"attributes": [AttributeFilter("k", 1)], "bogus": 1}, "unknown query criteria bogus"),
        ({"attributes": 5}, "attributes must be a dict"),
        ({"name": 5}, "name must be a str, got 5"),
    ],
)
def test_bad_queries_raise_invalid_query_error(kwargs: dict, message: str) -> None:
    """A malformed query raises InvalidQueryError saying what was expected and what was got; the store is untouched."""
    store = SpanStore()
    store.add(span(1, 1, start=1))
    with pytest.raises(InvalidQueryError) as raised:
        query_spans(store, **kwargs)
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert len(store) == 1
    store._check()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("k", 1, "~="), "op must be one of ==, !=, <, <=, >, >=, in, exists, contains, matches; got '~='"),
        (("k", [1, 2], "<"), "'<' expects a number or a str, got [1, 2]"),
        (("k", "a(", "matches"), "invalid regular expression 'a('"),
        (("k", "abc", "in"), "'in' expects a list/tuple/set of values, got 'abc'"),
        (("k", 1, "exists"), "'exists' takes no value, got 1"),
        (("", 1), "key must be a non-empty str"),
        (("k", {"a": 1}), "expected a str, bool, int, float or bytes value"),
    ],
)
def test_bad_attribute_filters(args: tuple, message: str) -> None:
    """AttributeFilter validates its operator and value on construction."""
    with pytest.raises(InvalidQueryError) as raised:
        AttributeFilter(*args)
    assert message in str(raised.value)


def test_bad_arguments_of_the_helpers() -> None:
    """The convenience functions validate their own arguments too."""
    store = SpanStore()
    with pytest.raises(InvalidQueryError, match="hours must be a positive number, got -1"):
        recent_failures(store, hours=-1)
    with pytest.raises(InvalidQueryError, match="error_type must be a non-empty str, got None"):
        filter_by_error_type(store, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match="trace_id must be 32 hex characters, got 'xyz'"):
        get_trace(store, "xyz")


def test_planner_uses_an_index_instead_of_scanning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Selective queries touch only their candidates, and limit queries stop early, never checking every span."""
    store = SpanStore()
    for i in range(20_000):
        name = "rare" if i % 1000 == 0 else "common"
        attributes = AttributeMap.of({"user": f"u{i % 500}"})
        store.add(span(i // 10 + 1, i + 1, start=i, duration=(i % 100) * 100 + 1, name=name, attributes=attributes))
    checked = []
    original = SpanQuery.predicate

    def counting(self, now=None, **options):
        accept = original(self, now, **options)

        def check(item):
            checked.append(item)
            return accept(item)

        return check

    monkeypatch.setattr(SpanQuery, "predicate", counting)
    assert len(query_spans(store, name="rare")) == 20
    assert len(checked) == 20
    checked.clear()
    assert len(query_spans(store, name="common", limit=10)) == 10
    assert len(checked) <= 20
    checked.clear()
    assert len(filter_by_attribute(store, "user", "u7", limit=None)) == 40
    assert len(checked) == 40
    checked.clear()
    longest = query_spans(store, min_duration_ns=5_000, order="longest", limit=5)
    assert [s.duration_ns for s in longest] == [9_901] * 5
    assert len(checked) < 2_000
    checked.clear()
    assert len(find_traces(store, name="common", limit=3)) == 3
    assert len(checked) < 1_000


def test_planner_uses_the_bool_index_for_bool_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter on True checks only the spans holding True, not those holding 1 (True == 1 in Python)."""
    store = SpanStore()
    for i in range(2_000):
        value = True if i % 100 == 0 else i % 3  # 20 True, the rest 0, 1 or 2
        store.add(span(i + 1, i + 1, start=i, attributes=AttributeMap.of({"flag": value})))
    checked = []
    original = SpanQuery.predicate

    def counting(self, now=None, **options):
        accept = original(self, now, **options)
        return lambda item: checked.append(item) or accept(item)

    monkeypatch.setattr(SpanQuery, "predicate", counting)
    assert len(filter_by_attribute(store, "flag", True, limit=None)) == 20
    assert len(checked) <= 20
    assert len(query_spans(store, attributes=[AttributeFilter("flag", (True, 2), "in")])) == 20 + 660


def test_replace_keeps_last_in_nanoseconds() -> None:
    """SpanQuery.replace (and find_traces, which calls it) keeps ``last`` as given, not re-read as seconds."""
    query = SpanQuery(last=600)
    assert query.replace(limit=3).last == query.last == 600 * 10**9
    assert query.replace(last=60).last == 60 * 10**9
    store = SpanStore()
    now = now_unix_nano()
    for i, age_s in enumerate((7200, 10)):
        store.add(
            StoredSpan(
                trace_id=f"{i + 1:032x}",
                span_id=f"{i + 1:016x}",
                name="op",
                start_time_unix_nano=now - age_s * 10**9,
                end_time_unix_nano=now - age_s * 10**9 + 5,
            )
        )
    assert [t.trace_id for t in find_traces(store, last=3600)] == [f"{2:032x}"]


@pytest.mark.parametrize("pattern", ["(a+)+", "(a|a)*", "(a*)*b", "(.*a){20}"])
def test_matches_takes_linear_time_on_catastrophic_patterns(pattern: str) -> None:
    """Patterns that make a backtracking engine run for ages (here ~2^60 steps) answer at once: RE2 is linear."""
    value = "a" * 60 + "!"
    store = SpanStore()
    store.add_many(span(1, i, start=i, attributes=AttributeMap.of({"u": value})) for i in range(1, 4))
    assert query_spans(store, SpanQuery(attributes=[AttributeFilter("u", pattern, "matches")])) == []
    assert AttributeFilter("u", pattern + "!?", "matches").test("a" * 60) is (pattern != "(a*)*b")


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)a", "(?<!b)a"])
def test_matches_refuses_what_re2_cannot_match_in_linear_time(pattern: str) -> None:
    """Backreferences and lookaround are not RE2 (nor TraceQL): refused with the reason, not silently slow."""
    with pytest.raises(InvalidQueryError, match=r"invalid regular expression .* \(expected RE2 syntax\)"):
        AttributeFilter("k", pattern, "matches")


def test_an_int_beyond_2_53_finds_the_floats_equal_to_it() -> None:
    """Ints and floats compare numerically: `ratio == 2**60` finds spans holding 2.0**60 too (the index keeps such
    ints apart from the float runs; found by the queries drawn from stored spans)."""
    store = SpanStore()
    values = [2**60, float(2**60), 2**60 + 1]
    for i, value in enumerate(values, start=1):
        store.add(span(1, i, start=i, attributes=AttributeMap.of({"ratio": value})))
    found = query_spans(store, attributes={"ratio": 2**60}, order="oldest")
    assert [s.attributes["ratio"] for s in found] == [2**60, float(2**60)]
    assert [s.attributes["ratio"] for s in query_spans(store, attributes={"ratio": float(2**60)})] == [
        float(2**60),
        2**60,
    ]
