"""spanstore.traced and spanstore.capture: spans with inputs, output and exceptions, on a real TracerProvider."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from spanstore import FileBasedSpanProcessor, traced
from spanstore.capture import REDACTED, is_secret_key, to_json

SECRET = "s3cr3t-Zq9"  # never to be seen in a captured value or on disk


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


@dataclasses.dataclass
class Point:
    x: int
    y: int
    api_key: str = SECRET


class Order(msgspec.Struct):
    id: int
    password: str = SECRET


class User(pydantic.BaseModel):
    name: str
    token: str = SECRET


# --- the decorator on every kind of function -------------------------------------------------------------------------
def test_function_span_name_code_attributes_inputs_and_output(provider, exporter):
    """A call gets a span `module.qualname` with code.*, inputs by parameter name (defaults applied) and output."""

    @traced(tracer=provider)
    def add(a: int, b: int = 2, *, scale: int = 1) -> int:
        """Adds."""
        return (a + b) * scale

    assert add(1, scale=3) == 9
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{__name__}.test_function_span_name_code_attributes_inputs_and_output.<locals>.add"
    assert span.attributes["code.function"] == "add"
    assert span.attributes["code.namespace"].endswith("<locals>")
    assert json.loads(span.attributes["input.value"]) == {"a": 1, "b": 2, "scale": 3}
    assert span.attributes["input.mime_type"] == span.attributes["output.mime_type"] == "application/json"
    assert json.loads(span.attributes["output.value"]) == 9
    assert add.__doc__ == "Adds." and add.__name__ == "add"
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)


def test_kinds_are_kept():
    """The wrapper is a coroutine / generator / async generator function exactly when the function is."""

    async def coroutine():
        return 1

    def generator():
        yield 1

    async def async_generator():
        yield 1

    assert inspect.iscoroutinefunction(traced(coroutine))
    assert inspect.isgeneratorfunction(traced(generator))
    assert inspect.isasyncgenfunction(traced(async_generator))
    assert not inspect.iscoroutinefunction(traced(lambda: 1))


def test_methods_leave_out_self_and_static_and_class_methods_work(provider, exporter):
    """Methods record their arguments without self/cls; staticmethod and classmethod decorate in either order."""

    class Cart:
        @traced(tracer=provider)
        def add(self, sku: str) -> str:
            return sku

        @traced(tracer=provider)
        @classmethod
        def make(cls, n: int) -> int:
            return n

        @staticmethod
        @traced(tracer=provider)
        def price(sku: str) -> float:
            return 1.5

    assert Cart().add("a1") == "a1" and Cart.make(2) == 2 and Cart.price("b") == 1.5
    spans = by_name(exporter)
    assert f"{__name__}.{Cart.__qualname__}.add" in spans
    inputs = {name.rsplit(".", 1)[1]: json.loads(s.attributes["input.value"]) for name, s in spans.items()}
    assert inputs == {"add": {"sku": "a1"}, "make": {"n": 2}, "price": {"sku": "b"}}


def test_return_value_identity_and_exception_unchanged(provider, exporter):
    """The very object returned comes back; an exception is re-raised as is, recorded, status ERROR with message."""
    sentinel = object()
    error = KeyError("missing")

    @traced(tracer=provider)
    def give():
        return sentinel

    @traced(tracer=provider)
    def fail():
        raise error

    assert give() is sentinel
    with pytest.raises(KeyError) as caught:
        fail()
    assert caught.value is error
    span = by_name(exporter)[f"{__name__}.{fail.__qualname__}"]
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "'missing'"
    assert [event.name for event in span.events] == ["exception"]
    assert "output.value" not in span.attributes


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(0), asyncio.CancelledError()])
def test_interrupts_are_not_errors(provider, exporter, error):
    """KeyboardInterrupt, SystemExit and cancellation end the span without an error and propagate."""

    @traced(tracer=provider)
    def stop():
        raise error

    with pytest.raises(type(error)):
        stop()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET and not span.events


def test_generator_span_covers_iteration_and_passes_send_throw_close(provider, exporter):
    """A generator's span lasts the whole iteration; send, throw and close reach the generator; return is output."""
    log = []

    @traced(tracer=provider)
    def echo(start: int):
        value = start
        while True:
            try:
                received = yield value
            except ValueError as error:
                log.append(f"caught {error}")
                received = -1
            if received is None:
                return "done"
            value = received

    gen = echo(1)
    assert not exporter.get_finished_spans()  # nothing runs before the first next()
    assert next(gen) == 1
    assert gen.send(5) == 5
    assert gen.throw(ValueError("x")) == -1
    assert not exporter.get_finished_spans()
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == "done" and log == ["caught x"]
    (span,) = exporter.get_finished_spans()
    assert json.loads(span.attributes["output.value"]) == "done"

    closed = echo(2)
    next(closed)
    closed.close()
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and spans[1].status.status_code == StatusCode.UNSET


