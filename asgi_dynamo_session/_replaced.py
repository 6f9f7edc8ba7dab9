"""What an app put in ``scope["session"]`` in place of the `Session` (Litestar's ``set_session``).

A mapping becomes the data; a dataclass, msgspec Struct, attrs class or pydantic model becomes its
fields, as `msgspec.to_builtins` gives them (what Litestar's own session backends store); None,
an empty mapping, Litestar's ``Empty`` and anything else that is not data empty the session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import msgspec


def replacement_data(value: Any) -> dict[str, Any]:
    """The session data `value` stands for; TypeError when its fields are not a mapping."""
    if isinstance(value, Mapping):
        return dict(value.items())
    if isinstance(value, msgspec.Struct) or _is_dataclass_instance(value):
        data = msgspec.to_builtins(value)
    elif callable(getattr(value, "model_dump", None)):  # pydantic 2
        data = msgspec.to_builtins(value.model_dump())
    elif hasattr(type(value), "__attrs_attrs__"):
        data = msgspec.to_builtins(value)
    else:  # None, Litestar's Empty, or anything else that is not session data
        return {}
    if not isinstance(data, dict):  # e.g. an array_like Struct
        raise TypeError(
            f"scope['session'] was set to a {type(value).__name__} that does not encode as a "
            f"mapping of fields (it gives a {type(data).__name__})"
        )
    return data


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)
