"""Consul's ``?filter=`` language (the go-bexpr subset Consul documents), parsed once per request.

Supported: ``==``, ``!=``, ``in``, ``not in``, ``contains``, ``not contains``, ``matches``,
``not matches``, ``is empty``, ``is not empty``, ``and``, ``or``, ``not`` and parentheses; values
as ``"double-quoted"``, ```raw``` or bare words and numbers; selectors as dotted paths with
optional ``["key"]`` indexing. Selectors are checked against the endpoint's schema when the filter
is compiled, so a typo is a 400 rather than a silent empty result, as with real Consul.

When a selector crosses a list of structs (``Checks.Status``) a positive operator holds if it
holds for *any* element, and its negation (``!=``, ``not in``, ...) is the negation of that, so
``Checks.Status != critical`` means "no check is critical".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.traffic.durations import parse_go_bool

__all__ = [
    "BOOL",
    "INT",
    "STRING",
    "FilterError",
    "ListOf",
    "MapOf",
    "Predicate",
    "Scalar",
    "Struct",
    "compile_filter",
]

Predicate = Callable[[Any], bool]


class FilterError(ValueError):
    """A filter that does not parse or names a selector the endpoint does not have."""


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: str


@dataclass(frozen=True, slots=True)
class ListOf:
    elem: FieldType


@dataclass(frozen=True, slots=True)
class MapOf:
    elem: FieldType


@dataclass(frozen=True, slots=True)
class Struct:
    fields: Mapping[str, FieldType]


FieldType = Scalar | ListOf | MapOf | Struct

STRING = Scalar("string")
INT = Scalar("int")
BOOL = Scalar("bool")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "(", ")", "op", "str", "word", "eof"
    text: str
    pos: int


_WORD_STOP = set(' \t\r\n()"`=!')


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            toks.append(_Tok(ch, ch, i))
            i += 1
        elif text.startswith(("==", "!="), i):
            toks.append(_Tok("op", text[i : i + 2], i))
            i += 2
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise FilterError(f"syntax error at position {i}: unterminated string")
            try:
                toks.append(_Tok("str", json.loads(text[i : j + 1]), i))
            except ValueError:
                raise FilterError(f"syntax error at position {i}: invalid string") from None
            i = j + 1
        elif ch == "`":
            j = text.find("`", i + 1)
            if j == -1:
                raise FilterError(f"syntax error at position {i}: unterminated raw string")
            toks.append(_Tok("str", text[i + 1 : j], i))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _WORD_STOP:
                if text[j] == "[":
                    close = text.find("]", j)
                    if close == -1:
                        raise FilterError(f"syntax error at position {j}: unterminated index")
                    j = close + 1
                else:
                    j += 1
            if j == i:
                raise FilterError(f"syntax error at position {i}: unexpected {ch!r}")
            toks.append(_Tok("word", text[i:j], i))
            i = j
    toks.append(_Tok("eof", "", n))
    return toks


_PART = re.compile(r'([^.\[\]]+)|\[\s*(?:"([^"]*)"|`([^`]*)`|([^\]]*))\s*\]')


def _selector_parts(text: str) -> list[str]:
    parts: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos] == ".":
            pos += 1
            continue
        m = _PART.match(text, pos)
        if m is None:
            raise FilterError(f'Selector "{text}" is not valid')
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    if not parts:
        raise FilterError(f'Selector "{text}" is not valid')
    return parts


def _resolve(schema: Struct, parts: list[str], text: str) -> FieldType:
    t: FieldType = schema
    for part in parts:
        while isinstance(t, ListOf) and isinstance(t.elem, Struct):
            t = t.elem
        if isinstance(t, Struct) and part in t.fields:
            t = t.fields[part]
        elif isinstance(t, MapOf):
            t = t.elem
        else:
            raise FilterError(f'Selector "{text}" is not valid')
    return t


def _zero(t: FieldType) -> Any:
    if isinstance(t, Scalar):
        return {"string": "", "int": 0, "bool": False}[t.kind]
    return [] if isinstance(t, ListOf) else {}


def _walk(obj: Any, t: FieldType, parts: list[str]) -> list[Any]:
    if isinstance(t, ListOf) and isinstance(t.elem, Struct) and parts:
        out: list[Any] = []
        for item in obj or []:
            out.extend(_walk(item, t.elem, parts))
        return out
    if not parts:
        return [obj]
    child_t: FieldType
    if isinstance(t, Struct):
        child_t = t.fields[parts[0]]
    elif isinstance(t, MapOf | ListOf):
        child_t = t.elem
    else:
        return []
    child = obj.get(parts[0]) if isinstance(obj, dict) else None
    if child is None:
        child = _zero(child_t)
    return _walk(child, child_t, parts[1:])


def _coerce(raw: str, t: FieldType, text: str) -> Any:
    if not isinstance(t, Scalar):
        raise FilterError(f'Selector "{text}" cannot be compared with a value')
    try:
        if t.kind == "int":
            return int(raw)
        if t.kind == "bool":
            return parse_go_bool(raw)
    except ValueError:
        raise FilterError(f'Failed to convert value "{raw}" for selector "{text}"') from None
    return raw


def _member(value: str, container: Any, t: FieldType, text: str) -> bool:
    if isinstance(t, ListOf):
        return _coerce(value, t.elem, text) in container
    if isinstance(t, MapOf):
        return value in container
    if t == STRING:
        return value in container
    raise FilterError(f'Selector "{text}" does not support membership operators')


class _Parser:
    def __init__(self, text: str, schema: Struct) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.schema = schema

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "word" and tok.text == word

    def fail(self, msg: str) -> FilterError:
        tok = self.peek()
        return FilterError(f"syntax error at position {tok.pos}: {msg}")

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek().kind != "eof":
            raise self.fail(f"unexpected {self.peek().text!r}")
        return pred

    def or_expr(self) -> Predicate:
        preds = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            preds.append(self.and_expr())
        return preds[0] if len(preds) == 1 else (lambda obj: any(p(obj) for p in preds))

    def and_expr(self) -> Predicate:
        preds = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            preds.append(self.not_expr())
        return preds[0] if len(preds) == 1 else (lambda obj: all(p(obj) for p in preds))

    def not_expr(self) -> Predicate:
        if self.is_word("not"):
            self.take()
            inner = self.not_expr()
            return lambda obj: not inner(obj)
        if self.peek().kind == "(":
            self.take()
            pred = self.or_expr()
            if self.take().kind != ")":
                raise self.fail("expected ')'")
            return pred
        return self.match()

    def operand(self) -> _Tok:
        tok = self.take()
        if tok.kind not in ("str", "word"):
            raise FilterError(f"syntax error at position {tok.pos}: expected a selector or value")
        return tok

    def match(self) -> Predicate:
        first = self.operand()
        if self.is_word("in") or (self.is_word("not") and self.is_word("in", 1)):
            negate = self.take().text == "not"
            if negate:
                self.take()
            sel = self.operand()
            if sel.kind != "word":
                raise FilterError(f"syntax error at position {sel.pos}: expected a selector")
            return self.build("not in" if negate else "in", sel.text, first.text)
        if first.kind != "word":
            raise FilterError(f"syntax error at position {first.pos}: expected a selector")
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            return self.build(tok.text, first.text, self.operand().text)
        negate = False
        if self.is_word("not") and (self.is_word("contains", 1) or self.is_word("matches", 1)):
            self.take()
            negate = True
        if self.is_word("contains") or self.is_word("matches"):
            op = self.take().text
            return self.build(("not " if negate else "") + op, first.text, self.operand().text)
        if self.is_word("is"):
            self.take()
            empty_negate = False
            if self.is_word("not"):
                self.take()
                empty_negate = True
            if not self.is_word("empty"):
                raise self.fail("expected 'empty'")
            self.take()
            return self.build("is not empty" if empty_negate else "is empty", first.text, "")
        raise self.fail("expected an operator")

    def build(self, op: str, selector: str, value: str) -> Predicate:
        parts = _selector_parts(selector)
        t = _resolve(self.schema, parts, selector)
        schema = self.schema
        negate = op.startswith("not ") or op in ("!=", "is not empty")
        base = {"!=": "==", "is not empty": "is empty"}.get(op, op.removeprefix("not "))
        test: Callable[[Any], bool]
        if base == "==":
            want = _coerce(value, t, selector)

            def test(v: Any) -> bool:
                return bool(v == want)

        elif base in ("in", "contains"):
            _member(value, _zero(t), t, selector)  # validates the operator for this type

            def test(v: Any) -> bool:
                return _member(value, v, t, selector)

        elif base == "matches":
            if t not in (STRING, ListOf(STRING)):
                raise FilterError(f'Selector "{selector}" does not support matches')
            try:
                rx = re.compile(value)
            except re.error as exc:
                raise FilterError(f"Invalid regular expression {value!r}: {exc}") from None

            def test(v: Any) -> bool:
                items = v if isinstance(v, list) else [v]
                return any(rx.search(str(item)) for item in items)

        else:
            if isinstance(t, Scalar) and t != STRING:
                raise FilterError(f'Selector "{selector}" does not support is empty')

            def test(v: Any) -> bool:
                return len(v) == 0

        def pred(obj: Any) -> bool:
            hit = any(test(v) for v in _walk(obj, schema, parts))
            return not hit if negate else hit

        return pred


def compile_filter(expression: str, schema: Struct) -> Predicate:
    """Compile ``expression`` against ``schema``; raises ``FilterError`` with the reason."""
    return _Parser(expression, schema).parse()
