"""A small Chrome DevTools Protocol client: one websocket to the browser, a flat session per tab.

`Browser` sends commands and hands events to whoever waits for them; `Tab` is one page in its
own browser context (its own cookie jar), with the few things the scenarios do: navigate, run
script, read the text shown, read and set cookies, take screenshots, read a cross-site iframe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Event = dict[str, Any]
#: How long one command or one awaited page event may take before the scenario fails.
TIMEOUT = 20.0


class CDPError(Exception):
    """A command the browser answered with an error, or a navigation that failed."""


class Browser:
    """The browser-level DevTools connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Event]] = {}
        self._waiters: list[tuple[str, str | None, Callable[[Event], bool], asyncio.Future[Event]]]
        self._waiters = []
        self._handlers: dict[tuple[str, str | None], list[Callable[[Event], None]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> Browser:
        return cls(await connect(url, max_size=None, ping_interval=None))

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Event:
        """Run one command and return its result."""
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = answer
        await self._ws.send(json.dumps(message))
        try:
            return await asyncio.wait_for(answer, TIMEOUT)
        finally:
            self._pending.pop(message["id"], None)

    def expect(
        self, method: str, session: str | None, where: Callable[[Event], bool] = lambda _: True
    ) -> asyncio.Future[Event]:
        """A future for the next `method` event of `session` that `where` accepts (its params).

        Call it before the action that causes the event, then await it."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, where, future))
        return future

    def on(self, method: str, session: str | None, handler: Callable[[Event], None]) -> None:
        """Call `handler` with the params of every `method` event of `session`."""
        self._handlers.setdefault((method, session), []).append(handler)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    self._answer(message)
                else:
                    self._dispatch(message)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CDPError("the DevTools connection closed"))

    def _answer(self, message: Event) -> None:
        future = self._pending.get(message["id"])
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(CDPError(f"{message['error']}"))
        else:
            future.set_result(message.get("result", {}))

    def _dispatch(self, message: Event) -> None:
        method, session, params = message["method"], message.get("sessionId"), message["params"]
        for handler in self._handlers.get((method, session), []):
            handler(params)
        kept = []
        for waiter in self._waiters:
            name, wanted, where, future = waiter
            if future.done():
                continue
            if name == method and wanted == session and where(params):
                future.set_result(params)
            else:
                kept.append(waiter)
        self._waiters = kept


class Tab:
    """A page in a fresh browser context: nothing shared with other scenarios' cookies."""

    def __init__(
        self, browser: Browser, context: str, session: str, shots: Path, scenario: str
    ) -> None:
        self.browser = browser
        self.context = context
        self.session = session
        self.shots = shots
        self.scenario = scenario
        self.frames: dict[str, str] = {}  # iframe target id -> its DevTools session

    @classmethod
    async def open(cls, browser: Browser, shots: Path, scenario: str) -> Tab:
        context = (await browser.send("Target.createBrowserContext"))["browserContextId"]
        target = await browser.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )
        attached = await browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        tab = cls(browser, context, attached["sessionId"], shots, scenario)
        await tab.send("Page.enable")  # load events
        return tab

    async def watch_frames(self) -> None:
        """Attach to the cross-site iframes this page loads from now on (site isolation runs
        them in renderers of their own), for `frame_text`."""
        self.browser.on("Target.attachedToTarget", self.session, self._frame_attached)
        self.browser.on("Target.detachedFromTarget", self.session, self._frame_detached)
        await self.send(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True},
        )

    async def close(self) -> None:
        await self.browser.send("Target.disposeBrowserContext", {"browserContextId": self.context})

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Event:
        return await self.browser.send(method, params, self.session)

    # -- navigation ---------------------------------------------------------------------------

    async def goto(self, url: str) -> str:
        """Load `url` as if typed in the address bar; the text the page then shows."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            loaded.cancel()
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, TIMEOUT)
        return await self.text()

    async def follow(self, script: str) -> str:
        """Run `script` in the page (a click, a form submit) and wait for the page it loads."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        await self.evaluate(script)
        await asyncio.wait_for(loaded, TIMEOUT)
        return await self.text()

    async def evaluate(self, expression: str, session: str | None = None) -> Any:
        """The value of a script expression (promises awaited)."""
        result = await self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session or self.session,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, condition: str, session: str | None = None) -> str:
        """Wait until the script expression `condition` is true; the text then shown."""
        poll = (
            "new Promise(done => { const check = () => (" + condition + ")"
            " ? done(true) : setTimeout(check, 25); check(); })"
        )
        await asyncio.wait_for(self.evaluate(poll, session), TIMEOUT)
        return await self.text(session)

    async def text(self, session: str | None = None) -> str:
        """What the page shows, as text (``document.body.innerText``)."""
        value = await self.evaluate("document.body ? document.body.innerText : ''", session)
        return str(value).strip()

    # -- cookies ------------------------------------------------------------------------------

    async def cookies(self, *urls: str) -> list[Event]:
        """``Network.getCookies`` for `urls`: the jar's cookies that those URLs would get."""
        return list((await self.send("Network.getCookies", {"urls": list(urls)}))["cookies"])

    async def jar(self) -> list[Event]:
        """Every cookie this tab's browser context stores, all partitions included."""
        result = await self.browser.send("Storage.getCookies", {"browserContextId": self.context})
        return list(result["cookies"])

    async def set_cookie(self, **cookie: Any) -> None:
        result = await self.send("Network.setCookie", cookie)
        if result.get("success") is False:
            raise CDPError(f"the browser refused the cookie {cookie}")

    # -- what a failure can be looked at with -------------------------------------------------

    async def shot(self, state: str) -> Path:
        """A PNG of the page as shown now, ``screenshots/<scenario>--<state>.png``."""
        data = (await self.send("Page.captureScreenshot", {"format": "png"}))["data"]
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{self.scenario}--{state}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    # -- cross-site iframes -------------------------------------------------------------------

    async def frame_text(self, url_prefix: str) -> str:
        """The text shown by the (cross-site) iframe whose document URL starts with `url_prefix`,
        once that document has loaded (after `watch_frames`)."""
        ready = "document.readyState === 'complete' ? location.href : ''"
        for _ in range(int(TIMEOUT / 0.05)):
            for session in list(self.frames.values()):
                with contextlib.suppress(CDPError):  # a frame that went away meanwhile
                    href = await self.evaluate(ready, session)
                    if str(href).startswith(url_prefix):
                        return await self.text(session)
            await asyncio.sleep(0.05)
        raise CDPError(f"no loaded iframe at {url_prefix} ({len(self.frames)} attached)")

    def _frame_attached(self, params: Event) -> None:
        info = params["targetInfo"]
        if info["type"] == "iframe":
            self.frames[info["targetId"]] = params["sessionId"]

    def _frame_detached(self, params: Event) -> None:
        self.frames.pop(params.get("targetId", ""), None)
