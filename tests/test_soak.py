"""The fault soak (issue 8): a realistic request mix through the middleware and the chaos proxy,
on each transport, reconciled with the table (see tests/soak.py).

``make test`` runs a short soak (120 requests; only a generous time bound, twice the budget);
``make soak`` sets ``SOAK_REQUESTS=2000`` and prints each report, the budget asserted as is.
Then scripted single faults: one applied write whose answer is lost, for each kind of write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
from chaos import ChaosProxy, asgi_call
from soak import INACTIVITY, Soak, SoakSettings, app_for_soak
from support import LOGGER, SECRET, TRANSPORTS, data_of, dynamo_store, key_of, scan_all, sid

from asgi_dynamo_session import OnInactivity, SessionMiddleware

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "120"))
SEED = int(os.environ.get("SOAK_SEED", "2"))  # its first 200 draws hold every fault kind
RATE = float(os.environ.get("SOAK_RATE", "0.1"))  # share of DynamoDB requests with a fault
LONG = "SOAK_REQUESTS" in os.environ


async def test_fault_soak(dynamodb_server: Any, raw: Any, transport: str) -> None:
    table = f"soak_{uuid4().hex[:10]}"
    settings = SoakSettings(
        requests=REQUESTS, clients=max(8, REQUESTS // 100), seed=SEED, rate=RATE
    )
    soak = Soak(raw, dynamodb_server.endpoint_url, dynamodb_server.kind, transport, table, settings)
    try:
        report = await soak.run()
    finally:
        await raw.delete_table(TableName=table)
    text = report.render()
    print("\n" + text)
    bound = report.budget if LONG else 2 * report.budget
    counts = {
        "lost writes": report.lost_writes,
        "applied-but-503": report.applied_but_503,
        "orphan items": report.orphans,
        "answers neither the app's nor a 503": report.not_app,
        "wrong reads": report.wrong_reads,
        "wrong stored state": report.wrong_state,
        "cookie lifetimes disagreeing with the item": report.bad_lifetimes,
    }
    assert all(v == 0 for v in counts.values()) and report.slowest <= bound, "\n" + text
    if RATE:
        assert sum(report.faults.values()) > report.faults["forward"]  # faults were injected


# -- one lost answer at a time (defect 3; spec 15) ------------------------------------------------

SCRIPTED = [
    ("create", "PutItem"),  # the new session's conditional create
    ("write", "PutItem"),  # a save
    ("cycle", "DeleteItem"),  # cycle_id(): the take of the old item
    ("cycle", "PutItem"),  # cycle_id(): the create of the new one
]


@pytest.fixture(scope="module", params=TRANSPORTS)
async def via_proxy(request: pytest.FixtureRequest, dynamodb_server: Any) -> AsyncIterator[Any]:
    """A store behind a ChaosProxy that injects only scripted faults (`proxy.plan`)."""
    url = urlsplit(dynamodb_server.endpoint_url)
    proxy = ChaosProxy(url.hostname or "127.0.0.1", url.port or 80, rate=0.0, stall=1.3)
    await proxy.start()
    table = f"lost_{uuid4().hex[:10]}"
    s = SoakSettings()
    try:
        async with dynamo_store(
            proxy.endpoint_url,
            table,
            transport=request.param,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            max_attempts=s.max_attempts,
        ) as store:
            yield store, proxy
    finally:
        await proxy.stop()


@pytest.mark.parametrize("fault", ["lost", "bad_crc"])  # soak.py mixes in the other kinds
@pytest.mark.parametrize(("op", "action"), SCRIPTED)
async def test_an_applied_write_whose_answer_was_lost_is_a_success(
    via_proxy: Any,
    raw: Any,
    caplog: pytest.LogCaptureFixture,
    op: str,
    action: str,
    fault: str,
) -> None:
    """DynamoDB applied the write but the answer never arrived intact: the retry must recognise
    the write as its own (the app's answer, the change stored once, no orphan, no false "id
    collision", no 503)."""
    store, proxy = via_proxy
    caplog.set_level(logging.INFO, logger=LOGGER)
    app = SessionMiddleware(
        app_for_soak(), store=store, secret_keys=SECRET, expiry=OnInactivity(INACTIVITY)
    )
    cookie = None
    before: dict[str, Any] = {}
    if op != "create":
        status, out, _ = await asgi_call(app, [], path="/create", query=b"k=user&m=u")
        assert status == 200
        cookie = next(v.decode() for k, v in out if k == b"set-cookie").split(";")[0][3:]
        before = {"user": "u"}
    keys_before = {i["session_id"]["S"] for i in await scan_all(raw, store.props.table_name)}
    caplog.clear()
    proxy.plan = [(action, fault)]
    headers = [] if cookie is None else [(b"cookie", f"id={cookie}".encode())]
    status, out, body = await asgi_call(app, headers, path=f"/{op}", query=b"k=key&m=marker")
    assert not proxy.plan, "the scripted fault was not used"
    set_cookies = [v.decode() for k, v in out if k == b"set-cookie"]
    assert (status, body) == (200, b"ok marker"), (status, body, set_cookies)
    assert all("Max-Age=0;" not in c for c in set_cookies), set_cookies
    holder = cookie
    if op in ("create", "cycle"):
        assert len(set_cookies) == 1, set_cookies
        holder = set_cookies[0].split(";")[0][3:]
    assert holder is not None
    items = {i["session_id"]["S"]: i for i in await scan_all(raw, store.props.table_name)}
    mine = key_of(sid(holder))["session_id"]["S"]
    old = None if cookie is None else key_of(sid(cookie))["session_id"]["S"]
    added = set(items) - keys_before - {mine}
    assert not added, f"{len(added)} orphan item(s) besides the session's"
    assert old == mine or old not in items, "the old id of a cycled session is still stored"
    assert data_of(items[mine]) == {**before, "key": "marker"}
    assert not [r for r in caplog.records if "collision" in r.getMessage()]


@pytest.mark.parametrize("take", ["UpdateItem", "DeleteItem"])  # whichever call the take makes
async def test_a_cycle_that_answers_503_keeps_the_old_session(
    via_proxy: Any, raw: Any, take: str
) -> None:
    """Found by a 25% soak after the fixes: the take's answer is lost (applied), and every read
    that would tell the retry what happened fails too. A 503 must leave the previously stored
    session intact (spec 10); a 200 must carry the new id holding the data."""
    store, proxy = via_proxy
    app = SessionMiddleware(
        app_for_soak(), store=store, secret_keys=SECRET, expiry=OnInactivity(INACTIVITY)
    )
    status, out, _ = await asgi_call(app, [], path="/create", query=b"k=user&m=u")
    assert status == 200
    cookie = next(v.decode() for k, v in out if k == b"set-cookie").split(";")[0][3:]
    proxy.plan = [
        ("GetItem", "forward"),  # the request's load
        (take, "bad_crc"),  # the take applies, its answer is refused
        *[("GetItem", "reset_before")] * 3,  # a read-back, if any, fails every attempt
    ]
    status, out, body = await asgi_call(
        app, [(b"cookie", f"id={cookie}".encode())], path="/cycle", query=b"k=key&m=marker"
    )
    proxy.plan = []
    set_cookies = [v.decode() for k, v in out if k == b"set-cookie"]
    if status == 503:
        item = await raw.get_item(
            TableName=store.props.table_name, Key=key_of(sid(cookie)), ConsistentRead=True
        )
        loaded = await store.load(sid(cookie))
        assert loaded is not None and loaded.data == {"user": "u"}, (
            f"503, and the old session is gone (item: {item.get('Item')})"
        )
    else:
        assert (status, body) == (200, b"ok marker")
        (header,) = set_cookies
        new = header.split(";")[0][3:]
        assert new and sid(new) != sid(cookie), set_cookies
        loaded = await store.load(sid(new))
        assert loaded is not None and loaded.data == {"user": "u", "key": "marker"}
