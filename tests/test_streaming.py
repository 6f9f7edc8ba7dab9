"""Streaming responses: saved before the first byte, later changes saved at the end of the body.

A change made after the response started keeps its id and is saved when the body ends; a change
that would need a new cookie then (a brand-new session, cycle_id, flush) is still carried out but
logged as a warning, since the browser can no longer be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from litestar.response import Stream  # module level: Litestar resolves handler annotations here
from support import LOGGER, SECRET, WarningCollector, client_for, read_item, running, scan_all

from asgi_dynamo_session import DynamoDBStore, Session, SessionMiddleware, get_session

FRAMEWORKS = ["raw", "starlette", "litestar", "quart"]
WARNING = "after the response started"


async def chunks(session: Session, store: DynamoDBStore, mode: str) -> AsyncIterator[str]:
    """The streamed body: reports what is stored at the first byte, then changes the session."""
    record = None if session.id is None else await store.load(session.id)
    yield f"{json.dumps(None if record is None else record.data)}\n"
    await asyncio.sleep(0)
    if mode == "change":
        session["after"] = "yes"
    elif mode == "new":
        session["late"] = 1
    elif mode == "cycle":
        session.cycle_id()
    elif mode == "flush":
        session.flush()
    yield "second\n"
    yield "third\n"


def prepare(session: Session, mode: str) -> None:
    """Before the response starts: every mode but "new" begins with a stored session."""
    if mode != "new":
        session["before"] = 1


def raw_app(store: DynamoDBStore) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        session = get_session(scope)
        mode = parse_qs(scope["query_string"].decode())["mode"][0]
        prepare(session, mode)
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in chunks(session, store, mode):
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return SessionMiddleware(app, store=store, secret_keys=SECRET)


def starlette_app(store: DynamoDBStore) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def stream(request: Request) -> StreamingResponse:
        session = get_session(request)
        mode = request.query_params["mode"]
        prepare(session, mode)
        return StreamingResponse(chunks(session, store, mode), media_type="text/plain")

    app = Starlette(routes=[Route("/", stream)])
    return SessionMiddleware(app, store=store, secret_keys=SECRET)


def litestar_app(store: DynamoDBStore) -> Any:
    from litestar import Litestar, Request, get

    @get("/")
    async def stream(request: Request[Any, Any, Any]) -> Stream:
        session = get_session(request)
        mode = request.query_params["mode"]
        prepare(session, mode)
        return Stream(chunks(session, store, mode), media_type="text/plain")

    return SessionMiddleware(Litestar([stream]), store=store, secret_keys=SECRET)


def quart_app(store: DynamoDBStore) -> Any:
    from quart import Quart, Response, request

    from asgi_dynamo_session.quart import install

    app = Quart(__name__)
    install(app, store=store, secret_keys=SECRET)

    @app.get("/")
    async def stream() -> Response:
        session = get_session(request)
        mode = request.args["mode"]
        prepare(session, mode)
        return Response(chunks(session, store, mode), mimetype="text/plain")

    return app


APPS = {"raw": raw_app, "starlette": starlette_app, "litestar": litestar_app, "quart": quart_app}


@contextlib.asynccontextmanager
async def client_on(app: Any, via: str) -> AsyncIterator[httpx.AsyncClient]:
    if via == "http":
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            yield client
    else:
        async with client_for(app) as client:
            yield client


async def get_streamed(client: httpx.AsyncClient, mode: str) -> tuple[httpx.Response, list[str]]:
    """The response and its body lines, read chunk by chunk as they arrive."""
    async with client.stream("GET", "/", params={"mode": mode}) as response:
        text = "".join([chunk async for chunk in response.aiter_text()])
    return response, text.splitlines()


@pytest.fixture
def warnings_log() -> Iterator[list[str]]:
    """WARNING+ messages of the library's logger (a handler of its own: Litestar reconfigures
    the root logger, which would take pytest's caplog handler away)."""
    logger = logging.getLogger(LOGGER)
    handler, level = WarningCollector(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def session_id_of(response: httpx.Response) -> str:
    found = re.match(r"id=([A-Za-z0-9_-]{43})\.", response.headers["set-cookie"])
    assert found, response.headers.get("set-cookie")
    return found.group(1)


@pytest.mark.parametrize("via", ["client", "http"])
@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_saved_before_the_first_byte_and_again_at_the_end(
    kind: str, via: str, store: DynamoDBStore, warnings_log: list[str]
) -> None:
    async with client_on(APPS[kind](store), via) as client:
        response, lines = await get_streamed(client, "change")
    assert response.status_code == 200
    session_id = session_id_of(response)  # the id sent at the start...
    assert lines == ['{"before": 1}', "second", "third"]  # ...was stored before the first byte
    record = await store.load(session_id)
    assert record is not None
    assert record.data == {"before": 1, "after": "yes"}  # same id, change saved at the end
    assert warnings_log == []


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_new_session_after_start_is_saved_and_warned_about(
    kind: str, store: DynamoDBStore, dynamodb_client: Any, warnings_log: list[str]
) -> None:
    async with client_on(APPS[kind](store), "client") as client:
        response, lines = await get_streamed(client, "new")
    assert "set-cookie" not in response.headers
    assert lines == ["null", "second", "third"]
    items = await scan_all(dynamodb_client, store.props.table_name)
    assert len(items) == 1  # not silently dropped...
    [warning] = warnings_log  # ...but the browser never learns its id
    assert WARNING in warning


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_cycle_after_start_warns_and_leaves_no_old_item(
    kind: str, store: DynamoDBStore, dynamodb_client: Any, warnings_log: list[str]
) -> None:
    async with client_on(APPS[kind](store), "client") as client:
        response, _ = await get_streamed(client, "cycle")
    old = session_id_of(response)
    assert await read_item(dynamodb_client, store.props.table_name, store.key(old)) is None
    items = await scan_all(dynamodb_client, store.props.table_name)
    assert len(items) == 1  # the data moved to an id the browser was not told
    [warning] = warnings_log
    assert WARNING in warning


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_flush_after_start_deletes_and_warns(
    kind: str, store: DynamoDBStore, dynamodb_client: Any, warnings_log: list[str]
) -> None:
    async with client_on(APPS[kind](store), "client") as client:
        response, _ = await get_streamed(client, "flush")
    session_id = session_id_of(response)
    assert await read_item(dynamodb_client, store.props.table_name, store.key(session_id)) is None
    [warning] = warnings_log  # the cookie could not be expired any more
    assert WARNING in warning
