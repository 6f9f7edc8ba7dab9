"""Spec point 10 on a real server, with faults injected at the network.

The server is really stopped and restarted, or a `FaultProxy` between the store and the server
refuses, resets or stalls connections; the real aiobotocore (or fast transport) error path runs.
Switching a fault on from inside the app puts it exactly between the load and the save.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from netfault import HttpFaultProxy
from support import (
    LOGGER,
    TRANSPORTS,
    assert_no_leaks,
    call,
    cookie_of,
    data_of,
    dynamo_store,
    item_of,
    middleware,
    scan_all,
    sid,
)

from asgi_dynamo_session import DynamoDBStore

pytestmark = pytest.mark.usefixtures("library_logs")

UNAVAILABLE = b"Session store unavailable\n"
DYNALITE_CRASH = (
    "dynalite 3 dies on a request cut mid-body (an unhandled ECONNRESET in node), so the "
    "item could not be read back; the cut is covered on moto"
)
#: Small timeouts and one retry: a stalled call fails fast, and the retry path runs too.
FAST_FAIL = {"connect_timeout": 0.5, "read_timeout": 0.5, "max_attempts": 2}

Send = Callable[[dict[str, Any]], Awaitable[None]]
Fault = Callable[[], Awaitable[None]]


class App:
    """/set?k=v sets keys, /read reads. `fault`, when set, runs after the change (so between
    the middleware's load and its save). `calls` counts how often the app ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.fault: Fault | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        self.calls += 1
        session = scope["session"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if scope["path"] == "/set":
            session.update(query)
        data = dict(session.items())
        if self.fault is not None:
            await self.fault()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"yes")]})
        await send({"type": "http.response.body", "body": repr(data).encode()})


def assert_unavailable(response: httpx.Response, retry_after: str = "1") -> None:
    """The middleware's own 503: Retry-After, no cookie, nothing of the app's response."""
    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.headers["cache-control"] == "no-store"
    assert response.content == UNAVAILABLE
    assert "set-cookie" not in response.headers
    assert "x-app" not in response.headers


def assert_logged(caplog: pytest.LogCaptureFixture, what: str, *cookies: str) -> None:
    """A WARNING-or-above record of our logger says `what`; no record leaks an id or cookie."""
    ours = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert any(what in r.getMessage() for r in ours), [r.getMessage() for r in ours]
    assert_no_leaks(caplog, *cookies)


@asynccontextmanager
async def proxied(
    fault_proxy: Any, table_name: str, transport: str, **options: Any
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(
        fault_proxy.endpoint_url, table_name, transport=transport, **{**FAST_FAIL, **options}
    ) as store:
        yield store


# -- the server stopped and restarted ----------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_stopped_then_restarted(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, **FAST_FAIL
    ) as store:
        mw = middleware(app, store, retry_after=7)
        cookie = cookie_of(await call(mw, "/set?user=u1"))
        app.calls = 0
        try:
            dynamodb_server.stop()

            # A cookie needs a load: 503 with Retry-After, and the app is not called.
            response = await call(mw, "/read", cookie)
            assert_unavailable(response, retry_after="7")
            assert app.calls == 0
            assert_logged(caplog, "load failed", cookie)

            # No cookie, nothing to load: the app runs; creating a session then fails with 503.
            response = await call(mw, "/read")
            assert response.status_code == 200
            assert app.calls == 1
            response = await call(mw, "/set?user=u2")
            assert_unavailable(response, retry_after="7")
            assert app.calls == 2
            assert_logged(caplog, "save failed", cookie)
        finally:
            dynamodb_server.start()
        # A restarted moto or dynalite starts empty: recreate the table with another client, so
        # that this store's pooled connections to the old process are still there to go stale.
        async with dynamo_store(dynamodb_server.endpoint_url, table_name):
            pass

        # The next request works again; the old cookie is unknown now, so: a new session.
        app.calls = 0
        response = await call(mw, "/set?user=u3", cookie)
        assert response.status_code == 200
        assert app.calls == 1
        assert response.content == repr({"user": "u3"}).encode()
        fresh = cookie_of(response)
        assert sid(fresh) != sid(cookie)
        item = await item_of(dynamodb_client, store, fresh)
        assert item is not None and data_of(item) == {"user": "u3"}
        assert (await call(mw, "/read", fresh)).content == repr({"user": "u3"}).encode()


