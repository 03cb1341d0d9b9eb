"""Index files: a store's packed state on disk, so that opening a store decodes only what was appended since.

Why
---
Opening a store replays its log: decoding OTLP JSON and indexing it costs ~35 µs a span, 35 s for a full store of a
million spans. An index file holds what that replay builds (the :class:`~spanstore.columns.SpanColumns` chunks, tables
and posting lists, and the store's trace lists and counters) as it stood at a place in the log; opening loads it
with a few large reads and decodes only the lines appended after that place.

Why one file for the state, not one a segment: every table and posting list of the engine spans all segments (a
string is interned once for the whole store; a posting list holds the rows of every segment), so per-segment files
would have to be merged id by id on open, which costs as much as indexing again. So the file is the engine's state
as of offset ``o`` of segment ``n`` (usually the end of what was written when a store was last opened), named
``index-<n>.spanstore``; a newer one replaces it. See :mod:`spanstore.log` for the directory layout.

The log stays the only source of truth. An index file is used only when everything checks out: its magic and format
version, the byte order, the store's budgets (``max_spans``, ``max_bytes``, ``max_spans_per_trace``), the identity of
every segment it covers (the bytes covered, and a CRC-32 of the 64 KiB before their end; segments only grow at their
end, so the last one may have grown since), and a CRC-32 of every frame. Anything else (missing, stale, of another
version, truncated, bit-flipped) is ignored with one warning and rebuilt by the replay that follows. Files are
written to a temporary name (``O_EXCL | O_NOFOLLOW``, mode 0600) and renamed into place, so a reader never sees half
a file and a writer killed mid-write leaves only a temporary file, removed later.

Segments deleted by retention after the file was written are allowed: the rows that came from them (a prefix, the
file records each segment's first row) are evicted as the file is loaded, whole traces at a time, as FIFO eviction
would have.

Format: the 16-byte magic, then frames. A frame is a 13-byte header (kind, payload length, CRC-32 of the payload)
and its payload: msgpack (``OBJ``) or the raw bytes of an ``array`` (``RAW``, native byte order, recorded in the
header frame). The last frame is ``END``: a file without it is truncated.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, NamedTuple

import msgspec

from spanstore.columns import _DECODE as _decode_value_payload
from spanstore.columns import (
    CHUNK_ROWS,
    FIELD_INDICES,
    SEQ_TYPE,
    SpanColumns,
    _AttributeKey,
    _BoolKey,
    _Chunk,
    _pack_value,
    _Runs,
    _Table,
    keys_mask,
)
from spanstore.columns import _encode as _encode_payload
from spanstore.log import INDEX_PREFIX, SegmentFile, SkippedLine, index_name, index_sequence
from spanstore.model import AttributeMap, Resource, Scope, share_keys

__all__ = [
    "FORMAT_VERSION",
    "IndexHeader",
    "IndexProblem",
    "LoadedIndex",
    "StoreState",
    "find_index",
    "native_layout",
    "segment_identity",
    "write_index",
]

logger = logging.getLogger(__name__)

MAGIC = b"spanstore-index\n"
#: Bumped whenever the layout of the file or of the engine's state changes: an older file is then ignored.
FORMAT_VERSION = 2
_FRAME = struct.Struct("<BQI")
_OBJ = 1
_RAW = 2
_END = 3
_TAIL_BYTES = 1 << 16
_TEMP_SUFFIX = ".tmp"
_STALE_TEMP_SECONDS = 3600.0
_FILE_MODE = 0o600
_NATIVE = {"byteorder": sys.byteorder, "I": array("I").itemsize, "Q": array("Q").itemsize, "q": array("q").itemsize}


def native_layout() -> dict[str, Any]:
    """This machine's byte order and array item sizes (the raw frames are native arrays)."""
    return dict(_NATIVE)


class UnusableIndex(Exception):
    """An index file that cannot be used (the message says why); the caller replays instead."""

    #: False when the file is sound but made for another configuration (budgets): worth no warning.
    damaged = True


class _OtherBudgets(UnusableIndex):
    damaged = False


