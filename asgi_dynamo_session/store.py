"""The store protocol the middleware talks to, and `MemoryStore`, an in-process implementation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from . import codec
from ._ids import hash_id, log_id, new_id
from ._seal import EncryptionKeys
from ._users import Binding, Replaced, SessionInfo, handle_of, newest_first, unpack_meta, user_key
from .errors import SessionConflict, SessionTooLarge, StoreError
from .record import Record

Clock = Callable[[], float]

logger = logging.getLogger("asgi_dynamo_session")


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Writes are conditional so that concurrent requests never lose data."""

    async def create(self, record: Record) -> None:
        """Store a new record (version 0 becomes 1); on an id collision pick a fresh id."""
        ...

    async def save(self, record: Record) -> None:
        """Overwrite the record if it is stored at `record.version` and unexpired, else raise
        `SessionConflict` with the current record (None when gone); bumps `record.version`."""
        ...

    async def load(self, session_id: str) -> Record | None:
        """The record, or None when it is missing or its expiry has passed."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the record if present."""
        ...


@runtime_checkable
class RefreshingStore(SessionStore, Protocol):
    """A store with the finer writes the middleware uses when it can: renewing an expiry alone,
    ending a session by moving it, and deleting one only if nobody changed it meanwhile.

    Like `save`, each raises `SessionConflict` (current record, None when gone) when the stored
    record is not at `record.version` or not live.
    """

    async def touch(self, record: Record) -> None:
        """Set the stored expiry to `record.expiry_date`, nothing else."""
        ...

    async def take(self, session_id: str) -> Record | None:
        """End the live record and return it as it was; None when it was not live. The ended
        record is kept (never loaded or written) until `delete` or `restore`."""
        ...

    async def remove(self, record: Record) -> None:
        """Delete the record."""
        ...

    async def restore(self, taken: Record) -> None:
        """Undo a `take` whose move failed: the record `take` returned is live again."""
        ...


#: DynamoDB's hard limit on one item (attribute names plus values), which MemoryStore keeps too.
ITEM_LIMIT = 400 * 1024
#: What the default table layout adds to a payload: the key, expiry, version, write tokens and
#: creation time with their names (MemoryStore counts it, so it refuses what DynamoDB would).
_LAYOUT = 300

