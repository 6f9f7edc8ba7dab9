"""Users and devices: per-user index, listing, revocation, the session cap, on MemoryStore and on
DynamoDBStore (both transports) against the real server. Binding needs TransactWriteItems, which
dynalite lacks: DynamoDB cases skip there, MemoryStore cases run everywhere."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import PK, PREFIX, Clock, at, hashed, read_item, scan_all

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    MemoryStore,
    Record,
    SessionConflict,
    SessionInfo,
)
from asgi_dynamo_session._transport import RequestTransport
from asgi_dynamo_session._users import Binding, Replaced, user_key

TX_SKIP = "dynalite has no TransactWriteItems (binding a session is one transaction)"
EMAIL = "alice@example.com"
HANDLE = re.compile(r"^[A-Za-z0-9_-]+$")


# --- stores -----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "aiobotocore", "fast"])
async def ustore(
    request: pytest.FixtureRequest, dynamodb_server: Any, raw: Any, table_name: str, clock: Clock
) -> AsyncIterator[Any]:
    """MemoryStore, then DynamoDBStore on each transport (on a fresh table), on the test clock."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    store = DynamoDBStore(
        raw, DynamoDBStoreProps(table_name=table_name), transport=request.param, clock=clock
    )
    await store.create_table()
    yield store
    await store.close()
    await raw.delete_table(TableName=table_name)


def binding(user: str, meta: bytes | None = None) -> Binding:
    return Binding(user_key(user), b"\x01sealed-elsewhere", meta)


async def bind(
    store: Any,
    clock: Clock,
    user: str = EMAIL,
    *,
    ttl: int = 3600,
    meta: bytes | None = None,
    cap: int | None = None,
    replaces: Record | None = None,
) -> Record:
    """A new bound session, created the way the middleware's login does (store.bind)."""
    record = Record(
        id=secrets.token_urlsafe(32),
        data={"n": 1},
        expiry_date=at(clock.now + ttl),
        created_at=replaces.created_at if replaces else at(clock.now),
        user=binding(user, meta),
    )
    old = None
    if replaces is not None:
        assert replaces.user is not None
        old = Replaced(replaces.id, replaces.version, replaces.user.user_key)
    await store.bind(record, replaces=old, max_sessions=cap)
    return record


async def live(store: Any, *records: Record) -> list[bool]:
    return [await store.load(r.id) is not None for r in records]


# --- listing ----------------------------------------------------------------------------------


async def test_listing_shows_live_sessions_newest_first_with_every_field(
    ustore: Any, clock: Clock
) -> None:
    first = await bind(ustore, clock, meta=b"\x81\xa6device\xa6laptop")
    clock.advance(10)
    second = await bind(ustore, clock, ttl=60)
    clock.advance(10)
    await bind(ustore, clock, "bob@example.com")

    infos = await ustore.user_sessions(EMAIL)

    assert all(isinstance(i, SessionInfo) for i in infos)
    assert [i.created_at for i in infos] == [at(second.created_at.timestamp()), at(1_800_000_000)]
    newest, oldest = infos
    assert newest.expires_at == at(1_800_000_000 + 10 + 60)
    assert oldest.expires_at == at(1_800_000_000 + 3600)
    assert newest.last_seen == at(1_800_000_010)
    assert oldest.last_seen == at(1_800_000_000)
    assert oldest.meta == {"device": "laptop"} and newest.meta == {}
    assert not newest.current and not oldest.current
    for info in infos:
        assert HANDLE.match(info.handle) and info.created_at.tzinfo is not None
        assert info.handle not in (first.id, second.id, hashed(first.id), hashed(second.id))
    assert len({i.handle for i in infos}) == 2


async def test_last_seen_follows_saves_and_refreshes(ustore: Any, clock: Clock) -> None:
    record = await bind(ustore, clock)
    clock.advance(30)
    loaded = await ustore.load(record.id)
    loaded.data["x"] = 1
    await ustore.save(loaded)
    (info,) = await ustore.user_sessions(EMAIL)
    assert info.last_seen == at(clock.now)
    clock.advance(30)
    assert await ustore.touch(record.id, at(clock.now + 7200))
    (info,) = await ustore.user_sessions(EMAIL)
    assert info.last_seen == at(clock.now)
    assert info.expires_at == at(clock.now + 7200)
    assert info.created_at == at(1_800_000_000)


async def test_expired_but_present_sessions_are_not_listed_and_get_pruned(
    ustore: Any, clock: Clock, raw: Any
) -> None:
    short = await bind(ustore, clock, ttl=60)
    kept = await bind(ustore, clock, ttl=600)
    clock.advance(120)

    infos = await ustore.user_sessions(EMAIL)

    assert len(infos) == 1 and infos[0].expires_at == at(1_800_000_600)
    if isinstance(ustore, DynamoDBStore):
        table = ustore.props.table_name
        assert await read_item(raw, table, ustore.key(short.id)) is not None  # TTL lag
        index = await read_item(raw, table, {PK: {"S": PREFIX + "USER#" + hashed(EMAIL)}})
        assert index is not None
        assert f"s:{hashed(short.id)}" not in index and f"s:{hashed(kept.id)}" in index
    clock.advance(1000)
    assert await ustore.user_sessions(EMAIL) == []
    if isinstance(ustore, DynamoDBStore):  # nothing live left: the index item went too
        assert await read_item(raw, table, {PK: {"S": PREFIX + "USER#" + hashed(EMAIL)}}) is None


