"""spanstore.analysis (similar traces, diff, per-operation stats) and its commands, against brute-force references."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider

import spanstore.analysis as analysis_module
import spanstore.query as query_module
from spanstore import (
    AttributeMap,
    InvalidQueryError,
    Resource,
    SpanStore,
    SpanStoreError,
    StatusCode,
    StoredSpan,
    TraceNotFoundError,
    diff_traces,
    find_similar_traces,
    get_trace,
    operation_stats,
)
from spanstore.analysis import _INDICES, MISSING_PARENT
from spanstore.cli import main
from spanstore.store import now_unix_nano

RESOURCES = {name: Resource(attributes=AttributeMap.of({"service.name": name})) for name in ("web", "cart", "db")}


# --- building traces --------------------------------------------------------------------------------------------------
class TraceBuilder:
    """Spans of one trace from a nested template ``(service, name, [children])``; ids and times made up."""

    def __init__(self, number: int, start: int = 1_000_000) -> None:
        self.trace_id = f"{number:032x}"
        self.spans: list[StoredSpan] = []
        self.start = start

    def add(
        self,
        service: str,
        name: str,
        parent: StoredSpan | None = None,
        *,
        duration: int = 1000,
        offset: int = 0,
        error: str | None = None,
        attributes: dict | None = None,
    ) -> StoredSpan:
        start = (parent.start_time_unix_nano if parent else self.start) + offset + len(self.spans)
        attrs = dict(attributes or {})
        if error:
            attrs["error.type"] = error
        span = StoredSpan(
            trace_id=self.trace_id,
            span_id=f"{len(self.spans) + 1:016x}",
            parent_span_id=parent.span_id if parent else None,
            name=name,
            start_time_unix_nano=start,
            end_time_unix_nano=start + duration,
            status_code=StatusCode.ERROR if error else StatusCode.UNSET,
            attributes=AttributeMap.of(attrs),
            resource=RESOURCES[service],
        )
        self.spans.append(span)
        return span

    def tree(self, node: tuple, parent: StoredSpan | None = None, rng: random.Random | None = None) -> None:
        service, name, children = node
        duration = rng.randrange(500, 5000) if rng else 1000
        span = self.add(service, name, parent, duration=duration)
        for child in children:
            self.tree(child, span, rng)


FAMILIES = [
    ("web", "GET /cart", [("cart", "load", [("db", "SELECT cart", [])]), ("web", "render", [])]),
    ("web", "POST /pay", [("cart", "charge", [("db", "UPDATE", []), ("db", "INSERT", [])]), ("web", "mail", [])]),
    ("web", "GET /search", [("db", "SELECT items", []), ("db", "SELECT items", []), ("web", "rank", [])]),
]
NOISES = [("web", "retry", []), ("db", "SELECT cart", []), ("cart", "cache", [])]


def noisy(rng: random.Random, family: int, noise: int) -> tuple:
    """A family's template with ``noise`` edits: a leaf removed or an extra child added, at random places."""

    def edit(node: tuple) -> tuple:
        service, name, children = node
        children = [edit(child) for child in children]
        return (service, name, children)

    template = edit(FAMILIES[family])
    for _ in range(noise):
        nodes = list(_walk(template))
        target = rng.choice(nodes)
        leaves = [child for child in target[2] if not child[2]]
        if leaves and rng.random() < 0.5:
            target[2].remove(rng.choice(leaves))
        else:
            service, name, _ = rng.choice(NOISES)
            target[2].append((service, name, []))
    return template


def _walk(node: tuple):
    yield node
    for child in node[2]:
        yield from _walk(child)


# --- the brute-force reference ----------------------------------------------------------------------------------------
def reference_shape(spans: list[StoredSpan]) -> Counter:
    names = {s.span_id: s.name for s in spans}
    shape: Counter = Counter()
    for s in spans:
        parent = None if s.parent_span_id is None else names.get(s.parent_span_id, MISSING_PARENT)
        shape[(s.service_name, s.name, parent)] += 1
        if s.status_code == StatusCode.ERROR:
            shape[(s.service_name, s.name, parent, s.error_type)] += 1
    return shape


