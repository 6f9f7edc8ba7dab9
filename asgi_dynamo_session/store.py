"""The store protocol the middleware talks to, and `MemoryStore`, an in-process implementation."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from . import codec
from ._ids import new_id
from .errors import SessionConflict, StoreError
from .record import Record

Clock = Callable[[], float]


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
        """End the live record and return it as it was at that moment; None when it was not live."""
        ...

    async def remove(self, record: Record) -> None:
        """Delete the record."""
        ...


#: How far a writer's clock may lag and still never revive a session others consider ended.
DEFAULT_CLOCK_SKEW = timedelta(seconds=5)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds (what DynamoDB's TTL attribute holds), rounded up."""
    stamp = moment.timestamp()
    whole = int(stamp)
    return whole + 1 if whole < stamp else whole


class _Entry:
    __slots__ = ("created_at", "expires", "packed", "policy", "version")

    def __init__(self, record: Record, packed: bytes, expires: int, version: int) -> None:
        self.packed = packed
        self.expires = expires
        self.version = version
        self.created_at = record.created_at
        self.policy = record.policy


class MemoryStore:
    """Sessions in a dict of this process, with the same semantics as `DynamoDBStore`.

    Meant for tests and prototypes: data is lost on restart and not shared between workers.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        create_key_max_retry_attempts: int = 5,
        clock_skew: timedelta | None = None,
    ):
        self._items: dict[str, _Entry] = {}
        self._clock = clock
        self._retries = create_key_max_retry_attempts
        #: Writes need the stored expiry later than now plus this (None: the middleware's).
        self.clock_skew = clock_skew

    def _margin(self) -> float:
        return (self.clock_skew or DEFAULT_CLOCK_SKEW).total_seconds()

    def _live(self, session_id: str, margin: float = 0.0) -> _Entry | None:
        entry = self._items.get(session_id)
        if entry is None or entry.expires <= self._clock() + margin:
            return None
        return entry

    def _record(self, session_id: str, entry: _Entry) -> Record:
        return Record(
            id=session_id,
            data=codec.unpack(entry.packed),
            expiry_date=datetime.fromtimestamp(entry.expires, timezone.utc),
            version=entry.version,
            created_at=entry.created_at,
            policy=entry.policy,  # no `packed`: the caller may change `data` before save()
        )

    def _entry(self, record: Record, version: int) -> _Entry:
        packed = record.packed if record.packed is not None else codec.pack(record.data)
        return _Entry(record, packed, epoch(record.expiry_date), version)

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

    async def touch(self, record: Record) -> None:
        self._writable(record).expires = epoch(record.expiry_date)

    async def take(self, session_id: str) -> Record | None:
        entry = self._live(session_id, self._margin())
        if entry is None:
            return None
        del self._items[session_id]
        return self._record(session_id, entry)

    async def remove(self, record: Record) -> None:
        self._writable(record)
        del self._items[record.id]
