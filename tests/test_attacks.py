"""Review of the issue 8 fix: each test is an attack that the fix does not withstand (it fails on
the reviewed code). Real moto/dynalite servers; faults at the network (`FaultProxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from netfault import FaultProxy
from support import (
    EXPIRED_COOKIE,
    SECRET,
    T0,
    Clock,
    Paused,
    app_doing,
    cookie_of,
    dynamo_store,
    fetch,
    key_of,
    middleware,
    plain_data_of,
    read_item,
    scan_all,
    set_cookies,
    sid,
    signed,
)

from asgi_dynamo_session import (
    AtDateTime,
    DynamoDBStore,
    MemoryStore,
    OnInactivity,
    Record,
    Session,
    SessionConflict,
    SessionEvent,
    SessionMiddleware,
)

pytestmark = pytest.mark.usefixtures("library_logs")


class GatedProxy(FaultProxy):
    """A FaultProxy that, once it has lost an answer, holds the *next* request (the client's
    retry or its read-back) until `release()`: other clients can act in between."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.gate = asyncio.Event()
        self.held = asyncio.Event()
        self._hold_next = False

    def _decide(self, size: int, info: Any = None) -> tuple[str, int]:
        action, n = super()._decide(size, info)
        if action == "lose":
            self._hold_next = True
        return action, n

    def release(self) -> None:
        self.gate.set()

    async def _client_to_server(self, conn: Any) -> None:
        # hold the first complete request after a lost answer, then behave as FaultProxy
        original = conn.client_r

        proxy = self

        class Reader:
            async def read(self, n: int) -> bytes:
                data: bytes = await original.read(n)
                if data and proxy._hold_next and not proxy.gate.is_set():
                    proxy._hold_next = False
                    proxy.held.set()
                    await proxy.gate.wait()
                return data

        conn.client_r = Reader()
        await super()._client_to_server(conn)


@pytest.fixture
async def gated(dynamodb_server: Any) -> AsyncIterator[GatedProxy]:
    host, port = dynamodb_server.endpoint_url.removeprefix("http://").split(":")
    proxy = GatedProxy(host, int(port))
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.release()
        await proxy.stop()


@pytest.fixture
async def direct(
    dynamodb_server: Any, table_name: str, transport: str
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name, transport=transport) as s:
        yield s


async def stored(raw: Any, store: DynamoDBStore, session_id: str) -> dict[str, Any] | None:
    item = await read_item(raw, store.props.table_name, key_of(session_id))
    return None if item is None else plain_data_of(item)


# --- 1. a lost save answer, then another request's acknowledged write -------------------------


# --- 2. a cycle whose merge save fails after the take ------------------------------------------


async def test_cycle_merge_save_failure_keeps_the_old_session_and_leaves_no_orphan(
    fault_proxy: FaultProxy, direct: DynamoDBStore, table_name: str, transport: str, raw: Any
) -> None:
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct)))
    pause = Paused()

    async def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"
        await pause.wait()

    async def add_to_cart() -> Any:
        response = await fetch(
            middleware(app_doing(lambda s: s.update(cart=1)), direct), f"id={cookie}"
        )
        assert response.status_code == 200  # acknowledged
        # the login's create and take pass; its merge save is cut
        await fault_proxy.reset_after(2)
        return response

    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, create=False, max_attempts=1
    ) as via_proxy:
        logged_in, _ = await pause.run(
            fetch(middleware(app_doing(login), via_proxy), f"id={cookie}"), add_to_cart
        )
    assert fault_proxy.resets == 1
    assert logged_in.status_code == 503
    items = await scan_all(raw, table_name)
    # a failed save leaves the previously stored session intact (spec 10) ...
    assert await stored(raw, direct, sid(cookie)) == {"n": 0, "cart": 1}
    # ... and no item that no cookie names
    assert len(items) == 1


# --- 3. a SessionConflict escapes the cycle (a 500 with a traceback) --------------------------


