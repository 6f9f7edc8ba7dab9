"""`SessionEvent`: what `SessionMiddleware(on_event=...)` is told of, for audit logs and hooks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ._ids import hash_id

logger = logging.getLogger("asgi_dynamo_session")

EventKind = Literal["created", "cycled", "ended", "revoked", "lost_race"]


@dataclass(frozen=True)
class SessionEvent:
    """One thing that happened to a stored session.

    `session` is the hashed id (base64url sha256, as the table stores it), never the id itself;
    `previous` is the hashed id a `cycled` session left; `user_id` is the bound user, if any.
    """

    kind: EventKind
    session: str
    previous: str | None = None
    user_id: str | None = None


OnEvent = Callable[[SessionEvent], "Awaitable[None] | None"]


async def notify(
    callback: OnEvent | None,
    kind: EventKind,
    session_id: str,
    *,
    previous: str | None = None,
    user_id: str | None = None,
    hashed: bool = False,
) -> None:
    """Tell `callback` (sync or async) of one event; an error in it is logged, never raised.
    `hashed`: `session_id` is already the hashed id (a revoked session, known only so)."""
    if callback is None:
        return
    key = session_id if hashed else hash_id(session_id)
    event = SessionEvent(kind, key, None if previous is None else hash_id(previous), user_id)
    try:
        result = callback(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("on_event callback failed for a %s event", kind)
