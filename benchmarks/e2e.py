"""Scenario 3: the counter end to end over HTTP, uvicorn in one process, the load in another.

Both apps (`benchmarks.apps`) are served at once on their own loopback ports; the load generator
(`benchmarks.loadgen`) drives them in turn, so a noisy moment hits both alike. The CPU figure is
the server process's CPU per request (it is the DynamoDB client here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreKey, DynamoDBStoreProps

from ._env import REGION, ROOT, child_env, free_port, spawn
from ._measure import Series

OURS = "ours (middleware + DynamoDBStore)"
BY_HAND = "by hand (aiobotocore get/put)"
APPS = {OURS: "benchmarks.apps:ours", BY_HAND: "benchmarks.apps:by_hand"}


@dataclass
class HttpPlan:
    rounds: int
    connections: tuple[int, ...]
    duration: float
    warmup: float


async def create_tables(endpoint: str, table: str, hand_table: str) -> None:
    hand = DynamoDBStoreProps(table_name=hand_table, partition_key=DynamoDBStoreKey(name="id"))
    for props in (DynamoDBStoreProps(table_name=table), hand):
        async with DynamoDBStore(
            props=props, endpoint_url=endpoint, region_name=REGION, transport="aiobotocore"
        ) as store:
            await store.create_table()


def drive(url: str, connections: int, plan: HttpPlan, watch: dict[str, int]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.loadgen", url, "--connections", str(connections)]
    command += ["--duration", str(plan.duration), "--warmup", str(plan.warmup)]
    for name, pgid in watch.items():
        command += ["--watch", f"{name}={pgid}"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=plan.duration + plan.warmup + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def run(
    endpoint: str,
    table: str,
    hand_table: str,
    plan: HttpPlan,
    notes: dict[str, str],
    dynamodb_pid: int | None = None,
) -> list[Series]:
    """Both counters at each connection count; CPU per request of the server in `rounds_cpu_us`,
    of DynamoDB (our dynalite) and of the load generator in `extra`."""
    await create_tables(endpoint, table, hand_table)
    env = child_env(BENCH_ENDPOINT=endpoint, BENCH_TABLE=table, BENCH_HAND_TABLE=hand_table)
    series = {
        (name, c): Series("http", "counter", name, c) for name in APPS for c in plan.connections
    }
    with ExitStack() as stack:
        servers: dict[str, tuple[str, int]] = {}
        for name, target in APPS.items():
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1"]
            command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
            try:
                pid = stack.enter_context(spawn(command, port, env=env))
            except RuntimeError as exc:
                notes[f"http {name}"] = f"server did not start: {exc}"
                for c in plan.connections:
                    series[name, c].error = "server did not start"
                continue
            servers[name] = (f"http://127.0.0.1:{port}/", pid)
        for r in range(plan.rounds):
            for connections in plan.connections:
                names = list(APPS)[r % 2 :] + list(APPS)[: r % 2]
                for name in names:
                    s = series[name, connections]
                    if s.error is not None:
                        continue
                    url, pid = servers[name]
                    watch = {"server": pid}
                    if dynamodb_pid is not None:
                        watch["dynamodb"] = dynamodb_pid
                    try:
                        result = drive(url, connections, plan, watch)
                    except (subprocess.SubprocessError, ValueError) as exc:
                        s.error = f"load generator failed: {exc}"
                        continue
                    s.ops += result["requests"]
                    s.latencies_us += result["latencies_us"]
                    s.rounds_rate.append(result["throughput_per_s"])
                    cpu = result["cpu_us_per_request"]
                    if cpu.get("server") is not None:
                        s.rounds_cpu_us.append(cpu["server"])
                    s.extra["errors"] = s.extra.get("errors", 0) + result["errors"]
                    for key, value in (
                        ("loadgen", result["loadgen_cpu_us_per_request"]),
                        ("dynamodb", cpu.get("dynamodb")),
                    ):
                        if value is not None:
                            s.extra.setdefault(f"{key}_cpu_us_per_request", []).append(value)
    return list(series.values())
