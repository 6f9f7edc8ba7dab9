"""stats: live and expired items, item sizes, and what a million requests at those sizes cost."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..dynamodb import DynamoDBStoreProps
from ._progress import Progress
from ._units import item_bytes, read_units, write_units

#: On-demand prices, US East (N. Virginia), Standard table class, as published since
#: November 2024; other regions and Standard-IA cost more (--write-price/--read-price).
WRITE_PRICE = 0.625  # USD per million write request units
READ_PRICE = 0.125  # USD per million read request units
PRICE_REGION = "us-east-1"


def percentile(sorted_sizes: list[int], p: float) -> int:
    """Nearest-rank percentile: the smallest size that at least p% of the items do not exceed."""
    rank = max(1, math.ceil(p / 100 * len(sorted_sizes)))
    return sorted_sizes[rank - 1]


@dataclass
class SizeRow:
    label: str
    bytes: int
    write_units: int
    read_units: float
    write_cost: float  # USD per million saves (PutItem/UpdateItem) at this size
    read_cost: float  # USD per million loads (GetItem) at this size


@dataclass
class Stats:
    table: str
    scanned: int = 0
    live: int = 0
    expired: int = 0
    other: int = 0  # items without a numeric expiry attribute
    sizes: list[SizeRow] = field(default_factory=list)
    consistent_read: bool = True
    write_price: float = WRITE_PRICE
    read_price: float = READ_PRICE
    price_region: str = PRICE_REGION

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def size_rows(
    sizes: list[int], *, consistent: bool, write_price: float, read_price: float
) -> list[SizeRow]:
    if not sizes:
        return []
    ordered = sorted(sizes)
    rows = []
    for label, p in (("p50", 50.0), ("p95", 95.0), ("max", 100.0)):
        size = percentile(ordered, p)
        wcu, rcu = write_units(size), read_units(size, consistent)
        rows.append(
            SizeRow(label, size, wcu, rcu, round(wcu * write_price, 4), round(rcu * read_price, 4))
        )
    return rows


async def collect(
    client: Any,
    props: DynamoDBStoreProps,
    progress: Progress,
    *,
    page_size: int | None,
    write_price: float,
    read_price: float,
    now: float | None = None,
) -> Stats:
    """One full Scan of the table (it reads every item once: RCUs for the whole table)."""
    moment = time.time() if now is None else now
    stats = Stats(
        props.table_name,
        consistent_read=props.consistent_read,
        write_price=write_price,
        read_price=read_price,
    )
    sizes: list[int] = []
    params: dict[str, Any] = {"TableName": props.table_name}
    if page_size is not None:
        params["Limit"] = page_size
    while True:
        page = await client.scan(**params)
        for item in page.get("Items", []):
            stats.scanned += 1
            try:
                expires = float(item[props.expiry_name]["N"])
            except (KeyError, ValueError):
                stats.other += 1
                continue
            if expires > moment:
                stats.live += 1
                sizes.append(item_bytes(item))
            else:
                stats.expired += 1
        progress.update(stats.scanned, 0)
        start = page.get("LastEvaluatedKey")
        if start is None:
            break
        params["ExclusiveStartKey"] = start
    stats.sizes = size_rows(
        sizes, consistent=props.consistent_read, write_price=write_price, read_price=read_price
    )
    return stats


def _money(value: float) -> str:
    text = f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"${text}"


def report(stats: Stats) -> str:
    """The human-readable stats."""
    lines = [
        f"table {stats.table}: {stats.scanned:,} items",
        f"  live sessions     {stats.live:>10,}",
        f"  expired sessions  {stats.expired:>10,}  (waiting for TTL or purge-expired)",
    ]
    if stats.other:
        lines.append(f"  other items       {stats.other:>10,}  (no numeric expiry attribute)")
    if not stats.sizes:
        lines.append("no live sessions: no size figures")
        return "\n".join(lines) + "\n"
    reads = "strongly consistent" if stats.consistent_read else "eventually consistent"
    lines += [
        "",
        "live session item size (names + values, as DynamoDB bills it)",
        "         bytes   write units (1 KB)   read units (4 KB)   1M saves   1M loads",
    ]
    for row in stats.sizes:
        lines.append(
            f"  {row.label:<4} {row.bytes:>8,}   {row.write_units:>18,}   {row.read_units:>17g}   "
            f"{_money(row.write_cost):>8}   {_money(row.read_cost):>8}"
        )
    lines += [
        "",
        f"prices: on-demand, {stats.price_region} (US East, N. Virginia), Standard table class:",
        f"  ${stats.write_price:g} per million write request units, ${stats.read_price:g} per "
        "million read request units",
        "  (other regions differ: --write-price, --read-price). A save (PutItem, UpdateItem)",
        f"  costs the write units above, a load ({reads} GetItem) the read units;",
        "  a transaction costs twice.",
    ]
    return "\n".join(lines) + "\n"
