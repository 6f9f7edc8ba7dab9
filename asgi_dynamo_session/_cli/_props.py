"""The table the command works on: DynamoDBStoreProps from flags or a JSON file, and where it is."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from ..dynamodb import DynamoDBStoreKey, DynamoDBStoreProps

_KEY_FIELDS = ("partition_key", "sort_key")
_STR_FIELDS = (
    "table_name",
    "expiry_name",
    "data_name",
    "version_name",
    "created_name",
    "policy_name",
)
_BOOL_FIELDS = ("hash_ids", "consistent_read")
_INT_FIELDS = ("create_key_max_retry_attempts",)


class PropsError(ValueError):
    """The props given do not describe a table (a usage error: exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe the table, mirroring DynamoDBStoreProps."""
    table = parser.add_argument_group(
        "table (DynamoDBStoreProps; defaults are the library's, flags override --props)"
    )
    table.add_argument("--props", metavar="FILE.json", help="a JSON object of props fields")
    table.add_argument("--table", metavar="NAME", help="table_name (default TowerSessions)")
    table.add_argument("--partition-key", metavar="NAME", help="default session_id")
    table.add_argument("--prefix", metavar="TEXT", help="partition key prefix ('' for none)")
    table.add_argument("--suffix", metavar="TEXT", help="partition key suffix")
    table.add_argument("--sort-key", metavar="NAME", help="sort key attribute (default none)")
    table.add_argument("--sort-prefix", metavar="TEXT", help="sort key prefix")
    table.add_argument("--sort-suffix", metavar="TEXT", help="sort key suffix")
    table.add_argument("--expiry-name", metavar="NAME", help="TTL attribute (default expire_at)")
    table.add_argument("--data-name", metavar="NAME", help="payload attribute (default data)")
    table.add_argument("--version-name", metavar="NAME", help="default version")
    table.add_argument("--created-name", metavar="NAME", help="default created_at")
    where = parser.add_argument_group("where (else AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, ...)")
    where.add_argument("--endpoint-url", metavar="URL", help="DynamoDB endpoint")
    where.add_argument("--region", metavar="REGION", help="AWS region")


def _key(field: str, value: Any) -> DynamoDBStoreKey | None:
    if value is None and field == "sort_key":
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise PropsError(f'{field} must be an object {{"name", "prefix", "suffix"}}, not {value!r}')
    unknown = set(value) - {"name", "prefix", "suffix"}
    if unknown:
        raise PropsError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}")
    for part in ("prefix", "suffix"):
        if value.get(part) is not None and not isinstance(value[part], str):
            raise PropsError(f"{field}.{part} must be a string or null")
    return DynamoDBStoreKey(value["name"], value.get("prefix"), value.get("suffix"))


def from_json(text: str, source: str) -> dict[str, Any]:
    """DynamoDBStoreProps keyword arguments from a JSON object, each field checked."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PropsError(f"{source}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise PropsError(f"{source}: expected a JSON object of DynamoDBStoreProps fields")
    fields = {f.name for f in dataclasses.fields(DynamoDBStoreProps)}
    unknown = set(raw) - fields
    if unknown:
        raise PropsError(
            f"{source}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _KEY_FIELDS:
            kwargs[name] = _key(name, value)
        elif name in _STR_FIELDS and not isinstance(value, str):
            raise PropsError(f"{source}: {name} must be a string")
        elif name in _BOOL_FIELDS and not isinstance(value, bool):
            raise PropsError(f"{source}: {name} must be true or false")
        elif name in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
            raise PropsError(f"{source}: {name} must be an integer")
        else:
            kwargs[name] = value
    return kwargs


def _text(value: str | None) -> str | None:
    return value or None  # '' on the command line means "none"


def props_from(args: argparse.Namespace) -> DynamoDBStoreProps:
    """Defaults, then the --props file, then the flags."""
    kwargs: dict[str, Any] = {}
    if args.props:
        try:
            with open(args.props, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise PropsError(f"--props {args.props}: {exc.strerror}") from None
        kwargs = from_json(text, args.props)
    base = DynamoDBStoreProps(**kwargs)
    changes: dict[str, Any] = {}
    for flag, name in (
        ("table", "table_name"),
        ("expiry_name", "expiry_name"),
        ("data_name", "data_name"),
        ("version_name", "version_name"),
        ("created_name", "created_name"),
    ):
        value = getattr(args, flag)
        if value is not None:
            if not value:
                raise PropsError(f"--{flag.replace('_', '-')} must not be empty")
            changes[name] = value
    pk = base.partition_key
    if args.partition_key is not None or args.prefix is not None or args.suffix is not None:
        pk = DynamoDBStoreKey(
            args.partition_key or pk.name,
            pk.prefix if args.prefix is None else _text(args.prefix),
            pk.suffix if args.suffix is None else _text(args.suffix),
        )
        changes["partition_key"] = pk
    sk = base.sort_key
    if args.sort_key is not None or args.sort_prefix is not None or args.sort_suffix is not None:
        sort_name: str | None = args.sort_key or (sk.name if sk else None)
        if sort_name is None:
            raise PropsError("--sort-prefix/--sort-suffix need --sort-key NAME")
        changes["sort_key"] = DynamoDBStoreKey(
            sort_name,
            (sk.prefix if sk else None) if args.sort_prefix is None else _text(args.sort_prefix),
            (sk.suffix if sk else None) if args.sort_suffix is None else _text(args.sort_suffix),
        )
    props = dataclasses.replace(base, **changes)
    if props.sort_key is not None and props.sort_key.name == props.partition_key.name:
        raise PropsError("the sort key needs a name other than the partition key's")
    return props


@dataclass(frozen=True)
class Where:
    """The endpoint (None: AWS's own) and region the command talks to."""

    endpoint_url: str | None
    region: str | None

    def describe(self) -> str:
        return f"{self.endpoint_url or 'AWS'} ({self.region or 'region from AWS config'})"


def where_from(args: argparse.Namespace) -> Where:
    """--endpoint-url/--region, else the usual AWS environment settings."""
    env = os.environ
    endpoint = args.endpoint_url
    ignore = env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    if endpoint is None and not ignore:
        endpoint = env.get("AWS_ENDPOINT_URL_DYNAMODB") or env.get("AWS_ENDPOINT_URL") or None
    region = args.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return Where(endpoint, region)