# --- revocation -------------------------------------------------------------------------------


async def test_revoke_user_ends_every_session_of_that_user_only(ustore: Any, clock: Clock) -> None:
    mine = [await bind(ustore, clock) for _ in range(3)]
    other = await bind(ustore, clock, "bob@example.com")

    assert await ustore.revoke_user(EMAIL) == 3

    assert await live(ustore, *mine, other) == [False, False, False, True]
    assert await ustore.user_sessions(EMAIL) == []
    assert len(await ustore.user_sessions("bob@example.com")) == 1
    assert await ustore.revoke_user(EMAIL) == 0


async def test_revoke_user_keeps_the_session_given(ustore: Any, clock: Clock) -> None:
    mine = [await bind(ustore, clock) for _ in range(3)]

    assert await ustore.revoke_user(EMAIL, keep=mine[1].id) == 2

    assert await live(ustore, *mine) == [False, True, False]
    assert len(await ustore.user_sessions(EMAIL)) == 1


async def test_revoke_by_handle_ends_that_session(ustore: Any, clock: Clock) -> None:
    first = await bind(ustore, clock)
    clock.advance(1)
    second = await bind(ustore, clock)
    newest, _ = await ustore.user_sessions(EMAIL)

    assert not await ustore.revoke("bob@example.com", newest.handle)  # not bob's session
    assert await ustore.revoke(EMAIL, newest.handle)
    assert not await ustore.revoke(EMAIL, newest.handle)  # already gone

    assert await live(ustore, first, second) == [True, False]
    assert [i.created_at for i in await ustore.user_sessions(EMAIL)] == [first.created_at]


async def test_expired_sessions_do_not_count_as_revoked(ustore: Any, clock: Clock) -> None:
    await bind(ustore, clock, ttl=60)
    await bind(ustore, clock, ttl=600)
    clock.advance(120)
    assert await ustore.revoke_user(EMAIL) == 1


async def test_a_save_in_flight_does_not_bring_a_revoked_session_back(
    ustore: Any, clock: Clock
) -> None:
    record = await bind(ustore, clock)
    loaded = await ustore.load(record.id)  # a request in flight has read it
    await ustore.revoke_user(EMAIL)
    loaded.data["late"] = True
    with pytest.raises(SessionConflict) as conflict:
        await ustore.save(loaded)
    assert conflict.value.current is None
    assert not await ustore.touch(record.id, at(clock.now + 7200))
    assert await ustore.load(record.id) is None
    assert await ustore.user_sessions(EMAIL) == []


async def test_a_login_cycling_a_revoked_session_fails(ustore: Any, clock: Clock) -> None:
    record = await bind(ustore, clock)
    loaded = await ustore.load(record.id)
    await ustore.revoke_user(EMAIL)
    with pytest.raises(SessionConflict):
        await bind(ustore, clock, replaces=loaded)
    assert await ustore.user_sessions(EMAIL) == []


async def test_cycling_a_bound_session_replaces_its_entry(ustore: Any, clock: Clock) -> None:
    record = await bind(ustore, clock, meta=b"\x81\xa1d\xa1x")
    clock.advance(5)
    loaded = await ustore.load(record.id)
    cycled = await bind(ustore, clock, replaces=loaded, meta=b"\x81\xa1d\xa1x")

    assert await live(ustore, record, cycled) == [False, True]
    (info,) = await ustore.user_sessions(EMAIL)
    assert info.created_at == at(1_800_000_000) and info.meta == {"d": "x"}


async def test_a_stale_login_loses_to_a_concurrent_save(ustore: Any, clock: Clock) -> None:
    record = await bind(ustore, clock)
    stale = await ustore.load(record.id)
    fresh = await ustore.load(record.id)
    fresh.data["other"] = 1
    await ustore.save(fresh)
    with pytest.raises(SessionConflict) as conflict:
        await bind(ustore, clock, replaces=stale)
    assert conflict.value.current is not None and conflict.value.current.data["other"] == 1
    assert await live(ustore, record) == [True]


# --- the session cap --------------------------------------------------------------------------


async def test_binding_beyond_the_cap_ends_the_oldest(ustore: Any, clock: Clock) -> None:
    made = []
    for _ in range(4):
        made.append(await bind(ustore, clock, cap=2))
        clock.advance(1)

    assert await live(ustore, *made) == [False, False, True, True]
    infos = await ustore.user_sessions(EMAIL)
    assert [i.created_at for i in infos] == [made[3].created_at, made[2].created_at]


