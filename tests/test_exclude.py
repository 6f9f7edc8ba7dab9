"""``exclude=``: excluded paths get no session at all, even with a valid cookie.

No store call, no ``Set-Cookie``, no ``Vary``, and ``scope["session"]`` is not set by us (http and
websocket); every other path behaves as before. Str items are path prefixes, compiled regexes are
searched in the path (``re.search``). Counted on a real `DynamoDBStore`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from support import SECRET, CountingStore, client_for, cookie_of, running, session_data
from websockets.asyncio.client import connect

from asgi_dynamo_session import DynamoDBStore, MemoryStore, SessionMiddleware

EXCLUDE: list[str | re.Pattern[str]] = ["/static/", "/health", re.compile(r"\.(css|js)$")]


def _starlette(store: Any, **options: Any) -> Any:
    def view(request: Request) -> Response:
        if "session" not in request.scope:
            return JSONResponse({"session": None})
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"session": dict(request.session)})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"has_session": "session" in websocket.scope})
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/{path:path}", view),
            WebSocketRoute("/ws/{path:path}", ws),
        ]
    )
    return SessionMiddleware(app, store=store, secret_keys=SECRET, **options)


def _fastapi(store: Any, **options: Any) -> Any:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secret_keys=SECRET, **options)

    @app.get("/{path:path}")
    async def view(request: FastAPIRequest) -> dict[str, Any]:
        if "session" not in request.scope:
            return {"session": None}
        request.session["n"] = request.session.get("n", 0) + 1
        return {"session": dict(request.session)}

    return app


BUILDERS = {"starlette": _starlette, "fastapi": _fastapi}


@pytest.fixture
def counting(store: DynamoDBStore) -> CountingStore:
    return CountingStore(store)


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize(
    "path",
    ["/static/app.png", "/static/css/x", "/health", "/healthz", "/assets/site.css", "/a/b.js"],
)
async def test_an_excluded_path_gets_no_session_even_with_a_valid_cookie(
    kind: str, path: str, counting: CountingStore, store: DynamoDBStore
) -> None:
    app = BUILDERS[kind](counting, exclude=EXCLUDE)
    async with client_for(app) as client:
        first = await client.get("/page")
        cookie = cookie_of(first)
        assert first.json() == {"session": {"n": 1}}
        counting.calls.clear()
        client.cookies.clear()

        excluded = await client.get(path, headers={"cookie": f"id={cookie}"})
        assert excluded.status_code == 200
        assert excluded.json() == {"session": None}  # scope["session"] was not set
        assert "set-cookie" not in excluded.headers
        assert "vary" not in excluded.headers
        assert dict(counting.calls) == {}

        # The same cookie on a path that is not excluded: loaded and saved as usual.
        again = await client.get("/page", headers={"cookie": f"id={cookie}"})
        assert again.json() == {"session": {"n": 2}}
        assert counting.calls["load"] == 1
    assert await session_data(store, cookie.split(".")[0]) == {"n": 2}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("path", ["/", "/statics", "/static", "/x/health", "/site.css.map"])
async def test_paths_that_are_not_excluded_still_get_a_session(
    kind: str, path: str, counting: CountingStore
) -> None:
    app = BUILDERS[kind](counting, exclude=EXCLUDE)
    async with client_for(app) as client:
        reply = await client.get(path)
    assert reply.json() == {"session": {"n": 1}}
    assert reply.headers["set-cookie"].startswith("id=")
    assert counting.calls == {"create": 1}


async def test_prefix_and_regex_semantics(counting: CountingStore) -> None:
    """A str is a plain prefix; a pattern is searched anywhere unless anchored with ^."""
    app = _starlette(
        counting, exclude=["/api/public", re.compile("^/admin/assets/"), re.compile("/raw/")]
    )
    async with client_for(app) as client:
        for path, excluded in [
            ("/api/public", True),
            ("/api/publications", True),  # a prefix of the text, not of path segments
            ("/api/private", False),
            ("/admin/assets/x.png", True),
            ("/v2/admin/assets/x.png", False),  # anchored with ^
            ("/files/raw/1", True),  # unanchored: searched anywhere in the path
            ("/files/rawness", False),
        ]:
            client.cookies.clear()
            reply = await client.get(path)
            assert (reply.json()["session"] is None) is excluded, path


async def test_exclude_accepts_one_item_and_rejects_what_cannot_match() -> None:
    store = MemoryStore()
    app = _starlette(store, exclude="/health")  # one prefix, not its characters
    async with client_for(app) as client:
        assert (await client.get("/health")).json() == {"session": None}
        assert (await client.get("/h")).json() == {"session": {"n": 1}}
    with pytest.raises(ValueError, match="must start with '/'"):
        SessionMiddleware(_ok, store=store, secret_keys=SECRET, exclude=["static/"])
    with pytest.raises(TypeError, match="compiled str regexes"):
        SessionMiddleware(_ok, store=store, secret_keys=SECRET, exclude=[re.compile(b"/x")])
    with pytest.raises(TypeError, match="path prefixes"):
        SessionMiddleware(_ok, store=store, secret_keys=SECRET, exclude=[42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exclude_opt_key"):
        SessionMiddleware(_ok, store=store, secret_keys=SECRET, exclude_opt_key="")


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_an_excluded_websocket_gets_no_session(counting: CountingStore) -> None:
    app = _starlette(counting, exclude=["/ws/live"])
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        cookie = cookie_of(await client.get("/page"))
        counting.calls.clear()
        headers = {"cookie": f"id={cookie}"}
        ws_url = url.replace("http://", "ws://")
        async with connect(f"{ws_url}/ws/live/feed", additional_headers=headers) as ws:
            assert json.loads(await ws.recv()) == {"has_session": False}
        assert dict(counting.calls) == {}
        async with connect(f"{ws_url}/ws/other", additional_headers=headers) as ws:
            assert json.loads(await ws.recv()) == {"has_session": True}
        assert counting.calls["load"] == 1


async def test_without_exclude_every_path_gets_a_session(counting: CountingStore) -> None:
    """Control: the same request without exclude= does load the session (the test above can
    fail)."""
    app = _starlette(counting)
    async with client_for(app) as client:
        cookie = cookie_of(await client.get("/page"))
        counting.calls.clear()
        client.cookies.clear()
        reply = await client.get("/static/app.png", headers={"cookie": f"id={cookie}"})
    assert reply.json() == {"session": {"n": 2}}
    assert counting.calls["load"] == 1
