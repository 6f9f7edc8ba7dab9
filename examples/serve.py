"""Serve one example app against a local DynamoDB (moto server) or, when asked, real AWS.

    python -m examples.serve [APP] [--host HOST] [--port PORT] [--aws] [--moto-port PORT]

APP is one of: counter (default), starlette, fastapi, litestar, quart, raw.

Where the sessions live:

* ``DYNAMODB_ENDPOINT_URL`` set: that server (dynalite, DynamoDB Local, a moto you started...).
* otherwise: a moto server this script starts on 127.0.0.1:8000 (``--moto-port``) and stops.
* ``--aws`` or ``DYNAMODB_USE_AWS=1``: real AWS DynamoDB with your usual credentials and region.
  Only then: exported AWS credentials are never used by accident, the local server gets fake ones.

The table (``SESSION_TABLE``, default ``TowerSessions``) is created if missing. The app is served
with uvicorn on http://127.0.0.1:3000; Ctrl-C stops the app and the moto server started here.
``SESSION_SECRET`` (comma-separated keys, newest first) keeps sessions across restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

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


def _answers_http(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    """A moto server on 127.0.0.1:`port` for the duration of the block; yields its URL."""
    host = "127.0.0.1"
    if _port_in_use(host, port):
        raise SystemExit(
            f"port {port} is already in use. If a DynamoDB server runs there, use it with "
            f"DYNAMODB_ENDPOINT_URL=http://{host}:{port}; else pick another --moto-port."
        )
    with tempfile.TemporaryFile(prefix="moto-") as log:
        # Its own process group: Ctrl-C reaches only this script, which then stops moto cleanly.
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_up(proc, log, host, port)
            print(f"moto server running on http://{host}:{port}", flush=True)
            yield f"http://{host}:{port}"
        finally:
            _stop(proc)


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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    proc.wait()


async def run(app_name: str, endpoint_url: str | None, host: str, port: int) -> None:
    import uvicorn

    from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps

    table = os.environ.get("SESSION_TABLE", "TowerSessions")
    # The store owns its aiobotocore client: SessionMiddleware opens it at lifespan startup and
    # closes it at shutdown (Litestar's example does it with on_startup/on_shutdown).
    store = DynamoDBStore(props=DynamoDBStoreProps(table_name=table), endpoint_url=endpoint_url)
    try:
        ttl = await store.create_table()
        where = endpoint_url or "AWS"
        print(f"table {table} ready on {where} (TTL {'on' if ttl else 'off'})", flush=True)
        module: Any = importlib.import_module(APPS[app_name])
        # secure=False: the demo is plain http on localhost, and a client that is not a browser
        # (curl, httpx) drops a Secure cookie there. Keep the default secure=True in production.
        app = module.create_app(store, secure=False)
        config = uvicorn.Config(app, host=host, port=port, lifespan="auto", log_level="info")
        print(f"serving the {app_name} example on http://{host}:{port} (Ctrl-C stops)", flush=True)
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    endpoint = os.environ.get("DYNAMODB_ENDPOINT_URL") or None
    try:
        with contextlib.ExitStack() as stack:
            if args.aws:
                print("using real AWS DynamoDB (--aws / DYNAMODB_USE_AWS)", flush=True)
            else:
                use_fake_credentials()
                if endpoint is None:
                    endpoint = stack.enter_context(moto_server(args.moto_port))
            asyncio.run(run(args.app, endpoint, args.host, args.port))
    except KeyboardInterrupt:
        pass  # everything started here has been stopped by the `with` blocks
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
