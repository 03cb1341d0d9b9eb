"""The span model: what a stored span is.

Every type here is an immutable msgspec ``Struct`` (or ``IntEnum``). A span is never changed once built: a query's
results are fresh spans built from the store's packed rows (:mod:`spanstore.columns`), safe to share between
threads, and nobody can corrupt the store through one.

Spans wait in memory between conversion and the store, the log writer or a decoded batch, so they stay compact:

* names and trace ids are interned strings (the spans of a trace share one ``trace_id`` string); span ids are
  unique, so :func:`from_readable_span` does not intern them (the store keeps them as 64-bit ints);
* attributes are an :class:`AttributeMap`: a shared tuple of keys plus a tuple of values, about a third of the
  size of a ``dict``;
* :class:`Resource` and :class:`Scope` are shared between the spans that have them, not copied;
* structs are ``gc=False``: they can hold no reference cycles, and the cyclic GC would otherwise spend ~40% of a
  replay walking them.

Enum numbering is OTLP's (``SpanKind.INTERNAL == 1``), not the SDK's (``trace.SpanKind.INTERNAL == 0``), because
OTLP is the file format.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Union

import msgspec

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "AttributeMap",
    "AttributeValue",
    "Resource",
    "Scope",
    "SpanEvent",
    "SpanKind",
    "SpanLink",
    "StatusCode",
    "StoredSpan",
    "attribute_values_equal",
]

#: What an attribute value may be: OTel's scalar types, homogeneous tuples of them, and what OTLP also allows on
#: import (``bytes``, ``None`` for an empty AnyValue, nested tuples and :class:`AttributeMap` for kvlists).
AttributeValue = Union[str, bool, int, float, bytes, None, tuple, "AttributeMap"]

_intern = sys.intern


class SpanKind(enum.IntEnum):
    """The span kind, numbered as in OTLP (``opentelemetry.proto.trace.v1.Span.SpanKind``).

    >>> SpanKind.SERVER, SpanKind(3).name
    (<SpanKind.SERVER: 2>, 'CLIENT')
    """

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    """The span status code, numbered as in OTLP and the SDK.

    >>> StatusCode.ERROR == 2, StatusCode["OK"]
    (True, <StatusCode.OK: 1>)
    """

    UNSET = 0
    OK = 1
    ERROR = 2


def attribute_values_equal(a: object, b: object) -> bool:
    """Compare two attribute values strictly: same type and same value, NaN equal to NaN.

    Python's ``==`` says ``1 == 1.0 == True``; an attribute store must not, or ``"500"``, ``500`` and ``500.0``
    would be confused.

    >>> attribute_values_equal(1, True), attribute_values_equal(1.0, 1), attribute_values_equal((1, 2), (1, 2))
    (False, False, True)
    """
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (a != a and b != b)  # NaN is equal to NaN here, as in the file
    if type(a) is tuple:
        return len(a) == len(b) and all(map(attribute_values_equal, a, b))  # type: ignore[arg-type]
    return a == b


def _hashable_key(value: object) -> object:
    """A hash key consistent with :func:`attribute_values_equal` (NaN's own hash is per object)."""
    if type(value) is float and value != value:
        return ("nan",)
    if type(value) is tuple:
        return tuple(map(_hashable_key, value))
    return (type(value).__name__, value)


class AttributeMap(msgspec.Struct, frozen=True, gc=False):
    """An immutable, compact mapping of attribute keys to values, in insertion order.

    Behaves as a read-only ``Mapping`` (``m["http.route"]``, ``m.get(...)``, ``dict(m)``) and compares strictly
    by type (``{"code": 500}`` is not ``{"code": "500"}``). Build one with :meth:`of`.

    >>> m = AttributeMap.of({"http.route": "/cart", "http.status_code": 500})
    >>> m["http.status_code"], len(m), "http.route" in m
    (500, 2, True)
    >>> m == {"http.route": "/cart", "http.status_code": 500}, m == {"http.route": "/cart", "http.status_code": "500"}
    (True, False)
    """

    keys_: tuple[str, ...] = ()
    values_: tuple[Any, ...] = ()

    @classmethod
    def of(cls, items: Mapping[str, Any] | None = None) -> AttributeMap:
        """Build from a mapping (or return the shared empty map for ``None``/empty)."""
        if not items:
            return EMPTY_ATTRIBUTES
        if isinstance(items, AttributeMap):
            return items
        return cls.from_pairs(list(items.keys()), list(items.values()))

    @classmethod
    def from_pairs(cls, keys: list[str] | tuple[str, ...], values: list[Any] | tuple[Any, ...]) -> AttributeMap:
        """Build from parallel key and value sequences; keys are interned and the key tuple is shared."""
        if not keys:
            return EMPTY_ATTRIBUTES
        return cls(share_keys(tuple(keys)), tuple(values))

    # --- Mapping protocol -------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self.values_[self.keys_.index(key)]
        except ValueError:
            raise KeyError(key) from None

    def __len__(self) -> int:
        return len(self.keys_)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __contains__(self, key: object) -> bool:
        return key in self.keys_

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value for ``key``, or ``default``."""
        keys = self.keys_
        # `in` first: a missing key is the common case, and raising ValueError from index() costs ~1 µs.
        return self.values_[keys.index(key)] if key in keys else default

    def keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """The keys, in insertion order."""
        return self.keys_

    def values(self) -> tuple[Any, ...]:  # type: ignore[override]
        """The values, in insertion order."""
        return self.values_

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """``(key, value)`` pairs, in insertion order."""
        return zip(self.keys_, self.values_, strict=True)

    def to_dict(self) -> dict[str, Any]:
        """A fresh ``dict`` (nested maps become dicts too)."""
        return {key: (value.to_dict() if isinstance(value, AttributeMap) else value) for key, value in self.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AttributeMap):
            if self.keys_ == other.keys_:
                return all(map(attribute_values_equal, self.values_, other.values_))
            other_items = dict(other.items())
        elif isinstance(other, Mapping):
            other_items = dict(other.items())
        else:
            return NotImplemented
        if len(other_items) != len(self.keys_):
            return False
        missing = object()
        return all(attribute_values_equal(v, other_items.get(k, missing)) for k, v in self.items())

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(frozenset(zip(self.keys_, map(_hashable_key, self.values_), strict=True)))

    def __repr__(self) -> str:
        return f"AttributeMap({self.to_dict()!r})"


Mapping.register(AttributeMap)

EMPTY_ATTRIBUTES = AttributeMap()

# Key tuples repeat across spans of the same operation: share one tuple object per distinct key set.
_shared_key_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHARED_KEY_TUPLES_MAX = 65_536


def clean_text(value: str) -> str:
    """``value`` with each lone surrogate replaced by U+FFFD, as it will read back from disk (UTF-8 cannot hold one).

    Applied where spans enter the store (SDK spans, imported files), so a span in memory equals the same span after
    a restart. O(1) for ASCII text (the common case), else O(len).

    >>> clean_text("ok"), clean_text("caf\\u00e9"), clean_text("bad \\ud800!") == "bad \\ufffd!"
    ('ok', 'café', True)
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _clean_array(values: tuple[Any, ...]) -> tuple[Any, ...]:
    for item in values:
        if type(item) is str and not item.isascii():
            return tuple(clean_text(item) if type(item) is str else item for item in values)
    return values


def share_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Return the shared instance of this tuple of attribute keys (interned keys, one tuple per key set)."""
    shared = _shared_key_tuples.get(keys)
    if shared is not None:
        return shared
    shared = tuple(_intern(clean_text(key)) for key in keys)
    if len(_shared_key_tuples) < _SHARED_KEY_TUPLES_MAX:
        _shared_key_tuples[shared] = shared
    return shared


class Resource(msgspec.Struct, frozen=True, gc=False):
    """The entity that produced spans (``service.name`` and friends). Shared, never copied, between spans.

    >>> Resource(attributes=AttributeMap.of({"service.name": "cart"})).service_name, Resource().service_name
    ('cart', 'unknown_service')
    """

    attributes: AttributeMap = EMPTY_ATTRIBUTES
    schema_url: str = ""
    dropped_attributes_count: int = 0

    @property
    def service_name(self) -> str:
        """``service.name``, or ``"unknown_service"`` (the SDK's default) when absent or not a string."""
        name = self.attributes.get("service.name")
        return name if isinstance(name, str) and name else "unknown_service"


class Scope(msgspec.Struct, frozen=True, gc=False):
    """The instrumentation scope (library) that produced spans. Shared, never copied, between spans.

    >>> Scope(name="opentelemetry.instrumentation.flask", version="0.48b0").name
    'opentelemetry.instrumentation.flask'
    """

    name: str = ""
    version: str = ""
    attributes: AttributeMap = EMPTY_ATTRIBUTES
    schema_url: str = ""
    dropped_attributes_count: int = 0


EMPTY_RESOURCE = Resource()
EMPTY_SCOPE = Scope()


class SpanEvent(msgspec.Struct, frozen=True, gc=False):
    """A timestamped event on a span (``exception`` events carry ``exception.type``/``message``/``stacktrace``).

    >>> SpanEvent("exception", 1_000, AttributeMap.of({"exception.type": "KeyError"})).attributes["exception.type"]
    'KeyError'
    """

    name: str
    time_unix_nano: int
    attributes: AttributeMap = EMPTY_ATTRIBUTES
    dropped_attributes_count: int = 0


class SpanLink(msgspec.Struct, frozen=True, gc=False):
    """A link from a span to another span, possibly in another trace.

    >>> SpanLink(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331").trace_state
    ''
    """

    trace_id: str
    span_id: str
    trace_state: str = ""
    attributes: AttributeMap = EMPTY_ATTRIBUTES
    dropped_attributes_count: int = 0
    flags: int = 0


class StoredSpan(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One finished span, as stored. Immutable and safe to share between threads.

    Ids are lowercase hex (trace 32 chars, span 16 chars); a root span has ``parent_span_id=None``. Times are
    integer Unix nanoseconds. ``flags`` holds the OTLP span flags (W3C trace flags plus the
    ``HAS_IS_REMOTE``/``IS_REMOTE`` bits of the parent context).

    >>> span = StoredSpan(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    ...                   name="GET /cart", start_time_unix_nano=1_000, end_time_unix_nano=251_000,
    ...                   status_code=StatusCode.ERROR, attributes=AttributeMap.of({"error.type": "Timeout"}))
    >>> span.duration_ns, span.is_root, span.error_type, span.service_name
    (250000, True, 'Timeout', 'unknown_service')
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: SpanKind = SpanKind.INTERNAL
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: StatusCode = StatusCode.UNSET
    status_message: str = ""
    attributes: AttributeMap = EMPTY_ATTRIBUTES
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    resource: Resource = EMPTY_RESOURCE
    scope: Scope = EMPTY_SCOPE
    trace_state: str = ""
    flags: int = 0
    dropped_attributes_count: int = 0
    dropped_events_count: int = 0
    dropped_links_count: int = 0

    @property
    def duration_ns(self) -> int:
        """``end_time_unix_nano - start_time_unix_nano``."""
        return self.end_time_unix_nano - self.start_time_unix_nano

    @property
    def is_root(self) -> bool:
        """True when the span has no parent."""
        return self.parent_span_id is None

    @property
    def service_name(self) -> str:
        """The resource's ``service.name`` (``"unknown_service"`` when absent): the ``service`` query criterion and
        the ``"service"`` key of the CLI's JSON."""
        return self.resource.service_name

    @property
    def is_error(self) -> bool:
        """True when the status code is ERROR."""
        return self.status_code == StatusCode.ERROR

    @property
    def error_type(self) -> str | None:
        """The span's error type, for display: attribute ``error.type`` when it names a class of error, else the
        ``exception.type`` of the first ``exception`` event, else ``error.type`` even when it is only a status
        code (HTTP instrumentations set ``error.type="500"``: the exception says more) or ``_OTHER``, else None.
        To find spans by any of these names, see :attr:`error_types`."""
        value = self.attributes.get("error.type")
        declared = None if value is None or value == "" else value if isinstance(value, str) else str(value)
        if declared is not None and not declared.isdigit() and declared != "_OTHER":
            return declared
        for event in self.events:
            if event.name == "exception":
                exc_type = event.attributes.get("exception.type")
                if exc_type is not None and exc_type != "":
                    return exc_type if isinstance(exc_type, str) else str(exc_type)
                break
        return declared

    @property
    def error_types(self) -> tuple[str, ...]:
        """Every name the span's error is found by: each ``exception`` event's ``exception.type`` as recorded
        (``shop.OutOfStock``) and bare (``OutOfStock``), and attribute ``error.type``; distinct, in that order.

        >>> from spanstore.model import AttributeMap, SpanEvent
        >>> event = SpanEvent(name="exception", time_unix_nano=1,
        ...                   attributes=AttributeMap.of({"exception.type": "shop.OutOfStock"}))
        >>> StoredSpan(trace_id="1" * 32, span_id="1" * 16, name="GET /buy", start_time_unix_nano=1,
        ...            end_time_unix_nano=2, events=(event,),
        ...            attributes=AttributeMap.of({"error.type": "500"})).error_types
        ('shop.OutOfStock', 'OutOfStock', '500')
        """
        names: list[str] = []
        for event in self.events:
            if event.name == "exception":
                exc_type = event.attributes.get("exception.type")
                if exc_type is not None and exc_type != "":
                    qualified = exc_type if isinstance(exc_type, str) else str(exc_type)
                    names.append(qualified)
                    names.append(qualified.rpartition(".")[2])
        value = self.attributes.get("error.type")
        if value is not None and value != "":
            names.append(value if isinstance(value, str) else str(value))
        if len(names) < 2:
            return tuple(names)
        return tuple(dict.fromkeys(name for name in names if name))

    @classmethod
    def from_readable_span(cls, span: ReadableSpan) -> StoredSpan:
        """Convert a finished OpenTelemetry SDK span, faithfully (every field, attribute type, event and link).

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> exporter = InMemorySpanExporter()
        >>> provider = TracerProvider()
        >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
        >>> with provider.get_tracer("doc").start_as_current_span("work", attributes={"n": 3}):
        ...     pass
        >>> stored = StoredSpan.from_readable_span(exporter.get_finished_spans()[0])
        >>> stored.name, stored.attributes["n"], stored.kind.name, len(stored.span_id)
        ('work', 3, 'INTERNAL', 16)
        """
        return from_readable_span(span)


# --- conversion from the SDK --------------------------------------------------------------------------------------

# otel SpanKind.value (INTERNAL=0 ... CONSUMER=4) -> OTLP SpanKind
_KINDS_BY_SDK_VALUE = (SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER)
_STATUS_BY_SDK_VALUE = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR)

# OTLP SpanFlags bits for the parent (or linked) context: the SDK always knows whether it is remote.
FLAG_CONTEXT_HAS_IS_REMOTE = 0x100
FLAG_CONTEXT_IS_REMOTE = 0x200


class _IdentityCache:
    """Converted SDK resources/scopes, keyed by the identity of the SDK object (which it keeps alive).

    SDK resources and scopes are shared by every span of a provider/tracer, so converting each once and sharing
    the result is both faster and smaller. Bounded: cleared when full, which only costs a re-conversion.
    """

    __slots__ = ("_entries",)
    _MAX = 1024

    def __init__(self) -> None:
        self._entries: dict[int, tuple[object, Any]] = {}

    def get(self, obj: object) -> Any:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        return None

    def put(self, obj: object, converted: Any) -> None:
        if len(self._entries) >= self._MAX:
            self._entries = {}
        self._entries[id(obj)] = (obj, converted)


_resource_cache = _IdentityCache()
_scope_cache = _IdentityCache()


def _sdk_attributes(attributes: Mapping[str, Any] | None) -> AttributeMap:
    if not attributes:
        return EMPTY_ATTRIBUTES
    # The SDK's BoundedAttributes keeps a plain dict: reading it directly skips the Mapping ABC's per-item
    # __getitem__ calls, which cost more than the rest of the conversion (an SDK without it takes the slow path).
    raw = getattr(attributes, "_dict", attributes)
    values = list(raw.values())
    for i, value in enumerate(values):
        kind = type(value)
        if kind is str:
            if not value.isascii():
                value = values[i] = clean_text(value)
        elif kind is tuple:
            values[i] = _clean_array(value)
        elif kind is list:  # the SDK keeps tuples; a user's own Mapping may not
            values[i] = _clean_array(tuple(value))
    return AttributeMap(share_keys(tuple(raw)), tuple(values))


def _sdk_resource(resource: Any) -> Resource:
    if resource is None:
        return EMPTY_RESOURCE
    converted = _resource_cache.get(resource)
    if converted is None:
        converted = Resource(attributes=_sdk_attributes(resource.attributes), schema_url=resource.schema_url or "")
        _resource_cache.put(resource, converted)
    return converted


def _sdk_scope(scope: Any) -> Scope:
    if scope is None:
        return EMPTY_SCOPE
    converted = _scope_cache.get(scope)
    if converted is None:
        converted = Scope(
            name=clean_text(scope.name or ""),
            version=clean_text(scope.version or ""),
            attributes=_sdk_attributes(getattr(scope, "attributes", None)),
            schema_url=scope.schema_url or "",
        )
        _scope_cache.put(scope, converted)
    return converted


def _trace_state(state: Any) -> str:
    if not state:
        return ""
    return clean_text(",".join(f"{key}={value}" for key, value in state.items()))


def _context_flags(context: Any) -> int:
    flags = FLAG_CONTEXT_HAS_IS_REMOTE
    if context is not None and context.is_remote:
        flags |= FLAG_CONTEXT_IS_REMOTE
    return flags


_NOT_SET = object()


def _id_hex(value: int, width: int) -> str:
    """The lowercase hex of an SDK trace id (``width`` 16 bytes) or span id (8), zero-padded."""
    try:
        return value.to_bytes(width, "big").hex()  # 3x faster than format(value, "032x")
    except OverflowError:  # a custom IdGenerator's out-of-range id (or a negative one): kept as format() writes it
        return format(value, f"0{2 * width}x")


def from_readable_span(span: ReadableSpan) -> StoredSpan:
    """Convert an SDK ``ReadableSpan`` into a :class:`StoredSpan` (see :meth:`StoredSpan.from_readable_span`)."""
    context = span.context
    parent = span.parent
    status = span.status
    # The SDK's private fields, where it has them, spare a MappingProxy and two locked tuple copies per span on
    # the hot path (events and links are empty on most spans); any other ReadableSpan takes the public properties.
    attributes = getattr(span, "_attributes", _NOT_SET)
    if attributes is _NOT_SET:
        attributes = span.attributes
    events = getattr(span, "_events", _NOT_SET)
    events = span.events if events is _NOT_SET or events else ()
    links = getattr(span, "_links", _NOT_SET)
    links = span.links if links is _NOT_SET or links else ()
    return StoredSpan(
        trace_id=_intern(_id_hex(context.trace_id, 16)),  # shared by the spans of a trace waiting to be written
        span_id=_id_hex(context.span_id, 8),
        parent_span_id=_id_hex(parent.span_id, 8) if parent is not None else None,
        name=_intern(clean_text(span.name)),
        kind=_KINDS_BY_SDK_VALUE[span.kind.value],
        start_time_unix_nano=span.start_time or 0,
        end_time_unix_nano=span.end_time or 0,
        status_code=_STATUS_BY_SDK_VALUE[status.status_code.value],
        status_message=clean_text(status.description or ""),
        attributes=_sdk_attributes(attributes),
        events=tuple(
            SpanEvent(
                name=_intern(clean_text(event.name)),
                time_unix_nano=event.timestamp,
                attributes=_sdk_attributes(event.attributes),
                dropped_attributes_count=event.dropped_attributes,
            )
            for event in events
        )
        if events
        else (),
        links=tuple(
            SpanLink(
                trace_id=format(link.context.trace_id, "032x"),
                span_id=format(link.context.span_id, "016x"),
                trace_state=_trace_state(link.context.trace_state),
                attributes=_sdk_attributes(link.attributes),
                dropped_attributes_count=link.dropped_attributes,
                flags=_context_flags(link.context),
            )
            for link in links
        )
        if links
        else (),
        resource=_sdk_resource(span.resource),
        scope=_sdk_scope(span.instrumentation_scope),
        trace_state=_trace_state(context.trace_state),
        flags=_context_flags(parent),
        dropped_attributes_count=span.dropped_attributes,
        dropped_events_count=span.dropped_events,
        dropped_links_count=span.dropped_links,
    )
