"""The ratios the issue's goals name, and the outputs: terminal table, JSON, markdown, PNG."""

from __future__ import annotations

import json
import math
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import codec_bench, e2e, inprocess, store_rt, users_rt
from ._measure import Series

SCENARIOS = {
    "store": "1. Store round trips",
    "store tls": "1b. Store round trips over TLS (loopback terminator)",
    "store tls uvloop": "1c. Store round trips over TLS, uvloop",
    "store uvloop": "1d. Store round trips, uvloop",
    "store tls uvloop profile": "1e. Where a fast load's own CPU goes (TLS, uvloop)",
    "middleware": "2. Middleware in process (ASGI calls)",
    "http": "3. End to end over HTTP (uvicorn, load from another process)",
    "codec": "4. Codec, ~1 KB session",
    "users": "5. Users and devices, beside a plain create (moto: it has transactions)",
}
CPU_NOTE = {
    "store": "client CPU per op",
    "store tls": "client CPU per op",
    "store tls uvloop": "client CPU per op",
    "store uvloop": "client CPU per op",
    "store tls uvloop profile": "CPU per call of each part alone",
    "middleware": "CPU per request",
    "http": "server CPU per request",
    "codec": "CPU per op",
    "users": "client CPU per op",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class RatioSpec:
    name: str
    scenario: str
    top: tuple[str, str]  # (case, variant)
    bottom: tuple[str, str]
    figure: str  # "cpu", "throughput" or "wall" (time per op)
    concurrency: int
    goal: tuple[str, float] | None = None


_LOAD, _SAVE = "load", "save"
_TU = "store tls uvloop"
_UNTOUCHED, _READ = inprocess.CASES[0], inprocess.CASES[1]
SPECS = [
    # Issue 13: what deployments run (TLS, uvloop).
    *(
        RatioSpec(
            f"fast / httptools floor, CPU per {case}, TLS uvloop",
            _TU,
            (case, store_rt.FAST),
            (case, store_rt.FLOOR_HTTPTOOLS),
            "cpu",
            1,
            ("<=", 1.5),
        )
        for case in (_LOAD, _SAVE)
    ),
    *(
        RatioSpec(
            f"fast / aiobotocore, CPU per {case}, TLS uvloop",
            _TU,
            (case, store_rt.FAST),
            (case, store_rt.AIOBOTOCORE),
            "cpu",
            1,
            ("<=", 0.15),
        )
        for case in (_LOAD, _SAVE)
    ),
    *(
        RatioSpec(
            f"fast / aiodynamo, CPU per {case}, TLS uvloop",
            _TU,
            (case, store_rt.FAST),
            (case, store_rt.AIODYNAMO),
            "cpu",
            1,
            ("<=", 0.5),
        )
        for case in (_LOAD, _SAVE)
    ),
    RatioSpec(
        "fast / aiobotocore, CPU per load",
        "store",
        (_LOAD, store_rt.FAST),
        (_LOAD, store_rt.AIOBOTOCORE),
        "cpu",
        1,
        ("<=", 0.35),
    ),
    RatioSpec(
        "fast / aiobotocore, CPU per save",
        "store",
        (_SAVE, store_rt.FAST),
        (_SAVE, store_rt.AIOBOTOCORE),
        "cpu",
        1,
        ("<=", 0.35),
    ),
    RatioSpec(
        "fast load / floor (pre-signed GetItem), CPU",
        "store",
        (_LOAD, store_rt.FAST),
        (_LOAD, store_rt.FLOOR),
        "cpu",
        1,
        ("<=", 1.6),
    ),
    RatioSpec(
        "fast save / floor (pre-signed PutItem), CPU",
        "store",
        (_SAVE, store_rt.FAST),
        (_SAVE, store_rt.FLOOR),
        "cpu",
        1,
        ("<=", 1.6),
    ),
    RatioSpec(
        "ours (MemoryStore) / Starlette SessionMiddleware, CPU per read-only request",
        "middleware",
        (_READ, inprocess.MEMORY),
        (_READ, inprocess.STARLETTE),
        "cpu",
        1,
        ("<", 1.0),
    ),
    RatioSpec(
        "ours / no middleware, CPU per request without cookie, session untouched",
        "middleware",
        (_UNTOUCHED, inprocess.MEMORY),
        (_UNTOUCHED, inprocess.NONE),
        "cpu",
        1,
        ("<=", 1.1),
    ),
    RatioSpec(
        "send-wrapper floor / no middleware, CPU per request (what wrapping send costs)",
        "middleware",
        (_UNTOUCHED, inprocess.WRAPPER),
        (_UNTOUCHED, inprocess.NONE),
        "cpu",
        1,
    ),
    RatioSpec(
        "ours / by hand, HTTP throughput at 32 connections",
        "http",
        ("counter", e2e.OURS),
        ("counter", e2e.BY_HAND),
        "throughput",
        32,
        (">=", 2.0),
    ),
    # Context, no goal.
    RatioSpec(
        "fast / aiobotocore, CPU per load at 32 tasks",
        "store",
        (_LOAD, store_rt.FAST),
        (_LOAD, store_rt.AIOBOTOCORE),
        "cpu",
        32,
    ),
    RatioSpec(
        "fast / aiobotocore, CPU per save at 32 tasks",
        "store",
        (_SAVE, store_rt.FAST),
        (_SAVE, store_rt.AIOBOTOCORE),
        "cpu",
        32,
    ),
    RatioSpec(
        "store aiobotocore load / raw aiobotocore get_item, CPU",
        "store",
        (_LOAD, store_rt.AIOBOTOCORE),
        (_LOAD, store_rt.RAW),
        "cpu",
        1,
    ),
    RatioSpec(
        "ours / by hand, server CPU per HTTP request at 32 connections",
        "http",
        ("counter", e2e.OURS),
        ("counter", e2e.BY_HAND),
        "cpu",
        32,
        ("<=", 0.25),
    ),
    RatioSpec(
        "ours / by hand, HTTP throughput at 1 connection",
        "http",
        ("counter", e2e.OURS),
        ("counter", e2e.BY_HAND),
        "throughput",
        1,
    ),
    RatioSpec(
        "json / msgspec (ours), decode CPU",
        "codec",
        ("decode", "json (stdlib)"),
        ("decode", "msgspec (ours)"),
        "cpu",
        1,
    ),
    *(
        RatioSpec(
            f"{label} / codec before typed values (plain session), {case} CPU",
            "codec",
            (case, variant),
            (case, codec_bench.BEFORE),
            "cpu",
            1,
        )
        for label, variant in (
            ("plain session", codec_bench.OURS),
            ("typed session", codec_bench.TYPED),
            ("sealed session", codec_bench.SEALED),
        )
        for case in ("encode", "decode")
    ),
    *(
        RatioSpec(
            f"{transport} {op} / {transport} create, {'CPU' if figure == 'cpu' else 'wall'}",
            users_rt.SCENARIO,
            (users_rt.CASE, users_rt.variant_name(transport, op)),
            (users_rt.CASE, users_rt.variant_name(transport, "create")),
            figure,
            1,
        )
        for transport in users_rt.TRANSPORTS
        for op in users_rt.OPS[1:]
        for figure in ("cpu", "wall")
    ),
]


def _find(series: list[Series], scenario: str, key: tuple[str, str], c: int) -> Series | None:
    for s in series:
        if (s.scenario, s.case, s.variant, s.concurrency) == (scenario, *key, c):
            return s
    return None


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """The median of round-by-round ratios (the rounds ran side by side), which cancels the
    drift of a shared machine; the ratio of medians when the rounds do not pair up."""
    if not top or not bottom or not all(bottom):
        return float("nan")
    if len(top) == len(bottom):
        return statistics.median(a / b for a, b in zip(top, bottom, strict=True))
    return statistics.median(top) / statistics.median(bottom)


def ratios(series: list[Series]) -> list[dict[str, Any]]:
    out = []
    for spec in SPECS:
        top = _find(series, spec.scenario, spec.top, spec.concurrency)
        bottom = _find(series, spec.scenario, spec.bottom, spec.concurrency)
        value = float("nan")
        if top is not None and bottom is not None:
            if spec.figure == "cpu":
                value = paired_ratio(top.rounds_cpu_us, bottom.rounds_cpu_us)
            elif spec.figure == "wall":  # time per op: the inverse of the throughput
                value = paired_ratio(bottom.rounds_rate, top.rounds_rate)
            else:
                value = paired_ratio(top.rounds_rate, bottom.rounds_rate)
        passed = None
        if spec.goal is not None and not math.isnan(value):
            passed = _OPS[spec.goal[0]](value, spec.goal[1])
        out.append(
            {
                "name": spec.name,
                "value": value,
                "figure": spec.figure,
                "concurrency": spec.concurrency,
                "numerator": " / ".join(spec.top),
                "denominator": " / ".join(spec.bottom),
                "goal": None if spec.goal is None else f"{spec.goal[0]} {spec.goal[1]}",
                "pass": passed,
            }
        )
    return out


# -- formatting ------------------------------------------------------------------------------


#: The rows and columns of issue 13's table: client CPU per GetItem against aiobotocore's.
_GETITEM_ROWS = (
    (store_rt.RAW, "aiobotocore `get_item`"),
    (store_rt.AIODYNAMO, "aiodynamo `get_item`"),
    (store_rt.AIOHTTP, "our `DynamoDBStore.load`, aiohttp path"),
    (store_rt.FAST, "our `DynamoDBStore.load`, fast transport (httptools)"),
    (store_rt.FLOOR, "pre-signed request on aiohttp, no parsing"),
    (store_rt.FLOOR_HTTPTOOLS, "pre-signed request, keep-alive asyncio connection + httptools"),
)
_GETITEM_COLUMNS = (
    ("store", "plain HTTP"),
    ("store tls", "TLS"),
    ("store tls uvloop", "TLS, uvloop"),
)


def getitem_table(series: list[Series]) -> list[tuple[str, ...]]:
    """Client CPU per GetItem of each client, as a ratio to aiobotocore's in the same column."""
    out = []
    for variant, label in _GETITEM_ROWS:
        cells = [label]
        for scenario, _ in _GETITEM_COLUMNS:
            top = _find(series, scenario, (_LOAD, variant), 1)
            bottom = _find(series, scenario, (_LOAD, store_rt.RAW), 1)
            value = float("nan")
            if top is not None and bottom is not None:
                value = paired_ratio(top.rounds_cpu_us, bottom.rounds_cpu_us)
            cells.append("-" if math.isnan(value) else f"{value:.2f}")
        out.append(tuple(cells))
    return out


def fmt_time(us: float) -> str:
    if math.isnan(us):
        return "-"
    if us < 1:
        return f"{us * 1000:.0f} ns"
    if us < 1000:
        return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"
    return f"{us / 1000:.2f} ms"


def fmt_rate(rate: float) -> str:
    return "-" if math.isnan(rate) else f"{rate:,.0f}/s"


def verdict(r: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "-" if r["goal"] else ""}[r["pass"]]


HEAD = ("case", "variant", "conc", "p50", "p95", "p99", "throughput", "CPU/op")


def rows(series: list[Series], scenario: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for s in series:
        if s.scenario != scenario:
            continue
        if s.error is not None:
            out.append((s.case, s.variant, str(s.concurrency), "unavailable", "", "", "", ""))
            continue
        d = s.summary()
        out.append(
            (
                s.case,
                s.variant,
                str(s.concurrency),
                fmt_time(d["p50_us"]),
                fmt_time(d["p95_us"]),
                fmt_time(d["p99_us"]),
                fmt_rate(d["throughput_per_s"]) if scenario != "codec" else "",
                fmt_time(d["cpu_us_per_op"]),
            )
        )
    return out


BUDGET_HEAD = ("variant", "conc", "server", "DynamoDB", "load generator", "total", "cores busy")


def http_budget(series: list[Series]) -> list[tuple[str, ...]]:
    """CPU per HTTP request in each process (medians over rounds), and the cores that keeps busy
    at the measured throughput: on a small machine the sum, not the server, sets the ceiling."""
    out: list[tuple[str, ...]] = []
    for s in series:
        if s.scenario != "http" or s.error is not None:
            continue
        parts = [s.cpu_us]
        for key in ("dynamodb", "loadgen"):
            values = s.extra.get(f"{key}_cpu_us_per_request")
            parts.append(statistics.median(values) if values else float("nan"))
        known = [p for p in parts if not math.isnan(p)]
        total = sum(known) if known else float("nan")
        cells = [fmt_time(p) for p in [*parts, total]]
        out.append((s.variant, str(s.concurrency), *cells, f"{total * s.rate / 1e6:.2f}"))
    return out


def text_table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def md_table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _ratio_rows(rs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            r["name"],
            "n/a" if math.isnan(r["value"]) else f"{r['value']:.2f}",
            r["goal"] or "",
            verdict(r),
        )
        for r in rs
    ]


def _machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu_model']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['server']}, {info['date']}"
    )


