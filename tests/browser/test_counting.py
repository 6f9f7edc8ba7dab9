"""Each example's counter rises over three loads, on 127.0.0.1 and on localhost, with the default
cookie (``Secure; HttpOnly; SameSite=Lax``, no expiry): Chromium keeps a ``Secure`` cookie from
plain http on loopback (a secure context) and sends it back."""

from __future__ import annotations

import pytest
from browser_support import EXAMPLES, Serve, assert_session_cookie, count_shown, example, sid
from cdp import Tab

from asgi_dynamo_session import DynamoDBStore


@pytest.mark.parametrize("name", list(EXAMPLES))
async def test_counter_rises(name: str, tab: Tab, serve: Serve, store: DynamoDBStore) -> None:
    port = await serve(example(name, store))
    first = EXAMPLES[name][1]
    for host in ("127.0.0.1", "localhost"):  # two sites: two cookie jars, two sessions
        url = f"http://{host}:{port}/"
        values = []
        for load in range(3):
            text = await tab.goto(url)
            await tab.shot(f"{host}-load{load + 1}")
            assert count_shown(text) == first + load
            (cookie,) = await tab.cookies(url)
            assert_session_cookie(cookie, host)
            assert cookie["session"] is True  # OnSessionEnd: no Max-Age/Expires
            values.append(cookie["value"])
        assert values[0] == values[1] == values[2]  # one session, sent back each time
        assert await store.load(sid(cookie)) is not None
