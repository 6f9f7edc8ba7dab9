"""OpenTelemetry: one CLIENT span per DynamoDB call, counters of session events, no ids anywhere,
and nothing at all when opentelemetry is not installed. Checked with the SDK's in-memory
exporter and reader, on the real server and each transport."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the test extra installs opentelemetry-sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from support import (
    Clock,
    client_for,
    cookie_of,
    dynamo_store,
    fetch,
    free_port,
    hashed,
    middleware,
    sid,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    OnInactivity,
    Record,
    SessionConflict,
    StoreError,
)

_SPANS = InMemorySpanExporter()
_METRICS = InMemoryMetricReader()


ROOT = Path(__file__).resolve().parent.parent
# the `dynamodb_server` fixture's type (tests/conftest.py; tests/browser has a conftest too, so
# `from conftest import` is ambiguous)
DynamoServer = Any


@pytest.fixture(scope="module", autouse=True)
def _providers() -> None:
    """The SDK providers, set once per process (OpenTelemetry refuses to replace them)."""
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, TracerProvider):
        tracer_provider = TracerProvider()
        trace.set_tracer_provider(tracer_provider)
    tracer_provider.add_span_processor(SimpleSpanProcessor(_SPANS))
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[_METRICS]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _SPANS.clear()
    yield _SPANS


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope and s.instrumentation_scope.name == "asgi_dynamo_session"
    ]


def counters() -> dict[str, int]:
    """Each of our counters' cumulative value now."""
    data = _METRICS.get_metrics_data()
    values: dict[str, int] = {}
    if data is None:
        return values
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "asgi_dynamo_session":
                continue
            for metric in scope.metrics:
                values[metric.name] = int(sum(p.value for p in metric.data.data_points))
    return values


class Counts:
    """Counter increments since the test started."""

    def __init__(self) -> None:
        self.start = counters()

    def delta(self) -> dict[str, int]:
        now = counters()
        changed = {k: v - self.start.get(k, 0) for k, v in now.items()}
        return {k: v for k, v in changed.items() if v}


@pytest.fixture
async def tstore(
    dynamodb_server: DynamoServer, table_name: str, transport: str
) -> AsyncIterator[DynamoDBStore]:
    async with dynamo_store(dynamodb_server.endpoint_url, table_name, transport=transport) as store:
        yield store
        await store.client.delete_table(TableName=table_name)


def _record(session_id: str = "sid-telemetry-test-0123456789") -> Record:
    return Record(
        id=session_id,
        data={"user": "alice"},
        expiry_date=datetime.now(timezone.utc) + timedelta(hours=1),
    )


# -- spans ---------------------------------------------------------------------------------------


async def test_one_client_span_per_dynamodb_call(
    tstore: DynamoDBStore, spans: InMemorySpanExporter, table_name: str
) -> None:
    record = _record()
    await tstore.create(record)
    loaded = await tstore.load(record.id)
    assert loaded is not None
    loaded.data["n"] = 1
    await tstore.save(loaded)
    loaded.expiry_date = datetime.now(timezone.utc) + timedelta(hours=2)
    await tstore.touch(loaded)
    await tstore.delete(record.id)
    assert await tstore.delete_expired() == 0

    got = ours(spans)
    assert [s.name for s in got] == [
        "DynamoDB.PutItem",
        "DynamoDB.GetItem",
        "DynamoDB.PutItem",
        "DynamoDB.UpdateItem",
        "DynamoDB.DeleteItem",
        "DynamoDB.Scan",
    ]
    for span in got:
        attributes = dict(span.attributes or {})
        method = span.name.split(".", 1)[1]
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert attributes["db.system"] == "dynamodb"
        assert attributes["db.system.name"] == "aws.dynamodb"
        assert attributes["rpc.system"] == "aws-api"
        assert attributes["rpc.service"] == "DynamoDB"
        assert attributes["rpc.method"] == method
        assert attributes["db.operation.name"] == method
        assert attributes["aws.dynamodb.table_names"] == (table_name,)
    get = dict(got[1].attributes or {})
    assert get["aws.dynamodb.consistent_read"] is True
    scan = dict(got[-1].attributes or {})
    assert scan["aws.dynamodb.scanned_count"] == 0
    assert scan["aws.dynamodb.count"] == 0
    assert scan["aws.dynamodb.projection"] == "#pk"


