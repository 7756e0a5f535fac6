"""The trial table's filter queries: a small grammar, parsed once and evaluated on whole columns.

    lr < 1e-3 and state == complete
    model in (resnet18, convnext_nano)
    not (value > 0.95 or state == pruned)

A comparison is `column op value` with op one of == != < <= > >=, or `column in (v, ...)` and
`column not in (v, ...)`; `and` binds tighter than `or`, `not` tighter than both, parentheses
group. Values are numbers, bare words or quoted strings; text compares case-insensitively.

Evaluation works on arrays (numpy), never row by row, so a query over 100,000 trials costs
milliseconds: a number column is a float array (NaN where a trial has no value); a text column is
integer codes (-1: none) into its distinct values, and a predicate is decided once per distinct
value, then spread over the codes. A query that cannot be parsed or names an unknown column raises
`QueryError` with one line that says what is wrong.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
KEYWORDS = ("and", "or", "not", "in")
TOKEN = re.compile(r"""\s*(?:(?P<op>==|!=|<=|>=|<|>|=)|(?P<paren>[(),])|(?P<quoted>"[^"]*"|'[^']*')|"""
                   r"""(?P<word>[^\s(),=!<>"']+)|(?P<bad>\S))""")


class QueryError(ValueError):
    """A query that cannot be evaluated; its message is one line meant for the user."""


@dataclass(frozen=True)
class Numbers:
    """A column of numbers: NaN where a trial has none."""

    values: np.ndarray


@dataclass(frozen=True)
class Codes:
    """A column of text (or any repeated values): codes into `labels`, -1 where a trial has none."""

    codes: np.ndarray
    labels: Sequence[Any]


Column = Numbers | Codes


@dataclass(frozen=True)
class Compare:
    column: str
    op: str  # one of OPS, or "in" / "not in"
    values: tuple[str, ...]  # as typed: one, or the list of `in`


