"""Login/logout/counter with Starlette: ``request.session`` is the middleware's `Session`.

``python -m examples.serve starlette`` serves it on http://127.0.0.1:3000.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from asgi_dynamo_session import SessionMiddleware, SessionStore, get_session
from examples._shared import default_store, form_value, page, secret_keys


async def home(request: Request) -> Response:
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return HTMLResponse(page("Starlette", count, request.session.get("user")))


async def login(request: Request) -> Response:
    user = form_value(await request.body(), "user")
    if not user:
        return Response("a user name is required\n", status_code=400)
    get_session(request).cycle_id()  # a new id at login: a pre-login id is worth nothing
    request.session["user"] = user
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()  # an emptied session: item deleted, cookie expired
    return RedirectResponse("/", status_code=303)


async def whoami(request: Request) -> Response:
    # Only reads: no store write and no Set-Cookie.
    session = request.session
    return JSONResponse({"user": session.get("user"), "count": session.get("count", 0)})


def create_app(store: SessionStore | None = None, **options: Any) -> Starlette:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/whoami", whoami),
        ],
        middleware=[Middleware(SessionMiddleware, store=store or default_store(), **options)],
    )