async def test_cycle_to_a_short_fixed_end_with_a_concurrent_write_is_not_a_crash(
    direct: DynamoDBStore, raw: Any, table_name: str
) -> None:
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct)))
    pause = Paused()
    end = datetime.now(timezone.utc) + timedelta(seconds=3)  # within clock_skew (5 s)

    async def login(session: Session) -> None:
        session.cycle_id()
        session.set_expiry(AtDateTime(end))
        session["user"] = "ada"
        await pause.wait()

    async def add_to_cart() -> Any:
        return await fetch(
            middleware(app_doing(lambda s: s.update(cart=1)), direct), f"id={cookie}"
        )

    async def attempt() -> Any:
        try:
            return await fetch(middleware(app_doing(login), direct), f"id={cookie}")
        except SessionConflict as exc:  # escaped the middleware: a server answers 500
            return exc

    logged_in, _ = await pause.run(attempt(), add_to_cart)
    assert not isinstance(logged_in, SessionConflict), "SessionConflict escaped the middleware"
    assert len(await scan_all(raw, table_name)) <= 1  # no orphan either


# --- 4. README: the order and number of a login's writes ---------------------------------------


async def test_readme_login_is_create_then_take_then_delete(
    fault_proxy: FaultProxy, table_name: str, transport: str
) -> None:
    async with dynamo_store(fault_proxy.endpoint_url, table_name, transport=transport) as store:
        cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(n=0)), store)))

        def login(session: Session) -> None:
            session.cycle_id()
            session["user"] = "ada"

        fault_proxy.reset_counters()
        await fetch(middleware(app_doing(login), store), f"id={cookie}")
    writes = [i.action for i in fault_proxy.log if i.action != "GetItem"]
    # README "Concurrency and consistency": "A login costs three writes: create, take, delete"
    assert writes == ["PutItem", "UpdateItem", "DeleteItem"]


# --- 5. MemoryStore parity ---------------------------------------------------------------------


async def test_memory_store_remove_of_a_gone_item_matches_dynamodb(direct: DynamoDBStore) -> None:
    """`remove` of an item somebody already deleted: DynamoDBStore treats it as done (gone is
    what was asked for); MemoryStore raises SessionConflict(None)."""
    outcomes = []
    for store in (direct, MemoryStore()):
        record = Record(
            id="a" * 43, data={"n": 1}, expiry_date=datetime.now(timezone.utc) + timedelta(hours=1)
        )
        await store.create(record)
        await store.delete(record.id)
        try:
            await store.remove(record)
            outcomes.append("done")
        except SessionConflict as exc:
            outcomes.append(f"conflict({exc.current})")
    assert outcomes[0] == outcomes[1], outcomes


@pytest.mark.parametrize("kind", ["dynamodb", "memory"])
async def test_pop_last_key_racing_a_flush_reports_ended_on_both_stores(
    direct: DynamoDBStore, kind: str
) -> None:
    store: Any = direct if kind == "dynamodb" else MemoryStore()
    events: list[str] = []

    def on_event(event: SessionEvent) -> None:
        events.append(event.kind)

    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(flash=1)), store)))
    pause = Paused()

    async def show_flash(session: Session) -> None:
        session.pop("flash")
        await pause.wait()

    async def logout() -> Any:
        return await fetch(middleware(app_doing(lambda s: s.flush()), store), f"id={cookie}")

    await pause.run(
        fetch(middleware(app_doing(show_flash), store, on_event=on_event), f"id={cookie}"),
        logout,
    )
    assert events == ["ended"], f"{kind}: {events}"


async def test_memory_store_refuses_what_dynamodb_refuses_as_too_large(
    direct: DynamoDBStore,
) -> None:
    big = {"blob": os.urandom(512 * 1024)}  # incompressible, over DynamoDB's 400 KB
    statuses = []
    for store in (direct, MemoryStore()):
        response = await fetch(middleware(app_doing(lambda s: s.update(big)), store))
        statuses.append(response.status_code)
    assert statuses[0] == 500
    assert statuses[0] == statuses[1], f"DynamoDBStore {statuses[0]}, MemoryStore {statuses[1]}"


