"""A small HTTP load generator, run as its own process: ``python -m benchmarks.loadgen URL``.

Each of ``--connections`` virtual users keeps its own cookies and sends GETs back to back over a
shared keep-alive pool of that many connections. After ``--warmup`` seconds it counts requests for
``--duration`` seconds, then prints one JSON object: requests, errors, latencies and the CPU time
per request of this process and of each ``--watch NAME=PGID`` process group (Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from ._env import group_cpu_seconds
from ._measure import percentile

MAX_SAMPLES = 50_000


async def user(
    http: aiohttp.ClientSession, url: str, start: float, end: float, out: dict[str, Any]
) -> None:
    cookies: dict[str, str] = {}
    latencies: list[float] = out["latencies_us"]
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            return
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        try:
            async with http.get(url, headers=headers) as response:
                await response.read()
                ok = response.status == 200
                for header in response.headers.getall("Set-Cookie", ()):
                    name, _, value = header.partition(";")[0].partition("=")
                    cookies[name.strip()] = value.strip()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            ok = False
            await asyncio.sleep(0.01)
        if t0 >= start:
            out["requests" if ok else "errors"] += 1
            if len(latencies) < MAX_SAMPLES:
                latencies.append((time.perf_counter() - t0) * 1e6)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": 0, "errors": 0, "latencies_us": []}
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        begin = time.perf_counter()
        start, end = begin + args.warmup, begin + args.warmup + args.duration
        users = [user(http, args.url, start, end, out) for _ in range(args.connections)]
        measure = asyncio.ensure_future(asyncio.gather(*users))
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu, watched, wall = time.process_time(), _watched(args), time.perf_counter()
        await measure
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        watched_end = _watched(args)
    lat = sorted(out["latencies_us"])
    per_request = 1e6 / max(1, out["requests"])
    out.update(
        seconds=wall,
        throughput_per_s=out["requests"] / wall,
        p50_us=percentile(lat, 50),
        p95_us=percentile(lat, 95),
        p99_us=percentile(lat, 99),
        loadgen_cpu_us_per_request=cpu * per_request,
        cpu_us_per_request={
            name: None if a is None or b is None else (b - a) * per_request
            for (name, a), b in zip(watched.items(), watched_end.values(), strict=True)
        },
    )
    return out


def _watched(args: argparse.Namespace) -> dict[str, float | None]:
    groups = (spec.partition("=") for spec in args.watch)
    return {name: group_cpu_seconds(int(pgid)) for name, _, pgid in groups}


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PGID")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))


if __name__ == "__main__":
    cli()
