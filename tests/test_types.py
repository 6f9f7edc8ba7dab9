"""What you store is what you get back (issue 10): every type the contract lists, nested, and
the classes given in `types=`, stored on one request and read on the next through the middleware
and a real server; unregistered classes refused at save; stored values naming a class that is not
registered left out (logged), never instantiated."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest
from support import (
    SECRET,
    Clock,
    cookie_of,
    data_of,
    fetch,
    item_of,
    key_of,
    middleware,
    read_item,
    running,
    scan_all,
    sid,
)
from test_codec import same

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, MemoryStore, SessionMiddleware
from asgi_dynamo_session.codec import Codec

pytestmark = pytest.mark.usefixtures("library_logs")

UTC = timezone.utc


@dataclass
class Point:
    x: int
    y: int
    tags: tuple[str, ...] = ()
    seen: set[str] = field(default_factory=set, init=False)


class Line(msgspec.Struct):
    start: Point
    end: Point
    label: str | None = None


class Cart(msgspec.Struct):
    items: list[tuple[str, int]]
    total: Decimal
    updated: datetime


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


@dataclass
class Counted:
    """Counts its instances: a class that must never be built from stored bytes."""

    built: ClassVar[int] = 0
    n: int

    def __post_init__(self) -> None:
        Counted.built += 1


TYPES = [Point, Line, Cart, Role, Level, Perm]

LINE = Line(Point(0, 0), Point(3, 4, ("end",)), "hypotenuse")

VALUES: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": -(2**63),
    "uint64": 2**64 - 1,
    "float": 0.1,
    "str": "caf\u00e9",
    "bytes": b"\x00\xff",
    "list": [1, [2, [3]]],
    "tuple": (1, ("a", b"b")),
    "set": {3, 1, 2},
    "frozenset": frozenset({"a", "b"}),
    "dict": {"a": {"b": 1}, "n": {1: "int key", (1, 2): "tuple key"}},
    "datetime_aware": datetime(2027, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-8))),
    "datetime_utc": datetime(2027, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "datetime_naive": datetime(2027, 1, 2, 3, 4, 5, 6),
    "datetime_zone": datetime(2027, 7, 1, 9, 0, tzinfo=ZoneInfo("America/New_York")),
    "date": date(2027, 12, 31),
    "time": time(8, 30),
    "timedelta": timedelta(hours=36, microseconds=1),
    "decimal": Decimal("10.500"),
    "uuid": UUID("0f0e0d0c-0b0a-0908-0706-050403020100"),
    "nested": {
        "when": [(date(2027, 1, 1), time(0, 0)), {timedelta(0)}],
        "money": {Decimal("1.00"): frozenset({UUID(int=7)})},
    },
    "dataclass": Point(1, 2, ("a",)),
    "struct": LINE,
    "struct_of_values": Cart([("sku", 2)], Decimal("9.90"), datetime(2027, 5, 5, 5, 5)),
    "enum": Role.ADMIN,
    "int_enum": Level.HIGH,
    "flag": Perm.READ | Perm.WRITE,
    "typed_nested": {"roles": (Role.USER, Role.ADMIN), "shapes": [LINE, {Level.LOW}]},
}


def recorder(seen: list[dict[str, Any]], change: dict[str, Any] | None = None) -> Any:
    """An ASGI app that records the session as it finds it, then applies `change`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        seen.append(dict(session.items()))
        if change:
            session.update(change)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


# --- round trips through the middleware -------------------------------------------------------


@pytest.mark.parametrize("key", list(VALUES))
async def test_each_value_comes_back_as_itself_on_the_next_request(
    dstore: DynamoDBStore, clock: Clock, key: str
) -> None:
    seen: list[dict[str, Any]] = []
    first = await fetch(
        middleware(recorder(seen, {key: VALUES[key]}), dstore, types=TYPES, clock=clock)
    )
    cookie = cookie_of(first)
    await fetch(middleware(recorder(seen), dstore, types=TYPES, clock=clock), f"id={cookie}")
    assert seen[0] == {}
    same({key: VALUES[key]}, seen[1])


