"""A seeded, realistic span workload: the same spans as SDK ``ReadableSpan``s or as ``StoredSpan``s.

Shape (fixed by the seed):

* 20 services of an online shop, each with its own ``Resource`` (``service.name``, ``service.version``,
  ``service.instance.id``, ``host.name``, ...) and instrumentation scopes per kind of work;
* ~200 operation names: 5 HTTP routes (``http.route``, 100 in all), 3 internal operations and 2 database
  operations per service;
* traces of 5-50 spans (mean ~18) forming a real parent/child tree: a SERVER root, INTERNAL work, database
  CLIENT leaves and service-to-service calls (a CLIENT span whose child is a SERVER span in another service);
* log-normal self times per operation; a parent lasts its own time plus its children's (laid out one after
  the other), so trace durations are heavy-tailed as in production;
* ~2% of spans fail: status ERROR, an ``error.type`` attribute and an ``exception`` event with
  ``exception.type`` / ``exception.message`` / ``exception.stacktrace`` (unique per span, as real ones are),
  and HTTP status 500/503/504 where the span is HTTP;
* attributes of mixed cardinality: ``http.route`` (~100 values), ``http.request.method`` (4),
  ``http.response.status_code`` (int), ``db.system`` (4), ``user.id`` (one user per ~20 spans: a few spans per value),
  ``network.peer.port`` (random int), two floats (``app.cart.total``, ``app.ratio``), a bool and a string array;
* trace start times spread uniformly over the hour before ``now`` (every span ends before ``now``), so
  ``recent_failures(hours=1)`` and "last 15 minutes" windows are meaningful; span start times are unique.

Both outputs come from one plan (:func:`iter_trace_plans`), so for one seed they hold exactly the same spans,
in the same order (traces by start time, the spans of a trace in the order they end):

* :func:`generate` makes both in one pass (what the benchmarks use);
* :func:`generate_readable_spans` runs a real ``TracerProvider`` per service (explicit ``start_time`` and
  ``end_time``, ids from a planned id generator) into an ``InMemorySpanExporter``: the peers' data;
* :func:`generate_stored_spans` builds ``StoredSpan``s directly (the fast path, ~4x faster than going through
  the SDK and ``from_readable_span``); ``tests/test_benchmarks.py`` pins that it equals
  ``[from_readable_span(s) for s in generate_readable_spans(...)]``.

Measured on the 2-core benchmark machine: plans ~100k spans/s, plus StoredSpans ~60k spans/s in all, while the
SDK path manages ~11-18k spans/s (~55 µs a span in the SDK itself): ~1.5 min for 10^6 spans
(``python -m benchmarks.workload 100000`` prints the figures).
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spanstore.model import (
    EMPTY_ATTRIBUTES,
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    StatusCode,
    StoredSpan,
    share_keys,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = [
    "DEFAULT_SEED",
    "ERROR_TYPES",
    "SERVICES",
    "TracePlan",
    "generate",
    "generate_readable_spans",
    "generate_stored_spans",
    "iter_stored_spans",
    "iter_trace_plans",
]

DEFAULT_SEED = 20_240_611
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
WINDOW_NS = 3600 * NS_PER_S
# Every span ends at least this long before ``now``: a query run right after generation sees them all.
END_MARGIN_NS = 2 * NS_PER_S
ERROR_RATE = 0.02
MIN_TRACE_SPANS = 5
MAX_TRACE_SPANS = 50

SERVICES = (
    "frontend",
    "api-gateway",
    "checkout",
    "cart",
    "catalog",
    "payment",
    "shipping",
    "email",
    "recommendation",
    "ad",
    "currency",
    "quote",
    "inventory",
    "fraud-detection",
    "accounting",
    "auth",
    "search",
    "reviews",
    "notification",
    "image-provider",
)
ENTRY_SERVICES = (0, 1)  # traces start in frontend (75%) or api-gateway (25%)

# (error.type, weight, exception.message template, HTTP status when the span is HTTP)
ERROR_TYPES = (
    ("TimeoutError", 30, "timed out after {ms} ms waiting for {peer}", 504),
    ("ConnectionResetError", 15, "[Errno 104] Connection reset by peer ({peer})", 503),
    ("ValueError", 12, "invalid literal for int() with base 10: '{token}'", 500),
    ("KeyError", 10, "'{token}'", 500),
    ("psycopg.errors.DeadlockDetected", 8, "deadlock detected on relation {peer} (pid {ms})", 500),
    ("redis.exceptions.ConnectionError", 8, "Error 111 connecting to {peer}. Connection refused.", 503),
    ("PermissionError", 6, "user {token} may not access {peer}", 500),
    ("json.decoder.JSONDecodeError", 5, "Expecting value: line 1 column {ms} (char {ms})", 500),
    ("grpc.RpcError", 4, "StatusCode.UNAVAILABLE: failed to connect to {peer}", 503),
    ("RuntimeError", 2, "unexpected state {token} in {peer}", 500),
)

_METHODS = ("GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE")
_ROUTE_SUFFIXES = ("", "/{id}", "/{id}/items", "/search", "/batch")
_INTERNAL_VERBS = ("validate", "render", "compute", "enrich", "serialize", "authorize", "price", "lookup")
_DB_SYSTEMS = (
    ("postgresql", 5432, ("SELECT", "INSERT")),
    ("redis", 6379, ("GET", "SET")),
    ("mysql", 3306, ("SELECT", "UPDATE")),
    ("mongodb", 27017, ("find", "insert")),
)
_FEATURE_FLAGS = ("new-checkout", "dark-mode", "fast-search", "beta-recs", "promo-banner", "one-click")
_USER_AGENTS = tuple(
    f"Mozilla/5.0 ({os_}) AppleWebKit/537.36 (KHTML, like Gecko) {browser}"
    for os_ in ("X11; Linux x86_64", "Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 14_4")
    for browser in ("Chrome/124.0.0.0 Safari/537.36", "Firefox/125.0", "Safari/605.1.15")
)
_FRAMES = (
    ("app/handlers.py", "handle_request"),
    ("app/service.py", "call"),
    ("app/repository.py", "fetch"),
    ("app/cache.py", "get_or_load"),
    ("site-packages/httpx/_client.py", "send"),
    ("site-packages/psycopg/cursor.py", "execute"),
    ("site-packages/redis/connection.py", "connect"),
    ("app/models.py", "from_row"),
    ("app/pricing.py", "total"),
    ("site-packages/grpc/_channel.py", "_end_unary_response_blocking"),
)

# SDK span kind values (trace_api.SpanKind): INTERNAL=0, SERVER=1, CLIENT=2.
_SDK_INTERNAL, _SDK_SERVER, _SDK_CLIENT = 0, 1, 2
_OTLP_KIND_BY_SDK = (SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT)
_SCOPES = (  # per plan kind: (scope name template, version)
    ("opentelemetry.instrumentation.asgi", "0.66b0"),
    ("shop.{service}", "1.0.0"),
    ("opentelemetry.instrumentation.dbapi", "0.66b0"),
    ("opentelemetry.instrumentation.httpx", "0.66b0"),
)
_SCOPE_SERVER, _SCOPE_INTERNAL, _SCOPE_DB, _SCOPE_HTTP_CLIENT = range(4)
_FLAGS = 0x100  # OTLP SpanFlags HAS_IS_REMOTE (every parent here is local), as from_readable_span writes them


@dataclass(frozen=True)
class _Operation:
    name: str
    sdk_kind: int
    scope: int
    median_ns: float
    attributes: tuple[tuple[str, Any], ...]  # the operation's fixed attributes
    route: str = ""
    method: str = ""


@dataclass(frozen=True)
class _Service:
    name: str
    resource_attributes: tuple[tuple[str, Any], ...]
    routes: tuple[_Operation, ...]
    internal: tuple[_Operation, ...]
    db: tuple[_Operation, ...]


def _build_services(rng: random.Random) -> tuple[_Service, ...]:
    services = []
    for index, name in enumerate(SERVICES):
        camel = "".join(part.capitalize() for part in name.split("-"))
        resource = (
            ("service.name", name),
            ("service.namespace", "shop"),
            ("service.version", f"1.{index}.{rng.randrange(10)}"),
            ("service.instance.id", f"{rng.getrandbits(128):032x}"),
            ("deployment.environment.name", "production"),
            ("host.name", f"ip-10-0-{index}-{rng.randrange(2, 250)}.ec2.internal"),
            ("telemetry.sdk.language", "python"),
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.version", "1.45.2"),
        )
        routes = []
        for suffix in _ROUTE_SUFFIXES:
            method = rng.choice(_METHODS)
            route = f"/api/{name}{suffix}"
            routes.append(
                _Operation(
                    name=f"{method} {route}",
                    sdk_kind=_SDK_SERVER,
                    scope=_SCOPE_SERVER,
                    median_ns=rng.uniform(0.2, 3.0) * NS_PER_MS,
                    attributes=(("http.request.method", method), ("http.route", route), ("url.scheme", "https")),
                    route=route,
                    method=method,
                )
            )
        internal = tuple(
            _Operation(
                name=f"{camel}.{verb}",
                sdk_kind=_SDK_INTERNAL,
                scope=_SCOPE_INTERNAL,
                median_ns=rng.uniform(0.05, 2.0) * NS_PER_MS,
                attributes=(("code.function.name", f"shop.{name.replace('-', '_')}.{verb}"),),
            )
            for verb in rng.sample(_INTERNAL_VERBS, 3)
        )
        system, port, operations = _DB_SYSTEMS[index % len(_DB_SYSTEMS)]
        table = f"{name.replace('-', '_')}_items"
        db = tuple(
            _Operation(
                name=f"{operation} {table}",
                sdk_kind=_SDK_CLIENT,
                scope=_SCOPE_DB,
                median_ns=rng.uniform(0.3, 5.0) * NS_PER_MS,
                attributes=(
                    ("db.system", system),
                    ("db.namespace", "shop"),
                    ("db.operation.name", operation),
                    ("db.collection.name", table),
                    ("server.address", f"{system}.shop.svc"),
                    ("server.port", port),
                ),
            )
            for operation in operations
        )
        services.append(_Service(name, resource, tuple(routes), internal, db))
    return tuple(services)


@dataclass
class TracePlan:
    """The spans of one trace, as plain data both outputs are built from (in end order)."""

    spans: list[tuple[Any, ...]] = field(default_factory=list)
    # each: (trace_id:int, span_id:int, parent_span_id:int|None, name, sdk_kind, service, scope, start, end,
    #        is_error, status_message, attributes: dict, events: list[(name, time, attributes: dict)])


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _stacktrace(rng: random.Random, error_type: str, message: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for path, function in rng.sample(_FRAMES, rng.randrange(3, 7)):
        lines.append(f'  File "/srv/{path}", line {rng.randrange(20, 900)}, in {function}')
    lines.append(f"{error_type}: {message}")
    return "\n".join(lines)


def _trace_sizes(rng: random.Random, spans: int) -> list[int]:
    sizes = []
    remaining = spans
    while remaining > 0:
        size = MIN_TRACE_SPANS + int(rng.betavariate(1.2, 3.0) * (MAX_TRACE_SPANS - MIN_TRACE_SPANS + 1))
        size = min(size, MAX_TRACE_SPANS, remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def iter_trace_plans(spans: int, *, seed: int = DEFAULT_SEED, now_unix_nano: int | None = None) -> Iterator[TracePlan]:
    """Yield the plans of the traces holding exactly ``spans`` spans, oldest trace first.

    Deterministic for a ``(spans, seed, now_unix_nano)``; ``now_unix_nano`` defaults to the current time.
    """
    rng = random.Random(seed)
    services = _build_services(rng)
    now = time.time_ns() if now_unix_nano is None else now_unix_nano
    window_start = now - WINDOW_NS
    window_end = now - END_MARGIN_NS
    sizes = _trace_sizes(rng, spans)
    # Trace start times: sorted uniform over the window (their durations are clamped below to end in time).
    starts = sorted(rng.randrange(window_start, window_end - 30 * NS_PER_S) for _ in sizes)
    n_users = max(1000, spans // 20)
    # Start times already used by spans that start at or after the current trace's start (the only ones a new span
    # could collide with: traces come in start order); a heap drops the older ones, so this stays small.
    used_starts: set[int] = set()
    used_heap: list[int] = []
    error_types = [entry[0] for entry in ERROR_TYPES]
    error_weights = [entry[1] for entry in ERROR_TYPES]
    error_info = {entry[0]: entry for entry in ERROR_TYPES}
    randrange, rand, getrandbits, choice = rng.randrange, rng.random, rng.getrandbits, rng.choice

    for size, trace_start in zip(sizes, starts, strict=True):
        while used_heap and used_heap[0] < trace_start:
            used_starts.discard(heapq.heappop(used_heap))
        trace_id = getrandbits(128) or 1
        entry = ENTRY_SERVICES[0] if rand() < 0.75 else ENTRY_SERVICES[1]
        user_id = f"user-{randrange(n_users):07d}"
        # nodes: [service, operation, parent index, children, kind tag]; tag: s=server i=internal d=db c=client
        nodes: list[list[Any]] = [[entry, choice(services[entry].routes), None, [], "s"]]
        expandable = [0]
        while len(nodes) < size:
            parent = expandable[-1] if rand() < 0.5 else expandable[randrange(len(expandable))]
            service = nodes[parent][0]
            roll = rand()
            if roll < 0.35 and len(nodes) + 2 <= size:
                callee = randrange(len(SERVICES) - 2) + 2
                server_op = choice(services[callee].routes)
                client = len(nodes)
                nodes.append([service, server_op, parent, [], "c"])
                nodes[parent][3].append(client)
                nodes.append([callee, server_op, client, [], "s"])
                nodes[client][3].append(client + 1)
                expandable.append(client + 1)
            elif roll < 0.65:
                nodes.append([service, choice(services[service].db), parent, [], "d"])
                nodes[parent][3].append(len(nodes) - 1)
            else:
                nodes.append([service, choice(services[service].internal), parent, [], "i"])
                nodes[parent][3].append(len(nodes) - 1)
                expandable.append(len(nodes) - 1)

        # Durations bottom-up (children are created after their parent, so reverse order is post-order).
        durations = [0] * size
        self_times = [0] * size
        for index in range(size - 1, -1, -1):
            node = nodes[index]
            if node[4] == "c":
                own = int(_lognormal(rng, 0.4 * NS_PER_MS, 0.6)) + 1000
            else:
                own = int(_lognormal(rng, node[1].median_ns, 0.9)) + 1000
            self_times[index] = own
            durations[index] = own + sum(durations[child] for child in node[3])
        # A trace must end before the window does: squeeze a rare monster trace instead of moving it.
        scale = min(1.0, (window_end - trace_start) / durations[0])
        if scale < 1.0:
            durations = [max(1000, int(d * scale)) for d in durations]
            self_times = [max(1000, int(d * scale)) for d in self_times]

        starts_of = [0] * size
        starts_of[0] = trace_start
        for index in range(size):
            cursor = starts_of[index] + int(self_times[index] * rng.uniform(0.05, 0.5))
            for child in nodes[index][3]:
                starts_of[child] = cursor
                cursor += durations[child]
        span_ids = [getrandbits(64) or 1 for _ in range(size)]

        plan = TracePlan()
        order = sorted(range(size), key=lambda i: starts_of[i] + durations[i])
        for index in order:
            service, operation, parent, _children, tag = nodes[index]
            start = starts_of[index]
            while start in used_starts:
                start += 1
            used_starts.add(start)
            heapq.heappush(used_heap, start)
            end = start + durations[index]
            is_error = rand() < ERROR_RATE
            attributes = dict(operation.attributes)
            if tag == "s":
                status = 200 if rand() < 0.9 else choice((201, 204, 301, 304, 400, 404))
                attributes["http.response.status_code"] = status
                attributes["user.id"] = user_id
                attributes["network.peer.port"] = randrange(1024, 65536)
                attributes["user_agent.original"] = choice(_USER_AGENTS)
            elif tag == "c":
                callee_name = SERVICES[nodes[nodes[index][3][0]][0]]  # its only child is the SERVER span called
                attributes = {
                    "http.request.method": operation.method,
                    "url.full": f"https://{callee_name}.shop.svc{operation.route}",
                    "server.address": f"{callee_name}.shop.svc",
                    "server.port": 8080,
                    "http.response.status_code": 200,
                    "network.peer.port": randrange(1024, 65536),
                }
            elif tag == "d":
                attributes["db.response.returned_rows"] = randrange(0, 200)
            else:
                attributes["app.items.count"] = randrange(1, 40)
                attributes["app.cart.total"] = round(rng.uniform(1.0, 900.0), 2)
                attributes["app.ratio"] = rand()
                attributes["app.cache.hit"] = rand() < 0.7
                attributes["app.feature_flags"] = tuple(flag for flag in _FEATURE_FLAGS if rand() < 0.3)
            events: list[tuple[str, int, dict[str, Any]]] = []
            message = ""
            if is_error:
                error_type = rng.choices(error_types, error_weights)[0]
                _, _, template, http_status = error_info[error_type]
                peer = choice(SERVICES)
                text = template.format(ms=randrange(1, 30_000), peer=peer, token=f"{getrandbits(32):08x}")
                attributes["error.type"] = error_type
                if "http.response.status_code" in attributes:
                    attributes["http.response.status_code"] = http_status
                events.append(
                    (
                        "exception",
                        end - randrange(1000, max(1001, min(durations[index], NS_PER_MS))),
                        {
                            "exception.type": error_type,
                            "exception.message": text,
                            "exception.stacktrace": _stacktrace(rng, error_type, text),
                            "exception.escaped": True,
                        },
                    )
                )
                message = f"{error_type}: {text}"
            plan.spans.append(
                (
                    trace_id,
                    span_ids[index],
                    span_ids[parent] if parent is not None else None,
                    operation.name,  # a CLIENT call is named after the route it calls
                    operation.sdk_kind if tag != "c" else _SDK_CLIENT,
                    service,
                    operation.scope if tag != "c" else _SCOPE_HTTP_CLIENT,
                    start,
                    end,
                    is_error,
                    message,
                    attributes,
                    events,
                )
            )
        yield plan


# --- the StoredSpan fast path -----------------------------------------------------------------------------------

_intern = sys.intern


def _attribute_map(attributes: dict[str, Any]) -> AttributeMap:
    # Mirrors spanstore.model's SDK conversion: short strings interned, one shared key tuple per key set.
    if not attributes:
        return EMPTY_ATTRIBUTES
    values = tuple(_intern(v) if type(v) is str and len(v) <= 64 else v for v in attributes.values())
    return AttributeMap(share_keys(tuple(attributes)), values)


class _StoredBuilder:
    """Turns plans into ``StoredSpan``s exactly as ``from_readable_span`` turns the SDK's spans."""

    def __init__(self, seed: int) -> None:
        services = _build_services(random.Random(seed))
        self.resources = [Resource(attributes=_attribute_map(dict(s.resource_attributes))) for s in services]
        self.scopes = [
            [Scope(name=name.format(service=service.name), version=version) for name, version in _SCOPES]
            for service in services
        ]
        self.spans: list[StoredSpan] = []

    def add(self, plan: TracePlan) -> None:
        resources, scopes, append = self.resources, self.scopes, self.spans.append
        hex_ids: dict[int, str] = {}
        trace_hex = _intern(format(plan.spans[0][0], "032x"))
        for _, sid, parent, name, kind, service, scope, start, end, is_error, message, attrs, events in plan.spans:
            span_hex = hex_ids.get(sid)
            if span_hex is None:
                span_hex = hex_ids[sid] = _intern(format(sid, "016x"))
            parent_hex = None
            if parent is not None:
                parent_hex = hex_ids.get(parent)
                if parent_hex is None:
                    parent_hex = hex_ids[parent] = _intern(format(parent, "016x"))
            append(
                StoredSpan(
                    trace_id=trace_hex,
                    span_id=span_hex,
                    parent_span_id=parent_hex,
                    name=_intern(name),
                    kind=_OTLP_KIND_BY_SDK[kind],
                    start_time_unix_nano=start,
                    end_time_unix_nano=end,
                    status_code=StatusCode.ERROR if is_error else StatusCode.UNSET,
                    status_message=message,
                    attributes=_attribute_map(attrs),
                    events=tuple(
                        SpanEvent(name=_intern(event_name), time_unix_nano=ts, attributes=_attribute_map(event_attrs))
                        for event_name, ts, event_attrs in events
                    ),
                    resource=resources[service],
                    scope=scopes[service][scope],
                    flags=_FLAGS,
                )
            )


