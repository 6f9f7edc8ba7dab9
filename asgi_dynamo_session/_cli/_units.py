"""Item sizes and the capacity units DynamoDB bills for them (1 KB writes, 4 KB reads)."""

from __future__ import annotations

import math
from typing import Any

from ..dynamodb import _number_size, _value_size

WRITE_UNIT = 1024
READ_UNIT = 4096


def value_bytes(value: dict[str, Any]) -> int:
    ((kind, body),) = value.items()
    if kind == "SS":
        return sum(len(s.encode()) for s in body)
    if kind == "BS":
        return sum(len(b) for b in body)
    if kind == "NS":
        return sum(_number_size(n) for n in body)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_bytes(v) for k, v in body.items())
    if kind == "L":
        return 3 + sum(1 + value_bytes(v) for v in body)
    return _value_size(value)


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Write request units for writing (or deleting) an item of `size` bytes."""
    return max(1, math.ceil(size / WRITE_UNIT))


def read_units(size: int, consistent: bool = True) -> float:
    """Read request units for reading an item of `size` bytes (half when eventually consistent)."""
    units = max(1, math.ceil(size / READ_UNIT))
    return float(units) if consistent else units / 2
