"""FastTransport: SigV4 parity with botocore, real-server round trips, retries and timeouts."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import botocore.auth
import pytest
from aiobotocore.session import get_session
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from netfault import HttpFaultProxy
from support import free_port

from asgi_dynamo_session._fast import FastTransport
from asgi_dynamo_session._sigv4 import SigV4Signer, amz_date
from asgi_dynamo_session._transport import ConditionFailed
from asgi_dynamo_session._wire import WireTransport
from asgi_dynamo_session.errors import StoreError

REGION = "us-east-1"
CAP = 60.0  # generous upper bound so that a broken retry loop fails instead of hanging


# --- SigV4 parity with botocore ------------------------------------------------------------------


def _random_text(rng: random.Random, size: int) -> str:
    alphabet = 'abcXYZ019 {}[]":,.-_~/\\\n\t\u00e9\u00df\u4e2d\u6587\U0001f600\u0000'
    return "".join(rng.choice(alphabet) for _ in range(size))


def test_signer_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20240501)
    endpoints = [
        "https://dynamodb.us-east-1.amazonaws.com",
        "https://dynamodb.eu-west-1.amazonaws.com:443",
        "http://127.0.0.1:8000",
        "http://LocalHost:80",
        "http://[::1]:4566",
        "https://dynamodb.ap-southeast-2.amazonaws.com/",
    ]
    regions = ["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1"]
    targets = ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "Scan"]
    for case in range(600):
        endpoint = rng.choice(endpoints)
        region = rng.choice(regions)
        target = "DynamoDB_20120810." + rng.choice(targets)
        if case % 50 == 0:
            target += "  odd   spacing "
        body = b"" if case % 7 == 0 else _random_text(rng, rng.randrange(0, 400)).encode()
        access = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        secret = _random_text(rng, 40).replace("\n", "x")
        token = None if case % 3 else "".join(rng.choice("abcdEFGH+/=09") for _ in range(300))
        when = datetime.datetime(2000, 1, 1) + datetime.timedelta(
            seconds=rng.randrange(0, 60 * 365 * 86400)
        )
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda when=when: when)
        request = AWSRequest(
            method="POST",
            url=endpoint,
            data=body,
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target},
        )
        botocore.auth.SigV4Auth(Credentials(access, secret, token), "dynamodb", region).add_auth(
            request
        )

        date = amz_date(when.replace(tzinfo=datetime.timezone.utc).timestamp())
        assert date == request.headers["X-Amz-Date"]
        signer = SigV4Signer(endpoint, region)
        for _ in range(2):  # the second round uses the cached signing key
            headers = signer.headers(body, target, access, secret, token, date)
            assert headers["Authorization"] == request.headers["Authorization"], case
        assert headers.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
        assert headers["Host"] == botocore.auth._host_from_url(endpoint)


# --- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(endpoint_url, kind): the shared conftest server if there is one, else our own moto."""
    if os.environ.get("DYNAMODB_ENDPOINT_URL"):
        yield os.environ["DYNAMODB_ENDPOINT_URL"], "external"
        return
    try:
        shared = request.getfixturevalue("dynamodb_server")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared.endpoint_url, shared.kind
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", "moto"
    finally:
        proc.terminate()
        proc.wait(10)


class StaticCredentials:
    """A credentials provider that counts how often the transport asked for credentials."""

    def __init__(self, token: str | None = None) -> None:
        self.calls = 0
        self.token = token

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.calls += 1
        return ReadOnlyCredentials("testing", "testing", self.token)


def _client(endpoint: str) -> Any:
    return get_session().create_client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
async def tables(server: tuple[str, str]) -> AsyncIterator[tuple[str, str]]:
    """(string-keyed table, binary-keyed table), created with aiobotocore."""
    names = (f"fast_s_{uuid4().hex[:8]}", f"fast_b_{uuid4().hex[:8]}")
    async with _client(server[0]) as client:
        for name, kind in zip(names, ("S", "B"), strict=True):
            await client.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": kind}],
                BillingMode="PAY_PER_REQUEST",
            )
            for _ in range(600):
                table = (await client.describe_table(TableName=name))["Table"]
                if table["TableStatus"] == "ACTIVE":
                    break
                await asyncio.sleep(0.1)
        yield names
        for name in names:
            await client.delete_table(TableName=name)


