"""Headless Chromium as a subprocess, with its DevTools endpoint read from DevToolsActivePort."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: Where the Debian package puts it (``CHROMIUM`` overrides).
DEFAULT_BINARY = "/usr/bin/chromium"
STARTUP_TIMEOUT = 30.0

#: Root needs --no-sandbox. The closed network refuses Chromium's own background connections
#: (component updates, sync, field trials), and waiting on them stalls the browser: turn them off.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=900,640",
]


def wanted() -> str:
    """The Chromium executable asked for: ``CHROMIUM``, else the Debian package's."""
    return os.environ.get("CHROMIUM") or DEFAULT_BINARY


def binary() -> str | None:
    """The Chromium executable to run (`wanted`, else ``chromium`` on the PATH), or None."""
    path = wanted()
    if os.access(path, os.X_OK):
        return path
    return shutil.which("chromium")


@contextlib.contextmanager
def launched(executable: str) -> Iterator[str]:
    """Chromium running on a fresh profile for the block; yields its browser websocket URL."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    log = tempfile.TemporaryFile(prefix="chromium-log-")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown ends its helpers too
    )
    try:
        yield _endpoint(proc, Path(profile) / "DevToolsActivePort", log)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def _endpoint(proc: subprocess.Popen[bytes], port_file: Path, log: IO[bytes]) -> str:
    """Wait for Chromium to write its port and browser path (two lines) into the profile."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        with contextlib.suppress(FileNotFoundError):
            lines = port_file.read_text().split()
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            output = log.read()[-3000:]
            raise RuntimeError(
                f"chromium gave no DevTools port (exit code {proc.poll()}):\n"
                + output.decode(errors="replace")
            )
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # helpers left in the group