# --- the SDK path -----------------------------------------------------------------------------------------------


class _SdkBuilder:
    """Runs plans through real ``TracerProvider``s (one per service) into one ``InMemorySpanExporter``.

    Spans get their planned ids (a planned ``IdGenerator``) and explicit start/end times; exceptions are
    recorded as ``exception`` events with explicit attributes (``record_exception`` would capture this
    process's own stack).
    """

    def __init__(self, seed: int) -> None:
        from opentelemetry import context as context_api
        from opentelemetry import trace as trace_api
        from opentelemetry.sdk.resources import Resource as SdkResource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.id_generator import IdGenerator
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        from opentelemetry.trace.status import Status
        from opentelemetry.trace.status import StatusCode as SdkStatusCode

        class PlannedIds(IdGenerator):
            """Hands out the ids the plan chose (set just before each ``start_span``)."""

            def __init__(self) -> None:
                self.trace_id = 0
                self.span_id = 0

            def generate_trace_id(self) -> int:
                return self.trace_id

            def generate_span_id(self) -> int:
                return self.span_id

        self.exporter = InMemorySpanExporter()
        processor = SimpleSpanProcessor(self.exporter)
        self.ids = PlannedIds()
        self.tracers = []
        for service in _build_services(random.Random(seed)):
            provider = TracerProvider(
                sampler=ALWAYS_ON,
                resource=SdkResource(dict(service.resource_attributes)),
                shutdown_on_exit=False,  # an atexit hook would keep the exporter and its spans alive
                id_generator=self.ids,
            )
            provider.add_span_processor(processor)
            self.tracers.append(
                [provider.get_tracer(name.format(service=service.name), version) for name, version in _SCOPES]
            )
        self.kinds = (trace_api.SpanKind.INTERNAL, trace_api.SpanKind.SERVER, trace_api.SpanKind.CLIENT)
        self.sampled = TraceFlags(TraceFlags.SAMPLED)
        self.root_context = context_api.Context()
        self.set_span_in_context = trace_api.set_span_in_context
        self.NonRecordingSpan, self.SpanContext = NonRecordingSpan, SpanContext
        self.error_status = lambda message: Status(SdkStatusCode.ERROR, message)

    def add(self, plan: TracePlan) -> None:
        ids, tracers, kinds, root_context = self.ids, self.tracers, self.kinds, self.root_context
        # Spans end children-first, but a child needs only its parent's ids, which the plan already has.
        for tid, sid, parent, name, kind, service, scope, start, end, is_error, message, attrs, events in plan.spans:
            if parent is None:
                ctx = root_context
            else:
                parent_context = self.SpanContext(tid, parent, is_remote=False, trace_flags=self.sampled)
                ctx = self.set_span_in_context(self.NonRecordingSpan(parent_context), root_context)
            ids.trace_id = tid
            ids.span_id = sid
            span = tracers[service][scope].start_span(
                name, context=ctx, kind=kinds[kind], attributes=attrs, start_time=start
            )
            for event_name, ts, event_attrs in events:
                span.add_event(event_name, event_attrs, timestamp=ts)
            if is_error:
                span.set_status(self.error_status(message))
            span.end(end_time=end)


