"""Metadata filters: `{"label": "cat", "tag": {"in": ["a", "b"]}, "year": {"gte": 2020, "lt": 2025}}`.

All conditions must hold (AND). A point without the field never matches.
Equality is strict about types: `true` does not equal `1`, `"1"` does not
equal `1`; range operators only match numbers (not booleans).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from service.errors import ErrorCode, UnprocessableInput

RANGE_OPS = ("gt", "gte", "lt", "lte")
OPS = ("eq", "in", *RANGE_OPS)
Scalar = str | int | float | bool
Predicate = Callable[[Mapping[str, Any]], bool]


def _invalid(message: str, field: str) -> UnprocessableInput:
    return UnprocessableInput(message, {"field": field}, code=ErrorCode.INVALID_FILTER)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _check_scalar(value: Any, field: str) -> None:
    if not isinstance(value, Scalar) and value is not None:
        raise _invalid(f"filter value for {field!r} must be a string, number, boolean or null", field)


def _field_predicate(field: str, cond: Any) -> Predicate:
    if not isinstance(cond, dict):
        _check_scalar(cond, field)
        return lambda meta: field in meta and _same(meta[field], cond)
    if not cond:
        raise _invalid(f"filter for {field!r} is an empty object", field)
    unknown = sorted(set(cond) - set(OPS))
    if unknown:
        raise _invalid(f"unknown filter operator(s) {unknown} for {field!r}; known: {list(OPS)}", field)
    checks: list[Predicate] = []
    if "eq" in cond:
        _check_scalar(cond["eq"], field)
        value = cond["eq"]
        checks.append(lambda meta: _same(meta[field], value))
    if "in" in cond:
        options = cond["in"]
        if not isinstance(options, list) or not options:
            raise _invalid(f"'in' for {field!r} needs a non-empty list", field)
        for option in options:
            _check_scalar(option, field)
        hashable = {(type(o) if isinstance(o, bool) or not _is_number(o) else float, o) for o in options}
        checks.append(
            lambda meta: (type(v) if isinstance(v := meta[field], bool) or not _is_number(v) else float, v) in hashable
            if isinstance(meta[field], Scalar) else False
        )
    for op in RANGE_OPS:
        if op in cond:
            bound = cond[op]
            if not _is_number(bound):
                raise _invalid(f"{op!r} for {field!r} needs a number", field)
            checks.append(_range(field, op, bound))
    return lambda meta: field in meta and all(check(meta) for check in checks)


def _range(field: str, op: str, bound: float) -> Predicate:
    compare = {
        "gt": lambda v: v > bound, "gte": lambda v: v >= bound, "lt": lambda v: v < bound, "lte": lambda v: v <= bound,
    }[op]
    return lambda meta: _is_number(meta[field]) and compare(meta[field])


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate | None:
    """A predicate over one point's metadata, or None for no filter; raises 422 on a malformed filter."""
    if not spec:
        return None
    if not isinstance(spec, Mapping):
        raise _invalid("a filter is an object of field conditions", "")
    predicates = [_field_predicate(str(field), cond) for field, cond in spec.items()]
    return lambda meta: all(p(meta) for p in predicates)