def test_generator_body_runs_in_its_span_but_the_caller_does_not(provider, exporter):
    """Spans made inside the generator are its children; the caller's code between items is not."""
    tracer = provider.get_tracer("t")

    @traced(tracer=provider, name="numbers")
    def numbers():
        for i in range(2):
            with tracer.start_as_current_span(f"inner {i}"):
                pass
            yield i

    with tracer.start_as_current_span("caller"):
        for _ in numbers():
            with tracer.start_as_current_span("between"):
                pass
    spans = by_name(exporter)
    assert spans["inner 0"].parent.span_id == spans["numbers"].context.span_id
    assert spans["between"].parent.span_id == spans["caller"].context.span_id
    assert spans["numbers"].parent.span_id == spans["caller"].context.span_id


def test_async_generator_protocol(provider, exporter):
    """An async generator's asend/athrow/aclose pass through; its span ends when it is exhausted or closed."""

    @traced(tracer=provider)
    async def ticks(n: int):
        for i in range(n):
            try:
                yield i
            except ValueError:
                yield -1

    async def main():
        gen = ticks(3)
        assert await gen.__anext__() == 0
        assert await gen.athrow(ValueError()) == -1
        assert [i async for i in gen] == [1, 2]
        closing = ticks(5)
        await closing.__anext__()
        await closing.aclose()

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and all(s.status.status_code == StatusCode.UNSET for s in spans)


def test_cancelled_task_is_not_an_error(provider, exporter):
    """A traced coroutine (and an `async with` block) in a task that is cancelled ends its span without an error."""

    @traced(tracer=provider, name="slow")
    async def slow():
        async with traced("waiting", tracer=provider):
            await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    spans = by_name(exporter)
    assert set(spans) == {"slow", "waiting"}
    assert all(s.status.status_code == StatusCode.UNSET and not s.events for s in spans.values())
    assert spans["waiting"].parent.span_id == spans["slow"].context.span_id


# --- nesting across tasks and threads ------------------------------------------------------------------------------
def test_async_nesting_gather_taskgroup_and_threads(provider, exporter):
    """Traced calls in asyncio.gather tasks, a TaskGroup and copy_context() threads are children of the caller."""

    @traced(tracer=provider)
    async def leaf(i: int) -> int:
        await asyncio.sleep(0.001 * (3 - i))
        return i

    @traced(tracer=provider)
    def threaded(i: int) -> int:
        return i

    @traced(tracer=provider, name="root")
    async def root() -> int:
        total = sum(await asyncio.gather(*(leaf(i) for i in range(3))))
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(leaf(i)) for i in range(2)]
            total += sum(task.result() for task in tasks)
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(contextvars.copy_context().run, threaded, i) for i in range(2)]
            total += sum(f.result() for f in futures)
        return total

    assert asyncio.run(root()) == 3 + (1 if sys.version_info >= (3, 11) else 0) + 1
    spans = exporter.get_finished_spans()
    (root_span,) = [s for s in spans if s.name == "root"]
    children = [s for s in spans if s is not root_span]
    assert len(children) == (7 if sys.version_info >= (3, 11) else 5)
    assert all(s.parent.span_id == root_span.context.span_id for s in children)
    assert len({s.context.trace_id for s in spans}) == 1


