"""SessionMiddleware behaviour 1-8 of the spec, expiry policies, on a real DynamoDB server.

Every test drives the middleware over HTTP (httpx in process), looks at what a browser would see
(the exact Set-Cookie and Vary headers, the status) and reads the stored item back with a plain
aiobotocore get_item. Time is the injectable `Clock`, shared by the middleware and the store.
"""

from __future__ import annotations

import inspect
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any

import httpx
import msgspec
import pytest
from support import (
    EXPIRED_COOKIE,
    OLD_SECRET,
    PK,
    SECRET,
    Clock,
    CountingStore,
    fetch,
    key_of,
    middleware,
    plain_data_of,
    read_item,
    scan_all,
    set_cookies,
    signature,
    signed,
)

from asgi_dynamo_session import (
    AtDateTime,
    OnInactivity,
    OnSessionEnd,
    Session,
    SessionMiddleware,
)

TWO_WEEKS = 14 * 24 * 3600
EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
FLAGS = "; HttpOnly; Secure; SameSite=Lax"
NEW_COOKIE = re.compile(r"id=([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43}); Path=/" + re.escape(FLAGS))

Action = Callable[[Session, dict[str, Any]], Any]


# --- helpers ----------------------------------------------------------------------------------


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def cookie_id(response: httpx.Response, secret: str = SECRET) -> str:
    """The id in the response's single Set-Cookie, which must be the default session cookie."""
    (header,) = set_cookies(response)
    match = NEW_COOKIE.fullmatch(header)
    assert match is not None, header
    sid, sig = match.groups()
    assert sig == signature(sid, secret)
    return sid


def app_for(
    action: Action | None = None,
    *,
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (),
) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if action is not None:
            result = action(scope["session"], scope)
            if inspect.isawaitable(result):
                await result
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def setter(**values: Any) -> Action:
    def action(session: Session, scope: dict[str, Any]) -> None:
        session.update(values)

    return action


# --- fixtures ---------------------------------------------------------------------------------


