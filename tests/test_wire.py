"""The httptools transport (`WireTransport`) on its own: keep-alive reuse, a connection the
server closed while it sat in the pool, resets before and after the request left, truncated
answers, chunked answers, and nothing left open after close (warnings as errors, loop debug)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from aiohttp import web
from netfault import FaultProxy

from asgi_dynamo_session._fast import FastTransport
from asgi_dynamo_session._wire import WireTransport
from asgi_dynamo_session.errors import StoreError

REGION = "us-east-1"
CAP = 30.0


class _Creds:
    async def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        return ReadOnlyCredentials("testing", "testing", None)


def _wire(endpoint: str, **opts: Any) -> WireTransport:
    opts.setdefault("backoff_base", 0.001)
    return WireTransport(
        endpoint_url=endpoint, region_name=REGION, credentials_provider=_Creds(), **opts
    )


@pytest.fixture
async def table(dynamodb_server: Any) -> AsyncIterator[str]:
    name = f"wire_{uuid4().hex[:8]}"
    t = _wire(dynamodb_server.endpoint_url)
    await t._request(
        "CreateTable",
        {
            "TableName": name,
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for _ in range(100):
        described = await t._request("DescribeTable", {"TableName": name})
        if described["Table"]["TableStatus"] == "ACTIVE":
            break
        await asyncio.sleep(0.05)
    yield name
    await t._request("DeleteTable", {"TableName": name})
    await t.close()


@pytest.fixture
async def kept(odd_server: tuple[str, list[str]]) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of `odd_server`, which keeps connections alive (moto does not)."""
    port = int(odd_server[0].rpartition(":")[2])
    async with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


async def test_keep_alive_reuses_one_connection(kept: FaultProxy) -> None:
    t = _wire(kept.endpoint_url)
    try:
        for _ in range(5):
            assert await t.get_item("t", {"id": {"S": "chunky"}}, consistent=True)
        assert kept.connections == 1 and kept.requests == 5
    finally:
        await t.close()


async def test_a_connection_closed_while_idle_is_not_used(kept: FaultProxy) -> None:
    t = _wire(kept.endpoint_url, max_attempts=1)
    try:
        await t.put_item("t", {"id": {"S": "idle"}})
        await kept.refuse(rst=True)  # every open connection is reset (a server restart)
        await kept.forward()
        await asyncio.sleep(0.05)
        # One attempt only: a write on the dead pooled connection would fail; it is never tried.
        await t.put_item("t", {"id": {"S": "idle2"}})
        assert kept.connections == 2 and kept.requests == 2
    finally:
        await t.close()


async def test_reset_before_the_request_reached_the_server(
    fault_proxy: FaultProxy, table: str
) -> None:
    # The proxy reads the request and resets without forwarding: to the client this is a
    # failure after writing, so a read is retried and (without retry_sent_writes) a write is not.
    t = _wire(fault_proxy.endpoint_url, max_attempts=3)
    try:
        await fault_proxy.reset_next_request()
        assert await t.get_item(table, {"id": {"S": "x"}}, consistent=True) is None
        await fault_proxy.reset_next_request()
        with pytest.raises(StoreError, match="not retried"):
            await t.put_item(table, {"id": {"S": "x"}})
        await fault_proxy.reset_after(0, unit="bytes")  # truncated request: the server sees part
        with pytest.raises(StoreError, match="not retried"):
            await t.put_item(table, {"id": {"S": "x"}})
        assert await t.get_item(table, {"id": {"S": "x"}}, consistent=True) is None
    finally:
        await t.close()
    # A sender whose writes are recognisable when resent (the store: write tokens) resends.
    t = _wire(fault_proxy.endpoint_url, max_attempts=3, retry_sent_writes=True)
    try:
        await fault_proxy.reset_next_request()
        await t.put_item(table, {"id": {"S": "x"}})
        assert await t.get_item(table, {"id": {"S": "x"}}, consistent=True) == {"id": {"S": "x"}}
    finally:
        await t.close()


async def test_refused_connections_are_retried_for_writes(dynamodb_server: Any) -> None:
    from support import free_port

    t = _wire(f"http://127.0.0.1:{free_port()}", max_attempts=3, connect_timeout=0.5)
    try:
        with pytest.raises(StoreError, match="after 3 attempt"):  # never left: safe to resend
            await t.put_item("t", {"id": {"S": "x"}})
    finally:
        await t.close()


@pytest.fixture
async def odd_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server answering each POST by the first entry of `modes`: "chunked" (a
    DynamoDB answer in chunks) or "truncated" (Content-Length longer than the body, then close)."""
    modes: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        mode = modes.pop(0) if modes else "chunked"
        body = b'{"Item": {"id": {"S": "chunky"}, "b": {"B": "AAE="}}}'
        if mode == "chunked":
            response = web.StreamResponse(headers={"Content-Type": "application/x-amz-json-1.0"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(body), 7):
                await response.write(body[i : i + 7])
            await response.write_eof()
            return response
        assert request.transport is not None
        request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + body[:10])
        request.transport.close()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", modes
    await runner.cleanup()


async def test_chunked_and_truncated_answers(odd_server: tuple[str, list[str]]) -> None:
    url, modes = odd_server
    t = _wire(url, max_attempts=2)
    try:
        item = await t.get_item("t", {"id": {"S": "chunky"}}, consistent=True)
        assert item == {"id": {"S": "chunky"}, "b": {"B": b"\x00\x01"}}
        modes[:] = ["truncated", "chunked"]  # a read cut short is retried, on a new connection
        assert await t.get_item("t", {"id": {"S": "chunky"}}, consistent=True) == item
        modes[:] = ["truncated", "truncated"]
        with pytest.raises(StoreError, match="after 2 attempt"):
            await t.get_item("t", {"id": {"S": "chunky"}}, consistent=True)
    finally:
        await t.close()


@pytest.mark.parametrize("kind", [WireTransport, FastTransport], ids=["wire", "aiohttp"])
def test_nothing_left_open_after_close(dynamodb_server: Any, kind: type[FastTransport]) -> None:
    """Sockets and tasks: none left after close, checked in debug mode with warnings as errors
    (an unclosed socket or transport warns when collected)."""

    async def run() -> None:
        t = kind(
            endpoint_url=dynamodb_server.endpoint_url,
            region_name=REGION,
            credentials_provider=_Creds(),
            pool_size=4,
        )
        await asyncio.gather(
            *(t.get_item("missing", {"id": {"S": "x"}}, consistent=True) for _ in range(8)),
            return_exceptions=True,
        )
        await t.close()
        current = asyncio.current_task()
        assert [task for task in asyncio.all_tasks() if task is not current] == []

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(run(), debug=True)
        gc.collect()
