"""The exceptions spanstore raises.

One root, :class:`SpanStoreError`; every subclass also inherits the built-in exception it refines, so code that
already catches ``ValueError`` or ``OSError`` keeps working. Messages say what was expected, what was got, and
where: ``trace_id must be 32 hex characters, got 'abc'``.
"""

from __future__ import annotations

__all__ = [
    "CorruptLineError",
    "InvalidQueryError",
    "InvalidSpanError",
    "LockTimeoutError",
    "NotAStoreError",
    "SpanStoreError",
    "StoreClosedError",
    "StorageError",
    "TraceNotFoundError",
]


class SpanStoreError(Exception):
    """Root of every error spanstore raises on purpose.

    >>> from spanstore import SpanStore, get_trace
    >>> try:
    ...     get_trace(SpanStore(), "abc")
    ... except SpanStoreError as error:
    ...     print(type(error).__name__, "-", error)
    InvalidQueryError - trace_id must be 32 hex characters, got 'abc'
    """


class InvalidSpanError(SpanStoreError, ValueError):
    """A span (or one of its fields) is not valid OTLP: a bad id, kind, status, time or attribute value.

    ``where`` names the place (``"spans.jsonl line 3, resourceSpans[0].scopeSpans[0].spans[2].traceId"``) when known.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class CorruptLineError(SpanStoreError, ValueError):
    """A line of a JSON Lines file (or a whole document) is not a ``TracesData`` object.

    ``source`` is the file name and ``line_number`` the 1-based line, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, line_number: int | None = None) -> None:
        self.source = source
        self.line_number = line_number
        where = ""
        if source is not None and line_number is not None:
            where = f"line {line_number} in {source}: "
        elif source is not None:
            where = f"{source}: "
        super().__init__(f"{where}{message}")


class InvalidQueryError(SpanStoreError, ValueError):
    """A query (a :class:`~spanstore.SpanQuery`, a filter, or a query string) is malformed."""


class StorageError(SpanStoreError, OSError):
    """The store directory cannot be read or written: missing, read-only, full disk, bad permissions."""


class NotAStoreError(StorageError):
    """A path exists but is not a spanstore directory (a file, or a directory holding other things)."""


class LockTimeoutError(StorageError, TimeoutError):
    """The cross-process lock on a store directory was not acquired within the timeout."""


class StoreClosedError(SpanStoreError, RuntimeError):
    """The store (or log) was used after :meth:`~spanstore.SpanStore.close`."""


class TraceNotFoundError(SpanStoreError, LookupError):
    """A trace id the store does not hold was asked for (by :func:`~spanstore.find_similar_traces`, ...)."""
