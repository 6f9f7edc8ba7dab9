"""Spec point 9 on a real server: parallel requests on one session.

Races are made deterministic with asyncio events: a request's app pauses between reading and
returning (after the middleware loaded the session, before it saves), so other requests on the
same cookie save while it waits. Requests go through the in-process httpx ASGI client, each
with an explicit Cookie header (a fresh client per request, so no cookie jar interferes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from support import (
    EXPIRED_COOKIE,
    TRANSPORTS,
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

from asgi_dynamo_session import DynamoDBStore

pytestmark = pytest.mark.usefixtures("library_logs")

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Gate:
    """Holds requests inside the app until `n` of them arrived (or until `open()`)."""

    def __init__(self, n: int = 1_000_000) -> None:
        self.n = n
        self.arrived = 0
        self.first = asyncio.Event()
        self.released = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        self.first.set()
        if self.arrived >= self.n:
            self.released.set()
        await self.released.wait()

    def open(self) -> None:
        self.released.set()


def make_app(gate: Gate | None = None) -> Callable[..., Awaitable[None]]:
    """A raw ASGI app driven by the path and query string.

    /set?k=v&...   set keys          /del?k   delete keys       /flush    flush()
    /cycle?k=v     cycle_id() + set  /pair?v=x  a = x, pause?, b = x
    /read          answer the data as JSON
    Any request with `wait=1` pauses at the gate after reading the session and changing it.
    """

    async def app(scope: Scope, receive: Any, send: Send) -> None:
        session = scope["session"]
        query = {
            k: v[0]
            for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()
        }
        wait = query.pop("wait", None) == "1"
        path = scope["path"]
        seen = dict(session.items())
        if path == "/set":
            for key, value in query.items():
                session[key] = value
        elif path == "/del":
            for key in query:
                del session[key]
        elif path == "/flush":
            session.flush()
        elif path == "/cycle":
            session.cycle_id()
            for key, value in query.items():
                session[key] = value
        elif path == "/pair":
            session["a"] = query["v"]
            if wait and gate is not None:
                await gate.arrive()  # half-way through this request's change
                wait = False
            session["b"] = query["v"]
        if wait and gate is not None:
            await gate.arrive()
        body = json.dumps(seen).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(params=TRANSPORTS)
async def store(
    request: pytest.FixtureRequest, dynamodb_server: Any, table_name: str
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name, transport=request.param) as s:
        yield s


async def start_session(app: Any, **data: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in data.items())
    response = await call(app, f"/set?{query}")
    assert response.status_code == 200
    return cookie_of(response)


# -- merging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 8])
async def test_parallel_distinct_keys_are_all_kept(
    store: DynamoDBStore, dynamodb_client: Any, caplog: pytest.LogCaptureFixture, n: int
) -> None:
    gate = Gate(n)  # every request has loaded the same version before any of them saves
    # n - 1 conflicts at most per request: each lost race means another request's save won.
    # The default (8 attempts) covers 8 writers released at once.
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, base="0")

    responses = await asyncio.gather(
        *(call(app, f"/set?k{i}={i}&wait=1", cookie) for i in range(n))
    )

    assert [r.status_code for r in responses] == [200] * n
    for r in responses:
        assert r.json() == {"base": "0"}  # each request saw the state it loaded, no more
        assert cookie_of(r) == cookie  # same id, re-sent
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert data_of(item) == {"base": "0", **{f"k{i}": str(i) for i in range(n)}}
    assert item["version"] == {"N": str(1 + n)}  # one create + exactly one write per request
    assert len(await scan_all(dynamodb_client, store.props.table_name)) == 1
    assert any("merged" in rec.getMessage() for rec in caplog.records)
    assert_no_leaks(caplog, cookie)


async def test_parallel_writers_beyond_the_retry_budget_never_lose_an_acknowledged_write(
    store: DynamoDBStore, dynamodb_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With 3 attempts and 8 writers released at once, a request may give up: then it
    answers 503 and its key is not stored; every 200 has its key stored."""
    n = 8
    gate = Gate(n)
    app = middleware(make_app(gate), store, save_attempts=3)
    cookie = await start_session(app, base="0")

    responses = await asyncio.gather(
        *(call(app, f"/set?k{i}={i}&wait=1", cookie) for i in range(n))
    )

    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    data = data_of(item)
    ok = [i for i, r in enumerate(responses) if r.status_code == 200]
    assert ok, "at least the first save of the race wins"
    for i, r in enumerate(responses):
        if r.status_code == 200:
            assert data[f"k{i}"] == str(i)
        else:
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert f"k{i}" not in data
    assert data["base"] == "0"
    assert item["version"] == {"N": str(1 + len(ok))}
    assert_no_leaks(caplog, cookie)


