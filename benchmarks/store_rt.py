"""Scenario 1: store round trips on each transport, beside aiobotocore, aiodynamo and two floors.

A floor is one GetItem (or PutItem) signed once with botocore's ``SigV4Auth`` and then sent as
the same bytes again and again with no signing, encoding or parsing of the item: over one aiohttp
session ("floor pre-signed"), and over keep-alive asyncio connections parsed by httptools ("floor
httptools", the least any Python client can spend). The scenario runs on plain HTTP and over TLS
(a terminator in its own process), on asyncio's loop and on uvloop (see ``__main__``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, Record, codec
from asgi_dynamo_session._ids import new_id

from ._env import REGION
from ._measure import Op, Plan, Prepare, Series, compare
from .payload import session_data

CASES = ("load", "save", "create", "delete", "touch")
AIOBOTOCORE = "store aiobotocore"
FAST = "store fast"
AIOHTTP = "store aiohttp"
RAW = "raw aiobotocore"
AIODYNAMO = "aiodynamo"
FLOOR = "floor pre-signed"
FLOOR_HTTPTOOLS = "floor httptools"
#: Store transports measured, by the name the variant carries.
TRANSPORTS = {"aiobotocore": AIOBOTOCORE, "fast": FAST, "aiohttp": AIOHTTP}
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


class _Floor(asyncio.Protocol):
    """One keep-alive connection that writes pre-built requests and waits for each answer
    (parsed by httptools, body kept, nothing decoded)."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TLS one is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("floor connection lost"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.done is not None
        self.done.set_result(self.parser.get_status_code())

    async def send(self, raw: bytes) -> int:
        assert self.transport is not None
        self.body = []
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        status = await self.done
        b"".join(self.body)
        return status


def httptools_floor_variant(
    store: DynamoDBStore, endpoint: str, case: str, context: ssl.SSLContext | None
) -> Prepare:
    """The pre-signed bytes on one keep-alive asyncio connection per worker, httptools parsing."""
    table = store.props.table_name
    url = urlsplit(endpoint)
    conns: list[_Floor] = []

    async def prepare(concurrency: int, n: int) -> Op:
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        conns.clear()
        records = await seed(store, concurrency)
        raws: list[bytes] = []
        for r in records:
            if case == "load":
                params = {"TableName": table, "Key": store.key(r.id), "ConsistentRead": True}
                body, headers = await presign(endpoint, "GetItem", params)
            else:
                params = {"TableName": table, "Item": _json_ready(wire_item(store, r))}
                body, headers = await presign(endpoint, "PutItem", params)
            headers.setdefault("Host", url.netloc)
            head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            raws.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        loop = asyncio.get_running_loop()
        for _ in range(concurrency):
            _, conn = await loop.create_connection(
                _Floor,
                url.hostname,
                url.port,
                ssl=context,
                server_hostname=url.hostname if context else None,
            )
            conns.append(conn)
        if await conns[0].send(raws[0]) != 200:
            raise RuntimeError("pre-signed request refused")
        return lambda w: conns[w].send(raws[w])

    return prepare


