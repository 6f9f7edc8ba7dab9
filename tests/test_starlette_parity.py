"""Starlette's own session-middleware scenarios, against our middleware.

The cases of Starlette's ``tests/middleware/test_session.py`` (view / update / clear, expiry,
``https_only``, a mounted sub-path, a bogus cookie, a browser-session cookie, a domain cookie),
written anew for `SessionMiddleware` with a `DynamoDBStore` owning its client and with a
`MemoryStore`, driven as Starlette drives them: a `TestClient` used without ``with`` (each
request on a new event loop, no lifespan).

Where the cookie format differs, the option that gives Starlette's behaviour is used, as the
README's "Moving from Starlette/Litestar" section lists: ``cookie_name="session"`` (ours is
``id``), ``secure=False`` over plain http (``https_only=False`` is Starlette's default, ours is
Secure), ``expiry=OnInactivity(timedelta(days=14))`` for Starlette's default ``max_age``
(ours is a browser-session cookie), an expired server-side session for ``max_age=-1``, and
attribute names as we write them (``Path=``, ``Domain=``; Starlette writes ``path=``,
``domain=``).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from support import SECRET, Clock, dynamo_store

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    MemoryStore,
    OnInactivity,
    SessionMiddleware,
)

#: What Starlette's tests rely on that our defaults do differently (see the module docstring).
STARLETTE_LIKE: dict[str, Any] = {"cookie_name": "session", "secure": False}
TWO_WEEKS = 14 * 24 * 3600


async def show(request: Request) -> JSONResponse:
    return JSONResponse({"session": dict(request.session)})


async def merge(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": dict(request.session)})


async def wipe(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": dict(request.session)})


ROUTES = [
    Route("/view_session", show),
    Route("/update_session", merge, methods=["POST"]),
    Route("/clear_session", wipe, methods=["POST"]),
]


@pytest.fixture
async def table(dynamodb_server: Any, table_name: str) -> AsyncIterator[str]:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name):
        pass  # created; each test's store opens its own client on the client's event loops
    yield table_name


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["dynamodb", "memory"])
def make_store(request: pytest.FixtureRequest, dynamodb_server: Any) -> StoreFactory:
    """Builds the store under test: a DynamoDBStore owning its client, or a MemoryStore."""
    if request.param == "memory":
        return lambda clock=None: MemoryStore(**({"clock": clock} if clock else {}))
    table: str = request.getfixturevalue("table")

    def dynamo(clock: Any = None) -> DynamoDBStore:
        return DynamoDBStore(
            props=DynamoDBStoreProps(table_name=table),
            endpoint_url=dynamodb_server.endpoint_url,
            region_name="us-east-1",
            **({"clock": clock} if clock else {}),
        )

    return dynamo


def app_with(store: Any, routes: list[Any] = ROUTES, **options: Any) -> Starlette:
    options = {**STARLETTE_LIKE, **options}
    middleware = [Middleware(SessionMiddleware, store=store, secret_keys=SECRET, **options)]
    return Starlette(routes=routes, middleware=middleware)


def max_age(set_cookie: str) -> int | None:
    found = re.search(r"; Max-Age=(-?\d+)", set_cookie)
    return None if found is None else int(found.group(1))


def test_view_update_clear(make_store: StoreFactory) -> None:
    clock = Clock(float(int(time.time())))  # one instant: Max-Age is exact
    store = make_store(clock)
    client = TestClient(app_with(store, expiry=OnInactivity(timedelta(days=14)), clock=clock))

    assert client.get("/view_session").json() == {"session": {}}
    updated = client.post("/update_session", json={"some": "data"})
    assert updated.json() == {"session": {"some": "data"}}
    assert max_age(updated.headers["set-cookie"]) == TWO_WEEKS
    assert client.get("/view_session").json() == {"session": {"some": "data"}}
    assert client.post("/clear_session").json() == {"session": {}}
    assert client.get("/view_session").json() == {"session": {}}


def test_an_expired_session_is_empty(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    app = app_with(store, expiry=OnInactivity(timedelta(seconds=60)), clock=clock)
    client = TestClient(app)

    updated = client.post("/update_session", json={"some": "data"})
    assert updated.json() == {"session": {"some": "data"}}
    value = re.search(r"session=([^;]*);", updated.headers["set-cookie"])
    assert value is not None
    clock.advance(61)  # Starlette's test uses max_age=-1; here the stored session expires
    late = TestClient(app, cookies={"session": value.group(1)})
    assert late.get("/view_session").json() == {"session": {}}


def test_https_only(make_store: StoreFactory) -> None:
    store = make_store()
    app = app_with(store, secure=True)  # Starlette's https_only=True; our default
    plain = TestClient(app, base_url="http://testserver")
    secure = TestClient(app, base_url="https://testserver")

    assert plain.get("/view_session").json() == {"session": {}}
    assert plain.post("/update_session", json={"some": "data"}).json() == {
        "session": {"some": "data"}
    }
    assert plain.get("/view_session").json() == {"session": {}}  # Secure: not sent over http

    assert secure.get("/view_session").json() == {"session": {}}
    assert secure.post("/update_session", json={"some": "data"}).json() == {
        "session": {"some": "data"}
    }
    assert secure.get("/view_session").json() == {"session": {"some": "data"}}
    assert secure.post("/clear_session").json() == {"session": {}}
    assert secure.get("/view_session").json() == {"session": {}}


def test_cookie_path_of_a_mounted_app(make_store: StoreFactory) -> None:
    store = make_store()
    inner = app_with(store, [Route("/update_session", merge, methods=["POST"])], path="/second_app")
    client = TestClient(Starlette(routes=[Mount("/second_app", app=inner)]))
    response = client.post("/second_app/update_session", json={"some": "data"})
    assert response.status_code == 200
    found = re.search(r"; Path=(\S+);", response.headers["set-cookie"])  # Starlette: "path="
    assert found is not None
    assert found.group(1) == "/second_app"


def test_a_bogus_cookie_is_no_session(make_store: StoreFactory) -> None:
    store = make_store()
    app = app_with(store)
    client = TestClient(app)
    assert client.post("/update_session", json={"some": "data"}).json() == {
        "session": {"some": "data"}
    }
    bogus = TestClient(app, cookies={"session": "invalid"})
    assert bogus.get("/view_session").json() == {"session": {}}


def test_browser_session_cookie(make_store: StoreFactory) -> None:
    store = make_store()
    client = TestClient(app_with(store))  # our default OnSessionEnd() = Starlette's max_age=None
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "Max-Age" not in response.headers["set-cookie"]
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_domain_cookie(make_store: StoreFactory) -> None:
    store = make_store()
    client = TestClient(app_with(store, domain=".example.com"))
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "; Domain=.example.com" in response.headers["set-cookie"]  # Starlette: "domain="
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_two_with_blocks_in_one_test(make_store: StoreFactory) -> None:
    """Beyond Starlette's cases: ``with TestClient(app)`` twice (two lifespans, two loops)."""
    app = app_with(make_store())
    with TestClient(app) as client:
        client.post("/update_session", json={"n": 1})
        cookie = client.cookies["session"]
    with TestClient(app, cookies={"session": cookie}) as client:
        assert client.get("/view_session").json() == {"session": {"n": 1}}
