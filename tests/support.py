"""Test helpers shared by the suites: stores on the real server, item read-back, ASGI clients,
cookies and keys computed independently of the library, log checks, an in-process uvicorn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    Record,
    Session,
    SessionMiddleware,
    codec,
)

SECRET = "test-secret-key-that-is-long-enough-0123456789"
OLD_SECRET = "old-secret-key-that-is-also-long-enough-987654"

#: Which data-plane transports the store suites run on ("aiobotocore", "fast" = httptools,
#: "aiohttp" = the fast path on aiohttp).
TRANSPORTS = os.environ.get("DYNAMO_TEST_TRANSPORTS", "aiobotocore,fast,aiohttp").split(",")

#: The library's logger.
LOGGER = "asgi_dynamo_session"
#: The epoch second a `Clock` starts at unless told otherwise.
T0 = 1_800_000_000
#: The default table layout: partition key name and the prefix before the hashed id.
PK = "session_id"
PREFIX = "SESSIONS::TOWER::"
#: The Set-Cookie of a new default session cookie (name ``id``, default path and flags); group 1
#: is the session id.
SESSION_COOKIE = re.compile(
    r"^id=([A-Za-z0-9_-]{43})\.[A-Za-z0-9_-]{43}; Path=/; HttpOnly; Secure; SameSite=Lax$"
)
#: The Set-Cookie that ends the default session cookie (name ``id``, default path and flags).
EXPIRED_COOKIE = (
    "id=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Lax"
)


class Clock:
    """An injectable clock: epoch seconds that tests move forward by hand."""

    def __init__(self, now: float = float(T0)) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def dynamo_store(
    endpoint_url: str,
    table_name: str,
    *,
    transport: str = "aiobotocore",
    props: DynamoDBStoreProps | None = None,
    create: bool = True,
    **options: Any,
) -> AsyncIterator[DynamoDBStore]:
    """A DynamoDBStore owning its client, on a fresh table of the test server."""
    props = props or DynamoDBStoreProps(table_name=table_name)
    store = DynamoDBStore(
        props=props,
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        transport=transport,  # type: ignore[arg-type]
        **options,
    )
    async with store:
        if create:
            await store.create_table()
        yield store


class CountingStore:
    """Wraps a store and counts each protocol call by name (the real store still does the work)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    async def create(self, record: Record) -> None:
        self.calls["create"] += 1
        await self.inner.create(record)

    async def save(self, record: Record) -> None:
        self.calls["save"] += 1
        await self.inner.save(record)

    async def load(self, session_id: str) -> Record | None:
        self.calls["load"] += 1
        result: Record | None = await self.inner.load(session_id)
        return result

    async def delete(self, session_id: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(session_id)

    async def touch(self, record: Record) -> None:
        self.calls["touch"] += 1
        await self.inner.touch(record)

    async def take(self, session_id: str) -> Record | None:
        self.calls["take"] += 1
        result: Record | None = await self.inner.take(session_id)
        return result

    async def remove(self, record: Record) -> None:
        self.calls["remove"] += 1
        await self.inner.remove(record)

    async def restore(self, taken: Record) -> None:
        self.calls["restore"] += 1
        await self.inner.restore(taken)

    def _use_codec(self, chosen: Any) -> None:
        """Hand the middleware's codec (its `types=`) on to the wrapped store."""
        self.inner._use_codec(chosen)

    @property
    def writes(self) -> int:
        return sum(
            self.calls[k]
            for k in ("create", "save", "delete", "touch", "take", "remove", "restore")
        )


def client_for(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client calling the ASGI app in process (https, so Secure cookies are kept)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver", **kwargs
    )


def middleware(app: Any, store: Any, **kwargs: Any) -> SessionMiddleware:
    kwargs.setdefault("secret_keys", SECRET)
    return SessionMiddleware(app, store=store, **kwargs)


async def read_item(client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The raw stored item, read with a plain aiobotocore get_item."""
    result = await client.get_item(TableName=table, Key=key, ConsistentRead=True)
    item: dict[str, Any] | None = result.get("Item")
    return item


async def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = await client.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --- ids, keys and cookies, computed independently of the library ------------------------------


def b64(raw: bytes) -> str:
    """Unpadded base64url, as ids, signatures and hashed keys are written."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hashed(session_id: str) -> str:
    """The session id as stored at rest: sha256 in unpadded base64url."""
    return b64(hashlib.sha256(session_id.encode()).digest())


def key_of(session_id: str) -> dict[str, Any]:
    """The default table key of a session id: prefix + sha256(id) in unpadded base64url."""
    return {PK: {"S": PREFIX + hashed(session_id)}}


def signature(session_id: str, secret: str | bytes = SECRET) -> str:
    """The HMAC-SHA256 signature of a session id, as the cookie carries it."""
    key = secret.encode() if isinstance(secret, str) else secret
    return b64(hmac.new(key, session_id.encode(), hashlib.sha256).digest())


def signed(session_id: str, secret: str | bytes = SECRET) -> str:
    """The signed cookie value ``<id>.<signature>``."""
    return f"{session_id}.{signature(session_id, secret)}"


def at(epoch: float) -> datetime:
    """An aware UTC datetime of an epoch second."""
    return datetime.fromtimestamp(epoch, timezone.utc)


def set_cookies(response: httpx.Response) -> list[str]:
    """Every Set-Cookie header of the response, in order."""
    return response.headers.get_list("set-cookie")


def cookie_of(response: httpx.Response) -> str:
    """The signed value of the one ``id`` Set-Cookie the response carries (not an expiry)."""
    (header,) = set_cookies(response)
    value = header.split(";", 1)[0].removeprefix("id=")
    assert value, header
    return value


def sid(cookie: str) -> str:
    """The session id in a signed cookie value ``<id>.<signature>``."""
    return cookie.split(".", 1)[0]


# --- stored items ------------------------------------------------------------------------------


def data_of(item: dict[str, Any]) -> dict[str, Any]:
    """The session data of a stored item, decoded by the library's codec (any format byte)."""
    return codec.unpack(codec.decode(item["data"]["B"]))


def plain_data_of(item: dict[str, Any] | None) -> dict[str, Any]:
    """The session data of a stored item that must exist and be uncompressed (format byte 0x01),
    decoded with plain MessagePack."""
    assert item is not None
    payload = item["data"]["B"]
    assert payload[0] == 0x01
    data: dict[str, Any] = msgspec.msgpack.decode(payload[1:])
    return data


async def item_of(client: Any, store: DynamoDBStore, cookie: str) -> dict[str, Any] | None:
    """The raw stored item of a signed cookie value, under the store's own key."""
    return await read_item(client, store.props.table_name, store.key(sid(cookie)))


async def session_data(store: Any, session_id: str) -> dict[str, Any] | None:
    """The session data the store loads for an id (None: no live session)."""
    record = await store.load(session_id)
    return None if record is None else record.data


# --- requests in process -----------------------------------------------------------------------


def app_doing(action: Callable[[Session], Any]) -> Any:
    """A plain ASGI app that runs ``action(session)`` (awaiting what it returns, if awaitable)
    and answers 200 ``ok``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        result = action(scope["session"])
        if inspect.isawaitable(result):
            await result
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def fetch(
    app: Any, cookie: str | bytes | None = None, *, path: str = "/", extra: Sequence[Any] = ()
) -> httpx.Response:
    """One GET from a fresh client (no cookie jar), with exactly the Cookie header given (none
    for None) and any `extra` raw header pairs."""
    headers: list[tuple[bytes, bytes]] = []
    if cookie is not None:
        headers.append((b"cookie", cookie.encode() if isinstance(cookie, str) else cookie))
    headers.extend(extra)
    async with client_for(app) as client:
        return await client.get(path, headers=headers)


async def call(app: Any, path: str, cookie: str | None = None) -> httpx.Response:
    """GET `path` from a fresh client, sending the signed value `cookie` as ``id=<cookie>``."""
    return await fetch(app, None if cookie is None else f"id={cookie}", path=path)


# --- logs --------------------------------------------------------------------------------------


def assert_no_leaks(caplog: pytest.LogCaptureFixture, *cookies: str) -> None:
    """No log record carries a raw session id, a signature or a whole cookie value."""
    secrets = {part for c in cookies for part in (c, *c.split("."))}
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, (record.name, text)


class WarningCollector(logging.Handler):
    """Keeps the messages of WARNING-or-above records (a handler of its own: Litestar
    reconfigures the root logger, which would take pytest's caplog handler away)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a subprocess to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own signal handlers
        yield


@asynccontextmanager
async def running(app: Any, **config: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn in this event loop on a free loopback port (lifespan on, more
    `uvicorn.Config` options in `config`); yields the base URL ``http://127.0.0.1:<port>``.

    The server and its socket are gone when the block ends, however it ends: a failed startup
    raises an error here (uvicorn's own ``sys.exit`` would stop the test run's event loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = _InProcessServer(uvicorn.Config(app, lifespan="on", log_level="warning", **config))

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            except SystemExit as exc:
                raise RuntimeError(f"uvicorn exited with {exc.code}: startup failed") from None

        task = asyncio.create_task(serve())
        try:
            deadline = time.monotonic() + 60
            while not server.started:
                if task.done():
                    task.result()  # its error, if it has one
                    raise AssertionError("uvicorn stopped during startup")
                assert time.monotonic() < deadline, "uvicorn did not start within 60s"
                await asyncio.sleep(0.01)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 20)  # after 20 s it cancels the server's task
    finally:
        sock.close()


class Paused:
    """An app step that waits inside the app (session loaded, not yet saved) until released."""

    def __init__(self) -> None:
        self.inside = asyncio.Event()
        self.go = asyncio.Event()

    async def wait(self) -> None:
        self.inside.set()
        await self.go.wait()

    async def run(self, first: Any, then: Callable[[], Any]) -> Any:
        """Start `first` (an awaitable that pauses), run `then` while it waits, finish both."""
        task = asyncio.ensure_future(first)
        await asyncio.wait_for(self.inside.wait(), 10)
        other = await then()
        self.go.set()
        return await task, other
