"""Users and devices: per-user index, listing, revocation, the session cap, on MemoryStore and on
DynamoDBStore (both transports) against the real server. Binding needs TransactWriteItems, which
dynalite lacks: DynamoDB cases skip there, MemoryStore cases run everywhere."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextvars import ContextVar
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    EXPIRED_COOKIE,
    OLD_SECRET,
    PK,
    PREFIX,
    SECRET,
    SESSION_COOKIE,
    TRANSPORTS,
    Clock,
    CountingStore,
    app_doing,
    at,
    call,
    cookie_of,
    dynamo_store,
    fetch,
    hashed,
    middleware,
    read_item,
    running,
    scan_all,
    set_cookies,
    sid,
    signed,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreKey,
    DynamoDBStoreProps,
    MemoryStore,
    OnInactivity,
    Record,
    SessionConflict,
    SessionError,
    SessionEvent,
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
    loaded.expiry_date = at(clock.now + 7200)
    await ustore.touch(loaded)
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
    loaded.expiry_date = at(clock.now + 7200)
    with pytest.raises(SessionConflict):
        await ustore.touch(loaded)
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


_ROOT: ContextVar[int] = ContextVar("gate_root", default=-1)


class Gate:
    """Holds every paused call until the test lets one through (hypothesis picks which).

    Calls are counted per root task (the coroutines given to `run`, and the tasks they spawn),
    so that the next choice is made only once every unfinished root is paused here with no call
    of its own in flight: the same choices always give the same interleaving.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[int, asyncio.Future[None]]] = []
        self.inflight: Counter[int] = Counter()

    async def through(self, call: Callable[[], Awaitable[Any]]) -> Any:
        root = _ROOT.get()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((root, future))
        await future
        self.inflight[root] += 1
        try:
            return await call()
        finally:
            self.inflight[root] -= 1

    def _settled(self, tasks: list[asyncio.Task[Any]]) -> bool:
        paused = {root for root, _ in self.waiting}
        return all(t.done() or (i in paused and not self.inflight[i]) for i, t in enumerate(tasks))

    async def run(
        self, coros: list[Coroutine[Any, Any, Any]], choose: Callable[[int], int]
    ) -> list[Any]:
        """Run the coroutines, releasing one paused call at a time; their results (or errors)."""

        async def rooted(index: int, coro: Coroutine[Any, Any, Any]) -> Any:
            _ROOT.set(index)
            return await coro

        tasks = [asyncio.create_task(rooted(i, c)) for i, c in enumerate(coros)]
        while True:
            for _ in range(20_000):
                if self._settled(tasks):
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
        result: dict[str, Any] = await self.gate.through(
            lambda: self.inner._request(action, params)
        )
        return result


