"""First run: a missing table (or one in another region) fails startup in words, not with 503s.

The store's `open()` (lifespan startup, ``async with store``, first use) describes the table until
it has been found; a missing one is logged with the table, region, endpoint and how to create it,
and the ASGI lifespan startup fails with those words. `open()` itself does not raise, so
``async with store: await store.create_table()`` works. At request time a
``ResourceNotFoundException`` is logged in the same words at most once a minute and answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import LOGGER, SECRET, call, dynamo_store, free_port, signed

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    SessionMiddleware,
    StoreError,
    _table_check,
    get_session,
)

ROOT = Path(__file__).resolve().parent.parent


def owning(endpoint: str, table: str, region: str = "us-east-1") -> DynamoDBStore:
    return DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table), endpoint_url=endpoint, region_name=region
    )


def assert_explains(text: str, table: str, region: str, endpoint: str) -> None:
    """The message names the table, region and endpoint and says how to create the table."""
    assert f"session table {table!r} not found in region {region} at {endpoint}" in text, text
    assert "await store.create_table()" in text, text
    assert (
        f"AWS_REGION={region} asgi-dynamo-session create-table --table {table} "
        f"--endpoint-url {endpoint}" in text
    ), text


async def counter(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    session = get_session(scope)
    session["n"] = session.get("n", 0) + 1
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(session["n"]).encode()})


async def lifespan_startup(app: Any) -> list[dict[str, Any]]:
    """Run an ASGI lifespan startup (then shutdown, if it started); the messages sent back."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({"type": "lifespan.shutdown"})

    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(app({"type": "lifespan", "state": {}}, inbox.get, send), 20)
    return sent


def _starlette(store: DynamoDBStore, started: list[bool]) -> Any:
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        started.append(True)
        yield

    return SessionMiddleware(Starlette(lifespan=lifespan), store=store, secret_keys=SECRET)


def _litestar(store: DynamoDBStore, started: list[bool]) -> Any:
    from litestar import Litestar

    return SessionMiddleware(
        Litestar([], on_startup=[lambda: started.append(True)]), store=store, secret_keys=SECRET
    )


def _raw(store: DynamoDBStore, started: list[bool]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def noting() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            started.append(True)
            return message

        await counter(scope, noting, send)

    return SessionMiddleware(app, store=store, secret_keys=SECRET)


def _ignores_lifespan(store: DynamoDBStore, started: list[bool]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    return SessionMiddleware(app, store=store, secret_keys=SECRET)


APPS = {
    "starlette": _starlette,
    "litestar": _litestar,
    "raw": _raw,
    "no-lifespan": _ignores_lifespan,
}


# -- startup ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(APPS))
async def test_startup_against_a_missing_table_fails_with_the_fix(
    kind: str, dynamodb_server: Any, table_name: str
) -> None:
    store = owning(dynamodb_server.endpoint_url, table_name)
    started: list[bool] = []
    sent = await lifespan_startup(APPS[kind](store, started))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert_explains(sent[0]["message"], table_name, "us-east-1", dynamodb_server.endpoint_url)
    assert started == []  # the app's own startup did not run
    assert store.client is None  # nothing left open


async def test_startup_with_the_table_completes(dynamodb_server: Any, table_name: str) -> None:
    """Control: the same apps start once the table exists (the test above can fail)."""
    async with dynamo_store(dynamodb_server.endpoint_url, table_name):
        pass
    for kind, build in APPS.items():
        store = owning(dynamodb_server.endpoint_url, table_name)
        sent = await lifespan_startup(build(store, []))
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ], kind


async def test_startup_in_the_wrong_region_fails_with_the_region(
    dynamodb_server: Any, table_name: str
) -> None:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name):
        pass  # the table exists in us-east-1
    probe = owning(dynamodb_server.endpoint_url, table_name, region="eu-west-1")
    try:
        await probe.load("x" * 43)
    except StoreError:
        pass
    else:
        await probe.close()
        pytest.skip(f"{dynamodb_server.kind} keeps one table namespace for every region")
    store = owning(dynamodb_server.endpoint_url, table_name, region="eu-west-1")
    sent = await lifespan_startup(_starlette(store, []))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert_explains(sent[0]["message"], table_name, "eu-west-1", dynamodb_server.endpoint_url)