# --- the public entry points ------------------------------------------------------------------------------------


def generate(
    spans: int,
    *,
    seed: int = DEFAULT_SEED,
    now_unix_nano: int | None = None,
    stored: bool = True,
    readable: bool = True,
) -> tuple[list[StoredSpan] | None, InMemorySpanExporter | None]:
    """Generate the workload once into both outputs: ``(StoredSpans, InMemorySpanExporter of ReadableSpans)``.

    One plan feeds both, so they hold the same spans in the same order; an output not asked for is ``None``.
    The cyclic GC is paused while generating (it would otherwise rescan every span made so far, again and
    again: +60% time at 10^5 spans).

    >>> stored, exporter = generate(300, seed=7, now_unix_nano=10**19)
    >>> len(stored), len(exporter.get_finished_spans())
    (300, 300)
    >>> stored[0].span_id == format(exporter.get_finished_spans()[0].context.span_id, "016x")
    True
    """
    stored_builder = _StoredBuilder(seed) if stored else None
    sdk_builder = _SdkBuilder(seed) if readable else None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for plan in iter_trace_plans(spans, seed=seed, now_unix_nano=now_unix_nano):
            if stored_builder is not None:
                stored_builder.add(plan)
            if sdk_builder is not None:
                sdk_builder.add(plan)
    finally:
        if was_enabled:
            gc.enable()
    return (
        stored_builder.spans if stored_builder is not None else None,
        sdk_builder.exporter if sdk_builder is not None else None,
    )


