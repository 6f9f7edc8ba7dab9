"""`DynamoDBStore`: sessions as DynamoDB items, with the seed crate's table layout knobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from . import codec
from ._ids import hash_id, log_id, new_id, new_token
from ._loops import PerLoop
from ._seal import EncryptionKeys
from ._table_check import TableCheck
from ._transport import (
    AioBotocoreTransport,
    ConditionFailed,
    Item,
    RequestTransport,
    call_budget,
    check_raw_response,
)
from ._user_index import SEEN_ATTR, UserIndex, binding_attrs, binding_of
from ._users import Replaced, SessionInfo, handle_of, user_key
from .errors import SessionConflict, SessionTooLarge, StoreError
from .expiry import load_policy
from .record import Record
from .store import DEFAULT_CLOCK_SKEW, ITEM_LIMIT, Clock, epoch

if TYPE_CHECKING:
    from ._fast import FastTransport

logger = logging.getLogger("asgi_dynamo_session")

#: DynamoDB's hard limit on one item: attribute names plus values.
DYNAMODB_ITEM_LIMIT = ITEM_LIMIT
#: The largest epoch second and version counter read back from an item (9999-12-31; 2**63-1).
_MAX_EPOCH = 253_402_214_400
_MAX_VERSION = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,20}")
#: How many of an item's last write tokens it keeps (a lost answer is recognised that long).
_TOKENS = 8


def _whole(text: Any, upper: int, low: int = 0) -> int:
    """A stored Number that must be a whole number from `low` to `upper`; ValueError otherwise."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text) or not low <= int(text) <= upper:
        raise ValueError(f"not a whole number within {low}..{upper}: {str(text)[:40]!r}")
    return int(text)


def _moment(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, timezone.utc)


@dataclass(frozen=True)
class DynamoDBStoreKey:
    """A key attribute: its name, and the text written around the session key in its value."""

    name: str
    prefix: str | None = None
    suffix: str | None = None

    def value(self, key: str) -> str:
        return f"{self.prefix or ''}{key}{self.suffix or ''}"


@dataclass(frozen=True)
class DynamoDBStoreProps:
    """Table layout; the defaults are tower-sessions-dynamodb-store's, so one table serves both."""

    table_name: str = "TowerSessions"
    partition_key: DynamoDBStoreKey = field(
        default_factory=lambda: DynamoDBStoreKey(name="session_id", prefix="SESSIONS::TOWER::")
    )
    sort_key: DynamoDBStoreKey | None = None
    expiry_name: str = "expire_at"
    data_name: str = "data"
    create_key_max_retry_attempts: int = 5
    hash_ids: bool = True
    consistent_read: bool = True
    version_name: str = "version"
    created_name: str = "created_at"
    policy_name: str = "expiry_policy"
    token_name: str = "write_token"
    ended_name: str = "ended_by"


