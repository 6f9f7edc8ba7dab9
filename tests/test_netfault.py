"""The fault-injecting proxy (tests/netfault.py) and the server fixture, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from netfault import FaultProxy, parse_request

# No retries at all: note that botocore's retries={"max_attempts": 1} means ONE RETRY
# (total_max_attempts = max_attempts + 1), which would hide a one-shot fault.
FAST_FAIL = AioConfig(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=1
)

# aiobotocore reports a refused or reset connection as EndpointConnectionError, and a pooled
# keep-alive connection that the server closed (dynalite keeps them, moto does not) as
# ConnectionClosedError.
CONNECTION_FAILED = (EndpointConnectionError, ConnectionClosedError)


@contextlib.asynccontextmanager
async def fast_client(session: AioSession, endpoint_url: str) -> AsyncIterator[Any]:
    async with session.create_client(
        "dynamodb", endpoint_url=endpoint_url, region_name="us-east-1", config=FAST_FAIL
    ) as client:
        yield client


async def table_names(client: Any) -> list[str]:
    return list((await client.list_tables())["TableNames"])


async def has_table(client: Any, name: str) -> bool:
    """One DescribeTable call (a ListTables page of 100 may not reach it on a busy server)."""
    try:
        await client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


async def create_table(client: Any, name: str) -> None:
    await client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


# -- request framing (no server) ------------------------------------------------------------

REQ_A = (
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)
REQ_B = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
REQ_C = (
    b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n"
)


def _frame_all(stream: bytes, step: int) -> list[tuple[str, str, str | None, int]]:
    """Feed ``stream`` in ``step``-byte pieces, framing requests as the proxy does."""
    buf = bytearray()
    out = []
    for i in range(0, len(stream), step):
        buf += stream[i : i + step]
        while (parsed := parse_request(buf)) is not None:
            info, end = parsed
            assert info.size == end
            out.append((info.method, info.target, info.action, end))
            del buf[:end]
    assert not buf
    return out


@pytest.mark.parametrize("step", [1, 2, 7, 64, 10_000])
def test_parse_request_frames_keepalive_and_pipelined_streams(step: int) -> None:
    stream = REQ_A + REQ_B + REQ_C + REQ_A
    assert _frame_all(stream, step) == [
        ("POST", "/", "GetItem", len(REQ_A)),
        ("GET", "/health", None, len(REQ_B)),
        ("POST", "/up", None, len(REQ_C)),
        ("POST", "/", "GetItem", len(REQ_A)),
    ]


def test_parse_request_incomplete_and_garbage() -> None:
    assert parse_request(REQ_A[:-1]) is None
    assert parse_request(b"POST / HT") is None
    with pytest.raises(ValueError):
        parse_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n")  # a TLS hello
    with pytest.raises(ValueError):
        parse_request(b"POST / HTTP/1.1\r\nno colon here\r\n\r\n")


async def _keepalive_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server that keeps connections open and answers each request's body."""
    buf = bytearray()
    try:
        while data := await reader.read(65536):
            buf += data
            while (parsed := parse_request(buf)) is not None:
                _, end = parsed
                body = bytes(buf[:end]).partition(b"\r\n\r\n")[2]
                del buf[:end]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> bytes:
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    return await _http_response(reader)


async def _http_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def test_keepalive_and_pipelined_requests_on_one_connection() -> None:
    server = await asyncio.start_server(_keepalive_server, "127.0.0.1", 0)
    try:
        async with FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                assert await _http_exchange(reader, writer, b"one") == b"one"
                assert await _http_exchange(reader, writer, b"two") == b"two"
                # two pipelined requests in one segment, then one split across segments
                writer.write(
                    b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nA"
                    b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nB"
                    b"POST / HTTP/1.1\r\nContent-Len"
                )
                await writer.drain()
                await proxy.wait_for_requests(4)
                writer.write(b"gth: 1\r\n\r\nC")
                await proxy.wait_for_requests(5)
                assert [await _http_response(reader) for _ in "ABC"] == [b"A", b"B", b"C"]
                await proxy.reset_after(1)
                assert await _http_exchange(reader, writer, b"six") == b"six"
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                    await _http_exchange(reader, writer, b"seven")
            finally:
                writer.close()
            assert proxy.connections == 1
            assert (proxy.requests, proxy.forwarded, proxy.resets) == (7, 6, 1)
    finally:
        server.close()
        await server.wait_closed()


