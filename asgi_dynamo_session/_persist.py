"""Turning what a request did to its `Session` into store writes, merging concurrent changes."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from . import codec
from ._ids import log_id, new_id
from ._user_seal import UserSeal
from ._users import Binding, Replaced, UserStore, no_user_store, user_key
from .errors import SessionConflict, StoreError
from .expiry import Expiry, OnSessionEnd, dump_policy, expiry_date, load_policy, window
from .record import Record
from .session import Session
from .store import Clock, RefreshingStore, SessionStore

logger = logging.getLogger("asgi_dynamo_session")


class Cookie(enum.Enum):
    """What the response must do with the cookie after a commit."""

    KEEP = 0  # nothing to send
    REFRESH = 1  # same id: new Max-Age, or re-signed with the newest key
    NEW = 2  # a new id the browser must learn
    EXPIRE = 3  # the session ended: remove the cookie


class Persister:
    """The write side of the middleware: one `commit` per save point of a request."""

    def __init__(
        self,
        store: SessionStore,
        *,
        expiry: Expiry,
        touch_after: timedelta | None,
        absolute_timeout: timedelta | None,
        save_attempts: int,
        clock: Clock,
        seal: UserSeal | None = None,
        max_sessions_per_user: int | None = None,
    ) -> None:
        self.store = store
        self.expiry = expiry
        self.touch_after = touch_after
        self.absolute_timeout = absolute_timeout
        self.save_attempts = save_attempts
        self.clock = clock
        # Checked once: isinstance against a runtime-checkable protocol is slow.
        self._refresher = store if isinstance(store, RefreshingStore) else None
        self._users = store if isinstance(store, UserStore) else None
        self.seal = seal
        self.max_sessions = max_sessions_per_user

    # -- loading ---------------------------------------------------------------------------

    def session(self, record: Record | None, key_index: int = 0) -> Session:
        """A Session for a loaded record (or a new empty one), wired to this persister."""
        if record is None:
            session = Session()
        else:
            session = Session(record.data)
            session._id = record.id
            session._packed = (
                record.packed if record.packed is not None else codec.pack(record.data)
            )
            session._version = record.version
            session._created_at = record.created_at
            session._stored_expiry = record.expiry_date
            session._key_index = key_index
            session._user = record.user
            if record.policy is not None:
                try:
                    session._expiry = load_policy(record.policy)
                except ValueError:
                    logger.warning("session %s has an unknown expiry policy", log_id(record.id))
        session._owner = self
        return session

    def alive(self, record: Record) -> bool:
        """False when the absolute timeout has ended the record, whatever its expiry says."""
        if self.absolute_timeout is None or record.created_at is None:
            return True
        return record.created_at + self.absolute_timeout > self._now_dt()

    # -- users -----------------------------------------------------------------------------

    def user_store(self) -> Any:
        """The store's per-user index methods; SessionError when it has none."""
        if self._users is None or self.seal is None:
            raise no_user_store(self.store)
        return self._users

    def user_id_of(self, binding: Binding) -> str | None:
        """The user id sealed in a binding; None (logged) when no key opens it."""
        user_id = None if self.seal is None else self.seal.open(binding.sealed, binding.user_key)
        if user_id is None:
            logger.warning("a session's user id does not open with the secret keys; unbound")
        return user_id

    def _binding(self, session: Session) -> Binding | None:
        """The binding the session has after this save: a new one from set_user, or its own."""
        if session._bind_to is None:
            return session._user
        user_id, meta = session._bind_to
        if user_id is None:
            return None
        assert self.seal is not None
        key = user_key(user_id)
        return Binding(key, self.seal.seal(user_id, key), meta)

    # -- expiry ----------------------------------------------------------------------------

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def policy(self, session: Session) -> Expiry:
        return session._expiry or self.expiry

    def ends_at(self, session: Session, now: float | None = None) -> datetime:
        """When the session ends if written now: its policy, capped by the absolute timeout."""
        end = expiry_date(self.policy(session), self.clock() if now is None else now)
        if self.absolute_timeout is not None:
            created = session._created_at or self._now_dt()
            end = min(end, created + self.absolute_timeout)
        return end

    def cookie_expires(self, session: Session) -> datetime | None:
        """The cookie's Expires/Max-Age moment; None for a browser-session cookie."""
        if isinstance(self.policy(session), OnSessionEnd):
            return None
        return session._stored_expiry

    def _touch_due(self, session: Session, new_end: datetime) -> bool:
        span = window(self.policy(session))
        if span is None or session._stored_expiry is None:
            return False
        threshold = self.touch_after if self.touch_after is not None else span / 10
        return new_end - session._stored_expiry >= threshold

    # -- writing ---------------------------------------------------------------------------

    async def save_now(self, session: Session) -> None:
        """An explicit `Session.save()`: commit now, keep the cookie action for the response."""
        outcome = await self.commit(session)
        if outcome is not Cookie.KEEP:
            session._pending = outcome

    async def commit(self, session: Session) -> Cookie:
        """Write what the request changed; the cookie action the response must carry."""
        now = self.clock()
        if session._flushed or (session._id is not None and session._cleared and _empty(session)):
            ended = await self._end(session)
            if _empty(session):
                return ended
            session._created_at = None  # data set after flush(): a brand-new session
        if session._id is None:
            if _empty(session):
                return Cookie.KEEP
            await self._create(session, now)
            return Cookie.NEW
        if session._cycle:
            return await self._cycle(session, now)
        packed = codec.pack(session)
        if packed != session._packed or session._expiry_changed or session._cleared:
            if _empty(session):
                return await self._end(session)
            return await self._save(session, packed, now)
        new_end = self.ends_at(session, now)
        if self._touch_due(session, new_end):
            return await self._touch(session, new_end)
        return Cookie.REFRESH if session._key_index else Cookie.KEEP

    def _record(self, session: Session, session_id: str, packed: bytes, now: float) -> Record:
        return Record(
            id=session_id,
            data=dict(dict.items(session)),
            expiry_date=self.ends_at(session, now),
            version=session._version,
            created_at=session._created_at,
            policy=None if session._expiry is None else dump_policy(session._expiry),
            packed=packed,
            user=session._user,
        )

    def _adopt(self, session: Session, record: Record) -> None:
        session._settle(record.id, record.packed)
        session._user = record.user
        session._bind_to = None
        session._version = record.version
        session._created_at = record.created_at
        session._stored_expiry = record.expiry_date
        session._key_index = 0

    async def _create(self, session: Session, now: float) -> None:
        """Store the data under a fresh id (keeping the creation time of a cycled session)."""
        if session._created_at is None:
            session._created_at = datetime.fromtimestamp(now, timezone.utc)
        record = self._record(session, new_id(), codec.pack(session), now)
        record.version = 0
        record.user = self._binding(session)
        if record.user is not None:
            await self.user_store().bind(record, max_sessions=self.max_sessions)
        else:
            await self.store.create(record)
        self._adopt(session, record)

    async def _end(self, session: Session) -> Cookie:
        old = session._id
        if old is not None and session._user is not None and self._users is not None:
            await self._users.delete_bound(old, session._user.user_key)
        elif old is not None:
            await self.store.delete(old)
        _forget(session)
        return Cookie.EXPIRE if old is not None or session._had_cookie else Cookie.KEEP

    async def _gone(self, session: Session, what: str) -> Cookie:
        logger.warning(
            "session %s was deleted meanwhile; %s dropped, cookie expired",
            log_id(session._id),
            what,
        )
        dict.clear(session)  # else the late commit at body end would create it under a new id
        _forget(session)
        session._bind_to = None
        return Cookie.EXPIRE

    async def _cycle(self, session: Session, now: float) -> Cookie:
        old = session._id
        assert old is not None
        if session._user is not None or self._binding(session) is not None:
            return await self._rebind(session, now)
        if self._refresher is not None:
            taken = await self._refresher.take(old)
        else:
            taken = await self.store.load(old) is not None
            await self.store.delete(old)
        if not taken:
            return await self._gone(session, "id cycle")
        await self._create(session, now)
        logger.info("session %s cycled to %s", log_id(old), log_id(session._id))
        return Cookie.NEW

    async def _rebind(self, session: Session, now: float) -> Cookie:
        """A cycle where a user binding is involved: one `bind` that takes the old item (at
        the version loaded), writes the new one and updates the users' indexes."""
        old = session._id
        assert old is not None
        store = self.user_store()
        binding = self._binding(session)
        for attempt in range(self.save_attempts):
            if session._created_at is None:
                session._created_at = datetime.fromtimestamp(now, timezone.utc)
            record = self._record(session, new_id(), codec.pack(session), now)
            record.version = 0
            record.user = binding
            taken = Replaced(
                old, session._version, None if session._user is None else session._user.user_key
            )
            cap = self.max_sessions if binding is not None else None
            try:
                await store.bind(record, replaces=taken, max_sessions=cap)
            except SessionConflict as conflict:
                current = conflict.current
                if current is None or not self.alive(current):
                    return await self._gone(session, "id cycle")
                merged = self._rebase(session, record, current, now)
                dict.clear(session)
                dict.update(session, merged.data)
                session._packed = codec.pack(current.data)
                session._user = current.user
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))
                continue
            self._adopt(session, record)
            logger.info("session %s cycled to %s", log_id(old), log_id(session._id))
            return Cookie.NEW
        raise StoreError(f"session id cycle gave up after {self.save_attempts} conflicting writes")

    async def _touch(self, session: Session, new_end: datetime) -> Cookie:
        session_id = session._id
        assert session_id is not None
        if self._refresher is not None:
            if session._user is not None and self._users is not None:
                live = await self._users.touch(session_id, new_end, seen=True)
            else:
                live = await self._refresher.touch(session_id, new_end)
            if not live:
                return await self._gone(session, "expiry refresh")
            session._stored_expiry = new_end
            return Cookie.REFRESH
        packed = session._packed if session._packed is not None else codec.pack(session)
        return await self._save(session, packed, self.clock())

    async def _save(self, session: Session, packed: bytes, now: float) -> Cookie:
        session_id = session._id
        assert session_id is not None
        if session._created_at is None:  # an item written without one (older stores)
            session._created_at = datetime.fromtimestamp(now, timezone.utc)
        record = self._record(session, session_id, packed, now)
        for attempt in range(self.save_attempts):
            try:
                await self.store.save(record)
            except SessionConflict as conflict:
                current = conflict.current
                if current is None or not self.alive(current):
                    return await self._gone(session, "save")
                record = self._rebase(session, record, current, now)
                if not record.data:
                    session._settle(session_id, None)
                    return await self._end(session)
                logger.info(
                    "session %s changed meanwhile; merged (try %d)", log_id(session_id), attempt + 1
                )
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))
                continue
            if attempt:
                dict.clear(session)
                dict.update(session, record.data)
            self._adopt(session, record)
            return Cookie.REFRESH
        raise StoreError(f"session save gave up after {self.save_attempts} conflicting writes")

    def _rebase(self, session: Session, mine: Record, current: Record, now: float) -> Record:
        """This request's changes replayed on the stored record that won the race."""
        if session._cleared:
            data = dict(dict.items(session))  # a whole replacement wins as a whole
        else:
            before = codec.unpack(session._packed) if session._packed is not None else {}
            data = merge(before, dict(dict.items(session)), current.data)
        session._version = current.version
        session._created_at = current.created_at or session._created_at
        return Record(
            id=mine.id,
            data=data,
            expiry_date=self.ends_at(session, now),
            version=current.version,
            created_at=session._created_at,
            policy=mine.policy if session._expiry_changed else current.policy,
            packed=codec.pack(data),
        )


def _forget(session: Session) -> None:
    """The session has no stored item any more."""
    session._settle(None, None)
    session._version = 0
    session._stored_expiry = None
    session._user = None


def _empty(session: Session) -> bool:
    """Emptiness without marking the session accessed; a session bound to a user (or about to
    be) is not empty."""
    if dict.__len__(session):
        return False
    if session._bind_to is not None:
        return session._bind_to[0] is None
    return session._user is None


def merge(
    before: Mapping[str, Any], after: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    """Three-way merge by key: the keys this request set or deleted win over `theirs`."""
    merged = dict(theirs)
    for key in before.keys() - after.keys():
        merged.pop(key, None)
    for key, value in after.items():
        if key not in before or codec.pack({key: value}) != codec.pack({key: before[key]}):
            merged[key] = value
    return merged