class Env:
    """The store, the clock and a plain client for read-back, with request shortcuts."""

    def __init__(self, store: CountingStore, clock: Clock, client: Any, table: str) -> None:
        self.store = store
        self.clock = clock
        self.client = client
        self.table = table

    def mw(self, action: Action | None = None, **kwargs: Any) -> SessionMiddleware:
        app_kwargs = {k: kwargs.pop(k) for k in ("status", "headers") if k in kwargs}
        return middleware(app_for(action, **app_kwargs), self.store, clock=self.clock, **kwargs)

    async def start(self, data: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """A stored session holding `data`; returns its id and resets the call counts."""
        response = await fetch(self.mw(setter(**(data or {"user": "ada"})), **kwargs))
        assert response.status_code == 200
        (header,) = set_cookies(response)
        match = re.match(r"id=([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43});", header)
        assert match is not None, header
        sid = match[1]
        assert match[2] == signature(sid, kwargs.get("secret_keys", SECRET))
        self.store.calls.clear()
        return sid

    async def item(self, sid: str) -> dict[str, Any] | None:
        return await read_item(self.client, self.table, key_of(sid))

    async def put_raw(self, sid: str, data: dict[str, Any], expire_at: int) -> None:
        """An item written with plain put_item, in the store's layout."""
        await self.client.put_item(
            TableName=self.table,
            Item={
                **key_of(sid),
                "expire_at": {"N": str(expire_at)},
                "data": {"B": b"\x01" + msgspec.msgpack.encode(data)},
                "version": {"N": "1"},
            },
        )


@pytest.fixture
def env(counting_store: CountingStore, clock: Clock, raw: Any, table_name: str) -> Env:
    return Env(counting_store, clock, raw, table_name)


# --- 1. no cookie, untouched ------------------------------------------------------------------


async def test_no_cookie_untouched_session_makes_no_store_call(env: Env) -> None:
    response = await fetch(env.mw())
    assert response.status_code == 200
    assert env.store.calls == {}
    assert set_cookies(response) == []
    assert "vary" not in response.headers
    assert await scan_all(env.client, env.table) == []


async def test_no_cookie_read_only_access_makes_no_store_call(env: Env) -> None:
    seen: list[Any] = []
    response = await fetch(env.mw(lambda s, _: seen.append((s.get("user"), s.id, len(s)))))
    assert seen == [(None, None, 0)]
    assert env.store.calls == {}
    assert set_cookies(response) == []
    assert response.headers["vary"] == "Cookie"


async def test_other_cookies_only_make_no_store_call(env: Env) -> None:
    response = await fetch(env.mw(), f"theme=dark; sid={signed(secrets.token_urlsafe(32))}")
    assert env.store.calls == {}
    assert set_cookies(response) == []


# --- 2. valid cookie --------------------------------------------------------------------------


async def test_valid_cookie_loads_once_before_the_app_and_read_only_writes_nothing(
    env: Env,
) -> None:
    sid = await env.start({"user": "ada", "n": 1})
    before = await env.item(sid)
    seen: list[Any] = []

    def action(session: Session, scope: dict[str, Any]) -> None:
        seen.append((dict(env.store.calls), session.id, dict(session)))

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert response.status_code == 200
    assert seen == [({"load": 1}, sid, {"user": "ada", "n": 1})]
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    assert response.headers["vary"] == "Cookie"
    assert await env.item(sid) == before


async def test_untouched_session_with_valid_cookie_sends_no_vary_and_no_cookie(env: Env) -> None:
    sid = await env.start()
    response = await fetch(env.mw(), f"id={signed(sid)}")
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    assert "vary" not in response.headers


async def test_cookie_signed_by_older_key_is_resigned_with_the_newest(env: Env) -> None:
    sid = await env.start({"user": "ada"}, secret_keys=OLD_SECRET)
    seen: list[Any] = []
    app = env.mw(lambda s, _: seen.append(s.get("user")), secret_keys=[SECRET, OLD_SECRET])
    response = await fetch(app, f"id={signed(sid, OLD_SECRET)}")
    assert seen == ["ada"]
    assert cookie_id(response, SECRET) == sid  # same id, signed by the newest key
    assert env.store.writes == 0
    # The re-signed cookie verifies from now on, and needs no further re-signing.
    env.store.calls.clear()
    response = await fetch(app, f"id={signed(sid)}")
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []


async def test_cookie_signed_by_a_retired_key_is_no_session(env: Env) -> None:
    sid = await env.start({"user": "ada"}, secret_keys=OLD_SECRET)
    seen: list[Any] = []
    response = await fetch(env.mw(lambda s, _: seen.append(s.id)), f"id={signed(sid, OLD_SECRET)}")
    assert seen == [None]
    assert env.store.calls == {}
    assert set_cookies(response) == [EXPIRED_COOKIE]  # a cookie that does not verify is dead


async def test_first_cookie_that_verifies_is_used(env: Env) -> None:
    first = await env.start({"who": "first"})
    second = await env.start({"who": "second"})
    bogus = signed(first)[:-1] + ("A" if signed(first)[-1] != "A" else "B")
    seen: list[Any] = []
    app = env.mw(lambda s, _: seen.append((s.id, s.get("who"))))

    await fetch(app, f"id={bogus}; id=; id={signed(second)}; id={signed(first)}")
    assert seen == [(second, "second")]
    assert env.store.calls == {"load": 1}

    # Cookies split over several Cookie headers count in order too.
    seen.clear()
    await fetch(app, f"id={bogus}", extra=[(b"cookie", f"id={signed(first)}".encode())])
    assert seen == [(first, "first")]


# --- 3. tampered, malformed, unknown, expired cookies ------------------------------------------


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


MALFORMED: dict[str, Callable[[str], str | bytes]] = {
    "tampered-signature": lambda v: "id=" + _flip(v, len(v) - 5),
    "tampered-id": lambda v: "id=" + _flip(v, 3),
    "swapped-signature": lambda v: "id=" + v[:44] + signature(secrets.token_urlsafe(32)),
    "truncated": lambda v: "id=" + v[:-1],
    "extended": lambda v: "id=" + v + "A",
    "id-only": lambda v: "id=" + v[:43],
    "empty": lambda v: "id=",
    "non-ascii": lambda v: ("id=" + v[:10] + "\u00e9" + v[12:]).encode(),
    "non-ascii-tail": lambda v: ("id=" + v + "\u2603").encode(),
    "oversized": lambda v: "id=" + v + "A" * 8192,
    "oversized-garbage": lambda v: "id=" + "x" * 8192,
}


@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_tampered_or_malformed_cookie_never_reaches_the_store(env: Env, kind: str) -> None:
    sid = await env.start({"user": "ada"})
    before = await env.item(sid)
    seen: list[Any] = []

    def action(session: Session, scope: dict[str, Any]) -> None:
        cookies = [v for k, v in scope["headers"] if k == b"cookie"]
        seen.append((session.id, dict(session), dict(env.store.calls), cookies))
        session["fresh"] = True

    cookie = MALFORMED[kind](signed(sid))
    sent = cookie if isinstance(cookie, bytes) else cookie.encode()
    response = await fetch(env.mw(action), cookie)
    assert response.status_code == 200
    # The app got the cookie as sent, yet no session and not a single load.
    assert seen == [(None, {}, {}, [sent])]
    assert env.store.calls == {"create": 1}
    new = cookie_id(response)
    assert new != sid
    assert plain_data_of(await env.item(new) or {}) == {"fresh": True}
    assert await env.item(sid) == before  # the old session is untouched


async def test_unknown_signed_id_is_no_session_and_never_adopted(env: Env) -> None:
    chosen = secrets.token_urlsafe(32)
    seen: list[Any] = []

    def action(session: Session, scope: dict[str, Any]) -> None:
        seen.append((session.id, dict(session)))
        session["fresh"] = True

    response = await fetch(env.mw(action), f"id={signed(chosen)}")
    assert seen == [(None, {})]
    assert env.store.calls == {"load": 1, "create": 1}
    new = cookie_id(response)
    assert new != chosen
    assert await env.item(chosen) is None
    assert plain_data_of(await env.item(new) or {}) == {"fresh": True}


async def test_unknown_signed_id_read_only_expires_the_dead_cookie(env: Env) -> None:
    response = await fetch(
        env.mw(lambda s, _: s.get("x")), f"id={signed(secrets.token_urlsafe(32))}"
    )
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == [EXPIRED_COOKIE]


async def test_expired_session_cookie_is_no_session(env: Env) -> None:
    sid = await env.start({"user": "ada"})
    env.clock.advance(TWO_WEEKS + 1)
    seen: list[Any] = []

    def action(session: Session, scope: dict[str, Any]) -> None:
        seen.append((session.id, dict(session)))
        session["fresh"] = True

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert seen == [(None, {})]
    assert env.store.calls == {"load": 1, "create": 1}
    new = cookie_id(response)
    assert new != sid
    assert plain_data_of(await env.item(new) or {}) == {"fresh": True}
    assert plain_data_of(await env.item(sid) or {}) == {"user": "ada"}  # stale, but left alone


# --- 4. new data ------------------------------------------------------------------------------


async def test_new_data_creates_one_item_and_sets_the_signed_cookie(env: Env) -> None:
    response = await fetch(env.mw(setter(user="ada", n=1)))
    assert response.status_code == 200
    assert env.store.calls == {"create": 1}
    (header,) = set_cookies(response)
    assert "Max-Age" not in header and "Expires" not in header
    sid = cookie_id(response)
    assert response.headers["vary"] == "Cookie"

    item = await env.item(sid)
    assert item is not None
    assert item[PK] == key_of(sid)[PK]
    assert item["expire_at"] == {"N": str(int(env.clock.now) + TWO_WEEKS)}
    assert item["version"] == {"N": "1"}
    assert plain_data_of(item) == {"user": "ada", "n": 1}
    assert len(await scan_all(env.client, env.table)) == 1


async def test_new_session_is_readable_by_the_next_request(env: Env) -> None:
    sid = await env.start({"user": "ada", "n": 1})
    seen: list[Any] = []
    await fetch(env.mw(lambda s, _: seen.append(dict(s))), f"id={signed(sid)}")
    assert seen == [{"user": "ada", "n": 1}]


async def test_change_saves_once_under_the_same_id(env: Env) -> None:
    sid = await env.start({"user": "ada", "n": 1})
    env.clock.advance(60)
    response = await fetch(env.mw(setter(n=2)), f"id={signed(sid)}")
    assert env.store.calls == {"load": 1, "save": 1}
    assert cookie_id(response) == sid
    item = await env.item(sid)
    assert item is not None
    assert plain_data_of(item) == {"user": "ada", "n": 2}
    assert item["version"] == {"N": "2"}
    assert item["expire_at"] == {"N": str(int(env.clock.now) + TWO_WEEKS)}


# --- 5. emptied session -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["clear", "flush", "del-all", "pop-all"])
async def test_emptied_session_deletes_item_and_expires_cookie(env: Env, how: str) -> None:
    sid = await env.start({"user": "ada"})

    def action(session: Session, scope: dict[str, Any]) -> None:
        if how == "clear":
            session.clear()
        elif how == "flush":
            session.flush()
        elif how == "del-all":
            del session["user"]
        else:
            session.pop("user")

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert response.status_code == 200
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await env.item(sid) is None
    assert env.store.calls["load"] == 1
    assert env.store.calls["create"] == env.store.calls["save"] == 0
    assert await scan_all(env.client, env.table) == []


async def test_expired_cookie_keeps_configured_path_domain_and_flags(env: Env) -> None:
    options: dict[str, Any] = {
        "cookie_name": "sid",
        "path": "/app",
        "domain": "example.com",
        "same_site": "strict",
        "http_only": False,
        "expiry": OnInactivity(timedelta(hours=1)),
    }
    response = await fetch(env.mw(setter(user="ada"), **options), path="/app/login")
    (header,) = set_cookies(response)
    expires = http_date(env.clock.now + 3600)
    match = re.fullmatch(
        r"sid=([A-Za-z0-9_-]{43})\.[A-Za-z0-9_-]{43}; Path=/app; Domain=example\.com; "
        rf"Max-Age=3600; Expires={expires}; Secure; SameSite=Strict",
        header,
    )
    assert match is not None, header
    sid = match[1]

    response = await fetch(env.mw(lambda s, _: s.flush(), **options), f"sid={signed(sid)}")
    assert set_cookies(response) == [
        f"sid=; Path=/app; Domain=example.com; Max-Age=0; Expires={EPOCH}; Secure; SameSite=Strict"
    ]
    assert await env.item(sid) is None


async def test_clearing_without_a_session_writes_nothing(env: Env) -> None:
    response = await fetch(env.mw(lambda s, _: s.clear()))
    assert env.store.calls == {}
    assert set_cookies(response) == []


async def test_flush_then_new_data_starts_a_new_session(env: Env) -> None:
    sid = await env.start({"user": "ada"})

    def action(session: Session, scope: dict[str, Any]) -> None:
        session.flush()
        session["user"] = "bob"

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert await env.item(sid) is None
    new = cookie_id(response)
    assert new != sid
    assert plain_data_of(await env.item(new) or {}) == {"user": "bob"}


async def test_replacing_scope_session_with_a_dict_makes_it_the_data(env: Env) -> None:
    sid = await env.start({"user": "ada", "cart": [1]})

    def action(session: Session, scope: dict[str, Any]) -> None:
        scope["session"] = {"user": "bob"}

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert response.status_code == 200
    assert env.store.calls == {"load": 1, "save": 1}
    assert plain_data_of(await env.item(sid) or {}) == {"user": "bob"}
    assert response.headers["vary"] == "Cookie"


async def test_replacing_scope_session_with_a_dict_without_a_session_creates_one(env: Env) -> None:
    def action(session: Session, scope: dict[str, Any]) -> None:
        scope["session"] = {"user": "bob"}

    response = await fetch(env.mw(action))
    sid = cookie_id(response)
    assert env.store.calls == {"create": 1}
    assert plain_data_of(await env.item(sid) or {}) == {"user": "bob"}


@pytest.mark.parametrize("value", [None, {}, "not-a-mapping"], ids=["none", "empty", "str"])
async def test_replacing_scope_session_with_nothing_empties_it(env: Env, value: Any) -> None:
    sid = await env.start({"user": "ada"})

    def action(session: Session, scope: dict[str, Any]) -> None:
        scope["session"] = value

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await env.item(sid) is None


# --- 6. Vary ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], ["Cookie"]),
        ([("vary", "Accept-Encoding")], ["Accept-Encoding, Cookie"]),
        ([("Vary", "Origin, Accept")], ["Origin, Accept, Cookie"]),
        ([("vary", "Accept, Cookie")], ["Accept, Cookie"]),
        ([("vary", "cookie")], ["cookie"]),
        ([("vary", "*")], ["*"]),
    ],
)
async def test_vary_cookie_when_accessed(
    env: Env, existing: list[tuple[str, str]], expected: list[str]
) -> None:
    response = await fetch(env.mw(lambda s, _: s.get("x"), headers=existing))
    assert response.headers.get_list("vary") == expected


