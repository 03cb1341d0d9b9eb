"""The web UI of ``spanstore serve``, and the self-contained HTML of ``spanstore export --html``.

Pages are rendered on the server as plain HTML (no template engine, no build chain); ``spanstore/web/app.js`` adds
what needs a script (collapsing subtrees, span details, polling for new traces) and ``spanstore/web/style.css`` the
look. Nothing is fetched from elsewhere: the UI works offline.

Safety: every string that comes from a span (names, attribute keys and values, events, stack traces, resource,
status messages, service names) goes through :func:`esc` on its way into the page; values never reach a script,
a ``style`` or an event-handler attribute. Responses carry a Content-Security-Policy without ``unsafe-inline``
(see :data:`spanstore.serve.CONTENT_SECURITY_POLICY`), so even a missed escape could not run a script; bars are SVG
rectangles (geometry attributes, not inline styles) for the same reason. The exported file allows exactly its
own inline script and style, by hash.

Every function here is pure over its arguments (the server passes its store) and thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import zlib
from collections.abc import Sequence
from datetime import timedelta
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from spanstore.errors import InvalidQueryError
from spanstore.model import AttributeMap, StatusCode, StoredSpan
from spanstore.render import (
    error_summary,
    format_duration,
    format_time,
    key_attributes,
    pretty_json_value,
    trace_rows,
)

__all__ = ["esc", "export_document", "render_trace", "respond"]

_PALETTE = 8
_WINDOWS = (("", "any time"), ("5m", "last 5 minutes"), ("15m", "last 15 minutes"), ("1h", "last hour"))
_WINDOWS += (("6h", "last 6 hours"), ("24h", "last 24 hours"), ("7d", "last 7 days"))
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 1000
_LANE = 1000  # the SVG viewBox width of a waterfall lane
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_HTML = "text/html; charset=utf-8"
_MARK = '<span class="mark" title="error">!</span>'
_HAS_ERR = ' class="has-err"'
_MARK = '<span class="mark" title="error">!</span>'
_HAS_ERR = ' class="has-err"'


def esc(value: object) -> str:
    """HTML-escape any value for text or a quoted attribute.

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    """
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _static(name: str) -> str:
    return resources.files("spanstore").joinpath("web", name).read_text(encoding="utf-8")


def _color(service: str) -> int:
    return zlib.crc32(service.encode("utf-8", "replace")) % _PALETTE


def _service(service: str) -> str:
    return f'<span class="svc c{_color(service)}">{esc(service)}</span>'


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, AttributeMap):
        return json.dumps(_builtin(value), ensure_ascii=False)
    if isinstance(value, tuple):
        return json.dumps(_builtin(value), ensure_ascii=False)
    return repr(value)


def _builtin(value: Any) -> Any:
    if isinstance(value, AttributeMap):
        return {k: _builtin(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_builtin(v) for v in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


# --- page frame --------------------------------------------------------------------------------------------------
def _nav(active: str) -> str:
    links = (("/", "Search"), ("/errors", "Errors"))
    on = ' class="on"'
    items = "".join(f'<a href="{href}"{on if label == active else ""}>{label}</a>' for href, label in links)
    return f'<header class="top"><a class="brand" href="/">spanstore</a><nav>{items}</nav></header>'


def _page(title: str, body: str, *, active: str = "", subtitle: str = "") -> str:
    sub = f'<span class="where">{esc(subtitle)}</span>' if subtitle else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{esc(title)} · spanstore</title>"
        '<link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script>'
        f"</head><body>{_nav(active).replace('</nav>', '</nav>' + sub)}<main>{body}</main></body></html>"
    )


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


def _standalone(title: str, body: str) -> str:
    """A whole document with its script and style inline, allowed by hash (and nothing else) in its CSP."""
    script = _static("app.js")
    style = _static("style.css")
    csp = (
        f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style)}; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{style}</style></head>"
        f'<body class="standalone"><main>{body}</main><script>{script}</script></body></html>'
    )


# --- the trace view ------------------------------------------------------------------------------------------------
def _kv_table(attributes: AttributeMap, empty: str = "none") -> str:
    if not attributes:
        return f'<p class="none">{empty}</p>'
    rows = "".join(
        f'<tr><th scope="row">{esc(key)}</th><td>{_cell(attributes, key, value)}</td></tr>'
        for key, value in sorted(attributes.items(), key=lambda item: item[0])
    )
    return f'<table class="kv">{rows}</table>'


def _cell(attributes: AttributeMap, key: str, value: Any) -> str:
    """A value; ``input.value``/``output.value`` JSON (``spanstore.traced``) indented in a ``<pre>``."""
    pretty = pretty_json_value(attributes, key, value)
    if pretty is not None:
        return f'<pre class="json">{esc(pretty)}</pre>'
    return esc(_value(value))


def _trace_link(trace_id: str, span_id: str, local: set[str] | None) -> str:
    if local is None:
        return f'<a href="/trace/{esc(trace_id)}#s-{esc(span_id)}">{esc(trace_id)}</a> span {esc(span_id)}'
    if trace_id in local:
        return f'<a href="#s-{esc(span_id)}">{esc(trace_id)}</a> span {esc(span_id)}'
    return f"{esc(trace_id)} span {esc(span_id)}"


def _details(span: StoredSpan, t0: int, local: set[str] | None) -> str:
    out = ['<div class="details" hidden id="d-', span.span_id, '"><table class="kv fields">']
    fields = [
        ("span id", span.span_id),
        ("parent", span.parent_span_id or "none (root)"),
        ("kind", span.kind.name),
        ("status", span.status_code.name + (f": {span.status_message}" if span.status_message else "")),
        ("start", f"{format_time(span.start_time_unix_nano)} UTC (+{format_duration(span.start_time_unix_nano - t0)})"),
        ("duration", format_duration(span.duration_ns)),
        ("scope", " ".join(x for x in (span.scope.name, span.scope.version) if x) or "none"),
    ]
    if span.trace_state:
        fields.append(("trace state", span.trace_state))
    dropped = [
        f"{count} {what}"
        for count, what in (
            (span.dropped_attributes_count, "attributes"),
            (span.dropped_events_count, "events"),
            (span.dropped_links_count, "links"),
        )
        if count
    ]
    if dropped:
        fields.append(("dropped", ", ".join(dropped)))
    out.extend(f'<tr><th scope="row">{name}</th><td>{esc(value)}</td></tr>' for name, value in fields)
    out.append("</table><h4>Attributes</h4>")
    out.append(_kv_table(span.attributes))
    if span.events:
        out.append(f'<h4>Events ({len(span.events)})</h4><ol class="events">')
        for event in span.events:
            is_exception = event.name == "exception"
            stack = event.attributes.get("exception.stacktrace") if is_exception else None
            shown = (
                AttributeMap.from_pairs(
                    [k for k in event.attributes if k != "exception.stacktrace"],
                    [v for k, v in event.attributes.items() if k != "exception.stacktrace"],
                )
                if stack is not None
                else event.attributes
            )
            out.append(
                f'<li class="{"exc" if is_exception else "event"}"><span class="ev-name">{esc(event.name)}</span> '
                f'<span class="dim">+{esc(format_duration(event.time_unix_nano - t0))}</span>'
                + _kv_table(shown, "no attributes")
            )
            if stack is not None:
                out.append(f'<pre class="stack">{esc(_value(stack))}</pre>')
            out.append("</li>")
        out.append("</ol>")
    if span.links:
        out.append(f'<h4>Links ({len(span.links)})</h4><ul class="links">')
        for link in span.links:
            out.append(f"<li>{_trace_link(link.trace_id, link.span_id, local)}{_kv_table(link.attributes, '')}</li>")
        out.append("</ul>")
    out.append("<h4>Resource</h4>")
    out.append(_kv_table(span.resource.attributes))
    out.append("</div>")
    return "".join(out)


def render_trace(spans: Sequence[StoredSpan], *, local: set[str] | None = None) -> str:
    """The trace view of one trace's spans: a header, then the waterfall (tree, bars to scale, error marks, span
    details). ``local``: the trace ids of a standalone document (links point inside it); None for the server.

    O(n log n) for n spans.
    """
    if not spans:
        return '<p class="none">No spans.</p>'
    rows = trace_rows(spans)
    t0 = min(span.start_time_unix_nano for span in spans)
    end = max(span.end_time_unix_nano for span in spans)
    total = max(end - t0, 1)
    scale = _LANE / total
    head = rows[0].span
    trace_id = head.trace_id
    errors = sum(1 for span in spans if span.status_code == StatusCode.ERROR)
    services = sorted({span.service_name for span in spans})
    out = [
        f'<section class="trace" id="t-{esc(trace_id)}" data-trace="{esc(trace_id)}">',
        f'<h1>{_service(head.service_name)} {esc(head.name)}</h1><p class="meta">',
        f"<span>{esc(format_time(t0))} UTC</span><span>{esc(format_duration(end - t0))}</span>",
        f"<span>{len(spans)} span{'s' if len(spans) != 1 else ''}</span>",
        f'<span class="{"errs" if errors else "dim"}">{errors} error{"s" if errors != 1 else ""}</span>',
        f"<span>{len(services)} service{'s' if len(services) != 1 else ''}: ",
        " ".join(_service(service) for service in services),
        f'</span><span class="mono">trace {esc(trace_id)}</span>',
    ]
    if local is None:
        out.append(f'<a href="/api/trace/{esc(trace_id)}.jsonl" download>OTLP JSON</a>')
    out.append(
        '</p><div class="tools"><button type="button" data-action="expand">expand all</button>'
        '<button type="button" data-action="collapse">collapse all</button>'
        '<button type="button" data-action="details">open every span</button></div>'
    )
    quarter = total / 4
    ticks = "".join(f"<span>{esc(format_duration(round(quarter * i)))}</span>" for i in range(5))
    out.append(f'<div class="waterfall"><div class="ruler"><span></span><div class="ticks">{ticks}</div></div>')
    append = out.append
    for index, row in enumerate(rows):
        span = row.span
        is_error = span.status_code == StatusCode.ERROR
        has_kids = index + 1 < len(rows) and rows[index + 1].depth > row.depth
        x = (span.start_time_unix_nano - t0) * scale
        width = max(span.duration_ns * scale, 1.0)
        service = span.service_name
        color = _color(service)
        marks = "".join(
            f'<rect class="ev{" exc" if event.name == "exception" else ""}"'
            f' x="{(event.time_unix_nano - t0) * scale:.1f}"'
            ' y="0" width="3" height="14"/>'
            for event in span.events
            if t0 <= event.time_unix_nano <= end
        )
        note = f' <span class="note">{esc(row.note)}</span>' if row.note else ""
        error = f' <span class="errmsg">{esc(error_summary(span))}</span>' if is_error else ""
        hint = key_attributes(span)
        extra = f' <span class="dim">{esc(" · ".join(hint))}</span>' if hint and not is_error else ""
        toggle = (
            '<button type="button" class="tog" aria-expanded="true" title="collapse the subtree">▾</button>'
            if has_kids
            else '<span class="tog"></span>'
        )
        append(
            f'<div class="row{" err" if is_error else ""}" id="s-{span.span_id}" data-depth="{row.depth}">'
            f'<div class="name"><span class="tree">{esc(row.prefix)}</span>{toggle}'
            f'<button type="button" class="open" data-target="d-{span.span_id}" title="span details">'
            f"{_MARK if is_error else ''}{_service(service)} {esc(span.name)}</button>"
            f"{note}{error}{extra}</div>"
            f'<div class="lane"><svg viewBox="0 0 {_LANE} 14" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect class="bar c{color}{" err" if is_error else ""}" x="{x:.1f}" y="2" width="{width:.1f}"'
            ' height="10"/>'
            f"{marks}</svg></div>"
            f'<div class="dur">{esc(format_duration(span.duration_ns))}</div></div>'
        )
        append(_details(span, t0, local))
    out.append("</div></section>")
    return "".join(out)


# --- search ---------------------------------------------------------------------------------------------------------
def _one(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[-1].strip() if values else ""


def _build_query(params: dict[str, list[str]]) -> tuple[Any, int]:
    """A SpanQuery and a limit from the search form's parameters; InvalidQueryError/ValueError say what is wrong."""
    from spanstore.cli import parse_attribute_filter, parse_duration_ns, parse_time_unix_nano
    from spanstore.query import SpanQuery
    from spanstore.traceql import parse_traceql

    text = _one(params, "q")
    query = parse_traceql(text) if text else SpanQuery()
    criteria: dict[str, Any] = {}
    for name, field in (("service", "service"), ("name", "name"), ("error_type", "error_type")):
        value = _one(params, name)
        if value:
            criteria[field] = value
    if _one(params, "errors"):
        criteria["status"] = "error"
    for name, field in (("min", "min_duration_ns"), ("max", "max_duration_ns")):
        value = _one(params, name)
        if value:
            try:
                criteria[field] = parse_duration_ns(value)
            except ValueError as error:
                raise ValueError(f"{name} duration: {error}") from None
    last = _one(params, "last")
    if last:
        criteria["last"] = timedelta(microseconds=parse_duration_ns(last) / 1000)
    for name in ("since", "until"):
        value = _one(params, name)
        if value:
            try:
                criteria[name] = parse_time_unix_nano(value)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
    filters = []
    for line in _one(params, "attr").splitlines():
        if line.strip():
            filters.append(parse_attribute_filter(line.strip()))
    if filters:
        criteria["attributes"] = (*query.attributes, *filters)
    limit_text = _one(params, "limit")
    limit = _DEFAULT_LIMIT
    if limit_text:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= _MAX_LIMIT:
            raise ValueError(f"limit: expected a number of traces from 1 to {_MAX_LIMIT}, got {limit_text!r}")
        limit = int(limit_text)
    return (query.replace(**criteria) if criteria else query), limit


