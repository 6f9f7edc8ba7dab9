"""A store works from any event loop (spec 16): test clients that run each request on a new loop,
two lifespans in one test, in-process httpx, pytest-asyncio function-scoped loops.

Each case uses a store that owns its client, on both transports, for several requests: the
counter rises, no exception reaches the app, and nothing is left open for a closed loop to warn
about (warnings are errors here, and ``gc.collect()`` runs before the test ends so a socket or
aiohttp session dropped unclosed would warn inside the test).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import SECRET, TRANSPORTS, client_for

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 but still works with httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware

pytestmark = pytest.mark.filterwarnings("error")

REQUESTS = 4


def _store(endpoint_url: str, table: str, transport: str) -> DynamoDBStore:
    return DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table),
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        transport=transport,  # type: ignore[arg-type]
    )


def _app(store: DynamoDBStore) -> Any:
    async def counter(request: Request) -> JSONResponse:
        session = request.scope["session"]
        session["n"] = session.get("n", 0) + 1
        return JSONResponse({"n": session["n"]})

    app = Starlette(routes=[Route("/", counter)])
    return SessionMiddleware(app, store=store, secret_keys=SECRET)


@pytest.fixture(params=TRANSPORTS)
def setup(request: pytest.FixtureRequest, dynamodb_server: Any, table_name: str) -> Iterator[Any]:
    """(store, app) on a fresh table, created from a loop of its own (so the store's first loop
    is already gone when the test's clients start)."""
    store = _store(dynamodb_server.endpoint_url, table_name, str(request.param))

    async def create() -> None:
        await store.create_table(enable_ttl=False)

    asyncio.run(create())
    yield store, _app(store)
    gc.collect()


def _counts(client: TestClient | httpx.Client) -> list[int]:
    return [int(client.get("/").json()["n"]) for _ in range(REQUESTS)]


def test_testclient_without_with_runs_each_request_on_a_new_loop(setup: Any) -> None:
    store, app = setup
    client = TestClient(app, base_url="https://testserver")
    assert _counts(client) == [1, 2, 3, 4]
    assert store.client is None  # each request's loop closed what it opened as it shut down
    gc.collect()


def test_two_lifespans_in_one_test(setup: Any) -> None:
    store, app = setup
    with TestClient(app, base_url="https://testserver") as client:
        assert _counts(client) == [1, 2, 3, 4]
        cookies = dict(client.cookies)
    assert store.client is None
    with TestClient(app, base_url="https://testserver", cookies=cookies) as client:
        assert _counts(client) == [5, 6, 7, 8]
    assert store.client is None
    gc.collect()


def test_httpx_asgi_transport_on_several_loops(setup: Any) -> None:
    store, app = setup
    seen: list[int] = []
    cookie: list[str] = []

    async def run() -> None:
        async with client_for(app) as client:
            for _ in range(2):
                headers = {"cookie": f"id={cookie[-1]}"} if cookie else {}
                response = await client.get("/", headers=headers)
                seen.append(response.json()["n"])
                cookie.extend(v.split(";")[0][3:] for v in response.headers.get_list("set-cookie"))

    for _ in range(3):
        asyncio.run(run())
    assert seen == [1, 2, 3, 4, 5, 6]
    assert store.client is None
    gc.collect()


def test_two_loops_in_two_threads_at_once(setup: Any) -> None:
    _, app = setup
    results: list[list[int]] = []
    started = threading.Barrier(2)

    async def run() -> None:
        async with client_for(app) as client:
            started.wait()  # both loops hold the store's connections at the same time
            results.append([(await client.get("/")).json()["n"] for _ in range(REQUESTS)])

    threads = [threading.Thread(target=asyncio.run, args=(run(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [[1, 2, 3, 4], [1, 2, 3, 4]]
    gc.collect()


def test_closed_on_one_loop_reopens_on_the_next(setup: Any) -> None:
    store, app = setup

    async def once() -> int:
        async with client_for(app) as client:
            n = int((await client.get("/")).json()["n"])
        await store.close()
        assert store.client is None
        return n

    assert [asyncio.run(once()) for _ in range(3)] == [1, 1, 1]  # no cookie kept: new sessions


# -- pytest-asyncio: a module store used from function-scoped loops ------------------------------

_shared: dict[str, DynamoDBStore] = {}


@pytest.fixture(scope="module", params=TRANSPORTS)
def shared_store(request: pytest.FixtureRequest, dynamodb_server: Any) -> Iterator[DynamoDBStore]:
    store = _store(dynamodb_server.endpoint_url, f"loops_{request.param}_shared", request.param)
    asyncio.run(store.create_table(enable_ttl=False))
    yield store


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize("round", range(3))
async def test_function_scoped_loops_share_one_store(
    shared_store: DynamoDBStore, round: int
) -> None:
    app = _app(shared_store)
    counts = []
    async with client_for(app) as client:
        for _ in range(2):
            cookie = _shared.get(shared_store._choice)
            response = await client.get("/", headers={"cookie": f"id={cookie}"} if cookie else {})
            counts.append(response.json()["n"])
            for header in response.headers.get_list("set-cookie"):
                _shared[shared_store._choice] = header.split(";")[0][3:]
    assert counts == [2 * round + 1, 2 * round + 2]
