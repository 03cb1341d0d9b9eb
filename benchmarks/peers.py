"""The peers spanstore is measured against, each answering the same query set with the same semantics.

* :class:`ListScan`: what users do today. Each query takes ``InMemorySpanExporter.get_finished_spans()`` (a fresh
  tuple of SDK ``ReadableSpan``s) and scans it with a comprehension; top-``limit`` selections use
  ``heapq.nlargest`` (a sort would be slower).
* :class:`Sqlite`: stdlib ``sqlite3``, **in memory** (``":memory:"``, the fair match for an in-memory store), a
  ``spans`` table (trace_id, span_id, parent, name, service, kind, status, error_type, start, end, duration) and an
  ``attributes`` table (span rowid, key, str/int/float value columns, plus ``other_value`` holding bools and arrays
  as JSON so no type is confused with another), an index on every filtered column (built after loading, which is
  faster), loaded with ``executemany`` from the same ``StoredSpan``s spanstore holds.

The query methods (the protocol ``bench_queries`` drives; spanstore's adapter has the same):

* span queries return ``[(trace_id, span_id), ...]`` (hex) in the result order; the sqlite3 peer also fetches
  the result spans' rows and attributes (what a caller needs to show them: spanstore returns the spans);
* ``find_traces`` returns ``[(trace_id, root_name, span_count, error_count, duration_ns), ...]``.

Semantics follow ``spanstore.query``: "newest" is start time descending (the workload's start times are unique,
so ties never decide a result); ``since`` bounds the start time inclusively; ``min_duration_ns`` is inclusive;
``service`` is the resource's ``service.name``; the error type is attribute ``error.type``, else the
``exception.type`` of the first ``exception`` event; attribute equality is typed (``"500"`` is not ``500``);
``find_traces`` returns the traces holding a span that matches every criterion, ordered by their newest matching
span, each summarized over all its spans.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanstore.model import StoredSpan

__all__ = ["ListScan", "Sqlite", "SpanIds", "TraceRows"]

SpanIds = list[tuple[str, str]]
TraceRows = list[tuple[str, str, int, int, int]]

_NS_PER_HOUR = 3600 * 1_000_000_000
_start_time = attrgetter("start_time")


# --- list scan over the SDK's own spans -------------------------------------------------------------------------


def _service(span: ReadableSpan) -> object:
    return span.resource.attributes.get("service.name")


def _is_error(span: ReadableSpan) -> bool:
    return span.status.status_code.value == 2  # trace_api.StatusCode.ERROR


def _error_type(span: ReadableSpan) -> object:
    value = span.attributes.get("error.type")
    if value is not None:
        return value
    for event in span.events:
        if event.name == "exception":
            return event.attributes.get("exception.type")
    return None


def _typed_equal(actual: object, expected: object) -> bool:
    if type(expected) in (int, float) and type(actual) in (int, float):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _number_at_least(actual: object, bound: float) -> bool:
    return type(actual) in (int, float) and actual >= bound  # type: ignore[operator]


def _ids(spans: Iterable[ReadableSpan]) -> SpanIds:
    return [(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in spans]


def _newest(spans: Iterable[ReadableSpan], limit: int | None) -> list[ReadableSpan]:
    if limit is None:
        return sorted(spans, key=_start_time, reverse=True)
    return heapq.nlargest(limit, spans, key=_start_time)


class ListScan:
    """Queries as comprehensions over ``exporter.get_finished_spans()``: O(n) per query, no index."""

    name = "list scan"

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def get_trace(self, trace_id: str) -> SpanIds:
        wanted = int(trace_id, 16)
        spans = [s for s in self.exporter.get_finished_spans() if s.context.trace_id == wanted]
        return _ids(sorted(spans, key=_start_time))

    def recent_failures(self, hours: float = 1.0, limit: int | None = 100) -> SpanIds:
        since = time.time_ns() - int(hours * _NS_PER_HOUR)
        spans = self.exporter.get_finished_spans()
        return _ids(_newest((s for s in spans if _is_error(s) and s.start_time >= since), limit))

    def filter_by_error_type(self, error_type: str, limit: int | None = 100) -> SpanIds:
        spans = self.exporter.get_finished_spans()
        return _ids(_newest((s for s in spans if _error_type(s) == error_type), limit))

    def filter_by_attribute(self, key: str, value: Any, op: str = "==", limit: int | None = 100) -> SpanIds:
        spans = self.exporter.get_finished_spans()
        if op == "==":
            matches = (s for s in spans if _typed_equal(s.attributes.get(key), value))
        elif op == ">=":
            matches = (s for s in spans if _number_at_least(s.attributes.get(key), value))
        else:
            raise ValueError(f"list scan peer implements op '==' and '>=', got {op!r}")
        return _ids(_newest(matches, limit))

    def _matching(
        self, service: str | None, status_error: bool, since: int | None, min_duration_ns: int | None
    ) -> Iterable[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if (since is None or s.start_time >= since)
            and (not status_error or _is_error(s))
            and (service is None or _service(s) == service)
            and (min_duration_ns is None or s.end_time - s.start_time >= min_duration_ns)
        ]

    def query_spans(
        self,
        *,
        service: str | None = None,
        status_error: bool = False,
        since: int | None = None,
        min_duration_ns: int | None = None,
        limit: int | None = 100,
    ) -> SpanIds:
        return _ids(_newest(self._matching(service, status_error, since, min_duration_ns), limit))

    def find_traces(
        self, *, service: str | None = None, min_duration_ns: int | None = None, limit: int = 20
    ) -> TraceRows:
        newest_match: dict[int, int] = {}
        for s in self._matching(service, False, None, min_duration_ns):
            if s.start_time > newest_match.get(s.context.trace_id, -1):
                newest_match[s.context.trace_id] = s.start_time
        chosen = heapq.nlargest(limit, newest_match, key=newest_match.__getitem__)
        members: dict[int, list[ReadableSpan]] = {trace_id: [] for trace_id in chosen}
        for s in self.exporter.get_finished_spans():
            bucket = members.get(s.context.trace_id)
            if bucket is not None:
                bucket.append(s)
        rows = []
        for trace_id in chosen:
            spans = sorted(members[trace_id], key=_start_time)
            roots = [s for s in spans if s.parent is None]
            head = roots[0] if roots else spans[0]
            rows.append(
                (
                    format(trace_id, "032x"),
                    head.name,
                    len(spans),
                    sum(map(_is_error, spans)),
                    max(s.end_time for s in spans) - spans[0].start_time,
                )
            )
        return rows


# --- stdlib sqlite3 -----------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE spans (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent TEXT,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    kind INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL
);
CREATE TABLE attributes (
    span INTEGER NOT NULL REFERENCES spans(id),
    key TEXT NOT NULL,
    str_value TEXT,
    int_value INTEGER,
    float_value REAL,
    other_value TEXT
);
"""
# Every filtered column is indexed; the composite (column, start_ns) indices let "newest first" queries on one
# column walk the index in order instead of sorting (SQLite appends the rowid to every index entry, so
# ``ORDER BY start_ns DESC, id DESC`` is served too).
_INDICES = """
CREATE INDEX spans_trace ON spans(trace_id, start_ns);
CREATE INDEX spans_start ON spans(start_ns);
CREATE INDEX spans_status ON spans(status, start_ns);
CREATE INDEX spans_error_type ON spans(error_type, start_ns);
CREATE INDEX spans_service ON spans(service, start_ns);
CREATE INDEX spans_duration ON spans(duration_ns);
CREATE INDEX attributes_str ON attributes(key, str_value);
CREATE INDEX attributes_int ON attributes(key, int_value);
CREATE INDEX attributes_float ON attributes(key, float_value);
CREATE INDEX attributes_span ON attributes(span);
ANALYZE;
"""