def _result_rows(summaries: Sequence[Any]) -> str:
    if not summaries:
        return '<tr class="empty"><td colspan="6">No traces match.</td></tr>'
    longest = max(s.duration_ns for s in summaries) or 1
    out = []
    for s in summaries:
        width = max(s.duration_ns / longest * 200, 1.0)
        root = (
            _service(s.root_service)
            + " "
            + esc(s.root_name)
            + ("" if s.has_root else ' <span class="dim">(no root)</span>')
        )
        errors = f'<span class="errs">{s.error_count}</span>' if s.error_count else '<span class="dim">0</span>'
        out.append(
            f'<tr data-trace="{esc(s.trace_id)}"{_HAS_ERR if s.error_count else ""}>'
            f'<td class="mono">{esc(format_time(s.start_time_unix_nano))}</td>'
            f'<td><a href="/trace/{esc(s.trace_id)}">{root}</a></td>'
            f'<td class="num">{esc(format_duration(s.duration_ns))}'
            f'<svg class="minibar" viewBox="0 0 200 6" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect x="0" y="0" width="{width:.1f}" height="6"/></svg></td>'
            f'<td class="num">{s.span_count}</td><td class="num">{errors}</td>'
            f"<td>{' '.join(_service(x) for x in s.services)}</td></tr>"
        )
    return "".join(out)


