"""``traced``: a span around a function or a block, with its inputs, its output and its exception.

Three forms of one name::

    @traced                                      # span "module.qualname"
    def charge(order, amount): ...

    @traced(name="charge card", capture_output=False, redact=("card_number",))
    async def charge(order, amount): ...

    with traced("load rows", table="orders") as step:
        step.output = rows = load("orders")

What a span gets (OpenTelemetry semantic conventions, and the OpenInference ones LLM-tracing tools read):

* its name (``module.qualname`` unless ``name=``), ``code.function`` and ``code.namespace``, and ``attributes=``;
* ``input.value``: the arguments bound to their parameter names (``inspect.signature(...).bind``, defaults applied;
  ``self``/``cls`` left out), as JSON, and ``input.mime_type = "application/json"``; ``output.value`` and
  ``output.mime_type`` for the return value (for a generator: its ``return`` value, when not ``None``). Values go
  through :func:`spanstore.capture.to_json`: bounded (``max_value_bytes``, 50 KB), cut marks, secrets redacted;
* an exception: ``record_exception`` and status ERROR with the message; the exception is re-raised unchanged.
  ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and ``asyncio.CancelledError`` (every ``BaseException``
  that is not an ``Exception``) end the span without an error.

Functions, methods (``staticmethod``/``classmethod`` too, either order), ``async def``, generators and async
generators: the wrapper is of the same kind (``inspect.iscoroutinefunction`` etc. still answer the same), has the
function's name, docstring and signature (``functools.wraps``), and returns the very object the function returned.
A generator's span covers the whole iteration, from the first ``next()`` to exhaustion, ``close()`` or an error;
``send``/``throw``/``close`` (``asend``/``athrow``/``aclose``) pass through, and the generator's body runs in the
span's context while the caller's code between two items does not. (So, as for any generator function, a call
with wrong arguments raises its ``TypeError`` at the first ``next()``, not at the call.)

Nesting follows the OpenTelemetry context: a traced call inside a traced call is its child, also in tasks of
``asyncio.gather``/``TaskGroup`` (tasks copy the context) and in threads started with ``contextvars.copy_context()``.

**Capture levels.** ``SPANSTORE_CAPTURE`` (environment, read at every call) and the ``capture=`` argument each say
``"full"`` (default: spans with inputs and output), ``"metadata"`` (spans, no values) or ``"off"`` (no span: the
function is called directly); the stricter of the two wins, so ``SPANSTORE_CAPTURE=metadata`` in production turns
every value capture off. When the global tracer provider is OpenTelemetry's default (nothing configured) and no
``tracer=`` was given, a call costs one check and nothing is serialized.

**Never in the way.** A failure to bind, serialize or record is logged once per function and stage (a warning
naming the function and the error's type, never a value) and swallowed; the function runs as it would untraced.

Thread-safe and async-safe: a decorated function keeps no per-call state outside its frame.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from spanstore.capture import DEFAULT_MAX_BYTES, to_json

__all__ = ["CAPTURE_LEVELS", "traced"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The values of ``SPANSTORE_CAPTURE`` and ``capture=``, least to most captured.
CAPTURE_LEVELS = ("off", "metadata", "full")
_OFF, _METADATA, _FULL = 0, 1, 2
_LEVELS = {name: index for index, name in enumerate(CAPTURE_LEVELS)}
_ENV = "SPANSTORE_CAPTURE"
_SCOPE = "spanstore.traced"
_JSON = "application/json"
_NOTHING: Any = object()

_environ_get = os.environ.get
_env_seen: tuple[str | None, int] = (None, _FULL)
_warned: set[tuple[str, str]] = set()


def _env_level() -> int:
    global _env_seen
    raw = _environ_get(_ENV)
    if raw is None:
        return _FULL
    seen_raw, level = _env_seen
    if raw == seen_raw:
        return level
    level = _LEVELS.get(raw.strip().lower(), -1)
    if level < 0:
        logger.warning(
            "spanstore: %s=%r is not one of %s; capturing metadata only", _ENV, raw, "|".join(CAPTURE_LEVELS)
        )
        level = _METADATA
    _env_seen = (raw, level)
    return level


def _warn_once(where: str, stage: str, error: BaseException) -> None:
    key = (where, stage)
    if key in _warned:
        return
    _warned.add(key)
    # The error's type only: its message may quote the value being captured, secrets included.
    logger.warning(
        "spanstore.traced: could not %s for %s (%s); the call goes on untouched", stage, where, type(error).__name__
    )


class _Runtime:
    """The OpenTelemetry API, imported at the first traced call (``import spanstore`` stays quick)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.get_tracer_provider = trace.get_tracer_provider
        self.unconfigured = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self.attach = context.attach
        self.detach = context.detach
        self.set_span_in_context = trace.set_span_in_context
        self.invalid_span = trace.INVALID_SPAN
        self.status = trace.Status
        self.error = trace.StatusCode.ERROR
        self.cached: tuple[object, Any] = (None, None)

    def tracer(self) -> Any:
        """The global provider's tracer, or None when tracing is not configured (the one cheap check)."""
        provider = self.get_tracer_provider()
        cached_provider, tracer = self.cached
        if provider is cached_provider:
            return tracer
        if isinstance(provider, self.unconfigured):
            return None
        from spanstore import __version__

        tracer = provider.get_tracer(_SCOPE, __version__)
        self.cached = (provider, tracer)
        return tracer


