"""Users and devices: what a session's binding to a user is, and what listing a user shows.

A bound session carries a `Binding`: the user's key (sha256 of the user id, as session ids are
hashed), the user id sealed with the middleware's keys (so `Session.user_id` reads it back while a
table dump shows neither) and the app's small `meta` dict. Stores that keep a per-user index
implement `UserStore`; `SessionInfo` is one entry of a listing.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from . import codec
from ._ids import hash_id
from .errors import SessionError
from .record import Record

#: The most bytes an encoded `meta` dict may take: it is stored with every index entry.
MAX_META_BYTES = 1024

_HANDLE_DOMAIN = b"asgi-dynamo-session/handle\x00"


def user_key(user_id: str) -> str:
    """What stands for a user id at rest: sha256, base64url without padding (like session ids)."""
    if not isinstance(user_id, str) or not user_id:
        raise TypeError(f"a user id must be a non-empty str, got {user_id!r}")
    return hash_id(user_id)


def handle_of(session_key: str) -> str:
    """The public handle of a session, from the key the table stores for it.

    A hash of that key (itself sha256 of the id when ids are hashed), so neither the handle nor
    anything in the index can be turned back into the session id a cookie needs.
    """
    digest = hashlib.sha256(_HANDLE_DOMAIN + session_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pack_meta(meta: dict[str, Any] | None) -> bytes | None:
    """The encoded `meta` (None for none or empty); TypeError/ValueError for what cannot be kept."""
    if not meta:
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
        return None
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    packed = codec.pack(meta)
    if len(packed) > MAX_META_BYTES:
        raise ValueError(
            f"meta takes {len(packed)} bytes encoded, over the {MAX_META_BYTES}-byte limit "
            "(it is kept with every entry of the user's index: keep it to a device label or so)"
        )
    return packed


def unpack_meta(packed: bytes | None) -> dict[str, Any]:
    return {} if not packed else codec.unpack(packed)


@dataclass(frozen=True)
class Binding:
    """A session's user: the hashed key, the sealed user id and the app's meta (encoded)."""

    user_key: str
    sealed: bytes = field(repr=False)
    meta: bytes | None = None


@dataclass(frozen=True)
class Replaced:
    """The stored session a bind takes over (a login cycling the id): it must still be live and
    at `version`, else the bind fails with `SessionConflict`."""

    id: str
    version: int
    user_key: str | None  # the old session's user, whose index entry goes


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's live sessions, as `user_sessions()` lists them.

    `handle` is opaque and safe to show (it cannot be turned into a cookie); pass it to
    `revoke(user_id, handle)`. `current` is True only for the asking request's own session.
    """

    handle: str
    created_at: datetime
    expires_at: datetime
    last_seen: datetime
    current: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class UserStore(Protocol):
    """A store that keeps a per-user index of sessions (`DynamoDBStore`, `MemoryStore`)."""

    async def user_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest first."""
        ...

    async def revoke_user(self, user_id: str, keep: str | None = None) -> int:
        """End all the user's sessions but `keep` (a session id); how many were live."""
        ...

    async def revoke(self, user_id: str, handle: str) -> bool:
        """End the user's session with this handle; False when there was none live."""
        ...

    def session_handle(self, session_id: str) -> str:
        """The handle `user_sessions` gives the session with this id."""
        ...

    async def bind(
        self, record: Record, *, replaces: Replaced | None = None, max_sessions: int | None = None
    ) -> None:
        """Create `record` (bound to `record.user`, or unbound), atomically with adding it to
        its user's index, ending `replaces`, and ending the user's oldest sessions beyond
        `max_sessions`. A fresh id on collision, as `create`."""
        ...

    async def delete_bound(self, session_id: str, user: str) -> None:
        """Delete a bound session and its entry in the index of user key `user`."""
        ...


def no_user_store(store: object) -> SessionError:
    """The error for user features on a store without a per-user index."""
    return SessionError(
        f"{type(store).__name__} keeps no per-user index: set_user(), user_sessions() and "
        "revoke_others() need a store with user_sessions, revoke_user, revoke, bind, "
        "delete_bound and session_handle "
        "(DynamoDBStore and MemoryStore have them)"
    )


def newest_first(infos: list[tuple[float, SessionInfo]]) -> list[SessionInfo]:
    """Sort by creation, then by bind time (the float), newest first."""
    infos.sort(key=lambda pair: (pair[1].created_at, pair[0], pair[1].handle), reverse=True)
    return [info for _, info in infos]
