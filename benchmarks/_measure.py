"""Timing async operations: per-op latency, throughput and client CPU, variants side by side.

A *variant* is a ``prepare(concurrency, n)`` coroutine doing its untimed setup and returning the
operation, ``op(worker)``, safe to call ``n`` times spread over ``concurrency`` workers. Variants of
one case run in interleaved rounds (order rotating each round), so a noisy neighbour hits them all
alike; CPU per op and throughput are the medians over rounds.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Op = Callable[[int], Awaitable[object]]
Prepare = Callable[[int, int], Awaitable[Op]]


@dataclass
class Plan:
    """How much to run: rounds per case, ops per round at each concurrency, a time bound."""

    rounds: int
    ops: dict[int, int]
    warmup: int
    round_seconds: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, by linear interpolation."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class Series:
    """Everything measured for one scenario/case/variant at one concurrency."""

    scenario: str
    case: str
    variant: str
    concurrency: int
    latencies_us: list[float] = field(default_factory=list)
    rounds_cpu_us: list[float] = field(default_factory=list)  # CPU per op, each round
    rounds_rate: list[float] = field(default_factory=list)  # ops per second, each round
    ops: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us(self) -> float:
        return statistics.median(self.rounds_cpu_us) if self.rounds_cpu_us else float("nan")

    @property
    def rate(self) -> float:
        return statistics.median(self.rounds_rate) if self.rounds_rate else float("nan")

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_us)
        return {
            "scenario": self.scenario,
            "case": self.case,
            "variant": self.variant,
            "concurrency": self.concurrency,
            "ops": self.ops,
            "p50_us": percentile(lat, 50),
            "p95_us": percentile(lat, 95),
            "p99_us": percentile(lat, 99),
            "mean_us": statistics.fmean(lat) if lat else float("nan"),
            "max_us": lat[-1] if lat else float("nan"),
            "throughput_per_s": self.rate,
            "cpu_us_per_op": self.cpu_us,
            "rounds_cpu_us_per_op": self.rounds_cpu_us,
            "rounds_throughput_per_s": self.rounds_rate,
            "error": self.error,
            **self.extra,
        }


async def _round(
    op: Op, n: int, concurrency: int, seconds: float, out: list[float]
) -> tuple[int, float, float]:
    """Run op n times over `concurrency` workers (stopping early at the time bound)."""
    remaining = n
    deadline = time.perf_counter() + seconds
    clock = time.perf_counter_ns

    async def worker(w: int) -> int:
        nonlocal remaining
        done = 0
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            start = clock()
            await op(w)
            out.append((clock() - start) / 1000)
            done += 1
        return done

    # Start each round with no garbage pending; freezing what survives keeps the next collections
    # (and this one, next round) cheap, as the loaded AWS models are never scanned again.
    gc.collect()
    gc.freeze()
    cpu, wall = time.process_time(), time.perf_counter()
    done = sum(await asyncio.gather(*(worker(w) for w in range(concurrency))))
    return done, time.process_time() - cpu, time.perf_counter() - wall


async def compare(
    scenario: str,
    case: str,
    variants: dict[str, Prepare],
    plan: Plan,
    concurrency: int,
    scale: dict[str, float] | None = None,
) -> list[Series]:
    """Measure the variants of one case in interleaved rounds; a failing variant is reported.

    `scale` shrinks the ops per round of slow variants that no ratio compares closely.
    """
    series = {name: Series(scenario, case, name, concurrency) for name in variants}
    names = list(variants)
    for r in range(plan.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            s = series[name]
            if s.error is not None:
                continue
            n = max(concurrency, int(plan.ops[concurrency] * (scale or {}).get(name, 1.0)))
            try:
                op = await variants[name](concurrency, n + plan.warmup)
                sink: list[float] = []
                await _round(op, plan.warmup, concurrency, plan.round_seconds, sink)
                done, cpu, wall = await _round(
                    op, n, concurrency, plan.round_seconds, s.latencies_us
                )
            except Exception as exc:  # reported, and the rest of the run goes on
                s.error = f"{type(exc).__name__}: {exc}"
                continue
            s.ops += done
            if done:
                s.rounds_cpu_us.append(cpu / done * 1e6)
                s.rounds_rate.append(done / wall)
    return list(series.values())