# -- faults on the load ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["refuse", "refuse_rst", "reset", "stall"])
async def test_load_failure_answers_503_without_calling_the_app(
    fault_proxy: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    async with proxied(fault_proxy, table_name, transport) as store:
        mw = middleware(app, store)
        cookie = cookie_of(await call(mw, "/set?user=u1"))
        app.calls = 0
        if fault == "refuse":
            await fault_proxy.refuse()  # ECONNREFUSED
        elif fault == "refuse_rst":
            await fault_proxy.refuse(rst=True)  # accepted, then reset at once
        elif fault == "reset":
            await fault_proxy.reset_next_request(times=None)  # request read, connection reset
        else:
            await fault_proxy.stall(5, then="reset")  # no answer: the read timeout fires
        fault_proxy.reset_counters()

        response = await call(mw, "/read", cookie)

        assert_unavailable(response)
        assert app.calls == 0
        assert_logged(caplog, "load failed", cookie)
        if fault in ("reset", "stall"):
            assert {r.action for r in fault_proxy.log} == {"GetItem"}
            assert len(fault_proxy.log) == FAST_FAIL["max_attempts"]  # retried, then gave up

        await fault_proxy.forward()
        response = await call(mw, "/read", cookie)
        assert response.status_code == 200
        assert response.content == repr({"user": "u1"}).encode()
        assert app.calls == 1


# -- faults on the save ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["stall", "reset", "truncate", "refuse"])
async def test_save_failure_answers_503_and_keeps_the_stored_session(
    dynamodb_server: Any,
    fault_proxy: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if fault == "truncate" and dynamodb_server.kind == "dynalite":
        pytest.skip(DYNALITE_CRASH)
    app = App()
    # "truncate" cuts one request in the middle: with one attempt only, nothing retries it.
    options = {"max_attempts": 1} if fault == "truncate" else {}
    async with proxied(fault_proxy, table_name, transport, **options) as store:
        mw = middleware(app, store)
        big = "v" * 4000  # a request body large enough to cut in the middle
        created = await call(mw, f"/set?user=u1&blob={big}")
        cookie = cookie_of(created)
        (put,) = [r for r in fault_proxy.log if r.action == "PutItem"]
        before = await item_of(dynamodb_client, store, cookie)
        assert before is not None

        async def inject() -> None:
            fault_proxy.reset_counters()
            if fault == "stall":
                await fault_proxy.stall(5, then="reset")
            elif fault == "reset":
                await fault_proxy.reset_next_request(times=None)
            elif fault == "truncate":
                await fault_proxy.reset_after(put.size - 1000, unit="bytes")
            else:
                await fault_proxy.refuse()

        app.fault = inject
        response = await call(mw, "/set?user=u2", cookie)
        app.fault = None

        assert_unavailable(response)
        assert_logged(caplog, "save failed", cookie)
        if fault != "refuse":
            # the save, and the consistent read that asks whether a lost save was applied
            assert {r.action for r in fault_proxy.log} == {"PutItem", "GetItem"}
            # the server never got a whole save (after a cut save, only the read-back got through)
            assert fault_proxy.forwarded == (1 if fault == "truncate" else 0)
        await fault_proxy.forward()
        assert await item_of(dynamodb_client, store, cookie) == before  # intact, same version
        response = await call(mw, "/read", cookie)
        assert response.status_code == 200
        assert response.content == repr({"user": "u1", "blob": big}).encode()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_save_cut_once_is_retried_and_applied_once(
    dynamodb_server: Any, fault_proxy: Any, dynamodb_client: Any, table_name: str, transport: str
) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip(DYNALITE_CRASH)
    app = App()
    async with proxied(fault_proxy, table_name, transport) as store:
        mw = middleware(app, store)
        created = await call(mw, f"/set?user=u1&blob={'v' * 4000}")
        cookie = cookie_of(created)
        (put,) = [r for r in fault_proxy.log if r.action == "PutItem"]

        async def inject() -> None:
            fault_proxy.reset_counters()
            await fault_proxy.reset_after(put.size - 1000, unit="bytes")

        app.fault = inject
        response = await call(mw, "/set?user=u2", cookie)

        assert response.status_code == 200
        assert cookie_of(response) == cookie
        assert fault_proxy.resets == 1
        assert [r.action for r in fault_proxy.log] == ["PutItem", "PutItem"]
        item = await item_of(dynamodb_client, store, cookie)
        assert item is not None
        assert data_of(item)["user"] == "u2"
        assert item["version"] == {"N": "2"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failed_create_stores_nothing(
    fault_proxy: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    async with proxied(fault_proxy, table_name, transport) as store:
        mw = middleware(app, store)
        app.fault = fault_proxy.refuse
        response = await call(mw, "/set?user=u1")
        assert_unavailable(response)
        assert app.calls == 1
        await fault_proxy.forward()
        assert await scan_all(dynamodb_client, table_name) == []
        assert_logged(caplog, "save failed")


# -- throttling and 5xx answers, after the store's retries --------------------------------------


@pytest.fixture
async def http_faults(dynamodb_server: Any) -> AsyncIterator[HttpFaultProxy]:
    proxy = HttpFaultProxy(dynamodb_server.endpoint_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["throttle", "500"])
async def test_throttling_or_5xx_after_retries_answers_503_on_load_and_on_save(
    http_faults: HttpFaultProxy,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    async with dynamo_store(
        http_faults.endpoint_url, table_name, transport=transport, max_attempts=2
    ) as store:
        mw = middleware(app, store)
        cookie = cookie_of(await call(mw, "/set?user=u1"))
        before = await item_of(dynamodb_client, store, cookie)
        app.calls = 0

        # Fewer failures than attempts: the retry hides them.
        http_faults.fail(mode, 1)
        response = await call(mw, "/read", cookie)
        assert response.status_code == 200
        assert http_faults.requests == 2

        # As many failures as attempts on the load: 503, the app is not called.
        http_faults.fail(mode, 2)
        assert_unavailable(await call(mw, "/read", cookie))
        assert app.calls == 1
        assert http_faults.requests == 2
        assert_logged(caplog, "load failed", cookie)

        # The load goes through, the save fails twice: 503 and the stored item is unchanged.
        async def fail_the_save() -> None:
            http_faults.fail(mode, 2)

        app.fault = fail_the_save
        assert_unavailable(await call(mw, "/set?user=u2", cookie))
        app.fault = None
        assert await item_of(dynamodb_client, store, cookie) == before
        assert_logged(caplog, "save failed", cookie)
