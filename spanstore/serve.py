"""``spanstore serve``: an OTLP/HTTP trace receiver and a local web UI over one store directory.

One process, stdlib only (:class:`http.server.ThreadingHTTPServer`, one thread per connection):

* ``POST /v1/traces`` takes OTLP/HTTP as the specification has it: ``application/x-protobuf`` (through
  :mod:`spanstore.otlp_proto`, the ``serve`` extra) or ``application/json`` (through the JSON codec), optionally
  ``Content-Encoding: gzip``; the answer is an ``ExportTraceServiceResponse`` in the request's encoding, with
  ``partial_success`` counting (and explaining) the spans that were not valid OTLP, whose neighbours are kept. A
  malformed body is a 400, a body over ``max_body_bytes`` (before or after decompression: gzip bombs stop there) a
  413, another content type or encoding a 415, all with a ``google.rpc.Status`` saying what was expected; the
  log is not touched for them, and the server goes on serving.
* Accepted spans are appended to the directory's :class:`~spanstore.log.SpanLog` before the response is sent (the
  cross-process lock keeps them whole beside what other processes' ``FileBasedSpanProcessor``\\ s write), then
  added to an in-memory :class:`~spanstore.SpanStore` that the UI queries: a span is queryable as soon as its
  request was answered. A follower thread loads what other processes append (every ``refresh_interval_seconds``).
* The UI (:mod:`spanstore.webui`): search, the trace waterfall, errors, new traces without a reload.

Why the receiver appends itself instead of letting a store with a path write behind: a client that got its 200
knows its spans are on disk (per the log's fsync policy), and the follower must not decode our own lines again
(decoding costs about as much as receiving). After each append the receiver checks whether the log ends exactly
where its own lines end; then the follower's position moves past them for free. Otherwise (another process wrote
in between) the follower reads from its old position and skips our spans by (trace id, span id).

Listens on 127.0.0.1 unless told otherwise; :func:`warn_if_exposed` says so when bound elsewhere (the UI shows
every span, and the receiver takes spans from anyone who can connect).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from spanstore.errors import CorruptLineError, SpanStoreError
from spanstore.model import StoredSpan

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_OTLP_PORT", "SpanServer", "warn_if_exposed"]

logger = logging.getLogger(__name__)

#: The OTLP/HTTP default port.
DEFAULT_OTLP_PORT = 4318
#: The largest request body taken, compressed and decompressed (the Collector's default is 20 MiB).
DEFAULT_MAX_BODY_BYTES = 16 << 20
_ISSUES_REPORTED = 5
_DRAIN_FACTOR = 4  # a body over the limit but under this many times it is read and dropped (the client sees the 413)
_READ_CHUNK = 1 << 16

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
# google.rpc.Code values for the Status body of an error response
_RPC_INVALID_ARGUMENT = 3
_RPC_RESOURCE_EXHAUSTED = 8
_RPC_UNAVAILABLE = 14
_RPC_UNIMPLEMENTED = 12

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


class RequestError(Exception):
    """A request the receiver refuses: ``status`` and a message saying what was expected."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (every member) without ever holding more than ``limit + 1`` bytes of output."""
    out: list[bytes] = []
    total = 0
    decompressor = zlib.decompressobj(wbits=31)
    try:
        while True:
            chunk = decompressor.decompress(data, limit + 1 - total)
            total += len(chunk)
            if total > limit:
                raise RequestError(413, f"expected a body of at most {limit} bytes once decompressed, got more")
            out.append(chunk)
            if decompressor.unconsumed_tail:
                data = decompressor.unconsumed_tail
                continue
            if decompressor.eof:
                data = decompressor.unused_data
                if not data:
                    break
                decompressor = zlib.decompressobj(wbits=31)  # the next gzip member
                continue
            raise RequestError(400, "expected a complete gzip stream, got one that ends early")
    except zlib.error as error:
        raise RequestError(
            400, f"expected a gzip body (Content-Encoding: gzip), got bytes that do not inflate ({error})"
        ) from None
    return b"".join(out)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str) -> str | None:
    """The warning to print when ``host`` is not a loopback address (None when it is)."""
    if _is_loopback(host):
        return None
    return (
        f"warning: listening on {host or 'every address'}, not 127.0.0.1: anyone who can reach this machine can send "
        "spans and read every stored span in the UI"
    )