class IndexProblem(NamedTuple):
    """Why an index file was not used: ``damaged`` False when it is sound but was built under other budgets."""

    reason: str
    damaged: bool = True


class IndexHeader(msgspec.Struct, array_like=True):
    """What an index file is: the budgets it was built under and the segments whose spans it holds."""

    version: int
    native: dict[str, Any]
    budgets: tuple[int, int, int]  # max_spans, max_bytes, max_spans_per_trace
    #: (sequence, bytes covered, CRC-32 of the 64 KiB before that, first row seq of the segment's spans), oldest
    #: first; the last may be covered in part (it was being written): what follows is decoded at open
    segments: list[tuple[int, int, int, int]]
    skipped: list[SkippedLine]  # the skipped lines met in those segments, as the log reports them

    @property
    def end(self) -> tuple[int, int]:
        """The log position the state reaches: (segment, offset)."""
        return (self.segments[-1][0], self.segments[-1][1])


class StoreState(NamedTuple):
    """What an index file holds: the store's columns, its trace lists and its counters (by attribute name)."""

    columns: SpanColumns
    traces: dict[str, array]  # trace id -> seqs of its live rows
    trace_order: collections.deque[str]  # live traces, arrival order
    counters: dict[str, Any]


class LoadedIndex(NamedTuple):
    """An index file's header and the state it holds, ready for the store to adopt."""

    header: IndexHeader
    state: StoreState

    @property
    def last_segment(self) -> int:
        return self.header.segments[-1][0]


def segment_identity(directory: str, name: str, end: int) -> int:
    """CRC-32 of the 64 KiB of a segment before ``end`` (with the size, what tells the bytes an index file covers
    from any other file)."""
    fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW)
    try:
        start = max(0, end - _TAIL_BYTES)
        return zlib.crc32(os.pread(fd, end - start, start))
    finally:
        os.close(fd)


# --- frames ---------------------------------------------------------------------------------------------------------
_ENCODER = msgspec.msgpack.Encoder()
_PLAIN_DECODE = msgspec.msgpack.Decoder().decode


