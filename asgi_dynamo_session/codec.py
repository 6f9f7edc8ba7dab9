"""Session payload encoding: typed MessagePack, and the stored payload around it.

**Values** (`Codec`): plain MessagePack for ``None``, ``bool``, ``int`` (64 bits), ``float``,
``str``, ``bytes``, ``list`` and ``dict``; every other supported type travels as a MessagePack
extension so that it comes back as itself: ``tuple`` (1), ``set`` (2), ``frozenset`` (3), a
``dict`` with keys that are not plain (4), ``datetime`` (5, naive or aware, fold and zone kept),
``date`` (6), ``time`` (7), ``timedelta`` (8), ``Decimal`` (9, exponent kept), ``UUID`` (10) and
an instance of a registered class (11: its registered name and fields or value). Aware UTC
datetimes use MessagePack's own timestamp (-1). Anything else is refused; nothing is ever built
from stored bytes but these types and the registered classes.

**Stored payload** (`Framing`): one format byte, then the body.

| byte | body |
|---|---|
| ``0x01`` | MessagePack |
| ``0x02`` | zlib-compressed MessagePack |
| ``0x11`` | sealed MessagePack: key id, nonce, AES-256-GCM ciphertext and tag (see `_seal`) |
| ``0x12`` | sealed zlib-compressed MessagePack |

Any other byte is an unknown format: the item is no session, never misread as this one.
The MessagePack inside is bounded by `MAX_DATA_SIZE` (uncompressed): inflation stops there.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import logging
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from msgspec.msgpack import Ext

from ._seal import EncryptionKeys, Sealer
from .errors import SessionTooLarge

logger = logging.getLogger("asgi_dynamo_session")

PLAIN = 0x01
ZLIB = 0x02
SEALED = 0x11
SEALED_ZLIB = 0x12
_SEALED_FLAG = 0x10

#: The largest session data, as MessagePack before compression and sealing (1 MiB). Two and a
#: half times what an uncompressed item may hold, so a compressed session has room, while one
#: read can never inflate more than this: a hostile item is refused at the bound, not after
#: allocating what it expands to.
MAX_DATA_SIZE = 1024 * 1024

# Extension type codes (application range 0..127); stable: they are in stored items.
_TUPLE, _SET, _FROZENSET, _MAP = 1, 2, 3, 4
_DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _TYPED = 5, 6, 7, 8, 9, 10, 11

_NoneType = type(None)
#: Types MessagePack carries as themselves, values and nested dict keys alike.
_PLAIN = frozenset({str, int, float, bool, bytes, _NoneType})
_STR = frozenset({str})
_UTC = timezone.utc
#: What `_native` lets through: plain values and the containers MessagePack keeps as they are.
_TREE = _PLAIN | {list, dict}
_NATIVE_DEPTH = 32
# `_native` relies on CPython's gc.get_referents listing exactly a list's items and a dict's
# values (and non-str keys); elsewhere only flat sessions skip `_prepare`'s walk.
_CPYTHON = sys.implementation.name == "cpython"


class UnknownType(ValueError):
    """A stored value names a class that is not registered (or no longer builds)."""


class _Refused(TypeError):
    """A value of a type the codec does not store."""


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How one registered class is taken apart and rebuilt."""

    name: str
    cls: type
    state: Callable[[Any], Any]  # instance -> fields dict (or an Enum's value)
    build: Callable[[Any], Any]  # what `state` gave -> instance


def _kind(name: str, cls: type) -> _Kind:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a registered type needs a non-empty str name, got {name!r}")
    if not isinstance(cls, type):
        raise TypeError(f"types= takes classes, got {cls!r}")
    if issubclass(cls, enum.Enum):
        return _Kind(name, cls, lambda obj: obj.value, cls)
    if issubclass(cls, msgspec.Struct):
        return _Kind(name, cls, msgspec.structs.asdict, lambda state: cls(**state))
    if dataclasses.is_dataclass(cls):
        return _dataclass_kind(name, cls)
    raise TypeError(
        f"types= takes msgspec Structs, dataclasses and Enums; {cls.__qualname__} is none of them"
    )