#: How far a writer's clock may lag and still never revive a session others consider ended.
DEFAULT_CLOCK_SKEW = timedelta(seconds=5)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds (what DynamoDB's TTL attribute holds), rounded up."""
    stamp = moment.timestamp()
    whole = int(stamp)
    return whole + 1 if whole < stamp else whole


class _Entry:
    __slots__ = ("created_at", "expires", "payload", "policy", "seen", "user", "version")

    def __init__(
        self, record: Record, payload: bytes, expires: int, version: int, seen: float
    ) -> None:
        self.payload = payload  # as DynamoDBStore would store it: format byte, maybe sealed
        self.expires = expires
        self.version = version
        self.created_at = record.created_at
        self.policy = record.policy
        self.user = record.user
        self.seen = seen


class _IndexEntry:
    """One session in a user's index: when it was created and bound, and the app's meta."""

    __slots__ = ("bound", "created", "meta")

    def __init__(self, created: float, bound: float, meta: bytes | None) -> None:
        self.created = created
        self.bound = bound
        self.meta = meta


class MemoryStore:
    """Sessions in a dict of this process, with the same semantics as `DynamoDBStore`.

    Meant for tests and prototypes: data is lost on restart and not shared between workers.
    `encryption_keys`, `accept_plaintext` and `max_data_size` work as on `DynamoDBStore`.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        create_key_max_retry_attempts: int = 5,
        clock_skew: timedelta | None = None,
        encryption_keys: EncryptionKeys | None = None,
        accept_plaintext: bool = False,
        max_data_size: int = codec.MAX_DATA_SIZE,
        max_item_size: int = ITEM_LIMIT,
        compress_above: int | None = 8 * 1024,
    ):
        self._items: dict[str, _Entry] = {}
        self._index: dict[str, dict[str, _IndexEntry]] = {}  # user key -> session id -> entry
        self._ended: dict[str, _Entry] = {}  # taken, not yet deleted or restored
        self._clock = clock
        self._retries = create_key_max_retry_attempts
        #: Writes need the stored expiry later than now plus this (None: the middleware's).
        self.clock_skew = clock_skew
        self.max_item_size = max_item_size
        self._framing = codec.Framing(
            compress_above=compress_above,
            max_data_size=max_data_size,
            encryption_keys=encryption_keys,
            accept_plaintext=accept_plaintext,
        )
        self._codec = codec.DEFAULT

    def _use_codec(self, chosen: codec.Codec) -> None:
        """Decode with the codec (registered types) of the middleware that uses this store."""
        self._codec = codec.bind(self._codec, chosen)

    def _margin(self) -> float:
        return (self.clock_skew or DEFAULT_CLOCK_SKEW).total_seconds()

    def _live(self, session_id: str, margin: float = 0.0) -> _Entry | None:
        entry = self._items.get(session_id)
        if entry is None or entry.expires <= self._clock() + margin:
            return None
        return entry

    def _record(self, session_id: str, entry: _Entry) -> Record | None:
        """The record of an entry, or None when its payload cannot be read (logged)."""
        try:
            packed = self._framing.load(entry.payload, session_id.encode)
            data, whole = self._codec.load(packed)
        except ValueError as exc:
            logger.warning("unreadable session %s ignored: %s", log_id(session_id), exc)
            return None
        record = Record(
            id=session_id,
            data=data,
            expiry_date=datetime.fromtimestamp(entry.expires, timezone.utc),
            version=entry.version,
            created_at=entry.created_at,
            policy=entry.policy,  # no `packed`: the caller may change `data` before save()
            user=entry.user,
        )
        if whole:
            record._snapshot = bytes(packed)
        return record

    def _entry(self, record: Record, version: int) -> _Entry:
        packed = record.packed if record.packed is not None else self._codec.pack(record.data)
        payload = self._framing.dump(packed, record.id.encode)
        size = len(payload) + _LAYOUT + len(record.policy or "")
        if size > self.max_item_size:
            raise SessionTooLarge(size, self.max_item_size)
        return _Entry(record, payload, epoch(record.expiry_date), version, self._clock())

    def _writable(self, record: Record) -> _Entry:
        """The entry a conditional write of `record` may replace, else `SessionConflict`."""
        entry = self._live(record.id, self._margin())
        if entry is None or entry.version != record.version:
            raise SessionConflict(None if entry is None else self._record(record.id, entry))
        return entry

    async def create(self, record: Record) -> None:
        for _ in range(self._retries + 1):
            if self._live(record.id) is None:
                self._items[record.id] = self._entry(record, 1)
                record.version = 1
                return
            record.id = new_id()
        raise StoreError("could not find a free session id")

    async def save(self, record: Record) -> None:
        self._writable(record)
        self._items[record.id] = self._entry(record, record.version + 1)
        record.version += 1

    async def load(self, session_id: str) -> Record | None:
        entry = self._live(session_id)
        return None if entry is None else self._record(session_id, entry)

    async def delete(self, session_id: str) -> None:
        self._items.pop(session_id, None)
        self._ended.pop(session_id, None)

    async def touch(self, record: Record) -> None:
        entry = self._writable(record)
        entry.expires = epoch(record.expiry_date)
        entry.seen = self._clock()

    async def take(self, session_id: str) -> Record | None:
        entry = self._live(session_id, self._margin())
        if entry is None:
            return None
        self._ended[session_id] = self._items.pop(session_id)
        return self._record(session_id, entry)

    async def restore(self, taken: Record) -> None:
        entry = self._ended.pop(taken.id, None)
        if entry is not None:
            entry.version += 1
            self._items[taken.id] = entry

    async def remove(self, record: Record) -> None:
        if record.id not in self._items:
            return  # gone is what was asked for, whoever removed it (as DynamoDBStore)
        self._writable(record)
        del self._items[record.id]

    # -- users and devices: the same semantics as DynamoDBStore's per-user index -----------

    def _owned(self, session_id: str, user: str) -> _Entry | None:
        entry = self._live(session_id)
        if entry is None or entry.user is None or entry.user.user_key != user:
            return None
        return entry

    async def user_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest first (entries of dead sessions are pruned)."""
        user = user_key(user_id)
        index = self._index.get(user, {})
        listed: list[tuple[float, SessionInfo]] = []
        for session_id, mark in list(index.items()):
            entry = self._owned(session_id, user)
            if entry is None:
                del index[session_id]
                continue
            created = entry.created_at.timestamp() if entry.created_at else mark.created
            info = SessionInfo(
                handle=handle_of(hash_id(session_id)),
                created_at=datetime.fromtimestamp(created, timezone.utc),
                expires_at=datetime.fromtimestamp(entry.expires, timezone.utc),
                last_seen=datetime.fromtimestamp(entry.seen, timezone.utc),
                current=False,
                meta=unpack_meta(mark.meta),
            )
            listed.append((mark.bound, info))
        if not index:
            self._index.pop(user, None)
        return newest_first(listed)

    def _end_listed(self, user: str, session_ids: list[str]) -> list[str]:
        """End those of `session_ids` that are live sessions of `user`; their hashed ids."""
        index = self._index.get(user, {})
        ended: list[str] = []
        for session_id in session_ids:
            if self._owned(session_id, user) is not None:
                del self._items[session_id]
                ended.append(hash_id(session_id))
            index.pop(session_id, None)
        if not index:
            self._index.pop(user, None)
        return ended

    async def revoke_user(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user but `keep` (a session id); how many were live."""
        return len(await self._revoke_user(user_id, keep))

    async def _revoke_user(self, user_id: str, keep: str | None) -> list[str]:
        """`revoke_user`, telling the hashed ids of the sessions it ended."""
        user = user_key(user_id)
        targets = [sid for sid in self._index.get(user, {}) if sid != keep]
        return self._end_listed(user, targets)

    async def revoke(self, user_id: str, handle: str) -> bool:
        """End the user's session with this `SessionInfo.handle`; False when none was live."""
        user = user_key(user_id)
        targets = [sid for sid in self._index.get(user, {}) if handle_of(hash_id(sid)) == handle]
        return bool(self._end_listed(user, targets))

    def session_handle(self, session_id: str) -> str:
        """The `SessionInfo.handle` the listing gives this session."""
        return handle_of(hash_id(session_id))

    async def bind(
        self, record: Record, *, replaces: Replaced | None = None, max_sessions: int | None = None
    ) -> None:
        """Create a (bound or unbound) session, end `replaces` and the user's surplus, and
        keep the index in step: all at once, like DynamoDBStore's one transaction."""
        binding: Binding | None = record.user
        if binding is None and replaces is None:
            raise ValueError("bind() needs a user binding or a session to replace")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if replaces is not None:
            old = self._live(replaces.id, self._margin())
            if old is None or old.version != replaces.version:
                raise SessionConflict(None if old is None else self._record(replaces.id, old))
        for _ in range(self._retries + 1):
            if self._live(record.id) is None:
                break
            record.id = new_id()
        else:
            raise StoreError("could not find a free session id")
        now = self._clock()
        if replaces is not None:
            del self._items[replaces.id]
            if replaces.user_key is not None:
                self._end_listed(replaces.user_key, [replaces.id])
        if binding is not None:
            index = self._index.setdefault(binding.user_key, {})
            if max_sessions is not None:
                live = sorted(
                    (sid for sid in index if self._owned(sid, binding.user_key) is not None),
                    key=lambda sid: (index[sid].created, index[sid].bound),
                )
                surplus = live[: max(0, len(live) + 1 - max_sessions)]
                record._ended = self._end_listed(binding.user_key, surplus)
                index = self._index.setdefault(binding.user_key, {})
            created = record.created_at.timestamp() if record.created_at else now
            index[record.id] = _IndexEntry(created, now, binding.meta)
        self._items[record.id] = self._entry(record, 1)
        record.version = 1

    async def delete_bound(self, session_id: str, user: str) -> None:
        """Delete a bound session and its entry in the user's index."""
        self._items.pop(session_id, None)
        index = self._index.get(user)
        if index is not None:
            index.pop(session_id, None)
            if not index:
                del self._index[user]
