"""Everything ``make example``, ``make bench`` and the test fixtures start, they stop.

Each run is sent SIGINT, SIGTERM or SIGHUP on its process group, as a terminal, ``kill``,
``timeout`` or a closed terminal would; afterwards no process it started may run and its ports
must be free. The same after a failed start. The servers run in sessions of their own, so they
are found by what ties them to the run: the marker `examples._children` sets in their
environment and, taken before the signal, the process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port

from examples import _children

ROOT = Path(__file__).resolve().parent.parent
PROC = Path("/proc")
STARTUP = 180.0  # generous: moto, dynalite and uvicorn start slowly on a loaded 2-core machine
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="finds processes through Linux /proc")
#: For the tests that do not use the test server: `make test` runs them in its moto pass only.
once = pytest.mark.skipif(
    os.environ.get("DYNAMO_TEST_SERVER", "").strip().lower() == "dynalite"
    and not os.environ.get("DYNAMODB_ENDPOINT_URL"),
    reason="independent of the test server: runs in the moto pass of make test",
)


# -- processes and ports, read from /proc ----------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """State, ppid, ... of a process (None: gone). Zombies and dead ones count as gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def _identity(pid: int) -> tuple[int, str] | None:
    """The pid with its start time: a later process reusing the pid is not the same one."""
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])


def _alive(identity: tuple[int, str]) -> bool:
    return _identity(identity[0]) == identity


def _descendants(root: int) -> set[tuple[int, str]]:
    """The process `root` and every process below it, whatever their session."""
    children: dict[int, list[int]] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        identity = _identity(pid)
        if identity is not None:
            found.add(identity)
            todo.extend(children.get(pid, []))
    return found


def _started_by(parent: int) -> set[tuple[int, str]]:
    """Live processes whose environment says `parent` started them (`_children.start`)."""
    marker = f"{_children.STARTED_BY}={parent} ".encode()
    found = set()
    for environ in PROC.glob("[0-9]*/environ"):
        try:
            entries = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        identity = _identity(int(environ.parent.name))
        if identity and any(entry.startswith(marker) for entry in entries):
            found.add(identity)
    return found


def _listening_ports(processes: set[tuple[int, str]]) -> set[int]:
    """The TCP ports these processes listen on."""
    sockets: set[str] = set()
    for pid, _ in processes:
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                sockets.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _free(port: int) -> bool:
    """Can a server bind the loopback port now (as uvicorn and moto do, with SO_REUSEADDR)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} (waited {timeout:.0f}s)"
        time.sleep(0.2)


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DYNAMODB_ENDPOINT_URL", "DYNAMODB_USE_AWS", _children.STARTED_BY):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Run:
    """A command run like a terminal's foreground job: a process group of its own, output kept
    in a file; killed with its group (and whatever it started) if a test leaves it running."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> int:
        """Send `sig` to the run's process group; its exit code once it has ended."""
        os.killpg(self.proc.pid, sig)
        try:  # generous: a loaded 2-core CI machine can take long to tear a pytest run down
            return self.proc.wait(150)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 150s after {sig}:\n{self.output}") from None

    def kill_all(self) -> None:
        left = _started_by(self.proc.pid) | _descendants(self.proc.pid)
        for pid, _ in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(*args: str, **env: str) -> Run:
        log = tmp_path / f"run-{len(runs)}.log"
        runs.append(Run([sys.executable, *args], log, _env(**env)))
        return runs[-1]

    yield start
    for each in runs:
        each.kill_all()


def _assert_all_stopped(run: Run, started: set[tuple[int, str]], ports: set[int]) -> None:
    """Nothing the run started runs, and its ports are free, right after it exited."""
    left = {p for p in started if _alive(p)} | _started_by(run.proc.pid)
    assert not left, f"left running: {left}\n{run.output}"
    busy = {port for port in ports if not _free(port)}
    assert not busy, f"ports still taken: {busy}\n{run.output}"


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it, and its child
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""
GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


@once
def test_stop_ends_a_child_in_its_own_session_and_its_whole_group(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as log:
        proc = _children.start([sys.executable, "-c", STUBBORN, GRANDCHILD], "a test", output=log)
    try:
        grandchild = _wait_for(lambda: out.read_text().strip(), STARTUP, "no grandchild started")
        leader, below = _identity(proc.pid), _identity(int(grandchild))
        assert leader and below
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)  # its own session
        assert os.getpgid(below[0]) == proc.pid

        _children.stop(proc, grace=1.0)

        assert proc.returncode == -signal.SIGKILL
        assert not _alive(leader) and not _alive(below)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- make example: python -m examples.serve ---------------------------------------------------


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    """The app and moto ports of every run here: each starts at once after the previous stopped."""
    return free_port(), free_port()


