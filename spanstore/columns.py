"""The packed span layout under :class:`~spanstore.store.SpanStore`: columns in chunks, a string table, posting lists.

Why
---
A ``StoredSpan`` held as Python objects costs ~960 bytes of RSS (the struct, its id strings, int times, an attribute
map, per-value objects); the same span packed into arrays costs ~200. So the store keeps no span objects: it keeps
rows, and builds a fresh immutable ``StoredSpan`` only for a span a query returns (:meth:`SpanColumns.span`).

Rows
----
Every span gets a sequence number (``seq``) in arrival order; row ``seq`` lives in chunk ``seq >> 10`` at slot
``seq & 1023``. A chunk holds, per row: start and end times, span id and parent id as ``uint64`` (a 16-hex id is an
int; any other id string is kept in the row's blob), a bits byte (kind, status, has-parent, has-extras, dead), ids
into the name, resource, scope and shape tables, a reference to the trace id string (one string a trace), the
row's estimated size, and the end offset of its blob in the chunk's ``bytearray``. The blob is msgpack:
``[flags, value, value, ...]`` with one value per attribute of the row's *shape* (its key tuple and which values are
string-table references), then, rarely, an extras list (status message, trace state, dropped counts, odd ids,
events, links). Attribute strings of at most :data:`MAX_REF_STRING` characters are stored once per key in a string
table and referenced by a small int; tuples, nested maps and big ints are msgpack ``Ext`` values, so every value
comes back with its exact type (``1``, ``1.0``, ``True`` and ``(1,)`` stay distinct).

Eviction is FIFO by trace, so the dead rows gather at the front: a chunk whose rows are all dead is dropped whole,
nothing is moved. A hole further in waits until the front reaches it.

Tables and reclaiming
---------------------
Names, resources, scopes, shapes and attribute strings are interned with a reference count per entry: a row holds
one reference to each entry it uses, and when an evicted row releases the last one the entry is freed (its id is
reused). So a store fed forever holds only the strings its live rows use.

Indices
-------
Posting lists are ``array('q')`` of seqs in ascending order, or a plain ``int`` while a value has a single row
(a near-unique value, a request id, costs an int, not an array). Indexed: name, service, status, error type,
duration bucket, and *every* attribute value: strings by their string-table id, long strings (more than
``MAX_REF_STRING`` characters) by their hash (candidates are then checked), ints, floats and bools by value (ints and
floats share one numeric key space, so ``500 == 500.0``; bools have their own). Posting lists are cleaned lazily: an
evicted seq stays until compaction drops it, and readers skip dead rows.

Time: there is no per-span time index. Each chunk keeps the running maximum of start times at the end of each block
of 32 rows (arrival order is nearly start order), so a newest-first walk over any posting list knows when no
earlier row can outrank what it holds, and a window's ``since`` bounds the walk by bisecting the chunks' maxima;
each chunk also keeps the minimum start of its rows, which bounds oldest-first walks and a window's ``until``.

Nothing here locks: :class:`~spanstore.store.SpanStore` calls it under its lock.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

import msgspec

from spanstore.model import (
    EMPTY_ATTRIBUTES,
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
)

__all__ = ["CHUNK_ROWS", "MAX_REF_STRING", "SpanColumns", "bool_key", "duration_bucket", "posting_seqs"]

#: Seqs are 32-bit in every posting list and run (4 bytes an entry, not 8); when they would overflow, the store
#: renumbers what it holds from 0 (:meth:`SpanColumns.rebase`, once per ~4 billion spans added).
SEQ_TYPE = "I"
SEQ_LIMIT = 1 << 32
SHIFT = 10
#: Rows a chunk holds; a chunk is freed whole once all of its rows are evicted.
CHUNK_ROWS = 1 << SHIFT
_MASK = CHUNK_ROWS - 1
_BLOCK_SHIFT = 5  # 32-row blocks: the granularity of the start-time ceilings of a newest-first walk
_BLOCK_MASK = (1 << _BLOCK_SHIFT) - 1
#: Attribute strings up to this many characters are interned per key (stored once, referenced by id, indexed
#: exactly); longer ones are stored in the row and indexed by hash.
MAX_REF_STRING = 256

_KIND_BITS = 0x07
_STATUS_SHIFT = 3
_HAS_PARENT = 0x20
_HAS_EXTRA = 0x40
_DEAD = 0x80
_KINDS = tuple(SpanKind(i) for i in range(6)) + (SpanKind.INTERNAL,) * 2
_STATUSES = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR, StatusCode.UNSET)
_ERROR = int(StatusCode.ERROR)
#: The names of SpanColumns' posting-list indices over a row's own fields (the index file stores them in this order)
FIELD_INDICES = ("by_name", "by_service", "by_status", "by_error_type", "by_duration", "by_failing_service")

_EXT_TUPLE = 1
_EXT_MAP = 2
_EXT_BIGINT = 3
_EXT_SURROGATE_STR = 4
_EXT_LIST = 5
_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1


def long_string_hash(value: str) -> int:
    """The index key of a string longer than :data:`MAX_REF_STRING`: a 64-bit hash that is the same in every process
    (``hash()`` of a str is salted per process, and index files outlive processes)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def duration_bucket(duration_ns: int) -> int:
    """The duration index bucket of a duration: four buckets per power of two, so a bucket spans ~19%."""
    if duration_ns <= 1:
        return 0
    return int(math.log2(duration_ns) * 4)


class _BoolKey:
    """Distinct dict keys for booleans (so ``True`` does not collide with ``1``)."""

    TRUE: _BoolKey
    FALSE: _BoolKey
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_BoolKey({self.value})"


_BoolKey.TRUE = _BoolKey(True)
_BoolKey.FALSE = _BoolKey(False)


def bool_key(value: bool) -> _BoolKey:
    """The index key of a boolean attribute value."""
    return _BoolKey.TRUE if value else _BoolKey.FALSE


def posting_seqs(posting: int | array | None) -> Any:
    """A posting (an int for one row, an array for more) as an ascending sequence of seqs."""
    if posting is None:
        return ()
    if type(posting) is int:
        return (posting,)
    return posting


def _post(index: dict[Any, Any], key: object, seq: int) -> None:
    posting = index.get(key)
    if posting is None:
        index[key] = seq
    elif type(posting) is int:
        index[key] = array(SEQ_TYPE, (posting, seq))
    else:
        posting.append(seq)


