"""The append-only span log: OTLP JSON Lines segment files in a directory.

A store directory holds::

    spanstore.json          marker and format metadata (written once, at creation)
    spanstore.lock          the cross-process lock file (portalocker, around each batch append)
    spans-000001.jsonl      segments, oldest first; every line one OTLP ``TracesData`` object
    spans-000002.jsonl      ... the newest segment is the one being written
    index-000002.spanstore  derived: the store's packed state as of a place in segment 2 (spanstore.index_file);
                            never the truth, rebuilt from the segments whenever it is missing, stale or damaged

Segments are plain OTLP JSON Lines, so the OpenTelemetry Collector's ``otlp_json_file`` receiver (and
``spanstore import``) read them as they are.

Why it is built this way:

* Encoding happens outside every lock; the lock is held only around the ``write`` of whole lines, so several
  threads and processes can append at once and their lines are never interleaved or glued together.
* A segment stops growing before the next one is created (both under the lock), so a reader that sees segment
  ``n + 1`` knows segment ``n`` is final: a partial last line there is a torn write from a crash, not a write in
  progress.
* A torn tail is never "repaired" into data: the next writer ends it with ``"\\n"`` so no good line is glued to
  garbage, and readers skip (and count) the broken line.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import re
import stat as stat_module
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import portalocker

from spanstore import forksafe
from spanstore.errors import CorruptLineError, LockTimeoutError, NotAStoreError, StorageError, StoreClosedError
from spanstore.model import StoredSpan
from spanstore.otlp import DEFAULT_MAX_LINE_BYTES, decode_line, encode_spans

__all__ = [
    "FsyncPolicy",
    "LogPosition",
    "LogStats",
    "SegmentFile",
    "SkippedLine",
    "SpanLog",
    "index_name",
    "index_sequence",
    "is_segment_name",
    "segment_name",
]

logger = logging.getLogger(__name__)

#: When ``append`` forces data to stable storage: see :class:`SpanLog` for what each policy can lose.
FsyncPolicy = Literal["never", "interval", "always"]

MARKER_NAME = "spanstore.json"
#: What a writer appends to a line another writer left torn: trailing bytes no JSON document may have.
_TORN_MARK = b" <torn: the writer of this line was interrupted>\n"
_TORN_MARK_LINE = _TORN_MARK[:-1]
LOCK_NAME = "spanstore.lock"
SEGMENT_PREFIX = "spans-"
SEGMENT_SUFFIX = ".jsonl"
FORMAT_NAME = "spanstore-log"
FORMAT_VERSION = 1

_SEGMENT_RE = re.compile(r"spans-(\d{6,})\.jsonl\Z")
#: Segments roll at this size (each roll costs an fsync under the "interval" and "always" policies).
DEFAULT_SEGMENT_MAX_BYTES = 16 << 20
INDEX_PREFIX = "index-"
INDEX_SUFFIX = ".spanstore"
_INDEX_RE = re.compile(r"index-(\d{6,})\.spanstore\Z")
_FSYNC_POLICIES = ("never", "interval", "always")
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_SKIPPED_KEEP = 100  # SkippedLine records kept in stats (the count is exact)
_SKIPS_WARNED_MAX = 5  # skipped lines warned about one by one (per log object); the rest are summarized per read
_SEEN_KEYS_MAX = 100_000  # dedupe set for skipped-line counting; cleared when full (may then count twice)
_GC_PAUSE_BYTES = 1 << 20  # decode with the cyclic GC paused when a read holds at least this much
#: Readers take a segment this many bytes at a time, so a read holds about one block (plus the line in hand, which
#: may be longer) whatever the segment's size: reading a 16 MiB segment whole held it twice (the bytes and their
#: lines), enough to push opening a full store past its memory promise.
_READ_BLOCK_BYTES = 1 << 20
_LOCK_POLL_MAX_SECONDS = 0.005

_fdatasync = getattr(os, "fdatasync", os.fsync)
_Wanted = bytes | frozenset[bytes] | None  # which lines a read decodes: holding these bytes, naming these traces
_LOCK_EX_NB = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
try:  # portalocker >= 3 on POSIX: call its flock locker directly, skipping ~6 µs of per-call dispatch
    from portalocker.portalocker import FlockLocker as _FlockLocker

    _flock = _FlockLocker()
    _lock_fd, _unlock_fd = _flock.lock, _flock.unlock
except ImportError:  # pragma: no cover - older portalocker or Windows
    _lock_fd, _unlock_fd = portalocker.lock, portalocker.unlock


def is_segment_name(name: str) -> bool:
    """True for a segment file's name (``spans-000003.jsonl``).

    >>> is_segment_name("spans-000003.jsonl"), is_segment_name("spanstore.json")
    (True, False)
    """
    return _SEGMENT_RE.match(name) is not None


def segment_name(sequence: int) -> str:
    """The file name of segment ``sequence``.

    >>> segment_name(3)
    'spans-000003.jsonl'
    """
    return f"{SEGMENT_PREFIX}{sequence:06d}{SEGMENT_SUFFIX}"


def index_name(sequence: int) -> str:
    """The file name of the derived index that holds the store's state up to a place in segment ``sequence``.

    >>> index_name(3)
    'index-000003.spanstore'
    """
    return f"{INDEX_PREFIX}{sequence:06d}{INDEX_SUFFIX}"


def index_sequence(name: str) -> int | None:
    """The segment sequence number an index file's name covers up to, or None for any other name.

    >>> index_sequence("index-000003.spanstore"), index_sequence("spans-000003.jsonl")
    (3, None)
    """
    match = _INDEX_RE.match(name)
    return int(match.group(1)) if match is not None else None


class SegmentFile(NamedTuple):
    """A segment as listed on disk: its sequence number, file name and size in bytes."""

    sequence: int
    name: str
    size: int


class LogPosition(NamedTuple):
    """A place in the log: a segment's sequence number and a byte offset (always at a line start) in it.

    Positions order as tuples; ``LogPosition(0, 0)`` is before everything.

    >>> LogPosition(2, 0) > LogPosition(1, 4096)
    True
    """

    segment: int
    offset: int


class SkippedLine(msgspec.Struct, frozen=True):
    """A line the log could not use: corrupt, truncated, or torn by a crash.

    ``segment`` is the segment's file name (``"spans-000003.jsonl"``), ``line_number`` is 1-based within it,
    ``torn`` is True when the line was cut short by an interrupted write (rather than damaged in place).
    """

    segment: str
    line_number: int
    reason: str
    torn: bool = False


class LogStats(msgspec.Struct, frozen=True):
    """A snapshot of a :class:`SpanLog`'s counters.

    Counters are per process and per ``SpanLog`` object (a forked child starts from zero); ``segments`` and
    ``disk_bytes`` describe the directory now. ``skipped_lines`` holds the most recent skipped lines (at most
    100) and ``skipped_line_count`` counts them all, each line once however often it is re-read.
    """

    segments: int  #: segment files in the directory now
    disk_bytes: int  #: their total size
    lines_appended: int  #: lines (one per batch, or more for big batches) this object appended
    spans_appended: int
    bytes_appended: int
    lines_read: int  #: non-blank lines decoded by reads (re-reads count again)
    spans_read: int  #: spans returned by reads
    skipped_line_count: int  #: distinct corrupt or torn lines met
    skipped_lines: tuple[SkippedLine, ...]  #: the last 100 of them
    torn_tails: int  #: distinct lines cut short by an interrupted write (ended by a writer or skipped by a reader)
    segments_deleted: int  #: by this object's retention
    other_signal_lines: int  #: metrics/logs/profiles lines passed over
    decode_issues: int  #: spans, resources or scopes of otherwise good lines that were not valid OTLP
    invalid_spans: int  #: spans not loaded because of those issues
    read_gaps: int  #: reads that found segments deleted (by retention) before they were read
    segments_missed: int  #: segments skipped over in those gaps (the position's own segment included)
    fsyncs: int  #: fsync calls made


class _Fds:
    """The file descriptors a log owns, kept apart from it so a finalizer can close them."""

    __slots__ = ("lock", "segment")

    def __init__(self) -> None:
        self.segment = -1
        self.lock = -1

    def close(self) -> None:
        for name in ("segment", "lock"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)


class _SegmentRead:
    """One read of one segment from ``start``: its complete lines up to ``lines_end``, then a torn tail (if any) up to
    ``end``, the position the read reaches.

    Lines come a block (:data:`_READ_BLOCK_BYTES`) at a time, first to last (:meth:`forward`) or last to first
    (:meth:`backward`). Line numbers matter only for lines that fail, so they are counted on demand (:meth:`number_at`)
    from the last place counted, which moves with the read: skipping many corrupt lines costs O(bytes), not
    O(lines²). Owns the segment's descriptor: use it as a context manager.
    """

    __slots__ = ("_counted", "base", "end", "fd", "lines_end", "name", "path", "seq", "start")

    def __init__(
        self, fd: int, path: str, seq: int, name: str, start: int, lines_end: int, end: int, base: int | None
    ) -> None:
        self.fd = fd
        self.path = path
        self.seq = seq
        self.name = name
        self.start = start
        self.lines_end = lines_end  # just past the newline of the last complete line (``start`` if none)
        self.end = end  # ``lines_end``, or past a partial last line judged torn (consumed)
        self.base = base  # lines before ``start`` when known without counting, else None
        self._counted = (start, base) if base is not None else (0, 0)  # (offset, newlines before it)

    def __enter__(self) -> _SegmentRead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)

    def forward(self) -> Iterator[tuple[int, bytes]]:
        """(offset, line without its newline) of each complete line, first to last."""
        line_start = lo = self.start
        while lo < self.lines_end:
            block = self._pread(lo, min(lo + _READ_BLOCK_BYTES, self.lines_end))
            if not block:
                return  # the file shrank under us: nothing more to read
            at = line_start - lo  # where the line in hand starts in the block (< 0: in an earlier block)
            while (nl := block.find(b"\n", max(at, 0))) >= 0:
                # Lines are yielded unnamed, so the consumer holds the only reference and can free one once decoded.
                if at >= 0:
                    yield line_start, block[at:nl]
                else:  # begun in an earlier block: read again, whole, from the file rather than kept in pieces
                    yield line_start, self._pread(line_start, lo + nl)
                line_start = lo + nl + 1
                at = nl + 1
            lo += len(block)

    def backward(self) -> Iterator[tuple[int, bytes]]:
        """(offset, line without its newline) of each complete line, last to first."""
        start = self.start
        line_end = hi = self.lines_end  # line_end: just past the newline of the line being looked for
        while hi > start:
            lo = max(start, hi - _READ_BLOCK_BYTES)
            block = self._pread(lo, hi)
            cut = min(hi, line_end - 1) - lo  # look for the newline before the line's own
            while True:
                nl = block.rfind(b"\n", 0, cut)
                if nl < 0 and lo > start:
                    break  # the line begins in an earlier block
                line_start = lo + nl + 1  # ``start`` when no newline is left: the read's first line
                if line_end - 1 <= hi:
                    yield line_start, block[nl + 1 : line_end - 1 - lo]
                else:  # runs on past this block: read again, whole, from the file (as in forward)
                    yield line_start, self._pread(line_start, line_end - 1)
                line_end = line_start
                if nl < 0:
                    break
                cut = nl
            hi = lo

    def number_at(self, offset: int) -> int:
        """The 1-based number of the line that starts at ``offset``, counting newlines from the last place counted."""
        counted_at, count = self._counted
        if offset >= counted_at:
            count += self._newlines(counted_at, offset)
        else:
            count -= self._newlines(offset, counted_at)
        self._counted = (offset, count)
        return count + 1

    def _newlines(self, lo: int, hi: int) -> int:
        count = 0
        while lo < hi:
            block = self._pread(lo, min(hi, lo + _READ_BLOCK_BYTES))
            if not block:
                break
            count += block.count(b"\n")
            lo += len(block)
        return count

    def _pread(self, lo: int, hi: int) -> bytes:
        try:
            return os.pread(self.fd, hi - lo, lo)
        except OSError as exc:
            raise _storage_error(exc, "read segment", self.path) from exc


def _storage_error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """Turn an OSError into a StorageError whose message says what failed, where, and why."""
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        why = "disk full (no space left on device)"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied (is the directory read-only or owned by another user?)"
    elif code == errno.EROFS:
        why = "read-only file system"
    else:
        why = exc.strerror or str(exc)
    error = StorageError(f"cannot {action} {path}: {why}")
    error.errno = code
    return error


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: opening a FIFO planted under a segment's name must not hang (it is refused just after).
_OPEN_FLAGS = _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat_module.S_ISLNK, "a symbolic link"),
        (stat_module.S_ISDIR, "a directory"),
        (stat_module.S_ISFIFO, "a named pipe"),
        (stat_module.S_ISSOCK, "a socket"),
        (stat_module.S_ISCHR, "a character device"),
        (stat_module.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _not_regular(path: str | os.PathLike[str], found: str) -> StorageError:
    return StorageError(
        f"expected a regular file at {os.fspath(path)}, found {found}; a span log never follows links or opens "
        "special files in its directory (someone may have planted it): remove it"
    )


def _open_regular(path: str | os.PathLike[str], flags: int) -> int:
    """Open a file of the store without following a symlink, refusing anything but a regular file.

    Raises :class:`StorageError` for a link or special file; other ``OSError`` s (``FileNotFoundError``,
    ``FileExistsError``, ...) pass through unchanged for the caller to judge. A created file is owner-only.
    """
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, _FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):
            raise
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            raise exc from None
        if stat_module.S_ISLNK(mode):
            try:
                found = f"a symbolic link (to {os.readlink(path)!r})"
            except OSError:
                found = "a symbolic link"
        else:
            found = _file_kind(mode)
        raise _not_regular(path, found) from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat_module.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, _file_kind(st.st_mode))
    if st.st_nlink > 1 and flags & (os.O_WRONLY | os.O_RDWR):
        # A hard link planted under a store file's name would make us write into a file that lives elsewhere.
        os.close(fd)
        raise _not_regular(path, f"a file with {st.st_nlink} hard links (another name outside the store?)")
    return fd


def _check_directory_safety(path: Path, st: os.stat_result, *, check_mode: bool) -> None:
    """Refuse a store directory that another user could plant files in (as ssh refuses such a ``~/.ssh``)."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is None:  # pragma: no cover - not POSIX
        return
    if st.st_uid not in (uid, 0):
        raise StorageError(
            f"expected the span log directory {path} to be owned by you (uid {uid}) or root, got owner uid "
            f"{st.st_uid}: its owner could plant files in it. If it is yours, fix it with `chown $USER {path}`; "
            "else use another directory"
        )
    if check_mode and st.st_mode & 0o022:
        raise StorageError(
            f"expected the span log directory {path} to be writable by its owner only, got mode "
            f"{stat_module.S_IMODE(st.st_mode):04o} (writable by group or others, who could plant files in it): "
            f"fix it with `chmod go-w {path}`"
        )