class SpanServer:
    """The receiver and the UI over one store directory: open, :meth:`start`, :meth:`close`.

    ``ui_port=None`` serves the UI on the OTLP port too (one port for both); a separate ``ui_port`` gives each its
    own listener (the OTLP one then answers only ``/v1/traces``). Port 0 picks a free port (see :attr:`otlp_url`).
    ``store_options`` are the memory budgets of the in-memory :class:`~spanstore.SpanStore` (``max_spans``...).

    Thread-safe: every request runs on its own thread; ingest and the follower serialise on one lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        otlp_port: int = DEFAULT_OTLP_PORT,
        ui_port: int | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        refresh_interval_seconds: float = 0.5,
        allowed_origins: tuple[str, ...] = (),
        fsync: str = "interval",
        store_options: dict[str, Any] | None = None,
    ) -> None:
        from spanstore.log import SpanLog
        from spanstore.store import DEFAULT_MAX_SPANS, SpanStore

        self.max_body_bytes = max_body_bytes
        self.refresh_interval_seconds = refresh_interval_seconds
        self.allowed_origins = tuple(allowed_origins)
        self.log = SpanLog(path, fsync=fsync)  # type: ignore[arg-type]
        self.path = self.log.path
        options = dict(store_options or {})
        self.store = SpanStore(**options)
        self._ingest_lock = threading.Lock()
        self._own: set[tuple[str, str]] = set()
        self.accepted_spans = 0
        self.rejected_spans = 0
        self.refused_requests = 0
        #: Bumped whenever spans arrive (by request or from another process): the UI polls it for new traces.
        self.generation = 0
        try:
            spans, self._position = self.log.read(max_spans=options.get("max_spans", DEFAULT_MAX_SPANS))
            self.store.add_many(spans)
            del spans
            self.host = host
            self._servers: list[ThreadingHTTPServer] = []
            otlp = _Server((host, otlp_port), _Handler, self, ui=ui_port is None, otlp=True)
            self._servers.append(otlp)
            if ui_port is not None:
                self._servers.append(_Server((host, ui_port), _Handler, self, ui=True, otlp=False))
        except BaseException:
            self.close()
            raise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- addresses ------------------------------------------------------------------------------------------------
    def _url(self, server: ThreadingHTTPServer) -> str:
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    @property
    def otlp_url(self) -> str:
        """The receiver's endpoint, ``http://127.0.0.1:4318/v1/traces``."""
        return self._url(self._servers[0]) + "/v1/traces"

    @property
    def ui_url(self) -> str:
        """The UI's root URL."""
        return self._url(self._servers[-1]) + "/"

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> SpanServer:
        """Serve on background threads (one per listener, plus the follower); returns self."""
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, name="spanstore-serve", daemon=True)
            thread.start()
            self._threads.append(thread)
        follower = threading.Thread(target=self._follow, name="spanstore-follow", daemon=True)
        follower.start()
        self._threads.append(follower)
        return self

    def serve_forever(self) -> None:
        """Serve until KeyboardInterrupt (or :meth:`close` from another thread)."""
        self.start()
        try:
            while not self._stop.wait(3600):
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening, stop the follower, close the log and the store. Idempotent."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        for server in getattr(self, "_servers", ()):
            if any(t.name == "spanstore-serve" for t in getattr(self, "_threads", ())):
                server.shutdown()
            server.server_close()
        for thread in getattr(self, "_threads", ()):
            thread.join(timeout=5)
        self._threads = []
        self._servers = []
        with contextlib.suppress(Exception):
            self.log.close()
        with contextlib.suppress(Exception):
            self.store.close()

    def __enter__(self) -> SpanServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- ingest ---------------------------------------------------------------------------------------------------
    def ingest(self, spans: list[StoredSpan]) -> None:
        """Append spans to the log (whole, under the directory lock), then make them queryable. Thread-safe.

        Raises :class:`~spanstore.errors.StorageError` when the log cannot take them (nothing is then added).
        """
        if not spans:
            return
        log = self.log
        with self._ingest_lock:
            before = log.end_position()
            written = log.append(spans)
            after = log.end_position()
            if before == self._position and after.segment == before.segment and after.offset == before.offset + written:
                self._position = after  # nobody wrote in between: the follower need not read our own lines back
            else:
                self._own.update((span.trace_id, span.span_id) for span in spans)
            self.store.add_many(spans)
            self.accepted_spans += len(spans)
            self.generation += 1

    def refresh(self) -> int:
        """Load what other processes appended since the last refresh; return how many spans. Thread-safe."""
        with self._ingest_lock:
            spans, position = self.log.read(self._position)
            own = self._own
            if own:
                spans = [span for span in spans if (span.trace_id, span.span_id) not in own]
                own.clear()
            self._position = position
            if spans:
                self.store.add_many(spans)
                self.generation += 1
        return len(spans)

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh_interval_seconds):
            try:
                self.refresh()
            except Exception:  # a bad moment on disk must not end the follower: log it, try again next tick
                logger.exception("spanstore serve: reading what other processes appended failed")

    def receive(self, body: bytes, content_type: str, content_encoding: str) -> tuple[int, int, str]:
        """Decode and store one OTLP/HTTP request body: (accepted, rejected, message). Raises RequestError."""
        encoding = content_encoding.strip().lower()
        if encoding == "gzip":
            body = _gunzip(body, self.max_body_bytes)
        elif encoding not in ("", "identity"):
            raise RequestError(415, f"expected Content-Encoding gzip or none, got {content_encoding!r}")
        if content_type == _PROTOBUF:
            from spanstore.otlp_proto import ProtobufUnavailableError, decode_request

            try:
                decoded = decode_request(body)
            except ProtobufUnavailableError as error:
                raise RequestError(415, str(error)) from None
            except ValueError as error:
                raise RequestError(400, str(error)) from None
        else:
            from spanstore.otlp import decode_line

            if not body.strip():
                raise RequestError(400, "expected an ExportTraceServiceRequest JSON object, got an empty body")
            try:
                decoded = decode_line(body, source="request")
            except CorruptLineError as error:
                raise RequestError(400, _without_location(str(error))) from None
            if decoded.other_signal is not None:
                raise RequestError(400, f"expected traces (resourceSpans) at /v1/traces, got {decoded.other_signal}")
        from spanstore.otlp_proto import invalid_id_issue

        problems = [f"{issue.where}: {issue.message}" for issue in decoded.issues]
        spans = decoded.spans
        rejected = decoded.skipped_spans
        kept = []
        for span in spans:
            problem = invalid_id_issue(span)
            if problem is None:
                kept.append(span)
            else:
                rejected += 1
                problems.append(f"span {span.span_id} of trace {span.trace_id}: {problem}")
        self.ingest(kept)
        message = ""
        if problems:
            shown = "; ".join(problems[:_ISSUES_REPORTED])
            more = f" (and {len(problems) - _ISSUES_REPORTED} more)" if len(problems) > _ISSUES_REPORTED else ""
            message = f"{rejected} span{'s' if rejected != 1 else ''} rejected: {shown}{more}"
            self.rejected_spans += rejected
        return len(kept), rejected, message