# --- value encoding -----------------------------------------------------------------------------------------------
def _pack_value(value: Any) -> Any:
    """A value msgpack can hold and :func:`_ext_hook` turns back into exactly this value (type included)."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None or kind is bytes:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _UINT_MAX else msgspec.msgpack.Ext(_EXT_BIGINT, str(value).encode())
    # _encode, not _ENCODE: a lone surrogate in an array or map must not fail the row halfway through append
    if kind is tuple:
        return msgspec.msgpack.Ext(_EXT_TUPLE, _encode([_pack_value(item) for item in value]))
    if kind is list:
        return msgspec.msgpack.Ext(_EXT_LIST, _encode([_pack_value(item) for item in value]))
    if isinstance(value, AttributeMap):
        return msgspec.msgpack.Ext(_EXT_MAP, _encode([list(value.keys_), [_pack_value(v) for v in value.values_]]))
    raise TypeError(f"attribute value of type {kind.__name__} cannot be stored: {value!r}")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_DECODE(data))
    if code == _EXT_MAP:
        keys, values = _DECODE(data)
        return AttributeMap.from_pairs(keys, values)
    if code == _EXT_BIGINT:
        return int(bytes(data))
    if code == _EXT_LIST:
        return list(_DECODE(data))
    if code == _EXT_SURROGATE_STR:
        return bytes(data).decode("utf-8", "surrogatepass")
    raise ValueError(f"unknown msgpack extension {code}")


def _unsurrogate(value: Any) -> Any:
    """Strings with lone surrogates (legal in Python, not in UTF-8) as an extension value."""
    if type(value) is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            return msgspec.msgpack.Ext(_EXT_SURROGATE_STR, value.encode("utf-8", "surrogatepass"))
        return value
    if type(value) is list:
        return [_unsurrogate(item) for item in value]
    if type(value) is msgspec.msgpack.Ext and value.code in (_EXT_TUPLE, _EXT_MAP, _EXT_LIST):
        return msgspec.msgpack.Ext(value.code, _encode(_unsurrogate(_DECODE_RAW(value.data))))
    return value


_ENCODER = msgspec.msgpack.Encoder()
_ENCODE = _ENCODER.encode
_DECODE = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode
_DECODE_RAW = msgspec.msgpack.Decoder().decode  # keeps Ext values as they are (for _unsurrogate)


def _encode(payload: list[Any]) -> bytes:
    try:
        return _ENCODE(payload)
    except UnicodeEncodeError:
        return _ENCODE(_unsurrogate(payload))


def _pack_map(attributes: AttributeMap) -> list[Any]:
    return [list(attributes.keys_), [_pack_value(v) for v in attributes.values_]]


def _unpack_map(packed: list[Any]) -> AttributeMap:
    return AttributeMap.from_pairs(packed[0], packed[1])


# --- interned tables ------------------------------------------------------------------------------------------------
class _Table:
    """Values interned to small ids with a reference count each; an id is freed (and reused) at count zero."""

    __slots__ = ("free", "ids", "refs", "values")

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.values: list[Any] = []
        self.refs = array("q")
        self.free: list[int] = []

    def acquire(self, value: Any, key: Any = None) -> int:
        """The id of ``value`` (looked up by ``key``, default the value itself), with one more reference."""
        if key is None:
            key = value
        ident = self.ids.get(key)
        if ident is None:
            if self.free:
                ident = self.free.pop()
                self.values[ident] = value
                self.refs[ident] = 1
            else:
                ident = len(self.values)
                self.values.append(value)
                self.refs.append(1)
            self.ids[key] = ident
        else:
            self.refs[ident] += 1
        return ident

    def release(self, ident: int, key: Any = None) -> bool:
        """Drop one reference; True when that freed the entry."""
        refs = self.refs[ident] - 1
        self.refs[ident] = refs
        if refs:
            return False
        value = self.values[ident]
        del self.ids[value if key is None else key]
        self.values[ident] = None
        self.free.append(ident)
        return True

    def __len__(self) -> int:
        return len(self.ids)


#: A row whose blob is bigger than this is kept out of line (freed as soon as the row is evicted).
BIG_ROW_BYTES = 512
#: Numeric index entries per sealed run (see _Runs).
RUN_ROWS = 4096
_EXACT_FLOAT_INT = 1 << 53


class _LazyPosting:
    """Part of a run's seqs as an ascending posting list, materialized (and sorted) on first use."""

    __slots__ = ("_data", "_high", "_low", "_ordered", "_seqs")

    def __init__(self, seqs: array, low: int, high: int, ordered: bool) -> None:
        self._seqs = seqs
        self._low = low
        self._high = high
        self._ordered = ordered
        self._data: array | None = None

    def _get(self) -> array:
        data = self._data
        if data is None:
            data = self._seqs[self._low : self._high]
            if not self._ordered:
                data = array(SEQ_TYPE, sorted(data))
            self._data = data
        return data

    def __len__(self) -> int:
        return self._high - self._low

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __reversed__(self) -> Iterator[int]:
        return reversed(self._get())


class _Runs:
    """The numeric values of one attribute key, as float64: sealed runs sorted by (value, seq), and an open run.

    16 bytes an entry whatever the cardinality (a dict of posting lists costs ~100 bytes a distinct value, so a
    near-unique float or port would cost that much a span). Equality and ranges bisect every sealed run (a few
    hundred at a million rows) and scan the open one; the seqs of one value in a run ascend (a stable sort). Runs
    are in arrival order, so eviction drops whole runs from the front.
    """

    __slots__ = ("open_seqs", "open_values", "runs", "typecode")

    def __init__(self, typecode: str = "d") -> None:
        self.typecode = typecode  # "d": numbers as float64; "q": hashes of long strings
        self.runs: list[tuple[array, array]] = []  # (values sorted, seqs in that order)
        self.open_values = array(typecode)
        self.open_seqs = array(SEQ_TYPE)

    def add(self, value: float, seq: int) -> None:
        self.open_values.append(value)
        self.open_seqs.append(seq)
        if len(self.open_seqs) >= RUN_ROWS:
            values = self.open_values
            seqs = self.open_seqs
            order = sorted(range(len(values)), key=values.__getitem__)
            self.runs.append(
                (array(self.typecode, [values[i] for i in order]), array(SEQ_TYPE, [seqs[i] for i in order]))
            )
            self.open_values = array(self.typecode)
            self.open_seqs = array(SEQ_TYPE)

    def drop_before(self, base: int) -> None:
        runs = self.runs
        cut = 0
        while cut < len(runs) and max(runs[cut][1]) < base:
            cut += 1
        if cut:
            del runs[:cut]
        if self.open_seqs and self.open_seqs[-1] < base:
            self.open_values = array(self.typecode)
            self.open_seqs = array(SEQ_TYPE)

    def __len__(self) -> int:
        return sum(len(seqs) for _, seqs in self.runs) + len(self.open_seqs)

    def postings(self, low: float, high: float, low_open: bool = False, high_open: bool = False) -> list[Any]:
        """Posting lists of the entries with ``low <= value <= high`` (``<`` at an open end)."""
        if low == high and (low_open or high_open):
            return []  # (x, x], [x, x) and (x, x) hold nothing: `v < -inf` must not read as `v == -inf`
        found: list[Any] = []
        for values, seqs in self.runs:
            start = bisect_right(values, low) if low_open else bisect_left(values, low)
            end = bisect_left(values, high) if high_open else bisect_right(values, high)
            if end > start:
                found.append(_LazyPosting(seqs, start, end, low == high))
        values = self.open_values
        if values:
            seqs = self.open_seqs
            if low == high:
                hits = array(SEQ_TYPE)
                position = -1
                try:
                    while True:
                        position = values.index(low, position + 1)
                        hits.append(seqs[position])
                except ValueError:
                    pass
            else:
                hits = array(
                    SEQ_TYPE,
                    [
                        seq
                        for value, seq in zip(values, seqs, strict=True)
                        if (low < value if low_open else low <= value)
                        and (value < high if high_open else value <= high)
                    ],
                )
            if hits:
                found.append(hits)
        return found