async def test_open_explains_a_missing_table_and_create_table_still_works(
    dynamodb_server: Any, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = dynamodb_server.endpoint_url
    async with owning(endpoint, table_name) as store:
        [explained] = _explanations(caplog, table_name)
        assert explained.levelno == logging.ERROR
        assert_explains(explained.getMessage(), table_name, "us-east-1", endpoint)
        # The README's way (and the old one) of making the table: no error, no second log.
        await store.create_table()
        assert await store.load("x" * 43) is None
    assert len(_explanations(caplog, table_name)) == 1
    store = owning(endpoint, table_name)
    sent = await lifespan_startup(_starlette(store, []))  # the table is there now
    assert sent[0]["type"] == "lifespan.startup.complete"
    assert len(_explanations(caplog, table_name)) == 1


async def test_a_table_made_after_a_failed_startup_is_found_at_the_next(
    dynamodb_server: Any, table_name: str
) -> None:
    store = owning(dynamodb_server.endpoint_url, table_name)
    failed = await lifespan_startup(_starlette(store, []))
    assert [m["type"] for m in failed] == ["lifespan.startup.failed"]
    async with dynamo_store(dynamodb_server.endpoint_url, table_name):
        pass  # made by someone else (the CLI, CloudFormation)
    again = await lifespan_startup(_starlette(store, []))  # the same store object
    assert again[0]["type"] == "lifespan.startup.complete"


def _uvicorn_app(tmp_path: Path) -> None:
    (tmp_path / "first_run_app.py").write_text(
        textwrap.dedent(
            """
            import os
            from starlette.applications import Starlette
            from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, SessionMiddleware

            store = DynamoDBStore(
                props=DynamoDBStoreProps(table_name=os.environ["SESSION_TABLE"]),
                endpoint_url=os.environ["DYNAMODB_ENDPOINT_URL"],
                region_name="us-east-1",
            )
            app = SessionMiddleware(Starlette(), store=store, secret_keys=os.environ["SECRET"])
            """
        )
    )


@pytest.mark.parametrize("lifespan", ["auto", "on"])
async def test_uvicorn_refuses_to_start_and_says_why(
    lifespan: str, dynamodb_server: Any, table_name: str, tmp_path: Path
) -> None:
    _uvicorn_app(tmp_path)
    env = {
        **os.environ,
        "SESSION_TABLE": table_name,
        "DYNAMODB_ENDPOINT_URL": dynamodb_server.endpoint_url,
        "SECRET": SECRET,
    }
    command = [
        *(sys.executable, "-m", "uvicorn", "first_run_app:app", "--app-dir", str(tmp_path)),
        *("--port", str(free_port()), "--lifespan", lifespan),
    ]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, output
    assert "Application startup failed" in output, output
    assert_explains(output, table_name, "us-east-1", dynamodb_server.endpoint_url)
    assert "Traceback" not in output, output


# -- request time -------------------------------------------------------------------------------


def _explanations(caplog: pytest.LogCaptureFixture, table: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith(f"session table {table!r} not found")
    ]


async def test_at_request_time_a_missing_table_is_explained_once_a_minute(
    dynamodb_server: Any,
    dynamodb_client: Any,
    table_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = dynamodb_server.endpoint_url
    # A caller-owned client and no lifespan: the first request opens the store.
    store = DynamoDBStore(dynamodb_client, DynamoDBStoreProps(table_name=table_name))
    app = SessionMiddleware(counter, store=store, secret_keys=SECRET)
    cookie = signed("s" * 43)
    replies = [await call(app, "/", cookie), await call(app, "/"), await call(app, "/", cookie)]
    assert [r.status_code for r in replies] == [503, 503, 503]  # loads and the create fail
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("session load failed" in m for m in failures) == 2  # each failure still logged
    [explained] = _explanations(caplog, table_name)  # once, though three requests failed
    assert explained.levelno == logging.ERROR
    assert_explains(explained.getMessage(), table_name, "us-east-1", endpoint)

    monkeypatch.setattr(_table_check, "EXPLAIN_EVERY", 0.0)  # "a minute later"
    assert (await call(app, "/", cookie)).status_code == 503
    assert len(_explanations(caplog, table_name)) == 2

    # Creating the table fixes it at once, without a restart.
    await store.create_table()
    assert (await call(app, "/")).status_code == 200
    await store.close()