def reference_similar(store: SpanStore, trace_id: str, limit: int) -> list[tuple[str, float]]:
    """Score every other trace with the documented formula; best first, ties to the trace that arrived last."""
    order = store.trace_ids()
    traces = {t: get_trace(store, t) for t in order}
    asked = traces[trace_id]
    shape_a = reference_shape(asked)
    dur_a = max(s.end_time_unix_nano for s in asked) - min(s.start_time_unix_nano for s in asked)
    scored = []
    for arrival, other in enumerate(order):
        if other == trace_id:
            continue
        spans = traces[other]
        shape_b = reference_shape(spans)
        shared = sum((shape_a & shape_b).values())
        if not shared:
            continue
        union = sum((shape_a | shape_b).values())
        dur_b = max(s.end_time_unix_nano for s in spans) - min(s.start_time_unix_nano for s in spans)
        longest = max(dur_a, dur_b)
        ratio = min(dur_a, dur_b) / longest if longest > 0 else 1.0
        scored.append((shared / union * (0.9 + 0.1 * ratio), arrival, other))
    scored.sort(reverse=True)
    return [(other, score) for score, _, other in scored[:limit]]


def similar_pairs(store: SpanStore, trace_id: str, limit: int = 10) -> list[tuple[str, float]]:
    return [(t.trace_id, t.score) for t in find_similar_traces(store, trace_id, limit=limit)]


def check_index(store: SpanStore) -> None:
    index = _INDICES.get(store)
    if index is not None:
        with store._lock:
            index.catch_up(store)
            index._check()


# --- similar traces ---------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(2, 30), limit=st.integers(1, 12))
def test_similar_equals_brute_force_on_noisy_shapes(seed: int, count: int, limit: int) -> None:
    """On traces of a few shapes with random edits, errors and durations, the ranking equals the brute force."""
    rng = random.Random(seed)
    store = SpanStore()
    for number in range(1, count + 1):
        builder = TraceBuilder(number)
        builder.tree(noisy(rng, rng.randrange(len(FAMILIES)), rng.randrange(3)), rng=rng)
        spans = builder.spans
        if rng.random() < 0.3:
            victim = rng.randrange(len(spans))
            spans[victim] = StoredSpan(
                **{
                    **{f: getattr(spans[victim], f) for f in spans[victim].__struct_fields__},
                    "status_code": StatusCode.ERROR,
                    "attributes": AttributeMap.of({"error.type": rng.choice(["Timeout", "Refused"])}),
                }
            )
        rng.shuffle(spans)  # children may arrive before their parents
        store.add_many(spans)
    for trace_id in rng.sample(store.trace_ids(), min(4, count)):
        got = similar_pairs(store, trace_id, limit)
        want = reference_similar(store, trace_id, limit)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=0)
        assert all(0 < s <= 1 for _, s in got) and trace_id not in {t for t, _ in got}
    check_index(store)


def test_same_shape_ranks_above_other_shapes_and_edits_lower_the_score() -> None:
    """Exact copies of a shape score highest, a trace with an extra or a missing span less, other shapes least."""
    store = SpanStore()
    base = FAMILIES[0]
    builders = {}
    for number, template in [
        (1, base),
        (2, base),
        (3, ("web", "GET /cart", [*base[2], ("web", "retry", [])])),  # an extra span
        (4, ("web", "GET /cart", base[2][:1])),  # a missing span
        (5, FAMILIES[1]),
        (6, FAMILIES[2]),
    ]:
        builders[number] = builder = TraceBuilder(number)
        builder.tree(template)
        store.add_many(builder.spans)
    ranked = similar_pairs(store, f"{1:032x}")
    ids = [int(t, 16) for t, _ in ranked]
    scores = dict(zip(ids, (s for _, s in ranked), strict=True))
    assert ids[0] == 2 and scores[2] == 1.0
    assert scores[2] > scores[3] and scores[2] > scores[4]
    assert min(scores[3], scores[4]) > max(scores.get(5, 0), scores.get(6, 0))
    found = {int(t.trace_id, 16): t for t in find_similar_traces(store, f"{1:032x}")}
    assert found[3].extra == ((("web", "retry", "GET /cart"), 1),) and found[3].missing == ()
    assert found[4].missing == ((("web", "render", "GET /cart"), 1),) and found[4].extra == ()