class _AttributeKey:
    """One attribute key: its string table (with a posting list per string) and its numeric/bool/long-string index."""

    __slots__ = ("hashes", "name", "numbers", "postings", "strings", "values")

    def __init__(self, name: str) -> None:
        self.name = name
        self.strings = _Table()  # interned strings of this key
        self.postings: list[Any] = []  # by string id: int | array | None
        self.numbers = _Runs()  # ints within 2**53 and floats (not NaN)
        self.hashes = _Runs("q")  # hashes of strings longer than MAX_REF_STRING (candidates, then checked)
        # _BoolKey or an int beyond 2**53 -> posting
        self.values: dict[Any, Any] = {}


class _Chunk:
    __slots__ = (
        "alive",
        "big",
        "bits",
        "blob",
        "ends",
        "block_max",
        "max_before",
        "max_start",
        "min_start",
        "contexts",
        "offsets",
        "parents",
        "sizes",
        "span_ids",
        "starts",
        "traces",
    )

    def __init__(self, max_start: int) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        self.span_ids = array("Q")
        self.parents = array("Q")
        self.bits = bytearray()
        self.contexts = array("I")  # (name, resource, scope, shape) of each row, interned
        self.sizes = array("I")
        self.offsets = array("I")  # end offset of each row's blob
        self.blob: bytes | bytearray = bytearray()
        self.big: dict[int, bytes] = {}  # slot -> blob of a row bigger than BIG_ROW_BYTES
        self.traces: list[str] = []
        self.alive = 0
        self.max_before = max_start  # the latest start among the rows of every earlier chunk
        # block_max[b]: the latest start among the rows of blocks 0..b of 32 rows (and every earlier chunk): a
        # ceiling for each row of block b, 0.25 bytes a row
        self.block_max = array("Q")
        self.max_start = max_start  # the latest start among this chunk's rows and every earlier row
        self.min_start = _UINT_MAX  # the earliest start among this chunk's rows (see SpanColumns._min_after)


def _payload(chunk: _Chunk, slot: int) -> list[Any]:
    """The decoded msgpack of a row: from the chunk's blob, or out of line for a big row (an empty blob range)."""
    end = chunk.offsets[slot]
    start = chunk.offsets[slot - 1] if slot else 0
    if start == end:
        return _DECODE(chunk.big[slot])
    return _DECODE(chunk.blob[start:end])


def _seal(chunk: _Chunk) -> None:
    """Trim a full chunk's columns to their exact size (a growing array over-allocates by up to ~12%)."""
    for name in ("starts", "ends", "span_ids", "parents", "contexts", "sizes", "offsets"):
        column = getattr(chunk, name)
        setattr(chunk, name, array(column.typecode, column))
    chunk.blob = bytes(chunk.blob)
    # A tuple of strings leaves the cyclic GC's tracking (a list of a million trace ids would be walked by every
    # full collection).
    chunk.traces = tuple(chunk.traces)  # type: ignore[assignment]


_log2 = math.log2


def _hex_int(value: str | None) -> int | None:
    """The int of a canonical 16-char lowercase hex id, else None (the row then keeps the string)."""
    if value is not None and len(value) == 16:
        try:
            number = int(value, 16)
            # int() also takes "0x", "_", signs and upper case: only the canonical form round-trips
            canonical = _hex(number)
        except (ValueError, OverflowError):
            return None
        if canonical == value:
            return number
    return None


def _hex(value: int) -> str:
    """The 16-char lowercase hex of a span id (3x faster than ``format(value, "016x")``)."""
    return value.to_bytes(8, "big").hex()


