"""The least-privilege IAM policy for the props' table: exactly the calls the store makes."""

from __future__ import annotations

from typing import Any

from ..dynamodb import DynamoDBStoreProps

#: What a running app needs. TransactWriteItems (users and devices) has no IAM action of its
#: own: its Put/Update/Delete parts need the actions below, its ConditionCheck parts
#: ConditionCheckItem; BatchGetItem lists a user's sessions. Scan and BatchWriteItem are for
#: `delete_expired()` / purge-expired.
DATA_PLANE = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
)
#: Only for creating and checking the table (create_table(), this CLI's create-table/check).
CONTROL_PLANE = (
    "dynamodb:CreateTable",
    "dynamodb:UpdateTimeToLive",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:DescribeContinuousBackups",
)


def table_arn(table: str, region: str | None, account: str | None, partition: str) -> str:
    return f"arn:{partition}:dynamodb:{region or '*'}:{account or '*'}:table/{table}"


def policy(
    props: DynamoDBStoreProps,
    *,
    region: str | None,
    account: str | None,
    partition: str = "aws",
    optional: bool = True,
) -> dict[str, Any]:
    """The policy document; the control-plane statement is left out with `optional=False`."""
    arn = table_arn(props.table_name, region, account, partition)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "SessionTableReadWrite",
            "Effect": "Allow",
            "Action": list(DATA_PLANE),
            "Resource": arn,
        }
    ]
    if optional:
        statements.append(
            {
                "Sid": "OptionalSessionTableSetupAndCheck",
                "Effect": "Allow",
                "Action": list(CONTROL_PLANE),
                "Resource": arn,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
