"""README.md stays true: every Python snippet runs against the test server, and the import list
is the public API.

The snippets run in README order in one namespace, as a reader would type them, with
``AWS_ENDPOINT_URL_DYNAMODB`` pointing at the test server and the README's tables
(``TowerSessions``, ``MyTowerSessions``) created there. Before each snippet ``app`` is a plain
counter app (so ``app = SessionMiddleware(app, ...)`` wraps "your app"; a top-level stub
``async def app(scope, receive, send): ...`` stands for it too), and ``secret`` / ``SECRET`` are
secret keys. Then:

* a snippet whose free names include ``request``, ``scope`` or ``session`` runs as the body of a
  request handler behind `SessionMiddleware`, and the request must succeed;
* a snippet that (re)binds ``app`` is served by uvicorn (lifespan on) and requested: ``GET /``
  twice, then every route its decorators or ``Route(...)`` calls name, keeping cookies like a
  browser; no answer may be a 5xx, and a counter on ``/`` must count up;
* a snippet that defines ``ws`` is served as a websocket app and spoken to;
* a snippet that binds a new ``store`` opens and closes it (the table check runs);
* top-level ``await`` is awaited.
"""

from __future__ import annotations

import ast
import base64
import builtins
import hashlib
import inspect
import re
import sys
import traceback
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import SECRET, running
from websockets.asyncio.client import connect

import asgi_dynamo_session
from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreKey,
    DynamoDBStoreProps,
    SessionMiddleware,
    get_session,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
REGION = "us-east-1"
#: The tables the README's snippets use.
TABLES = [
    DynamoDBStoreProps(),
    DynamoDBStoreProps(
        table_name="MyTowerSessions",
        partition_key=DynamoDBStoreKey(name="session_id", prefix="SESSIONS::TOWER::"),
        sort_key=DynamoDBStoreKey(name="sort_key", prefix="TOWER_SESSIONS::"),
    ),
]
#: Free names that make a snippet the body of a request handler.
HANDLER_NAMES = {"request", "scope", "session"}
ROUTE_CALLS = {"get", "post", "put", "patch", "delete", "route", "Route"}
COUNT = re.compile(r"count\W+(\d+)", re.I)


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_each_snippet_compiles(index: int) -> None:
    compile(SNIPPETS[index], f"README.md snippet {index}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_every_name_the_readme_imports_from_the_package_exists() -> None:
    imported: set[str] = set()
    for snippet in SNIPPETS:
        tree = ast.parse(snippet)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "asgi_dynamo_session":
                imported.update(alias.name for alias in node.names)
    assert imported
    assert imported <= set(asgi_dynamo_session.__all__)


def test_the_seed_configuration_example_builds_a_store_without_io() -> None:
    (usage,) = [s for s in SNIPPETS if "MyTowerSessions" in s]
    namespace: dict[str, object] = {}
    exec(compile(usage, "README usage", "exec"), namespace)
    store = namespace["store"]
    assert isinstance(store, asgi_dynamo_session.DynamoDBStore)
    assert store.props.table_name == "MyTowerSessions"
    hashed = base64.urlsafe_b64encode(hashlib.sha256(b"abc").digest()).rstrip(b"=").decode()
    assert store.key("abc") == {
        "session_id": {"S": "SESSIONS::TOWER::" + hashed},
        "sort_key": {"S": "TOWER_SESSIONS::" + hashed},
    }
    assert isinstance(namespace["app"], asgi_dynamo_session.SessionMiddleware)


# -- running every snippet ------------------------------------------------------------------------


async def your_app(scope: Any, receive: Any, send: Any) -> None:
    """What the README calls "app" before wrapping it: a counter on the session."""
    if scope["type"] != "http":
        return
    session = get_session(scope)
    session["count"] = session.get("count", 0) + 1
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"count: {session['count']}".encode()})


def without_stub_app(tree: ast.Module) -> ast.Module:
    """The snippet without a top-level ``def app(...): ...`` stub: "your app" is ours."""

    def stub(node: ast.stmt) -> bool:
        return (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == "app"
            and len(node.body) == 1
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
            and node.body[0].value.value is Ellipsis
        )

    tree.body = [node for node in tree.body if not stub(node)]
    return tree


def free_names(tree: ast.AST) -> set[str]:
    """Names the snippet reads but never binds (roughly: any binding anywhere counts)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return loaded - bound - set(dir(builtins))


def routes_of(tree: ast.AST) -> list[tuple[str, str]]:
    """(method, path) of each route the snippet declares, in order."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if name in ROUTE_CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            method = "GET" if name in ("route", "Route") else name.upper()
            found.append((method, first.value))
    return found