class SpanColumns:
    """The packed rows and every index of a store. Not thread-safe: the store calls it under its lock."""

    def __init__(self, indexed: bool = True) -> None:
        #: False: rows only, no posting list or numeric run (scratch columns whose rows are only read back)
        self.indexed = indexed
        self.chunks: list[_Chunk] = []
        self.first_chunk = 0  # chunk number of chunks[0]
        self.next_seq = 0
        #: No posting list holds a dead seq above this one (the last row killed since the last compaction).
        self.dead_high = -1
        self.seq_limit = SEQ_LIMIT  # (tests lower it to exercise rebase)
        self.names = _Table()
        self.resources = _Table()
        self.scopes = _Table()
        self.shapes = _Table()  # (keys, ref mask) -> (keys, ((position, _AttributeKey), ...))
        # (name id, resource id, scope id, shape id) -> a context: one 4-byte id a row instead of four. Names,
        # resources, scopes and shapes count references by context; contexts count references by row.
        self.contexts = _Table()
        self.keys: dict[str, _AttributeKey] = {}
        self.by_name: dict[str, Any] = {}
        self.by_service: dict[str, Any] = {}
        self.by_status: dict[int, Any] = {}
        self.by_error_type: dict[str, Any] = {}
        self.by_duration: dict[int, Any] = {}
        # The ERROR rows of each service: "what failed in checkout?" is the commonest combined question, and its
        # list holds exactly the answer where intersecting the service's and the ERROR list visited both.
        self.by_failing_service: dict[str, Any] = {}
        self.shared_bytes = 0  # what interned attribute strings cost (see SpanStore._estimate docs)
        self._resource_cache: dict[int, tuple[Resource, int, str, Resource]] = {}
        self._scope_cache: dict[int, tuple[Scope, int, Scope]] = {}
        self._key_cache: dict[int, tuple[tuple[str, ...], list[_AttributeKey]]] = {}

    def indices(self) -> tuple[dict[Any, Any], ...]:
        """Every posting-list index over a row's own fields (attribute values aside), in the order of
        :data:`FIELD_INDICES`."""
        return tuple(getattr(self, name) for name in FIELD_INDICES)

    # --- geometry -------------------------------------------------------------------------------------------------
    @property
    def base(self) -> int:
        """The first seq still held in a chunk (rows before it are gone)."""
        return self.first_chunk << SHIFT

    def chunk_of(self, seq: int) -> _Chunk:
        return self.chunks[(seq >> SHIFT) - self.first_chunk]

    def first_live_seq(self) -> int:
        """The seq of the oldest live row (``next_seq`` when none)."""
        first = self.first_chunk
        for index, chunk in enumerate(self.chunks):
            if chunk.alive:
                bits = chunk.bits
                for slot in range(len(bits)):
                    if not bits[slot] & _DEAD:
                        return ((first + index) << SHIFT) + slot
        return self.next_seq

    def alive(self, seq: int) -> bool:
        """True when row ``seq`` holds a live span."""
        index = (seq >> SHIFT) - self.first_chunk
        if index < 0 or seq >= self.next_seq:
            return False
        return not self.chunks[index].bits[seq & _MASK] & _DEAD

    # --- ingest ---------------------------------------------------------------------------------------------------
    def append(self, span: StoredSpan, trace_id: str, error_types: tuple[str, ...]) -> tuple[int, str, int]:
        """Store ``span`` as a new row; return its seq, service name and :func:`row_bytes`.

        ``trace_id``: the trace's shared string. Values of an unknown type must have been refused before (the
        store's ``_check_span``): nothing here can fail halfway.
        """
        seq = self.next_seq
        slot = seq & _MASK
        chunks = self.chunks
        if slot == 0:
            if chunks:
                _seal(chunks[-1])
            chunk = _Chunk(chunks[-1].max_start if chunks else 0)
            chunks.append(chunk)
            if len(chunks) == 1:
                self.first_chunk = seq >> SHIFT
        else:
            chunk = chunks[-1]
        self.next_seq = seq + 1

        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        chunk.starts.append(start)
        chunk.ends.append(end)
        if start > chunk.max_start:
            chunk.max_start = start
        if slot & _BLOCK_MASK:
            if start > chunk.block_max[-1]:
                chunk.block_max[-1] = start
        else:
            chunk.block_max.append(chunk.max_start)
        if start < chunk.min_start:
            chunk.min_start = start
        extras: list[Any] | None = None
        span_id = _hex_int(span.span_id)
        parent = span.parent_span_id
        parent_id = _hex_int(parent) if parent is not None else 0
        if span_id is None or parent_id is None:
            extras = self._extras(span, span_id is None, parent_id is None)
            span_id = span_id or 0
            parent_id = parent_id or 0
        elif (
            span.status_message
            or span.trace_state
            or span.events
            or span.links
            or span.dropped_attributes_count
            or span.dropped_events_count
            or span.dropped_links_count
        ):
            extras = self._extras(span, False, False)
        chunk.span_ids.append(span_id)
        chunk.parents.append(parent_id)
        status = int(span.status_code)
        chunk.bits.append(
            int(span.kind)
            | status << _STATUS_SHIFT
            | (_HAS_PARENT if parent is not None else 0)
            | (_HAS_EXTRA if extras is not None else 0)
        )
        name = span.name
        indexed = self.indexed
        if indexed:
            _post(self.by_name, name, seq)
        resource = span.resource
        cached = self._resource_cache.get(id(resource))
        if cached is not None and cached[0] is resource and self.resources.values[cached[1]] is cached[3]:
            rid, service = cached[1], cached[2]
        else:
            rid = self.resources.ids.get(resource)
            if rid is None:
                rid = self.resources.acquire(resource)
                self.resources.refs[rid] = 0  # counted by the contexts that use it
            canonical = self.resources.values[rid]
            service = canonical.service_name
            if len(self._resource_cache) > 4096:
                self._resource_cache.clear()
            self._resource_cache[id(resource)] = (resource, rid, service, canonical)
        scope = span.scope
        cached_scope = self._scope_cache.get(id(scope))
        if (
            cached_scope is not None
            and cached_scope[0] is scope
            and self.scopes.values[cached_scope[1]] is cached_scope[2]
        ):
            sid = cached_scope[1]
        else:
            sid = self.scopes.ids.get(scope)
            if sid is None:
                sid = self.scopes.acquire(scope)
                self.scopes.refs[sid] = 0
            if len(self._scope_cache) > 4096:
                self._scope_cache.clear()
            self._scope_cache[id(scope)] = (scope, sid, self.scopes.values[sid])
        chunk.traces.append(trace_id)
        if indexed:
            _post(self.by_service, service, seq)
            if status:  # UNSET is nearly every span: its list would cost 4 bytes a span and narrow nothing
                _post(self.by_status, status, seq)
                if status == _ERROR:
                    _post(self.by_failing_service, service, seq)
            duration = end - start
            bucket = int(_log2(duration) * 4) if duration > 1 else 0
            _post(self.by_duration, bucket, seq)
            for error_type in error_types:
                _post(self.by_error_type, error_type, seq)

        payload: list[Any] = [span.flags]
        attributes = span.attributes
        keys = attributes.keys_
        mask = 0
        size = 0
        if keys:
            # The _AttributeKey of each key, cached by the identity of the shared key tuple.
            cached_keys = self._key_cache.get(id(keys))
            if cached_keys is None or cached_keys[0] is not keys:
                key_index = self.keys
                found = []
                for key in keys:
                    attribute = key_index.get(key)
                    if attribute is None:
                        attribute = key_index[key] = _AttributeKey(key)
                    found.append(attribute)
                if len(self._key_cache) > 4096:
                    self._key_cache.clear()
                cached_keys = self._key_cache[id(keys)] = (keys, found)
            bit = 1
            for attribute, value in zip(cached_keys[1], attributes.values_, strict=True):
                kind = type(value)
                if kind is str:
                    if len(value) <= MAX_REF_STRING:
                        strings = attribute.strings
                        ident = strings.ids.get(value)
                        if ident is None:
                            ident = strings.acquire(value)
                            self.shared_bytes += SHARED_STRING_BYTES + len(value)
                            if indexed:
                                postings = attribute.postings
                                if ident == len(postings):
                                    postings.append(seq)
                                else:
                                    postings[ident] = seq
                        else:
                            strings.refs[ident] += 1
                            if indexed:
                                posting = attribute.postings[ident]
                                if type(posting) is int:
                                    attribute.postings[ident] = array(SEQ_TYPE, (posting, seq))
                                else:
                                    posting.append(seq)
                        payload.append(ident)
                        mask |= bit
                        size += 9
                    else:
                        if indexed:
                            attribute.hashes.add(long_string_hash(value), seq)
                        payload.append(value)
                        size += 24 + (len(value) if value.isascii() else _utf8_length(value))
                elif kind is int:
                    if -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
                        if indexed:
                            attribute.numbers.add(value, seq)
                        payload.append(value)
                    else:
                        if indexed:
                            _post(attribute.values, value, seq)
                        payload.append(value if _INT_MIN <= value <= _UINT_MAX else _pack_value(value))
                    size += 15 + (1 if -32 <= value < 128 else _int_bytes(value))
                elif kind is float:
                    if value == value and indexed:  # NaN equals nothing: not indexed
                        attribute.numbers.add(value, seq)
                    payload.append(value)
                    size += 24
                elif kind is bool:
                    if indexed:
                        _post(attribute.values, _BoolKey.TRUE if value else _BoolKey.FALSE, seq)
                    payload.append(value)
                    size += 7
                else:
                    payload.append(_pack_value(value))
                    size += _nested_bytes(value)
                bit <<= 1
        if extras is not None:
            size += _extras_bytes(span)
        if size > BIG_ROW_BYTES:
            size += _BIG_ROW_OVERHEAD + (size >> 5)
        size += ROW_BYTES
        shape_key = (keys, mask)
        shapes = self.shapes
        shape_id = shapes.ids.get(shape_key)
        if shape_id is None:
            refs = tuple((i + 1, self.keys[keys[i]]) for i in range(len(keys)) if mask >> i & 1)
            shape_id = shapes.acquire((keys, refs), shape_key)
            shapes.refs[shape_id] = 0
        names = self.names
        name_id = names.ids.get(name)
        if name_id is None:
            name_id = names.acquire(name)
            names.refs[name_id] = 0
        contexts = self.contexts
        context_key = (name_id, rid, sid, shape_id)
        context = contexts.ids.get(context_key)
        if context is None:
            context = contexts.acquire(context_key)
            names.refs[name_id] += 1
            self.resources.refs[rid] += 1
            self.scopes.refs[sid] += 1
            shapes.refs[shape_id] += 1
        else:
            contexts.refs[context] += 1
        chunk.contexts.append(context)
        chunk.sizes.append(size)
        if extras is not None:
            payload.append(extras)
        data = _encode(payload)
        if len(data) > BIG_ROW_BYTES:
            # Out of line, so that evicting the row frees its bytes at once (a chunk's shared blob is freed only
            # when all of its rows are gone, which for rows of 100 KB would hold far more than the budget).
            # A copy: msgspec's result keeps its buffer's spare capacity (up to ~50% more).
            chunk.big[slot] = bytes(memoryview(data))
        else:
            chunk.blob += data
        chunk.offsets.append(len(chunk.blob))
        chunk.alive += 1
        return seq, service, size

    @staticmethod
    def _extras(span: StoredSpan, odd_id: bool, odd_parent: bool) -> list[Any]:
        return [
            span.span_id if odd_id else None,
            span.parent_span_id if odd_parent else None,
            span.status_message,
            span.trace_state,
            span.dropped_attributes_count,
            span.dropped_events_count,
            span.dropped_links_count,
            [[e.name, e.time_unix_nano, _pack_map(e.attributes), e.dropped_attributes_count] for e in span.events],
            [
                [k.trace_id, k.span_id, k.trace_state, _pack_map(k.attributes), k.dropped_attributes_count, k.flags]
                for k in span.links
            ],
        ]

    # --- eviction -------------------------------------------------------------------------------------------------
    def kill(self, seq: int) -> tuple[int, str, int]:
        """Mark row ``seq`` dead and release what it referenced; return (its size, its service, its status)."""
        chunk = self.chunks[(seq >> SHIFT) - self.first_chunk]
        slot = seq & _MASK
        bits = chunk.bits[slot]
        chunk.bits[slot] = bits | _DEAD
        chunk.alive -= 1
        if seq > self.dead_high:
            self.dead_high = seq
        context = chunk.contexts[slot]
        name_id, rid, sid, shape_id = self.contexts.values[context]
        service = self.resources.values[rid].service_name
        keys, refs = self.shapes.values[shape_id]
        if refs:
            payload = _payload(chunk, slot)
            for position, attribute in refs:
                ident = payload[position]
                strings = attribute.strings
                value = strings.values[ident]
                if strings.release(ident):
                    self.shared_bytes -= SHARED_STRING_BYTES + len(value)
                    if self.indexed:
                        attribute.postings[ident] = None
        if chunk.big:
            chunk.big.pop(slot, None)
        if self.contexts.release(context):
            self.names.release(name_id)
            self.resources.release(rid)
            self.scopes.release(sid)
            self.shapes.release(shape_id, keys_mask(self.shapes, shape_id))
        return chunk.sizes[slot], service, (bits >> _STATUS_SHIFT) & 3

    def rebase(self) -> int:
        """Renumber the rows held from seq 0 (when seqs would overflow 32 bits); return the offset subtracted."""
        shift = self.base
        if not shift:
            return 0

        def moved(posting: Any) -> Any:
            if type(posting) is int:
                return posting - shift if posting >= shift else None
            kept = [seq - shift for seq in posting if seq >= shift]
            if len(kept) > 1:
                return array(SEQ_TYPE, kept)
            return kept[0] if kept else None

        for index in self.indices():
            _clean_index(index, moved)
        for attribute in self.keys.values():
            _clean_index(attribute.values, moved)
            postings = attribute.postings
            for ident, posting in enumerate(postings):
                if posting is not None:
                    postings[ident] = moved(posting)
            for runs in (attribute.numbers, attribute.hashes):
                runs.runs = [_shifted(values, seqs, shift) for values, seqs in runs.runs]
                runs.open_values, runs.open_seqs = _shifted(runs.open_values, runs.open_seqs, shift)
        self.first_chunk = 0
        self.next_seq -= shift
        self.dead_high = self.next_seq - 1  # renumbered lists may still hold rows killed before: check them all
        return shift

    def drop_dead_chunks(self) -> int:
        """Free the chunks at the front whose rows are all dead (never the one being filled); return how many."""
        chunks = self.chunks
        dropped = 0
        while len(chunks) > 1 and chunks[0].alive == 0:
            del chunks[0]
            self.first_chunk += 1
            dropped += 1
        if len(chunks) == 1 and chunks[0].alive == 0 and len(chunks[0].bits) == CHUNK_ROWS:
            del chunks[0]
            self.first_chunk += 1
            dropped += 1
        return dropped

    def compact(self) -> None:
        """Drop dead seqs from every posting list (cut the front, filter holes), and empty lists.

        Only the band from the first live row to the last row killed since the last compaction can hold both: every
        seq before it is dead, every seq after it alive. Eviction is FIFO, so the band is narrow, and compacting
        costs a few bisections a list instead of a liveness test of every entry (1.3 s at 1M rows of near-unique
        values).
        """
        alive = self.alive
        low = self.first_live_seq()
        high = self.dead_high
        self.dead_high = -1

        def clean(posting: Any) -> Any:
            if type(posting) is int:
                return posting if posting >= low and (posting > high or alive(posting)) else None
            cut = bisect_left(posting, low)
            if cut:
                del posting[:cut]
            stop = bisect_right(posting, high)
            if stop:
                # Filtered into an array directly: a list of a million int objects would scatter the small-object
                # allocator's arenas for good.
                kept = array(SEQ_TYPE, filter(alive, posting[:stop]))
                if len(kept) < stop:
                    posting[:stop] = kept
            if len(posting) > 1:
                return posting
            return posting[0] if posting else None

        for index in self.indices():
            _clean_index(index, clean)
        for name in list(self.keys):
            attribute = self.keys[name]
            _clean_index(attribute.values, clean)
            attribute.numbers.drop_before(low)
            attribute.hashes.drop_before(low)
            postings = attribute.postings
            for ident, posting in enumerate(postings):
                if posting is not None:
                    postings[ident] = clean(posting)
            if not (attribute.values or attribute.strings.ids or len(attribute.numbers) or len(attribute.hashes)):
                # No live shape refers to it: a shape that references this key's strings holds one of them.
                del self.keys[name]

    # --- reading --------------------------------------------------------------------------------------------------
    def span(self, seq: int) -> StoredSpan:
        """A fresh ``StoredSpan`` of row ``seq``."""
        chunk = self.chunks[(seq >> SHIFT) - self.first_chunk]
        slot = seq & _MASK
        bits = chunk.bits[slot]
        name_id, rid, sid, shape_id = self.contexts.values[chunk.contexts[slot]]
        keys, refs = self.shapes.values[shape_id]
        payload = _payload(chunk, slot)
        for position, attribute in refs:
            payload[position] = attribute.strings.values[payload[position]]
        count = len(keys)
        attributes = AttributeMap(keys, tuple(payload[1 : count + 1])) if count else EMPTY_ATTRIBUTES
        parent = _hex(chunk.parents[slot]) if bits & _HAS_PARENT else None
        if bits & _HAS_EXTRA:
            (odd_id, odd_parent, message, state, dropped_attributes, dropped_events, dropped_links, events, links) = (
                payload[count + 1]
            )
            return StoredSpan(
                trace_id=chunk.traces[slot],
                span_id=odd_id if odd_id is not None else _hex(chunk.span_ids[slot]),
                parent_span_id=odd_parent if odd_parent is not None else parent,
                name=self.names.values[name_id],
                kind=_KINDS[bits & _KIND_BITS],
                start_time_unix_nano=chunk.starts[slot],
                end_time_unix_nano=chunk.ends[slot],
                status_code=_STATUSES[(bits >> _STATUS_SHIFT) & 3],
                status_message=message,
                attributes=attributes,
                events=tuple(SpanEvent(n, t, _unpack_map(a), d) for n, t, a, d in events),
                links=tuple(SpanLink(t, s, st, _unpack_map(a), d, f) for t, s, st, a, d, f in links),
                resource=self.resources.values[rid],
                scope=self.scopes.values[sid],
                trace_state=state,
                flags=payload[0],
                dropped_attributes_count=dropped_attributes,
                dropped_events_count=dropped_events,
                dropped_links_count=dropped_links,
            )
        return StoredSpan(
            trace_id=chunk.traces[slot],
            span_id=_hex(chunk.span_ids[slot]),
            parent_span_id=parent,
            name=self.names.values[name_id],
            kind=_KINDS[bits & _KIND_BITS],
            start_time_unix_nano=chunk.starts[slot],
            end_time_unix_nano=chunk.ends[slot],
            status_code=_STATUSES[(bits >> _STATUS_SHIFT) & 3],
            attributes=attributes,
            resource=self.resources.values[rid],
            scope=self.scopes.values[sid],
            flags=payload[0],
        )

    def take(self, seq: int) -> StoredSpan:
        """:meth:`span`, then free the row's out-of-line bytes (for scratch rows read back once: replay)."""
        span = self.span(seq)
        chunk = self.chunks[(seq >> SHIFT) - self.first_chunk]
        if chunk.big:
            chunk.big.pop(seq & _MASK, None)
        return span

    def view(self, seq: int) -> RowView:
        """A lazy read-only view of row ``seq`` with the fields a query predicate reads."""
        return RowView(self, seq)

    def summary_rows(self, seqs: Iterable[int]) -> list[tuple[int, int, int, bool, str, str, bool]]:
        """``(start, seq, end, is_root, name, service, is_error)`` of rows, read from the columns alone."""
        chunks = self.chunks
        first = self.first_chunk
        contexts = self.contexts.values
        names = self.names.values
        resources = self.resources.values
        services: dict[int, str] = {}
        rows = []
        for seq in seqs:
            chunk = chunks[(seq >> SHIFT) - first]
            slot = seq & _MASK
            bits = chunk.bits[slot]
            name_id, rid, _, _ = contexts[chunk.contexts[slot]]
            service = services.get(rid)
            if service is None:
                service = services[rid] = resources[rid].service_name
            is_root = not bits & _HAS_PARENT  # set whenever the span has a parent, odd ids included
            rows.append(
                (
                    chunk.starts[slot],
                    seq,
                    chunk.ends[slot],
                    is_root,
                    names[name_id],
                    service,
                    (bits >> _STATUS_SHIFT) & 3 == 2,
                )
            )
        return rows

    def trace_id_of(self, seq: int) -> str:
        return self.chunks[(seq >> SHIFT) - self.first_chunk].traces[seq & _MASK]

    def duration(self, seq: int) -> int:
        chunk = self.chunks[(seq >> SHIFT) - self.first_chunk]
        return chunk.ends[seq & _MASK] - chunk.starts[seq & _MASK]

    def start(self, seq: int) -> int:
        return self.chunks[(seq >> SHIFT) - self.first_chunk].starts[seq & _MASK]

    def span_id_of(self, seq: int) -> str:
        chunk = self.chunks[(seq >> SHIFT) - self.first_chunk]
        slot = seq & _MASK
        if chunk.bits[slot] & _HAS_EXTRA:
            odd = self.span(seq).span_id
            return odd
        return _hex(chunk.span_ids[slot])

    def live_seqs(self, low: int | None = None, high: int | None = None) -> Iterator[int]:
        """Live seqs from ``low`` (inclusive) to ``high`` (exclusive), ascending."""
        first = self.first_chunk
        for index, chunk in enumerate(self.chunks):
            if not chunk.alive:
                continue
            start_seq = (first + index) << SHIFT
            bits = chunk.bits
            for slot in range(len(bits)):
                seq = start_seq + slot
                if (low is not None and seq < low) or (high is not None and seq >= high):
                    continue
                if not bits[slot] & _DEAD:
                    yield seq

    # --- time bounds ----------------------------------------------------------------------------------------------
    def ceiling(self, seq: int) -> int:
        """An upper bound of the start time of every row up to and including ``seq``."""
        return self.chunks[(seq >> SHIFT) - self.first_chunk].max_start

    def first_seq_since(self, since: int | None) -> int:
        """A seq before which no row starts at or after ``since``."""
        if since is None or not self.chunks:
            return self.base
        chunks = self.chunks
        index = bisect_left(chunks, since, key=lambda chunk: chunk.max_start)
        return (self.first_chunk + index) << SHIFT

    def _suffix_minima(self) -> list[int]:
        result = [0] * len(self.chunks)
        low = _UINT_MAX
        for index in range(len(self.chunks) - 1, -1, -1):
            low = min(low, self.chunks[index].min_start)
            result[index] = low
        return result

    def end_seq_until(self, until: int | None) -> int:
        """A seq from which no row starts before ``until``."""
        if until is None or not self.chunks:
            return self.next_seq
        minima = self._suffix_minima()
        index = bisect_left(minima, until)  # minima ascend; first chunk whose rows (and later) all start >= until
        return min(self.next_seq, (self.first_chunk + index) << SHIFT)

    def walk_newest(
        self, seqs: Iterable[int], accept: Callable[[int], bool], since: int | None
    ) -> Iterator[tuple[int, int]]:
        """Yield ``(start, seq)`` of the accepted rows among ``seqs`` (descending), newest start first, lazily.

        Before row i is read, every row left starts at or before a ceiling: the running maximum of starts up to row
        i, or the latest start through i's 32-row block. A held match starting at or after the ceiling outranks
        every row left (ties go to the later arrival), so it can be yielded; once the ceiling falls before ``since``
        nothing left can match. Arrival order is nearly start order, so this stops soon after the last result. The
        running maximum is tighter and costs a slice; it pays in a dense walk, which visits a block's rows one
        after another, while a sparse posting list touches a new block at nearly every row and takes the block's
        ceiling instead.
        """
        chunks = self.chunks
        first = self.first_chunk
        base = first << SHIFT
        held: list[tuple[int, int]] = []
        push = heapq.heappush
        pop = heapq.heappop
        current = -1
        bits = b""
        starts: Any = ()
        block_max: Any = ()
        previous = -1  # the block of the row before
        for seq in seqs:
            if seq < base:
                break
            index = (seq >> SHIFT) - first
            if index != current:
                current = index
                chunk = chunks[index]
                if since is not None and chunk.max_start < since:
                    break
                bits = chunk.bits
                starts = chunk.starts
                block_max = chunk.block_max
                previous = -1
            slot = seq & _MASK
            ceiling = block_max[slot >> _BLOCK_SHIFT]
            if slot >> _BLOCK_SHIFT == previous and held and -held[0][0] < ceiling:
                # Dense, and the block's ceiling holds the best match back: the running maximum up to this row.
                low = slot & ~_BLOCK_MASK
                ceiling = max(starts[low : slot + 1])
                prior = block_max[previous - 1] if previous else chunk.max_before
                if prior > ceiling:
                    ceiling = prior
            previous = slot >> _BLOCK_SHIFT
            while held and -held[0][0] >= ceiling:
                start, negative = pop(held)
                yield -start, -negative
            if since is not None and ceiling < since:
                break
            if not bits[slot] & _DEAD and accept(seq):
                push(held, (-starts[slot], -seq))
        while held:
            start, negative = pop(held)
            yield -start, -negative

    def walk_oldest(self, low: int, high: int, accept: Callable[[int], bool]) -> Iterator[tuple[int, int]]:
        """Yield ``(start, seq)`` of the accepted rows in ``[low, high)``, oldest start first, lazily."""
        chunks = self.chunks
        first = self.first_chunk
        minima = self._suffix_minima()
        held: list[tuple[int, int]] = []
        push = heapq.heappush
        pop = heapq.heappop
        low = max(low, first << SHIFT)
        for index in range((low >> SHIFT) - first, len(chunks)):
            chunk_start = (first + index) << SHIFT
            if chunk_start >= high:
                break
            chunk = chunks[index]
            if not chunk.alive:
                continue
            bits = chunk.bits
            starts = chunk.starts
            later = minima[index + 1] if index + 1 < len(minima) else _UINT_MAX
            # floors[slot]: the earliest start among this row and every row after it
            floors = list(accumulate(reversed(starts), min, initial=later))
            floors.reverse()
            for slot in range(max(0, low - chunk_start), min(len(bits), high - chunk_start)):
                floor = floors[slot]
                while held and held[0][0] <= floor:  # nothing left (this row on) starts earlier
                    yield pop(held)
                if not bits[slot] & _DEAD:
                    seq = chunk_start + slot
                    if accept(seq):
                        push(held, (starts[slot], seq))
        while held:
            yield pop(held)

    def oldest_newest(self) -> tuple[int | None, int | None]:
        """The earliest and the latest start time among live rows (O(n))."""
        low = high = None
        for chunk in self.chunks:
            if not chunk.alive:
                continue
            if chunk.alive == len(chunk.bits):
                a, b = min(chunk.starts), max(chunk.starts)
            else:
                live = [s for s, bits in zip(chunk.starts, chunk.bits, strict=True) if not bits & _DEAD]
                a, b = min(live), max(live)
            low = a if low is None or a < low else low
            high = b if high is None or b > high else high
        return low, high

    # --- attribute index ------------------------------------------------------------------------------------------
    def attribute_postings(self, key: str, value: Any) -> tuple[list[Any], bool, bool] | None:
        """Posting lists of the rows whose attribute ``key`` may equal ``value`` (typed), whether exactly, and
        whether each list's seqs all come before the next list's.

        None when the index cannot answer (a value type that is not indexed).
        """
        attribute = self.keys.get(key)
        kind = type(value)
        if kind is str:
            if attribute is None:
                return [], True, True
            if len(value) <= MAX_REF_STRING:
                ident = attribute.strings.ids.get(value)
                return ([attribute.postings[ident]] if ident is not None else []), True, True
            value_hash = long_string_hash(value)
            return attribute.hashes.postings(value_hash, value_hash), False, True
        if kind is bool:
            if attribute is None:
                return [], True, True
            posting = attribute.values.get(_BoolKey.TRUE if value else _BoolKey.FALSE)
            return ([posting] if posting is not None else []), True, True
        if kind is int or kind is float:
            if attribute is None or value != value:
                return [], True, True
            found = []
            try:
                as_float_exactly = kind is float or float(value) == value
            except OverflowError:  # an int beyond any float
                as_float_exactly = False
            # Floats live in the numeric runs: an int beyond 2**53 that a float equals exactly (2**60 == 2.0**60)
            # must find them there too, as ints and floats compare numerically.
            if -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT or as_float_exactly:
                found = attribute.numbers.postings(value, value)
            exact = as_float_exactly
            in_order = True
            if kind is int or value.is_integer():
                big = attribute.values.get(int(value))
                if big is not None:
                    found.append(big)
                    in_order = False
            return found, exact, in_order
        return None

    def attribute_range(self, key: str, op: str, bound: float) -> tuple[list[Any], bool, bool]:
        """Posting lists of the numeric values ``v`` of ``key`` with ``v op bound``, whether exactly, and whether
        each list's seqs all come before the next list's."""
        attribute = self.keys.get(key)
        if attribute is None or bound != bound:
            return [], True, True
        inf = math.inf
        runs = attribute.numbers
        if op == "<":
            found = runs.postings(-inf, bound, high_open=True)
        elif op == "<=":
            found = runs.postings(-inf, bound)
        elif op == ">":
            found = runs.postings(bound, inf, low_open=True)
        else:
            found = runs.postings(bound, inf)
        in_order = True
        for value, posting in attribute.values.items():  # ints beyond 2**53
            if type(value) is int and _compare(op, value, bound):
                found.append(posting)
                in_order = False
        return found, type(bound) is float or -_EXACT_FLOAT_INT <= bound <= _EXACT_FLOAT_INT, in_order


