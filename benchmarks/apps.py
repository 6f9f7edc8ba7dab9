"""The counter served by uvicorn in scenario 3, twice: on our middleware, and written by hand.

``benchmarks.apps:ours`` keeps the count in the session (SessionMiddleware + DynamoDBStore with
its default transport). ``benchmarks.apps:by_hand`` does what people write without a session
library: a random id in a cookie (no signing), one aiobotocore get_item and put_item per request.
Both read ``BENCH_ENDPOINT``, ``BENCH_TABLE`` and ``BENCH_HAND_TABLE`` from the environment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware

from ._env import REGION
from .payload import SECRET

ENDPOINT = os.environ.get("BENCH_ENDPOINT")
POOL = 64


async def count(request: Request) -> PlainTextResponse:
    session = request.session
    session["count"] = session.get("count", 0) + 1
    return PlainTextResponse(str(session["count"]))


store = DynamoDBStore(
    props=DynamoDBStoreProps(table_name=os.environ.get("BENCH_TABLE", "BenchSessions")),
    endpoint_url=ENDPOINT,
    region_name=REGION,
    pool_size=POOL,
)
ours = Starlette(
    routes=[Route("/", count)],
    middleware=[Middleware(SessionMiddleware, store=store, secret_keys=SECRET, secure=False)],
)

HAND_TABLE = os.environ.get("BENCH_HAND_TABLE", "BenchCounters")
_client: Any = None


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    global _client
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=POOL, retries={"mode": "standard"})
    async with AsyncExitStack() as stack:
        _client = await stack.enter_async_context(
            get_session().create_client(
                "dynamodb", endpoint_url=ENDPOINT, region_name=REGION, config=config
            )
        )
        yield


async def count_by_hand(request: Request) -> PlainTextResponse:
    sid = request.cookies.get("sid")
    n = 0
    if sid is None:
        sid = secrets.token_urlsafe(32)
    else:
        key = {"id": {"S": sid}}
        found = await _client.get_item(TableName=HAND_TABLE, Key=key, ConsistentRead=True)
        if "Item" in found:
            n = int(found["Item"]["count"]["N"])
    n += 1
    item = {"id": {"S": sid}, "count": {"N": str(n)}}
    await _client.put_item(TableName=HAND_TABLE, Item=item)
    response = PlainTextResponse(str(n))
    if n == 1:
        response.set_cookie("sid", sid, httponly=True, samesite="lax")
    return response


by_hand = Starlette(routes=[Route("/", count_by_hand)], lifespan=_lifespan)