def iter_stored_spans(
    spans: int, *, seed: int = DEFAULT_SEED, now_unix_nano: int | None = None
) -> Iterator[list[StoredSpan]]:
    """Yield the workload's ``StoredSpan``s a trace at a time, keeping nothing: for loading a store lean.

    >>> sum(map(len, iter_stored_spans(500, seed=3, now_unix_nano=10**19)))
    500
    """
    builder = _StoredBuilder(seed)
    for plan in iter_trace_plans(spans, seed=seed, now_unix_nano=now_unix_nano):
        builder.add(plan)
        yield builder.spans
        builder.spans = []


def generate_stored_spans(
    spans: int, *, seed: int = DEFAULT_SEED, now_unix_nano: int | None = None
) -> list[StoredSpan]:
    """Return the workload as ``StoredSpan``s, built directly (no SDK): the fast path for loading a store.

    Equal, span for span, to converting :func:`generate_readable_spans` with ``from_readable_span``.

    >>> spans = generate_stored_spans(200, seed=1, now_unix_nano=10**19)
    >>> len(spans), len({s.service_name for s in spans}) > 5, all(s.end_time_unix_nano < 10**19 for s in spans)
    (200, True, True)
    """
    result, _ = generate(spans, seed=seed, now_unix_nano=now_unix_nano, readable=False)
    assert result is not None
    return result


