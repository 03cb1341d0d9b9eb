"""Terminal rendering for the ``spanstore`` command: tables, the trace tree with its waterfall, JSON records.

Everything here turns query results into text; nothing reads the store. :mod:`rich` is imported by this module, so
:mod:`spanstore.cli` imports it only inside the commands that print (``spanstore --help`` stays fast).

Times are shown in UTC. Durations are shown with three significant digits (``12.3ms``, ``1.50s``). Colour comes
from rich's own terminal detection: none when the output is not a terminal, none when ``NO_COLOR`` is set.
Functions here are pure over their arguments and thread-safe.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from spanstore.model import AttributeMap, StatusCode, StoredSpan

__all__ = [
    "TraceRow",
    "error_summary",
    "format_duration",
    "format_time",
    "key_attributes",
    "make_console",
    "print_diff",
    "print_error_types",
    "print_operation_stats",
    "print_similar",
    "print_spans",
    "print_stats",
    "print_trace",
    "print_traces",
    "span_line",
    "span_record",
    "token_record",
    "trace_rows",
]

#: Width used when the output is not a terminal (a pipe, a file) and ``COLUMNS`` is not set: wide enough that table
#: cells are not cut (a table is only as wide as its content), where rich's default of 80 would squeeze them.
PIPE_WIDTH = 200
#: The widest a trace waterfall is drawn when the output is not a terminal.
PIPE_TRACE_WIDTH = 120

_SERVICE_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_magenta", "bright_cyan", "bright_green")
_ERROR_STYLE = "bold red"
_DIM = "dim"
_SERVICES_SHOWN = 10
_TRAILING_BLANKS = re.compile(r"[ \t]+\n")


def make_console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (default: the current ``sys.stdout``): colour only on a terminal, no markup.

    Data (span names, attribute values) is never interpreted as rich markup or emoji codes. When the output is not
    a terminal, lines lose the trailing blanks rich pads table rows with (so piped output greps and diffs cleanly).
    """
    target = file or sys.stdout
    console = Console(file=target, markup=False, emoji=False, highlight=False)
    if not console.is_terminal:
        console.file = _TrimmedLines(target)
        if "COLUMNS" not in os.environ:
            console.width = PIPE_WIDTH
    return console


