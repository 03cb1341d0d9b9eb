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

__version__ = "0.1.0"

__all__ = [
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
    "SpanStoreError",
    "StatusCode",
    "StorageError",
    "StoreClosedError",
    "StoredSpan",
]
