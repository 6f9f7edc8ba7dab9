"""Scenario 5: the users-and-devices round trips beside a plain create, on moto.

dynalite has no TransactWriteItems, so this scenario runs on a moto server of its own (the
one-request-at-a-time server the tests use). A bind is what `session.set_user` costs on a new
session (`DynamoDBStore.bind`: one TransactWriteItems); `user_sessions` and `revoke_user` run on
a user holding `SESSIONS` sessions. All variants of one transport run in interleaved rounds, so
each ratio to the plain create is paired round by round.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, Record
from asgi_dynamo_session._ids import new_id
from asgi_dynamo_session._user_seal import UserSeal
from asgi_dynamo_session._users import Binding, user_key

from ._env import REGION
from ._measure import Op, Plan, Prepare, Series, compare
from .payload import session_data

SCENARIO = "users"
CASE = "round trip"
#: How many sessions the user has whose sessions are listed or revoked.
SESSIONS = 3
OPS = ("create", "bind", "user_sessions", "revoke_user")
TRANSPORTS = ("fast", "aiobotocore")
_SEAL = UserSeal([secrets.token_bytes(32)])


def variant_name(transport: str, op: str) -> str:
    return f"{transport} {op}"


def _record(user: str | None) -> Record:
    record = Record(
        id=new_id(),
        data=session_data(),
        expiry_date=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    record.version = 0
    if user is not None:
        key = user_key(user)
        record.user = Binding(key, _SEAL.seal(user, key), None)
    return record


async def users_with_sessions(seeder: DynamoDBStore, k: int) -> list[str]:
    """k new users, each bound to `SESSIONS` sessions (untimed setup, users side by side)."""
    users = [f"{secrets.token_hex(6)}@example.com" for _ in range(k)]
    for _ in range(SESSIONS):
        await asyncio.gather(*(seeder.bind(_record(user)) for user in users))
    return users


def users_variant(store: DynamoDBStore, seeder: DynamoDBStore, op: str) -> Prepare:
    async def prepare(concurrency: int, n: int) -> Op:
        if op == "create":
            fresh = iter([_record(None) for _ in range(n)])
            return lambda w: store.create(next(fresh))
        if op == "bind":
            bound = iter([_record(f"{secrets.token_hex(6)}@example.com") for _ in range(n)])
            return lambda w: store.bind(next(bound))
        if op == "user_sessions":
            (user,) = await users_with_sessions(seeder, 1)

            async def listing(w: int) -> None:
                if len(await store.user_sessions(user)) != SESSIONS:
                    raise RuntimeError("the user's sessions were not all listed")

            return listing
        users = iter(await users_with_sessions(seeder, n))

        async def revoke(w: int) -> None:
            if await store.revoke_user(next(users)) != SESSIONS:
                raise RuntimeError("revoke_user did not end every session of the user")

        return revoke

    return prepare


async def run(endpoint: str, table: str, plan: Plan, notes: dict[str, str]) -> list[Series]:
    """Every op on each transport (the table created here, on the moto at `endpoint`)."""
    props = DynamoDBStoreProps(table_name=table)
    results: list[Series] = []
    async with AsyncExitStack() as stack:
        stores: dict[str, DynamoDBStore] = {}
        for name in TRANSPORTS:
            store = DynamoDBStore(
                props=props,
                endpoint_url=endpoint,
                region_name=REGION,
                transport=name,  # type: ignore[arg-type]
            )
            await stack.enter_async_context(store)
            if not stores:
                await store.create_table()
            stores[name] = store
        for name, store in stores.items():
            variants = {
                variant_name(name, op): users_variant(store, stores["fast"], op) for op in OPS
            }
            for concurrency in plan.ops:
                results += await compare(SCENARIO, CASE, variants, plan, concurrency)
    notes["users"] = (
        f"on moto (dynalite has no transactions); user_sessions and revoke_user on a user with "
        f"{SESSIONS} sessions"
    )
    return results
