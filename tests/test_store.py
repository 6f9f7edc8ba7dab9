"""DynamoDBStore on a real server, on both data-plane transports: item layout, conditional writes,
expiry, maintenance. Items are checked with a plain aiobotocore get_item/scan."""

from __future__ import annotations

import secrets
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
import pytest
from support import (
    PK,
    PREFIX,
    Clock,
    at,
    dynamo_store,
    hashed,
    key_of,
    plain_data_of,
    read_item,
    scan_all,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreKey,
    DynamoDBStoreProps,
    Record,
    SessionConflict,
    SessionStore,
    StoreError,
)

# --- fixtures ---------------------------------------------------------------------------------


class Maker:
    """Builds stores on the shared client with the test's transport and clock; drops tables."""

    def __init__(self, raw: Any, transport: str, clock: Clock) -> None:
        self.raw = raw
        self.transport = transport
        self.clock = clock
        self.stores: list[DynamoDBStore] = []

    async def __call__(self, props: DynamoDBStoreProps, **options: Any) -> DynamoDBStore:
        store = DynamoDBStore(
            self.raw, props, transport=self.transport, clock=self.clock, **options
        )
        await store.create_table()
        self.stores.append(store)
        return store

    async def close(self) -> None:
        for store in self.stores:
            await store.close()
            await self.raw.delete_table(TableName=store.props.table_name)


@pytest.fixture
async def make(raw: Any, transport: str, clock: Clock) -> AsyncIterator[Maker]:
    maker = Maker(raw, transport, clock)
    yield maker
    await maker.close()


@pytest.fixture
async def store(make: Maker, table_name: str) -> DynamoDBStore:
    return await make(DynamoDBStoreProps(table_name=table_name))


def record(
    clock: Clock, data: dict[str, Any], *, sid: str | None = None, ttl: int = 3600
) -> Record:
    return Record(
        id=sid or secrets.token_urlsafe(32),
        data=data,
        expiry_date=at(clock.now + ttl),
        created_at=at(clock.now),
    )


async def item(raw: Any, store: DynamoDBStore, sid: str) -> dict[str, Any] | None:
    return await read_item(raw, store.props.table_name, store.key(sid))


# --- layout -----------------------------------------------------------------------------------