async def test_no_vary_added_when_not_accessed(env: Env) -> None:
    response = await fetch(env.mw(headers=[("vary", "Accept-Encoding")]))
    assert response.headers.get_list("vary") == ["Accept-Encoding"]


@pytest.mark.parametrize(
    "action",
    [
        lambda s, _: s.mark_accessed(),
        lambda s, _: "user" in s,
        lambda s, _: list(s),
        lambda s, _: s.items(),
        lambda s, _: s.setdefault("a", 1),
    ],
    ids=["mark_accessed", "contains", "iter", "items", "setdefault"],
)
async def test_vary_cookie_for_every_kind_of_access(env: Env, action: Action) -> None:
    response = await fetch(env.mw(action))
    assert response.headers.get_list("vary") == ["Cookie"]


# --- 7. errors save nothing -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_response_saves_nothing(env: Env, status: int) -> None:
    response = await fetch(env.mw(setter(user="ada"), status=status))
    assert response.status_code == status
    assert env.store.calls == {}
    assert set_cookies(response) == []
    assert await scan_all(env.client, env.table) == []


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_keeps_the_stored_session(env: Env, status: int) -> None:
    sid = await env.start({"user": "ada"})
    before = await env.item(sid)

    def action(session: Session, scope: dict[str, Any]) -> None:
        session["user"] = "mallory"
        session.cycle_id()

    response = await fetch(env.mw(action, status=status), f"id={signed(sid)}")
    assert response.status_code == status
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    assert await env.item(sid) == before

    response = await fetch(env.mw(lambda s, _: s.flush(), status=status), f"id={signed(sid)}")
    assert set_cookies(response) == []
    assert await env.item(sid) == before


