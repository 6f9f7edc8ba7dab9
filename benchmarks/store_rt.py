"""Scenario 1: store round trips on both transports, beside raw aiobotocore and the transport floor.

The floor is one GetItem (or PutItem) signed once with botocore's ``SigV4Auth`` and then POSTed
as the same bytes over one aiohttp session with no parsing: the least any Python client can spend.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, Record, codec
from asgi_dynamo_session._ids import new_id

from ._env import REGION
from ._measure import Op, Plan, Prepare, Series, compare
from .payload import session_data

CASES = ("load", "save", "create", "delete", "touch")
AIOBOTOCORE = "store aiobotocore"
FAST = "store fast"
RAW = "raw aiobotocore"
FLOOR = "floor pre-signed"
_TARGET = "DynamoDB_20120810."


def _expiry(hours: float = 1) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


async def seed(store: DynamoDBStore, k: int) -> list[Record]:
    """k stored sessions holding the realistic payload (untimed setup)."""
    records = [Record(id=new_id(), data=session_data(), expiry_date=_expiry()) for _ in range(k)]
    for i in range(0, k, 32):
        await asyncio.gather(*(store.create(r) for r in records[i : i + 32]))
    return records


def store_variant(store: DynamoDBStore, seeder: DynamoDBStore, case: str) -> Prepare:
    """The store protocol call of `case`, one stored session per worker where it needs one."""

    async def prepare(concurrency: int, n: int) -> Op:
        if case == "create":
            data = session_data()
            fresh = iter([Record(id=new_id(), data=data, expiry_date=_expiry()) for _ in range(n)])
            return lambda w: store.create(next(fresh))
        if case == "delete":
            doomed = iter([r.id for r in await seed(seeder, n)])
            return lambda w: store.delete(next(doomed))
        records = await seed(seeder, concurrency)
        if case == "load":

            async def load(w: int) -> None:
                if await store.load(records[w].id) is None:
                    raise RuntimeError("a seeded session did not load")

            return load
        if case == "save":

            async def save(w: int) -> None:
                record = records[w]
                record.data["visits"] += 1
                record.packed = None
                await store.save(record)

            return save
        later = _expiry(2)

        async def touch(w: int) -> None:
            if not await store.touch(records[w].id, later):
                raise RuntimeError("a seeded session was not touched")

        return touch

    return prepare


def wire_item(store: DynamoDBStore, record: Record) -> dict[str, Any]:
    """The item the store writes for a record, built from the public layout (Binary as bytes)."""
    p = store.props
    return {
        **store.key(record.id),
        p.expiry_name: {"N": str(int(record.expiry_date.timestamp()))},
        p.data_name: {"B": codec.encode(codec.pack(record.data), store.compress_above)},
        p.version_name: {"N": "1"},
    }


def raw_variant(store: DynamoDBStore, case: str) -> Prepare:
    """aiobotocore's own get_item / put_item with the store's key and payload."""
    client: Any = store.client
    table = store.props.table_name

    async def prepare(concurrency: int, n: int) -> Op:
        records = await seed(store, concurrency)
        if case == "load":
            keys = [store.key(r.id) for r in records]
            return lambda w: client.get_item(TableName=table, Key=keys[w], ConsistentRead=True)
        items = [wire_item(store, r) for r in records]
        return lambda w: client.put_item(TableName=table, Item=items[w])

    return prepare


def _json_ready(item: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"B": base64.b64encode(v["B"]).decode()} if "B" in v else v
        for name, v in item.items()
    }


async def presign(
    endpoint: str, action: str, params: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one request signed by botocore's SigV4Auth, to replay as is."""
    from aiobotocore.session import get_session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = await get_session().get_credentials()
    body = json.dumps(params).encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": _TARGET + action}
    request = AWSRequest(method="POST", url=endpoint, data=body, headers=headers)
    SigV4Auth(await credentials.get_frozen_credentials(), "dynamodb", REGION).add_auth(request)
    return body, dict(request.headers.items())


def floor_variant(
    store: DynamoDBStore, http: aiohttp.ClientSession, endpoint: str, case: str
) -> Prepare:
    """The same bytes POSTed again and again: signing, encoding and parsing all left out."""
    table = store.props.table_name

    async def prepare(concurrency: int, n: int) -> Op:
        records = await seed(store, concurrency)
        requests: list[tuple[bytes, dict[str, str]]] = []
        for r in records:
            if case == "load":
                params = {"TableName": table, "Key": store.key(r.id), "ConsistentRead": True}
                requests.append(await presign(endpoint, "GetItem", params))
            else:
                params = {"TableName": table, "Item": _json_ready(wire_item(store, r))}
                requests.append(await presign(endpoint, "PutItem", params))

        async def post(w: int) -> bytes:
            body, headers = requests[w]
            async with http.post(endpoint, data=body, headers=headers) as response:
                return await response.read()

        async with http.post(endpoint, data=requests[0][0], headers=requests[0][1]) as response:
            if response.status != 200:
                raise RuntimeError(f"pre-signed request refused: {await response.text()}")
        return post

    return prepare


@asynccontextmanager
async def open_stores(
    endpoint: str, table: str, notes: dict[str, str]
) -> AsyncIterator[dict[str, DynamoDBStore]]:
    """Both transports' stores on one table (created here); a failing transport is noted."""
    props = DynamoDBStoreProps(table_name=table)
    async with AsyncExitStack() as stack:
        stores: dict[str, DynamoDBStore] = {}
        for name in ("aiobotocore", "fast"):
            store = DynamoDBStore(
                props=props, endpoint_url=endpoint, region_name=REGION, transport=name
            )
            try:
                await stack.enter_async_context(store)
                if not stores:
                    await store.create_table()
                (probe,) = await seed(store, 1)
                if await store.load(probe.id) is None:
                    raise RuntimeError("a stored session did not load back")
            except Exception as exc:
                if name == "aiobotocore":
                    raise
                notes[f"transport {name}"] = f"unavailable: {type(exc).__name__}: {exc}"
                continue
            stores[name] = store
        yield stores


async def run(endpoint: str, table: str, plan: Plan, notes: dict[str, str]) -> list[Series]:
    results: list[Series] = []
    async with (
        open_stores(endpoint, table, notes) as stores,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http,
    ):
        base = stores["aiobotocore"]
        seeder = stores.get("fast", base)
        for case in CASES:
            variants = {AIOBOTOCORE: store_variant(base, seeder, case)}
            if "fast" in stores:
                variants[FAST] = store_variant(stores["fast"], seeder, case)
            if case in ("load", "save"):
                variants[RAW] = raw_variant(base, case)
                variants[FLOOR] = floor_variant(base, http, endpoint, case)
            for concurrency in plan.ops:
                results += await compare("store", case, variants, plan, concurrency)
    return results