def _dataclass_kind(name: str, cls: type) -> _Kind:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    late = tuple(f.name for f in fields if not f.init)  # set after __init__, as stored

    def state(obj: Any) -> dict[str, Any]:
        return {n: getattr(obj, n) for n in names}

    def build(state: dict[str, Any]) -> Any:
        obj = cls(**{k: v for k, v in state.items() if k not in late})
        for k in late:
            if k in state:
                object.__setattr__(obj, k, state[k])
        return obj

    return _Kind(name, cls, state, build)


Types = Iterable[type] | Mapping[str, type]


def _name(cls: Any) -> str:
    if not isinstance(cls, type):
        raise TypeError(f"types= takes classes, got {cls!r}")
    return cls.__qualname__


class Codec:
    """Session data to MessagePack and back, exactly, with the classes of `types` registered.

    `types` is a list of classes, each named by its ``__qualname__``, or a mapping
    ``{name: class}`` giving the names yourself. The name is what is stored: keep it when a
    class moves or is renamed and old sessions still load.
    """

    def __init__(self, types: Types = ()) -> None:
        pairs = types.items() if isinstance(types, Mapping) else ((_name(c), c) for c in types)
        self._by_name: dict[str, _Kind] = {}
        self._by_class: dict[type, _Kind] = {}
        for name, cls in pairs:
            kind = _kind(name, cls)
            if cls in self._by_class:
                raise ValueError(f"{cls.__qualname__} is registered twice in types=")
            if name in self._by_name:
                raise ValueError(f"two types= share the name {name!r}; name them in a mapping")
            self._by_name[name] = kind
            self._by_class[cls] = kind
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(dict[str, Any], ext_hook=self._ext)
        self._any = msgspec.msgpack.Decoder(ext_hook=self._ext)
        self._raw = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
        # Enum members are constants: each is encoded once, and decoded once.
        self._members_ext: dict[tuple[type, enum.Enum], Ext] = {}
        self._members_back: dict[bytes, Any] = {}
        self._special: dict[type, Callable[[Any], Any]] = {
            tuple: self._tuple,
            set: self._set,
            frozenset: self._frozenset,
            datetime: self._datetime,
            date: lambda d: Ext(_DATE, self._encoder.encode(d.toordinal())),
            time: self._time,
            timedelta: lambda d: Ext(
                _TIMEDELTA, self._encoder.encode((d.days, d.seconds, d.microseconds))
            ),
            Decimal: lambda d: Ext(_DECIMAL, str(d).encode()),
            UUID: lambda u: Ext(_UUID, u.bytes),
        }

    @property
    def types(self) -> dict[str, type]:
        """The registered classes by their stored names."""
        return {name: kind.cls for name, kind in self._by_name.items()}

    # -- encoding --------------------------------------------------------------------------

    def pack(self, data: Mapping[str, Any]) -> bytes:
        """MessagePack bytes of `data`; a value that cannot be stored is a TypeError naming its
        key and type (then nothing may be written)."""
        return self.pack_flagged(data)[0]

    def native(self, data: Mapping[str, Any]) -> bytes | None:
        """Plain MessagePack of `data`, unchecked (None if it does not encode): equal to an
        earlier `pack_flagged` result marked plain only if no value changed but for its type."""
        try:
            return self._encoder.encode(data)
        except (TypeError, msgspec.EncodeError, OverflowError, RecursionError):
            return None

    def pack_flagged(self, data: Mapping[str, Any]) -> tuple[bytes, bool]:
        """`pack`, and whether MessagePack alone carried every value (no extension types)."""
        if not isinstance(data, dict):
            data = dict(data.items())
        plain = _native(dict.values(data))
        if plain:
            prepared: dict[str, Any] = data
        else:
            prepared = dict(dict.items(data))
            for key, value in prepared.items():
                if type(value) not in _PLAIN and not _native((value,)):
                    try:
                        prepared[key] = self._prepare(value)
                    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                        raise _explain(key, value, exc) from None
        if not _STR.issuperset(map(type, dict.keys(data))):
            bad = next(key for key in dict.keys(data) if type(key) is not str)
            raise TypeError(f"session keys must be str, got {bad!r} ({type(bad).__name__})")
        try:
            return self._encoder.encode(prepared), plain
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            for key, value in dict.items(prepared):  # find the culprit (an int over 64 bits)
                try:
                    self._encoder.encode(value)
                except (TypeError, msgspec.EncodeError, OverflowError) as inner:
                    raise _explain(key, dict.__getitem__(data, key), inner) from None
            raise TypeError(f"session data cannot be stored: {exc}") from None

    def _prepare(self, obj: Any) -> Any:
        """`obj` with every value MessagePack would not bring back as itself made an Ext."""
        t = type(obj)
        if t in _PLAIN:
            return obj
        if t is list:
            if _PLAIN.issuperset(map(type, obj)):
                return obj
            return [self._prepare(x) for x in obj]
        if t is dict:
            if _PLAIN.issuperset(map(type, obj)):
                if _PLAIN.issuperset(map(type, obj.values())):
                    return obj
                return {k: self._prepare(v) for k, v in obj.items()}
            flat = [self._prepare(x) for pair in obj.items() for x in pair]
            return Ext(_MAP, self._encoder.encode(flat))
        special = self._special.get(t)
        if special is not None:
            return special(obj)
        kind = self._by_class.get(t)
        if kind is None:
            raise _Refused(_refusal(t))
        if isinstance(obj, enum.Enum):
            ext = self._members_ext.get((t, obj))  # IntEnums of two classes compare equal
            if ext is None:
                ext = self._members_ext[t, obj] = Ext(
                    _TYPED, self._encoder.encode((kind.name, self._prepare(obj.value)))
                )
            return ext
        state = self._prepare(kind.state(obj))
        return Ext(_TYPED, self._encoder.encode((kind.name, state)))

    def _items(self, items: Iterable[Any]) -> bytes:
        return self._encoder.encode([self._prepare(x) for x in items])

    def _tuple(self, obj: tuple[Any, ...]) -> Ext:
        if _PLAIN.issuperset(map(type, obj)):
            return Ext(_TUPLE, self._encoder.encode(obj))
        return Ext(_TUPLE, self._items(obj))

    def _members(self, obj: set[Any] | frozenset[Any]) -> bytes:
        """A set's members in the order of their encodings: equal sets encode the same, so
        packing what was just unpacked gives the stored bytes back."""
        items = [self._prepare(x) for x in obj]
        items.sort(key=self._encoder.encode)
        return self._encoder.encode(items)

    def _set(self, obj: set[Any]) -> Ext:
        return Ext(_SET, self._members(obj))

    def _frozenset(self, obj: frozenset[Any]) -> Ext:
        return Ext(_FROZENSET, self._members(obj))

    def _datetime(self, d: datetime) -> Any:
        tz = d.tzinfo
        if tz is _UTC and not d.fold:
            return d  # MessagePack's timestamp brings it back as this very value
        fields = (d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, d.fold)
        return Ext(_DATETIME, self._encoder.encode((*fields, _zone(tz))))

    def _time(self, t: time) -> Ext:
        fields = (t.hour, t.minute, t.second, t.microsecond, t.fold)
        return Ext(_TIME, self._encoder.encode((*fields, _zone(t.tzinfo))))

    # -- decoding --------------------------------------------------------------------------

    def unpack(self, packed: bytes | memoryview) -> dict[str, Any]:
        """The session data from MessagePack made by `pack`; ValueError when corrupt.

        A value naming a class that is not registered (or no longer builds) is left out, with
        a warning: the rest of the session loads, and the next save stores it without that key.
        """
        return self.load(packed)[0]

    def load(self, packed: bytes | memoryview) -> tuple[dict[str, Any], bool]:
        """`unpack`, and whether the data is whole (nothing left out): then `pack` of it gives
        `packed` back for whatever this codec or an older one wrote."""
        try:
            data: dict[str, Any] = self._decoder.decode(packed)
            return data, True
        except UnknownType:
            return self._unpack_known(packed), False
        except Exception as exc:  # whatever the bytes were: no session, never a 500
            raise ValueError(f"corrupt session payload: {exc}") from None

    def _unpack_known(self, packed: bytes | memoryview) -> dict[str, Any]:
        data: dict[str, Any] = {}
        try:
            for key, raw in self._raw.decode(packed).items():
                try:
                    data[key] = self._any.decode(raw)
                except UnknownType as exc:
                    logger.warning("session value for key %r left out: %s", key, exc)
        except Exception as exc:
            raise ValueError(f"corrupt session payload: {exc}") from None
        return data

    def _ext(self, code: int, body: memoryview) -> Any:
        try:
            if code == _TUPLE:
                return tuple(self._any.decode(body))
            if code == _SET:
                return set(self._any.decode(body))
            if code == _FROZENSET:
                return frozenset(self._any.decode(body))
            if code == _MAP:
                flat = self._any.decode(body)
                return dict(zip(flat[::2], flat[1::2], strict=True))
            if code == _DATETIME:
                y, mo, d, h, mi, s, us, fold, zone = self._any.decode(body)
                return datetime(y, mo, d, h, mi, s, us, _tz(zone), fold=fold)
            if code == _DATE:
                return date.fromordinal(self._any.decode(body))
            if code == _TIME:
                h, mi, s, us, fold, zone = self._any.decode(body)
                return time(h, mi, s, us, _tz(zone), fold=fold)
            if code == _TIMEDELTA:
                days, seconds, micros = self._any.decode(body)
                return timedelta(days, seconds, micros)
            if code == _DECIMAL:
                return Decimal(bytes(body).decode("ascii"))
            if code == _UUID:
                return UUID(bytes=bytes(body))
            if code == _TYPED:
                return self._typed(body)
        except UnknownType:
            raise
        except Exception as exc:
            raise ValueError(f"bad extension value (type {code}): {exc}") from None
        raise ValueError(f"unknown extension type {code}")

    def _typed(self, body: memoryview) -> Any:
        member = self._members_back.get(bytes(body)) if len(body) < 256 else None
        if member is not None:
            return member
        name, state = self._any.decode(body)
        kind = self._by_name.get(name)
        if kind is None:
            raise UnknownType(f"it names type {name!r}, which is not in types=")
        try:
            value = kind.build(state)
        except Exception as exc:  # the class changed since the value was stored
            raise UnknownType(f"type {name!r} no longer builds from it: {exc}") from None
        if isinstance(value, enum.Enum) and len(body) < 256 and len(self._members_back) < 4096:
            self._members_back[bytes(body)] = value
        return value


