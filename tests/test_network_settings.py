"""Our transports honour the network settings aiobotocore honours (issue 9.2), each case run on
every transport side by side: a private CA (``AWS_CA_BUNDLE``, the client's ``verify`` path or
``False``), client certificates, ``HTTP_PROXY`` with ``NO_PROXY``, the client config's
``proxies``, and ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL``. Servers are loopback: a
TLS terminator with a self-signed CA in front of the test server, and a counting HTTP proxy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from netfault import ForwardProxy
from support import LOGGER, SECRET, TRANSPORTS, client_for

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware
from asgi_dynamo_session._fast import FastTransport
from asgi_dynamo_session._transport import AioBotocoreTransport
from benchmarks._tls import Certs, TlsTerminator, make_certs

REGION = "us-east-1"
#: The transport class each choice ends up with where every setting can be honoured.
EXPECTED = {
    "fast": "WireTransport",
    "aiohttp": "FastTransport",
    "aiobotocore": "AioBotocoreTransport",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def _upstream(server: Any) -> tuple[str, int]:
    host, _, port = server.endpoint_url.removeprefix("http://").rpartition(":")
    return host, int(port)


@pytest.fixture
async def tls(dynamodb_server: Any, certs: Certs) -> AsyncIterator[TlsTerminator]:
    terminator = TlsTerminator(*_upstream(dynamodb_server), certs)
    await terminator.start()
    yield terminator
    await terminator.stop()


@pytest.fixture
async def mtls(dynamodb_server: Any, certs: Certs) -> AsyncIterator[TlsTerminator]:
    terminator = TlsTerminator(*_upstream(dynamodb_server), certs, require_client_cert=True)
    await terminator.start()
    yield terminator
    await terminator.stop()


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    p = ForwardProxy()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def table(dynamodb_server: Any, table_name: str) -> str:
    async with DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table_name),
        endpoint_url=dynamodb_server.endpoint_url,
        region_name=REGION,
    ) as store:
        await store.create_table(enable_ttl=False)
    return table_name


async def _counts(store: DynamoDBStore, n: int = 3) -> list[Any]:
    """Counter requests through the middleware: the numbers, or the status when not 200."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        session["n"] = session.get("n", 0) + 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(session["n"]).encode()})

    wrapped = SessionMiddleware(app, store=store, secret_keys=SECRET)
    seen: list[Any] = []
    async with client_for(wrapped) as client:
        for _ in range(n):
            response = await client.get("/")
            seen.append(int(response.text) if response.status_code == 200 else response.status_code)
    return seen


def _store(table: str, transport: str, **options: Any) -> DynamoDBStore:
    options.setdefault("region_name", REGION)
    return DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table),
        transport=transport,  # type: ignore[arg-type]
        connect_timeout=2.0,
        read_timeout=2.0,
        max_attempts=1,
        **options,
    )


async def _kind(store: DynamoDBStore) -> str:
    return type(await store._transport()).__name__


# -- TLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ca_bundle_from_the_environment(
    transport: str, tls: TlsTerminator, certs: Certs, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certs.ca))
    async with _store(table, transport, endpoint_url=tls.endpoint_url) as store:
        assert await _counts(store) == [1, 2, 3]
        assert await _kind(store) == EXPECTED[transport]
    assert tls.connections >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_the_ca_verification_fails(
    transport: str, tls: TlsTerminator, table: str
) -> None:
    async with _store(table, transport, endpoint_url=tls.endpoint_url) as store:
        assert await _counts(store, 1) == [503]  # verification is on: the CA is unknown


@pytest.mark.parametrize("transport", ["fast", "aiohttp", "aiobotocore"])
@pytest.mark.parametrize("verify", ["ca", False])
async def test_the_clients_verify(
    transport: str, verify: Any, tls: TlsTerminator, certs: Certs, table: str
) -> None:
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=tls.endpoint_url,
        region_name=REGION,
        verify=str(certs.ca) if verify == "ca" else False,
    ) as client:
        store = DynamoDBStore(client, DynamoDBStoreProps(table_name=table), transport=transport)  # type: ignore[arg-type]
        async with store:
            assert await _counts(store) == [1, 2, 3]
            assert await _kind(store) == EXPECTED[transport]


@pytest.mark.parametrize("transport", ["fast", "aiohttp", "aiobotocore"])
async def test_client_certificate(
    transport: str, mtls: TlsTerminator, certs: Certs, table: str
) -> None:
    config = AioConfig(client_cert=(str(certs.client_cert), str(certs.client_key)))
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=mtls.endpoint_url,
        region_name=REGION,
        verify=str(certs.ca),
        config=config,
    ) as client:
        store = DynamoDBStore(client, DynamoDBStoreProps(table_name=table), transport=transport)  # type: ignore[arg-type]
        async with store:
            assert await _counts(store) == [1, 2, 3]
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=mtls.endpoint_url,
        region_name=REGION,
        verify=str(certs.ca),
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as client:
        store = DynamoDBStore(client, DynamoDBStoreProps(table_name=table), transport=transport)  # type: ignore[arg-type]
        async with store:
            assert await _counts(store, 1) == [503]  # no certificate: the terminator refuses


