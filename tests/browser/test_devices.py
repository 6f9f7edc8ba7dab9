"""The devices page (examples/devices.py) in two browser contexts, two "devices" with cookie jars
of their own, logged in as the same user: each lists both sessions with its own one marked; "Log
out everywhere else" on one leaves it logged in and logs the other out (its next load shows the
login form and removes its cookie); "Log out this device" removes the cookie it is clicked in, and
on another device's row ends that device's session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from browser_support import Serve, assert_session_cookie, sid
from cdp import Browser, Tab
from support import SECRET

from asgi_dynamo_session import DynamoDBStore
from examples.devices import create_app

ROWS = "[...document.querySelectorAll('li.device')].map(li => li.innerText.split('\\n')[0])"
LOG_OUT_HERE = "document.querySelector('form[action=\"/logout\"] button').click()"
LOG_OUT_OTHERS = "document.querySelector('form[action=\"/revoke-others\"] button').click()"
LOG_OUT_OTHER_ROW = "document.querySelector('form[action=\"/revoke\"] button').click()"


def log_in(user: str, device: str) -> str:
    """Script: fill in the login form as `user` on `device` and submit it."""
    return (
        f"document.querySelector('input[name=user]').value = '{user}';"
        f"document.querySelector('input[name=device]').value = '{device}';"
        "document.querySelector('form[action=\"/login\"] button').click()"
    )


@pytest.fixture
async def devices(
    browser: Browser, tab: Tab, serve: Serve, store: DynamoDBStore
) -> AsyncIterator[tuple[str, str, Tab, Tab]]:
    """The devices page's URL, a fresh user, and two contexts logged in as that user: the
    laptop (``tab``, logged in first) and the phone. Screenshots: ``<scenario>-laptop--<state>``
    and ``<scenario>-phone--<state>``."""
    url = f"http://127.0.0.1:{await serve(create_app(store, secret_keys=[SECRET]))}/"
    user = f"alice-{uuid4().hex[:8]}"  # the run shares one table: a user of this scenario only
    phone = await Tab.open(browser, tab.shots, f"{tab.scenario}-phone")
    tab.scenario += "-laptop"
    try:
        for device, page in (("laptop", tab), ("phone", phone)):
            assert "Log in" in await page.goto(url)
            assert await page.cookies(url) == []  # the login form starts no session
            text = await page.follow(log_in(user, device))
            assert f"Devices of {user}" in text
        yield url, user, tab, phone
    finally:
        await phone.close()


async def rows(tab: Tab) -> list[str]:
    """The device rows the page shows, each as its first line of text."""
    return [str(row) for row in await tab.evaluate(ROWS)]


async def cookie(tab: Tab, url: str) -> dict[str, Any]:
    """The one session cookie the jar sends to `url`, checked for the default attributes."""
    (only,) = await tab.cookies(url)
    assert_session_cookie(only, "127.0.0.1")
    return only


async def test_each_device_lists_both_sessions_and_marks_its_own(
    devices: tuple[str, str, Tab, Tab], store: DynamoDBStore
) -> None:
    url, user, laptop, phone = devices
    text = await phone.goto(url)
    await phone.shot("two-devices")
    assert "2 device(s) signed in" in text
    assert await rows(phone) == ["phone (this device)", "laptop"]  # newest first
    text = await laptop.goto(url)
    await laptop.shot("two-devices")
    assert "2 device(s) signed in" in text
    assert await rows(laptop) == ["phone", "laptop (this device)"]

    laptop_cookie, phone_cookie = await cookie(laptop, url), await cookie(phone, url)
    assert sid(laptop_cookie) != sid(phone_cookie)
    listed = [info.handle for info in await store.user_sessions(user)]
    assert listed == [
        store.session_handle(sid(phone_cookie)),
        store.session_handle(sid(laptop_cookie)),
    ]


async def test_log_out_everywhere_else_logs_the_other_device_out(
    devices: tuple[str, str, Tab, Tab], store: DynamoDBStore
) -> None:
    url, user, laptop, phone = devices
    await laptop.goto(url)
    laptop_cookie, phone_cookie = await cookie(laptop, url), await cookie(phone, url)

    text = await laptop.follow(LOG_OUT_OTHERS)
    await laptop.shot("after-log-out-everywhere-else")
    assert f"Devices of {user}" in text and "1 device(s) signed in" in text
    assert await rows(laptop) == ["laptop (this device)"]
    assert (await cookie(laptop, url))["value"] == laptop_cookie["value"]  # still logged in
    assert await store.load(sid(phone_cookie)) is None
    assert [i.handle for i in await store.user_sessions(user)] == [
        store.session_handle(sid(laptop_cookie))
    ]

    # The phone still holds its cookie until its next request, which finds no session.
    assert [c["value"] for c in await phone.cookies(url)] == [phone_cookie["value"]]
    text = await phone.goto(url)
    await phone.shot("logged-out-by-the-other-device")
    assert "Log in" in text and "Devices of" not in text
    assert await phone.cookies(url) == []  # Max-Age=0 on that response: gone from the jar
    assert await rows(laptop) == ["laptop (this device)"]
    assert "1 device(s) signed in" in await laptop.goto(url)  # the laptop stays logged in


async def test_log_out_this_device_removes_its_cookie(
    devices: tuple[str, str, Tab, Tab], store: DynamoDBStore
) -> None:
    url, user, laptop, phone = devices
    await phone.goto(url)
    laptop_cookie, phone_cookie = await cookie(laptop, url), await cookie(phone, url)

    text = await phone.follow(LOG_OUT_HERE)  # the phone's own row
    await phone.shot("logged-out")
    assert "Log in" in text and "Devices of" not in text
    assert await phone.cookies(url) == []
    assert await store.load(sid(phone_cookie)) is None

    text = await laptop.goto(url)
    await laptop.shot("the-other-device-logged-out")
    assert "1 device(s) signed in" in text
    assert await rows(laptop) == ["laptop (this device)"]
    assert (await cookie(laptop, url))["value"] == laptop_cookie["value"]
    assert [i.handle for i in await store.user_sessions(user)] == [
        store.session_handle(sid(laptop_cookie))
    ]


async def test_log_out_on_another_device_row_ends_that_device(
    devices: tuple[str, str, Tab, Tab], store: DynamoDBStore
) -> None:
    url, user, laptop, phone = devices
    await laptop.goto(url)
    laptop_cookie, phone_cookie = await cookie(laptop, url), await cookie(phone, url)

    text = await laptop.follow(LOG_OUT_OTHER_ROW)  # the phone's row, seen on the laptop
    await laptop.shot("after-log-out-the-phone-row")
    assert "1 device(s) signed in" in text
    assert await rows(laptop) == ["laptop (this device)"]
    assert await store.load(sid(phone_cookie)) is None

    text = await phone.goto(url)
    await phone.shot("logged-out-by-the-other-device")
    assert "Log in" in text and "Devices of" not in text
    assert await phone.cookies(url) == []
    assert (await cookie(laptop, url))["value"] == laptop_cookie["value"]
    assert len(await store.user_sessions(user)) == 1