def _serve(run: Callable[..., Run], ports: tuple[int, int], *args: str, **env: str) -> Run:
    app_port, moto_port = ports
    return run(
        "-m", "examples.serve", *args, "--port", str(app_port), "--moto-port", str(moto_port), **env
    )


def _serving(run: Callable[..., Run], ports: tuple[int, int]) -> Run:
    """``python -m examples.serve`` with its own moto server, once it answers."""
    serve = _serve(run, ports)

    def up() -> bool:
        assert serve.running(), f"serve exited early:\n{serve.output}"
        return _answers(ports[0])

    _wait_for(up, STARTUP, f"serve did not answer:\n{serve.output}")
    return serve


@once
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_serve_stops_its_moto_server_on(
    sig: signal.Signals, run: Callable[..., Run], ports: tuple[int, int]
) -> None:
    serve = _serving(run, ports)
    assert httpx.get(f"http://127.0.0.1:{ports[0]}/").text == "Current count: 0"
    started = _descendants(serve.proc.pid)
    moto = _started_by(serve.proc.pid)
    assert len(moto) == 1 and moto <= started, (moto, started)
    assert set(ports) <= _listening_ports(started)

    code = serve.send(sig)

    assert code == 0, serve.output
    assert f"stopped ({sig.name})" in serve.output, serve.output
    assert "Application shutdown complete" in serve.output, serve.output
    assert "Traceback" not in serve.output, serve.output
    _assert_all_stopped(serve, started, set(ports))


@once
def test_serve_stops_its_moto_server_when_stopped_while_starting(
    run: Callable[..., Run], ports: tuple[int, int]
) -> None:
    serve = _serve(run, ports)

    def moto_started() -> set[tuple[int, str]]:
        assert serve.running(), f"serve exited early:\n{serve.output}"
        return _started_by(serve.proc.pid)

    moto = _wait_for(moto_started, STARTUP, f"serve started no moto server:\n{serve.output}")
    started = _descendants(serve.proc.pid) | moto

    code = serve.send(signal.SIGTERM)  # most likely while moto starts or the table is created

    assert code == 0, serve.output
    assert "stopped (SIGTERM)" in serve.output, serve.output
    assert "Traceback" not in serve.output, serve.output
    _assert_all_stopped(serve, started, set(ports))


