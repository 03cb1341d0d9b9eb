"""A TraceQL subset parsed into a :class:`~spanstore.query.SpanQuery` (a hand-written lexer and parser; no ``eval``).

The subset is what one ``SpanQuery`` can mean: a single spanset whose conditions are joined by ``&&``::

    { }                                            every span
    { status = error && span.http.route = "/cart" }
    { name = "GET /cart" && duration > 100ms }     durations: ns us µs ms s m h, decimals (1.5s), compounds (1m30s)
    { resource.service.name = "cart" && kind = server }
    { span.http.response.status_code >= 500 && .db.system != nil }
    { span.http.route =~ "/api/.*" }               regex: must match the whole value

Fields: the intrinsics ``name``, ``status`` (``error ok unset``), ``kind`` (``unspecified internal server client
producer consumer``), ``duration`` (also spelled ``span:name``, ``span:status``, ``span:kind``, ``span:duration``),
``trace:id`` (alias ``traceID``); attributes ``span.<key>``, ``resource.<key>`` and ``.<key>``. Keys with unusual
characters are quoted: ``span."my key"``. Values: ``"strings"`` (Go escapes) or ```raw strings```, ints, floats,
``true``/``false``, and ``nil`` in ``!= nil`` (the attribute exists).

Where spanstore differs from Tempo, on purpose:

- ``.key`` (unscoped) tests span attributes only; Tempo tests span, then resource attributes.
- ``resource.service.name = "x"`` becomes ``SpanQuery(service="x")``, which matches ``unknown_service`` for spans
  whose resource has no ``service.name`` (as ``service_name`` does everywhere in spanstore).
- Attribute comparisons are typed as in :mod:`spanstore.query`: ``"500"`` does not equal ``500``.

Not supported, each with an error saying so: ``||``, several spansets (``{ a } && { b }``), pipelines
(``| count() > 2``, ``| select(...)``), structural operators (``>>``, ``>``, ``~``, ...), ``!~``, ``!``, ``= nil``,
arithmetic, and the intrinsics a single span cannot answer (``rootName``, ``traceDuration``, ``statusMessage``, ...).

Every error is an :class:`~spanstore.errors.InvalidQueryError` saying what was expected, what was got, and where,
with the query echoed and a caret under the spot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NoReturn

from spanstore.errors import InvalidQueryError
from spanstore.model import SpanKind, StatusCode
from spanstore.query import AttributeFilter, SpanQuery, normalize_trace_id

__all__ = ["format_traceql", "parse_traceql"]

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # MICRO SIGN
    "μs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_FORMAT_UNITS = (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000),
                 ("us", 1_000), ("ns", 1))  # fmt: skip
_STATUSES = {"error": StatusCode.ERROR, "ok": StatusCode.OK, "unset": StatusCode.UNSET}
_KINDS = {kind.name.lower(): kind for kind in SpanKind}
_SCOPES = ("span", "resource", "event", "link", "instrumentation", "parent")
_COMPARISONS = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "=~": "matches"}
_OPERATORS = frozenset(
    ["=", "!=", "<", "<=", ">", ">=", "=~", "!~", "&&", "||", "|", "!", "~", ">>", "<<", "!>", "!<", "!>>", "!<<",
     "&>", "&<", "&>>", "&<<", "&~", "!&>", "!&<", "!&>>", "!&<<", "!&~"]
)  # fmt: skip
_OPERATOR_CHARS = frozenset("=!<>~&|")
_KEY_STOP = frozenset("{}()=~!<>&|^,\"'`+*%;[]")
_PLAIN_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/:")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_UNIT_START = _IDENT_START | frozenset("µμ")  # a number touching a letter is a duration (or a bad unit)
_MAX_NUMBER_CHARS = 100  # int() of thousands of digits is slow and raises past 4300: nothing real is that long
_MAX_DEPTH = 64
_FIELDS_HINT = "a field (name, status, kind, duration, trace:id, span.<key>, resource.<key> or .<key>)"
_SCOPED_INTRINSICS = {"span:name": "name", "span:status": "status", "span:kind": "kind",
                      "span:duration": "duration", "trace:id": "trace_id"}  # fmt: skip
_BARE_INTRINSICS = {"name": "name", "status": "status", "kind": "kind", "duration": "duration", "traceID": "trace_id"}
_UNSUPPORTED_INTRINSICS = {
    "rootName": "a trace-level field",
    "rootServiceName": "a trace-level field",
    "traceDuration": "a trace-level field",
    "statusMessage": "SpanQuery has no status-message criterion",
    "nestedSetLeft": "a Tempo storage detail",
    "nestedSetRight": "a Tempo storage detail",
    "nestedSetParent": "a Tempo storage detail",
    "parent": "a structural field",
    "childCount": "a structural field",
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # { } ( ) op string number duration ident attr intrinsic end
    text: str
    pos: int
    value: Any = None


# --- errors -----------------------------------------------------------------------------------------------------------
def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of query"
    text = token.text if len(token.text) <= 30 else token.text[:27] + "..."
    return repr(text)


def _error(text: str, pos: int, message: str, got: str | None = None, hint: str = "") -> InvalidQueryError:
    """An InvalidQueryError: ``message at column C[, got X]`` and the query line with a caret under ``pos``."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end != -1 else len(text)]
    column = pos - line_start + 1
    where = f"column {column}" if "\n" not in text else f"line {text.count(chr(10), 0, pos) + 1}, column {column}"
    shown_from = max(0, column - 1 - 50)
    shown = line[shown_from : shown_from + 100]
    prefix = "..." if shown_from else ""
    suffix = "..." if shown_from + 100 < len(line) else ""
    shown = "".join(ch if ch.isprintable() else " " for ch in shown)  # keep the caret aligned
    caret = " " * (len(prefix) + column - 1 - shown_from) + "^"
    message = f"{message} at {where}" + (f", got {got}" if got is not None else "") + (f" ({hint})" if hint else "")
    return InvalidQueryError(f"{message}\n  {prefix}{shown}{suffix}\n  {caret}")