def _end_of_last_line(fd: int, size: int, start: int = 0) -> int:
    """The offset just past the last "\\n" in bytes ``start`` to ``size`` of ``fd`` (``start`` if none): read
    backwards."""
    end = size
    step = 1 << 16
    while end > start:
        lo = max(start, end - step)
        cut = os.pread(fd, end - lo, lo).rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        end = lo
    return start


class SpanLog:
    """An append-only, segmented log of spans on disk, shared safely by threads and processes.

    Every public method is thread-safe. Several processes may append to one directory at once: each batch is
    written whole under a cross-process lock, so lines are never interleaved. Readers need no lock and may run
    in other processes (the CLI, a follower).

    Costs: ``append`` encodes outside the locks (O(spans)), then takes the lock and makes one ``write`` per
    segment touched. ``read`` reads segment files a block at a time and decodes each line once (O(bytes read));
    ``read(max_spans=k)`` reads newest first and stops decoding once it has ``k`` spans.

    Durability (``fsync``), what a crash can lose of what ``append`` returned for:

    * process crash (kill -9, exception, OOM kill), any policy: nothing; the bytes are in the OS page cache
      once ``append`` returns. At most the batch being written when the process died is lost, as a torn line that
      is skipped and counted.
    * power failure or kernel crash: ``"never"`` loses whatever the OS had not yet written back (on Linux
      typically up to ~30 s); ``"interval"`` loses up to ``fsync_interval_seconds`` of appends (it fsyncs inside
      ``append`` at most once per interval, when rolling a segment, and on ``close``; it starts no thread, so
      after appends pause the last ones wait for the next append, ``close`` or the OS's own write-back);
      ``"always"`` loses nothing ``append`` returned for (it fsyncs before returning: ~3 ms a call on a
      typical disk, so use it with batches).

    Retention: on starting a new segment (and on a log object's first append; for ``max_age_seconds`` also at
    most once a second while appending), the oldest segments are deleted while the segments total more than
    ``max_bytes``, and those last written more than ``max_age_seconds`` ago are deleted. The segment being
    written is never deleted. So segments take at most ``max_bytes + segment_max_bytes`` on disk (one segment
    of slack: the one being filled), plus one line when a line is larger than a segment.

    After ``os.fork()`` the child reopens its own file descriptors and lock state on first use.

    >>> import tempfile
    >>> from spanstore.model import StoredSpan
    >>> span = StoredSpan(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    ...                   name="GET /cart", start_time_unix_nano=1_000, end_time_unix_nano=2_000)
    >>> with tempfile.TemporaryDirectory() as tmp, SpanLog(f"{tmp}/store", fsync="never") as log:
    ...     written = log.append([span])
    ...     spans, position = log.read()
    ...     [s.name for s in spans], position.segment, log.read(position)[0]
    (['GET /cart'], 1, [])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_seconds: float = 1.0,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
        max_bytes: int | None = 1 << 30,
        max_age_seconds: float | None = None,
        lock_timeout_seconds: float = 10.0,
        create: bool = True,
    ) -> None:
        if fsync not in _FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(map(repr, _FSYNC_POLICIES))}, got {fsync!r}")
        if not fsync_interval_seconds >= 0:
            raise ValueError(f"fsync_interval_seconds must be >= 0, got {fsync_interval_seconds!r}")
        if segment_max_bytes < 1:
            raise ValueError(f"segment_max_bytes must be >= 1, got {segment_max_bytes!r}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes!r}")
        if max_age_seconds is not None and not max_age_seconds > 0:
            raise ValueError(f"max_age_seconds must be > 0 or None, got {max_age_seconds!r}")
        if not lock_timeout_seconds >= 0:
            raise ValueError(f"lock_timeout_seconds must be >= 0, got {lock_timeout_seconds!r}")
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval_seconds = float(fsync_interval_seconds)
        self.segment_max_bytes = int(segment_max_bytes)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.lock_timeout_seconds = float(lock_timeout_seconds)
        # Lines stay under 1 MiB (the Collector's file receiver truncates longer ones) and, where a span allows,
        # under a segment, so segments respect segment_max_bytes.
        self._max_line_bytes = min(DEFAULT_MAX_LINE_BYTES, self.segment_max_bytes)
        self._open_directory(create)
        self._fds = _Fds()
        self._finalizer = weakref.finalize(self, _Fds.close, self._fds)
        self._closed = False
        self._init_process_state()
        forksafe.register(self)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _open_directory(self, create: bool) -> None:
        path = self.path
        try:
            if create:
                try:
                    os.mkdir(path, _DIR_MODE)
                    os.chmod(path, _DIR_MODE)  # mkdir's mode is filtered by the umask; owner-only is the point
                except FileExistsError:
                    pass
            st = os.stat(path)
        except FileNotFoundError:
            what = "does not exist" if not create else "cannot be created (a parent directory is missing)"
            raise StorageError(f"expected a span log directory at {path}, but it {what}") from None
        except OSError as exc:
            raise _storage_error(exc, "open span log directory", path) from exc
        if not stat_module.S_ISDIR(st.st_mode):
            raise NotAStoreError(f"expected a span log directory at {path}, got a file")
        self._directory_identity = (st.st_dev, st.st_ino)
        marker = path / MARKER_NAME
        try:
            has_marker = os.path.lexists(marker)
            _check_directory_safety(path, st, check_mode=has_marker)
            entries = [] if has_marker else [name for name in os.listdir(path) if name != LOCK_NAME]
        except OSError as exc:
            raise _storage_error(exc, "read span log directory", path) from exc
        if has_marker:
            self._check_marker(marker)
            return
        if entries:
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise NotAStoreError(
                f"expected an empty directory or a span log directory (with {MARKER_NAME}) at {path}, "
                f"got a directory holding other files ({shown})"
            )
        if not create:
            raise StorageError(f"expected a span log directory at {path}, got an empty directory (create=False)")
        try:
            os.chmod(path, _DIR_MODE)
            fd = _open_regular(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return  # another process is creating the same store right now
        except OSError as exc:
            raise _storage_error(exc, "create span log marker", marker) from exc
        try:
            content = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "created_unix_nano": time.time_ns()}
            os.write(fd, msgspec.json.encode(content) + b"\n")
        except OSError as exc:
            raise _storage_error(exc, "write span log marker", marker) from exc
        finally:
            os.close(fd)

    @staticmethod
    def _check_marker(marker: Path) -> None:
        try:
            fd = _open_regular(marker, os.O_RDONLY)
            try:
                raw = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
        except StorageError:
            raise
        except OSError as exc:
            raise _storage_error(exc, "read span log marker", marker) from exc
        if not raw.strip():
            return  # being written by a concurrent creator
        try:
            meta = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise NotAStoreError(f"expected JSON metadata in {marker}, got {raw[:60]!r}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise NotAStoreError(f"expected format {FORMAT_NAME!r} in {marker}, got {raw[:80]!r}")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise NotAStoreError(
                f"expected span log format version <= {FORMAT_VERSION} in {marker}, got {version!r} "
                "(written by a newer spanstore?)"
            )

    def _init_process_state(self) -> None:
        """Locks, writer state and counters: fresh at construction and in a forked child."""
        self._pid = os.getpid()
        self._write_lock = threading.Lock()  # serializes appends (and fd changes) in this process
        self._stats_lock = threading.Lock()
        self._seq = 0  # sequence number of the open segment (0: none open)
        self._size = -1  # bytes in the open segment as of our last write; -1: unknown
        self._unsynced = False
        self._last_fsync = time.monotonic()
        self._retention_due = True
        self._next_age_check = 0.0
        # counters
        self._lines_appended = 0
        self._spans_appended = 0
        self._bytes_appended = 0
        self._lines_read = 0
        self._spans_read = 0
        self._skipped_count = 0
        self._skips_warned = 0
        self._skips_unwarned = 0
        self._skipped: deque[SkippedLine] = deque(maxlen=_SKIPPED_KEEP)
        self._seen_skips: set[tuple[int, int]] = set()  # (segment, line start offset) already counted
        self._known_torn: set[tuple[int, int]] = set()
        self._torn_tails = 0
        self._segments_deleted = 0
        self._other_signal_lines = 0
        self._decode_issues = 0
        self._invalid_spans = 0
        self._read_gaps = 0
        self._segments_missed = 0
        self._fsyncs = 0
        self._directories_recreated = 0
        self._line_marks: dict[int, tuple[int, int]] = {}  # segment -> (offset, newlines before it)

    def _after_fork_in_child(self) -> None:
        # The inherited descriptors share their open file description (and flock) with the parent: close our
        # copies without unlocking, which would release the parent's lock.
        self._fds.close()
        self._init_process_state()

    def close(self, timeout_seconds: float | None = None) -> None:
        """Flush (per the fsync policy) and release the files. Idempotent; later calls raise StoreClosedError.

        Thread-safe: waits for an append in progress, up to ``timeout_seconds`` (None: as long as it takes); past
        that (an append waiting for another process's lock, say) the log is closed at once and that append
        releases the files when it ends.
        """
        wait = -1 if timeout_seconds is None else max(0.0, timeout_seconds)
        if not self._write_lock.acquire(timeout=wait):
            self._closed = True  # seen by the append in progress, which releases the files on its way out
            return
        try:
            self._close_locked()
        finally:
            self._write_lock.release()

    def _close_locked(self) -> None:
        if self._closed and self._fds.segment < 0 and self._fds.lock < 0:
            return
        self._closed = True
        fd = self._fds.segment
        if fd >= 0 and self._unsynced and self.fsync != "never":
            try:
                _fdatasync(fd)
                self._fsyncs += 1
            except OSError as exc:
                logger.warning("fsync of %s on close failed: %s", self.path, exc)
        self._fds.close()
        self._finalizer.detach()

    def __enter__(self) -> SpanLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fsync={self.fsync!r}"
        return f"SpanLog({str(self.path)!r}, {state})"

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"span log {self.path} is closed")
        if self._pid != os.getpid():  # forked without the at-fork hook (should not happen; cheap to check)
            self._after_fork_in_child()

    # --- segments -----------------------------------------------------------------------------------------------

    def _list_segments(self) -> list[tuple[int, str]]:
        """(sequence, file name) of every segment, oldest first."""
        match = _SEGMENT_RE.match
        found = []
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    m = match(entry.name)
                    if m is not None:
                        found.append((int(m.group(1)), entry.name))
        except OSError as exc:
            raise _storage_error(exc, "list span log directory", self.path) from exc
        found.sort()
        return found

    def segment_files(self) -> list[SegmentFile]:
        """Every segment now in the directory, oldest first, with its size (a segment deleted meanwhile is left
        out). The newest one is the segment being written; the others are sealed and never change."""
        self._check_usable()
        found = []
        for seq, name in self._list_segments():
            try:
                size = os.lstat(os.path.join(self.path, name)).st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _storage_error(exc, "stat segment", os.path.join(self.path, name)) from exc
            found.append(SegmentFile(seq, name, size))
        return found

    def _segment_path(self, sequence: int) -> str:
        return os.path.join(self.path, segment_name(sequence))

    # --- appending ----------------------------------------------------------------------------------------------

    def append(self, spans: Sequence[StoredSpan]) -> int:
        """Append a batch of spans as OTLP JSON lines; return the number of bytes written.

        Thread-safe and safe across processes: the batch's lines are written whole, under the directory's lock,
        never interleaved with another writer's. Encoding happens before the lock is taken. Rolls to a new
        segment past ``segment_max_bytes`` and applies retention (never to the segment being written).

        Raises :class:`~spanstore.errors.StorageError` (read-only directory, disk full: the message says which;
        no partial line is left behind when the file could be cut back, though a batch spread over two segments
        may keep the whole lines written before the failure; when only the fsync after a complete write failed,
        the error has ``lines_written = True``, and appending the batch again would duplicate it),
        :class:`~spanstore.errors.LockTimeoutError` (another process held the lock longer than
        ``lock_timeout_seconds``), :class:`~spanstore.errors.StoreClosedError`.
        """
        if self._closed:
            raise StoreClosedError(f"span log {self.path} is closed")
        if not spans:
            return 0
        lines = encode_spans(spans, max_line_bytes=self._max_line_bytes)
        with self._write_lock:
            self._check_usable()
            self._recover_directory()
            try:
                self._lock_directory()
            except BaseException:
                if self._closed:  # closed (with a timeout) while this append waited for the lock
                    self._close_locked()
                raise
            try:
                written = self._write_lines(lines)
            finally:
                self._unlock_directory()
                if self._closed:
                    self._close_locked()
            self._lines_appended += len(lines)
            self._spans_appended += len(spans)
            self._bytes_appended += written
            policy = self.fsync
            if policy == "always" or (
                policy == "interval" and time.monotonic() - self._last_fsync >= self.fsync_interval_seconds
            ):
                try:
                    self._sync_segment()
                except StorageError as exc:
                    exc.lines_written = True  # type: ignore[attr-defined]  # callers must not append them again
                    raise
        return written

    def _recover_directory(self) -> None:
        """Recreate the store directory when it was deleted (or replaced) while this log had it open.

        Without this, appends went on into the deleted directory's open segment (lost with it), then failed for
        good at the next roll; and a directory recreated empty by someone else filled up without its marker, to be
        refused at the next open. One ``stat`` a batch. Called with the write lock held.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError:
            return  # not ours to judge: the write reports it
        if st is not None and (st.st_dev, st.st_ino) == self._directory_identity:
            return
        self._fds.close()  # the segment and lock descriptors point into the old directory
        self._seq, self._size = 0, -1
        self._open_directory(create=True)  # raises StorageError when it cannot be (re)made: the writer retries
        self._directories_recreated += 1
        logger.warning(
            "spanstore: the store directory %s was %s while in use; %s it as a store, spans go there from now on",
            self.path,
            "deleted" if st is None else "replaced",
            "recreated" if st is None else "reopened",
        )

    def _sync_segment(self) -> None:
        fd = self._fds.segment
        if fd < 0:
            return
        try:
            _fdatasync(fd)
        except OSError as exc:
            raise _storage_error(exc, "fsync segment", self._segment_path(self._seq)) from exc
        self._fsyncs += 1
        self._unsynced = False
        self._last_fsync = time.monotonic()

    def _lock_file_fd(self, *, writable: bool = True) -> int:
        fd = self._fds.lock
        if fd >= 0:
            return fd
        lock_path = self.path / LOCK_NAME
        try:
            fd = _open_regular(lock_path, os.O_RDWR | os.O_CREAT)
        except StorageError:
            raise
        except OSError as exc:
            if writable:
                raise _storage_error(exc, "open lock file", lock_path) from exc
            fd = _open_regular(lock_path, os.O_RDONLY)  # read-only use; flock works on any descriptor
        self._fds.lock = fd
        return fd

    def _lock_directory(self) -> None:
        fd = self._lock_file_fd()
        lock = _lock_fd
        deadline = None
        delay = 0.0002
        while True:
            try:
                lock(fd, _LOCK_EX_NB)
                return
            except portalocker.AlreadyLocked:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.lock_timeout_seconds
                if now >= deadline:
                    raise LockTimeoutError(
                        f"expected to lock {self.path / LOCK_NAME} within {self.lock_timeout_seconds:g} s, "
                        "but another writer (another process, or another SpanLog on this directory) held it"
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, _LOCK_POLL_MAX_SECONDS)
            except portalocker.LockException as exc:
                raise StorageError(f"cannot lock {self.path / LOCK_NAME}: {exc}") from exc

    def _try_lock_directory(self) -> bool:
        """Take the directory lock if it is free right now (for readers); False if busy or impossible."""
        try:
            fd = self._lock_file_fd(writable=False)
            _lock_fd(fd, _LOCK_EX_NB)
        except (OSError, portalocker.LockException):
            return False
        return True

    def _unlock_directory(self) -> None:
        try:
            _unlock_fd(self._fds.lock)
        except (OSError, portalocker.LockException) as exc:  # closing the descriptor would release it anyway
            logger.warning("cannot unlock %s: %s", self.path / LOCK_NAME, exc)

    def _write_lines(self, lines: list[bytes]) -> int:
        """Write encoded lines to the current segment(s); called with both locks held."""
        size = self._open_current_segment()
        limit = self.segment_max_bytes
        chunk: list[bytes] = []
        chunk_bytes = 0
        written = 0
        for line in lines:
            n = len(line)
            if size + chunk_bytes + n > limit and size + chunk_bytes > 0:
                if chunk:
                    written += self._write_chunk(chunk)
                    chunk = []
                    chunk_bytes = 0
                size = self._roll()
            chunk.append(line)
            chunk_bytes += n
        if chunk:
            written += self._write_chunk(chunk)
        if self._retention_due or (self.max_age_seconds is not None and time.monotonic() >= self._next_age_check):
            self._apply_retention()
        return written

    def _write_chunk(self, chunk: list[bytes]) -> int:
        data = chunk[0] if len(chunk) == 1 else b"".join(chunk)
        fd = self._fds.segment
        start = self._size
        total = len(data)
        done = 0
        try:
            done = os.write(fd, data)
            if done < total:
                view = memoryview(data)
                while done < total:
                    done += os.write(fd, view[done:])
        except OSError as exc:
            if done:
                # Cut the partial batch back off, so no half line stays behind (we hold the lock: nobody else
                # wrote since `start`). If even that fails, the next writer ends the torn line with "\n".
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self._size = -1
            raise _storage_error(exc, f"append {total} bytes to", self._segment_path(self._seq)) from exc
        self._size = start + total
        self._unsynced = True
        return total

    def _open_current_segment(self) -> int:
        """Make sure the newest segment is open for appending; return its size. Called with both locks held."""
        fd = self._fds.segment
        if fd >= 0:
            # Still the newest? Another process may have rolled (or retention removed everything).
            if not os.path.lexists(self._segment_path(self._seq + 1)):
                try:
                    st = os.fstat(fd)
                except OSError:
                    st = None
                if st is not None and st.st_nlink > 0:
                    if st.st_size != self._size:  # another writer was here: check its last line is whole
                        self._size = st.st_size
                        self._end_torn_tail()
                    return self._size
            self._fds.segment = -1
            os.close(fd)
        segments = self._list_segments()
        if not segments:
            return self._create_segment(1)
        seq, name = segments[-1]
        path = os.path.join(self.path, name)
        try:
            fd = _open_regular(path, os.O_RDWR | os.O_APPEND)
            self._size = os.fstat(fd).st_size
        except StorageError:
            raise
        except OSError as exc:
            raise _storage_error(exc, "open segment", path) from exc
        self._fds.segment = fd
        self._seq = seq
        self._end_torn_tail()
        return self._size

    def _create_segment(self, seq: int) -> int:
        path = self._segment_path(seq)
        try:
            fd = _open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            # Not under our lock's rules (a foreign writer?): append to it rather than fail -- if it is a plain
            # file; a link planted under the next segment's name is refused, never followed.
            try:
                fd = _open_regular(path, os.O_RDWR | os.O_APPEND)
            except StorageError:
                raise
            except OSError as exc:
                raise _storage_error(exc, "open segment", path) from exc
        except OSError as exc:
            raise _storage_error(exc, "create segment", path) from exc
        self._fds.segment = fd
        self._seq = seq
        self._size = os.fstat(fd).st_size
        if self.fsync != "never":
            self._sync_directory()
        self._end_torn_tail()
        return self._size

    def _roll(self) -> int:
        """Close the current segment and start the next one; return the new segment's size (0)."""
        if self.fsync != "never" and self._unsynced:
            self._sync_segment()
        old = self._fds.segment
        self._fds.segment = -1
        os.close(old)
        size = self._create_segment(self._seq + 1)
        self._apply_retention()  # before the new segment fills: disk use peaks at max_bytes + one segment
        return size

    def _sync_directory(self) -> None:
        try:
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # some file systems cannot fsync a directory; the data itself was synced
            logger.debug("fsync of directory %s failed: %s", self.path, exc)

    def _end_torn_tail(self) -> None:
        """If the open segment does not end with "\\n" (a writer died mid-line), end that line. Locks held.

        The line is ended with :data:`_TORN_MARK`, never a bare newline: a writer killed one byte short holds a
        whole JSON document, which a newline alone would turn into data that its ``append`` never confirmed. With
        the mark it stays invalid JSON, skipped and counted by every reader, whenever it reads.
        """
        size = self._size
        fd = self._fds.segment
        try:
            if size <= 0 or os.pread(fd, 1, size - 1) == b"\n":
                return
            # Find where the torn line starts, to count it once (readers report it as a skipped line).
            start = _end_of_last_line(fd, size)
            os.write(fd, _TORN_MARK)
        except OSError as exc:
            raise _storage_error(exc, "end torn line in", self._segment_path(self._seq)) from exc
        self._size = size + len(_TORN_MARK)
        logger.warning(
            "%s ended in a partial line (a writer was interrupted): ended it so later lines stay whole",
            segment_name(self._seq),
        )
        with self._stats_lock:
            key = (self._seq, start)
            if key not in self._known_torn:
                self._known_torn.add(key)
                self._torn_tails += 1

    def _apply_retention(self) -> None:
        """Delete the oldest segments past ``max_bytes`` or ``max_age_seconds``. Both locks held.

        Never raises: the batch is already written, and failing the append for this would invite a retry.
        """
        self._retention_due = False
        max_bytes = self.max_bytes
        max_age = self.max_age_seconds
        if max_age is not None:
            self._next_age_check = time.monotonic() + min(1.0, max_age / 2)
        if max_bytes is None and max_age is None:
            return
        try:
            segments = self._list_segments()
        except StorageError as exc:
            logger.warning("retention skipped: %s", exc)
            return
        entries = []
        for seq, name in segments:
            try:
                st = os.lstat(os.path.join(self.path, name))
            except OSError:
                continue
            entries.append((seq, name, st.st_size, st.st_mtime))
        total = sum(entry[2] for entry in entries)
        cutoff = time.time() - max_age if max_age is not None else None
        current = self._seq
        deleted = 0
        for seq, name, size, mtime in entries:
            if seq >= current:
                break
            over_budget = max_bytes is not None and total > max_bytes
            too_old = cutoff is not None and mtime < cutoff
            if not (over_budget or too_old):
                break
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("retention could not delete %s: %s", name, exc)
                break
            with contextlib.suppress(OSError):  # its derived index goes with it (a newer one may remain)
                os.unlink(os.path.join(self.path, index_name(seq)))
            total -= size
            deleted += 1
        if deleted:
            with self._stats_lock:
                self._segments_deleted += deleted
                for seq in [seq for seq in self._line_marks if seq < current]:
                    del self._line_marks[seq]

    # --- reading ------------------------------------------------------------------------------------------------

    def read(
        self,
        position: LogPosition | None = None,
        *,
        max_spans: int | None = None,
        containing: bytes | None = None,
        trace_ids: Iterable[str] | None = None,
        until_segment: int | None = None,
    ) -> tuple[list[StoredSpan], LogPosition]:
        """Read the spans appended after ``position`` (from the oldest segment when None), in log order.

        Returns the spans and the position reached; pass it back to read only what came after (follow). Only
        complete lines are consumed: a partial last line may be a write in progress and is left for a later
        read, unless it is proven torn (a newer segment exists, or no writer holds the lock).

        ``max_spans`` keeps only the newest ``max_spans`` spans: segments are read newest first and lines that
        would be dropped are not decoded. Segments deleted (by retention) since ``position`` are skipped over:
        the read continues from the oldest remaining one and counts the gap in :meth:`stats`. Corrupt lines are
        skipped and recorded as :class:`SkippedLine`; the lines around them are kept.

        ``containing`` decodes only the lines holding these bytes (say ``b'"traceId":"0af76519'``): a substring
        search is ~100x cheaper than decoding, so looking up one trace in a large log costs little more than
        reading the files. Every span of a line that matches is returned (callers filter further).

        ``until_segment`` stops after that segment (a sealed one: say, to index it before reading on).

        ``trace_ids`` decodes only the lines naming one of these traces (lowercase hex), found with one regular
        expression scan of each line, so finding which of many traces a large log already holds (``spanstore
        import``'s duplicate check) costs about a read of the files, not a decode of every span. Lines whose
        trace ids are not in canonical form (which spanstore never writes) are decoded to be safe.

        Thread-safe; needs no lock (so it never waits for a writer). Cost O(bytes after ``position``).
        """
        self._check_usable()
        if max_spans is not None and max_spans < 0:
            raise ValueError(f"max_spans must be >= 0 or None, got {max_spans!r}")
        wanted: bytes | frozenset[bytes] | None = containing
        if trace_ids is not None:
            if containing is not None:
                raise ValueError("give containing or trace_ids, not both")
            wanted = frozenset(trace_id.encode("ascii", "replace") for trace_id in trace_ids)
        segments = self._list_segments()
        sealed_only = False
        if until_segment is not None:
            sealed_only = bool(segments) and segments[-1][0] > until_segment
            segments = [segment for segment in segments if segment[0] <= until_segment]
        if not segments:
            return [], position if position is not None else LogPosition(0, 0)
        plan = self._plan(segments, position)
        if not plan:
            return [], position if position is not None else LogPosition(0, 0)
        try:
            if max_spans is None:
                return self._read_forward(plan, position, wanted, sealed_only)
            return self._read_newest(plan, position, max_spans, wanted)
        finally:
            self._warn_skip_summary()

    def _plan(self, segments: list[tuple[int, str]], position: LogPosition | None) -> list[tuple[int, str, int]]:
        """(sequence, name, start offset) of the segments to read, counting a gap if the position's is gone."""
        if position is None:
            return [(seq, name, 0) for seq, name in segments]
        start_seq, start_offset = position
        plan = [(seq, name, start_offset if seq == start_seq else 0) for seq, name in segments if seq >= start_seq]
        if not plan:
            return []  # the position is past the newest segment: nothing new
        first = plan[0][0]
        if first != start_seq and start_seq > 0:
            # The segment holding the position was deleted before we finished it.
            with self._stats_lock:
                self._read_gaps += 1
                self._segments_missed += first - start_seq
            logger.warning(
                "span log %s: segments %d to %d were deleted before being read; continuing at %s",
                self.path,
                start_seq,
                first - 1,
                segment_name(first),
            )
        return plan

    def _open_read(self, seq: int, name: str, offset: int, newest: bool) -> _SegmentRead | None:
        """Open one segment for a read from ``offset`` and judge its partial last line, if any; None when the segment
        has been deleted meanwhile."""
        path = os.path.join(self.path, name)
        try:
            fd = _open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except StorageError:
            raise
        except OSError as exc:
            raise _storage_error(exc, "read segment", path) from exc
        try:
            size = os.fstat(fd).st_size
            if offset > size:
                logger.warning("span log %s: %s is shorter than the position read from", self.path, name)
                offset = 0
            # Lines appended after the fstat are left for the next read, as lines appended after a read are.
            lines_end = _end_of_last_line(fd, size, offset)
            end = size
            if end > lines_end and newest:
                # With a newer segment this one is final, so a partial line is torn; else ask the lock.
                end = lines_end + self._confirm_torn(fd, lines_end)
        except OSError as exc:
            os.close(fd)
            raise _storage_error(exc, "read segment", path) from exc
        except BaseException:
            os.close(fd)
            raise
        return _SegmentRead(fd, path, seq, name, offset, lines_end, end, self._line_base(seq, offset))

    def _confirm_torn(self, fd: int, tail_start: int) -> int:
        """The length of the newest segment's partial last line if it is torn, else 0: it is torn only if no writer
        is writing, so check under the lock."""
        if not self._write_lock.acquire(blocking=False):
            return 0  # our own append is in progress
        try:
            if not self._try_lock_directory():
                return 0
            try:
                size = os.fstat(fd).st_size
                if _end_of_last_line(fd, size, tail_start) > tail_start:
                    return 0  # the line was finished meanwhile: not torn, read it next time
                return size - tail_start
            except OSError:
                return 0
            finally:
                self._unlock_directory()
        finally:
            self._write_lock.release()

    def _read_forward(
        self,
        plan: list[tuple[int, str, int]],
        position: LogPosition | None,
        containing: _Wanted,
        sealed_only: bool = False,
    ) -> tuple[list[StoredSpan], LogPosition]:
        out: list[StoredSpan] = []
        end_position = position if position is not None else LogPosition(plan[0][0], 0)
        last = len(plan) - 1
        paused_gc = False
        try:
            for index, (seq, name, offset) in enumerate(plan):
                read = self._open_read(seq, name, offset, index == last and not sealed_only)
                if read is None:
                    self._count_missing(name)
                    end_position = LogPosition(seq + 1, 0)
                    continue
                with read:
                    end_position = LogPosition(seq, read.end)
                    if not paused_gc and read.end - read.start >= _GC_PAUSE_BYTES and gc.isenabled():
                        # Decoding allocates many objects that live on; the cyclic GC would walk them again and again.
                        gc.disable()
                        paused_gc = True
                    lines = decoded = 0
                    for line_start, line in read.forward():
                        lines += 1
                        decoded += self._decode_line(read, line, line_start, out, containing)
                        del line  # not held while the next block is read (a line may be many MB)
                    self._count_lines_read(decoded)
                    self._finish_forward(read, lines)
        finally:
            if paused_gc:
                gc.enable()
        with self._stats_lock:
            self._spans_read += len(out)
        return out, end_position

    def _read_newest(
        self,
        plan: list[tuple[int, str, int]],
        position: LogPosition | None,
        max_spans: int,
        containing: _Wanted,
    ) -> tuple[list[StoredSpan], LogPosition]:
        batches: list[list[StoredSpan]] = []  # newest first
        end_position = self._iter_newest(plan, position, max_spans, containing, batches.append)
        out: list[StoredSpan] = []
        for line_spans in reversed(batches):
            out.extend(line_spans)
        if len(out) > max_spans:
            out = out[len(out) - max_spans :] if max_spans else []
        with self._stats_lock:
            self._spans_read += len(out)
        return out, end_position

    def read_newest_lines(
        self,
        max_spans: int,
        consume: Callable[[list[StoredSpan]], object],
        on_segment: Callable[[int], object] | None = None,
    ) -> tuple[int, LogPosition]:
        """Decode the lines holding the newest ``max_spans`` spans, newest line first, handing each line's spans to
        ``consume`` (in line order) instead of collecting them; return how many spans were handed over and the
        position reached. ``consume`` returning a true value stops the read there (the caller has enough: a byte
        budget reached, say). The oldest line handed over may hold more spans than are still wanted: the caller keeps
        the newest ``max_spans`` in all. What :meth:`read` with ``max_spans`` reads, without holding every decoded
        span at once. ``on_segment(sequence)`` is called before the first line of each segment is handed over.
        Thread-safe, as :meth:`read`."""
        self._check_usable()
        segments = self._list_segments()
        plan = self._plan(segments, None) if segments else []
        if not plan:
            return 0, LogPosition(0, 0)
        count = 0

        def counted(line_spans: list[StoredSpan]) -> object:
            nonlocal count
            count += len(line_spans)
            return consume(line_spans)

        end_position = self._iter_newest(plan, None, max_spans, None, counted, on_segment)
        with self._stats_lock:
            self._spans_read += min(count, max_spans)
        return count, end_position

    def _iter_newest(
        self,
        plan: list[tuple[int, str, int]],
        position: LogPosition | None,
        max_spans: int,
        containing: _Wanted,
        consume: Callable[[list[StoredSpan]], object],
        on_segment: Callable[[int], object] | None = None,
    ) -> LogPosition:
        count = 0
        enough = False
        end_position: LogPosition | None = None
        last = len(plan) - 1
        for index in range(last, -1, -1):
            if end_position is not None and (count >= max_spans or enough):
                break
            seq, name, offset = plan[index]
            read = self._open_read(seq, name, offset, index == last)
            if read is None:
                self._count_missing(name)
                if end_position is None:
                    end_position = LogPosition(seq + 1, 0)
                continue
            with read:
                if end_position is None:
                    end_position = LogPosition(seq, read.end)
                    if max_spans == 0:
                        break
                if on_segment is not None:
                    on_segment(seq)
                decoded = 0
                for line_start, line in read.backward():
                    line_spans: list[StoredSpan] = []
                    decoded += self._decode_line(read, line, line_start, line_spans, containing)
                    del line  # not held while the spans are consumed (a line may be many MB)
                    if line_spans:
                        enough = bool(consume(line_spans))
                        count += len(line_spans)
                        if count >= max_spans or enough:
                            break
                self._count_lines_read(decoded)
                if read.end > read.lines_end:
                    self._record_torn_tail(read)
        if end_position is None:
            end_position = position if position is not None else LogPosition(0, 0)
        return end_position

    def _count_missing(self, name: str) -> None:
        with self._stats_lock:
            self._read_gaps += 1
            self._segments_missed += 1
        logger.warning("span log %s: %s was deleted while being read", self.path, name)

    def _count_lines_read(self, lines: int) -> None:
        with self._stats_lock:
            self._lines_read += lines

    def _line_base(self, seq: int, offset: int) -> int | None:
        """Lines before ``offset`` if known without reading (None: counted only if a line needs its number)."""
        if offset == 0:
            return 0
        mark = self._line_marks.get(seq)
        if mark is not None and mark[0] == offset:
            return mark[1]
        return None

    def _decode_line(
        self, read: _SegmentRead, line: bytes, line_start: int, out: list[StoredSpan], containing: _Wanted
    ) -> bool:
        """Decode one line's spans into ``out``; a line that fails is recorded as skipped. False when the line was
        passed over without decoding (blank, or not one of those wanted)."""
        if not line or line.isspace() or line == _TORN_MARK_LINE:
            return False  # a blank line, or the mark that ended a torn line this reader already skipped
        if containing is not None:
            if type(containing) is frozenset:
                if not _names_a_trace(line, containing):
                    return False
            elif containing not in line:
                return False
        # No line number given: counting one may mean reading the segment, so it is done only for a line with problems.
        try:
            decoded = decode_line(line, source=read.name)
        except CorruptLineError as exc:
            self._record_corrupt(read, line_start, line, str(exc), exc)
            return True
        except Exception as exc:  # a bad line must never make a replay fail (e.g. invalid UTF-8 in a string)
            message = f"expected a JSON TracesData line, got {type(exc).__name__}: {exc}"
            self._record_corrupt(read, line_start, line, message, None)
            return True
        if decoded.other_signal is not None:
            with self._stats_lock:
                self._other_signal_lines += 1
            return True
        if decoded.issues:
            with self._stats_lock:
                self._decode_issues += len(decoded.issues)
                self._invalid_spans += decoded.skipped_spans
            number = read.number_at(line_start)
            for issue in decoded.issues[:3]:
                logger.debug("span log %s: %s", self.path, msgspec.structs.replace(issue, line_number=number))
        out.extend(decoded.spans)
        return True

    def _record_corrupt(
        self, read: _SegmentRead, line_start: int, line: bytes, message: str, exc: CorruptLineError | None
    ) -> None:
        key = (read.seq, line_start)
        if key in self._seen_skips:
            return  # met before (_record_skip would drop it): numbering it again could mean reading the segment
        if exc is not None:  # the reason without the codec's "line N in FILE: " (SkippedLine says where)
            for prefix in (f"line {exc.line_number} in {exc.source}: ", f"{exc.source}: "):
                if message.startswith(prefix):
                    message = message[len(prefix) :]
                    break
        torn = key in self._known_torn or line.endswith(_TORN_MARK_LINE) or _is_truncated(line)
        if torn:
            message = f"torn line (cut short by an interrupted write): {message}"
        self._record_skip(key, SkippedLine(read.name, read.number_at(line_start), message, torn))

    def _record_torn_tail(self, read: _SegmentRead) -> None:
        key = (read.seq, read.lines_end)
        if key in self._seen_skips:
            return  # recorded when first met, so not numbered again (see _record_corrupt)
        torn = read.end - read.lines_end
        reason = f"torn line: {torn} bytes without a final newline (a write was interrupted)"
        self._record_skip(key, SkippedLine(read.name, read.number_at(read.lines_end), reason, True))

    def _record_skip(self, key: tuple[int, int], skipped: SkippedLine) -> None:
        with self._stats_lock:
            if key in self._seen_skips:
                return
            if len(self._seen_skips) >= _SEEN_KEYS_MAX:
                self._seen_skips.clear()
            self._seen_skips.add(key)
            self._skipped_count += 1
            self._skipped.append(skipped)
            if skipped.torn and key not in self._known_torn:
                self._known_torn.add(key)
                self._torn_tails += 1
            warn = self._skips_warned < _SKIPS_WARNED_MAX
            if warn:
                self._skips_warned += 1
            else:
                self._skips_unwarned += 1
        if warn:
            logger.warning(
                "span log %s: skipped line %d of %s: %s",
                self.path,
                skipped.line_number,
                skipped.segment,
                skipped.reason,
            )

    def skipped_in(self, sequences: Iterable[int]) -> list[SkippedLine]:
        """The recorded skipped lines (the last 100 met) that lie in these segments."""
        names = {segment_name(seq) for seq in sequences}
        with self._stats_lock:
            return [skipped for skipped in self._skipped if skipped.segment in names]

    def restore_skipped(self, skipped: Iterable[SkippedLine]) -> None:
        """Count skipped lines met by an earlier reader (an index file records those of the segments it holds, which
        an open from the index does not read again)."""
        for line in skipped:
            match = _SEGMENT_RE.match(line.segment)
            seq = int(match.group(1)) if match is not None else 0
            self._record_skip((seq, -line.line_number), line)
        self._warn_skip_summary()

    def _warn_skip_summary(self) -> None:
        """One warning for the skipped lines not warned about one by one (called at the end of each read)."""
        with self._stats_lock:
            unwarned = self._skips_unwarned
            self._skips_unwarned = 0
            total = self._skipped_count
        if unwarned:
            logger.warning(
                "span log %s: skipped %d more corrupt or torn lines (%d in all; SpanLog.stats().skipped_lines "
                "lists the last %d)",
                self.path,
                unwarned,
                total,
                _SKIPPED_KEEP,
            )

    def _finish_forward(self, read: _SegmentRead, lines: int) -> None:
        """After a forward read of ``lines`` lines: record a torn tail and remember line numbering at the end."""
        if read.end > read.lines_end:
            self._record_torn_tail(read)
        if read.base is not None:
            with self._stats_lock:
                self._line_marks[read.seq] = (read.end, read.base + lines)

    # --- inspection ---------------------------------------------------------------------------------------------

    def end_position(self) -> LogPosition:
        """The position after the last complete line of the newest segment (``LogPosition(0, 0)`` when empty).

        Reading from it returns only what is appended later. Thread-safe; O(1) unless the log ends in a
        partial line. Safe to call with writers in other processes running.
        """
        self._check_usable()
        segments = self._list_segments()
        for seq, name in reversed(segments):
            path = os.path.join(self.path, name)
            try:
                fd = _open_regular(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            except StorageError:
                raise
            except OSError as exc:
                raise _storage_error(exc, "open segment", path) from exc
            try:
                return LogPosition(seq, _end_of_last_line(fd, os.fstat(fd).st_size))
            finally:
                os.close(fd)
        return LogPosition(0, 0)

    def stats(self) -> LogStats:
        """A snapshot of this log's counters and of the directory's segments. Thread-safe; O(segments)."""
        self._check_usable()
        segments = 0
        disk_bytes = 0
        try:
            listed = self._list_segments()
        except StorageError:  # the directory was deleted or is unreadable: the counters still stand
            listed = []
        for _seq, name in listed:
            try:
                disk_bytes += os.lstat(os.path.join(self.path, name)).st_size
            except FileNotFoundError:
                continue
            segments += 1
        with self._stats_lock:
            return LogStats(
                segments=segments,
                disk_bytes=disk_bytes,
                lines_appended=self._lines_appended,
                spans_appended=self._spans_appended,
                bytes_appended=self._bytes_appended,
                lines_read=self._lines_read,
                spans_read=self._spans_read,
                skipped_line_count=self._skipped_count,
                skipped_lines=tuple(self._skipped),
                torn_tails=self._torn_tails,
                segments_deleted=self._segments_deleted,
                other_signal_lines=self._other_signal_lines,
                decode_issues=self._decode_issues,
                invalid_spans=self._invalid_spans,
                read_gaps=self._read_gaps,
                segments_missed=self._segments_missed,
                fsyncs=self._fsyncs,
            )


_TRACE_ID_FIELD = re.compile(rb'"traceId":"([0-9a-f]{32})"')


def _names_a_trace(line: bytes, trace_ids: frozenset[bytes]) -> bool:
    """True when ``line`` names one of ``trace_ids`` in canonical form, or names no trace that way (decode it)."""
    found = _TRACE_ID_FIELD.findall(line)
    return not found or not trace_ids.isdisjoint(found)


def _is_truncated(line: bytes) -> bool:
    """True when ``line`` is the beginning of a JSON document that was cut short (a torn write)."""
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return "truncated" in str(exc)
    except ValueError:  # invalid UTF-8 inside a string: damaged in place, not cut short
        return False
    return False
