"""Scenario 2: the middleware called in process, on one small Starlette app.

Requests are plain ASGI calls (scope dicts and receive/send callables built here), so the harness
adds next to nothing. The same app runs without session middleware, with Starlette's cookie-only
``SessionMiddleware`` and with ours on `MemoryStore` and on `DynamoDBStore` (fast transport).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, MemoryStore, SessionMiddleware

from ._env import REGION
from ._measure import Op, Plan, Prepare, Series, compare
from .payload import SECRET, json_safe, session_data

CASES = ("no cookie, untouched", "read-only", "modifying")
NONE = "no middleware"
WRAPPER = "send-wrapper floor"
STARLETTE = "starlette cookie"
MEMORY = "ours MemoryStore"
DYNAMO = "ours DynamoDB fast"
ASGIApp = Callable[..., Any]
DYNAMO_SCALE = 0.2  # its requests cost ~50x the in-memory ones; fewer of them suffice


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def login(request: Request) -> PlainTextResponse:
    request.session.update(json_safe(session_data()))
    return PlainTextResponse("welcome")


async def read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.session.get("username", "nobody"))


async def modify(request: Request) -> PlainTextResponse:
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    return PlainTextResponse(str(session["visits"]))


class SendWrapper:
    """The least a session middleware must do: wrap `send` to see the response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        def wrapped(message: Any) -> Any:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            return send(message)

        await self.app(scope, receive, wrapped)


def app(*middleware: Middleware) -> Starlette:
    routes = [Route("/", untouched), Route("/login", login), Route("/read", read)]
    return Starlette(routes=[*routes, Route("/modify", modify)], middleware=list(middleware))


async def call(asgi: ASGIApp, path: str, cookie: bytes | None = None) -> bytes | None:
    """One GET through the ASGI app; returns the Set-Cookie pair (``name=value``) if any."""
    headers = [(b"host", b"bench.example"), (b"user-agent", b"bench")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bench.example", 443),
        "state": {},
    }
    set_cookie: bytes | None = None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal set_cookie
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                raise RuntimeError(f"{path} answered {message['status']}")
            for name, value in message.get("headers", ()):
                if name == b"set-cookie":
                    set_cookie = value.partition(b";")[0]

    await asgi(scope, receive, send)
    return set_cookie


def variant(asgi: ASGIApp, case: str) -> Prepare:
    """Requests of `case`, each worker a user with its own session where the case needs one."""

    async def prepare(concurrency: int, n: int) -> Op:
        if case == CASES[0]:
            return lambda w: call(asgi, "/")
        cookies = []
        for _ in range(concurrency):
            cookie = await call(asgi, "/login")
            if cookie is None:
                raise RuntimeError("login set no cookie")
            cookies.append(cookie)
        path = "/read" if case == CASES[1] else "/modify"
        return lambda w: call(asgi, path, cookies[w])

    return prepare


async def run(endpoint: str, table: str, plan: Plan, notes: dict[str, str]) -> list[Series]:
    apps: dict[str, ASGIApp] = {
        NONE: app(),
        WRAPPER: app(Middleware(SendWrapper)),
        STARLETTE: app(Middleware(StarletteSessions, secret_key=SECRET)),
        MEMORY: app(Middleware(SessionMiddleware, store=MemoryStore(), secret_keys=SECRET)),
    }
    store = DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table),
        endpoint_url=endpoint,
        region_name=REGION,
        transport="fast",
    )
    try:
        await store.open()
        await store.create_table()
        apps[DYNAMO] = app(Middleware(SessionMiddleware, store=store, secret_keys=SECRET))
    except Exception as exc:
        notes["middleware on DynamoDB"] = f"unavailable: {type(exc).__name__}: {exc}"
    results: list[Series] = []
    try:
        for case in CASES:
            variants = {
                name: variant(asgi, case)
                for name, asgi in apps.items()
                if name not in (NONE, WRAPPER) or case == CASES[0]
            }
            for concurrency in plan.ops:
                results += await compare(
                    "middleware", case, variants, plan, concurrency, scale={DYNAMO: DYNAMO_SCALE}
                )
    finally:
        await store.close()
    return results