def _find(app: Any, params: dict[str, list[str]]) -> tuple[list[Any], str]:
    from spanstore.query import find_traces

    try:
        query, limit = _build_query(params)
        return find_traces(app.store, query, limit=limit), ""
    except (InvalidQueryError, ValueError) as error:
        return [], str(error)


def _search_page(app: Any, params: dict[str, list[str]]) -> tuple[int, str]:
    summaries, problem = _find(app, params)
    stats = app.store.stats()
    services = sorted(stats.services)
    chosen = _one(params, "service")
    options = ['<option value="">any service</option>'] + [
        f'<option value="{esc(s)}"{" selected" if s == chosen else ""}>{esc(s)} ({stats.services[s]:,})</option>'
        for s in services
    ]
    if chosen and chosen not in stats.services:
        options.append(f'<option value="{esc(chosen)}" selected>{esc(chosen)}</option>')
    last = _one(params, "last")
    windows = "".join(
        f'<option value="{value}"{" selected" if value == last else ""}>{label}</option>' for value, label in _WINDOWS
    )
    if last and last not in dict(_WINDOWS):
        windows += f'<option value="{esc(last)}" selected>last {esc(last)}</option>'

    checked = " checked" if _one(params, "errors") else ""

    def field(name: str, label: str, placeholder: str, size: str = "") -> str:
        return (
            f'<label class="{size}">{label}<input name="{name}" value="{esc(_one(params, name))}" '
            f'placeholder="{esc(placeholder)}"></label>'
        )

    form = (
        '<form class="search" method="get" action="/">'
        f'<label>Service<select name="service">{"".join(options)}</select></label>'
        + field("name", "Operation", "GET /cart")
        + field("min", "Min duration", "100ms", "short")
        + field("max", "Max duration", "2s", "short")
        + f'<label>Window<select name="last">{windows}</select></label>'
        + field("since", "Since", "2024-05-01T12:00Z or 2h", "mid")
        + field("until", "Until", "now", "mid")
        + f'<label class="wide">Attributes, one per line<textarea name="attr" rows="2" placeholder="http.route=/cart'
        f'&#10;http.response.status_code&gt;=500">{esc(_one(params, "attr"))}</textarea></label>'
        + field("q", "TraceQL", '{ status = error && span.http.route = "/cart" }', "wide")
        + field("error_type", "Error type", "TimeoutError", "mid")
        + f'<label class="check"><input type="checkbox" name="errors" value="1"{checked}>'
        "errors only</label>"
        + field("limit", "Limit", str(_DEFAULT_LIMIT), "short")
        + '<button type="submit">Find traces</button></form>'
    )
    error = f'<p class="problem" role="alert">{esc(problem)}</p>' if problem else ""
    fragment = "/fragment/results?" + urlencode([(k, v) for k, values in params.items() for v in values if k != "gen"])
    body = (
        f"{form}{error}"
        f'<p class="summary"><span class="count">{len(summaries)}</span> traces '
        f'<span class="dim">(store: {stats.span_count:,} spans, {stats.trace_count:,} traces)</span> '
        '<label class="check live"><input type="checkbox" id="live" checked> live: new traces appear</label></p>'
        f'<table class="results" id="results" data-src="{esc(fragment)}" data-gen="{app.generation}">'
        "<thead><tr><th>Start (UTC)</th><th>Root span</th><th>Duration</th><th>Spans</th><th>Errors</th>"
        f"<th>Services</th></tr></thead><tbody>{_result_rows(summaries)}</tbody></table>"
    )
    return (400 if problem else 200), _page("Search", body, active="Search", subtitle=str(app.path))


