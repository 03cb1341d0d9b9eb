"""Tests for spanstore.testing: the span router, CapturedSpans' assertions and the text tree, with real SDK spans.

Everything here runs in-process with providers the tests build: the global tracer provider is never touched (the
pytester tests in test_pytest_plugin.py cover it, in subprocesses).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from spanstore.errors import InvalidQueryError
from spanstore.model import AttributeMap, SpanEvent, SpanKind, SpanLink, StatusCode, StoredSpan
from spanstore.query import AttributeFilter
from spanstore.testing import CapturedSpans, SpanRouter, attach, attach_global, capture_spans, format_tree, router


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = attach(TracerProvider(resource=SdkResource.create({"service.name": "shop"}), shutdown_on_exit=False))
    yield provider
    provider.shutdown()


@pytest.fixture
def tracer(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer("tests")


def checkout(tracer: trace.Tracer, items: int, *, fail: bool = False) -> None:
    """A small instrumented operation: a SERVER root, a CLIENT child, a grandchild."""
    with (
        tracer.start_as_current_span("POST /cart", kind=trace.SpanKind.SERVER, attributes={"http.route": "/cart"}),
        tracer.start_as_current_span("checkout", attributes={"cart.items": items}) as span,
    ):
        with tracer.start_as_current_span("db.query", kind=trace.SpanKind.CLIENT, attributes={"db.system": "x"}):
            pass
        if fail:
            span.set_status(trace.StatusCode.ERROR, "card declined")


# --- capturing ----------------------------------------------------------------------------------------------------
def test_capture_holds_only_spans_ended_while_active(tracer: trace.Tracer) -> None:
    """A capture holds the spans ended between start and stop, not those ended before or after."""
    tracer.start_span("before").end()
    with CapturedSpans() as spans:
        tracer.start_span("during").end()
        late = tracer.start_span("started inside, ended after")
    late.end()
    tracer.start_span("after").end()
    assert [span.name for span in spans] == ["during"]


def test_spans_ended_on_threads_and_asyncio_tasks_are_captured(tracer: trace.Tracer) -> None:
    """Routing is by time, not thread or context: spans ended by threads and asyncio tasks land in the capture."""

    async def handle(n: int) -> None:
        with tracer.start_as_current_span("task", attributes={"n": n}):
            await asyncio.sleep(0)
        await asyncio.to_thread(lambda: tracer.start_span("in to_thread", attributes={"n": n}).end())

    async def main() -> None:
        await asyncio.gather(*(handle(n) for n in range(3)))

    with CapturedSpans() as spans:
        threads = [threading.Thread(target=checkout, args=(tracer, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        asyncio.run(main())
    spans.assert_span(name="checkout", count=4)
    spans.assert_span(name="task", count=3)
    spans.assert_span(name="in to_thread", count=3)
    assert len(spans) == 4 * 3 + 3 + 3


def test_nested_captures_both_receive_a_span(tracer: trace.Tracer) -> None:
    """A span reaches every capture active when it ends; the outer one also keeps what ended outside the inner."""
    with capture_spans(global_provider=False) as outer:
        tracer.start_span("outer only").end()
        with capture_spans(global_provider=False) as inner:
            tracer.start_span("both").end()
    assert sorted(span.name for span in outer) == ["both", "outer only"]
    assert [span.name for span in inner] == ["both"]


class RecordOnly(Sampler):
    """Records spans without sampling them: they reach processors, flagged unsampled."""

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


def test_router_skips_unsampled_spans() -> None:
    """Recorded but unsampled spans are not captured, as no exporter would see them."""
    provider = attach(TracerProvider(sampler=RecordOnly(), shutdown_on_exit=False))
    with CapturedSpans() as spans:
        provider.get_tracer("tests").start_span("recorded only").end()
    assert len(spans) == 0


def test_attach_is_idempotent_and_refuses_a_non_sdk_provider(tracer: trace.Tracer, provider: TracerProvider) -> None:
    """Attaching a provider twice routes each span once; an API-only provider is refused with a TypeError."""
    assert attach(provider) is provider
    assert CapturedSpans().attach(provider) is provider
    with CapturedSpans() as spans:
        tracer.start_span("once").end()
    assert len(spans) == 1
    with pytest.raises(TypeError, match="expected an opentelemetry.sdk.trace.TracerProvider.*NoOpTracerProvider"):
        attach(trace.NoOpTracerProvider())  # type: ignore[arg-type]
    assert not router().is_attached(trace.NoOpTracerProvider())


def test_a_provider_shutdown_does_not_stop_routing_for_others(tracer: trace.Tracer) -> None:
    """Shutting down one attached provider (as a test's own provider is) leaves the shared router working."""
    other = attach(TracerProvider(shutdown_on_exit=False))
    other.shutdown()
    with CapturedSpans() as spans:
        tracer.start_span("still routed").end()
    assert [span.name for span in spans] == ["still routed"]


def test_a_failing_sink_never_breaks_span_end(tracer: trace.Tracer, caplog: pytest.LogCaptureFixture) -> None:
    """A sink that raises is logged once; span.end() does not raise and other sinks still get the span."""

    class Broken:
        def submit(self, span: object) -> None:
            raise RuntimeError("sink is broken")

    route = SpanRouter()
    provider = route.attach(TracerProvider(shutdown_on_exit=False))
    broken = Broken()
    route.activate(broken)
    with CapturedSpans() as spans:
        route.activate(spans.store)
        provider.get_tracer("tests").start_span("a").end()
        provider.get_tracer("tests").start_span("b").end()
    route.deactivate(broken)
    route.deactivate(spans.store)
    assert len([r for r in caplog.records if "could not hand span" in r.getMessage()]) == 1
    assert repr(route) == "<SpanRouter sinks=0 providers=1>"


def test_attach_global_sets_an_sdk_provider_only_over_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the API's proxy attach_global sets an SDK provider; an SDK one is reused; a NoOp one is an error."""
    state: dict[str, object] = {"provider": trace.ProxyTracerProvider()}
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: state["provider"])
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: state.update(provider=provider))

    created = attach_global()
    assert isinstance(created, TracerProvider) and state["provider"] is created
    assert router().is_attached(created)
    assert attach_global() is created

    mine = TracerProvider(shutdown_on_exit=False)
    state["provider"] = mine
    assert attach_global() is mine and router().is_attached(mine)

    state["provider"] = trace.NoOpTracerProvider()
    with pytest.raises(RuntimeError, match="expected the global tracer provider to be an SDK TracerProvider"):
        attach_global()