class Browser:
    """Requests against a served app, keeping every cookie by hand (they are Secure; the server
    is plain http)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.client.cookies.clear()
        response = await self.client.request(
            method, path, headers={"cookie": header} if header else {}, follow_redirects=False
        )
        for set_cookie in response.headers.get_list("set-cookie"):
            name, _, rest = set_cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in set_cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response


def lifespan_optional(app: Any) -> Any:
    """`app` as uvicorn's default ``--lifespan auto`` treats it: an app that fails on the
    lifespan scope before reading from it does not speak lifespan, and is served anyway."""

    async def served(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        read = False

        async def reading() -> Any:
            nonlocal read
            read = True
            return await receive()

        try:
            await app(scope, reading, send)
        except Exception:
            if read:
                raise
            while True:  # answer the lifespan in the app's place
                kind = (await receive())["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return

    return served


async def serve_and_request(app: Any, routes: list[tuple[str, str]]) -> None:
    others = [route for route in routes if route != ("GET", "/")]
    async with running(lifespan_optional(app)) as url, httpx.AsyncClient(base_url=url) as client:
        browser = Browser(client)
        counts: list[int] = []
        for method, path in [("GET", "/"), ("GET", "/"), *others]:
            response = await browser.request(method, path)
            assert response.status_code < 500, (method, path, response.text)
            found = COUNT.search(response.text)
            if (method, path) == ("GET", "/") and found and response.status_code == 200:
                counts.append(int(found.group(1)))
        if counts:  # a counter on "/" counts up while the browser keeps its cookie
            assert counts == [counts[0], counts[0] + 1], counts


async def run_in_handler(code: Any, namespace: dict[str, Any]) -> None:
    async def handler(request: Request) -> PlainTextResponse:
        local = {**namespace, "request": request, "scope": request.scope}
        local["session"] = get_session(request)
        result = eval(code, local)
        if inspect.isawaitable(result):
            await result
        return PlainTextResponse("ok")

    store = DynamoDBStore(props=DynamoDBStoreProps(), region_name=REGION)
    app = SessionMiddleware(
        Starlette(routes=[Route("/", handler)]), store=store, secret_keys=SECRET
    )
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/")
    assert response.status_code == 200, response.text


async def speak_to_websocket(ws: Any, namespace: dict[str, Any]) -> None:
    app = SessionMiddleware(ws, store=namespace["store"], secret_keys=SECRET)
    async with running(app) as url, connect(url.replace("http://", "ws://") + "/") as socket:
        assert socket.response is not None
        assert "set-cookie" in socket.response.headers  # a new session, in the handshake
        await socket.send("hello")
        await socket.wait_closed()


async def run_snippet(index: int, namespace: dict[str, Any]) -> None:
    tree = without_stub_app(ast.parse(SNIPPETS[index]))
    code = compile(tree, f"README.md snippet {index}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace["app"] = your_app
    before = dict(namespace)
    free = free_names(tree) - set(namespace)
    if free & HANDLER_NAMES:
        assert not free - HANDLER_NAMES, f"snippet {index} uses undefined names {free}"
        await run_in_handler(code, namespace)
        return
    assert not free, f"snippet {index} uses undefined names {sorted(free)}"
    result = eval(code, namespace)
    if inspect.isawaitable(result):
        await result
    store = namespace.get("store")
    if isinstance(store, DynamoDBStore) and store is not before.get("store"):
        async with store:  # opens against the test server: the table check runs
            pass
    if callable(namespace.get("ws")) and namespace["ws"] is not before.get("ws"):
        await speak_to_websocket(namespace["ws"], namespace)
    if namespace["app"] is not your_app:
        await serve_and_request(namespace["app"], routes_of(tree))


@pytest.fixture(scope="module")
async def readme_run(dynamodb_server: Any) -> AsyncIterator[list[str | None]]:
    """Runs every snippet once, in order; each one's failure (a traceback) or None."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_server.endpoint_url)
        env.setenv("AWS_REGION", REGION)
        env.setenv("AWS_DEFAULT_REGION", REGION)
        stores = [DynamoDBStore(props=props, region_name=REGION) for props in TABLES]
        for store in stores:
            await store.create_table()
        # A real module: frameworks resolve annotations through sys.modules (Litestar does).
        module = types.ModuleType("readme_snippets")
        env.setitem(sys.modules, module.__name__, module)
        namespace: dict[str, Any] = module.__dict__
        namespace.update(secret=SECRET, SECRET=SECRET)
        outcomes: list[str | None] = []
        try:
            for index in range(len(SNIPPETS)):
                try:
                    await run_snippet(index, namespace)
                except Exception:
                    outcomes.append(traceback.format_exc())
                else:
                    outcomes.append(None)
            yield outcomes
        finally:
            for store in stores:
                client: Any = store.client
                await client.delete_table(TableName=store.props.table_name)
                await store.close()


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_each_snippet_runs_against_the_test_server(
    index: int, readme_run: list[str | None]
) -> None:
    failure = readme_run[index]
    assert failure is None, f"README.md snippet {index}:\n{SNIPPETS[index]}\n{failure}"


def test_the_cookies_snippet_keys_are_long_enough() -> None:
    """The snippet that failed as written (a 31-byte key): every key it shows is >= 32 bytes."""
    (cookies,) = [s for s in SNIPPETS if "__Host-id" in s]
    keys = re.findall(r'"([^"]+)"', cookies.split("secret_keys=", 1)[1].split("]", 1)[0])
    assert keys and all(len(key.encode()) >= 32 for key in keys), keys