def _load_line(info: dict[str, Any], run: dict[str, Any]) -> str:
    start, end = run.get("load_average_at_start"), info.get("load_average_at_end")
    return f"System load average (1/5/15 min) at start {start}, at end {end}."


def terminal(
    series: list[Series], rs: list[dict[str, Any]], info: dict[str, Any], run: dict[str, Any]
) -> str:
    parts = [f"Machine: {_machine_line(info)}\n{_load_line(info, run)}"]
    for scenario, title in SCENARIOS.items():
        body = rows(series, scenario)
        if body:
            parts.append(f"\n{title}  (CPU/op = {CPU_NOTE[scenario]})\n{text_table(HEAD, body)}")
        if scenario == "http" and http_budget(series):
            budget = text_table(BUDGET_HEAD, http_budget(series))
            parts.append(f"\nCPU per HTTP request by process\n{budget}")
    parts.append("\nRatios\n" + text_table(("ratio", "value", "goal", ""), _ratio_rows(rs)))
    return "\n".join(parts)


def markdown(
    series: list[Series], rs: list[dict[str, Any]], info: dict[str, Any], run: dict[str, Any]
) -> str:
    parts = [
        "# Benchmark results",
        "",
        f"Machine: {_machine_line(info)}; commit `{info['git']}`. {_load_line(info, run)}",
        f"Command: `python -m benchmarks{' --quick' if run['quick'] else ''}`. "
        "CPU is `time.process_time` of the client process (for HTTP: of the server process) "
        "per operation, the median over interleaved rounds. Ratios come from one run: the median "
        "of the per-round ratios of variants measured side by side. Latency percentiles and "
        "the CPU ratios are at 1 task unless marked.",
        "",
        "## Ratios",
        "",
        md_table(("ratio", "value", "goal", "result"), _ratio_rows(rs)),
    ]
    if any(s.scenario == "store tls" for s in series):
        head = ("client CPU per GetItem / aiobotocore's", *(c for _, c in _GETITEM_COLUMNS))
        parts += ["", "## Client CPU per GetItem, against aiobotocore (1 task)", ""]
        parts.append(md_table(head, getitem_table(series)))
    for scenario, title in SCENARIOS.items():
        body = rows(series, scenario)
        if body:
            parts += ["", f"## {title}", "", f"CPU/op: {CPU_NOTE[scenario]}.", ""]
            parts.append(md_table(HEAD, body))
        if scenario == "http" and http_budget(series):
            parts += ["", "CPU per HTTP request by process, and the cores that keeps busy:", ""]
            parts.append(md_table(BUDGET_HEAD, http_budget(series)))
    if run["notes"]:
        parts += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in run["notes"].items()]
    return "\n".join(parts) + "\n"


