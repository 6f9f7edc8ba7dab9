"""The table the props describe, and how an existing table compares with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from ..dynamodb import DynamoDBStoreKey, DynamoDBStoreProps

ON_DEMAND = "PAY_PER_REQUEST"
_TYPES = {"S": "String", "N": "Number", "B": "Binary"}


def keys(props: DynamoDBStoreProps) -> list[tuple[DynamoDBStoreKey, str]]:
    """The key attributes with their KeyType: the partition key, then the sort key if any."""
    out = [(props.partition_key, "HASH")]
    if props.sort_key is not None:
        out.append((props.sort_key, "RANGE"))
    return out


def create_request(props: DynamoDBStoreProps) -> dict[str, Any]:
    """The CreateTable request for the props: string keys, on-demand billing."""
    return {
        "TableName": props.table_name,
        "AttributeDefinitions": [
            {"AttributeName": key.name, "AttributeType": "S"} for key, _ in keys(props)
        ],
        "KeySchema": [{"AttributeName": key.name, "KeyType": kind} for key, kind in keys(props)],
        "BillingMode": ON_DEMAND,
    }


def ttl_request(props: DynamoDBStoreProps) -> dict[str, Any]:
    """The UpdateTimeToLive request that turns TTL on for the expiry attribute."""
    return {
        "TableName": props.table_name,
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": props.expiry_name},
    }


Level = Literal["ok", "FAIL", "advice"]


@dataclass(frozen=True)
class Finding:
    """One line of a check: a match, a mismatch (fails the check) or advice (does not)."""

    level: Level
    text: str

    def line(self) -> str:
        return f"{self.level:<7} {self.text}"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def denied(exc: ClientError) -> bool:
    """IAM refused the call (a policy without the optional statement of `iam-policy`)."""
    return error_code(exc) in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")


def unsupported(exc: ClientError) -> bool:
    """The server does not implement the operation (dynalite lacks the TTL and backup calls)."""
    code = error_code(exc)
    return code in ("UnknownOperationException", "NotImplemented", "InvalidAction") or (
        "not supported" in str(exc).lower() or "not implemented" in str(exc).lower()
    )


async def describe(client: Any, table: str) -> dict[str, Any] | None:
    """DescribeTable's Table, or None when the table does not exist."""
    try:
        described: dict[str, Any] = await client.describe_table(TableName=table)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    table_info: dict[str, Any] = described["Table"]
    return table_info


