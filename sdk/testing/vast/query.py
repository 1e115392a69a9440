"""The server side of Vast's search filters: ``{field: {op: value}}`` plus ``order``/``limit``.

Like the real API: numbers may arrive as strings (the CLI sends ``{"eq": "1"}``), GPU names
match exactly (spaces, no underscore rewriting), unknown fields are a 400.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "notin", "nin")
CONTROL_KEYS = ("order", "limit", "allocated_storage", "type", "disable_bundling")
OFFER_TYPES = ("on-demand", "ondemand", "bid", "interruptible", "reserved")


class QueryError(ValueError):
    """A filter the API would reject with 400."""


def _coerce(value: Any, like: Any) -> Any:
    """``value`` (from the query) in the type of ``like`` (from the row)."""
    if isinstance(like, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(like, int | float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise QueryError(f"{value!r} is not a number") from None
    return value if isinstance(value, str) else str(value)


def _test(row_value: Any, op: str, value: Any) -> bool:
    if op in ("in", "notin", "nin"):
        items = value if isinstance(value, list) else [value]
        hit = row_value is not None and any(row_value == _coerce(v, row_value) for v in items)
        return hit if op == "in" else not hit
    if row_value is None:
        return op == "neq"
    v = _coerce(value, row_value)
    return {"eq": row_value == v, "neq": row_value != v, "gt": row_value > v, "gte": row_value >= v,
            "lt": row_value < v, "lte": row_value <= v}[op]


def matches(row: Mapping[str, Any], filters: Mapping[str, Any], *, fields: Iterable[str]) -> bool:
    """Whether ``row`` passes every ``{field: {op: value}}`` filter."""
    known = set(fields)
    for field, cond in filters.items():
        if field not in known:
            raise QueryError(f"{field} is not a valid search key")
        if not isinstance(cond, Mapping):
            cond = {"eq": cond}
        for op, value in cond.items():
            if op not in OPS:
                raise QueryError(f"unknown operator {op!r} for {field}")
            if value is None and op in ("eq", "neq"):
                if (row.get(field) is None) != (op == "eq"):
                    return False
                continue
            try:
                if not _test(row.get(field), op, value):
                    return False
            except TypeError:
                return False
    return True


def order_rows(rows: list[dict[str, Any]], order: Any) -> list[dict[str, Any]]:
    """Sort by ``[[field, "asc"|"desc"], ...]`` (the first key most significant; nulls last)."""
    if not order:
        return rows
    if isinstance(order, Mapping) or (isinstance(order, list) and order and isinstance(order[0], str)):
        order = [order]
    for item in reversed(list(order)):
        if isinstance(item, Mapping):
            field, direction = str(item.get("col")), item.get("dir", "asc")
        else:
            field, direction = item[0], (item[1] if len(item) > 1 else "asc")
        desc = str(direction).lower().startswith("desc")
        present = [r for r in rows if r.get(field) is not None]
        missing = [r for r in rows if r.get(field) is None]
        present.sort(key=lambda r: r[field], reverse=desc)
        rows = present + missing
    return rows
