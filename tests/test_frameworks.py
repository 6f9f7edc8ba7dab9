"""The same login/logout/counter behaviour under every framework, on the real DynamoDB server.

Each example app (``examples/*``) is driven through its framework's own test client and through
a real uvicorn server over HTTP; framework idioms (Starlette's ``mark_accessed``, Litestar's
``set_session``/``clear_session``, ``quart.session``) get their own tests below.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest  # module level: FastAPI resolves annotations here
from litestar.testing import AsyncTestClient
from support import (
    EXPIRED_COOKIE,
    SECRET,
    SESSION_COOKIE,
    Clock,
    CountingStore,
    client_for,
    read_item,
    running,
    session_data,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    OnInactivity,
    Session,
    SessionError,
    SessionMiddleware,
    get_session,
)
from examples import (
    counter,
    fastapi_app,
    litestar_app,
    quart_app,
    raw_asgi,
    starlette_app,
)

REGION = "us-east-1"
EXAMPLES: dict[str, ModuleType] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
    "quart": quart_app,
    "raw": raw_asgi,
}
COUNT = re.compile(r"Current count: (\d+)")


# -- a uniform client over each framework's test client, or a real server -------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]

    @property
    def set_cookies(self) -> list[str]:
        return self.all("set-cookie")

    @property
    def count(self) -> int:
        found = COUNT.search(self.text)
        assert found, self.text
        return int(found.group(1))


@dataclass
class Browser:
    """Sends requests through `send` and keeps the `id` cookie like a browser would."""

    send: Callable[..., Any]
    cookie: str | None = None
    replies: list[Reply] = field(default_factory=list)

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers = {"cookie": f"id={self.cookie}"} if self.cookie else {}
        reply: Reply = await self.send(method, path, headers, form)
        for header in reply.set_cookies:
            name, _, rest = header.partition("=")
            if name == "id":
                value = rest.split(";", 1)[0]
                self.cookie = None if "Max-Age=0" in header else value
        self.replies.append(reply)
        return reply

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    async def post(self, path: str, form: dict[str, str] | None = None) -> Reply:
        return await self.request("POST", path, form or {})

    @property
    def session_id(self) -> str:
        assert self.cookie is not None
        return self.cookie.split(".", 1)[0]


def _httpx_sender(client: httpx.AsyncClient) -> Callable[..., Any]:
    async def send(
        method: str, path: str, headers: dict[str, str], form: dict[str, str] | None
    ) -> Reply:
        client.cookies.clear()  # the Browser keeps the cookie, not the client
        response = await client.request(
            method, path, headers=headers, data=form, follow_redirects=False
        )
        return Reply(response.status_code, list(response.headers.multi_items()), response.text)

    return send


def _quart_sender(app: Any) -> Callable[..., Any]:
    client = app.test_client(use_cookies=False)

    async def send(
        method: str, path: str, headers: dict[str, str], form: dict[str, str] | None
    ) -> Reply:
        response = await client.open(
            path, method=method, headers=headers, form=form, scheme="https"
        )
        text = await response.get_data(as_text=True)
        return Reply(response.status_code, list(response.headers.items()), text)

    return send


class Counting(CountingStore):
    """CountingStore that also opens and closes the store it wraps (for lifespan hooks)."""

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Dynamo:
    endpoint: str
    store: DynamoDBStore  # opened on the test's event loop: for assertions and in-loop apps
    client: Any  # a plain aiobotocore client, to read items back


@pytest.fixture
def dyn(dynamodb_server: Any, store: DynamoDBStore, dynamodb_client: Any) -> Dynamo:
    return Dynamo(dynamodb_server.endpoint_url, store, dynamodb_client)


@contextlib.asynccontextmanager
async def browse(
    build: Callable[[Any], Any], kind: str, via: str, dyn: Dynamo
) -> AsyncIterator[Browser]:
    """A Browser on ``build(store)``: through the framework's test client ("client") or a real
    uvicorn server ("http")."""
    if via == "http":
        async with running(build(dyn.store)) as url, httpx.AsyncClient(base_url=url) as client:
            yield Browser(_httpx_sender(client))
    elif kind == "litestar":
        # Litestar's test clients run the app on their own event loop (a portal thread), so the
        # app gets a store owning its client, opened and closed there by the app's lifespan.
        own = DynamoDBStore(props=dyn.store.props, endpoint_url=dyn.endpoint, region_name=REGION)
        app = build(own)
        async with AsyncTestClient(app=app, base_url="https://testserver.local") as client:
            yield Browser(_httpx_sender(client))
        assert own.client is None, "the app's lifespan did not close the store"
    elif kind == "quart":
        yield Browser(_quart_sender(build(dyn.store)))
    else:  # Starlette, FastAPI and raw ASGI: httpx's ASGI transport, as Starlette recommends
        async with client_for(build(dyn.store)) as client:
            yield Browser(_httpx_sender(client))


async def item_exists(dyn: Dynamo, session_id: str) -> bool:
    key = dyn.store.key(session_id)
    return await read_item(dyn.client, dyn.store.props.table_name, key) is not None


def example(kind: str, **options: Any) -> Callable[[Any], Any]:
    options.setdefault("secret_keys", SECRET)
    return lambda store: EXAMPLES[kind].create_app(store, **options)


def compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


FRAMEWORK_CASES = [
    pytest.param(kind, via, id=f"{kind}-{via}") for kind in EXAMPLES for via in ("client", "http")
]


# -- the shared behaviour, per framework --------------------------------------------------------


@pytest.mark.parametrize(("kind", "via"), FRAMEWORK_CASES)
async def test_counter_rises(kind: str, via: str, dyn: Dynamo) -> None:
    async with browse(example(kind), kind, via, dyn) as browser:
        first = await browser.get("/")
        assert first.status == 200
        assert first.count == 1
        [header] = first.set_cookies
        assert SESSION_COOKIE.match(header), header
        assert [(await browser.get("/")).count for _ in range(3)] == [2, 3, 4]
    assert await session_data(dyn.store, browser.session_id) == {"count": 4}


@pytest.mark.parametrize(("kind", "via"), FRAMEWORK_CASES)
async def test_login_cycles_the_id(kind: str, via: str, dyn: Dynamo) -> None:
    async with browse(example(kind), kind, via, dyn) as browser:
        await browser.get("/")
        before = browser.session_id
        reply = await browser.post("/login", {"user": "alice"})
        assert reply.status == 303
        [header] = reply.set_cookies
        assert SESSION_COOKIE.match(header), header
        after = browser.session_id
        assert after != before
        assert not await item_exists(dyn, before)
        assert await session_data(dyn.store, after) == {"count": 1, "user": "alice"}
        page = await browser.get("/")
        assert page.count == 2
        assert "alice" in page.text


@pytest.mark.parametrize(("kind", "via"), FRAMEWORK_CASES)
async def test_logout_deletes_the_item_and_expires_the_cookie(
    kind: str, via: str, dyn: Dynamo
) -> None:
    async with browse(example(kind), kind, via, dyn) as browser:
        await browser.post("/login", {"user": "bob"})
        session_id, cookie = browser.session_id, browser.cookie
        assert await item_exists(dyn, session_id)
        reply = await browser.post("/logout")
        assert reply.status == 303
        assert reply.set_cookies == [EXPIRED_COOKIE]
        assert browser.cookie is None
        assert not await item_exists(dyn, session_id)
        # The old cookie now names nothing: no session, and the dead cookie is expired again.
        browser.cookie = cookie
        whoami = await browser.get("/whoami")
        assert whoami.set_cookies == [EXPIRED_COOKIE]
        assert '"user":null' in compact(whoami.text)


@pytest.mark.parametrize(("kind", "via"), FRAMEWORK_CASES)
async def test_read_only_handler_sends_no_cookie_and_writes_nothing(
    kind: str, via: str, dyn: Dynamo
) -> None:
    counting: list[Counting] = []

    def build(store: Any) -> Any:
        counting.append(Counting(store))
        return EXAMPLES[kind].create_app(counting[-1], secret_keys=SECRET)

    async with browse(build, kind, via, dyn) as browser:
        [calls] = [c.calls for c in counting]
        await browser.post("/login", {"user": "carol"})
        calls.clear()
        reply = await browser.get("/whoami")
        assert reply.status == 200
        assert reply.set_cookies == []
        assert "cookie" in ",".join(reply.all("vary")).lower()
        assert dict(calls) == {"load": 1}
        assert '"user":"carol"' in compact(reply.text)
        # No cookie at all: no store call either.
        browser.cookie = None
        calls.clear()
        anonymous = await browser.get("/whoami")
        assert anonymous.set_cookies == []
        assert dict(calls) == {}


@pytest.mark.parametrize("kind", list(EXAMPLES))
async def test_exact_cookie_attributes(kind: str, dyn: Dynamo) -> None:
    now = float(int(time.time()))
    build = example(
        kind,
        cookie_name="__Host-sid",
        same_site="strict",
        expiry=OnInactivity(timedelta(hours=1)),
        clock=Clock(now),
    )
    async with browse(build, kind, "client", dyn) as browser:
        reply = await browser.get("/")
        [header] = reply.set_cookies
        expires = format_datetime(datetime.fromtimestamp(now + 3600, timezone.utc), usegmt=True)
        assert re.fullmatch(
            r"__Host-sid=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; Path=/; Max-Age=3600; "
            rf"Expires={re.escape(expires)}; HttpOnly; Secure; SameSite=Strict",
            header,
        ), header
        value = header.split(";", 1)[0].split("=", 1)[1]
        # Log out with that cookie: the expiring header keeps the name, path and flags.
        logout = await browser.send("POST", "/logout", {"cookie": f"__Host-sid={value}"}, {})
        assert logout.set_cookies == [
            "__Host-sid=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
            "HttpOnly; Secure; SameSite=Strict"
        ]
        assert not await item_exists(dyn, value.split(".")[0])


async def test_seed_counter_example(dyn: Dynamo) -> None:
    build = lambda store: counter.create_app(store, secret_keys=SECRET)  # noqa: E731
    async with browse(build, "raw", "client", dyn) as browser:
        texts = [(await browser.get("/")).text for _ in range(3)]
    assert texts == ["Current count: 0", "Current count: 1", "Current count: 2"]
    assert await session_data(dyn.store, browser.session_id) == {"counter": 3}


# -- Starlette and FastAPI -------------------------------------------------------------------


def _starlette_probe_app(store: Any, order: str) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def touch(request: Request) -> Response:
        session = request.session  # Starlette calls mark_accessed() here
        return JSONResponse(
            {
                "ours": isinstance(session, Session),
                "same": session is request.scope["session"] is get_session(request),
                "state": request.scope["state"].get("session") is session,
                "accessed": session.accessed,  # type: ignore[attr-defined]
            }
        )

    async def count(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(f"Current count: {request.session['n']} " + "x" * 600)

    ours = Middleware(SessionMiddleware, store=store, secret_keys=SECRET)
    others = [
        Middleware(GZipMiddleware, minimum_size=10),
        Middleware(
            CORSMiddleware,
            allow_origins=["https://ui.example"],
            allow_methods=["GET", "POST"],
            allow_credentials=True,
        ),
    ]
    return Starlette(
        routes=[Route("/touch", touch), Route("/", count)],
        middleware=[ours, *others] if order == "session-outer" else [*others, ours],
    )


async def test_starlette_request_session_is_ours_and_marks_access(dyn: Dynamo) -> None:
    build = lambda store: _starlette_probe_app(store, "session-outer")  # noqa: E731
    async with browse(build, "starlette", "http", dyn) as browser:  # uvicorn gives scope["state"]
        reply = await browser.get("/touch")
    assert compact(reply.text) == '{"ours":true,"same":true,"state":true,"accessed":true}'
    [vary] = reply.all("vary")
    assert "Cookie" in vary.split(", ")  # marked accessed, though no key was read
    assert reply.set_cookies == []


@pytest.mark.parametrize("order", ["session-outer", "session-inner"])
async def test_starlette_beside_gzip_and_cors(dyn: Dynamo, order: str) -> None:
    async with client_for(_starlette_probe_app(dyn.store, order)) as client:
        headers = {"accept-encoding": "gzip", "origin": "https://ui.example"}
        first = await client.get("/", headers=headers)
        assert first.headers["content-encoding"] == "gzip"
        assert first.text.startswith("Current count: 1 ")  # httpx decoded the gzip body
        assert first.headers["access-control-allow-origin"] == "https://ui.example"
        assert SESSION_COOKIE.match(first.headers["set-cookie"])
        vary = {v.strip().lower() for v in ",".join(first.headers.get_list("vary")).split(",")}
        assert {"cookie", "accept-encoding"} <= vary
        cookie = first.headers["set-cookie"].split(";", 1)[0]
        client.cookies.clear()
        second = await client.get("/", headers={**headers, "cookie": cookie})
        assert second.text.startswith("Current count: 2 ")
        # A CORS preflight carries no cookie: answered without a session cookie.
        preflight = await client.options(
            "/", headers={**headers, "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 200
        assert "set-cookie" not in preflight.headers


# -- Litestar ----------------------------------------------------------------------------------


def _litestar_app(store: Any, mount: str) -> Any:
    from litestar import Litestar, Request, get, post
    from litestar.middleware import DefineMiddleware

    @get("/show")
    async def show(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"data": dict(request.session), "ours": isinstance(request.session, Session)}

    @post("/set", status_code=200)
    async def set_(request: Request[Any, Any, Any]) -> None:
        request.set_session({"user": "dora", "roles": ["admin"]})

    @post("/add", status_code=200)
    async def add(request: Request[Any, Any, Any]) -> None:
        request.session["visits"] = request.session.get("visits", 0) + 1

    @post("/clear", status_code=200)
    async def clear(request: Request[Any, Any, Any]) -> None:
        request.clear_session()

    @post("/empty", status_code=200)
    async def empty(request: Request[Any, Any, Any]) -> None:
        request.set_session({})

    handlers = [show, set_, add, clear, empty]
    options = {"store": store, "secret_keys": SECRET}
    hooks = {"on_startup": [store.open], "on_shutdown": [store.close]}  # see the example
    if mount == "define":
        return Litestar(
            handlers, middleware=[DefineMiddleware(SessionMiddleware, **options)], **hooks
        )
    if mount == "factory":
        return Litestar(
            handlers, middleware=[lambda app: SessionMiddleware(app, **options)], **hooks
        )
    # Around the whole app: the lifespan reaches SessionMiddleware, no hooks needed.
    return SessionMiddleware(Litestar(handlers), **options)


@pytest.mark.parametrize("mount", ["define", "factory", "outer"])
async def test_litestar_set_session_and_clear_session(mount: str, dyn: Dynamo) -> None:
    build = lambda store: _litestar_app(store, mount)  # noqa: E731
    async with browse(build, "litestar", "client", dyn) as browser:
        shown = await browser.get("/show")
        assert compact(shown.text) == '{"data":{},"ours":true}'
        assert shown.set_cookies == []

        created = await browser.post("/set")
        [header] = created.set_cookies
        assert SESSION_COOKIE.match(header)
        session_id = browser.session_id
        assert await session_data(dyn.store, session_id) == {"user": "dora", "roles": ["admin"]}

        await browser.post("/add")
        assert await session_data(dyn.store, session_id) == {
            "user": "dora",
            "roles": ["admin"],
            "visits": 1,
        }
        await browser.post("/set")  # replaces the data as a whole: "visits" goes
        assert await session_data(dyn.store, session_id) == {"user": "dora", "roles": ["admin"]}
        assert browser.session_id == session_id

        cleared = await browser.post("/clear")
        assert cleared.set_cookies == [EXPIRED_COOKIE]
        assert not await item_exists(dyn, session_id)

        await browser.post("/set")
        second = browser.session_id
        emptied = await browser.post("/empty")  # an empty mapping ends the session too
        assert emptied.set_cookies == [EXPIRED_COOKIE]
        assert not await item_exists(dyn, second)


@pytest.mark.parametrize("mount", ["define", "outer"])
async def test_litestar_clear_session_of_a_new_session_writes_nothing(
    mount: str, dyn: Dynamo
) -> None:
    counting: list[Counting] = []

    def build(store: Any) -> Any:
        counting.append(Counting(store))
        return _litestar_app(counting[-1], mount)

    async with browse(build, "litestar", "client", dyn) as browser:
        reply = await browser.post("/clear")
    assert reply.status == 200
    assert reply.set_cookies == []
    assert counting[0].writes == 0


# -- Quart -------------------------------------------------------------------------------------


def _quart_app(store: Any) -> Any:
    from quart import Quart, request, session

    from asgi_dynamo_session.quart import QuartSession, install

    app = Quart(__name__)
    install(app, store=store, secret_keys=SECRET)

    @app.get("/probe")
    async def probe() -> Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return {
            "type": type(current).__name__,
            "same": current is request.scope["session"] is get_session(request),
            "ours": isinstance(current, Session) and isinstance(current, QuartSession),
            "new": session.new,
        }

    @app.post("/permanent")
    async def permanent() -> Any:
        session["user"] = "erin"
        session.permanent = True
        return {"permanent": session.permanent}

    @app.post("/nested")
    async def nested() -> Any:
        session.setdefault("cart", {"items": []})["items"].append(request.args["item"])
        if request.args.get("flask") == "1":
            session.modified = True  # the Flask idiom after a nested change: accepted
        return {"modified": session.modified}

    @app.post("/scope")
    async def scope_write() -> Any:
        request.scope["session"]["plain"] = "asgi"  # plain ASGI access works the same
        return {"data": dict(session)}

    return app


async def test_quart_session_is_the_middleware_session(dyn: Dynamo) -> None:
    async with browse(_quart_app, "quart", "client", dyn) as browser:
        reply = await browser.get("/probe")
        assert compact(reply.text) == '{"new":true,"ours":true,"same":true,"type":"QuartSession"}'
        assert reply.set_cookies == []

        written = await browser.post("/scope")
        assert compact(written.text) == '{"data":{"plain":"asgi"}}'
        assert SESSION_COOKIE.match(written.set_cookies[0])
        assert await session_data(dyn.store, browser.session_id) == {"plain": "asgi"}
        assert '"new":false' in compact((await browser.get("/probe")).text)


async def test_quart_nested_changes_with_or_without_the_flask_idiom(dyn: Dynamo) -> None:
    async with browse(_quart_app, "quart", "client", dyn) as browser:
        assert compact((await browser.post("/nested?item=a")).text) == '{"modified":true}'
        assert compact((await browser.post("/nested?item=b&flask=1")).text) == '{"modified":true}'
        assert compact((await browser.post("/nested?item=c")).text) == '{"modified":true}'
    assert await session_data(dyn.store, browser.session_id) == {"cart": {"items": ["a", "b", "c"]}}


async def test_quart_permanent_sets_a_lasting_cookie(dyn: Dynamo) -> None:
    apps: list[Any] = []

    def build(store: Any) -> Any:
        apps.append(_quart_app(store))
        return apps[-1]

    async with browse(build, "quart", "client", dyn) as browser:
        reply = await browser.post("/permanent")
        assert compact(reply.text) == '{"permanent":true}'
        [header] = reply.set_cookies
        lifetime = int(apps[0].permanent_session_lifetime.total_seconds())
        max_age = re.search(r"; Max-Age=(\d+); ", header)
        assert max_age is not None, header
        assert lifetime - 5 <= int(max_age.group(1)) <= lifetime
        record = await dyn.store.load(browser.session_id)
        assert record is not None
        assert record.data == {"user": "erin"}  # no "_permanent" key, unlike Flask
        assert record.expiry_date > datetime.now(timezone.utc) + timedelta(days=30)


async def test_quart_without_the_middleware_says_what_is_missing() -> None:
    from quart import Quart, session

    from asgi_dynamo_session.quart import DynamoSessionInterface

    app = Quart(__name__)
    app.session_interface = DynamoSessionInterface()  # type: ignore[assignment]
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/")
    async def home() -> str:
        return str(session.get("x"))

    try:
        response = await app.test_client().get("/")
    except SessionError as exc:
        assert "SessionMiddleware" in str(exc)
    else:  # Quart < 0.21 (on Python 3.10) renders the error as a debug page instead
        assert response.status_code == 500
        assert b"SessionMiddleware" in await response.get_data()


# -- get_session with each framework's request object -------------------------------------------


async def test_get_session_accepts_every_request_object(dyn: Dynamo) -> None:
    from litestar import Litestar, Request, get
    from quart import Quart
    from quart import request as quart_request
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from asgi_dynamo_session.quart import install

    seen: dict[str, bool] = {}

    async def starlette_view(request: StarletteRequest) -> PlainTextResponse:
        seen["starlette"] = get_session(request) is request.scope["session"]
        return PlainTextResponse("ok")

    fast = FastAPI()

    @fast.get("/")
    async def fastapi_view(request: FastAPIRequest) -> str:
        seen["fastapi"] = get_session(request) is request.scope["session"]
        return "ok"

    @get("/")
    async def litestar_view(request: Request[Any, Any, Any]) -> str:  # Litestar resolves the name
        seen["litestar"] = get_session(request) is request.scope["session"]
        return "ok"

    def quart_app(store: Any) -> Any:
        app = Quart(__name__)
        install(app, store=store, secret_keys=SECRET)

        @app.get("/")
        async def quart_view() -> str:
            proxy, real = quart_request, quart_request._get_current_object()  # type: ignore[attr-defined]
            seen["quart"] = get_session(proxy) is get_session(real) is real.scope["session"]
            return "ok"

        return app

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        seen["raw"] = get_session(scope) is scope["session"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def wrap(app: Any) -> Callable[[Any], Any]:
        return lambda store: SessionMiddleware(app, store=store, secret_keys=SECRET)

    cases: list[tuple[str, Callable[[Any], Any]]] = [
        ("starlette", wrap(Starlette(routes=[Route("/", starlette_view)]))),
        ("fastapi", wrap(fast)),
        ("litestar", wrap(Litestar([litestar_view]))),
        ("quart", quart_app),
        ("raw", wrap(raw)),
    ]
    for kind, build in cases:
        async with browse(build, kind, "client", dyn) as browser:
            assert (await browser.get("/")).status == 200, kind
    assert seen == dict.fromkeys(["starlette", "fastapi", "litestar", "quart", "raw"], True)
    with pytest.raises(SessionError, match="SessionMiddleware"):
        get_session({"type": "http"})
    with pytest.raises(TypeError):
        get_session(object())