# --- finding and asserting ----------------------------------------------------------------------------------------
@pytest.fixture
def shop(tracer: trace.Tracer) -> CapturedSpans:
    """Two checkouts (one failing) and an unrelated span."""
    with CapturedSpans() as spans:
        checkout(tracer, 3)
        checkout(tracer, 7, fail=True)
        tracer.start_span("cleanup", attributes={"cart.items": 7}).end()
    return spans


def test_assert_span_returns_the_one_match(shop: CapturedSpans) -> None:
    """assert_span finds by name, kind, status (any spelling), attributes and parent, and returns the one match."""
    span = shop.assert_span(name="checkout", status="error", attributes={"cart.items": 7}, parent="POST /cart")
    assert isinstance(span, StoredSpan) and span.status_message == "card declined"
    query = shop.assert_span(name="db.query", kind="CLIENT", parent=span)
    assert query.parent_span_id == span.span_id
    roots = shop.assert_span(
        name="POST /cart", kind=SpanKind.SERVER, parent=None, attributes={"http.route": "/cart"}, count=2
    )
    assert all(root.is_root for root in roots) and shop.one(name="cleanup").attributes["cart.items"] == 7


def test_assert_span_with_count_returns_a_list(shop: CapturedSpans) -> None:
    """count=n asserts exactly n matches and returns them oldest first; count=0 asserts there is none."""
    found = shop.assert_span(name="checkout", count=2)
    assert [span.attributes["cart.items"] for span in found] == [3, 7]
    assert shop.assert_span(name="refund", count=0) == []
    assert shop.assert_span(attributes=[("cart.items", ">", 5)], count=2) == [found[1], shop.one(name="cleanup")]


def test_assert_span_failure_lists_closest_spans_and_each_difference(shop: CapturedSpans) -> None:
    """With no match, the error ranks spans by number of differences and gives expected vs got for each."""
    with pytest.raises(AssertionError) as raised:
        shop.assert_span(name="checkout", status="OK", attributes={"cart.items": 3, "coupon": "X"}, parent="POST /cart")
    message = str(raised.value)
    assert message.splitlines()[:5] == [
        "expected 1 span with name='checkout', status='OK', attributes={'cart.items': 3, 'coupon': 'X'}, "
        "parent='POST /cart'; found none among 7 captured spans",
        "closest:",
        "  'checkout' (trace 1, child of 'POST /cart'): 2 differences",
        "    status: expected OK, got UNSET",
        "    attributes['coupon']: expected 'X', got missing",
    ]
    assert message.splitlines()[5:9] == [
        "  'checkout' (trace 2, child of 'POST /cart'): 3 differences",
        "    status: expected OK, got ERROR ('card declined')",
        "    attributes['cart.items']: expected 3, got 7",
        "    attributes['coupon']: expected 'X', got missing",
    ]
    assert "    parent: expected 'POST /cart', got no parent (a root span)" in message
    assert message.endswith("  ... and 2 more spans, further off")


