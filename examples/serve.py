"""Serve one example app against a local DynamoDB (moto server) or, when asked, real AWS.

    python -m examples.serve [APP] [--host HOST] [--port PORT] [--aws] [--moto-port PORT] [--secure]

APP is one of: counter (default), starlette, fastapi, litestar, quart, raw.

Where the sessions live:

* ``DYNAMODB_ENDPOINT_URL`` set: that server (dynalite, DynamoDB Local, a moto you started...).
* otherwise: a moto server this script starts on 127.0.0.1:8000 (``--moto-port``) and stops.
* ``--aws`` or ``DYNAMODB_USE_AWS=1``: real AWS DynamoDB with your usual credentials and region.
  Only then: exported AWS credentials are never used by accident, the local server gets fake ones.

The table (``SESSION_TABLE``, default ``TowerSessions``) is created if missing. The app is served
with uvicorn on http://127.0.0.1:3000. Ctrl-C, SIGTERM or SIGHUP stops the app and the moto server
started here, as does an error. ``SESSION_SECRET`` (comma-separated keys, newest first) keeps
sessions across restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

import uvicorn

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps
from examples import _children

APPS = {
    "counter": "examples.counter",
    "starlette": "examples.starlette_app",
    "fastapi": "examples.fastapi_app",
    "litestar": "examples.litestar_app",
    "quart": "examples.quart_app",
    "raw": "examples.raw_asgi",
    "devices": "examples.devices",
}
ALIASES = {"raw_asgi": "raw", **{module.split(".")[1]: name for name, module in APPS.items()}}

MOTO_STARTUP_TIMEOUT = 60.0
LABEL = "make example"
OTHER_PORTS = 'make example ARGS="--port 3100 --moto-port 8100"'


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "app", nargs="?", default="counter", help=f"one of {', '.join(APPS)} (default: counter)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=3000, help="port to serve on (default 3000)")
    parser.add_argument(
        "--aws",
        action="store_true",
        default=_truthy(os.environ.get("DYNAMODB_USE_AWS")),
        help="use real AWS DynamoDB (also DYNAMODB_USE_AWS=1)",
    )
    parser.add_argument(
        "--moto-port", type=int, default=8000, help="port of the moto server started here"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="mark the cookie Secure, as in production (clients then send it back over https only)",
    )
    args = parser.parse_args(argv)
    args.app = ALIASES.get(args.app, args.app)
    if args.app not in APPS:
        parser.error(f"unknown app {args.app!r}; choose one of {', '.join(APPS)}")
    return args


def use_fake_credentials() -> None:
    """Make botocore use throwaway credentials: a local server must never see real ones."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(var, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


# -- ports ----------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port as uvicorn binds it (SO_REUSEADDR: a restart need not wait)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _port_taken(what: str, host: str, port: int, exc: OSError) -> SystemExit:
    """The error for a port we cannot bind: who holds it, the command that stops it when it is
    ours, and how to choose other ports."""
    if exc.errno != errno.EADDRINUSE:
        return SystemExit(f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}")
    who, stop = _who_holds(port)
    lines = [f"port {port} ({what}) is already in use{who}"]
    if stop:
        lines.append(f"stop it with: {stop}")
    elif what == "moto server":
        url = f"http://{host}:{port}"
        lines.append(f"if a DynamoDB server runs there, use it: DYNAMODB_ENDPOINT_URL={url}")
    lines.append(f"or use other ports: {OTHER_PORTS}")
    return SystemExit("\n".join(lines))


def _who_holds(port: int) -> tuple[str, str | None]:
    """Who listens on `port` (" by ...", or "" when unknown) and, when it is a run of ours or a
    server one left behind, the command that stops it."""
    holder = _children.port_holder(port)
    if holder is None:
        return "", None
    label = holder.label or LABEL
    what = f"pid {holder.pid}: {holder.command or 'command unknown'}"
    if holder.started_by is not None and not holder.parent_alive:
        return f" by a server an earlier `{label}` left running ({what})", f"kill {holder.pid}"
    if holder.started_by is not None:
        run = f"a `{label}` that is still running (pid {holder.started_by})"
        return f" by a server of {run}", f"kill {holder.started_by}"
    if "examples.serve" in holder.command:
        return f" by a `{LABEL}` still running ({what})", f"kill {holder.pid}"
    return f" ({what})", None


