"""Login/logout/counter as a bare ASGI callable: the session is ``scope["session"]``.

``python -m examples.serve raw`` serves it on http://127.0.0.1:3000.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgi_dynamo_session import SessionMiddleware, SessionStore, get_session
from examples._shared import default_store, form_value, page, secret_keys

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, *extra: tuple[bytes, bytes]
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: bytes) -> None:
    await _respond(send, 303, b"", b"text/plain", (b"location", location))


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        # No lifespan handling needed: SessionMiddleware opens and closes the store itself.
        return
    session = get_session(scope)  # the same object as scope["session"]
    route = (scope["method"], scope["path"])
    if route == ("GET", "/"):
        count = session.get("count", 0) + 1
        session["count"] = count
        text = page("Raw ASGI", count, session.get("user"))
        await _respond(send, 200, text.encode(), b"text/html; charset=utf-8")
    elif route == ("POST", "/login"):
        user = form_value(await _body(receive), "user")
        if not user:
            await _respond(send, 400, b"a user name is required\n", b"text/plain")
            return
        session.cycle_id()  # a new id at login
        session["user"] = user
        await _redirect(send, b"/")
    elif route == ("POST", "/logout"):
        session.flush()  # clear the data, delete the item, expire the cookie
        await _redirect(send, b"/")
    elif route == ("GET", "/whoami"):
        # Only reads: no store write and no Set-Cookie.
        data = {"user": session.get("user"), "count": session.get("count", 0)}
        await _respond(send, 200, json.dumps(data).encode(), b"application/json")
    else:
        await _respond(send, 404, b"not found\n", b"text/plain")


def create_app(store: SessionStore | None = None, **options: Any) -> SessionMiddleware:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    return SessionMiddleware(app, store=store or default_store(), **options)
