"""Shared fixtures: a real DynamoDB-compatible server for the whole test session.

Server selection (first match wins):

* ``DYNAMODB_ENDPOINT_URL`` set -> use that endpoint as is (kind ``"external"``); its TTL support
  is assumed unless ``DYNAMODB_SUPPORTS_TTL=0``.
* ``DYNAMO_TEST_SERVER=moto`` (the default) -> moto (``moto_atomic.py``: a request at a time)
  on a free loopback port.
* ``DYNAMO_TEST_SERVER=dynalite`` -> dynalite from ``$DYNALITE_BIN``, else
  ``.node/node_modules/.bin/dynalite`` (``make node``), else ``npx --yes dynalite@^3``.

Fake AWS credentials are forced at import time so that no test can reach real AWS. A server
started here runs in a session of its own and is stopped by pid at the end of the session, also
when pytest is stopped by Ctrl-C, SIGTERM or SIGHUP (both raise KeyboardInterrupt here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
from aiobotocore.session import AioSession, get_session

# Importable as `netfault` however pytest imports this directory (with or without __init__.py).
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
# `examples._children` (how servers are started and stopped) however pytest is started.
if str(Path(_TESTS_DIR).parent) not in sys.path:
    sys.path.append(str(Path(_TESTS_DIR).parent))
from netfault import FaultProxy  # noqa: E402
from support import LOGGER, TRANSPORTS, Clock, CountingStore, dynamo_store  # noqa: E402

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps  # noqa: E402
from examples import _children  # noqa: E402

# Never let a test pick up real credentials or profiles: botocore reads these when a session
# resolves credentials, which is always after conftest has been imported.
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_REGION"] = "us-east-1"
# No ~/.aws files, no instance-metadata lookups.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
STARTUP_TIMEOUT = float(os.environ.get("DYNAMO_TEST_STARTUP_TIMEOUT", "60"))
TTL_SKIP_REASON = "dynalite lacks UpdateTimeToLive"


def _free_port() -> int:
    # Bound on all interfaces: dynalite 3 listens on every interface, moto on 127.0.0.1 only.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _answers_http(port: int) -> bool:
    """True once something on the port answers an HTTP request with an HTTP status line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def _dynalite_command() -> list[str]:
    explicit = os.environ.get("DYNALITE_BIN")
    if explicit:
        return [explicit]
    local = ROOT / ".node" / "node_modules" / ".bin" / "dynalite"
    if local.exists():
        return [str(local)]
    npx = shutil.which("npx")
    if npx is None:
        raise RuntimeError("dynalite not found: run `make node` (needs Node.js and npm)")
    return [npx, "--yes", "dynalite@^3"]


class DynamoServer:
    """A DynamoDB-compatible server for the test session.

    ``stop()`` / ``start()`` kill and restart the server on the same port (failure injection);
    a restarted moto or dynalite starts empty.  On an external endpoint both skip the test.
    """

    def __init__(self, kind: str, port: int | None = None, endpoint_url: str | None = None):
        self.kind = kind
        self.port = port
        if endpoint_url is None:
            assert port is not None
            endpoint_url = f"http://127.0.0.1:{port}"
        self.endpoint_url: str = endpoint_url
        self.supports_ttl: bool = kind != "dynalite"
        if kind == "external":
            self.supports_ttl = os.environ.get("DYNAMODB_SUPPORTS_TTL", "1") not in ("0", "false")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"DynamoServer(kind={self.kind!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        port = str(self.port)
        if self.kind == "moto":
            # one request at a time, atomic like DynamoDB (see moto_atomic.py)
            return [
                sys.executable,
                str(Path(__file__).with_name("moto_atomic.py")),
                "127.0.0.1",
                port,
            ]
        if self.kind == "dynalite":
            ms = ["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
            return [*_dynalite_command(), "--host", "127.0.0.1", "--port", port, *ms]
        raise AssertionError(self.kind)

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def start(self) -> None:
        """(Re)start the server on its port and wait until it answers HTTP."""
        if self.kind == "external":
            pytest.skip("cannot start/stop an external DYNAMODB_ENDPOINT_URL")
        if self.running:
            return
        assert self.port is not None
        cmd = self._command()
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile(prefix=f"{self.kind}-")  # noqa: SIM115 (closed in close())
        # Its own session and process group: stopping it stops npx's children too.
        proc = self._proc = _children.start(cmd, "make test", output=self._log, cwd=ROOT)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not _answers_http(self.port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.kind} exited with code {proc.returncode} before answering on "
                        f"port {self.port}\ncommand: {cmd}\noutput:\n{self._output()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.kind} did not answer HTTP on port {self.port} within "
                        f"{STARTUP_TIMEOUT:.0f}s\ncommand: {cmd}\noutput:\n{self._output()}"
                    )
                time.sleep(0.1)
        except BaseException:  # a stop signal too: nothing started here is left running
            self._kill()
            raise

    def stop(self) -> None:
        """Kill the server (its whole process group); the port then refuses connections."""
        if self.kind == "external":
            pytest.skip("cannot start/stop an external DYNAMODB_ENDPOINT_URL")
        self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _children.stop(proc)

    def close(self) -> None:
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None


