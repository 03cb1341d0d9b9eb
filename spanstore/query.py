"""The query API: :class:`SpanQuery`, :class:`AttributeFilter`, and the functions that run them on a store.

Every function takes the store first and returns fresh lists of immutable :class:`~spanstore.model.StoredSpan`
objects; no lock is held once it returns.

Orders
------
``"newest"`` (the default): start time descending; among equal start times, the span added last comes first.
``"oldest"``: start time ascending; among equal start times, the span added first comes first.
``"longest"``: duration descending; ties as ``"newest"``.

Typed comparisons
-----------------
Attribute values compare by type, as in the file: ``"500"`` is not ``500``, ``True`` is not ``1``. Numbers (``int``
and ``float``) compare with each other numerically. A filter never matches a span that lacks the attribute, ``!=``
included (as in TraceQL).

How a query runs (the planner)
------------------------------
Each criterion an index can answer (trace id, name, service, status OK/ERROR, error type, duration, a time window,
attribute ``==``/``in`` on any str, int, float or bool value, numeric ranges) names a candidate set whose size is
known in O(1) or O(log n). The planner takes the smallest, intersects several, or, when the caller wants the
``limit`` newest (oldest) spans and the criteria are not selective, walks the rows of the time window from the
newest (oldest) end and stops at ``limit``. Candidates are checked on the packed columns of
:mod:`spanstore.columns` (start time first, then a lazy row view that decodes attributes only when a criterion reads
them), and a ``StoredSpan`` is built only for each result. Every candidate is checked against every criterion its
index did not answer exactly, so the choice of index changes only the speed, never the result.
"""

from __future__ import annotations

import dataclasses
import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING, Any

import re2

from spanstore.columns import _MASK as _ROW_MASK
from spanstore.columns import SHIFT as _SHIFT
from spanstore.columns import duration_bucket, posting_seqs
from spanstore.errors import InvalidQueryError
from spanstore.model import AttributeMap, SpanKind, StatusCode, StoredSpan, attribute_values_equal
from spanstore.store import now_unix_nano

if TYPE_CHECKING:
    from spanstore.store import SpanStore

__all__ = [
    "OPERATORS",
    "ORDERS",
    "AttributeFilter",
    "SpanQuery",
    "TraceSummary",
    "filter_by_attribute",
    "filter_by_error_type",
    "find_traces",
    "get_trace",
    "query_spans",
    "recent_failures",
]

#: The attribute filter operators.
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "exists", "contains", "matches")
#: The result orders.
ORDERS = ("newest", "oldest", "longest")
_SCOPES = ("span", "resource")
_SCALARS = (str, bool, int, float, bytes)
_NS_PER_SECOND = 1_000_000_000


# --- values -----------------------------------------------------------------------------------------------------------
def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _typed_equal(actual: object, expected: object) -> bool:
    if _is_number(expected):
        return _is_number(actual) and actual == expected
    if type(expected) is tuple or type(actual) is tuple:
        return attribute_values_equal(actual, expected)
    return type(actual) is type(expected) and actual == expected


def _ordered(op: str, actual: object, expected: object) -> bool:
    if _is_number(expected):
        if not _is_number(actual):
            return False
    elif type(actual) is not str:  # expected is a str (validated)
        return False
    if op == "<":
        return actual < expected  # type: ignore[operator]
    if op == "<=":
        return actual <= expected  # type: ignore[operator]
    if op == ">":
        return actual > expected  # type: ignore[operator]
    return actual >= expected  # type: ignore[operator]


# RE2 (google-re2), not `re`: TraceQL defines `=~` by RE2 syntax, and RE2 matches in time linear in the value
# whatever the pattern, so a query string (which may come from a user) cannot make the store backtrack for hours
# (`(a+)+` against 30 "a"s takes `re` seconds, and twice as long per character). Its memory is capped by max_mem.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors become InvalidQueryError; RE2 would also print them to stderr


@lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    """The RE2 program of ``pattern``; raises InvalidQueryError when RE2 refuses it (with RE2's reason)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidQueryError(f"invalid regular expression {pattern!r} (expected RE2 syntax): {reason}") from None
    except UnicodeEncodeError:
        raise InvalidQueryError(f"invalid regular expression {pattern!r}: a lone surrogate is not text") from None


def _fullmatch(pattern: str, text: str) -> bool:
    program = _compile(pattern)
    try:
        return program.fullmatch(text) is not None
    except UnicodeEncodeError:  # a lone surrogate: match what the log would hold (U+FFFD in its place)
        return program.fullmatch(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")) is not None


_MISSING = object()


@dataclasses.dataclass(frozen=True)
class AttributeFilter:
    """One condition on an attribute: ``AttributeFilter(key, value, op="==", scope="span")``.

    ``op`` is one of ``==  !=  <  <=  >  >=  in  exists  contains  matches``. ``in`` takes a collection of values;
    ``exists`` takes no value; ``contains`` is a substring test on strings and a membership test on arrays;
    ``matches`` is a regular expression in RE2 syntax (as TraceQL's ``=~``; no backreferences or lookaround) that
    must match the whole string, in time linear in the string whatever the pattern. ``scope="resource"`` tests the
    resource's attributes (``service.name``, ``deployment.environment``, ...) instead of the span's.

    Raises :class:`~spanstore.errors.InvalidQueryError` when the filter cannot be meant.

    >>> AttributeFilter("http.response.status_code", 500, ">=").test(503)
    True
    >>> AttributeFilter("http.response.status_code", 500).test("500")  # typed: a string is not a number
    False
    >>> AttributeFilter("http.route", "/api/.*", "matches").test("/api/cart")
    True
    """

    key: str
    value: Any = None
    op: str = "=="
    scope: str = "span"

    def __post_init__(self) -> None:
        key, value, op, scope = self.key, self.value, self.op, self.scope
        if not isinstance(key, str) or not key:
            raise InvalidQueryError(f"attribute filter key must be a non-empty str, got {key!r}")
        if op not in OPERATORS:
            raise InvalidQueryError(f"attribute filter op must be one of {', '.join(OPERATORS)}; got {op!r}")
        if scope not in _SCOPES:
            raise InvalidQueryError(f"attribute filter scope must be 'span' or 'resource', got {scope!r}")
        where = f"filter on {key!r}"
        if op == "exists":
            if value is not None:
                raise InvalidQueryError(f"{where}: 'exists' takes no value, got {value!r}")
        elif op == "in":
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise InvalidQueryError(f"{where}: 'in' expects a list/tuple/set of values, got {value!r}")
            values = tuple(value)
            if not values:
                raise InvalidQueryError(f"{where}: 'in' expects at least one value, got an empty collection")
            for item in values:
                _check_scalar(where, item)
            object.__setattr__(self, "value", values)
        elif op in ("<", "<=", ">", ">="):
            if not (_is_number(value) or isinstance(value, str)) or isinstance(value, bool):
                raise InvalidQueryError(f"{where}: {op!r} expects a number or a str, got {value!r}")
        elif op == "matches":
            if not isinstance(value, str):
                raise InvalidQueryError(f"{where}: 'matches' expects a regular expression str, got {value!r}")
            try:
                _compile(value)
            except InvalidQueryError as error:
                raise InvalidQueryError(f"{where}: {error}") from None
        elif op == "contains":
            if value is None:
                raise InvalidQueryError(f"{where}: 'contains' expects a value, got None")
            _check_scalar(where, value)
        else:  # == and !=
            if isinstance(value, list):
                object.__setattr__(self, "value", value := tuple(value))
            if isinstance(value, tuple):
                for item in value:
                    _check_scalar(where, item)
            else:
                _check_scalar(where, value)

    def test(self, actual: object) -> bool:
        """True when an attribute value (or ``_MISSING``) satisfies this filter."""
        if actual is _MISSING:
            return False
        op = self.op
        expected = self.value
        if op == "==":
            return _typed_equal(actual, expected)
        if op == "!=":
            return not _typed_equal(actual, expected)
        if op == "exists":
            return True
        if op == "in":
            return any(_typed_equal(actual, item) for item in expected)
        if op == "contains":
            if type(actual) is str:
                return type(expected) is str and expected in actual
            if type(actual) is tuple:
                return any(_typed_equal(item, expected) for item in actual)
            return False
        if op == "matches":
            return type(actual) is str and _fullmatch(expected, actual)
        return _ordered(op, actual, expected)

    def matches(self, span: StoredSpan) -> bool:
        """True when ``span`` satisfies this filter."""
        attributes = span.attributes if self.scope == "span" else span.resource.attributes
        return self.test(attributes.get(self.key, _MISSING))


def _check_scalar(where: str, value: object) -> None:
    if value is None or not isinstance(value, _SCALARS):
        raise InvalidQueryError(f"{where}: expected a str, bool, int, float or bytes value, got {value!r}")


# --- the query ----------------------------------------------------------------------------------------------------
def _to_unix_nano(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidQueryError(
                f"{name} must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), got naive {value!r}"
            )
        return int(round(value.timestamp() * 1_000_000)) * 1000
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidQueryError(f"{name} must be Unix nanoseconds >= 0, got {value!r}")
        return value
    raise InvalidQueryError(f"{name} must be an aware datetime or int Unix nanoseconds, got {value!r}")


def _to_duration_ns(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value // timedelta(microseconds=1) * 1000
    elif isinstance(value, float) and not isinstance(value, bool):
        raise InvalidQueryError(f"{name} must be an int of nanoseconds or a timedelta, got float {value!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidQueryError(f"{name} must be a non-negative int of nanoseconds or a timedelta, got {value!r}")
    return value


class _WindowNs(int):
    """``last`` once converted to nanoseconds: validating a copy (``replace``, keyword criteria) keeps it as is.

    Without the mark, ``SpanQuery(last=300).replace(limit=None)`` read the stored nanoseconds as seconds again.
    """

    __slots__ = ()


def _to_window_ns(name: str, value: object) -> int | None:
    """``last``: a timedelta or a number of seconds."""
    if value is None or type(value) is _WindowNs:
        return value  # type: ignore[return-value]
    if isinstance(value, timedelta):
        ns = value // timedelta(microseconds=1) * 1000
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ns = int(value * _NS_PER_SECOND)
    else:
        raise InvalidQueryError(f"{name} must be a timedelta or a number of seconds, got {value!r}")
    if ns <= 0:
        raise InvalidQueryError(f"{name} must be a positive duration, got {value!r}")
    return _WindowNs(ns)


def normalize_trace_id(trace_id: object) -> str:
    """Return a trace id as 32 lowercase hex characters, or raise InvalidQueryError.

    >>> normalize_trace_id("0AF7651916CD43DD8448EB211C80319C")
    '0af7651916cd43dd8448eb211c80319c'
    """
    if isinstance(trace_id, str) and len(trace_id) == 32:
        lowered = trace_id.lower()
        if all(c in "0123456789abcdef" for c in lowered):
            return lowered
    raise InvalidQueryError(f"trace_id must be 32 hex characters, got {trace_id!r}")


def _to_enum(name: str, enum_type: type, value: object) -> Any:
    if value is None:
        return None
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        text = value.upper()
        for prefix in ("SPAN_KIND_", "STATUS_CODE_"):
            text = text.removeprefix(prefix)
        if text in enum_type.__members__:
            return enum_type[text]
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    names = ", ".join(enum_type.__members__)
    raise InvalidQueryError(f"{name} must be one of {names} (or its number), got {value!r}")


def _to_filters(value: object) -> tuple[AttributeFilter, ...]:
    if value is None:
        return ()
    if isinstance(value, AttributeFilter):
        return (value,)
    if isinstance(value, (Mapping, AttributeMap)):
        return tuple(AttributeFilter(key, item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        filters = []
        for item in value:
            if isinstance(item, AttributeFilter):
                filters.append(item)
            elif isinstance(item, tuple) and len(item) in (2, 3):
                filters.append(
                    AttributeFilter(item[0], item[-1], item[1]) if len(item) == 3 else AttributeFilter(*item)
                )
            else:
                raise InvalidQueryError(
                    f"attributes must hold AttributeFilter objects or (key, value) / (key, op, value) tuples, "
                    f"got {item!r}"
                )
        return tuple(filters)
    raise InvalidQueryError(f"attributes must be a dict, an AttributeFilter or a list of them, got {value!r}")


def _optional_str(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidQueryError(f"{name} must be a str, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SpanQuery:
    """What to find: every given criterion must hold (AND). Immutable, validated on construction.

    Times: ``since`` (inclusive) and ``until`` (exclusive) bound the start time, as aware ``datetime`` or int Unix
    nanoseconds (stored as nanoseconds); ``last`` (a ``timedelta`` or seconds) means "started within the last ...",
    measured when the query runs. Durations: ``min_duration_ns``/``max_duration_ns`` (int or ``timedelta``), both
    inclusive. ``status`` and ``kind`` take the enum, its name (``"ERROR"``, ``"SERVER"``) or its OTLP number.
    ``attributes`` takes ``{key: value}`` (equality), :class:`AttributeFilter` objects, or ``(key, op, value)``
    tuples. ``limit=None`` returns every match.

    >>> SpanQuery(status="error", attributes={"http.route": "/cart"}, limit=10).status
    <StatusCode.ERROR: 2>
    >>> SpanQuery(trace_id="abc")
    Traceback (most recent call last):
    ...
    spanstore.errors.InvalidQueryError: trace_id must be 32 hex characters, got 'abc'
    """

    trace_id: str | None = None
    name: str | None = None
    service: str | None = None
    kind: SpanKind | None = None
    status: StatusCode | None = None
    error_type: str | None = None
    attributes: tuple[AttributeFilter, ...] = ()
    since: int | None = None
    until: int | None = None
    last: int | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    root_only: bool = False
    limit: int | None = None
    order: str = "newest"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.trace_id is not None:
            set_(self, "trace_id", normalize_trace_id(self.trace_id))
        for name in ("name", "service", "error_type"):
            _optional_str(name, getattr(self, name))
        set_(self, "kind", _to_enum("kind", SpanKind, self.kind))
        set_(self, "status", _to_enum("status", StatusCode, self.status))
        set_(self, "attributes", _to_filters(self.attributes))
        since, until = self.since, self.until
        if (
            isinstance(since, datetime)
            and isinstance(until, datetime)
            and (since.tzinfo is None) != (until.tzinfo is None)
        ):
            raise InvalidQueryError(
                f"since and until must both be timezone-aware datetimes, got since={since!r}, until={until!r}"
            )
        set_(self, "since", _to_unix_nano("since", since))
        set_(self, "until", _to_unix_nano("until", until))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidQueryError(f"since must not be after until, got since={self.since}, until={self.until}")
        set_(self, "last", _to_window_ns("last", self.last))
        set_(self, "min_duration_ns", _to_duration_ns("min_duration_ns", self.min_duration_ns))
        set_(self, "max_duration_ns", _to_duration_ns("max_duration_ns", self.max_duration_ns))
        if (
            self.min_duration_ns is not None
            and self.max_duration_ns is not None
            and self.min_duration_ns > self.max_duration_ns
        ):
            raise InvalidQueryError(
                f"min_duration_ns must not exceed max_duration_ns, got {self.min_duration_ns} > {self.max_duration_ns}"
            )
        if not isinstance(self.root_only, bool):
            raise InvalidQueryError(f"root_only must be a bool, got {self.root_only!r}")
        if self.limit is not None and (
            not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0
        ):
            raise InvalidQueryError(f"limit must be an int >= 0 or None, got {self.limit!r}")
        if self.order not in ORDERS:
            raise InvalidQueryError(f"order must be one of {', '.join(ORDERS)}; got {self.order!r}")

    def window(self, now: int | None = None) -> tuple[int | None, int | None]:
        """The effective ``(since, until)`` start-time window in Unix ns, resolving ``last`` against ``now``."""
        since = self.since
        if self.last is not None:
            relative = (now if now is not None else now_unix_nano()) - self.last
            since = relative if since is None else max(since, relative)
        return since, self.until

    def predicate(
        self, now: int | None = None, *, known: frozenset[object] = frozenset()
    ) -> Callable[[StoredSpan], bool]:
        """A function telling whether a span meets every criterion (``last`` resolved against ``now``).

        ``known``: criteria the caller's candidates already satisfy (field names, ``"window"`` for the start-time
        window, or AttributeFilter objects), left unchecked: the planner passes the criteria whose index gave the
        candidates exactly.
        """
        since, until = self.window(now)
        checks: list[Callable[[StoredSpan], bool]] = []
        if self.trace_id is not None:
            checks.append(lambda s, v=self.trace_id: s.trace_id == v)
        if self.name is not None and "name" not in known:
            checks.append(lambda s, v=self.name: s.name == v)
        if self.service is not None and "service" not in known:
            checks.append(lambda s, v=self.service: s.resource.service_name == v)
        if self.kind is not None:
            checks.append(lambda s, v=self.kind: s.kind == v)
        if self.status is not None and "status" not in known:
            checks.append(lambda s, v=self.status: s.status_code == v)
        if self.error_type is not None and "error_type" not in known:
            checks.append(lambda s, v=self.error_type: v in s.error_types)
        if since is not None and "window" not in known:
            checks.append(lambda s, v=since: s.start_time_unix_nano >= v)
        if until is not None and "window" not in known:
            checks.append(lambda s, v=until: s.start_time_unix_nano < v)
        if self.min_duration_ns is not None:
            checks.append(lambda s, v=self.min_duration_ns: s.end_time_unix_nano - s.start_time_unix_nano >= v)
        if self.max_duration_ns is not None:
            checks.append(lambda s, v=self.max_duration_ns: s.end_time_unix_nano - s.start_time_unix_nano <= v)
        if self.root_only:
            checks.append(lambda s: s.parent_span_id is None)
        checks.extend(f.matches for f in self.attributes if f not in known)
        if not checks:
            return _accept_all
        if len(checks) == 1:
            return checks[0]
        return lambda span: all(check(span) for check in checks)

    def replace(self, **changes: Any) -> SpanQuery:
        """A copy with some fields changed (validated again).

        ``last`` stays the window it was (its nanoseconds are not read as seconds again).

        >>> SpanQuery(last=600).replace(limit=5).last
        600000000000
        """
        return dataclasses.replace(self, **changes)


def _accept_all(span: StoredSpan) -> bool:
    return True


_QUERY_FIELDS = frozenset(field.name for field in dataclasses.fields(SpanQuery))


def _build_query(query: SpanQuery | None, criteria: dict[str, Any]) -> SpanQuery:
    if query is not None and not isinstance(query, SpanQuery):
        raise InvalidQueryError(f"query must be a SpanQuery, got {type(query).__name__}")
    if not criteria:
        return query or SpanQuery()
    unknown = sorted(criteria.keys() - _QUERY_FIELDS)
    if unknown:
        raise InvalidQueryError(
            f"unknown query criteria {', '.join(unknown)}; expected some of {', '.join(sorted(_QUERY_FIELDS))}"
        )
    try:
        return query.replace(**criteria) if query is not None else SpanQuery(**criteria)
    except TypeError as error:  # e.g. a positional/keyword mix-up
        raise InvalidQueryError(str(error)) from None


# --- the planner ----------------------------------------------------------------------------------------------------
def _sort(spans: list[StoredSpan], order: str) -> list[StoredSpan]:
    """Sort spans given in arrival order, ties broken as the module docstring says."""
    if order == "oldest":
        spans.sort(key=_start_of)
        return spans
    spans.reverse()  # so that a stable descending sort leaves the latest-added first among ties
    spans.sort(key=_longest_key if order == "longest" else _start_of, reverse=True)
    return spans


def _start_of(span: StoredSpan) -> int:
    return span.start_time_unix_nano


def _longest_key(span: StoredSpan) -> tuple[int, int]:
    return span.end_time_unix_nano - span.start_time_unix_nano, span.start_time_unix_nano


def _sort_seqs(store: SpanStore, seqs: list[int], order: str) -> list[int]:
    """Sort row seqs given in arrival order, ties broken as the module docstring says."""
    columns = store._columns
    if order == "oldest":
        seqs.sort(key=columns.start)
        return seqs
    seqs.reverse()
    if order == "longest":
        duration, start = columns.duration, columns.start
        seqs.sort(key=lambda seq: (duration(seq), start(seq)), reverse=True)
    else:
        seqs.sort(key=columns.start, reverse=True)
    return seqs


class _Candidates:
    """The seqs an index gives for one criterion: a few ascending posting lists (disjoint) and their total size.

    ``in_order``: each list's seqs all come before the next list's (sorted runs of the numeric index), so a walk
    chains them instead of merging them, and reads a list only when it gets there.
    """

    __slots__ = ("criterion", "in_order", "postings", "size")

    def __init__(self, postings: list[Any], criterion: object = None, in_order: bool = False) -> None:
        self.in_order = in_order
        unique: dict[object, Any] = {}
        for posting in postings:  # `in (1, 1.0)` names one list twice
            unique[("seq", posting) if type(posting) is int else id(posting)] = posting
        self.postings = [posting_seqs(p) for p in unique.values()]
        self.size = sum(map(len, self.postings))
        # The criterion (or tuple of criteria) every live seq here satisfies exactly (None: a superset, to be checked).
        self.criterion = criterion

    def ascending(self) -> Iterable[int]:
        if len(self.postings) == 1:
            return self.postings[0]
        if self.in_order:
            return chain.from_iterable(self.postings)
        return heapq.merge(*self.postings)

    def descending(self) -> Iterable[int]:
        if len(self.postings) == 1:
            return reversed(self.postings[0])
        if self.in_order:
            return chain.from_iterable(map(reversed, reversed(self.postings)))
        return heapq.merge(*map(reversed, self.postings), reverse=True)


def _posting(index: dict[Any, Any], key: object, criterion: str | tuple[str, ...]) -> _Candidates:
    posting = index.get(key)
    return _Candidates([posting] if posting is not None else [], criterion)


def _attribute_candidates(store: SpanStore, f: AttributeFilter) -> _Candidates | None:
    """Candidates for a span-attribute filter from the value index, or None when the index cannot answer it."""
    if f.scope != "span" or f.op not in ("==", "in", "<", "<=", ">", ">="):
        return None
    columns = store._columns
    if f.op in ("==", "in"):
        postings: list[Any] = []
        exact = True
        in_order = f.op == "==" or len(f.value) == 1
        numbers: set[object] = set()
        for value in f.value if f.op == "in" else (f.value,):
            if type(value) is int or type(value) is float:
                if value in numbers:  # 1 and 1.0 name the same entries
                    continue
                numbers.add(value)
            found = columns.attribute_postings(f.key, value)
            if found is None:
                return None
            postings.extend(found[0])
            exact = exact and found[1]
            in_order = in_order and found[2]
        return _Candidates(postings, f if exact else None, in_order)
    # A numeric range over int and float values (a string range is filtered instead).
    if not _is_number(f.value):
        return None
    postings, exact, in_order = columns.attribute_range(f.key, f.op, f.value)
    return _Candidates(postings, f if exact else None, in_order)


def _seq_check(
    store: SpanStore, since: int | None, until: int | None, accept: Callable[[Any], bool]
) -> Callable[[int], bool]:
    """A test of a row seq: its start within the window (read from the columns), then ``accept`` on a lazy view."""
    columns = store._columns
    chunks = columns.chunks
    first = columns.first_chunk
    view = columns.view
    low = since if since is not None else 0
    high = until if until is not None else 1 << 65
    if accept is _accept_all:

        def check(seq: int) -> bool:
            return low <= chunks[(seq >> _SHIFT) - first].starts[seq & _ROW_MASK] < high

    else:

        def check(seq: int) -> bool:
            return low <= chunks[(seq >> _SHIFT) - first].starts[seq & _ROW_MASK] < high and accept(view(seq))

    return check


def _time_window_size(store: SpanStore, since: int | None, until: int | None) -> int:
    """About how many rows the window spans (by seq range: arrival order is nearly start order)."""
    if since is None and until is None:
        return store._span_count
    columns = store._columns
    rows = columns.end_seq_until(until) - columns.first_seq_since(since)
    return max(0, min(store._span_count, rows))


def _window_seqs(store: SpanStore, since: int | None, until: int | None) -> tuple[int, int]:
    columns = store._columns
    return columns.first_seq_since(since), columns.end_seq_until(until)


def _scan_time(
    store: SpanStore, since: int | None, until: int | None, reverse: bool, check: Callable[[int], bool]
) -> Iterator[int]:
    """The seqs of the rows in the window that pass ``check``, in start order (newest first when ``reverse``)."""
    low, high = _window_seqs(store, since, until)
    columns = store._columns
    if reverse:
        for _, seq in columns.walk_newest(range(high - 1, low - 1, -1), check, since):
            yield seq
    else:
        for _, seq in columns.walk_oldest(low, high, check):
            yield seq


def _run(store: SpanStore, query: SpanQuery, now: int, expected: int | None = None) -> Iterator[StoredSpan]:
    """Yield the spans matching ``query`` in its order (called with the store's lock held)."""
    span = store._columns.span
    for seq in _run_seqs(store, query, now, expected):
        yield span(seq)


def _run_seqs(store: SpanStore, query: SpanQuery, now: int, expected: int | None = None) -> Iterator[int]:
    """Yield the seqs of the rows matching ``query`` in its order (called with the store's lock held).

    ``expected``: for a query without a limit, how many results the caller expects to consume before it stops
    (find_traces); it lets the planner prefer a walk that stops early. Every path yields exactly the matches, in
    the documented order: the plan changes only the cost.
    """
    since, until = query.window(now)
    order = query.order
    limit = query.limit if query.limit is not None else expected
    total = store._span_count
    columns = store._columns

    if query.trace_id is not None:
        check = _seq_check(store, since, until, query.predicate(now, known=frozenset({"window"})))
        seqs = store._traces.get(query.trace_id)
        yield from _sort_seqs(store, [seq for seq in seqs if check(seq)] if seqs else [], order)
        return

    sources: list[_Candidates] = []
    if query.name is not None:
        sources.append(_posting(columns.by_name, query.name, "name"))
    if query.service is not None and query.status == StatusCode.ERROR:
        # One list answers both: the service's failures.
        sources.append(_posting(columns.by_failing_service, query.service, ("service", "status")))
    else:
        if query.service is not None:
            sources.append(_posting(columns.by_service, query.service, "service"))
        if query.status:  # UNSET (nearly every span) has no list: it is checked on the candidates of other criteria
            sources.append(_posting(columns.by_status, int(query.status), "status"))
    if query.error_type is not None:
        sources.append(_posting(columns.by_error_type, query.error_type, "error_type"))
    for f in query.attributes:
        candidates = _attribute_candidates(store, f)
        if candidates is not None:
            sources.append(candidates)
    if query.min_duration_ns is not None or query.max_duration_ns is not None:
        low = duration_bucket(query.min_duration_ns) if query.min_duration_ns is not None else None
        high = duration_bucket(query.max_duration_ns) if query.max_duration_ns is not None else None
        buckets = columns.by_duration.items()
        sources.append(
            _Candidates([s for b, s in buckets if (low is None or b >= low) and (high is None or b <= high)])
        )
    best = min(sources, key=lambda c: c.size, default=None)
    windowed = since is not None or until is not None
    window_size = _time_window_size(store, since, until) if windowed else total

    if best is not None and best.size == 0:
        return
    if order == "longest":
        check = _seq_check(store, since, until, query.predicate(now, known=frozenset({"window"})))
        if limit is not None and (best is None or best.size > 4 * limit + 1024):
            yield from _longest_by_buckets(store, check, limit)
        else:
            narrowed = _seq_check(store, since, until, _narrowed(query, now, [best])) if best is not None else check
            yield from _sort_seqs(store, _collect(store, best, since, until, check, narrowed), order)
        return

    # Estimated steps of each plan; criteria are assumed independent.
    in_window = window_size / total if total else 1.0
    selectivity = in_window
    for source in sources:
        selectivity *= source.size / total if total else 1.0
    plans = {"collect": float(min(best.size, window_size) if best is not None else window_size)}
    floor = columns.first_seq_since(since)
    if len(sources) >= 2:
        # Intersecting posting lists runs in C, ~30x cheaper an entry than checking a row in Python.
        in_range = sum(_count_from(posting, floor) for source in sources for posting in source.postings)
        plans["intersect"] = in_range / 30 + total * selectivity
    if limit is not None:
        plans["walk_time"] = window_size if selectivity == 0 else min(window_size, limit / selectivity)
        if best is not None and order == "newest":
            rest = selectivity / (best.size / total) if total else 1.0
            plans["walk_best"] = min(best.size * in_window, limit / rest if rest else best.size) + limit
    plan = min(plans, key=plans.__getitem__)

    if plan == "walk_time" or (best is None and plan == "collect"):
        # Without a candidate set, collecting the window is walking it: in start order already, nothing to sort.
        check = _seq_check(store, since, until, query.predicate(now, known=frozenset({"window"})))
        yield from _scan_time(store, since, until, order == "newest", check)
    elif plan == "walk_best":
        assert best is not None
        check = _seq_check(store, since, until, _narrowed(query, now, [best]))
        for _, seq in columns.walk_newest(best.descending(), check, since):
            yield seq
    elif plan == "intersect":
        check = _seq_check(store, since, until, _narrowed(query, now, sources))
        alive = columns.alive
        yield from _sort_seqs(store, [q for q in sorted(_intersect(sources, floor)) if alive(q) and check(q)], order)
    else:
        check = _seq_check(store, since, until, query.predicate(now, known=frozenset({"window"})))
        narrowed = _seq_check(store, since, until, _narrowed(query, now, [best])) if best is not None else check
        yield from _sort_seqs(store, _collect(store, best, since, until, check, narrowed), order)


def _narrowed(query: SpanQuery, now: int, sources: list[_Candidates]) -> Callable[[Any], bool]:
    """The predicate for candidates drawn from ``sources``: without the criteria those indices answer exactly (and
    without the window, which :func:`_seq_check` tests on the columns)."""
    known: set[object] = {"window"}
    for source in sources:
        if type(source.criterion) is tuple:
            known.update(source.criterion)
        elif source.criterion is not None:
            known.add(source.criterion)
    return query.predicate(now, known=frozenset(known))


def _count_from(posting: Any, floor: int) -> int:
    return len(posting) - bisect_left(posting, floor)


def _intersect(sources: list[_Candidates], floor: int) -> set[int]:
    """The seqs (from ``floor`` on) in every source: set operations over posting-list slices, smallest first."""
    ordered = sorted(sources, key=lambda c: sum(_count_from(p, floor) for p in c.postings))
    found: set[int] = set()
    for posting in ordered[0].postings:
        found.update(posting[bisect_left(posting, floor) :])
    for source in ordered[1:]:
        if not found:
            break
        if len(source.postings) == 1:
            posting = source.postings[0]
            found.intersection_update(posting[bisect_left(posting, floor) :])
        else:
            union: set[int] = set()
            for posting in source.postings:
                union.update(posting[bisect_left(posting, floor) :])
            found &= union
    return found


def _collect(
    store: SpanStore,
    best: _Candidates | None,
    since: int | None,
    until: int | None,
    check: Callable[[int], bool],
    narrowed: Callable[[int], bool] | None = None,
) -> list[int]:
    """Every matching seq, from the smaller of the best candidate list and the time window, in arrival order.

    ``narrowed``: the check for candidates of ``best`` (without the criterion it answers exactly)."""
    columns = store._columns
    if best is None or _time_window_size(store, since, until) < best.size:
        low, high = _window_seqs(store, since, until)
        return [seq for seq in columns.live_seqs(low, high) if check(seq)]
    alive = columns.alive
    narrowed = narrowed or check
    return [seq for seq in best.ascending() if alive(seq) and narrowed(seq)]


def _longest_by_buckets(store: SpanStore, check: Callable[[int], bool], limit: int) -> list[int]:
    """The ``limit`` longest matches: walk duration buckets from the longest down, finishing each bucket."""
    found: list[int] = []
    columns = store._columns
    alive = columns.alive
    index = columns.by_duration
    for bucket in sorted(index, reverse=True):
        found.extend(seq for seq in posting_seqs(index[bucket]) if alive(seq) and check(seq))
        if len(found) >= limit:
            break
    found.sort()  # back to arrival order for the documented tie-break
    return _sort_seqs(store, found, "longest")


def _limited(store: SpanStore, seqs: Iterator[int], limit: int | None) -> list[StoredSpan]:
    span = store._columns.span
    if limit is None:
        return [span(seq) for seq in seqs]
    result: list[StoredSpan] = []
    if limit == 0:
        return result
    for seq in seqs:
        result.append(span(seq))
        if len(result) >= limit:
            break
    return result


# --- public functions -------------------------------------------------------------------------------------------------
def query_spans(store: SpanStore, query: SpanQuery | None = None, **criteria: Any) -> list[StoredSpan]:
    """Spans matching a :class:`SpanQuery` and/or keyword criteria (the fields of ``SpanQuery``).

    Order and limit as the query says (default: newest first, no limit). Cost: the size of the smallest candidate
    set an index gives, or about ``limit / selectivity`` steps of a time-ordered walk; never a scan of every span
    when an index can answer.

    >>> from spanstore import SpanStore, StoredSpan, StatusCode
    >>> store = SpanStore()
    >>> store.add(StoredSpan(trace_id="ab" * 16, span_id="01" * 8, name="GET /cart", start_time_unix_nano=1,
    ...                      end_time_unix_nano=5, status_code=StatusCode.ERROR))
    True
    >>> [span.name for span in query_spans(store, status="ERROR", limit=10)]
    ['GET /cart']
    """
    q = _build_query(query, criteria)
    now = now_unix_nano()
    return store._read(lambda s: _limited(s, _run_seqs(s, q, now), q.limit))


def get_trace(store: SpanStore, trace_id: str) -> list[StoredSpan]:
    """Every span of one trace, oldest start first (an empty list when the store does not hold it).

    ``trace_id`` is 32 hex characters (either case). O(k log k) for a trace of k spans.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> for i, name in enumerate(["root", "child"]):
    ...     _ = store.add(StoredSpan(trace_id="ab" * 16, span_id=f"{i + 1:016x}", name=name,
    ...                              start_time_unix_nano=10 + i, end_time_unix_nano=20))
    >>> [span.name for span in get_trace(store, "AB" * 16)]
    ['root', 'child']
    """
    trace_id = normalize_trace_id(trace_id)
    return store._read(lambda s: _sort(s._trace_spans(trace_id), "oldest"))


def recent_failures(store: SpanStore, hours: float = 1.0, limit: int | None = 100, **criteria: Any) -> list[StoredSpan]:
    """ERROR spans that started within the last ``hours``, newest first. O(errors in the window) at most.

    >>> from spanstore import SpanStore
    >>> recent_failures(SpanStore(), hours=0.5)
    []
    """
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise InvalidQueryError(f"hours must be a positive number, got {hours!r}")
    return query_spans(store, status=StatusCode.ERROR, last=timedelta(hours=hours), limit=limit, **criteria)


def filter_by_error_type(
    store: SpanStore, error_type: str, *, limit: int | None = 100, **criteria: Any
) -> list[StoredSpan]:
    """Spans whose error is of ``error_type``, newest first: the class recorded in an ``exception`` event, by its
    qualified (``shop.OutOfStock``) or bare (``OutOfStock``) name, or attribute ``error.type`` (``"500"``); see
    :attr:`StoredSpan.error_types`. O(spans with that error type) at most.

    >>> from spanstore import SpanStore
    >>> filter_by_error_type(SpanStore(), "TimeoutError")
    []
    """
    if not isinstance(error_type, str) or not error_type:
        raise InvalidQueryError(f"error_type must be a non-empty str, got {error_type!r}")
    return query_spans(store, error_type=error_type, limit=limit, **criteria)


def filter_by_attribute(
    store: SpanStore,
    key: str,
    value: Any = None,
    op: str = "==",
    *,
    scope: str = "span",
    limit: int | None = 100,
    **criteria: Any,
) -> list[StoredSpan]:
    """Spans whose attribute ``key`` satisfies ``op value`` (see :class:`AttributeFilter`), newest first.

    Equality, ``in`` and numeric ranges on indexed values use the attribute index; other operators filter the
    candidates of the other criteria or walk the time index until ``limit``.

    >>> from spanstore import SpanStore
    >>> filter_by_attribute(SpanStore(), "http.response.status_code", 500, ">=")
    []
    """
    extra = _to_filters(criteria.pop("attributes", None))
    return query_spans(store, attributes=(AttributeFilter(key, value, op, scope), *extra), limit=limit, **criteria)


@dataclasses.dataclass(frozen=True)
class TraceSummary:
    """One trace found by :func:`find_traces`.

    ``root_name``/``root_service`` come from the root span, or from the earliest span when the store holds no root
    (``has_root`` is then False). ``duration_ns`` spans the earliest start to the latest end.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> _ = store.add(StoredSpan(trace_id="ab" * 16, span_id="01" * 8, name="GET /", start_time_unix_nano=5,
    ...                          end_time_unix_nano=25))
    >>> summary = find_traces(store)[0]
    >>> summary.root_name, summary.duration_ns, summary.span_count, summary.has_root
    ('GET /', 20, 1, True)
    """

    trace_id: str
    root_name: str
    root_service: str
    has_root: bool
    start_time_unix_nano: int
    duration_ns: int
    span_count: int
    error_count: int
    services: tuple[str, ...]


def _summarize_rows(trace_id: str, rows: list[tuple[int, int, int, bool, str, str, bool]]) -> TraceSummary:
    """A trace's summary from :meth:`~spanstore.columns.SpanColumns.summary_rows` (the same as :func:`_summarize`)."""
    rows.sort()  # start, then arrival
    roots = [row for row in rows if row[3]]
    head = roots[0] if roots else rows[0]
    start = rows[0][0]
    return TraceSummary(
        trace_id=trace_id,
        root_name=head[4],
        root_service=head[5],
        has_root=bool(roots),
        start_time_unix_nano=start,
        duration_ns=max(row[2] for row in rows) - start,
        span_count=len(rows),
        error_count=sum(row[6] for row in rows),
        services=tuple(sorted({row[5] for row in rows})),
    )


def _summarize(trace_id: str, spans: list[StoredSpan]) -> TraceSummary:
    ordered = _sort(list(spans), "oldest")
    roots = [s for s in ordered if s.parent_span_id is None]
    head = roots[0] if roots else ordered[0]
    start = ordered[0].start_time_unix_nano
    end = max(s.end_time_unix_nano for s in ordered)
    return TraceSummary(
        trace_id=trace_id,
        root_name=head.name,
        root_service=head.service_name,
        has_root=bool(roots),
        start_time_unix_nano=start,
        duration_ns=end - start,
        span_count=len(ordered),
        error_count=sum(s.status_code == StatusCode.ERROR for s in ordered),
        services=tuple(sorted({s.service_name for s in ordered})),
    )


def find_traces(
    store: SpanStore, query: SpanQuery | None = None, *, limit: int = 20, **criteria: Any
) -> list[TraceSummary]:
    """Jaeger-style trace search: traces with at least one span matching every criterion.

    Traces come ordered by their most recent matching span (start time), newest first, at most ``limit``.
    Cost: as :func:`query_spans` without a limit, stopping once ``limit`` traces are found on a time-ordered walk.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> store.add(StoredSpan(trace_id="ab" * 16, span_id="01" * 8, name="checkout", start_time_unix_nano=1,
    ...                      end_time_unix_nano=9))
    True
    >>> [(t.root_name, t.span_count) for t in find_traces(store, name="checkout")]
    [('checkout', 1)]
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidQueryError(f"limit must be an int >= 0, got {limit!r}")
    q = _build_query(query, criteria).replace(limit=None, order="newest")
    now = now_unix_nano()

    def collect(s: SpanStore) -> list[tuple[str, list[StoredSpan]]]:
        seen: dict[str, None] = {}
        trace_id_of = s._columns.trace_id_of
        if limit:
            for seq in _run_seqs(s, q, now, expected=8 * limit):
                trace_id = trace_id_of(seq)
                if trace_id not in seen:
                    seen[trace_id] = None
                    if len(seen) >= limit:
                        break
        summary_rows = s._columns.summary_rows
        return [_summarize_rows(trace_id, summary_rows(s._traces[trace_id])) for trace_id in seen]

    return store._read(collect)
