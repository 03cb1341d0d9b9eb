"""spanstore serve: the OTLP/HTTP receiver with real OpenTelemetry clients (Python and Node.js), bad input, the web UI
(escaping, CSP, live results, a headless browser), and the exports (--html, --otlp, trace --open)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from spanstore import AttributeMap, SpanEvent, SpanLink, SpanStore, StatusCode, StoredSpan, get_trace
from spanstore.cli import main
from spanstore.log import SpanLog
from spanstore.model import Resource, Scope, SpanKind
from spanstore.otlp import encode_spans
from spanstore.serve import SpanServer, warn_if_exposed

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"
SCREENSHOTS = ROOT / "tests" / "screenshots"
EVIL = "<script>alert(1)</script>"


# --- helpers --------------------------------------------------------------------------------------------------------
def request(url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None):
    """(status, headers, body) of one HTTP request."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path, body=body if method != "GET" else None, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post(url: str, body: bytes, content_type: str, encoding: str | None = None):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    return request(url, "POST", body, headers)


def sdk_provider(endpoint: str, service: str) -> TracerProvider:
    provider = TracerProvider(resource=SdkResource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def send_sdk_trace(endpoint: str, service: str = "py-shop", name: str = "GET /cart") -> str:
    """One trace of three spans (one ERROR with an exception) through the official OTLP/HTTP protobuf exporter."""
    provider = sdk_provider(endpoint, service)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span(name, kind=otel_trace.SpanKind.SERVER, attributes={"http.route": "/cart"}) as r:
        with tracer.start_as_current_span("load cart", attributes={"db.system": "postgresql", "rows": 3}):
            pass
        with tracer.start_as_current_span("charge card") as charge:
            try:
                raise TimeoutError("payment gateway did not answer")
            except TimeoutError as error:
                charge.record_exception(error)
                charge.set_status(otel_trace.StatusCode.ERROR, str(error))
        trace_id = format(r.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def stored(trace_id: str = "ab" * 16, span_id: str = "01" * 8, **fields) -> StoredSpan:
    values = {
        "name": "op",
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_000_002_000_000,
    }
    values.update(fields)
    return StoredSpan(trace_id=trace_id, span_id=span_id, **values)


def read_log(path: Path) -> list[StoredSpan]:
    with SpanLog(path, create=False, fsync="never") as log:
        return log.read()[0]


def json_body(spans: list[StoredSpan]) -> bytes:
    lines = encode_spans(spans)
    assert len(lines) == 1
    return lines[0].strip()


@pytest.fixture
def server(tmp_path):
    """An in-process SpanServer on a free port (OTLP and UI on one port)."""
    app = SpanServer(tmp_path / "store", otlp_port=0, refresh_interval_seconds=0.05).start()
    yield app
    app.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`spanstore serve` in a subprocess, on a free port: (OTLP URL, UI URL, store path)."""
    path = tmp_path_factory.mktemp("served") / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "spanstore", "--path", str(path), "serve", "--otlp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    try:
        while len(lines) < 3:
            line = process.stdout.readline()
            if not line:
                pytest.fail("spanstore serve ended early: " + process.stderr.read())
            lines.append(line)
        otlp = lines[1].split()[2]
        ui = lines[2].split()[2]
        yield otlp, ui, path
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


# --- real clients ---------------------------------------------------------------------------------------------------
def test_python_sdk_protobuf_exporter_spans_are_found_by_the_query_api_and_the_cli(served, capsys):
    """Spans sent by the official Python OTLP/HTTP (protobuf) exporter are on disk and in the served store at once."""
    otlp, ui, path = served
    trace_id = send_sdk_trace(otlp)
    spans = [s for s in read_log(path) if s.trace_id == trace_id]
    store = SpanStore()
    store.add_many(spans)
    trace = get_trace(store, trace_id)
    assert [s.name for s in trace] == ["GET /cart", "load cart", "charge card"]
    charge = trace[2]
    assert charge.status_code == StatusCode.ERROR and charge.error_type == "TimeoutError"
    assert charge.service_name == "py-shop" and trace[0].kind == SpanKind.SERVER
    assert trace[1].attributes["rows"] == 3 and trace[1].parent_span_id == trace[0].span_id
    assert "exception.stacktrace" in charge.events[0].attributes

    assert main(["--path", str(path), "trace", trace_id, "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(names) == ["GET /cart", "charge card", "load cart"]

    status, _, body = request(ui + "api/traces?service=py-shop&errors=1")
    assert status == 200 and trace_id in [t["trace_id"] for t in json.loads(body)]


def test_node_js_sdk_sends_spans(served):
    """The OpenTelemetry JS SDK (sdk-trace-node + exporter-trace-otlp-http) sends spans from Node.js."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (.ci/run installs the Debian nodejs package)")
    if not (NODE_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-http").is_dir():
        pytest.skip("tests/node has no node_modules: run `npm ci` in tests/node (.ci/run does)")
    otlp, ui, path = served
    result = subprocess.run(
        [node, "send.mjs", otlp], cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    trace_id = json.loads(result.stdout.strip().splitlines()[-1])["traceId"]
    spans = {s.name: s for s in read_log(path) if s.trace_id == trace_id}
    assert set(spans) == {"POST /checkout", "charge card"}
    charge = spans["charge card"]
    assert charge.service_name == "node-checkout" and charge.status_code == StatusCode.ERROR
    assert charge.parent_span_id == spans["POST /checkout"].span_id
    assert charge.attributes["payment.amount"] == 12.5 and charge.events[0].name == "exception"
    status, _, body = request(ui + "api/traces?service=node-checkout")
    assert trace_id in [t["trace_id"] for t in json.loads(body)]


# --- the receiver ---------------------------------------------------------------------------------------------------
def test_json_and_protobuf_with_gzip_get_a_response_in_their_encoding(server):
    """JSON and protobuf bodies, plain or gzip, are stored; each answer is an ExportTraceServiceResponse in kind."""
    url = server.otlp_url
    first = [stored(span_id=f"{i:016x}", name=f"json {i}") for i in range(1, 4)]
    status, headers, body = post(url, json_body(first), "application/json")
    assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", {})
    status, _, body = post(url, gzip.compress(json_body([stored("cd" * 16, name="gz")])), "application/json", "gzip")
    assert status == 200 and json.loads(body) == {}

    request_pb = trace_service_pb2.ExportTraceServiceRequest()
    span_pb = request_pb.resource_spans.add().scope_spans.add().spans.add()
    span_pb.trace_id, span_pb.span_id, span_pb.name = bytes.fromhex("ef" * 16), bytes.fromhex("02" * 8), "proto"
    span_pb.start_time_unix_nano, span_pb.end_time_unix_nano = 10, 20
    status, headers, body = post(url, gzip.compress(request_pb.SerializeToString()), "application/x-protobuf", "gzip")
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert not response.HasField("partial_success")
    assert {s.name for s in server.store.spans()} == {"json 1", "json 2", "json 3", "gz", "proto"}
    assert len(read_log(server.path)) == 5


def _bomb() -> bytes:
    return gzip.compress(b"\0" * (64 << 20), compresslevel=9)


@pytest.mark.parametrize(
    ("case", "body", "content_type", "encoding", "status", "says"),
    [
        ("malformed protobuf", b"\xff\xff\xff\xff", "application/x-protobuf", None, 400, "protobuf"),
        ("malformed JSON", b'{"resourceSpans": [', "application/json", None, 400, "JSON"),
        ("not traces", b'{"resourceMetrics": []}', "application/json", None, 400, "resourceMetrics"),
        ("empty JSON", b"", "application/json", None, 400, "empty body"),
        ("wrong content type", b"hello", "text/plain", None, 415, "Content-Type"),
        ("unknown encoding", b"{}", "application/json", "br", 415, "Content-Encoding"),
        ("corrupt gzip", b"\x1f\x8b\x08\x00garbage", "application/json", "gzip", 400, "gzip"),
        ("gzip bomb", None, "application/json", "gzip", 413, "decompressed"),
        ("over the limit", b"{" + b" " * (2 << 20) + b"}", "application/json", None, 413, "at most"),
    ],
)
def test_bad_requests_get_their_status_write_nothing_and_the_server_keeps_serving(
    tmp_path, case, body, content_type, encoding, status, says
):
    """Each kind of bad body gets its status and a message saying what was expected; the log is untouched."""
    with SpanServer(tmp_path / "store", otlp_port=0, max_body_bytes=1 << 20).start() as app:
        body = _bomb() if body is None else body
        got, headers, answer = post(app.otlp_url, body, content_type, encoding)
        assert got == status, answer
        if content_type == "application/x-protobuf":
            assert headers["Content-Type"] == "application/x-protobuf" and says.encode() in answer
        else:
            assert says in json.loads(answer)["message"]
        assert assert_nothing_stored(app)
        ok, _, _ = post(app.otlp_url, json_body([stored(name="after")]), "application/json")
        assert ok == 200 and [s.name for s in app.store.spans()] == ["after"]


def assert_nothing_stored(app: SpanServer) -> bool:
    return len(app.store) == 0 and read_log(app.path) == []


def test_partly_valid_requests_keep_and_count_the_valid_spans(server):
    """Invalid ids (bad hex, wrong length, all zero) reject those spans only; partial_success counts them."""
    good = json.loads(json_body([stored(span_id="01" * 8, name="good 1"), stored(span_id="02" * 8, name="good 2")]))
    spans = good["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({"traceId": "zz", "spanId": "03" * 8, "name": "bad hex"})
    spans.append({"traceId": "0" * 32, "spanId": "04" * 8, "name": "zero trace"})
    status, _, body = post(server.otlp_url, json.dumps(good).encode(), "application/json")
    partial = json.loads(body)["partialSuccess"]
    assert status == 200 and partial["rejectedSpans"] == "2"
    assert "spans[2].traceId" in partial["errorMessage"] and "not all zero" in partial["errorMessage"]

    request_pb = trace_service_pb2.ExportTraceServiceRequest()
    group = request_pb.resource_spans.add().scope_spans.add()
    for index, (trace_id, span_id) in enumerate(
        [(b"\x01" * 16, b"\x05" * 8), (b"\x01" * 3, b"\x06" * 8), (b"\x01" * 16, b"\0" * 8)]
    ):
        span_pb = group.spans.add()
        span_pb.trace_id, span_pb.span_id, span_pb.name = trace_id, span_id, f"proto {index}"
    status, _, body = post(server.otlp_url, request_pb.SerializeToString(), "application/x-protobuf")
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert status == 200 and response.partial_success.rejected_spans == 2
    assert "spans[1].traceId: expected a trace id of 16 bytes, got 3 bytes" in response.partial_success.error_message
    kept = sorted(s.name for s in read_log(server.path))
    assert kept == ["good 1", "good 2", "proto 0"] == sorted(s.name for s in server.store.spans())
    assert server.rejected_spans == 4


def test_spans_other_processes_append_are_loaded_once(server, tmp_path):
    """A FileBasedSpanProcessor writing to the same directory shows up in the UI's store; received spans never twice."""
    from spanstore import FileBasedSpanProcessor

    provider = TracerProvider(resource=SdkResource.create({"service.name": "in-process"}))
    provider.add_span_processor(FileBasedSpanProcessor(server.path))
    tracer = provider.get_tracer("t")
    for i in range(20):
        with tracer.start_as_current_span(f"local {i}"):
            pass
        post(server.otlp_url, json_body([stored(trace_id=f"{i + 1:032x}", name=f"received {i}")]), "application/json")
    provider.shutdown()
    server.refresh()
    names = [s.name for s in server.store.spans()]
    assert sorted(names) == sorted([f"local {i}" for i in range(20)] + [f"received {i}" for i in range(20)])
    assert len(read_log(server.path)) == 40


def test_listening_elsewhere_than_loopback_warns():
    """127.0.0.1, ::1 and localhost are quiet; any other address is warned about."""
    assert warn_if_exposed("127.0.0.1") is None and warn_if_exposed("::1") is None
    assert warn_if_exposed("localhost") is None
    assert "0.0.0.0" in warn_if_exposed("0.0.0.0") and warn_if_exposed("192.168.1.5") is not None


# --- the UI ---------------------------------------------------------------------------------------------------------
def evil_spans() -> list[StoredSpan]:
    resource = Resource(attributes=AttributeMap.of({"service.name": EVIL, "host.name": EVIL}))
    event = SpanEvent(
        name="exception",
        time_unix_nano=1_700_000_000_001_000_000,
        attributes=AttributeMap.of({"exception.type": EVIL, "exception.message": EVIL, "exception.stacktrace": EVIL}),
    )
    root = stored(name=EVIL, resource=resource, attributes=AttributeMap.of({EVIL: EVIL, "list": (EVIL,)}))
    child = stored(
        span_id="02" * 8,
        parent_span_id="01" * 8,
        name="child " + EVIL,
        status_code=StatusCode.ERROR,
        status_message=EVIL,
        events=(event, SpanEvent(name=EVIL, time_unix_nano=1_700_000_000_001_500_000)),
        links=(SpanLink(trace_id="cd" * 16, span_id="03" * 8, attributes=AttributeMap.of({"k": EVIL})),),
        resource=resource,
        scope=Scope(name=EVIL, version=EVIL),
    )
    return [root, child]


def test_every_span_string_is_escaped_and_pages_carry_a_csp(server, tmp_path):
    """<script> in names, attributes, events, resource and scope never reaches a page unescaped; CSP on every page."""
    server.ingest(evil_spans())
    ui = server.ui_url
    pages = [f"trace/{'ab' * 16}", "", "?errors=1", "errors", "?q=%7B+status+%3D+error+%7D", "fragment/results"]
    for page in pages:
        status, headers, body = request(ui + page)
        text = body.decode()
        assert status == 200, page
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "unsafe-inline" not in text
        assert headers["X-Content-Type-Options"] == "nosniff"
    out = tmp_path / "evil.html"
    assert main(["--path", str(server.path), "export", "--html", str(out)]) == 0
    document = out.read_text()
    assert document.count("<script>") == 1 and "<script>alert" not in document
    assert 'http-equiv="Content-Security-Policy"' in document and "sha256-" in document


def test_trace_page_shows_every_span_as_a_tree_with_error_marks(server):
    """The waterfall has a row per span (tree depth, bar, duration), error rows marked, details for each span."""
    trace_id = send_sdk_trace(server.otlp_url)
    status, _, body = request(server.ui_url + f"trace/{trace_id}")
    text = body.decode()
    assert status == 200 and text.count('class="row') == 3 and text.count('class="row err"') == 1
    assert text.count('data-depth="1"') == 2 and text.count('class="details"') == 3
    assert "TimeoutError: payment gateway did not answer" in text and 'class="stack"' in text
    assert request(server.ui_url + "trace/" + "9" * 32)[0] == 404
    assert request(server.ui_url + "trace/nothex")[0] == 404
    status, _, body = request(server.ui_url + f"api/trace/{trace_id}.jsonl")
    assert status == 200 and body.count(b"\n") == 1


def test_search_form_criteria_and_bad_queries(server):
    """Service, operation, attributes, TraceQL, durations, window and errors-only narrow the list; bad input: why."""
    ok = send_sdk_trace(server.otlp_url, service="alpha", name="GET /a")
    other = send_sdk_trace(server.otlp_url, service="beta", name="GET /b")

    def found(query: str) -> list[str]:
        status, _, body = request(server.ui_url + "api/traces?" + query)
        assert status == 200, body
        return [t["trace_id"] for t in json.loads(body)]

    assert found("service=alpha") == [ok]
    assert found("name=GET+/b") == [other]
    assert found("attr=http.route%3D/cart&last=1h") == [other, ok]
    assert found("q=%7B+resource.service.name+%3D+%22beta%22+%7D&errors=1") == [other]
    assert found("min=1h") == [] and found("max=1h&limit=1") == [other]
    assert found("error_type=TimeoutError&service=alpha") == [ok]
    status, _, body = request(server.ui_url + "?q=%7B+nope")
    assert status == 400 and b'class="problem"' in body
    assert request(server.ui_url + "api/traces?min=5")[0] == 400


def test_new_traces_reach_an_open_search_page(server):
    """The results fragment answers 204 while nothing arrived, then the rows with the new trace."""
    status, _, body = request(server.ui_url)
    generation = body.decode().split('data-gen="')[1].split('"')[0]
    assert request(server.ui_url + f"fragment/results?gen={generation}")[0] == 204
    trace_id = send_sdk_trace(server.otlp_url)
    status, headers, body = request(server.ui_url + f"fragment/results?gen={generation}")
    assert status == 200 and trace_id in body.decode() and headers["X-Spanstore-Generation"] != generation


def test_separate_ui_port(tmp_path):
    """With ui_port the OTLP listener takes only /v1/traces and the UI listener only pages."""
    with SpanServer(tmp_path / "store", otlp_port=0, ui_port=0).start() as app:
        assert urlsplit(app.otlp_url).port != urlsplit(app.ui_url).port
        assert request(app.ui_url)[0] == 200 and request(app.otlp_url.replace("/v1/traces", "/"))[0] == 404
        assert post(app.otlp_url, json_body([stored()]), "application/json")[0] == 200
        assert post(app.ui_url + "v1/traces", json_body([stored()]), "application/json")[0] == 404


# --- exports --------------------------------------------------------------------------------------------------------
def rich_spans() -> list[StoredSpan]:
    resource = Resource(
        attributes=AttributeMap.of({"service.name": "shipper", "k8s.pod": "p-1"}),
        schema_url="https://opentelemetry.io/schemas/1.26.0",
    )
    scope = Scope(name="lib", version="2.0", schema_url="https://opentelemetry.io/schemas/1.26.0")
    attributes = AttributeMap.of({"s": "v", "i": 7, "f": 1.5, "b": True, "ints": (1, 2), "strs": ("a", "b")})
    event = SpanEvent(
        name="exception",
        time_unix_nano=1_700_000_000_001_000_000,
        attributes=AttributeMap.of({"exception.type": "KeyError"}),
    )
    link = SpanLink(
        trace_id="cd" * 16, span_id="0a" * 8, trace_state="k=v", attributes=AttributeMap.of({"why": "retry"})
    )
    return [
        stored(
            name="root", kind=SpanKind.SERVER, attributes=attributes, resource=resource, scope=scope, trace_state="x=1"
        ),
        stored(
            span_id="02" * 8,
            parent_span_id="01" * 8,
            name="child",
            kind=SpanKind.CLIENT,
            status_code=StatusCode.ERROR,
            status_message="boom",
            events=(event,),
            links=(link,),
            resource=resource,
            scope=scope,
        ),
        stored(
            trace_id="ef" * 16,
            span_id="03" * 8,
            name="other",
            status_code=StatusCode.OK,
            resource=resource,
            scope=scope,
        ),
    ]


def comparable(span: StoredSpan) -> tuple:
    """A span's content as the official OTLP exporter carries it: all but dropped counts and flags (the SDK's own) and
    a link's trace state (the exporter drops it, as its JSON file sibling does)."""
    return (
        span.trace_id, span.span_id, span.parent_span_id, span.name, span.kind, span.start_time_unix_nano,
        span.end_time_unix_nano, span.status_code, span.status_message, span.attributes, span.trace_state,
        tuple((e.name, e.time_unix_nano, e.attributes) for e in span.events),
        tuple((link.trace_id, link.span_id, link.attributes) for link in span.links),
        span.resource.attributes, span.resource.schema_url, span.scope.name, span.scope.version, span.scope.schema_url,
    )  # fmt: skip


def test_export_otlp_to_a_second_served_store_delivers_the_same_spans(server, tmp_path, capsys):
    """export --otlp (the official exporter) to another store's serve: every span arrives with its content."""
    source = tmp_path / "source"
    with SpanLog(source) as log:
        log.append(rich_spans())
    base = server.otlp_url.removesuffix("/v1/traces")
    assert main(["--path", str(source), "export", "--otlp", base]) == 0
    assert "Sent 3 spans (2 traces)" in capsys.readouterr().out
    arrived = sorted(map(comparable, read_log(server.path)))
    assert arrived == sorted(map(comparable, rich_spans()))
    assert main(["--path", str(source), "export", "--otlp", base, "--errors", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"otlp": server.otlp_url, "spans": 1, "traces": 1}
    assert main(["--path", str(source), "export", "--otlp", "ftp://nowhere"]) == 2


def test_export_html_is_one_self_contained_file(tmp_path, capsys):
    """export --html writes one owner-only file with each matching trace's view; nothing is fetched from outside."""
    source = tmp_path / "source"
    with SpanLog(source) as log:
        log.append(rich_spans())
    out = tmp_path / "bug.html"
    assert main(["--path", str(source), "export", "--html", str(out)]) == 0
    assert "Wrote 2 traces (3 spans)" in capsys.readouterr().out
    document = out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert document.count('<section class="trace"') == 2 and 'href="#t-' in document
    assert 'src="' not in document and 'href="http' not in document and "/static/" not in document
    assert main(["--path", str(source), "export", "--html", str(out), "--trace-id", "ef" * 16]) == 0
    assert out.read_text().count('<section class="trace"') == 1
    assert main(["--path", str(source), "export", "--html", str(out), "--name", "nothing"]) == 1


def test_trace_open_uses_the_ui_or_an_html_file(tmp_path, monkeypatch, capsys, server):
    """trace --open opens the running UI's page when one serves this store, else a self-contained HTML file."""
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    source = tmp_path / "source"
    with SpanLog(source) as log:
        log.append(rich_spans())
    assert main(["--path", str(source), "trace", "abab", "--open", "--ui", "http://127.0.0.1:9/"]) == 0
    assert opened[-1] == f"http://127.0.0.1:9/trace/{'ab' * 16}"
    monkeypatch.setattr("spanstore.cli._probe_ui", lambda base, path: False)
    assert main(["--path", str(source), "trace", "abab", "--open"]) == 0
    assert opened[-1].startswith("file://") and opened[-1].endswith(".html")
    html_file = Path(urlsplit(opened[-1]).path)
    assert "child" in html_file.read_text()
    html_file.unlink()
    server.ingest(rich_spans())
    monkeypatch.undo()
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["--path", str(server.path), "trace", "abab", "--open", "--ui", server.ui_url]) == 0
    assert opened[-1] == server.ui_url + "trace/" + "ab" * 16
    from spanstore.cli import _probe_ui

    assert _probe_ui(server.ui_url, server.path) and not _probe_ui(server.ui_url, tmp_path)


# --- a real browser -------------------------------------------------------------------------------------------------
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_ui_in_a_headless_browser(server):
    """Chromium: search by service and by errors, open a trace (every span, error marks, collapsing, details), the
    errors page, and a new trace appearing on an open search page; screenshots in tests/screenshots/."""
    node, chromium = shutil.which("node"), _chromium()
    if node is None or chromium is None:
        pytest.skip(
            f"needs Node.js and Chromium ({'node' if node is None else 'chromium'} is missing; .ci/run installs both)"
        )
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip("tests/node has no node_modules: run `npm ci` in tests/node (.ci/run does)")
    failing = send_sdk_trace(server.otlp_url, service="shop")
    send_sdk_trace(server.otlp_url, service="other")
    provider = sdk_provider(server.otlp_url, "shop")
    with provider.get_tracer("t").start_as_current_span("healthy"):
        pass
    server.ingest(evil_spans())
    SCREENSHOTS.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [node, "browser.mjs", server.ui_url.rstrip("/"), "shop", failing, str(SCREENSHOTS)],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHROMIUM": chromium},
    )
    try:
        ready = process.stdout.readline()
        assert json.loads(ready or "{}").get("ready"), process.stderr.read()
        time.sleep(0.5)
        with provider.get_tracer("t").start_as_current_span("arrives while the page is open"):
            pass
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        provider.shutdown()
    assert process.returncode == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["consoleErrors"] == [] and seen["dialogs"] == 0
    assert failing in seen["byService"] and len(seen["byService"]) == 2
    assert failing in seen["errorsOnly"] and "errors=1" in seen["errorsUrl"]
    assert seen["traceUrl"].endswith(f"/trace/{failing}")
    rows = seen["rows"]
    assert len(rows) == 3 and [r["depth"] for r in rows] == [0, 1, 1]
    assert [r["error"] for r in rows] == [False, False, True] == [r["marked"] for r in rows]
    assert rows[0]["barWidth"] > rows[1]["barWidth"] > 0
    assert seen["visibleAfterCollapse"] == 1 and seen["visibleAfterExpand"] == 3
    assert "payment gateway did not answer" in seen["detailsText"] and seen["stackShown"] == 1
    assert "TimeoutError" in seen["errorTypes"] and EVIL in seen["errorTypes"]
    assert seen["newRowAppeared"] and seen["after"] == seen["before"] + 1
    assert (SCREENSHOTS / "3-trace.png").stat().st_size > 10_000


def test_serve_command_refuses_a_port_in_use(tmp_path, capsys):
    """A port another process holds is reported as such, with exit status 1."""
    with SpanServer(tmp_path / "a", otlp_port=0) as app:
        port = urlsplit(app.otlp_url).port
        assert main(["--path", str(tmp_path / "b"), "serve", "--otlp-port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_ingest_is_thread_safe(server):
    """Eight clients posting at once: every span stored once, on disk and in memory."""

    def client(n: int) -> None:
        for i in range(10):
            spans = [stored(trace_id=f"{n + 1:08x}{i + 1:024x}", span_id=f"{j + 1:016x}") for j in range(20)]
            assert post(server.otlp_url, json_body(spans), "application/json")[0] == 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.refresh()
    assert len(server.store) == 1600 and len(read_log(server.path)) == 1600


def test_browser_apps_may_post_only_from_allowed_origins(tmp_path):
    """CORS: a preflight from an --allow-origin origin is allowed (and its POST answered for it); others are not."""
    with SpanServer(tmp_path / "store", otlp_port=0, allowed_origins=("http://app.local",)).start() as app:
        preflight = {"Origin": "http://app.local", "Access-Control-Request-Method": "POST"}
        status, headers, _ = request(app.otlp_url, "OPTIONS", headers=preflight)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://app.local"
        assert "Content-Type" in headers["Access-Control-Allow-Headers"]
        status, headers, _ = request(app.otlp_url, "OPTIONS", headers={**preflight, "Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
        body = json_body([stored()])
        status, headers, _ = request(
            app.otlp_url, "POST", body, {"Content-Type": "application/json", "Origin": "http://app.local"}
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://app.local"


def test_traced_inputs_and_outputs_show_as_indented_json(server, tmp_path):
    """A span recorded by spanstore.traced shows input.value/output.value as indented, escaped JSON in the UI."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from spanstore import traced
    from spanstore.processor import SpanStoreExporter

    exporter = SpanStoreExporter(store=server.store) if hasattr(server, "store") else None
    if exporter is None:
        pytest.fail("SpanServer no longer exposes its store: update this test")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @traced(tracer=provider.get_tracer("pipeline"))
    def step(order: dict) -> dict:
        return {"total": sum(order["prices"]), "note": "<b>ok</b>"}

    step({"prices": [1, 2], "user": "ada"})
    (span,) = [s for s in server.store.spans() if s.name.endswith("step")]
    status, _, body = request(server.ui_url + f"trace/{span.trace_id}")
    text = body.decode()
    assert status == 200 and '<pre class="json">' in text, text[
        text.find("input.value") - 50 : text.find("input.value") + 300
    ]
    assert "&quot;prices&quot;: [\n" in text and "&lt;b&gt;ok&lt;/b&gt;" in text and "<b>ok</b>" not in text
