"""``python -m examples.serve``: what ``make example`` runs, checked like a user with curl would.

Each example is started as a subprocess against the test server (``DYNAMODB_ENDPOINT_URL``) on a
free port; a client with a cookie jar sees the count rise, logs in and out. One run lets serve.py
start (and stop) its own moto server, with misleading AWS settings exported that must not matter.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from support import free_port

ROOT = Path(__file__).resolve().parent.parent
APPS = ["counter", "starlette", "fastapi", "litestar", "quart", "raw"]
COUNT = re.compile(r"Current count: (\d+)")


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DYNAMODB_USE_AWS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(args: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    """``python -m examples.serve ARGS`` until the block ends, then Ctrl-C (SIGINT) on it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.serve", *args, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal's foreground job: SIGINT goes to the group
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{proc.communicate()[0]}")
            if time.monotonic() > deadline:
                raise AssertionError("serve did not answer")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def _count(reply: httpx.Response) -> int:
    found = COUNT.search(reply.text)
    assert found, reply.text
    return int(found.group(1))


@pytest.mark.parametrize("app", APPS)
def test_serve_against_the_test_server(app: str, dynamodb_server: Any) -> None:
    port = free_port()
    table = f"ex_{uuid4().hex[:10]}"  # serve.py creates it
    env = _env(DYNAMODB_ENDPOINT_URL=dynamodb_server.endpoint_url, SESSION_TABLE=table)
    with (
        serving([app], env, port) as proc,
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as jar,
    ):
        counts = [_count(jar.get("/")) for _ in range(3)]
        assert counts == [counts[0], counts[0] + 1, counts[0] + 2]  # secure=False: jar keeps it
        assert list(jar.cookies.keys()) == ["id"]
        if app != "counter":
            login = jar.post("/login", data={"user": "zoe"})
            assert login.status_code == 303
            page = jar.get("/")
            assert "zoe" in page.text
            assert _count(page) == counts[-1] + 1
            logout = jar.post("/logout")
            assert logout.status_code == 303
            assert "Max-Age=0" in logout.headers["set-cookie"]
            assert not jar.cookies
            assert "zoe" not in jar.get("/").text
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output
    assert f"table {table} ready on {dynamodb_server.endpoint_url}" in output, output
    assert f"table {table} matches the props" in output, output  # the CLI's check at startup
    assert "Application shutdown complete" in output, output
    assert "Unclosed" not in output, output
    assert "Traceback" not in output, output


def test_serve_starts_and_stops_its_own_moto(dynamodb_server: Any) -> None:
    pytest.importorskip("moto.server")
    port, moto_port = free_port(), free_port()
    env = _env(
        # Exported AWS settings must not be used for the local server (a profile that does not
        # exist would make botocore fail if it were consulted).
        AWS_PROFILE="no-such-profile-for-the-example",
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEREALLOOKING",
        AWS_SECRET_ACCESS_KEY="not-a-real-secret",
    )
    env.pop("DYNAMODB_ENDPOINT_URL", None)
    with (
        serving(["--moto-port", str(moto_port)], env, port) as proc,
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as jar,
    ):
        assert _answers(moto_port)
        assert [jar.get("/").text for _ in range(3)] == [
            "Current count: 0",
            "Current count: 1",
            "Current count: 2",
        ]
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output
    assert f"moto server running on http://127.0.0.1:{moto_port}" in output, output
    assert "stopped" in output
    deadline = time.monotonic() + 10
    while _answers(moto_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _answers(moto_port), "moto was left running"


def test_serve_secure_marks_the_cookie_secure(dynamodb_server: Any) -> None:
    port = free_port()
    env = _env(DYNAMODB_ENDPOINT_URL=dynamodb_server.endpoint_url, SESSION_TABLE="ex_secure")
    with serving(["counter", "--secure"], env, port):
        cookie = httpx.get(f"http://127.0.0.1:{port}/").headers["set-cookie"]
    assert re.fullmatch(r"id=[\w-]{43}\.[\w-]{43}; Path=/; HttpOnly; Secure; SameSite=Lax", cookie)


def test_serve_refuses_a_busy_moto_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        moto_port = busy.getsockname()[1]
        env = _env()
        env.pop("DYNAMODB_ENDPOINT_URL", None)
        result = subprocess.run(
            [sys.executable, "-m", "examples.serve", "counter", "--moto-port", str(moto_port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "already in use" in result.stderr + result.stdout


def test_real_aws_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from examples import serve

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEREALLOOKING")
    monkeypatch.delenv("DYNAMODB_USE_AWS", raising=False)
    assert serve.parse_args([]).aws is False
    assert serve.parse_args([]).app == "counter"
    assert serve.parse_args(["--aws", "raw_asgi"]).aws is True
    assert serve.parse_args(["raw_asgi"]).app == "raw"
    monkeypatch.setenv("DYNAMODB_USE_AWS", "1")
    assert serve.parse_args(["litestar"]).aws is True
    with pytest.raises(SystemExit):
        serve.parse_args(["django"])


def test_cloudformation_template_matches_the_default_props() -> None:
    from asgi_dynamo_session import DynamoDBStoreProps

    text = (ROOT / "examples" / "example-table-cfn.yml").read_text()
    props = DynamoDBStoreProps()
    assert f"TableName: {props.table_name}" in text
    assert f"AttributeName: {props.partition_key.name}" in text
    assert "AttributeType: S" in text
    assert "KeyType: HASH" in text
    assert "BillingMode: PAY_PER_REQUEST" in text
    assert re.search(
        rf"TimeToLiveSpecification:\s+AttributeName: {props.expiry_name}\s+Enabled: true", text
    )
