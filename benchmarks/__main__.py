"""``python -m benchmarks [--quick] [--out DIR] [--only SCENARIO ...]``: run, print, write results.

Starts an in-memory dynalite on a free loopback port, and a moto for the users scenario
(dynalite has no transactions), unless ``DYNAMODB_ENDPOINT_URL`` is set, in which case the
tables it creates there are deleted at the end; with fake AWS credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import _env, _tls, codec_bench, e2e, inprocess, report, store_rt, users_rt
from ._env import REGION
from ._measure import Plan, Series

SCENARIOS = ("store", "middleware", "http", "codec", "users")


def plans(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "store": Plan(rounds=3, ops={1: 50, 32: 96}, warmup=10, round_seconds=4),
            "middleware": Plan(rounds=7, ops={1: 300, 32: 300}, warmup=20, round_seconds=4),
            "http": e2e.HttpPlan(rounds=2, connections=(1, 32), duration=1.2, warmup=0.4),
            "codec": {"batches": 30, "batch": 200},
            "users": Plan(rounds=3, ops={1: 10}, warmup=2, round_seconds=4),
        }
    return {
        "store": Plan(rounds=9, ops={1: 160, 32: 320}, warmup=30, round_seconds=30),
        "middleware": Plan(rounds=15, ops={1: 1000, 32: 1000}, warmup=100, round_seconds=30),
        "http": e2e.HttpPlan(rounds=3, connections=(1, 32), duration=8.0, warmup=2.0),
        "codec": {"batches": 300, "batch": 500},
        "users": Plan(rounds=7, ops={1: 100}, warmup=10, round_seconds=30),
    }


async def dynamo_scenarios(
    endpoint: str,
    only: set[str],
    p: dict[str, Any],
    tables: dict[str, str],
    notes: dict[str, str],
    took: dict[str, float],
    dynamodb_pid: int | None,
) -> list[Series]:
    scenarios: dict[str, tuple[str, Callable[[], Awaitable[list[Series]]]]] = {
        "store": (
            "store round trips",
            lambda: store_rt.run(endpoint, tables["store"], p["store"], notes),
        ),
        "middleware": (
            "middleware in process",
            lambda: inprocess.run(endpoint, tables["middleware"], p["middleware"], notes),
        ),
        "http": (
            "end to end over HTTP",
            lambda: e2e.run(
                endpoint, tables["http"], tables["hand"], p["http"], notes, dynamodb_pid
            ),
        ),
    }
    series: list[Series] = []
    for name, (title, scenario) in scenarios.items():
        if name not in only:
            continue
        print(f"{title} ...", flush=True)
        began = time.perf_counter()
        try:
            series += await scenario()
        except Exception as exc:  # reported; the other scenarios still run
            notes[f"scenario {name}"] = f"failed: {type(exc).__name__}: {exc}"
            print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
        took[name] = round(time.perf_counter() - began, 1)
    return series


async def drop_tables(endpoint: str, tables: list[str]) -> None:
    """Delete the tables this run created on a user's endpoint."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "dynamodb", endpoint_url=endpoint, region_name=REGION
    ) as client:
        for table in tables:
            with contextlib.suppress(Exception):
                await client.delete_table(TableName=table)