def _errors_page(app: Any, params: dict[str, list[str]]) -> str:
    from spanstore.cli import _error_types
    from spanstore.query import query_spans
    from spanstore.render import UNTYPED_ERRORS

    rows = _error_types(app.store.spans(), None, None)
    out = [f'<h1>Errors</h1><p class="summary">{len(rows)} error type{"s" if len(rows) != 1 else ""}</p>']
    if rows:
        out.append(
            '<table class="results errtypes"><thead><tr><th>Error type</th><th>Spans</th><th>Services</th>'
            "<th>Last seen (UTC)</th><th>Newest trace</th></tr></thead><tbody>"
        )
        for row in rows:
            kind = row["error_type"]
            search = "/?" + urlencode({"error_type": kind} if kind else {"errors": "1"})
            out.append(
                f'<tr><td><a class="errs" href="{esc(search)}">{esc(kind or UNTYPED_ERRORS)}</a></td>'
                f'<td class="num">{row["span_count"]}</td>'
                f"<td>{' '.join(_service(s) for s in row['services'])}</td>"
                f'<td class="mono">{esc(format_time(row["last_seen_unix_nano"]))}</td>'
                f'<td><a class="mono" href="/trace/{esc(row["trace_id"])}">{esc(row["trace_id"])}</a></td></tr>'
            )
        out.append("</tbody></table>")
    else:
        out.append('<p class="none">No errors: no span has status ERROR, an error.type or an exception event.</p>')
    failures = query_spans(app.store, status="error", limit=50)
    out.append(f'<h2>Recent failures</h2><p class="summary">newest {len(failures)} error spans</p>')
    if failures:
        out.append(
            '<table class="results"><thead><tr><th>Start (UTC)</th><th>Span</th><th>Error</th><th>Duration</th>'
            "</tr></thead><tbody>"
        )
        for span in failures:
            out.append(
                f'<tr><td class="mono">{esc(format_time(span.start_time_unix_nano))}</td>'
                f'<td><a href="/trace/{esc(span.trace_id)}#s-{esc(span.span_id)}">{_service(span.service_name)} '
                f'{esc(span.name)}</a></td><td class="errs">{esc(error_summary(span))}</td>'
                f'<td class="num">{esc(format_duration(span.duration_ns))}</td></tr>'
            )
        out.append("</tbody></table>")
    return _page("Errors", "".join(out), active="Errors", subtitle=str(app.path))