async def test_create_writes_the_documented_item(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = record(clock, {"user": "ada", "n": 1})
    await store.create(rec)
    assert rec.version == 1
    stored = await read_item(raw, store.props.table_name, key_of(rec.id))
    assert stored is not None
    assert stored[PK] == {"S": PREFIX + hashed(rec.id)}
    assert stored["expire_at"] == {"N": str(int(clock.now) + 3600)}
    assert stored["version"] == {"N": "1"}
    assert plain_data_of(stored) == {"user": "ada", "n": 1}
    assert rec.id not in str(stored)  # hashed at rest: the raw id is nowhere in the item
    assert isinstance(store, SessionStore)


async def test_load_round_trips_the_record(store: DynamoDBStore, clock: Clock) -> None:
    rec = record(clock, {"user": "ada", "tags": ["a", "b"], "n": 1.5})
    await store.create(rec)
    loaded = await store.load(rec.id)
    assert loaded is not None
    assert (loaded.id, loaded.data, loaded.version) == (rec.id, rec.data, 1)
    assert loaded.expiry_date == rec.expiry_date
    assert loaded.created_at == rec.created_at
    assert await store.load(secrets.token_urlsafe(32)) is None


async def test_prefix_and_suffix_on_the_partition_key(
    make: Maker, raw: Any, table_name: str, clock: Clock
) -> None:
    props = DynamoDBStoreProps(
        table_name=table_name,
        partition_key=DynamoDBStoreKey(name="pk", prefix="app::", suffix="::v1"),
    )
    store = await make(props)
    rec = record(clock, {"user": "ada"})
    await store.create(rec)
    stored = await read_item(raw, table_name, {"pk": {"S": f"app::{hashed(rec.id)}::v1"}})
    assert stored is not None and plain_data_of(stored) == {"user": "ada"}
    assert [i["pk"]["S"] for i in await scan_all(raw, table_name)] == [f"app::{hashed(rec.id)}::v1"]
    loaded = await store.load(rec.id)
    assert loaded is not None and loaded.data == {"user": "ada"}


async def test_sort_key_table(make: Maker, raw: Any, table_name: str, clock: Clock) -> None:
    props = DynamoDBStoreProps(
        table_name=f"MyTowerSessions_{table_name}",
        partition_key=DynamoDBStoreKey(name="session_id", prefix="SESSIONS::TOWER::"),
        sort_key=DynamoDBStoreKey(name="sort_key", prefix="TOWER_SESSIONS::"),
    )
    store = await make(props)
    table = (await raw.describe_table(TableName=props.table_name))["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "session_id", "KeyType": "HASH"},
        {"AttributeName": "sort_key", "KeyType": "RANGE"},
    ]
    assert sorted(d["AttributeType"] for d in table["AttributeDefinitions"]) == ["S", "S"]

    rec = record(clock, {"user": "ada"})
    await store.create(rec)
    key = {
        "session_id": {"S": "SESSIONS::TOWER::" + hashed(rec.id)},
        "sort_key": {"S": "TOWER_SESSIONS::" + hashed(rec.id)},
    }
    stored = await read_item(raw, props.table_name, key)
    assert stored is not None
    assert plain_data_of(stored) == {"user": "ada"}
    assert stored["version"] == {"N": "1"}

    loaded = await store.load(rec.id)
    assert loaded is not None
    loaded.data["n"] = 2
    await store.save(loaded)
    stored = await read_item(raw, props.table_name, key)
    assert stored is not None and plain_data_of(stored) == {"user": "ada", "n": 2}
    await store.touch(Record(id=rec.id, data={}, expiry_date=at(clock.now + 7200), version=2))
    stored = await read_item(raw, props.table_name, key)
    assert stored is not None and stored["expire_at"] == {"N": str(int(clock.now) + 7200)}
    await store.delete(rec.id)
    assert await read_item(raw, props.table_name, key) is None
    assert await scan_all(raw, props.table_name) == []


async def test_hash_ids_off_stores_the_raw_id(
    make: Maker, raw: Any, table_name: str, clock: Clock
) -> None:
    store = await make(DynamoDBStoreProps(table_name=table_name, hash_ids=False))
    rec = record(clock, {"user": "ada"})
    await store.create(rec)
    stored = await read_item(raw, table_name, {PK: {"S": PREFIX + rec.id}})
    assert stored is not None and plain_data_of(stored) == {"user": "ada"}
    assert await read_item(raw, table_name, key_of(rec.id)) is None
    loaded = await store.load(rec.id)
    assert loaded is not None and loaded.data == {"user": "ada"}


async def test_custom_attribute_names(make: Maker, raw: Any, table_name: str, clock: Clock) -> None:
    props = DynamoDBStoreProps(table_name=table_name, expiry_name="ttl", data_name="payload")
    store = await make(props)
    rec = record(clock, {"user": "ada"})
    await store.create(rec)
    stored = await read_item(raw, table_name, key_of(rec.id))
    assert stored is not None
    assert stored["ttl"] == {"N": str(int(clock.now) + 3600)}
    assert stored["payload"]["B"][0] == 0x01
    assert "expire_at" not in stored and "data" not in stored
    clock.advance(3600)
    assert await store.load(rec.id) is None


async def test_large_payload_is_stored_compressed(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    data = {"blob": "session " * 4000}
    rec = record(clock, data)
    await store.create(rec)
    stored = await item(raw, store, rec.id)
    assert stored is not None
    payload = stored["data"]["B"]
    assert payload[0] == 0x02
    assert len(payload) < 8 * 1024
    assert msgspec.msgpack.decode(zlib.decompress(payload[1:])) == data
    loaded = await store.load(rec.id)
    assert loaded is not None and loaded.data == data


# --- create -----------------------------------------------------------------------------------


async def test_create_picks_a_fresh_id_when_the_id_is_taken(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    first = record(clock, {"owner": "first"})
    await store.create(first)
    before = await item(raw, store, first.id)

    second = record(clock, {"owner": "second"}, sid=first.id)
    await store.create(second)
    assert second.id != first.id
    assert len(second.id) == 43
    assert second.version == 1
    assert await item(raw, store, first.id) == before  # untouched
    stored = await item(raw, store, second.id)
    assert stored is not None and plain_data_of(stored) == {"owner": "second"}
    assert len(await scan_all(raw, store.props.table_name)) == 2


async def test_create_may_reuse_the_id_of_an_expired_item(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    old = record(clock, {"owner": "old"}, ttl=60)
    await store.create(old)
    clock.advance(60)
    new = record(clock, {"owner": "new"}, sid=old.id)
    await store.create(new)
    assert new.id == old.id
    stored = await item(raw, store, old.id)
    assert stored is not None and plain_data_of(stored) == {"owner": "new"}
    assert stored["version"] == {"N": "1"}


async def test_create_gives_up_when_retries_are_exhausted(
    make: Maker, raw: Any, table_name: str, clock: Clock
) -> None:
    store = await make(DynamoDBStoreProps(table_name=table_name, create_key_max_retry_attempts=0))
    first = record(clock, {"owner": "first"})
    await store.create(first)
    before = await item(raw, store, first.id)
    with pytest.raises(StoreError, match="retr"):
        await store.create(record(clock, {"owner": "second"}, sid=first.id))
    assert await scan_all(raw, table_name) == [before]


# --- save -------------------------------------------------------------------------------------


async def test_save_bumps_the_version_and_rewrites(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = record(clock, {"n": 1})
    await store.create(rec)
    clock.advance(100)
    rec.data = {"n": 2}
    rec.expiry_date = at(clock.now + 3600)
    await store.save(rec)
    assert rec.version == 2
    stored = await item(raw, store, rec.id)
    assert stored is not None
    assert plain_data_of(stored) == {"n": 2}
    assert stored["version"] == {"N": "2"}
    assert stored["expire_at"] == {"N": str(int(clock.now) + 3600)}


async def test_save_with_a_stale_version_conflicts_with_the_current_record(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = record(clock, {"n": 1})
    await store.create(rec)
    stale = Record(id=rec.id, data={"n": "stale"}, expiry_date=rec.expiry_date, version=1)
    winner = await store.load(rec.id)
    assert winner is not None
    winner.data = {"n": 2}
    await store.save(winner)
    before = await item(raw, store, rec.id)

    with pytest.raises(SessionConflict) as caught:
        await store.save(stale)
    current = caught.value.current
    assert current is not None
    assert (current.id, current.data, current.version) == (rec.id, {"n": 2}, 2)
    assert stale.version == 1
    assert await item(raw, store, rec.id) == before


async def test_save_after_delete_conflicts_and_recreates_nothing(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = record(clock, {"n": 1})
    await store.create(rec)
    await store.delete(rec.id)
    rec.data = {"n": 2}
    with pytest.raises(SessionConflict) as caught:
        await store.save(rec)
    assert caught.value.current is None
    assert await item(raw, store, rec.id) is None
    assert await scan_all(raw, store.props.table_name) == []


async def test_save_of_an_expired_item_conflicts_and_leaves_it(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = record(clock, {"n": 1}, ttl=60)
    await store.create(rec)
    before = await item(raw, store, rec.id)
    clock.advance(61)
    rec.data = {"n": 2}
    rec.expiry_date = at(clock.now + 3600)
    with pytest.raises(SessionConflict) as caught:
        await store.save(rec)
    assert caught.value.current is None
    assert await item(raw, store, rec.id) == before


async def test_save_of_an_item_without_a_version_attribute(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    """Items written by another writer (the Rust crate keeps no counter) are saved once, from 0."""
    sid = secrets.token_urlsafe(32)
    await raw.put_item(
        TableName=store.props.table_name,
        Item={
            **key_of(sid),
            "expire_at": {"N": str(int(clock.now) + 60)},
            "data": {"B": b"\x01" + msgspec.msgpack.encode({"n": 1})},
        },
    )
    loaded = await store.load(sid)
    assert loaded is not None and (loaded.data, loaded.version) == ({"n": 1}, 0)
    loaded.data = {"n": 2}
    await store.save(loaded)
    stored = await item(raw, store, sid)
    assert stored is not None
    assert stored["version"] == {"N": "1"} and plain_data_of(stored) == {"n": 2}
    stale = Record(id=sid, data={"n": 3}, expiry_date=loaded.expiry_date, version=0)
    with pytest.raises(SessionConflict):
        await store.save(stale)


# --- load / delete / touch / take -------------------------------------------------------------


async def test_load_drops_expired_items(store: DynamoDBStore, raw: Any, clock: Clock) -> None:
    rec = record(clock, {"n": 1}, ttl=60)
    await store.create(rec)
    clock.advance(59)
    assert await store.load(rec.id) is not None
    clock.advance(1)
    assert await store.load(rec.id) is None
    assert await item(raw, store, rec.id) is not None  # still stored; only the read ignores it


@pytest.mark.parametrize("age", [0, 1, 86400 * 365])
async def test_item_put_with_a_past_expiry_is_never_returned(
    store: DynamoDBStore, raw: Any, clock: Clock, age: int
) -> None:
    sid = secrets.token_urlsafe(32)
    await raw.put_item(
        TableName=store.props.table_name,
        Item={
            **key_of(sid),
            "expire_at": {"N": str(int(clock.now) - age)},
            "data": {"B": b"\x01" + msgspec.msgpack.encode({"n": 1})},
            "version": {"N": "3"},
        },
    )
    assert await store.load(sid) is None
    with pytest.raises(SessionConflict) as caught:
        await store.touch(Record(id=sid, data={}, expiry_date=at(clock.now + 3600), version=3))
    assert caught.value.current is None
    assert await store.take(sid) is None
    rec = Record(id=sid, data={"n": 2}, expiry_date=at(clock.now + 60), version=3)
    with pytest.raises(SessionConflict) as caught:
        await store.save(rec)
    assert caught.value.current is None
    stored = await item(raw, store, sid)
    assert stored is not None and stored["expire_at"] == {"N": str(int(clock.now) - age)}


async def test_unreadable_item_is_no_session(store: DynamoDBStore, raw: Any, clock: Clock) -> None:
    sid = secrets.token_urlsafe(32)
    await raw.put_item(
        TableName=store.props.table_name,
        Item={
            **key_of(sid),
            "expire_at": {"N": str(int(clock.now) + 60)},
            "data": {"B": b"\x7f" + msgspec.msgpack.encode({"n": 1})},  # unknown format byte
        },
    )
    assert await store.load(sid) is None


async def test_delete(store: DynamoDBStore, raw: Any, clock: Clock) -> None:
    rec = record(clock, {"n": 1})
    keep = record(clock, {"n": 2})
    await store.create(rec)
    await store.create(keep)
    await store.delete(rec.id)
    assert await item(raw, store, rec.id) is None
    assert await store.load(rec.id) is None
    assert await item(raw, store, keep.id) is not None
    await store.delete(rec.id)  # deleting what is gone is fine
    await store.delete(secrets.token_urlsafe(32))


async def test_touch(store: DynamoDBStore, raw: Any, clock: Clock) -> None:
    rec = record(clock, {"n": 1}, ttl=60)
    await store.create(rec)
    clock.advance(30)
    await store.touch(touching(rec.id, at(clock.now + 3600)))
    stored = await item(raw, store, rec.id)
    assert stored is not None
    assert stored["expire_at"] == {"N": str(int(clock.now) + 3600)}
    assert stored["version"] == {"N": "1"} and plain_data_of(stored) == {"n": 1}
    loaded = await store.load(rec.id)
    assert loaded is not None and loaded.expiry_date == at(clock.now + 3600)

    missing = secrets.token_urlsafe(32)
    with pytest.raises(SessionConflict) as caught:
        await store.touch(touching(missing, at(clock.now + 3600)))
    assert caught.value.current is None
    assert await item(raw, store, missing) is None  # an update never creates an item

    # Written meanwhile (version 2): the touch is not applied, the current record is told.
    loaded = await store.load(rec.id)
    assert loaded is not None
    loaded.data["n"] = 2
    await store.save(loaded)
    before = await item(raw, store, rec.id)
    with pytest.raises(SessionConflict) as caught:
        await store.touch(touching(rec.id, at(clock.now + 7200)))
    assert caught.value.current is not None and caught.value.current.data == {"n": 2}
    assert await item(raw, store, rec.id) == before

    clock.advance(3600)
    before = await item(raw, store, rec.id)
    with pytest.raises(SessionConflict):
        await store.touch(touching(rec.id, at(clock.now + 3600), version=2))
    assert await item(raw, store, rec.id) == before


def touching(session_id: str, expiry: datetime, version: int = 1) -> Record:
    """What the middleware passes to `touch`: the id, the new expiry, the version it loaded."""
    return Record(id=session_id, data={}, expiry_date=expiry, version=version)


async def test_take(store: DynamoDBStore, raw: Any, clock: Clock) -> None:
    rec = record(clock, {"n": 1}, ttl=60)
    await store.create(rec)
    taken = await store.take(rec.id)
    assert taken is not None and (taken.id, taken.data, taken.version) == (rec.id, {"n": 1}, 1)
    ended = await item(raw, store, rec.id)  # kept, marked, with its expiry, until deleted
    assert ended is not None and "ended_by" in ended and ended["version"] == {"N": "2"}
    assert ended["expire_at"] == {"N": str(int(clock.now) + 60)}
    assert await store.load(rec.id) is None
    assert await store.take(rec.id) is None
    with pytest.raises(SessionConflict):
        await store.save(
            Record(id=rec.id, data={"n": 9}, expiry_date=at(clock.now + 60), version=2)
        )
    await store.restore(taken)  # a failed move is undone: live again
    back = await store.load(rec.id)
    assert back is not None and back.data == {"n": 1}
    await store.delete(rec.id)
    assert await item(raw, store, rec.id) is None

    expired = record(clock, {"n": 2}, ttl=60)
    await store.create(expired)
    clock.advance(60)
    assert await store.take(expired.id) is None
    assert await item(raw, store, expired.id) is not None


# --- maintenance ------------------------------------------------------------------------------


async def test_create_table(
    make: Maker, raw: Any, table_name: str, dynamodb_server: Any, transport: str
) -> None:
    store = DynamoDBStore(raw, DynamoDBStoreProps(table_name=table_name), transport=transport)
    make.stores.append(store)
    assert await store.create_table() is dynamodb_server.supports_ttl
    table = (await raw.describe_table(TableName=table_name))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "session_id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "session_id", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # Idempotent: a second call finds the table (and TTL) in place.
    assert await store.create_table() is dynamodb_server.supports_ttl


@pytest.mark.requires_ttl
async def test_create_table_enables_ttl_on_the_expiry_attribute(
    make: Maker, raw: Any, table_name: str
) -> None:
    await make(DynamoDBStoreProps(table_name=table_name, expiry_name="expire_at"))
    ttl = (await raw.describe_time_to_live(TableName=table_name))["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expire_at"}


async def test_create_table_without_ttl(make: Maker, raw: Any, table_name: str) -> None:
    store = DynamoDBStore(raw, DynamoDBStoreProps(table_name=table_name))
    make.stores.append(store)
    assert await store.create_table(enable_ttl=False) is False
    if make.transport == "aiobotocore":  # one check of the server is enough
        try:
            ttl = await raw.describe_time_to_live(TableName=table_name)
        except Exception:  # dynalite has no TTL API at all
            return
        assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


async def _put_expired(raw: Any, table: str, keys: list[dict[str, Any]], expire_at: int) -> None:
    requests = [
        {
            "PutRequest": {
                "Item": {
                    **key,
                    "expire_at": {"N": str(expire_at)},
                    "data": {"B": b"\x01\x80"},
                    "version": {"N": "1"},
                }
            }
        }
        for key in keys
    ]
    for i in range(0, len(requests), 25):
        result = await raw.batch_write_item(RequestItems={table: requests[i : i + 25]})
        assert not result.get("UnprocessedItems")


async def test_delete_expired_removes_only_expired_items(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    table = store.props.table_name
    live = [record(clock, {"n": i}) for i in range(3)]
    for rec in live:
        await store.create(rec)
    edge = record(clock, {"edge": True}, ttl=0)  # expires exactly now: expired
    await store.create(edge)
    expired_keys = [key_of(secrets.token_urlsafe(32)) for _ in range(60)]
    await _put_expired(raw, table, expired_keys, int(clock.now) - 10)

    assert await store.delete_expired() == 61
    remaining = await scan_all(raw, table)
    assert sorted(i[PK]["S"] for i in remaining) == sorted(key_of(r.id)[PK]["S"] for r in live)
    for rec in live:
        assert await store.load(rec.id) is not None
    assert await store.delete_expired() == 0


async def test_delete_expired_walks_every_scan_page(
    store: DynamoDBStore, raw: Any, clock: Clock, fault_proxy: Any, transport: str
) -> None:
    table = store.props.table_name
    keep = record(clock, {"n": 1})
    await store.create(keep)
    keys = [key_of(secrets.token_urlsafe(32)) for _ in range(23)]
    await _put_expired(raw, table, keys, int(clock.now) - 5)
    # the same table through a counting proxy: 24 items in pages of 4 take at least 6 Scans
    async with DynamoDBStore(
        props=store.props,
        endpoint_url=fault_proxy.endpoint_url,
        region_name="us-east-1",
        transport=transport,  # type: ignore[arg-type]
        clock=clock,
    ) as proxied:
        assert await proxied.delete_expired(page_size=4) == 23
    scans = [info for info in fault_proxy.log if info.action == "Scan"]
    assert len(scans) >= 6
    assert [i[PK] for i in await scan_all(raw, table)] == [key_of(keep.id)[PK]]


async def test_delete_expired_on_a_sort_key_table(
    make: Maker, raw: Any, table_name: str, clock: Clock
) -> None:
    props = DynamoDBStoreProps(
        table_name=table_name, sort_key=DynamoDBStoreKey(name="sort_key", prefix="S::")
    )
    store = await make(props)
    keep = record(clock, {"n": 1})
    await store.create(keep)
    keys = [store.key(secrets.token_urlsafe(32)) for _ in range(30)]
    await _put_expired(raw, table_name, keys, int(clock.now) - 1)
    assert await store.delete_expired() == 30
    assert [i["sort_key"] for i in await scan_all(raw, table_name)] == [
        store.key(keep.id)["sort_key"]
    ]


# --- clients and errors -----------------------------------------------------------------------


async def test_store_with_a_caller_owned_client_leaves_it_open(
    raw: Any, table_name: str, transport: str, clock: Clock
) -> None:
    props = DynamoDBStoreProps(table_name=table_name)
    async with DynamoDBStore(raw, props, transport=transport, clock=clock) as store:
        assert store.client is raw and not store.owns_client
        await store.create_table()
        rec = record(clock, {"n": 1})
        await store.create(rec)
    await raw.describe_table(TableName=table_name)  # the caller's client still works
    again = DynamoDBStore(raw, props, transport=transport, clock=clock)
    loaded = await again.load(rec.id)  # opens on first use
    assert loaded is not None and loaded.data == {"n": 1}
    await again.close()
    await raw.delete_table(TableName=table_name)


async def test_store_owning_its_client(
    dynamodb_server: Any, raw: Any, table_name: str, transport: str, clock: Clock
) -> None:
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, clock=clock
    ) as store:
        assert store.owns_client and store.client is not None
        rec = record(clock, {"n": 1})
        await store.create(rec)
        loaded = await store.load(rec.id)
        assert loaded is not None and loaded.data == {"n": 1}
    assert store.client is None  # closed with the store
    stored = await read_item(raw, table_name, key_of(rec.id))
    assert stored is not None and plain_data_of(stored) == {"n": 1}
    await raw.delete_table(TableName=table_name)


async def test_missing_table_is_a_store_error(raw: Any, transport: str, clock: Clock) -> None:
    props = DynamoDBStoreProps(table_name="no_such_table_" + secrets.token_hex(4))
    store = DynamoDBStore(raw, props, transport=transport, clock=clock)
    try:
        with pytest.raises(StoreError):
            await store.load(secrets.token_urlsafe(32))
        with pytest.raises(StoreError):
            await store.create(record(clock, {"n": 1}))
    finally:
        await store.close()


async def test_fractional_expiry_is_rounded_up_to_whole_seconds(
    store: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    rec = Record(id=secrets.token_urlsafe(32), data={"n": 1}, expiry_date=at(clock.now + 10.25))
    await store.create(rec)
    stored = await item(raw, store, rec.id)
    assert stored is not None and stored["expire_at"] == {"N": str(int(clock.now) + 11)}


@pytest.mark.parametrize("consistent", [True, False])
async def test_loads_ask_for_the_configured_read_consistency_on_the_wire(
    make: Maker, table_name: str, clock: Clock, fault_proxy: Any, transport: str, consistent: bool
) -> None:
    props = DynamoDBStoreProps(table_name=table_name, consistent_read=consistent)
    store = await make(props)
    rec = record(clock, {"n": 1})
    await store.create(rec)
    async with DynamoDBStore(
        props=props,
        endpoint_url=fault_proxy.endpoint_url,
        region_name="us-east-1",
        transport=transport,  # type: ignore[arg-type]
        clock=clock,
    ) as proxied:
        loaded = await proxied.load(rec.id)
    assert loaded is not None and loaded.data == {"n": 1}
    (get,) = [info for info in fault_proxy.log if info.action == "GetItem"]
    assert msgspec.json.decode(get.body)["ConsistentRead"] is consistent