@pytest.mark.parametrize("status", [302, 404, 499])
async def test_non_server_error_responses_still_save(env: Env, status: int) -> None:
    response = await fetch(env.mw(setter(user="ada"), status=status))
    assert response.status_code == status
    assert plain_data_of(await env.item(cookie_id(response)) or {}) == {"user": "ada"}


# --- 8. expired items are never returned ------------------------------------------------------


@pytest.mark.parametrize("age", [1, 0, 3600 * 24 * 400])
async def test_item_expired_in_the_table_is_never_returned(env: Env, age: int) -> None:
    sid = secrets.token_urlsafe(32)
    await env.put_raw(sid, {"user": "ada"}, int(env.clock.now) - age)
    seen: list[Any] = []

    def action(session: Session, scope: dict[str, Any]) -> None:
        seen.append((session.id, dict(session)))

    response = await fetch(env.mw(action), f"id={signed(sid)}")
    assert seen == [(None, {})]
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == [EXPIRED_COOKIE]
    assert await env.item(sid) is not None  # still in the table: only the read ignored it

    # A live item written the same way is returned (the raw layout is the store's).
    await env.put_raw(sid, {"user": "ada"}, int(env.clock.now) + 60)
    seen.clear()
    await fetch(env.mw(action), f"id={signed(sid)}")
    assert seen == [(sid, {"user": "ada"})]