async def test_same_key_the_later_save_wins(store: DynamoDBStore, dynamodb_client: Any) -> None:
    gate = Gate()
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, x="0", gone="0", kept="0")

    slow = asyncio.create_task(call(app, "/set?x=A&wait=1", cookie))
    await gate.first.wait()  # A has loaded and changed x, and waits before saving
    fast = await call(app, "/set?x=B&y=B", cookie)
    fast_del = await call(app, "/del?gone", cookie)
    assert fast.status_code == fast_del.status_code == 200
    gate.open()
    late = await slow

    assert late.status_code == 200
    assert cookie_of(late) == cookie
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    # A saved last: its x wins; B's other key and the deletion of `gone` are kept.
    assert data_of(item) == {"x": "A", "y": "B", "kept": "0"}
    assert item["version"] == {"N": "4"}


async def test_a_deletion_saved_later_wins_over_an_earlier_change(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    gate = Gate()
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, x="0", y="0")

    slow = asyncio.create_task(call(app, "/del?x&wait=1", cookie))
    await gate.first.wait()
    assert (await call(app, "/set?x=B&y=B", cookie)).status_code == 200
    gate.open()
    assert (await slow).status_code == 200

    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    assert data_of(item) == {"y": "B"}


# -- no resurrection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slow_path",
    [
        "/set?x=slow&wait=1",  # a modifying request: a conditional save
        "/cycle?x=slow&wait=1",  # a login: take the old item, then create
        "/pair?v=slow&wait=1",  # paused half-way through its change
    ],
)
async def test_flush_racing_a_slow_request_stays_flushed(
    store: DynamoDBStore,
    dynamodb_client: Any,
    caplog: pytest.LogCaptureFixture,
    slow_path: str,
) -> None:
    gate = Gate()
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, x="0")

    slow = asyncio.create_task(call(app, slow_path, cookie))
    await gate.first.wait()
    logout = await call(app, "/flush", cookie)
    assert logout.status_code == 200
    assert set_cookies(logout) == [EXPIRED_COOKIE]
    gate.open()
    late = await slow

    assert late.status_code == 200
    assert set_cookies(late) == [
        EXPIRED_COOKIE
    ]  # the response that lost the race expires the cookie
    assert await item_of(dynamodb_client, store, cookie) is None
    assert await scan_all(dynamodb_client, store.props.table_name) == []  # nothing recreated
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("deleted meanwhile" in r.getMessage() for r in warnings)
    assert_no_leaks(caplog, cookie)

    # The old cookie now names no session at all.
    again = await call(app, "/read", cookie)
    assert again.status_code == 200
    assert again.json() == {}
    assert set_cookies(again) == [EXPIRED_COOKIE]  # dead: expired once more


