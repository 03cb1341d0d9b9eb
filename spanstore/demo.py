"""A small, realistic instrumented workload: what ``spanstore demo`` runs.

Four services of a toy shop (``frontend``, ``cart``, ``inventory``, ``payment``), each with its own
``TracerProvider`` and ``Resource``, all feeding one :class:`~spanstore.SpanStore` through a
:class:`~spanstore.processor.FileBasedSpanProcessor` per provider. Requests go frontend -> service -> database
(or payment gateway), with the trace context carried between services as W3C ``traceparent`` headers, as it
would be over HTTP. Some requests fail with real exceptions (a database statement timeout that cascades into 5xx
responses up the call chain, a declined card), recorded with ``record_exception`` and ``set_status(ERROR)``.

Nothing sleeps: spans get explicit start and end times from a simulated clock, so a run takes a fraction of a second
while durations look like production ones (a 2 s statement timeout, a 150 ms payment call). The workload is seeded:
the same seed gives the same requests, durations and failures (span and trace ids stay random, so repeated runs into
one store never collide). Requests are spread over the ten minutes before the run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SERVICES", "DemoResult", "run_demo"]

#: The demo's services, in call order.
SERVICES = ("frontend", "cart", "inventory", "payment")

_MS = 1_000_000
_WINDOW_NS = 10 * 60 * 1_000_000_000  # requests are spread over the ten minutes before the run
_PRODUCTS = {
    "OLJCESPC7Z": "Vintage Typewriter",
    "66VCHSJNUP": "Film Camera",
    "1YMWWN1N4O": "Home Barista Kit",
    "L9ECAV7KIM": "Terrarium",
    "2ZYFJ3GM2N": "Roof Binoculars",
    "9SIQT8TOJO": "City Bike",
}


class StatementTimeoutError(TimeoutError):
    """The database cancelled a query that ran past its statement timeout."""


class CardDeclinedError(Exception):
    """The payment gateway declined the card."""

    http_status = 402


class UpstreamError(Exception):
    """A downstream service answered with a server error."""


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: counts, the path, and the ids of the traces it wrote (oldest first)."""

    path: str
    requests: int
    span_count: int
    trace_ids: list[str] = field(default_factory=list)
    error_trace_ids: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0


