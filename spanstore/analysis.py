"""Analysis over whole traces: traces like this one, the difference between two traces, per-operation statistics.

Similarity
----------
A trace's *shape* is the multiset of its **edges**, ``(service, span name, parent span's name)`` (the parent name is
``None`` for a root span and ``"?"`` when the parent is not in the store), plus its **error pattern**, the multiset
of ``(service, span name, parent name, error type)`` of its ERROR spans. For a trace ``A`` and a candidate ``B``::

    structure = |shape(A) ∩ shape(B)| / |shape(A) ∪ shape(B)|        (multiset Jaccard: Σ min / Σ max of counts)
    duration  = min(d_A, d_B) / max(d_A, d_B)                       (d: earliest start to latest end; 1 if both 0)
    score     = structure × (0.9 + 0.1 × duration)                  in [0, 1]

Structure comes first: durations move a score by at most a tenth, so they order traces of equal or nearly equal
shape. A score of 1 means the same edges, the same errors and the same duration. Traces sharing no edge (score 0)
are not returned. Ties go to the trace that arrived last.

The index (:class:`_SimilarityIndex`) is built on a store's first :func:`find_similar_traces` call and then kept
incremental through the store's one observer hook (:meth:`~spanstore.SpanStore.observe_traces`): the hook only notes
which traces changed or left; the next query re-reads the changed traces (O(their spans)) and drops the evicted
ones, so a store that is never asked for similar traces pays nothing. Shapes are posting lists: for every
``(token, k)``, the set of traces holding ``token`` at least ``k`` times; then ``Σ min(count_A, count_B)`` for
every candidate is one C-level ``Counter.update`` per posting of the asked trace, and the answer is exact.

Diff and operation statistics need no index: :func:`diff_traces` aligns two trees by ``(service, name, position
among same-named siblings)``; :func:`operation_stats` groups the spans a :func:`~spanstore.query_spans` query finds.

Every function here is thread-safe, holds the store's lock only while it collects, and returns fresh immutable
objects.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import threading
import weakref
from array import array
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from spanstore.errors import InvalidQueryError, TraceNotFoundError
from spanstore.model import StatusCode, StoredSpan
from spanstore.query import (
    SpanQuery,
    TraceSummary,
    _build_query,
    _run_seqs,
    _summarize,
    get_trace,
    normalize_trace_id,
)
from spanstore.store import now_unix_nano

if TYPE_CHECKING:
    from spanstore.store import SpanStore

__all__ = [
    "MISSING_PARENT",
    "OPERATION_SORTS",
    "OperationStats",
    "SimilarTrace",
    "SpanDiff",
    "TraceDiff",
    "diff_traces",
    "find_similar_traces",
    "operation_stats",
    "similarity_score",
]

#: The parent name of an edge whose span has a parent the store does not hold.
MISSING_PARENT = "?"
#: The orders :func:`operation_stats` can sort by.
OPERATION_SORTS = ("count", "errors", "p95")

_ERROR = StatusCode.ERROR


def similarity_score(shared: int, union: int, duration_a_ns: int, duration_b_ns: int) -> float:
    """The documented score: ``shared / union × (0.9 + 0.1 × min(d) / max(d))``, 0 when nothing is shared.

    >>> similarity_score(10, 10, 5_000, 5_000), similarity_score(9, 11, 5_000, 10_000)
    (1.0, 0.7772727272727273)
    """
    if shared <= 0 or union <= 0:
        return 0.0
    longest = max(duration_a_ns, duration_b_ns)
    duration = min(duration_a_ns, duration_b_ns) / longest if longest > 0 else 1.0
    return shared / union * (0.9 + 0.1 * duration)


def _trace_duration(spans: Sequence[StoredSpan]) -> int:
    return max(s.end_time_unix_nano for s in spans) - min(s.start_time_unix_nano for s in spans)


def trace_shape(spans: Iterable[StoredSpan]) -> collections.Counter[tuple[Any, ...]]:
    """The shape of a trace: its edge tokens ``(service, name, parent name)`` and error tokens (4-tuples).

    >>> from spanstore.model import StoredSpan
    >>> root = StoredSpan(trace_id="ab" * 16, span_id="01" * 8, name="GET /", start_time_unix_nano=0,
    ...                   end_time_unix_nano=9, status_code=StatusCode.ERROR)
    >>> sorted(trace_shape([root]).items(), key=len)
    [(('unknown_service', 'GET /', None), 1), (('unknown_service', 'GET /', None, None), 1)]
    """
    spans = list(spans)
    names = {s.span_id: s.name for s in spans}
    shape: collections.Counter[tuple[Any, ...]] = collections.Counter()
    services: dict[int, str] = {}
    for span in spans:
        resource = span.resource
        service = services.get(id(resource))
        if service is None:
            service = services[id(resource)] = resource.service_name
        parent = span.parent_span_id
        edge = (service, span.name, None if parent is None else names.get(parent, MISSING_PARENT))
        shape[edge] += 1
        if span.status_code == _ERROR:
            shape[(*edge, span.error_type)] += 1
    return shape


# --- similar traces ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SimilarTrace:
    """One trace found by :func:`find_similar_traces`: its score, summary, and how its shape differs.

    ``structure`` is the multiset Jaccard of the shapes and ``duration_ratio`` = this trace's duration / the given
    trace's (``score`` is documented in :mod:`spanstore.analysis`). ``missing`` holds the edges (and error tokens)
    of the given trace this one lacks, ``extra`` those this one has beyond it: ``(token, count)`` pairs, a token
    being ``(service, name, parent name)`` for an edge or ``(service, name, parent name, error type)`` for an error.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> for i in (1, 2):
    ...     _ = store.add(StoredSpan(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="GET /",
    ...                              start_time_unix_nano=0, end_time_unix_nano=100 * i))
    >>> found = find_similar_traces(store, f"{1:032x}")[0]
    >>> round(found.score, 3), found.structure, found.duration_ratio, found.missing, found.extra
    (0.95, 1.0, 2.0, (), ())
    """

    trace_id: str
    score: float
    structure: float
    duration_ratio: float | None
    summary: TraceSummary
    missing: tuple[tuple[tuple[Any, ...], int], ...]
    extra: tuple[tuple[tuple[Any, ...], int], ...]


class _SimilarityIndex:
    """Posting lists from ``(token id, k)`` to the traces holding that token at least ``k`` times.

    Layout (for memory: ~8 bytes a span plus ~100 bytes a trace): each time a trace is (re-)read it gets a new
    record number ``rid``; per-record facts live in arrays indexed by ``rid - base``; postings are ``array('q')`` of
    rids. A trace that changes or leaves only marks its old record dead (``_trace_of[rid - base] = None``); dead
    entries are skipped by readers and dropped in bulk once they outnumber the live ones (amortized O(1) a span).
    Guarded by the store's lock: the observer runs under it, and every read goes through ``store._read``.
    """

    def __init__(self) -> None:
        self._dirty: dict[str, int] = {}  # trace id -> arrival number, for traces changed since the last query
        self._rid: dict[str, int] = {}  # trace id -> its live record
        self._base = 0  # rid of row 0
        self._trace_of: list[str | None] = []  # per record: the trace id, None once dead
        self._arrival = array("q")  # per record: the trace's arrival number (the tie-break: later ranks first)
        self._total = array("q")  # per record: the number of tokens (edges + errors) of the trace
        self._duration = array("q")  # per record: the trace's duration in ns
        self._postings: dict[tuple[int, int], array] = {}
        self._token_ids: dict[tuple[Any, ...], int] = {}
        self._next_token = 0
        self._arrivals = 0
        self._live_entries = 0
        self._dead_entries = 0

    # called by the store under its lock (SpanStore.observe_traces)
    def observe(self, trace_id: str, evicted: bool) -> None:
        if evicted:
            self._dirty.pop(trace_id, None)
            rid = self._rid.pop(trace_id, None)
            if rid is not None:
                self._kill(rid)
        elif trace_id not in self._dirty:
            rid = self._rid.get(trace_id)
            if rid is None:
                self._arrivals += 1
                self._dirty[trace_id] = self._arrivals
            else:
                self._dirty[trace_id] = self._arrival[rid - self._base]

    def _kill(self, rid: int) -> None:
        row = rid - self._base
        self._trace_of[row] = None
        self._live_entries -= self._total[row]
        self._dead_entries += self._total[row]

    def catch_up(self, store: SpanStore) -> None:
        """Re-read every trace changed since the last call (under the store's lock). O(spans of those traces)."""
        dirty = self._dirty
        if not dirty:
            return
        for trace_id, arrival in dirty.items():
            rid = self._rid.pop(trace_id, None)
            if rid is not None:
                self._kill(rid)
            spans = store._trace_spans(trace_id)
            if spans:
                self._post(trace_id, arrival, spans)
        dirty.clear()
        self._trim_front()
        if self._dead_entries > max(4096, self._live_entries):
            self._compact()

    def _post(self, trace_id: str, arrival: int, spans: list[StoredSpan]) -> None:
        token_ids = self._token_ids
        postings = self._postings
        rid = self._base + len(self._trace_of)
        total = 0
        for token, count in trace_shape(spans).items():
            token_id = token_ids.get(token)
            if token_id is None:
                token_id = token_ids[token] = self._next_token
                self._next_token += 1
            total += count
            for k in range(1, count + 1):
                members = postings.get((token_id, k))
                if members is None:
                    postings[(token_id, k)] = array("q", (rid,))
                else:
                    members.append(rid)
        self._rid[trace_id] = rid
        self._trace_of.append(trace_id)
        self._arrival.append(arrival)
        self._total.append(total)
        self._duration.append(_trace_duration(spans))
        self._live_entries += total

    def _trim_front(self) -> None:
        """Drop the dead records at the front of the per-record arrays (eviction is oldest first)."""
        trace_of = self._trace_of
        front = 0
        while front < len(trace_of) and trace_of[front] is None:
            front += 1
        if front > 1024 or (front and front == len(trace_of)):
            del trace_of[:front]
            del self._arrival[:front]
            del self._total[:front]
            del self._duration[:front]
            self._base += front

    def _compact(self) -> None:
        """Drop dead rids from every posting list, empty lists, and tokens no live trace holds."""
        base, trace_of = self._base, self._trace_of
        for key in list(self._postings):
            members = self._postings[key]
            live = array("q", [rid for rid in members if rid >= base and trace_of[rid - base] is not None])
            if live:
                self._postings[key] = live
            else:
                del self._postings[key]
        held = {token_id for token_id, k in self._postings if k == 1}
        self._token_ids = {token: token_id for token, token_id in self._token_ids.items() if token_id in held}
        self._dead_entries = 0

    def similar(self, trace_id: str, shape: dict[tuple[Any, ...], int], limit: int) -> list[tuple[float, float, str]]:
        """``(score, structure, trace id)`` of the ``limit`` best traces (``shape``: the asked trace's), best first."""
        asked = self._rid[trace_id]
        base, trace_of = self._base, self._trace_of
        row = asked - base
        total, duration = self._total[row], self._duration[row]
        shared: collections.Counter[int] = collections.Counter()
        postings = self._postings
        token_ids = self._token_ids
        for token, count in shape.items():
            token_id = token_ids[token]
            for k in range(1, count + 1):
                shared.update(postings[(token_id, k)])  # C speed: +1 for each record holding the token >= k times
        shared.pop(asked, None)
        if not limit:
            return []
        # score <= structure <= common / total (the union is at least the asked trace's size): visit candidates by
        # decreasing common count and stop once that bound falls below the limit-th best score found.
        totals, durations, arrivals = self._total, self._duration, self._arrival
        best: list[tuple[float, int, int]] = []  # a min-heap of (score, arrival, rid)
        for rid, common in sorted(shared.items(), key=itemgetter(1), reverse=True):
            if len(best) >= limit and common / total < best[0][0]:
                break
            if rid < base or trace_of[rid - base] is None:
                continue
            row = rid - base
            entry = (
                similarity_score(common, total + totals[row] - common, duration, durations[row]),
                arrivals[row],
                rid,
            )
            if len(best) < limit:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                heapq.heapreplace(best, entry)
        result = []
        for score, _, rid in sorted(best, reverse=True):
            row = rid - base
            common = shared[rid]
            result.append((score, common / (total + totals[row] - common), trace_of[row]))
        return result  # type: ignore[return-value]

    def _check(self) -> None:
        """Assert the invariants (for tests): every live record is a held trace's current one, entries add up."""
        live = {rid: trace_id for rid, trace_id in enumerate(self._trace_of, self._base) if trace_id is not None}
        assert {trace_id: rid for rid, trace_id in live.items()} == self._rid
        counted = collections.Counter(rid for members in self._postings.values() for rid in members if rid in live)
        for rid in live:
            assert counted[rid] == self._total[rid - self._base], rid
        assert sum(counted.values()) == self._live_entries


_INDICES: weakref.WeakKeyDictionary[SpanStore, _SimilarityIndex] = weakref.WeakKeyDictionary()


_INDICES_LOCK = threading.Lock()


def _index_of(store: SpanStore) -> _SimilarityIndex:
    index = _INDICES.get(store)
    if index is None:
        with _INDICES_LOCK:  # one index (and one observer) per store, however many threads ask at once
            index = _INDICES.get(store)
            if index is None:
                index = _INDICES[store] = _SimilarityIndex()
                store.observe_traces(index.observe)  # notes every trace already held as changed
    return index


def _check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidQueryError(f"limit must be an int >= 0, got {limit!r}")
    return limit


def find_similar_traces(store: SpanStore, trace_id: str, limit: int = 10) -> list[SimilarTrace]:
    """The ``limit`` traces most like ``trace_id`` by shape, then duration (the score is documented in
    :mod:`spanstore.analysis`), best first; the trace itself and traces sharing no edge are left out.

    Raises :class:`~spanstore.errors.TraceNotFoundError` when the store does not hold the trace. The first call on a
    store builds its index (O(spans)); later calls re-read only the traces that changed since, then cost
    O(traces sharing a token with the given one). Thread-safe.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> def add(trace, names):
    ...     for i, name in enumerate(names):
    ...         _ = store.add(StoredSpan(trace_id=f"{trace:032x}", span_id=f"{i + 1:016x}", name=name,
    ...                                  parent_span_id=None if i == 0 else f"{1:016x}",
    ...                                  start_time_unix_nano=i, end_time_unix_nano=100))
    >>> add(1, ["GET /cart", "SELECT", "render"]); add(2, ["GET /cart", "SELECT"]); add(3, ["GET /pay"])
    >>> [(t.trace_id[-1], round(t.score, 3)) for t in find_similar_traces(store, f"{1:032x}")]
    [('2', 0.667)]
    """
    trace_id = normalize_trace_id(trace_id)
    limit = _check_limit(limit)
    index = _index_of(store)

    def collect(s: SpanStore) -> tuple[int, dict[tuple[Any, ...], int], list[Any]]:
        index.catch_up(s)
        spans = s._trace_spans(trace_id)
        if not spans:
            raise TraceNotFoundError(f"no trace {trace_id} in the store")
        shape = trace_shape(spans)
        found = [
            (score, structure, other, s._trace_spans(other))
            for score, structure, other in index.similar(trace_id, shape, limit)
        ]
        return _trace_duration(spans), shape, found

    asked_duration, asked_shape, found = store._read(collect)
    result = []
    for score, structure, other, spans in found:
        shape = trace_shape(spans)
        missing = [(token, n - shape.get(token, 0)) for token, n in asked_shape.items() if n > shape.get(token, 0)]
        extra = [(token, n - asked_shape.get(token, 0)) for token, n in shape.items() if n > asked_shape.get(token, 0)]
        result.append(
            SimilarTrace(
                trace_id=other,
                score=score,
                structure=structure,
                duration_ratio=_trace_duration(spans) / asked_duration if asked_duration else None,
                summary=_summarize(other, spans),
                missing=tuple(sorted(missing, key=_token_order)),
                extra=tuple(sorted(extra, key=_token_order)),
            )
        )
    return result


def _token_order(item: tuple[tuple[Any, ...], int]) -> tuple[Any, ...]:
    return tuple("" if part is None else str(part) for part in item[0])


# --- diff -------------------------------------------------------------------------------------------------------------
#: The kinds of :class:`SpanDiff`.
CHANGES = ("only_a", "only_b", "changed", "same")


@dataclasses.dataclass(frozen=True)
class SpanDiff:
    """One aligned position of two trace trees (see :func:`diff_traces`).

    ``path`` is ``((service, name, ordinal), ...)`` from the top of the tree, ``ordinal`` counting same-named
    siblings by start time. ``change``: ``"only_a"``, ``"only_b"``, ``"changed"`` (status or attributes differ) or
    ``"same"``. For a matched pair: ``duration_delta_ns`` = B - A, ``duration_relative`` = (B - A) / A (None when A
    took 0 ns), ``status`` = ``((code, message) of A, (code, message) of B)`` when they differ, ``attributes`` =
    ``(key, value in A, value in B)`` for every key whose value differs (None: the attribute is missing).

    >>> from spanstore import AttributeMap, SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> for trace, code in ((1, 200), (2, 500)):
    ...     _ = store.add(StoredSpan(trace_id=f"{trace:032x}", span_id=f"{1:016x}", name="GET /",
    ...                              start_time_unix_nano=0, end_time_unix_nano=100 * trace,
    ...                              attributes=AttributeMap.of({"http.response.status_code": code})))
    >>> span = diff_traces(store, f"{1:032x}", f"{2:032x}").spans[0]
    >>> span.change, span.path, span.duration_delta_ns, span.duration_relative, span.attributes
    ('changed', (('unknown_service', 'GET /', 0),), 100, 1.0, (('http.response.status_code', 200, 500),))
    """

    path: tuple[tuple[str, str, int], ...]
    change: str
    a: StoredSpan | None
    b: StoredSpan | None
    duration_delta_ns: int | None = None
    duration_relative: float | None = None
    status: tuple[tuple[str, str], tuple[str, str]] | None = None
    attributes: tuple[tuple[str, Any, Any], ...] = ()

    @property
    def depth(self) -> int:
        """0 for a span at the top of the tree."""
        return len(self.path) - 1


@dataclasses.dataclass(frozen=True)
class TraceDiff:
    """Two traces aligned: every position of either tree, in tree order (a parent before its children, siblings
    by start time, A's before B's extra ones).

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> for trace, names in ((1, ["GET /", "SELECT"]), (2, ["GET /", "render"])):
    ...     for i, name in enumerate(names):
    ...         _ = store.add(StoredSpan(trace_id=f"{trace:032x}", span_id=f"{i + 1:016x}", name=name,
    ...                                  parent_span_id=None if i == 0 else f"{1:016x}",
    ...                                  start_time_unix_nano=i, end_time_unix_nano=10 * trace))
    >>> diff = diff_traces(store, f"{1:032x}", f"{2:032x}")
    >>> [(d.change, d.path[-1][1], d.duration_delta_ns) for d in diff.spans]
    [('same', 'GET /', 10), ('only_a', 'SELECT', None), ('only_b', 'render', None)]
    """

    trace_id_a: str
    trace_id_b: str
    duration_a_ns: int
    duration_b_ns: int
    spans: tuple[SpanDiff, ...]

    @property
    def only_a(self) -> list[SpanDiff]:
        """Positions only trace A has."""
        return [d for d in self.spans if d.change == "only_a"]

    @property
    def only_b(self) -> list[SpanDiff]:
        """Positions only trace B has."""
        return [d for d in self.spans if d.change == "only_b"]

    @property
    def changed(self) -> list[SpanDiff]:
        """Matched positions whose status or attributes differ."""
        return [d for d in self.spans if d.change == "changed"]


_Tree = dict[tuple[tuple[str, str, int], ...], StoredSpan]


def _tree(spans: Sequence[StoredSpan]) -> tuple[_Tree, dict[Any, list[Any]]]:
    """Every span keyed by its path, and the children paths of every path (``()`` is the top), in start order."""
    held = {s.span_id for s in spans}
    children: dict[str | None, list[StoredSpan]] = collections.defaultdict(list)
    for span in sorted(spans, key=lambda s: (s.start_time_unix_nano, s.name)):
        parent = span.parent_span_id
        children[parent if parent in held and parent != span.span_id else None].append(span)
    by_path: _Tree = {}
    kids: dict[Any, list[Any]] = collections.defaultdict(list)
    stack: list[tuple[tuple[Any, ...], str | None]] = [((), None)]
    seen: set[str] = set()
    while stack:
        path, span_id = stack.pop()
        ordinals: collections.Counter[tuple[str, str]] = collections.Counter()
        level = []
        for child in children.get(span_id, ()):
            if child.span_id in seen:  # a parent cycle or a duplicated span id: each span once
                continue
            seen.add(child.span_id)
            key = (child.service_name, child.name)
            child_path = (*path, (*key, ordinals[key]))
            ordinals[key] += 1
            by_path[child_path] = child
            kids[path].append(child_path)
            level.append((child_path, child.span_id))
        stack.extend(reversed(level))
    return by_path, kids


def _status(span: StoredSpan) -> tuple[str, str]:
    return (span.status_code.name, span.status_message)


def _compare(path: tuple[Any, ...], a: StoredSpan, b: StoredSpan) -> SpanDiff:
    delta = b.duration_ns - a.duration_ns
    status = (_status(a), _status(b)) if _status(a) != _status(b) else None
    changes = []
    for key in sorted(set(a.attributes.keys_) | set(b.attributes.keys_)):
        va, vb = a.attributes.get(key), b.attributes.get(key)
        if va != vb or type(va) is not type(vb):
            changes.append((key, va, vb))
    return SpanDiff(
        path=path,
        change="changed" if status or changes else "same",
        a=a,
        b=b,
        duration_delta_ns=delta,
        duration_relative=delta / a.duration_ns if a.duration_ns else None,
        status=status,
        attributes=tuple(changes),
    )


def diff_traces(store: SpanStore, trace_id_a: str, trace_id_b: str) -> TraceDiff:
    """Align two traces, as Jaeger's trace comparison does, and say what differs (see :class:`TraceDiff`).

    Spans are matched by their path of ``(service, name, ordinal among same-named siblings)``, so an extra sibling
    shifts nothing else. Raises :class:`~spanstore.errors.TraceNotFoundError` for a trace the store does not hold.
    O(k log k) for k spans. Thread-safe.

    >>> from spanstore import SpanStore
    >>> diff_traces(SpanStore(), "ab" * 16, "cd" * 16)
    Traceback (most recent call last):
    ...
    spanstore.errors.TraceNotFoundError: no trace abababababababababababababababab in the store
    """
    spans_a = get_trace(store, trace_id_a)
    spans_b = get_trace(store, trace_id_b)
    for trace_id, spans in ((trace_id_a, spans_a), (trace_id_b, spans_b)):
        if not spans:
            raise TraceNotFoundError(f"no trace {normalize_trace_id(trace_id)} in the store")
    tree_a, kids_a = _tree(spans_a)
    tree_b, kids_b = _tree(spans_b)

    def level(path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return kids_a.get(path, []) + [p for p in kids_b.get(path, ()) if p not in tree_a]

    out: list[SpanDiff] = []
    stack = level(())[::-1]
    while stack:  # depth first: a parent, then its children's subtrees in order
        path = stack.pop()
        a, b = tree_a.get(path), tree_b.get(path)
        if a is not None and b is not None:
            out.append(_compare(path, a, b))
        else:
            out.append(SpanDiff(path=path, change="only_a" if b is None else "only_b", a=a, b=b))
        stack += level(path)[::-1]
    return TraceDiff(
        trace_id_a=spans_a[0].trace_id,
        trace_id_b=spans_b[0].trace_id,
        duration_a_ns=_trace_duration(spans_a),
        duration_b_ns=_trace_duration(spans_b),
        spans=tuple(out),
    )


# --- per-operation statistics ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OperationStats:
    """Spans of one ``(service, operation)``: count, errors, duration percentiles (nearest rank), newest error.

    >>> from spanstore import SpanStore, StoredSpan
    >>> store = SpanStore()
    >>> for i in range(4):
    ...     _ = store.add(StoredSpan(trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}", name="GET /",
    ...                              start_time_unix_nano=i, end_time_unix_nano=i + 10 * (i + 1),
    ...                              status_code=StatusCode.ERROR if i == 2 else StatusCode.UNSET))
    >>> row = operation_stats(store)[0]
    >>> row.span_count, row.error_count, row.error_rate, row.p50_ns, row.p99_ns, row.newest_error_trace_id[-1]
    (4, 1, 0.25, 20, 40, '3')
    """

    service: str
    operation: str
    span_count: int
    error_count: int
    error_rate: float
    p50_ns: int
    p95_ns: int
    p99_ns: int
    max_ns: int
    newest_error_trace_id: str | None


def _nearest_rank(ordered: Sequence[int], fraction: float) -> int:
    rank = -(-len(ordered) * fraction // 1)  # ceil(n * fraction)
    return ordered[max(1, int(rank)) - 1]


def _operation_stats_by_window(columns: Any, since: int | None, until: int | None) -> dict[tuple[str, str], list[Any]]:
    """operation_stats' entries for a query that is only a time window: a walk over the chunks' arrays, rows
    grouped by their context id (one per name and resource) before any string is looked at."""
    from spanstore.columns import _DEAD, _STATUS_SHIFT, SHIFT

    low = 0 if since is None else since
    high = 2**64 if until is None else until
    by_context: dict[int, list[Any]] = {}  # context id -> [durations, errors, newest error seq, its start]
    get = by_context.get
    for index, chunk in enumerate(columns.chunks):
        first_seq = (columns.first_chunk + index) << SHIFT
        for slot, (start, end, context, bits) in enumerate(
            zip(chunk.starts, chunk.ends, chunk.contexts, chunk.bits, strict=False)
        ):
            if bits & _DEAD or not low <= start < high:
                continue
            entry = get(context)
            if entry is None:
                entry = by_context[context] = [[], 0, None, -1]
            entry[0].append(end - start)
            if (bits >> _STATUS_SHIFT) & 3 == 2:
                entry[1] += 1
                if start >= entry[3]:
                    entry[2], entry[3] = first_seq + slot, start
    names = columns.names.values
    resources = columns.resources.values
    contexts = columns.contexts.values
    merged: dict[tuple[str, str], list[Any]] = {}
    for context, (durations, errors, newest, newest_start) in by_context.items():
        name_id, resource_id, _, _ = contexts[context]
        key = (resources[resource_id].service_name, names[name_id])
        entry = merged.get(key)
        if entry is None:
            merged[key] = [durations, errors, newest, newest_start]
            continue
        entry[0].extend(durations)
        entry[1] += errors
        if newest is not None and newest_start >= entry[3]:
            entry[2], entry[3] = newest, newest_start
    for entry in merged.values():
        if entry[2] is not None:
            entry[2] = columns.trace_id_of(entry[2])
    return merged


def operation_stats(store: SpanStore, *, sort: str = "count", **criteria: Any) -> list[OperationStats]:
    """Per ``(service, span name)`` of the spans matching ``criteria`` (any :class:`~spanstore.SpanQuery` field but
    ``limit`` and ``order``: ``service``, ``last``, ``since``, ``status``, ``attributes``, ...): span count, error
    count and rate, p50/p95/p99/max duration (nearest rank), and the trace of the newest ERROR span (by start).

    ``sort``: ``"count"`` (most spans first), ``"errors"`` (highest error rate, then most errors) or ``"p95"``
    (slowest first); ties by service, then operation. O(m log m) for m matching spans. Thread-safe.

    >>> from spanstore import SpanStore
    >>> operation_stats(SpanStore(), service="cart", last=3600, sort="p95")
    []
    """
    if sort not in OPERATION_SORTS:
        raise InvalidQueryError(f"sort must be one of {', '.join(OPERATION_SORTS)}; got {sort!r}")
    for name in ("limit", "order"):
        if name in criteria:
            raise InvalidQueryError(f"operation_stats takes no {name!r}: it summarizes every matching span")
    query = _build_query(None, criteria).replace(order="oldest", limit=None)
    now = now_unix_nano()

    window_only = dataclasses.replace(query, since=None, until=None, last=None) == SpanQuery(order="oldest")

    def collect(locked: SpanStore) -> dict[tuple[str, str], list[Any]]:
        # From the packed columns alone (service, name, times, status of each matching row): no StoredSpan is
        # built, which is what a span costs to touch (~0.5 µs here against ~6 µs to build one).
        columns = locked._columns
        if window_only:
            return _operation_stats_by_window(columns, *query.window(now))
        merged: dict[tuple[str, str], list[Any]] = {}
        get = merged.get
        for start, seq, end, _is_root, name, service, is_error in columns.summary_rows(_run_seqs(locked, query, now)):
            key = (service, name)
            entry = get(key)
            if entry is None:
                entry = merged[key] = [[], 0, None, -1]
            entry[0].append(end - start)
            if is_error:
                entry[1] += 1
                if start >= entry[3]:  # the newest error by start; among equal starts, the last
                    entry[2], entry[3] = seq, start
        for entry in merged.values():
            if entry[2] is not None:
                entry[2] = columns.trace_id_of(entry[2])
        return merged

    merged = store._read(collect)  # one snapshot
    rows = []
    for (service, name), (durations, errors, newest_error, _) in merged.items():
        durations.sort()
        count = len(durations)
        rows.append(
            OperationStats(
                service=service,
                operation=name,
                span_count=count,
                error_count=errors,
                error_rate=errors / count,
                p50_ns=_nearest_rank(durations, 0.5),
                p95_ns=_nearest_rank(durations, 0.95),
                p99_ns=_nearest_rank(durations, 0.99),
                max_ns=durations[-1],
                newest_error_trace_id=newest_error,
            )
        )
    if sort == "count":
        rows.sort(key=lambda r: (-r.span_count, r.service, r.operation))
    elif sort == "errors":
        rows.sort(key=lambda r: (-r.error_rate, -r.error_count, r.service, r.operation))
    else:
        rows.sort(key=lambda r: (-r.p95_ns, r.service, r.operation))
    return rows