# --- expiry policies --------------------------------------------------------------------------


async def test_on_inactivity_sets_max_age_and_item_expiry(env: Env) -> None:
    policy = OnInactivity(timedelta(hours=2))
    response = await fetch(env.mw(setter(user="ada"), expiry=policy))
    (header,) = set_cookies(response)
    now = env.clock.now
    match = re.fullmatch(
        r"id=([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43}); Path=/; "
        rf"Max-Age=7200; Expires={http_date(now + 7200)}{re.escape(FLAGS)}",
        header,
    )
    assert match is not None, header
    sid = match[1]
    assert match[2] == signature(sid)
    item = await env.item(sid)
    assert item is not None
    assert item["expire_at"] == {"N": str(int(now) + 7200)}

    # A change 30 minutes later slides both the cookie and the item.
    env.clock.advance(1800)
    env.store.calls.clear()
    response = await fetch(env.mw(setter(n=1), expiry=policy), f"id={signed(sid)}")
    assert env.store.calls == {"load": 1, "save": 1}
    assert set_cookies(response) == [
        f"id={signed(sid)}; Path=/; Max-Age=7200; Expires={http_date(env.clock.now + 7200)}{FLAGS}"
    ]
    item = await env.item(sid)
    assert item is not None
    assert item["expire_at"] == {"N": str(int(env.clock.now) + 7200)}