class _TrimmedLines:
    """A text stream wrapper that drops blanks before each newline (rich writes whole lines per print call)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        return self._stream.write(_TRAILING_BLANKS.sub("\n", text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()


class _Glyphs:
    """Drawing characters: box drawing and blocks on a UTF-8 console, ASCII elsewhere."""

    def __init__(self, console: Console) -> None:
        utf = (console.encoding or "").lower().replace("-", "").startswith("utf")
        self.branch = "├─ " if utf else "|- "
        self.last = "└─ " if utf else "`- "
        self.pipe = "│  " if utf else "|  "
        self.blank = "   "
        self.bar = "█" if utf else "#"
        self.eighths = " ▏▎▍▌▋▊▉" if utf else " " * 8
        self.cross = "✗" if utf else "x"
        self.arrow = "→" if utf else "->"
        self.dot = "·" if utf else "|"
        self.micro = "µs" if utf else "us"
        self.ellipsis = "…" if utf else "..."


# --- values -----------------------------------------------------------------------------------------------------------
def _significant(value: float) -> str:
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 9.995:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_duration(ns: int, micro: str = "µs") -> str:
    """A duration in nanoseconds as short text with three significant digits.

    >>> [format_duration(n) for n in (850, 12_340, 2_500_000, 1_500_000_000, 125_000_000_000, 7_380_000_000_000)]
    ['850ns', '12.3µs', '2.50ms', '1.50s', '2m05s', '2h03m']
    >>> format_duration(3 * 86_400 * 10**9 + 7_200 * 10**9)
    '3d02h'
    """
    if ns < 0:
        return "-" + format_duration(-ns, micro)
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 999_500:
        return _significant(ns / 1e3) + micro
    if ns < 999_500_000:
        return _significant(ns / 1e6) + "ms"
    if ns < 59_995_000_000:
        return _significant(ns / 1e9) + "s"
    seconds = round(ns / 1e9)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_time(unix_nano: int, fmt: str = "%Y-%m-%d %H:%M:%S.%f") -> str:
    """Unix nanoseconds as UTC text, to the millisecond.

    >>> format_time(1_700_000_000_123_456_789)
    '2023-11-14 22:13:20.123'
    """
    moment = datetime.fromtimestamp(unix_nano // 1000 / 1e6, tz=timezone.utc)
    text = moment.strftime(fmt)
    return text[:-3] if fmt.endswith("%f") else text


def _time_column(times: Iterable[int]) -> tuple[str, str | None]:
    """The strftime format for a set of start times, and a caption naming their date when they share one."""
    days = {t // 86_400_000_000_000 for t in times}
    if len(days) == 1:
        day = format_time(next(iter(days)) * 86_400_000_000_000, "%Y-%m-%d")
        return "%H:%M:%S.%f", f"Times are UTC, on {day}."
    return "%Y-%m-%d %H:%M:%S.%f", "Times are UTC."


def _service_style(service: str) -> str:
    return _SERVICE_STYLES[zlib.crc32(service.encode("utf-8", "replace")) % len(_SERVICE_STYLES)]


def _value_text(value: Any) -> str:
    """An attribute value as it would be typed: strings quoted, others as Python prints them."""
    if isinstance(value, AttributeMap):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)


def _clip(text: str, width: int, ellipsis: str = "…") -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - len(ellipsis))] + ellipsis


def error_summary(span: StoredSpan) -> str:
    """``"TimeoutError: canceling statement"``: the error type and message of a span, as far as it has them."""
    message = span.status_message
    if not message:
        for event in span.events:
            if event.name == "exception":
                found = event.attributes.get("exception.message")
                if isinstance(found, str):
                    message = found
                break
    error_type = span.error_type
    if error_type and message:
        bare = error_type.rpartition(".")[2]
        for prefix in (error_type, bare):  # instrumentations often start the message with the type: say it once
            if message.startswith(prefix + ":"):
                message = message[len(prefix) + 1 :].lstrip()
                break
        if message in (error_type, bare):
            return error_type
        return f"{error_type}: {message}" if message else error_type
    if not message and error_type and error_type.isdigit():
        return f"HTTP {error_type}"  # semantic conventions: a client span's error.type is the status code
    if not message and not error_type:
        status = span.attributes.get("http.response.status_code", span.attributes.get("http.status_code"))
        if type(status) is int and status >= 400:  # older HTTP conventions: only the status code says what failed
            return f"HTTP {status}"
    return message or error_type or ("error" if span.status_code == StatusCode.ERROR else "")


def key_attributes(span: StoredSpan, arrow: str = "→") -> list[str]:
    """The few attributes that say what a span did (HTTP method, route and status; database; RPC; user)."""
    a = span.attributes
    parts = []
    method = a.get("http.request.method", a.get("http.method"))
    target = (
        a.get("http.route")
        or a.get("url.template")
        or a.get("url.path")
        or a.get("http.target")
        or a.get("url.full")
        or a.get("http.url")
    )
    status = a.get("http.response.status_code", a.get("http.status_code"))
    http = " ".join(str(x) for x in (method, target) if x is not None and x != "")
    if status is not None:
        http = f"{http} {arrow} {status}" if http else f"HTTP {status}"
    if http:
        parts.append(http)
    system = a.get("db.system.name", a.get("db.system"))
    if system is not None:
        statement = a.get("db.query.text", a.get("db.statement", a.get("db.operation.name", a.get("db.operation"))))
        parts.append(f"{system}: {statement}" if statement is not None else str(system))
    if a.get("rpc.system") is not None or a.get("rpc.method") is not None:
        rpc = "/".join(str(x) for x in (a.get("rpc.service"), a.get("rpc.method")) if x is not None)
        code = a.get("rpc.grpc.status_code")
        if rpc and rpc.rsplit("/", 1)[-1] not in span.name:  # the span name usually says it already
            parts.append(f"{a.get('rpc.system', 'rpc')} {rpc}".strip())
        if code is not None and code != 0:
            parts.append(f"grpc status {code}")
    if a.get("messaging.system") is not None:
        destination = a.get("messaging.destination.name", a.get("messaging.destination"))
        parts.append(f"{a.get('messaging.system')} {destination or ''}".strip())
    for key in ("peer.service", "user.id"):
        if a.get(key) is not None:
            parts.append(f"{key}={a.get(key)}")
    return parts


# --- JSON records -----------------------------------------------------------------------------------------------------
def _builtin(value: Any) -> Any:
    if isinstance(value, AttributeMap):
        return {k: _builtin(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_builtin(v) for v in value]
    return value


def _attributes_dict(attributes: AttributeMap) -> dict[str, Any]:
    return {key: _builtin(value) for key, value in attributes.items()}


def span_record(span: StoredSpan) -> dict[str, Any]:
    """A span as a flat, JSON-ready dict (the ``--json`` shape of every span-listing command).

    Enums are names (``"SERVER"``, ``"ERROR"``), times integer Unix nanoseconds, ``service`` the resource's
    ``service.name``; ``attributes`` and ``resource`` are plain objects (bytes values become base64 when encoded).

    >>> record = span_record(StoredSpan(trace_id="ab" * 16, span_id="01" * 8, name="GET /cart",
    ...                                 start_time_unix_nano=5, end_time_unix_nano=9))
    >>> record["name"], record["kind"], record["status"], record["duration_ns"], record["parent_span_id"]
    ('GET /cart', 'INTERNAL', 'UNSET', 4, None)
    """
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.service_name,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "duration_ns": span.duration_ns,
        "status": span.status_code.name,
        "status_message": span.status_message,
        "error_type": span.error_type,
        "attributes": _attributes_dict(span.attributes),
        "events": [
            {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": _attributes_dict(e.attributes)}
            for e in span.events
        ],
        "links": [
            {"trace_id": link.trace_id, "span_id": link.span_id, "attributes": _attributes_dict(link.attributes)}
            for link in span.links
        ],
        "resource": _attributes_dict(span.resource.attributes),
        "scope": {"name": span.scope.name, "version": span.scope.version},
    }


# --- tables -------------------------------------------------------------------------------------------------------
def _table(*headers: str, title: str | None = None, caption: str | None = None) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        title_style="bold",
        caption=caption,
        caption_justify="left",
        caption_style=_DIM,
        pad_edge=False,
        show_edge=False,
    )
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    return table


def _fit(
    table: Table,
    console: Console,
    cells: Sequence[Sequence[str]],
    flexible: Sequence[int],
    wrap: Sequence[int] = (),
    trace_id: int | None = None,
) -> None:
    """Cap the ``flexible`` columns so the table fits the console, leaving the other columns whole.

    Rich would otherwise shrink every column in proportion. Shares are max-min fair: a narrow flexible column keeps
    its whole width, the widest give up what does not fit. A capped column listed in ``wrap`` wraps onto more lines
    (error messages); the others are cut with an ellipsis. On a narrow console the ``trace_id`` column is cut (no
    ellipsis, down to 12 characters) before the flexible columns drop below 20: what shows is a prefix that
    ``spanstore trace`` accepts; the caption says so.
    """
    columns = table.columns
    needed = [max([len(column.header or "")] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)]
    overhead = 3 * (len(columns) - 1)  # padding of one each side (none at the edges) and the box's blank separators
    room = console.width - overhead - sum(w for i, w in enumerate(needed) if i not in flexible)
    if sum(needed[i] for i in flexible) <= room:
        return
    if trace_id is not None:
        comfortable = sum(min(needed[i], 20) for i in flexible)
        cut = min(max(0, comfortable - room), needed[trace_id] - 12)
        if cut > 0:
            columns[trace_id].max_width = needed[trace_id] - cut
            columns[trace_id].overflow = "crop"
            room += cut
            table.caption = f"{table.caption or ''} Trace ids are cut to fit: `spanstore trace` takes a prefix.".strip()
    pending = sorted(flexible, key=lambda i: (i in wrap, needed[i]))  # wrapping columns take what is left
    while pending:
        share = max(1, room // len(pending))
        i = pending.pop(0)
        width = needed[i] if needed[i] <= share else max(share, min(needed[i], len(columns[i].header or "")), 6)
        if i in wrap and width < needed[i]:
            columns[i].width = width
            columns[i].no_wrap = False
            columns[i].overflow = "fold"
        else:
            columns[i].max_width = width
        room -= width


def _status_text(span: StoredSpan) -> Text:
    if span.status_code == StatusCode.ERROR:
        return Text(_clip(error_summary(span), 240) or "ERROR", style=_ERROR_STYLE)
    if span.status_code == StatusCode.OK:
        return Text("OK", style="green")
    return Text("-", style=_DIM)


def print_spans(
    console: Console, spans: Sequence[StoredSpan], *, title: str | None = None, errors: bool = False
) -> None:
    """A table of spans, one per row: start, service, name, duration, status (or error), trace id.

    ``errors=True`` heads the status column "Error" (for failure listings). Long names and messages are cut
    with an ellipsis so the table fits the console; trace ids are never cut.
    """
    g = _Glyphs(console)
    fmt, caption = _time_column(s.start_time_unix_nano for s in spans)
    headers = ("Start", "Service", "Span", "Duration", "Error" if errors else "Status", "Trace ID")
    table = _table(*headers, title=title, caption=caption)
    table.columns[3].justify = "right"
    rows = [
        (
            format_time(span.start_time_unix_nano, fmt),
            Text(span.service_name, style=_service_style(span.service_name)),
            Text(span.name),
            format_duration(span.duration_ns, g.micro),
            _status_text(span),
            Text(span.trace_id, style=_DIM),
        )
        for span in spans
    ]
    _fit(table, console, [[str(cell) for cell in row] for row in rows], flexible=(1, 2, 4), wrap=(4,), trace_id=5)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_traces(console: Console, summaries: Sequence[Any], *, title: str | None = None) -> None:
    """A table of :class:`~spanstore.query.TraceSummary`: start, root, duration, spans, errors, trace id."""
    g = _Glyphs(console)
    fmt, caption = _time_column(t.start_time_unix_nano for t in summaries)
    table = _table("Start", "Root span", "Duration", "Spans", "Errors", "Trace ID", title=title, caption=caption)
    for index in (2, 3, 4):
        table.columns[index].justify = "right"
    rows = []
    for summary in summaries:
        root = Text(summary.root_service, style=_service_style(summary.root_service))
        root.append(" ")
        root.append(summary.root_name)
        if not summary.has_root:
            root.append(" (no root)", style=_DIM)
        errors = Text(str(summary.error_count), style=_ERROR_STYLE) if summary.error_count else Text("0", style=_DIM)
        rows.append(
            (
                format_time(summary.start_time_unix_nano, fmt),
                root,
                format_duration(summary.duration_ns, g.micro),
                str(summary.span_count),
                errors,
                Text(summary.trace_id, style=_DIM),
            )
        )
    _fit(table, console, [[str(cell) for cell in row] for row in rows], flexible=(1,), trace_id=5)
    for row in rows:
        table.add_row(*row)
    console.print(table)


#: The ``errors`` table's row for ERROR spans with neither an exception event nor ``error.type``.
UNTYPED_ERRORS = "(no type: status ERROR only)"


def print_error_types(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """A table of error types: type, spans, services, last seen, newest trace id (rows from the ``errors`` command)."""
    fmt, caption = _time_column(row["last_seen_unix_nano"] for row in rows)
    table = _table("Error type", "Spans", "Services", "Last seen", "Newest trace ID", caption=caption)
    table.columns[1].justify = "right"
    cells = [
        (
            Text(row["error_type"], style=_ERROR_STYLE) if row["error_type"] else Text(UNTYPED_ERRORS, style=_DIM),
            str(row["span_count"]),
            ", ".join(row["services"]),
            format_time(row["last_seen_unix_nano"], fmt),
            Text(row["trace_id"], style=_DIM),
        )
        for row in rows
    ]
    _fit(table, console, [[str(cell) for cell in row] for row in cells], flexible=(0, 2), trace_id=4)
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _bytes_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def print_stats(console: Console, stats: dict[str, Any]) -> None:
    """The ``stats`` command's report: counts, services, time range, error rate, disk, memory, skips and drops."""
    g = _Glyphs(console)
    table = Table(box=None, show_header=False, pad_edge=False, title=f"Store {stats.get('path')}", title_justify="left")
    table.title_style = "bold"
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    spans = stats["span_count"]
    errors = stats["error_span_count"]
    rate = f"{errors / spans:.1%}" if spans else "-"
    table.add_row("Spans", f"{spans:,} in {stats['trace_count']:,} traces")
    error_text = Text(f"{errors:,} spans with status ERROR ({rate})", style=_ERROR_STYLE if errors else "")
    table.add_row("Errors", error_text)
    services = Text()
    by_count = sorted(stats["services"].items(), key=lambda item: (-item[1], item[0]))
    for index, (name, count) in enumerate(by_count[:_SERVICES_SHOWN]):
        if index:
            services.append(f" {g.dot} ")
        services.append(name, style=_service_style(name))
        services.append(f" {count:,}")
    if len(by_count) > _SERVICES_SHOWN:
        services.append(f" {g.dot} {len(by_count) - _SERVICES_SHOWN} more (--json lists all)", style=_DIM)
    table.add_row("Services", services if stats["services"] else Text("-", style=_DIM))
    oldest, newest = stats["oldest_start_time_unix_nano"], stats["newest_start_time_unix_nano"]
    if oldest is not None and newest is not None:
        span_text = f"{format_time(oldest)} {g.arrow} {format_time(newest)} UTC ({format_duration(newest - oldest)})"
        table.add_row("Time range", span_text)
    else:
        table.add_row("Time range", Text("-", style=_DIM))
    log = stats.get("log") or {}
    if log:
        segments = log["segments"]
        table.add_row("Disk", f"{segments} segment{'s' if segments != 1 else ''}, {_bytes_text(log['disk_bytes'])}")
    table.add_row(
        "Memory",
        f"~{_bytes_text(stats['memory_estimate_bytes'])} estimated for {spans:,} spans "
        f"(budget {stats['max_spans']:,} spans / {_bytes_text(stats['max_bytes'])})",
    )
    skipped = [
        (log.get("skipped_line_count", 0), "corrupt or torn lines"),
        (log.get("invalid_spans", 0), "invalid spans"),
        (log.get("other_signal_lines", 0), "metric/log lines"),
    ]
    dropped = [
        (stats["evicted_traces"], f"traces evicted ({stats['evicted_spans']:,} spans) to fit the memory budget"),
        (stats["dropped_spans_trace_cap"], f"spans over the per-trace cap of {stats['max_spans_per_trace']:,}"),
        (stats["dropped_spans_invalid"], "unconvertible spans"),
    ]
    for label, items in (("Skipped", skipped), ("Dropped", dropped)):
        shown = [f"{count:,} {what}" for count, what in items if count]
        table.add_row(label, ", ".join(shown) if shown else Text("none", style=_DIM))
    console.print(table)


