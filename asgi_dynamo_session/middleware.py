"""`SessionMiddleware`: load the session before the app runs, persist it as the response starts."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import timedelta
from typing import Any

from . import _telemetry
from ._access import SESSION_KEY
from ._exclude import Exclude, excluder
from ._ids import log_id
from ._litestar import note_session_id
from ._persist import Cookie, Persister
from ._replaced import replacement_data
from ._user_seal import UserSeal
from ._users import UserStore
from .codec import Codec, Types
from .cookies import CookieFormat, SameSite, Signer, _key_bytes, cookie_values
from .errors import SessionError, SessionTooLarge, StoreError
from .events import OnEvent
from .expiry import AtDateTime, Expiry, OnSessionEnd
from .session import DEAD_COOKIE, Session
from .store import DEFAULT_CLOCK_SKEW, Clock, SessionStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("asgi_dynamo_session")


class SessionMiddleware:
    """Pure-ASGI middleware giving http and websocket scopes a server-side `Session`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        secret_keys: str | bytes | Sequence[str | bytes],
        cookie_name: str = "id",
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        http_only: bool = True,
        same_site: SameSite | None = "lax",
        partitioned: bool = False,
        exclude: Exclude | Iterable[Exclude] | None = None,
        exclude_opt_key: str | None = "skip_session",
        expiry: Expiry | None = None,
        touch_after: timedelta | None = None,
        absolute_timeout: timedelta | None = None,
        save_attempts: int = 8,
        retry_after: int = 1,
        max_sessions_per_user: int | None = None,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        on_event: OnEvent | None = None,
        types: Types = (),
        clock: Clock = time.time,
    ) -> None:
        if isinstance(expiry, AtDateTime) and expiry.at.timestamp() <= clock():
            raise ValueError(f"the default expiry AtDateTime({expiry.at.isoformat()}) is past")
        if clock_skew < timedelta(0):
            raise ValueError("clock_skew must not be negative")
        if touch_after is not None and touch_after < timedelta(0):
            raise ValueError("touch_after must not be negative")
        if absolute_timeout is not None and absolute_timeout <= timedelta(0):
            raise ValueError("absolute_timeout must be positive")
        if save_attempts < 1:
            raise ValueError("save_attempts must be at least 1")
        if max_sessions_per_user is not None and (
            isinstance(max_sessions_per_user, bool)
            or not isinstance(max_sessions_per_user, int)
            or max_sessions_per_user < 1
        ):
            raise ValueError("max_sessions_per_user must be a positive int or None")
        self.app = app
        self.store = store
        if getattr(store, "clock_skew", False) is None:  # our stores: unset means the middleware's
            store.clock_skew = clock_skew  # type: ignore[attr-defined]
        self.signer = Signer(secret_keys)
        self.cookie = CookieFormat(
            cookie_name,
            path=path,
            domain=domain,
            secure=secure,
            http_only=http_only,
            same_site=same_site,
            partitioned=partitioned,
        )
        self.codec = Codec(types)
        bind = getattr(store, "_use_codec", None)
        if bind is not None:  # our stores decode payloads: they need the registered types
            bind(self.codec)
        self.persister = Persister(
            store,
            codec=self.codec,
            expiry=expiry or OnSessionEnd(),
            touch_after=touch_after,
            absolute_timeout=absolute_timeout,
            save_attempts=save_attempts,
            clock=clock,
            seal=UserSeal([_key_bytes(k) for k in _key_list(secret_keys)]),
            max_sessions_per_user=max_sessions_per_user,
            on_event=on_event,
        )
        if max_sessions_per_user is not None and not isinstance(store, UserStore):
            raise ValueError(
                f"max_sessions_per_user needs a store with a per-user index; "
                f"{type(store).__name__} has none (DynamoDBStore and MemoryStore do)"
            )
        self.retry_after = str(retry_after).encode()
        self.clock = clock
        # None: no scope is excluded. With an opt key, the first request settles which test
        # applies (see _settle_exclusion), so that the default costs one attribute check.
        self._by_path = excluder(exclude, None)
        self._by_route = excluder(exclude, exclude_opt_key)
        self._excluded = self._by_path if exclude_opt_key is None else self._settle_exclusion
        self._explain: Callable[[BaseException], None] = getattr(
            store, "_explain_failure", _no_explanation
        )

    # Typed loosely on purpose: each framework has its own ASGI type aliases (Litestar's are
    # TypedDicts), and this must type-check as middleware in all of them.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            elif kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        excluded = self._excluded
        if excluded is not None and excluded(scope):
            await self.app(scope, receive, send)
            return
        # http, inline: the no-cookie path runs on every anonymous hit, so it is kept to a
        # header scan, one object and a thin send wrapper.
        for name, _ in scope["headers"]:
            if name == b"cookie":
                values = cookie_values(scope["headers"], self.cookie.name)
                break
        else:
            values = None
        blank = not values  # a new session: untouched, it needs nothing at response start
        if values:
            try:
                session = await self._load(scope, values)
            except StoreError as exc:
                logger.error("session load failed, answering 503: %s", exc)
                self._explain(exc)
                await self._answer(send, 503, b"Session store unavailable\n", retry=True)
                return
        else:  # persister.session(None) and _attach, inline on the hot path
            session = Session()
            session._owner = self.persister
            scope["session"] = scope[SESSION_KEY] = session
            state = scope.get("state")
            if state.__class__ is dict:
                state["session"] = session
        started = False
        replaced: list[bool] = []  # non-empty once a failure answer replaced the response
        forward: Send = send

        # A plain function returning the awaitable to run: the untouched path adds no coroutine.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal started, blank
            if replaced:
                return _nothing()
            kind = message["type"]
            if kind == "http.response.start":
                started = message["status"] < 500  # a 5xx saves nothing, not even late
                if blank and not session._accessed and scope["session"] is session:
                    return forward(message)  # new and untouched: nothing to write or add
                blank = False
                return self._start(scope, session, message, send, started, replaced)
            if (
                started
                and kind == "http.response.body"
                and not message.get("more_body", False)
                and not (blank and not session._accessed and scope.get("session") is session)
            ):
                return self._finish(scope, session, message, send)
            return forward(message)

        await self.app(scope, receive, send_wrapper)

    def _settle_exclusion(self, scope: Scope) -> bool:
        """The first request's exclusion test, which picks the test for the rest: only Litestar's
        router puts a ``route_handler`` (whose ``opt`` may opt out) in the scope, and it does so
        on every request it routes to this middleware; elsewhere no request will have one."""
        self._excluded = self._by_route if "route_handler" in scope else self._by_path
        return self._excluded is not None and self._excluded(scope)

    async def _start(
        self,
        scope: Scope,
        session: Session,
        message: Message,
        send: Send,
        save: bool,
        replaced: list[bool],
    ) -> None:
        """The response starts: persist (unless `save` is off), add Set-Cookie and Vary."""
        try:
            self._current(scope, session)
        except TypeError as exc:  # scope["session"] holds something that is no session data
            logger.error("session %s not saved: %s", log_id(session.id), exc)
            replaced.append(True)
            await self._answer(send, 500, b"Session data cannot be stored\n", False)
            return
        headers = list(message.get("headers", ()))
        given = len(headers)
        if save:
            failure = await self._commit_for_response(session, headers)
            if failure is not None:
                replaced.append(True)
                await self._answer(send, *failure)
                return
        if session.accessed or len(headers) > given:  # read, or carries our cookie (touch)
            _add_vary(headers)
        message["headers"] = headers
        await send(message)

    async def _finish(self, scope: Scope, session: Session, message: Message, send: Send) -> None:
        """The last body chunk: save what changed after the response started, then send it."""
        await self._late_commit(scope, session)
        await send(message)

    # -- loading ---------------------------------------------------------------------------

    async def _load(self, scope: Scope, values: list[str]) -> Session:
        """The session for the cookies of our name: one store read when one of them verifies."""
        found = self.signer.first_valid(values)
        session = None
        if found is not None:
            session_id, key_index = found
            record = await self.store.load(session_id)
            _telemetry.count("load")
            if record is not None:
                session = self.persister.session(record, key_index)
        if session is None:
            session = Session()
            session._owner = self.persister
            if values:
                session._cookie = DEAD_COOKIE  # expired on this response unless it sets one
        note_session_id(scope, session.id)  # Litestar's request.get_session_id()
        return self._attach(scope, session)

    def _attach(self, scope: Scope, session: Session) -> Session:
        scope["session"] = scope[SESSION_KEY] = session
        state = scope.get("state")
        if isinstance(state, dict):
            state["session"] = session
        return session

    def _current(self, scope: Scope, session: Session) -> Session:
        """The session as the app left it: what replaced it (a mapping, a dataclass or model,
        None, Litestar's Empty) becomes the data; TypeError for anything else."""
        value: Any = scope.get("session")
        if value is not session:
            session._replace(replacement_data(value).items())
            scope["session"] = session
        return session

    # -- http ------------------------------------------------------------------------------

    async def _commit_for_response(
        self, session: Session, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bool] | None:
        """Persist and add the cookie header; a failure gives the answer to send instead."""
        try:
            action, now = await self.persister.commit(session)
        except SessionTooLarge as exc:
            logger.error("session %s not saved: %s", log_id(session.id), exc)
            return 500, b"Session too large\n", False
        except TypeError as exc:
            logger.error("session %s not saved: %s", log_id(session.id), exc)
            return 500, b"Session data cannot be stored\n", False
        except SessionError as exc:  # StoreError, or a conflict no retry could settle
            logger.error("session %s save failed, answering 503: %s", log_id(session.id), exc)
            self._explain(exc)
            return 503, b"Session store unavailable\n", True
        intents = session._intents
        if intents is not None:
            if action is Cookie.KEEP and intents.pending is not None:
                action, now = intents.pending
            intents.pending = None
        header = self._set_cookie(session, action, now)
        if header is not None:
            headers.append((b"set-cookie", header))
        return None

    def _set_cookie(self, session: Session, action: Cookie, now: float) -> bytes | None:
        """The Set-Cookie value for `action`, dated by the commit's own clock reading."""
        if action is Cookie.KEEP:
            return None
        if action is Cookie.EXPIRE or session.id is None:
            return self.cookie.expire()
        return self.cookie.set(
            self.signer.sign(session.id), self.persister.cookie_expires(session), now
        )

    async def _late_commit(self, scope: Scope, session: Session) -> None:
        """After the response started: save what changed since, under the same id."""
        try:
            session = self._current(scope, session)
        except TypeError as exc:
            logger.error(
                "session %s not saved after the response started: %s", log_id(session.id), exc
            )
            return
        intents = session._intents
        pending = None if intents is None else intents.pending
        plain = session._plain
        # Read-only so far: plain data that encodes the same is unchanged (a value that changed
        # only its type, to one MessagePack writes alike, is the one thing this cannot see).
        if (
            pending is None
            and (intents is None or not intents.any())
            and plain is not None
            and self.codec.native(session) == plain
        ):
            return
        if not session.modified and pending is None:
            return
        had_id = session.id
        try:
            action, _ = await self.persister.commit(session)
        except (SessionError, TypeError) as exc:
            logger.error("session %s not saved after the response started: %s", log_id(had_id), exc)
            return
        if intents is not None:
            intents.pending = None
        told = (action,) if pending is None else (action, pending[0])
        if Cookie.NEW in told or Cookie.EXPIRE in told:
            logger.warning(
                "session %s changed its cookie after the response started; the browser was "
                "not told (save before the response starts, or call session.save() earlier)",
                log_id(session.id or had_id),
            )

    async def _answer(self, send: Send, status: int, body: bytes, retry: bool) -> None:
        _telemetry.count("unavailable" if status == 503 else "refused")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if retry:
            headers.append((b"retry-after", self.retry_after))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- websocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._excluded is not None and self._excluded(scope):
            await self.app(scope, receive, send)
            return
        values = cookie_values(scope["headers"], self.cookie.name)
        try:
            session = await self._load(scope, values)
        except StoreError as exc:
            logger.error("session load failed, refusing the websocket: %s", exc)
            self._explain(exc)
            _telemetry.count("unavailable")
            await send({"type": "websocket.close", "code": 1013, "reason": "Try again later"})
            return
        accepted = False

        async def send_wrapper(message: Message) -> None:
            nonlocal accepted, session
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                headers = list(message.get("headers", ()))
                try:
                    session = self._current(scope, session)
                except TypeError as exc:
                    logger.error("session %s not saved: %s", log_id(session.id), exc)
                    failure: tuple[int, bytes, bool] | None = (500, b"", False)
                else:
                    failure = await self._commit_for_response(session, headers)
                if failure is not None:
                    await send({"type": "websocket.close", "code": 1011, "reason": "Session error"})
                    return
                if headers:
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
        if accepted:
            await self._late_commit(scope, session)

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        opener = getattr(self.store, "open", None)
        closer = getattr(self.store, "close", None)
        if opener is None or closer is None:
            await self.app(scope, receive, send)
            return

        received = failed = False

        async def receive_wrapper() -> Message:
            nonlocal received, failed
            received = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await opener()
                    _usable(self.store)
                except Exception as exc:  # e.g. the table is missing: the server must not start
                    failed = True
                    await send({"type": "lifespan.startup.failed", "message": _failed(exc)})
                    raise
            return message

        async def send_wrapper(message: Message) -> None:
            if failed:  # we answered the server already; the app's own answer would be a second
                return
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await closer()
            await send(message)

        try:
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except Exception:
                if failed:
                    return
                if received:
                    raise
                # An app that fails before reading a lifespan message does not speak lifespan
                # (e.g. `assert scope["type"] == "http"`): answer it ourselves for the store.
                logger.debug("the app does not handle lifespan", exc_info=True)
            if not received:
                await _store_lifespan(receive, send, self.store, opener, closer)
        finally:
            await closer()


