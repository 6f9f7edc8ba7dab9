"""``OnInactivity(d)``: the browser stores the cookie with an expiry ``d`` from the response
(``Max-Age``), as the stored item does; each write moves both on. Both are checked against the
window from just before the request to just after the response, whatever the machine's load."""

from __future__ import annotations

import time
from datetime import timedelta

from browser_support import Serve, assert_session_cookie, count_shown, example, sid
from cdp import Tab
from support import read_item

from asgi_dynamo_session import DynamoDBStore, OnInactivity

LIFETIME = timedelta(hours=2)


async def test_inactivity_max_age_is_the_jar_expiry(
    tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    app = example("counter", store, expiry=OnInactivity(LIFETIME))
    url = f"http://127.0.0.1:{await serve(app)}/"
    seconds = LIFETIME.total_seconds()
    expiries = []
    for load in range(2):
        before = time.time()
        assert count_shown(await tab.goto(url)) == load
        after = time.time()
        (cookie,) = await tab.cookies(url)
        assert_session_cookie(cookie, "127.0.0.1")
        assert cookie["session"] is False  # a persistent cookie, not a browser-session one
        # Max-Age is whole seconds: up to one second short of the server's instant.
        assert before + seconds - 1 <= cookie["expires"] <= after + seconds
        item = await read_item(store.client, store.props.table_name, store.key(sid(cookie)))
        assert item is not None
        assert before + seconds - 1 <= int(item["expire_at"]["N"]) <= after + seconds + 1
        expiries.append(cookie["expires"])
    await tab.shot("second-load")
    assert expiries[1] >= expiries[0]
