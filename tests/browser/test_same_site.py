"""``SameSite`` on a cross-site top-level navigation: a link on http://localhost (another site to
Chromium) to the app on http://127.0.0.1. ``Lax`` sends the cookie, ``Strict`` withholds it;
a same-site navigation sends both."""

from __future__ import annotations

import pytest
from browser_support import Serve, assert_session_cookie, example, json_shown
from cdp import Tab
from sites import other_site

from asgi_dynamo_session import DynamoDBStore

FOLLOW_LINK = "document.getElementById('go').click()"


@pytest.mark.parametrize(
    ("same_site", "sent"), [("lax", True), ("strict", False)], ids=["lax-sent", "strict-withheld"]
)
async def test_cross_site_navigation(
    same_site: str, sent: bool, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    app = f"http://127.0.0.1:{await serve(example('starlette', store, same_site=same_site))}/"
    await tab.goto(app)
    await tab.goto(app)
    (cookie,) = await tab.cookies(app)
    assert_session_cookie(cookie, "127.0.0.1", same_site=same_site.capitalize())

    await tab.goto(f"http://localhost:{await serve(other_site)}/link?to={app}whoami")
    await tab.shot("other-site")
    text = await tab.follow(FOLLOW_LINK)
    await tab.shot("after-link")
    assert json_shown(text) == {"user": None, "count": 2 if sent else 0}
    assert [c["value"] for c in await tab.cookies(app)] == [cookie["value"]]  # still stored

    # Typed into the address bar (no cross-site initiator): sent either way.
    assert json_shown(await tab.goto(app + "whoami")) == {"user": None, "count": 2}
    await tab.shot("same-site")
