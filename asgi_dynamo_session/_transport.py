"""The small seam between the DynamoDB store and the wire: the data-plane calls the store makes.

Items and keys are DynamoDB attribute maps (``{"name": {"S": "..."}}``) with Binary values as
``bytes``. Every transport raises `ConditionFailed` for a failed condition and `StoreError` for
anything else, so the store logic never sees a transport's own exceptions. A cancelled
transaction raises `TransactionCanceled`, a `ConditionFailed` that says which items failed.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from . import _telemetry
from .errors import StoreError

Item = dict[str, Any]
T = TypeVar("T")


def call_budget(max_attempts: int, connect_timeout: float, read_timeout: float) -> float:
    """How long one call may take in all: every attempt's connect (the wait for a pooled
    connection included) and read, back to back; backoff sleeps come out of the same budget."""
    return max_attempts * (connect_timeout + read_timeout)


async def within(seconds: float | None, action: str, call: Coroutine[Any, Any, T]) -> T:
    """Run one store call to the end or until `seconds` have passed (then a StoreError)."""
    if seconds is None:
        return await call
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await call
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise StoreError(f"DynamoDB {action} did not finish within {seconds:g} s") from None


class ConditionFailed(Exception):
    """A ConditionExpression did not hold; `item` is the old item when the server returned it."""

    def __init__(self, item: Item | None) -> None:
        super().__init__("condition check failed")
        self.item = item


class TransactionCanceled(ConditionFailed):
    """A TransactWriteItems was cancelled: `reasons` has one code per item, in order ("None"
    for an item that was fine, "ConditionalCheckFailed", "TransactionConflict", ...)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(None)
        self.reasons = reasons

    @property
    def retryable(self) -> bool:
        """Only conflicts with other transactions (or throttling) failed: worth trying again."""
        return all(r in _RETRYABLE_CANCEL for r in self.reasons) and any(
            r != "None" for r in self.reasons
        )


_RETRYABLE_CANCEL = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def cancel_reasons(document: dict[str, Any]) -> list[str]:
    """The per-item codes of a TransactionCanceledException answer (botocore's or raw JSON)."""
    return [str(r.get("Code") or "None") for r in document.get("CancellationReasons") or ()]


def _expressions(
    params: dict[str, Any],
    condition: str | None,
    names: dict[str, str] | None,
    values: Item | None,
) -> dict[str, Any]:
    if condition is not None:
        params["ConditionExpression"] = condition
        params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    if names:
        params["ExpressionAttributeNames"] = names
    if values:
        params["ExpressionAttributeValues"] = values
    return params