class _Shop:
    """The simulated services: each request handler advances a simulated clock and ends real SDK spans."""

    def __init__(self, tracers: dict[str, Any], rng: random.Random, start_ns: int) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracers = tracers
        self.rng = rng
        self.now = start_ns
        self.propagator = TraceContextTextMapPropagator()

    # --- the span helper ----------------------------------------------------------------------------------------
    def work(self, low_ms: float, high_ms: float) -> None:
        """Spend simulated time."""
        self.now += int(self.rng.uniform(low_ms, high_ms) * _MS)

    @contextmanager
    def span(
        self, service: str, name: str, kind: Any, attributes: dict[str, Any], context: Any = None
    ) -> Iterator[Any]:
        """A span on the simulated clock; an exception escaping it is recorded, sets ERROR and propagates."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        tracer = self.tracers[service]
        span = tracer.start_span(name, context=context, kind=kind, attributes=attributes, start_time=self.now)
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except Exception as exc:
                span.record_exception(exc, timestamp=self.now)
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            finally:
                self.work(0.05, 0.4)
                span.end(end_time=self.now)

    def call(self, source: str, target: str, method: str, route: str, path: str, handler: Callable[[], int]) -> int:
        """An HTTP call from ``source`` to ``target``: a CLIENT span, a traceparent header, a SERVER span there."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        url = f"http://{target}:8080{path}"
        client_attributes = {
            "http.request.method": method,
            "url.full": url,
            "url.template": route,
            "server.address": target,
            "server.port": 8080,
        }
        with self.span(source, f"{method} {route}", SpanKind.CLIENT, client_attributes) as client:
            headers: dict[str, str] = {}
            self.propagator.inject(headers)
            self.work(0.3, 1.5)  # the network, on the way there
            status = self._serve(target, method, route, path, headers, handler)
            self.work(0.3, 1.5)  # and back
            client.set_attribute("http.response.status_code", status)
            if status >= 400:
                client.set_attribute("error.type", str(status))
                client.set_status(Status(StatusCode.ERROR))
            return status

    def _serve(self, service: str, method: str, route: str, path: str, headers: dict[str, str], handler: Any) -> int:
        from opentelemetry.trace import SpanKind

        server_attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": "http",
            "server.address": service,
            "network.protocol.version": "1.1",
        }
        context = self.propagator.extract(headers)
        try:
            with self.span(service, f"{method} {route}", SpanKind.SERVER, server_attributes, context) as server:
                self.work(0.1, 0.6)  # routing, auth, parsing
                try:
                    status = handler()
                except Exception as exc:
                    server.set_attribute("http.response.status_code", _status_for(exc))
                    raise
                server.set_attribute("http.response.status_code", status)
                return status
        except Exception as exc:  # recorded on the server span; the caller sees only the status, as over HTTP
            return _status_for(exc)

    def db(
        self, service: str, system: str, operation: str, target: str, statement: str, low: float, high: float
    ) -> None:
        """A database CLIENT span; ``statement_timeout`` makes a slow query raise StatementTimeoutError."""
        from opentelemetry.trace import SpanKind

        attributes = {
            "db.system": system,
            "db.namespace": "shop",
            "db.operation.name": operation,
            "db.collection.name": target,
            "db.query.text": statement,
            "server.address": f"{system}.internal",
        }
        with self.span(service, f"{operation} {target}", SpanKind.CLIENT, attributes):
            self.work(low, high)
            if system == "postgresql" and self.rng.random() < self.slow_query_rate:
                self.now += 2_000 * _MS  # the query ran until postgres cancelled it
                _cancel_statement(statement)

    slow_query_rate = 0.0

    # --- the services -------------------------------------------------------------------------------------------
    def stock(self, sku: str) -> int:
        def handler() -> int:
            self.db(
                "inventory",
                "postgresql",
                "SELECT",
                "stock",
                "SELECT quantity, reserved FROM stock WHERE sku = $1",
                1.5,
                9,
            )
            return 200

        return self.call("frontend", "inventory", "GET", "/api/stock/{sku}", f"/api/stock/{sku}", handler)

    def cart_items(self, user: str, caller: str = "frontend") -> int:
        def handler() -> int:
            self.db("cart", "redis", "HGETALL", f"cart:{user}", f"HGETALL cart:{user}", 0.2, 1.5)
            return 200

        return self.call(caller, "cart", "GET", "/api/cart", f"/api/cart?user={user}", handler)

    def charge(self, user: str, amount: float) -> int:
        from opentelemetry.trace import SpanKind

        def handler() -> int:
            attributes = {"http.request.method": "POST", "url.full": "https://api.payments.example/v1/charges"}
            with self.span("payment", "POST /v1/charges", SpanKind.CLIENT, attributes) as gateway:
                self.work(60, 320)
                declined = self.rng.random() < 0.35
                gateway.set_attribute("http.response.status_code", 402 if declined else 200)
            if declined:
                _authorize(user, amount)
            self.db(
                "payment",
                "postgresql",
                "INSERT",
                "payments",
                "INSERT INTO payments (user_id, amount_cents) VALUES ($1, $2)",
                2,
                6,
            )
            return 200

        return self.call("frontend", "payment", "POST", "/api/charge", "/api/charge", handler)

    # --- frontend requests --------------------------------------------------------------------------------------
    def request(self, kind: str, user: str) -> str:
        """Serve one frontend request; returns its trace id."""
        from opentelemetry.trace import SpanKind, format_trace_id

        sku = self.rng.choice(list(_PRODUCTS))
        routes = {"product": ("GET", "/product/{id}", f"/product/{sku}"), "cart": ("GET", "/cart", "/cart")}
        routes["checkout"] = ("POST", "/cart/checkout", "/cart/checkout")
        method, route, path = routes[kind]
        attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": "https",
            "user.id": user,
            "client.address": f"10.0.{self.rng.randint(0, 9)}.{self.rng.randint(2, 250)}",
            "user_agent.original": self.rng.choice(_USER_AGENTS),
        }
        try:
            with self.span("frontend", f"{method} {route}", SpanKind.SERVER, attributes) as root:
                trace_id = format_trace_id(root.get_span_context().trace_id)
                self.work(0.2, 1.0)
                try:
                    status = self._frontend(kind, user, sku, root)
                except Exception as exc:
                    root.set_attribute("http.response.status_code", _status_for(exc))
                    raise
                root.set_attribute("http.response.status_code", status)
        except UpstreamError:
            pass  # recorded on the span; a real server would answer 500 here
        return trace_id

    def _frontend(self, kind: str, user: str, sku: str, root: Any) -> int:
        from opentelemetry.trace import SpanKind

        if kind == "product":
            root.set_attribute("app.product.id", sku)
            _require(self.stock(sku), "inventory")
            with self.span("frontend", "render product page", SpanKind.INTERNAL, {"app.product.name": _PRODUCTS[sku]}):
                self.work(2, 12)
            return 200
        items = self.rng.randint(1, 4)
        root.set_attribute("app.cart.items", items)
        _require(self.cart_items(user), "cart")
        for _ in range(items if kind == "checkout" else 1):
            _require(self.stock(self.rng.choice(list(_PRODUCTS))), "inventory")
        if kind == "cart":
            with self.span("frontend", "render cart page", SpanKind.INTERNAL, {"app.cart.items": items}):
                self.work(2, 9)
            return 200
        amount = round(self.rng.uniform(12, 480), 2)
        root.set_attribute("app.order.amount", amount)
        status = self.charge(user, amount)
        if status == CardDeclinedError.http_status:
            return status  # the customer's card, not our fault: a 4xx, and the frontend span stays OK
        _require(status, "payment")
        with self.span("frontend", "send order confirmation", SpanKind.PRODUCER, {"messaging.system": "kafka"}) as s:
            s.set_attribute("messaging.destination.name", "orders")
            self.work(0.5, 3)
        return 200


