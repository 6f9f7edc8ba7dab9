"""Cheap expiry on a real server: `touch_after`, `absolute_timeout`, and refreshes that never
bring back a deleted session. Time is an injected `Clock` shared by the store and the
middleware; nothing sleeps. Wire-level counts come from a pass-through `FaultProxy`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from support import (
    EXPIRED_COOKIE,
    T0,
    TRANSPORTS,
    Clock,
    CountingStore,
    assert_no_leaks,
    call,
    cookie_of,
    data_of,
    dynamo_store,
    item_of,
    middleware,
    scan_all,
    set_cookies,
    sid,
)

from asgi_dynamo_session import DynamoDBStore, OnInactivity, OnSessionEnd, codec

pytestmark = pytest.mark.usefixtures("library_logs")

HOUR = 3600
FLAGS = "; HttpOnly; Secure; SameSite=Lax"

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Pause:
    """Lets one request's app wait (after the load, before the save) while the test acts."""

    def __init__(self) -> None:
        self.inside = asyncio.Event()
        self.go = asyncio.Event()

    async def __call__(self) -> None:
        self.inside.set()
        await self.go.wait()


def make_app(pause: Pause | None = None) -> Callable[..., Awaitable[None]]:
    """/set?k=v sets keys, /cycle cycles the id, /read reads; `wait=1` pauses at `pause`."""

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        session = scope["session"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        wait = query.pop("wait", None) == "1"
        if scope["path"] == "/set":
            session.update(query)
        elif scope["path"] == "/cycle":
            session.cycle_id()
        body = json.dumps(dict(session.items())).encode()
        if wait and pause is not None:
            await pause()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def cookie_header(cookie: str, now: float, expires: int | None) -> str:
    """The exact Set-Cookie the middleware sends for `cookie` (None: a browser-session one)."""
    if expires is None:
        return f"id={cookie}; Path=/{FLAGS}"
    stamp = format_datetime(datetime.fromtimestamp(expires, timezone.utc), usegmt=True)
    return f"id={cookie}; Path=/; Max-Age={int(expires - now)}; Expires={stamp}{FLAGS}"


@pytest.fixture(params=TRANSPORTS)
async def store(
    request: pytest.FixtureRequest, dynamodb_server: Any, table_name: str, clock: Clock
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=request.param, clock=clock
    ) as s:
        yield s


# -- touch_after -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_read_only_requests_touch_once_per_window(
    dynamodb_server: Any,
    dynamodb_client: Any,
    fault_proxy: Any,
    table_name: str,
    clock: Clock,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, clock=clock
    ) as inner:
        store = CountingStore(inner)
        app = middleware(
            make_app(),
            store,
            expiry=OnInactivity(timedelta(hours=1)),
            touch_after=timedelta(minutes=10),
            clock=clock,
        )
        created = await call(app, "/set?user=u1")
        cookie = cookie_of(created)
        assert set_cookies(created) == [cookie_header(cookie, T0, T0 + HOUR)]
        before = await item_of(dynamodb_client, inner, cookie)
        assert before is not None
        assert before["expire_at"] == {"N": str(T0 + HOUR)}
        store.calls.clear()
        fault_proxy.reset_counters()

        # K read-only requests inside the window: no writes, no Set-Cookie.
        for offset in (1, 60, 300, 540, 599):
            clock.now = T0 + offset
            response = await call(app, "/read", cookie)
            assert response.status_code == 200
            assert response.json() == {"user": "u1"}
            assert set_cookies(response) == []
        assert store.writes == 0
        assert store.calls["load"] == 5
        assert [r.action for r in fault_proxy.log] == ["GetItem"] * 5
        assert await item_of(dynamodb_client, inner, cookie) == before

        # The first one after the window: exactly one UpdateItem of the expiry, a fresh cookie.
        clock.now = T0 + 600
        fault_proxy.reset_counters()
        response = await call(app, "/read", cookie)
        assert response.status_code == 200
        assert set_cookies(response) == [cookie_header(cookie, T0 + 600, T0 + 600 + HOUR)]
        assert store.calls["touch"] == 1 and store.writes == 1
        assert [r.action for r in fault_proxy.log] == ["GetItem", "UpdateItem"]
        after = await item_of(dynamodb_client, inner, cookie)
        assert after is not None
        assert after["expire_at"] == {"N": str(T0 + 600 + HOUR)}
        unchanged = {k: v for k, v in after.items() if k != "expire_at"}
        assert unchanged == {k: v for k, v in before.items() if k != "expire_at"}

        # The window starts again from that refresh.
        clock.now = T0 + 1199
        response = await call(app, "/read", cookie)
        assert set_cookies(response) == []
        assert store.writes == 1
        assert_no_leaks(caplog, cookie)


