"""The small seam between the DynamoDB store and the wire: six data-plane calls.

Items and keys are DynamoDB attribute maps (``{"name": {"S": "..."}}``) with Binary values as
``bytes``. Every transport raises `ConditionFailed` for a failed condition and `StoreError` for
anything else, so the store logic never sees a transport's own exceptions.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .errors import StoreError

Item = dict[str, Any]


class ConditionFailed(Exception):
    """A ConditionExpression did not hold; `item` is the old item when the server returned it."""

    def __init__(self, item: Item | None) -> None:
        super().__init__("condition check failed")
        self.item = item


class Transport(Protocol):
    """What the store needs from DynamoDB's data plane."""

    async def get_item(self, table: str, key: Item, *, consistent: bool) -> Item | None: ...

    async def put_item(
        self,
        table: str,
        item: Item,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None: ...

    async def update_item(
        self,
        table: str,
        key: Item,
        *,
        update: str,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None: ...

    async def delete_item(
        self,
        table: str,
        key: Item,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None: ...

    async def batch_write(self, table: str, requests: list[Item]) -> list[Item]:
        """Write up to 25 requests; returns those DynamoDB left unprocessed."""
        ...

    async def scan(
        self,
        table: str,
        *,
        projection: str | None = None,
        names: dict[str, str] | None = None,
        filter: str | None = None,
        values: Item | None = None,
        start_key: Item | None = None,
    ) -> tuple[list[Item], Item | None]: ...


def _params(
    condition: str | None, names: dict[str, str] | None, values: Item | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if condition is not None:
        params["ConditionExpression"] = condition
        params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    if names:
        params["ExpressionAttributeNames"] = names
    if values:
        params["ExpressionAttributeValues"] = values
    return params


class AioBotocoreTransport:
    """The seam over an aiobotocore DynamoDB client (the caller's or the store's own)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def _call(self, op: str, **params: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await getattr(self.client, op)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ConditionalCheckFailedException":
                raise ConditionFailed(exc.response.get("Item")) from None
            raise StoreError(
                f"DynamoDB {op} failed: {error.get('Code')}: {error.get('Message')}"
            ) from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StoreError(f"DynamoDB {op} failed: {type(exc).__name__}: {exc}") from exc
        return result

    async def get_item(self, table: str, key: Item, *, consistent: bool) -> Item | None:
        result = await self._call("get_item", TableName=table, Key=key, ConsistentRead=consistent)
        item: Item | None = result.get("Item")
        return item

    async def put_item(
        self,
        table: str,
        item: Item,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None:
        await self._call(
            "put_item", TableName=table, Item=item, **_params(condition, names, values)
        )

    async def update_item(
        self,
        table: str,
        key: Item,
        *,
        update: str,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None:
        await self._call(
            "update_item",
            TableName=table,
            Key=key,
            UpdateExpression=update,
            **_params(condition, names, values),
        )

    async def delete_item(
        self,
        table: str,
        key: Item,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None:
        await self._call(
            "delete_item", TableName=table, Key=key, **_params(condition, names, values)
        )

    async def batch_write(self, table: str, requests: list[Item]) -> list[Item]:
        result = await self._call("batch_write_item", RequestItems={table: requests})
        unprocessed: list[Item] = result.get("UnprocessedItems", {}).get(table, [])
        return unprocessed

    async def scan(
        self,
        table: str,
        *,
        projection: str | None = None,
        names: dict[str, str] | None = None,
        filter: str | None = None,
        values: Item | None = None,
        start_key: Item | None = None,
    ) -> tuple[list[Item], Item | None]:
        params: dict[str, Any] = {"TableName": table}
        if projection is not None:
            params["ProjectionExpression"] = projection
        if filter is not None:
            params["FilterExpression"] = filter
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = values
        if start_key is not None:
            params["ExclusiveStartKey"] = start_key
        result = await self._call("scan", **params)
        return result.get("Items", []), result.get("LastEvaluatedKey")