# -- against the real server ----------------------------------------------------------------


async def test_forward_counts_requests_on_keepalive_connection(
    fault_proxy: FaultProxy, aio_session: AioSession, table_name: str, dynamodb_server: Any
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await create_table(client, table_name)
        for _ in range(3):
            assert await has_table(client, table_name)
        await client.describe_table(TableName=table_name)
    assert fault_proxy.mode == "forward"
    if dynamodb_server.kind == "dynalite":
        assert fault_proxy.connections == 1  # one pooled keep-alive connection
    else:  # moto's werkzeug server answers "Connection: close" every time
        assert 1 <= fault_proxy.connections <= 5
    assert fault_proxy.requests == fault_proxy.forwarded == 5
    assert [r.action for r in fault_proxy.log] == ["CreateTable"] + ["DescribeTable"] * 4
    assert fault_proxy.resets == fault_proxy.stalls == 0


async def test_refuse_closes_the_listener_and_resets_open_connections(
    fault_proxy: FaultProxy, aio_session: AioSession
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await table_names(client)  # leaves a pooled connection open
        await fault_proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", fault_proxy.port or 0), timeout=1).close()
        for _ in range(2):
            with pytest.raises(CONNECTION_FAILED):
                await table_names(client)
        assert fault_proxy.requests == 1

        await fault_proxy.forward()  # listens again on the same port
        await table_names(client)
    assert fault_proxy.requests == fault_proxy.forwarded == 2


async def test_refuse_rst_accepts_then_resets(
    fault_proxy: FaultProxy, aio_session: AioSession
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.refuse(rst=True)
        with pytest.raises(CONNECTION_FAILED):
            await table_names(client)
        assert fault_proxy.connections >= 1
        assert fault_proxy.requests == 0

        await fault_proxy.forward()
        await table_names(client)
    assert fault_proxy.forwarded == 1


async def test_reset_next_request_never_reaches_the_server(
    fault_proxy: FaultProxy, aio_session: AioSession, dynamodb_client: Any, table_name: str
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await table_names(client)
        await fault_proxy.reset_next_request()
        with pytest.raises(CONNECTION_FAILED):
            await create_table(client, table_name)
        assert fault_proxy.mode == "forward"  # one-shot
        assert not await has_table(client, table_name)
    assert not await has_table(dynamodb_client, table_name)  # straight to the server
    assert fault_proxy.requests == 3
    assert fault_proxy.forwarded == 2
    assert fault_proxy.resets == 1
    assert fault_proxy.log[1].action == "CreateTable"


async def test_reset_every_request_until_forward(
    fault_proxy: FaultProxy, aio_session: AioSession
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.reset_next_request(times=None)
        for _ in range(3):
            with pytest.raises(CONNECTION_FAILED):
                await table_names(client)
        assert fault_proxy.mode == "reset"
        await fault_proxy.forward()
        await table_names(client)
    assert (fault_proxy.resets, fault_proxy.forwarded) == (3, 1)


async def test_reset_after_n_requests(fault_proxy: FaultProxy, aio_session: AioSession) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.reset_after(2)
        await table_names(client)
        await table_names(client)
        with pytest.raises(CONNECTION_FAILED):
            await table_names(client)
        await table_names(client)
    assert (fault_proxy.requests, fault_proxy.forwarded, fault_proxy.resets) == (4, 3, 1)


async def test_reset_after_bytes_truncates_the_request(
    fault_proxy: FaultProxy, aio_session: AioSession, dynamodb_client: Any, table_name: str
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await table_names(client)
        size = fault_proxy.log[0].size
        # Forward one more ListTables whole, then only the first 100 bytes of the CreateTable.
        await fault_proxy.reset_after(size + 100, unit="bytes")
        await table_names(client)
        with pytest.raises(CONNECTION_FAILED):
            await create_table(client, table_name)
        assert fault_proxy.log[-1].size > 100  # the cut fell inside the CreateTable
        await table_names(client)
    assert not await has_table(dynamodb_client, table_name)
    assert (fault_proxy.requests, fault_proxy.forwarded, fault_proxy.resets) == (4, 3, 1)


async def test_stall_longer_than_read_timeout(
    fault_proxy: FaultProxy, aio_session: AioSession
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.stall(3)
        start = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            await table_names(client)
        assert 0.8 < time.monotonic() - start < 2.5  # the client's read_timeout, not the stall
        assert fault_proxy.stalls == 1

        await fault_proxy.forward()
        await table_names(client)


async def test_stall_shorter_than_read_timeout_answers_late(
    fault_proxy: FaultProxy, aio_session: AioSession
) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.stall(0.4, times=1)
        start = time.monotonic()
        await table_names(client)
        assert time.monotonic() - start >= 0.4
        assert fault_proxy.mode == "forward"
        start = time.monotonic()
        await table_names(client)
        assert time.monotonic() - start < 0.4
    assert (fault_proxy.stalls, fault_proxy.forwarded) == (1, 2)


async def test_stall_then_reset(fault_proxy: FaultProxy, aio_session: AioSession) -> None:
    async with fast_client(aio_session, fault_proxy.endpoint_url) as client:
        await fault_proxy.stall(0.3, then="reset")
        start = time.monotonic()
        with pytest.raises(CONNECTION_FAILED):
            await table_names(client)
        assert 0.3 <= time.monotonic() - start < 1
    assert (fault_proxy.stalls, fault_proxy.resets, fault_proxy.forwarded) == (1, 1, 0)


async def test_proxy_stop_with_stalled_connections_is_clean(dynamodb_server: Any) -> None:
    port = int(dynamodb_server.endpoint_url.rsplit(":", 1)[1])
    async with FaultProxy("127.0.0.1", port) as proxy:
        await proxy.stall(30)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await proxy.wait_for_requests(1)
    # stop() reset the stalled connection rather than waiting 30s
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_upstream_down_resets_the_client(
    aio_session: AioSession, dynamodb_server: Any
) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with FaultProxy("127.0.0.1", dead_port) as proxy:
        async with fast_client(aio_session, proxy.endpoint_url) as client:
            with pytest.raises(CONNECTION_FAILED):
                await table_names(client)
        assert proxy.upstream_failures == 1


# -- the server fixture --------------------------------------------------------------------


async def test_server_stop_and_restart_on_the_same_port(
    dynamodb_server: Any, aio_session: AioSession
) -> None:
    url = dynamodb_server.endpoint_url
    async with fast_client(aio_session, url) as client:
        await table_names(client)
        dynamodb_server.stop()
        try:
            with pytest.raises(CONNECTION_FAILED):
                await table_names(client)
        finally:
            dynamodb_server.start()
        assert dynamodb_server.endpoint_url == url
        await table_names(client)


@pytest.mark.requires_ttl
async def test_requires_ttl_marker(
    dynamodb_server: Any, dynamodb_client: Any, table_name: str
) -> None:
    assert dynamodb_server.supports_ttl
    await create_table(dynamodb_client, table_name)
    await dynamodb_client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    desc = await dynamodb_client.describe_time_to_live(TableName=table_name)
    assert desc["TimeToLiveDescription"]["AttributeName"] == "expires"


def test_server_kind(dynamodb_server: Any) -> None:
    assert dynamodb_server.kind in ("moto", "dynalite", "external")
    if dynamodb_server.kind != "external":
        assert dynamodb_server.supports_ttl is (dynamodb_server.kind == "moto")
    assert dynamodb_server.endpoint_url.startswith("http")
