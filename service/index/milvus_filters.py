"""Metadata filters as Milvus boolean expressions, with the same strict semantics as filters.py.

Milvus compares JSON values loosely (milvus-lite, for one, finds `true` when
asked for `1`), and our filters are strict about types: `true` is not `1`,
`"1"` is not `1`, ranges only match numbers. So each point carries, next to
its metadata, a second JSON field of *typed match keys*: one key per scalar
metadata value, named by the value's type and a hash of the field name:

    {"year": 2021, "label": "cat", "ok": true, "x": null}
    -> {"n<h(year)>": 2021.0, "s<h(label)>": "<h(cat)>", "b<h(ok)>": true, "z<h(x)>": true}

A filter then only ever compares a number key with a number, a bool key
with a bool, a string key with a string hash: whatever the engine's loose
rules are, they cannot mix types that never share a key. Field names and
string values reach the expression only as hex digests, so nothing a
client sends can change the expression's structure (no quoting to escape).
Lists and objects are not indexed: no scalar filter matches them, as in filters.py.

Point ids are the one client text that reaches an expression as text (`id in [...]`, to get and delete by id):
`ids_expression` writes each as a double-quoted literal with every character that could end or bend it escaped
(pymilvus's own `get(ids=...)` / `delete(ids=...)` paste them between single quotes unescaped, so an id could
select other points, and an id with a backslash could never be read or deleted).

Numbers are stored as floats (1 == 1.0, as in filters.py); integers beyond
2**53 lose their last digits there, so two such integers can compare equal.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

from service.index.filters import RANGE_OPS, compile_filter

MATCH_FIELD = "match"
_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_MAX_FLOAT = 1.7976931348623157e308
NEVER = 'id == ""'  # true of no point (ids have at least one character); every Milvus version parses it


# The escapes both milvus-lite's lexer and Milvus's grammar read back as the character itself.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def string_literal(text: str) -> str:
    """`text` as a Milvus string literal that reads back as exactly `text`, whatever it holds."""
    return '"' + text.translate(_ESCAPES) + '"'


def ids_expression(ids: Sequence[str], field: str = "id") -> str:
    """The expression selecting exactly these primary keys."""
    return f"{field} in [{', '.join(string_literal(i) for i in ids)}]"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _typed(field: str, value: Any) -> tuple[str, Any] | None:
    """(match key, stored value) for a scalar metadata value; None for what no filter can match."""
    name = _digest(field)
    if isinstance(value, bool):
        return f"b{name}", value
    if _is_number(value):
        number = float(value)
        return (f"n{name}", number) if math.isfinite(number) else None
    if isinstance(value, str):
        return f"s{name}", _digest(value)
    if value is None:
        return f"z{name}", True
    return None


def match_keys(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The typed match keys stored next to a point's metadata."""
    keys = {}
    for field, value in metadata.items():
        typed = _typed(str(field), value)
        if typed is not None:
            keys[typed[0]] = typed[1]
    return keys


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # '2021.0', '1e+20': always a float literal
    return f'"{value}"'  # a hex digest: nothing to escape


def _equals(field: str, value: Any) -> str:
    typed = _typed(field, value)
    if typed is None:  # a non-finite number: nothing stored can equal it
        return NEVER
    key, stored = typed
    return f'{MATCH_FIELD}["{key}"] == {_literal(stored)}'


def _condition(field: str, cond: Any) -> str:
    if not isinstance(cond, dict):
        return _equals(field, cond)
    parts = []
    if "eq" in cond:
        parts.append(_equals(field, cond["eq"]))
    if "in" in cond:
        parts.append("(" + " or ".join(_equals(field, option) for option in cond["in"]) + ")")
    for op in RANGE_OPS:
        if op in cond:
            parts.append(_range(f'{MATCH_FIELD}["n{_digest(field)}"]', op, float(cond[op])))
    return " and ".join(parts)


def _range(key: str, op: str, bound: float) -> str:
    if math.isnan(bound):
        return NEVER
    if math.isinf(bound):  # stored numbers are finite: the bound either admits every number or none
        admits_all = (bound > 0) == (op in ("lt", "lte"))
        return f"{key} >= {-_MAX_FLOAT!r}" if admits_all else NEVER
    return f"{key} {_SYMBOLS[op]} {bound!r}"


def to_expression(spec: Mapping[str, Any] | None) -> str | None:
    """The Milvus expression for a filter, or None for no filter; a malformed filter raises the same 422 as
    filters.py."""
    if compile_filter(spec) is None:  # validates; the predicate itself is not needed
        return None
    assert spec is not None
    return " and ".join(f"({_condition(str(field), cond)})" for field, cond in spec.items())