def _without_location(message: str) -> str:
    """The codec's ``request line 1: `` prefix says nothing to an HTTP client."""
    return re.sub(r"^(request line 1|line 1 in request):?\s*", "", message)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, app: SpanServer, *, ui: bool, otlp: bool) -> None:
        if ":" in address[0]:
            self.address_family = __import__("socket").AF_INET6
        self.app = app
        self.ui = ui
        self.otlp = otlp
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait for the client's delayed
    # ACK (40 ms a response on Linux).
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "spanstore"

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s %s", self.address_string(), format % args)

    # --- responses --------------------------------------------------------------------------------------------
    def send_body(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS:
            self.send_header(name, value)
        for name, value in headers:
            self.send_header(name, value)
        self._cors_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _cors_headers(self) -> None:
        origin = self.headers.get("Origin")
        allowed = self.server.app.allowed_origins
        if origin and self.server.otlp and self.path.startswith("/v1/") and ("*" in allowed or origin in allowed):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def send_error_status(self, status: int, message: str, protobuf: bool) -> None:
        """An OTLP error response: a google.rpc.Status in the request's encoding."""
        code = {413: _RPC_RESOURCE_EXHAUSTED, 503: _RPC_UNAVAILABLE, 404: _RPC_UNIMPLEMENTED}.get(
            status, _RPC_INVALID_ARGUMENT
        )
        if protobuf:
            from spanstore.otlp_proto import encode_status

            self.send_body(status, encode_status(code, message), _PROTOBUF)
        else:
            self.send_body(status, json.dumps({"code": code, "message": message}).encode(), _JSON)

    # --- routing ----------------------------------------------------------------------------------------------
    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        origin = self.headers.get("Origin")
        allowed = self.server.app.allowed_origins
        self.send_response(204)
        if origin and ("*" in allowed or origin in allowed):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Content-Type, Content-Encoding")
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Vary", "Origin")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._body_read = False  # one handler serves every request of a keep-alive connection
        path = urlsplit(self.path).path
        content_type = self.headers.get_content_type()
        protobuf = content_type == _PROTOBUF
        if path != "/v1/traces" or not self.server.otlp:
            self._discard_body()
            self.send_error_status(404, f"expected POST /v1/traces, got POST {path}", protobuf)
            return
        app = self.server.app
        try:
            if content_type not in (_PROTOBUF, _JSON):
                raise RequestError(415, f"expected Content-Type {_PROTOBUF} or {_JSON}, got {content_type!r}")
            body = self._read_body(app.max_body_bytes)
            accepted, rejected, message = app.receive(body, content_type, self.headers.get("Content-Encoding", ""))
        except RequestError as error:
            app.refused_requests += 1
            logger.warning("spanstore serve: refused a request (%d): %s", error.status, error.message)
            if error.status in (413, 415):
                self._discard_body()
            self.send_error_status(error.status, error.message, protobuf)
            return
        except SpanStoreError as error:  # the log cannot take the spans: retryable
            logger.warning("spanstore serve: could not store a request's spans: %s", error)
            self.send_error_status(503, f"could not store the spans: {error}", protobuf)
            return
        if protobuf:
            from spanstore.otlp_proto import encode_response

            self.send_body(200, encode_response(rejected, message), _PROTOBUF)
        else:
            reply: dict[str, Any] = {}
            if rejected or message:
                reply["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
            self.send_body(200, json.dumps(reply).encode(), _JSON)

    def _discard_body(self) -> None:
        """Read and drop what is left of a refused body (so the client sees the answer), or close the connection."""
        if getattr(self, "_body_read", False):
            return
        self._body_read = True
        length = self.headers.get("Content-Length")
        limit = self.server.app.max_body_bytes * _DRAIN_FACTOR
        try:
            remaining = int(length) if length is not None else -1
        except ValueError:
            remaining = -1
        if remaining < 0 or remaining > limit or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._body_read = True
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            self._body_read = True
            self.close_connection = True
            raise RequestError(411, "expected a Content-Length header (or Transfer-Encoding: chunked)")
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self._body_read = True
            self.close_connection = True
            raise RequestError(400, f"expected a Content-Length of a number of bytes, got {length!r}") from None
        if size > limit:
            raise RequestError(413, f"expected a body of at most {limit} bytes, got Content-Length {size}")
        self._body_read = True
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise RequestError(400, f"expected {size} bytes of body, got {len(body)} before the connection ended")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise RequestError(400, "expected a chunked body, got a malformed chunk size") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise RequestError(413, f"expected a body of at most {limit} bytes, got more")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if parts.path == "/v1/traces" and self.server.otlp:
            self.send_error_status(405, "expected POST /v1/traces with OTLP spans, got GET", False)
            return
        if not self.server.ui:
            self.send_body(404, b"not found: the UI is served on its own port", "text/plain; charset=utf-8")
            return
        from spanstore import webui

        try:
            status, body, content_type, headers = webui.respond(
                self.server.app, parts.path, parse_qs(parts.query, keep_blank_values=True)
            )
        except Exception:  # one broken page must not take the server down: say so, log the cause
            logger.exception("spanstore serve: rendering %s failed", self.path)
            status, body, content_type, headers = 500, b"internal error (see the server's log)", "text/plain", ()
        self.send_body(status, body, content_type, headers)


def run(
    path: str | os.PathLike[str],
    *,
    host: str,
    otlp_port: int,
    ui_port: int | None,
    out: Any = None,
    **options: Any,
) -> None:
    """Run ``spanstore serve`` in the foreground until Ctrl-C; print where it listens."""
    out = out or sys.stdout
    warning = warn_if_exposed(host)
    if warning:
        print(f"spanstore serve: {warning}", file=sys.stderr, flush=True)
    server = SpanServer(path, host=host, otlp_port=otlp_port, ui_port=ui_port, **options)
    held = len(server.store)
    print(
        f"spanstore serve: store {Path(server.path)} ({held:,} spans)\n"
        f"  OTLP/HTTP receiver: {server.otlp_url}  (protobuf or JSON, gzip)\n"
        f"  web UI:             {server.ui_url}\n"
        "Ctrl-C stops.",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print(
        f"spanstore serve: stopped after {time.monotonic() - started:.0f} s; received {server.accepted_spans:,} spans"
        + (f", rejected {server.rejected_spans:,}" if server.rejected_spans else "")
        + (f", refused {server.refused_requests:,} requests" if server.refused_requests else ""),
        file=out,
        flush=True,
    )