def _compare(op: str, value: Any, bound: Any) -> bool:
    if op == "<":
        return value < bound
    if op == "<=":
        return value <= bound
    if op == ">":
        return value > bound
    return value >= bound


def _shifted(values: array, seqs: array, shift: int) -> tuple[array, array]:
    """A run without its entries before ``shift``, the others renumbered from there."""
    keep = [i for i, seq in enumerate(seqs) if seq >= shift]
    return array(values.typecode, [values[i] for i in keep]), array(SEQ_TYPE, [seqs[i] - shift for i in keep])


def keys_mask(shapes: _Table, shape_id: int) -> tuple[tuple[str, ...], int]:
    """The table key of a shape (its key tuple and its reference mask)."""
    keys, refs = shapes.values[shape_id]
    mask = 0
    for position, _ in refs:
        mask |= 1 << (position - 1)
    return keys, mask


def _clean_index(index: dict[Any, Any], clean: Callable[[Any], Any]) -> None:
    empty = []
    for key, posting in index.items():
        kept = clean(posting)
        if kept is None:
            empty.append(key)
        elif kept is not posting:
            index[key] = kept
    for key in empty:
        del index[key]


#: Bytes of a row beside its attributes (columns, name/service/duration postings, its trace's seq list entry).
ROW_BYTES = 84
#: Bytes a trace costs beside its rows (its id string, its dict slot, its seq list and deque slot; see the store).
TRACE_BYTES = 240
_BIG_ROW_OVERHEAD = 96  # a bytes object and its dict slot, for a row kept out of line


