"""Errors as the real Flask and requests instrumentations record them, under both HTTP semantic conventions (#11.4).

A Flask app behind a real WSGI server, called with ``requests``, both instrumented by the official OpenTelemetry
packages; once with the old HTTP conventions (``http.status_code``) and once with
``OTEL_SEMCONV_STABILITY_OPT_IN=http`` (``http.response.status_code`` and ``error.type="500"``). The mode is read
once per process, so each runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spanstore import SpanStore, filter_by_error_type, query_spans
from spanstore.cli import main
from spanstore.render import error_summary

SHOP = """
    class OutOfStock(Exception):
        '''Raised by the shop app; recorded by the SDK as shop.OutOfStock (module-qualified).'''
"""

APP = """
    import sys, threading
    import requests
    from flask import Flask
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from werkzeug.serving import make_server

    from shop import OutOfStock
    from spanstore.processor import FileBasedSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(FileBasedSpanProcessor(sys.argv[1]))
    trace.set_tracer_provider(provider)
    app = Flask("shop")
    FlaskInstrumentor().instrument_app(app)
    RequestsInstrumentor().instrument()

    @app.route("/buy/<int:item>")
    def buy(item):
        raise OutOfStock(f"item {item} is sold out")

    @app.route("/divide")
    def divide():
        return str(1 / 0)

    @app.route("/ok")
    def ok():
        return "fine"

    server = make_server("127.0.0.1", 0, app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    for path in ("/buy/13", "/divide", "/ok"):
        requests.get(base + path, timeout=30)
    server.shutdown()
    provider.shutdown()
"""


@pytest.fixture(scope="module", params=["old", "http"])
def shop_store(request, tmp_path_factory) -> tuple[str, str]:
    """(semantic-convention mode, store path) after the shop app served three requests."""
    folder = tmp_path_factory.mktemp(f"shop-{request.param}")
    (folder / "shop.py").write_text(textwrap.dedent(SHOP))
    (folder / "app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if request.param == "http":
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(Path(__file__).resolve().parents[1])])
    result = subprocess.run(
        [sys.executable, str(folder / "app.py"), str(folder / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return request.param, str(folder / "store")


def server_span(store: SpanStore, route: str):
    (span,) = [s for s in query_spans(store, kind="SERVER", limit=None) if s.name.endswith(route)]
    return span


def test_an_error_is_found_by_its_exception_class_and_by_error_type(shop_store):
    """By the qualified class, the bare class and (new conventions) error.type="500": never hidden by another."""
    mode, path = shop_store
    with SpanStore(path) as store:
        buy, divide = server_span(store, "/buy/<int:item>"), server_span(store, "/divide")
        assert [s.span_id for s in filter_by_error_type(store, "ZeroDivisionError")] == [divide.span_id]
        assert [s.span_id for s in filter_by_error_type(store, "OutOfStock")] == [buy.span_id]
        assert [s.span_id for s in filter_by_error_type(store, "shop.OutOfStock")] == [buy.span_id]
        by_status = {s.span_id for s in filter_by_error_type(store, "500", limit=None)}
        if mode == "http":  # error.type="500" on both server spans and both client spans
            assert {buy.span_id, divide.span_id} < by_status and len(by_status) == 4
        else:
            assert by_status == set()
        assert error_summary(buy) == "shop.OutOfStock: item 13 is sold out"  # the type once, not twice
        assert error_summary(divide) == "ZeroDivisionError: division by zero"
        clients = [s for s in query_spans(store, kind="CLIENT", status="ERROR", limit=None)]
        assert len(clients) == 2 and all(error_summary(s) == "HTTP 500" for s in clients)


def test_errors_lists_every_error_span_untyped_ones_in_a_row_of_their_own(shop_store, capsys):
    """`spanstore errors` accounts for every ERROR span: typed rows plus one row for those without a type."""
    mode, path = shop_store
    assert main(["--path", path, "--json", "errors"]) == 0
    rows = {row["error_type"]: row["span_count"] for row in map(json.loads, capsys.readouterr().out.splitlines())}
    if mode == "http":
        assert rows == {"shop.OutOfStock": 1, "ZeroDivisionError": 1, "500": 2}
    else:
        assert rows == {"shop.OutOfStock": 1, "ZeroDivisionError": 1, None: 2}
    with SpanStore(path) as store:
        assert sum(rows.values()) == len(query_spans(store, status="ERROR", limit=None))
    assert main(["--path", path, "errors"]) == 0
    table = capsys.readouterr().out
    assert "ZeroDivisionError" in table and ("(no type" in table) == (mode == "old")
