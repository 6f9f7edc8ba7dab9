"""Login/logout/counter with Quart: ``quart.session`` is the middleware's session.

``python -m examples.serve quart`` serves it on http://127.0.0.1:3000.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, redirect, request, session
from quart.typing import ResponseReturnValue

from asgi_dynamo_session import SessionStore, get_session
from asgi_dynamo_session.quart import install
from examples._shared import default_store, page, secret_keys


def create_app(store: SessionStore | None = None, **options: Any) -> Quart:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    app = Quart(__name__)
    # app.session_interface = DynamoSessionInterface() and
    # app.asgi_app = SessionMiddleware(app.asgi_app, ...), in one call:
    install(app, store=store or default_store(), **options)

    @app.get("/")
    async def home() -> ResponseReturnValue:
        count = session.get("count", 0) + 1
        session["count"] = count
        return page("Quart", count, session.get("user"))

    @app.post("/login")
    async def login() -> ResponseReturnValue:
        user = ((await request.form).get("user") or "").strip()
        if not user:
            return "a user name is required\n", 400
        session.cycle_id()  # type: ignore[attr-defined]  # a new id at login
        session["user"] = user
        return redirect("/", 303)

    @app.post("/logout")
    async def logout() -> ResponseReturnValue:
        session.clear()  # an emptied session: item deleted, cookie expired
        return redirect("/", 303)

    @app.get("/whoami")
    async def whoami() -> ResponseReturnValue:
        # Only reads (through the scope, to show plain ASGI access): no write, no Set-Cookie.
        data = get_session(request)
        return {"user": data.get("user"), "count": data.get("count", 0)}

    return app