def row_bytes(span: StoredSpan) -> int:
    """What a span's row costs in memory, index entries included (interned strings aside: see the store).

    ``ROW_BYTES`` (84); per attribute: a str of at most 256 characters 9 (table id and posting entry), a longer str
    24 plus its UTF-8 length (and a hash-run entry), an int 15 plus its msgpack size (a sorted-run entry), a float
    24, a bool 7, anything else its nested size (:func:`_nested_bytes`); a span with a status message, trace state,
    events, links, dropped counts or an id that is not 16 lowercase hex characters adds :func:`_extras_bytes`; a row
    over 512 bytes by this count adds 96 and a 32nd of that count (it is kept out of line).

    The constants are calibrated against RSS in steady state (a store fed 4-10x its capacity, evicting all along,
    ``python -m benchmarks --only families``): they include the heap fragmentation that churn leaves, ~10-20%
    above what a freshly filled store takes.
    """
    size = 0
    for value in span.attributes.values_:
        kind = type(value)
        if kind is str:
            size += 9 if len(value) <= MAX_REF_STRING else 24 + _utf8_length(value)
        elif kind is int:
            size += 15 + _int_bytes(value)
        elif kind is float:
            size += 24
        elif kind is bool:
            size += 7
        else:
            size += _nested_bytes(value)
    if (
        span.status_message
        or span.trace_state
        or span.events
        or span.links
        or span.dropped_attributes_count
        or span.dropped_events_count
        or span.dropped_links_count
        or _hex_int(span.span_id) is None
        or (span.parent_span_id is not None and _hex_int(span.parent_span_id) is None)
    ):
        size += _extras_bytes(span)
    if size > BIG_ROW_BYTES:
        size += _BIG_ROW_OVERHEAD + (size >> 5)
    return size + ROW_BYTES


