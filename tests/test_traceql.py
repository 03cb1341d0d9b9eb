"""The TraceQL subset: each construct's SpanQuery, errors with carets, round trips, fuzzing, and a store end to end."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind as SdkSpanKind
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode as SdkStatusCode

from spanstore import AttributeFilter, InvalidQueryError, SpanKind, SpanQuery, SpanStore, StatusCode, StoredSpan
from spanstore.query import query_spans
from spanstore.traceql import format_traceql, parse_traceql

MS = 1_000_000


def attr(key, value=None, op="==", scope="span"):
    return AttributeFilter(key, value, op, scope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", SpanQuery()),
        ("  {  }  ", SpanQuery()),
        ('{ name = "GET /cart" }', SpanQuery(name="GET /cart")),
        ('{ span:name = "a\\"b\\\\c\\n\\u00e9" }', SpanQuery(name='a"b\\c\né')),
        ("{ status = error }", SpanQuery(status=StatusCode.ERROR)),
        ("{ span:status = ok && status = ok }", SpanQuery(status=StatusCode.OK)),
        ("{ status = unset }", SpanQuery(status=StatusCode.UNSET)),
        ("{ kind = server }", SpanQuery(kind=SpanKind.SERVER)),
        ("{ span:kind = consumer }", SpanQuery(kind=SpanKind.CONSUMER)),
        ("{ duration > 100ms }", SpanQuery(min_duration_ns=100 * MS + 1)),
        ("{ duration >= 100ms }", SpanQuery(min_duration_ns=100 * MS)),
        ("{ span:duration < 1.5s }", SpanQuery(max_duration_ns=1_500 * MS - 1)),
        ("{ duration <= 2us }", SpanQuery(max_duration_ns=2_000)),
        ("{ duration = 3µs }", SpanQuery(min_duration_ns=3_000, max_duration_ns=3_000)),
        (
            "{ duration > 1m30s && duration < 1h }",
            SpanQuery(min_duration_ns=90_000 * MS + 1, max_duration_ns=3_600_000 * MS - 1),
        ),
        (
            "{ duration > 1ms && duration > 5ms && duration <= 9ms }",
            SpanQuery(min_duration_ns=5 * MS + 1, max_duration_ns=9 * MS),
        ),
        ("{ duration >= 0ns && duration <= 0ns }", SpanQuery(min_duration_ns=0, max_duration_ns=0)),
        ('{ trace:id = "0AF7651916CD43DD8448EB211C80319C" }', SpanQuery(trace_id="0af7651916cd43dd8448eb211c80319c")),
        ('{ traceID = "0af7651916cd43dd8448eb211c80319c" }', SpanQuery(trace_id="0af7651916cd43dd8448eb211c80319c")),
        ('{ resource.service.name = "cart" }', SpanQuery(service="cart")),
        (
            '{ resource.service.name =~ "ca.*" }',
            SpanQuery(attributes=[attr("service.name", "ca.*", "matches", "resource")]),
        ),
        ('{ span.http.route = "/cart" }', SpanQuery(attributes=[attr("http.route", "/cart")])),
        ('{ .http.route != "/cart" }', SpanQuery(attributes=[attr("http.route", "/cart", "!=")])),
        ("{ resource.x = 1 }", SpanQuery(attributes=[attr("x", 1, scope="resource")])),
        ("{ span.code>=500&&span.code<600 }", SpanQuery(attributes=[attr("code", 500, ">="), attr("code", 600, "<")])),
        (
            "{ span.ratio > -1.5e3 && span.ratio <= 2.0 }",
            SpanQuery(attributes=[attr("ratio", -1500.0, ">"), attr("ratio", 2.0, "<=")]),
        ),
        (
            "{ span.flag = true && span.other = false }",
            SpanQuery(attributes=[attr("flag", True), attr("other", False)]),
        ),
        ('{ span.route =~ "/api/.*" }', SpanQuery(attributes=[attr("route", "/api/.*", "matches")])),
        ("{ span.route =~ `\\d+` }", SpanQuery(attributes=[attr("route", "\\d+", "matches")])),
        ("{ span.db.system != nil }", SpanQuery(attributes=[attr("db.system", op="exists")])),
        ('{ span."my key" = 1 && ."ü" = 2 }', SpanQuery(attributes=[attr("my key", 1), attr("ü", 2)])),
        (
            '{ (status = error && (span.a = "x")) && kind = client }',
            SpanQuery(status="ERROR", kind="CLIENT", attributes=[attr("a", "x")]),
        ),
    ],
)
def test_each_construct_parses_to_its_span_query(text: str, expected: SpanQuery) -> None:
    """Every supported construct maps onto the documented SpanQuery fields and attribute filters."""
    assert parse_traceql(text) == expected


def test_numbers_keep_their_type() -> None:
    """An int literal stays an int and a decimal literal a float, so typed comparisons behave as in the query API."""
    (a, b) = parse_traceql("{ span.a = 500 && span.b = 500.0 }").attributes
    assert (type(a.value), type(b.value)) == (int, float)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("{ span.code = }", "expected a value after '=' at column 15, got '}'", 15),
        ("", "expected '{' to start a spanset", 1),
        ('span.a = "x"', "expected '{' to start a spanset", 1),
        ("{ span.a = 1 } && { span.b = 2 }", "combining spansets with '&&' is not supported", 16),
        ("{ span.a = 1 } || { span.b = 2 }", "combining spansets with '||' is not supported", 16),
        ("{ span.a = 1 || span.b = 2 }", "'||' is not supported", 14),
        ("{ span.a = 1 } | count() > 2", "pipelines (| count(), | select(...), ...) are not supported", 16),
        ("{ span.a = 1 } >> { span.b = 2 }", "structural operator '>>' is not supported", 16),
        ("{ span.a = 1 } ~ { span.b = 2 }", "structural operator '~' is not supported", 16),
        ('{ span.a !~ "x" }', "'!~' (does not match) is not supported", 10),
        ("{ !(span.a = 1) }", "negation '!' is not supported", 3),
        ("{ span.a = nil }", "only '!= nil' (the attribute exists) is supported", 10),
        ('{ rootName = "x" }', "the intrinsic 'rootName' is not supported (a trace-level field)", 3),
        ('{ span:id = "x" }', "the intrinsic 'span:id' is not supported", 3),
        ("{ event.name = 1 }", "the 'event.' scope is not supported", 3),
        ("{ foo.bar = 1 }", "expected an attribute scope", 3),
        ("{ http.route = 1 }", "expected an attribute scope", 3),
        ("{ code = 1 }", "(an attribute needs a scope: span.code, resource.code or .code)", 3),
        ('{ status = "error" }', "expected a status (error, ok or unset) after '=' at column 12, got '\"error\"'", 12),
        ("{ status != error }", "status supports only '='", 10),
        ('{ name =~ "GET.*" }', "name supports only '='", 8),
        ("{ kind = sever }", "expected a kind (unspecified, internal, server, client, producer, consumer)", 10),
        ("{ duration > 100 }", "expected a duration (e.g. 100ms, 1.5s) after '>' at column 14, got '100'", 14),
        ("{ duration > 100xs }", "expected a duration unit (ns, us, µs, ms, s, m or h) at column 17, got 'xs'", 17),
        ("{ duration > 1.5ns }", "expected a whole number of nanoseconds", 14),
        ("{ duration != 1s }", "duration supports only = < <= > >=", 12),
        ("{ duration > 5ms && duration < 5ms }", "contradicting duration conditions", 32),
        ("{ duration < 0ns }", "contradicting duration conditions", 14),
        ("{ duration > -1s }", "expected a duration >= 0", 14),
        ('{ name = "a" && name = "b" }', "conflicting conditions: name is already required to be 'a'", 24),
        ('{ trace:id = "abc" }', "expected a trace id of 32 hex characters", 14),
        ('{ span.a = "open', "expected a closing '\"' for this string", 12),
        ("{ span.a = 'x' }", 'expected a "double-quoted" or `raw` string', 12),
        ('{ span.a = "\\q" }', "expected an escape", 13),
        ("{ span.a < true }", "filter on 'a': '<' expects a number or a str, got True", 12),
        ('{ span.a =~ "(" }', "invalid regular expression", 13),
        ("{ span.a = 1s }", "expected a string, number, true, false or nil", 12),
        ("{ span.a = error }", '(a string needs quotes: "error")', 12),
        ("{ span. = 1 }", "expected an attribute name after 'span.'", 8),
        ("{ span.a = 1 span.b = 2 }", "expected '&&' or '}' after a condition at column 14, got 'span.b'", 14),
        ("{ span.a = 1", "expected '&&' or '}' after a condition at column 13, got end of query", 13),
        ("{ span.a 1 }", "expected a comparison (= != < <= > >= =~) after 'span.a'", 10),
        ("{ (span.a = 1 }", "expected '&&' or ')' after a condition", 15),
        ("{ span.a = 1e999 }", "expected a finite number", 12),
        ("{ span.a = 1 } x", "expected the end of the query after '}'", 16),
        ("{ span.a = 1 ? }", "expected a field, an operator, a value, '{' or '}'", 14),
    ],
)
def test_errors_say_expected_got_and_where_with_a_caret(text: str, message: str, column: int) -> None:
    """A query outside the subset raises InvalidQueryError naming the problem, its column, and a caret under it."""
    with pytest.raises(InvalidQueryError) as info:
        parse_traceql(text)
    first, echoed, caret = str(info.value).split("\n")
    assert message in first
    assert f"at column {column}" in first
    assert echoed == "  " + text
    assert caret == "  " + " " * (column - 1) + "^"


def test_error_in_a_multiline_query_names_line_and_column() -> None:
    """In a query spanning lines the error shows the offending line, its number, and the caret within it."""
    with pytest.raises(InvalidQueryError) as info:
        parse_traceql("{\n  span.a = 1 &&\n  span.b = }")
    assert str(info.value).split("\n") == [
        "expected a value after '=' at line 3, column 12, got '}'",
        "    span.b = }",
        "             ^",
    ]


def test_error_in_a_long_query_shows_a_window_around_the_caret() -> None:
    """A long query is echoed as a window around the error, the caret still under the offending token."""
    text = "{ " + " && ".join(f"span.k{i} = {i}" for i in range(40)) + " && span.z = }"
    _, echoed, caret = str(pytest.raises(InvalidQueryError, parse_traceql, text).value).split("\n")
    assert len(echoed) < 120
    assert echoed[len(caret) - 1] == "}"


def test_non_str_input_is_an_invalid_query() -> None:
    """Passing something other than a str raises InvalidQueryError, not TypeError."""
    with pytest.raises(InvalidQueryError, match="must be a str, got bytes"):
        parse_traceql(b"{}")  # type: ignore[arg-type]


# --- round trip -------------------------------------------------------------------------------------------------------
FINITE = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.text() | st.integers(-(2**63), 2**63 - 1) | st.booleans() | FINITE


@st.composite
def supported_filters(draw: st.DrawFn) -> AttributeFilter:
    """An AttributeFilter TraceQL can spell (and not the one that parses to SpanQuery.service)."""
    key = draw(st.text(min_size=1, max_size=12) | st.sampled_from(["http.route", "a-b/c:d", "x.y.z"]))
    scope = draw(st.sampled_from(["span", "resource"]))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "exists", "matches"]))
    if op == "exists":
        value = None
    elif op == "matches":
        value = draw(st.sampled_from(["a.*", "[0-9]+", "/api/(cart|pay)"]) | st.text().map(re.escape))
    elif op in ("<", "<=", ">", ">="):
        value = draw(st.text() | st.integers() | FINITE)
    else:
        value = draw(SCALARS)
    if scope == "resource" and key == "service.name" and op == "==" and type(value) is str:
        scope = "span"
    return AttributeFilter(key, value, op, scope)


@st.composite
def supported_queries(draw: st.DrawFn) -> SpanQuery:
    """A SpanQuery using only what TraceQL can say."""
    low = draw(st.none() | st.integers(0, 10**13))
    high = draw(st.none() | st.integers(low or 0, 10**13 + 10))
    return SpanQuery(
        trace_id=draw(st.none() | st.integers(0, 2**128 - 1).map(lambda n: f"{n:032x}")),
        name=draw(st.none() | st.text()),
        service=draw(st.none() | st.text()),
        kind=draw(st.none() | st.sampled_from(list(SpanKind))),
        status=draw(st.none() | st.sampled_from(list(StatusCode))),
        min_duration_ns=low,
        max_duration_ns=high,
        attributes=tuple(draw(st.lists(supported_filters(), max_size=4))),
    )


def _typed(query: SpanQuery) -> tuple:
    """The query with each filter value's type, as dataclass equality says 1 == 1.0 == True."""
    return query, [
        (type(f.value), math.copysign(1, f.value) if type(f.value) is float else 0) for f in query.attributes
    ]