class RequestTransport:
    """What the store needs from DynamoDB's data plane: six calls, each request built here once;
    a subclass only sends them (`_request`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:  # each subclass's _request gets a span
        super().__init_subclass__(**kwargs)
        if "_request" in cls.__dict__:
            cls._request = _telemetry.traced(cls.__dict__["_request"])  # type: ignore[method-assign]

    async def _request(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one DynamoDB action; Binary values in the result come back as bytes."""
        raise NotImplementedError

    async def get_item(self, table: str, key: Item, *, consistent: bool) -> Item | None:
        params = {"TableName": table, "Key": key, "ConsistentRead": consistent}
        item: Item | None = (await self._request("GetItem", params)).get("Item")
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
        params = _expressions({"TableName": table, "Item": item}, condition, names, values)
        await self._request("PutItem", params)

    async def update_item(
        self,
        table: str,
        key: Item,
        *,
        update: str,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
        old: bool = False,
    ) -> Item | None:
        """Update an item; with `old`, return the item as it was before (None if absent)."""
        params = {"TableName": table, "Key": key, "UpdateExpression": update}
        if old:
            params["ReturnValues"] = "ALL_OLD"
        result = await self._request("UpdateItem", _expressions(params, condition, names, values))
        attributes: Item | None = result.get("Attributes") if old else None
        return attributes

    async def delete_item(
        self,
        table: str,
        key: Item,
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        values: Item | None = None,
    ) -> None:
        params = _expressions({"TableName": table, "Key": key}, condition, names, values)
        await self._request("DeleteItem", params)

    async def transact_write(self, items: list[Item], *, token: str | None = None) -> None:
        """Apply all `items` (``{"Put": ...}``, ``{"Update": ...}``, ...) or none of them.

        `token` (ClientRequestToken) makes a retry of a lost answer idempotent for ten minutes;
        it is set once here, so every attempt of a transport's retries sends the same one.
        """
        params: dict[str, Any] = {"TransactItems": items}
        params["ClientRequestToken"] = token or uuid.uuid4().hex
        await self._request("TransactWriteItems", params)

    async def batch_get(
        self,
        table: str,
        keys: list[Item],
        *,
        consistent: bool,
        projection: str | None = None,
        names: dict[str, str] | None = None,
    ) -> tuple[list[Item], list[Item]]:
        """Read up to 100 keys; returns the items found and the keys DynamoDB left unprocessed."""
        request: dict[str, Any] = {"Keys": keys, "ConsistentRead": consistent}
        if projection is not None:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = names
        result = await self._request("BatchGetItem", {"RequestItems": {table: request}})
        items: list[Item] = result.get("Responses", {}).get(table, [])
        unprocessed: list[Item] = result.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        return items, unprocessed

    async def batch_write(self, table: str, requests: list[Item]) -> list[Item]:
        """Write up to 25 requests; returns those DynamoDB left unprocessed."""
        result = await self._request("BatchWriteItem", {"RequestItems": {table: requests}})
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
        limit: int | None = None,
    ) -> tuple[list[Item], Item | None]:
        params = _expressions({"TableName": table}, None, names, values)
        if projection is not None:
            params["ProjectionExpression"] = projection
        if filter is not None:
            params["FilterExpression"] = filter
        if start_key is not None:
            params["ExclusiveStartKey"] = start_key
        if limit is not None:
            params["Limit"] = limit
        result = await self._request("Scan", params)
        return result.get("Items", []), result.get("LastEvaluatedKey")


_METHODS = {
    "GetItem": "get_item",
    "PutItem": "put_item",
    "UpdateItem": "update_item",
    "DeleteItem": "delete_item",
    "BatchWriteItem": "batch_write_item",
    "BatchGetItem": "batch_get_item",
    "TransactWriteItems": "transact_write_items",
    "Scan": "scan",
}


class AioBotocoreTransport(RequestTransport):
    """The seam over an aiobotocore DynamoDB client (the caller's or the store's own)."""

    def __init__(self, client: Any, *, budget: float | None = None) -> None:
        self.client = client
        self.budget = budget

    async def _request(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return await within(self.budget, action, self._call(action, params))

    async def _call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await getattr(self.client, _METHODS[action])(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ConditionalCheckFailedException":
                raise ConditionFailed(exc.response.get("Item")) from None
            if error.get("Code") == "TransactionCanceledException":
                raise TransactionCanceled(cancel_reasons(exc.response)) from None
            code, text = error.get("Code"), error.get("Message")
            raise StoreError(f"DynamoDB {action} failed: {code}: {text}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StoreError(f"DynamoDB {action} failed: {type(exc).__name__}: {exc}") from exc
        return result


def check_raw_response(response_dict: dict[str, Any], **_: Any) -> None:
    """A ``before-parse`` hook for a client the store owns: botocore reads a 200 answer that is
    not JSON (a proxy's HTML page) as an empty result, and fails with a ValueError on an
    ``x-amz-crc32`` that is not a number; both are store failures (`StoreError`)."""
    headers = response_dict.get("headers") or {}
    crc = headers.get("x-amz-crc32")
    if crc is not None and not str(crc).isdigit():
        raise StoreError(f"DynamoDB answered an x-amz-crc32 that is not a number: {crc!r:.40}")
    if response_dict.get("status_code") == 200:
        body = response_dict.get("body") or b"{}"
        if not body.lstrip()[:1] == b"{":
            raise StoreError("DynamoDB's 200 answer is not a JSON object")
