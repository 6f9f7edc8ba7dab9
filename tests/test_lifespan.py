"""The store's own client follows the ASGI lifespan: opened at startup, closed at shutdown.

Every lifespan message passes through the middleware unchanged (failures included); where no
lifespan is sent the client opens on first use (once, even under concurrent first requests) and
``await store.close()`` closes it; a real uvicorn shuts down without "Unclosed client session".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import AioSession
from support import SECRET, client_for, dynamo_store, free_port

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware, get_session

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


# -- helpers ------------------------------------------------------------------------------------


class FakeServer:
    """The server side of one lifespan: feeds messages in, records what the app sends out."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.arrived.set()

    async def wait_for(self, kind: str) -> dict[str, Any]:
        while True:
            for message in self.sent:
                if message["type"] == kind:
                    return message
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


@pytest.fixture
def created_clients(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts aiobotocore clients created (the real ones still do the work)."""
    created: list[str] = []
    original = AioSession.create_client

    def counting(self: AioSession, service_name: str, *args: Any, **kwargs: Any) -> Any:
        created.append(service_name)
        return original(self, service_name, *args, **kwargs)

    monkeypatch.setattr(AioSession, "create_client", counting)
    return created


@pytest.fixture
async def table(dynamodb_server: Any, table_name: str) -> str:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name):
        pass  # created; the tests' own stores open their own clients
    return table_name


def owning_store(endpoint: str, table: str) -> DynamoDBStore:
    return DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table), endpoint_url=endpoint, region_name=REGION
    )


async def counter_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"  # knows nothing of lifespan
    session = get_session(scope)
    session["n"] = session.get("n", 0) + 1
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(session["n"]).encode()})


# -- lifespan through the middleware ------------------------------------------------------------


async def test_messages_pass_through_unchanged_and_the_client_lives_with_the_app(
    dynamodb_server: Any, table: str, created_clients: list[str]
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)
    seen: list[Any] = []
    outgoing = {
        "startup": {"type": "lifespan.startup.complete", "x-extra": [1]},
        "shutdown": {"type": "lifespan.shutdown.complete", "x-extra": [2]},
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await counter_app(scope, receive, send)
            return
        seen.append(scope)
        while True:
            message = await receive()
            seen.append(message)
            seen.append(store.client is not None)  # open while the app handles the message
            if message["type"] == "lifespan.startup":
                await send(outgoing["startup"])
            else:
                await send(outgoing["shutdown"])
                return

    middleware = SessionMiddleware(app, store=store, secret_keys=SECRET)
    server = FakeServer()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    startup = {"type": "lifespan.startup", "x-extra": "in"}
    shutdown = {"type": "lifespan.shutdown"}
    await server.inbox.put(startup)
    task = asyncio.create_task(middleware(scope, server.receive, server.send))
    assert await server.wait_for("lifespan.startup.complete") is outgoing["startup"]
    assert created_clients == ["dynamodb"]
    client = store.client

    async with client_for(middleware) as http:  # httpx's ASGI transport: no lifespan
        replies = await asyncio.gather(*(http.get("/") for _ in range(10)))
    assert [r.status_code for r in replies] == [200] * 10
    assert store.client is client
    assert created_clients == ["dynamodb"]  # requests used the client opened at startup

    await server.inbox.put(shutdown)
    await asyncio.wait_for(task, 10)
    assert server.sent == [outgoing["startup"], outgoing["shutdown"]]
    assert server.sent[1] is outgoing["shutdown"]
    assert seen[0] is scope
    assert seen[1] is startup and seen[3] is shutdown  # the very objects, unchanged
    assert startup == {"type": "lifespan.startup", "x-extra": "in"}
    assert seen[2] is True  # already open when the app saw lifespan.startup
    assert store.client is None  # closed at shutdown


async def test_shutdown_failure_passes_through_and_the_client_is_closed(
    dynamodb_server: Any, table: str
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)
    failed = {"type": "lifespan.shutdown.failed", "message": "cleanup broke"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send(failed)

    server = FakeServer()
    await server.inbox.put({"type": "lifespan.startup"})
    await server.inbox.put({"type": "lifespan.shutdown"})
    await SessionMiddleware(app, store=store, secret_keys=SECRET)(
        {"type": "lifespan"}, server.receive, server.send
    )
    assert server.sent[-1] is failed
    assert store.client is None


def _starlette_failing(store: Any) -> Any:
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("database migration failed")
        yield

    return SessionMiddleware(Starlette(lifespan=lifespan), store=store, secret_keys=SECRET)


def _litestar_failing(store: Any) -> Any:
    from litestar import Litestar

    def boom() -> None:
        raise RuntimeError("database migration failed")

    return SessionMiddleware(Litestar([], on_startup=[boom]), store=store, secret_keys=SECRET)


def _quart_failing(store: Any) -> Any:
    from quart import Quart

    from asgi_dynamo_session.quart import install

    app = Quart(__name__)
    install(app, store=store, secret_keys=SECRET)

    @app.before_serving
    async def boom() -> None:
        raise RuntimeError("database migration failed")

    return app


def _raw_failing(store: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database migration failed"})

    return SessionMiddleware(app, store=store, secret_keys=SECRET)


@pytest.mark.parametrize(
    "make",
    [_starlette_failing, _litestar_failing, _quart_failing, _raw_failing],
    ids=["starlette", "litestar", "quart", "raw"],
)
async def test_app_startup_failure_reaches_the_server(
    make: Any, dynamodb_server: Any, table: str
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)
    server = FakeServer()
    await server.inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(make(store)({"type": "lifespan"}, server.receive, server.send))
    failed = await server.wait_for("lifespan.startup.failed")
    assert "database migration failed" in failed.get("message", "")
    assert [m["type"] for m in server.sent] == ["lifespan.startup.failed"]
    # Some frameworks re-raise (it must be the app's error), Quart waits for the server to go.
    done, _ = await asyncio.wait([task], timeout=2)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception as exc:
            assert "database migration failed" in repr(exc)
    assert store.client is None  # nothing left open


@pytest.mark.parametrize("style", ["asserts-http", "returns"])
async def test_app_without_lifespan_support_still_opens_and_closes_the_store(
    style: str, dynamodb_server: Any, table: str
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if style == "returns" and scope["type"] != "http":
            return
        await counter_app(scope, receive, send)

    server = FakeServer()
    await server.inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(
        SessionMiddleware(app, store=store, secret_keys=SECRET)(
            {"type": "lifespan"}, server.receive, server.send
        )
    )
    await server.wait_for("lifespan.startup.complete")
    assert store.client is not None
    await server.inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 10)
    assert [m["type"] for m in server.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert store.client is None


async def test_an_app_error_after_reading_lifespan_propagates(
    dynamodb_server: Any, table: str
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise ValueError("broken lifespan handler")

    server = FakeServer()
    await server.inbox.put({"type": "lifespan.startup"})
    with pytest.raises(ValueError, match="broken lifespan handler"):
        await SessionMiddleware(app, store=store, secret_keys=SECRET)(
            {"type": "lifespan"}, server.receive, server.send
        )
    assert server.sent == []  # the middleware does not answer for an app that speaks lifespan
    assert store.client is None


# -- no lifespan: first use, and closing by hand ------------------------------------------------


async def test_first_use_opens_one_client_even_under_concurrency(
    dynamodb_server: Any, table: str, created_clients: list[str]
) -> None:
    store = owning_store(dynamodb_server.endpoint_url, table)
    app = SessionMiddleware(counter_app, store=store, secret_keys=SECRET)
    async with client_for(app) as http:
        replies = await asyncio.gather(*(http.get("/") for _ in range(25)))
        assert [r.text for r in replies] == ["1"] * 25
        assert created_clients == ["dynamodb"]
        await store.close()
        assert store.client is None
        again = await http.get("/", headers={"cookie": replies[0].headers["set-cookie"]})
        assert again.text == "2"  # reopened on use after close()
        assert created_clients == ["dynamodb", "dynamodb"]
        await store.close()
    assert store.client is None
    # (No leak warning at exit: see the uvicorn tests below, which can observe one.)


# -- a real uvicorn, in a subprocess ------------------------------------------------------------


def _env(endpoint: str, table: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DYNAMODB_ENDPOINT_URL=endpoint,
        SESSION_TABLE=table,
        SESSION_SECRET=SECRET,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def _uvicorn(target: str, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-W", "always::ResourceWarning", "-m", "uvicorn", target),
            *("--host", "127.0.0.1", "--port", str(port), *extra),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_until_up(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/whoami", timeout=2)
            return
        time.sleep(0.1)
    raise AssertionError("uvicorn did not answer")


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"uvicorn did not stop:\n{output}") from None
    return output


def _visit(port: int, times: int) -> list[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        texts = []
        for _ in range(times):
            reply = client.get("/")
            assert reply.status_code == 200, reply.text
            texts.append(reply.text)
            # Our own jar: the examples' cookies are Secure, which httpx keeps only for https.
            cookie = reply.headers.get("set-cookie")
            if cookie:
                client.headers["cookie"] = cookie.split(";", 1)[0]
        return texts


@pytest.mark.parametrize(
    "app", ["counter", "starlette_app", "fastapi_app", "litestar_app", "quart_app", "raw_asgi"]
)
async def test_uvicorn_shuts_down_without_unclosed_warnings(
    app: str, dynamodb_server: Any, table: str
) -> None:
    port = free_port()
    proc = _uvicorn(
        f"examples.{app}:create_app", port, _env(dynamodb_server.endpoint_url, table), "--factory"
    )
    try:
        await asyncio.to_thread(_wait_until_up, proc, port)
        texts = await asyncio.to_thread(_visit, port, 3)
    finally:
        output = await asyncio.to_thread(_stop, proc)
    assert proc.returncode == 0, output
    counts = [int(re.search(r"Current count: (\d+)", text).group(1)) for text in texts]  # type: ignore[union-attr]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2], texts
    assert "Application startup complete" in output, output
    assert "Application shutdown complete" in output, output
    assert "Unclosed" not in output, output
    assert "ResourceWarning" not in output, output
    assert "Traceback" not in output, output


async def test_uvicorn_without_lifespan_closes_at_loop_shutdown(
    dynamodb_server: Any, table: str
) -> None:
    """With the lifespan off the store still closes its connections as the loop shuts down."""
    port = free_port()
    env = _env(dynamodb_server.endpoint_url, table)
    proc = _uvicorn("examples.raw_asgi:create_app", port, env, "--factory", "--lifespan", "off")
    try:
        await asyncio.to_thread(_wait_until_up, proc, port)
        await asyncio.to_thread(_visit, port, 1)
    finally:
        output = await asyncio.to_thread(_stop, proc)
    assert "Unclosed" not in output and "Traceback" not in output, output
    assert '"GET / HTTP/1.1" 200' in output, output


async def test_uvicorn_reports_an_app_startup_failure(
    dynamodb_server: Any, table: str, tmp_path: Path
) -> None:
    (tmp_path / "failing_app.py").write_text(
        textwrap.dedent(
            """
            import contextlib, os
            from starlette.applications import Starlette
            from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware

            @contextlib.asynccontextmanager
            async def lifespan(app):
                raise RuntimeError("database migration failed")
                yield

            store = DynamoDBStore(
                props=DynamoDBStoreProps(table_name=os.environ["SESSION_TABLE"]),
                endpoint_url=os.environ["DYNAMODB_ENDPOINT_URL"],
            )
            app = SessionMiddleware(
                Starlette(lifespan=lifespan), store=store, secret_keys=os.environ["SESSION_SECRET"]
            )
            """
        )
    )
    port = free_port()
    env = _env(dynamodb_server.endpoint_url, table)
    proc = _uvicorn("failing_app:app", port, env, "--app-dir", str(tmp_path), "--lifespan", "on")
    try:
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            _stop(proc)
    assert proc.returncode != 0, output
    assert "database migration failed" in output, output
    assert "Application startup failed" in output, output
    assert "Unclosed" not in output, output