async def _store_lifespan(
    receive: Receive,
    send: Send,
    store: Any,
    opener: Callable[[], Awaitable[None]],
    closer: Callable[[], Awaitable[None]],
) -> None:
    """The lifespan protocol for an app that ignores it: open the store, close it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await opener()
                _usable(store)
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": _failed(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await closer()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _key_list(secret_keys: str | bytes | Sequence[str | bytes]) -> list[str | bytes]:
    return [secret_keys] if isinstance(secret_keys, (str, bytes)) else list(secret_keys)


async def _nothing() -> None:
    """What a send that is dropped (after a replaced response) awaits."""


def _no_explanation(exc: BaseException) -> None:
    """A store that cannot say more about its failures than their message."""


def _usable(store: Any) -> None:
    """StoreError when the just-opened store found its table missing (DynamoDBStore says so)."""
    missing = getattr(store, "_missing_table", None)
    problem = missing() if callable(missing) else None
    if problem:
        raise StoreError(problem)


def _failed(exc: BaseException) -> str:
    """The lifespan.startup.failed message for a store that would not open."""
    return f"session store: {exc}"


def _add_vary(headers: list[tuple[bytes, bytes]]) -> None:
    """Make the response vary on Cookie, unless a Vary header already names it (or ``*``)."""
    first = -1
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"cookie" in tokens or b"*" in tokens:
                return
            if first < 0:
                first = i
    if first < 0:
        headers.append((b"vary", b"Cookie"))
    else:
        name, value = headers[first]
        headers[first] = (name, value + b", Cookie" if value.strip() else b"Cookie")