def aiodynamo_variant(
    store: DynamoDBStore, http: aiohttp.ClientSession, endpoint: str, case: str
) -> Prepare:
    """aiodynamo's get_item / put_item (on aiohttp) with the store's key and payload."""
    from aiodynamo.client import Client
    from aiodynamo.credentials import Key, StaticCredentials
    from aiodynamo.http.aiohttp import AIOHTTP
    from yarl import URL

    client = Client(
        AIOHTTP(http),
        StaticCredentials(
            Key(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        ),
        REGION,
        endpoint=URL(endpoint),
    )
    table = store.props.table_name
    p = store.props

    async def prepare(concurrency: int, n: int) -> Op:
        records = await seed(store, concurrency)
        if case == "load":
            keys = [{k: v["S"] for k, v in store.key(r.id).items()} for r in records]
            return lambda w: client.get_item(table, keys[w], consistent_read=True)
        items = []
        for r in records:
            item = wire_item(store, r)
            items.append(
                {
                    **{k: v["S"] for k, v in store.key(r.id).items()},
                    p.expiry_name: int(item[p.expiry_name]["N"]),
                    p.data_name: item[p.data_name]["B"],
                    p.version_name: 1,
                }
            )
        return lambda w: client.put_item(table, items[w])

    return prepare


@asynccontextmanager
async def open_stores(
    endpoint: str, table: str, notes: dict[str, str], scenario: str = "store"
) -> AsyncIterator[dict[str, DynamoDBStore]]:
    """Every transport's store on one table (created here); a failing transport is noted."""
    props = DynamoDBStoreProps(table_name=table)
    async with AsyncExitStack() as stack:
        stores: dict[str, DynamoDBStore] = {}
        for name in TRANSPORTS:
            store = DynamoDBStore(
                props=props,
                endpoint_url=endpoint,
                region_name=REGION,
                transport=name,  # type: ignore[arg-type]
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
                notes[f"{scenario} transport {name}"] = f"unavailable: {type(exc).__name__}: {exc}"
                continue
            stores[name] = store
        yield stores


async def run(
    endpoint: str,
    table: str,
    plan: Plan,
    notes: dict[str, str],
    *,
    scenario: str = "store",
    ca_bundle: str | None = None,
) -> list[Series]:
    """Every case on every variant, for one endpoint (plain or TLS) on the running loop."""
    results: list[Series] = []
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    async with (
        open_stores(endpoint, table, notes, scenario) as stores,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=context or True)
        ) as http,
    ):
        base = stores["aiobotocore"]
        seeder = stores.get("fast", base)
        for case in CASES:
            variants = {
                TRANSPORTS[name]: store_variant(store, seeder, case)
                for name, store in stores.items()
            }
            if case in ("load", "save"):
                variants[RAW] = raw_variant(base, case)
                variants[AIODYNAMO] = aiodynamo_variant(base, http, endpoint, case)
                variants[FLOOR] = floor_variant(base, http, endpoint, case)
                variants[FLOOR_HTTPTOOLS] = httptools_floor_variant(base, endpoint, case, context)
            for concurrency in plan.ops:
                results += await compare(scenario, case, variants, plan, concurrency)
        if scenario.endswith("tls uvloop") and "fast" in stores:
            results += await profile(stores["fast"], seeder, scenario)
    return results


async def profile(store: DynamoDBStore, seeder: DynamoDBStore, scenario: str) -> list[Series]:
    """Where a fast load's own CPU goes, each part timed alone over many calls: signing, JSON
    (request encode + answer decode), item decoding (base64 to bytes) and record building
    (codec decode + unpack + Record), beside a whole load on the wire."""
    from asgi_dynamo_session import _fast

    wire: Any = await store._transport()
    (record,) = await seed(seeder, 1)
    key = store.key(record.id)
    params = {"TableName": store.props.table_name, "Key": key, "ConsistentRead": True}
    answer = await wire._attempts("GetItem", dict(params))
    raw = _fast._encode(
        {
            "Item": {
                k: ({"B": base64.b64encode(v["B"]).decode()} if "B" in v else v)
                for k, v in answer["Item"].items()
            }
        }
    )
    creds = await wire._credentials.get_frozen_credentials()
    body = _fast._encode(params)
    date = _fast.amz_date()
    parts: dict[str, Callable[[], object]] = {
        "signing": lambda: wire._signer.headers(
            body, "DynamoDB_20120810.GetItem", creds.access_key, creds.secret_key, creds.token, date
        ),
        "JSON": lambda: (_fast._encode(params), _fast.parse_result("GetItem", raw)),
        "item decoding": lambda: _fast._decode_result(_fast._decode(raw)),
        "record building": lambda: store._record(record.id, answer["Item"]),
    }
    out: list[Series] = []
    n = 2000
    for name, part in parts.items():
        s = Series(scenario + " profile", "load", name, 1)
        for _ in range(5):
            began = time.process_time()
            for _ in range(n):
                part()
            s.rounds_cpu_us.append((time.process_time() - began) / n * 1e6)
            s.ops += n
        out.append(s)
    whole = Series(scenario + " profile", "load", "whole load (wire included)", 1)
    for _ in range(5):
        began = time.process_time()
        for _ in range(200):
            await store.load(record.id)
        whole.rounds_cpu_us.append((time.process_time() - began) / 200 * 1e6)
        whole.ops += 200
    return [*out, whole]
