"""The `asgi-dynamo-session` command, run as a subprocess against the test server, on the
default props and on the seed crate's example (`MyTowerSessions`, sort key `sort_key`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import scan_all

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreKey, DynamoDBStoreProps

ROOT = Path(__file__).resolve().parent.parent
# the `dynamodb_server` fixture's type (tests/conftest.py; tests/browser has a conftest too, so
# `from conftest import` is ambiguous)
DynamoServer = Any

PROG = "asgi-dynamo-session"
LIVE = 4_000_000_000  # 2096: live for the lifetime of this test suite
EXPIRED = 1_000_000_000  # 2001
CLI_TIMEOUT = 120


@dataclass(frozen=True)
class Layout:
    """A table layout as the CLI is told it (flags) and as the library knows it (props)."""

    name: str
    flags: tuple[str, ...]
    props: DynamoDBStoreProps

    def key(self, n: int) -> dict[str, Any]:
        """The key of the n-th test item, written the way the store writes keys."""
        p = self.props
        key = {p.partition_key.name: {"S": p.partition_key.value(f"k{n:04d}")}}
        if p.sort_key is not None:
            key[p.sort_key.name] = {"S": p.sort_key.value(f"k{n:04d}")}
        return key

    def item(self, n: int, expires: int | None, data: bytes = b"\x01\x80") -> dict[str, Any]:
        item = {**self.key(n), self.props.data_name: {"B": data}}
        if expires is not None:
            item[self.props.expiry_name] = {"N": str(expires)}
        return item


DEFAULT = Layout("default", (), DynamoDBStoreProps())
SEED = Layout(
    "seed",
    ("--table", "MyTowerSessions", "--sort-key", "sort_key", "--sort-prefix", "TOWER_SESSIONS::"),
    DynamoDBStoreProps(
        table_name="MyTowerSessions",
        sort_key=DynamoDBStoreKey(name="sort_key", prefix="TOWER_SESSIONS::"),
    ),
)


def cli_env(endpoint_url: str | None, **extra: str) -> dict[str, str]:
    """The test process's environment (fake credentials, us-east-1) with the endpoint set the
    usual AWS way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    if endpoint_url is not None:
        env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint_url
    env.update(extra)
    return env