# --- 6. a malformed version is a live session whose every write is a 503 ----------------------


async def test_an_item_with_version_zero_is_no_session_not_a_503(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    session_id = "b" * 43
    item = {
        **dstore.key(session_id),
        "expire_at": {"N": str(T0 + 3600)},
        "data": {"B": b"\x01" + msgspec.msgpack.encode({"user": "ada"})},
        "version": {"N": "0"},
    }
    await raw.put_item(TableName=dstore.props.table_name, Item=item)
    app = middleware(app_doing(lambda s: s.update(n=1)), dstore, clock=clock)
    response = await fetch(app, f"id={signed(session_id)}")
    assert response.status_code != 503, "an unreadable item made every write fail"


# --- 7. cookie attributes outside ASCII --------------------------------------------------------


@pytest.mark.parametrize("path", ["/ü", "/日本"])
async def test_a_non_ascii_cookie_path_is_refused_or_round_trips(path: str) -> None:
    try:
        app = SessionMiddleware(
            app_doing(lambda s: s.update(n=1)), store=MemoryStore(), secret_keys=SECRET, path=path
        )
    except ValueError:
        return  # refused at construction, like ';' or CR/LF: fine
    from asgi_dynamo_session.cookies import CookieFormat

    fmt = CookieFormat(
        "id",
        path=path,
        domain=None,
        secure=True,
        http_only=True,
        same_site="lax",
        partitioned=False,
    )
    try:
        set_header = fmt.set("v", None, 0.0)
    except UnicodeEncodeError:
        pytest.fail(f"path {path!r} accepted at construction, but every Set-Cookie raises")
    expire_header = fmt.expire()
    set_path = set_header.split(b";")[1]
    expire_path = expire_header.split(b";")[1]
    # the expiry must name the cookie the browser holds: the same Path bytes
    assert set_path == expire_path, (set_path, expire_path)
    assert app is not None


# --- 8. cycle_id() whose data ends empty after a merge keeps the old id -----------------------


async def test_cycle_id_always_moves_to_a_new_id(direct: DynamoDBStore, raw: Any) -> None:
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(nonce=1)), direct)))
    pause = Paused()

    async def login(session: Session) -> None:
        session.pop("nonce")
        session.cycle_id()
        await pause.wait()

    async def other_tab() -> Any:
        return await fetch(
            middleware(app_doing(lambda s: s.update(theme="dark")), direct), f"id={cookie}"
        )

    logged_in, _ = await pause.run(
        fetch(middleware(app_doing(login), direct), f"id={cookie}"), other_tab
    )
    # cycle_id() was asked for: the session the response leaves must not be under the old id
    assert await stored(raw, direct, sid(cookie)) is None, set_cookies(logged_in)


# --- 9. an explicit save() that failed during a cycle corrupts the session ---------------------


async def test_a_caught_save_failure_in_a_cycle_does_not_lose_the_later_changes(
    fault_proxy: FaultProxy, direct: DynamoDBStore, table_name: str, transport: str, raw: Any
) -> None:
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct)))
    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, create=False, max_attempts=1
    ) as via_proxy:

        async def login(session: Session) -> None:
            session.cycle_id()
            session["user"] = "ada"
            await fault_proxy.reset_after(1)  # the create passes, the take is cut
            # the app carries on; the middleware saves at response start
            with contextlib.suppress(Exception):
                await session.save()
            await fault_proxy.forward()
            session["later"] = True

        response = await fetch(middleware(app_doing(login), via_proxy), f"id={cookie}")
    assert response.status_code in (200, 503)
    if response.status_code == 503:
        return
    cookies = set_cookies(response)
    # a 200 for the login: the session the browser is left with holds the app's changes
    assert cookies != [EXPIRED_COOKIE], (
        "200 for a login that was dropped: cookie expired, old item left behind as "
        f"{await stored(raw, direct, sid(cookie))}"
    )
    holder = sid(cookie_of(response)) if cookies else sid(cookie)
    assert await stored(raw, direct, holder) == {"n": 0, "user": "ada", "later": True}


