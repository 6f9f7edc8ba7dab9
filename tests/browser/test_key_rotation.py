"""Key rotation as a deployment does it: the app restarts with a new first key and the old one
still listed. The browser's old-key cookie is accepted and re-signed with the new key on its
next request, so a later deployment without the old key keeps the session."""

from __future__ import annotations

from browser_support import Serve, assert_session_cookie, count_shown, example, json_shown, sid
from cdp import Tab
from support import OLD_SECRET, SECRET, signed

from asgi_dynamo_session import DynamoDBStore


async def test_rotated_key_re_signs_the_browser_cookie(
    tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    old = f"http://127.0.0.1:{await serve(example('starlette', store, secret_keys=[OLD_SECRET]))}/"
    await tab.goto(old)
    assert count_shown(await tab.goto(old)) == 2
    (before,) = await tab.cookies(old)
    assert before["value"] == signed(sid(before), OLD_SECRET)

    # Cookies are per host, not per port: the rotated deployment gets the same cookie.
    both = [SECRET, OLD_SECRET]
    rotated = f"http://127.0.0.1:{await serve(example('starlette', store, secret_keys=both))}/"
    assert json_shown(await tab.goto(rotated + "whoami"))["count"] == 2  # a read-only page
    await tab.shot("rotated")
    (after,) = await tab.cookies(rotated)
    assert_session_cookie(after, "127.0.0.1")  # signed by SECRET, the new first key
    assert sid(after) == sid(before)  # the same session, re-signed

    new_only = f"http://127.0.0.1:{await serve(example('starlette', store, secret_keys=[SECRET]))}/"
    assert json_shown(await tab.goto(new_only + "whoami"))["count"] == 2
    await tab.shot("old-key-retired")
    assert [c["value"] for c in await tab.cookies(new_only)] == [after["value"]]
