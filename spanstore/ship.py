"""Ship stored spans to any OTLP/HTTP endpoint (a Collector, Jaeger, Tempo, another ``spanstore serve``).

The wire work is the official ``opentelemetry-exporter-otlp-proto-http`` exporter's (protobuf, gzip, retries with
backoff as the specification asks); this module only turns :class:`~spanstore.StoredSpan`\\ s back into the SDK's
``ReadableSpan``\\ s it takes, faithfully: ids, parent, kind, status (its message only with ERROR, as the SDK
allows), attributes of every type, events, links with their trace state, resource and scope (with schema URLs),
trace flags and trace state, and the remote bit of the parent.

What does not survive: dropped counts (the SDK's ``ReadableSpan`` computes them from its own limits) and a link's
trace state (the official exporter does not write it, as its JSON file sibling does not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from spanstore.errors import SpanStoreError
from spanstore.model import FLAG_CONTEXT_IS_REMOTE, AttributeMap, StoredSpan

__all__ = ["ExportFailedError", "export_otlp", "to_readable_span", "traces_endpoint"]

DEFAULT_BATCH = 512


class ExportFailedError(SpanStoreError):
    """The OTLP endpoint did not take the spans (the exporter's retries included)."""


def traces_endpoint(url: str) -> str:
    """The full OTLP/HTTP traces URL for ``url``: a bare ``http://host:4318`` gets ``/v1/traces``.

    >>> traces_endpoint("http://localhost:4318"), traces_endpoint("https://otel.example/v1/traces")
    ('http://localhost:4318/v1/traces', 'https://otel.example/v1/traces')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL such as http://localhost:4318, got {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")
    return urlunsplit(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, AttributeMap):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _attributes(attributes: AttributeMap) -> dict[str, Any]:
    return {key: _plain(value) for key, value in attributes.items()}


def to_readable_span(span: StoredSpan, caches: dict[Any, Any] | None = None) -> Any:
    """The SDK ``ReadableSpan`` of a stored span (for exporters). ``caches`` shares resources and scopes."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    caches = {} if caches is None else caches
    resource = caches.get(span.resource)
    if resource is None:
        resource = caches[span.resource] = Resource(
            _attributes(span.resource.attributes), span.resource.schema_url or None
        )
    scope = caches.get(span.scope)
    if scope is None:
        s = span.scope
        scope = caches[span.scope] = InstrumentationScope(
            s.name, s.version or None, s.schema_url or None, _attributes(s.attributes) or None
        )

    def state(text: str) -> TraceState:
        return TraceState.from_header([text]) if text else TraceState()

    trace_id = int(span.trace_id, 16)
    flags = TraceFlags(span.flags & 0xFF)
    context = SpanContext(trace_id, int(span.span_id, 16), False, flags, state(span.trace_state))
    parent = None
    if span.parent_span_id is not None:
        remote = bool(span.flags & FLAG_CONTEXT_IS_REMOTE)
        parent = SpanContext(trace_id, int(span.parent_span_id, 16), remote, flags)
    code = StatusCode(int(span.status_code))
    status = Status(code, span.status_message if code is StatusCode.ERROR and span.status_message else None)
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=_attributes(span.attributes),
        events=[Event(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events],
        links=[
            Link(
                SpanContext(
                    int(link.trace_id, 16),
                    int(link.span_id, 16),
                    False,
                    TraceFlags(link.flags & 0xFF),
                    state(link.trace_state),
                ),
                _attributes(link.attributes),
            )
            for link in span.links
        ],
        kind=(
            SpanKind.INTERNAL,
            SpanKind.INTERNAL,
            SpanKind.SERVER,
            SpanKind.CLIENT,
            SpanKind.PRODUCER,
            SpanKind.CONSUMER,
        )[int(span.kind)],  # the SDK has no UNSPECIFIED
        status=status,
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano,
        instrumentation_scope=scope,
    )


def export_otlp(
    spans: Iterable[StoredSpan],
    url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_seconds: float = 10.0,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send spans to the OTLP/HTTP endpoint ``url`` (protobuf, gzip) in batches; return how many were sent.

    Raises :class:`ExportFailedError` when a batch is refused or the endpoint cannot be reached (after the
    exporter's own retries), ImportError (with what to install) without ``opentelemetry-exporter-otlp-proto-http``.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult
    except ImportError as error:
        raise ImportError(
            f"export --otlp needs the official OTLP exporter: pip install 'spanstore[serve]' ({error})"
        ) from None
    endpoint = traces_endpoint(url)
    exporter = OTLPSpanExporter(
        endpoint=endpoint, headers=headers, timeout=timeout_seconds, compression=Compression.Gzip
    )
    caches: dict[Any, Any] = {}
    sent = 0
    try:
        pending: list[Any] = []

        def flush(items: Sequence[Any]) -> None:
            nonlocal sent
            if exporter.export(items) is not SpanExportResult.SUCCESS:
                raise ExportFailedError(
                    f"{endpoint} did not take a batch of {len(items)} spans ({sent} sent before it); "
                    "the exporter logged why"
                )
            sent += len(items)
            if progress is not None:
                progress(sent)

        for span in spans:
            pending.append(to_readable_span(span, caches))
            if len(pending) >= batch:
                flush(pending)
                pending = []
        if pending:
            flush(pending)
    finally:
        exporter.shutdown()
    return sent
