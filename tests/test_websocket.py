"""WebSocket sessions over a real uvicorn server on loopback, with the `websockets` client.

The session is loaded from the handshake cookie, ``await session.save()`` persists during the
connection, what changed is saved at disconnect, and a new or cycled session sets its cookie in
the handshake response (the ``websocket.accept`` headers). Same app logic under each framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from litestar import WebSocket as LitestarWebSocket
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect
from support import (
    LOGGER,
    SECRET,
    SESSION_COOKIE,
    WarningCollector,
    read_item,
    running,
    scan_all,
    session_data,
)
from websockets.asyncio.client import connect

from asgi_dynamo_session import DynamoDBStore, Session, SessionMiddleware, get_session

FRAMEWORKS = ["raw", "starlette", "litestar", "litestar-define", "quart"]
WARNING = "after the response started"


# -- one behaviour, four frameworks -------------------------------------------------------------


async def conversation(
    session: Session,
    query: dict[str, str],
    accept: Callable[[], Awaitable[None]],
    send: Callable[[str], Awaitable[None]],
    receive: Callable[[], Awaitable[str | None]],
) -> None:
    """What every framework's /ws endpoint does; `receive` gives None once the client left."""
    if "new" in query:
        session["ws"] = query["new"]  # before accept: the handshake answer carries the cookie
    if "cycle" in query:
        session.cycle_id()
    await accept()
    await send(f"count={session.get('count', 0)}")
    while (text := await receive()) is not None:
        if text == "inc":
            session["count"] = session.get("count", 0) + 1
            await session.save()
            await send(f"saved={session['count']}")
        elif text.startswith("put:"):
            session["note"] = text[4:]  # saved when the connection ends
            await send("ok")
        elif text == "late":
            session["late"] = True  # a brand-new session after accept: cannot send a cookie
            await session.save()
            await send("ok")


async def count_page(session: Session) -> str:
    session["count"] = session.get("count", 0) + 1
    return f"count={session['count']}"


def raw_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            body = (await count_page(get_session(scope))).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"

        async def next_text() -> str | None:
            message = await receive()
            return None if message["type"] == "websocket.disconnect" else message["text"]

        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        await conversation(
            get_session(scope),
            query,
            lambda: send({"type": "websocket.accept"}),
            lambda text: send({"type": "websocket.send", "text": text}),
            next_text,
        )

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await count_page(get_session(request)))

    async def ws(websocket: StarletteWebSocket) -> None:
        async def next_text() -> str | None:
            try:
                return await websocket.receive_text()
            except WebSocketDisconnect:
                return None

        await conversation(
            websocket.session,  # type: ignore[arg-type]
            dict(websocket.query_params),
            websocket.accept,
            websocket.send_text,
            next_text,
        )

    return Starlette(routes=[Route("/", page), WebSocketRoute("/ws", ws)])


def litestar_app(**options: Any) -> Any:
    from litestar import Litestar, Request, get, websocket
    from litestar.exceptions import WebSocketDisconnect as LitestarDisconnect

    @get("/")
    async def page(request: Request[Any, Any, Any]) -> str:
        return await count_page(get_session(request))

    @websocket("/ws")
    async def ws(socket: LitestarWebSocket[Any, Any, Any]) -> None:
        async def next_text() -> str | None:
            try:
                return await socket.receive_text()
            except LitestarDisconnect:
                return None

        await conversation(
            socket.session,  # type: ignore[arg-type]
            dict(socket.query_params),
            socket.accept,
            socket.send_text,
            next_text,
        )

    return Litestar([page, ws], **options)


def quart_app() -> Any:
    from quart import Quart, session, websocket

    app = Quart(__name__)

    @app.get("/")
    async def page() -> str:
        return await count_page(session)  # type: ignore[arg-type]

    @app.websocket("/ws")
    async def ws() -> None:
        async def next_text() -> str | None:
            # Quart cancels this handler when the client leaves; the middleware saves after.
            text = await websocket.receive()
            return text if isinstance(text, str) else text.decode()

        await conversation(
            session._get_current_object(),  # type: ignore[attr-defined]
            dict(websocket.args),
            websocket.accept,
            websocket.send,
            next_text,
        )

    return app


def build(kind: str, store: DynamoDBStore) -> Any:
    if kind == "quart":
        from asgi_dynamo_session.quart import install

        app = quart_app()
        install(app, store=store, secret_keys=SECRET)
        return app
    if kind == "litestar-define":  # Litestar's own middleware list (http and websocket routes)
        from litestar.middleware import DefineMiddleware

        return litestar_app(
            middleware=[DefineMiddleware(SessionMiddleware, store=store, secret_keys=SECRET)],
            on_startup=[store.open],
            on_shutdown=[store.close],
        )
    inner = {"raw": raw_app, "starlette": starlette_app, "litestar": litestar_app}[kind]()
    return SessionMiddleware(inner, store=store, secret_keys=SECRET)


# -- a real server ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: Any, ws: str = "auto") -> AsyncIterator[tuple[str, str]]:
    """`app` on uvicorn (`support.running`) with websocket implementation `ws`; yields the http
    and ws base URLs."""
    async with running(app, ws=ws) as http:
        yield http, "ws://" + http.removeprefix("http://")