async def test_everything_together_over_http_with_uvicorn(
    dynamodb_server: Any, table_name: str
) -> None:
    """Through a real HTTP server and the store's own transport: one request stores every
    value, the next (a new connection) reads them all back exactly."""
    seen: list[dict[str, Any]] = []
    store = DynamoDBStore(
        props=DynamoDBStoreProps(table_name=table_name),
        endpoint_url=dynamodb_server.endpoint_url,
        region_name="us-east-1",
    )
    async with store:
        await store.create_table()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            session = scope["session"]
            seen.append(dict(session.items()))
            if scope["path"] == "/set":
                session.update(VALUES)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        wrapped = SessionMiddleware(app, store=store, secret_keys=SECRET, types=TYPES)
        async with running(wrapped) as base:
            async with httpx.AsyncClient(base_url=base) as client:
                response = await client.get("/set")
                cookie = cookie_of(response)
            async with httpx.AsyncClient(base_url=base) as client:
                response = await client.get("/get", headers={"cookie": f"id={cookie}"})
                assert response.status_code == 200
    same(VALUES, seen[1])


async def test_reading_typed_values_is_not_a_change(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    first = await fetch(middleware(recorder([], VALUES), dstore, types=TYPES, clock=clock))
    cookie = cookie_of(first)
    before = await item_of(raw, dstore, cookie)
    second = await fetch(middleware(recorder([]), dstore, types=TYPES, clock=clock), f"id={cookie}")
    assert second.headers.get_list("set-cookie") == []
    assert await item_of(raw, dstore, cookie) == before  # version unchanged: nothing written


async def test_a_nested_change_inside_a_registered_class_is_saved(
    dstore: DynamoDBStore, clock: Clock
) -> None:
    first = await fetch(
        middleware(recorder([], {"p": Point(1, 2)}), dstore, types=TYPES, clock=clock)
    )
    cookie = cookie_of(first)

    async def mutate(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["session"]["p"].seen.add("home")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    await fetch(middleware(mutate, dstore, types=TYPES, clock=clock), f"id={cookie}")
    seen: list[dict[str, Any]] = []
    await fetch(middleware(recorder(seen), dstore, types=TYPES, clock=clock), f"id={cookie}")
    assert seen[0]["p"].seen == {"home"}


async def test_memory_store_round_trips_the_same(clock: Clock) -> None:
    store = MemoryStore(clock=clock)
    seen: list[dict[str, Any]] = []
    first = await fetch(middleware(recorder(seen, VALUES), store, types=TYPES, clock=clock))
    await fetch(
        middleware(recorder(seen), store, types=TYPES, clock=clock), f"id={cookie_of(first)}"
    )
    same(VALUES, seen[1])


# --- names ------------------------------------------------------------------------------------


async def test_a_listed_class_is_stored_under_its_qualname_not_its_module(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    response = await fetch(
        middleware(recorder([], {"line": LINE}), dstore, types=TYPES, clock=clock)
    )
    item = await item_of(raw, dstore, cookie_of(response))
    assert item is not None
    stored = bytes(item["data"]["B"])
    assert b"Line" in stored and b"Point" in stored
    assert b"test_types" not in stored and b"tests." not in stored


@dataclass
class OldPoint:
    x: int
    y: int


@dataclass
class RenamedPoint:
    x: int
    y: int


async def test_a_class_renamed_under_its_registered_name_still_loads(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    writer = middleware(
        recorder([], {"p": OldPoint(5, 6)}), dstore, types={"point": OldPoint}, clock=clock
    )
    cookie = cookie_of(await fetch(writer))
    item = await item_of(raw, dstore, cookie)
    assert item is not None and b"point" in bytes(item["data"]["B"])
    assert b"OldPoint" not in bytes(item["data"]["B"])
    # A new deployment: the class was renamed (and moved); it keeps its registered name.
    reader_store = DynamoDBStore(raw, dstore.props, clock=clock)
    seen: list[dict[str, Any]] = []
    await fetch(
        middleware(recorder(seen), reader_store, types={"point": RenamedPoint}, clock=clock),
        f"id={cookie}",
    )
    same({"p": RenamedPoint(5, 6)}, seen[0])


# --- refused at save --------------------------------------------------------------------------


class Stranger:
    pass


@dataclass
class Unlisted:
    x: int


class UnlistedStruct(msgspec.Struct):
    x: int


class Colour(enum.Enum):
    RED = 1


class Text(str):
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Stranger(), "Stranger"),
        (Unlisted(1), "Unlisted"),  # msgspec would encode it (as a map)
        (UnlistedStruct(1), "UnlistedStruct"),  # likewise
        (Colour.RED, "Colour"),  # likewise (as its value)
        ([{"deep": (Unlisted(2),)}], "Unlisted"),
        (OrderedDict(a=1), "OrderedDict"),  # a dict subclass would come back as a dict
        (Text("hi"), "Text"),
        (complex(1, 1), "complex"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
async def test_an_unregistered_class_is_refused_at_save(
    dstore: DynamoDBStore,
    raw: Any,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    value: Any,
    type_name: str,
) -> None:
    response = await fetch(
        middleware(recorder([], {"ok": 1, "bad": value}), dstore, types=TYPES, clock=clock)
    )
    assert response.status_code == 500
    assert response.content == b"Session data cannot be stored\n"
    assert response.headers.get_list("set-cookie") == []
    assert await scan_all(raw, dstore.props.table_name) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("'bad'" in m and type_name in m and "'ok'" not in m for m in errors), errors


async def test_an_explicit_save_raises_type_error_naming_key_and_type(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    caught: list[TypeError] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        session["cart"] = Unlisted(3)
        try:
            await session.save()
        except TypeError as exc:
            caught.append(exc)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    response = await fetch(middleware(app, dstore, types=TYPES, clock=clock))
    (error,) = caught
    assert "'cart'" in str(error) and "Unlisted" in str(error) and "types=" in str(error)
    assert response.status_code == 500  # still unstorable at response start
    assert await scan_all(raw, dstore.props.table_name) == []


# --- stored values naming a class that is not registered --------------------------------------


async def test_a_stored_value_naming_an_unregistered_class_is_left_out_never_built(
    dstore: DynamoDBStore, raw: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Documented choice: the session loads without that key (WARNING logged, naming key and
    type); nothing of it is instantiated; the next save stores the session without it."""
    writer = middleware(
        recorder([], {"keep": (1, 2), "counted": Counted(1), "nested": [Counted(2)]}),
        dstore,
        types=[Counted],
        clock=clock,
    )
    cookie = cookie_of(await fetch(writer))
    built = Counted.built
    # Another deployment that no longer registers Counted (its own store on the same table).
    reader_store = DynamoDBStore(raw, dstore.props, clock=clock)
    seen: list[dict[str, Any]] = []
    reader = middleware(recorder(seen), reader_store, types=[Point], clock=clock)
    response = await fetch(reader, f"id={cookie}")
    assert response.status_code == 200
    same({"keep": (1, 2)}, seen[0])
    assert Counted.built == built  # never instantiated
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in ("'counted'", "'nested'"):
        assert any(key in m and "'Counted'" in m and "types=" in m for m in warnings), warnings
    assert all(sid(cookie) not in m for m in warnings)
    # Only reading is not a change: the stored item still holds the value...
    item = await item_of(raw, dstore, cookie)
    assert item is not None and b"Counted" in bytes(item["data"]["B"])
    # ...and a save from this deployment writes the session without it.
    writer_again = middleware(recorder([], {"more": 1}), reader_store, types=[Point], clock=clock)
    await fetch(writer_again, f"id={cookie}")
    item = await item_of(raw, dstore, cookie)
    assert item is not None
    assert data_of_typed(item, [Point]) == {"keep": (1, 2), "more": 1}


@dataclass
class PointV2:
    x: int
    y: int
    z: int  # a new field without a default: old values no longer build


async def test_a_registered_class_that_no_longer_builds_is_left_out(
    dstore: DynamoDBStore, raw: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    writer = middleware(
        recorder([], {"p": OldPoint(1, 2), "k": 1}), dstore, types={"pt": OldPoint}, clock=clock
    )
    cookie = cookie_of(await fetch(writer))
    reader_store = DynamoDBStore(raw, dstore.props, clock=clock)
    seen: list[dict[str, Any]] = []
    await fetch(
        middleware(recorder(seen), reader_store, types={"pt": PointV2}, clock=clock),
        f"id={cookie}",
    )
    assert seen == [{"k": 1}]
    assert any("'p'" in r.getMessage() and "'pt'" in r.getMessage() for r in caplog.records)


def data_of_typed(item: dict[str, Any], types: list[type]) -> dict[str, Any]:
    return Codec(types).unpack(data_of_packed(item))


def data_of_packed(item: dict[str, Any]) -> bytes:
    from asgi_dynamo_session import codec

    return codec.decode(item["data"]["B"])


async def test_a_plain_item_reads_the_same_with_types_registered(
    dstore: DynamoDBStore, raw: Any, clock: Clock
) -> None:
    """Items written before types= existed (plain MessagePack) load unchanged."""
    session_id = "p" * 43
    await raw.put_item(
        TableName=dstore.props.table_name,
        Item={
            **key_of(session_id),
            "expire_at": {"N": str(int(clock()) + 3600)},
            "data": {"B": b"\x01" + msgspec.msgpack.encode({"user": "ada", "n": [1]})},
        },
    )
    from support import signed

    seen: list[dict[str, Any]] = []
    await fetch(
        middleware(recorder(seen), dstore, types=TYPES, clock=clock), f"id={signed(session_id)}"
    )
    assert seen == [{"user": "ada", "n": [1]}]
    item = await read_item(raw, dstore.props.table_name, key_of(session_id))
    assert item is not None and data_of(item) == {"user": "ada", "n": [1]}


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "error", "match"),
    [
        ([Stranger], TypeError, "Stranger is none of them"),
        ([42], TypeError, "takes classes"),
        ([Point, Point], ValueError, "twice"),
        ({"a": Point, "b": Point}, ValueError, "twice"),
        ({"": Point}, ValueError, "non-empty"),
        ([Point, type("Point", (Unlisted,), {})], ValueError, "share the name 'Point'"),
    ],
    ids=["not-supported", "not-a-class", "twice", "twice-named", "empty-name", "same-name"],
)
def test_bad_types_are_refused_at_construction(
    types: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        SessionMiddleware(recorder([]), store=MemoryStore(), secret_keys=SECRET, types=types)


def test_one_store_cannot_serve_two_different_registries() -> None:
    store = MemoryStore()
    SessionMiddleware(recorder([]), store=store, secret_keys=SECRET, types=[Point])
    SessionMiddleware(recorder([]), store=store, secret_keys=SECRET, types=[Point])  # same: fine
    SessionMiddleware(recorder([]), store=store, secret_keys=SECRET)  # none: fine
    with pytest.raises(ValueError, match="own store"):
        SessionMiddleware(recorder([]), store=store, secret_keys=SECRET, types=[Line, Point])


# --- the README ---------------------------------------------------------------------------------


def readme_snippet(marker: str) -> str:
    from test_readme import SNIPPETS

    (snippet,) = [s for s in SNIPPETS if marker in s]
    return snippet


async def test_the_readme_example_of_what_you_can_store_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet("types=[Cart, Role, Address]"), "README", "exec"), namespace)
    for name in ("app", "named"):
        app = namespace[name]
        first = await fetch(app)
        assert first.status_code == 200
        second = await fetch(app, f"id={cookie_of(first)}")
        assert second.status_code == 200  # the snippet's own assertions held
    assert namespace["named"].codec.types == {"cart": namespace["Cart"], "role": namespace["Role"]}


class Other(enum.IntEnum):
    ONE = 1


async def test_int_enums_of_two_classes_with_equal_values_stay_apart(
    dstore: DynamoDBStore, clock: Clock
) -> None:
    """`Level.LOW == Other.ONE` (both are 1), yet each comes back as its own class."""
    data = {"a": Level.LOW, "b": Other.ONE, "c": [Other.ONE, Level.LOW], "d": 1}
    seen: list[dict[str, Any]] = []
    first = await fetch(middleware(recorder([], data), dstore, types=[Level, Other], clock=clock))
    await fetch(
        middleware(recorder(seen), dstore, types=[Level, Other], clock=clock),
        f"id={cookie_of(first)}",
    )
    same(data, seen[0])
    assert seen[0]["c"][0] is Other.ONE and seen[0]["c"][1] is Level.LOW


async def test_typed_values_survive_cycle_id_and_a_merged_save(
    dstore: DynamoDBStore, clock: Clock
) -> None:
    """The id cycle at login and a save merged after a lost race re-encode the data: with the
    middleware's registered types too."""
    first = await fetch(middleware(recorder([], {"cart": LINE}), dstore, types=TYPES, clock=clock))
    cookie = cookie_of(first)

    async def login(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        session["role"] = Role.ADMIN
        session.cycle_id()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    response = await fetch(middleware(login, dstore, types=TYPES, clock=clock), f"id={cookie}")
    assert response.status_code == 200
    cycled = cookie_of(response)
    assert sid(cycled) != sid(cookie)
    seen: list[dict[str, Any]] = []
    await fetch(middleware(recorder(seen), dstore, types=TYPES, clock=clock), f"id={cycled}")
    same({"cart": LINE, "role": Role.ADMIN}, seen[0])

    # Two requests load the same version; the second to save merges onto the first's write.
    gate = asyncio.Event()
    loaded = asyncio.Event()

    def writer(key: str, value: Any, wait: bool) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            session = scope["session"]
            session[key] = value
            if wait:
                loaded.set()
                await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        return middleware(app, dstore, types=TYPES, clock=clock)

    slow = asyncio.create_task(fetch(writer("level", Level.HIGH, True), f"id={cycled}"))
    await loaded.wait()
    fast = await fetch(writer("perm", Perm.READ, False), f"id={cycled}")
    gate.set()
    assert fast.status_code == 200 and (await slow).status_code == 200
    seen.clear()
    await fetch(middleware(recorder(seen), dstore, types=TYPES, clock=clock), f"id={cycled}")
    same(
        {"cart": LINE, "role": Role.ADMIN, "level": Level.HIGH, "perm": Perm.READ},
        dict(
            sorted(seen[0].items(), key=lambda kv: ["cart", "role", "level", "perm"].index(kv[0]))
        ),
    )


async def test_a_change_after_the_response_started_is_still_saved(
    dstore: DynamoDBStore, clock: Clock
) -> None:
    """A read-only start, then a nested change (through a reference taken before the start) and
    a typed value while the body streams: both stored by the late save."""
    first = await fetch(middleware(recorder([], {"cart": {"n": 1}}), dstore, clock=clock))
    cookie = cookie_of(first)

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        cart = scope["session"]["cart"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        cart["n"] = 2
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        scope["session"]["when"] = date(2027, 1, 1)
        await send({"type": "http.response.body", "body": b"b"})

    await fetch(middleware(streaming, dstore, clock=clock), f"id={cookie}")
    seen: list[dict[str, Any]] = []
    await fetch(middleware(recorder(seen), dstore, clock=clock), f"id={cookie}")
    same({"cart": {"n": 2}, "when": date(2027, 1, 1)}, seen[0])