# --- 10. a take whose answer was lost, and the tombstone purged before the retry --------------


@pytest.mark.parametrize("attempts", [1, 3], ids=["no-retry", "retry"])
async def test_lost_take_answer_then_the_tombstone_is_purged(
    gated: GatedProxy,
    direct: DynamoDBStore,
    table_name: str,
    transport: str,
    raw: Any,
    attempts: int,
) -> None:
    """The take applied, its answer was lost; before the retry/read-back, `delete_expired()`
    (or DynamoDB's TTL) runs. The ended item must still be there for the retry: the login was
    applied, it must not be dropped, and the session must not be destroyed with a 503."""
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct)))

    def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"

    async with dynamo_store(
        gated.endpoint_url,
        table_name,
        transport=transport,
        create=False,
        max_attempts=attempts,
        read_timeout=30,
    ) as via_proxy:
        await gated.lose_next_response(action="UpdateItem")
        task = asyncio.ensure_future(fetch(middleware(app_doing(login), via_proxy), f"id={cookie}"))
        await asyncio.wait_for(gated.held.wait(), 20)
        # an ended item keeps its expiry (it is marked `ended_by`): nothing there to purge
        assert await direct.delete_expired() == 0
        gated.release()
        response = await task
    assert response.status_code == 200, "the session was destroyed and the login answered 503"
    assert set_cookies(response) != [EXPIRED_COOKIE], "an applied login was dropped"
    assert await stored(raw, direct, sid(cookie_of(response))) == {"n": 0, "user": "ada"}


# --- 11. changes after the response started ----------------------------------------------------


