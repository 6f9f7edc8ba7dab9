"""Issue 8: each promise attacked where it broke — hostile cookies, lost answers, races, bad items.

Every test runs on the suite's server (moto or dynalite) and, where DynamoDB calls are made, on
both transports. Faults are injected at the network by `FaultProxy` (a lost answer is a request
the server applied whose response the client never got).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netfault import FaultProxy
from support import (
    EXPIRED_COOKIE,
    SECRET,
    T0,
    Clock,
    CountingStore,
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
    Session,
    SessionMiddleware,
)

pytestmark = pytest.mark.usefixtures("library_logs")

FLAGS = "; HttpOnly; Secure; SameSite=Lax"


@pytest.fixture
async def proxied(
    fault_proxy: FaultProxy, table_name: str, transport: str, request: pytest.FixtureRequest
) -> AsyncIterator[DynamoDBStore]:
    """A store owning its client, reaching the server through the fault proxy."""
    attempts = getattr(request, "param", 3)
    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, max_attempts=attempts
    ) as store:
        yield store


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- 1. hostile cookie bytes never reach hmac or the store ------------------------------------


async def asgi_http(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """One raw ASGI http request with exactly these header bytes; the messages sent back."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 443),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def header_values(message: dict[str, Any], name: bytes) -> list[bytes]:
    return [v for k, v in message.get("headers", []) if k.lower() == name]


@pytest.mark.parametrize(
    "value",
    [
        b"a" * 43 + b"." + b"\xe9" * 43,
        b"\xff" * 43 + b"." + b"a" * 43,
        b"a" * 43 + b"." + b"a" * 42 + b"\x80",
        b"a" * 43 + b"\xb7" + b"a" * 43,
        "é".encode() * 20,
    ],
)
async def test_non_ascii_cookie_bytes_are_no_session(value: bytes) -> None:
    store = CountingStore(MemoryStore())
    seen: list[Any] = []
    app = middleware(app_doing(lambda s: seen.append((s.id, dict(s)))), store)
    sent = await asgi_http(app, [(b"cookie", b"id=" + value)])
    assert sent[0]["status"] == 200
    assert seen == [(None, {})]
    assert store.calls == {}  # never reached the store
    assert header_values(sent[0], b"set-cookie") == [EXPIRED_COOKIE.encode()]


LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters=";")
OUR_SHAPE = st.builds(
    lambda a, b: (a + "." + b).encode("latin-1"),
    st.one_of(
        st.text(LATIN1, min_size=43, max_size=43),
        st.text("abcXYZ019_-", min_size=43, max_size=43),  # a plausible id half
    ),
    st.text(LATIN1, min_size=43, max_size=43),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=120), OUR_SHAPE))
async def test_any_cookie_bytes_give_the_app_or_a_fresh_session(raw_value: bytes) -> None:
    store = CountingStore(MemoryStore())
    app = middleware(app_doing(lambda s: s.get("x")), store)
    value = raw_value.replace(b";", b"").replace(b"\r", b"").replace(b"\n", b"")
    sent = await asgi_http(app, [(b"cookie", b"id=" + value), (b"cookie", b"id=" + raw_value)])
    assert sent[0]["status"] == 200
    assert store.calls == {}  # a forged value cannot name an id whose signature verifies


async def test_non_ascii_cookie_on_a_websocket_is_no_session() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(scope["session"].id)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"cookie", b"id=" + b"a" * 43 + b"." + b"\xe9" * 43)],
        "query_string": b"",
    }
    await middleware(app, MemoryStore())(scope, receive, send)
    assert seen == [None]
    assert sent[0]["type"] == "websocket.accept"
    # the dead cookie is expired in the accept's headers
    assert header_values(sent[0], b"set-cookie") == [EXPIRED_COOKIE.encode()]


# --- 3. a write whose answer was lost is recognised as applied --------------------------------