@pytest.fixture(params=[FastTransport, WireTransport], ids=["aiohttp", "wire"])
def kind(request: pytest.FixtureRequest) -> type[FastTransport]:
    """Each of our HTTP layers: aiohttp's, and asyncio protocols + httptools."""
    cls: type[FastTransport] = request.param
    return cls


@pytest.fixture
async def transport(
    server: tuple[str, str], kind: type[FastTransport]
) -> AsyncIterator[FastTransport]:
    t = kind(endpoint_url=server[0], region_name=REGION, credentials_provider=StaticCredentials())
    yield t
    await t.close()


def _rich_item(key: str) -> dict[str, Any]:
    return {
        "id": {"S": key},
        "blob": {"B": bytes(range(256))},
        "empty_s": {"S": ""},
        "n": {"N": "42"},
        "set": {"BS": [b"\x00\x01", b"\xff"]},
        "ss": {"SS": ["a", "\u00e9"]},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
        "nested": {
            "M": {
                "inner": {"B": b"\x00nested\xff"},
                "list": {"L": [{"B": b"in-list"}, {"S": "x"}, {"M": {"deep": {"B": b"\x01"}}}]},
            }
        },
    }


async def test_get_put_round_trip_with_binary(
    transport: FastTransport, tables: tuple[str, str], server: tuple[str, str]
) -> None:
    table = tables[0]
    item = _rich_item("rich")
    await transport.put_item(table, item)
    got = await transport.get_item(table, {"id": {"S": "rich"}}, consistent=True)
    assert got is not None
    assert got["set"]["BS"] and sorted(got["set"]["BS"]) == sorted(item["set"]["BS"])
    got["set"]["BS"] = item["set"]["BS"]
    got["ss"]["SS"] = sorted(got["ss"]["SS"])
    assert got == item
    assert await transport.get_item(table, {"id": {"S": "absent"}}, consistent=False) is None

    # The same item as botocore sees it: identical bytes both ways.
    async with _client(server[0]) as client:
        seen = (await client.get_item(TableName=table, Key={"id": {"S": "rich"}}))["Item"]
        assert seen["nested"] == item["nested"] and seen["blob"] == item["blob"]
        await client.put_item(TableName=table, Item={"id": {"S": "boto"}, "b": {"B": b"\x00z"}})
    assert await transport.get_item(table, {"id": {"S": "boto"}}, consistent=True) == {
        "id": {"S": "boto"},
        "b": {"B": b"\x00z"},
    }


async def test_conditions_update_delete(
    transport: FastTransport, tables: tuple[str, str], server: tuple[str, str]
) -> None:
    table = tables[0]
    key = {"id": {"S": "cond"}}
    item = {**key, "v": {"N": "1"}, "data": {"B": b"old\x00"}}
    await transport.put_item(table, item, condition="attribute_not_exists(id)")
    with pytest.raises(ConditionFailed) as failed:
        await transport.put_item(table, item, condition="attribute_not_exists(id)")
    # dynalite (and so maybe an external server) ignores ReturnValuesOnConditionCheckFailure.
    assert failed.value.item == item or (server[1] != "moto" and failed.value.item is None)

    await transport.update_item(
        table,
        key,
        update="SET #v = :new, #d = :data",
        condition="#v = :old",
        names={"#v": "v", "#d": "data"},
        values={":new": {"N": "2"}, ":old": {"N": "1"}, ":data": {"B": b"new"}},
    )
    with pytest.raises(ConditionFailed) as failed:
        await transport.update_item(
            table,
            key,
            update="SET #v = :new",
            condition="#v = :old",
            names={"#v": "v"},
            values={":new": {"N": "3"}, ":old": {"N": "1"}},
        )
    updated = {**key, "v": {"N": "2"}, "data": {"B": b"new"}}
    assert failed.value.item == updated or (server[1] != "moto" and failed.value.item is None)
    assert await transport.get_item(table, key, consistent=True) == updated

    with pytest.raises(ConditionFailed):
        await transport.delete_item(
            table, key, condition="#v = :v", names={"#v": "v"}, values={":v": {"N": "9"}}
        )
    await transport.delete_item(
        table, key, condition="#v = :v", names={"#v": "v"}, values={":v": {"N": "2"}}
    )
    assert await transport.get_item(table, key, consistent=True) is None
    with pytest.raises(ConditionFailed) as failed:
        await transport.delete_item(table, key, condition="attribute_exists(id)")
    assert failed.value.item is None
    await transport.delete_item(table, key)  # unconditional delete of nothing is fine