# --- documents --------------------------------------------------------------------------------------------------------
def export_document(traces: Sequence[Sequence[StoredSpan]], *, title: str = "spanstore traces") -> str:
    """One self-contained HTML document with the trace view of each trace (an index first when there are several).

    No request leaves the file: script and style are inline (allowed by hash in its Content-Security-Policy).
    """
    local = {spans[0].trace_id for spans in traces if spans}
    parts = []
    if len(traces) > 1:
        parts.append(f'<h1>{esc(title)}</h1><table class="results"><thead><tr><th>Start (UTC)</th><th>Root span</th>')
        parts.append("<th>Duration</th><th>Spans</th><th>Errors</th></tr></thead><tbody>")
        for spans in traces:
            head = trace_rows(spans)[0].span
            t0 = min(s.start_time_unix_nano for s in spans)
            end = max(s.end_time_unix_nano for s in spans)
            errors = sum(1 for s in spans if s.status_code == StatusCode.ERROR)
            parts.append(
                f'<tr><td class="mono">{esc(format_time(t0))}</td><td><a href="#t-{esc(head.trace_id)}">'
                f"{_service(head.service_name)} {esc(head.name)}</a></td>"
                f'<td class="num">{esc(format_duration(end - t0))}'
                f'</td><td class="num">{len(spans)}</td><td class="num">{errors}</td></tr>'
            )
        parts.append("</tbody></table>")
    parts.extend(render_trace(spans, local=local) for spans in traces)
    if not traces:
        parts.append('<p class="none">No traces.</p>')
    return _standalone(title, "".join(parts))