# --- the block form ------------------------------------------------------------------------------------------------
def test_block_records_inputs_output_and_errors(provider, exporter):
    """`with traced(name, **inputs) as step` records the inputs, step.output, and an escaping exception."""
    with traced("load", tracer=provider, table="orders", password=SECRET) as step:
        step.output = [1, 2]
    with pytest.raises(RuntimeError), traced("broken", tracer=provider):
        raise RuntimeError("no disk")
    spans = by_name(exporter)
    assert json.loads(spans["load"].attributes["input.value"]) == {"table": "orders", "password": REDACTED}
    assert json.loads(spans["load"].attributes["output.value"]) == [1, 2]
    assert spans["broken"].status.description == "no disk"


def test_block_name_as_decorator(provider, exporter):
    """traced("name") decorates too; with inputs it refuses to."""

    @traced("custom", tracer=provider)
    def f():
        return 1

    assert f() == 1 and by_name(exporter)["custom"]
    with pytest.raises(TypeError):
        traced("x", a=1)(f)


# --- capture levels and configuration ------------------------------------------------------------------------------
def test_capture_levels_from_argument_and_environment(provider, exporter, monkeypatch):
    """capture= and SPANSTORE_CAPTURE: the stricter wins; metadata keeps the span without values; off has no span."""

    def f(x):
        return x

    full, metadata = traced(f, tracer=provider), traced(f, tracer=provider, capture="metadata")
    full(1)
    metadata(1)
    monkeypatch.setenv("SPANSTORE_CAPTURE", "off")
    full(1)
    monkeypatch.setenv("SPANSTORE_CAPTURE", "metadata")
    full(1)
    spans = exporter.get_finished_spans()
    assert ["input.value" in s.attributes for s in spans] == [True, False, False]
    with pytest.raises(ValueError, match="capture must be one of"):
        traced(f, capture="some")


def test_no_capture_when_tracing_is_not_configured(tmp_path):
    """With OpenTelemetry's default (proxy) provider, a traced call serializes nothing and makes no span."""
    code = (
        "from spanstore import traced, capture\n"
        "calls = []\n"
        "capture._Walker.walk = lambda *a: calls.append(1)\n"
        "@traced\n"
        "def f(x):\n    return x\n"
        "with traced('block', y=2) as step:\n    step.output = f(1)\n"
        "assert calls == [] and not step.span.is_recording(), calls\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.stdout.strip() == "ok", result.stderr


def test_failures_of_capture_are_logged_once_and_swallowed(provider, exporter, caplog):
    """A value whose serialization raises, or arguments that do not bind, never break the call; one warning."""

    class Hostile:
        def __repr__(self):
            raise RuntimeError(SECRET)

        @property
        def __dict__(self):
            raise RuntimeError(SECRET)

    @traced(tracer=provider)
    def f(x, y=1):
        return Hostile()

    with caplog.at_level(logging.WARNING, logger="spanstore.traced"):
        for _ in range(3):
            assert isinstance(f(Hostile()), Hostile)
        with pytest.raises(TypeError):
            f(1, 2, 3)
    spans = exporter.get_finished_spans()
    assert len(spans) == 4 and json.loads(spans[0].attributes["output.value"]) == "<Hostile object>"
    assert SECRET not in caplog.text


def test_settings_are_checked():
    """Bad settings fail at decoration time with a clear message."""
    with pytest.raises(ValueError, match="max_value_bytes"):
        traced(max_value_bytes=0)
    with pytest.raises(TypeError, match="redact must be"):
        traced(redact="password")
    with pytest.raises(TypeError, match="unexpected keyword"):
        traced(nmae="x")


# --- the capture: properties over argument shapes ------------------------------------------------------------------
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=20),
    st.builds(Point, st.integers(), st.integers()),
    st.builds(Order, st.integers()),
    st.builds(User, name=st.text(max_size=10)),
    st.builds(object),
    st.just(SECRET * 3000),  # huge
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(["password", "X-Api-Key", "authToken", "Cookie", "secret_x"]))
shapes = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=6),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=shapes, cyclic=st.booleans(), max_bytes=st.sampled_from([64, 500, 50_000]))
def test_capture_parses_is_capped_and_redacts(value, cyclic, max_bytes):
    """Whatever the value (nested, cyclic, bytes, huge, models, objects), the JSON parses, fits, hides secrets."""
    if cyclic:
        holder: dict[str, Any] = {"value": value}
        holder["self"] = holder
        value = [holder, value]
    for extra in ((), ("value",)):
        document = {"password": SECRET, "nested": [{"token": SECRET}], "v": value}
        text = to_json(document, max_bytes=max_bytes, redact=extra)
        assert len(text.encode()) <= max_bytes
        parsed = json.loads(text)
        assert SECRET not in json.dumps(parsed.get("password", "")) + json.dumps(parsed.get("nested", ""))
        assert not _secret_under_secret_key(parsed)