_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
)


def _cancel_statement(statement: str) -> None:  # what psycopg raises when postgres cancels ``statement``
    raise StatementTimeoutError("canceling statement due to statement timeout")


def _authorize(user: str, amount: float) -> None:
    raise CardDeclinedError(f"card declined for user {user}: insufficient funds ({amount:.2f} EUR)")


def _status_for(exc: BaseException) -> int:
    if isinstance(exc, CardDeclinedError):
        return CardDeclinedError.http_status
    if isinstance(exc, StatementTimeoutError):
        return 503
    return 500


def _require(status: int, service: str) -> None:
    if status >= 500:
        raise UpstreamError(f"{service} answered {status}")


def run_demo(path: str | Path, *, seed: int = 3, requests: int = 25, store: Any = None) -> DemoResult:
    """Run the demo workload, writing its spans to the store at ``path`` (created if needed).

    ``requests`` frontend requests (a mix of product pages, cart views and checkouts) give about six spans each.
    With ``store`` (an open :class:`~spanstore.SpanStore`), spans go there and it is left open; otherwise a store is
    opened at ``path``, flushed and closed. Takes well under a second for the default size. Not thread-safe with
    itself: run one demo at a time per process.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = run_demo(f"{tmp}/store", requests=5)
    >>> result.requests, len(result.trace_ids), result.span_count > 5
    (5, 5, True)
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from spanstore.processor import FileBasedSpanProcessor
    from spanstore.store import SpanStore

    began = time.perf_counter()
    owns_store = store is None
    if store is None:
        store = SpanStore(path)
    rng = random.Random(seed)
    providers = {}
    tracers = {}
    try:
        for index, service in enumerate(SERVICES):
            resource = Resource.create(
                {
                    "service.name": service,
                    "service.namespace": "shop",
                    "service.version": f"1.{index + 3}.{rng.randint(0, 9)}",
                    "service.instance.id": f"{service}-{rng.randrange(16**8):08x}",
                    "deployment.environment.name": "demo",
                    "host.name": f"node-{index % 2 + 1}",
                }
            )
            provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
            provider.add_span_processor(FileBasedSpanProcessor(store))
            providers[service] = provider
            tracers[service] = provider.get_tracer("spanstore.demo", "0.1.0")
        before = store.stats().added_spans
        start = time.time_ns() - _WINDOW_NS
        shop = _Shop(tracers, rng, start)
        trace_ids = []
        step = _WINDOW_NS // max(1, requests)
        for number in range(requests):
            shop.now = start + number * step + rng.randrange(step // 2 + 1)
            shop.slow_query_rate = 0.5 if number % 6 == 4 else 0.02  # a bad minute now and then
            kind = rng.choices(("product", "cart", "checkout"), weights=(5, 3, 4))[0]
            user = f"user-{rng.randint(1, 25):04d}"
            trace_ids.append(shop.request(kind, user))
        for provider in providers.values():
            provider.force_flush()
        store.flush()
        span_count = store.stats().added_spans - before
        from spanstore.query import find_traces

        failing = {t.trace_id for t in find_traces(store, status="ERROR", limit=len(trace_ids) + 1000)}
        error_trace_ids = [trace_id for trace_id in trace_ids if trace_id in failing]
    finally:
        for provider in providers.values():
            provider.shutdown()
        if owns_store:
            store.close()
    return DemoResult(
        path=str(path),
        requests=requests,
        span_count=span_count,
        trace_ids=trace_ids,
        error_trace_ids=error_trace_ids,
        elapsed_seconds=time.perf_counter() - began,
    )