def _make_server() -> DynamoServer:
    external = os.environ.get("DYNAMODB_ENDPOINT_URL")
    if external:
        return DynamoServer("external", endpoint_url=external)
    kind = os.environ.get("DYNAMO_TEST_SERVER", "moto").strip().lower() or "moto"
    if kind not in ("moto", "dynalite"):
        raise pytest.UsageError(f"DYNAMO_TEST_SERVER must be 'moto' or 'dynalite', not {kind!r}")
    return DynamoServer(kind, port=_free_port())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"requires_ttl: skip unless the server supports UpdateTimeToLive ({TTL_SKIP_REASON})",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("DYNAMODB_ENDPOINT_URL"):
        return f"dynamodb server: external {os.environ['DYNAMODB_ENDPOINT_URL']}"
    return f"dynamodb server: {os.environ.get('DYNAMO_TEST_SERVER', 'moto')}"


@pytest.fixture(scope="session", autouse=True)
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the test run as Ctrl-C does, so that every fixture's clean-up
    (stopping the servers it started) runs; without this they would kill pytest outright."""
    with _children.stop_on_signals((signal.SIGTERM, signal.SIGHUP)):
        yield


@pytest.fixture(scope="session")
def dynamodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoServer]:
    """The session's DynamoDB-compatible server: ``.endpoint_url``, ``.kind``, ``.supports_ttl``,
    ``.stop()``, ``.start()``.  A test that stops it must restart it (use try/finally).
    With ``DYNAMO_TEST_TLS=1`` it is reached over TLS (see `_tls_front`)."""
    server = _make_server()
    try:
        if server.kind != "external":
            server.start()
        with _tls_front(server, tmp_path_factory):
            yield server
    finally:
        server.close()


@contextlib.contextmanager
def _tls_front(server: DynamoServer, tmp: pytest.TempPathFactory) -> Iterator[None]:
    """With ``DYNAMO_TEST_TLS=1``: a loopback TLS terminator process in front of the server,
    its self-signed CA trusted through ``AWS_CA_BUNDLE``, ``server.endpoint_url`` on https."""
    if os.environ.get("DYNAMO_TEST_TLS") != "1" or server.kind == "external":
        yield
        return
    from benchmarks._tls import make_certs

    certs = make_certs(tmp.mktemp("tls"))
    port, upstream = _free_port(), urlsplit(server.endpoint_url).netloc
    args = ["--port", str(port), "--upstream", upstream, "--ca", str(certs.ca)]
    args += ["--cert", str(certs.server_cert), "--key", str(certs.server_key)]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._tls", *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the TLS terminator did not start")
            time.sleep(0.05)
        os.environ["AWS_CA_BUNDLE"] = str(certs.ca)
        server.endpoint_url = f"https://127.0.0.1:{port}"
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(autouse=True)
def _requires_ttl_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("requires_ttl") is not None:
        request.getfixturevalue("requires_ttl")


@pytest.fixture
def requires_ttl(dynamodb_server: DynamoServer) -> None:
    """Skip the test when the server lacks UpdateTimeToLive (as dynalite does).

    Use as ``@pytest.mark.requires_ttl`` or as a fixture argument."""
    if not dynamodb_server.supports_ttl:
        pytest.skip(TTL_SKIP_REASON)


@pytest.fixture
def aio_session() -> AioSession:
    return get_session()


@pytest.fixture
async def dynamodb_client(
    aio_session: AioSession, dynamodb_server: DynamoServer
) -> AsyncIterator[Any]:
    """An aiobotocore DynamoDB client on the session server; closed after the test."""
    async with aio_session.create_client(
        "dynamodb", endpoint_url=dynamodb_server.endpoint_url, region_name=REGION
    ) as client:
        yield client


@pytest.fixture
def table_name() -> str:
    """A fresh table name per test; the test (or the store's create_table()) creates it."""
    return f"t_{uuid4().hex[:12]}"


@pytest.fixture
async def fault_proxy(dynamodb_server: DynamoServer) -> AsyncIterator[FaultProxy]:
    """A started `FaultProxy` in front of the session server (``.endpoint_url`` to use)."""
    url = urlsplit(dynamodb_server.endpoint_url)
    if url.scheme != "http" or url.hostname is None:
        pytest.skip(f"fault injection needs a plain-http endpoint, not {url.geturl()}")
    proxy = FaultProxy(url.hostname, url.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


# -- stores and what they share ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def raw(dynamodb_server: DynamoServer) -> AsyncIterator[Any]:
    """A plain aiobotocore client shared by the module: `dstore` borrows it, read-back uses it."""
    async with get_session().create_client(
        "dynamodb", endpoint_url=dynamodb_server.endpoint_url, region_name=REGION
    ) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    """The test's injectable clock, at `support.T0` until the test moves it."""
    return Clock()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each data-plane transport in turn (``DYNAMO_TEST_TRANSPORTS``)."""
    return str(request.param)


@pytest.fixture
async def dstore(raw: Any, table_name: str, clock: Clock) -> AsyncIterator[DynamoDBStore]:
    """A DynamoDBStore on the module's `raw` client and the test's `clock`, on a fresh table
    that is deleted afterwards."""
    store = DynamoDBStore(raw, DynamoDBStoreProps(table_name=table_name), clock=clock)
    await store.create_table()
    yield store
    await store.close()
    await raw.delete_table(TableName=table_name)


@pytest.fixture
def counting_store(dstore: DynamoDBStore) -> CountingStore:
    """`dstore`, counting each store call by name."""
    return CountingStore(dstore)


@pytest.fixture
async def store(dynamodb_server: DynamoServer, table_name: str) -> AsyncIterator[DynamoDBStore]:
    """A DynamoDBStore owning its client (default transport, real time) on a fresh table.

    Modules that run their stores on each transport or on a `clock` override it."""
    async with dynamo_store(dynamodb_server.endpoint_url, table_name) as store:
        yield store


@pytest.fixture
def library_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the library's INFO records too (``pytestmark = usefixtures("library_logs")``)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
