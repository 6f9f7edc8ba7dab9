"""Logging in through each example's form moves the session to a new cookie value (``cycle_id``);
logging out empties it (``flush``/``clear``), and the browser drops the cookie."""

from __future__ import annotations

import pytest
from browser_support import (
    LOGIN_EXAMPLES,
    Serve,
    assert_session_cookie,
    count_shown,
    example,
    json_shown,
    sid,
)
from cdp import Tab

from asgi_dynamo_session import DynamoDBStore

LOG_IN = (
    "document.querySelector('input[name=user]').value = 'alice';"
    "document.querySelector('form[action=\"/login\"] button').click()"
)
LOG_OUT = "document.querySelector('form[action=\"/logout\"] button').click()"
#: Log out without following the redirect to the counter page, which would start a new session.
LOG_OUT_ONLY = "fetch('/logout', {method: 'POST', redirect: 'manual'}).then(r => r.type)"


async def log_in(tab: Tab) -> str:
    """Log in as alice through the form of the page shown; the text of the page it lands on."""
    text = await tab.follow(LOG_IN)
    assert "Logged in as alice." in text
    return text


@pytest.mark.parametrize("name", LOGIN_EXAMPLES)
async def test_login_cycles_the_cookie(
    name: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(example(name, store))}/"
    await tab.goto(url)
    assert count_shown(await tab.goto(url)) == 2
    (anonymous,) = await tab.cookies(url)

    text = await log_in(tab)
    await tab.shot("logged-in")
    assert count_shown(text) == 3  # the data moved along with the id
    (logged_in,) = await tab.cookies(url)
    assert_session_cookie(logged_in, "127.0.0.1")
    assert sid(logged_in) != sid(anonymous)
    assert await store.load(sid(anonymous)) is None  # the pre-login id is worth nothing
    record = await store.load(sid(logged_in))
    assert record is not None and record.data["user"] == "alice"

    # The form's redirect lands on the counter, which starts a new anonymous session.
    text = await tab.follow(LOG_OUT)
    await tab.shot("logged-out")
    assert "Not logged in." in text and count_shown(text) == 1
    (after,) = await tab.cookies(url)
    assert sid(after) not in (sid(logged_in), sid(anonymous))
    assert await store.load(sid(logged_in)) is None


@pytest.mark.parametrize("name", LOGIN_EXAMPLES)
async def test_logout_removes_the_cookie(
    name: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(example(name, store))}/"
    await tab.goto(url)
    await log_in(tab)
    (logged_in,) = await tab.cookies(url)

    assert await tab.evaluate(LOG_OUT_ONLY) == "opaqueredirect"
    assert await tab.cookies(url) == []  # Max-Age=0: gone from the jar
    assert json_shown(await tab.goto(url + "whoami")) == {"user": None, "count": 0}
    await tab.shot("whoami-after-logout")
    assert await tab.cookies(url) == []  # a read-only page starts no session
    assert await store.load(sid(logged_in)) is None
