"""The store protocol the middleware talks to, and `MemoryStore`, an in-process implementation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from . import codec
from ._ids import log_id, new_id
from ._seal import EncryptionKeys
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
#: What the default table layout adds to a payload: the key, expiry, version, write token and
#: creation time with their names (MemoryStore counts it, so it refuses what DynamoDB would).
_LAYOUT = 160

#: How far a writer's clock may lag and still never revive a session others consider ended.
DEFAULT_CLOCK_SKEW = timedelta(seconds=5)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds (what DynamoDB's TTL attribute holds), rounded up."""
    stamp = moment.timestamp()
    whole = int(stamp)
    return whole + 1 if whole < stamp else whole


class _Entry:
    __slots__ = ("created_at", "expires", "payload", "policy", "version")

    def __init__(self, record: Record, payload: bytes, expires: int, version: int) -> None:
        self.payload = payload  # as DynamoDBStore would store it: format byte, maybe sealed
        self.expires = expires
        self.version = version
        self.created_at = record.created_at
        self.policy = record.policy


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
        return _Entry(record, payload, epoch(record.expiry_date), version)

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
        self._writable(record).expires = epoch(record.expiry_date)

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