class GatedStore:
    """A real MemoryStore pausing before each store call (its calls are atomic in themselves)."""

    def __init__(self, inner: MemoryStore, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        async def gated(*args: Any, **kwargs: Any) -> Any:
            return await self.gate.through(lambda: method(*args, **kwargs))

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


# --- through the middleware -------------------------------------------------------------------


def users_app(events: dict[str, asyncio.Event] | None = None) -> Any:
    """A plain ASGI app: /login?user=&device=, /read, /write, /list, /others, /logout, /unbind,
    /hold (reads, waits for ``events["go"]``, then writes)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        session = scope["session"]
        query = dict(parse_qsl(scope["query_string"].decode()))
        path = scope["path"]
        body: Any = "ok"
        if path == "/login":
            session["before"] = session.get("before", "login")
            meta = {"device": query["device"]} if "device" in query else None
            session.set_user(query.get("user", EMAIL), meta)
        elif path == "/anon":
            session["before"] = "anonymous"
        elif path == "/read":
            body = {"user": session.user_id, "data": dict(session)}
        elif path == "/write":
            session["w"] = session.get("w", 0) + 1
        elif path == "/list":
            body = [
                {"handle": i.handle, "current": i.current, "meta": i.meta}
                for i in await session.user_sessions()
            ]
        elif path == "/others":
            body = await session.revoke_others()
        elif path == "/logout":
            session.flush()
        elif path == "/unbind":
            session.set_user(None)
        elif path == "/hold":
            assert events is not None
            session.get("w")
            events["loaded"].set()
            await events["go"].wait()
            session["w"] = "late"
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})

    return app


@pytest.fixture(params=["memory", "dynamodb"])
async def astore(
    request: pytest.FixtureRequest, dynamodb_server: Any, raw: Any, table_name: str, clock: Clock
) -> AsyncIterator[Any]:
    """MemoryStore, then DynamoDBStore (on the shared client) on a fresh table."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    store = DynamoDBStore(raw, DynamoDBStoreProps(table_name=table_name), clock=clock)
    await store.create_table()
    yield store
    await store.close()
    await raw.delete_table(TableName=table_name)


def app_for(store: Any, clock: Clock, **options: Any) -> Any:
    return middleware(users_app(options.pop("events", None)), store, clock=clock, **options)


async def login(
    app: Any, user: str = EMAIL, device: str | None = None, cookie: str | None = None
) -> str:
    path = f"/login?user={quote(user)}" + (f"&device={quote(device)}" if device else "")
    response = await call(app, path, cookie)
    assert response.status_code == 200
    (header,) = set_cookies(response)
    assert re.match(r"^id=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; Path=/;", header), header
    return cookie_of(response)


async def read(app: Any, cookie: str) -> Any:
    response = await call(app, "/read", cookie)
    assert response.status_code == 200
    return response.json()


async def test_binding_cycles_the_id_and_keeps_the_data(astore: Any, clock: Clock) -> None:
    app = app_for(astore, clock)
    anonymous = cookie_of(await call(app, "/anon"))

    response = await call(app, "/login?user=" + quote(EMAIL), anonymous)

    (header,) = set_cookies(response)
    assert SESSION_COOKIE.match(header), header
    cookie = cookie_of(response)
    assert sid(cookie) != sid(anonymous)
    assert await read(app, cookie) == {"user": EMAIL, "data": {"before": "anonymous"}}
    stale = await call(app, "/read", anonymous)  # the pre-login cookie loads no session
    assert stale.json() == {"user": None, "data": {}}
    assert set_cookies(stale) == [EXPIRED_COOKIE]
    assert await astore.load(sid(anonymous)) is None


async def test_the_current_session_is_marked_and_listed_newest_first(
    astore: Any, clock: Clock
) -> None:
    app = app_for(astore, clock)
    laptop = await login(app, device="laptop")
    clock.advance(5)
    phone = await login(app, device="phone")

    listed = (await call(app, "/list", laptop)).json()

    assert [(i["meta"], i["current"]) for i in listed] == [
        ({"device": "phone"}, False),
        ({"device": "laptop"}, True),
    ]
    assert [i["current"] for i in (await call(app, "/list", phone)).json()] == [True, False]
    assert [i.handle for i in await astore.user_sessions(EMAIL)] == [i["handle"] for i in listed]


async def test_revoke_others_logs_out_every_other_device(astore: Any, clock: Clock) -> None:
    app = app_for(astore, clock)
    cookies = [await login(app) for _ in range(3)]
    other_user = await login(app, "bob@example.com")

    response = await call(app, "/others", cookies[1])

    assert response.json() == 2
    for cookie in (cookies[0], cookies[2]):
        gone = await call(app, "/read", cookie)
        assert gone.json() == {"user": None, "data": {}}
        assert set_cookies(gone) == [EXPIRED_COOKIE]  # the next request expires the cookie
    assert (await read(app, cookies[1]))["user"] == EMAIL
    assert (await read(app, other_user))["user"] == "bob@example.com"
    assert len(await astore.user_sessions(EMAIL)) == 1


async def test_store_revocation_ends_the_cookies_of_that_user(astore: Any, clock: Clock) -> None:
    app = app_for(astore, clock)
    cookies = [await login(app) for _ in range(2)]
    kept = await login(app)

    assert await astore.revoke_user(EMAIL, keep=sid(kept)) == 2
    for cookie in cookies:
        assert (await read(app, cookie))["user"] is None
    assert (await read(app, kept))["user"] == EMAIL
    (info,) = await astore.user_sessions(EMAIL)
    assert await astore.revoke(EMAIL, info.handle)
    assert (await read(app, kept))["user"] is None


async def test_unbinding_and_logging_out_take_the_session_off_the_list(
    astore: Any, clock: Clock
) -> None:
    app = app_for(astore, clock)
    first = await login(app)
    second = await login(app)

    unbound = await call(app, "/unbind", first)
    kept = cookie_of(unbound)
    assert sid(kept) != sid(first)  # unbinding cycles the id too
    assert await read(app, kept) == {"user": None, "data": {"before": "login"}}
    logout = await call(app, "/logout", second)
    assert set_cookies(logout) == [EXPIRED_COOKIE]

    assert await astore.user_sessions(EMAIL) == []
    assert await astore.load(sid(second)) is None
    assert (await call(app, "/list", kept)).json() == []
    assert (await call(app, "/others", kept)).json() == 0


async def test_max_sessions_per_user_ends_the_oldest_at_login(astore: Any, clock: Clock) -> None:
    app = app_for(astore, clock, max_sessions_per_user=2)
    cookies = []
    for _ in range(4):
        cookies.append(await login(app))
        clock.advance(1)

    users = [(await read(app, c))["user"] for c in cookies]
    assert users == [None, None, EMAIL, EMAIL]
    assert len(await astore.user_sessions(EMAIL)) == 2


async def test_a_request_in_flight_does_not_bring_a_revoked_session_back(
    astore: Any, clock: Clock
) -> None:
    events = {"loaded": asyncio.Event(), "go": asyncio.Event()}
    app = app_for(astore, clock, events=events)
    cookie = await login(app)

    held = asyncio.create_task(call(app, "/hold", cookie))
    await events["loaded"].wait()
    assert await astore.revoke_user(EMAIL) == 1
    events["go"].set()
    response = await held

    assert response.status_code == 200
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await astore.load(sid(cookie)) is None
    assert await astore.user_sessions(EMAIL) == []


async def test_logins_before_a_revocation_end_and_logins_after_it_survive(
    astore: Any, clock: Clock
) -> None:
    app = app_for(astore, clock)
    before = await login(app)
    assert await astore.revoke_user(EMAIL) == 1
    after = await login(app)
    assert (await read(app, before))["user"] is None
    assert (await read(app, after))["user"] == EMAIL
    assert len(await astore.user_sessions(EMAIL)) == 1


async def test_a_handle_is_no_cookie(astore: Any, clock: Clock) -> None:
    app = app_for(astore, clock)
    cookie = await login(app)
    (info,) = await astore.user_sessions(EMAIL)
    for value in (info.handle, signed(info.handle), signed(info.handle[:43])):
        response = await call(app, "/read", value)
        assert response.json() == {"user": None, "data": {}}
    assert (await read(app, cookie))["user"] == EMAIL


async def test_the_user_id_is_in_no_stored_attribute(astore: Any, clock: Clock, raw: Any) -> None:
    if not isinstance(astore, DynamoDBStore):
        pytest.skip("a raw scan is DynamoDB's")
    app = app_for(astore, clock)
    cookie = await login(app, device="laptop")
    assert (await read(app, cookie))["user"] == EMAIL  # read back from the sealed copy
    items = await scan_all(raw, astore.props.table_name)
    assert len(items) == 2
    assert EMAIL not in repr(items) and EMAIL.encode() not in repr(items).encode()
    assert sid(cookie) not in repr(items)


async def test_the_user_id_needs_the_secret_keys_to_read_back(astore: Any, clock: Clock) -> None:
    cookie = await login(app_for(astore, clock))
    other_keys = app_for(astore, clock, secret_keys=[OLD_SECRET, SECRET])
    assert (await read(other_keys, cookie))["user"] == EMAIL  # rotation: an older key opens it
    record = await astore.load(sid(cookie))
    assert record is not None and record.user is not None
    assert record.user.user_key == hashed(EMAIL)


async def test_meta_must_be_small(astore: Any, clock: Clock) -> None:
    async def big(session: Any) -> None:
        session.set_user(EMAIL, {"device": "x" * 5000})

    with pytest.raises(ValueError, match="meta"):
        await fetch(middleware(app_doing(big), astore, clock=clock))
    assert await astore.user_sessions(EMAIL) == []


async def test_meta_counts_toward_the_item_size(
    raw: Any, dynamodb_server: Any, table_name: str, clock: Clock
) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    store = DynamoDBStore(
        raw, DynamoDBStoreProps(table_name=table_name), clock=clock, max_item_size=1400
    )
    await store.create_table()
    try:

        def near_limit(session: Any) -> None:
            session["blob"] = "x" * 900

        def with_meta(session: Any) -> None:
            session["blob"] = "x" * 900
            session.set_user(EMAIL, {"device": "y" * 600})

        ok = await fetch(middleware(app_doing(near_limit), store, clock=clock))
        assert ok.status_code == 200
        too_big = await fetch(middleware(app_doing(with_meta), store, clock=clock))
        assert too_big.status_code == 500
        assert await store.user_sessions(EMAIL) == []
    finally:
        await raw.delete_table(TableName=table_name)


async def test_a_store_without_user_methods_keeps_working(clock: Clock) -> None:
    plain = CountingStore(MemoryStore(clock=clock))  # the four protocol methods (and two more)
    app = app_for(plain, clock)
    response = await call(app, "/anon")
    assert response.status_code == 200
    cookie = cookie_of(response)
    assert (await read(app, cookie))["data"] == {"before": "anonymous"}

    def bind_it(session: Any) -> None:
        session.set_user(EMAIL)

    with pytest.raises(SessionError, match="per-user index"):
        await fetch(middleware(app_doing(bind_it), plain, clock=clock))

    async def list_it(session: Any) -> None:
        await session.user_sessions()

    with pytest.raises(SessionError, match="per-user index"):
        await fetch(middleware(app_doing(list_it), plain, clock=clock), f"id={cookie}")
    with pytest.raises(ValueError, match="per-user index"):
        middleware(app_doing(list_it), plain, max_sessions_per_user=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_max_sessions_per_user_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_sessions_per_user"):
        middleware(app_doing(lambda s: None), MemoryStore(), max_sessions_per_user=bad)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_bound_session_costs_the_calls_of_an_unbound_one(
    dynamodb_server: Any, fault_proxy: Any, table_name: str, clock: Clock, transport: str
) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, clock=clock
    ) as store:
        app = app_for(store, clock)
        anonymous = cookie_of(await call(app, "/anon"))
        before_login = cookie_of(await call(app, "/anon"))
        fault_proxy.reset_counters()
        bound = await login(app, cookie=before_login)
        assert [r.action for r in fault_proxy.log] == ["GetItem", "TransactWriteItems"]

        for cookie in (anonymous, bound):
            fault_proxy.reset_counters()
            await read(app, cookie)
            assert [r.action for r in fault_proxy.log] == ["GetItem"]
            fault_proxy.reset_counters()
            assert (await call(app, "/write", cookie)).status_code == 200
            assert [r.action for r in fault_proxy.log] == ["GetItem", "PutItem"]

        fault_proxy.reset_counters()
        await call(app, "/logout", bound)  # ending a bound session: one more write
        assert [r.action for r in fault_proxy.log] == ["GetItem", "DeleteItem", "UpdateItem"]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), logins=st.integers(2, 3))
