"""Test helpers shared by the suites: stores on the real server, item read-back, ASGI clients."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    Record,
    SessionMiddleware,
)

SECRET = "test-secret-key-that-is-long-enough-0123456789"
OLD_SECRET = "old-secret-key-that-is-also-long-enough-987654"

#: Which data-plane transports the store suites run on ("aiobotocore", "fast").
TRANSPORTS = os.environ.get("DYNAMO_TEST_TRANSPORTS", "aiobotocore,fast").split(",")


class Clock:
    """An injectable clock: epoch seconds that tests move forward by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
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

    async def touch(self, session_id: str, expiry_date: datetime) -> bool:
        self.calls["touch"] += 1
        result: bool = await self.inner.touch(session_id, expiry_date)
        return result

    async def take(self, session_id: str) -> bool:
        self.calls["take"] += 1
        result: bool = await self.inner.take(session_id)
        return result

    @property
    def writes(self) -> int:
        return sum(self.calls[k] for k in ("create", "save", "delete", "touch", "take"))


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