@dataclass(frozen=True)
class Not:
    part: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Compare | Not | BoolOp


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; kind is op, paren, value or keyword. Quotes are taken off strings."""
    out: list[tuple[str, str]] = []
    for match in TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue
        word = match.group(kind)
        if kind == "bad":
            raise QueryError(f"unexpected {word!r} at column {match.start(kind) + 1}")
        if kind == "op" and word == "=":
            raise QueryError("use == to compare (a single = is not an operator)")
        if kind == "quoted":
            out.append(("value", word[1:-1]))
        elif kind == "word" and word.lower() in KEYWORDS:
            out.append(("keyword", word.lower()))
        else:
            out.append(("value" if kind == "word" else str(kind), word))
    return out


class _Parser:
    """Recursive descent over the tokens: or < and < not < comparison / parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens = tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, word: str | None = None, what: str = "") -> str:
        token = self.peek()
        if token is None or token[0] != kind or (word is not None and token[1] != word):
            found = f"{token[1]!r}" if token else "the end"
            raise QueryError(f"expected {what or word or kind}, found {found}")
        self.at += 1
        return token[1]

    def accept(self, kind: str, word: str) -> bool:
        if self.peek() == (kind, word):
            self.at += 1
            return True
        return False

    def expression(self) -> Node:
        parts = [self.conjunction()]
        while self.accept("keyword", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.accept("keyword", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def negation(self) -> Node:
        if self.accept("keyword", "not"):
            return Not(self.negation())
        if self.accept("paren", "("):
            inner = self.expression()
            self.take("paren", ")", "')'")
            return inner
        return self.comparison()

    def comparison(self) -> Node:
        column = self.take("value", what="a column name")
        if self.accept("keyword", "in"):
            return Compare(column, "in", self.choices())
        if self.accept("keyword", "not"):
            self.take("keyword", "in", "'in' after 'not'")
            return Compare(column, "not in", self.choices())
        op = self.take("op", what=f"an operator after {column!r} (== != < <= > >= in)")
        return Compare(column, op, (self.take("value", what=f"a value after {op!r}"),))

    def choices(self) -> tuple[str, ...]:
        self.take("paren", "(", "'(' after 'in'")
        values = [self.take("value", what="a value")]
        while self.accept("paren", ","):
            values.append(self.take("value", what="a value after ','"))
        self.take("paren", ")", "')' to close the list")
        return tuple(values)


def parse(text: str) -> Node | None:
    """The query's tree; None for an empty query (every trial)."""
    parser = _Parser(text)
    if parser.peek() is None:
        return None
    node = parser.expression()
    if parser.peek() is not None:
        raise QueryError(f"unexpected {parser.peek()[1]!r} after a complete query (join with and / or)")
    return node


def columns_of(node: Node | None) -> set[str]:
    """The column names a query uses, as typed."""
    if node is None:
        return set()
    if isinstance(node, Compare):
        return {node.column}
    if isinstance(node, Not):
        return columns_of(node.part)
    return set().union(*(columns_of(p) for p in node.parts))


def _as_number(column: str, word: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise QueryError(f"{column} holds numbers: {word!r} is not one") from None


def _label_matches(label: Any, op: str, words: tuple[str, ...]) -> bool:
    """Whether one distinct value of a text column satisfies the comparison. Equality is on the
    text, ignoring case; an order (<, >) compares numbers when both sides are numbers (a
    categorical batch size), else the text."""
    if op in ("in", "not in"):
        hit = any(_label_matches(label, "==", (w,)) for w in words)
        return hit if op == "in" else not hit
    word = words[0]
    if op in ("==", "!="):
        return OPS[op](str(label).lower(), word.lower())
    try:
        return bool(OPS[op](float(label), float(word)))
    except (TypeError, ValueError):
        return bool(OPS[op](str(label).lower(), word.lower()))


def _compare(node: Compare, column: Column) -> np.ndarray:
    if isinstance(column, Codes):
        hits = np.array([_label_matches(label, node.op, node.values) for label in column.labels] + [False],
                        dtype=bool)  # the last entry is what code -1 (no value) looks up: never a match
        return hits[column.codes]
    values = column.values
    with np.errstate(invalid="ignore"):
        if node.op in ("in", "not in"):
            hit = np.isin(values, [_as_number(node.column, w) for w in node.values])
            return hit if node.op == "in" else ~hit & ~np.isnan(values)
        result = OPS[node.op](values, _as_number(node.column, node.values[0]))
    return result & ~np.isnan(values) if node.op == "!=" else result


def evaluate(node: Node | None, columns: Mapping[str, Column], size: int) -> np.ndarray:
    """A boolean mask over `size` trials. Column names are looked up case-insensitively; an unknown
    one raises QueryError listing the known ones."""
    if node is None:
        return np.ones(size, dtype=bool)
    if isinstance(node, Not):
        return ~evaluate(node.part, columns, size)
    if isinstance(node, BoolOp):
        masks = [evaluate(p, columns, size) for p in node.parts]
        return np.logical_and.reduce(masks) if node.op == "and" else np.logical_or.reduce(masks)
    column = lookup(columns, node.column)
    return _compare(node, column)


def lookup(columns: Mapping[str, Column], name: str) -> Column:
    """The column called `name` (any case)."""
    if name in columns:
        return columns[name]
    for key, column in columns.items():
        if key.lower() == name.lower():
            return column
    raise QueryError(f"no column {name!r}: columns are {', '.join(columns)}")


def compile_query(text: str, columns: Mapping[str, Column]) -> Node | None:
    """Parse `text` and check its column names and values against `columns` (on no rows), so a
    mistake is reported when the query is typed, not at the next poll."""
    node = parse(text)
    empty = {name: Numbers(np.zeros(0)) if isinstance(c, Numbers) else Codes(np.zeros(0, dtype=np.int32), c.labels)
             for name, c in columns.items()}
    evaluate(node, empty, 0)
    return node