async def test_parallel_logins_through_the_middleware_respect_the_cap(
    astore: Any, clock: Clock, data: st.DataObject, logins: int
) -> None:
    user = unique_user()
    store, gate = await gated(astore)
    app = app_for(store, clock, max_sessions_per_user=1)
    try:
        responses = await gate.run(
            [call(app, f"/login?user={quote(user)}") for _ in range(logins)],
            lambda n: data.draw(st.integers(0, n - 1)),
        )
    finally:
        if isinstance(astore, DynamoDBStore):
            astore._wire = store._wire.inner
    assert [r.status_code for r in responses] == [200] * logins
    assert await live_of(astore, user, clock.now) == 1
    alive = [(await read(app_for(astore, clock), cookie_of(r)))["user"] for r in responses]
    assert alive.count(user) == 1


# --- the devices example ----------------------------------------------------------------------


async def test_the_devices_example_lists_and_logs_out_devices(astore: Any, clock: Clock) -> None:
    from examples.devices import create_app

    app = create_app(astore, secret_keys=SECRET, secure=False, clock=clock)
    async with running(app) as url:
        laptop = httpx.AsyncClient(base_url=url)
        phone = httpx.AsyncClient(base_url=url)
        async with laptop, phone:
            assert "Log in" in (await laptop.get("/")).text
            await laptop.post("/login", data={"user": EMAIL, "device": "laptop"})
            clock.advance(1)
            await phone.post("/login", data={"user": EMAIL, "device": "phone"})

            page = (await phone.get("/")).text
            assert "2 device(s)" in page
            assert page.index("phone <b>(this device)</b>") < page.index("laptop")
            assert "laptop <b>(this device)</b>" in (await laptop.get("/")).text

            await phone.post("/revoke-others")
            assert "Log in" in (await laptop.get("/")).text
            assert "1 device(s)" in (await phone.get("/")).text

            await laptop.post("/login", data={"user": EMAIL, "device": "laptop"})
            page = (await phone.get("/")).text
            (handle,) = re.findall(r'name="handle" value="([A-Za-z0-9_-]+)"', page)
            await phone.post("/revoke", data={"handle": handle})
            assert "Log in" in (await laptop.get("/")).text

            await phone.post("/logout")
            assert "Log in" in (await phone.get("/")).text
    assert await astore.user_sessions(EMAIL) == []


