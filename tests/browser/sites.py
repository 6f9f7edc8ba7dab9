"""The small apps the browser scenarios need beyond the examples, as plain ASGI callables.

* `other_site`: no sessions; a page linking, posting or embedding a URL of another site.
* `raw_set_cookie`: answers with exactly the ``Set-Cookie`` header it is given (what Chromium
  keeps or drops, independently of the middleware).
* `websocket_app`: a page whose websocket handshake sets the session cookie and whose messages
  read and change the session, wrapped in `SessionMiddleware`.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from asgi_dynamo_session import SessionMiddleware, SessionStore, get_session

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _html(send: Send, body: str, *headers: tuple[bytes, bytes]) -> None:
    page = f"<!doctype html><meta charset=utf-8><body>{body}</body>".encode()
    start = [(b"content-type", b"text/html; charset=utf-8"), *headers]
    await send({"type": "http.response.start", "status": 200, "headers": start})
    await send({"type": "http.response.body", "body": page})


async def other_site(scope: Scope, receive: Receive, send: Send) -> None:
    """``/link?to=URL``: a link and a POST form to URL; ``/embed?src=URL``: URL in an iframe."""
    if scope["type"] != "http":
        return
    query = _query(scope)
    if scope["path"] == "/embed":
        src = html.escape(query["src"])
        await _html(send, f'<h1>Top site</h1><iframe src="{src}" width=600 height=200></iframe>')
        return
    to = html.escape(query.get("to", "/"))
    await _html(
        send,
        f'<h1>Another site</h1><p><a id="go" href="{to}">follow a link to {to}</a></p>'
        f'<form id="post" method="post" action="{to}"><button>post a form to {to}</button></form>',
    )


async def raw_set_cookie(scope: Scope, receive: Receive, send: Send) -> None:
    """``/?header=...``: a page sent with ``Set-Cookie: <header>`` verbatim."""
    if scope["type"] != "http":
        return
    header = _query(scope)["header"]
    shown = html.escape(header)
    await _html(
        send, f"<p>Sent Set-Cookie: <code>{shown}</code></p>", (b"set-cookie", header.encode())
    )


CHAT_PAGE = """
<h1>Websocket session</h1>
<button id="connect" onclick="connect()">connect</button>
<ol id="log"></ol>
<script>
  function connect() {
    const log = document.getElementById("log");
    window.socket = new WebSocket(`ws://${location.host}/ws`);
    socket.onmessage = (event) => {
      const line = document.createElement("li");
      line.textContent = event.data;
      log.appendChild(line);
    };
  }
</script>
"""


async def _chat(scope: Scope, receive: Receive, send: Send) -> None:
    session = get_session(scope)
    if scope["type"] == "http":
        if scope["path"] == "/peek":  # reads only: no write, no Set-Cookie
            await _html(send, f"<p>count={session.get('count', 'none')}</p>")
        else:
            await _html(send, CHAT_PAGE)
        return
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    if session.id is None:
        session["count"] = 0  # before accept: the handshake answer carries the new cookie
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": f"hello count={session['count']}"})
    while (message := await receive())["type"] != "websocket.disconnect":
        if message.get("text") == "inc":
            session["count"] += 1
            await session.save()  # persisted now, while the socket stays open
            await send({"type": "websocket.send", "text": f"saved count={session['count']}"})


def websocket_app(store: SessionStore, **options: Any) -> SessionMiddleware:
    """``/``: the chat page (``connect()`` opens the websocket); ``/ws``: the websocket;
    ``/peek``: the count over plain HTTP."""
    return SessionMiddleware(_chat, store=store, **options)
