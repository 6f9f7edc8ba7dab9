"""A page whose websocket carries the session: the handshake answer sets the cookie (the page
itself set none), messages change and save the session, and the next handshake and plain HTTP
requests read it back through that cookie."""

from __future__ import annotations

from browser_support import Serve, assert_session_cookie
from cdp import Tab
from sites import websocket_app
from support import SECRET

from asgi_dynamo_session import DynamoDBStore

LOG = "document.getElementById('log').innerText"


async def test_websocket_handshake_sets_and_reads_the_cookie(
    tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    url = f"http://127.0.0.1:{await serve(websocket_app(store, secret_keys=[SECRET]))}/"
    await tab.goto(url)
    assert await tab.cookies(url) == []  # the page's own answer sets no cookie
    await tab.evaluate("connect()")
    text = await tab.wait_until(f"{LOG}.includes('hello count=0')")
    await tab.shot("connected")
    assert text.endswith("hello count=0")
    (cookie,) = await tab.cookies(url)  # set by the handshake answer
    assert_session_cookie(cookie, "127.0.0.1")

    await tab.evaluate("socket.send('inc'); socket.send('inc')")
    text = await tab.wait_until(f"{LOG}.includes('saved count=2')")
    await tab.shot("two-increments")
    assert text.split("\n")[-2:] == ["saved count=1", "saved count=2"]

    assert (await tab.goto(url + "peek")) == "count=2"  # plain HTTP reads what the socket saved
    await tab.goto(url)
    await tab.evaluate("connect()")
    text = await tab.wait_until(f"{LOG}.includes('hello')")
    await tab.shot("reconnected")
    assert text.endswith("hello count=2")  # the second handshake sent the cookie back
    assert [c["value"] for c in await tab.cookies(url)] == [cookie["value"]]