async def test_on_inactivity_read_only_refresh_is_throttled(env: Env) -> None:
    policy = OnInactivity(timedelta(hours=2))
    sid = await env.start({"user": "ada"}, expiry=policy)
    created = int(env.clock.now)
    read = env.mw(lambda s, _: s.get("user"), expiry=policy)

    env.clock.advance(60)  # well under a tenth of the window: nothing to refresh
    response = await fetch(read, f"id={signed(sid)}")
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(created + 7200)}

    env.clock.advance(13 * 60)  # past a tenth of the window: one expiry-only refresh
    env.store.calls.clear()
    response = await fetch(read, f"id={signed(sid)}")
    assert env.store.calls == {"load": 1, "touch": 1}
    now = env.clock.now
    assert set_cookies(response) == [
        f"id={signed(sid)}; Path=/; Max-Age=7200; Expires={http_date(now + 7200)}{FLAGS}"
    ]
    item = await env.item(sid)
    assert item is not None
    assert item["expire_at"] == {"N": str(int(now) + 7200)}
    assert item["version"] == {"N": "1"}
    assert plain_data_of(item) == {"user": "ada"}


async def test_touch_after_sets_the_refresh_threshold(env: Env) -> None:
    policy = OnInactivity(timedelta(hours=2))
    sid = await env.start({"user": "ada"}, expiry=policy)
    read = env.mw(lambda s, _: s.get("user"), expiry=policy, touch_after=timedelta(minutes=30))
    env.clock.advance(20 * 60)
    response = await fetch(read, f"id={signed(sid)}")
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    env.clock.advance(11 * 60)
    response = await fetch(read, f"id={signed(sid)}")
    assert env.store.calls == {"load": 2, "touch": 1}
    assert len(set_cookies(response)) == 1


async def test_on_inactivity_session_ends_after_the_idle_window(env: Env) -> None:
    policy = OnInactivity(timedelta(hours=2))
    sid = await env.start({"user": "ada"}, expiry=policy)
    env.clock.advance(7200)
    seen: list[Any] = []
    # (a middleware whose default AtDateTime has passed is refused: this one has the default)
    response = await fetch(env.mw(lambda s, _: seen.append(s.id)), f"id={signed(sid)}")
    assert seen == [None]
    assert set_cookies(response) == [EXPIRED_COOKIE]  # a dead cookie is expired, once


async def test_at_datetime_sets_cookie_and_item_expiry_to_the_moment(env: Env) -> None:
    at = datetime.fromtimestamp(env.clock.now + 3 * 86400, timezone.utc)
    policy = AtDateTime(at)
    response = await fetch(env.mw(setter(user="ada"), expiry=policy))
    (header,) = set_cookies(response)
    match = re.fullmatch(
        r"id=([A-Za-z0-9_-]{43})\.[A-Za-z0-9_-]{43}; Path=/; "
        rf"Max-Age=259200; Expires={http_date(at.timestamp())}{re.escape(FLAGS)}",
        header,
    )
    assert match is not None, header
    sid = match[1]
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(at.timestamp()))}

    # A day later: a change keeps the fixed end; Max-Age counts down to it.
    env.clock.advance(86400)
    response = await fetch(env.mw(setter(n=1), expiry=policy), f"id={signed(sid)}")
    assert set_cookies(response) == [
        f"id={signed(sid)}; Path=/; Max-Age=172800; Expires={http_date(at.timestamp())}{FLAGS}"
    ]
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(at.timestamp()))}

    # Reading never refreshes a fixed end; after the moment the session is gone.
    env.store.calls.clear()
    response = await fetch(env.mw(lambda s, _: s.get("user"), expiry=policy), f"id={signed(sid)}")
    assert env.store.calls == {"load": 1}
    assert set_cookies(response) == []
    env.clock.advance(2 * 86400)
    seen: list[Any] = []
    # (a middleware whose default AtDateTime has passed is refused: this one has the default)
    response = await fetch(env.mw(lambda s, _: seen.append(s.id)), f"id={signed(sid)}")
    assert seen == [None]
    assert set_cookies(response) == [EXPIRED_COOKIE]  # a dead cookie is expired, once