def store_variants(
    endpoint: str, plan: Plan, tables: dict[str, str], notes: dict[str, str], took: dict[str, float]
) -> list[Series]:
    """The store round trips again over TLS (a terminator process in front of `endpoint`, its
    CA made now and trusted through ``AWS_CA_BUNDLE``), on asyncio and on uvloop, and on plain
    HTTP under uvloop."""
    import uvloop

    series: list[Series] = []

    def timed(name: str, run: Callable[[], list[Series]]) -> None:
        print(f"{name} ...", flush=True)
        began = time.perf_counter()
        try:
            series.extend(run())
        except Exception as exc:  # reported; the rest still runs
            notes[f"scenario {name}"] = f"failed: {type(exc).__name__}: {exc}"
            print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
        took[name] = round(time.perf_counter() - began, 1)

    if endpoint.startswith("http://"):
        with _tls.terminator(endpoint) as (tls_endpoint, ca):
            os.environ["AWS_CA_BUNDLE"] = ca
            for name, table, runner in (
                ("store tls", tables["store-tls"], asyncio.run),
                ("store tls uvloop", tables["store-tls-uv"], uvloop.run),
            ):
                timed(
                    name,
                    lambda name=name, table=table, runner=runner: runner(  # type: ignore[misc]
                        store_rt.run(tls_endpoint, table, plan, notes, scenario=name, ca_bundle=ca)
                    ),
                )
            del os.environ["AWS_CA_BUNDLE"]
    else:
        notes["store tls"] = "skipped: the endpoint is not plain http"
    timed(
        "store uvloop",
        lambda: uvloop.run(
            store_rt.run(endpoint, tables["store-uv"], plan, notes, scenario="store uvloop")
        ),
    )
    return series


def users_scenario(
    plan: Plan, table: str, notes: dict[str, str], took: dict[str, float]
) -> list[Series]:
    """Bind, list and revoke beside a plain create, on a moto started for them (its own
    server: the other scenarios' dynalite has no TransactWriteItems)."""
    print("users and devices (moto) ...", flush=True)
    began = time.perf_counter()
    series: list[Series] = []
    try:
        with _env.moto() as endpoint:
            try:
                series = asyncio.run(users_rt.run(endpoint, table, plan, notes))
            finally:
                if os.environ.get("DYNAMODB_ENDPOINT_URL"):
                    asyncio.run(drop_tables(endpoint, [table]))
    except Exception as exc:  # reported; the other scenarios' results are still written
        notes["scenario users"] = f"failed: {type(exc).__name__}: {exc}"
        print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
    took["users"] = round(time.perf_counter() - began, 1)
    return series


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--out", type=Path, default=_env.ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    p = plans(args.quick)
    only = set(args.only)
    run_id = uuid.uuid4().hex[:8]
    kinds = (
        "store",
        "store-tls",
        "store-tls-uv",
        "store-uv",
        "middleware",
        "http",
        "hand",
        "users",
    )
    tables = {k: f"bench-{run_id}-{k}" for k in kinds}
    notes: dict[str, str] = {}
    took: dict[str, float] = {}
    began = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    series: list[Series] = []
    server = "none"
    if only - {"codec", "users"}:
        with _env.dynamodb() as (endpoint, server, dynamodb_pid):
            print(f"DynamoDB: {server} at {endpoint}", flush=True)
            try:
                series += asyncio.run(
                    dynamo_scenarios(endpoint, only, p, tables, notes, took, dynamodb_pid)
                )
                if "store" in only:
                    series += store_variants(endpoint, p["store"], tables, notes, took)
            finally:
                if server == "external":
                    asyncio.run(drop_tables(endpoint, list(tables.values())))
    if "users" in only:
        series += users_scenario(p["users"], tables["users"], notes, took)
        if not os.environ.get("DYNAMODB_ENDPOINT_URL"):
            server = "moto" if server == "none" else f"{server} (users: moto)"
    if "codec" in only:
        print("codec ...", flush=True)
        codec_began = time.perf_counter()
        series += codec_bench.run(**p["codec"])
        took["codec"] = round(time.perf_counter() - codec_began, 1)
    run = {
        "quick": args.quick,
        "scenarios": sorted(only, key=SCENARIOS.index),
        "plans": {k: vars(v) if not isinstance(v, dict) else v for k, v in p.items()},
        "seconds": round(time.perf_counter() - began, 1),
        "seconds_per_scenario": took,
        "load_average_at_start": load_at_start,
        "notes": notes,
    }
    report.write(args.out, series, _env.machine(server), run)


if __name__ == "__main__":
    main()
