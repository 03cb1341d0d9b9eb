"""Turning arbitrary Python values into bounded, redacted JSON for span attributes (``input.value``, ``output.value``).

:func:`to_json` never raises and never returns more than ``max_bytes`` bytes of UTF-8, and what it returns always
parses as JSON:

* JSON types are kept as they are (a non-finite float becomes ``null``, a non-string key its ``str``);
  tuples, lists, sets and other iterables of known kinds become arrays;
* msgspec Structs, dataclasses, named tuples and pydantic models (duck-typed by ``model_dump``: pydantic is never
  imported here) become objects of their fields, walked like any other mapping;
* ``bytes`` become a short note (``"<bytes: 12>"``), never their content; dates, times, UUIDs, decimals and paths
  their ``str``; enums their value;
* a cycle becomes ``"<cycle: dict>"``; anything else a ``repr`` cut to :data:`REPR_MAX_CHARS` (``"<X object>"``
  when ``repr`` itself fails), with ``key=value`` pairs that name a secret scrubbed;
* a value under a key naming a secret (:data:`DEFAULT_REDACT` plus the caller's names: case-insensitive, ignoring
  ``_``, ``-``, ``.`` and spaces, matched anywhere in the key) becomes ``"[redacted]"``, at any depth. Token
  *counts* (``max_tokens``, ``prompt_tokens``, ``total_tokens``...) are not secrets and are kept;
* the walk has a byte budget: a long string is cut and ends with ``…[cut: N more chars]``, a long container ends
  with ``"…[cut: N more items]"``; so a huge argument costs at most about ``max_bytes`` of work.

>>> to_json({"user": "ada", "password": "hunter2", "tags": ("a", "b"), "raw": b"\\x00\\x01"})
'{"user":"ada","password":"[redacted]","tags":["a","b"],"raw":"<bytes: 2>"}'
>>> cycle = []
>>> cycle.append(cycle)
>>> to_json(cycle)
'["<cycle: list>"]'
>>> len(to_json("x" * 100_000, max_bytes=1000)) <= 1000
True

Thread-safe: no shared mutable state but a bounded cache of key verdicts (a dict; races only repeat work).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import msgspec

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_REDACT", "REDACTED", "REPR_MAX_CHARS", "is_secret_key", "to_json"]

#: Key names whose values are never captured (substring match, case-insensitive, ignoring ``_ - .`` and spaces).
#: ``configurable`` is LangChain's run config, where API keys and credentials travel.
DEFAULT_REDACT: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "authorization",
    "cookie",
    "configurable",
)
#: What replaces a redacted value.
REDACTED = "[redacted]"
#: The default cap of one captured value, in bytes of UTF-8 JSON.
DEFAULT_MAX_BYTES = 50_000
#: The longest ``repr`` kept for an object that is not otherwise serializable.
REPR_MAX_CHARS = 1_000
#: Containers nested deeper than this are cut (``"<depth limit: dict>"``).
MAX_DEPTH = 32

_SEPARATORS = re.compile(r"[\s_.\-]+")
# "max_tokens", "prompt_tokens", "completion_tokens_details", "token_count": counts, not credentials.
_TOKEN_COUNT = re.compile(
    r"^(max|prompt|completion|total|input|output|num|cached|reasoning|n)?tokens?(count|counts|used|usage|limit|details)?$"
)
_encode = msgspec.json.Encoder().encode
_STR = {str}
_FALSE = {False}
_NUMBERS = {int, float, bool, type(None)}
_INT64 = 1 << 63


def _normalize(name: str) -> str:
    return _SEPARATORS.sub("", name.lower())


_DEFAULT_NORMALIZED = tuple(_normalize(name) for name in DEFAULT_REDACT)
# Verdicts per tuple of extra names, then per key; each dict is cleared when it grows past 4096 keys.
_verdicts: dict[tuple[str, ...], dict[str, bool]] = {}


def _verdicts_for(extra: tuple[str, ...]) -> dict[str, bool]:
    verdicts = _verdicts.get(extra)
    if verdicts is None:
        if len(_verdicts) > 64:
            _verdicts.clear()
        verdicts = _verdicts[extra] = {}
    return verdicts


def is_secret_key(key: str, extra: tuple[str, ...] = ()) -> bool:
    """Whether a mapping key (or argument name) names a secret: :data:`DEFAULT_REDACT` or ``extra`` occur in it.

    Case, ``_``, ``-``, ``.`` and spaces are ignored, so ``X-Api-Key``, ``apiKey`` and ``API_KEY`` all match
    ``api_key``; token counts such as ``max_tokens`` are not secrets.

    >>> [is_secret_key(k) for k in ("Authorization", "x-api-key", "db_password", "refresh_token", "max_tokens", "user")]
    [True, True, True, True, False, False]
    >>> is_secret_key("ssn", extra=("SSN",))
    True
    """
    verdicts = _verdicts_for(extra)
    verdict = verdicts.get(key)
    if verdict is None:
        normalized = _normalize(key)
        if _TOKEN_COUNT.match(normalized) and not normalized.startswith("token"):
            verdict = False
        elif normalized in ("token", "tokens"):
            verdict = True
        elif _TOKEN_COUNT.match(normalized):  # "token_count", "tokens_used"
            verdict = False
        else:
            verdict = any(name in normalized for name in _DEFAULT_NORMALIZED) or any(
                _normalize(name) in normalized for name in extra if name
            )
        if len(verdicts) > 4096:
            verdicts.clear()
        verdicts[key] = verdict
    return verdict


@functools.lru_cache(maxsize=64)
def _scrub_pattern(extra: tuple[str, ...]) -> re.Pattern[str]:
    names = [re.escape(name).replace("_", "[_\\-. ]?") for name in DEFAULT_REDACT + extra if name]
    # `password='x'`, `"token": "x"`, `api_key=x`: the value after a secret-looking key, inside a repr.
    return re.compile(r"(?i)(\w*(?:" + "|".join(names) + r")\w*['\"]?\s*[:=]\s*)('[^']*'|\"[^\"]*\"|[^\s,)}\]>]+)")


_SCRUB_DEFAULT = _scrub_pattern(())


def _bounded_repr(value: object, extra: tuple[str, ...]) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    if not isinstance(text, str):
        return f"<{type(value).__name__} object>"
    if len(text) > REPR_MAX_CHARS:
        text = text[:REPR_MAX_CHARS] + f"…[cut: {len(text) - REPR_MAX_CHARS} more chars]"
    pattern = _SCRUB_DEFAULT if not extra else _scrub_pattern(extra)
    return pattern.sub(lambda m: m.group(1) + "'" + REDACTED + "'", text)


class _Walker:
    """One walk over a value: the byte budget left, the containers on the current path (for cycles), the extras."""

    __slots__ = ("budget", "extra", "path")

    def __init__(self, budget: int, extra: tuple[str, ...]) -> None:
        self.budget = budget
        self.extra = extra
        self.path: set[int] = set()

    def walk(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is int or kind is bool or value is None:
            self.budget -= 8
            if kind is int and not -_INT64 <= value < _INT64:
                return str(value)
            return value
        if kind is float:
            self.budget -= 12
            return value if value == value and value not in (float("inf"), float("-inf")) else None
        if kind is dict:
            if self._flat_dict(value):
                return value
            return self._container(value, depth, self._mapping)
        if kind is list or kind is tuple:
            size = self._flat_size(value, len(value))
            if size is not None and size + 2 <= self.budget:
                self.budget -= size + 2
                return value  # flat: no cycle, no secret, within budget
            return self._container(value, depth, self._sequence)
        return self._other(value, kind, depth)

    def _flat_dict(self, value: dict[Any, Any]) -> bool:
        """Whether a dict can be kept as is: string keys already known not to be secrets, scalar values, in budget.

        Measured by C loops (``map``, ``set``): a third of the cost of the loop in ``_mapping``. msgspec encodes
        the dict itself; nothing here changes it.
        """
        if set(map(type, value)) != _STR or set(map(_verdicts_for(self.extra).get, value)) != _FALSE:
            return False
        size = self._flat_size(value.values(), len(value))
        if size is None:
            return False
        size += sum(map(len, value)) + 3 * len(value) + 2
        if size > self.budget:
            return False
        self.budget -= size
        return True

    def _string(self, value: str) -> str:
        size = len(value) + 2
        if size <= self.budget:
            self.budget -= size
            return value
        keep = max(0, self.budget - 40)
        self.budget = 0
        return value[:keep] + f"…[cut: {len(value) - keep} more chars]"

    def _container(self, value: Any, depth: int, convert: Any) -> Any:
        if depth >= MAX_DEPTH:
            return self._string(f"<depth limit: {type(value).__name__}>")
        ident = id(value)
        if ident in self.path:
            return self._string(f"<cycle: {type(value).__name__}>")
        self.path.add(ident)
        try:
            return convert(value, depth + 1)
        finally:
            self.path.discard(ident)

    def _flat_size(self, values: Iterable[Any], count: int) -> int | None:
        """The JSON size of scalar values, measured by C loops (``map``, ``set``); None when one is not a scalar."""
        kinds = set(map(type, values))
        if kinds == _STR:
            return sum(map(len, values)) + 3 * count
        if kinds <= _NUMBERS:
            return 24 * count
        return None

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        extra = self.extra
        verdicts = _verdicts_for(extra)
        # The hot loop of a capture: plain strings and numbers are handled inline, with the budget in a local.
        out: dict[str, Any] = {}
        budget = self.budget - 2
        left = len(value)
        for key, item in value.items():
            if budget <= 0:
                out["…"] = f"[cut: {left} more items]"
                break
            left -= 1
            if type(key) is not str:
                key = str(key) if isinstance(key, (str, int, float, bool)) or key is None else _bounded_repr(key, extra)
            budget -= len(key) + 4
            secret = verdicts.get(key)
            if secret is None:
                secret = is_secret_key(key, extra)
            if secret:
                out[key] = REDACTED
                continue
            kind = type(item)
            if kind is str and len(item) + 2 <= budget:
                budget -= len(item) + 2
                out[key] = item
            elif kind is int and -_INT64 <= item < _INT64 or kind is bool or item is None:
                budget -= 8
                out[key] = item
            else:
                self.budget = budget
                out[key] = self.walk(item, depth)
                budget = self.budget
        self.budget = budget
        return out

    def _sequence(self, value: Iterable[Any], depth: int) -> list[Any]:
        items = value if isinstance(value, (list, tuple)) else list(value)
        out: list[Any] = []
        self.budget -= 2
        for index, item in enumerate(items):
            if self.budget <= 0:
                out.append(f"…[cut: {len(items) - index} more items]")
                break
            self.budget -= 1
            out.append(self.walk(item, depth))
        return out

    def _fields(self, value: Any, names: Iterable[str], depth: int) -> Any:
        # The cycle check is on the object itself: a dataclass whose field points back at it is a cycle.
        return self._container(value, depth, lambda v, d: self._mapping({n: getattr(v, n, None) for n in names}, d))

    def _other(self, value: Any, kind: type, depth: int) -> Any:
        try:
            return self._known(value, kind, depth)
        except Exception:  # a hostile __len__, __iter__, property or model_dump: describe the object instead
            return self._string(_bounded_repr(value, self.extra))

    def _known(self, value: Any, kind: type, depth: int) -> Any:
        if isinstance(value, str):
            return self._string(str.__str__(value))
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self.walk(int(value), depth) if not isinstance(value, enum.Enum) else self.walk(value.value, depth)
        if isinstance(value, float):
            return self.walk(float(value), depth)
        if isinstance(value, enum.Enum):
            return self.walk(value.value, depth)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._string(f"<bytes: {len(value)}>" if not isinstance(value, memoryview) else "<memoryview>")
        if isinstance(value, msgspec.Struct):
            return self._fields(value, value.__struct_fields__, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._fields(value, [field.name for field in dataclasses.fields(value)], depth)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return self._fields(value, value._fields, depth)
        if callable(getattr(value, "model_dump", None)) and not isinstance(value, type):
            fields = getattr(kind, "model_fields", None)
            if isinstance(fields, Mapping):  # pydantic v2: read the fields, without pydantic's own serializer
                return self._fields(value, list(fields), depth)
            return self._container(value.model_dump(), depth, self._mapping)
        if isinstance(value, Mapping):
            return self._container(value, depth, self._mapping)
        if isinstance(value, (list, tuple, set, frozenset)) or kind.__name__ in ("deque", "dict_keys", "dict_values"):
            return self._container(value, depth, self._sequence)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return self._string(value.isoformat())
        if isinstance(value, (uuid.UUID, decimal.Decimal, PurePath, datetime.timedelta)):
            return self._string(str(value))
        if isinstance(value, type):
            return self._string(f"<class {value.__module__}.{value.__qualname__}>")
        return self._string(_bounded_repr(value, self.extra))


def _fallback(text: str, max_bytes: int) -> str:
    """A JSON string holding the start of ``text`` and a cut mark, at most ``max_bytes`` bytes of UTF-8."""
    keep = max(0, max_bytes - 64)
    while True:
        cut = text[:keep]
        encoded = _encode(cut + f"…[cut: {len(text) - len(cut)} more chars]").decode()
        if len(encoded.encode()) <= max_bytes or keep == 0:
            return encoded if len(encoded.encode()) <= max_bytes else '"…[cut]"'
        keep //= 2


def to_json(value: Any, *, max_bytes: int = DEFAULT_MAX_BYTES, redact: tuple[str, ...] = ()) -> str:
    """``value`` as JSON text of at most ``max_bytes`` UTF-8 bytes, secrets redacted, cuts marked; never raises.

    ``redact`` adds key names to :data:`DEFAULT_REDACT`. Cost: O(size of the output), not of the input: the walk
    stops once its budget is spent.

    >>> to_json({"api-key": "k", "items": list(range(3))}, redact=("items",))
    '{"api-key":"[redacted]","items":"[redacted]"}'
    """
    budget = max(64, max_bytes)
    for _ in range(4):
        try:
            walked = _Walker(budget, redact).walk(value, 0)
            text = _encode(walked).decode()
        except Exception as error:  # a hostile __eq__, __len__ or property: describe the value instead
            text = _encode(f"<unserializable {type(value).__name__}: {type(error).__name__}>").decode()
        size = len(text) if text.isascii() else len(text.encode())
        if size <= max_bytes:
            return text
        # The budget counts characters; escapes and multi-byte characters made it longer: walk again with less.
        budget = budget * max_bytes // size // 2 if size else budget // 2
    return _fallback(text, max_bytes)
