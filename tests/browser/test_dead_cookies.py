"""A cookie the server cannot use, put in the jar through CDP: one whose signature was tampered
with, and a correctly signed one naming no live session. The counter page starts a fresh session
(the client's id is never adopted) and its cookie replaces the dead one in the jar; a read-only
page expires the dead cookie (``Max-Age=0``), so the browser stops sending it."""

from __future__ import annotations

import secrets

import pytest
from browser_support import Serve, assert_session_cookie, count_shown, example, json_shown, sid
from cdp import Tab
from support import b64, signed

from asgi_dynamo_session import DynamoDBStore


def tampered(value: str) -> str:
    """`value` with one signature character changed."""
    i = len(value) - 10
    return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]


KINDS = ["tampered", "unknown"]


async def put_dead_cookie(tab: Tab, url: str, kind: str, original: str) -> str:
    """Replace the jar's session cookie with a dead one of `kind`; its value."""
    dead = tampered(original) if kind == "tampered" else signed(b64(secrets.token_bytes(32)))
    await tab.set_cookie(
        name="id", value=dead, url=url, path="/", secure=True, httpOnly=True, sameSite="Lax"
    )
    assert [c["value"] for c in await tab.cookies(url)] == [dead]
    return dead


@pytest.mark.parametrize("kind", KINDS)
async def test_dead_cookie_yields_a_fresh_session(
    kind: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(example('counter', store))}/"
    await tab.goto(url)
    assert count_shown(await tab.goto(url)) == 1
    (original,) = await tab.cookies(url)
    dead = await put_dead_cookie(tab, url, kind, original["value"])

    assert count_shown(await tab.goto(url)) == 0  # a fresh session, not the original one
    await tab.shot("after-dead-cookie")
    (fresh,) = await tab.cookies(url)
    assert_session_cookie(fresh, "127.0.0.1")
    assert fresh["value"] != dead
    assert sid(fresh) not in (sid(original), dead.split(".")[0])  # no client-chosen id
    kept = await store.load(sid(original))
    assert kept is not None and kept.data == {"counter": 2}  # the real session is untouched
    assert count_shown(await tab.goto(url)) == 1  # and the new cookie is the one sent back


@pytest.mark.parametrize("kind", KINDS)
async def test_dead_cookie_is_removed_by_a_read_only_page(
    kind: str, tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(example('starlette', store))}/"
    await tab.goto(url)
    assert count_shown(await tab.goto(url)) == 2
    (original,) = await tab.cookies(url)
    await put_dead_cookie(tab, url, kind, original["value"])

    assert json_shown(await tab.goto(url + "whoami")) == {"user": None, "count": 0}
    await tab.shot("whoami-with-dead-cookie")
    assert await tab.cookies(url) == []  # expired on that response: sent at most once
    kept = await store.load(sid(original))
    assert kept is not None and kept.data == {"count": 2}