def test_error_pattern_and_duration_order_equal_shapes() -> None:
    """Among traces of one shape, the same error pattern ranks first, then the closest duration."""
    store = SpanStore()

    def add(number: int, error: str | None, duration: int) -> None:
        builder = TraceBuilder(number)
        root = builder.add("web", "GET /", duration=duration)
        builder.add("db", "SELECT", root, duration=duration // 2, error=error)
        store.add_many(builder.spans)

    add(1, "Timeout", 1000)
    add(2, None, 1000)  # same edges, no error
    add(3, "Timeout", 4000)  # same error, 4x slower
    add(4, "Timeout", 1100)  # same error, closer
    assert [int(t, 16) for t, _ in similar_pairs(store, f"{1:032x}")] == [4, 3, 2]


def test_unknown_trace_and_bad_arguments() -> None:
    """An unknown trace id raises TraceNotFoundError (a SpanStoreError and LookupError); bad ids and limits too."""
    store = SpanStore()
    builder = TraceBuilder(1)
    builder.tree(FAMILIES[0])
    store.add_many(builder.spans)
    with pytest.raises(TraceNotFoundError, match=f"no trace {2:032x}") as caught:
        find_similar_traces(store, f"{2:032x}")
    assert isinstance(caught.value, SpanStoreError) and isinstance(caught.value, LookupError)
    with pytest.raises(TraceNotFoundError):
        diff_traces(store, f"{1:032x}", f"{2:032x}")
    with pytest.raises(InvalidQueryError, match="32 hex"):
        find_similar_traces(store, "xyz")
    with pytest.raises(InvalidQueryError, match="limit"):
        find_similar_traces(store, f"{1:032x}", limit=-1)
    assert find_similar_traces(store, f"{1:032x}") == []
    assert find_similar_traces(store, f"{1:032x}".upper(), limit=0) == []


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), max_spans=st.integers(8, 60))
def test_index_stays_exact_through_arrivals_and_evictions(seed: int, max_spans: int) -> None:
    """With a small max_spans, queries between partial arrivals and evictions always equal the brute force."""
    rng = random.Random(seed)
    store = SpanStore(max_spans=max_spans)
    pending: list[StoredSpan] = []
    for number in range(1, 40):
        builder = TraceBuilder(number)
        builder.tree(noisy(rng, rng.randrange(len(FAMILIES)), rng.randrange(2)), rng=rng)
        pending.extend(builder.spans)
        rng.shuffle(pending)
        cut = rng.randrange(len(pending) + 1)
        store.add_many(pending[:cut])  # parts of traces: a parent may come a query later
        pending = pending[cut:]
        held = store.trace_ids()
        if held and rng.random() < 0.5:
            asked = rng.choice(held)
            assert similar_pairs(store, asked, 5) == [
                (t, pytest.approx(s, abs=0)) for t, s in reference_similar(store, asked, 5)
            ]
            check_index(store)
    store.clear()
    check_index(store)
    assert store.trace_ids() == []


def test_index_compacts_dead_entries() -> None:
    """Evicted and re-read traces leave dead postings that are dropped once they outnumber live ones."""
    store = SpanStore(max_spans=300)
    rng = random.Random(5)
    for number in range(1, 400):
        builder = TraceBuilder(number)
        builder.tree(FAMILIES[number % 3], rng=rng)
        store.add_many(builder.spans)
        if number % 7 == 0:
            find_similar_traces(store, store.trace_ids()[-1], limit=3)
    index = _INDICES[store]
    check_index(store)
    entries = sum(len(members) for members in index._postings.values())
    assert entries <= 2 * index._live_entries + 4096
    assert len(index._trace_of) < 2 * len(store.trace_ids()) + 1100


# --- a real application -----------------------------------------------------------------------------------------------
def run_shop(store: SpanStore, requests: list[tuple[str, bool]]) -> list[str]:
    """A small instrumented app on a real TracerProvider: each request is a route and whether payment fails."""
    from spanstore import FileBasedSpanProcessor

    provider = TracerProvider(resource=SdkResource.create({"service.name": "shop"}))
    provider.add_span_processor(FileBasedSpanProcessor(store))
    tracer = provider.get_tracer("shop")
    trace_ids = []
    for route, fail in requests:
        with tracer.start_as_current_span(f"GET {route}", kind=otel_trace.SpanKind.SERVER) as root:
            root.set_attribute("http.route", route)
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("load cart"), tracer.start_as_current_span("SELECT cart"):
                pass
            if route == "/checkout":
                with tracer.start_as_current_span("charge") as charge:
                    if fail:
                        try:
                            raise TimeoutError("gateway")
                        except TimeoutError as error:
                            charge.record_exception(error)
                            charge.set_status(otel_trace.StatusCode.ERROR, str(error))
                            charge.set_attribute("error.type", "TimeoutError")
    provider.force_flush()
    return trace_ids


