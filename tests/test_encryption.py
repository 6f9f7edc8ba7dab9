"""Encryption at rest (issue 10): AES-256-GCM sealed payloads bound to their item, key rotation,
and everything that must not open (moved, tampered, truncated, unknown key, plaintext) treated
as no session and logged; the size guard counts the sealed item. On a real server, and the same
on `MemoryStore`."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from support import (
    LOGGER,
    SECRET,
    T0,
    Clock,
    assert_no_leaks,
    cookie_of,
    fetch,
    item_of,
    middleware,
    scan_all,
    sid,
)
from test_codec import same

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    MemoryStore,
    Record,
    SessionMiddleware,
    SessionTooLarge,
    codec,
)
from asgi_dynamo_session._seal import key_id

pytestmark = pytest.mark.usefixtures("library_logs")

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K3 = os.urandom(32)
MARKER = "MARKER-7f3a-do-not-leak"

Factory = Callable[..., DynamoDBStore]


@pytest.fixture
async def stores(raw: Any, table_name: str, clock: Clock) -> AsyncIterator[Factory]:
    """Stores on one fresh table, each with its own options (keys, accept_plaintext, ...)."""
    props = DynamoDBStoreProps(table_name=table_name)
    await DynamoDBStore(raw, props).create_table()

    def make(**options: Any) -> DynamoDBStore:
        return DynamoDBStore(raw, props, clock=clock, **options)

    yield make
    await raw.delete_table(TableName=table_name)


def recorder(seen: list[dict[str, Any]], change: dict[str, Any] | None = None) -> Any:
    """An ASGI app that records the session as it finds it, then applies `change`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        seen.append(dict(session.items()))
        if change:
            session.update(change)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def create(store: Any, clock: Clock, data: dict[str, Any]) -> str:
    """A new session holding `data`, through the middleware; its signed cookie value."""
    return cookie_of(await fetch(middleware(recorder([], data), store, clock=clock)))


async def load(store: Any, clock: Clock, cookie: str) -> dict[str, Any] | None:
    """What the app sees for `cookie` (None: no session, a new empty one)."""
    seen: list[dict[str, Any]] = []
    ids: list[str | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope["session"].items()))
        ids.append(scope["session"].id)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    response = await fetch(middleware(app, store, clock=clock), f"id={cookie}")
    assert response.status_code == 200
    if ids[0] is None:
        assert seen[0] == {}
        return None
    return seen[0]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


async def data_attr(raw: Any, store: DynamoDBStore, cookie: str) -> bytes:
    item = await item_of(raw, store, cookie)
    assert item is not None
    return bytes(item["data"]["B"])


