"""A cookie the server cannot use, put in the jar through CDP: one whose signature was tampered
with, and a correctly signed one naming no live session. The counter page starts a fresh session
(the client's id is never adopted) and its cookie replaces the dead one in the jar."""

from __future__ import annotations

import secrets

import pytest
from browser_support import Serve, assert_session_cookie, count_shown, example, sid
from cdp import Tab
from support import b64, signed

from asgi_dynamo_session import DynamoDBStore


def tampered(value: str) -> str:
    """`value` with one signature character changed."""
    i = len(value) - 10
    return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]


@pytest.mark.parametrize("kind", ["tampered", "unknown"])
async def test_dead_cookie_yields_a_fresh_session(
    kind: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(example('counter', store))}/"
    await tab.goto(url)
    assert count_shown(await tab.goto(url)) == 1
    (original,) = await tab.cookies(url)

    dead = (
        tampered(original["value"]) if kind == "tampered" else signed(b64(secrets.token_bytes(32)))
    )
    await tab.set_cookie(
        name="id", value=dead, url=url, path="/", secure=True, httpOnly=True, sameSite="Lax"
    )
    assert [c["value"] for c in await tab.cookies(url)] == [dead]

    assert count_shown(await tab.goto(url)) == 0  # a fresh session, not the original one
    await tab.shot("after-dead-cookie")
    (fresh,) = await tab.cookies(url)
    assert_session_cookie(fresh, "127.0.0.1")
    assert fresh["value"] != dead
    assert sid(fresh) not in (sid(original), dead.split(".")[0])  # no client-chosen id
    kept = await store.load(sid(original))
    assert kept is not None and kept.data == {"counter": 2}  # the real session is untouched
    assert count_shown(await tab.goto(url)) == 1  # and the new cookie is the one sent back
