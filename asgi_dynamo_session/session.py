"""`Session`: the dict the middleware puts in the scope, remembering what a request did to it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import codec
from ._users import pack_meta
from .errors import SessionError
from .expiry import Expiry

if TYPE_CHECKING:
    from ._users import Binding, SessionInfo

_MISSING: Any = object()

#: `Session._cookie` values besides a key index (>= 0, the key that signed a live session's cookie).
NO_COOKIE = -2  # the request carried no cookie of our name
DEAD_COOKIE = -1  # it did, but the cookie does not verify or names no live session


@dataclass(frozen=True)
class Snapshot:
    """The stored session as this request last saw it: what changes are measured against."""

    id: str
    packed: bytes  # the data, encoded
    version: int
    created_at: datetime | None
    expires: datetime
    policy: Expiry | None  # the session's own expiry policy, None for the middleware's
    user: Binding | None = None  # the user the session is bound to (`set_user`)
    tokens: str | None = None  # the store's record of its last writes (carried into saves)


class Intents:
    """What the request asked for beyond plain data changes; cleared by each write."""

    __slots__ = ("bind", "cleared", "cycle", "expiry", "expiry_set", "flushed", "pending")

    def __init__(self) -> None:
        self.cleared = False  # the data was replaced as a whole (clear(), set_session)
        self.flushed = False  # end the stored session
        self.cycle = False  # move the data to a new id
        self.expiry_set = False  # set_expiry() was called; `expiry` is the new policy
        self.expiry: Expiry | None = None
        self.pending: Any = None  # a cookie action from an explicit save(), not yet sent
        # set_user(): (user id or None to unbind, encoded meta); kept until a write binds it
        self.bind: tuple[str | None, bytes | None] | None = None

    def any(self) -> bool:
        return self.cleared or self.flushed or self.cycle or self.expiry_set


class Session(dict[str, Any]):
    """Session data: a plain dict to the app, plus what the middleware needs to persist it.

    Reading marks it accessed (which adds ``Vary: Cookie``); changes, nested ones included, are
    found by comparing the encoded data with what was loaded.
    """

    # Class-level defaults keep construction cheap: a request without a cookie builds a
    # Session on every call, and most of these are never set.
    _accessed = False
    _owner: Any = None  # the middleware's Persister: saves and computes expiry dates
    _loaded: Snapshot | None = None  # None until the session is stored
    _intents: Intents | None = None  # created on the first intent
    _plain: bytes | None = None  # unchanged plain data at the last commit (codec.native form)
    _cookie = NO_COOKIE

    # -- what the middleware reads ---------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The session id; None until the session has been stored."""
        return None if self._loaded is None else self._loaded.id

    @property
    def accessed(self) -> bool:
        """True once the app read or wrote the session in this request."""
        return self._accessed

    def mark_accessed(self) -> None:
        """Record a read (Starlette calls this); the response then varies on the cookie."""
        self._accessed = True

    @property
    def modified(self) -> bool:
        """True when the data differs from what was loaded, or an intent asks for a write."""
        if self._intents is not None and self._intents.any():
            return True
        if self._loaded is None:
            return dict.__len__(self) > 0
        owner = self._owner
        return (codec.DEFAULT if owner is None else owner.codec).pack(self) != self._loaded.packed

    # -- what the app calls ----------------------------------------------------------------

    def cycle_id(self) -> None:
        """Keep the data under a new id at the next save and delete the old item (call at login)."""
        self._accessed = True
        self._want().cycle = True

    def flush(self) -> None:
        """Clear the data, delete the stored item and expire the cookie (call at logout); a
        bound session is unbound (taken off its user's list)."""
        self._accessed = True
        intents = self._want()
        intents.flushed = True
        intents.bind = (None, None) if self._bound() else None
        dict.clear(self)

    # -- users and devices -----------------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to (`set_user`), or None."""
        intents = self._intents
        if intents is not None and intents.bind is not None:
            return intents.bind[0]
        user = None if self._loaded is None else self._loaded.user
        if user is None or self._owner is None:
            return None
        user_id: str | None = self._owner.user_id_of(user)
        return user_id

    def set_user(self, user_id: str | None, meta: dict[str, Any] | None = None) -> None:
        """Bind the session to `user_id` (None unbinds) and give it a new id at the next save,
        as `cycle_id()` does. `meta` is a small dict kept with the user's list of sessions
        (e.g. a device label); it counts toward the session's size."""
        if user_id is not None and (not isinstance(user_id, str) or not user_id):
            raise TypeError(f"a user id must be a non-empty str or None, got {user_id!r}")
        if user_id is None and meta:
            raise ValueError("meta needs a user: set_user(None) unbinds")
        packed = pack_meta(meta)
        self._users()  # a clear error now for a store without a per-user index
        self._accessed = True
        intents = self._want()
        if user_id is None and not self._bound():
            intents.bind = None  # nothing stored to unbind; drops a binding asked for earlier
            return
        intents.bind = (user_id, packed)
        intents.cycle = True

    async def user_sessions(self) -> list[SessionInfo]:
        """The live sessions of this session's user, newest first, this one marked `current`
        ([] when unbound). A binding asked for in this request is saved first."""
        store = self._users()
        await self._bind_now()
        user_id = self.user_id
        if user_id is None:
            return []
        infos: list[SessionInfo] = await store.user_sessions(user_id)
        mine = None if self.id is None else store.session_handle(self.id)
        return [dataclasses.replace(i, current=True) if i.handle == mine else i for i in infos]

    async def revoke_others(self) -> int:
        """End every other session of this session's user ("log out other devices"); how many
        were live. A binding asked for in this request is saved first."""
        store = self._users()
        await self._bind_now()
        user_id = self.user_id
        if user_id is None:
            return 0
        revoke = getattr(store, "_revoke_user", None)
        if revoke is None:  # a store of the user's own: the count only
            ended: int = await store.revoke_user(user_id, keep=self.id)
            return ended
        keys: list[str] = await revoke(user_id, self.id)
        await self._owner.revoked(keys, user_id)
        return len(keys)

    def _bound(self) -> bool:
        return self._loaded is not None and self._loaded.user is not None

    async def _bind_now(self) -> None:
        intents = self._intents
        if intents is not None and intents.bind is not None and intents.bind[0] is not None:
            await self.save()

    def _users(self) -> Any:
        if self._owner is None:
            raise SessionError("this session is not attached to a SessionMiddleware")
        return self._owner.user_store()

    def set_expiry(self, expiry: Expiry | None) -> None:
        """Give this session its own expiry policy; None returns to the middleware's."""
        self._accessed = True
        intents = self._want()
        intents.expiry = expiry
        intents.expiry_set = True

    @property
    def expiry(self) -> Expiry | None:
        """This session's own expiry policy, or None when the middleware's applies."""
        intents = self._intents
        if intents is not None and intents.expiry_set:
            return intents.expiry
        return None if self._loaded is None else self._loaded.policy

    @property
    def expiry_date(self) -> datetime | None:
        """When the session ends if saved now (None outside a middleware)."""
        return None if self._owner is None else self._owner.ends_at(self)

    async def save(self) -> None:
        """Persist now (websockets, long streams); the middleware also saves at response start."""
        if self._owner is None:
            raise SessionError("this session is not attached to a SessionMiddleware")
        await self._owner.save_now(self)

    # -- dict methods that read or write mark the session accessed -------------------------

    def __getitem__(self, key: str) -> Any:
        self._accessed = True
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._accessed = True
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._accessed = True
        dict.__delitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._accessed = True
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._accessed = True
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._accessed = True
        return dict.__len__(self)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        self._accessed = True
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._accessed = True
        return dict.keys(self)

    def values(self) -> Any:
        self._accessed = True
        return dict.values(self)

    def items(self) -> Any:
        self._accessed = True
        return dict.items(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._accessed = True
        return dict.setdefault(self, key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        self._accessed = True
        return dict.pop(self, key) if default is _MISSING else dict.pop(self, key, default)

    def popitem(self) -> tuple[str, Any]:
        self._accessed = True
        return dict.popitem(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._accessed = True
        dict.update(self, *args, **kwargs)

    def clear(self) -> None:
        """Remove all data; the whole session is replaced at save (an empty one is deleted).
        A bound session is unbound: data set after clear() goes to a new, unbound id."""
        self._accessed = True
        intents = self._want()
        intents.cleared = True
        if self._bound():
            intents.bind = (None, None)
            intents.cycle = True
        dict.clear(self)

    def copy(self) -> dict[str, Any]:
        self._accessed = True
        return dict(dict.items(self))

    def __repr__(self) -> str:
        return f"Session({dict.__repr__(self)})"

    # -- middleware plumbing ---------------------------------------------------------------

    def _want(self) -> Intents:
        intents = self._intents
        if intents is None:
            intents = self._intents = Intents()
        return intents

    def _replace(self, data: Iterable[tuple[str, Any]]) -> None:
        """Take another mapping's data as a whole replacement (a framework's set_session)."""
        dict.clear(self)
        dict.update(self, data)
        self._want().cleared = True
        self._accessed = True

    def _settle(self, loaded: Snapshot | None) -> None:
        """After a write: `loaded` is what is stored now (None: nothing), the intents are done."""
        self._loaded = loaded
        intents = self._intents
        if intents is not None:
            intents.cleared = intents.flushed = intents.cycle = intents.expiry_set = False
            intents.expiry = None
