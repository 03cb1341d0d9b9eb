"""spanstore: an embedded, file-backed store for OpenTelemetry spans.

Public names are re-exported here; each lives in the module that owns its concept.
"""

from spanstore.errors import (
    CorruptLineError,
    InvalidQueryError,
    InvalidSpanError,
    LockTimeoutError,
    NotAStoreError,
    SpanStoreError,
    StorageError,
    StoreClosedError,
)
from spanstore.model import (
    AttributeMap,
    Resource,
    Scope,
    SpanEvent,
    SpanKind,
    SpanLink,
    StatusCode,
    StoredSpan,
)
from spanstore.query import (
    AttributeFilter,
    SpanQuery,
    TraceSummary,
    filter_by_attribute,
    filter_by_error_type,
    find_traces,
    get_trace,
    query_spans,
    recent_failures,
)
from spanstore.store import SpanStore, StoreStats

__version__ = "0.1.0"

__all__ = [
    "AttributeFilter",
    "AttributeMap",
    "CorruptLineError",
    "InvalidQueryError",
    "InvalidSpanError",
    "LockTimeoutError",
    "NotAStoreError",
    "Resource",
    "Scope",
    "SpanEvent",
    "SpanKind",
    "SpanLink",
    "SpanQuery",
    "SpanStore",
    "SpanStoreError",
    "StatusCode",
    "StorageError",
    "StoreClosedError",
    "StoreStats",
    "StoredSpan",
    "TraceSummary",
    "filter_by_attribute",
    "filter_by_error_type",
    "find_traces",
    "get_trace",
    "query_spans",
    "recent_failures",
]