async def test_at_datetime_in_another_timezone(env: Env) -> None:
    at = datetime.fromtimestamp(env.clock.now + 3600, timezone(timedelta(hours=-5)))
    response = await fetch(env.mw(setter(user="ada"), expiry=AtDateTime(at)))
    (header,) = set_cookies(response)
    assert f"; Max-Age=3600; Expires={http_date(env.clock.now + 3600)};" in header


async def test_per_session_expiry_is_remembered_by_later_requests(env: Env) -> None:
    def login(session: Session, scope: dict[str, Any]) -> None:
        session["user"] = "ada"
        session.set_expiry(OnInactivity(timedelta(hours=1)))

    response = await fetch(env.mw(login))  # the middleware's policy is OnSessionEnd
    (header,) = set_cookies(response)
    sid = header.split("=", 1)[1].split(".", 1)[0]
    assert header == (
        f"id={signed(sid)}; Path=/; Max-Age=3600; Expires={http_date(env.clock.now + 3600)}{FLAGS}"
    )
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(env.clock.now) + 3600)}

    env.clock.advance(600)
    seen: list[Any] = []

    def later(session: Session, scope: dict[str, Any]) -> None:
        seen.append((session.expiry, session.expiry_date))
        session["n"] = 1

    response = await fetch(env.mw(later), f"id={signed(sid)}")
    now = env.clock.now
    assert seen == [
        (OnInactivity(timedelta(hours=1)), datetime.fromtimestamp(now + 3600, timezone.utc))
    ]
    assert set_cookies(response) == [
        f"id={signed(sid)}; Path=/; Max-Age=3600; Expires={http_date(now + 3600)}{FLAGS}"
    ]
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(now) + 3600)}

    # Back to the middleware's policy: a browser-session cookie, the item kept two weeks.
    env.clock.advance(600)
    response = await fetch(env.mw(lambda s, _: s.set_expiry(None)), f"id={signed(sid)}")
    assert set_cookies(response) == [f"id={signed(sid)}; Path=/{FLAGS}"]
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(env.clock.now) + TWO_WEEKS)}
    seen.clear()
    await fetch(env.mw(later), f"id={signed(sid)}")
    assert seen == [(None, datetime.fromtimestamp(env.clock.now + TWO_WEEKS, timezone.utc))]


async def test_per_session_at_datetime_overrides_the_middleware_policy(env: Env) -> None:
    at = datetime.fromtimestamp(env.clock.now + 7200, timezone.utc)

    def action(session: Session, scope: dict[str, Any]) -> None:
        session["user"] = "ada"
        session.set_expiry(AtDateTime(at))

    response = await fetch(env.mw(action, expiry=OnInactivity(timedelta(minutes=5))))
    (header,) = set_cookies(response)
    assert f"; Max-Age=7200; Expires={http_date(at.timestamp())};" in header
    sid = header.split("=", 1)[1].split(".", 1)[0]
    item = await env.item(sid)
    assert item is not None and item["expire_at"] == {"N": str(int(at.timestamp()))}
    # Still alive after the middleware's 5-minute window: the session's own policy applies.
    env.clock.advance(3600)
    seen: list[Any] = []
    await fetch(
        env.mw(lambda s, _: seen.append(s.get("user")), expiry=OnInactivity(timedelta(minutes=5))),
        f"id={signed(sid)}",
    )
    assert seen == ["ada"]


async def test_on_session_end_is_the_default(env: Env) -> None:
    for expiry in (None, OnSessionEnd()):
        kwargs = {} if expiry is None else {"expiry": expiry}
        response = await fetch(env.mw(setter(user="ada"), **kwargs))
        sid = cookie_id(response)  # the pattern has no Max-Age/Expires
        item = await env.item(sid)
        assert item is not None and item["expire_at"] == {"N": str(int(env.clock.now) + TWO_WEEKS)}


# --- scope wiring -----------------------------------------------------------------------------


async def test_session_is_in_scope_and_in_scope_state(env: Env) -> None:
    sid = await env.start({"user": "ada"})
    mw = env.mw()
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["session"], scope["state"].get("session")))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw.app = app
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"cookie", f"id={signed(sid)}".encode())],
        "state": {},
    }
    await mw(scope, receive, send)
    ((session, in_state),) = seen
    assert isinstance(session, Session)
    assert in_state is session
    assert session.id == sid
    assert dict.__getitem__(session, "user") == "ada"
    assert sent[0]["status"] == 204