# --- the trace tree -------------------------------------------------------------------------------------------------
class TraceRow:
    """One line of a trace tree: a span, its depth, the tree-drawing prefix, and a note (orphan, cycle).

    ``prefix`` is drawn before the span's name; ``continuation`` is drawn before its detail line (the prefix with the
    branch replaced by the vertical line that continues to the span's children or next siblings).
    """

    __slots__ = ("span", "depth", "prefix", "continuation", "note")

    def __init__(self, span: StoredSpan, depth: int, prefix: str, continuation: str, note: str) -> None:
        self.span = span
        self.depth = depth
        self.prefix = prefix
        self.continuation = continuation
        self.note = note

    def __repr__(self) -> str:
        return f"TraceRow({self.prefix}{self.span.name!r}, depth={self.depth}, note={self.note!r})"


def trace_rows(spans: Sequence[StoredSpan], glyphs: _Glyphs | None = None) -> list[TraceRow]:
    """Lay out a trace's spans as a tree: children under their parent, siblings by start time.

    Every span appears exactly once, whatever the data: a span whose parent is not among ``spans`` (an orphan)
    or is itself starts a tree of its own, noted; spans caught in a parent cycle (no way up to a root) are
    laid out from the earliest of them, noted. Iterative (no recursion limit on deep traces). O(n log n).

    >>> from spanstore.model import StoredSpan
    >>> def span(i, parent=None):
    ...     return StoredSpan(trace_id="ab" * 16, span_id=f"{i:016x}", parent_span_id=parent and f"{parent:016x}",
    ...                       name=f"s{i}", start_time_unix_nano=i, end_time_unix_nano=10)
    >>> [(row.prefix + row.span.name, row.note) for row in trace_rows([span(1), span(2, 1), span(3, 1), span(4, 9)])]
    [('s1', ''), ('├─ s2', ''), ('└─ s3', ''), ('s4', 'parent 0000000000000009 not in the store')]
    """
    glyphs = glyphs or _GLYPHS_UTF
    ordered = sorted(spans, key=lambda s: s.start_time_unix_nano)
    ids = {s.span_id for s in ordered}
    children: dict[str, list[StoredSpan]] = defaultdict(list)
    tops: list[tuple[StoredSpan, str]] = []
    for span in ordered:
        parent = span.parent_span_id
        if parent is None:
            tops.append((span, ""))
        elif parent == span.span_id:
            tops.append((span, "its own parent"))
        elif parent not in ids:
            tops.append((span, f"parent {parent} not in the store"))
        else:
            children[parent].append(span)
    rows: list[TraceRow] = []
    seen: set[int] = set()
    claimed: set[str] = set()  # span ids whose children were laid out (a duplicated span id gets them once)

    def lay_out(top: StoredSpan, note: str) -> None:
        stack: list[tuple[StoredSpan, int, str, bool, str]] = [(top, 0, "", True, note)]
        while stack:
            span, depth, indent, is_last, span_note = stack.pop()
            if id(span) in seen:
                continue
            seen.add(id(span))
            if depth == 0:
                prefix, below = "", ""
            else:
                prefix = indent + (glyphs.last if is_last else glyphs.branch)
                below = indent + (glyphs.blank if is_last else glyphs.pipe)
            kids = [] if span.span_id in claimed else [k for k in children.get(span.span_id, ()) if id(k) not in seen]
            claimed.add(span.span_id)
            continuation = below + (glyphs.pipe if kids else glyphs.blank)
            rows.append(
                TraceRow(span, depth, prefix, continuation if depth else (glyphs.pipe if kids else ""), span_note)
            )
            for index in range(len(kids) - 1, -1, -1):
                stack.append((kids[index], depth + 1, below, index == len(kids) - 1, ""))

    for top, note in tops:
        lay_out(top, note)
    while len(seen) < len(ordered):  # the rest hang off a cycle: start from its earliest span
        first = next(s for s in ordered if id(s) not in seen)
        lay_out(first, "in a parent cycle (no root above it)")
    return rows