async def test_expired_sessions_do_not_use_up_the_cap(ustore: Any, clock: Clock) -> None:
    short = await bind(ustore, clock, ttl=10, cap=2)
    clock.advance(1)
    kept = await bind(ustore, clock, cap=2)
    clock.advance(20)  # `short` expired, still present
    newest = await bind(ustore, clock, cap=2)
    assert await live(ustore, short, kept, newest) == [False, True, True]


# --- what is stored ---------------------------------------------------------------------------


async def test_the_user_id_appears_nowhere_in_a_raw_scan(
    ustore: Any, clock: Clock, raw: Any
) -> None:
    if not isinstance(ustore, DynamoDBStore):
        pytest.skip("a raw scan is DynamoDB's")
    record = await bind(ustore, clock)
    await ustore.user_sessions(EMAIL)
    items = await scan_all(raw, ustore.props.table_name)
    assert len(items) == 2  # the session and the user's index
    dump = repr(items)
    assert EMAIL not in dump and "alice" not in dump and record.id not in dump
    assert all(EMAIL.encode() not in v.get("B", b"") for i in items for v in i.values())


# --- interleavings at the store-call level ----------------------------------------------------


class Gate:
    """Holds every paused call until the test lets one through (hypothesis picks which)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, asyncio.Future[None]]] = []

    async def pause(self, label: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((label, future))
        await future

    async def run(
        self, coros: list[Coroutine[Any, Any, Any]], choose: Callable[[int], int]
    ) -> list[Any]:
        """Run the coroutines, releasing one paused call at a time; their results (or errors)."""
        tasks = [asyncio.create_task(c) for c in coros]
        while True:
            for _ in range(10_000):  # settle: every task is finished or paused here
                active = sum(not t.done() for t in tasks)
                if len(self.waiting) >= active:
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError("a task neither finished nor reached the gate")
            if not self.waiting:
                break
            _, future = self.waiting.pop(choose(len(self.waiting)))
            future.set_result(None)
        return [t.exception() or t.result() for t in tasks]


class GatedTransport(RequestTransport):
    """The store's real transport, pausing before each DynamoDB call it sends."""

    def __init__(self, inner: RequestTransport, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    async def _request(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.gate.pause(action)
        return await self.inner._request(action, params)


class GatedStore:
    """A real MemoryStore pausing before each store call (its calls are atomic in themselves)."""

    def __init__(self, inner: MemoryStore, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self.gate.pause(name)
            return await method(*args, **kwargs)

        return gated


async def gated(store: Any) -> tuple[Any, Gate]:
    gate = Gate()
    if isinstance(store, MemoryStore):
        return GatedStore(store, gate), gate
    await store.open()
    store._wire = GatedTransport(await store._transport(), gate)
    return store, gate


def unique_user() -> str:
    return f"{secrets.token_hex(4)}@example.com"


async def live_of(store: Any, user: str, now: float) -> int:
    """How many live sessions of the user the store holds, counted without the index."""
    if isinstance(store, MemoryStore):
        key = user_key(user)
        count = 0
        for sid in list(store._items):
            record = await store.load(sid)
            count += record is not None and record.user is not None and record.user.user_key == key
        return count
    items = await scan_all(store.client, store.props.table_name)
    return sum(
        1
        for i in items
        if i.get("user_key", {}).get("S") == user_key(user) and int(i["expire_at"]["N"]) > now
    )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), logins=st.integers(2, 4), cap=st.integers(1, 2))
async def test_parallel_logins_never_leave_more_than_the_cap(
    ustore: Any, clock: Clock, data: st.DataObject, logins: int, cap: int
) -> None:
    user = unique_user()
    store, gate = await gated(ustore)
    try:
        results = await gate.run(
            [bind(store, clock, user, cap=cap) for _ in range(logins)],
            lambda n: data.draw(st.integers(0, n - 1)),
        )
    finally:
        if isinstance(ustore, DynamoDBStore):
            ustore._wire = store._wire.inner
    assert not [r for r in results if not isinstance(r, Record)], results
    assert await live_of(ustore, user, clock.now) == cap
    assert len(await ustore.user_sessions(user)) == cap


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_a_login_cycled_while_revoking_does_not_survive(
    ustore: Any, clock: Clock, data: st.DataObject
) -> None:
    """A session bound before revoke_user was called, cycled by a request in flight while the
    revocation runs: neither it nor its new id is live afterwards."""
    user = unique_user()
    before = await bind(ustore, clock, user)
    loaded = await ustore.load(before.id)
    store, gate = await gated(ustore)

    async def cycle() -> Record | None:
        try:
            return await bind(store, clock, user, replaces=loaded)
        except SessionConflict:
            return None

    try:
        cycled, ended = await gate.run(
            [cycle(), store.revoke_user(user)], lambda n: data.draw(st.integers(0, n - 1))
        )
    finally:
        if isinstance(ustore, DynamoDBStore):
            ustore._wire = store._wire.inner
    assert isinstance(ended, int)
    assert await ustore.load(before.id) is None
    if cycled is not None:
        assert await ustore.load(cycled.id) is None
    assert await ustore.user_sessions(user) == []