def test_real_spans_similar_and_diff() -> None:
    """With spans from a real TracerProvider, a failed checkout is most like the other failed checkouts, and its
    diff against a good one shows the failed span's status and attribute changes."""
    store = SpanStore()
    ids = run_shop(store, [("/checkout", True), ("/checkout", False), ("/cart", False), ("/checkout", True)])
    failed, good, cart, failed_again = ids
    ranked = [t.trace_id for t in find_similar_traces(store, failed)]
    assert ranked[0] == failed_again and ranked[1] == good and ranked[-1] == cart
    diff = diff_traces(store, good, failed)
    assert [d.path[-1][1] for d in diff.spans] == ["GET /checkout", "load cart", "SELECT cart", "charge"]
    assert not diff.only_a and not diff.only_b
    (charge,) = diff.changed
    assert charge.status == (("UNSET", ""), ("ERROR", "gateway"))
    assert charge.attributes == (("error.type", None, "TimeoutError"),)
    store.close()


# --- diff -------------------------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_diff_finds_every_added_removed_and_changed_span(seed: int) -> None:
    """B = A with spans removed, added, re-timed, failed and re-attributed: the diff reports exactly those."""
    rng = random.Random(seed)
    store = SpanStore()
    a = TraceBuilder(1)
    b = TraceBuilder(2, start=9_000_000)
    expected: dict[str, set] = {"only_a": set(), "only_b": set(), "changed": set()}
    durations: dict[tuple, tuple[int, int]] = {}

    def grow(depth: int, parent_a: StoredSpan | None, parent_b: StoredSpan | None, path: tuple) -> None:
        for i in range(rng.randrange(1, 4) if depth < 3 else 0):
            name = f"op{depth}.{i}"
            service = rng.choice(list(RESOURCES))
            child_path = (*path, (service, name, 0))
            fate = rng.random()
            side = "a" if parent_b is None else "b" if parent_a is None else "both"
            if side == "both" and fate < 0.3:
                side = "a" if fate < 0.15 else "b"
            duration_a = rng.randrange(100, 10_000)
            duration_b = duration_a if rng.random() < 0.5 else rng.randrange(100, 10_000)
            attributes = {"k": rng.randrange(3)}
            span_a = span_b = None
            if side == "a":  # only in A, and so its whole subtree
                span_a = a.add(service, name, parent_a, duration=duration_a, offset=i, attributes=attributes)
                expected["only_a"].add(child_path)
            elif side == "b":
                span_b = b.add(service, name, parent_b, duration=duration_b, offset=i, attributes=attributes)
                expected["only_b"].add(child_path)
            else:
                error = "Boom" if rng.random() < 0.2 else None
                changed_attributes = {"k": attributes["k"] + 1} if rng.random() < 0.2 else attributes
                span_a = a.add(service, name, parent_a, duration=duration_a, offset=i, attributes=attributes)
                span_b = b.add(
                    service, name, parent_b, duration=duration_b, offset=i, error=error, attributes=changed_attributes
                )
                if error or changed_attributes != attributes:
                    expected["changed"].add(child_path)
                durations[child_path] = (duration_a, duration_b)
            grow(depth + 1, span_a, span_b, child_path)

    root_a = a.add("web", "root", duration=50_000)
    root_b = b.add("web", "root", duration=60_000)
    grow(1, root_a, root_b, (("web", "root", 0),))
    store.add_many(a.spans + b.spans)
    diff = diff_traces(store, a.trace_id, b.trace_id)
    got = {kind: {d.path for d in diff.spans if d.change == kind} for kind in ("only_a", "only_b", "changed")}
    assert got == expected
    assert len(diff.spans) == len({d.path for d in diff.spans})
    assert {d.path for d in diff.spans if d.a is not None} == {p for p in _paths(a.spans)}
    assert {d.path for d in diff.spans if d.b is not None} == {p for p in _paths(b.spans)}
    for entry in diff.spans:
        if entry.a is not None and entry.b is not None and entry.path in durations:
            duration_a, duration_b = durations[entry.path]
            assert entry.duration_delta_ns == duration_b - duration_a
            assert entry.duration_relative == pytest.approx((duration_b - duration_a) / duration_a)
    assert diff.spans[0].duration_delta_ns == 10_000


