"""Login/logout/counter with Litestar: ``request.session``, ``set_session``, ``clear_session``.

``python -m examples.serve litestar`` serves it on http://127.0.0.1:3000.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.middleware import DefineMiddleware
from litestar.response import Redirect

from asgi_dynamo_session import DynamoDBStore, SessionMiddleware, get_session
from examples._shared import default_store, form_value, page, secret_keys


@get("/", media_type=MediaType.HTML)
async def home(request: Request[Any, Any, Any]) -> str:
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return page("Litestar", count, request.session.get("user"))


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    user = form_value(await request.body(), "user")
    if not user:
        return Response("a user name is required\n", status_code=400, media_type=MediaType.TEXT)
    get_session(request).cycle_id()  # a new id at login (call it before set_session)
    request.set_session({**request.session, "user": user})  # replaces the data as a whole
    return Redirect("/", status_code=303)


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    request.clear_session()  # the item is deleted and the cookie expired
    return Redirect("/", status_code=303)


@get("/whoami")
async def whoami(request: Request[Any, Any, Any]) -> dict[str, Any]:
    # Only reads: no store write and no Set-Cookie.
    return {"user": request.session.get("user"), "count": request.session.get("count", 0)}


def create_app(store: DynamoDBStore | None = None, **options: Any) -> Litestar:
    """The app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    store = store or default_store()
    return Litestar(
        route_handlers=[home, login, logout, whoami],
        middleware=[DefineMiddleware(SessionMiddleware, store=store, **options)],
        # Litestar runs middleware=[...] per route, so the ASGI lifespan never reaches
        # SessionMiddleware: open and close the store's own client with the app instead
        # (without these hooks it opens on first use, and `await store.close()` is yours).
        on_startup=[store.open],
        on_shutdown=[store.close],
    )