@contextlib.contextmanager
def app_socket(host: str, port: int) -> Iterator[socket.socket]:
    """The app's listening socket, bound before anything is started (uvicorn serves on it)."""
    try:
        sock = _bind(host, port)
    except OSError as exc:
        raise _port_taken("the app", host, port, exc) from None
    with sock:
        yield sock


def _answers_http(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


# -- moto -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    """A moto server on 127.0.0.1:`port` for the duration of the block; yields its URL.

    It runs in a session of its own (Ctrl-C reaches only this script) and is stopped by pid when
    the block ends, on an error or a stop signal too."""
    host = "127.0.0.1"
    try:
        _bind(host, port).close()
    except OSError as exc:
        raise _port_taken("moto server", host, port, exc) from None
    command = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    with tempfile.TemporaryFile(prefix="moto-") as log:
        proc = _children.start(command, LABEL, output=log)
        try:
            _wait_until_up(proc, log, host, port)
            print(f"moto server running on http://{host}:{port} (pid {proc.pid})", flush=True)
            yield f"http://{host}:{port}"
        finally:
            _children.stop(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], log: IO[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + MOTO_STARTUP_TIMEOUT
    while not _answers_http(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            output = log.read()[-3000:].decode(errors="replace")
            raise SystemExit(
                f"moto server did not start on port {port} (is moto[server] installed?)\n{output}"
            )
        time.sleep(0.1)


# -- the app --------------------------------------------------------------------------------------


def check_table(table: str, endpoint_url: str | None, ttl: bool) -> None:
    """Print what `asgi-dynamo-session check` says of the table (a mismatch is shown, not fatal)."""
    where = ["--endpoint-url", endpoint_url] if endpoint_url else []
    command = ["check", "--table", table, *where, *([] if ttl else ["--no-ttl"])]
    subprocess.run([sys.executable, "-m", "asgi_dynamo_session", *command], check=False)


class _Server(uvicorn.Server):
    """uvicorn that shuts down gracefully on SIGINT, SIGTERM and SIGHUP (a second one forces it)
    and then raises `_children.Stopped`, so that the caller stops the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        received: list[int] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            self.force_exit = self.should_exit
            self.should_exit = True

        previous = {sig: signal.signal(sig, on_signal) for sig in _children.STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if received:
            raise _children.Stopped(received[0])


async def run(
    app_name: str, endpoint_url: str | None, sock: socket.socket, secure: bool = False
) -> None:
    table = os.environ.get("SESSION_TABLE", "TowerSessions")
    # The store owns its aiobotocore client: SessionMiddleware opens it at lifespan startup and
    # closes it at shutdown (Litestar's example does it with on_startup/on_shutdown).
    store = DynamoDBStore(props=DynamoDBStoreProps(table_name=table), endpoint_url=endpoint_url)
    try:
        ttl = await store.create_table()
        where = endpoint_url or "AWS"
        print(f"table {table} ready on {where} (TTL {'on' if ttl else 'off'})", flush=True)
        check_table(table, endpoint_url, ttl)
        module: Any = importlib.import_module(APPS[app_name])
        # secure=False by default: the demo is plain http on 127.0.0.1, where a client that is
        # not a browser (curl, httpx) drops a Secure cookie. --secure restores the default.
        app = module.create_app(store, secure=secure)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app, host=host, port=port, lifespan="auto", log_level="info")
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        print(f"serving the {app_name} example on {url} (Ctrl-C stops)", flush=True)
        await _Server(config).serve(sockets=[sock])
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    endpoint = os.environ.get("DYNAMODB_ENDPOINT_URL") or None
    how = ""
    # Outermost: from here on a stop signal unwinds the `with` blocks, which stop what they started.
    with _children.stop_on_signals():
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(app_socket(args.host, args.port))
                if args.aws:
                    print("using real AWS DynamoDB (--aws / DYNAMODB_USE_AWS)", flush=True)
                else:
                    use_fake_credentials()
                    if endpoint is None:
                        endpoint = stack.enter_context(moto_server(args.moto_port))
                asyncio.run(run(args.app, endpoint, sock, args.secure))
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP as _children.Stopped
            how = f" ({getattr(stop, 'name', 'SIGINT')})"
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        print(f"stopped{how}", flush=True)


if __name__ == "__main__":
    main()
