"""Session payload encoding: one format byte, then MessagePack (zlib-compressed above a threshold).

Format bytes: 0x01 plain MessagePack, 0x02 zlib-compressed MessagePack. Unknown bytes are refused,
so a future format never gets misread as this one.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

PLAIN = 0x01
ZLIB = 0x02

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def pack(data: dict[str, Any]) -> bytes:
    """MessagePack bytes of `data`; a value msgspec cannot encode is a TypeError naming its key."""
    try:
        packed = _encoder.encode(data)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise _explain(data, exc) from exc
    # MessagePack takes any map key, but `unpack` (and every later load) needs str keys.
    if not all(isinstance(key, str) for key in dict.keys(data)):
        raise _explain(data, TypeError("session keys must be str"))
    return packed


def _explain(data: dict[str, Any], exc: Exception) -> TypeError:
    for key, value in data.items():
        if not isinstance(key, str):
            return TypeError(f"session keys must be str, got {key!r}")
        try:
            _encoder.encode(value)
        except (TypeError, msgspec.EncodeError, OverflowError) as inner:
            return TypeError(
                f"session value for key {key!r} cannot be stored ({type(value).__name__}): {inner}"
            )
    return TypeError(f"session data cannot be stored: {exc}")


def encode(packed: bytes, compress_above: int | None) -> bytes:
    """The stored payload for already-packed data, compressed when that pays."""
    if compress_above is not None and len(packed) > compress_above:
        squeezed = zlib.compress(packed, 6)
        if len(squeezed) < len(packed):
            return bytes((ZLIB,)) + squeezed
    return bytes((PLAIN,)) + packed


def decode(payload: bytes) -> bytes:
    """The packed data inside a stored payload; ValueError for an unknown format or bad bytes."""
    if not payload:
        raise ValueError("empty session payload")
    fmt = payload[0]
    if fmt == PLAIN:
        return payload[1:]
    if fmt == ZLIB:
        try:
            return zlib.decompress(memoryview(payload)[1:])
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed session payload: {exc}") from exc
    raise ValueError(f"unknown session payload format byte {fmt:#04x}")


def unpack(packed: bytes) -> dict[str, Any]:
    """The session data from MessagePack bytes made by `pack`."""
    try:
        return _decoder.decode(packed)
    except msgspec.DecodeError as exc:
        raise ValueError(f"corrupt session payload: {exc}") from exc