def test_assert_span_failure_on_too_many_matches_lists_them(shop: CapturedSpans) -> None:
    """More matches than expected: the error lists every match, so the missing criterion is easy to see."""
    with pytest.raises(AssertionError) as raised:
        shop.one(name="db.query")
    assert str(raised.value).splitlines() == [
        "expected 1 span with name='db.query'; found 2 among 7 captured spans",
        "matching:",
        "  'db.query' (trace 1, child of 'checkout')",
        "  'db.query' (trace 2, child of 'checkout')",
    ]
    with pytest.raises(AssertionError, match=r"expected 0 spans with name='cleanup'; found 1 among"):
        shop.assert_span(name="cleanup", count=0)


def test_assert_span_on_an_empty_capture_says_where_spans_may_have_gone() -> None:
    """With nothing captured, the error says so and points at the provider wiring."""
    with pytest.raises(AssertionError) as raised:
        CapturedSpans().assert_span(name="x")
    message = str(raised.value)
    assert message.startswith("expected 1 span with name='x'; found none among 0 captured spans\n")
    assert "spans.attach(provider)" in message


def test_find_criteria(tracer: trace.Tracer) -> None:
    """find filters by status message, service, error type, trace id, attribute operators and resource attributes."""
    with CapturedSpans() as spans:
        checkout(tracer, 1, fail=True)
        try:
            with tracer.start_as_current_span("pay"):
                raise TimeoutError("slow bank")
        except TimeoutError:
            pass
    declined = spans.find(status_message="card declined")
    assert [span.name for span in declined] == ["checkout"]
    assert [span.name for span in spans.find(error_type="TimeoutError")] == ["pay"]
    assert len(spans.find(service="shop")) == 4 and spans.find(service="other") == []
    trace_id = declined[0].trace_id
    assert {span.name for span in spans.find(trace_id=trace_id.upper())} == {"POST /cart", "checkout", "db.query"}
    assert [s.name for s in spans.find(attributes=[AttributeFilter("db.system", op="exists")])] == ["db.query"]
    resource_filter = AttributeFilter("service.name", "shop", scope="resource")
    assert len(spans.find("pay", attributes=[resource_filter])) == 1
    with pytest.raises(AssertionError, match=r"resource.attributes\['service.name'\]: expected 'web', got 'shop'"):
        spans.one("pay", attributes=[AttributeFilter("service.name", "web", scope="resource")])


def test_bad_criteria_raise_clear_errors(shop: CapturedSpans) -> None:
    """Unknown criteria, bad values, a bad parent or count raise errors naming what was expected and got."""
    with pytest.raises(TypeError, match="unexpected span criteria colour; expected some of name, kind"):
        shop.find(colour="red")
    with pytest.raises(InvalidQueryError, match="status must be one of UNSET, OK, ERROR"):
        shop.find(status="broken")
    with pytest.raises(TypeError, match="parent must be a span name, a StoredSpan or None"):
        shop.find(parent=3)
    with pytest.raises(TypeError, match="count must be an int >= 0 or None, got -1"):
        shop.assert_span(name="checkout", count=-1)
    with pytest.raises(TypeError, match="status_message must be a str"):
        shop.find(status_message=5)


def test_reading_helpers(shop: CapturedSpans) -> None:
    """len, iteration (oldest first), query (newest first), get_trace, repr and clear read the capture's store."""
    assert len(shop) == 7
    names = [span.name for span in shop]
    assert names[:3] == ["POST /cart", "checkout", "db.query"]
    assert shop.query(name="checkout", limit=1)[0].attributes["cart.items"] == 7
    failed = shop.one(name="checkout", status="ERROR")
    assert [span.name for span in shop.get_trace(failed.trace_id)] == ["POST /cart", "checkout", "db.query"]
    assert repr(shop) == "<CapturedSpans spans=7 traces=3>"
    shop.clear()
    assert len(shop) == 0 and list(shop) == []


# --- the text tree --------------------------------------------------------------------------------------------------
def test_tree_is_identical_for_identical_behaviour(tracer: trace.Tracer) -> None:
    """Two runs of the same code dump the same tree: ids, times and stack traces never appear."""
    dumps = []
    for _ in range(2):
        with CapturedSpans() as spans:
            checkout(tracer, 2, fail=True)
            try:
                with tracer.start_as_current_span("pay"):
                    raise ValueError("no funds")
            except ValueError:
                pass
        dumps.append(spans.tree())
    assert dumps[0] == dumps[1]
    assert dumps[0] == "\n".join(
        [
            "trace 1",
            "└── POST /cart [SERVER] {http.route='/cart'}",
            "    └── checkout ERROR 'card declined' {cart.items=2}",
            "        └── db.query [CLIENT] {db.system='x'}",
            "trace 2",
            "└── pay ERROR 'ValueError: no funds'",
            "      • exception {exception.escaped='False', exception.message='no funds', exception.type='ValueError'}",
        ]
    )
    assert dumps[0].count("trace ") == 2 and "stacktrace" not in dumps[0]