def _secret_under_secret_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(
            (is_secret_key(k) and v != REDACTED) or _secret_under_secret_key(v) for k, v in value.items() if k != "…"
        )
    if isinstance(value, list):
        return any(_secret_under_secret_key(v) for v in value)
    return False


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    args=st.lists(shapes, max_size=3),
    kwargs=st.dictionaries(st.sampled_from(["k1", "password", "api_key", "flag"]), shapes, max_size=3),
    raises=st.booleans(),
)
def test_results_and_exceptions_are_unchanged(provider, exporter, args, kwargs, raises):
    """For any *args/**kwargs, keyword-only and defaults, the traced function returns and raises as the original."""

    def original(*args, flag=False, **kwargs):
        if raises:
            raise ValueError(len(args))
        return (args, flag, kwargs)

    wrapped = traced(original, tracer=provider, max_value_bytes=2000)
    if raises:
        with pytest.raises(ValueError) as caught:
            wrapped(*args, **kwargs)
        assert caught.value.args == (len(args),)
    else:
        result = wrapped(*args, **kwargs)
        assert all(a is b for a, b in zip(result[0], args, strict=True))
        assert result[1] is kwargs.get("flag", False)
        assert result[2].keys() == kwargs.keys() - {"flag"}
    span = exporter.get_finished_spans()[-1]
    captured = json.loads(span.attributes["input.value"])
    assert len(span.attributes["input.value"].encode()) <= 2000
    for name in ("password", "api_key"):
        if name in kwargs and "kwargs" in captured and name in captured["kwargs"]:
            assert captured["kwargs"][name] == REDACTED
    exporter.clear()


def test_values_of_every_kind():
    """Models by their fields, bytes as a note, cycles and unknown objects by a bounded repr, cuts marked."""
    cycle: list[Any] = [1]
    cycle.append(cycle)
    text = to_json(
        {
            "point": Point(1, 2),
            "order": Order(7),
            "user": User(name="ada"),
            "raw": b"\x00" * 10,
            "cycle": cycle,
            "set": {3},
            "nan": float("nan"),
            "obj": type("Thing", (), {"__repr__": lambda self: "Thing(password='" + SECRET + "')"})(),
            "long": "a" * 1000,
        },
        max_bytes=600,
    )
    parsed = json.loads(text)
    assert parsed["point"] == {"x": 1, "y": 2, "api_key": REDACTED}
    assert parsed["order"] == {"id": 7, "password": REDACTED}
    assert parsed["user"] == {"name": "ada", "token": REDACTED}
    assert parsed["raw"] == "<bytes: 10>" and parsed["cycle"] == [1, "<cycle: list>"]
    assert parsed["set"] == [3] and parsed["nan"] is None
    assert parsed["obj"] == "Thing(password='[redacted]')"
    assert parsed["long"].endswith("more chars]") and len(text.encode()) <= 600
    assert SECRET not in text


def test_secret_key_names():
    """Secret names match case-insensitively anywhere in a key, ignoring separators; token counts are not secret."""
    assert all(map(is_secret_key, ["PASSWORD", "db_passwd", "client-secret", "access_token", "apiKey", "Cookie"]))
    assert is_secret_key("configurable") and is_secret_key("Authorization")  # LangChain run config, HTTP auth
    assert not any(map(is_secret_key, ["max_tokens", "prompt_tokens", "completion_tokens_details", "user", "key"]))
    assert is_secret_key("card_number", ("card number",))