async def http_cookie(base: str) -> str:
    """A session made over HTTP (count=1): its ``id=...`` cookie pair."""
    async with httpx.AsyncClient(base_url=base) as client:
        reply = await client.get("/")
    assert reply.text == "count=1"
    return reply.headers["set-cookie"].split(";", 1)[0]


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any) -> Any:
    """Poll `probe` until it returns `expected` (the server saves after the client has left)."""
    deadline = time.monotonic() + 10
    while (value := await probe()) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value


def sid(cookie: str) -> str:
    return cookie.split("=", 1)[1].split(".", 1)[0]


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_loaded_on_connect_saved_during_and_at_disconnect(
    kind: str, store: DynamoDBStore
) -> None:
    async with serving(build(kind, store)) as (http, ws):
        cookie = await http_cookie(http)
        session_id = sid(cookie)
        async with connect(f"{ws}/ws", additional_headers={"Cookie": cookie}) as conn:
            assert conn.response is not None
            assert conn.response.headers.get_all("Set-Cookie") == []  # unchanged session
            assert await conn.recv() == "count=1"  # loaded from the handshake cookie

            await conn.send("inc")
            assert await conn.recv() == "saved=2"
            assert await session_data(store, session_id) == {"count": 2}  # saved while connected

            await conn.send("put:hello")
            assert await conn.recv() == "ok"
            assert await session_data(store, session_id) == {"count": 2}  # not yet
        expected = {"count": 2, "note": "hello"}
        assert await eventually(lambda: session_data(store, session_id), expected) == expected

        async with connect(f"{ws}/ws", additional_headers={"Cookie": cookie}) as conn:
            assert await conn.recv() == "count=2"  # same id, same item


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_new_session_sets_its_cookie_in_the_handshake(
    kind: str, store: DynamoDBStore
) -> None:
    async with serving(build(kind, store)) as (http, ws):
        async with connect(f"{ws}/ws?new=hi") as conn:
            assert conn.response is not None
            [header] = conn.response.headers.get_all("Set-Cookie")
            found = SESSION_COOKIE.match(header)
            assert found, header
            assert await conn.recv() == "count=0"
            assert await session_data(store, found.group(1)) == {"ws": "hi"}  # stored at accept
            await conn.send("inc")
            assert await conn.recv() == "saved=1"
        assert await session_data(store, found.group(1)) == {"ws": "hi", "count": 1}

        # The cookie from the handshake works over HTTP too.
        async with httpx.AsyncClient(base_url=http) as client:
            reply = await client.get("/", headers={"cookie": header.split(";", 1)[0]})
        assert reply.text == "count=2"
        assert "set-cookie" in reply.headers  # count changed: the saved session's cookie again


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_cycled_session_sets_the_new_cookie_in_the_handshake(
    kind: str, store: DynamoDBStore, dynamodb_client: Any
) -> None:
    async with serving(build(kind, store)) as (http, ws):
        cookie = await http_cookie(http)
        old = sid(cookie)
        async with connect(f"{ws}/ws?cycle=1", additional_headers={"Cookie": cookie}) as conn:
            assert conn.response is not None
            [header] = conn.response.headers.get_all("Set-Cookie")
            found = SESSION_COOKIE.match(header)
            assert found, header
            assert found.group(1) != old
            assert await conn.recv() == "count=1"
        key = store.key(old)
        assert await read_item(dynamodb_client, store.props.table_name, key) is None
        assert await session_data(store, found.group(1)) == {"count": 1}


@pytest.mark.parametrize("ws_impl", ["websockets-sansio", "wsproto"])
async def test_handshake_cookie_with_each_uvicorn_websocket_implementation(
    ws_impl: str, store: DynamoDBStore
) -> None:
    async with (
        serving(build("raw", store), ws=ws_impl) as (_http, ws),
        connect(f"{ws}/ws?new=impl") as conn,
    ):
        assert conn.response is not None
        [header] = conn.response.headers.get_all("Set-Cookie")
        assert SESSION_COOKIE.match(header), header
        assert await conn.recv() == "count=0"


async def test_new_session_after_accept_is_saved_but_warns(
    store: DynamoDBStore, dynamodb_client: Any
) -> None:
    # A handler of our own: Litestar (used by other tests) reconfigures the root logger.
    logger, collect = logging.getLogger(LOGGER), WarningCollector()
    logger.addHandler(collect)
    try:
        async with serving(build("raw", store)) as (_http, ws):
            async with connect(f"{ws}/ws") as conn:
                assert conn.response is not None
                assert conn.response.headers.get_all("Set-Cookie") == []
                assert await conn.recv() == "count=0"
                await conn.send("late")
                assert await conn.recv() == "ok"

            def warned() -> bool:
                return any(WARNING in message for message in collect.messages)

            deadline = time.monotonic() + 10
            while not warned() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        logger.removeHandler(collect)
    assert warned(), collect.messages
    # Saved all the same (never silently dropped), under an id the browser was not told.
    assert len(await scan_all(dynamodb_client, store.props.table_name)) == 1
