"""What the wire can do to a store call, on both transports, through the loopback fault proxy:
a stalled server with a small pool (every call ends within its budget, the wait for a pooled
connection included), a 200 that is not JSON (a proxy's HTML page) and an ``x-amz-crc32`` that is
not a number. Each is a store failure: `StoreError`, so the user sees 503, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from netfault import FaultProxy
from support import TRANSPORTS, app_doing, call, dynamo_store, middleware

from asgi_dynamo_session import DynamoDBStore
from asgi_dynamo_session._transport import call_budget
from asgi_dynamo_session.errors import StoreError

HTML = b"<html><body><h1>502 Bad Gateway</h1>corporate proxy</body></html>"


@pytest.fixture(params=TRANSPORTS)
async def proxied(
    request: pytest.FixtureRequest, fault_proxy: FaultProxy, table_name: str
) -> AsyncIterator[DynamoDBStore]:
    """A store owning its client, reaching the server through `fault_proxy`, small timeouts."""
    async with dynamo_store(
        fault_proxy.endpoint_url,
        table_name,
        transport=str(request.param),
        connect_timeout=0.3,
        read_timeout=0.3,
        max_attempts=2,
        pool_size=1,
    ) as store:
        yield store


async def test_pool_wait_is_bounded_by_the_call_budget(
    proxied: DynamoDBStore, fault_proxy: FaultProxy
) -> None:
    budget = call_budget(2, 0.3, 0.3)
    await fault_proxy.stall(30)
    calls = [proxied.load(f"id-{i}") for i in range(32)]
    # 32 calls on one pooled connection: waiting in turn for a stalled connection would take
    # 32 x 2 x 0.3 s; each call's budget (pool wait included) ends them all well within this.
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), budget * 5)
    assert all(isinstance(r, StoreError) for r in results), results


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (200, HTML, (("Content-Type", "text/html"),)),
        (200, b"{}", (("Content-Type", "application/x-amz-json-1.0"), ("x-amz-crc32", "abc"))),
        (200, b"[]", (("Content-Type", "application/x-amz-json-1.0"),)),
    ],
    ids=["html-200", "crc-not-a-number", "json-not-an-object"],
)
async def test_an_unreadable_answer_is_a_503(
    proxied: DynamoDBStore,
    fault_proxy: FaultProxy,
    status: int,
    body: bytes,
    headers: tuple[tuple[str, str], ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def count(session: Any) -> None:
        session["n"] = session.get("n", 0) + 1

    app = middleware(app_doing(count), proxied)
    first = await call(app, "/")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"].split(";")[0].removeprefix("id=")

    forwarded = fault_proxy.forwarded
    await fault_proxy.answer(status, body, headers)
    response = await call(app, "/", cookie)  # the load gets the bad answer
    assert response.status_code == 503, response.text
    assert "set-cookie" not in response.headers
    fresh = await call(app, "/")  # a new session: its create gets the bad answer
    assert fresh.status_code == 503, fresh.text
    assert fault_proxy.forwarded == forwarded  # neither reached the server

    await fault_proxy.forward()
    again = await call(app, "/", cookie)
    assert again.status_code == 200
    record = await proxied.load(cookie.split(".")[0])
    assert record is not None and record.data == {"n": 2}  # nothing lost, nothing doubled
    with pytest.raises(StoreError):
        await fault_proxy.answer(status, body, headers)
        await proxied.load("whatever")
