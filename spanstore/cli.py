"""The ``spanstore`` command: a thin face over :mod:`spanstore.query`, :mod:`spanstore.log` and the codec.

``spanstore COMMAND [options]``; ``spanstore COMMAND --help`` shows each command's options and an example. Every
command takes ``--path`` (the store directory; default ``$SPANSTORE_PATH``, else ``.spanstore``) and ``--json``
(JSON Lines on stdout: one span, trace summary or report object per line, for scripts).

Commands that read (``stats``, ``traces``, ``trace``, ``spans``, ``failures``, ``errors``, ``tail``, ``export``,
``similar``, ``diff``, ``ops``)
never create or change a store: they open the log directory read-only, load its newest spans into an in-memory
:class:`~spanstore.SpanStore` (at most ``SPANSTORE_MAX_SPANS``, default 500,000) and query that. ``demo``,
``import`` and ``serve`` write (``serve`` receives OTLP/HTTP and serves a web UI: :mod:`spanstore.serve`).

Exit status, as sqlite-utils does it: 0 on success, a search that finds nothing included (it says so); 1 when the
command fails (``spanstore: error: ...`` on stderr: no store, unreadable file, nothing importable, unknown trace);
2 for a usage error (argparse's own: unknown option, bad duration, bad trace id, malformed query).

Values: durations are a number and a unit, ``250ms``, ``1.5s``, ``500us``, ``10ns``, ``2m``, ``1h``, ``7d``. Times are
ISO 8601 (``2024-05-01T12:00:00Z``, ``2024-05-01 12:00``; a time without an offset is UTC, not local time) or a
duration meaning "that long ago" (``--since 2h``). Attribute filters are ``KEY OP VALUE`` with OP one of
``= == != < <= > >= ~`` (``~`` is a regular expression that must match the whole value) or a bare ``KEY`` (the
attribute exists); values are typed: ``500`` is an int, ``1.5`` a float, ``true`` a bool, anything else (or anything
quoted, ``"500"``) a string.

The module imports neither rich nor the OpenTelemetry SDK at import time; commands import what they need.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanstore.errors import InvalidQueryError, SpanStoreError, TraceNotFoundError
from spanstore.model import SpanKind, StatusCode
from spanstore.query import AttributeFilter, SpanQuery

if TYPE_CHECKING:
    from rich.console import Console

    from spanstore.log import SpanLog
    from spanstore.model import StoredSpan
    from spanstore.store import SpanStore

__all__ = ["build_parser", "main", "parse_attribute_filter", "parse_duration_ns", "parse_time_unix_nano"]

DEFAULT_PATH = ".spanstore"
_NO_STORE_HINT = "run `spanstore demo` or attach FileBasedSpanProcessor first"
_IMPORT_SUFFIXES = (".json", ".jsonl", ".ndjson")
_PROBLEMS_SHOWN = 5
_PROBLEMS_KEPT = 1000  # problems whose text `import` keeps (and -v lists); the rest are counted
_IMPORT_BATCH_SPANS = 200_000  # spans read before one duplicate look-up in the store (one scan of its log)
_FOLLOW_INTERVAL_SECONDS = 0.5
_sleep = time.sleep  # the follow loop's pause (tests replace it)


class CommandError(SpanStoreError):
    """A command cannot do what was asked (no store, unknown trace, nothing to import): exit status 1."""


class UsageError(SpanStoreError, ValueError):
    """The command line asks for something malformed that argparse could not see: exit status 2."""


# --- values ----------------------------------------------------------------------------------------------------------
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|sec|s|min|m|h|d)"
_DURATION_RE = re.compile(rf"\s*(?:{_DURATION_PART}\s*)+\Z")  # one or more parts: 1h30m, 1m30s, 250ms
_DURATION_PART_RE = re.compile(_DURATION_PART)
_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_DURATION_FORM = "a number and a unit (ns, us, ms, s, m, h, d) such as 250ms, 1.5s, 1h or 1h30m"


def parse_duration_ns(text: str) -> int:
    """Parse a duration such as ``250ms``, ``1.5s``, ``500us``, ``10ns``, ``2m``, ``1h``, ``7d`` into nanoseconds.

    A bare number is refused: ``5`` could mean seconds or milliseconds.

    >>> parse_duration_ns("250ms"), parse_duration_ns("1.5s"), parse_duration_ns("500us"), parse_duration_ns("1h")
    (250000000, 1500000000, 500000, 3600000000000)
    >>> parse_duration_ns("1h30m") == parse_duration_ns("90m"), parse_duration_ns("1m30s")
    (True, 90000000000)
    >>> parse_duration_ns("5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: expected a duration: a number and a unit (ns, us, ms, s, m, h, d) such as 250ms, 1.5s, 1h or ...
    """
    if _DURATION_RE.match(text) is None:
        raise ValueError(f"expected a duration: {_DURATION_FORM}; got {text!r}")
    total = Decimal(0)
    for number, unit in _DURATION_PART_RE.findall(text):
        try:
            total += Decimal(number) * _DURATION_UNITS_NS[unit]
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ValueError(f"expected a duration: {_DURATION_FORM}; got {text!r}") from None
    return int(total)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time_unix_nano(text: str, *, now_unix_nano: int | None = None) -> int:
    """Parse an ISO 8601 time (no offset means UTC) or a duration ago (``15m``) or ``now`` into Unix nanoseconds.

    >>> parse_time_unix_nano("2024-05-01T12:00:00Z"), parse_time_unix_nano("2024-05-01 12:00:00")
    (1714564800000000000, 1714564800000000000)
    >>> parse_time_unix_nano("2024-05-01T14:00:00.5+02:00")
    1714564800500000000
    >>> parse_time_unix_nano("90s", now_unix_nano=100 * 10**9)
    10000000000
    """
    now = time.time_ns() if now_unix_nano is None else now_unix_nano
    stripped = text.strip()
    if stripped == "now":
        return now
    if _DURATION_RE.match(stripped):
        return now - parse_duration_ns(stripped)
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            "expected an ISO 8601 time such as 2024-05-01T12:00:00Z (without an offset: UTC) "
            f"or a duration ago such as 15m; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


_ATTRIBUTE_RE = re.compile(r"\s*(?P<key>[^=!<>~]+?)\s*(?P<op>==|!=|>=|<=|=~|=|>|<|~)(?P<value>.*)\Z", re.S)
_OPERATORS = {"=": "==", "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "~": "matches"}
_OPERATORS["=~"] = "matches"
_INT_RE = re.compile(r"[+-]?\d+\Z")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")


def _typed_value(raw: str) -> Any:
    """``500`` -> int, ``1.5`` -> float, ``true``/``false`` -> bool, ``"quoted"`` -> str, anything else -> str."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if _INT_RE.match(raw):
        return int(raw)
    if _FLOAT_RE.match(raw):
        return float(raw)
    return raw


_WORD_OPERATOR_RE = re.compile(r"\s*(?P<key>\S+)\s+(?P<op>contains|exists|matches)(?:\s+(?P<value>.*?))?\s*\Z", re.S)
_ATTRIBUTE_FORMS = "KEY, KEY=VALUE, KEY OP VALUE (OP: = != < <= > >= ~), KEY contains VALUE or KEY exists"


def parse_attribute_filter(text: str, scope: str = "span") -> AttributeFilter:
    """Parse ``KEY OP VALUE``, ``KEY contains VALUE``, ``KEY exists`` or a bare ``KEY`` into an AttributeFilter.

    OP is one of ``= == != < <= > >= ~`` (``~``: regular expression matching the whole value). Values are typed:
    ``500`` is an int, ``true`` a bool, ``"500"`` (quoted) a string; ``<``, ``>``, ``<=`` and ``>=`` take a number
    or a quoted string; ``contains`` takes text (a substring, or an element of a string array). Raises ValueError
    naming the accepted forms for anything else.

    >>> parse_attribute_filter("http.response.status_code>=500")
    AttributeFilter(key='http.response.status_code', value=500, op='>=', scope='span')
    >>> parse_attribute_filter('http.route="/cart"').value, parse_attribute_filter("cache.hit=true").value
    ('/cart', True)
    >>> parse_attribute_filter("url.path ~ /api/.*").op, parse_attribute_filter("user.id").op
    ('matches', 'exists')
    >>> parse_attribute_filter("user.id contains 0017").value, parse_attribute_filter("user.id exists").op
    ('0017', 'exists')
    >>> parse_attribute_filter("code >= 500x")
    Traceback (most recent call last):
    ...
    ValueError: expected a number or a quoted string after '>=' (e.g. code >= 500 or name >= "m"); got 'code >= 500x'
    """
    words = _WORD_OPERATOR_RE.match(text)
    if words is not None and not any(c in words.group("key") for c in "=!<>~"):
        key, op, raw = words.group("key"), words.group("op"), words.group("value")
        if op == "exists":
            if raw:
                raise ValueError(f"expected nothing after 'exists'; got {text!r}")
            value = None
        elif not raw:
            raise ValueError(f"expected a value after {op!r}; got {text!r}")
        else:
            # contains takes text: "0017" is a substring of a user id, not the int 17.
            value = _unquote(raw)
        return _attribute_filter(key, value, op, scope, text)
    match = _ATTRIBUTE_RE.match(text)
    if match is None:
        key = text.strip()
        if not key or any(c in key for c in "=!<>~") or any(c.isspace() for c in key):
            raise ValueError(f"expected {_ATTRIBUTE_FORMS}; got {text!r}")
        return _attribute_filter(key, None, "exists", scope, text)
    key, op = match.group("key"), _OPERATORS[match.group("op")]
    if any(c.isspace() for c in key):
        raise ValueError(f"expected {_ATTRIBUTE_FORMS} (a key has no spaces); got {text!r}")
    raw = match.group("value").strip()
    if op == "matches":
        value = _unquote(raw)
    else:
        value = _typed_value(raw)
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
        if op in ("<", "<=", ">", ">=") and isinstance(value, str) and not quoted:
            raise ValueError(
                f"expected a number or a quoted string after {match.group('op')!r} "
                f'(e.g. code >= 500 or name >= "m"); got {text!r}'
            )
    return _attribute_filter(key, value, op, scope, text)


def _unquote(raw: str) -> str:
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" else raw


def _attribute_filter(key: str, value: Any, op: str, scope: str, text: str) -> AttributeFilter:
    try:
        return AttributeFilter(key, value, op, scope)
    except InvalidQueryError as error:
        raise ValueError(f"{error} (in {text!r})") from None


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser so argparse reports its ValueError as a usage error naming the option."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def _limit(text: str) -> int | None:
    """``all`` for no limit; a number means what ``limit=`` means in Python (0: nothing, as ``query_spans``)."""
    if text.strip().lower() in ("all", "none"):
        return None
    if not _INT_RE.match(text.strip()) or int(text) < 0:
        raise ValueError(f"expected a number of results, or 'all' for no limit; got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not _INT_RE.match(text.strip()) or int(text) < 0:
        raise ValueError(f"expected a whole number >= 0; got {text!r}")
    return int(text)


def _trace_id(text: str) -> str:
    lowered = text.strip().lower()
    if not (4 <= len(lowered) <= 32) or any(c not in "0123456789abcdef" for c in lowered):
        raise ValueError(f"expected a trace id: 32 hex characters (or a unique prefix of 4 or more); got {text!r}")
    return lowered


def _full_trace_id(text: str) -> str:
    lowered = text.strip().lower()
    if len(lowered) != 32 or any(c not in "0123456789abcdef" for c in lowered):
        raise ValueError(f"expected a trace id of 32 hex characters; got {text!r}")
    return lowered


def _port(text: str) -> int:
    if not _INT_RE.match(text.strip()) or not 0 <= int(text) <= 65535:
        raise ValueError(f"expected a port number from 0 to 65535; got {text!r}")
    return int(text)


_SIZE_RE = re.compile(r"\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)\s*\Z", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1 << 10, "mb": 10**6, "mib": 1 << 20, "gb": 10**9, "gib": 1 << 30}


def _size(text: str) -> int:
    match = _SIZE_RE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"expected a size in bytes such as 500000, 4MiB or 16MB; got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _seconds(text: str) -> float:
    return parse_duration_ns(text) / 1e9


# --- the parser ------------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _examples(*lines: str) -> str:
    return "example" + ("s" if len(lines) > 1 else "") + ":\n" + "\n".join(f"  {line}" for line in lines)


def _add_query_options(parser: argparse.ArgumentParser, *, spans: bool, query: bool = True) -> None:
    """The span criteria shared by spans, traces and export (every SpanQuery field has an option)."""
    if query:
        parser.add_argument(
            "query",
            nargs="?",
            help="a TraceQL-subset query, e.g. '{ status = error && span.http.route = \"/cart\" }' "
            "(options add to it and win over it)",
        )
    group = parser.add_argument_group("span criteria (all must hold)")
    if spans:
        group.add_argument("--trace-id", type=_argument_type(_full_trace_id), metavar="ID", help="spans of this trace")
    group.add_argument("--service", metavar="NAME", help="service.name of the span's resource")
    group.add_argument("--name", metavar="NAME", help="span name, exactly")
    group.add_argument("--kind", type=str.lower, choices=[k.name.lower() for k in SpanKind], help="span kind")
    group.add_argument("--status", type=str.lower, choices=[s.name.lower() for s in StatusCode], help="status code")
    group.add_argument("--errors", action="store_true", help="only status ERROR (same as --status error)")
    group.add_argument("--error-type", metavar="TYPE", help="error.type, or the first exception event's type")
    group.add_argument(
        "--attr",
        action="append",
        type=_argument_type(parse_attribute_filter),
        metavar="EXPR",
        help="span attribute filter, repeatable: k=v, 'k>=500', 'k!=v', 'k~regex', k (exists); "
        'values typed: 500 int, true bool, "500" str',
    )
    group.add_argument(
        "--resource-attr",
        action="append",
        type=_argument_type(lambda text: parse_attribute_filter(text, "resource")),
        metavar="EXPR",
        help="resource attribute filter, same forms (e.g. deployment.environment.name=prod)",
    )
    duration = _argument_type(parse_duration_ns)
    group.add_argument("--min-duration", type=duration, metavar="D", help="at least this long, e.g. 100ms")
    group.add_argument("--max-duration", type=duration, metavar="D", help="at most this long, e.g. 2s")
    group.add_argument("--last", type=duration, metavar="D", help="started within the last D, e.g. 15m, 1h, 7d")
    when = _argument_type(parse_time_unix_nano)
    group.add_argument("--since", type=when, metavar="TIME", help="started at or after TIME (ISO 8601, UTC; or 2h ago)")
    group.add_argument("--until", type=when, metavar="TIME", help="started before TIME")
    if spans:
        group.add_argument("--root", action="store_true", help="only root spans (no parent)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``spanstore`` command (every subcommand, with help and examples)."""
    parser = argparse.ArgumentParser(
        prog="spanstore",
        description="Query and manage a spanstore: OpenTelemetry spans kept in a directory of OTLP JSON Lines.",
        epilog=_examples(
            "spanstore demo                     # write a demo workload to .spanstore, show its failures",
            "spanstore traces --errors --last 1h",
            "spanstore trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "",
            "Every command takes --path DIR (default $SPANSTORE_PATH or .spanstore) and --json (JSON Lines).",
            "Run `spanstore COMMAND --help` for a command's options.",
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--path", default=None, help="store directory (default: $SPANSTORE_PATH or .spanstore)")
    parser.add_argument("--json", action="store_true", default=False, help="print JSON Lines instead of tables")
    from spanstore import __version__

    parser.add_argument("--version", action="version", version=f"spanstore {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--path", default=argparse.SUPPRESS, help="store directory (default: $SPANSTORE_PATH or .spanstore)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON Lines (one object per line)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, handler: Callable[..., int], summary: str, description: str, epilog: str) -> Any:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=_Formatter,
        )
        sub.set_defaults(handler=handler, command_parser=sub)
        return sub

    p = command(
        "demo",
        _cmd_demo,
        "run a small instrumented shop and show its failures",
        "Run a realistic workload (services frontend, cart, inventory, payment; real TracerProviders and\n"
        "FileBasedSpanProcessor) into the store, then show its recent failures and one failing trace.\n"
        "Seeded: the same --seed gives the same requests, durations and failures.",
        _examples("spanstore demo", "spanstore --path /tmp/shop demo --requests 100"),
    )
    p.add_argument("--seed", type=_argument_type(_count), default=3, help="workload seed (default 3)")
    p.add_argument("--requests", type=_argument_type(_count), default=25, help="frontend requests (default 25)")

    p = command(
        "run",
        _cmd_run,
        "run a Python program with zero-code instrumentation, its spans in the store",
        "Run COMMAND under OpenTelemetry's `opentelemetry-instrument` (pip install opentelemetry-distro) with\n"
        "OTEL_TRACES_EXPORTER=spanstore, SPANSTORE_PATH set to the store, and the metrics and logs exporters off\n"
        "(opentelemetry-distro would otherwise require OTLP exporters for them, and without them it configures\n"
        "nothing). Variables you set yourself win. Exits with COMMAND's exit status.",
        _examples(
            "spanstore run -- python app.py", "spanstore --path /tmp/shop run --service checkout -- python app.py"
        ),
    )
    p.add_argument("--service", metavar="NAME", help="OTEL_SERVICE_NAME for the program")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the program and its arguments")

    command(
        "stats",
        _cmd_stats,
        "what the store holds: counts, services, time range, errors, disk, memory",
        "Counts, services, time range, error rate, disk (segments, bytes), memory estimate, and what was\n"
        "skipped (corrupt lines, invalid spans) or dropped (evicted, over the per-trace cap).",
        _examples("spanstore stats", "spanstore stats --json | jq .span_count"),
    )

    p = command(
        "traces",
        _cmd_traces,
        "search traces (Jaeger-style): one line per trace",
        "Find traces with at least one span matching every criterion, newest first: start, root span,\n"
        "duration, span count, error count, trace id. Durations and times apply to that span.",
        _examples(
            "spanstore traces --service frontend --errors --last 1h",
            "spanstore traces --attr http.response.status_code=500 --min-duration 100ms",
            "spanstore traces '{ status = error && span.http.route = \"/cart\" }'",
        ),
    )
    _add_query_options(p, spans=False)
    p.add_argument(
        "--limit", type=_argument_type(_limit), default=20, help="traces to show (default 20; all: no limit)"
    )

    p = command(
        "trace",
        _cmd_trace,
        "show one trace as a tree with a waterfall",
        "Show a trace: spans under their parents by start time, a waterfall scaled to the trace, status and\n"
        "key attributes. Spans whose parent is not in the store (and parent cycles) are shown apart, noted.",
        _examples("spanstore trace 4bf92f3577b34da6a3ce929d0e0e4736", "spanstore trace 4bf92f35 --full"),
    )
    p.add_argument("trace_id", type=_argument_type(_trace_id), metavar="TRACE_ID", help="32 hex chars, or a prefix")
    p.add_argument("--full", action="store_true", help="every attribute, event (with stack traces) and link")
    p.add_argument(
        "--open",
        action="store_true",
        help="open the trace in a browser: the UI of a running `spanstore serve` of this store, else an HTML file",
    )
    p.add_argument("--ui", metavar="URL", help="with --open: the UI's address (default: probe http://127.0.0.1:4318)")

    p = command(
        "spans",
        _cmd_spans,
        "search spans with any criteria",
        "Find spans matching every criterion (every SpanQuery field is an option).",
        _examples(
            "spanstore spans --service payment --errors --last 1h",
            "spanstore spans --attr 'http.response.status_code>=500' --order longest --limit 5",
            "spanstore spans --kind server --min-duration 250ms --since 2024-05-01T12:00:00Z",
        ),
    )
    _add_query_options(p, spans=True)
    p.add_argument("--limit", type=_argument_type(_limit), default=20, help="spans to show (default 20; all: no limit)")
    p.add_argument("--order", choices=("newest", "oldest", "longest"), default="newest", help="result order")

    p = command(
        "failures",
        _cmd_failures,
        "recent spans with status ERROR",
        "Spans with status ERROR that started recently, newest first, with their error type and message.",
        _examples("spanstore failures", "spanstore failures --last 24h --service payment --limit 50"),
    )
    p.add_argument("--last", type=_argument_type(parse_duration_ns), metavar="D", help="window (default 1h)")
    p.add_argument("--since", type=_argument_type(parse_time_unix_nano), metavar="TIME", help="instead of --last")
    p.add_argument("--until", type=_argument_type(parse_time_unix_nano), metavar="TIME", help="started before TIME")
    p.add_argument("--service", metavar="NAME", help="only this service")
    p.add_argument("--limit", type=_argument_type(_limit), default=20, help="spans to show (default 20; all: no limit)")

    p = command(
        "errors",
        _cmd_errors,
        "error types and their spans",
        "Without --type: every error type (attribute error.type, else the exception event's type) with its\n"
        "span count, services, last occurrence and newest trace. With --type: the spans of that type.",
        _examples("spanstore errors", "spanstore errors --type TimeoutError --last 1h"),
    )
    p.add_argument("--type", dest="error_type", metavar="TYPE", help="list the spans of this error type")
    p.add_argument("--service", metavar="NAME", help="only this service")
    p.add_argument("--last", type=_argument_type(parse_duration_ns), metavar="D", help="started within the last D")
    p.add_argument("--limit", type=_argument_type(_limit), default=20, help="rows to show (default 20; all: no limit)")

    p = command(
        "tail",
        _cmd_tail,
        "print the newest spans; -f follows spans other processes append",
        "Print the newest spans in the order they were written. With -f, keep printing spans as other\n"
        "processes append them (polling every 0.5 s) until Ctrl-C.",
        _examples("spanstore tail -n 50", "spanstore tail -f", "spanstore tail -f --json | jq .name"),
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new spans until Ctrl-C")
    p.add_argument("-n", "--lines", type=_argument_type(_count), default=20, help="spans to print first (default 20)")

    p = command(
        "import",
        _cmd_import,
        "load OTLP JSON / JSON Lines files into the store",
        "Load spans from OTLP JSON files (one document or JSON Lines; camelCase or snake_case; what the\n"
        "Collector's file exporter or the OTLP JSON file exporter writes) into the store, creating it.\n"
        "A directory means its *.json, *.jsonl and *.ndjson files. Spans already in the store (same trace\n"
        "and span id) are skipped. Invalid spans and lines are skipped and reported. Exit status 1 only when\n"
        "nothing valid was found.",
        _examples("spanstore import traces.jsonl", "spanstore import captures/ 'more/*.json'"),
    )
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR|GLOB", help="files, directories or glob patterns")
    p.add_argument("-v", "--verbose", action="store_true", help="list every problem, not only the first few")

    p = command(
        "export",
        _cmd_export,
        "write spans as OTLP JSON Lines or an HTML trace view, or send them to an OTLP endpoint",
        "Write spans as OTLP JSON Lines (the OpenTelemetry file format: the Collector's otlpjsonfile\n"
        "receiver reads it), oldest first; or, with --html, one self-contained HTML file showing every\n"
        "trace with a matching span (whole) as a waterfall, for a bug report; or, with --otlp, send them\n"
        "to an OTLP/HTTP endpoint with the official exporter. Without criteria: every span the store holds.",
        _examples(
            "spanstore export --out spans.jsonl",
            "spanstore export --out failures.jsonl --errors --last 1h",
            "spanstore export --out - --service cart | gzip > cart.jsonl.gz",
            "spanstore export --html bug-1234.html --trace-id 4bf92f3577b34da6a3ce929d0e0e4736",
            "spanstore export --otlp http://collector:4318 --last 1h",
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE", help="OTLP JSON Lines to FILE ('-' for stdout); replaced if it exists")
    target.add_argument(
        "--html", metavar="FILE", help="one self-contained HTML file with the trace view of each matching trace"
    )
    target.add_argument(
        "--otlp", metavar="URL", help="send to an OTLP/HTTP endpoint (a Collector, Jaeger, Tempo; /v1/traces implied)"
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="with --otlp: a request header, repeatable (e.g. an API key)",
    )
    _add_query_options(p, spans=True)
    p.add_argument("--limit", type=_argument_type(_limit), default=None, help="at most this many spans (newest)")

    p = command(
        "similar",
        _cmd_similar,
        "traces shaped like a given one, with scores and what differs",
        "The traces most like TRACE_ID: same (service, span, parent span) edges and errors first, durations\n"
        "second. score = shape overlap x (0.9 + 0.1 x duration ratio), in [0, 1]; each trace lists the edges\n"
        "it lacks (-) or has beyond (+) the given one.",
        _examples("spanstore similar 4bf92f3577b34da6a3ce929d0e0e4736", "spanstore similar 4bf92f35 --limit 3 --json"),
    )
    p.add_argument("trace_id", type=_argument_type(_trace_id), metavar="TRACE_ID", help="32 hex chars, or a prefix")
    p.add_argument("--limit", type=_argument_type(_count), default=10, help="traces to show (default 10)")

    p = command(
        "diff",
        _cmd_diff,
        "compare two traces: spans only in one, duration, status and attribute changes",
        "Align two traces by (service, span name, position among same-named siblings), as Jaeger's trace\n"
        "comparison does: - only in A, + only in B, ~ status or attributes changed; durations A -> B.",
        _examples("spanstore diff 4bf92f35 5d2c1e07", "spanstore diff 4bf92f35 5d2c1e07 --json | jq .change"),
    )
    p.add_argument("trace_a", type=_argument_type(_trace_id), metavar="A", help="trace id (or prefix) of trace A")
    p.add_argument("trace_b", type=_argument_type(_trace_id), metavar="B", help="trace id (or prefix) of trace B")

    p = command(
        "serve",
        _cmd_serve,
        "OTLP/HTTP receiver for any language, and a web UI (search, waterfall, errors)",
        "Receive spans over OTLP/HTTP (POST /v1/traces; protobuf or JSON, gzip) from services in any language\n"
        "and the Collector, appending them to the store (beside what FileBasedSpanProcessors write), and\n"
        "serve a web UI: trace search, a waterfall per trace, errors, new traces as they arrive. Without\n"
        "--ui-port the UI shares the OTLP port. Listens on 127.0.0.1 unless --host says otherwise.",
        _examples(
            "spanstore serve                                 # http://127.0.0.1:4318 (OTLP and UI)",
            "spanstore serve --ui-port 8080                  # UI on its own port",
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 node app.js   # send spans to it",
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument(
        "--otlp-port", type=_argument_type(_port), default=4318, help="OTLP/HTTP port (default 4318; 0: any free)"
    )
    p.add_argument("--ui-port", type=_argument_type(_port), default=None, help="UI port (default: the OTLP port)")
    p.add_argument(
        "--max-body",
        type=_argument_type(_size),
        default=16 << 20,
        metavar="BYTES",
        help="largest request body, compressed or not (default 16MiB; e.g. 4MiB, 500000)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser apps at ORIGIN post spans (CORS), repeatable; '*' for any",
    )

    p = command(
        "ops",
        _cmd_ops,
        "per operation: span count, error rate, p50/p95/p99 duration",
        "Per (service, span name): spans, errors and error rate, p50/p95/p99 duration (nearest rank) and\n"
        "the newest trace with an error, like Jaeger's service performance monitor.",
        _examples("spanstore ops", "spanstore ops --service cart --last 1h --sort p95", "spanstore ops --sort errors"),
    )
    p.add_argument("--service", metavar="NAME", help="only this service")
    p.add_argument("--last", type=_argument_type(parse_duration_ns), metavar="D", help="started within the last D")
    p.add_argument(
        "--sort", choices=("count", "errors", "p95"), default="count", help="most spans (default), error rate, p95"
    )
    p.add_argument("--limit", type=_argument_type(_limit), default=20, help="rows to show (default 20; 0: all)")
    return parser


# --- output -----------------------------------------------------------------------------------------------------------
class _Output:
    """Where a command writes: JSON Lines, or a rich console made on first use (rich is imported only then)."""

    def __init__(self, json_lines: bool) -> None:
        self.json = json_lines
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from spanstore.render import make_console

            self._console = make_console()
        return self._console

    def record(self, obj: Any) -> None:
        import msgspec

        sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")

    def spans(self, spans: Iterable[StoredSpan]) -> None:
        from spanstore.render import span_record

        for span in spans:
            self.record(span_record(span))

    def say(self, text: str, style: str = "") -> None:
        """A plain message for people (not printed in JSON mode)."""
        if not self.json:
            from rich.text import Text

            self.console.print(Text(text, style=style), soft_wrap=True)


def _store_path(args: argparse.Namespace) -> Path:
    return Path(args.path or os.environ.get("SPANSTORE_PATH") or DEFAULT_PATH)


def _path_option(args: argparse.Namespace) -> str:
    """``--path X `` to repeat in a hint, when the store is not the default one."""
    path = args.path or os.environ.get("SPANSTORE_PATH")
    return f"--path {path} " if path and path != DEFAULT_PATH else ""


def _store_options() -> dict[str, Any]:
    """The memory budgets for reading, from SPANSTORE_* variables (the processor's parser, imported only if set)."""
    if not any(name.startswith("SPANSTORE_") and name != "SPANSTORE_PATH" for name in os.environ):
        return {}
    from spanstore.processor import options_from_env

    wanted = ("max_spans", "max_bytes", "max_spans_per_trace")
    return {key: value for key, value in options_from_env().items() if key in wanted}


def _open_existing_log(path: Path) -> SpanLog:
    """The store's log, opened without creating anything; CommandError when there is no store."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        raise CommandError(f"no store at {path} ({_NO_STORE_HINT})")
    from spanstore.log import SpanLog

    return SpanLog(path, create=False, fsync="never")


class _Reader:
    def __init__(self, path: Path, store: SpanStore, log: SpanLog) -> None:
        self.path = path
        self.store = store
        self.log = log


@contextmanager
def _reading(args: argparse.Namespace, containing: bytes | None = None) -> Iterator[_Reader]:
    """Open the store at ``--path`` read-only (its spans are not changed; the derived index file may be refreshed).

    ``containing``: load only the log lines holding these bytes (see SpanLog.read), e.g. one trace's id, into a
    memory-only store.
    """
    from spanstore.store import DEFAULT_MAX_SPANS, SpanStore

    path = _store_path(args)
    log = _open_existing_log(path)
    try:
        options = _store_options()
        if containing is None:
            # The store's index file holds every sealed segment's spans: only the segments after it are decoded.
            store = SpanStore(path, read_only=True, write_index_in_child=True, **options)
        else:
            spans, _ = log.read(max_spans=options.get("max_spans", DEFAULT_MAX_SPANS), containing=containing)
            store = SpanStore(**options)
            store.add_many(spans)
            del spans
        try:
            yield _Reader(path, store, log)
        finally:
            store.close()
    finally:
        log.close()


def _traceql(text: str) -> SpanQuery:
    """Parse a TraceQL-subset query string (spanstore.traceql), or explain that this install has no parser."""
    try:
        from spanstore.traceql import parse_traceql  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as error:
        if error.name != "spanstore.traceql":
            raise
        raise UsageError(
            "query strings need spanstore.traceql, which this version of spanstore lacks; "
            "use options such as --service, --errors and --attr instead"
        ) from None
    return parse_traceql(text)


def _query(args: argparse.Namespace, **fixed: Any) -> SpanQuery:
    """A SpanQuery from the query string (if any) and the criteria options; options win over the string."""
    base = _traceql(args.query) if getattr(args, "query", None) else SpanQuery()
    criteria: dict[str, Any] = {}
    for option, field in (
        ("trace_id", "trace_id"),
        ("service", "service"),
        ("name", "name"),
        ("kind", "kind"),
        ("status", "status"),
        ("error_type", "error_type"),
        ("min_duration", "min_duration_ns"),
        ("max_duration", "max_duration_ns"),
        ("since", "since"),
        ("until", "until"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            criteria[field] = value
    if getattr(args, "errors", False):
        if criteria.get("status", "error") != "error":
            raise UsageError(f"--errors contradicts --status {criteria['status']}")
        criteria["status"] = "error"
    if getattr(args, "last", None) is not None:
        criteria["last"] = timedelta(microseconds=args.last / 1000)
    if getattr(args, "root", False):
        criteria["root_only"] = True
    filters = [*(getattr(args, "attr", None) or ()), *(getattr(args, "resource_attr", None) or ())]
    if filters:
        criteria["attributes"] = (*base.attributes, *filters)
    criteria.update(fixed)
    return base.replace(**criteria) if criteria else base


def _more_hint(out: _Output, shown: int, limit: int | None, what: str) -> None:
    if limit is not None and shown >= limit:
        out.say(f"Showing the first {shown} {what}; --limit N shows more (--limit all: every one).", "dim")


# --- commands ---------------------------------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.demo import SERVICES, run_demo
    from spanstore.query import get_trace, query_spans
    from spanstore.store import SpanStore

    path = _store_path(args)
    store = SpanStore(path)
    try:
        held_before = len(store)
        result = run_demo(path, seed=args.seed, requests=args.requests, store=store)
        ours = set(result.trace_ids)
        failures = [s for s in query_spans(store, status=StatusCode.ERROR) if s.trace_id in ours]
        errors_by_trace: dict[str, int] = {}
        for span in failures:
            errors_by_trace[span.trace_id] = errors_by_trace.get(span.trace_id, 0) + 1
        showcase = max(errors_by_trace, key=lambda t: (errors_by_trace[t], result.trace_ids.index(t)), default=None)
        trace = get_trace(store, showcase) if showcase else []
    finally:
        store.close()
    if out.json:
        out.record(
            {
                "path": str(path),
                "services": list(SERVICES),
                "requests": result.requests,
                "span_count": result.span_count,
                "trace_ids": result.trace_ids,
                "error_trace_ids": result.error_trace_ids,
                "error_span_count": len(failures),
            }
        )
        return 0
    from rich.text import Text

    from spanstore.render import print_spans, print_trace

    console = out.console
    intro = Text("spanstore demo: ", style="bold")
    intro.append(f"{result.requests} requests to a shop of {len(SERVICES)} services ({', '.join(SERVICES)}).\n")
    intro.append(f"{_plural(result.span_count, 'span')} in {_plural(len(result.trace_ids), 'trace')}, ")
    intro.append(f"{len(result.error_trace_ids)} with errors", style="bold red" if result.error_trace_ids else "")
    intro.append(f", stored in {path} (OTLP JSON Lines) in {result.elapsed_seconds:.2f} s.")
    if held_before:
        intro.append(
            f"\nAdded to the {_plural(held_before, 'span')} the store already held; the tables below show only "
            f"this run's (--path DIR keeps a demo apart).",
            style="yellow",
        )
    console.print(intro, soft_wrap=True)
    console.print()
    if failures:
        shown = failures[:8]
        count = f"{len(shown)} of {len(failures)}" if len(shown) < len(failures) else f"{len(failures)}"
        title = f"Recent failures ({count} error spans; spanstore failures --limit all lists every one)"
        print_spans(
            console, shown, title=title if len(shown) < len(failures) else f"Recent failures ({count})", errors=True
        )
        console.print()
    if trace:
        console.print(Text("The failing trace with the most errors", style="bold"))
        console.print()
        print_trace(console, trace)
        console.print()
    where = _path_option(args)
    hints = [
        (f"spanstore {where}traces --errors", "traces with failures"),
        (f"spanstore {where}trace {showcase or '<trace id>'} --full", "every attribute and stack trace"),
        (f"spanstore {where}spans --service payment --attr 'http.response.status_code>=400'", "span search"),
        (f"spanstore {where}errors", "error types, counts, where they happen"),
        (f"spanstore {where}stats", "what the store holds"),
    ]
    console.print(Text("Next, try:", style="bold"))
    width = max(len(command) for command, _ in hints)
    for command, what in hints:
        line = Text("  " + command.ljust(width + 2))
        line.append(what, style="dim")
        console.print(line, no_wrap=True, crop=False)
    return 0


#: What ``spanstore run`` sets, unless the environment already does.
ZERO_CODE_ENVIRONMENT = {
    "OTEL_TRACES_EXPORTER": "spanstore",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


def _cmd_run(args: argparse.Namespace, out: _Output) -> int:
    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        raise UsageError("expected a program to run, e.g. spanstore run -- python app.py")
    instrument = shutil.which(
        "opentelemetry-instrument", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    )
    if instrument is None:
        raise CommandError(
            "opentelemetry-instrument was not found next to this Python or on PATH: "
            "pip install opentelemetry-distro (and the instrumentations your program uses)"
        )
    environment = dict(os.environ)
    for name, value in ZERO_CODE_ENVIRONMENT.items():
        environment.setdefault(name, value)
    environment["SPANSTORE_PATH"] = os.path.abspath(_store_path(args))
    if args.service:
        environment["OTEL_SERVICE_NAME"] = args.service
    try:
        return subprocess.call([instrument, *program], env=environment)
    except KeyboardInterrupt:  # the program got the signal too; its status is what counts
        return 130


def _cmd_stats(args: argparse.Namespace, out: _Output) -> int:
    import msgspec

    with _reading(args) as reader:
        stats = reader.store.stats().to_dict()
        stats["path"] = str(reader.path)
        stats["log"] = msgspec.to_builtins(reader.log.stats())
    if out.json:
        out.record(stats)
        return 0
    from spanstore.render import print_stats

    print_stats(out.console, stats)
    return 0


def _cmd_traces(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import find_traces

    query = _query(args)
    with _reading(args) as reader:
        limit = args.limit if args.limit is not None else max(1, len(reader.store.trace_ids()))
        summaries = find_traces(reader.store, query, limit=limit)
        held = reader.store.stats()
    if out.json:
        for summary in summaries:
            out.record(summary)
        return 0
    if not summaries:
        out.say(
            f"No traces match (the store holds {_plural(held.trace_count, 'trace')}, "
            f"{_plural(held.span_count, 'span')})."
        )
        return 0
    from spanstore.render import print_traces

    print_traces(out.console, summaries)
    _more_hint(out, len(summaries), args.limit, "traces")
    return 0


def _resolve_trace_id(store: SpanStore, prefix: str, path: Path) -> str:
    if len(prefix) == 32:
        return prefix
    matches = [trace_id for trace_id in store.trace_ids() if trace_id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CommandError(f"no trace id starting with {prefix} in {path} (`spanstore traces` lists them)")
    shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise CommandError(f"trace id prefix {prefix} is ambiguous in {path}: {len(matches)} traces ({shown})")


def _cmd_trace(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import get_trace

    # spanstore writes canonical lines (lowercase ids, no spaces): only lines naming the trace need decoding.
    prefix = args.trace_id.lower()
    with _reading(args, containing=f'"traceId":"{prefix}'.encode()) as reader:
        trace_id = _resolve_trace_id(reader.store, prefix, reader.path)
        spans = get_trace(reader.store, trace_id)
    if not spans:
        raise CommandError(f"no trace {trace_id} in {reader.path} (`spanstore traces` lists them)")
    if args.open:
        return _open_trace(args, out, spans, reader.path)
    if out.json:
        out.spans(spans)
        return 0
    from spanstore.render import print_trace

    print_trace(out.console, spans, full=args.full)
    return 0


def _cmd_spans(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import query_spans

    query = _query(args, limit=args.limit, order=args.order)
    with _reading(args) as reader:
        spans = query_spans(reader.store, query)
        held = reader.store.stats().span_count
    if out.json:
        out.spans(spans)
        return 0
    if not spans:
        out.say(f"No spans match (the store holds {_plural(held, 'span')}).")
        return 0
    from spanstore.render import print_spans

    print_spans(out.console, spans)
    _more_hint(out, len(spans), args.limit, "spans")
    return 0


def _cmd_failures(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import query_spans, recent_failures

    window = "the given time range"
    with _reading(args) as reader:
        if args.since is None and args.until is None:
            last = args.last if args.last is not None else 3_600_000_000_000
            window = f"the last {_duration_text(last)}"
            spans = recent_failures(reader.store, hours=last / 3.6e12, limit=args.limit, service=args.service)
        else:
            query = SpanQuery(
                status=StatusCode.ERROR,
                since=args.since,
                until=args.until,
                last=timedelta(microseconds=args.last / 1000) if args.last is not None else None,
                service=args.service,
                limit=args.limit,
            )
            spans = query_spans(reader.store, query)
        stats = reader.store.stats()
        newest_error = query_spans(reader.store, status=StatusCode.ERROR, limit=1) if stats.error_span_count else []
    if out.json:
        out.spans(spans)
        return 0
    if not spans:
        hint = ""
        if newest_error:
            age = max(0, time.time_ns() - newest_error[0].start_time_unix_nano)
            hint = (
                f" The store holds {_plural(stats.error_span_count, 'error span')}; the newest started "
                f"{_duration_text(_rounded_duration(age))} ago: {_window_hint(age)}."
            )
        out.say(f"No failures in {window}.{hint}")
        return 0
    from spanstore.render import print_spans

    print_spans(out.console, spans, errors=True)
    _more_hint(out, len(spans), args.limit, "failures")
    return 0


_HINT_WINDOWS_NS = [n * 3_600_000_000_000 for n in (1, 6, 24, 24 * 7, 24 * 30, 24 * 365)]


def _rounded_duration(ns: int) -> int:
    """``ns`` rounded to the nearest whole minute, hour or day (at least one), for a message."""
    for size in (60_000_000_000, 3_600_000_000_000, 86_400_000_000_000):
        if ns < 48 * size or size == 86_400_000_000_000:
            return max(1, round(ns / size)) * size
    return ns  # pragma: no cover


def _window_hint(age_ns: int) -> str:
    """A ``--last``/``--since`` option that reaches back ``age_ns``."""
    for window in _HINT_WINDOWS_NS:
        if age_ns < window:
            return f"try --last {_duration_text(window)}"
    when = datetime.fromtimestamp((time.time_ns() - age_ns) // 10**9, tz=timezone.utc).date().isoformat()
    return f"try --since {when}"


def _duration_text(ns: int) -> str:
    for unit, size in (("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns / 1e9:g}s"


def _cmd_errors(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import filter_by_error_type

    last = timedelta(microseconds=args.last / 1000) if args.last is not None else None
    with _reading(args) as reader:
        if args.error_type:
            spans = filter_by_error_type(
                reader.store, args.error_type, limit=args.limit, service=args.service, last=last
            )
        else:
            rows = _error_types(reader.store.spans(), args.service, last)
    if args.error_type:
        if out.json:
            out.spans(spans)
        elif not spans:
            out.say(f"No spans with error type {args.error_type} (`spanstore errors` lists the error types).")
        else:
            from spanstore.render import print_spans

            print_spans(out.console, spans, errors=True)
            _more_hint(out, len(spans), args.limit, "spans")
        return 0
    shown = rows if args.limit is None else rows[: args.limit]
    if out.json:
        for row in shown:
            out.record(row)
    elif not rows:
        out.say("No errors: no span has status ERROR, an error.type attribute or an exception event.")
    else:
        from spanstore.render import print_error_types

        print_error_types(out.console, shown)
        _more_hint(out, len(shown), args.limit if len(rows) > len(shown) else None, "error types")
    return 0


def _error_types(spans: Sequence[StoredSpan], service: str | None, last: timedelta | None) -> list[dict[str, Any]]:
    """Error types with their span count, services, last start time and newest trace, most frequent first."""
    since = time.time_ns() - last // timedelta(microseconds=1) * 1000 if last is not None else None
    rows: dict[str, dict[str, Any]] = {}
    for span in spans:  # oldest first: the last span seen is the newest
        error_type = span.error_type
        if error_type is None and span.status_code != StatusCode.ERROR:
            continue  # not an error at all; an ERROR span without a type gets a row of its own (key None)
        if service is not None and span.service_name != service:
            continue
        if since is not None and span.start_time_unix_nano < since:
            continue
        row = rows.get(error_type)
        if row is None:
            row = rows[error_type] = {"error_type": error_type, "span_count": 0, "services": set()}
        row["span_count"] += 1
        row["services"].add(span.service_name)
        row["last_seen_unix_nano"] = span.start_time_unix_nano
        row["trace_id"] = span.trace_id
    ordered = sorted(rows.values(), key=lambda r: (-r["span_count"], r["error_type"] or ""))
    for row in ordered:
        row["services"] = sorted(row["services"])
    return ordered


def _cmd_tail(args: argparse.Namespace, out: _Output) -> int:
    path = _store_path(args)
    if args.follow:
        try:
            log = _wait_for_store(path, out)
        except KeyboardInterrupt:
            return 0
    else:
        log = _open_existing_log(path)
    try:
        spans, position = log.read(max_spans=args.lines)

        def emit(batch: Sequence[StoredSpan]) -> None:
            if out.json:
                out.spans(batch)
            else:
                from spanstore.render import span_line

                for span in batch:
                    out.console.print(span_line(span, out.console), soft_wrap=True)
            sys.stdout.flush()

        emit(spans)
        if not args.follow:
            return 0
        if not out.json and sys.stderr.isatty():
            print(f"Following {log.path} (Ctrl-C to stop)", file=sys.stderr)
        try:
            while True:
                _sleep(_FOLLOW_INTERVAL_SECONDS)
                spans, position = log.read(position)
                if spans:
                    emit(spans)
        except KeyboardInterrupt:
            return 0
    finally:
        log.close()


def _wait_for_store(path: Path, out: _Output) -> SpanLog:
    """``tail -f`` started before the application: wait (quietly, after one note) until the store exists."""
    announced = False
    while True:
        try:
            return _open_existing_log(path)
        except CommandError:
            if not announced and not out.json:
                print(f"Waiting for a store at {path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
                announced = True
        _sleep(_FOLLOW_INTERVAL_SECONDS)


def _expand_inputs(inputs: Sequence[str], store_path: Path) -> tuple[list[Path], list[str]]:
    """The files named by FILE|DIR|GLOB arguments (each once, in order), and a problem line per unmatched argument."""
    from spanstore.log import MARKER_NAME, is_segment_name

    files: list[Path] = []
    problems: list[str] = []
    try:
        store = store_path.resolve()
    except OSError:  # pragma: no cover - resolve rarely fails
        store = store_path
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / MARKER_NAME).is_file():
            # Another store: its segments hold the spans; its marker file is metadata, not spans.
            found = sorted(p for p in path.iterdir() if p.is_file() and is_segment_name(p.name))
            if not found:
                problems.append(f"{item}: a spanstore directory with no segments (no spans to import)")
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _IMPORT_SUFFIXES)
            if not found:
                problems.append(f"{item}: no *.json, *.jsonl or *.ndjson files in this directory")
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                problems.append(f"{item}: no file matches this pattern")
        else:
            problems.append(f"{item}: no such file or directory")
            continue
        for file in found:
            resolved = file.resolve()
            if resolved.parent == store:
                problems.append(f"{file}: skipped, it is a segment of the store being imported into")
            elif file not in files:
                files.append(file)
    return files, problems


def _import_key(span: StoredSpan) -> tuple[object, ...]:
    """What makes an imported span "already there": its ids, kind and start. Zipkin's shared spans (a client and
    a server half with one span id) differ in kind and both stay; a file imported twice adds nothing."""
    return (span.trace_id, span.span_id, span.kind, span.start_time_unix_nano)


def _cmd_import(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.otlp import read_file

    path = _store_path(args)
    files, problems = _expand_inputs(args.inputs, path)
    # Duplicates are found by looking up the traces being imported in the store (SpanLog.read(trace_ids=...):
    # only log lines naming them are decoded), a batch of input files at a time, never by decoding the whole log.
    existing: SpanLog | None = _open_existing_log(path) if path.exists() and files else None
    seen: set[tuple[object, ...]] = set()
    looked_up: set[str] = set()  # trace ids already looked up in the store
    counts = dict.fromkeys(
        ("valid", "loaded", "duplicates", "invalid", "corrupt", "other", "files_loaded", "problems_not_kept"), 0
    )
    traces: set[str] = set()
    log: SpanLog | None = None
    batch: list[list[StoredSpan]] = []  # spans of files read but not yet written, per file
    batch_spans = 0

    def write_batch() -> None:
        nonlocal log, batch_spans
        new_traces = {span.trace_id for spans in batch for span in spans} - looked_up
        if existing is not None and new_traces:
            seen.update(_import_key(span) for span in existing.read(trace_ids=new_traces)[0])
        looked_up.update(new_traces)
        for spans in batch:
            fresh = []
            for span in spans:
                key = _import_key(span)
                if key in seen:
                    counts["duplicates"] += 1
                else:
                    seen.add(key)
                    fresh.append(span)
            if not fresh:
                continue
            if log is None:
                from spanstore.log import SpanLog

                log = SpanLog(path, fsync="interval")
            log.append(fresh)
            counts["loaded"] += len(fresh)
            counts["files_loaded"] += 1
            traces.update(span.trace_id for span in fresh)
        batch.clear()
        batch_spans = 0

    progress = _progress(files, out)
    try:
        for file in files:
            if progress is not None:
                progress.advance(file)
            try:
                result = read_file(file)
            except SpanStoreError as error:
                problems.append(str(error))
                continue
            except Exception as error:  # read_file reports bad content itself; a bug in it must not stop the rest
                problems.append(f"{file}: not imported: {type(error).__name__}: {error}")
                continue
            counts["valid"] += len(result.spans)
            counts["invalid"] += result.skipped_spans
            counts["corrupt"] += result.corrupt_line_count
            counts["other"] += result.other_signal_lines
            # Keep the text of the first problems only: a hostile input can have millions (counted, not kept).
            counts["problems_not_kept"] += (result.corrupt_line_count - len(result.corrupt_lines)) + (
                result.issue_count - len(result.issues)
            )
            for problem in [*result.corrupt_lines, *result.issues]:
                if len(problems) < _PROBLEMS_KEPT:
                    problems.append(str(problem))
                else:
                    counts["problems_not_kept"] += 1
            if result.spans:
                batch.append(result.spans)
                batch_spans += len(result.spans)
                if batch_spans >= _IMPORT_BATCH_SPANS:
                    write_batch()
        write_batch()
    finally:
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
        if existing is not None:
            existing.close()
    summary = {
        "path": str(path),
        "files": len(files),
        "files_loaded": counts["files_loaded"],
        "spans_loaded": counts["loaded"],
        "traces_loaded": len(traces),
        "duplicate_spans": counts["duplicates"],
        "invalid_spans": counts["invalid"],
        "corrupt_lines": counts["corrupt"],
        "other_signal_lines": counts["other"],
        "problems": problems,
        "problems_not_listed": counts["problems_not_kept"],
    }
    if out.json:
        out.record(summary)
    else:
        _print_import_summary(out, summary, counts["valid"], args.verbose)
    if counts["valid"] == 0:
        where = f"{len(files)} file{'s' if len(files) != 1 else ''}" if files else " ".join(args.inputs)
        raise CommandError(f"nothing to import: no valid OTLP spans in {where}")
    return 0


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_import_summary(out: _Output, summary: dict[str, Any], valid: int, verbose: bool) -> None:
    from rich.text import Text

    console = out.console
    if valid:
        spans = _plural(summary["spans_loaded"], "span")
        line = Text(f"Imported {spans} ({_plural(summary['traces_loaded'], 'trace')}) ", style="bold")
        line.append(f"from {summary['files_loaded']} of {_plural(summary['files'], 'file')} into {summary['path']}.")
        console.print(line)
    skipped = [
        (summary["invalid_spans"], "invalid span", ""),
        (summary["corrupt_lines"], "line", " that is not OTLP traces"),
        (summary["duplicate_spans"], "duplicate span", " (the same span already in the store or the input)"),
        (summary["other_signal_lines"], "metric/log line", " (not traces)"),
    ]
    shown = [
        _plural(count, what) + (note if count == 1 else note.replace(" is ", " are "))
        for count, what, note in skipped
        if count
    ]
    if shown:
        console.print(Text("Skipped " + ", ".join(shown) + "."))
    problems = summary["problems"]
    total = len(problems) + summary["problems_not_listed"]
    if problems:
        listed = problems if verbose else problems[:_PROBLEMS_SHOWN]
        if len(listed) == total:
            more = ""
        elif len(listed) < len(problems):
            more = f" (first {len(listed)} of {total:,}; -v lists {'all' if total == len(problems) else len(problems)})"
        else:
            more = f" (first {len(listed)} of {total:,})"
        console.print(Text(f"Problems{more}:", style="yellow"))
        for problem in listed:
            console.print(Text("  " + _clip(problem, 300)), soft_wrap=True)


class _FileProgress:
    """A rich progress bar over files, weighted by size (only made for big inputs on a terminal)."""

    def __init__(self, sizes: dict[Path, int]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._sizes = sizes
        self._progress = Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("", total=sum(sizes.values()))
        self._previous: Path | None = None
        self._progress.start()

    def advance(self, file: Path) -> None:
        if self._previous is not None:
            self._progress.advance(self._task, self._sizes[self._previous])
        self._progress.update(self._task, description=file.name)
        self._previous = file

    def close(self) -> None:
        self._progress.stop()


def _progress(files: Sequence[Path], out: _Output) -> _FileProgress | None:
    if out.json or not sys.stderr.isatty() or not files:
        return None
    sizes = {}
    for file in files:
        try:
            sizes[file] = file.stat().st_size
        except OSError:
            sizes[file] = 0
    if sum(sizes.values()) < 8 << 20 and len(files) < 50:
        return None
    return _FileProgress(sizes)


def _cmd_export(args: argparse.Namespace, out: _Output) -> int:
    if args.html is not None:
        return _export_html(args, out)
    if args.otlp is not None:
        return _export_otlp(args, out)
    if args.header:
        raise UsageError("--header goes with --otlp")
    from spanstore.otlp import encode_spans
    from spanstore.query import query_spans

    if args.out == "-" and out.json:
        raise UsageError("--json and --out - would both write to stdout; pick one")
    query = _query(args, limit=args.limit, order="newest" if args.limit is not None else "oldest")
    with _reading(args) as reader:
        spans = query_spans(reader.store, query)
    if args.limit is not None:
        spans.reverse()  # the newest N, written oldest first
    lines = encode_spans(spans)
    if args.out == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.flush()
    else:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.writelines(lines)
    summary = {"out": args.out, "spans": len(spans), "traces": len({s.trace_id for s in spans}), "lines": len(lines)}
    what = f"{_plural(summary['spans'], 'span')} ({_plural(summary['traces'], 'trace')})"
    if out.json:
        out.record(summary)
    elif args.out == "-":
        print(f"Exported {what} to stdout as OTLP JSON Lines.", file=sys.stderr)
    else:
        out.say(f"Exported {what} to {args.out} as OTLP JSON Lines.")
    return 0


_HTML_TRACES_DEFAULT = 100


def _matching_traces(store: SpanStore, query: SpanQuery, limit: int | None) -> list[list[StoredSpan]]:
    """Whole traces holding a span that matches, newest match first, at most ``limit``."""
    from spanstore.query import get_trace, query_spans

    trace_ids: dict[str, None] = {}
    for span in query_spans(store, query.replace(limit=None, order="newest")):
        trace_ids.setdefault(span.trace_id, None)
        if limit is not None and len(trace_ids) >= limit:
            break
    return [get_trace(store, trace_id) for trace_id in trace_ids]


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _export_html(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.webui import export_document

    if args.header:
        raise UsageError("--header goes with --otlp")
    limit = _HTML_TRACES_DEFAULT if args.limit is None else args.limit
    with _reading(args) as reader:
        traces = _matching_traces(reader.store, _query(args), limit)
        held = reader.store.stats().trace_count
    if not traces:
        raise CommandError(f"no trace matches (the store holds {held:,} traces); nothing written")
    title = f"spanstore: {len(traces)} trace{'s' if len(traces) != 1 else ''}" if len(traces) > 1 else ""
    if not title:
        head = traces[0][0]
        title = f"{head.service_name} {head.name} · trace {head.trace_id}"
    document = export_document(traces, title=title)
    if args.html == "-":
        sys.stdout.write(document)
        return 0
    _write_private(args.html, document.encode("utf-8"))
    spans = sum(len(trace) for trace in traces)
    summary = {"html": args.html, "traces": len(traces), "spans": spans, "bytes": len(document.encode())}
    if out.json:
        out.record(summary)
    else:
        more = f" (the newest {limit}; --limit N for more)" if args.limit is None and len(traces) >= limit else ""
        out.say(f"Wrote {_plural(len(traces), 'trace')} ({_plural(spans, 'span')}) to {args.html}{more}.")
    return 0


def _export_otlp(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.query import query_spans
    from spanstore.ship import ExportFailedError, export_otlp, traces_endpoint

    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--header expects KEY=VALUE, got {item!r}")
        headers[key.strip()] = value.strip()
    try:
        endpoint = traces_endpoint(args.otlp)
    except ValueError as error:
        raise UsageError(f"--otlp: {error}") from None
    query = _query(args, limit=args.limit, order="newest" if args.limit is not None else "oldest")
    with _reading(args) as reader:
        spans = query_spans(reader.store, query)
    if args.limit is not None:
        spans.reverse()
    if not spans:
        out.say("No spans match; nothing sent.")
        if out.json:
            out.record({"otlp": endpoint, "spans": 0, "traces": 0})
        return 0
    try:
        sent = export_otlp(spans, endpoint, headers=headers or None)
    except ExportFailedError as error:
        raise CommandError(str(error)) from None
    except ImportError as error:
        raise CommandError(str(error)) from None
    traces = len({span.trace_id for span in spans})
    if out.json:
        out.record({"otlp": endpoint, "spans": sent, "traces": traces})
    else:
        out.say(f"Sent {_plural(sent, 'span')} ({_plural(traces, 'trace')}) to {endpoint}.")
    return 0


def _probe_ui(base: str, store_path: Path) -> bool:
    """True when a `spanstore serve` of this store answers at ``base`` (its /api/info names the same path)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(base.rstrip("/") + "/api/info", timeout=0.3) as response:  # noqa: S310
            info = json.loads(response.read(65536))
        return isinstance(info, dict) and info.get("path") == str(store_path.resolve())
    except (OSError, ValueError):
        return False


def _open_trace(args: argparse.Namespace, out: _Output, spans: Sequence[StoredSpan], path: Path) -> int:
    import tempfile
    import webbrowser

    trace_id = spans[0].trace_id
    base = args.ui or "http://127.0.0.1:4318"
    if args.ui or _probe_ui(base, path):
        target = f"{base.rstrip('/')}/trace/{trace_id}"
    else:
        from spanstore.webui import export_document

        head = spans[0]
        document = export_document([spans], title=f"{head.service_name} {head.name} · trace {trace_id}")
        fd, name = tempfile.mkstemp(prefix=f"spanstore-trace-{trace_id[:8]}-", suffix=".html")
        with os.fdopen(fd, "wb") as file:
            file.write(document.encode("utf-8"))
        target = Path(name).as_uri()
    opened = webbrowser.open(target)
    if out.json:
        out.record({"trace_id": trace_id, "url": target, "opened": bool(opened)})
    elif opened:
        out.say(f"Opened {target}")
    else:
        out.say(f"No browser could be started; open {target}")
    return 0


def _cmd_serve(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.serve import run

    path = _store_path(args)
    try:
        run(
            path,
            host=args.host,
            otlp_port=args.otlp_port,
            ui_port=args.ui_port,
            max_body_bytes=args.max_body,
            allowed_origins=tuple(args.allow_origin),
            store_options=_store_options(),
        )
    except OSError as error:
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise CommandError(
                f"cannot listen on {args.host}: {error.strerror} (another spanstore serve or a Collector? "
                "--otlp-port / --ui-port pick other ports)"
            ) from None
        raise
    return 0


def _similar_record(found: Any) -> dict[str, Any]:
    from spanstore.render import token_record

    summary = found.summary
    return {
        "trace_id": found.trace_id,
        "score": found.score,
        "structure": found.structure,
        "duration_ratio": found.duration_ratio,
        "duration_ns": summary.duration_ns,
        "span_count": summary.span_count,
        "error_count": summary.error_count,
        "root_service": summary.root_service,
        "root_name": summary.root_name,
        "start_time_unix_nano": summary.start_time_unix_nano,
        "missing": [token_record(token, count) for token, count in found.missing],
        "extra": [token_record(token, count) for token, count in found.extra],
    }


def _cmd_similar(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.analysis import find_similar_traces
    from spanstore.query import find_traces

    with _reading(args) as reader:
        trace_id = _resolve_trace_id(reader.store, args.trace_id, reader.path)
        asked = find_traces(reader.store, trace_id=trace_id, limit=1)
        if not asked:
            raise CommandError(f"no trace {trace_id} in {reader.path} (`spanstore traces` lists them)")
        found = find_similar_traces(reader.store, trace_id, limit=args.limit)
    if out.json:
        for item in found:
            out.record(_similar_record(item))
        return 0
    from spanstore.render import print_similar

    print_similar(out.console, asked[0], found)
    if not found:
        out.say("No other trace shares an edge (service, span, parent span) with this one.")
    return 0


def _diff_record(entry: Any) -> dict[str, Any]:
    from spanstore.render import _builtin

    return {
        "change": entry.change,
        "path": [list(step) for step in entry.path],
        "service": (entry.a or entry.b).service_name,
        "name": (entry.a or entry.b).name,
        "span_id_a": entry.a.span_id if entry.a is not None else None,
        "span_id_b": entry.b.span_id if entry.b is not None else None,
        "duration_a_ns": entry.a.duration_ns if entry.a is not None else None,
        "duration_b_ns": entry.b.duration_ns if entry.b is not None else None,
        "duration_delta_ns": entry.duration_delta_ns,
        "duration_relative": entry.duration_relative,
        "status": None if entry.status is None else {"a": list(entry.status[0]), "b": list(entry.status[1])},
        "attributes": [{"key": k, "a": _builtin(a), "b": _builtin(b)} for k, a, b in entry.attributes],
    }


def _cmd_diff(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.analysis import diff_traces

    with _reading(args) as reader:
        trace_a = _resolve_trace_id(reader.store, args.trace_a, reader.path)
        trace_b = _resolve_trace_id(reader.store, args.trace_b, reader.path)
        try:
            diff = diff_traces(reader.store, trace_a, trace_b)
        except TraceNotFoundError as error:
            raise CommandError(f"{error} at {reader.path} (`spanstore traces` lists them)") from None
    if out.json:
        for entry in diff.spans:
            out.record(_diff_record(entry))
        return 0
    from spanstore.render import print_diff

    print_diff(out.console, diff)
    return 0


def _cmd_ops(args: argparse.Namespace, out: _Output) -> int:
    from spanstore.analysis import operation_stats

    criteria: dict[str, Any] = {}
    if args.service is not None:
        criteria["service"] = args.service
    if args.last is not None:
        criteria["last"] = timedelta(microseconds=args.last / 1000)
    with _reading(args) as reader:
        rows = operation_stats(reader.store, sort=args.sort, **criteria)
        held = reader.store.stats().span_count
    shown = rows if args.limit is None else rows[: args.limit]
    if out.json:
        for row in shown:
            out.record(row)
        return 0
    if not rows:
        out.say(f"No spans match (the store holds {held:,} spans).")
        return 0
    from spanstore.render import print_operation_stats

    print_operation_stats(out.console, shown)
    _more_hint(out, len(shown), args.limit if len(rows) > len(shown) else None, "operations")
    return 0


# --- entry point ------------------------------------------------------------------------------------------------------
def _exit_status(exit: SystemExit) -> int:
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _fail(message: str) -> int:
    print(f"spanstore: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spanstore`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Never raises for bad input or a failing command: usage errors return 2 (argparse prints usage and the error),
    failures print ``spanstore: error: ...`` to stderr and return 1.

    >>> main(["--version"])  # doctest: +ELLIPSIS
    spanstore ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return _exit_status(exit)
    if args.command is None:
        parser.print_help()
        return 0
    out = _Output(args.json)
    try:
        return args.handler(args, out)
    except (UsageError, InvalidQueryError) as error:
        try:
            args.command_parser.error(str(error))
        except SystemExit as exit:
            return _exit_status(exit)
        return 2  # pragma: no cover - error() always exits
    except BrokenPipeError:
        # The reader went away (`spanstore spans --json | head`): stop quietly, as Python's docs recommend.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (SpanStoreError, OSError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130