def generate_readable_spans(
    spans: int, *, seed: int = DEFAULT_SEED, now_unix_nano: int | None = None
) -> InMemorySpanExporter:
    """Return an ``InMemorySpanExporter`` holding the workload as real SDK spans (see :class:`_SdkBuilder`).

    >>> spans = generate_readable_spans(100, seed=1, now_unix_nano=10**19).get_finished_spans()
    >>> len(spans), spans[0].resource.attributes["service.name"] in SERVICES
    (100, True)
    """
    _, exporter = generate(spans, seed=seed, now_unix_nano=now_unix_nano, stored=False)
    assert exporter is not None
    return exporter


def _main(argv: list[str]) -> None:
    spans = int(argv[0]) if argv else 100_000
    now = time.time_ns()
    t0 = time.perf_counter()
    for _ in iter_trace_plans(spans, now_unix_nano=now):
        pass
    t1 = time.perf_counter()
    stored = generate_stored_spans(spans, now_unix_nano=now)
    t2 = time.perf_counter()
    exporter = generate_readable_spans(spans, now_unix_nano=now)
    t3 = time.perf_counter()
    errors = sum(1 for s in stored if s.status_code == StatusCode.ERROR)
    print(
        f"{spans:,} spans: plans alone {t1 - t0:.2f} s; StoredSpans {t2 - t1:.2f} s ({spans / (t2 - t1):,.0f}/s); "
        f"SDK ReadableSpans {t3 - t2:.2f} s ({spans / (t3 - t2):,.0f}/s); "
        f"{len({s.trace_id for s in stored}):,} traces, {len({s.name for s in stored})} span names, "
        f"{len({s.attributes.get('http.route') for s in stored}) - 1} routes, {errors / spans:.2%} errors, "
        f"{len(exporter.get_finished_spans()):,} SDK spans"
    )


if __name__ == "__main__":
    _main(sys.argv[1:])