@once
def test_serve_says_the_app_port_is_taken_and_starts_nothing(
    run: Callable[..., Run], ports: tuple[int, int]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", ports[0]))
        busy.listen()
        serve = _serve(run, ports)
        code = serve.proc.wait(STARTUP)
        output = serve.output
        assert code == 1, output
        assert f"port {ports[0]} (the app) is already in use" in output, output
        assert f"pid {os.getpid()}" in output, output  # who holds it: this test
        assert 'make example ARGS="--port 3100 --moto-port 8100"' in output, output
        assert "Errno" not in output and "Traceback" not in output, output
    _assert_all_stopped(serve, set(), {ports[1]})


@once
def test_serve_stops_its_moto_server_when_the_app_fails_to_start(
    run: Callable[..., Run], ports: tuple[int, int]
) -> None:
    serve = _serve(run, ports, SESSION_SECRET="too-short")  # the app refuses a short key
    seen: set[tuple[int, str]] = set()

    def exited() -> bool:
        seen.update(_started_by(serve.proc.pid))
        return not serve.running()

    _wait_for(exited, STARTUP, f"serve did not exit:\n{serve.output}")
    assert serve.proc.returncode == 1, serve.output
    assert "moto server running" in serve.output, serve.output  # it had started moto
    assert "needs at least 32 bytes" in serve.output, serve.output
    _assert_all_stopped(serve, seen, set(ports))


@once
def test_serve_names_a_run_still_going_and_a_server_left_behind(
    run: Callable[..., Run], ports: tuple[int, int]
) -> None:
    first = _serving(run, ports)
    (moto,) = _started_by(first.proc.pid)

    second = _serve(run, ports)
    assert second.proc.wait(STARTUP) == 1, second.output
    assert f"a `make example` still running (pid {first.proc.pid}:" in second.output
    assert f"stop it with: kill {first.proc.pid}" in second.output

    first.proc.kill()  # SIGKILL cannot be caught: its moto server is left behind
    first.proc.wait()
    assert _alive(moto)
    _wait_for(lambda: _free(ports[0]), 30, "the app port stayed taken")

    third = _serve(run, ports)
    assert third.proc.wait(STARTUP) == 1, third.output
    assert f"port {ports[1]} (moto server) is already in use" in third.output, third.output
    assert "by a server an earlier `make example` left running" in third.output, third.output
    assert f"stop it with: kill {moto[0]}" in third.output, third.output
    assert not _started_by(third.proc.pid)

    os.kill(moto[0], signal.SIGTERM)  # as the message says
    _wait_for(lambda: not _alive(moto) and _free(ports[1]), 30, "moto did not stop on kill")


# -- make bench: python -m benchmarks -------------------------------------------------------


def _dynalite_available() -> bool:
    local = ROOT / ".node" / "node_modules" / ".bin" / "dynalite"
    return local.exists() or bool(os.environ.get("DYNALITE_BIN"))


@once
@pytest.mark.skipif(not _dynalite_available(), reason="the bench needs dynalite (make node)")
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_bench_stops_its_servers_on(
    sig: signal.Signals, run: Callable[..., Run], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    bench = run("-m", "benchmarks", "--quick", "--only", "http", "--out", str(out))

    def servers_up() -> set[tuple[int, str]]:
        assert bench.running(), f"bench exited early:\n{bench.output}"
        servers = _started_by(bench.proc.pid)  # dynalite and the two apps' uvicorns
        return servers if len(_listening_ports(servers)) >= 3 else set()

    servers = _wait_for(servers_up, STARTUP, f"bench servers did not start:\n{bench.output}")
    started = _descendants(bench.proc.pid) | servers
    ports = _listening_ports(started)

    code = bench.send(sig)

    assert code == 1, bench.output
    assert f"benchmark stopped by {sig.name}" in bench.output, bench.output
    assert "Traceback" not in bench.output, bench.output
    _assert_all_stopped(bench, started, ports)


@once
def test_bench_server_start_fails_on_a_taken_port_and_leaves_nothing() -> None:
    from benchmarks import _env

    mine = f"{_children.STARTED_BY}={os.getpid()} make bench"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
        with pytest.raises(RuntimeError, match=f"port {port} is taken"), _env.spawn(command, port):
            pass
    assert not _bench_children(mine)

    # A server that fails after it started, and one whose run fails: both stopped, port free.
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with (
        pytest.raises(RuntimeError, match="exited with 3 before listening"),
        _env.spawn(failing, port, timeout=STARTUP),
    ):
        pass
    with (
        pytest.raises(ValueError, match="the run failed"),
        _env.spawn(command, port, timeout=STARTUP) as pid,
    ):
        assert _listening_ports({p for p in _bench_children(mine) if p[0] == pid}) == {port}
        raise ValueError("the run failed")
    assert not _bench_children(mine)
    assert _free(port)


def _bench_children(marker: str) -> set[tuple[int, str]]:
    found = set()
    for environ in PROC.glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes().split(b"\0"):
                identity = _identity(int(environ.parent.name))
                if identity:
                    found.add(identity)
        except OSError:
            continue
    return found


# -- the test fixtures: pytest's DynamoDB server -------------------------------------------------


PROBE = """
import json, os, time

def test_hold(dynamodb_server):
    info = {"port": dynamodb_server.port, "pid": dynamodb_server._proc.pid}
    with open(os.environ["PROBE_OUT"] + ".tmp", "w") as out:
        json.dump(info, out)
    os.rename(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_pytest_stops_its_dynamodb_server_on(
    sig: signal.Signals, run: Callable[..., Run], tmp_path: Path
) -> None:
    kind = os.environ.get("DYNAMO_TEST_SERVER", "moto").strip().lower() or "moto"
    if kind == "dynalite" and not _dynalite_available():
        pytest.skip("dynalite not installed (make node)")
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    info = tmp_path / "probe.json"
    tests = str(ROOT / "tests")
    session = run(
        *("-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider"),
        *("-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)),
        str(tmp_path / "test_probe.py"),
        PROBE_OUT=str(info),
        DYNAMO_TEST_SERVER=kind,
        PYTHONPATH=os.pathsep.join([tests, str(ROOT)]),
    )

    def ready() -> bool:
        assert session.running(), f"pytest exited early:\n{session.output}"
        return info.exists()

    _wait_for(ready, STARTUP, f"the probe did not start:\n{session.output}")
    probe = json.loads(info.read_text())
    started = _descendants(session.proc.pid) | _started_by(session.proc.pid)
    assert _identity(probe["pid"]) in started
    assert probe["port"] in _listening_ports(started)

    code = session.send(sig)

    assert code == pytest.ExitCode.INTERRUPTED, session.output
    _assert_all_stopped(session, started, {probe["port"]})