class _FrameWriter:
    __slots__ = ("file",)

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        file.write(MAGIC)

    def raw(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.file.write(_FRAME.pack(_RAW, view.nbytes, zlib.crc32(view)))
        self.file.write(view)

    def obj(self, value: Any, kind: int = _OBJ) -> None:
        data = _ENCODER.encode(value)
        self.file.write(_FRAME.pack(kind, len(data), zlib.crc32(data)))
        self.file.write(data)

    def payload(self, value: Any) -> None:
        """A value holding attribute values of any type (tuples, maps, big ints stay what they are)."""
        data = _encode_payload(value)
        self.file.write(_FRAME.pack(_OBJ, len(data), zlib.crc32(data)))
        self.file.write(data)


class _FrameReader:
    __slots__ = ("file", "remaining")

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        if file.read(len(MAGIC)) != MAGIC:
            raise UnusableIndex("not an index file (bad magic)")
        self.remaining = size - len(MAGIC)

    def _header(self, kind: int) -> tuple[int, int]:
        header = self.file.read(_FRAME.size)
        if len(header) != _FRAME.size:
            raise UnusableIndex("truncated (a frame header is cut short)")
        found, length, crc = _FRAME.unpack(header)
        self.remaining -= _FRAME.size
        if found != kind:
            raise UnusableIndex(f"expected a frame of kind {kind}, got {found}")
        if length > self.remaining:
            raise UnusableIndex(f"truncated (a frame of {length} bytes, {self.remaining} left in the file)")
        self.remaining -= length
        return length, crc

    def _next(self, kind: int) -> bytes:
        length, crc = self._header(kind)
        data = self.file.read(length)
        if len(data) != length or zlib.crc32(data) != crc:
            raise UnusableIndex("checksum mismatch (the file is damaged)")
        return data

    def obj(self) -> Any:
        return _PLAIN_DECODE(self._next(_OBJ))

    def payload(self) -> Any:
        return _decode_value_payload(self._next(_OBJ))

    def raw(self, typecode: str) -> array:
        """An array read straight into its own buffer (no intermediate bytes object to copy from)."""
        length, crc = self._header(_RAW)
        values = array(typecode)
        if length % values.itemsize:
            raise UnusableIndex(f"an array of {length} bytes is not a whole number of {values.itemsize}-byte items")
        if length:
            values = array(typecode, bytes(length))
            view = memoryview(values).cast("B")
            if self.file.readinto(view) != length or zlib.crc32(view) != crc:
                raise UnusableIndex("checksum mismatch (the file is damaged)")
        return values

    def raw_bytes(self) -> bytes:
        return self._next(_RAW)

    def end(self) -> None:
        self._next(_END)
        if self.remaining:
            raise UnusableIndex(f"{self.remaining} unexpected bytes after the end")


# --- postings -------------------------------------------------------------------------------------------------------
_NONE = -1
_ONE = -2


def _write_postings(out: _FrameWriter, postings: Iterable[Any]) -> None:
    """Posting lists (None, an int, or an array of seqs) as two arrays: a length each (-1 None, -2 int) and the seqs."""
    lengths = array("q")
    flat = array(SEQ_TYPE)
    for posting in postings:
        if posting is None:
            lengths.append(_NONE)
        elif type(posting) is int:
            lengths.append(_ONE)
            flat.append(posting)
        else:
            lengths.append(len(posting))
            flat.extend(posting)
    out.raw(lengths)
    out.raw(flat)


def _read_postings(source: _FrameReader) -> list[Any]:
    lengths = source.raw("q")
    flat = source.raw(SEQ_TYPE)
    postings: list[Any] = []
    append = postings.append
    at = 0
    for length in lengths:
        if length == _NONE:
            append(None)
        elif length == _ONE:
            append(flat[at])
            at += 1
        else:
            append(flat[at : at + length])
            at += length
    if at != len(flat):
        raise UnusableIndex("posting lists do not add up")
    return postings


def _index_key(key: Any) -> Any:
    if type(key) is _BoolKey:
        return [1, key.value]
    return [0, _pack_value(key)]


def _write_index_dict(out: _FrameWriter, index: dict[Any, Any]) -> None:
    out.payload([_index_key(key) for key in index])
    _write_postings(out, index.values())


def _read_index_dict(source: _FrameReader) -> dict[Any, Any]:
    keys = [(_BoolKey.TRUE if value else _BoolKey.FALSE) if tag else value for tag, value in source.payload()]
    postings = _read_postings(source)
    if len(keys) != len(postings):
        raise UnusableIndex("an index's keys and posting lists differ in number")
    return dict(zip(keys, postings, strict=True))


# --- tables ---------------------------------------------------------------------------------------------------------
def _write_table(out: _FrameWriter, table: _Table, pack: Callable[[Any], Any]) -> None:
    out.payload([[None if value is None else pack(value) for value in table.values], table.free])
    out.raw(table.refs)


def _read_table(source: _FrameReader, unpack: Callable[[Any], Any]) -> _Table:
    values, free = source.payload()
    table = _Table()
    table.values = [None if value is None else unpack(value) for value in values]
    table.free = free
    table.refs = source.raw("q")
    if len(table.refs) != len(table.values):
        raise UnusableIndex("a table's values and reference counts differ in number")
    freed = set(free)
    table.ids = {value: ident for ident, value in enumerate(table.values) if ident not in freed and value is not None}
    return table


def _pack_attributes(attributes: AttributeMap) -> list[Any]:
    return [list(attributes.keys_), [_pack_value(value) for value in attributes.values_]]


def _unpack_attributes(packed: list[Any]) -> AttributeMap:
    return AttributeMap.from_pairs(packed[0], packed[1])


def _pack_resource(resource: Resource) -> list[Any]:
    return [_pack_attributes(resource.attributes), resource.schema_url, resource.dropped_attributes_count]


def _unpack_resource(packed: list[Any]) -> Resource:
    return Resource(attributes=_unpack_attributes(packed[0]), schema_url=packed[1], dropped_attributes_count=packed[2])


def _pack_scope(scope: Scope) -> list[Any]:
    return [
        scope.name,
        scope.version,
        _pack_attributes(scope.attributes),
        scope.schema_url,
        scope.dropped_attributes_count,
    ]


def _unpack_scope(packed: list[Any]) -> Scope:
    return Scope(
        name=packed[0],
        version=packed[1],
        attributes=_unpack_attributes(packed[2]),
        schema_url=packed[3],
        dropped_attributes_count=packed[4],
    )


def _write_runs(out: _FrameWriter, runs: _Runs) -> None:
    out.obj([runs.typecode, len(runs.runs)])
    for values, seqs in runs.runs:
        out.raw(values)
        out.raw(seqs)
    out.raw(runs.open_values)
    out.raw(runs.open_seqs)


def _read_runs(source: _FrameReader) -> _Runs:
    typecode, count = source.obj()
    if typecode not in ("d", "q"):
        raise UnusableIndex(f"unknown run type {typecode!r}")
    runs = _Runs(typecode)
    for _ in range(count):
        values = source.raw(typecode)
        seqs = source.raw(SEQ_TYPE)
        if len(values) != len(seqs):
            raise UnusableIndex("a run's values and seqs differ in number")
        runs.runs.append((values, seqs))
    runs.open_values = source.raw(typecode)
    runs.open_seqs = source.raw(SEQ_TYPE)
    if len(runs.open_values) != len(runs.open_seqs):
        raise UnusableIndex("a run's values and seqs differ in number")
    return runs


_CHUNK_COLUMNS = (
    ("starts", "Q"),
    ("ends", "Q"),
    ("span_ids", "Q"),
    ("parents", "Q"),
    ("contexts", "I"),
    ("sizes", "I"),
    ("offsets", "I"),
    ("block_max", "Q"),
)


# --- writing --------------------------------------------------------------------------------------------------------
def write_index(directory: str, header: IndexHeader, state: StoreState) -> str:
    """Write the store's state as the index file of ``header.segments[-1]``, atomically; return its path.

    The caller holds the store's lock (the state must not change while it is written). Older index files of the
    directory are removed once the new one is in place. Raises OSError (the caller logs it: an index is an
    optimization, never a reason to fail).
    """
    last = header.segments[-1][0]
    final = os.path.join(directory, index_name(last))
    temporary = os.path.join(directory, f".{index_name(last)}.{os.getpid()}.{time.monotonic_ns()}{_TEMP_SUFFIX}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
    try:
        with open(fd, "wb", buffering=1 << 20, closefd=True) as file:
            _write_state(_FrameWriter(file), header, state)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _remove_older(directory, last)
    return final


def _write_state(out: _FrameWriter, header: IndexHeader, state: StoreState) -> None:
    columns, traces, trace_order, counters = state
    out.obj(header)
    order = list(trace_order)
    # Every trace id a chunk row names (live traces first, in arrival order; then those of dead rows), so that each
    # row stores a 4-byte number and the loaded store shares one string a trace.
    numbers = {trace_id: number for number, trace_id in enumerate(order)}
    for chunk in columns.chunks:
        for trace_id in chunk.traces:
            if trace_id not in numbers:
                numbers[trace_id] = len(numbers)
    out.payload([list(numbers), len(order)])
    lengths = array("I")
    flat = array(SEQ_TYPE)
    for trace_id in order:
        seqs = traces[trace_id]
        lengths.append(len(seqs))
        flat.extend(seqs)
    out.raw(lengths)
    out.raw(flat)
    del lengths, flat
    out.payload([[name, dict(value) if isinstance(value, dict) else value] for name, value in counters.items()])

    out.obj([columns.first_chunk, columns.next_seq, columns.shared_bytes, len(columns.chunks)])
    _write_table(out, columns.names, lambda value: value)
    _write_table(out, columns.resources, _pack_resource)
    _write_table(out, columns.scopes, _pack_scope)
    _write_table(out, columns.shapes, lambda value: [list(value[0]), [[p, k.name] for p, k in value[1]]])
    _write_table(out, columns.contexts, list)
    out.payload(list(columns.keys))
    for attribute in columns.keys.values():
        _write_table(out, attribute.strings, lambda value: value)
        _write_postings(out, attribute.postings)
        _write_runs(out, attribute.numbers)
        _write_runs(out, attribute.hashes)
        _write_index_dict(out, attribute.values)
    for index in columns.indices():
        _write_index_dict(out, index)

    for chunk in columns.chunks:
        out.obj([chunk.alive, chunk.max_before, chunk.max_start, chunk.min_start, sorted(chunk.big)])
        for name, _ in _CHUNK_COLUMNS:
            out.raw(getattr(chunk, name))
        out.raw(chunk.bits)
        out.raw(chunk.blob)
        out.raw(array("I", [numbers[trace_id] for trace_id in chunk.traces]))
        for slot in sorted(chunk.big):
            out.raw(chunk.big[slot])
    out.obj(0, _END)


def _remove_older(directory: str, last: int) -> None:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        sequence = index_sequence(name)
        stale = sequence is not None and sequence < last
        if not stale and name.startswith("." + INDEX_PREFIX) and name.endswith(_TEMP_SUFFIX):
            # A temporary file of a writer that died mid-write (or of one still writing: only old ones go).
            try:
                stale = now - os.lstat(os.path.join(directory, name)).st_mtime > _STALE_TEMP_SECONDS
            except OSError:
                stale = False
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


# --- reading --------------------------------------------------------------------------------------------------------
def find_index(
    directory: str, budgets: tuple[int, int, int], segments: list[SegmentFile]
) -> tuple[LoadedIndex | None, IndexProblem | None]:
    """The newest usable index file for these segments, loaded; or None and why not (None: there is none).

    Never raises for a bad file: the reason comes back for the caller to count and log.
    """
    candidates = []
    try:
        names = os.listdir(directory)
    except OSError as exc:
        return None, IndexProblem(f"cannot list {directory}: {exc}")
    newest = segments[-1].sequence if segments else 0
    for name in names:
        sequence = index_sequence(name)
        if sequence is not None and sequence <= newest:
            candidates.append((sequence, name))
    if not candidates:
        return None, None
    _, name = max(candidates)
    path = os.path.join(directory, name)
    try:
        return _load(path, budgets, directory, segments), None
    except UnusableIndex as exc:
        return None, IndexProblem(f"{name}: {exc}", exc.damaged)
    except OSError as exc:
        return None, IndexProblem(f"{name}: cannot read: {exc}")
    except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        return None, IndexProblem(f"{name}: damaged: {type(exc).__name__}: {exc}")


def _load(path: str, budgets: tuple[int, int, int], directory: str, segments: list[SegmentFile]) -> LoadedIndex:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb", buffering=0, closefd=True) as file:
        size = os.fstat(file.fileno()).st_size
        source = _FrameReader(file, size)
        header = msgspec.msgpack.decode(source._next(_OBJ), type=IndexHeader)
        _check_header(header, budgets, directory, segments)
        return _read_state(source, header)


def _check_header(
    header: IndexHeader, budgets: tuple[int, int, int], directory: str, segments: list[SegmentFile]
) -> None:
    if header.version != FORMAT_VERSION:
        raise UnusableIndex(f"format version {header.version}, this spanstore reads version {FORMAT_VERSION}")
    if header.native != _NATIVE:
        raise UnusableIndex(f"written on another kind of machine ({header.native}, here {_NATIVE})")
    if tuple(header.budgets) != budgets:
        raise _OtherBudgets(
            f"built for max_spans, max_bytes, max_spans_per_trace = {tuple(header.budgets)}, opened with {budgets}"
        )
    if not header.segments:
        raise UnusableIndex("covers no segment")
    on_disk = {segment.sequence: segment for segment in segments}
    present = False
    last = len(header.segments) - 1
    for position, (sequence, size, crc, _) in enumerate(header.segments):
        segment = on_disk.get(sequence)
        if segment is None:
            if present or position == last:
                raise UnusableIndex(f"segment {sequence} it holds is gone, but older ones remain")
            continue  # deleted by retention: its rows are evicted on load
        present = True
        # Segments grow only at the end: the last one covered may have grown since; the others were sealed.
        grown = segment.size > size and position == last
        if (segment.size != size and not grown) or segment_identity(directory, segment.name, size) != crc:
            raise UnusableIndex(
                f"stale: {segment.name} is not the file it was built from (size {segment.size}, covered {size})"
            )
    if not present:
        raise UnusableIndex("every segment it holds has been deleted")
    first_covered = header.segments[0][0]
    if any(segment.sequence < first_covered for segment in segments):
        raise UnusableIndex(f"the directory holds segments older than the ones it covers (from {first_covered})")


def _read_state(source: _FrameReader, header: IndexHeader) -> LoadedIndex:
    trace_ids, live = source.payload()
    lengths = source.raw("I")
    flat = source.raw(SEQ_TYPE)
    if len(lengths) != live or sum(lengths) != len(flat):
        raise UnusableIndex("trace lists do not add up")
    traces: dict[str, array] = {}
    at = 0
    for trace_id, length in zip(trace_ids, lengths, strict=False):
        traces[trace_id] = flat[at : at + length]
        at += length
    trace_order = collections.deque(trace_ids[:live])
    counters: dict[str, Any] = {}
    for name, value in source.payload():
        counters[name] = collections.Counter(value) if isinstance(value, dict) else value

    columns = SpanColumns()
    columns.first_chunk, columns.next_seq, columns.shared_bytes, chunk_count = source.obj()
    columns.dead_high = columns.next_seq - 1  # the lists may hold rows killed since the last compaction
    columns.names = _read_table(source, lambda value: value)
    columns.resources = _read_table(source, _unpack_resource)
    columns.scopes = _read_table(source, _unpack_scope)
    # Resolved below, once the keys exist.
    columns.shapes = _read_table(source, lambda value: (tuple(value[0]), tuple(map(tuple, value[1]))))
    columns.contexts = _read_table(source, tuple)
    key_names = source.payload()
    keys: dict[str, _AttributeKey] = {}
    for name in key_names:
        attribute = _AttributeKey(name)
        attribute.strings = _read_table(source, lambda value: value)
        attribute.postings = _read_postings(source)
        attribute.numbers = _read_runs(source)
        attribute.hashes = _read_runs(source)
        attribute.values = _read_index_dict(source)
        keys[name] = attribute
    columns.keys = keys
    shapes = columns.shapes
    shapes.values = [
        None if value is None else (share_keys(tuple(value[0])), tuple((p, keys[k]) for p, k in value[1]))
        for value in shapes.values
    ]
    shapes.ids = {keys_mask(shapes, ident): ident for ident, value in enumerate(shapes.values) if value is not None}
    for name in FIELD_INDICES:
        setattr(columns, name, _read_index_dict(source))

    for _ in range(chunk_count):
        alive, max_before, max_start, min_start, big_slots = source.obj()
        chunk = _Chunk(max_before)
        chunk.alive = alive
        chunk.max_start = max_start
        chunk.min_start = min_start
        for name, typecode in _CHUNK_COLUMNS:
            setattr(chunk, name, source.raw(typecode))
        rows = len(chunk.starts)
        bits = source.raw_bytes()
        blob = source.raw_bytes()
        numbers = source.raw("I")
        if not (len(bits) == rows == len(numbers) and rows <= CHUNK_ROWS):
            raise UnusableIndex("a chunk's columns differ in length")
        full = rows == CHUNK_ROWS
        chunk.bits = bytearray(bits)
        chunk.blob = blob if full else bytearray(blob)
        names = [trace_ids[number] for number in numbers]
        chunk.traces = tuple(names) if full else names  # type: ignore[assignment]
        chunk.big = {slot: source.raw_bytes() for slot in big_slots}
        columns.chunks.append(chunk)
    source.end()
    return LoadedIndex(header, StoreState(columns, traces, trace_order, counters))