@settings(max_examples=150, deadline=None)
@given(supported_queries())
def test_format_then_parse_is_the_identity(query: SpanQuery) -> None:
    """parse_traceql(format_traceql(q)) == q, value types included, for every query TraceQL can express."""
    assert _typed(parse_traceql(format_traceql(query))) == _typed(query)


@pytest.mark.parametrize(
    "query",
    [
        SpanQuery(since=1),
        SpanQuery(last=60),
        SpanQuery(root_only=True),
        SpanQuery(error_type="TimeoutError"),
        SpanQuery(limit=10),
        SpanQuery(order="oldest"),
        SpanQuery(attributes=[attr("a", (1, 2), "in")]),
        SpanQuery(attributes=[attr("a", "x", "contains")]),
        SpanQuery(attributes=[attr("a", b"x")]),
        SpanQuery(attributes=[attr("a", ("x",))]),
        SpanQuery(attributes=[attr("a", float("nan"))]),
    ],
)
def test_format_refuses_what_traceql_cannot_say(query: SpanQuery) -> None:
    """format_traceql raises InvalidQueryError rather than print a query that means something else."""
    with pytest.raises(InvalidQueryError, match="TraceQL has no spelling"):
        format_traceql(query)


# --- fuzzing ----------------------------------------------------------------------------------------------------------
PIECES = ["{", "}", "(", ")", "&&", "||", "|", "=", "!=", "=~", "!~", ">", ">=", "<", "<=", ">>", "!", "~", "-",
          "span.a", ".b", "resource.service.name", "span:", "trace:id", "name", "status", "kind", "duration", "error",
          "server", "nil", "true", '"x"', '"\\u00', "`r", "1", "-2", "1.5", "1e3", "100ms", "1m30s", "1.5ns", "9" * 120,
          "rootName", "count()", "'", "\n", " ", "µ"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text() | st.lists(st.sampled_from(PIECES), max_size=25).map(" ".join))
