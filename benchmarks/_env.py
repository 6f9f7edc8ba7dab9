"""The benchmark's surroundings: fake credentials, a dynalite it owns, free ports, machine info.

Every server it starts runs in a session of its own and is stopped by pid when the run ends,
however it ends: done, an error, Ctrl-C, SIGTERM or SIGHUP (`examples._children`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from examples import _children

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


def fake_credentials(external: bool) -> None:
    """Point every AWS client of this process and its children at fake credentials.

    On our own dynalite they are forced (so nothing can reach real AWS); on a user's
    ``DYNAMODB_ENDPOINT_URL`` they only fill in what the environment lacks.
    """
    fake = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if external:
        for name, value in fake.items():
            os.environ.setdefault(name, value)
        return
    os.environ.update(fake)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        os.environ.pop(name, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Return once something accepts connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def _dynalite_command() -> list[str]:
    local = ROOT / ".node" / "node_modules" / ".bin" / "dynalite"
    if local.exists():
        return [str(local)]
    explicit = os.environ.get("DYNALITE_BIN")
    if explicit:
        return [explicit]
    npx = shutil.which("npx")
    if npx is None:
        raise RuntimeError("dynalite not found: set DYNALITE_BIN or DYNAMODB_ENDPOINT_URL")
    return [npx, "--yes", "dynalite@^3"]


@contextlib.contextmanager
def spawn(
    command: list[str], port: int, *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[int]:
    """Run a server in a session of its own until the block ends; yields its pid (and group id).

    The loopback `port` must be free (else whatever holds it would pass for the server); the
    server is stopped when the block ends, on an error or a stop signal too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"port {port} is taken: {exc.strerror or exc}") from None
    with _children.stop_on_signals():
        proc = _children.start(command, "make bench", errors=None, env=env, cwd=ROOT)
        try:
            wait_for_port(port, proc, timeout)
            yield proc.pid
        finally:
            _children.stop(proc)


@contextlib.contextmanager
def dynamodb() -> Iterator[tuple[str, str, int | None]]:
    """The endpoint to use, what it is (the user's, or a fresh in-memory dynalite) and the
    process group of the dynalite started here.

    A stop signal inside the block ends the run (every server it started stopped) with a line
    saying so instead of a traceback."""
    external = os.environ.get("DYNAMODB_ENDPOINT_URL")
    fake_credentials(external=bool(external))
    try:
        with _children.stop_on_signals():
            if external:
                yield external, "external", None
                return
            port = free_port()
            command = [*_dynalite_command(), "--host", "127.0.0.1", "--port", str(port)]
            with spawn([*command, "--createTableMs", "0", "--deleteTableMs", "0"], port) as pid:
                yield f"http://127.0.0.1:{port}", "dynalite", pid
    except _children.Stopped as stop:
        raise SystemExit(
            f"benchmark stopped by {stop.name}; the servers it started are stopped"
        ) from None


#: tests/moto_atomic.py with werkzeug's line per request (errors still show) silenced.
_MOTO_QUIET = (
    "import logging, runpy, sys; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
    "sys.argv = [sys.argv[1], '127.0.0.1', sys.argv[2]]; runpy.run_path(sys.argv[0], "
    "run_name='__main__')"
)


@contextlib.contextmanager
def moto() -> Iterator[str]:
    """The endpoint of a moto server started here (DynamoDB's transactions, which dynalite
    lacks), or the user's ``DYNAMODB_ENDPOINT_URL``; stopped like `dynamodb`'s."""
    external = os.environ.get("DYNAMODB_ENDPOINT_URL")
    fake_credentials(external=bool(external))
    try:
        with _children.stop_on_signals():
            if external:
                yield external
                return
            port = free_port()
            server = str(ROOT / "tests" / "moto_atomic.py")
            with spawn([sys.executable, "-c", _MOTO_QUIET, server, str(port)], port):
                yield f"http://127.0.0.1:{port}"
    except _children.Stopped as stop:
        raise SystemExit(
            f"benchmark stopped by {stop.name}; the servers it started are stopped"
        ) from None


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (fake credentials included) for a child importing this repo."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def group_cpu_seconds(pgid: int) -> float | None:
    """User plus system CPU time of the live processes of a process group (Linux /proc).

    The servers here run in their own groups (`spawn`), so this counts dynalite's node process
    whether it was started directly or under npx.
    """
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found = True
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK") if found else None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    return None


def machine(server: str) -> dict[str, Any]:
    dists = (
        "aiobotocore",
        "botocore",
        "aiohttp",
        "msgspec",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
    )
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "server": server,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "git": _git(),
        "packages": {name: _version(name) for name in dists},
    }
