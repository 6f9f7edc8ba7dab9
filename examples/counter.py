"""The seed's counter: one page whose count rises on each visit (Starlette, wrapped by hand).

Run it with ``python -m examples.serve counter`` (the default app of ``make example``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_dynamo_session import SessionMiddleware, SessionStore
from examples._shared import default_store, secret_keys

COUNTER_KEY = "counter"


async def handler(request: Request) -> PlainTextResponse:
    counter = request.session.get(COUNTER_KEY, 0)
    request.session[COUNTER_KEY] = counter + 1
    return PlainTextResponse(f"Current count: {counter}")


def create_app(store: SessionStore | None = None, **options: Any) -> SessionMiddleware:
    """The counter app; `options` go to `SessionMiddleware` (cookie settings, expiry...)."""
    options.setdefault("secret_keys", secret_keys())
    app = Starlette(routes=[Route("/", handler)])
    return SessionMiddleware(app, store=store or default_store(), **options)