def _clean(value: Any) -> Any:
    """JSON without NaN (missing figures become null), figures to 4 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def document(
    series: list[Series], rs: list[dict[str, Any]], info: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    doc: dict[str, Any] = _clean(
        {
            "machine": info,
            "run": run,
            "ratios": rs,
            "goals_passed": all(r["pass"] for r in rs if r["goal"] is not None),
            "results": [s.summary() for s in series],
        }
    )
    return doc


def _colour(variant: str) -> str:
    """Ours in blue, aiobotocore-based in orange, baselines (floor, none, others) in grey."""
    if "fast" in variant or "ours" in variant or "msgspec" in variant:
        return "#6baed6"
    if "aiobotocore" in variant:
        return "#fdae6b"
    return "#d9d9d9"


def plot(series: list[Series], path: Path, info: dict[str, Any]) -> None:
    """Latency distributions, one panel per scenario, boxes at the 1st..99th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    panels = []
    for scenario, title in SCENARIOS.items():
        chosen = [
            s
            for s in series
            if s.scenario == scenario
            and s.latencies_us
            and (scenario == "http" or s.concurrency == 1)
        ]
        if chosen:
            panels.append((title, chosen))
    if not panels:
        return
    heights = [len(chosen) for _, chosen in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, 1.2 + 0.32 * sum(heights) + 0.6 * len(panels)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, chosen) in zip(axes[:, 0], panels, strict=True):
        labels = [
            f"{s.case} · {s.variant}" + (f" · {s.concurrency} conn" if s.scenario == "http" else "")
            for s in chosen
        ]
        boxes = ax.boxplot(
            [s.latencies_us for s in chosen],
            vert=False,
            whis=(1, 99),
            showfliers=False,
            widths=0.6,
            medianprops={"color": "black"},
            patch_artist=True,
        )
        for box, s in zip(boxes["boxes"], chosen, strict=True):
            box.set_facecolor(_colour(s.variant))
        ax.set_yticks(range(1, len(chosen) + 1), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.set_title(
            title + (" (per-op time over batches)" if "Codec" in title else ""),
            fontsize=10,
            loc="left",
        )
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_xlabel("latency per op (µs, log; box 25-75 %, whiskers 1-99 %)", fontsize=8)
    fig.suptitle(f"asgi_dynamo_session latency — {_machine_line(info)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    out: Path, series: list[Series], info: dict[str, Any], run: dict[str, Any]
) -> list[dict[str, Any]]:
    """Print the tables and write latest.json, latest.md and latency.png under `out`."""
    rs = ratios(series)
    print(terminal(series, rs, info, run))
    out.mkdir(parents=True, exist_ok=True)
    doc = document(series, rs, info, run)
    (out / "latest.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    (out / "latest.md").write_text(markdown(series, rs, info, run))
    written = [out / "latest.json", out / "latest.md"]
    try:
        plot(series, out / "latency.png", info)
        written.append(out / "latency.png")
    except ImportError as exc:
        print(f"\nNo chart: {exc} (pip install matplotlib)")
    print("\nWrote " + ", ".join(str(p) for p in written))
    return rs
