"""purge-expired: Scan for items whose expiry has passed and delete them in batches of 25,
paced to a write-unit budget, stoppable with Ctrl-C between batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..dynamodb import DynamoDBStore
from ._progress import Progress
from ._units import item_bytes, write_units

BATCH = 25  # BatchWriteItem's limit


@dataclass
class Outcome:
    scanned: int = 0
    deleted: int = 0
    finished: bool = False
    resume_key: dict[str, Any] | None = None  # where to go on after an interrupt


class Pacer:
    """Keeps the write units spent at or under `per_second` since the first batch."""

    def __init__(self, per_second: float | None) -> None:
        self.per_second = per_second
        self.started: float | None = None
        self.spent = 0.0

    def delay(self, units: float) -> float:
        """Seconds to wait before spending `units` more."""
        if self.per_second is None:
            return 0.0
        now = time.monotonic()
        if self.started is None:
            self.started = now
        due = self.started + self.spent / self.per_second
        self.spent += units
        return max(0.0, due - now)


def batch_size(max_wcu: float | None) -> int:
    if max_wcu is None:
        return BATCH
    return max(1, min(BATCH, int(max_wcu)))


def parse_start_key(text: str) -> dict[str, Any]:
    """A --start-key value: a JSON object of attribute values, as the resume hint prints it."""
    try:
        key = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--start-key is not JSON: {exc}") from None
    if not isinstance(key, dict) or not key:
        raise ValueError('--start-key must be a JSON object like {"session_id": {"S": "..."}}')
    for name, value in key.items():
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"--start-key: {name!r} must be an attribute value like {{'S': ...}}")
    return key


@contextlib.contextmanager
def interruptible(stop: asyncio.Event) -> Iterator[None]:
    """The first Ctrl-C sets `stop` (the current batch finishes); a second one aborts."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def purge(
    store: DynamoDBStore,
    progress: Progress,
    *,
    dry_run: bool,
    max_wcu: float | None,
    page_size: int | None,
    start_key: dict[str, Any] | None,
    stop: asyncio.Event,
    now: int | None = None,
) -> Outcome:
    """Delete (or with `dry_run` only count) the expired items; stops early once `stop` is set."""
    client: Any = store.client
    wire = await store._transport()
    p = store.props
    key_names = [p.partition_key.name] + ([p.sort_key.name] if p.sort_key else [])
    params: dict[str, Any] = {
        "TableName": p.table_name,
        "FilterExpression": "#exp <= :now",
        "ExpressionAttributeNames": {"#exp": p.expiry_name},
        "ExpressionAttributeValues": {":now": {"N": str(int(time.time()) if now is None else now)}},
    }
    if page_size is not None:
        params["Limit"] = page_size
    out = Outcome(resume_key=start_key)
    pacer = Pacer(max_wcu)
    size = batch_size(max_wcu)
    while True:
        if out.resume_key is not None:
            params["ExclusiveStartKey"] = out.resume_key
        page = await client.scan(**params)
        before, page_scanned = out.scanned, int(page.get("ScannedCount", 0))
        items: list[dict[str, Any]] = page.get("Items", [])
        if not items:
            out.scanned += page_scanned
        progress.update(out.scanned, out.deleted)
        for i in range(0, len(items), size):
            batch = items[i : i + size]
            if stop.is_set():
                return out
            keys = [{name: item[name] for name in key_names} for item in batch]
            if not dry_run:
                wait = pacer.delay(sum(write_units(item_bytes(item)) for item in batch))
                if wait:
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                    if stop.is_set():
                        return out
                await store._batch_delete(wire, keys, 8)
            out.deleted += len(batch)
            out.resume_key = keys[-1]
            # the page's scanned items, counted as its expired ones are worked through
            out.scanned = before + page_scanned * (i + len(batch)) // len(items)
            progress.update(out.scanned, out.deleted)
        out.resume_key = page.get("LastEvaluatedKey")
        if out.resume_key is None:
            out.finished = True
            return out
        if stop.is_set():
            return out
