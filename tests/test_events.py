"""`on_event=`: created, cycled, ended and lost-race sessions, each told exactly once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from support import (
    EXPIRED_COOKIE,
    Clock,
    app_doing,
    cookie_of,
    fetch,
    hashed,
    middleware,
    set_cookies,
    sid,
)

from asgi_dynamo_session import DynamoDBStore, MemoryStore, Session, SessionEvent

pytestmark = pytest.mark.usefixtures("library_logs")


@pytest.fixture(params=["memory", "dynamodb"])
def any_store(request: pytest.FixtureRequest, dstore: DynamoDBStore, clock: Clock) -> Any:
    return MemoryStore(clock=clock) if request.param == "memory" else dstore


@pytest.fixture
def mw(any_store: Any, clock: Clock) -> Any:
    """`middleware(app_doing(action), any_store, ...)` on the test's clock."""

    def build(action: Any, **kwargs: Any) -> Any:
        return middleware(app_doing(action), any_store, clock=clock, **kwargs)

    return build


class Recorder:
    """An on_event callback; async or sync, optionally failing after recording."""

    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[SessionEvent] = []
        self.fail = fail

    def sync(self, event: SessionEvent) -> None:
        self.events.append(event)
        if self.fail:
            raise RuntimeError("audit log is down")

    async def async_(self, event: SessionEvent) -> None:
        await asyncio.sleep(0)
        self.sync(event)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "callback-raises"])
async def test_each_event_is_told_exactly_once(
    mw: Any, kind: str, fail: bool, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(fail=fail)
    callback = recorder.sync if kind == "sync" else recorder.async_

    def app(action: Any) -> Any:
        return mw(action, on_event=callback)

    created = await fetch(app(lambda s: s.update(n=1)))
    first = cookie_of(created)
    assert created.status_code == 200
    read = await fetch(app(lambda s: s.get("n")), f"id={first}")
    assert read.status_code == 200

    def login(session: Session) -> None:
        session.cycle_id()
        session["user"] = "ada"

    cycled = await fetch(app(login), f"id={first}")
    second = cookie_of(cycled)
    flushed = await fetch(app(lambda s: s.flush()), f"id={second}")
    assert flushed.status_code == 200
    assert set_cookies(flushed) == [EXPIRED_COOKIE]

    assert recorder.events == [
        SessionEvent("created", hashed(sid(first))),
        SessionEvent("cycled", hashed(sid(second)), previous=hashed(sid(first))),
        SessionEvent("ended", hashed(sid(second))),
    ]
    failures = [r for r in caplog.records if "on_event callback failed" in r.getMessage()]
    assert len(failures) == (3 if fail else 0)
    text = " ".join(repr(e) for e in recorder.events)
    assert sid(first) not in text and sid(second) not in text  # hashed ids only


async def test_a_lost_race_is_told(mw: Any) -> None:
    recorder = Recorder()
    cookie = cookie_of(await fetch(mw(lambda s: s.update(n=1))))
    inside, go = asyncio.Event(), asyncio.Event()

    async def slow(session: Session) -> None:
        session["n"] = 2
        inside.set()
        await go.wait()

    app = mw(slow, on_event=recorder.sync)
    task = asyncio.ensure_future(fetch(app, f"id={cookie}"))
    await inside.wait()
    await fetch(mw(lambda s: s.flush()), f"id={cookie}")
    go.set()
    late = await task
    assert set_cookies(late) == [EXPIRED_COOKIE]
    assert recorder.events == [SessionEvent("lost_race", hashed(sid(cookie)))]


async def test_emptying_key_by_key_is_an_ended_event(mw: Any) -> None:
    recorder = Recorder()
    cookie = cookie_of(await fetch(mw(lambda s: s.update(n=1))))
    app = mw(lambda s: s.pop("n"), on_event=recorder.sync)
    await fetch(app, f"id={cookie}")
    assert recorder.events == [SessionEvent("ended", hashed(sid(cookie)))]


async def test_no_callback_no_cost(mw: Any, caplog: pytest.LogCaptureFixture) -> None:
    response = await fetch(mw(lambda s: s.update(n=1)))
    assert response.status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
