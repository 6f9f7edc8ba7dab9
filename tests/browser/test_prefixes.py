"""Cookie prefixes and the attributes Chromium insists on: a ``__Host-`` session cookie is kept;
each configuration whose cookie Chromium would drop is refused by the middleware at construction
(shown here by sending that exact header from a plain app and watching the jar stay empty)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from browser_support import Serve, assert_session_cookie, count_shown, example
from cdp import Tab
from sites import raw_set_cookie
from support import SECRET

from asgi_dynamo_session import DynamoDBStore, MemoryStore, SessionMiddleware


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_host_prefix_cookie_is_kept(
    host: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://{host}:{await serve(example('counter', store, cookie_name='__Host-id'))}/"
    for load in range(3):
        assert count_shown(await tab.goto(url)) == load
    await tab.shot("third-load")
    (cookie,) = await tab.cookies(url)
    assert_session_cookie(cookie, host, name="__Host-id")


#: (middleware options, host, the header those options would mean, the same header made valid)
REFUSED: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "host-prefix-without-secure": (
        {"cookie_name": "__Host-id", "secure": False},
        "127.0.0.1",
        "__Host-id=v; Path=/; HttpOnly; SameSite=Lax",
        "__Host-id=v; Path=/; HttpOnly; Secure; SameSite=Lax",
    ),
    "host-prefix-with-path": (
        {"cookie_name": "__Host-id", "path": "/app"},
        "127.0.0.1",
        "__Host-id=v; Path=/app; HttpOnly; Secure; SameSite=Lax",
        "__Host-id=v; Path=/; HttpOnly; Secure; SameSite=Lax",
    ),
    "host-prefix-with-domain": (
        {"cookie_name": "__Host-id", "domain": "localhost"},
        "localhost",
        "__Host-id=v; Path=/; Domain=localhost; HttpOnly; Secure; SameSite=Lax",
        "__Host-id=v; Path=/; HttpOnly; Secure; SameSite=Lax",
    ),
    "secure-prefix-without-secure": (
        {"cookie_name": "__Secure-id", "secure": False},
        "127.0.0.1",
        "__Secure-id=v; Path=/; HttpOnly; SameSite=Lax",
        "__Secure-id=v; Path=/; HttpOnly; Secure; SameSite=Lax",
    ),
    "same-site-none-without-secure": (
        {"same_site": "none", "secure": False},
        "127.0.0.1",
        "id=v; Path=/; HttpOnly; SameSite=None",
        "id=v; Path=/; HttpOnly; Secure; SameSite=None",
    ),
    "partitioned-without-secure": (
        {"partitioned": True, "secure": False},
        "127.0.0.1",
        "id=v; Path=/; HttpOnly; SameSite=Lax; Partitioned",
        "id=v; Path=/; HttpOnly; Secure; SameSite=Lax; Partitioned",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_what_chromium_drops_the_middleware_refuses(
    case: str, tab: Tab, serve: Serve
) -> None:
    options, host, dropped, valid = REFUSED[case]
    with pytest.raises(ValueError):
        SessionMiddleware(raw_set_cookie, store=MemoryStore(), secret_keys=SECRET, **options)

    url = f"http://{host}:{await serve(raw_set_cookie)}/"
    text = await tab.goto(f"{url}?header={quote(dropped)}")
    await tab.shot("dropped")
    assert dropped in text  # the page was served with that header...
    assert await tab.jar() == []  # ...and Chromium did not keep it

    text = await tab.goto(f"{url}?header={quote(valid)}")
    assert valid in text
    (kept,) = await tab.cookies(url)  # the same cookie made valid is kept
    assert (kept["name"], kept["value"]) == (valid.split("=", 1)[0], "v")