def _extras_bytes(span: StoredSpan) -> int:
    """40, the status message and trace state, 24 an event plus its name and attributes (nested), 64 a link plus its
    attributes."""
    size = 40 + _utf8_length(span.status_message) + len(span.trace_state)
    for event in span.events:
        size += 24 + len(event.name) + _nested_bytes(event.attributes)
    for link in span.links:
        size += 64 + _nested_bytes(link.attributes)
    return size


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _int_bytes(value: int) -> int:
    """msgpack's size of an int."""
    if -32 <= value < 128:
        return 1
    if -128 <= value < 256:
        return 2
    if -32768 <= value < 65536:
        return 3
    if -(1 << 31) <= value < 1 << 32:
        return 5
    return 9


def _nested_bytes(value: object) -> int:
    """Bytes a value takes packed inside a row (msgpack, rounded up), not indexed: str 2 plus its UTF-8 length,
    bool/None 1, int its msgpack size, float 9, bytes 5 plus its length, an array 5 plus its items, a map 5 plus per
    entry 2, its key's UTF-8 length and its value."""
    kind = type(value)
    if kind is str:
        return 2 + _utf8_length(value)  # type: ignore[arg-type]
    if kind is bool or value is None:
        return 1
    if kind is int:
        return _int_bytes(value)  # type: ignore[arg-type]
    if kind is float:
        return 9
    if kind is bytes:
        return 5 + len(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        return 5 + sum(map(_nested_bytes, value))  # type: ignore[arg-type]
    if isinstance(value, AttributeMap):
        return 5 + sum(2 + _utf8_length(k) for k in value.keys_) + sum(map(_nested_bytes, value.values_))
    return 64


#: What one interned attribute string costs beyond its characters: the str object, its dict slot, its table and
#: posting slots and reference count, and its posting (an int, or an array once repeated). Measured: ~240 on the
#: high-cardinality family (``user.id`` of 100,000 values), ~300 in steady state (fragmentation as strings churn).
SHARED_STRING_BYTES = 300


class RowView:
    """A row read lazily, field by field, for query predicates (``StoredSpan``'s attribute names).

    A predicate that rejects a row never builds its ``StoredSpan``; one that reads attributes decodes the blob once.
    """

    __slots__ = ("_chunk", "_columns", "_slot", "_span", "seq")

    def __init__(self, columns: SpanColumns, seq: int) -> None:
        self._columns = columns
        self.seq = seq
        self._chunk = columns.chunks[(seq >> SHIFT) - columns.first_chunk]
        self._slot = seq & _MASK
        self._span: StoredSpan | None = None

    def full(self) -> StoredSpan:
        span = self._span
        if span is None:
            span = self._span = self._columns.span(self.seq)
        return span

    @property
    def trace_id(self) -> str:
        return self._chunk.traces[self._slot]

    @property
    def name(self) -> str:
        columns = self._columns
        return columns.names.values[columns.contexts.values[self._chunk.contexts[self._slot]][0]]

    @property
    def resource(self) -> Resource:
        columns = self._columns
        return columns.resources.values[columns.contexts.values[self._chunk.contexts[self._slot]][1]]

    @property
    def kind(self) -> SpanKind:
        return _KINDS[self._chunk.bits[self._slot] & _KIND_BITS]

    @property
    def status_code(self) -> StatusCode:
        return _STATUSES[(self._chunk.bits[self._slot] >> _STATUS_SHIFT) & 3]

    @property
    def start_time_unix_nano(self) -> int:
        return self._chunk.starts[self._slot]

    @property
    def end_time_unix_nano(self) -> int:
        return self._chunk.ends[self._slot]

    @property
    def parent_span_id(self) -> str | None:
        bits = self._chunk.bits[self._slot]
        if bits & _HAS_EXTRA:
            return self.full().parent_span_id
        return _hex(self._chunk.parents[self._slot]) if bits & _HAS_PARENT else None

    @property
    def service_name(self) -> str:
        return self.resource.service_name

    @property
    def attributes(self) -> AttributeMap:
        return self.full().attributes

    @property
    def error_types(self) -> tuple[str, ...]:
        return self.full().error_types

    def __getattr__(self, name: str) -> Any:
        return getattr(self.full(), name)