def test_any_text_parses_or_raises_invalid_query_error(text: str) -> None:
    """Whatever the input, parse_traceql returns a SpanQuery or raises InvalidQueryError with a caret, nothing else."""
    try:
        query = parse_traceql(text)
    except InvalidQueryError as error:
        assert str(error).count("\n") == 2 and str(error).endswith("^")
    else:
        assert isinstance(query, SpanQuery)


def test_deep_nesting_is_an_error_not_a_recursion_error() -> None:
    """Thousands of nested parentheses are refused with InvalidQueryError, never RecursionError."""
    with pytest.raises(InvalidQueryError, match="nested parentheses"):
        parse_traceql("{ " + "(" * 5000 + "span.a = 1" + ")" * 5000 + " }")


# --- end to end -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store() -> SpanStore:
    """A store holding real SDK spans: cart errors and successes from two services."""
    stored = SpanStore()
    for service in ("cart", "web"):
        exporter = InMemorySpanExporter()  # one each: a provider's shutdown shuts its exporter
        provider = TracerProvider(resource=SdkResource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        for route, failed in [("/cart", True), ("/cart", False), ("/pay", True)]:
            with tracer.start_as_current_span(f"GET {route}", kind=SdkSpanKind.SERVER) as span:
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", 500 if failed else 200)
                if failed:
                    span.set_status(Status(SdkStatusCode.ERROR))
        provider.shutdown()
        for span in exporter.get_finished_spans():
            stored.add(StoredSpan.from_readable_span(span))
    return stored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{ status = error && span.http.route = "/cart" }', [("cart", "/cart"), ("web", "/cart")]),
        (
            '{ resource.service.name = "web" && span.http.response.status_code >= 500 }',
            [("web", "/cart"), ("web", "/pay")],
        ),
        ('{ .http.route =~ "/p.*" && kind = server && duration >= 0ns }', [("cart", "/pay"), ("web", "/pay")]),
        ('{ span.http.route != "/cart" && status = ok }', []),
        ("{ span.missing != nil }", []),
    ],
)
def test_parsed_queries_run_on_a_store(store: SpanStore, text: str, expected: list) -> None:
    """A parsed query selects exactly the spans its TraceQL text describes from a store of real SDK spans."""
    found = query_spans(store, parse_traceql(text))
    assert sorted((s.service_name, s.attributes["http.route"]) for s in found) == expected
    assert len(query_spans(store, parse_traceql("{}"))) == 6