# --- routing ------------------------------------------------------------------------------------------------------
def _trace_id(text: str) -> str | None:
    lowered = text.lower()
    if len(lowered) == 32 and all(c in "0123456789abcdef" for c in lowered):
        return lowered
    return None


def respond(app: Any, path: str, params: dict[str, list[str]]) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
    """Answer a GET for the UI: (status, body, content type, extra headers). ``app`` is the SpanServer."""
    from spanstore.query import get_trace

    no_store = (("Cache-Control", "no-store"),)
    if path in ("/", "/search"):
        status, page = _search_page(app, params)
        return status, page.encode(), _HTML, no_store
    if path.startswith("/trace/"):
        trace_id = _trace_id(path[len("/trace/") :])
        spans = get_trace(app.store, trace_id) if trace_id else []
        if not spans:
            shown = trace_id or path[len("/trace/") :]
            body = f'<h1>No such trace</h1><p class="problem">No trace {esc(shown)} in {esc(app.path)}.</p>'
            return 404, _page("No such trace", body).encode(), _HTML, no_store
        title = f"{spans[0].service_name} {spans[0].name}"
        return 200, _page(title, render_trace(spans), subtitle=str(app.path)).encode(), _HTML, no_store
    if path == "/errors":
        return 200, _errors_page(app, params).encode(), _HTML, no_store
    if path == "/fragment/results":
        if _one(params, "gen") == str(app.generation):
            return 204, b"", "text/plain", no_store
        generation = app.generation
        summaries, _ = _find(app, params)
        headers = (*no_store, ("X-Spanstore-Generation", str(generation)))
        return 200, _result_rows(summaries).encode(), _HTML, headers
    if path.startswith("/static/"):
        name = path[len("/static/") :]
        if name in _STATIC:
            return 200, _static(name).encode(), _STATIC[name], (("Cache-Control", "max-age=300"),)
    if path == "/api/info":
        from spanstore import __version__

        info = {
            "spanstore": __version__,
            "path": str(app.path.resolve()),
            "spans": len(app.store),
            "accepted_spans": app.accepted_spans,
            "rejected_spans": app.rejected_spans,
            "refused_requests": app.refused_requests,
            "generation": app.generation,
        }
        return 200, json.dumps(info).encode(), "application/json", no_store
    if path == "/api/traces":
        summaries, problem = _find(app, params)
        if problem:
            return 400, json.dumps({"error": problem}).encode(), "application/json", no_store
        records = [
            {**summary.__dict__, "services": list(summary.services)} for summary in summaries
        ]  # TraceSummary is a plain dataclass
        return 200, json.dumps(records).encode(), "application/json", no_store
    if path.startswith("/api/trace/") and path.endswith(".jsonl"):
        from spanstore.otlp import encode_spans

        trace_id = _trace_id(path[len("/api/trace/") : -len(".jsonl")])
        spans = get_trace(app.store, trace_id) if trace_id else []
        if spans:
            disposition = ("Content-Disposition", f'attachment; filename="trace-{trace_id}.jsonl"')
            return 200, b"".join(encode_spans(spans)), "application/x-ndjson", (*no_store, disposition)
    body = f'<h1>Not found</h1><p class="problem">Nothing at {esc(quote(path))}.</p>'
    return 404, _page("Not found", body).encode(), _HTML, no_store