# -- proxies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_proxy_from_the_environment(
    transport: str,
    proxy: ForwardProxy,
    dynamodb_server: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with _store(table, transport, endpoint_url=dynamodb_server.endpoint_url) as store:
        assert await _counts(store) == [1, 2, 3]
        kind = await _kind(store)
    # one create and two load+save pairs, all through the proxy, whatever the transport
    assert proxy.requests == 5
    assert set(proxy.targets) == {dynamodb_server.endpoint_url.removeprefix("http://")}
    if transport == "fast":  # the httptools transport has no proxy support: aiohttp's has
        assert kind == "FastTransport"
        assert "an HTTP proxy is configured" in caplog.text
    else:
        assert kind == EXPECTED[transport]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_proxy_bypasses_it(
    transport: str,
    proxy: ForwardProxy,
    dynamodb_server: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with _store(table, transport, endpoint_url=dynamodb_server.endpoint_url) as store:
        assert await _counts(store) == [1, 2, 3]
        assert await _kind(store) == EXPECTED[transport]
    assert proxy.requests == 0


@pytest.mark.parametrize("transport", ["fast", "aiohttp", "aiobotocore"])
async def test_proxies_in_the_client_config(
    transport: str, proxy: ForwardProxy, dynamodb_server: Any, table: str
) -> None:
    async with get_session().create_client(
        "dynamodb",
        endpoint_url=dynamodb_server.endpoint_url,
        region_name=REGION,
        config=AioConfig(proxies={"http": proxy.url}),
    ) as client:
        store = DynamoDBStore(client, DynamoDBStoreProps(table_name=table), transport=transport)  # type: ignore[arg-type]
        async with store:
            assert await _counts(store) == [1, 2, 3]
    assert proxy.requests == 5


@pytest.mark.parametrize("transport", ["aiohttp", "aiobotocore"])
async def test_https_through_a_proxy_tunnel(
    transport: str,
    proxy: ForwardProxy,
    tls: TlsTerminator,
    certs: Certs,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certs.ca))
    async with _store(table, transport, endpoint_url=tls.endpoint_url) as store:
        assert await _counts(store) == [1, 2, 3]
    assert proxy.tunnels >= 1
    assert set(proxy.targets) == {f"127.0.0.1:{tls.port}"}


async def test_auto_with_an_https_proxy_url_uses_aiobotocore(
    tls: TlsTerminator,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setenv("HTTPS_PROXY", "https://127.0.0.1:9")  # never reached: only inspected
    store = _store(table, "auto", endpoint_url=tls.endpoint_url)
    async with store:
        assert isinstance(await store._transport(), AioBotocoreTransport)
        await store.close()
        await store.open()  # a second open on the same store does not log it again
    messages = [r.getMessage() for r in caplog.records if "uses aiobotocore" in r.getMessage()]
    assert messages == [
        "DynamoDBStore uses aiobotocore: a proxy reached over https is honoured by aiobotocore only"
    ]


# -- endpoint settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_endpoint_from_the_environment(
    transport: str,
    variable: str,
    proxy: ForwardProxy,
    dynamodb_server: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The endpoint is only in the environment; the proxy's target list shows where calls went.
    monkeypatch.setenv(variable, dynamodb_server.endpoint_url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with _store(table, transport) as store:
        assert await _counts(store) == [1, 2, 3]
        wire = await store._transport()
        if isinstance(wire, FastTransport):
            assert wire.endpoint_url == dynamodb_server.endpoint_url
    assert set(proxy.targets) == {dynamodb_server.endpoint_url.removeprefix("http://")}


def test_certs_are_files(certs: Certs) -> None:
    assert all(Path(p).read_bytes().startswith(b"-----BEGIN") for p in vars(certs).values())


def test_tls_under_uvloop(tls_endpoint_for_uvloop: tuple[str, Certs, str]) -> None:
    """uvloop's TLS transport (not an asyncio.Transport subclass) carries the fast transport."""
    uvloop = pytest.importorskip("uvloop")
    endpoint, _, table = tls_endpoint_for_uvloop

    async def run() -> list[Any]:
        async with _store(table, "fast", endpoint_url=endpoint) as store:
            assert await _kind(store) == "WireTransport"
            return await _counts(store)

    assert uvloop.run(run()) == [1, 2, 3]


@pytest.fixture
def tls_endpoint_for_uvloop(
    dynamodb_server: Any, certs: Certs, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Certs, str]]:
    """A TLS terminator process (the test's own loop is not uvloop) and a table."""
    import socket
    import subprocess
    import sys
    import time

    from support import free_port

    async def create() -> None:
        async with _store(
            table_name, "aiobotocore", endpoint_url=dynamodb_server.endpoint_url
        ) as s:
            await s.create_table(enable_ttl=False)

    asyncio.run(create())
    port = free_port()
    upstream = dynamodb_server.endpoint_url.removeprefix("http://")
    command = [sys.executable, "-m", "benchmarks._tls", "--port", str(port), "--upstream", upstream]
    command += [
        "--ca",
        str(certs.ca),
        "--cert",
        str(certs.server_cert),
        "--key",
        str(certs.server_key),
    ]
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(certs.ca))
        yield f"https://127.0.0.1:{port}", certs, table_name
    finally:
        proc.terminate()
        proc.wait(10)