# --- lexer ------------------------------------------------------------------------------------------------------------
class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, pos: int, message: str, got: str | None = None) -> NoReturn:
        raise _error(self.text, pos, message, got)

    def tokens(self) -> list[_Token]:
        text = self.text
        result: list[_Token] = []
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                result.append(_Token("end", "", len(text)))
                return result
            result.append(self.token())

    def token(self) -> _Token:
        text, start = self.text, self.pos
        ch = text[start]
        if ch in "{}(),":
            self.pos += 1
            return _Token(ch, ch, start)
        if ch in _OPERATOR_CHARS:
            end = start
            while end < len(text) and text[end] in _OPERATOR_CHARS:
                end += 1
            op = text[start:end]
            # '!=' and '=~' may touch a following operator-looking char only in nonsense; split the longest known prefix
            while op not in _OPERATORS and len(op) > 1:
                op = op[:-1]
            if op not in _OPERATORS:
                self.fail(start, "expected an operator (= != < <= > >= =~ &&)", repr(text[start:end]))
            self.pos = start + len(op)
            return _Token("op", op, start)
        if ch == '"' or ch == "`":
            value = self.string()
            return _Token("string", text[start : self.pos], start, value)
        if ch in _DIGITS or (ch == "-" and start + 1 < len(text) and text[start + 1] in _DIGITS):
            return self.number()
        if ch == ".":
            self.pos += 1
            key = self.key(start)
            return _Token("attr", text[start : self.pos], start, (None, key))
        if ch in _IDENT_START:
            word = self.word()
            if self.pos < len(text) and text[self.pos] == "." and word in _SCOPES:
                self.pos += 1
                key = self.key(start)
                return _Token("attr", text[start : self.pos], start, (word, key))
            if self.pos < len(text) and text[self.pos] == ":":
                self.pos += 1
                if self.pos >= len(text) or text[self.pos] not in _IDENT_START:
                    self.fail(self.pos, f"expected an intrinsic name after '{word}:'", self.got_here())
                name = f"{word}:{self.word()}"
                return _Token("intrinsic", name, start, name)
            if self.pos < len(text) and text[self.pos] == ".":
                self.fail(start, "expected an attribute scope (span., resource. or . for unscoped)", repr(word + "."))
            return _Token("ident", word, start, word)
        if ch == "'":
            self.fail(start, 'expected a "double-quoted" or `raw` string', repr(ch))
        self.fail(start, "expected a field, an operator, a value, '{' or '}'", repr(ch))

    def got_here(self) -> str:
        return repr(self.text[self.pos]) if self.pos < len(self.text) else "end of query"

    def word(self) -> str:
        text, start = self.text, self.pos
        end = start
        while end < len(text) and text[end] in _IDENT_CHARS:
            end += 1
        self.pos = end
        return text[start:end]

    def key(self, field_start: int) -> str:
        """An attribute key after 'scope.': quoted, or a run of characters up to whitespace or a delimiter."""
        text, start = self.text, self.pos
        if start < len(text) and text[start] == '"':
            key = self.string()
        else:
            end = start
            while end < len(text) and not text[end].isspace() and text[end] not in _KEY_STOP:
                end += 1
            self.pos = end
            key = text[start:end]
        if not key:
            scope = text[field_start:start]
            self.fail(start, f"expected an attribute name after '{scope}'", self.got_here())
        return key

    def string(self) -> str:
        text, start = self.text, self.pos
        quote = text[start]
        if quote == "`":  # a raw string, as in Go: no escapes
            end = text.find("`", start + 1)
            if end == -1:
                self.fail(start, "expected a closing '`' for this string", "end of query")
            self.pos = end + 1
            return text[start + 1 : end]
        parts: list[str] = []
        i = start + 1
        while True:
            if i >= len(text):
                self.fail(start, "expected a closing '\"' for this string", "end of query")
            ch = text[i]
            if ch == '"':
                self.pos = i + 1
                return "".join(parts)
            if ch == "\n":
                self.fail(i, "expected a closing '\"' before the end of the line", "a newline")
            if ch != "\\":
                parts.append(ch)
                i += 1
                continue
            escape = text[i + 1 : i + 2]
            simple = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "'": "'", "0": "\0"}
            if escape in simple:
                parts.append(simple[escape])
                i += 2
            elif escape in ("u", "U", "x"):
                width = {"u": 4, "U": 8, "x": 2}[escape]
                digits = text[i + 2 : i + 2 + width]
                if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    self.fail(i, f"expected {width} hex digits after '\\{escape}'", repr(digits))
                code = int(digits, 16)
                if code > 0x10FFFF:
                    self.fail(i, "expected a Unicode code point up to \\U0010FFFF", repr(text[i : i + 2 + width]))
                parts.append(chr(code))
                i += 2 + width
            else:
                self.fail(i, 'expected an escape (\\\\ \\" \\n \\t \\r \\uXXXX)', repr("\\" + escape))

    def number(self) -> _Token:
        """An int, a float, or a duration (a number directly followed by a unit, possibly compound: 1m30s)."""
        text, start = self.text, self.pos
        i = start + 1 if text[start] == "-" else start

        def digits(i: int) -> int:
            while i < len(text) and text[i] in _DIGITS:
                i += 1
            return i

        i = digits(i)
        is_float = False
        if i + 1 < len(text) and text[i] == "." and text[i + 1] in _DIGITS:
            i = digits(i + 1)
            is_float = True
        if i < len(text) and text[i] in "eE":
            j = i + 1
            if j < len(text) and text[j] in "+-":
                j += 1
            if j < len(text) and text[j] in _DIGITS:
                i = digits(j)
                is_float = True
        if i < len(text) and text[i] in _UNIT_START:
            return self.duration(start)
        literal = text[start:i]
        if len(literal) > _MAX_NUMBER_CHARS:
            self.fail(
                start, f"expected a number of at most {_MAX_NUMBER_CHARS} characters", f"{len(literal)} characters"
            )
        self.pos = i
        if is_float:
            value: float | int = float(literal)
            if math.isinf(value):
                self.fail(start, "expected a finite number", repr(literal))
            return _Token("number", literal, start, value)
        return _Token("number", literal, start, int(literal))

    def duration(self, start: int) -> _Token:
        text = self.text
        i = start + 1 if text[start] == "-" else start
        total = Fraction(0)
        while True:
            number_start = i
            while i < len(text) and text[i] in _DIGITS:
                i += 1
            if i + 1 < len(text) and text[i] == "." and text[i + 1] in _DIGITS:
                i += 1
                while i < len(text) and text[i] in _DIGITS:
                    i += 1
            number = text[number_start:i]
            unit_start = i
            while i < len(text) and text[i] in _UNIT_START:
                i += 1
            unit = text[unit_start:i]
            if unit not in _DURATION_UNITS:
                self.fail(unit_start, "expected a duration unit (ns, us, µs, ms, s, m or h)", repr(unit))
            if i - start > _MAX_NUMBER_CHARS:
                self.fail(
                    start, f"expected a duration of at most {_MAX_NUMBER_CHARS} characters", f"{i - start} characters"
                )
            total += Fraction(number) * _DURATION_UNITS[unit]
            if not (i < len(text) and text[i] in _DIGITS):
                break
        if total.denominator != 1:
            self.fail(start, "expected a whole number of nanoseconds", repr(text[start:i]))
        self.pos = i
        value = -int(total) if text[start] == "-" else int(total)
        return _Token("duration", text[start:i], start, value)