def test_secrets_never_reach_the_log_on_disk(tmp_path):
    """Secrets passed as arguments, nested or returned, are nowhere in the store's files on disk."""
    provider = TracerProvider()
    processor = FileBasedSpanProcessor(str(tmp_path / "store"))
    provider.add_span_processor(processor)

    @traced(tracer=provider)
    def login(user: str, password: str, headers: dict, creds: User) -> dict:
        return {"session_cookie": SECRET, "user": user, "nested": [{"api_key": SECRET}]}

    login("ada", SECRET, {"Authorization": f"Bearer {SECRET}"}, User(name="ada"))
    with traced("block", tracer=provider, token=SECRET) as step:
        step.output = {"secret": SECRET}
    provider.shutdown()
    files = list((tmp_path / "store").glob("spans-*.jsonl"))
    assert files
    text = "".join(path.read_text() for path in files)
    assert "input.value" in text and "ada" in text and SECRET not in text


def test_cli_trace_full_pretty_prints_values(tmp_path, capsys):
    """`spanstore trace ID --full` shows input.value and output.value as indented JSON."""
    from spanstore.cli import main

    provider = TracerProvider()
    processor = FileBasedSpanProcessor(str(tmp_path / "store"))
    provider.add_span_processor(processor)

    @traced(tracer=provider, name="greet")
    def greet(who: str) -> dict:
        return {"greeting": f"hello {who}"}

    greet("ada")
    trace_id = processor.store.spans()[0].trace_id
    provider.shutdown()
    capsys.readouterr()
    assert main(["--path", str(tmp_path / "store"), "trace", trace_id, "--full"]) == 0
    out = capsys.readouterr().out
    assert 'input.value =\n      {\n        "who": "ada"\n      }' in out
    assert '"greeting": "hello ada"' in out


def test_import_stays_light():
    """`import spanstore` imports neither pydantic nor the OpenTelemetry API."""
    code = "import sys, spanstore; print(sorted(m for m in ('pydantic', 'opentelemetry.trace') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert Path(traced.__code__.co_filename).name == "traced.py"


def test_global_provider_through_the_spans_fixture(spans):
    """Without tracer=, @traced uses the global provider at call time (here the pytest plugin's)."""

    @traced
    def double(n: int) -> int:
        return 2 * n

    assert double(21) == 42
    spans.assert_span(
        name=f"{__name__}.{double.__qualname__}",
        attributes={"input.value": '{"n":21}', "output.value": "42", "code.function": "double"},
    )


def test_readme_example_prints_what_the_readme_shows(tmp_path):
    """The README's tracing example runs and prints the lines shown under it (secrets redacted)."""
    from tests.test_docs import fenced, section

    text = section("Tracing your own functions")
    (code,) = fenced(text, "python")
    expected = fenced(text, "text")[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert "sk-live-123" not in "".join(p.read_text() for p in (tmp_path / ".spanstore").glob("spans-*.jsonl"))


def _reference_generator(n: int, start: int = 0):
    total = start
    for i in range(n):
        try:
            received = yield i + total
        except ValueError as error:
            if str(error) == "reraise":
                raise
            received = -1
        if received:
            total += received
    return total


def _drive(generator: Any, operations: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    outcomes: list[tuple[Any, ...]] = []
    for operation, argument in operations:
        try:
            if operation == "next":
                outcomes.append(("yield", next(generator)))
            elif operation == "send":
                outcomes.append(("yield", generator.send(argument)))
            elif operation == "throw":
                outcomes.append(("yield", generator.throw(ValueError(argument))))
            else:
                outcomes.append(("closed", generator.close()))
        except StopIteration as stop:
            outcomes.append(("stop", stop.value))
        except Exception as error:
            outcomes.append(("raise", type(error), error.args))
    return outcomes


operations = st.lists(
    st.one_of(
        st.tuples(st.just("next"), st.none()),
        st.tuples(st.just("send"), st.integers(-3, 3)),
        st.tuples(st.just("throw"), st.sampled_from(["soft", "reraise"])),
        st.tuples(st.just("close"), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 5), start=st.integers(-2, 2), script=operations)
def test_generator_protocol_is_unchanged(provider, exporter, n, start, script):
    """Any sequence of next/send/throw/close gives the same yields, returns and errors traced as untraced."""
    traced_generator = traced(_reference_generator, tracer=provider)
    assert _drive(traced_generator(n, start=start), script) == _drive(_reference_generator(n, start=start), script)
    for span in exporter.get_finished_spans():
        assert json.loads(span.attributes["input.value"]) == {"n": n, "start": start}
    exporter.clear()
