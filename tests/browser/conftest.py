"""Browser scenarios: the example apps served on loopback, driven by headless Chromium over CDP.

These run from ``make test-browser`` (``pytest tests/browser``), once, against the moto server of
``tests/conftest.py``. A plain ``make test`` does not collect them: this directory is collected
only when it (or a file in it) is named on the command line. Without Chromium they skip.

Fixtures: ``browser`` (one Chromium for the run), ``tab`` (a page in a fresh browser context, so
each scenario starts with an empty cookie jar), ``serve`` (an app on a free loopback port, reached
as ``http://127.0.0.1:<port>`` and ``http://localhost:<port>``: two different sites to Chromium),
``store`` (a DynamoDBStore on the run's one table, through one shared aiobotocore client).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any
from uuid import uuid4

import chromium
import pytest
from aiobotocore.session import get_session
from browser_support import Serve
from cdp import Browser, Tab
from support import running

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps

HERE = Path(__file__).resolve().parent
SHOTS = HERE / "screenshots"


def _asked_for(config: pytest.Config) -> bool:
    """True when an argument of this pytest run names this directory or something inside it."""
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip this directory's files unless the run names it (None: let pytest decide)."""
    return True if not _asked_for(config) else None


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    path = chromium.binary()
    if path is None:
        pytest.skip(
            f"chromium not installed ({chromium.wanted()}): `make test-browser` installs it"
        )
    return path


@pytest.fixture(scope="session")
def chromium_endpoint(chromium_binary: str) -> Iterator[str]:
    with chromium.launched(chromium_binary) as url:
        yield url


@pytest.fixture(scope="session")
async def browser(chromium_endpoint: str) -> AsyncIterator[Browser]:
    connection = await Browser.connect(chromium_endpoint)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def tab(browser: Browser, serve: Serve, request: pytest.FixtureRequest) -> AsyncIterator[Tab]:
    """A page in its own browser context; screenshots are named after the test. Closed before
    the servers stop, so no open connection (a websocket) holds up their shutdown."""
    scenario = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name.removeprefix("test_"))
    page = await Tab.open(browser, SHOTS, scenario.strip("-"))
    try:
        yield page
    finally:
        await page.close()


@pytest.fixture(scope="session")
async def client(dynamodb_server: Any) -> AsyncIterator[Any]:
    """One aiobotocore client for the run; the stores borrow it (their open/close leave it be)."""
    async with get_session().create_client(
        "dynamodb", endpoint_url=dynamodb_server.endpoint_url, region_name="us-east-1"
    ) as opened:
        yield opened


@pytest.fixture(scope="session")
async def table(client: Any) -> str:
    """One table for the whole run (each scenario's fresh cookie jar keeps sessions apart)."""
    name = f"browser_{uuid4().hex[:8]}"
    await DynamoDBStore(client, DynamoDBStoreProps(table_name=name)).create_table()
    return name


@pytest.fixture
def store(client: Any, table: str) -> DynamoDBStore:
    """A DynamoDBStore on the run's table and client."""
    return DynamoDBStore(client, DynamoDBStoreProps(table_name=table))


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(app)``: `app` on uvicorn (lifespan on) until the test ends; its port."""
    async with AsyncExitStack() as stack:

        async def start(app: Any) -> int:
            server: AbstractAsyncContextManager[str] = running(app)
            url = await stack.enter_async_context(server)
            return int(url.rsplit(":", 1)[1])

        yield start