# --- parser -----------------------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _Lexer(text).tokens()
        self.index = 0
        self.depth = 0
        self.fields: dict[str, Any] = {}
        self.attributes: list[AttributeFilter] = []
        self.min_duration_ns: int | None = None
        self.max_duration_ns: int | None = None

    def fail(self, token: _Token, message: str, *, got: bool = True, hint: str = "") -> NoReturn:
        raise _error(self.text, token.pos, message, _describe(token) if got else None, hint)

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def parse(self) -> SpanQuery:
        first = self.next()
        if first.kind != "{":
            self.fail(first, "expected '{' to start a spanset (a TraceQL query looks like { status = error })")
        if self.peek().kind != "}":
            self.conjunction()
        close = self.next()
        if close.kind != "}":
            self.fail(close, "expected '&&' or '}' after a condition")
        after = self.next()
        if after.kind != "end":
            self.fail_after_spanset(after)
        return SpanQuery(
            **self.fields,
            attributes=tuple(self.attributes),
            min_duration_ns=self.min_duration_ns,
            max_duration_ns=self.max_duration_ns,
        )

    def fail_after_spanset(self, token: _Token) -> NoReturn:
        only_one = "spanstore supports only one spanset with && conditions"
        if token.text in ("&&", "||"):
            self.fail(token, f"combining spansets with '{token.text}' is not supported: {only_one}", got=False)
        if token.text == "|":
            self.fail(token, f"pipelines (| count(), | select(...), ...) are not supported: {only_one}", got=False)
        if token.kind == "op":
            self.fail(token, f"structural operator '{token.text}' is not supported: {only_one}", got=False)
        self.fail(token, "expected the end of the query after '}'")

    def conjunction(self) -> None:
        self.term()
        while True:
            token = self.peek()
            if token.text == "&&":
                self.next()
                self.term()
            elif token.text == "||":
                self.fail(
                    token, "'||' is not supported: spanstore queries are one spanset with && conditions", got=False
                )
            else:
                return

    def term(self) -> None:
        token = self.peek()
        if token.kind == "(":
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                self.fail(token, f"expected at most {_MAX_DEPTH} nested parentheses", got=False)
            self.next()
            self.conjunction()
            close = self.next()
            if close.kind != ")":
                self.fail(close, "expected '&&' or ')' after a condition")
            self.depth -= 1
        elif token.text == "!":
            self.fail(token, "negation '!' is not supported: use != or a positive condition", got=False)
        else:
            self.condition()

    def condition(self) -> None:
        field_token = self.next()
        field = self.field(field_token)
        op_token = self.next()
        if op_token.kind != "op" or op_token.text not in (*_COMPARISONS, "!~"):
            self.fail(op_token, f"expected a comparison (= != < <= > >= =~) after {field_token.text!r}")
        if op_token.text == "!~":
            self.fail(op_token, "'!~' (does not match) is not supported: spanstore has no negated regex", got=False)
        value_token = self.next()
        if field == "attribute":
            self.attribute(field_token, op_token, value_token)
        elif field == "duration":
            self.duration(op_token, value_token)
        else:
            self.intrinsic(field, field_token, op_token, value_token)

    def field(self, token: _Token) -> str:
        if token.kind == "attr":
            scope = token.value[0]
            if scope not in (None, "span", "resource"):
                self.fail(token, f"the '{scope}.' scope is not supported: use span., resource. or .", got=False)
            return "attribute"
        if token.kind in ("ident", "intrinsic"):
            name = token.value
            mapped = _BARE_INTRINSICS.get(name) or _SCOPED_INTRINSICS.get(name)
            if mapped:
                return mapped
            bare = name.split(":", 1)[-1]
            if bare in _UNSUPPORTED_INTRINSICS or token.kind == "intrinsic":
                reason = _UNSUPPORTED_INTRINSICS.get(bare, "not one spanstore can answer for a single span")
                self.fail(token, f"the intrinsic {name!r} is not supported ({reason})", got=False)
            hint = f"an attribute needs a scope: span.{name}, resource.{name} or .{name}"
            self.fail(token, f"expected {_FIELDS_HINT}", hint=hint)
        self.fail(token, f"expected {_FIELDS_HINT}")

    def set_field(self, token: _Token, field: str, value: object, shown: str) -> None:
        previous = self.fields.get(field)
        if previous is not None and previous != value:
            self.fail(token, f"conflicting conditions: {shown} is already required to be {previous!r}", got=False)
        self.fields[field] = value

    def intrinsic(self, field: str, field_token: _Token, op: _Token, value: _Token) -> None:
        shown = field_token.text
        if op.text != "=":
            self.fail(op, f"{shown} supports only '='", got=False)
        if field == "status":
            if value.kind != "ident" or value.text not in _STATUSES:
                self.fail(value, "expected a status (error, ok or unset) after '='")
            self.set_field(value, "status", _STATUSES[value.text], shown)
        elif field == "kind":
            if value.kind != "ident" or value.text not in _KINDS:
                self.fail(value, f"expected a kind ({', '.join(_KINDS)}) after '='")
            self.set_field(value, "kind", _KINDS[value.text], shown)
        elif field == "name":
            if value.kind != "string":
                self.fail(value, "expected a quoted span name after '=' (e.g. \"GET /cart\")")
            self.set_field(value, "name", value.value, shown)
        else:  # trace_id
            if value.kind != "string":
                self.fail(value, "expected a quoted trace id (32 hex characters) after '='")
            try:
                trace_id = normalize_trace_id(value.value)
            except InvalidQueryError:
                self.fail(value, "expected a trace id of 32 hex characters")
            self.set_field(value, "trace_id", trace_id, shown)

    def duration(self, op: _Token, value: _Token) -> None:
        if op.text not in ("=", "<", "<=", ">", ">="):
            self.fail(op, "duration supports only = < <= > >=", got=False)
        if value.kind != "duration":
            self.fail(value, f"expected a duration (e.g. 100ms, 1.5s) after {op.text!r}")
        ns = value.value
        if ns < 0:
            self.fail(value, "expected a duration >= 0")
        low, high = self.min_duration_ns, self.max_duration_ns
        if op.text in ("=", ">=", ">"):
            bound = ns + 1 if op.text == ">" else ns
            low = bound if low is None else max(low, bound)
        if op.text in ("=", "<=", "<"):
            bound = ns - 1 if op.text == "<" else ns
            high = bound if high is None else min(high, bound)
        if high is not None and (high < 0 or (low is not None and low > high)):
            self.fail(value, "contradicting duration conditions: no duration satisfies them all", got=False)
        self.min_duration_ns, self.max_duration_ns = low, high

    def attribute(self, field_token: _Token, op: _Token, value_token: _Token) -> None:
        scope, key = field_token.value
        scope = scope or "span"
        if value_token.kind in ("string", "number"):
            value = value_token.value
        elif value_token.kind == "ident" and value_token.text in ("true", "false"):
            value = value_token.text == "true"
        elif value_token.kind == "ident" and value_token.text == "nil":
            if op.text != "!=":
                self.fail(op, "only '!= nil' (the attribute exists) is supported with nil", got=False)
            self.attributes.append(AttributeFilter(key, None, "exists", scope))
            return
        elif value_token.kind == "duration":
            self.fail(
                value_token,
                "expected a string, number, true, false or nil",
                hint="a duration like 1s compares only with duration",
            )
        elif value_token.kind == "ident" and (value_token.text in _STATUSES or value_token.text in _KINDS):
            self.fail(
                value_token, f"expected a value after {op.text!r}", hint=f'a string needs quotes: "{value_token.text}"'
            )
        else:
            self.fail(value_token, f"expected a value after {op.text!r}")
        if scope == "resource" and key == "service.name" and op.text == "=" and type(value) is str:
            self.set_field(value_token, "service", value, field_token.text)
            return
        try:
            self.attributes.append(AttributeFilter(key, value, _COMPARISONS[op.text], scope))
        except InvalidQueryError as error:
            raise _error(self.text, value_token.pos, str(error)) from None