async def test_batch_write_and_paginated_scan(
    transport: FastTransport, tables: tuple[str, str]
) -> None:
    table = tables[1]  # binary hash key: LastEvaluatedKey carries bytes
    big = b"\xab" * 300_000  # five of these exceed a 1 MB scan page
    keys = [bytes([i, 0, 255]) for i in range(5)]
    puts = [{"PutRequest": {"Item": {"id": {"B": k}, "big": {"B": big}}}} for k in keys]
    assert await transport.batch_write(table, puts[:3]) == []
    assert await transport.batch_write(table, puts[3:]) == []

    seen: list[bytes] = []
    pages = 0
    start: dict[str, Any] | None = None
    while True:
        items, start = await transport.scan(table, start_key=start)
        pages += 1
        for item in items:
            assert item["big"]["B"] == big
            seen.append(item["id"]["B"])
        if start is None:
            break
        assert isinstance(start["id"]["B"], bytes)
    assert pages >= 2
    assert sorted(seen) == sorted(keys)

    items, start = await transport.scan(
        table,
        projection="#i",
        names={"#i": "id"},
        filter="#i = :k",
        values={":k": {"B": keys[2]}},
    )
    while start is not None:  # a filter applies per page
        more, start = await transport.scan(
            table,
            projection="#i",
            names={"#i": "id"},
            filter="#i = :k",
            values={":k": {"B": keys[2]}},
            start_key=start,
        )
        items += more
    assert items == [{"id": {"B": keys[2]}}]

    deletes = [{"DeleteRequest": {"Key": {"id": {"B": k}}}} for k in keys]
    assert await transport.batch_write(table, deletes) == []
    items, start = await transport.scan(table)
    assert items == [] and start is None


async def test_validation_error_is_store_error(
    transport: FastTransport, tables: tuple[str, str]
) -> None:
    with pytest.raises(StoreError, match="ValidationException"):
        await transport.get_item(tables[0], {"wrong": {"S": "x"}}, consistent=True)
    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        await transport.get_item(
            "no_such_table_" + uuid4().hex[:6], {"id": {"S": "x"}}, consistent=True
        )


async def test_from_aiobotocore_client_and_credentials_per_request(
    server: tuple[str, str], tables: tuple[str, str]
) -> None:
    async with _client(server[0]) as client:
        t = FastTransport.from_aiobotocore_client(client, pool_size=2)
        try:
            assert t.endpoint_url == server[0] and t.region_name == REGION
            await t.put_item(tables[0], {"id": {"S": "via-client"}, "b": {"B": b"\x01"}})
            got = await client.get_item(TableName=tables[0], Key={"id": {"S": "via-client"}})
            assert got["Item"]["b"]["B"] == b"\x01"
        finally:
            await t.close()

    session = get_session()
    session.set_credentials("testing", "testing")
    t = await FastTransport.from_aiobotocore_session(
        session, endpoint_url=server[0], region_name=REGION
    )
    try:
        got = await t.get_item(tables[0], {"id": {"S": "via-client"}}, consistent=True)
        assert got == {"id": {"S": "via-client"}, "b": {"B": b"\x01"}}
    finally:
        await t.close()

    creds = StaticCredentials(token="session-token-value")
    t = FastTransport(endpoint_url=server[0], region_name=REGION, credentials_provider=creds)
    try:
        for _ in range(3):
            await t.get_item(tables[0], {"id": {"S": "via-client"}}, consistent=True)
        assert creds.calls == 3
    finally:
        await t.close()


# --- retries and timeouts through a misbehaving proxy ------------------------------------------


@pytest.fixture
async def proxy(server: tuple[str, str]) -> AsyncIterator[HttpFaultProxy]:
    p = HttpFaultProxy(server[0])
    await p.start()
    yield p
    await p.stop()


def _via(proxy: HttpFaultProxy, kind: type[FastTransport], **opts: Any) -> FastTransport:
    opts.setdefault("max_attempts", 3)
    return kind(
        endpoint_url=proxy.endpoint_url,
        region_name=REGION,
        credentials_provider=StaticCredentials(),
        backoff_base=0.001,
        **opts,
    )