class _UtfConsole:
    encoding = "utf-8"


_GLYPHS_UTF = _Glyphs(_UtfConsole())  # type: ignore[arg-type]


def _bar(glyphs: _Glyphs, start: int, end: int, t0: int, total: int, width: int) -> str:
    """A waterfall bar: blanks up to the span's start, then blocks to its end, with eighth blocks at the end."""
    first = min(width - 1, max(0, (start - t0) * width // total))
    end_eighths = max(0, min(width * 8, (end - t0) * width * 8 // total))
    end_eighths = max(end_eighths, first * 8 + 1)  # every span shows at least a sliver
    full, part = divmod(end_eighths, 8)
    bar = " " * first + glyphs.bar * max(0, full - first)
    if part and full < width:
        bar += glyphs.eighths[part] if glyphs.eighths[part] != " " else glyphs.bar
    return bar


def _trace_header(console: Console, spans: Sequence[StoredSpan], glyphs: _Glyphs) -> tuple[int, int]:
    t0 = min(s.start_time_unix_nano for s in spans)
    t1 = max(s.end_time_unix_nano for s in spans)
    roots = [s for s in spans if s.parent_span_id is None]
    head = min(roots or spans, key=lambda s: s.start_time_unix_nano)
    services = sorted({s.service_name for s in spans})
    errors = sum(s.status_code == StatusCode.ERROR for s in spans)
    title = Text()
    title.append(head.service_name, style="bold " + _service_style(head.service_name))
    title.append(" ")
    title.append(head.name, style="bold")
    if not roots:
        title.append("  (no root span in the store)", style=_DIM)
    title.append(f"   trace {head.trace_id}", style=_DIM)
    console.print(title)
    facts = [
        f"{format_time(t0)} UTC",
        format_duration(t1 - t0, glyphs.micro),
        f"{len(spans)} span{'s' if len(spans) != 1 else ''}",
        f"{len(services)} service{'s' if len(services) != 1 else ''}",
    ]
    line = Text(f" {glyphs.dot} ".join(facts))
    line.append(f" {glyphs.dot} ")
    line.append(f"{errors} error{'s' if errors != 1 else ''}", style=_ERROR_STYLE if errors else "")
    console.print(line)
    console.print()
    return t0, max(1, t1 - t0)


def print_trace(console: Console, spans: Sequence[StoredSpan], *, full: bool = False, details: bool = True) -> None:
    """A trace as a tree of spans with a waterfall scaled to the trace's time; ``full`` adds every attribute and event.

    Each span line shows the tree, service and name, duration and a bar; below it (``details``) a dim line of its
    key attributes and, for errors, the error type and message. Orphans and spans in parent cycles are drawn as
    trees of their own, with a note. ``spans`` must be non-empty and of one trace.
    """
    glyphs = _Glyphs(console)
    t0, total = _trace_header(console, spans, glyphs)
    rows = trace_rows(spans, glyphs)
    width = max(60, console.width if console.is_terminal else min(console.width, PIPE_TRACE_WIDTH))
    label_width = min(
        max(len(r.prefix) + len(r.span.service_name) + len(r.span.name) + 3 for r in rows), width * 9 // 20
    )
    label_width = max(label_width, 24)
    duration_width = 8
    bar_width = max(10, width - label_width - duration_width - 4)
    scale = Text(" " * (label_width + duration_width + 3), style=_DIM)
    left, right = "0", format_duration(total, glyphs.micro)
    middle = format_duration(total // 2, glyphs.micro)
    ruler = left + " " * max(1, bar_width // 2 - len(left) - len(middle) // 2) + middle
    ruler += " " * max(1, bar_width - len(ruler) - len(right)) + right
    scale.append(ruler, style=_DIM)
    console.print(scale, no_wrap=True, crop=True)
    for row in rows:
        span = row.span
        failed = span.status_code == StatusCode.ERROR
        label = Text(row.prefix, style=_DIM)
        label.append(span.service_name, style=_service_style(span.service_name))
        label.append(" ")
        label.append(span.name, style=_ERROR_STYLE if failed else "")
        if failed:  # the marker stays visible: a long name is cut before it, not the marker after it
            marker = f" {glyphs.cross}"
            label.truncate(label_width - len(marker), overflow="ellipsis")
            label.append(marker, style=_ERROR_STYLE)
        label.truncate(label_width, overflow="ellipsis", pad=True)
        line = Text()
        line.append_text(label)
        line.append(" " + format_duration(span.duration_ns, glyphs.micro).rjust(duration_width) + "  ")
        bar = _bar(glyphs, span.start_time_unix_nano, span.end_time_unix_nano, t0, total, bar_width)
        line.append(bar, style="red" if failed else _service_style(span.service_name))
        console.print(line, no_wrap=True, crop=True)
        if not details:
            continue
        notes = []
        if row.note:
            notes.append((row.note, "yellow"))
        if failed:
            notes.append((f"{glyphs.cross} {error_summary(span)}", "red"))
        notes.extend((part, _DIM) for part in key_attributes(span, glyphs.arrow))
        if notes:
            detail = Text(row.continuation, style=_DIM)
            for index, (part, style) in enumerate(notes):
                if index:
                    detail.append("  ")
                detail.append(" ".join(part.split()), style=style)
            detail.truncate(width, overflow="ellipsis")
            console.print(detail, no_wrap=True, crop=True)
    if full:
        _print_full(console, rows, t0, glyphs)


def pretty_json_value(attributes: AttributeMap, key: str, value: Any) -> str | None:
    """``input.value``/``output.value`` (``spanstore.traced``, OpenInference) as indented JSON, when they are JSON.

    >>> from spanstore.model import AttributeMap
    >>> attributes = AttributeMap.of({"input.value": '{"n":1}', "input.mime_type": "application/json"})
    >>> print(pretty_json_value(attributes, "input.value", attributes["input.value"]))
    {
      "n": 1
    }
    """
    if key not in ("input.value", "output.value") or not isinstance(value, str):
        return None
    if attributes.get(key.replace(".value", ".mime_type")) != "application/json":
        return None
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except ValueError:
        return None


def _attribute_lines(attributes: AttributeMap, indent: str) -> list[Text]:
    lines = []
    for key, value in attributes.items():
        pretty = pretty_json_value(attributes, key, value)
        if pretty is not None and "\n" not in pretty:
            line = Text(f"{indent}{key}", style="bold")
            line.append(" = " + pretty, style="")
            lines.append(line)
            continue
        value = pretty or value
        if isinstance(value, str) and "\n" in value:
            lines.append(Text(f"{indent}{key} =", style="bold"))
            lines.extend(Text(indent + "    " + part) for part in value.rstrip("\n").split("\n"))
        else:
            line = Text(f"{indent}{key}", style="bold")
            line.append(" = " + _value_text(value), style="")
            lines.append(line)
    return lines


def _print_full(console: Console, rows: Sequence[TraceRow], t0: int, glyphs: _Glyphs) -> None:
    """Every span's fields, attributes, events (stack traces as written) and links; then each resource once."""
    resources: dict[int, Any] = {}
    for row in rows:
        span = row.span
        resources.setdefault(id(span.resource), span.resource)
        console.print()
        head = Text(f"{span.service_name} ", style="bold " + _service_style(span.service_name))
        head.append(span.name, style=_ERROR_STYLE if span.status_code == StatusCode.ERROR else "bold")
        console.print(head)
        facts = [
            f"span {span.span_id}",
            f"parent {span.parent_span_id or '-'}",
            span.kind.name,
            f"start +{format_duration(span.start_time_unix_nano - t0, glyphs.micro)}",
            f"duration {format_duration(span.duration_ns, glyphs.micro)}",
            f"status {span.status_code.name}",
        ]
        console.print(Text("  " + f" {glyphs.dot} ".join(facts), style=_DIM))
        if span.status_message:
            failed = span.status_code == StatusCode.ERROR
            console.print(Text(f"  status message: {span.status_message}", style=_ERROR_STYLE if failed else ""))
        if span.scope.name:
            console.print(Text(f"  scope {span.scope.name} {span.scope.version}".rstrip(), style=_DIM))
        for line in _attribute_lines(span.attributes, "  "):
            console.print(line)
        for event in span.events:
            offset = format_duration(event.time_unix_nano - t0, glyphs.micro) if event.time_unix_nano else "?"
            style = _ERROR_STYLE if event.name == "exception" else "bold"
            console.print(Text(f"  event +{offset} {event.name or '(unnamed)'}", style=style))
            for line in _attribute_lines(event.attributes, "    "):
                console.print(line)
        for link in span.links:
            console.print(Text(f"  link {glyphs.arrow} trace {link.trace_id} span {link.span_id}", style="bold"))
            for line in _attribute_lines(link.attributes, "    "):
                console.print(line)
        dropped = [
            (span.dropped_attributes_count, "attributes"),
            (span.dropped_events_count, "events"),
            (span.dropped_links_count, "links"),
        ]
        shown = [f"{count} {what}" for count, what in dropped if count]
        if shown:
            console.print(Text("  dropped by the SDK: " + ", ".join(shown), style="yellow"))
    console.print()
    console.print(Text("Resources", style="bold"))
    for resource in resources.values():
        console.print(Text(f"  {resource.service_name}", style="bold " + _service_style(resource.service_name)))
        for line in _attribute_lines(resource.attributes, "    "):
            console.print(line)


# --- one-line spans (tail) ------------------------------------------------------------------------------------------
def span_line(span: StoredSpan, console: Console | None = None) -> Text:
    """One span as one line: start time, service, name, duration, status, trace id (the ``tail`` format)."""
    glyphs = _Glyphs(console) if console is not None else _GLYPHS_UTF
    line = Text(format_time(span.start_time_unix_nano, "%H:%M:%S.%f") + "  ", style=_DIM)
    line.append(span.service_name, style=_service_style(span.service_name))
    line.append("  " + span.name)
    line.append("  " + format_duration(span.duration_ns, glyphs.micro))
    if span.status_code == StatusCode.ERROR:
        line.append(f"  {glyphs.cross} {_clip(error_summary(span), 80, glyphs.ellipsis)}", style=_ERROR_STYLE)
    line.append(f"  {span.trace_id}", style=_DIM)
    return line


# --- analysis: similar traces, trace diff, per-operation statistics ---------------------------------------------------
def token_record(token: tuple[Any, ...], count: int) -> dict[str, Any]:
    """A shape token of :mod:`spanstore.analysis` as a JSON-ready dict (``error_type`` only for an error token).

    >>> token_record(("cart", "GET /cart", None), 2)
    {'service': 'cart', 'name': 'GET /cart', 'parent': None, 'error': False, 'count': 2}
    """
    record: dict[str, Any] = {"service": token[0], "name": token[1], "parent": token[2], "error": len(token) == 4}
    if len(token) == 4:
        record["error_type"] = token[3]
    record["count"] = count
    return record


def _differences_text(found: Any, shown: int) -> str:
    """``"-1 +2 spans, -1 error: -render, +retry, ..."``: counts, then the first few span names that differ."""
    counts = []
    for what, is_error in (("span", False), ("error", True)):
        less = sum(n for token, n in found.missing if (len(token) == 4) == is_error)
        more = sum(n for token, n in found.extra if (len(token) == 4) == is_error)
        if less or more:
            counts.append(" ".join(x for x in (f"-{less}" if less else "", f"+{more}" if more else "") if x))
            counts[-1] += f" {what}{'s' if max(less, more) > 1 else ''}"
    if not counts:
        return "same shape"
    names = [f"-{token[1]}" for token, _ in found.missing if len(token) == 3]
    names += [f"+{token[1]}" for token, _ in found.extra if len(token) == 3]
    text = ", ".join(counts)
    if names:
        text += ": " + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    return text


def print_similar(console: Console, asked: Any, results: Sequence[Any], *, shown_differences: int = 2) -> None:
    """Traces like ``asked`` (a :class:`~spanstore.query.TraceSummary`): score, size, duration, what differs.

    ``results`` are :class:`~spanstore.analysis.SimilarTrace`. Differences: how many spans (edges) and errors the
    trace lacks (``-``) or has beyond (``+``) the given one, and the first ``shown_differences`` span names
    (``--json`` lists every edge with its service and parent).
    """
    g = _Glyphs(console)
    head = Text("Traces like ", style="bold")
    head.append(asked.trace_id, style=_DIM)
    console.print(head, soft_wrap=True)
    facts = Text(f"{asked.root_service} {asked.root_name} {g.dot} {_plural_text(asked.span_count, 'span')} {g.dot} ")
    facts.append(_plural_text(asked.error_count, "error"), style=_ERROR_STYLE if asked.error_count else "")
    facts.append(f" {g.dot} {format_duration(asked.duration_ns, g.micro)}")
    console.print(facts, soft_wrap=True)
    table = _table(
        "Score",
        "Spans",
        "Errors",
        "Duration",
        "Differs by",
        "Trace ID",
        caption="score = shape overlap x (0.9 + 0.1 x duration ratio); -: lacks, +: has beyond the given trace "
        "(--json lists every differing edge).",
    )
    for index in (0, 1, 2, 3):
        table.columns[index].justify = "right"
    rows = []
    for found in results:
        summary = found.summary
        differences = _differences_text(found, shown_differences)
        ratio = f" ({found.duration_ratio:.2f}x)" if found.duration_ratio is not None else ""
        errors = Text(str(summary.error_count), style=_ERROR_STYLE if summary.error_count else _DIM)
        rows.append(
            (
                f"{found.score:.3f}",
                str(summary.span_count),
                errors,
                format_duration(summary.duration_ns, g.micro) + ratio,
                Text(differences, style=_DIM if differences == "same shape" else ""),
                Text(summary.trace_id, style=_DIM),
            )
        )
    _fit(table, console, [[str(cell) for cell in row] for row in rows], flexible=(4,), wrap=(4,), trace_id=5)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _plural_text(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


_DIFF_MARKS = {"only_a": ("-", "red"), "only_b": ("+", "green"), "changed": ("~", "yellow"), "same": (" ", "")}


def _change_text(diff: Any, glyphs: _Glyphs) -> str:
    a = format_duration(diff.a.duration_ns, glyphs.micro) if diff.a is not None else "-"
    b = format_duration(diff.b.duration_ns, glyphs.micro) if diff.b is not None else "-"
    relative = diff.duration_relative
    if relative is None:
        relative = ""
    elif relative >= 9:  # "+23546%" reads worse than "236x"
        relative = f"{relative + 1:.0f}x"
    else:
        relative = f"{relative:+.0%}"
    return f"{a:>7} {glyphs.arrow} {b:>7} {relative:>6}"


def print_diff(console: Console, diff: Any, *, shown_attributes: int = 3) -> None:
    """Two traces aligned (a :class:`~spanstore.analysis.TraceDiff`), one line per position, as a merged tree.

    ``-`` only in A, ``+`` only in B, ``~`` status or attributes differ (listed below the line, at most
    ``shown_attributes`` attributes; ``--json`` lists all). Right: duration in A, in B, relative change.
    """
    g = _Glyphs(console)
    width = console.width if console.is_terminal else min(console.width, PIPE_TRACE_WIDTH)
    width = max(60, width)
    counts = {kind: sum(d.change == kind for d in diff.spans) for kind in _DIFF_MARKS}
    for label, trace_id, spans, duration in (
        ("A", diff.trace_id_a, sum(d.a is not None for d in diff.spans), diff.duration_a_ns),
        ("B", diff.trace_id_b, sum(d.b is not None for d in diff.spans), diff.duration_b_ns),
    ):
        line = Text(f"{label} ", style="bold")
        line.append(trace_id, style=_DIM)
        line.append(f"  {_plural_text(spans, 'span')}, {format_duration(duration, g.micro)}")
        console.print(line, soft_wrap=True)
    summary = Text()
    for kind, what in (("only_a", "only in A"), ("only_b", "only in B"), ("changed", "changed")):
        mark, style = _DIFF_MARKS[kind]
        summary.append(f"{mark} {counts[kind]} {what}", style=style)
        summary.append("   ")
    summary.append(f"{counts['same']} alike", style=_DIM)
    console.print(summary)
    console.print()
    right = 24
    label_width = max(20, width - right - 3)
    for entry in diff.spans:
        mark, style = _DIFF_MARKS[entry.change]
        span = entry.a if entry.a is not None else entry.b
        indent = "  " * entry.depth
        label = Text(f"{mark} {indent}", style=style)
        label.append(span.service_name, style=style or _service_style(span.service_name))
        label.append(" ")
        label.append(span.name, style=style)
        label.truncate(label_width, overflow="ellipsis", pad=True)
        line = Text()
        line.append_text(label)
        line.append(" " + _change_text(entry, g), style=style or "")
        console.print(line, no_wrap=True, crop=True)
        details = []
        if entry.status is not None:
            (code_a, message_a), (code_b, message_b) = entry.status
            details.append(f"status {code_a} {g.arrow} {code_b}" + (f": {message_b}" if message_b else ""))
        for key, value_a, value_b in entry.attributes[:shown_attributes]:
            a = "(none)" if value_a is None else _value_text(value_a)
            b = "(none)" if value_b is None else _value_text(value_b)
            details.append(f"{key} {a} {g.arrow} {b}")
        if len(entry.attributes) > shown_attributes:
            details.append(f"{len(entry.attributes) - shown_attributes} more attribute changes (--json lists all)")
        for detail in details:
            text = Text(f"  {indent}   {' '.join(detail.split())}", style=_DIM)
            text.truncate(width, overflow="ellipsis")
            console.print(text, no_wrap=True, crop=True)


def print_operation_stats(console: Console, rows: Sequence[Any]) -> None:
    """A table of :class:`~spanstore.analysis.OperationStats`: operation, spans, errors and rate, p50/p95/p99, the
    newest trace with an error. On a narrow console operations wrap and trace ids are cut (a prefix
    ``spanstore trace`` accepts)."""
    g = _Glyphs(console)
    table = _table("Operation", "Spans", "Errors", "p50", "p95", "p99", "Last error")
    for index in range(1, 6):
        table.columns[index].justify = "right"
    cells = []
    for row in rows:
        operation = Text(row.service, style=_service_style(row.service))
        operation.append(" ")
        operation.append(row.operation)
        errors = Text(f"{row.error_count:,} ({row.error_rate:.1%})" if row.error_count else "0", style=_DIM)
        if row.error_count:
            errors.stylize(_ERROR_STYLE)
        cells.append(
            (
                operation,
                f"{row.span_count:,}",
                errors,
                format_duration(row.p50_ns, g.micro),
                format_duration(row.p95_ns, g.micro),
                format_duration(row.p99_ns, g.micro),
                Text(row.newest_error_trace_id or "-", style=_DIM),
            )
        )
    plain = [[str(cell) for cell in row] for row in cells]
    if console.width < 120 and cells:
        table.columns[6].max_width = 10  # a prefix `spanstore trace` accepts
        table.columns[6].overflow = "crop"
        table.caption = "Trace ids are cut to fit: `spanstore trace` takes a prefix."
        plain = [[*row[:6], row[6][:10]] for row in plain]
    _fit(table, console, plain, flexible=(0,), wrap=(0,))
    for row in cells:
        table.add_row(*row)
    console.print(table)
