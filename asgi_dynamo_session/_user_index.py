"""The per-user index of `DynamoDBStore`: one item per user in the sessions' own table.

Layout (single-table): the index item's key uses the props' key attributes, with ``USER#`` and
sha256 of the user id between the props' prefix and suffix; it has one attribute per session,
named ``s:`` + the session's stored key, holding ``{"c": created, "b": bound at, "m": meta,
"p": the session it replaced}``, and a counter ``index_version`` bumped by every change. A bound
session item carries ``user_key``, ``user_id_sealed``, ``user_meta`` and ``last_seen``.

Only strongly consistent operations: a bind is one TransactWriteItems (the session, its index
entry, the session it replaces, the sessions `max_sessions` ends); a revocation reads the index
consistently, deletes each session conditionally and removes the entries, then reads again to
catch a session that a request in flight cycled meanwhile. Entries of sessions that expired or
vanished are pruned lazily, when the index is read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ._ids import hash_id, new_id, new_token
from ._transport import ConditionFailed, Item, RequestTransport, TransactionCanceled
from ._users import Binding, Replaced, SessionInfo, handle_of, newest_first, unpack_meta
from .errors import StoreError
from .record import Record

if TYPE_CHECKING:
    from .dynamodb import DynamoDBStore

USER_ATTR = "user_key"
SEALED_ATTR = "user_id_sealed"
META_ATTR = "user_meta"
SEEN_ATTR = "last_seen"
VERSION_ATTR = "index_version"
ENTRY_PREFIX = "s:"
INDEX_MARK = "USER#"

_CONFLICT_ATTEMPTS = 8
_TX_LIMIT = 100  # items per TransactWriteItems
_REMOVE_CHUNK = 50  # entries per UpdateItem (UpdateExpression is limited to 4 KB)
_PARALLEL = 16


def binding_attrs(binding: Binding | None, now: float) -> Item:
    """The attributes a bound session item carries (none for an unbound one)."""
    if binding is None:
        return {}
    attrs: Item = {
        USER_ATTR: {"S": binding.user_key},
        SEALED_ATTR: {"B": binding.sealed},
        SEEN_ATTR: {"N": str(int(now))},
    }
    if binding.meta:
        attrs[META_ATTR] = {"B": binding.meta}
    return attrs


def binding_of(item: Item) -> Binding | None:
    """The binding stored in a session item, or None for an unbound one."""
    user = item.get(USER_ATTR)
    if user is None:
        return None
    meta = item.get(META_ATTR)
    key, sealed = user["S"], item[SEALED_ATTR]["B"]
    if not isinstance(key, str) or not isinstance(sealed, (bytes, bytearray)):
        raise TypeError("malformed user binding")
    if meta is not None and not isinstance(meta["B"], (bytes, bytearray)):
        raise TypeError("malformed user meta")
    return Binding(
        user_key=key, sealed=bytes(sealed), meta=None if meta is None else bytes(meta["B"])
    )


@dataclass(frozen=True)
class _Entry:
    created: float
    bound: float
    meta: bytes | None
    prev: str | None

    def attr(self) -> Item:
        value: Item = {"c": {"N": str(int(self.created))}, "b": {"N": repr(self.bound)}}
        if self.meta:
            value["m"] = {"B": self.meta}
        if self.prev is not None:
            value["p"] = {"S": self.prev}
        return {"M": value}

    @classmethod
    def parse(cls, attr: Item) -> _Entry:
        value = attr["M"]
        return cls(
            created=float(value["c"]["N"]),
            bound=float(value["b"]["N"]),
            meta=bytes(value["m"]["B"]) if "m" in value else None,
            prev=value["p"]["S"] if "p" in value else None,
        )


@dataclass
class _Index:
    entries: dict[str, _Entry]  # stored session key -> entry
    version: int | None  # None: no index item


class _Update:
    """One UpdateItem on an index item: entries set, entries removed, the version bumped."""

    def __init__(self) -> None:
        self.sets: dict[str, _Entry] = {}
        self.removes: list[str] = []
        self.expected: int | None = None  # the version read, when the change depends on it
        self.checked = False

    def params(self, table: str, key: Item) -> Item:
        names: dict[str, str] = {"#iv": VERSION_ATTR}
        values: Item = {":one": {"N": "1"}}
        sets, removes = [], []
        for i, (k, entry) in enumerate(self.sets.items()):
            names[f"#s{i}"] = ENTRY_PREFIX + k
            values[f":s{i}"] = entry.attr()
            sets.append(f"#s{i} = :s{i}")
        for i, k in enumerate(self.removes):
            names[f"#r{i}"] = ENTRY_PREFIX + k
            removes.append(f"#r{i}")
        update = "ADD #iv :one"
        if sets:
            update += " SET " + ", ".join(sets)
        if removes:
            update += " REMOVE " + ", ".join(removes)
        params: Item = {"TableName": table, "Key": key, "UpdateExpression": update}
        if self.checked:
            if self.expected is None:
                params["ConditionExpression"] = "attribute_not_exists(#iv)"
            else:
                params["ConditionExpression"] = "#iv = :iv"
                values[":iv"] = {"N": str(self.expected)}
        params["ExpressionAttributeNames"] = names
        params["ExpressionAttributeValues"] = values
        return params


class UserIndex:
    """The per-user index operations of one `DynamoDBStore` (its props, clock and transport)."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.store = store

    # -- keys ------------------------------------------------------------------------------

    def stored(self, session_id: str) -> str:
        """The key text the table stores for a session id."""
        return hash_id(session_id) if self.store.props.hash_ids else session_id

    def _session_key(self, stored: str) -> Item:
        p = self.store.props
        key: Item = {p.partition_key.name: {"S": p.partition_key.value(stored)}}
        if p.sort_key is not None:
            key[p.sort_key.name] = {"S": p.sort_key.value(stored)}
        return key

    def _index_key(self, user: str) -> Item:
        return self._session_key(INDEX_MARK + user)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, wire: RequestTransport, user: str) -> _Index:
        table = self.store.props.table_name
        item = await wire.get_item(table, self._index_key(user), consistent=True)
        if item is None:
            return _Index({}, None)
        entries = {
            name[len(ENTRY_PREFIX) :]: _Entry.parse(value)
            for name, value in item.items()
            if name.startswith(ENTRY_PREFIX)
        }
        version = int(item[VERSION_ATTR]["N"]) if VERSION_ATTR in item else 0
        return _Index(entries, version)

    async def _sessions(self, wire: RequestTransport, stored: Iterable[str]) -> dict[str, Item]:
        """The session items of these stored keys (consistent reads; missing ones left out)."""
        p = self.store.props
        names = {
            "#pk": p.partition_key.name,
            "#exp": p.expiry_name,
            "#cr": p.created_name,
            "#seen": SEEN_ATTR,
            "#user": USER_ATTR,
        }
        projection = "#pk, #exp, #cr, #seen, #user"
        by_value = {p.partition_key.value(k): k for k in stored}
        keys = [self._session_key(k) for k in by_value.values()]
        found: dict[str, Item] = {}
        attempt = 0
        while keys:
            batch, keys = keys[:100], keys[100:]
            items, unprocessed = await wire.batch_get(
                p.table_name, batch, consistent=True, projection=projection, names=names
            )
            for item in items:
                found[by_value[item[p.partition_key.name]["S"]]] = item
            if unprocessed:
                attempt += 1
                if attempt > _CONFLICT_ATTEMPTS:
                    raise StoreError(f"{len(unprocessed)} keys left unread by BatchGetItem")
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
                keys = unprocessed + keys
        return found

    def _live(self, item: Item | None, user: str, now: float) -> bool:
        if item is None or item.get(USER_ATTR, {}).get("S") != user:
            return False
        try:
            return int(item[self.store.props.expiry_name]["N"]) > now
        except (KeyError, ValueError):
            return False

    async def sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, newest first; dead entries are pruned on the way."""
        wire = await self.store._transport()
        index = await self._read(wire, user)
        if not index.entries:
            return []
        items = await self._sessions(wire, index.entries)
        now = self.store._clock()
        p = self.store.props
        listed: list[tuple[float, SessionInfo]] = []
        dead: list[str] = []
        for k, entry in index.entries.items():
            item = items.get(k)
            if item is None or not self._live(item, user, now):
                dead.append(k)
                continue
            expires = int(item[p.expiry_name]["N"])
            created = float(item[p.created_name]["N"]) if p.created_name in item else entry.created
            seen = float(item[SEEN_ATTR]["N"]) if SEEN_ATTR in item else entry.bound
            info = SessionInfo(
                handle=handle_of(k),
                created_at=_at(created),
                expires_at=_at(expires),
                last_seen=_at(seen),
                current=False,
                meta=unpack_meta(entry.meta),
            )
            listed.append((entry.bound, info))
        if dead:
            await self._prune(wire, user, index, dead)
        return newest_first(listed)

    # -- removing --------------------------------------------------------------------------

    async def _prune(
        self, wire: RequestTransport, user: str, index: _Index, gone: list[str]
    ) -> None:
        """Drop entries of sessions that are gone; the whole item when that was all of them
        and nothing changed since it was read."""
        table = self.store.props.table_name
        key = self._index_key(user)
        if len(gone) == len(index.entries) and index.version is not None:
            try:
                await wire.delete_item(
                    table,
                    key,
                    condition="#iv = :iv",
                    names={"#iv": VERSION_ATTR},
                    values={":iv": {"N": str(index.version)}},
                )
                return
            except ConditionFailed:
                pass  # a session was bound meanwhile: remove entry by entry
        for i in range(0, len(gone), _REMOVE_CHUNK):
            update = _Update()
            update.removes = gone[i : i + _REMOVE_CHUNK]
            params = update.params(table, key)
            try:
                await wire.update_item(
                    table,
                    key,
                    update=params["UpdateExpression"],
                    condition="attribute_exists(#iv)",
                    names=params["ExpressionAttributeNames"],
                    values=params["ExpressionAttributeValues"],
                )
            except ConditionFailed:
                return  # the index item is gone already

    async def _end(self, wire: RequestTransport, user: str, stored: str) -> bool:
        """Delete one of the user's sessions if it is live; True when this call ended it."""
        p = self.store.props
        try:
            await wire.delete_item(
                p.table_name,
                self._session_key(stored),
                condition="#user = :user AND #exp > :now",
                names={"#user": USER_ATTR, "#exp": p.expiry_name},
                values={":user": {"S": user}, ":now": {"N": str(int(self.store._clock()))}},
            )
        except ConditionFailed:
            return False
        return True

    async def revoke(self, user: str, pick: Callable[[str], bool]) -> list[str]:
        """End the user's sessions whose stored key `pick` accepts; the stored keys of those
        that were live (and so were ended by this call).

        After the deletes the index is read again: a session that an in-flight request cycled
        (its entry names the revoked one as the session it replaced) is ended too.
        """
        wire = await self.store._transport()
        index = await self._read(wire, user)
        targets = [k for k in index.entries if pick(k)]
        ended: set[str] = set()
        live: list[str] = []
        gate = asyncio.Semaphore(_PARALLEL)

        async def end(k: str) -> bool:
            async with gate:
                return await self._end(wire, user, k)

        while targets:
            results = await asyncio.gather(*(end(k) for k in targets))
            live.extend(k for k, done in zip(targets, results, strict=True) if done)
            ended.update(targets)
            await self._prune(wire, user, index, targets)
            index = await self._read(wire, user)
            targets = [k for k, e in index.entries.items() if e.prev in ended and k not in ended]
        return live

    async def delete_bound(self, session_id: str, user: str) -> None:
        """Delete a bound session, then its index entry (a lost second write leaves an entry
        that the next read prunes)."""
        await self.store.delete(session_id)  # a lost answer is checked there
        wire = await self.store._transport()
        index = _Index({}, None)
        await self._prune(wire, user, index, [self.stored(session_id)])

    # -- binding ---------------------------------------------------------------------------

    async def bind(
        self, record: Record, replaces: Replaced | None, max_sessions: int | None
    ) -> None:
        """Create the record with its index entry (and the rest; see `UserStore.bind`)."""
        if record.user is None and replaces is None:
            raise ValueError("bind() needs a user binding or a session to replace")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        store = self.store
        wire = await store._transport()
        collisions = conflicts = 0
        ended: list[str] = []  # the user's sessions the cap ended, as stored keys
        while True:
            token = new_token()
            planned = await self._plan(wire, record, replaces, max_sessions, token, ended)
            if planned is None:
                continue  # more to end than one transaction holds: ended some, plan again
            items, checked, surplus = planned
            try:
                await wire.transact_write(items)
            except TransactionCanceled as cancel:
                reasons = cancel.reasons + ["None"] * (len(items) - len(cancel.reasons))
                if reasons[0] == "ConditionalCheckFailed":  # the new id is taken
                    if store._wrote(await store._current(wire, record.id), token):
                        break  # it is ours: an earlier attempt whose answer was lost
                    collisions += 1
                    if collisions > store.props.create_key_max_retry_attempts:
                        raise StoreError(
                            f"no free session id after {collisions - 1} retries"
                        ) from None
                    record.id = new_id()
                    continue
                if replaces is not None and reasons[1] == "ConditionalCheckFailed":
                    current = await store._current(wire, replaces.id)
                    raise store._conflict(replaces.id, current) from None
                if not (cancel.retryable or _only_index_conditions(reasons, checked)):
                    raise StoreError(f"DynamoDB TransactWriteItems cancelled: {reasons}") from None
                conflicts += 1
                if conflicts >= _CONFLICT_ATTEMPTS:
                    raise StoreError(
                        f"binding gave up after {conflicts} conflicting index changes"
                    ) from None
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**conflicts)))
                continue
            except StoreError as failure:  # no answer: applied if the new item bears our token
                if not store._wrote(await store._after(wire, record.id, failure), token):
                    raise
            break
        record.version = 1
        ended.extend(surplus)
        record._ended = ended if store.props.hash_ids else [hash_id(k) for k in ended]

    async def _plan(
        self,
        wire: RequestTransport,
        record: Record,
        replaces: Replaced | None,
        cap: int | None,
        token: str,
        ended: list[str],
    ) -> tuple[list[Item], list[int], list[str]] | None:
        """The transaction's items, and the positions of the version-checked index updates.

        None when the cap means ending more sessions than one transaction holds: the oldest
        surplus is ended first (outside the transaction) and the caller plans again.
        """
        store = self.store
        p = store.props
        now = store._clock()
        new_k = self.stored(record.id)
        old_k = None if replaces is None else self.stored(replaces.id)
        names = {"#pk": p.partition_key.name, "#exp": p.expiry_name}
        items: list[Item] = [
            {
                "Put": {
                    "TableName": p.table_name,
                    "Item": store._item(record, 1, token),
                    "ConditionExpression": "attribute_not_exists(#pk) OR #exp <= :now",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
                }
            }
        ]
        if replaces is not None:
            items.append({"Delete": self._take_old(replaces)})
        updates: dict[str, _Update] = {}
        surplus: list[str] = []
        user = record.user
        if replaces is not None and replaces.user_key is not None and old_k is not None:
            updates.setdefault(replaces.user_key, _Update()).removes.append(old_k)
        if user is not None:
            created = record.created_at.timestamp() if record.created_at else now
            same = replaces is not None and replaces.user_key == user.user_key
            entry = _Entry(created, now, user.meta, old_k if same else None)
            mine = updates.setdefault(user.user_key, _Update())
            mine.sets[new_k] = entry
            if cap is not None:
                index = await self._read(wire, user.user_key)
                others = {k: e for k, e in index.entries.items() if k not in (old_k, new_k)}
                found = await self._sessions(wire, others) if others else {}
                live = sorted(
                    (k for k in others if self._live(found.get(k), user.user_key, now)),
                    key=lambda k: (others[k].created, others[k].bound),
                )
                dead = [k for k in others if k not in live][:_REMOVE_CHUNK]
                surplus = live[: max(0, len(live) + 1 - cap)]
                room = _TX_LIMIT - len(items) - 2
                if len(surplus) > room:
                    early = surplus[: len(surplus) - room]
                    for k in early:
                        if await self._end(wire, user.user_key, k):
                            ended.append(k)
                    await self._prune(wire, user.user_key, _Index({}, None), early)
                    return None
                for k in surplus:
                    items.append(
                        {"Delete": {"TableName": p.table_name, "Key": self._session_key(k)}}
                    )
                mine.removes.extend(surplus + dead)
                mine.checked = True
                mine.expected = index.version
        checked: list[int] = []
        for user_key, update in updates.items():
            if update.checked:
                checked.append(len(items))
            items.append({"Update": update.params(p.table_name, self._index_key(user_key))})
        return items, checked, surplus

    def _take_old(self, replaces: Replaced) -> Item:
        """The Delete of the session a bind replaces: live and at the version loaded."""
        at_version = Record(id=replaces.id, data={}, expiry_date=_at(0), version=replaces.version)
        condition, names, values = self.store._versioned(at_version)
        return {
            "TableName": self.store.props.table_name,
            "Key": self.store.key(replaces.id),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }


def _only_index_conditions(reasons: list[str], checked: list[int]) -> bool:
    """The only failed conditions were index versions: another bind changed the index."""
    failed = [i for i, r in enumerate(reasons) if r != "None"]
    return bool(failed) and all(
        i in checked and reasons[i] in ("ConditionalCheckFailed", "TransactionConflict")
        for i in failed
    )


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)