async def test_a_refresh_of_a_bound_session_updates_last_seen(astore: Any, clock: Clock) -> None:
    app = app_for(
        astore, clock, expiry=OnInactivity(timedelta(hours=1)), touch_after=timedelta(minutes=10)
    )
    cookie = await login(app)
    clock.advance(700)
    response = await call(app, "/read", cookie)
    assert set_cookies(response)  # the expiry was refreshed
    (info,) = await astore.user_sessions(EMAIL)
    assert info.last_seen == at(clock.now)
    assert info.expires_at == at(clock.now + 3600)
    assert info.created_at == at(1_800_000_000)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_requests_in_flight_during_revoke_user_bring_nothing_back(
    astore: Any, clock: Clock, data: st.DataObject
) -> None:
    """While revoke_user runs, requests on a session bound before it write to it, log in on it
    again (a cycle) and log in afresh; every interleaving of their store calls leaves neither
    the old session nor anything cycled from it alive, and a login after it returned works."""
    user = unique_user()
    plain = app_for(astore, clock)
    anonymous = cookie_of(await call(plain, "/anon"))
    before = await login(plain, user, cookie=anonymous)  # its data: {"before": "anonymous"}
    store, gate = await gated(astore)
    app = app_for(store, clock)
    try:
        *responses, ended = await gate.run(
            [
                call(app, "/write", before),
                call(app, f"/login?user={quote(user)}", before),
                call(app, f"/login?user={quote(user)}"),
                store.revoke_user(user),
            ],
            lambda n: data.draw(st.integers(0, n - 1)),
        )
    finally:
        if isinstance(astore, DynamoDBStore):
            astore._wire = store._wire.inner
    assert isinstance(ended, int)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert (await read(plain, before))["user"] is None
    for response in responses:
        for header in set_cookies(response):
            value = header.split(";", 1)[0].removeprefix("id=")
            if not value:
                continue
            seen = await read(plain, value)
            # A session that loaded `before` in time carries its data: it must not be alive
            # and bound; one that loaded nothing is a fresh login or a fresh anonymous session.
            if seen["user"] is not None:
                assert seen["data"].get("before") != "anonymous", seen
    after = await login(plain, user)
    assert (await read(plain, after))["user"] == user