def key_findings(props: DynamoDBStoreProps, table: dict[str, Any]) -> list[Finding]:
    """Key schema and key attribute types against the props."""
    schema = {k["KeyType"]: k["AttributeName"] for k in table.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    found: list[Finding] = []
    for role, kind, key in (
        ("partition key", "HASH", props.partition_key),
        ("sort key", "RANGE", props.sort_key),
    ):
        actual = schema.get(kind)
        if key is None:
            if actual is None:
                found.append(Finding("ok", f"no {role}, as the props say"))
            else:
                found.append(
                    Finding("FAIL", f"the table has {role} {actual!r}; the props have none")
                )
            continue
        if actual is None:
            found.append(Finding("FAIL", f"the table has no {role}; the props expect {key.name!r}"))
        elif actual != key.name:
            found.append(Finding("FAIL", f"{role} is {actual!r}, the props expect {key.name!r}"))
        else:
            kind_of = types.get(actual, "?")
            if kind_of == "S":
                found.append(Finding("ok", f"{role} {actual!r} (String)"))
            else:
                name = _TYPES.get(kind_of, kind_of)
                found.append(
                    Finding("FAIL", f"{role} {actual!r} is of type {name}; it must be String (S)")
                )
    return found


def billing_finding(table: dict[str, Any]) -> Finding:
    mode = table.get("BillingModeSummary", {}).get("BillingMode")
    if mode == ON_DEMAND:
        return Finding("ok", "billing mode PAY_PER_REQUEST (on-demand)")
    if mode is None and "ProvisionedThroughput" not in table:
        return Finding("FAIL", "billing mode unknown (the server does not say); expected on-demand")
    throughput = table.get("ProvisionedThroughput", {})
    rcu, wcu = throughput.get("ReadCapacityUnits"), throughput.get("WriteCapacityUnits")
    return Finding(
        "FAIL",
        f"billing mode is PROVISIONED ({rcu} RCU, {wcu} WCU), expected PAY_PER_REQUEST "
        "(on-demand): a traffic burst beyond the provisioned units is throttled and answered 503",
    )


async def ttl_finding(client: Any, props: DynamoDBStoreProps) -> Finding:
    try:
        described = await client.describe_time_to_live(TableName=props.table_name)
    except ClientError as exc:
        if denied(exc):
            return Finding(
                "FAIL",
                "TTL status unknown: DescribeTimeToLive was denied (the optional statement of "
                "`asgi-dynamo-session iam-policy` allows it)",
            )
        if unsupported(exc):
            return Finding(
                "FAIL",
                "TTL status unknown: the server has no DescribeTimeToLive; expired items stay "
                "until purge-expired deletes them (--no-ttl skips this check)",
            )
        raise
    info = described.get("TimeToLiveDescription", {})
    status, attribute = info.get("TimeToLiveStatus", "DISABLED"), info.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and attribute == props.expiry_name:
        return Finding("ok", f"TTL {status} on {attribute!r}")
    if status in ("ENABLED", "ENABLING"):
        return Finding(
            "FAIL",
            f"TTL is on attribute {attribute!r}, the props expect {props.expiry_name!r}: "
            "expired sessions are never removed by DynamoDB",
        )
    return Finding(
        "FAIL",
        f"TTL is {status}, expected ENABLED on {props.expiry_name!r}: expired sessions stay in "
        "the table (and are billed as storage) until purge-expired deletes them",
    )


async def pitr_finding(client: Any, table: str) -> Finding:
    try:
        described = await client.describe_continuous_backups(TableName=table)
    except ClientError as exc:
        if unsupported(exc):
            return Finding("advice", "point-in-time recovery status unknown (not on this server)")
        if denied(exc):
            return Finding("advice", "point-in-time recovery status unknown (access denied)")
        raise
    status = (
        described.get("ContinuousBackupsDescription", {})
        .get("PointInTimeRecoveryDescription", {})
        .get("PointInTimeRecoveryStatus", "DISABLED")
    )
    if status == "ENABLED":
        return Finding("ok", "point-in-time recovery ENABLED")
    return Finding(
        "advice", "point-in-time recovery is off (optional: it undoes a mistaken bulk delete)"
    )


def protection_finding(table: dict[str, Any]) -> Finding:
    enabled = table.get("DeletionProtectionEnabled")
    if enabled:
        return Finding("ok", "deletion protection on")
    if enabled is None:
        return Finding("advice", "deletion protection status unknown (not on this server)")
    return Finding("advice", "deletion protection is off (deleting the table logs everyone out)")


async def findings(client: Any, props: DynamoDBStoreProps, *, ttl: bool = True) -> list[Finding]:
    """Everything `check` reports for the props' table, in the order it prints them."""
    table = await describe(client, props.table_name)
    if table is None:
        return [
            Finding(
                "FAIL",
                f"table {props.table_name!r} does not exist "
                "(asgi-dynamo-session create-table makes it)",
            )
        ]
    found: list[Finding] = []
    status = table.get("TableStatus", "ACTIVE")
    if status not in ("ACTIVE", "UPDATING"):
        found.append(Finding("FAIL", f"table status is {status}, not ACTIVE"))
    found += key_findings(props, table)
    found.append(billing_finding(table))
    if ttl:
        found.append(await ttl_finding(client, props))
    else:
        found.append(Finding("advice", "TTL not checked (--no-ttl): run purge-expired regularly"))
    found.append(await pitr_finding(client, props.table_name))
    found.append(protection_finding(table))
    return found


def failed(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.level == "FAIL"]
