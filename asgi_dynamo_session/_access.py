"""`get_session`: the session from a scope or from any framework's request object."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from ._replaced import replacement_data
from .errors import SessionError
from .session import Session

#: Where `SessionMiddleware` also keeps its own `Session` in the scope, so that it is found
#: after the app replaced ``scope["session"]``.
SESSION_KEY = "asgi_dynamo_session"


def get_session(scope_or_request: Any) -> Session:
    """The `Session` in a scope, or in any framework request object that has `.scope`.

    When the app replaced ``scope["session"]`` (Litestar's ``request.set_session(...)``), the
    replacement becomes the middleware's session data, as it would at response start, and that
    `Session` is put back in the scope and returned.
    """
    scope = scope_or_request if isinstance(scope_or_request, Mapping) else None
    if scope is None:
        scope = getattr(scope_or_request, "scope", None)
    if not isinstance(scope, Mapping):
        raise TypeError(
            f"expected an ASGI scope or a request with .scope, got {scope_or_request!r}"
        )
    session = scope.get("session")
    if isinstance(session, Session):
        return session
    own = scope.get(SESSION_KEY)
    if not isinstance(own, Session) or not isinstance(scope, MutableMapping):
        raise SessionError("no session in this scope: is SessionMiddleware installed?")
    own._replace(replacement_data(session).items())
    scope["session"] = own
    return own
