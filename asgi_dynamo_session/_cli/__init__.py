"""The `asgi-dynamo-session` command: operations on the session table (standard library only).

Exit codes: 0 ok, 1 a check failed (or the operation did), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from ..dynamodb import DynamoDBStore, DynamoDBStoreProps
from ..errors import StoreError
from . import _cloudformation, _policy, _purge, _stats, _table
from ._progress import Progress
from ._props import PropsError, Where, add_arguments, props_from, where_from

PROG = "asgi-dynamo-session"
SEED = "--table MyTowerSessions --sort-key sort_key --sort-prefix TOWER_SESSIONS::"


class Failed(Exception):
    """The command could not do its job (exit 1); the message says why."""


def _command(
    sub: Any, name: str, summary: str, examples: Sequence[str], *, table: bool = True
) -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {PROG} {name} {e}".rstrip() for e in examples)
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if table:
        add_arguments(parser)
    parser.set_defaults(parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operations on the DynamoDB table of asgi-dynamo-session.",
        epilog=f"example:\n  {PROG} check {SEED}\n\n"
        "exit codes: 0 ok, 1 check or operation failed, 2 usage",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(
        sub,
        "create-table",
        "Create the table (on-demand, TTL on the expiry attribute) and wait until it is active; "
        "an existing table that matches is fine, one that does not is exit 1.",
        ["", SEED, "--dry-run"],
    )
    p.add_argument("--dry-run", action="store_true", help="print the requests, send nothing")
    p.add_argument("--no-ttl", action="store_true", help="leave TTL off (servers without it)")
    p.set_defaults(run=_create_table)

    p = _command(
        sub,
        "check",
        "Compare the table with the props: key schema, key types, TTL, billing mode "
        "(point-in-time recovery and deletion protection as advice); exit 1 on a mismatch.",
        ["", SEED, "--props props.json --endpoint-url http://127.0.0.1:8000"],
    )
    p.add_argument("--no-ttl", action="store_true", help="do not require TTL (servers without it)")
    p.set_defaults(run=_check)

    p = _command(
        sub,
        "purge-expired",
        "Delete the items whose expiry has passed (Scan + BatchWriteItem), with progress on "
        "stderr. Ctrl-C stops after the current batch and prints the --start-key to resume at.",
        ["", "--dry-run", "--max-wcu 100 --page-size 500", f"{SEED} --max-wcu 50"],
    )
    p.add_argument("--dry-run", action="store_true", help="count the expired items only")
    p.add_argument("--max-wcu", type=_positive_float, metavar="N", help="write units per second")
    p.add_argument("--page-size", type=_positive_int, metavar="N", help="items per Scan page")
    p.add_argument("--start-key", metavar="JSON", help="resume after this key (from a Ctrl-C)")
    p.add_argument(
        "--progress-interval",
        type=_non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal (default 10)",
    )
    p.set_defaults(run=_purge_expired)

    p = _command(
        sub,
        "stats",
        "Count live and expired sessions, show item sizes (p50, p95, max) in billed units and "
        "the on-demand cost of a million saves and loads at those sizes. Reads the whole table.",
        ["", "--json", f"{SEED} --write-price 0.7125 --read-price 0.1425"],
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--page-size", type=_positive_int, metavar="N", help="items per Scan page")
    p.add_argument(
        "--write-price",
        type=_non_negative_float,
        default=_stats.WRITE_PRICE,
        metavar="USD",
        help=f"per million write request units (default {_stats.WRITE_PRICE}, us-east-1)",
    )
    p.add_argument(
        "--read-price",
        type=_non_negative_float,
        default=_stats.READ_PRICE,
        metavar="USD",
        help=f"per million read request units (default {_stats.READ_PRICE}, us-east-1)",
    )
    p.set_defaults(run=_stats_command)

    p = _command(
        sub,
        "revoke-user",
        "End every session of a user (DynamoDBStore.revoke_user): no session of theirs created "
        "before the call is accepted again.",
        ["alice", f"alice {SEED}"],
    )
    p.add_argument("user", help="the user id given to session.set_user()")
    p.set_defaults(run=_revoke_user)

    p = _command(
        sub,
        "iam-policy",
        "Print the least-privilege IAM policy (JSON) for the table: the calls the store makes, "
        "and the table setup/check calls in a separate, optional statement.",
        ["--account-id 123456789012 --region eu-west-1", f"{SEED} --no-optional"],
    )
    p.add_argument("--account-id", metavar="ID", help="AWS account of the table (default *)")
    p.add_argument("--partition", default="aws", help="ARN partition (default aws)")
    p.add_argument(
        "--no-optional", action="store_true", help="leave out the table setup/check statement"
    )
    p.set_defaults(run=_iam_policy)

    p = _command(
        sub,
        "cloudformation",
        "Print the CloudFormation template of the table (YAML).",
        ["", f"{SEED} > session-table.yml"],
    )
    p.set_defaults(run=_cloudformation_command)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, not {text}")
    return value


# -- commands ------------------------------------------------------------------------------------

Context = tuple[argparse.Namespace, DynamoDBStoreProps, Where, list[str]]


async def _store(stack: AsyncExitStack, props: DynamoDBStoreProps, where: Where) -> DynamoDBStore:
    """A store owning its aiobotocore client on the given endpoint and region."""
    store = DynamoDBStore(
        props=props,
        endpoint_url=where.endpoint_url,
        region_name=where.region,
        transport="aiobotocore",
        read_timeout=30.0,
    )
    try:
        await stack.enter_async_context(store)
    except NoRegionError:
        raise PropsError("no AWS region: pass --region or set AWS_REGION") from None
    return store


def _print_findings(found: list[_table.Finding]) -> None:
    for finding in found:
        print(finding.line())


def _verdict(props: DynamoDBStoreProps, found: list[_table.Finding]) -> int:
    bad = _table.failed(found)
    if bad:
        word = "mismatch" if len(bad) == 1 else "mismatches"
        print(f"{len(bad)} {word}: table {props.table_name} does not match the props")
        return 1
    print(f"table {props.table_name} matches the props")
    return 0


async def _check(ctx: Context) -> int:
    args, props, where, _ = ctx
    async with AsyncExitStack() as stack:
        store = await _store(stack, props, where)
        print(f"checking table {props.table_name} on {where.describe()}")
        found = await _table.findings(store.client, props, ttl=not args.no_ttl)
    _print_findings(found)
    return _verdict(props, found)


async def _wait_active(client: Any, table: str) -> None:
    delay = 0.05
    for _ in range(400):
        info = await _table.describe(client, table)
        if info is not None and info.get("TableStatus") == "ACTIVE":
            return
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 1.5)
    raise Failed(f"table {table} did not become ACTIVE")


async def _enable_ttl(client: Any, props: DynamoDBStoreProps) -> None:
    try:
        await client.update_time_to_live(**_table.ttl_request(props))
    except ClientError as exc:
        if "already enabled" in str(exc).lower():
            return
        if _table.unsupported(exc):
            raise Failed(
                "TTL could not be enabled: the server does not support UpdateTimeToLive; "
                "use --no-ttl there and run purge-expired regularly"
            ) from None
        raise
    print(f"TTL enabled on {props.expiry_name}")


async def _create_table(ctx: Context) -> int:
    args, props, where, _ = ctx
    if args.dry_run:
        requests: dict[str, Any] = {"CreateTable": _table.create_request(props)}
        if not args.no_ttl:
            requests["UpdateTimeToLive"] = _table.ttl_request(props)
        print(json.dumps(requests, indent=2))
        return 0
    async with AsyncExitStack() as stack:
        store = await _store(stack, props, where)
        client: Any = store.client
        existing = await _table.describe(client, props.table_name)
        if existing is None:
            print(f"creating table {props.table_name} on {where.describe()}")
            try:
                await client.create_table(**_table.create_request(props))
            except ClientError as exc:
                if _table.error_code(exc) != "ResourceInUseException":  # created meanwhile
                    raise
            await _wait_active(client, props.table_name)
            print(f"table {props.table_name} is ACTIVE")
        else:
            print(f"table {props.table_name} already exists on {where.describe()}")
            keys = _table.key_findings(props, existing)
            if _table.failed(keys):
                _print_findings(keys)
                return _verdict(props, keys)
            await _wait_active(client, props.table_name)
        if not args.no_ttl:
            ttl = await _table.ttl_finding(client, props)
            if ttl.level == "FAIL":
                await _enable_ttl(client, props)
        found = await _table.findings(client, props, ttl=not args.no_ttl)
    _print_findings(found)
    return _verdict(props, found)


def _resume_command(argv: list[str], key: dict[str, Any]) -> str:
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--start-key":
            skip = True
        elif not arg.startswith("--start-key="):
            kept.append(arg)
    return shlex.join([PROG, *kept, "--start-key", json.dumps(key, separators=(",", ":"))])


async def _purge_expired(ctx: Context) -> int:
    args, props, where, argv = ctx
    try:
        start = None if args.start_key is None else _purge.parse_start_key(args.start_key)
    except ValueError as exc:
        raise PropsError(str(exc)) from None
    async with AsyncExitStack() as stack:
        store = await _store(stack, props, where)
        table = await _table.describe(store.client, props.table_name)
        if table is None:
            raise Failed(f"table {props.table_name} does not exist on {where.describe()}")
        verb = "would delete" if args.dry_run else "deleted"
        progress = Progress(
            sys.stderr, total=table.get("ItemCount"), verb=verb, interval=args.progress_interval
        )
        stop = asyncio.Event()
        with _purge.interruptible(stop):
            out = await _purge.purge(
                store,
                progress,
                dry_run=args.dry_run,
                max_wcu=args.max_wcu,
                page_size=args.page_size,
                start_key=start,
                stop=stop,
            )
        progress.finish()
    what = "expired items found (nothing deleted: --dry-run)" if args.dry_run else "deleted"
    if out.finished:
        print(f"{out.deleted:,} {what}, {out.scanned:,} items scanned in {props.table_name}")
        return 0
    print(
        f"interrupted after {out.deleted:,} {what}, {out.scanned:,} items scanned; resume with:",
        file=sys.stderr,
    )
    print(f"  {_resume_command(argv, out.resume_key or {})}", file=sys.stderr)
    return 1


async def _stats_command(ctx: Context) -> int:
    args, props, where, _ = ctx
    async with AsyncExitStack() as stack:
        store = await _store(stack, props, where)
        if await _table.describe(store.client, props.table_name) is None:
            raise Failed(f"table {props.table_name} does not exist on {where.describe()}")
        progress = Progress(sys.stderr, total=None, verb=None, interval=10.0)
        stats = await _stats.collect(
            store.client,
            props,
            progress,
            page_size=args.page_size,
            write_price=args.write_price,
            read_price=args.read_price,
        )
        if progress.tty:
            progress.finish()
    if args.json:
        print(json.dumps(stats.as_json(), indent=2))
    else:
        print(_stats.report(stats), end="")
    return 0


async def _revoke_user(ctx: Context) -> int:
    args, props, where, _ = ctx
    if not hasattr(DynamoDBStore, "revoke_user"):
        raise Failed(
            "revoke-user needs DynamoDBStore.revoke_user (users and devices), which this "
            "version of asgi-dynamo-session does not have"
        )
    async with AsyncExitStack() as stack:
        store = await _store(stack, props, where)
        revoke: Callable[[str], Awaitable[int]] = getattr(store, "revoke_user")  # noqa: B009
        count = await revoke(args.user)
    print(f"revoked {count} session{'s' if count != 1 else ''} of user {args.user!r}")
    return 0


async def _iam_policy(ctx: Context) -> int:
    args, props, where, _ = ctx
    document = _policy.policy(
        props,
        region=where.region,
        account=args.account_id,
        partition=args.partition,
        optional=not args.no_optional,
    )
    print(json.dumps(document, indent=2))
    return 0


async def _cloudformation_command(ctx: Context) -> int:
    _, props, _, _ = ctx
    sys.stdout.write(_cloudformation.template(props))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The library's own warnings (e.g. the store's table check on open) would reach stderr
    # through logging's last-resort handler beside the command's own message: the command
    # reports every failure itself, in its own words.
    logging.getLogger("asgi_dynamo_session").addHandler(logging.NullHandler())
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        props = props_from(args)
        ctx: Context = (args, props, where_from(args), arguments)
        code: int = asyncio.run(args.run(ctx))
    except PropsError as exc:
        args.parser.error(str(exc))
    except Failed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ClientError, BotoCoreError, StoreError, OSError) as exc:
        print(f"{PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    return code