async def test_replacement_racing_a_flush_is_not_resurrected(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    """A whole replacement (a framework's set_session) loses to a flush like any save."""
    gate = Gate()

    async def app(scope: Scope, receive: Any, send: Send) -> None:
        if scope["path"] == "/replace":
            scope["session"] = {"who": "replacement"}
            await gate.arrive()
        else:
            scope["session"].flush()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = middleware(app, store)
    cookie = await start_session(middleware(make_app(), store), x="0")
    slow = asyncio.create_task(call(mw, "/replace", cookie))
    await gate.first.wait()
    assert set_cookies(await call(mw, "/flush", cookie)) == [EXPIRED_COOKIE]
    gate.open()
    late = await slow

    assert late.status_code == 200
    assert set_cookies(late) == [EXPIRED_COOKIE]
    assert await scan_all(dynamodb_client, store.props.table_name) == []


# -- id cycling --------------------------------------------------------------------------------


async def test_two_cycle_id_races_leave_exactly_one_new_id(
    store: DynamoDBStore, dynamodb_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(2)  # both logins loaded the old session before either cycles
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, cart="3")

    a, b = await asyncio.gather(
        call(app, "/cycle?who=A&wait=1", cookie), call(app, "/cycle?who=B&wait=1", cookie)
    )

    assert a.status_code == b.status_code == 200
    winners = [(who, r) for who, r in (("A", a), ("B", b)) if set_cookies(r) != [EXPIRED_COOKIE]]
    losers = [r for r in (a, b) if set_cookies(r) == [EXPIRED_COOKIE]]
    assert len(winners) == 1 and len(losers) == 1
    who, winner = winners[0]
    new_cookie = cookie_of(winner)
    assert sid(new_cookie) != sid(cookie)

    items = await scan_all(dynamodb_client, store.props.table_name)
    assert len(items) == 1
    assert await item_of(dynamodb_client, store, cookie) is None  # the old item is gone
    item = await item_of(dynamodb_client, store, new_cookie)
    assert item is not None
    assert data_of(item) == {"cart": "3", "who": who}  # the winner's data, as a whole

    assert (await call(app, "/read", new_cookie)).json() == {"cart": "3", "who": who}
    assert (await call(app, "/read", cookie)).json() == {}
    assert any("deleted meanwhile" in r.getMessage() for r in caplog.records)
    assert_no_leaks(caplog, cookie, new_cookie)


async def test_cycle_racing_a_slow_save_keeps_one_session(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    """A save that loses to an id cycle is dropped (cycle_id wins as a whole) and never
    recreates the old id; the new id holds the cycled data."""
    gate = Gate()
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, x="0")

    slow = asyncio.create_task(call(app, "/set?y=slow&wait=1", cookie))
    await gate.first.wait()
    login = await call(app, "/cycle?user=u1", cookie)
    new_cookie = cookie_of(login)
    gate.open()
    late = await slow

    assert late.status_code == 200
    assert set_cookies(late) == [EXPIRED_COOKIE]
    items = await scan_all(dynamodb_client, store.props.table_name)
    assert len(items) == 1
    item = await item_of(dynamodb_client, store, new_cookie)
    assert item is not None
    assert data_of(item) == {"x": "0", "user": "u1"}


# -- no half state -----------------------------------------------------------------------------


async def test_a_paused_writer_is_never_seen_half_way(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    gate = Gate()
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, a="0", b="0")

    writer = asyncio.create_task(call(app, "/pair?v=1&wait=1", cookie))
    await gate.first.wait()  # a = 1 is set in the writer's session, b not yet
    during = await call(app, "/read", cookie)
    assert during.json() == {"a": "0", "b": "0"}
    gate.open()
    assert (await writer).status_code == 200
    after = await call(app, "/read", cookie)
    assert after.json() == {"a": "1", "b": "1"}


async def test_racing_pair_writers_merge_to_one_of_them(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    """Two writers that both change a and b from the same snapshot: the merge never mixes them."""
    gate = Gate(2)
    app = middleware(make_app(gate), store)
    cookie = await start_session(app, a="0", b="0")

    first, second = await asyncio.gather(
        call(app, "/set?a=1&b=1&wait=1", cookie), call(app, "/set?a=2&b=2&wait=1", cookie)
    )

    assert first.status_code == second.status_code == 200
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    data = data_of(item)
    assert data["a"] == data["b"] in ("1", "2")


async def test_concurrent_readers_always_see_equal_pairs(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    writers, readers, rounds = 4, 8, 3
    app = middleware(make_app(), store, save_attempts=writers + 1)
    cookie = await start_session(app, a="0", b="0")

    for r in range(rounds):
        calls = []
        for i in range(max(writers, readers)):
            if i < readers:
                calls.append(call(app, "/read", cookie))
            if i < writers:
                calls.append(call(app, f"/set?a=w{r}.{i}&b=w{r}.{i}", cookie))
        responses = await asyncio.gather(*calls)
        assert [x.status_code for x in responses] == [200] * len(calls)
        for response in responses:
            seen = response.json()
            assert seen["a"] == seen["b"], seen
    item = await item_of(dynamodb_client, store, cookie)
    assert item is not None
    data = data_of(item)
    assert data["a"] == data["b"]
    assert item["version"] == {"N": str(1 + writers * rounds)}
