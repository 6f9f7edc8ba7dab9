"""Login/logout/counter with FastAPI: ``request.session`` is the middleware's `Session`.

``python -m examples.serve fastapi`` serves it on http://127.0.0.1:3000.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from asgi_dynamo_session import SessionMiddleware, SessionStore, get_session
from examples._shared import default_store, form_value, page, secret_keys


def create_app(store: SessionStore | None = None, **options: Any) -> FastAPI:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store or default_store(), **options)

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> str:
        count = request.session.get("count", 0) + 1
        request.session["count"] = count
        return page("FastAPI", count, request.session.get("user"))

    @app.post("/login")
    async def login(request: Request) -> Response:
        user = form_value(await request.body(), "user")
        if not user:
            return Response("a user name is required\n", status_code=400)
        get_session(request).cycle_id()  # a new id at login
        request.session["user"] = user
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        get_session(request).flush()  # clear the data, delete the item, expire the cookie
        return RedirectResponse("/", status_code=303)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        # Only reads: no store write and no Set-Cookie.
        return {"user": request.session.get("user"), "count": request.session.get("count", 0)}

    return app