@pytest.mark.parametrize("proxied", [1, 3], indirect=True, ids=["no-retry", "retry"])
async def test_lost_answer_to_a_create_is_success_with_no_orphan(
    proxied: DynamoDBStore, fault_proxy: FaultProxy, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await fault_proxy.lose_next_response(action="PutItem")
    response = await fetch(middleware(app_doing(lambda s: s.update(user="ada")), proxied))
    assert fault_proxy.lost == 1
    assert response.status_code == 200
    new = sid(cookie_of(response))
    items = await scan_all(raw, proxied.props.table_name)
    assert len(items) == 1  # no orphan from a second attempt under another id
    assert plain_data_of(await read_item(raw, proxied.props.table_name, key_of(new))) == {
        "user": "ada"
    }
    assert not any("collision" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("proxied", [1, 3], indirect=True, ids=["no-retry", "retry"])
async def test_lost_answer_to_a_save_is_the_apps_response(
    proxied: DynamoDBStore, fault_proxy: FaultProxy, raw: Any
) -> None:
    first = await fetch(middleware(app_doing(lambda s: s.update(n=1)), proxied))
    cookie = cookie_of(first)
    await fault_proxy.lose_next_response(action="PutItem")
    response = await fetch(middleware(app_doing(lambda s: s.update(n=2)), proxied), f"id={cookie}")
    assert fault_proxy.lost == 1
    assert response.status_code == 200
    assert response.text == "ok"
    item = await read_item(raw, proxied.props.table_name, key_of(sid(cookie)))
    assert plain_data_of(item) == {"n": 2}
    assert item is not None and item["version"] == {"N": "2"}


@pytest.mark.parametrize("proxied", [1, 3], indirect=True, ids=["no-retry", "retry"])
async def test_lost_answer_to_the_take_of_a_login_keeps_the_login(
    proxied: DynamoDBStore, fault_proxy: FaultProxy, raw: Any
) -> None:
    first = await fetch(middleware(app_doing(lambda s: s.update(cart=3)), proxied))
    old = cookie_of(first)

    def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"

    await fault_proxy.lose_next_response(action="UpdateItem")
    response = await fetch(middleware(app_doing(login), proxied), f"id={old}")
    assert fault_proxy.lost == 1
    assert response.status_code == 200
    new = cookie_of(response)
    assert sid(new) != sid(old)
    table = proxied.props.table_name
    assert plain_data_of(await read_item(raw, table, key_of(sid(new)))) == {
        "cart": 3,
        "user": "ada",
    }
    assert await read_item(raw, table, key_of(sid(old))) is None
    assert len(await scan_all(raw, table)) == 1


@pytest.mark.parametrize("proxied", [1, 3], indirect=True, ids=["no-retry", "retry"])
async def test_lost_answer_to_a_flush_still_ends_the_session(
    proxied: DynamoDBStore, fault_proxy: FaultProxy, raw: Any
) -> None:
    first = await fetch(middleware(app_doing(lambda s: s.update(n=1)), proxied))
    cookie = cookie_of(first)
    await fault_proxy.lose_next_response(action="DeleteItem")
    response = await fetch(middleware(app_doing(lambda s: s.flush()), proxied), f"id={cookie}")
    assert fault_proxy.lost == 1
    assert response.status_code == 200
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await scan_all(raw, proxied.props.table_name) == []


# --- 4, 5, 6: races with a request paused inside the app --------------------------------------


@pytest.fixture
async def tstore(
    dynamodb_server: Any, table_name: str, transport: str, clock: Clock
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, clock=clock
    ) as store:
        yield store


async def start(store: Any, clock: Clock, expiry: Any = None, **data: Any) -> str:
    """A stored session holding `data`; its signed cookie value."""
    app = middleware(app_doing(lambda s: s.update(data)), store, clock=clock, expiry=expiry)
    return cookie_of(await fetch(app))


async def stored_data(raw: Any, store: DynamoDBStore, cookie: str) -> dict[str, Any] | None:
    item = await read_item(raw, store.props.table_name, key_of(sid(cookie)))
    return None if item is None else plain_data_of(item)


async def test_cycle_keeps_a_write_acknowledged_between_its_load_and_its_take(
    tstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    cookie = await start(tstore, clock, n=0)
    pause = Paused()

    async def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"
        await pause.wait()

    async def add_to_cart() -> Any:
        app = middleware(app_doing(lambda s: s.update(cart=1)), tstore, clock=clock)
        return await fetch(app, f"id={cookie}")

    logged_in, other = await pause.run(
        fetch(middleware(app_doing(login), tstore, clock=clock), f"id={cookie}"), add_to_cart
    )
    assert other.status_code == 200  # acknowledged ...
    new = cookie_of(logged_in)
    assert sid(new) != sid(cookie)
    # ... and kept: the new id holds it
    assert await stored_data(raw, tstore, new) == {"n": 0, "user": "ada", "cart": 1}
    assert await stored_data(raw, tstore, cookie) is None


async def test_removing_the_last_key_merges_with_a_concurrent_write(
    tstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    cookie = await start(tstore, clock, flash="saved!")
    pause = Paused()

    async def show_flash(session: Session) -> None:
        session.pop("flash")
        await pause.wait()

    async def login() -> Any:
        return await fetch(
            middleware(app_doing(lambda s: s.update(user="ada")), tstore, clock=clock),
            f"id={cookie}",
        )

    shown, logged_in = await pause.run(
        fetch(middleware(app_doing(show_flash), tstore, clock=clock), f"id={cookie}"), login
    )
    assert logged_in.status_code == shown.status_code == 200
    assert await stored_data(raw, tstore, cookie) == {"user": "ada"}  # the login survives
    assert EXPIRED_COOKIE not in set_cookies(shown)  # and the browser keeps its cookie


async def test_removing_the_last_key_alone_ends_the_session(
    tstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    cookie = await start(tstore, clock, flash="saved!")
    app = middleware(app_doing(lambda s: s.pop("flash")), tstore, clock=clock)
    response = await fetch(app, f"id={cookie}")
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await scan_all(raw, tstore.props.table_name) == []


@pytest.mark.parametrize("change", ["read-only", "write"])
async def test_a_concurrent_refresh_keeps_the_expiry_another_request_set(
    tstore: DynamoDBStore, raw: Any, clock: Clock, change: str
) -> None:
    expiry = OnInactivity(timedelta(hours=12))
    cookie = await start(tstore, clock, n=0)
    app_kwargs: dict[str, Any] = {"clock": clock, "expiry": expiry}
    # make it an OnInactivity session written at T0
    await fetch(
        middleware(app_doing(lambda s: s.update(n=1)), tstore, **app_kwargs), f"id={cookie}"
    )
    clock.advance(2 * 3600)  # a refresh is due (touch_after: a tenth of 12 h)
    pause = Paused()
    end = datetime.fromtimestamp(clock.now + 60, timezone.utc)

    async def slow(session: Session) -> None:
        session.get("n")
        if change == "write":
            session["other"] = True
        await pause.wait()

    async def remember_briefly() -> Any:
        app = middleware(app_doing(lambda s: s.set_expiry(AtDateTime(end))), tstore, **app_kwargs)
        return await fetch(app, f"id={cookie}")

    await pause.run(
        fetch(middleware(app_doing(slow), tstore, **app_kwargs), f"id={cookie}"), remember_briefly
    )
    item = await read_item(raw, tstore.props.table_name, key_of(sid(cookie)))
    assert item is not None
    assert item["expire_at"] == {"N": str(int(end.timestamp()))}
    assert item["expiry_policy"]["S"].startswith("at:")
    clock.advance(61)
    seen: list[Any] = []
    await fetch(
        middleware(app_doing(lambda s: seen.append(s.id)), tstore, **app_kwargs), f"id={cookie}"
    )
    assert seen == [None]


# --- 7. malformed stored attributes are no session, never a 500 -------------------------------

GOOD = {
    "expire_at": {"N": str(T0 + 3600)},
    "data": {"B": b"\x01" + msgspec.msgpack.encode({"user": "ada"})},
    "version": {"N": "1"},
    "created_at": {"N": str(T0)},
}
BAD_ATTRIBUTES = [
    ("created_at", {"N": "1800000000.5"}),
    ("created_at", {"S": "1800000000"}),
    ("created_at", {"N": "1000000000000000000000000000000"}),
    ("created_at", {"N": "-1"}),
    ("expire_at", {"N": "253402300800"}),
    ("expire_at", {"N": "1900000000.25"}),
    ("expire_at", {"S": "1900000000"}),
    ("expiry_policy", {"S": "inactivity:inf"}),
    ("expiry_policy", {"S": "inactivity:nan"}),
    ("expiry_policy", {"S": "inactivity:-5"}),
    ("expiry_policy", {"S": "inactivity:1e300"}),
    ("expiry_policy", {"S": "at:1e20"}),
    ("expiry_policy", {"S": "at:-1"}),
    ("expiry_policy", {"S": "sometime"}),
    ("expiry_policy", {"N": "5"}),
    ("version", {"N": "1.5"}),
    ("version", {"S": "1"}),
    ("version", {"N": "99999999999999999999999"}),
    ("data", {"S": "user=ada"}),
    ("data", {"B": b"\x01\xc1"}),
    ("data", {"B": b"\x07" + msgspec.msgpack.encode({"a": 1})}),
    ("data", {"B": b"\x01" + msgspec.msgpack.encode([1, 2])}),
    ("data", {"B": b"\x01" + msgspec.msgpack.encode({1: 2})}),
]


@pytest.mark.parametrize(("name", "value"), BAD_ATTRIBUTES, ids=lambda v: str(v)[:30])
async def test_a_malformed_attribute_is_no_session(
    tstore: DynamoDBStore, raw: Any, clock: Clock, name: str, value: Any, caplog: Any
) -> None:
    session_id = secrets.token_urlsafe(32)
    item = {**key_of(session_id), **GOOD, name: value}
    await raw.put_item(TableName=tstore.props.table_name, Item=item)
    seen: list[Any] = []
    app = middleware(app_doing(lambda s: seen.append((s.id, dict(s)))), tstore, clock=clock)
    response = await fetch(app, f"id={signed(session_id)}")
    assert response.status_code == 200
    assert seen == [(None, {})]
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert any("ignored" in m for m in warnings_of(caplog))


async def test_the_well_formed_item_of_the_malformed_cases_loads(
    tstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    session_id = secrets.token_urlsafe(32)
    await raw.put_item(TableName=tstore.props.table_name, Item={**key_of(session_id), **GOOD})
    seen: list[Any] = []
    app = middleware(app_doing(lambda s: seen.append(dict(s))), tstore, clock=clock)
    await fetch(app, f"id={signed(session_id)}")
    assert seen == [{"user": "ada"}]


# --- 10. Vary compares tokens -----------------------------------------------------------------


def app_with_headers(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["session"].get("x")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.parametrize(
    ("given_vary", "expected"),
    [
        ([b"X-Cookie-Consent"], [b"X-Cookie-Consent, Cookie"]),
        ([b"Accept, cookies"], [b"Accept, cookies, Cookie"]),
        ([b"Accept, Cookie"], [b"Accept, Cookie"]),
        ([b"accept , COOKIE"], [b"accept , COOKIE"]),
        ([b"*"], [b"*"]),
        ([b"Accept", b"Cookie"], [b"Accept", b"Cookie"]),
        ([], [b"Cookie"]),
    ],
)
async def test_vary_names_cookie_exactly_once(
    given_vary: list[bytes], expected: list[bytes]
) -> None:
    app = middleware(app_with_headers([(b"vary", v) for v in given_vary]), MemoryStore())
    sent = await asgi_http(app, [])
    assert header_values(sent[0], b"vary") == expected


# --- 11. a worker whose clock lags cannot revive an ended session -----------------------------


@pytest.mark.parametrize("action", ["refresh", "save"])
async def test_a_lagging_clock_within_the_skew_cannot_revive(
    dynamodb_server: Any, table_name: str, transport: str, raw: Any, action: str
) -> None:
    expiry = OnInactivity(timedelta(hours=1))
    true_clock = Clock()
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, clock=true_clock
    ) as store:
        cookie = await start(store, true_clock, n=1, expiry=expiry)
    item = await read_item(raw, table_name, key_of(sid(cookie)))
    assert item is not None
    ended_at = int(item["expire_at"]["N"])
    slow = Clock(ended_at - 3)  # true time is past the end; this worker is 3 s behind
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, clock=slow, create=False
    ) as lagging:

        def step(session: Session) -> None:
            session.get("n")
            if action == "save":
                session["n"] = 2

        app = middleware(app_doing(step), lagging, clock=slow, expiry=expiry)
        response = await fetch(app, f"id={cookie}")
    assert response.status_code == 200
    assert set_cookies(response) == [EXPIRED_COOKIE]
    after = await read_item(raw, table_name, key_of(sid(cookie)))
    assert after is not None and after["expire_at"] == {"N": str(ended_at)}  # not revived
    assert plain_data_of(after) == {"n": 1}


async def test_the_skew_is_the_middlewares_setting(dynamodb_server: Any, table_name: str) -> None:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name) as store:
        assert store.clock_skew is None
        middleware(app_doing(lambda s: None), store, clock_skew=timedelta(seconds=30))
        assert store.clock_skew == timedelta(seconds=30)
    own = MemoryStore(clock_skew=timedelta(seconds=2))
    middleware(app_doing(lambda s: None), own, clock_skew=timedelta(seconds=30))
    assert own.clock_skew == timedelta(seconds=2)  # a store's own setting is kept


# --- 12. cookie settings that a browser would drop or that would split the header -------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cookie_name": "__host-id", "domain": "example.com"},
        {"cookie_name": "__HOST-id", "secure": False},
        {"cookie_name": "__Host-id", "path": "/app"},
        {"cookie_name": "__secure-id", "secure": False},
        {"cookie_name": "__SECURE-id", "secure": False},
        {"path": "/a;b"},
        {"path": "/a\r\nSet-Cookie: x=1"},
        {"path": "/a\n"},
        {"domain": "example.com; Secure"},
        {"domain": "example.com\r\n"},
        {"domain": ""},
        {"path": ""},
        {"expiry": AtDateTime(datetime(2020, 1, 1, tzinfo=timezone.utc))},
        {"clock_skew": timedelta(seconds=-1)},
    ],
)
def test_settings_a_browser_would_drop_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SessionMiddleware(
            app_doing(lambda s: None), store=MemoryStore(), secret_keys=SECRET, **kwargs
        )


# --- 13. one clock reading dates the cookie and the item --------------------------------------


@pytest.mark.parametrize("now", [float(T0), T0 + 0.7, None], ids=["whole", "fraction", "real"])
async def test_max_age_expires_and_the_item_agree(
    dynamodb_server: Any, table_name: str, transport: str, raw: Any, now: float | None
) -> None:
    clock: Any = time.time if now is None else Clock(now)
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, clock=clock
    ) as store:
        app = middleware(
            app_doing(lambda s: s.update(n=1)),
            store,
            clock=clock,
            expiry=OnInactivity(timedelta(days=14)),
        )
        response = await fetch(app)
    (header,) = set_cookies(response)
    match = re.search(r"; Max-Age=(\d+); Expires=([^;]+);", header)
    assert match is not None, header
    assert match[1] == "1209600"
    item = await read_item(raw, table_name, key_of(sid(cookie_of(response))))
    assert item is not None
    stored = int(item["expire_at"]["N"])
    if now is not None:
        end = datetime.fromtimestamp(now + 1209600, timezone.utc)
        assert match[2] == format_datetime(end.replace(microsecond=0), usegmt=True)
        assert stored == math.ceil(now + 1209600)  # rounded up to the whole second
    else:
        expires = datetime.strptime(match[2], "%a, %d %b %Y %H:%M:%S GMT")
        assert 0 <= stored - expires.replace(tzinfo=timezone.utc).timestamp() <= 1


# --- 14. a dead cookie is expired once, on that response --------------------------------------


async def test_a_tampered_cookie_is_expired_and_never_reaches_the_store() -> None:
    store = CountingStore(MemoryStore())
    good = signed(secrets.token_urlsafe(32))
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    app = middleware(app_doing(lambda s: s.get("x")), store)
    response = await fetch(app, f"id={tampered}")
    assert store.calls == {}
    assert set_cookies(response) == [EXPIRED_COOKIE]
    # once the browser dropped it, nothing more is sent (rule 1)
    again = await fetch(app)
    assert set_cookies(again) == []


async def test_a_dead_cookie_with_new_data_gets_only_the_new_cookie() -> None:
    app = middleware(app_doing(lambda s: s.update(n=1)), MemoryStore())
    response = await fetch(app, f"id={signed(secrets.token_urlsafe(32))}")
    (header,) = set_cookies(response)
    assert re.fullmatch(r"id=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; Path=/" + FLAGS, header)


async def test_a_dead_cookie_is_expired_with_the_same_path_and_domain() -> None:
    app = middleware(
        app_doing(lambda s: None),
        MemoryStore(),
        path="/app",
        domain="example.com",
        same_site="strict",
    )
    response = await fetch(app, "id=garbage")
    assert set_cookies(response) == [
        "id=; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        "; HttpOnly; Secure; SameSite=Strict"
    ]


async def test_a_cookie_of_another_name_is_no_dead_cookie() -> None:
    store = CountingStore(MemoryStore())
    response = await fetch(middleware(app_doing(lambda s: s.get("x")), store), "other=1; ids=2")
    assert set_cookies(response) == []
    assert store.calls == {}


async def test_a_dead_cookie_costs_one_read_once(tstore: DynamoDBStore, clock: Clock) -> None:
    store = CountingStore(tstore)
    app = middleware(app_doing(lambda s: s.get("x")), store, clock=clock)
    response = await fetch(app, f"id={signed(secrets.token_urlsafe(32))}")
    assert store.calls == {"load": 1}
    assert set_cookies(response) == [EXPIRED_COOKIE]