_runtime: _Runtime | None = None


def _load_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    return _runtime


class _Options:
    """A decorated function's (or a block's) settings, fixed when it is decorated."""

    __slots__ = (
        "attributes",
        "capture_input",
        "capture_output",
        "level",
        "max_value_bytes",
        "name",
        "positional",
        "redact",
        "signature",
        "skip_first",
        "tracer",
    )

    def __init__(
        self,
        name: str,
        *,
        capture_input: bool,
        capture_output: bool,
        max_value_bytes: int,
        redact: Iterable[str],
        attributes: Mapping[str, Any] | None,
        tracer: Any,
        capture: str | None,
    ) -> None:
        if capture is not None and capture not in _LEVELS:
            raise ValueError(f"capture must be one of {', '.join(map(repr, CAPTURE_LEVELS))}, got {capture!r}")
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int) or max_value_bytes < 64:
            raise ValueError(f"max_value_bytes must be an int of at least 64, got {max_value_bytes!r}")
        if isinstance(redact, str):
            raise TypeError(f"redact must be a sequence of key names, got the string {redact!r}")
        self.name = name
        self.capture_input = bool(capture_input)
        self.capture_output = bool(capture_output)
        self.max_value_bytes = max_value_bytes
        self.redact = tuple(str(key) for key in redact)
        self.attributes: dict[str, Any] = dict(attributes or {})
        if tracer is not None and not hasattr(tracer, "start_span") and hasattr(tracer, "get_tracer"):
            from spanstore import __version__

            tracer = tracer.get_tracer(_SCOPE, __version__)  # a TracerProvider was given
        self.tracer = tracer
        self.level = _FULL if capture is None else _LEVELS[capture]
        self.signature: inspect.Signature | None = None
        self.positional: tuple[str, ...] | None = None  # the parameter names, when all are plain positional ones
        self.skip_first = False

    def json(self, value: Any) -> str:
        return to_json(value, max_bytes=self.max_value_bytes, redact=self.redact)

    def start(self, args: tuple[Any, ...] | None, kwargs: dict[str, Any]) -> tuple[Any, bool] | None:
        """Start the span (not yet current); None when there is to be no span. Never raises."""
        try:
            level = self.level
            if level == _OFF:
                return None
            runtime = _runtime or _load_runtime()
            tracer = self.tracer or runtime.tracer()
            if tracer is None:
                return None
            env = _env_level()
            if env < level:
                level = env
                if level == _OFF:
                    return None
        except Exception as error:
            _warn_once(self.name, "start a span", error)
            return None
        attributes = self.attributes
        if level == _FULL and self.capture_input:
            # Into start_span's attributes rather than set afterwards: one attribute map built, not two. (The
            # capture is then paid for a span the sampler drops too; with the default sampler none is dropped.)
            try:
                attributes = {
                    **attributes,
                    "input.value": self.json(self.inputs(args, kwargs)),
                    "input.mime_type": _JSON,
                }
            except Exception as error:
                _warn_once(self.name, "capture the inputs", error)
        try:
            span = tracer.start_span(self.name, attributes=attributes)
        except Exception as error:
            _warn_once(self.name, "start a span", error)
            return None
        return span, level == _FULL and self.capture_output

    def inputs(self, args: tuple[Any, ...] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by parameter name, defaults applied, ``self``/``cls`` left out; raises if they do not bind."""
        if args is None or self.signature is None:  # a block: its inputs are the keywords given
            return kwargs
        names = self.positional
        if names is not None and not kwargs and len(args) == len(names):
            # The common call, all parameters given by position: what bind() would answer, at a fifth of its cost.
            arguments = dict(zip(names, args, strict=True))
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
        if self.skip_first and arguments:
            arguments = dict(arguments)
            del arguments[next(iter(arguments))]
        return arguments

    def finish(self, span: Any, error: BaseException | None, result: Any = _NOTHING) -> None:
        """Record the outcome and end the span. Never raises."""
        try:
            if error is not None:
                if isinstance(error, Exception):
                    span.record_exception(error)
                    try:
                        message = str(error) or type(error).__name__
                    except Exception:
                        message = type(error).__name__
                    runtime = _runtime or _load_runtime()
                    span.set_status(runtime.status(runtime.error, message))
            elif result is not _NOTHING:
                try:
                    span.set_attributes({"output.value": self.json(result), "output.mime_type": _JSON})
                except Exception as failure:
                    _warn_once(self.name, "capture the output", failure)
        except Exception as failure:
            _warn_once(self.name, "record the outcome", failure)
        try:
            span.end()
        except Exception as failure:
            _warn_once(self.name, "end the span", failure)


def _attach(span: Any) -> object:
    runtime = _runtime or _load_runtime()
    return runtime.attach(runtime.set_span_in_context(span))


def _detach(token: object) -> None:
    runtime = _runtime or _load_runtime()
    runtime.detach(token)


def _code_attributes(func: Callable[..., Any]) -> dict[str, str]:
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", "") or repr(func)
    namespace, _, function = qualname.rpartition(".")
    namespace = ".".join(part for part in (module, namespace) if part)
    return {"code.function": function, "code.namespace": namespace}


def _wrap(func: Any, settings: dict[str, Any]) -> Any:
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(_wrap(func.__func__, settings))
    if not callable(func) or isinstance(func, type):
        raise TypeError(f"traced decorates functions and methods, got {func!r}")
    code = _code_attributes(func)
    name = settings.pop("name", None) or ".".join(
        part for part in (code["code.namespace"], code["code.function"]) if part
    )
    attributes = {**code, **(settings.pop("attributes", None) or {})}
    options = _Options(name, attributes=attributes, **settings)
    try:
        options.signature = inspect.signature(func)
        parameters = options.signature.parameters.values()
        if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
            options.positional = tuple(p.name for p in parameters)
        first = next(iter(options.signature.parameters.values()), None)
        options.skip_first = (
            first is not None and first.name in ("self", "cls") and first.kind <= first.POSITIONAL_OR_KEYWORD
        )
    except (TypeError, ValueError):  # a builtin without a signature: no inputs, but still a span
        options.capture_input = False
    if inspect.isasyncgenfunction(func):
        return _wrap_async_generator(func, options)
    if inspect.iscoroutinefunction(func):
        return _wrap_coroutine(func, options)
    if inspect.isgeneratorfunction(func):
        return _wrap_generator(func, options)
    return _wrap_function(func, options)


def _wrap_function(func: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    start, finish = options.start, options.finish

    @functools.wraps(func)
    def traced_function(*args: Any, **kwargs: Any) -> Any:
        started = start(args, kwargs)
        if started is None:
            return func(*args, **kwargs)
        span, capture_output = started
        token = _attach(span)
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            _detach(token)
            finish(span, error)
            raise
        _detach(token)
        finish(span, None, result if capture_output else _NOTHING)
        return result

    return traced_function


def _wrap_coroutine(func: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    start, finish = options.start, options.finish

    @functools.wraps(func)
    async def traced_coroutine(*args: Any, **kwargs: Any) -> Any:
        started = start(args, kwargs)
        if started is None:
            return await func(*args, **kwargs)
        span, capture_output = started
        token = _attach(span)
        try:
            result = await func(*args, **kwargs)
        except BaseException as error:
            _detach(token)
            finish(span, error)
            raise
        _detach(token)
        finish(span, None, result if capture_output else _NOTHING)
        return result

    return traced_coroutine


def _wrap_generator(func: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    start, finish = options.start, options.finish

    @functools.wraps(func)
    def traced_generator(*args: Any, **kwargs: Any) -> Any:
        started = start(args, kwargs)
        if started is None:
            return (yield from func(*args, **kwargs))
        span, capture_output = started
        runtime = _runtime or _load_runtime()
        attach, detach = runtime.attach, runtime.detach
        # The context of the first next() plus the span: the body runs in it at every resumption, wherever that is.
        context = runtime.set_span_in_context(span)
        token = attach(context)
        try:
            generator = func(*args, **kwargs)
        except BaseException as error:
            detach(token)
            finish(span, error)
            raise
        detach(token)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = attach(context)
            try:
                item = generator.send(sent) if thrown is None else generator.throw(thrown)
            except StopIteration as stop:
                detach(token)
                finish(span, None, stop.value if capture_output and stop.value is not None else _NOTHING)
                return stop.value
            except BaseException as error:
                detach(token)
                finish(span, error)
                raise
            detach(token)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit as exit_:
                token = attach(context)
                try:
                    generator.close()
                except BaseException as error:
                    detach(token)
                    finish(span, error)
                    raise
                detach(token)
                finish(span, exit_)
                raise
            except BaseException as error:
                thrown = error

    return traced_generator


def _wrap_async_generator(func: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    start, finish = options.start, options.finish

    @functools.wraps(func)
    async def traced_async_generator(*args: Any, **kwargs: Any) -> Any:
        started = start(args, kwargs)
        span, capture_output = started if started is not None else (None, False)
        runtime = _runtime or _load_runtime()
        attach, detach = runtime.attach, runtime.detach
        context = runtime.set_span_in_context(span) if span is not None else None
        token = attach(context) if context is not None else None
        try:
            generator = func(*args, **kwargs)
        except BaseException as error:
            if span is not None:
                detach(token)
                finish(span, error)
            raise
        if token is not None:
            detach(token)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = attach(context) if context is not None else None
            try:
                if thrown is None:
                    item = await generator.asend(sent)
                else:
                    item = await generator.athrow(thrown)
            except StopAsyncIteration:
                if span is not None:
                    detach(token)
                    finish(span, None)
                return
            except BaseException as error:
                if span is not None:
                    detach(token)
                    finish(span, error)
                raise
            if token is not None:
                detach(token)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit as exit_:
                token = attach(context) if context is not None else None
                try:
                    await generator.aclose()
                except BaseException as error:
                    if span is not None:
                        detach(token)
                        finish(span, error)
                    raise
                if span is not None:
                    detach(token)
                    finish(span, exit_)
                raise
            except BaseException as error:
                thrown = error

    return traced_async_generator


class Step:
    """A traced block: ``with traced("name", **inputs) as step:``; set ``step.output`` to record the block's result.

    ``step.span`` is the OpenTelemetry span (``INVALID_SPAN``, which ignores everything, when there is none), for
    more attributes or events. Also an async context manager, and a decorator (``@traced("name")``) when given no
    inputs. One ``Step`` is one block: enter it once.

    >>> with traced("tidy up", capture="off", dry_run=True) as step:  # "off": no span at all, whatever is configured
    ...     step.output = 0
    >>> step.span.is_recording()
    False
    """

    __slots__ = ("_capture_output", "_inputs", "_options", "_settings", "_token", "output", "span")

    def __init__(self, name: str, settings: dict[str, Any], inputs: dict[str, Any]) -> None:
        self._settings = settings
        self._options = _Options(name, **settings)
        self._inputs = inputs
        self._capture_output = False
        self._token: object = None
        self.output: Any = _NOTHING
        self.span: Any = None

    def __enter__(self) -> Step:
        started = self._options.start(None, self._inputs)
        if started is None:
            self.span = (_runtime or _load_runtime()).invalid_span
            return self
        self.span, self._capture_output = started
        self._token = _attach(self.span)
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        _detach(token)
        if error is not None:
            self._options.finish(self.span, error)
        else:
            self._options.finish(self.span, None, self.output if self._capture_output else _NOTHING)

    async def __aenter__(self) -> Step:
        return self.__enter__()

    async def __aexit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self.__exit__(kind, error, traceback)

    def __call__(self, func: F) -> F:
        if self._inputs:
            raise TypeError("traced(name, **inputs) is a block (`with`); as a decorator use traced(name) alone")
        return _wrap(func, {**self._settings, "name": self._options.name})  # type: ignore[no-any-return]


_DEFAULTS: dict[str, Any] = {
    "capture_input": True,
    "capture_output": True,
    "max_value_bytes": DEFAULT_MAX_BYTES,
    "redact": (),
    "attributes": None,
    "tracer": None,
    "capture": None,
}


@overload
def traced(target: F, /) -> F: ...
@overload
def traced(target: str, /, **inputs: Any) -> Step: ...
@overload
def traced(target: None = None, /, **settings: Any) -> Callable[[F], F]: ...


def traced(target: Any = None, /, **keywords: Any) -> Any:
    """Trace a function (``@traced``, ``@traced(**settings)``) or a block (``with traced("name", **inputs)``).

    Settings (keywords; in the block form every other keyword is an input):
    ``name`` (default ``module.qualname``), ``capture_input=True``, ``capture_output=True``,
    ``max_value_bytes=50_000`` (cap of each captured JSON value), ``redact=()`` (key names added to
    ``spanstore.capture.DEFAULT_REDACT``), ``attributes={}`` (set on every span), ``tracer`` (a ``Tracer`` or
    ``TracerProvider``; default: the global provider's, looked up at each call), ``capture`` (``"full"``,
    ``"metadata"`` or ``"off"``; the stricter of it and ``$SPANSTORE_CAPTURE`` wins).

    Cost per call: one check when tracing is not configured; otherwise the span's own cost (about what a bare
    ``start_as_current_span`` costs) plus, with capture, binding the arguments and walking their JSON form
    (bounded by ``max_value_bytes``). Thread-safe; never raises from its own work.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> exporter = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
    >>> @traced(tracer=provider)
    ... def login(user: str, password: str, remember: bool = False) -> dict:
    ...     return {"user": user, "token": "t0k3n"}
    >>> login("ada", "hunter2")
    {'user': 'ada', 'token': 't0k3n'}
    >>> with traced("report", tracer=provider, rows=3) as step:
    ...     step.output = "done"
    >>> [(s.name, s.attributes["input.value"], s.attributes["output.value"]) for s in exporter.get_finished_spans()]
    [('spanstore.traced.login', '{"user":"ada","password":"[redacted]","remember":false}', \
'{"user":"ada","token":"[redacted]"}'), ('report', '{"rows":3}', '"done"')]
    """
    if isinstance(target, str):
        settings = {key: keywords.pop(key, default) for key, default in _DEFAULTS.items()}
        return Step(target, settings, keywords)  # what is left are the block's inputs
    unknown = set(keywords) - set(_DEFAULTS) - {"name"}
    if unknown:
        raise TypeError(
            f"traced() got unexpected keyword(s) {', '.join(sorted(unknown))}; "
            f"expected name or {', '.join(sorted(_DEFAULTS))}"
        )
    settings = {**_DEFAULTS, **keywords}
    if target is None:
        _Options("", **{key: value for key, value in settings.items() if key != "name"})  # bad settings fail now
        return lambda func: _wrap(func, dict(settings))
    return _wrap(target, settings)