@pytest.mark.parametrize("mode", ["throttle", "500"])
async def test_retries_then_succeeds(
    proxy: HttpFaultProxy, tables: tuple[str, str], kind: type[FastTransport], mode: str
) -> None:
    t = _via(proxy, kind, max_attempts=4)
    try:
        proxy.fail(mode, 3)
        await asyncio.wait_for(t.put_item(tables[0], {"id": {"S": f"retry-{mode}"}}), CAP)
        assert proxy.requests == 4
        proxy.fail(mode, 2)
        got = await asyncio.wait_for(
            t.get_item(tables[0], {"id": {"S": f"retry-{mode}"}}, consistent=True), CAP
        )
        assert got == {"id": {"S": f"retry-{mode}"}}
        assert proxy.requests == 3
    finally:
        await t.close()


@pytest.mark.parametrize("mode", ["throttle", "500"])
async def test_gives_up_after_max_attempts(
    proxy: HttpFaultProxy, tables: tuple[str, str], kind: type[FastTransport], mode: str
) -> None:
    t = _via(proxy, kind, max_attempts=3)
    try:
        proxy.fail(mode, 10)
        expected = "ThrottlingException" if mode == "throttle" else "500"
        with pytest.raises(StoreError, match=expected):
            await asyncio.wait_for(t.get_item(tables[0], {"id": {"S": "x"}}, consistent=True), CAP)
        assert proxy.requests == 3
    finally:
        await t.close()


async def test_condition_and_validation_errors_are_not_retried(
    proxy: HttpFaultProxy, tables: tuple[str, str], kind: type[FastTransport]
) -> None:
    t = _via(proxy, kind, max_attempts=5)
    try:
        key = {"id": {"S": "no-retry"}}
        await t.put_item(tables[0], key)
        proxy.fail("forward", 0)
        with pytest.raises(ConditionFailed):
            await asyncio.wait_for(
                t.put_item(tables[0], key, condition="attribute_not_exists(id)"), CAP
            )
        assert proxy.requests == 1
        proxy.fail("forward", 0)
        with pytest.raises(StoreError, match="ValidationException"):
            await asyncio.wait_for(t.put_item(tables[0], {"wrong": {"S": "x"}}), CAP)
        assert proxy.requests == 1
    finally:
        await t.close()


async def test_read_timeout_is_retried_then_gives_up(
    proxy: HttpFaultProxy, tables: tuple[str, str], kind: type[FastTransport]
) -> None:
    t = _via(proxy, kind, max_attempts=2, read_timeout=0.3, connect_timeout=1.0)
    try:
        proxy.fail("stall", 1)  # a read is retried even though it may have reached the server
        await asyncio.wait_for(t.get_item(tables[0], {"id": {"S": "s"}}, consistent=True), CAP)
        assert proxy.requests == 2
        proxy.fail("stall", 10)
        with pytest.raises(StoreError, match="Timeout"):
            await asyncio.wait_for(
                t.get_item(tables[0], {"id": {"S": "stall"}}, consistent=True), CAP
            )
        assert proxy.requests == 2
    finally:
        await t.close()


async def test_connection_refused_is_store_error(kind: type[FastTransport]) -> None:
    t = kind(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name=REGION,
        credentials_provider=StaticCredentials(),
        max_attempts=2,
        backoff_base=0.001,
        connect_timeout=1.0,
    )
    try:
        with pytest.raises(StoreError, match="after 2 attempt"):
            await asyncio.wait_for(t.get_item("t", {"id": {"S": "x"}}, consistent=True), CAP)
    finally:
        await t.close()


async def test_wire_does_not_retry_a_write_that_may_have_arrived(
    proxy: HttpFaultProxy, tables: tuple[str, str]
) -> None:
    """Until writes carry a token that recognises their own earlier application, a write whose
    connection failed after it was written is not sent again (aiohttp's path retries it, as
    botocore does)."""
    t = _via(proxy, WireTransport, max_attempts=3, read_timeout=0.3, connect_timeout=1.0)
    try:
        proxy.fail("stall", 1)
        with pytest.raises(StoreError, match="not retried"):
            await asyncio.wait_for(t.put_item(tables[0], {"id": {"S": "once"}}), CAP)
        assert proxy.requests == 1
    finally:
        await t.close()