def _native(values: Iterable[Any]) -> bool:
    """True when MessagePack alone brings every value back as itself: only plain values, lists,
    dicts with plain keys and UTC datetimes, at any depth. CPython's `gc.get_referents` lists a
    level's children in C, so this costs two or three encodings, not a walk in Python; False just
    means "prepare first"."""
    if not _CPYTHON:
        return _PLAIN.issuperset(map(type, values))
    level: Any = values
    for _ in range(_NATIVE_DEPTH):
        if not level:
            return True
        if not _TREE.issuperset(map(type, level)):
            for x in level:
                t = type(x)
                if t not in _TREE and (t is not datetime or x.tzinfo is not _UTC or x.fold):
                    return False
        level = gc.get_referents(*level)
    return False


def _zone(tz: tzinfo | None) -> Any:
    """A tzinfo as stored: None, an offset in microseconds, [offset, name], or a zone key."""
    if tz is None:
        return None
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        micros = (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds
        name = tz.tzname(None)
        return micros if name == timezone(offset).tzname(None) else [micros, name]
    if type(tz) is ZoneInfo and tz.key is not None:
        return tz.key
    raise _Refused(f"a {type(tz).__name__} time zone (use datetime.timezone or zoneinfo.ZoneInfo)")


def _tz(zone: Any) -> tzinfo | None:
    if zone is None:
        return None
    if type(zone) is int:
        return _UTC if zone == 0 else timezone(timedelta(microseconds=zone))
    if type(zone) is str:
        try:
            return ZoneInfo(zone)
        except (ValueError, OSError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise UnknownType(f"its time zone {zone!r} is not known here ({exc})") from None
    micros, name = zone
    return timezone(timedelta(microseconds=micros), name)


def _refusal(t: type) -> str:
    where = f"{t.__module__}.{t.__qualname__}"
    if issubclass(t, enum.Enum | msgspec.Struct) or dataclasses.is_dataclass(t):
        return f"a {where}, which is not registered (add it to SessionMiddleware(types=[...]))"
    return f"a {where}, which is not a type a session stores"


def _explain(key: str, value: Any, exc: BaseException) -> TypeError:
    if isinstance(exc, RecursionError):
        why = "it is nested too deeply (or contains itself)"
    elif isinstance(exc, _Refused):
        why = f"it holds {exc}"
    else:
        why = str(exc)
    return TypeError(
        f"session value for key {key!r} cannot be stored ({type(value).__name__}): {why}"
    )


#: The codec without registered types: what `pack` and `unpack` use.
DEFAULT = Codec()
pack = DEFAULT.pack
unpack = DEFAULT.unpack


def bind(current: Codec, chosen: Codec) -> Codec:
    """The codec a store decodes with once a middleware with codec `chosen` uses it."""
    if chosen is current or not chosen.types:
        return current
    if current is DEFAULT or current.types == chosen.types:
        return chosen
    raise ValueError(
        "this store already serves a SessionMiddleware with other types=; "
        "give each middleware its own store"
    )


# -- the stored payload ----------------------------------------------------------------------


class Framing:
    """A store's payload format: compression, the uncompressed bound, and optional sealing.

    `context` is the item's key: a sealed payload opens only under the key it was sealed for.
    """

    def __init__(
        self,
        *,
        compress_above: int | None = None,
        max_data_size: int = MAX_DATA_SIZE,
        encryption_keys: EncryptionKeys | None = None,
        accept_plaintext: bool = False,
    ) -> None:
        if max_data_size < 1:
            raise ValueError("max_data_size must be positive")
        self.compress_above = compress_above
        self.max_data_size = max_data_size
        self.sealer = None if encryption_keys is None else Sealer(encryption_keys)
        self.accept_plaintext = accept_plaintext

    def dump(self, packed: bytes, context: Callable[[], bytes]) -> bytes:
        """The payload to store for `packed`; SessionTooLarge above `max_data_size`."""
        if len(packed) > self.max_data_size:
            size, limit = len(packed), self.max_data_size
            raise SessionTooLarge(size, limit, what="session data (uncompressed)")
        fmt, body = _squeeze(packed, self.compress_above)
        if self.sealer is None:
            return bytes((fmt,)) + body
        return self.sealer.seal(fmt | _SEALED_FLAG, body, context())

    def load(self, payload: bytes, context: Callable[[], bytes]) -> bytes | memoryview:
        """The MessagePack inside a stored payload; ValueError for anything that is not one of
        ours, does not open, or inflates past `max_data_size`."""
        if not payload:
            raise ValueError("empty session payload")
        fmt = payload[0]
        if fmt in (SEALED, SEALED_ZLIB):
            if self.sealer is None:
                raise ValueError("sealed session payload, but the store has no encryption_keys")
            body: bytes | memoryview = self.sealer.open(payload, context())
            fmt &= ~_SEALED_FLAG
        elif fmt in (PLAIN, ZLIB):
            if self.sealer is not None and not self.accept_plaintext:
                raise ValueError("plaintext session payload while encryption_keys are set")
            body = memoryview(payload)[1:]
        else:
            raise ValueError(f"unknown session payload format byte {fmt:#04x}")
        if fmt == ZLIB:
            return inflate(body, self.max_data_size)
        if len(body) > self.max_data_size:
            raise ValueError(f"session data over {self.max_data_size} bytes")
        return body


def _squeeze(packed: bytes, compress_above: int | None) -> tuple[int, bytes]:
    if compress_above is not None and len(packed) > compress_above:
        squeezed = zlib.compress(packed, 6)
        if len(squeezed) < len(packed):
            return ZLIB, squeezed
    return PLAIN, packed


def inflate(body: bytes | memoryview, limit: int) -> bytes:
    """zlib-decompress at most `limit` bytes; ValueError past it (nothing more is inflated)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"corrupt compressed session payload: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ValueError(f"compressed session data inflates past {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValueError("corrupt compressed session payload: truncated or trailing bytes")
    return out


_PLAINTEXT = Framing()


def _unsealed(compress_above: int | None, max_data_size: int) -> Framing:
    if compress_above is None and max_data_size == MAX_DATA_SIZE:
        return _PLAINTEXT
    return Framing(compress_above=compress_above, max_data_size=max_data_size)


def _no_context() -> bytes:
    return b""


def encode(packed: bytes, compress_above: int | None, max_data_size: int = MAX_DATA_SIZE) -> bytes:
    """The unsealed stored payload for already-packed data, compressed when that pays."""
    return _unsealed(compress_above, max_data_size).dump(packed, _no_context)


def decode(payload: bytes, max_data_size: int = MAX_DATA_SIZE) -> bytes:
    """The packed data inside an unsealed stored payload; ValueError for an unknown format,
    bad bytes, or more than `max_data_size` once inflated."""
    return bytes(_unsealed(None, max_data_size).load(payload, _no_context))