def parse_traceql(text: str) -> SpanQuery:
    """Parse a TraceQL query of the supported subset (see the module docstring) into a :class:`SpanQuery`.

    Cost: O(len(text)). A pure function: thread-safe. Raises :class:`~spanstore.errors.InvalidQueryError` (never
    anything else) for text outside the subset, with the position and a caret.

    >>> q = parse_traceql('{ status = error && span.http.route = "/cart" && duration > 1.5s }')
    >>> q.status.name, q.attributes[0].key, q.attributes[0].value, q.min_duration_ns
    ('ERROR', 'http.route', '/cart', 1500000001)
    >>> parse_traceql("{ span.code = }")
    Traceback (most recent call last):
    ...
    spanstore.errors.InvalidQueryError: expected a value after '=' at column 15, got '}'
      { span.code = }
                    ^
    """
    if not isinstance(text, str):
        raise InvalidQueryError(f"a TraceQL query must be a str, got {type(text).__name__}")
    return _Parser(text).parse()


# --- formatting -------------------------------------------------------------------------------------------------------
def _format_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable() or ch == "`":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _format_value(value: object, where: str) -> str:
    if type(value) is str:
        return _format_string(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    raise InvalidQueryError(f"{where}: TraceQL has no spelling for the value {value!r}")


def _format_duration(ns: int) -> str:
    for unit, size in _FORMAT_UNITS:
        if ns and ns % size == 0:
            return f"{ns // size}{unit}"
    return "0ns"


def _format_filter(f: AttributeFilter) -> str:
    key = f.key if all(c in _PLAIN_KEY_CHARS for c in f.key) else _format_string(f.key)
    field = f"{f.scope}.{key}"
    where = f"filter on {f.key!r}"
    if f.op == "exists":
        return f"{field} != nil"
    op = {"==": "=", "matches": "=~"}.get(f.op, f.op)
    if op not in _COMPARISONS:
        raise InvalidQueryError(f"{where}: TraceQL has no spelling for the operator {f.op!r}")
    return f"{field} {op} {_format_value(f.value, where)}"


def format_traceql(query: SpanQuery) -> str:
    """The TraceQL text of a :class:`SpanQuery`, such that ``parse_traceql(format_traceql(q)) == q``.

    Raises :class:`~spanstore.errors.InvalidQueryError` for what TraceQL cannot say: a time window, ``root_only``,
    ``error_type``, ``limit``, an order other than ``"newest"``, the ``in``/``contains`` operators, bytes or array
    values. Cost: O(size of the query); thread-safe.

    >>> from spanstore import SpanQuery
    >>> format_traceql(SpanQuery(status="error", service="cart", min_duration_ns=100_000_000,
    ...                          attributes={"http.route": "/cart"}))
    '{ resource.service.name = "cart" && status = error && duration >= 100ms && span.http.route = "/cart" }'
    >>> format_traceql(SpanQuery())
    '{ }'
    """
    if not isinstance(query, SpanQuery):
        raise InvalidQueryError(f"expected a SpanQuery, got {type(query).__name__}")
    for field in ("since", "until", "last", "error_type", "limit"):
        if getattr(query, field) is not None:
            raise InvalidQueryError(f"TraceQL has no spelling for {field}={getattr(query, field)!r}")
    if query.root_only:
        raise InvalidQueryError("TraceQL has no spelling for root_only=True")
    if query.order != "newest":
        raise InvalidQueryError(f"TraceQL has no spelling for order={query.order!r}")
    parts = []
    if query.trace_id is not None:
        parts.append(f'trace:id = "{query.trace_id}"')
    if query.name is not None:
        parts.append(f"name = {_format_string(query.name)}")
    if query.service is not None:
        parts.append(f"resource.service.name = {_format_string(query.service)}")
    if query.kind is not None:
        parts.append(f"kind = {query.kind.name.lower()}")
    if query.status is not None:
        parts.append(f"status = {query.status.name.lower()}")
    low, high = query.min_duration_ns, query.max_duration_ns
    if low is not None and low == high:
        parts.append(f"duration = {_format_duration(low)}")
    else:
        if low is not None:
            parts.append(f"duration >= {_format_duration(low)}")
        if high is not None:
            parts.append(f"duration <= {_format_duration(high)}")
    parts.extend(_format_filter(f) for f in query.attributes)
    return "{ " + " && ".join(parts) + " }" if parts else "{ }"
