"""Spec point 11 on a real server: the item size guard, with and without compression.

Exact boundaries are found with a "probe" store whose limit is 1 byte: it refuses every item with
`SessionTooLarge`, whose `.size` is the size the real store would write (and it never writes).
Time is a fixed `Clock`, so expiry and creation numbers, and thus sizes, are reproducible.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from botocore.exceptions import ClientError
from support import (
    LOGGER,
    T0,
    Clock,
    assert_no_leaks,
    call,
    cookie_of,
    data_of,
    dynamo_store,
    item_of,
    middleware,
    read_item,
    scan_all,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    Record,
    SessionError,
    SessionTooLarge,
    StoreError,
    codec,
)
from asgi_dynamo_session.dynamodb import DYNAMODB_ITEM_LIMIT, item_size

pytestmark = pytest.mark.usefixtures("library_logs")

TWO_WEEKS = 14 * 24 * 3600  # OnSessionEnd keeps the item this long
SMALL = 2000
MOTO_LIMIT = (
    "moto refuses items over 405000 bytes by its own approximate count, below DynamoDB's "
    "409600; dynalite counts as DynamoDB does"
)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def payload(kind: str, n: int) -> dict[str, Any]:
    """The session data a /fill request stores (the probe measures the same data)."""
    if kind == "text":  # compresses extremely well
        return {"v": "x" * n}
    if kind == "random":  # does not compress at all
        return {"v": random.Random(n).randbytes(n)}
    if kind == "mixed":  # 5000 compressible bytes plus n incompressible ones
        return {"c": "x" * 5000, "r": random.Random(7).randbytes(n)}
    raise AssertionError(kind)


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    """/fill?kind=...&n=... replaces the data with `payload(kind, n)`; /read reads."""
    session = scope["session"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["path"] == "/fill":
        session.clear()
        session.update(payload(query["kind"], int(query["n"])))
    body = repr(sorted((k, len(v)) for k, v in session.items())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"yes")]})
    await send({"type": "http.response.body", "body": body})


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert response.content == b"Session too large\n"
    assert "set-cookie" not in response.headers
    assert "x-app" not in response.headers
    assert "retry-after" not in response.headers


def assert_logged_sizes(caplog: pytest.LogCaptureFixture, size: int, limit: int, *cookies: str):
    ours = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert any(
        f"{size} bytes" in r.getMessage() and f"{limit}-byte" in r.getMessage() for r in ours
    ), [r.getMessage() for r in ours]
    assert_no_leaks(caplog, *cookies)


class Sizer:
    """Measures the item a store with `compress_above` would write for some session data."""

    def __init__(self, probe: DynamoDBStore) -> None:
        self.probe = probe

    async def __call__(self, data: dict[str, Any]) -> int:
        record = Record(
            id=secrets.token_urlsafe(32),
            data=data,
            expiry_date=datetime.fromtimestamp(T0 + TWO_WEEKS, timezone.utc),
            created_at=datetime.fromtimestamp(T0, timezone.utc),
        )
        with pytest.raises(SessionTooLarge) as refused:
            await self.probe.create(record)
        return refused.value.size

    async def boundary(self, kind: str, limit: int, start: int) -> int:
        """The largest n whose `payload(kind, n)` fits `limit` (n + 1 does not)."""
        n = start
        while (size := await self(payload(kind, n))) <= limit:
            n += max(1, (limit - size) // 2)
        while await self(payload(kind, n)) > limit:
            n -= 1
        assert await self(payload(kind, n + 1)) > limit
        return n


@asynccontextmanager
async def sizer(endpoint: str, table: str, compress_above: int | None) -> AsyncIterator[Sizer]:
    async with dynamo_store(
        endpoint, table, create=False, max_item_size=1, compress_above=compress_above
    ) as probe:
        yield Sizer(probe)


# -- item_size ---------------------------------------------------------------------------------


def test_item_size_counts_names_and_values_as_dynamodb_does() -> None:
    item = {
        "session_id": {"S": "SESSIONS::TOWER::abc"},  # 10 + 20
        "expire_at": {"N": "1800003600"},  # 9 + 18|00|00|36 (4 pairs) + 1
        "data": {"B": b"\x01" + b"x" * 10},  # 4 + 11
        "version": {"N": "120"},  # 7 + 1|20 (2 pairs) + 1
        "created_at": {"N": "1800000000"},  # 10 + 18 (1 pair) + 1
        "expiry_policy": {"S": "inactivity:3600"},  # 13 + 15
        "\u00fcn": {"S": "\u00e9t\u00e9"},  # UTF-8 bytes: 3 + 5
    }
    assert item_size(item) == 30 + 14 + 15 + 10 + 12 + 28 + 8
    numbers = {
        "0": 1,
        "7": 2,
        "12": 2,
        "120": 3,  # 1|20
        "1200": 2,
        "12345": 4,
        "-5": 3,
        "0.5": 2,
        "0.012": 3,  # .01|20
        "1800003600": 5,
    }
    assert {n: item_size({"": {"N": n}}) for n in numbers} == numbers
    # Maps and lists: 3 bytes, plus 1 per element, plus the elements (and a map's key names).
    assert item_size({"m": {"M": {"a": {"S": "xy"}}}}) == 1 + 3 + (1 + 1 + 2)
    assert item_size({"l": {"L": [{"N": "1"}, {"BOOL": True}]}}) == 1 + 3 + (1 + 2) + (1 + 1)


async def test_item_size_matches_the_servers_limit_to_the_byte(
    dynamodb_server: Any, dynamodb_client: Any, table_name: str
) -> None:
    """Items item_size() puts at exactly 400 KB are accepted, one byte more is refused."""
    if dynamodb_server.kind == "moto":
        pytest.skip(MOTO_LIMIT)
    async with dynamo_store(dynamodb_server.endpoint_url, table_name) as store:
        key = store.key("k" * 43)
        for number in ("1", "120", "1800003600", "-5", "0.012", "12345678901234567890"):
            base = {**key, "expire_at": {"N": number}, "version": {"N": "2"}, "data": {"B": b""}}
            fill = DYNAMODB_ITEM_LIMIT - item_size(base)
            fits = {**base, "data": {"B": b"\x01" * fill}}
            assert item_size(fits) == DYNAMODB_ITEM_LIMIT
            await dynamodb_client.put_item(TableName=table_name, Item=fits)
            over = {**base, "data": {"B": b"\x01" * (fill + 1)}}
            with pytest.raises(ClientError, match="maximum allowed size"):
                await dynamodb_client.put_item(TableName=table_name, Item=over)


# -- the store raises SessionTooLarge ----------------------------------------------------------


async def test_store_refuses_an_item_over_its_limit(
    dynamodb_server: Any, dynamodb_client: Any, table_name: str, transport: str
) -> None:
    endpoint = dynamodb_server.endpoint_url
    async with sizer(endpoint, table_name, None) as measure:
        n = await measure.boundary("text", SMALL, 1500)
    async with dynamo_store(
        endpoint, table_name, transport=transport, max_item_size=SMALL, compress_above=None
    ) as store:

        def record(data: dict[str, Any]) -> Record:
            return Record(
                id="s" * 43,
                data=data,
                expiry_date=datetime.fromtimestamp(T0 + TWO_WEEKS, timezone.utc),
                created_at=datetime.fromtimestamp(T0, timezone.utc),
            )

        with pytest.raises(SessionTooLarge) as refused:
            await store.create(record(payload("text", n + 1)))
        assert (refused.value.size, refused.value.limit) == (SMALL + 1, SMALL)
        assert isinstance(refused.value, SessionError)
        assert not isinstance(refused.value, StoreError)  # not "unavailable": never retried
        assert f"{SMALL + 1} bytes" in str(refused.value)
        assert f"{SMALL}-byte" in str(refused.value)
        assert await scan_all(dynamodb_client, table_name) == []

        fits = record(payload("text", n))
        await store.create(fits)
        before = await read_item(dynamodb_client, table_name, store.key(fits.id))
        assert before is not None
        assert item_size(before) == SMALL  # what item_size() predicted is what was stored

        grown = record(payload("text", n + 1))
        grown.version = fits.version
        with pytest.raises(SessionTooLarge) as refused:
            await store.save(grown)
        assert (refused.value.size, refused.value.limit) == (SMALL + 1, SMALL)
        assert await read_item(dynamodb_client, table_name, store.key(fits.id)) == before


# -- through the middleware --------------------------------------------------------------------


#: What each save adds to an item until it keeps its last 8 write tokens: a space and a token.
TOKEN = 17


async def test_just_under_and_just_over_the_limit(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = dynamodb_server.endpoint_url
    async with sizer(endpoint, table_name, None) as measure:
        n = await measure.boundary("text", SMALL, 1500)
    async with dynamo_store(
        endpoint,
        table_name,
        transport=transport,
        max_item_size=SMALL,
        compress_above=None,
        clock=clock,
    ) as store:
        mw = middleware(app, store, clock=clock)

        # A new session one byte over: 500, nothing stored.
        assert_too_large(await call(mw, f"/fill?kind=text&n={n + 1}"))
        assert await scan_all(dynamodb_client, table_name) == []
        assert_logged_sizes(caplog, SMALL + 1, SMALL)

        # Exactly at the limit: stored.
        response = await call(mw, f"/fill?kind=text&n={n}")
        assert response.status_code == 200
        cookie = cookie_of(response)
        before = await item_of(dynamodb_client, store, cookie)
        assert before is not None
        assert item_size(before) == SMALL
        assert data_of(before) == payload("text", n)

        # Growing it by one byte: 500, the stored session untouched. (A save also adds its
        # write token to the item's history of its last writes: TOKEN more bytes.)
        caplog.clear()
        assert_too_large(await call(mw, f"/fill?kind=text&n={n + 1}", cookie))
        assert await item_of(dynamodb_client, store, cookie) == before
        assert_logged_sizes(caplog, SMALL + 1 + TOKEN, SMALL, cookie)

        # Just under (with room for the token) is stored again.
        response = await call(mw, f"/fill?kind=text&n={n - TOKEN}", cookie)
        assert response.status_code == 200
        after = await item_of(dynamodb_client, store, cookie)
        assert after is not None
        assert data_of(after) == payload("text", n - TOKEN)
        assert after["version"] == {"N": "2"}


async def test_compression_makes_a_compressible_session_fit(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = dynamodb_server.endpoint_url
    options: dict[str, Any] = {"transport": transport, "max_item_size": SMALL, "clock": clock}
    data = payload("text", 20_000)  # ten times the limit before compression

    async with dynamo_store(endpoint, table_name, compress_above=None, **options) as plain:
        assert_too_large(await call(middleware(app, plain, clock=clock), "/fill?kind=text&n=20000"))
        assert await scan_all(dynamodb_client, table_name) == []
    async with dynamo_store(
        endpoint, table_name, create=False, compress_above=100, **options
    ) as squeezed:
        mw = middleware(app, squeezed, clock=clock)
        response = await call(mw, "/fill?kind=text&n=20000")
        assert response.status_code == 200
        cookie = cookie_of(response)
        item = await item_of(dynamodb_client, squeezed, cookie)
        assert item is not None
        assert item["data"]["B"][0] == codec.ZLIB  # flagged in the format byte
        assert item_size(item) <= SMALL
        assert data_of(item) == data
        assert (await call(mw, "/read", cookie)).content == b"[('v', 20000)]"


async def test_just_under_and_just_over_the_limit_when_compressed(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5000 compressible bytes plus n random ones: the compressed item crosses the limit."""
    endpoint = dynamodb_server.endpoint_url
    async with sizer(endpoint, table_name, 100) as measure:
        n = await measure.boundary("mixed", SMALL, 1000)
        over = await measure(payload("mixed", n + 1))
    async with dynamo_store(
        endpoint,
        table_name,
        transport=transport,
        max_item_size=SMALL,
        compress_above=100,
        clock=clock,
    ) as store:
        mw = middleware(app, store, clock=clock)

        response = await call(mw, f"/fill?kind=mixed&n={n}")
        assert response.status_code == 200
        cookie = cookie_of(response)
        before = await item_of(dynamodb_client, store, cookie)
        assert before is not None
        assert before["data"]["B"][0] == codec.ZLIB
        assert item_size(before) <= SMALL
        assert data_of(before) == payload("mixed", n)

        caplog.clear()
        assert_too_large(await call(mw, f"/fill?kind=mixed&n={n + 1}", cookie))
        assert await item_of(dynamodb_client, store, cookie) == before
        assert_logged_sizes(caplog, over + TOKEN, SMALL, cookie)


