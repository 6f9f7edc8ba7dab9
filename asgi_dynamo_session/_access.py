"""`get_session`: the session from a scope or from any framework's request object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SessionError
from .session import Session


def get_session(scope_or_request: Any) -> Session:
    """The `Session` in a scope, or in any framework request object that has `.scope`."""
    scope = scope_or_request if isinstance(scope_or_request, Mapping) else None
    if scope is None:
        scope = getattr(scope_or_request, "scope", None)
    if not isinstance(scope, Mapping):
        raise TypeError(
            f"expected an ASGI scope or a request with .scope, got {scope_or_request!r}"
        )
    session = scope.get("session")
    if not isinstance(session, Session):
        raise SessionError("no session in this scope: is SessionMiddleware installed?")
    return session