def span(name: str, span_id: int, start: int, parent: int | None = None, trace_no: int = 1, **fields) -> StoredSpan:
    return StoredSpan(
        trace_id=f"{trace_no:032x}",
        span_id=f"{span_id:016x}",
        parent_span_id=f"{parent:016x}" if parent is not None else None,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 2_500_000,
        **fields,
    )


def test_tree_orders_siblings_and_marks_orphans_links_and_times() -> None:
    """Children come by start time then name; orphans are marked; links name their trace; times are relative."""
    spans = [
        span("root", 1, 10_000_000, attributes=AttributeMap.of({"b": 2, "a": (1, 2)})),
        span("zeta", 2, 11_000_000, parent=1),
        span("alpha", 3, 11_000_000, parent=1, kind=SpanKind.PRODUCER),
        span("first", 4, 10_500_000, parent=1, events=(SpanEvent("retry", 10_600_000),)),
        span("orphan", 5, 50_000_000, parent=99, trace_no=2, links=(SpanLink(f"{1:032x}", f"{2:016x}"),)),
        span("linker", 6, 60_000_000, trace_no=2, links=(SpanLink(f"{7:032x}", f"{7:016x}"),)),
    ]
    assert format_tree(reversed(spans)) == "\n".join(
        [
            "trace 1",
            "└── root {a=(1, 2), b=2}",
            "    ├── first",
            "    │     • retry",
            "    ├── alpha [PRODUCER]",
            "    └── zeta",
            "trace 2",
            "├── orphan (parent not captured)",
            "│     • link to trace 1 'zeta'",
            "└── linker",
            "      • link to a span not captured",
        ]
    )
    timed = format_tree(spans[:2], times="ms", attributes=False)
    assert timed.splitlines()[1:] == ["└── root [+0ms 2ms]", "    └── zeta [+1ms 2ms]"]
    assert format_tree(spans[:4], sort="name", events=False).splitlines()[2:] == [
        "    ├── alpha [PRODUCER]",
        "    ├── first",
        "    └── zeta",
    ]


def test_tree_rejects_unknown_options() -> None:
    """An unknown time unit or sort order is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="times must be None or one of ns, us, ms, s, got 'h'"):
        format_tree([], times="h")
    with pytest.raises(ValueError, match="sort must be 'time' or 'name', got 'size'"):
        CapturedSpans().tree(sort="size")
    assert format_tree([]) == ""


@st.composite
def span_forests(draw: st.DrawFn) -> list[StoredSpan]:
    """Spans of a few traces whose parents are other spans, missing spans, or (corrupt data) cycles."""
    result = []
    for trace_no in range(1, draw(st.integers(1, 3)) + 1):
        count = draw(st.integers(1, 7))
        ids = [trace_no * 100 + i for i in range(count)]
        for span_id in ids:
            parent = draw(st.sampled_from([None, None, 99, *ids]))
            attributes = draw(st.dictionaries(st.sampled_from(["k", "n"]), st.sampled_from([1, "x", True]), max_size=2))
            events = (SpanEvent("e", 0),) if draw(st.booleans()) else ()
            result.append(
                span(
                    draw(st.sampled_from(["a", "b"])),
                    span_id,
                    draw(st.integers(0, 2)),
                    parent=parent,
                    trace_no=trace_no,
                    attributes=AttributeMap.of(attributes),
                    status_code=draw(st.sampled_from(list(StatusCode))),
                    events=events,
                )
            )
    return result


@given(span_forests(), st.randoms(use_true_random=False), st.sampled_from(["time", "name"]))
def test_tree_depends_only_on_content_and_shows_every_span_once(spans: list[StoredSpan], random, sort: str) -> None:
    """The dump of any shuffle of the spans is the same, and it holds one line per span plus one per trace."""
    shuffled = list(spans)
    random.shuffle(shuffled)
    dump = format_tree(spans, sort=sort, events=False)
    assert format_tree(shuffled, sort=sort, events=False) == dump
    assert format_tree(shuffled, sort=sort) == format_tree(spans, sort=sort)
    lines = dump.splitlines()
    assert len(lines) == len(spans) + len({s.trace_id for s in spans})
    assert sum(line.startswith("trace ") for line in lines) == len({s.trace_id for s in spans})