async def put_data(raw: Any, store: DynamoDBStore, cookie: str, payload: bytes) -> None:
    await raw.update_item(
        TableName=store.props.table_name,
        Key=store.key(sid(cookie)),
        UpdateExpression="SET #d = :d",
        ExpressionAttributeNames={"#d": store.props.data_name},
        ExpressionAttributeValues={":d": {"B": payload}},
    )


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [DynamoDBStore, MemoryStore], ids=["dynamodb", "memory"])
@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        (b"too short", ValueError, "exactly 32 bytes, got 9"),
        ([K1, b"x" * 33], ValueError, "exactly 32 bytes, got 33"),
        ("not base64 at all!", ValueError, "base64 of 32 bytes"),
        (base64.b64encode(os.urandom(16)).decode(), ValueError, "base64 of 32 bytes"),
        ("a" * 31, ValueError, "base64 of 32 bytes"),
        ([], ValueError, "at least one key"),
        ([K1, K1], ValueError, "twice"),
        ([42], TypeError, "str or bytes"),
    ],
    ids=["short", "long", "text", "16-bytes", "31-chars", "empty", "duplicate", "int"],
)
def test_bad_keys_are_refused_at_construction_with_a_hint(
    make: Any, keys: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        make(encryption_keys=keys)
    if error is ValueError:
        assert "secrets.token_bytes(32)" in str(caught.value)


def test_keys_may_be_given_as_base64_text() -> None:
    text = base64.urlsafe_b64encode(K1).decode()
    for given in (text, text.rstrip("="), base64.b64encode(K1).decode(), [text, K2]):
        store = MemoryStore(encryption_keys=given)
        sealed = store._framing.dump(b"\x80", lambda: b"ctx")
        assert sealed[1:5] == key_id(K1)
    # Text that is not base64 of 32 bytes is taken as its UTF-8 bytes, when there are 32.
    chars = "0123456789abcdefghijklmnopqrstuv"
    sealed = MemoryStore(encryption_keys=chars)._framing.dump(b"\x80", lambda: b"ctx")
    assert sealed[1:5] == key_id(chars.encode())


# --- what is stored ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 50_000], ids=["small", "compressed"])
async def test_a_marker_in_the_data_is_absent_from_a_raw_scan(
    stores: Factory, raw: Any, clock: Clock, size: int
) -> None:
    store = stores(encryption_keys=[K1])
    data = {"secret": MARKER, "when": datetime(2027, 1, 1), "pad": MARKER * (size // 20)}
    cookie = await create(store, clock, data)
    items = await scan_all(raw, store.props.table_name)
    assert len(items) == 1
    (item,) = items
    raw_text = repr(items).encode()
    assert MARKER.encode() not in raw_text
    assert MARKER.encode() not in bytes(item["data"]["B"])
    payload = bytes(item["data"]["B"])
    assert payload[0] == (codec.SEALED_ZLIB if size else codec.SEALED)
    assert payload[1:5] == key_id(K1)
    same(data, await load(store, clock, cookie))


async def test_each_write_has_a_fresh_nonce(stores: Factory, raw: Any, clock: Clock) -> None:
    store = stores(encryption_keys=[K1])
    cookie = await create(store, clock, {"n": 1})
    first = await data_attr(raw, store, cookie)
    await fetch(middleware(recorder([], {"n": 2}), store, clock=clock), f"id={cookie}")
    await fetch(middleware(recorder([], {"n": 1}), store, clock=clock), f"id={cookie}")
    third = await data_attr(raw, store, cookie)  # the same data as the first write
    assert first[5:17] != third[5:17]
    assert first != third


async def test_typed_values_round_trip_sealed(stores: Factory, clock: Clock) -> None:
    store = stores(encryption_keys=[K1])
    data = {"price": Decimal("1.50"), "tags": {"a"}, "pair": (1, 2), "at": datetime(2027, 1, 1)}
    cookie = await create(store, clock, data)
    same(data, await load(store, clock, cookie))


# --- rotation ---------------------------------------------------------------------------------


async def test_rotation_new_key_seals_old_key_opens_removed_key_ends(
    stores: Factory, raw: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    before = stores(encryption_keys=[K1])
    old = await create(before, clock, {"who": "old"})
    changed = await create(before, clock, {"who": "changed"})

    rotated = stores(encryption_keys=[K2, K1])  # deploy the new key first in the list
    assert await load(rotated, clock, old) == {"who": "old"}  # the old key still opens
    new = await create(rotated, clock, {"who": "new"})
    assert (await data_attr(raw, rotated, new))[1:5] == key_id(K2)  # the new key seals
    await fetch(middleware(recorder([], {"seen": 1}), rotated, clock=clock), f"id={changed}")
    assert (await data_attr(raw, rotated, changed))[1:5] == key_id(K2)  # re-sealed on write
    assert (await data_attr(raw, rotated, old))[1:5] == key_id(K1)  # untouched: still old

    retired = stores(encryption_keys=[K2])  # the old key removed
    assert await load(retired, clock, new) == {"who": "new"}
    assert await load(retired, clock, changed) == {"who": "changed", "seen": 1}
    assert await load(retired, clock, old) is None  # sealed with K1 only: ended
    assert any("not configured" in m and key_id(K1).hex() in m for m in warnings(caplog))
    assert_no_leaks(caplog, old, new, changed)


# --- what must not open -----------------------------------------------------------------------


async def test_a_data_attribute_copied_to_another_item_does_not_open(
    stores: Factory, raw: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(encryption_keys=[K1])
    alice = await create(store, clock, {"user": "alice", "admin": True})
    mallory = await create(store, clock, {"user": "mallory"})
    await put_data(raw, store, mallory, await data_attr(raw, store, alice))
    assert await load(store, clock, mallory) is None
    assert any("does not open" in m for m in warnings(caplog))
    assert await load(store, clock, alice) == {"user": "alice", "admin": True}
    assert_no_leaks(caplog, alice, mallory)


def _flip_last(p: bytes) -> bytes:
    return p[:-1] + bytes((p[-1] ^ 1,))


def _flip_ciphertext(p: bytes) -> bytes:
    return p[:17] + bytes((p[17] ^ 0x80,)) + p[18:]


def _other_format(p: bytes) -> bytes:
    return bytes((codec.SEALED_ZLIB,)) + p[1:]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_flip_ciphertext, "does not open"),
        (_flip_last, "does not open"),  # the tag
        (lambda p: p[:1] + p[1:5] + bytes(12) + p[17:], "does not open"),  # another nonce
        (lambda p: p[: 1 + 4 + 6], "truncated"),  # the nonce cut short
        (lambda p: p[:1] + os.urandom(4) + p[5:], "not configured"),  # wrong key id
        (lambda p: p[:1] + key_id(K3) + p[5:], "not configured"),
        (_other_format, "does not open"),  # the format byte is authenticated too
        (lambda p: bytes((0x13,)) + p[1:], "format byte 0x13"),
    ],
    ids=[
        "ciphertext",
        "tag",
        "nonce",
        "truncated-nonce",
        "random-key-id",
        "unknown-key-id",
        "format-byte",
        "unknown-format",
    ],
)
async def test_a_tampered_payload_is_no_session(
    stores: Factory,
    raw: Any,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[bytes], bytes],
    reason: str,
) -> None:
    store = stores(encryption_keys=[K1])
    cookie = await create(store, clock, {"user": "alice"})
    await put_data(raw, store, cookie, tamper(await data_attr(raw, store, cookie)))
    assert await load(store, clock, cookie) is None
    assert any(reason in m for m in warnings(caplog)), warnings(caplog)
    assert_no_leaks(caplog, cookie)


async def test_a_plaintext_item_is_no_session_while_keys_are_set(
    stores: Factory, raw: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    plain = stores()
    cookie = await create(plain, clock, {"user": "alice"})
    assert (await data_attr(raw, plain, cookie))[0] == codec.PLAIN
    sealed = stores(encryption_keys=[K1])
    assert await load(sealed, clock, cookie) is None  # no silent fallback to plaintext
    assert any("plaintext" in m for m in warnings(caplog))


async def test_accept_plaintext_migrates_items_as_they_are_written(
    stores: Factory, raw: Any, clock: Clock
) -> None:
    plain = stores(compress_above=100)
    small = await create(plain, clock, {"user": "alice"})
    large = await create(plain, clock, {"user": "bob", "pad": "z" * 5000})
    assert (await data_attr(raw, plain, large))[0] == codec.ZLIB

    migrating = stores(encryption_keys=[K1], accept_plaintext=True, compress_above=100)
    assert await load(migrating, clock, small) == {"user": "alice"}
    assert (await load(migrating, clock, large) or {}).get("user") == "bob"
    await fetch(middleware(recorder([], {"n": 1}), migrating, clock=clock), f"id={small}")
    assert (await data_attr(raw, migrating, small))[0] == codec.SEALED  # sealed on write
    assert (await data_attr(raw, migrating, large))[0] == codec.ZLIB  # not written yet

    done = stores(encryption_keys=[K1], compress_above=100)  # the migration window closed
    assert await load(done, clock, small) == {"user": "alice", "n": 1}
    assert await load(done, clock, large) is None


async def test_a_sealed_item_is_no_session_for_a_store_without_keys(
    stores: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cookie = await create(stores(encryption_keys=[K1]), clock, {"user": "alice"})
    assert await load(stores(), clock, cookie) is None
    assert any("no encryption_keys" in m for m in warnings(caplog))


# --- the size guard ---------------------------------------------------------------------------


def _record(data: dict[str, Any]) -> Record:
    return Record(
        id="s" * 43,
        data=data,
        expiry_date=datetime.fromtimestamp(T0 + 3600, timezone.utc),
        created_at=datetime.fromtimestamp(T0, timezone.utc),
    )


async def _size(store: DynamoDBStore, data: dict[str, Any]) -> int:
    with pytest.raises(SessionTooLarge) as refused:
        await store.create(_record(data))
    return refused.value.size


async def test_the_size_guard_counts_the_sealed_item(
    stores: Factory, raw: Any, clock: Clock
) -> None:
    data = {"v": os.urandom(1500)}
    plain_size = await _size(stores(max_item_size=1), data)
    sealed_size = await _size(stores(max_item_size=1, encryption_keys=[K1]), data)
    assert sealed_size == plain_size + 4 + 12 + 16  # key id, nonce and tag
    limit = sealed_size - 1
    with pytest.raises(SessionTooLarge) as refused:
        await stores(max_item_size=limit, encryption_keys=[K1]).create(_record(data))
    assert (refused.value.size, refused.value.limit) == (sealed_size, limit)
    assert f"{sealed_size} bytes" in str(refused.value)
    assert await scan_all(raw, stores().props.table_name) == []
    await stores(max_item_size=limit).create(_record(data))  # unsealed, it fits


# --- MemoryStore ------------------------------------------------------------------------------


async def test_memory_store_seals_rotates_and_refuses_the_same(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore(clock=clock, encryption_keys=[K1])
    cookie = await create(store, clock, {"secret": MARKER})
    (entry,) = store._items.values()
    assert entry.payload[0] == codec.SEALED and MARKER.encode() not in entry.payload
    assert await load(store, clock, cookie) == {"secret": MARKER}

    # Rotation, on the same entries.
    store._framing = MemoryStore(encryption_keys=[K2, K1])._framing
    assert await load(store, clock, cookie) == {"secret": MARKER}
    store._framing = MemoryStore(encryption_keys=[K2])._framing
    assert await load(store, clock, cookie) is None
    assert any("not configured" in m for m in warnings(caplog))

    # Moved to another id: does not open.
    store._framing = MemoryStore(encryption_keys=[K1])._framing
    other = await create(store, clock, {"user": "mallory"})
    store._items[sid(other)].payload = store._items[sid(cookie)].payload
    assert await load(store, clock, other) is None
    assert any("does not open" in m for m in warnings(caplog))

    # Plaintext with keys set.
    plain = MemoryStore(clock=clock)
    text = await create(plain, clock, {"user": "carol"})
    plain._framing = MemoryStore(encryption_keys=[K1])._framing
    assert await load(plain, clock, text) is None
    plain._framing = MemoryStore(encryption_keys=[K1], accept_plaintext=True)._framing
    assert await load(plain, clock, text) == {"user": "carol"}


async def test_sealed_sessions_through_the_middleware_with_types(
    stores: Factory, clock: Clock
) -> None:
    from test_types import LINE, TYPES

    store = stores(encryption_keys=[K1])
    seen: list[dict[str, Any]] = []
    first = await fetch(
        SessionMiddleware(
            recorder(seen, {"line": LINE}),
            store=store,
            secret_keys=SECRET,
            types=TYPES,
            clock=clock,
        )
    )
    await fetch(
        SessionMiddleware(
            recorder(seen), store=store, secret_keys=SECRET, types=TYPES, clock=clock
        ),
        f"id={cookie_of(first)}",
    )
    same({"line": LINE}, seen[1])


async def test_the_readme_example_of_encryption_at_rest_runs(clock: Clock) -> None:
    from test_types import readme_snippet

    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet("encryption_keys=[new_key, old_key]"), "README", "exec"), namespace)
    store = namespace["tests_store"]
    cookie = await create(store, clock, {"secret": MARKER})
    (entry,) = store._items.values()
    assert entry.payload[0] == codec.SEALED and MARKER.encode() not in entry.payload
    assert await load(store, clock, cookie) == {"secret": MARKER}
    assert namespace["store"]._framing.sealer is not None