def streaming(action: Callable[[Session], Any]) -> Any:
    """An app that starts its response, then runs `action(session)`, then ends the body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        action(scope["session"])
        await send({"type": "http.response.body", "body": b"ok"})

    return app


# --- 12. policies that do not come back as they were set ---------------------------------------


def test_a_policy_that_could_not_be_read_back_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="century"):
        OnInactivity(timedelta(days=101 * 366))
    with pytest.raises(ValueError, match="9999"):
        AtDateTime(datetime(9999, 12, 31, 12, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    "expiry",
    [
        OnInactivity(timedelta(seconds=1_234_567)),  # dump_policy's :g kept 6 digits
        OnInactivity(timedelta(seconds=1_234_567.25)),
    ],
    ids=["precision", "fraction"],
)
async def test_a_per_session_policy_round_trips(direct: DynamoDBStore, expiry: Any) -> None:
    def remember(session: Session) -> None:
        session["user"] = "ada"
        session.set_expiry(expiry)

    try:
        first = await fetch(middleware(app_doing(remember), direct))
    except ValueError as exc:  # out of the middleware: a 500, after the item was written
        pytest.fail(f"set_expiry({expiry}) crashed the save: {exc}")
    cookie = cookie_of(first)
    seen: list[Any] = []
    await fetch(
        middleware(app_doing(lambda s: seen.append((s.get("user"), s.expiry))), direct),
        f"id={cookie}",
    )
    assert seen == [("ada", expiry)]


# --- 13. a created_at near the end of time with absolute_timeout is a crash ---------------------


async def test_a_created_at_at_the_end_of_time_is_no_session(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    session_id = "c" * 43
    item = {
        **dstore.key(session_id),
        "expire_at": {"N": str(T0 + 3600)},
        "data": {"B": b"\x01" + msgspec.msgpack.encode({"user": "ada"})},
        "version": {"N": "1"},
        "created_at": {"N": "253402214400"},  # accepted by _whole (<= _MAX_EPOCH)
    }
    await raw.put_item(TableName=dstore.props.table_name, Item=item)
    app = middleware(
        app_doing(lambda s: s.get("user")), dstore, clock=clock, absolute_timeout=timedelta(days=7)
    )
    try:
        response = await fetch(app, f"id={signed(session_id)}")
    except OverflowError:
        pytest.fail("a malformed created_at crashed the request (500)")
    assert response.status_code == 200


# --- 14. a lost touch answer, then another request's save ---------------------------------------


# --- 15. a response that sets the session cookie without varying on it -------------------------


async def test_a_response_carrying_a_session_cookie_varies_on_cookie(
    direct: DynamoDBStore,
) -> None:
    """A read-only page that never reads the session, but whose response re-sends the
    session cookie (a due touch): a shared cache may store it and hand the cookie to others."""
    expiry = OnInactivity(timedelta(hours=1))
    cookie = cookie_of(
        await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct, expiry=expiry))
    )
    later = Clock(time.time() + 1200)
    response = await fetch(
        middleware(app_doing(lambda s: None), direct, expiry=expiry, clock=later), f"id={cookie}"
    )
    assert set_cookies(response) and set_cookies(response)[0].startswith("id=" + sid(cookie))
    vary = response.headers.get("vary", "")
    cache = response.headers.get("cache-control", "")
    assert "cookie" in vary.lower() or "private" in cache or "no-store" in cache, (
        "Set-Cookie with the session id on a response with no Vary: Cookie / Cache-Control"
    )


# --- a lost answer, then another request's write: recognised by the token history ---------


@pytest.mark.parametrize("attempts", [1, 3], ids=["no-retry", "retry"])
async def test_lost_save_answer_then_another_acknowledged_write(
    gated: GatedProxy,
    direct: DynamoDBStore,
    table_name: str,
    transport: str,
    raw: Any,
    attempts: int,
) -> None:
    """A's save is applied, its answer lost; before A's retry/read-back, B loads A's write and
    saves the same key. Then A must not 503 (its write was applied) and must not overwrite B's
    later, acknowledged value."""
    cookie = cookie_of(await fetch(middleware(app_doing(lambda s: s.update(x=0)), direct)))
    async with dynamo_store(
        gated.endpoint_url,
        table_name,
        transport=transport,
        create=False,
        max_attempts=attempts,
        read_timeout=30,
    ) as via_proxy:
        await gated.lose_next_response(action="PutItem")
        a = asyncio.ensure_future(
            fetch(middleware(app_doing(lambda s: s.update(x=1)), via_proxy), f"id={cookie}")
        )
        await asyncio.wait_for(gated.held.wait(), 20)
        seen: list[Any] = []

        def b_action(s: Session) -> None:
            seen.append(s.get("x"))
            s["x"] = 2

        b = await fetch(middleware(app_doing(b_action), direct), f"id={cookie}")
        assert seen == [1]  # B saw A's applied write
        assert b.status_code == 200  # B's x=2 is acknowledged
        gated.release()
        a_response = await a
    assert a_response.status_code == 200, "503 for a save that DynamoDB applied"
    assert await stored(raw, direct, sid(cookie)) == {"x": 2}, "B's acknowledged x=2 lost"


async def test_lost_touch_answer_then_a_save_is_not_a_503(
    gated: GatedProxy, table_name: str, transport: str, dynamodb_server: Any, raw: Any
) -> None:
    expiry = OnInactivity(timedelta(hours=1))
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport
    ) as direct:
        cookie = cookie_of(
            await fetch(middleware(app_doing(lambda s: s.update(n=0)), direct, expiry=expiry))
        )
        later = Clock(time.time() + 1200)  # a touch is due (a tenth of 1 h)
        async with dynamo_store(
            gated.endpoint_url,
            table_name,
            transport=transport,
            create=False,
            max_attempts=1,
            read_timeout=30,
        ) as via_proxy:
            await gated.lose_next_response(action="UpdateItem")
            task = asyncio.ensure_future(
                fetch(
                    middleware(
                        app_doing(lambda s: s.get("n")), via_proxy, expiry=expiry, clock=later
                    ),
                    f"id={cookie}",
                )
            )
            await asyncio.wait_for(gated.held.wait(), 20)
            other = await fetch(
                middleware(app_doing(lambda s: s.update(m=1)), direct, expiry=expiry),
                f"id={cookie}",
            )
            assert other.status_code == 200
            gated.release()
            response = await task
    assert response.status_code == 200, "a read-only request whose touch was applied got 503"