async def test_batch_write_span_names_the_table(
    tstore: DynamoDBStore, spans: InMemorySpanExporter, table_name: str
) -> None:
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    wire = await tstore._transport()
    for n in range(3):
        item = tstore.key(f"expired-{n}")
        item[tstore.props.expiry_name] = {"N": str(int(past.timestamp()))}
        await wire.put_item(table_name, item)
    spans.clear()
    assert await tstore.delete_expired() == 3
    scan, batch = ours(spans)
    assert scan.name == "DynamoDB.Scan" and dict(scan.attributes or {})["aws.dynamodb.count"] == 3
    attributes = dict(batch.attributes or {})
    assert batch.name == "DynamoDB.BatchWriteItem"
    assert attributes["aws.dynamodb.table_names"] == (table_name,)
    assert attributes["db.operation.batch.size"] == 3


async def test_no_session_id_in_any_span_attribute(
    dynamodb_server: DynamoServer, table_name: str, transport: str, spans: InMemorySpanExporter
) -> None:
    # hash_ids off: the table keys are the raw ids themselves, the worst case for a leak
    props = DynamoDBStoreProps(table_name=table_name, hash_ids=False)
    async with dynamo_store(
        dynamodb_server.endpoint_url, table_name, transport=transport, props=props
    ) as store:
        record = _record("raw-session-id-that-must-not-leak-0123")
        await store.create(record)
        loaded = await store.load(record.id)
        assert loaded is not None
        with pytest.raises(SessionConflict):
            stale = _record(record.id)
            stale.version = 7
            await store.save(stale)
        await store.delete(record.id)
        await store.client.delete_table(TableName=table_name)
    secrets = (record.id, hashed(record.id), "alice")
    got = ours(spans)
    assert len(got) >= 4
    for span in got:
        texts = [span.name, str(span.status.description)]
        for value in (span.attributes or {}).values():
            texts.extend(map(str, value) if isinstance(value, tuple) else [str(value)])
        for event in span.events:
            texts.extend(str(v) for v in (event.attributes or {}).values())
        for text in texts:
            for secret in secrets:
                assert secret not in text, (span.name, text)


async def test_failed_calls_mark_their_span(
    tstore: DynamoDBStore, spans: InMemorySpanExporter, dynamodb_server: DynamoServer
) -> None:
    record = _record()
    await tstore.create(record)
    stale = _record(record.id)
    stale.version = 41
    with pytest.raises(SessionConflict):
        await tstore.save(stale)
    conflict = next(s for s in ours(spans) if s.status.status_code is StatusCode.ERROR)
    assert conflict.name == "DynamoDB.PutItem"
    assert dict(conflict.attributes or {})["error.type"] == "ConditionalCheckFailedException"

    spans.clear()
    async with dynamo_store(
        f"http://127.0.0.1:{free_port()}", "nowhere", create=False, max_attempts=1
    ) as down:
        with pytest.raises(StoreError):
            await down.load("any-session-id-0123456789")
    (failed,) = ours(spans)
    assert failed.name == "DynamoDB.GetItem"
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"]


