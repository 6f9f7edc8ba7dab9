"""What the browser scenarios share: the example apps, and checks on what the page and jar hold."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any, Protocol

from support import SECRET, signed

#: The example apps: module, and the count its page shows on the first load. The devices page
#: (examples/devices.py) shows no count: its scenarios are in test_devices.py.
EXAMPLES = {
    "counter": ("examples.counter", 0),
    "starlette": ("examples.starlette_app", 1),
    "fastapi": ("examples.fastapi_app", 1),
    "litestar": ("examples.litestar_app", 1),
    "quart": ("examples.quart_app", 1),
    "raw": ("examples.raw_asgi", 1),
}
#: The examples with login/logout forms (all but the seed's counter).
LOGIN_EXAMPLES = [name for name in EXAMPLES if name != "counter"]
COUNT = re.compile(r"Current count: (\d+)")


class Serve(Protocol):
    """The ``serve`` fixture: ``await serve(app)`` serves `app` on loopback, returns the port."""

    async def __call__(self, app: Any) -> int: ...


def example(name: str, store: Any, **options: Any) -> Any:
    """The example app `name` on `store`, signing with SECRET unless `options` say otherwise."""
    options.setdefault("secret_keys", [SECRET])
    module = importlib.import_module(EXAMPLES[name][0])
    return module.create_app(store, **options)


def count_shown(text: str) -> int:
    """The count an example page shows."""
    found = COUNT.search(text)
    assert found, text
    return int(found.group(1))


def json_shown(text: str) -> dict[str, Any]:
    """The JSON object a page shows (the examples' read-only /whoami)."""
    found = re.search(r"\{.*\}", text, re.S)
    assert found, text
    data: dict[str, Any] = json.loads(found.group(0))
    return data


def sid(cookie: dict[str, Any]) -> str:
    """The session id in a jar cookie's signed value."""
    return str(cookie["value"]).split(".", 1)[0]


def assert_session_cookie(
    cookie: dict[str, Any], host: str, *, name: str = "id", same_site: str = "Lax"
) -> None:
    """`cookie` is a host-only session cookie on `host` with the default flags, signed by SECRET."""
    assert cookie["name"] == name
    assert cookie["value"] == signed(sid(cookie))
    assert cookie["domain"] == host  # host-only: no leading dot
    assert cookie["path"] == "/"
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == same_site
