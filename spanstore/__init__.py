"""spanstore: an embedded, file-backed store for OpenTelemetry spans.

Public names are re-exported here; each lives in the module that owns its concept.
"""

from spanstore.analysis import (
    OperationStats,
    SimilarTrace,
    SpanDiff,
    TraceDiff,
    diff_traces,
    find_similar_traces,
    operation_stats,
)
from spanstore.errors import (
    CorruptLineError,
    InvalidQueryError,
    InvalidSpanError,
    LockTimeoutError,
    NotAStoreError,
    SpanStoreError,
    StorageError,
    StoreClosedError,
    TraceNotFoundError,
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
from spanstore.traced import traced
from spanstore.traceql import format_traceql, parse_traceql

__version__ = "0.1.0"

# The span processor pulls in the OpenTelemetry SDK: load it on first use, so `import spanstore` (and the CLI) stay
# quick for code that only reads a store.
_LAZY = {
    "FileBasedSpanProcessor": "spanstore.processor",
    "SpanStoreExporter": "spanstore.processor",
    "install": "spanstore.processor",
    "SpanLog": "spanstore.log",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spanstore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AttributeFilter",
    "AttributeMap",
    "CorruptLineError",
    "FileBasedSpanProcessor",
    "InvalidQueryError",
    "InvalidSpanError",
    "LockTimeoutError",
    "NotAStoreError",
    "OperationStats",
    "Resource",
    "Scope",
    "SimilarTrace",
    "SpanDiff",
    "SpanEvent",
    "SpanKind",
    "SpanLink",
    "SpanLog",
    "SpanQuery",
    "SpanStore",
    "SpanStoreError",
    "SpanStoreExporter",
    "StatusCode",
    "StorageError",
    "StoreClosedError",
    "StoreStats",
    "StoredSpan",
    "TraceDiff",
    "TraceNotFoundError",
    "TraceSummary",
    "diff_traces",
    "filter_by_attribute",
    "filter_by_error_type",
    "find_similar_traces",
    "find_traces",
    "format_traceql",
    "get_trace",
    "install",
    "operation_stats",
    "parse_traceql",
    "query_spans",
    "recent_failures",
    "traced",
]
