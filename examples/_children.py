"""Servers run as child processes by ``make example``, ``make bench`` and the test fixtures.

Each child runs in its own session, so a terminal's Ctrl-C reaches only the parent, which then
stops its children in order; nothing but the pid ties such a child to us. `stop_on_signals` turns
SIGINT, SIGTERM and SIGHUP into a `Stopped` exception, so that the ``with`` blocks that started the
children end them (`stop`: the child's whole process group, by pid) however the parent leaves.
`port_holder` names the process listening on a port, and whether an earlier run of ours left it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

#: The signals that mean "stop": Ctrl-C, ``kill``/``timeout``/``docker stop``, a closed terminal.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Set in every child's environment: ``<parent pid> <what started it>``, read by `port_holder`.
STARTED_BY = "ASGI_DYNAMO_SESSION_STARTED_BY"

_stopping = False  # a stop signal has been turned into `Stopped`: ignore the next ones
_depth = 0  # nested `stop_on_signals` blocks


class Stopped(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so that code which cleans up after Ctrl-C does
    the same for SIGTERM and SIGHUP, and ``except Exception`` does not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """For the block, the first of `signals` raises `Stopped` in the main thread; any later one
    is ignored, so that the clean-up the first one started is not cut short."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        global _stopping
        if not _stopping:
            _stopping = True
            raise Stopped(signum)

    global _depth, _stopping
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    _depth += 1
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _depth -= 1
        if _depth == 0:
            _stopping = False


def start(
    command: Sequence[str],
    label: str,
    *,
    output: IO[bytes] | int | None = subprocess.DEVNULL,
    errors: IO[bytes] | int | None = subprocess.STDOUT,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """`command` in a session of its own (stdin closed, stdout to `output`, stderr to `errors`:
    `output` too by default), marked as started by this process for `label` (``"make bench"``)."""
    child_env = dict(os.environ if env is None else env)
    child_env[STARTED_BY] = f"{os.getpid()} {label}"
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=errors,
        env=child_env,
        cwd=cwd,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End the child and everything in its process group: SIGTERM, then SIGKILL to whatever is
    left after `grace` seconds; returns once none of them runs (or after another 5 s).

    A child that had already exited and been waited for is left alone: its pid may by now
    belong to a process group that is not ours."""
    if proc.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is None or _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1)


def _group_alive(pgid: int) -> bool:
    """Does a process of group `pgid` still run (zombies do not count; without /proc: exists)?"""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _stat_fields(stat: Path) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ..."""
    try:
        return stat.read_text().rpartition(")")[2].split()
    except OSError:
        return None


@dataclass(frozen=True)
class Holder:
    """The process listening on a port: its pid and command line, and, when one of our runs
    started it, that run's pid, whether it still runs, and what it was (``"make example"``)."""

    pid: int
    command: str
    started_by: int | None = None
    parent_alive: bool = False
    label: str = ""


def port_holder(port: int) -> Holder | None:
    """The local process listening on TCP `port`, if it can be found (Linux ``/proc``, and a
    process of this user); None otherwise."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = {os.readlink(fd) for fd in fd_dir.iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return _describe(int(fd_dir.parent.name))
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                    inodes.add(inode)
    return inodes


def _describe(pid: int) -> Holder:
    proc = Path("/proc") / str(pid)
    try:
        raw = proc.joinpath("cmdline").read_bytes()
        environ = proc.joinpath("environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return Holder(pid, "")
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    marker = STARTED_BY.encode() + b"="
    for entry in environ:
        if entry.startswith(marker):
            parent, _, label = entry[len(marker) :].decode(errors="replace").partition(" ")
            if parent.isdigit():
                alive = _alive(int(parent))
                return Holder(pid, command, int(parent), alive, label)
    return Holder(pid, command)


def _alive(pid: int) -> bool:
    fields = _stat_fields(Path("/proc") / str(pid) / "stat")
    return fields is not None and fields[0] not in ("Z", "X")