def item_size(item: Item) -> int:
    """The item's size as DynamoDB bills and limits it: names plus values, in bytes."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, body),) = value.items()
    if kind == "S":
        return len(body.encode())
    if kind == "B":
        return len(body)
    if kind == "N":
        return _number_size(body)
    if kind == "BOOL" or kind == "NULL":
        return 1
    if kind in ("M", "L"):
        inner = body.values() if kind == "M" else body
        names = sum(len(k.encode()) for k in body) if kind == "M" else 0
        return 3 + names + sum(1 + _value_size(v) for v in inner)
    raise ValueError(f"unsupported attribute type {kind}")


def _number_size(text: str) -> int:
    """A Number as DynamoDB stores it: significant digits in base-100 pairs aligned on the
    decimal point (so 120 is 1|20, two pairs), one more byte, and one more when negative."""
    negative, digits, exponent = Decimal(text).normalize().as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite number: {text!r}")
    if not any(digits):
        return 1
    lead = exponent + len(digits) - 1  # the power of ten of the first significant digit
    pairs = lead // 2 - (lead - len(digits) + 1) // 2 + 1
    return 1 + pairs + negative


def _context(key: Item, props: DynamoDBStoreProps) -> bytes:
    """The item's key as a sealed payload's associated data: the payload opens on this item only."""
    parts = [props.partition_key.name, key[props.partition_key.name]["S"]]
    if props.sort_key is not None:
        parts += [props.sort_key.name, key[props.sort_key.name]["S"]]
    return codec.DEFAULT.pack({"key": parts})


TransportChoice = Literal["auto", "aiobotocore", "fast", "aiohttp"]


class DynamoDBStore:
    """Sessions in a DynamoDB table. Every write is conditional; loads drop expired items.

    Pass an aiobotocore DynamoDB client you own, or no client and the store opens its own
    (at lifespan startup, on first use, or with ``async with store``) and closes it.
    """

    def __init__(
        self,
        client: Any | None = None,
        props: DynamoDBStoreProps | None = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        transport: TransportChoice = "auto",
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        max_attempts: int = 3,
        pool_size: int = 64,
        max_item_size: int = DYNAMODB_ITEM_LIMIT,
        compress_above: int | None = 8 * 1024,
        max_data_size: int = codec.MAX_DATA_SIZE,
        encryption_keys: EncryptionKeys | None = None,
        accept_plaintext: bool = False,
        clock: Clock = time.time,
        clock_skew: timedelta | None = None,
    ) -> None:
        if not 0 < max_item_size <= DYNAMODB_ITEM_LIMIT:
            raise ValueError(f"max_item_size must be within 1..{DYNAMODB_ITEM_LIMIT}")
        self.props = props or DynamoDBStoreProps()
        self.client = client
        self.owns_client = client is None
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._choice: TransportChoice = transport
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._pool_size = pool_size
        self.max_item_size = max_item_size
        self.compress_above = compress_above
        self._framing = codec.Framing(
            compress_above=compress_above,
            max_data_size=max_data_size,
            encryption_keys=encryption_keys,
            accept_plaintext=accept_plaintext,
        )
        self._codec = codec.DEFAULT
        self._clock = clock
        #: Writes need the stored expiry later than now plus this (None: the middleware's).
        self.clock_skew = clock_skew
        self._given_client = client
        self._opened: PerLoop[RequestTransport] = PerLoop(self._open_here)
        self._clients: dict[RequestTransport, Any] = {}
        self._said: set[str] = set()  # why a fast transport was not used, logged once each
        self._table_check = TableCheck()
        self._users = UserIndex(self)

    # -- lifecycle -------------------------------------------------------------------------
    # Connections belong to the event loop that uses them (`PerLoop`): a store used from another
    # loop opens its own client (when it owns one) and transport there; each loop's are closed
    # on that loop, by `close()` or when the loop shuts down.

    async def open(self) -> None:
        """Open the client (when the store owns it) and the transport on this loop; idempotent."""
        await self._opened.open()

    async def _open_here(self, stack: AsyncExitStack) -> RequestTransport:
        client: Any = self._given_client
        if client is None:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            config = AioConfig(
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                # total attempts, as in the fast transport (botocore's "max_attempts"
                # key would count retries only: one attempt more than asked for)
                retries={"mode": "standard", "total_max_attempts": self._max_attempts},
                max_pool_connections=self._pool_size,
            )
            client = await stack.enter_async_context(
                get_session().create_client(
                    "dynamodb",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region_name,
                    config=config,
                )
            )
            stack.callback(self._forget_client, client)
            client.meta.events.register("before-parse.dynamodb", check_raw_response)
            self.client = client
        wire = await self._make_transport(stack, client)
        await self._check_table(client)
        self._clients[wire] = client
        stack.callback(self._clients.pop, wire, None)
        return wire

    async def _make_transport(self, stack: AsyncExitStack, client: Any) -> RequestTransport:
        fast = self._choice in ("fast", "aiohttp") or (self._choice == "auto" and self.owns_client)
        wire = await self._fast_transport(client) if fast else None
        if wire is not None:
            stack.push_async_callback(wire.close)
            return wire
        budget = None  # a client of the caller's own keeps its own timeouts
        if self.owns_client:
            budget = call_budget(self._max_attempts, self._connect_timeout, self._read_timeout)
        return AioBotocoreTransport(client, budget=budget)

    async def _fast_transport(self, client: Any) -> FastTransport | None:
        """Our own transport for `client`'s settings, or None where only aiobotocore honours
        them (logged once per reason)."""
        from ._fast import FastTransport
        from ._netconfig import fast_path, settings_of

        net = settings_of(client)
        kind, why = fast_path(net)
        if kind == "wire" and self._choice == "aiohttp":
            kind = "aiohttp"
        elif why is not None and why not in self._said:
            self._said.add(why)
            other = "aiobotocore" if kind is None else "the aiohttp fast transport"
            logger.log(
                logging.WARNING if self._choice == "fast" else logging.INFO,
                "DynamoDBStore uses %s: %s",
                other,
                why,
            )
        if kind is None:
            return None
        cls: type[FastTransport] = FastTransport
        if kind == "wire":
            from ._wire import WireTransport

            cls = WireTransport
        context = await asyncio.to_thread(net.ssl_context) if net.tls else None
        return cls.from_aiobotocore_client(
            client,
            net,
            ssl_context=context,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            max_attempts=self._max_attempts,
            pool_size=self._pool_size,
            # every write of ours carries a write token (a retry that meets its own earlier
            # application is recognised) or is idempotent: safe to resend once sent
            retry_sent_writes=True,
        )

    async def _check_table(self, client: Any) -> None:
        """Until the table is found: DescribeTable, logging how to create a missing one."""
        await self._table_check.run(client, self.props.table_name)

    def _missing_table(self) -> str | None:
        """Why the table was not found at the last open (the lifespan startup fails with it)."""
        return self._table_check.missing

    def _explain_failure(self, exc: BaseException) -> None:
        """Log (at most once a minute) how to fix a failure that a missing table caused."""
        self._table_check.explain(
            exc, self.client, self.props.table_name, self._region_name, self._endpoint_url
        )

    def _forget_client(self, client: Any) -> None:
        if self.client is client:
            self.client = None

    async def close(self) -> None:
        """Close what `open` opened; the store can be opened again afterwards."""
        await self._opened.close()

    async def __aenter__(self) -> DynamoDBStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _transport(self) -> RequestTransport:
        wire = self._opened.get()
        return wire if wire is not None else await self._opened.open()

    async def _client(self) -> Any:
        """The aiobotocore client of this loop (the control plane always goes through it)."""
        return self._clients[await self._transport()]

    # -- item layout -----------------------------------------------------------------------

    def key(self, session_id: str) -> Item:
        """The DynamoDB key of a session id (hashed unless `hash_ids` is off)."""
        p = self.props
        k = hash_id(session_id) if p.hash_ids else session_id
        key: Item = {p.partition_key.name: {"S": p.partition_key.value(k)}}
        if p.sort_key is not None:
            key[p.sort_key.name] = {"S": p.sort_key.value(k)}
        return key

    def _use_codec(self, chosen: codec.Codec) -> None:
        """Decode with the codec (registered types) of the middleware that uses this store."""
        self._codec = codec.bind(self._codec, chosen)

    def _item(self, record: Record, version: int, token: str) -> Item:
        """The item for `record` at `version`, written by `token`: the item keeps the tokens of
        its last writes (newest first), so a writer whose answer was lost can tell later whether
        its write landed even after others wrote on top of it."""
        p = self.props
        packed = record.packed if record.packed is not None else self._codec.pack(record.data)
        item = self.key(record.id)
        item[p.expiry_name] = {"N": str(epoch(record.expiry_date))}
        item[p.data_name] = {"B": self._framing.dump(packed, lambda: _context(item, p))}
        item[p.version_name] = {"N": str(version)}
        item[p.token_name] = {"S": " ".join([token, *(record._tokens or "").split()][:_TOKENS])}
        if record.created_at is not None:
            item[p.created_name] = {"N": str(int(record.created_at.timestamp()))}
        if record.policy is not None:
            item[p.policy_name] = {"S": record.policy}
        item.update(binding_attrs(record.user, self._clock()))
        size = item_size(item)
        if size > self.max_item_size:
            raise SessionTooLarge(size, self.max_item_size)
        return item

    def _record(
        self,
        session_id: str,
        item: Item,
        *,
        margin: float = 0.0,
        live: bool = True,
        ended: bool = False,
    ) -> Record | None:
        """The record in an item, or None when it cannot be read, was ended by a take (unless
        `ended`), or (with `live`) its expiry is not later than now plus `margin`. Every
        attribute is checked here, so a malformed item is no session, never an exception."""
        p = self.props
        if not ended and p.ended_name in item:
            return None
        try:
            expires = _whole(item[p.expiry_name]["N"], _MAX_EPOCH)
            if live and expires <= self._clock() + margin:
                return None
            payload = item[p.data_name]["B"]
            packed = self._framing.load(payload, lambda: _context(self.key(session_id), p))
            data, whole = self._codec.load(packed)
            version = (  # a stored counter starts at 1: 0 would never match a conditional save
                _whole(item[p.version_name]["N"], _MAX_VERSION, low=1)
                if p.version_name in item
                else 0
            )
            created = item.get(p.created_name)
            # created in the future (beyond a day of skew) is as unreadable as malformed
            latest = min(_MAX_EPOCH, int(self._clock()) + 86_400)
            created_at = None if created is None else _moment(_whole(created["N"], latest))
            policy = item[p.policy_name]["S"] if p.policy_name in item else None
            if policy is not None:
                load_policy(policy)
            expiry_date = _moment(expires)
            user = binding_of(item)
        except (KeyError, ValueError, TypeError, OverflowError, OSError) as exc:
            logger.warning("unreadable session item %s ignored: %s", log_id(session_id), exc)
            return None
        record = Record(
            id=session_id,
            data=data,
            expiry_date=expiry_date,
            version=version,
            created_at=created_at,
            policy=policy,
            user=user,
            # no `packed`: a caller may change `data` before save(), which must write the change
        )
        if whole:
            record._snapshot = bytes(packed)
        record._tokens = self._tokens(item)
        return record

    def _tokens(self, item: Item | None) -> str | None:
        """The tokens of an item's last writes, newest first (one string, space-separated)."""
        value = None if item is None else item.get(self.props.token_name)
        tokens = value.get("S") if isinstance(value, dict) else None
        return tokens if isinstance(tokens, str) else None

    def _wrote(self, item: Item | None, token: str) -> bool:
        """Whether the write named `token` made (or is under) this item's current state."""
        return token in (self._tokens(item) or "").split()

    def _now(self) -> Item:
        return {":now": {"N": str(int(self._clock()))}}

    def _live_after(self) -> Item:
        """`:live`: a write needs the stored expiry later than this (now plus the clock skew)."""
        skew = (self.clock_skew or DEFAULT_CLOCK_SKEW).total_seconds()
        return {":live": {"N": str(int(self._clock() + skew))}}

    def _versioned(self, record: Record) -> tuple[str, dict[str, str], Item]:
        """Condition, names and values of a write that needs `record.version`, live and not
        ended by a take."""
        p = self.props
        names = {"#exp": p.expiry_name, "#ver": p.version_name, "#end": p.ended_name}
        values = self._live_after()
        if record.version:
            values[":ver"] = {"N": str(record.version)}
            condition = "#ver = :ver"
        else:  # an item written without a version counter (e.g. by the Rust crate)
            names["#pk"] = p.partition_key.name
            condition = "attribute_exists(#pk) AND attribute_not_exists(#ver)"
        return f"{condition} AND #exp > :live AND attribute_not_exists(#end)", names, values

    async def _current(self, wire: RequestTransport, session_id: str) -> Item | None:
        return await wire.get_item(self.props.table_name, self.key(session_id), consistent=True)

    async def _after(
        self, wire: RequestTransport, session_id: str, failure: StoreError
    ) -> Item | None:
        """After a write whose answer never came: the item as stored now, to tell whether the
        write was applied. Re-raises `failure` when the store cannot be read either."""
        try:
            return await self._current(wire, session_id)
        except StoreError:
            raise failure from None

    def _conflict(self, session_id: str, current: Item | None) -> SessionConflict:
        margin = (self.clock_skew or DEFAULT_CLOCK_SKEW).total_seconds()
        record = None if current is None else self._record(session_id, current, margin=margin)
        return SessionConflict(record)

    # -- the store protocol ----------------------------------------------------------------

    async def load(self, session_id: str) -> Record | None:
        wire = await self._transport()
        item = await wire.get_item(
            self.props.table_name, self.key(session_id), consistent=self.props.consistent_read
        )
        return None if item is None else self._record(session_id, item)

    async def create(self, record: Record) -> None:
        """Store a new record. A retry that meets its own first attempt (the answer was lost)
        is recognised by the write token, so it is neither an orphan nor a collision."""
        wire = await self._transport()
        for _ in range(self.props.create_key_max_retry_attempts + 1):
            token = new_token()
            item = self._item(record, 1, token)
            try:
                await wire.put_item(
                    self.props.table_name,
                    item,
                    condition="attribute_not_exists(#pk) OR #exp <= :now",
                    names={"#pk": self.props.partition_key.name, "#exp": self.props.expiry_name},
                    values=self._now(),
                )
            except ConditionFailed as failed:
                current = failed.item or await self._current(wire, record.id)
                if not self._wrote(current, token):
                    logger.warning("session id collision on create; retrying with a new id")
                    record.id = new_id()
                    continue
            except StoreError as failure:
                if not self._wrote(await self._after(wire, record.id, failure), token):
                    raise
            record.version = 1
            record._tokens = item[self.props.token_name]["S"]
            return
        raise StoreError(
            f"no free session id after {self.props.create_key_max_retry_attempts} retries"
        )

    async def save(self, record: Record) -> None:
        wire = await self._transport()
        token = new_token()
        condition, names, values = self._versioned(record)
        item = self._item(record, record.version + 1, token)
        try:
            await wire.put_item(
                self.props.table_name, item, condition=condition, names=names, values=values
            )
        except ConditionFailed as failed:
            current = failed.item or await self._current(wire, record.id)
            if not self._wrote(current, token):
                raise self._conflict(record.id, current) from None
        except StoreError as failure:
            if not self._wrote(await self._after(wire, record.id, failure), token):
                raise
        record.version += 1
        record._tokens = item[self.props.token_name]["S"]

    async def delete(self, session_id: str) -> None:
        wire = await self._transport()
        try:
            await wire.delete_item(self.props.table_name, self.key(session_id))
        except StoreError as failure:
            if await self._after(wire, session_id, failure) is not None:
                raise

    async def touch(self, record: Record) -> None:
        """Renew the expiry of the live item at `record.version` (one UpdateItem of that
        attribute, and of `last_seen` for a bound record); `SessionConflict` when it changed or
        ended meanwhile."""
        wire = await self._transport()
        condition, names, values = self._versioned(record)
        expires = str(epoch(record.expiry_date))
        values[":exp"] = {"N": expires}
        update = "SET #exp = :exp"
        if record.user is not None:
            update += ", #seen = :seen"
            names["#seen"] = SEEN_ATTR
            values[":seen"] = {"N": str(int(self._clock()))}
        try:
            await wire.update_item(
                self.props.table_name,
                self.key(record.id),
                update=update,
                condition=condition,
                names=names,
                values=values,
            )
        except ConditionFailed as failed:
            current = failed.item or await self._current(wire, record.id)
            raise self._conflict(record.id, current) from None
        except StoreError as failure:
            current = await self._after(wire, record.id, failure)
            if current is not None and current.get(self.props.expiry_name) == {"N": expires}:
                return  # applied
            if current is None or current.get(self.props.version_name) != {
                "N": str(record.version)
            }:  # ended or written meanwhile: the caller settles it as a conflict
                raise self._conflict(record.id, current) from None
            raise

    async def take(self, session_id: str) -> Record | None:
        """End the live item and return it as it was (for `cycle_id`), or None when it was not
        live. The item is marked ended (`ended_by`, a write token; no load or write accepts it
        from then on) and kept, with its expiry, until the move is done: a retry whose first
        answer was lost still finds its data, and `restore` can undo the take."""
        wire = await self._transport()
        p = self.props
        token = new_token()
        try:
            old = await wire.update_item(
                p.table_name,
                self.key(session_id),
                update="SET #end = :tok, #ver = if_not_exists(#ver, :zero) + :one",
                condition="attribute_exists(#pk) AND #exp > :live AND attribute_not_exists(#end)",
                names={
                    "#pk": p.partition_key.name,
                    "#exp": p.expiry_name,
                    "#end": p.ended_name,
                    "#ver": p.version_name,
                },
                values={
                    **self._live_after(),
                    ":tok": {"S": token},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
                old=True,
            )
        except ConditionFailed as failed:
            old = failed.item or await self._taken_now(wire, session_id, token, None)
            if self._ended_by(old) != token:
                return None
        except StoreError as failure:
            old = await self._taken_now(wire, session_id, token, failure)
            if self._ended_by(old) != token:
                raise
        record = None if old is None else self._record(session_id, old, live=False, ended=True)
        if record is None:
            return None
        record._taken = token
        return record

    async def restore(self, taken: Record) -> None:
        """Undo `take` (the move it began failed): the item is live again, at a new version."""
        await self._untake(await self._transport(), taken.id, taken._taken or "", quiet=False)

    async def _taken_now(
        self, wire: RequestTransport, session_id: str, token: str, failure: StoreError | None
    ) -> Item | None:
        """The item as stored now, to tell whether a take named `token` applied. When it cannot
        be read, whether it did is unknown: the take is undone in case it did, and the failure
        raised (a 503 that leaves the session as it was)."""
        try:
            return await self._current(wire, session_id)
        except StoreError as exc:
            await self._untake(wire, session_id, token)
            raise (failure or exc) from None

    async def _untake(
        self, wire: RequestTransport, session_id: str, token: str, *, quiet: bool = True
    ) -> None:
        """Make the item live again if the take named `token` ended it; a StoreError is
        logged (`quiet`: a best effort after a failure that is being raised anyway)."""
        p = self.props
        try:
            with contextlib.suppress(ConditionFailed):  # not ended by that take: nothing to undo
                await wire.update_item(
                    p.table_name,
                    self.key(session_id),
                    update="REMOVE #end",
                    condition="#end = :tok",
                    names={"#end": p.ended_name},
                    values={":tok": {"S": token}},
                )
        except StoreError as exc:
            if not quiet:
                raise
            logger.warning("session %s may stay ended: %s", log_id(session_id), exc)

    def _ended_by(self, item: Item | None) -> str | None:
        """The token of the take that ended an item, if one did."""
        value = None if item is None else item.get(self.props.ended_name)
        token = value.get("S") if isinstance(value, dict) else None
        return token if isinstance(token, str) else None

    async def remove(self, record: Record) -> None:
        """Delete the item if it is still at `record.version`; `SessionConflict` otherwise."""
        wire = await self._transport()
        condition, names, values = self._versioned(record)
        try:
            await wire.delete_item(
                self.props.table_name,
                self.key(record.id),
                condition=condition,
                names=names,
                values=values,
            )
        except ConditionFailed as failed:
            current = failed.item or await self._current(wire, record.id)
            if current is not None:  # gone is what was asked for, whoever removed it
                raise self._conflict(record.id, current) from None
        except StoreError as failure:
            if await self._after(wire, record.id, failure) is not None:
                raise

    # -- users and devices (the per-user index: _user_index.py) ----------------------------

    async def user_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest first (a consistent GetItem of the user's index and
        one consistent BatchGetItem per 100 sessions; dead entries are pruned on the way)."""
        return await self._users.sessions(user_key(user_id))

    async def revoke_user(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user but `keep` (a session id); how many were live."""
        return len(await self._revoke_user(user_id, keep))

    async def _revoke_user(self, user_id: str, keep: str | None) -> list[str]:
        """`revoke_user`, telling the stored keys (hashed ids) of the sessions it ended."""
        kept = None if keep is None else self._users.stored(keep)
        ended = await self._users.revoke(user_key(user_id), lambda k: k != kept)
        return ended if self.props.hash_ids else [hash_id(k) for k in ended]

    async def revoke(self, user_id: str, handle: str) -> bool:
        """End the user's session with this `SessionInfo.handle`; False when none was live."""
        ended = await self._users.revoke(user_key(user_id), lambda k: handle_of(k) == handle)
        return bool(ended)

    def session_handle(self, session_id: str) -> str:
        """The `SessionInfo.handle` the listing gives this session."""
        return handle_of(self._users.stored(session_id))

    async def bind(
        self, record: Record, *, replaces: Replaced | None = None, max_sessions: int | None = None
    ) -> None:
        """Create a bound session in one TransactWriteItems with its index entry (see
        `UserStore.bind`)."""
        await self._users.bind(record, replaces, max_sessions)

    async def delete_bound(self, session_id: str, user: str) -> None:
        """Delete a bound session (DeleteItem), then its index entry (UpdateItem)."""
        await self._users.delete_bound(session_id, user)

    # -- maintenance -----------------------------------------------------------------------

    async def create_table(self, *, enable_ttl: bool = True) -> bool:
        """Create the table (on-demand billing) if missing and wait until it is active.

        Enables TTL on the expiry attribute where the server supports it; returns whether TTL
        is on. Servers without TTL (dynalite) need `delete_expired()` now and then.
        """
        self._table_check.done = True  # this call makes sure of the table: no check first
        client = await self._client()
        p = self.props
        keys = [p.partition_key] + ([p.sort_key] if p.sort_key else [])
        try:
            await client.create_table(
                TableName=p.table_name,
                KeySchema=[
                    {"AttributeName": k.name, "KeyType": kind}
                    for k, kind in zip(keys, ("HASH", "RANGE"), strict=False)
                ],
                AttributeDefinitions=[
                    {"AttributeName": k.name, "AttributeType": "S"} for k in keys
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise StoreError(f"CreateTable failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"CreateTable failed: {exc}") from exc
        for _ in range(600):
            described = await client.describe_table(TableName=p.table_name)
            if described["Table"]["TableStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.1)
        self._table_check.found()
        if not enable_ttl:
            return False
        try:
            await client.update_time_to_live(
                TableName=p.table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": p.expiry_name},
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ValidationException" and "already enabled" in str(exc):
                return True
            logger.info("TTL not enabled on %s (%s); use delete_expired()", p.table_name, code)
            return False
        return True

    async def delete_expired(
        self, *, page_size: int | None = None, max_unprocessed_retries: int = 8
    ) -> int:
        """Delete every item whose expiry has passed (Scan + BatchWriteItem); returns the count.

        For servers without TTL, or to purge sooner than DynamoDB's TTL sweep. `page_size`
        caps the items each Scan page reads, to spread the read capacity it uses.
        """
        wire = await self._transport()
        p = self.props
        names = {"#pk": p.partition_key.name, "#exp": p.expiry_name}
        projection = "#pk"
        if p.sort_key is not None:
            names["#sk"] = p.sort_key.name
            projection += ", #sk"
        deleted = 0
        start: Item | None = None
        while True:
            items, start = await wire.scan(
                p.table_name,
                projection=projection,
                names=names,
                filter="#exp <= :now",
                values=self._now(),
                start_key=start,
                limit=page_size,
            )
            for i in range(0, len(items), 25):
                batch = items[i : i + 25]
                await self._batch_delete(wire, batch, max_unprocessed_retries)
                deleted += len(batch)
            if start is None:
                return deleted

    async def _batch_delete(self, wire: RequestTransport, keys: list[Item], retries: int) -> None:
        pending: list[Item] = [{"DeleteRequest": {"Key": key}} for key in keys]
        for attempt in range(retries + 1):
            pending = await wire.batch_write(self.props.table_name, pending)
            if not pending:
                return
            await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        raise StoreError(f"{len(pending)} expired items left unprocessed after {retries} retries")
