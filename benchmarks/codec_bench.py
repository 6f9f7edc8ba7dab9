"""Scenario 4: encoding and decoding the ~1 KB session, our codec (msgspec) vs json vs pickle.

Ours is what the store does: ``codec.encode(codec.pack(data))`` and
``codec.unpack(codec.decode(payload))``. JSON needs the datetime turned into text first (and gives
text back); that conversion is counted, as an app storing JSON would have to do it.
"""

from __future__ import annotations

import gc
import json
import pickle
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from asgi_dynamo_session import codec

from ._measure import Series
from .payload import session_data


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def codecs() -> dict[str, tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], Any]]]:
    return {
        "msgspec (ours)": (
            lambda d: codec.encode(codec.pack(d), 8 * 1024),
            lambda b: codec.unpack(codec.decode(b)),
        ),
        "json (stdlib)": (
            lambda d: json.dumps(d, default=_json_default, separators=(",", ":")).encode(),
            json.loads,
        ),
        "pickle": (lambda d: pickle.dumps(d, pickle.HIGHEST_PROTOCOL), pickle.loads),
    }


def run(batches: int, batch: int) -> list[Series]:
    """ns per op over `batches` batches of `batch` calls each, the codecs interleaved."""
    data = session_data()
    results: dict[tuple[str, str], Series] = {}
    for name, (encode, _) in codecs().items():
        payload = encode(data)
        for case in ("encode", "decode"):
            s = results[name, case] = Series("codec", case, name, 1)
            s.extra["payload_bytes"] = len(payload)
    gc.collect()
    for _ in range(batches):
        for name, (encode, decode) in codecs().items():
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
