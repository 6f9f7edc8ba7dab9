"""`Session` as a dict, its modified/accessed tracking, cycle_id, explicit save, get_session;
and MemoryStore parity with DynamoDBStore on the basics (same scenarios, both stores)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from support import (
    EXPIRED_COOKIE,
    Clock,
    CountingStore,
    app_doing,
    at,
    fetch,
    key_of,
    middleware,
    plain_data_of,
    read_item,
    scan_all,
    signed,
)

from asgi_dynamo_session import (
    DynamoDBStore,
    DynamoDBStoreProps,
    MemoryStore,
    OnInactivity,
    Record,
    Session,
    SessionConflict,
    SessionError,
    SessionStore,
    StoreError,
    get_session,
)
from asgi_dynamo_session.session import Snapshot

TWO_WEEKS = 14 * 24 * 3600
FLAGS = "; Path=/; HttpOnly; Secure; SameSite=Lax"


# --- Session on its own -----------------------------------------------------------------------


def test_session_is_a_dict() -> None:
    session = Session({"user": "ada", "n": [1, 2]})
    assert isinstance(session, dict)
    assert session == {"user": "ada", "n": [1, 2]}
    assert json.dumps(session, sort_keys=True) == '{"n": [1, 2], "user": "ada"}'
    assert dict(session) == {"user": "ada", "n": [1, 2]}
    assert {**session} == {"user": "ada", "n": [1, 2]}
    assert session.copy() == {"user": "ada", "n": [1, 2]} and type(session.copy()) is dict
    assert repr(session) == "Session({'user': 'ada', 'n': [1, 2]})"
    session |= {"extra": True}
    assert session["extra"] is True
    assert session.id is None


def test_fresh_session_flags() -> None:
    session = Session()
    assert not session.accessed
    assert not session.modified
    assert session.expiry is None
    assert session.expiry_date is None  # outside a middleware


READS: dict[str, Callable[[Session], Any]] = {
    "getitem": lambda s: s["a"],
    "get": lambda s: s.get("a"),
    "contains": lambda s: "a" in s,
    "iter": lambda s: list(s),
    "len": lambda s: len(s),
    "keys": lambda s: s.keys(),
    "values": lambda s: s.values(),
    "items": lambda s: s.items(),
    "copy": lambda s: s.copy(),
    "mark_accessed": lambda s: s.mark_accessed(),
    "pop-missing": lambda s: s.pop("missing", None),
    "setdefault-present": lambda s: s.setdefault("a", 5),
}
WRITES: dict[str, Callable[[Session], Any]] = {
    "setitem": lambda s: s.__setitem__("b", 2),
    "delitem": lambda s: s.__delitem__("a"),
    "pop": lambda s: s.pop("a"),
    "popitem": lambda s: s.popitem(),
    "setdefault": lambda s: s.setdefault("b", 2),
    "update": lambda s: s.update(b=2),
    "clear": lambda s: s.clear(),
    "flush": lambda s: s.flush(),
    "cycle_id": lambda s: s.cycle_id(),
    "set_expiry": lambda s: s.set_expiry(OnInactivity(timedelta(hours=1))),
}


def loaded(data: dict[str, Any]) -> Snapshot:
    return Snapshot("x" * 43, msgspec.msgpack.encode(data), 1, None, at(0), None)


@pytest.mark.parametrize("name", list(READS))
def test_reads_mark_accessed_but_not_modified(name: str) -> None:
    session = Session({"a": 1})
    session._loaded = loaded({"a": 1})  # as loaded by the middleware
    READS[name](session)
    assert session.accessed
    assert not session.modified


@pytest.mark.parametrize("name", list(WRITES))
def test_writes_mark_accessed_and_modified(name: str) -> None:
    session = Session({"a": 1})
    session._loaded = loaded({"a": 1})
    WRITES[name](session)
    assert session.accessed
    assert session.modified


def test_pop_without_default_raises_like_a_dict() -> None:
    with pytest.raises(KeyError):
        Session().pop("missing")


async def test_save_outside_a_middleware_is_an_error() -> None:
    with pytest.raises(SessionError, match="SessionMiddleware"):
        await Session({"a": 1}).save()


def test_get_session() -> None:
    session = Session()
    scope = {"type": "http", "session": session}
    assert get_session(scope) is session

    class Request:
        def __init__(self, scope: dict[str, Any]) -> None:
            self.scope = scope

    assert get_session(Request(scope)) is session
    with pytest.raises(SessionError, match="SessionMiddleware"):
        get_session({"type": "http"})
    with pytest.raises(SessionError):
        get_session({"type": "http", "session": {"a": 1}})  # a plain dict is not ours
    with pytest.raises(TypeError):
        get_session(object())


# --- stores: DynamoDB and in-memory side by side ----------------------------------------------


@pytest.fixture(params=["dynamodb", "memory"])
def any_store(request: pytest.FixtureRequest, clock: Clock) -> Any:
    """`dstore`, or a MemoryStore on the same clock."""
    if request.param == "memory":
        return MemoryStore(clock=clock)
    return request.getfixturevalue("dstore")


async def request(app: Any, sid: str | None = None) -> httpx.Response:
    return await fetch(app, None if sid is None else f"id={signed(sid)}")


def new_sid(response: httpx.Response) -> str:
    (header,) = response.headers.get_list("set-cookie")
    sid, _ = header.split("=", 1)[1].split(".", 1)
    assert header == f"id={signed(sid)}{FLAGS}"
    return sid


class Harness:
    def __init__(self, store: Any, clock: Clock) -> None:
        self.store = CountingStore(store)
        self.clock = clock

    def app(self, action: Callable[[Session], Any], **options: Any) -> Any:
        return middleware(app_doing(action), self.store, clock=self.clock, **options)

    async def start(self, data: dict[str, Any]) -> str:
        sid = new_sid(await request(self.app(lambda s: s.update(data))))
        self.store.calls.clear()
        return sid

    async def read(self, sid: str) -> tuple[str | None, dict[str, Any]]:
        seen: list[tuple[str | None, dict[str, Any]]] = []
        await request(self.app(lambda s: seen.append((s.id, dict(s.items())))), sid)
        return seen[0]


async def test_parity_new_session_read_and_read_only(any_store: Any, clock: Clock) -> None:
    h = Harness(any_store, clock)
    response = await request(h.app(lambda s: s.update(user="ada")))
    sid = new_sid(response)
    assert h.store.calls == {"create": 1}
    h.store.calls.clear()
    assert await h.read(sid) == (sid, {"user": "ada"})
    assert h.store.calls == {"load": 1}


async def test_parity_untouched_without_cookie(any_store: Any, clock: Clock) -> None:
    h = Harness(any_store, clock)
    response = await request(h.app(lambda s: None))
    assert h.store.calls == {}
    assert response.headers.get_list("set-cookie") == []


async def test_parity_change_clear_and_expiry(any_store: Any, clock: Clock) -> None:
    h = Harness(any_store, clock)
    sid = await h.start({"user": "ada"})
    response = await request(h.app(lambda s: s.update(n=1)), sid)
    assert h.store.calls == {"load": 1, "save": 1}
    assert response.headers.get_list("set-cookie") == [f"id={signed(sid)}{FLAGS}"]
    assert await h.read(sid) == (sid, {"user": "ada", "n": 1})

    response = await request(h.app(lambda s: s.clear()), sid)
    assert response.headers.get_list("set-cookie") == [EXPIRED_COOKIE]
    assert await h.read(sid) == (None, {})
    assert await any_store.load(sid) is None

    other = await h.start({"user": "bob"})
    clock.advance(TWO_WEEKS)
    assert await h.read(other) == (None, {})


async def test_parity_store_semantics(any_store: Any, clock: Clock) -> None:
    assert isinstance(any_store, SessionStore)
    first = Record(id=secrets.token_urlsafe(32), data={"n": 1}, expiry_date=at(clock.now + 60))
    await any_store.create(first)
    assert first.version == 1

    clash = Record(id=first.id, data={"n": 2}, expiry_date=at(clock.now + 60))
    await any_store.create(clash)
    assert clash.id != first.id and clash.version == 1
    loaded = await any_store.load(first.id)
    assert loaded is not None and (loaded.data, loaded.version) == ({"n": 1}, 1)

    loaded.data["n"] = 10
    await any_store.save(loaded)
    assert loaded.version == 2
    again = await any_store.load(first.id)
    assert again is not None and (again.data, again.version) == ({"n": 10}, 2)

    stale = Record(id=first.id, data={"n": 0}, expiry_date=at(clock.now + 60), version=1)
    with pytest.raises(SessionConflict) as caught:
        await any_store.save(stale)
    assert caught.value.current is not None and caught.value.current.data == {"n": 10}

    await any_store.touch(Record(id=first.id, data={}, expiry_date=at(clock.now + 120), version=2))
    clock.advance(100)
    assert await any_store.load(first.id) is not None  # the touch extended it
    assert await any_store.load(clash.id) is None  # expired
    with pytest.raises(SessionConflict) as caught:
        await any_store.touch(Record(id=clash.id, data={}, expiry_date=at(clock.now + 120)))
    assert caught.value.current is None
    assert await any_store.take(clash.id) is None
    reborn = Record(id=clash.id, data={"n": 3}, expiry_date=at(clock.now + 60))
    await any_store.create(reborn)
    assert reborn.id == clash.id  # an expired id is free again

    taken = await any_store.take(first.id)
    assert taken is not None and (taken.data, taken.version) == ({"n": 10}, 2)
    assert await any_store.take(first.id) is None
    with pytest.raises(SessionConflict) as caught:
        await any_store.save(again)
    assert caught.value.current is None
    assert await any_store.load(first.id) is None
    await any_store.delete(reborn.id)
    assert await any_store.load(reborn.id) is None


async def test_parity_create_retries_exhausted(clock: Clock, raw: Any, table_name: str) -> None:
    memory = MemoryStore(clock=clock, create_key_max_retry_attempts=0)
    dynamo = DynamoDBStore(
        raw,
        DynamoDBStoreProps(table_name=table_name, create_key_max_retry_attempts=0),
        clock=clock,
    )
    await dynamo.create_table()
    try:
        for store in (memory, dynamo):
            taken = Record(id=secrets.token_urlsafe(32), data={}, expiry_date=at(clock.now + 60))
            await store.create(taken)
            with pytest.raises(StoreError):
                await store.create(
                    Record(id=taken.id, data={"x": 1}, expiry_date=at(clock.now + 60))
                )
    finally:
        await raw.delete_table(TableName=table_name)


# --- Session through the middleware on DynamoDB -----------------------------------------------


@pytest.fixture
def h(dstore: DynamoDBStore, clock: Clock) -> Harness:
    return Harness(dstore, clock)


async def stored(raw: Any, dstore: DynamoDBStore, sid: str) -> dict[str, Any] | None:
    return await read_item(raw, dstore.props.table_name, key_of(sid))


async def test_nested_mutation_is_detected_and_saved(
    h: Harness, raw: Any, dstore: DynamoDBStore
) -> None:
    sid = await h.start({"cart": {"items": [1]}, "user": "ada"})
    flags: list[Any] = []

    def action(session: Session) -> None:
        flags.append(session.modified)
        session["cart"]["items"].append(2)  # only a nested list changes
        flags.append(session.modified)

    response = await request(h.app(action), sid)
    assert flags == [False, True]
    assert h.store.calls == {"load": 1, "save": 1}
    assert response.headers.get_list("set-cookie") == [f"id={signed(sid)}{FLAGS}"]
    item = await stored(raw, dstore, sid)
    assert plain_data_of(item) == {"cart": {"items": [1, 2]}, "user": "ada"}
    assert item is not None and item["version"] == {"N": "2"}


@pytest.mark.parametrize(
    "action",
    [
        lambda s: s["cart"]["items"][0],
        lambda s: s.__setitem__("user", "ada"),
        lambda s: s.update({"cart": {"items": [1]}}),
        lambda s: s["cart"]["items"].append(2) or s["cart"]["items"].pop(),
    ],
    ids=["nested-read", "same-value", "same-update", "undone-change"],
)
async def test_no_net_change_writes_nothing(
    h: Harness, raw: Any, dstore: DynamoDBStore, action: Callable[[Session], Any]
) -> None:
    sid = await h.start({"cart": {"items": [1]}, "user": "ada"})
    before = await stored(raw, dstore, sid)
    modified: list[bool] = []
    response = await request(h.app(lambda s: (action(s), modified.append(s.modified))), sid)
    assert modified == [False]
    assert h.store.calls == {"load": 1}
    assert response.headers.get_list("set-cookie") == []
    assert response.headers["vary"] == "Cookie"
    assert await stored(raw, dstore, sid) == before


async def test_accessed_tracks_reads_in_the_app(h: Harness) -> None:
    sid = await h.start({"user": "ada"})
    flags: list[bool] = []

    def action(session: Session) -> None:
        flags.append(session.accessed)
        session.get("user")
        flags.append(session.accessed)

    response = await request(h.app(action), sid)
    assert flags == [False, True]
    assert response.headers["vary"] == "Cookie"


async def test_cycle_id_moves_the_data_to_a_new_id(
    h: Harness, raw: Any, dstore: DynamoDBStore
) -> None:
    sid = await h.start({"user": "anonymous", "cart": [1]})
    created = (await stored(raw, dstore, sid) or {})["created_at"]
    h.clock.advance(60)

    def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"

    response = await request(h.app(login), sid)
    new = new_sid(response)
    assert new != sid
    assert await stored(raw, dstore, sid) is None
    item = await stored(raw, dstore, new)
    assert plain_data_of(item) == {"user": "ada", "cart": [1]}
    assert item is not None
    assert item["created_at"] == created  # the session's age survives the new id
    assert item["expire_at"] == {"N": str(int(h.clock.now) + TWO_WEEKS)}
    assert len(await scan_all(raw, dstore.props.table_name)) == 1
    assert h.store.calls == {"load": 1, "create": 1, "take": 1, "delete": 1}
    assert await h.read(sid) == (None, {})
    assert await h.read(new) == (new, {"user": "ada", "cart": [1]})


async def test_cycle_id_keeps_unchanged_data(h: Harness, raw: Any, dstore: DynamoDBStore) -> None:
    sid = await h.start({"user": "ada"})
    new = new_sid(await request(h.app(lambda s: s.cycle_id()), sid))
    assert new != sid
    assert await stored(raw, dstore, sid) is None
    assert plain_data_of(await stored(raw, dstore, new)) == {"user": "ada"}


async def test_cycle_id_of_a_new_session_just_creates(
    h: Harness, raw: Any, dstore: DynamoDBStore
) -> None:
    def action(session: Session) -> None:
        session["user"] = "ada"
        session.cycle_id()

    sid = new_sid(await request(h.app(action)))
    assert h.store.calls == {"create": 1}
    assert plain_data_of(await stored(raw, dstore, sid)) == {"user": "ada"}


async def test_explicit_save_persists_before_the_response(
    h: Harness, raw: Any, dstore: DynamoDBStore
) -> None:
    during: list[Any] = []

    async def action(session: Session) -> None:
        session["user"] = "ada"
        await session.save()
        during.append((session.id, dict(h.store.calls)))
        during.append(plain_data_of(await stored(raw, dstore, session.id or "")))

    response = await request(h.app(action))
    sid = new_sid(response)  # the id created by save() still reaches the browser
    assert during == [(sid, {"create": 1}), {"user": "ada"}]
    assert h.store.calls == {"create": 1}  # nothing left to write at response start


async def test_explicit_save_then_more_changes(h: Harness, raw: Any, dstore: DynamoDBStore) -> None:
    sid = await h.start({"n": 0})

    async def action(session: Session) -> None:
        session["n"] = 1
        await session.save()
        session["n"] = 2

    response = await request(h.app(action), sid)
    assert h.store.calls == {"load": 1, "save": 2}
    assert response.headers.get_list("set-cookie") == [f"id={signed(sid)}{FLAGS}"]
    item = await stored(raw, dstore, sid)
    assert plain_data_of(item) == {"n": 2}
    assert item is not None and item["version"] == {"N": "3"}


async def test_session_id_is_the_cookie_id(h: Harness) -> None:
    ids: list[Any] = []
    response = await request(h.app(lambda s: (ids.append(s.id), s.update(a=1))))
    sid = new_sid(response)
    assert ids == [None]
    assert await h.read(sid) == (sid, {"a": 1})


async def test_expiry_date_in_the_app(h: Harness) -> None:
    seen: list[Any] = []
    await request(h.app(lambda s: seen.append(s.expiry_date)))
    await request(
        h.app(lambda s: seen.append(s.expiry_date), expiry=OnInactivity(timedelta(hours=3)))
    )
    assert seen == [at(h.clock.now + TWO_WEEKS), at(h.clock.now + 3 * 3600)]
