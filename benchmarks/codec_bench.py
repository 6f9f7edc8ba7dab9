"""Scenario 4: encoding and decoding the ~1 KB session: our codec against the codec as it was
before typed values and sealing (plain msgspec MessagePack behind a format byte), json, pickle.

Ours is what a store does: `Framing.dump(codec.pack(data))` and `codec.unpack(Framing.load(..))`,
for the plain session, a typed session of about the same size (Structs, Enums, Decimals, a set,
tuples, naive datetimes, UUIDs: everything as extension types) and the plain session sealed with
AES-256-GCM. JSON needs the datetime turned into text first (and gives text back); that
conversion is counted, as an app storing JSON would have to do it.
"""

from __future__ import annotations

import enum
import gc
import json
import pickle
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from asgi_dynamo_session import codec

from ._measure import Series
from .payload import session_data

BEFORE = "msgspec, before typed values"
OURS = "msgspec (ours)"
TYPED = "ours, typed session"
SEALED = "ours, sealed"
KEY = bytes(range(32))
CONTEXT = b"\x92\xaasession_id\xd9\x2bSESSIONS::TOWER::0123456789abcdef0123456789abcdef012"


class Role(enum.Enum):
    READER = "reader"
    EDITOR = "editor"
    BILLING = "billing-admin"
    SUPPORT = "support"


class Line(msgspec.Struct):
    sku: str
    qty: int
    price: Decimal


class Flash(msgspec.Struct):
    level: str
    text: str


def typed_data() -> dict[str, Any]:
    """The benchmark session with typed values in place of their plain stand-ins."""
    data = session_data()
    data["user_uuid"] = UUID(int=1_048_576)
    data["roles"] = {Role.READER, Role.EDITOR, Role.BILLING, Role.SUPPORT}
    data["authenticated_at"] = data["authenticated_at"].replace(tzinfo=None)
    data["flash"] = [Flash(**f) for f in data["flash"]]
    data["cart"] = [Line(c["sku"], c["qty"], Decimal(c["price"])) for c in data["cart"]]
    data["recent_searches"] = tuple(data["recent_searches"])
    data["prefs"]["dashboard"]["widgets"] = tuple(data["prefs"]["dashboard"]["widgets"])
    return data


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


Codecs = dict[str, tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], Any]]]


def _before() -> tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], Any]]:
    """The codec before issue 10, verbatim: format byte + msgspec MessagePack (+ zlib)."""
    import zlib

    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(dict[str, Any])

    def encode(data: dict[str, Any]) -> bytes:
        packed = encoder.encode(data)
        if len(packed) > 8 * 1024:
            squeezed = zlib.compress(packed, 6)
            if len(squeezed) < len(packed):
                return b"\x02" + squeezed
        return b"\x01" + packed

    def decode(payload: bytes) -> Any:
        packed = payload[1:] if payload[0] == 1 else zlib.decompress(memoryview(payload)[1:])
        return decoder.decode(packed)

    return encode, decode


def codecs() -> Codecs:
    plain = codec.Framing(compress_above=8 * 1024)
    sealed = codec.Framing(compress_above=8 * 1024, encryption_keys=[KEY])
    typed = codec.Codec([Role, Line, Flash])

    def context() -> bytes:
        return CONTEXT

    return {
        BEFORE: _before(),
        OURS: (
            lambda d: plain.dump(codec.pack(d), context),
            lambda b: codec.unpack(plain.load(b, context)),
        ),
        TYPED: (
            lambda d: plain.dump(typed.pack(d), context),
            lambda b: typed.unpack(plain.load(b, context)),
        ),
        SEALED: (
            lambda d: sealed.dump(codec.pack(d), context),
            lambda b: codec.unpack(sealed.load(b, context)),
        ),
        "json (stdlib)": (
            lambda d: json.dumps(d, default=_json_default, separators=(",", ":")).encode(),
            json.loads,
        ),
        "pickle": (lambda d: pickle.dumps(d, pickle.HIGHEST_PROTOCOL), pickle.loads),
    }


def run(batches: int, batch: int) -> list[Series]:
    """ns per op over `batches` batches of `batch` calls each, the codecs interleaved."""
    plain_data, typed = session_data(), typed_data()
    inputs = {name: typed if name == TYPED else plain_data for name in codecs()}
    results: dict[tuple[str, str], Series] = {}
    for name, (encode, decode) in codecs().items():
        payload = encode(inputs[name])
        assert decode(payload) is not None
        for case in ("encode", "decode"):
            s = results[name, case] = Series("codec", case, name, 1)
            s.extra["payload_bytes"] = len(payload)
    gc.collect()
    for _ in range(batches):
        for name, (encode, decode) in codecs().items():
            data = inputs[name]
            payload = encode(data)
            for case in ("encode", "decode"):
                s = results[name, case]
                cpu, wall = time.process_time(), time.perf_counter_ns()
                if case == "encode":
                    for _ in range(batch):
                        encode(data)
                else:
                    for _ in range(batch):
                        decode(payload)
                per_op_ns = (time.perf_counter_ns() - wall) / batch
                s.latencies_us.append(per_op_ns / 1000)
                s.rounds_cpu_us.append((time.process_time() - cpu) / batch * 1e6)
                s.rounds_rate.append(1e9 / per_op_ns)
                s.ops += batch
    return list(results.values())