def test_transaction_and_batch_get_attributes_name_the_tables_not_the_keys() -> None:
    from asgi_dynamo_session._telemetry import request_attributes

    key = {"session_id": {"S": "SESSIONS::TOWER::secret-key"}}
    transaction = request_attributes(
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"TableName": "Sessions", "Item": key}},
                {"ConditionCheck": {"TableName": "Sessions", "Key": key}},
                {"Update": {"TableName": "Users", "Key": key}},
            ]
        },
    )
    assert transaction["aws.dynamodb.table_names"] == ["Sessions", "Users"]
    assert transaction["db.operation.batch.size"] == 3
    assert "db.collection.name" not in transaction
    batch_get = request_attributes(
        "BatchGetItem", {"RequestItems": {"Sessions": {"Keys": [key, key], "ConsistentRead": True}}}
    )
    assert batch_get["aws.dynamodb.table_names"] == ["Sessions"]
    assert batch_get["db.operation.batch.size"] == 2
    for attributes in (transaction, batch_get):
        assert "secret-key" not in repr(attributes)


# -- counters ------------------------------------------------------------------------------------


async def test_counters_of_session_events(
    tstore: DynamoDBStore, dynamodb_server: DynamoServer
) -> None:
    counts = Counts()
    bumped: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        path = scope["path"]
        if path == "/new":
            session["n"] = 0
        elif path == "/inc":
            if not bumped:  # another request changes another key meanwhile: a merge
                bumped.append(True)
                other = await tstore.load(session.id)
                assert other is not None
                other.data["other"] = True
                await tstore.save(other)
            session["n"] += 1
        elif path == "/big":
            session["blob"] = os.urandom(450_000)  # incompressible: over the item limit
        elif path == "/read":
            session.get("n")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    clock = Clock(time.time())
    wrapped = middleware(
        app,
        tstore,
        expiry=OnInactivity(timedelta(hours=1)),
        touch_after=timedelta(minutes=1),
        clock=clock,
    )
    created = await fetch(wrapped, path="/new")
    cookie = f"id={cookie_of(created)}"
    assert (await fetch(wrapped, cookie, path="/inc")).status_code == 200
    record = await tstore.load(sid(cookie_of(created)))
    assert record is not None and record.data == {"n": 1, "other": True}
    clock.advance(120)
    assert (await fetch(wrapped, cookie, path="/read")).status_code == 200  # a touch
    assert (await fetch(wrapped, cookie, path="/big")).status_code == 500  # refused
    down = DynamoDBStore(
        props=tstore.props, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1
    )
    async with client_for(middleware(app, down)) as client:
        answer = await client.get("/read", headers={"cookie": cookie})
    assert answer.status_code == 503
    await down.close()

    assert counts.delta() == {
        "asgi_dynamo_session.session.creates": 1,
        # /inc, /read, /big load; the merge's extra load is the test's own store call
        "asgi_dynamo_session.session.loads": 3,
        "asgi_dynamo_session.session.saves": 1,
        "asgi_dynamo_session.session.conflicts_merged": 1,
        "asgi_dynamo_session.session.touches": 1,
        "asgi_dynamo_session.session.refused": 1,
        "asgi_dynamo_session.store.unavailable": 1,
    }


# -- without opentelemetry -----------------------------------------------------------------------

_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed: importing it raises ImportError
from asgi_dynamo_session import _telemetry
from asgi_dynamo_session._transport import AioBotocoreTransport, RequestTransport

assert _telemetry.ENABLED is False

async def send(transport, action, params):
    return {}

assert _telemetry.traced(send) is send
assert _telemetry.count("load") is None

async def request(self, action, params):
    return {}

class Wire(RequestTransport):
    _request = request

assert Wire.__dict__["_request"] is request
assert not hasattr(AioBotocoreTransport._request, "__wrapped__")
print("no-op")
"""


def test_without_opentelemetry_everything_is_a_no_op() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no-op"


def test_with_opentelemetry_the_transport_is_wrapped() -> None:
    from asgi_dynamo_session import _telemetry
    from asgi_dynamo_session._transport import AioBotocoreTransport

    assert _telemetry.ENABLED is True
    assert hasattr(AioBotocoreTransport._request, "__wrapped__")