@pytest.mark.parametrize("attempts", [1, 3], ids=["no-retry", "retry"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_lost_answer_to_a_login_is_the_login(
    dynamodb_server: Any,
    fault_proxy: Any,
    raw: Any,
    table_name: str,
    clock: Clock,
    transport: str,
    attempts: int,
) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    async with dynamo_store(
        fault_proxy.endpoint_url,
        table_name,
        transport=transport,
        clock=clock,
        max_attempts=attempts,
    ) as store:
        app = app_for(store, clock)
        anonymous = cookie_of(await call(app, "/anon"))
        await fault_proxy.lose_next_response(action="TransactWriteItems")
        cookie = await login(app, cookie=anonymous)
        assert fault_proxy.lost == 1
        assert await read(app, cookie) == {"user": EMAIL, "data": {"before": "anonymous"}}
        assert len(await store.user_sessions(EMAIL)) == 1
        assert len(await scan_all(raw, table_name)) == 2  # the session and the index, no orphan


@pytest.mark.parametrize(
    "props",
    [
        {"sort_key": DynamoDBStoreKey(name="sk", prefix="S#", suffix="#END")},
        {
            "partition_key": DynamoDBStoreKey(name="pk", prefix=None, suffix="::x"),
            "hash_ids": False,
        },
    ],
    ids=["sort-key", "raw-ids"],
)
async def test_other_table_layouts_keep_the_index_beside_the_sessions(
    dynamodb_server: Any, raw: Any, table_name: str, clock: Clock, props: dict[str, Any]
) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip(TX_SKIP)
    store = DynamoDBStore(raw, DynamoDBStoreProps(table_name=table_name, **props), clock=clock)
    await store.create_table()
    try:
        first = await bind(store, clock)
        clock.advance(1)
        second = await bind(store, clock, cap=2)
        infos = await store.user_sessions(EMAIL)
        assert [i.handle for i in infos] == [
            store.session_handle(second.id),
            store.session_handle(first.id),
        ]
        assert first.id not in repr(infos) and EMAIL not in repr(await scan_all(raw, table_name))
        assert await store.revoke(EMAIL, infos[1].handle)
        assert await live(store, first, second) == [False, True]
        assert await store.revoke_user(EMAIL) == 1
        assert await scan_all(raw, table_name) == []
    finally:
        await raw.delete_table(TableName=table_name)


async def test_events_name_the_user_and_the_revoked_sessions(astore: Any, clock: Clock) -> None:
    events: list[SessionEvent] = []
    app = app_for(astore, clock, on_event=events.append)
    anonymous = cookie_of(await call(app, "/anon"))
    laptop = await login(app, cookie=anonymous)
    phone = await login(app)
    events.clear()

    assert (await call(app, "/others", laptop)).json() == 1
    await call(app, "/logout", laptop)

    assert events == [
        SessionEvent("revoked", hashed(sid(phone)), user_id=EMAIL),
        SessionEvent("ended", hashed(sid(laptop)), user_id=EMAIL),
    ]


async def test_the_sessions_the_cap_ends_are_told_as_revoked(astore: Any, clock: Clock) -> None:
    events: list[SessionEvent] = []
    app = app_for(astore, clock, on_event=events.append, max_sessions_per_user=2)
    oldest = await login(app)
    clock.advance(1)
    await login(app)
    clock.advance(1)
    events.clear()
    newest = await login(app)

    assert SessionEvent("revoked", hashed(sid(oldest)), user_id=EMAIL) in events
    assert [e.kind for e in events].count("revoked") == 1
    assert (await read(app, oldest))["user"] is None
    assert (await read(app, newest))["user"] == EMAIL
