"""A "your devices" page (Starlette): log in with a device label, see every session of your user,
log out one device or every other one.

``make example APP=devices`` (``python -m examples.serve devices``) serves it on
http://127.0.0.1:3000; log in from two browsers (or a private window) to see two devices.
The forms are plain POSTs: the default ``SameSite=Lax`` cookie keeps other sites from sending
them with your session.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from asgi_dynamo_session import (
    DynamoDBStore,
    MemoryStore,
    Session,
    SessionInfo,
    SessionMiddleware,
    get_session,
)
from examples._shared import default_store, secret_keys

#: A user's sessions beyond this many end, oldest first, when another device logs in.
MAX_DEVICES = 5


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0].strip() for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _row(info: SessionInfo) -> str:
    device = html.escape(str(info.meta.get("device", "unnamed device")))
    if info.current:
        action = '<form method="post" action="/logout"><button>Log out this device</button></form>'
        device += " <b>(this device)</b>"
    else:
        action = (
            '<form method="post" action="/revoke">'
            f'<input type="hidden" name="handle" value="{html.escape(info.handle)}">'
            "<button>Log out this device</button></form>"
        )
    when = (
        f"signed in {info.created_at:%Y-%m-%d %H:%M} UTC, "
        f"last seen {info.last_seen:%Y-%m-%d %H:%M} UTC, "
        f"ends {info.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    return f'<li class="device">{device}<br><small>{when}</small>{action}</li>'


async def home(request: Request) -> Response:
    session = get_session(request)
    if session.user_id is None:
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Your devices</title>"
            "<h1>Log in</h1>"
            '<form method="post" action="/login">'
            '<input name="user" placeholder="user name" required> '
            '<input name="device" placeholder="device label, e.g. work laptop"> '
            "<button>Log in</button></form>"
        )
    infos = await session.user_sessions()
    rows = "".join(_row(info) for info in infos)
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>Your devices</title>"
        f"<h1>Devices of {html.escape(session.user_id)}</h1>"
        f'<p id="count">{len(infos)} device(s) signed in (at most {MAX_DEVICES}).</p>'
        f"<ul>{rows}</ul>"
        '<form method="post" action="/revoke-others">'
        "<button>Log out everywhere else</button></form>"
    )


async def login(request: Request) -> Response:
    form = _form(await request.body())
    if not form.get("user"):
        return Response("a user name is required\n", status_code=400)
    device = form.get("device") or request.headers.get("user-agent", "")[:80] or "unnamed device"
    # Binds the session to the user and gives it a new id (no session fixation at login).
    get_session(request).set_user(form["user"], meta={"device": device})
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    get_session(request).flush()  # ends this session and takes it off the user's list
    return RedirectResponse("/", status_code=303)


async def revoke(request: Request) -> Response:
    session: Session = get_session(request)
    handle = _form(await request.body()).get("handle", "")
    store = request.app.state.session_store
    if session.user_id is not None and handle:
        await store.revoke(session.user_id, handle)  # a handle of another user ends nothing
    return RedirectResponse("/", status_code=303)


async def revoke_others(request: Request) -> Response:
    await get_session(request).revoke_others()
    return RedirectResponse("/", status_code=303)


def create_app(store: DynamoDBStore | MemoryStore | None = None, **options: Any) -> Starlette:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    store = store or default_store()
    options.setdefault("secret_keys", secret_keys())
    options.setdefault("max_sessions_per_user", MAX_DEVICES)
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/revoke-others", revoke_others, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, **options)],
    )
    app.state.session_store = store
    return app