async def test_default_touch_after_is_a_tenth_of_the_window(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    counting = CountingStore(store)
    app = middleware(make_app(), counting, expiry=OnInactivity(timedelta(hours=1)), clock=clock)
    cookie = cookie_of(await call(app, "/set?user=u1"))
    counting.calls.clear()

    clock.now = T0 + 359  # a tenth of an hour is 360 s
    assert set_cookies(await call(app, "/read", cookie)) == []
    assert counting.writes == 0

    clock.now = T0 + 360
    response = await call(app, "/read", cookie)
    assert set_cookies(response) == [cookie_header(cookie, T0 + 360, T0 + 360 + HOUR)]
    assert counting.calls["touch"] == 1 and counting.writes == 1
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["expire_at"] == {"N": str(T0 + 360 + HOUR)}
    assert item["version"] == {"N": "1"}


async def test_browser_session_items_are_refreshed_after_a_tenth_of_two_weeks(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    counting = CountingStore(store)
    app = middleware(make_app(), counting, expiry=OnSessionEnd(), clock=clock)
    cookie = cookie_of(await call(app, "/set?user=u1"))
    two_weeks = 14 * 24 * HOUR
    counting.calls.clear()

    clock.now = T0 + two_weeks // 10 - 1
    assert set_cookies(await call(app, "/read", cookie)) == []
    assert counting.writes == 0
    clock.now = T0 + two_weeks // 10
    response = await call(app, "/read", cookie)
    assert set_cookies(response) == [cookie_header(cookie, clock.now, None)]  # no Max-Age
    assert counting.calls["touch"] == 1
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["expire_at"] == {"N": str(int(clock.now) + two_weeks)}


async def test_a_modifying_request_refreshes_without_a_separate_touch(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    counting = CountingStore(store)
    app = middleware(
        make_app(),
        counting,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=10),
        clock=clock,
    )
    cookie = cookie_of(await call(app, "/set?n=1"))
    counting.calls.clear()
    clock.now = T0 + 900
    response = await call(app, "/set?n=2", cookie)
    assert set_cookies(response) == [cookie_header(cookie, T0 + 900, T0 + 900 + HOUR)]
    assert dict(counting.calls) == {"load": 1, "save": 1}
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["expire_at"] == {"N": str(T0 + 900 + HOUR)}
    assert data_of(item) == {"n": "2"}


# -- no resurrection by a refresh --------------------------------------------------------------


@pytest.mark.parametrize("how", ["flush", "delete_item", "expired"])
async def test_touch_of_a_session_ended_meanwhile_does_not_recreate_it(
    store: DynamoDBStore,
    dynamodb_client: Any,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    pause = Pause()
    counting = CountingStore(store)
    app = middleware(
        make_app(pause),
        counting,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=10),
        clock=clock,
    )
    cookie = cookie_of(await call(app, "/set?user=u1"))
    clock.now = T0 + HOUR - 1  # live, and a refresh is due

    reader = asyncio.create_task(call(app, "/read?wait=1", cookie))
    await pause.inside.wait()  # loaded; the touch comes when the response starts
    if how == "flush":

        async def logout(scope: dict[str, Any], receive: Any, send: Send) -> None:
            scope["session"].flush()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        out = await call(middleware(logout, store, clock=clock), "/logout", cookie)
        assert set_cookies(out) == [EXPIRED_COOKIE]
    elif how == "delete_item":
        await dynamodb_client.delete_item(
            TableName=store.props.table_name, Key=store.key(sid(cookie))
        )
    else:
        clock.advance(2)  # the item's expiry passes before the refresh is written
    counting.calls.clear()
    pause.go.set()
    response = await reader

    assert response.status_code == 200
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert counting.calls["touch"] == 1
    assert counting.calls["create"] == counting.calls["save"] == 0
    items = await scan_all(dynamodb_client, store.props.table_name)
    if how == "expired":  # still there for TTL to sweep, but not refreshed
        assert [i["expire_at"] for i in items] == [{"N": str(T0 + HOUR)}]
    else:
        assert items == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("expiry refresh dropped" in m for m in warnings), warnings
    assert_no_leaks(caplog, cookie)


# -- absolute_timeout --------------------------------------------------------------------------


async def test_absolute_timeout_ends_an_active_session(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    app = middleware(
        make_app(),
        store,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=10),
        absolute_timeout=timedelta(hours=2),
        clock=clock,
    )
    cookie = cookie_of(await call(app, "/set?n=0"))
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["created_at"] == {"N": str(T0)}

    # Activity every 40 minutes: the expiry slides, but never past created + 2 h.
    for minutes, ends in ((40, T0 + 40 * 60 + HOUR), (80, T0 + 2 * HOUR), (110, T0 + 2 * HOUR)):
        clock.now = T0 + minutes * 60
        response = await call(app, f"/set?n={minutes}", cookie)
        assert response.status_code == 200
        assert set_cookies(response) == [cookie_header(cookie, clock.now, ends)]
        item = await item_of(dynamodb_client, store, cookie)
        assert item is not None
        assert item["expire_at"] == {"N": str(ends)}
        assert item["created_at"] == {"N": str(T0)}

    # A read at the cap is not "due": nothing would move.
    clock.now = T0 + 115 * 60
    response = await call(app, "/read", cookie)
    assert response.json() == {"n": "110"}
    assert set_cookies(response) == []

    # Past created + 2 h the cookie is treated as no session, whatever the activity.
    clock.now = T0 + 2 * HOUR
    response = await call(app, "/read", cookie)
    assert response.status_code == 200
    assert response.json() == {}
    assert set_cookies(response) == [EXPIRED_COOKIE]  # a dead cookie is expired
    # New data then starts a new session under a new id, with a new creation time.
    response = await call(app, "/set?n=new", cookie)
    fresh = cookie_of(response)
    assert sid(fresh) != sid(cookie)
    item = await item_of(dynamodb_client, store, fresh)
    assert item is not None
    assert item["created_at"] == {"N": str(T0 + 2 * HOUR)}
    assert data_of(item) == {"n": "new"}


async def test_touch_never_extends_past_the_absolute_timeout(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    counting = CountingStore(store)
    app = middleware(
        make_app(),
        counting,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=10),
        absolute_timeout=timedelta(minutes=90),
        clock=clock,
    )
    cookie = cookie_of(await call(app, "/set?user=u1"))
    counting.calls.clear()

    clock.now = T0 + 50 * 60  # due: the expiry would move from T0+60m to T0+110m, capped at 90m
    response = await call(app, "/read", cookie)
    assert set_cookies(response) == [cookie_header(cookie, clock.now, T0 + 90 * 60)]
    assert counting.calls["touch"] == 1
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["expire_at"] == {"N": str(T0 + 90 * 60)}

    clock.now = T0 + 89 * 60  # nothing left to extend: no write
    response = await call(app, "/read", cookie)
    assert response.json() == {"user": "u1"}
    assert set_cookies(response) == []
    assert counting.writes == 1

    clock.now = T0 + 90 * 60
    assert (await call(app, "/read", cookie)).json() == {}


async def test_a_lowered_absolute_timeout_ends_sessions_already_issued(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An item whose own expiry is still ahead is no session once created + timeout passed."""
    loose = middleware(make_app(), store, expiry=OnInactivity(timedelta(hours=1)), clock=clock)
    cookie = cookie_of(await call(loose, "/set?user=u1"))
    strict = middleware(
        make_app(),
        store,
        expiry=OnInactivity(timedelta(hours=1)),
        absolute_timeout=timedelta(minutes=30),
        clock=clock,
    )
    clock.now = T0 + 29 * 60
    assert (await call(strict, "/read", cookie)).json() == {"user": "u1"}
    clock.now = T0 + 30 * 60
    response = await call(strict, "/read", cookie)
    assert response.status_code == 200
    assert response.json() == {}
    assert set_cookies(response) == [EXPIRED_COOKIE]
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None and item["expire_at"] == {"N": str(T0 + HOUR)}  # untouched
    assert any("absolute timeout" in r.getMessage() for r in caplog.records)
    assert_no_leaks(caplog, cookie)


async def test_cycle_id_keeps_the_creation_time(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    app = middleware(
        make_app(),
        store,
        expiry=OnInactivity(timedelta(hours=1)),
        absolute_timeout=timedelta(hours=1),
        clock=clock,
    )
    cookie = cookie_of(await call(app, "/set?user=u1"))
    clock.now = T0 + 30 * 60
    response = await call(app, "/cycle", cookie)
    new = cookie_of(response)
    assert sid(new) != sid(cookie)
    # Capped by the original creation (T0 + 1 h), not by the cycle time (T0 + 90 m).
    assert set_cookies(response) == [cookie_header(new, clock.now, T0 + HOUR)]
    assert await item_of(dynamodb_client, store, cookie) is None
    item = await item_of(dynamodb_client, store, new)
    assert item is not None
    assert item["created_at"] == {"N": str(T0)}
    assert item["expire_at"] == {"N": str(T0 + HOUR)}
    assert data_of(item) == {"user": "u1"}

    clock.now = T0 + HOUR
    assert (await call(app, "/read", new)).json() == {}


async def test_an_item_without_version_or_creation_time_gets_both_on_its_first_save(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    """Items written by an older store (no version, no created_at) are adopted: the first save
    stamps the creation time, so the absolute timeout bounds them too."""
    from support import SECRET

    from asgi_dynamo_session._ids import new_id
    from asgi_dynamo_session.cookies import Signer

    session_id = new_id()
    item = store.key(session_id)
    item["expire_at"] = {"N": str(T0 + HOUR)}
    item["data"] = {"B": codec.encode(codec.pack({"legacy": "yes"}), None)}
    await dynamodb_client.put_item(TableName=store.props.table_name, Item=item)
    cookie = Signer(SECRET).sign(session_id)
    app = middleware(
        make_app(),
        store,
        clock=clock,
        expiry=OnInactivity(timedelta(hours=1)),
        absolute_timeout=timedelta(hours=2),
    )

    response = await call(app, "/set?x=1", cookie)
    assert response.status_code == 200
    assert response.json() == {"legacy": "yes", "x": "1"}
    stored = await item_of(dynamodb_client, store, cookie)
    assert stored is not None
    assert stored["version"] == {"N": "1"}
    assert stored["created_at"] == {"N": str(T0)}

    for _ in range(3):  # active every 50 minutes, yet ended two hours after the stamp
        clock.advance(50 * 60)
        response = await call(app, "/set?x=2", cookie)
    assert response.json() == {"x": "2"}  # a fresh session: the legacy data is gone
    assert cookie_of(response) != cookie


class ProtocolOnlyStore:
    """A user's store with just the four protocol methods (no touch, no take)."""

    def __init__(self, inner: DynamoDBStore) -> None:
        self.inner = inner

    async def create(self, record: Any) -> None:
        await self.inner.create(record)

    async def save(self, record: Any) -> None:
        await self.inner.save(record)

    async def load(self, session_id: str) -> Any:
        return await self.inner.load(session_id)

    async def delete(self, session_id: str) -> None:
        await self.inner.delete(session_id)


async def test_a_store_without_touch_or_take_still_refreshes_and_cycles(
    store: DynamoDBStore, dynamodb_client: Any, clock: Clock
) -> None:
    app = middleware(
        make_app(),
        ProtocolOnlyStore(store),
        clock=clock,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=5),
    )
    cookie = cookie_of(await call(app, "/set?a=1"))
    clock.advance(10 * 60)
    response = await call(app, "/read", cookie)  # due: refreshed through a full save
    assert cookie_of(response) == cookie
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert item["expire_at"] == {"N": str(int(clock.now) + HOUR)}
    assert item["version"] == {"N": "2"}

    cycled = cookie_of(await call(app, "/cycle", cookie))
    assert sid(cycled) != sid(cookie)
    assert await item_of(dynamodb_client, store, cookie) is None
    assert data_of(await item_of(dynamodb_client, store, cycled)) == {"a": "1"}