def _attribute_row(span_row: int, key: str, value: object) -> tuple[Any, ...]:
    kind = type(value)
    if kind is str:
        return (span_row, key, value, None, None, None)
    if kind is int:
        return (span_row, key, None, value, None, None)
    if kind is float:
        return (span_row, key, None, None, value, None)
    return (span_row, key, None, None, None, json.dumps(value, default=repr))  # bool, arrays, bytes


class Sqlite:
    """Queries as SQL over an in-memory ``sqlite3`` database with an index on every filtered column."""

    name = "sqlite3"

    def __init__(self, spans: Sequence[StoredSpan]) -> None:
        # check_same_thread=False: the benchmark builds it on one thread and queries on the same; harmless either way.
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.executescript(_SCHEMA)
        with self.db:
            self.db.executemany(
                "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        row,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        s.name,
                        s.service_name,
                        int(s.kind),
                        int(s.status_code),
                        s.error_type,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        s.end_time_unix_nano - s.start_time_unix_nano,
                    )
                    for row, s in enumerate(spans, 1)
                ),
            )
            self.db.executemany(
                "INSERT INTO attributes VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _attribute_row(row, key, value)
                    for row, s in enumerate(spans, 1)
                    for key, value in zip(s.attributes.keys_, s.attributes.values_, strict=True)
                ),
            )
        self.db.executescript(_INDICES)

    def close(self) -> None:
        """Release the database."""
        self.db.close()

    def _ids(self, sql: str, parameters: Sequence[object]) -> SpanIds:
        ids = self.db.execute(sql, parameters).fetchall()
        self._fetch_rows(ids)
        return ids

    def _fetch_rows(self, ids: SpanIds) -> list[tuple[Any, ...]]:
        """What a user does next with the ids: fetch the spans' rows and attributes, to show them.

        spanstore's results are the spans themselves; without this step sqlite3 would be timed on less work.
        """
        if not ids:
            return []
        values = ",".join("(?,?)" for _ in ids)
        return self.db.execute(
            "SELECT s.*, a.key, a.str_value, a.int_value, a.float_value, a.other_value "
            f"FROM (VALUES {values}) AS wanted CROSS JOIN spans s "  # CROSS JOIN: look each id up by index
            "ON s.trace_id = wanted.column1 AND s.span_id = wanted.column2 LEFT JOIN attributes a ON a.span = s.id",
            [part for pair in ids for part in pair],
        ).fetchall()

    def get_trace(self, trace_id: str) -> SpanIds:
        return self._ids("SELECT trace_id, span_id FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,))

    def recent_failures(self, hours: float = 1.0, limit: int | None = 100) -> SpanIds:
        since = time.time_ns() - int(hours * _NS_PER_HOUR)
        return self._ids(
            "SELECT trace_id, span_id FROM spans WHERE status = 2 AND start_ns >= ? "
            "ORDER BY start_ns DESC, id DESC LIMIT ?",
            (since, -1 if limit is None else limit),
        )

    def filter_by_error_type(self, error_type: str, limit: int | None = 100) -> SpanIds:
        return self._ids(
            "SELECT trace_id, span_id FROM spans WHERE error_type = ? ORDER BY start_ns DESC, id DESC LIMIT ?",
            (error_type, -1 if limit is None else limit),
        )

    def filter_by_attribute(self, key: str, value: Any, op: str = "==", limit: int | None = 100) -> SpanIds:
        if op not in ("==", ">="):
            raise ValueError(f"sqlite peer implements op '==' and '>=', got {op!r}")
        sql_op = "=" if op == "==" else ">="
        if type(value) is str:
            condition = f"a.str_value {sql_op} ?"
            parameters: tuple[object, ...] = (key, value)
        elif type(value) in (int, float):  # numbers compare across int and float, as in spanstore
            condition = f"(a.int_value {sql_op} ? OR a.float_value {sql_op} ?)"
            parameters = (key, value, value)
        else:
            raise ValueError(f"sqlite peer compares str, int and float values, got {value!r}")
        return self._ids(
            "SELECT s.trace_id, s.span_id FROM attributes a JOIN spans s ON s.id = a.span "
            f"WHERE a.key = ? AND {condition} ORDER BY s.start_ns DESC, s.id DESC LIMIT ?",
            (*parameters, -1 if limit is None else limit),
        )

    @staticmethod
    def _where(service: str | None, status_error: bool, since: int | None, min_duration_ns: int | None):
        clauses, parameters = [], []
        if service is not None:
            clauses.append("service = ?")
            parameters.append(service)
        if status_error:
            clauses.append("status = 2")
        if since is not None:
            clauses.append("start_ns >= ?")
            parameters.append(since)
        if min_duration_ns is not None:
            clauses.append("duration_ns >= ?")
            parameters.append(min_duration_ns)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", parameters

    def query_spans(
        self,
        *,
        service: str | None = None,
        status_error: bool = False,
        since: int | None = None,
        min_duration_ns: int | None = None,
        limit: int | None = 100,
    ) -> SpanIds:
        where, parameters = self._where(service, status_error, since, min_duration_ns)
        return self._ids(
            f"SELECT trace_id, span_id FROM spans{where} ORDER BY start_ns DESC, id DESC LIMIT ?",
            (*parameters, -1 if limit is None else limit),
        )

    def find_traces(
        self, *, service: str | None = None, min_duration_ns: int | None = None, limit: int = 20
    ) -> TraceRows:
        where, parameters = self._where(service, False, None, min_duration_ns)
        chosen = self.db.execute(
            f"SELECT trace_id, MAX(start_ns) AS newest FROM spans{where} GROUP BY trace_id "
            "ORDER BY newest DESC LIMIT ?",
            (*parameters, limit),
        ).fetchall()
        rows = []
        for trace_id, _ in chosen:
            count, errors, first, last = self.db.execute(
                "SELECT COUNT(*), SUM(status = 2), MIN(start_ns), MAX(end_ns) FROM spans WHERE trace_id = ?",
                (trace_id,),
            ).fetchone()
            head = self.db.execute(
                "SELECT name FROM spans WHERE trace_id = ? ORDER BY parent IS NOT NULL, start_ns, id LIMIT 1",
                (trace_id,),
            ).fetchone()
            rows.append((trace_id, head[0], count, errors, last - first))
        return rows
