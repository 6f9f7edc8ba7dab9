"""The session payload codec: MessagePack of the allowed types, the format byte, compression,
errors that name the culprit; and the same round trip through the middleware and DynamoDB."""

from __future__ import annotations

import os
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from support import (
    Clock,
    CountingStore,
    app_doing,
    cookie_of,
    fetch,
    key_of,
    middleware,
    read_item,
    scan_all,
    sid,
    signed,
)

from asgi_dynamo_session import Session, codec

UTC = timezone.utc

ALLOWED: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative": -7,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "float": 1.5,
    "whole_float": 2.0,
    "tiny_float": 5e-324,
    "str": "h\u00e9llo \u2603 \U0001f600",
    "empty_str": "",
    "bytes": bytes(range(256)),
    "empty_bytes": b"",
    "list": [1, "a", None, 2.5, b"\x00", [True]],
    "empty_list": [],
    "dict": {"nested": {"deep": [1.0, {"k": "v"}]}},
    "empty_dict": {},
    "datetime": datetime(2027, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "datetime_offset": datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
    "datetime_list": [datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)],
}


def same_types(a: Any, b: Any, where: str = "") -> None:
    """Equal values of exactly the same types, recursively (True is not 1, 2.0 is not 2)."""
    assert type(a) is type(b), (where, a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same_types(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_types(x, y, f"{where}[{i}]")
    elif isinstance(a, datetime):
        assert a == b and b.tzinfo is not None and b.utcoffset() is not None, where
    else:
        assert a == b, where


# --- the codec --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(ALLOWED))
def test_every_allowed_type_round_trips(key: str) -> None:
    data = {key: ALLOWED[key]}
    for threshold in (None, 0):
        payload = codec.encode(codec.pack(data), threshold)
        assert payload[0] in (codec.PLAIN, codec.ZLIB)
        same_types(data, codec.unpack(codec.decode(payload)))


def test_all_allowed_types_together_round_trip() -> None:
    payload = codec.encode(codec.pack(ALLOWED), None)
    assert payload[0] == 0x01
    assert payload[1:] == msgspec.msgpack.encode(ALLOWED)  # plain MessagePack after the byte
    same_types(ALLOWED, codec.unpack(codec.decode(payload)))


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        (complex(1, 2), "complex"),
        (2**64, "int"),
        (-(2**63) - 1, "int"),
        ([1, object()], "list"),
        ({"inner": lambda: None}, "dict"),
    ],
    ids=["object", "complex", "too-big", "too-small", "in-list", "in-dict"],
)
def test_value_that_cannot_be_encoded_is_a_type_error_naming_the_key(
    value: Any, type_name: str
) -> None:
    with pytest.raises(TypeError) as caught:
        codec.pack({"fine": 1, "culprit": value, "also_fine": "x"})
    message = str(caught.value)
    assert "'culprit'" in message
    assert type_name in message
    assert "'fine'" not in message


def test_non_string_key_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        codec.pack({1: "one"})  # type: ignore[dict-item]


@pytest.mark.parametrize("byte", [0x00, 0x03, 0x7F, 0x80, 0xFF])
def test_unknown_format_byte_is_a_value_error(byte: int) -> None:
    with pytest.raises(ValueError, match="format"):
        codec.decode(bytes((byte,)) + codec.pack({"a": 1}))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x02not zlib", b"\x02" + zlib.compress(b"\xc1")],
    ids=["empty", "bad-zlib", "bad-msgpack"],
)
def test_corrupt_payload_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        codec.unpack(codec.decode(payload))


def test_payload_that_is_not_a_map_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        codec.unpack(msgspec.msgpack.encode([1, 2]))


def test_compression_flag_above_the_threshold() -> None:
    packed = codec.pack({"text": "session data " * 200})
    compressed = codec.encode(packed, len(packed) - 1)
    assert compressed[0] == 0x02
    assert zlib.decompress(compressed[1:]) == packed
    assert len(compressed) < len(packed)
    assert codec.decode(compressed) == packed
    # At or under the threshold, or with compression off: plain.
    assert codec.encode(packed, len(packed)) == b"\x01" + packed
    assert codec.encode(packed, None) == b"\x01" + packed


def test_incompressible_data_stays_plain() -> None:
    packed = codec.pack({"noise": os.urandom(4096)})
    assert codec.encode(packed, 16) == b"\x01" + packed


# --- through the middleware and DynamoDB ------------------------------------------------------


@pytest.mark.parametrize("size", [0, 20_000], ids=["plain", "compressed"])
async def test_allowed_types_round_trip_through_dynamodb(
    counting_store: CountingStore, raw: Any, clock: Clock, size: int
) -> None:
    data = {**ALLOWED, "padding": "p" * size}
    response = await fetch(
        middleware(app_doing(lambda s: s.update(data)), counting_store, clock=clock)
    )
    session_id = sid(cookie_of(response))
    item = await read_item(raw, counting_store.inner.props.table_name, key_of(session_id))
    assert item is not None
    payload = item["data"]["B"]
    assert payload[0] == (0x02 if size else 0x01)

    seen: list[dict[str, Any]] = []
    await fetch(
        middleware(app_doing(lambda s: seen.append(dict(s.items()))), counting_store, clock=clock),
        f"id={signed(session_id)}",
    )
    (loaded,) = seen
    same_types(data, loaded)
    # Reading every value back is not a change: nothing was written.
    assert counting_store.calls == {"create": 1, "load": 1}


async def test_explicit_save_of_an_unencodable_value_names_the_key(
    counting_store: CountingStore, raw: Any, clock: Clock
) -> None:
    errors: list[str] = []

    async def action(session: Session) -> None:
        session["ok"] = 1
        session["bad"] = {1, 2j}
        try:
            await session.save()
        except TypeError as exc:
            errors.append(str(exc))
        del session["bad"]

    response = await fetch(middleware(app_doing(action), counting_store, clock=clock))
    assert len(errors) == 1 and "'bad'" in errors[0]
    # The app recovered by removing the value; the session is then stored without it.
    session_id = sid(cookie_of(response))
    item = await read_item(raw, counting_store.inner.props.table_name, key_of(session_id))
    assert item is not None
    assert codec.unpack(codec.decode(item["data"]["B"])) == {"ok": 1}


@pytest.mark.parametrize(
    "change",
    [{"bad": object()}, {1: "int key"}, {"nested": {"bad": {1, 2j}}}],
    ids=["object", "int-key", "nested"],
)
async def test_unencodable_value_at_response_time_stores_nothing(
    counting_store: CountingStore, raw: Any, clock: Clock, change: dict[Any, Any]
) -> None:
    response = await fetch(
        middleware(app_doing(lambda s: s.update(change)), counting_store, clock=clock)
    )
    assert response.status_code >= 500
    assert response.headers.get_list("set-cookie") == []
    assert counting_store.calls == {}
    assert await scan_all(raw, counting_store.inner.props.table_name) == []