# -- DynamoDB's own 400 KB limit ---------------------------------------------------------------


async def test_the_real_limit_refuses_one_byte_over_without_writing(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    transport: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = dynamodb_server.endpoint_url
    async with sizer(endpoint, table_name, 8 * 1024) as measure:
        n = await measure.boundary("random", DYNAMODB_ITEM_LIMIT, 400_000)
    async with dynamo_store(endpoint, table_name, transport=transport, clock=clock) as store:
        assert store.max_item_size == DYNAMODB_ITEM_LIMIT  # the default
        mw = middleware(app, store, clock=clock)
        assert_too_large(await call(mw, f"/fill?kind=random&n={n + 1}"))
        assert await scan_all(dynamodb_client, table_name) == []
        assert_logged_sizes(caplog, DYNAMODB_ITEM_LIMIT + 1, DYNAMODB_ITEM_LIMIT)

        # Compressible data far over 400 KB fits once compressed (the default threshold).
        response = await call(mw, "/fill?kind=text&n=1000000")
        assert response.status_code == 200
        item = await item_of(dynamodb_client, store, cookie_of(response))
        assert item is not None
        assert item["data"]["B"][0] == codec.ZLIB
        assert data_of(item) == payload("text", 1_000_000)


async def test_the_real_limit_stores_an_item_of_exactly_400_kb(
    dynamodb_server: Any, dynamodb_client: Any, table_name: str, transport: str, clock: Clock
) -> None:
    if dynamodb_server.kind == "moto":
        pytest.skip(MOTO_LIMIT)
    endpoint = dynamodb_server.endpoint_url
    async with sizer(endpoint, table_name, 8 * 1024) as measure:
        n = await measure.boundary("random", DYNAMODB_ITEM_LIMIT, 400_000)
    async with dynamo_store(endpoint, table_name, transport=transport, clock=clock) as store:
        mw = middleware(app, store, clock=clock)
        response = await call(mw, f"/fill?kind=random&n={n}")
        assert response.status_code == 200
        item = await item_of(dynamodb_client, store, cookie_of(response))
        assert item is not None
        assert item_size(item) == DYNAMODB_ITEM_LIMIT
        assert data_of(item) == payload("random", n)


def test_max_item_size_is_bounded_by_dynamodbs_limit() -> None:
    with pytest.raises(ValueError, match="max_item_size"):
        DynamoDBStore(max_item_size=DYNAMODB_ITEM_LIMIT + 1)
    with pytest.raises(ValueError, match="max_item_size"):
        DynamoDBStore(max_item_size=0)