def _paths(spans: list[StoredSpan]) -> set[tuple]:
    by_id = {s.span_id: s for s in spans}
    out = set()
    for span in spans:
        path = []
        node: StoredSpan | None = span
        while node is not None:
            path.append((node.service_name, node.name, 0))
            node = by_id.get(node.parent_span_id) if node.parent_span_id else None
        out.add(tuple(reversed(path)))
    return out


def test_diff_aligns_same_named_siblings_by_position() -> None:
    """Same-named siblings are matched in start order: a third retry in B is the only span only in B."""
    store = SpanStore()
    for number, retries in ((1, 2), (2, 3)):
        builder = TraceBuilder(number)
        root = builder.add("web", "GET /", duration=10_000)
        for i in range(retries):
            builder.add("cart", "retry", root, offset=100 * i, duration=100 * (i + 1))
        store.add_many(builder.spans)
    diff = diff_traces(store, f"{1:032x}", f"{2:032x}")
    assert [(d.change, d.path[-1]) for d in diff.spans] == [
        ("same", ("web", "GET /", 0)),
        ("same", ("cart", "retry", 0)),
        ("same", ("cart", "retry", 1)),
        ("only_b", ("cart", "retry", 2)),
    ]
    assert diff.spans[2].duration_delta_ns == 0 and diff.spans[0].duration_relative == 0.0


# --- operation stats --------------------------------------------------------------------------------------------------
def nearest_rank(ordered: list[int], fraction: float) -> int:
    import math

    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


def reference_ops(spans: list[StoredSpan]) -> dict[tuple[str, str], dict]:
    groups: dict[tuple[str, str], list[StoredSpan]] = defaultdict(list)
    for span in spans:
        groups[(span.service_name, span.name)].append(span)
    out = {}
    for key, members in groups.items():
        durations = sorted(s.duration_ns for s in members)
        errors = [s for s in members if s.status_code == StatusCode.ERROR]
        newest = max(errors, key=lambda s: s.start_time_unix_nano, default=None)
        out[key] = {
            "span_count": len(members),
            "error_count": len(errors),
            "error_rate": len(errors) / len(members),
            "p50_ns": nearest_rank(durations, 0.5),
            "p95_ns": nearest_rank(durations, 0.95),
            "p99_ns": nearest_rank(durations, 0.99),
            "max_ns": durations[-1],
            "newest_error_trace_id": newest.trace_id if newest else None,
        }
    return out


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from(sorted(RESOURCES)),
            st.sampled_from(["GET /", "POST /pay", "SELECT"]),
            st.integers(0, 10**6),
            st.booleans(),
            st.integers(0, 7200),
        ),
        min_size=1,
        max_size=80,
    ),
    sort=st.sampled_from(["count", "errors", "p95"]),
)
@example(data=[("cart", "GET /", 0, False, 3600)], sort="count")  # exactly on the hour window's bound
def test_operation_stats_equal_a_sorted_list_reference(data: list, sort: str) -> None:
    """Counts, error rates, nearest-rank percentiles and newest error trace equal the reference, with criteria."""
    now = now_unix_nano()
    store = SpanStore()
    for i, (service, name, duration, failed, age_s) in enumerate(data):
        start = now - age_s * 10**9 - i  # distinct starts: "newest" is unambiguous
        store.add(
            StoredSpan(
                trace_id=f"{i + 1:032x}",
                span_id=f"{i + 1:016x}",
                name=name,
                start_time_unix_nano=start,
                end_time_unix_nano=start + duration,
                status_code=StatusCode.ERROR if failed else StatusCode.OK,
                resource=RESOURCES[service],
            )
        )
    spans = store.spans()
    for criteria, keep in (
        ({}, lambda s: True),
        ({"service": "web"}, lambda s: s.service_name == "web"),
        ({"last": 3600}, lambda s: s.start_time_unix_nano >= now - 3600 * 10**9),
    ):
        # The window ends at the reference's clock: a span exactly an hour old is in it for both (an unpatched
        # clock would have moved on by the time the query runs, and dropped it).
        with (
            mock.patch.object(analysis_module, "now_unix_nano", lambda: now),
            mock.patch.object(query_module, "now_unix_nano", lambda: now),
        ):
            rows = operation_stats(store, sort=sort, **criteria)
        want = reference_ops([s for s in spans if keep(s)])
        got = {(r.service, r.operation): {k: getattr(r, k) for k in next(iter(want.values()), {})} for r in rows}
        assert got == want
        key = {
            "count": lambda r: (-r.span_count, r.service, r.operation),
            "errors": lambda r: (-r.error_rate, -r.error_count, r.service, r.operation),
            "p95": lambda r: (-r.p95_ns, r.service, r.operation),
        }[sort]
        assert rows == sorted(rows, key=key)


