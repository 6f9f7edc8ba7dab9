"""Quart adapter: ``quart.session`` backed by `SessionMiddleware`'s server-side session.

Quart keeps its own session interface (a signed cookie by default). This module swaps it for one
that hands Quart the session `SessionMiddleware` loaded into the ASGI scope, and leaves saving to
the middleware (it persists when the response starts, as for every other framework)::

    from quart import Quart, session
    from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps
    from asgi_dynamo_session.quart import install

    app = Quart(__name__)
    install(app, store=DynamoDBStore(props=DynamoDBStoreProps()), secret_keys=[SECRET])

`install` is the same as::

    app.session_interface = DynamoSessionInterface()
    app.asgi_app = SessionMiddleware(app.asgi_app, store=..., secret_keys=...)

Wrapping ``app.asgi_app`` (rather than the app) is what Quart recommends for ASGI middleware: the
app stays a `Quart` instance, so its test client and CLI keep working and see the middleware.

This is the only module of the package that imports Quart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart.sessions import SessionInterface, SessionMixin

from .errors import SessionError
from .expiry import OnInactivity, OnSessionEnd
from .middleware import SessionMiddleware
from .session import Session

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import BaseRequestWebsocket, Response
    from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = ["DynamoSessionInterface", "QuartSession", "install"]


class QuartSession(Session, SessionMixin):
    """The middleware's `Session` with the attributes Flask/Quart code expects of a session.

    It is the very object at ``scope["session"]`` (the adapter re-labels its class), so
    ``quart.session``, ``request.scope["session"]`` and `get_session(request)` are one session.
    ``modified`` and ``accessed`` are computed as for `Session`; assigning them, as Flask code
    does, is accepted (``modified = True`` needs nothing, ``accessed = True`` marks access).
    """

    _permanent_lifetime: Any = None

    @property
    def modified(self) -> bool:
        """True when the data differs from what was loaded (nested changes included)."""
        return super().modified

    @modified.setter
    def modified(self, value: bool) -> None:
        # Flask code sets ``session.modified = True`` after changing nested data. Changes are
        # found by comparing the data with what was loaded, so there is nothing to record.
        pass

    @property
    def accessed(self) -> bool:
        """True once the session was read or written in this request (adds Vary: Cookie)."""
        return super().accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        if value:
            self.mark_accessed()

    @property
    def new(self) -> bool:  # type: ignore[override]
        """True until the session has been stored (it has no id yet)."""
        return self.id is None

    @property
    def permanent(self) -> bool:
        """True when this session has its own lasting expiry (set here or with set_expiry).

        Setting it True gives the session ``OnInactivity(app.permanent_session_lifetime)``
        (Flask's meaning: the cookie lives that long after the last request); False gives
        ``OnSessionEnd()`` (a browser-session cookie). Unlike Flask, no ``_permanent`` key is
        stored in the data.
        """
        return self.expiry is not None and not isinstance(self.expiry, OnSessionEnd)

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if not value:
            self.set_expiry(OnSessionEnd())
            return
        lifetime = self._permanent_lifetime
        if lifetime is None:
            raise SessionError("permanent=True needs the session opened by DynamoSessionInterface")
        self.set_expiry(OnInactivity(lifetime))


class DynamoSessionInterface(SessionInterface):
    """A Quart `SessionInterface` returning the middleware's session; saving is the middleware's."""

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> QuartSession:
        session = request.scope.get("session")
        if not isinstance(session, Session):
            raise SessionError(
                "no session in the request scope: wrap the app with "
                "asgi_dynamo_session.quart.install(app, ...) or "
                "app.asgi_app = SessionMiddleware(app.asgi_app, ...)"
            )
        if not isinstance(session, QuartSession):
            # Same memory layout (no slots added): re-labelling keeps the object, so the
            # middleware still persists exactly what the app changed.
            session.__class__ = QuartSession
        assert isinstance(session, QuartSession)
        session._permanent_lifetime = app.permanent_session_lifetime
        return session

    async def save_session(
        self,
        app: Quart,
        session: SessionMixin,
        response: Response | WerkzeugResponse | None,
    ) -> None:
        """Nothing to do: `SessionMiddleware` persists the session as the response starts."""


def install(app: Quart, **options: Any) -> SessionMiddleware:
    """Back ``quart.session`` with a `SessionMiddleware` built from `options` around the app.

    `options` are `SessionMiddleware`'s keyword arguments (``store``, ``secret_keys``, cookie
    settings, expiry). Returns the middleware (now ``app.asgi_app``).
    """
    target: Any = app  # Quart types these attributes narrower than it accepts them
    middleware = SessionMiddleware(target.asgi_app, **options)
    target.session_interface = DynamoSessionInterface()
    target.asgi_app = middleware
    return middleware
