"""OpenTelemetry: a span per DynamoDB call and counters of session events.

Active when ``opentelemetry-api`` is installed (extra ``otel``); the app's SDK setup decides where
spans and metrics go. Without the package both hooks are no-ops decided once at import. Spans
follow the database and AWS SDK conventions (``DynamoDB.GetItem``, ``rpc.*``, ``db.*``,
``aws.dynamodb.*``); no attribute ever carries a key, an item or a session id.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

Event = Literal["load", "save", "merge", "touch", "create", "unavailable", "refused"]
Send = TypeVar("Send", bound=Callable[..., Awaitable[dict[str, Any]]])

#: Counter name, unit and description of each event.
COUNTERS: dict[str, tuple[str, str, str]] = {
    "load": ("asgi_dynamo_session.session.loads", "{load}", "Session loads from the store"),
    "save": ("asgi_dynamo_session.session.saves", "{save}", "Changed sessions written back"),
    "merge": (
        "asgi_dynamo_session.session.conflicts_merged",
        "{conflict}",
        "Concurrent changes to one session merged before saving",
    ),
    "touch": (
        "asgi_dynamo_session.session.touches",
        "{touch}",
        "Expiry refreshes of unchanged sessions",
    ),
    "create": ("asgi_dynamo_session.session.creates", "{session}", "New sessions stored"),
    "unavailable": (
        "asgi_dynamo_session.store.unavailable",
        "{response}",
        "Requests answered 503 (websockets closed 1013) because the store failed",
    ),
    "refused": (
        "asgi_dynamo_session.session.refused",
        "{session}",
        "Sessions not saved: too large for an item, or a value that cannot be stored",
    ),
}

try:
    from opentelemetry import metrics, trace
except ImportError:  # pragma: no cover - exercised by the "otel not installed" test
    ENABLED = False
else:
    ENABLED = True

if not ENABLED:

    def count(event: Event) -> None:
        """Count one session event (no-op: opentelemetry-api is not installed)."""

    def traced(send: Send) -> Send:
        """`send` itself: no tracing without opentelemetry-api."""
        return send

else:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    _SCOPE = "asgi_dynamo_session"
    _tracer = trace.get_tracer(_SCOPE)
    _meter = metrics.get_meter(_SCOPE)
    _counters = {
        event: _meter.create_counter(name, unit=unit, description=description)
        for event, (name, unit, description) in COUNTERS.items()
    }

    def count(event: Event) -> None:
        """Count one session event."""
        _counters[event].add(1)

    def traced(send: Send) -> Send:
        """`send(transport, action, params)` wrapped in a CLIENT span named DynamoDB.<action>."""

        @functools.wraps(send)
        async def wrapper(transport: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
            with _tracer.start_as_current_span(
                f"DynamoDB.{action}",
                kind=SpanKind.CLIENT,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                recording = span.is_recording()
                if recording:
                    span.set_attributes(request_attributes(action, params))
                try:
                    result = await send(transport, action, params)
                except Exception as exc:
                    if recording:
                        kind = error_type(exc)
                        span.set_attribute("error.type", kind)
                        span.set_status(Status(StatusCode.ERROR, kind))
                    raise
                if recording:
                    span.set_attributes(response_attributes(result))
                return result

        return wrapper  # type: ignore[return-value]


def request_attributes(action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Span attributes of a request: the operation and table names, never keys or items."""
    table = params.get("TableName")
    requests = params.get("RequestItems")
    transaction = params.get("TransactItems")
    if table is not None:
        tables = [table]
    elif requests is not None:
        tables = list(requests)
    else:  # TransactWriteItems: each part names its table
        parts: list[dict[str, Any]] = [next(iter(p.values()), {}) for p in transaction or ()]
        tables = list(dict.fromkeys(str(part.get("TableName")) for part in parts))
    attributes: dict[str, Any] = {
        "db.system": "dynamodb",
        "db.system.name": "aws.dynamodb",
        "db.operation.name": action,
        "rpc.system": "aws-api",
        "rpc.service": "DynamoDB",
        "rpc.method": action,
        "aws.dynamodb.table_names": tables,
    }
    if len(tables) == 1:
        attributes["db.collection.name"] = tables[0]
    if "ConsistentRead" in params:
        attributes["aws.dynamodb.consistent_read"] = bool(params["ConsistentRead"])
    if "Limit" in params:
        attributes["aws.dynamodb.limit"] = int(params["Limit"])
    if "ProjectionExpression" in params:
        attributes["aws.dynamodb.projection"] = str(params["ProjectionExpression"])
    if requests is not None:  # BatchWriteItem: a list per table; BatchGetItem: {"Keys": [...]}
        attributes["db.operation.batch.size"] = sum(
            len(v["Keys"]) if isinstance(v, dict) else len(v) for v in requests.values()
        )
    elif transaction is not None:
        attributes["db.operation.batch.size"] = len(transaction)
    return attributes


def response_attributes(result: dict[str, Any]) -> dict[str, Any]:
    """Span attributes of an answer: counts and consumed capacity where DynamoDB gives them."""
    attributes: dict[str, Any] = {}
    if "Count" in result:
        attributes["aws.dynamodb.count"] = int(result["Count"])
    if "ScannedCount" in result:
        attributes["aws.dynamodb.scanned_count"] = int(result["ScannedCount"])
    consumed = result.get("ConsumedCapacity")
    if consumed:
        entries = consumed if isinstance(consumed, list) else [consumed]
        attributes["aws.dynamodb.consumed_capacity"] = [json.dumps(e) for e in entries]
    return attributes


_CODE = re.compile(r"failed(?: after [^:]*)?: ([A-Za-z.#]*(?:Exception|Error))\b")


def error_type(exc: BaseException) -> str:
    """The DynamoDB error code where one is known, else the exception's class name."""
    if type(exc).__name__ == "ConditionFailed":
        return "ConditionalCheckFailedException"
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    found = _CODE.search(str(exc))
    if found:
        return found.group(1).rsplit("#", 1)[-1]
    return type(cause or exc).__name__