def test_operation_stats_refuses_bad_arguments() -> None:
    """An unknown sort, a limit or an unknown criterion is an InvalidQueryError."""
    store = SpanStore()
    for kwargs in ({"sort": "name"}, {"limit": 3}, {"colour": "red"}):
        with pytest.raises(InvalidQueryError):
            operation_stats(store, **kwargs)


# --- the commands -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A store directory with the real app's spans: failed and good checkouts and a cart view."""
    path = str(tmp_path_factory.mktemp("shop") / "store")
    store = SpanStore(path)
    ids = run_shop(store, [("/checkout", True), ("/checkout", False), ("/cart", False), ("/checkout", True)])
    store.close()
    return path, ids


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")


def test_cli_similar(shop_store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """`spanstore similar` lists the traces by score, readable at 80 columns; --json gives one record per trace."""
    path, (failed, good, cart, failed_again) = shop_store
    code, out, err = run_cli(capsys, "similar", failed[:8], "--path", path)
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "Traces like" in out and "same shape" in out and "-1 error" in out
    code, out, _ = run_cli(capsys, "similar", failed, "--path", path, "--json", "--limit", "2")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["trace_id"] for r in records] == [failed_again, good]
    assert records[0]["score"] == 1.0 or records[0]["score"] > records[1]["score"]
    assert records[1]["missing"] == [
        {
            "service": "shop",
            "name": "charge",
            "parent": "GET /checkout",
            "error": True,
            "error_type": "TimeoutError",
            "count": 1,
        }
    ]
    code, _, err = run_cli(capsys, "similar", "ab" * 16, "--path", path)
    assert code == 1 and f"no trace {'ab' * 16} in {path}" in err
    code, _, err = run_cli(capsys, "similar", "abab", "--path", path)
    assert code == 1 and "no trace id starting with abab" in err


def test_cli_diff(shop_store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """`spanstore diff A B` shows the merged tree and the changed status at 80 columns; --json one line a span."""
    path, (failed, good, cart, _) = shop_store
    code, out, err = run_cli(capsys, "diff", good, failed, "--path", path)
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "~ 1 changed" in out and "status UNSET → ERROR: gateway" in out
    code, out, _ = run_cli(capsys, "diff", cart, good, "--path", path, "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["change"] for r in records] == ["only_a", "only_a", "only_a", "only_b", "only_b", "only_b", "only_b"]


def test_cli_ops(shop_store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """`spanstore ops` gives per-operation counts, errors and percentiles at 80 columns, sorted as asked."""
    path, (failed, _, _, failed_again) = shop_store
    code, out, err = run_cli(capsys, "ops", "--path", path, "--sort", "errors")
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "shop charge" in out and "2 (66.7%)" in out
    code, out, _ = run_cli(capsys, "ops", "--path", path, "--json", "--last", "1h", "--service", "shop")
    rows = {r["operation"]: r for r in map(json.loads, out.splitlines())}
    assert rows["charge"]["error_count"] == 2 and rows["charge"]["newest_error_trace_id"] == failed_again
    assert rows["SELECT cart"]["span_count"] == 4
    code, out, _ = run_cli(capsys, "ops", "--path", path, "--service", "nope")
    assert code == 0 and "No spans match" in out


def test_cli_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """Each new command has help with an example, and the README documents it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for command in ("similar", "diff", "ops"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "example" in out
        assert f"### spanstore {command}" in readme
