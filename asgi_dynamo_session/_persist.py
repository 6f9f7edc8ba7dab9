"""Turning what a request did to its `Session` into store writes, merging concurrent changes."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from . import _telemetry
from ._ids import log_id, new_id
from ._user_seal import UserSeal
from ._users import Binding, Replaced, UserStore, no_user_store, user_key
from .codec import DEFAULT, Codec
from .errors import SessionConflict, StoreError
from .events import OnEvent, notify
from .expiry import Expiry, OnSessionEnd, dump_policy, expiry_date, load_policy, window
from .record import Record
from .session import NO_COOKIE, Session, Snapshot
from .store import Clock, RefreshingStore, SessionStore

logger = logging.getLogger("asgi_dynamo_session")


class Cookie(enum.Enum):
    """What the response must do with the cookie after a commit."""

    KEEP = 0  # nothing to send
    REFRESH = 1  # same id: new Max-Age, or re-signed with the newest key
    NEW = 2  # a new id the browser must learn
    EXPIRE = 3  # the session ended: remove the cookie


#: A commit's cookie action and the one clock reading that dates it (Max-Age, Expires, item).
Outcome = tuple[Cookie, float]

#: This request's own changes: keys set (with their values) and keys removed.
Changes = tuple[dict[str, Any], set[str]]


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
        on_event: OnEvent | None = None,
        seal: UserSeal | None = None,
        max_sessions_per_user: int | None = None,
        codec: Codec = DEFAULT,
    ) -> None:
        self.store = store
        self.codec = codec
        self.on_event = on_event
        self.expiry = expiry
        self.touch_after = touch_after
        self.absolute_timeout = absolute_timeout
        self.save_attempts = save_attempts
        self.clock = clock
        # Checked once: isinstance against a runtime-checkable protocol is slow.
        self._fine = store if isinstance(store, RefreshingStore) else None
        self._users = store if isinstance(store, UserStore) else None
        self.seal = seal
        self.max_sessions = max_sessions_per_user

    # -- loading ---------------------------------------------------------------------------

    def session(self, record: Record | None, key_index: int = 0) -> Session | None:
        """A Session for a loaded record wired to this persister; None for a record that is
        unreadable or past its absolute timeout."""
        session = Session() if record is None else Session(record.data)
        if record is not None:
            snapshot = self._snapshot(record)
            if snapshot is None:
                return None
            session._loaded = snapshot
            session._cookie = key_index
        session._owner = self
        return session

    def _snapshot(self, record: Record, packed: bytes | None = None) -> Snapshot | None:
        if not self.alive(record):
            logger.info("session %s passed its absolute timeout", log_id(record.id))
            return None
        try:
            policy = None if record.policy is None else load_policy(record.policy)
        except ValueError as exc:
            logger.warning("session %s ignored: %s", log_id(record.id), exc)
            return None
        if packed is None:
            packed = record._snapshot or (
                record.packed if record.packed is not None else self.codec.pack(record.data)
            )
        return Snapshot(
            id=record.id,
            packed=packed,
            version=record.version,
            created_at=record.created_at,
            expires=record.expiry_date,
            policy=policy,
            user=record.user,
            tokens=record._tokens,
        )

    def alive(self, record: Record) -> bool:
        """False when the absolute timeout has ended the record, whatever its expiry says."""
        if self.absolute_timeout is None or record.created_at is None:
            return True
        return record.created_at + self.absolute_timeout > _moment(self.clock())

    # -- users -----------------------------------------------------------------------------

    def user_store(self) -> Any:
        """The store's per-user index methods; SessionError when it has none."""
        if self._users is None or self.seal is None:
            raise no_user_store(self.store)
        return self._users

    def _user_of(self, snapshot: Snapshot | None) -> str | None:
        """The user a stored session is bound to, for events (None when unbound)."""
        if self.on_event is None or snapshot is None or snapshot.user is None:
            return None
        return self.user_id_of(snapshot.user)

    async def _capped(self, record: Record) -> None:
        """Tell `on_event` of the sessions `max_sessions_per_user` ended for a bind."""
        if record._ended and record.user is not None and self.on_event is not None:
            user_id = self.user_id_of(record.user)
            if user_id is not None:
                await self.revoked(record._ended, user_id)

    async def revoked(self, keys: list[str], user_id: str) -> None:
        """Tell `on_event` of sessions a request revoked (`revoke_others`), by hashed id."""
        for key in keys:
            await notify(self.on_event, "revoked", key, user_id=user_id, hashed=True)

    def user_id_of(self, binding: Binding) -> str | None:
        """The user id sealed in a binding; None (logged) when no key opens it."""
        user_id = None if self.seal is None else self.seal.open(binding.sealed, binding.user_key)
        if user_id is None:
            logger.warning("a session's user id does not open with the secret keys; unbound")
        return user_id

    def _binding(self, session: Session) -> Binding | None:
        """The binding the session has after this write: set_user's, else the stored one."""
        intents = session._intents
        if intents is None or intents.bind is None:
            return None if session._loaded is None else session._loaded.user
        user_id, meta = intents.bind
        if user_id is None:
            return None
        assert self.seal is not None
        key = user_key(user_id)
        return Binding(key, self.seal.seal(user_id, key), meta)

    # -- expiry ----------------------------------------------------------------------------

    def ends_at(self, session: Session, now: float | None = None) -> datetime:
        """When the session ends if written now: its policy, capped by the absolute timeout."""
        created = None if session._loaded is None else session._loaded.created_at
        return self._ends(session.expiry, created, self.clock() if now is None else now)

    def _ends(self, policy: Expiry | None, created: datetime | None, now: float) -> datetime:
        end = expiry_date(policy or self.expiry, now)
        if self.absolute_timeout is not None:
            end = min(end, (created or _moment(now)) + self.absolute_timeout)
        return end

    def cookie_expires(self, session: Session) -> datetime | None:
        """The cookie's Expires/Max-Age moment; None for a browser-session cookie."""
        if isinstance(session.expiry or self.expiry, OnSessionEnd) or session._loaded is None:
            return None
        return session._loaded.expires

    def _touch_due(self, loaded: Snapshot, new_end: datetime) -> bool:
        span = window(loaded.policy or self.expiry)
        if span is None:
            return False
        threshold = self.touch_after if self.touch_after is not None else span / 10
        return new_end - loaded.expires >= threshold

    # -- writing ---------------------------------------------------------------------------

    async def save_now(self, session: Session) -> None:
        """An explicit `Session.save()`: commit now, keep the cookie action for the response."""
        outcome = await self.commit(session)
        if outcome[0] is not Cookie.KEEP:
            session._want().pending = outcome

    async def commit(self, session: Session) -> Outcome:
        """Write what the request changed; the cookie action the response must carry."""
        now = self.clock()
        intents = session._intents
        if intents is not None and (
            intents.flushed or (intents.cleared and session._loaded is not None and _empty(session))
        ):
            ended = await self._end(session)
            if _empty(session):
                return ended, now
        loaded = session._loaded
        if loaded is None:
            if not _empty(session):
                await self._create(session, dict(dict.items(session)), None, now)
                await notify(
                    self.on_event, "created", _id(session), user_id=self._user_of(session._loaded)
                )
                return Cookie.NEW, now
            if session._cookie == NO_COOKIE:
                return Cookie.KEEP, now
            session._cookie = NO_COOKIE  # a dead cookie: expire it, once
            return Cookie.EXPIRE, now
        if intents is not None and intents.cycle:
            return await self._cycle(session, loaded, now), now
        packed, plain = self.codec.pack_flagged(session)
        if packed != loaded.packed or (intents is not None and intents.any()):
            session._plain = None
            return await self._write(session, loaded, packed, now), now
        session._plain = packed if plain else None  # unchanged: what the late check compares
        new_end = self._ends(loaded.policy, loaded.created_at, now)
        if self._touch_due(loaded, new_end):
            return await self._touch(session, loaded, new_end, now), now
        return self._unchanged(session), now

    def _unchanged(self, session: Session) -> Cookie:
        """Nothing to write: re-sign a cookie an older key signed, else send nothing."""
        return Cookie.REFRESH if session._cookie > 0 else Cookie.KEEP

    def _policy(self, session: Session, base: Snapshot | None) -> Expiry | None:
        """The session's own policy: this request's set_expiry, else the stored one."""
        intents = session._intents
        if intents is not None and intents.expiry_set:
            return intents.expiry
        return None if base is None else base.policy

    def _record(
        self,
        session: Session,
        session_id: str,
        base: Snapshot | None,
        data: dict[str, Any],
        packed: bytes,
        now: float,
    ) -> Record:
        """The record to write: `data` on top of the stored state `base` (None: a new one)."""
        policy = self._policy(session, base)
        created = None if base is None else base.created_at
        record = Record(
            id=session_id,
            data=data,
            expiry_date=self._ends(policy, created, now),
            version=0 if base is None else base.version,
            created_at=created or _moment(now),
            policy=None if policy is None else dump_policy(policy),
            packed=packed,
            user=None if base is None else base.user,
        )
        record._tokens = None if base is None else base.tokens
        return record

    def _settled(self, session: Session, record: Record, data: dict[str, Any]) -> None:
        """The write of `record` succeeded: it is what the session now stands for."""
        # Always take `data` as it was written: a merge may give equal data in another key
        # order, whose encoding would differ from `packed` and look like a change to save again.
        dict.clear(session)
        dict.update(session, data)
        packed = record.packed if record.packed is not None else self.codec.pack(data)
        policy = None if record.policy is None else load_policy(record.policy)
        session._settle(
            Snapshot(
                record.id,
                packed,
                record.version,
                record.created_at,
                record.expiry_date,
                policy,
                record.user,
                record._tokens,
            )
        )
        session._cookie = 0
        if session._intents is not None:
            session._intents.bind = None

    async def _create(
        self, session: Session, data: dict[str, Any], base: Snapshot | None, now: float
    ) -> None:
        """Store `data` under a fresh id (keeping the creation time and policy of `base`)."""
        record = self._record(session, new_id(), base, data, self.codec.pack(data), now)
        record.version = 0
        record._tokens = None  # a new item: no history
        record.user = self._binding(session) if base is None else None
        if record.user is not None:
            await self.user_store().bind(record, max_sessions=self.max_sessions)
            await self._capped(record)
        else:
            await self.store.create(record)
        _telemetry.count("create")
        self._settled(session, record, data)

    async def _end(self, session: Session) -> Cookie:
        """flush(), or clear() leaving nothing: delete the item whatever happened to it."""
        old = session.id
        user = None if session._loaded is None else session._loaded.user
        who = self._user_of(session._loaded)
        if old is not None and user is not None and self._users is not None:
            await self._users.delete_bound(old, user.user_key)
            await notify(self.on_event, "ended", old, user_id=who)
        elif old is not None:
            await self.store.delete(old)
            await notify(self.on_event, "ended", old, user_id=who)
        had_cookie = old is not None or session._cookie != NO_COOKIE
        _forget(session)
        return Cookie.EXPIRE if had_cookie else Cookie.KEEP

    async def _gone(self, session: Session, what: str) -> Cookie:
        lost = session.id
        who = self._user_of(session._loaded)
        logger.warning(
            "session %s was deleted meanwhile; %s dropped, cookie expired", log_id(lost), what
        )
        dict.clear(session)  # else the late commit at body end would create it under a new id
        _forget(session)
        if session._intents is not None:
            session._intents.bind = None
        if lost is not None:
            await notify(self.on_event, "lost_race", lost, user_id=who)
        return Cookie.EXPIRE

    def _changes(self, session: Session, loaded: Snapshot) -> Changes | None:
        """This request's per-key changes against what it loaded; None for a whole replacement."""
        if session._intents is not None and session._intents.cleared:
            return None
        before = self.codec.unpack(loaded.packed)
        after = dict(dict.items(session))
        changed = {
            key: value
            for key, value in after.items()
            if key not in before
            or self.codec.pack({key: value}) != self.codec.pack({key: before[key]})
        }
        return changed, before.keys() - after.keys()

    async def _cycle(self, session: Session, loaded: Snapshot, now: float) -> Cookie:
        """Move the session to a new id: create it first (so data that cannot be stored leaves
        the old session untouched), then take the old item; if another request wrote to it after
        this one loaded, the new item gets that write too, with this request's changes on top.
        Any failure after the take undoes it, so a failed login leaves the old session as it was.
        """
        if loaded.user is not None or self._binding(session) is not None:
            return await self._rebind(session, loaded, now)
        changes = self._changes(session, loaded)
        mine = dict(dict.items(session))
        if not mine:  # everything removed at login: the session ends as a whole
            return await self._end(session)
        intents = session._want()
        own = (intents.cleared, intents.expiry_set, intents.expiry)
        await self._create(session, mine, loaded, now)
        new = session._loaded
        assert new is not None

        def undo() -> None:  # the request's state as before the cycle, to save or retry again
            session._loaded = loaded
            intents.cycle = True
            intents.cleared, intents.expiry_set, intents.expiry = own

        try:
            if self._fine is not None:
                taken = await self._fine.take(loaded.id)
            else:
                taken = await self.store.load(loaded.id)
                if taken is not None:
                    await self.store.delete(loaded.id)
        except StoreError:
            await self._discard(new.id)
            undo()
            raise
        base = None if taken is None else self._snapshot(taken)
        if taken is None or base is None:
            await self._discard(new.id)
            session._loaded = loaded  # what was lost is the old session
            return await self._gone(session, "id cycle")
        data = mine if changes is None else _apply(changes, taken.data)
        packed = self.codec.pack(data)
        if own[1]:
            base = replace(base, policy=new.policy)
        try:
            if packed != new.packed or base.policy != new.policy:
                record = self._record(session, new.id, base, data, packed, now)
                record.version = new.version  # nobody else knows the new id
                record._tokens = new.tokens
                await self.store.save(record)
                self._settled(session, record, data)
        except (StoreError, SessionConflict) as exc:
            if self._fine is not None:
                await self._restore(taken)
            await self._discard(new.id)
            undo()
            raise StoreError(f"session id cycle not completed: {exc}") from exc
        await self._discard(loaded.id)  # the taken item
        logger.info("session %s cycled to %s", log_id(loaded.id), log_id(new.id))
        await notify(
            self.on_event, "cycled", new.id, previous=loaded.id, user_id=self._user_of(new)
        )
        return Cookie.NEW

    async def _rebind(self, session: Session, loaded: Snapshot, now: float) -> Cookie:
        """A cycle where a user binding is involved (set_user, or cycle_id on a bound session):
        one `bind` takes the old item at the version loaded, writes the new one and updates the
        users' indexes; a write that landed meanwhile is merged and the bind tried again."""
        store = self.user_store()
        binding = self._binding(session)
        changes = self._changes(session, loaded)
        data = dict(dict.items(session))
        base = loaded
        for attempt in range(self.save_attempts):
            if not data and binding is None:  # unbound and empty: nothing left to keep
                return await self._end(session)
            record = self._record(session, new_id(), base, data, self.codec.pack(data), now)
            record.version = 0
            record._tokens = None  # a new item: no history
            record.user = binding
            old_user = None if base.user is None else base.user.user_key
            taken = Replaced(loaded.id, base.version, old_user)
            cap = self.max_sessions if binding is not None else None
            try:
                await store.bind(record, replaces=taken, max_sessions=cap)
                await self._capped(record)
            except SessionConflict as conflict:
                current = conflict.current
                rebased = None if current is None else self._snapshot(current)
                if current is None or rebased is None:
                    return await self._gone(session, "id cycle")
                base = replace(rebased, id=loaded.id)
                if changes is not None:
                    data = _apply(changes, current.data)
                logger.info(
                    "session %s changed meanwhile; merged (try %d)", log_id(loaded.id), attempt + 1
                )
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))
                continue
            _telemetry.count("create")
            self._settled(session, record, data)
            logger.info("session %s cycled to %s", log_id(loaded.id), log_id(session.id))
            await notify(
                self.on_event,
                "cycled",
                _id(session),
                previous=loaded.id,
                user_id=self._user_of(session._loaded),
            )
            return Cookie.NEW
        raise StoreError(f"session id cycle gave up after {self.save_attempts} conflicting writes")

    async def _restore(self, taken: Record) -> None:
        """Undo a take; best effort (if it fails, the old session stays ended: fails closed)."""
        assert self._fine is not None
        try:
            await self._fine.restore(taken)
        except StoreError as exc:
            logger.warning(
                "session %s not restored after a failed cycle: %s", log_id(taken.id), exc
            )

    async def _discard(self, session_id: str) -> None:
        """Remove an item no cookie will name (a cycle's taken item, or the new one of a failed
        cycle); best effort: a taken item is never loaded, and both expire."""
        try:
            await self.store.delete(session_id)
        except StoreError as exc:
            logger.warning("unused session item %s left to expire: %s", log_id(session_id), exc)

    async def _touch(
        self, session: Session, loaded: Snapshot, new_end: datetime, now: float
    ) -> Cookie:
        if self._fine is None:
            return await self._write(session, loaded, loaded.packed, now)
        record = Record(
            id=loaded.id,
            data={},
            expiry_date=new_end,
            version=loaded.version,
            packed=b"",
            user=loaded.user,  # a bound item's refresh also stamps its last_seen
        )
        try:
            await self._fine.touch(record)
        except SessionConflict as conflict:
            current = conflict.current
            if current is None or not self.alive(current):
                return await self._gone(session, "expiry refresh")
            return self._unchanged(session)  # written meanwhile: that write set the expiry
        session._loaded = replace(loaded, expires=new_end)
        _telemetry.count("touch")
        return Cookie.REFRESH

    async def _write(self, session: Session, loaded: Snapshot, packed: bytes, now: float) -> Cookie:
        """A conditional save (or, for data emptied key by key, a conditional delete); on a lost
        race, this request's changes are replayed on the record that won."""
        changes = self._changes(session, loaded)
        data = dict(dict.items(session))
        base = loaded
        for attempt in range(self.save_attempts):
            record = self._record(session, loaded.id, base, data, packed, now)
            try:
                if data or loaded.user is not None:  # a bound session stays, even empty
                    await self.store.save(record)
                elif self._fine is not None:
                    await self._fine.remove(record)
                else:
                    await self.store.delete(record.id)
            except SessionConflict as conflict:
                current = conflict.current
                rebased = None if current is None else self._snapshot(current)
                if current is None or rebased is None:
                    return await self._gone(session, "save")
                base = rebased
                if changes is not None:
                    data = _apply(changes, current.data)
                    packed = self.codec.pack(data)
                logger.info(
                    "session %s changed meanwhile; merged (try %d)", log_id(loaded.id), attempt + 1
                )
                _telemetry.count("merge")
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))
                continue
            if not data and loaded.user is None:
                _forget(session)
                await notify(self.on_event, "ended", loaded.id, user_id=self._user_of(loaded))
                return Cookie.EXPIRE
            _telemetry.count("save")
            self._settled(session, record, data)
            return Cookie.REFRESH
        raise StoreError(f"session save gave up after {self.save_attempts} conflicting writes")


def _moment(now: float) -> datetime:
    return datetime.fromtimestamp(now, timezone.utc)


def _id(session: Session) -> str:
    session_id = session.id
    assert session_id is not None
    return session_id


def _forget(session: Session) -> None:
    """The session has no stored item any more (and the response removes the cookie)."""
    session._settle(None)
    session._cookie = NO_COOKIE


def _empty(session: Session) -> bool:
    """Emptiness without marking the session accessed; a session bound to a user (or about to
    be) is not empty."""
    if dict.__len__(session):
        return False
    intents = session._intents
    if intents is not None and intents.bind is not None:
        return intents.bind[0] is None
    return session._loaded is None or session._loaded.user is None


def _apply(changes: Changes, theirs: Mapping[str, Any]) -> dict[str, Any]:
    """This request's per-key changes replayed on `theirs`: the keys it set or removed win."""
    changed, removed = changes
    merged = {key: value for key, value in theirs.items() if key not in removed}
    merged.update(changed)
    return merged