def cli(
    *args: str, endpoint_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m asgi_dynamo_session ARGS` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "asgi_dynamo_session", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(endpoint_url),
        cwd=ROOT,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture(params=[DEFAULT, SEED], ids=lambda layout: layout.name)
def layout(request: pytest.FixtureRequest) -> Layout:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(dynamodb_server: DynamoServer) -> str:
    return dynamodb_server.endpoint_url


@pytest.fixture
def ttl_flags(dynamodb_server: DynamoServer) -> tuple[str, ...]:
    """--no-ttl where the server cannot turn TTL on (dynalite)."""
    return () if dynamodb_server.supports_ttl else ("--no-ttl",)


@pytest.fixture
async def cleanup(raw: Any) -> AsyncIterator[list[str]]:
    """Table names to delete after the test (the CLI creates them)."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(raw.exceptions.ResourceNotFoundException):
            await raw.delete_table(TableName=name)


@pytest.fixture
async def table(layout: Layout, url: str, ttl_flags: tuple[str, ...], cleanup: list[str]) -> Layout:
    """The layout's table, created by the CLI."""
    cleanup.append(layout.props.table_name)
    result = cli("create-table", *layout.flags, *ttl_flags, endpoint_url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    return layout


async def put_items(raw: Any, layout: Layout, items: list[dict[str, Any]]) -> None:
    for item in items:
        await raw.put_item(TableName=layout.props.table_name, Item=item)


async def stored_keys(raw: Any, layout: Layout) -> list[dict[str, Any]]:
    names = [layout.props.partition_key.name]
    if layout.props.sort_key is not None:
        names.append(layout.props.sort_key.name)
    items = await scan_all(raw, layout.props.table_name)
    return sorted(({n: item[n] for n in names} for item in items), key=json.dumps)


def sorted_keys(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(keys, key=json.dumps)


# -- create-table --------------------------------------------------------------------------------


async def test_create_table_twice(
    layout: Layout, url: str, ttl_flags: tuple[str, ...], raw: Any, cleanup: list[str]
) -> None:
    cleanup.append(layout.props.table_name)
    first = cli("create-table", *layout.flags, *ttl_flags, endpoint_url=url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"creating table {layout.props.table_name}" in first.stdout
    assert f"table {layout.props.table_name} matches the props" in first.stdout

    table = (await raw.describe_table(TableName=layout.props.table_name))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    expected_schema = [{"AttributeName": "session_id", "KeyType": "HASH"}]
    if layout.props.sort_key is not None:
        expected_schema.append({"AttributeName": "sort_key", "KeyType": "RANGE"})
    assert table["KeySchema"] == expected_schema
    assert {a["AttributeType"] for a in table["AttributeDefinitions"]} == {"S"}
    if not ttl_flags:
        ttl = (await raw.describe_time_to_live(TableName=layout.props.table_name))[
            "TimeToLiveDescription"
        ]
        assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
        assert ttl["AttributeName"] == "expire_at"

    second = cli("create-table", *layout.flags, *ttl_flags, endpoint_url=url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"table {layout.props.table_name} already exists" in second.stdout
    assert "matches the props" in second.stdout


async def test_create_table_on_a_different_table_fails_with_the_differences(
    url: str, raw: Any, cleanup: list[str], table_name: str
) -> None:
    cleanup.append(table_name)
    await raw.create_table(
        TableName=table_name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    result = cli("create-table", "--table", table_name, endpoint_url=url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "partition key is 'id', the props expect 'session_id'" in result.stdout
    assert f"1 mismatch: table {table_name} does not match the props" in result.stdout
    no_traceback(result)


async def test_create_table_dry_run_prints_the_requests_and_sends_nothing(
    url: str, raw: Any, table_name: str
) -> None:
    result = cli(
        "create-table", *SEED.flags[2:], "--table", table_name, "--dry-run", endpoint_url=url
    )
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)
    assert requests == {
        "CreateTable": {
            "TableName": table_name,
            "AttributeDefinitions": [
                {"AttributeName": "session_id", "AttributeType": "S"},
                {"AttributeName": "sort_key", "AttributeType": "S"},
            ],
            "KeySchema": [
                {"AttributeName": "session_id", "KeyType": "HASH"},
                {"AttributeName": "sort_key", "KeyType": "RANGE"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        "UpdateTimeToLive": {
            "TableName": table_name,
            "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expire_at"},
        },
    }
    assert table_name not in (await raw.list_tables())["TableNames"]


async def test_create_table_without_ttl_support_says_so(
    dynamodb_server: DynamoServer, raw: Any, cleanup: list[str], table_name: str
) -> None:
    if dynamodb_server.supports_ttl:
        pytest.skip("the server supports TTL; this is about servers without it (dynalite)")
    cleanup.append(table_name)
    result = cli("create-table", "--table", table_name, endpoint_url=dynamodb_server.endpoint_url)
    assert result.returncode == 1
    assert "does not support UpdateTimeToLive" in result.stderr
    assert "--no-ttl" in result.stderr
    no_traceback(result)


# -- check ---------------------------------------------------------------------------------------


async def test_check_a_matching_table(table: Layout, url: str, ttl_flags: tuple[str, ...]) -> None:
    result = cli("check", *table.flags, *ttl_flags, endpoint_url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ok      partition key 'session_id' (String)" in lines
    if table.props.sort_key is None:
        assert "ok      no sort key, as the props say" in lines
    else:
        assert "ok      sort key 'sort_key' (String)" in lines
    assert "ok      billing mode PAY_PER_REQUEST (on-demand)" in lines
    if not ttl_flags:
        assert "ok      TTL ENABLED on 'expire_at'" in lines
    assert any(line.startswith("advice  point-in-time recovery") for line in lines)
    assert any(line.startswith("advice  deletion protection") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)
    assert lines[-1] == f"table {table.props.table_name} matches the props"


async def test_check_a_mismatching_table_names_each_mismatch(
    url: str, raw: Any, cleanup: list[str], table_name: str
) -> None:
    cleanup.append(table_name)
    await raw.create_table(
        TableName=table_name,
        AttributeDefinitions=[
            {"AttributeName": "session_id", "AttributeType": "N"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "session_id", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
    )
    result = cli("check", "--table", table_name, endpoint_url=url)
    assert result.returncode == 1, result.stdout + result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [
        "FAIL    partition key 'session_id' is of type Number; it must be String (S)",
        "FAIL    the table has sort key 'sk'; the props have none",
        "FAIL    billing mode is PROVISIONED (5 RCU, 5 WCU), expected PAY_PER_REQUEST "
        "(on-demand): a traffic burst beyond the provisioned units is throttled and answered 503",
        "FAIL    TTL is DISABLED, expected ENABLED on 'expire_at': expired sessions stay in the "
        "table (and are billed as storage) until purge-expired deletes them",
    ]
    assert result.stdout.splitlines()[-1] == (
        f"4 mismatches: table {table_name} does not match the props"
    )

    # the same table seen through props with that sort key: that mismatch is gone
    result = cli("check", "--table", table_name, "--sort-key", "sk", endpoint_url=url)
    assert result.returncode == 1
    assert "sort key" not in "".join(
        line for line in result.stdout.splitlines() if line.startswith("FAIL")
    )


@pytest.mark.requires_ttl
async def test_check_ttl_on_another_attribute(
    url: str, raw: Any, cleanup: list[str], table_name: str
) -> None:
    cleanup.append(table_name)
    result = cli("create-table", "--table", table_name, "--expiry-name", "ttl", endpoint_url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli("check", "--table", table_name, endpoint_url=url)
    assert result.returncode == 1
    assert (
        "FAIL    TTL is on attribute 'ttl', the props expect 'expire_at': expired sessions are "
        "never removed by DynamoDB" in result.stdout.splitlines()
    )


def test_check_a_missing_table(url: str, table_name: str) -> None:
    result = cli("check", "--table", table_name, endpoint_url=url)
    assert result.returncode == 1
    assert f"FAIL    table '{table_name}' does not exist" in result.stdout
    no_traceback(result)


async def test_props_file_and_flags_describe_the_same_table(
    url: str, ttl_flags: tuple[str, ...], cleanup: list[str], table_name: str, tmp_path: Path
) -> None:
    cleanup.append(table_name)
    props = tmp_path / "props.json"
    props.write_text(
        json.dumps(
            {
                "table_name": table_name,
                "partition_key": {"name": "pk", "prefix": "S#", "suffix": None},
                "sort_key": {"name": "sk", "prefix": "TOWER_SESSIONS::"},
                "expiry_name": "ttl",
            }
        )
    )
    result = cli("create-table", "--props", str(props), *ttl_flags, endpoint_url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    flags = ("--table", table_name, "--partition-key", "pk", "--sort-key", "sk")
    result = cli("check", *flags, "--expiry-name", "ttl", *ttl_flags, endpoint_url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    # and flags override the file
    result = cli("check", "--props", str(props), "--partition-key", "id", endpoint_url=url)
    assert result.returncode == 1
    assert "partition key is 'pk', the props expect 'id'" in result.stdout


# -- purge-expired -------------------------------------------------------------------------------


async def test_purge_expired_deletes_exactly_the_expired_items(
    table: Layout, url: str, raw: Any
) -> None:
    live = [table.item(n, LIVE) for n in range(12)]
    expired = [table.item(n, EXPIRED) for n in range(12, 30)]
    other = [table.item(99, None)]  # no expiry attribute: not a session to purge
    await put_items(raw, table, live + expired + other)

    dry = cli("purge-expired", *table.flags, "--dry-run", endpoint_url=url)
    assert dry.returncode == 0, dry.stderr
    assert "18 expired items found (nothing deleted: --dry-run), 31 items scanned" in dry.stdout
    assert len(await scan_all(raw, table.props.table_name)) == 31

    result = cli("purge-expired", *table.flags, "--page-size", "7", endpoint_url=url)
    assert result.returncode == 0, result.stderr
    assert f"18 deleted, 31 items scanned in {table.props.table_name}" in result.stdout
    left = await stored_keys(raw, table)
    assert left == sorted_keys([table.key(n) for n in [*range(12), 99]])

    again = cli("purge-expired", *table.flags, endpoint_url=url)
    assert again.returncode == 0
    assert "0 deleted, 13 items scanned" in again.stdout


PROGRESS = re.compile(
    r"^scanned (?P<scanned>[\d,]+)(?: of ~[\d,]+ \(\d+%\))?, (?P<verb>deleted|would delete) "
    r"(?P<done>[\d,]+), [\d,]+ items/s(?:, ETA (?:\d+[smh][\d]*[sm]?|soon))?$"
)


async def test_purge_progress_lines_when_not_a_terminal(table: Layout, url: str, raw: Any) -> None:
    await put_items(raw, table, [table.item(n, EXPIRED if n % 2 else LIVE) for n in range(20)])
    result = cli(
        "purge-expired",
        *table.flags,
        "--page-size",
        "5",
        "--progress-interval",
        "0",
        endpoint_url=url,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    matches = [PROGRESS.match(line) for line in lines]
    assert all(matches), lines
    figures = [(int(m["scanned"]), int(m["done"])) for m in matches if m]
    assert len(figures) >= 4  # one at least per page of 5
    assert figures == sorted(figures)  # counts only grow
    assert figures[-1] == (20, 10)


async def test_purge_progress_rewrites_one_line_on_a_terminal(
    table: Layout, url: str, raw: Any
) -> None:
    await put_items(raw, table, [table.item(n, EXPIRED) for n in range(6)])
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asgi_dynamo_session", "purge-expired", *table.flags],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=cli_env(url),
            cwd=ROOT,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            ready, _, _ = select.select([leader], [], [], CLI_TIMEOUT)
            assert ready, "no terminal output"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert proc.returncode == 0
    assert b"6 deleted" in out
    text = seen.decode().replace("\r\n", "\n")  # the terminal turns \n into \r\n
    assert text.startswith("\rscanned"), text
    assert text.endswith("\n") and text.count("\n") == 1, text  # one line, rewritten with \r
    assert "deleted 6" in text.rsplit("\r", 1)[-1]


def _wait_for_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line, "the purge ended before its first progress line"
    return line


async def test_ctrl_c_stops_after_the_batch_and_prints_where_to_resume(
    table: Layout, url: str, raw: Any
) -> None:
    expired = list(range(40))
    await put_items(raw, table, [table.item(n, EXPIRED) for n in expired])
    await put_items(raw, table, [table.item(n, LIVE) for n in range(40, 45)])
    # 2 write units a second: 40 deletes take 20 s, so the interrupt lands mid-way
    args = ["purge-expired", *table.flags, "--max-wcu", "2", "--progress-interval", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgi_dynamo_session", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(url),
        cwd=ROOT,
    )
    try:
        first = _wait_for_line(proc)
        assert PROGRESS.match(first.rstrip("\n")), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    match = re.search(
        r"interrupted after (\d+) deleted, \d+ items scanned; resume with:\n  (.+)",
        err,
    )
    assert match, err
    deleted = int(match[1])
    left = await stored_keys(raw, table)
    assert len(left) == 45 - deleted
    assert len(left) > 5  # not finished: some expired items are left

    command = shlex.split(match[2])
    assert command[0] == PROG
    assert "--start-key" in command
    resume = [arg for arg in command[1:] if arg != "--max-wcu" and arg != "2"]
    result = cli(*resume, endpoint_url=url)
    assert result.returncode == 0, result.stderr
    assert await stored_keys(raw, table) == sorted_keys([table.key(n) for n in range(40, 45)])


# -- stats ---------------------------------------------------------------------------------------


def _size(item: dict[str, Any]) -> int:
    """The item's bytes without its number values (checked separately: 1-21 bytes each)."""
    total = 0
    for name, value in item.items():
        ((kind, body),) = value.items()
        total += len(name.encode())
        total += len(body) if kind == "B" else len(body.encode()) if kind == "S" else 0
    return total


async def test_stats_figures_on_known_items(table: Layout, url: str, raw: Any) -> None:
    live = [table.item(1, LIVE, b"a" * 100), table.item(2, LIVE, b"b" * 1800)]
    live.append(table.item(3, LIVE, b"c" * 5000))
    expired = [table.item(4, EXPIRED, b"d" * 10_000), table.item(5, EXPIRED)]
    await put_items(raw, table, [*live, *expired, table.item(6, None)])

    result = cli("stats", *table.flags, "--json", endpoint_url=url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["scanned"], stats["live"], stats["expired"], stats["other"]) == (6, 3, 2, 1)
    rows = {row["label"]: row for row in stats["sizes"]}
    assert list(rows) == ["p50", "p95", "max"]
    # nearest rank over 3 live items: p50 is the 2nd, p95 and max the 3rd
    for label, item, wcu, rcu in (
        ("p50", live[1], 2, 1),
        ("p95", live[2], 5, 2),
        ("max", live[2], 5, 2),
    ):
        row = rows[label]
        assert _size(item) + 1 <= row["bytes"] <= _size(item) + 21
        assert row["write_units"] == wcu == math.ceil(row["bytes"] / 1024)
        assert row["read_units"] == rcu == math.ceil(row["bytes"] / 4096)
        assert row["write_cost"] == pytest.approx(wcu * 0.625)
        assert row["read_cost"] == pytest.approx(rcu * 0.125)
    assert (stats["write_price"], stats["read_price"], stats["price_region"]) == (
        0.625,
        0.125,
        "us-east-1",
    )

    text = cli("stats", *table.flags, endpoint_url=url)
    assert text.returncode == 0, text.stderr
    assert "live sessions              3" in text.stdout
    assert "expired sessions           2" in text.stdout
    assert "other items                1" in text.stdout
    p95 = next(line for line in text.stdout.splitlines() if line.startswith("  p95"))
    assert p95.split()[2:] == ["5", "2", "$3.125", "$0.25"]
    assert "us-east-1" in text.stdout and "$0.625 per million write request units" in text.stdout

    priced = cli("stats", *table.flags, "--json", "--write-price", "1", endpoint_url=url)
    assert json.loads(priced.stdout)["sizes"][0]["write_cost"] == 2.0


async def test_stats_on_an_empty_table(table: Layout, url: str) -> None:
    result = cli("stats", *table.flags, endpoint_url=url)
    assert result.returncode == 0, result.stderr
    assert "no live sessions: no size figures" in result.stdout


# -- revoke-user ---------------------------------------------------------------------------------


async def test_revoke_user(table: Layout, url: str, dynamodb_server: Any) -> None:
    if dynamodb_server.kind == "dynalite":
        pytest.skip("dynalite has no TransactWriteItems (binding a session is one transaction)")
    if not hasattr(DynamoDBStore, "revoke_user"):
        result = cli("revoke-user", "alice", *table.flags, endpoint_url=url)
        assert result.returncode == 1
        assert "revoke-user needs DynamoDBStore.revoke_user" in result.stderr
        no_traceback(result)
        return
    from support import client_for, middleware

    async def login(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["session"]["hello"] = "world"
        scope["session"].set_user(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    store = DynamoDBStore(props=table.props, endpoint_url=url, region_name="us-east-1")
    async with store:
        app = middleware(login, store)
        for user in ("alice", "alice", "bob"):
            async with client_for(app) as client:
                assert (await client.get(f"/{user}")).status_code == 200
        result = cli("revoke-user", "alice", *table.flags, endpoint_url=url)
        assert result.returncode == 0, result.stderr
        assert "revoked 2 sessions of user 'alice'" in result.stdout
        assert await store.user_sessions("alice") == []
        assert len(await store.user_sessions("bob")) == 1


# -- iam-policy and cloudformation ---------------------------------------------------------------


def test_iam_policy_is_json_naming_the_table(layout: Layout) -> None:
    result = cli("iam-policy", *layout.flags, "--account-id", "123456789012", endpoint_url=None)
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{layout.props.table_name}"
    assert policy["Version"] == "2012-10-17"
    required, optional = policy["Statement"]
    assert required["Effect"] == "Allow" and required["Resource"] == arn
    assert sorted(required["Action"]) == sorted(
        f"dynamodb:{a}"
        for a in (
            "GetItem",
            "BatchGetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchWriteItem",
            "ConditionCheckItem",
            "Scan",
            "DescribeTable",
        )
    )
    assert "Optional" in optional["Sid"] and optional["Resource"] == arn
    assert sorted(optional["Action"]) == [
        "dynamodb:CreateTable",
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:DescribeTimeToLive",
        "dynamodb:UpdateTimeToLive",
    ]
    assert not any("*" in a for s in policy["Statement"] for a in s["Action"])

    lean = cli("iam-policy", *layout.flags, "--no-optional", "--region", "eu-west-1")
    (statement,) = json.loads(lean.stdout)["Statement"]
    assert statement["Resource"] == f"arn:aws:dynamodb:eu-west-1:*:table/{layout.props.table_name}"


def test_cloudformation_for_the_default_props_is_the_example_file() -> None:
    result = cli("cloudformation")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "examples" / "example-table-cfn.yml").read_text()


def test_cloudformation_for_the_seed_example() -> None:
    result = cli("cloudformation", *SEED.flags)
    assert result.returncode == 0, result.stderr
    body = result.stdout.split("Resources:", 1)[1]
    assert "TableName: MyTowerSessions" in body
    assert re.search(r"- AttributeName: sort_key\s+AttributeType: S", body)
    assert re.search(
        r"KeySchema:\s+- AttributeName: session_id\s+KeyType: HASH\s+"
        r"- AttributeName: sort_key\s+KeyType: RANGE",
        body,
    )
    assert re.search(r"TimeToLiveSpecification:\s+AttributeName: expire_at\s+Enabled: true", body)
    cfnlint = pytest.importorskip("cfnlint.api", reason="cfn-lint validates templates")
    problems = cfnlint.lint(result.stdout)
    assert problems == [], problems


# -- endpoint, usage, help -----------------------------------------------------------------------


def test_endpoint_from_the_aws_settings_and_the_flag(url: str, table_name: str) -> None:
    refusing = "http://127.0.0.1:9"  # discard port: nothing listens
    for env in (
        cli_env(url),
        {**cli_env(None), "AWS_ENDPOINT_URL": url},
        {**cli_env(None), "AWS_ENDPOINT_URL": refusing, "AWS_ENDPOINT_URL_DYNAMODB": url},
    ):
        result = cli("check", "--table", table_name, env=env)
        assert result.returncode == 1
        assert f"checking table {table_name} on {url} (us-east-1)" in result.stdout
    result = cli("check", "--table", table_name, "--endpoint-url", url, env=cli_env(refusing))
    assert f"on {url} (us-east-1)" in result.stdout

    down = cli("check", "--table", table_name, env=cli_env(refusing))
    assert down.returncode == 1
    assert down.stderr.startswith(f"{PROG}: ")
    no_traceback(down)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["check", "--bogus"],
        ["purge-expired", "--max-wcu", "0"],
        ["purge-expired", "--start-key", "{not json"],
        ["purge-expired", "--start-key", '{"session_id": "x"}'],
        ["check", "--sort-prefix", "X::"],
        ["check", "--props", "/nonexistent/props.json"],
        ["check", "--props", "BAD_JSON"],
        ["check", "--props", "UNKNOWN_FIELD"],
        ["check", "--props", "BAD_KEY"],
        ["revoke-user"],
        ["stats", "--read-price", "-1"],
    ],
    ids=lambda args: " ".join(args) or "no-command",
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path, url: str) -> None:
    files = {
        "BAD_JSON": "{",
        "UNKNOWN_FIELD": '{"table": "x"}',
        "BAD_KEY": '{"partition_key": "session_id"}',
    }
    args = list(args)
    for i, arg in enumerate(args):
        if arg in files:
            path = tmp_path / "props.json"
            path.write_text(files[arg])
            args[i] = str(path)
    result = cli(*args, endpoint_url=url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "usage:" in result.stderr
    assert "error:" in result.stderr
    no_traceback(result)


COMMANDS = [
    "create-table",
    "check",
    "purge-expired",
    "stats",
    "revoke-user",
    "iam-policy",
    "cloudformation",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_each_command_has_an_example(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {PROG} {command}")
    assert f"examples:\n  {PROG} {command}" in result.stdout


def test_the_console_script_and_python_m_are_the_same_command() -> None:
    script = Path(sys.executable).with_name(PROG)
    if not script.exists():
        pytest.skip(f"{PROG} is not installed next to {sys.executable} (pip install -e .)")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    assert result.returncode == 0
    assert result.stdout == cli("--help").stdout
    for command in COMMANDS:
        assert command in result.stdout
