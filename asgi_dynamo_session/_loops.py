"""Connections that belong to an event loop: one set per loop, opened there, closed there.

A store is often shared by several loops over its life (test clients that run each request on a
new loop, pytest-asyncio's function-scoped loops, one loop per worker thread). Sockets, aiohttp
sessions and asyncio locks all belong to the loop that made them, so `PerLoop` keeps one opened
value per loop and closes it on that loop: when asked (`close`), or when the loop shuts down.

The shutdown hook is a suspended async generator: ``asyncio.run``, ``asyncio.Runner``, anyio,
uvicorn and pytest-asyncio all call ``loop.shutdown_asyncgens()`` before closing a loop, which
finalises it on the still-running loop, so nothing is left open for a closed loop to warn about.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Generic, TypeVar

T = TypeVar("T")

_CLOSE_ELSEWHERE_TIMEOUT = 5.0


class _Slot(Generic[T]):
    """What one loop opened, and the lock that serialises opening it (a lock of that loop)."""

    __slots__ = ("guard", "lock", "stack", "value")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.value: T | None = None
        self.stack: AsyncExitStack | None = None
        self.guard: AsyncGenerator[None, None] | None = None


class PerLoop(Generic[T]):
    """One value per event loop, made by `opener` (which registers its cleanup on the stack)."""

    def __init__(self, opener: Callable[[AsyncExitStack], Awaitable[T]]) -> None:
        self._opener = opener
        self._slots: dict[asyncio.AbstractEventLoop, _Slot[T]] = {}

    def get(self) -> T | None:
        """The running loop's value, or None when it has none open (cheap: a dict lookup)."""
        slot = self._slots.get(asyncio.get_running_loop())
        return None if slot is None else slot.value

    async def open(self) -> T:
        """The running loop's value, opened now if it has none."""
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            self._forget_closed_loops()
            slot = self._slots.setdefault(loop, _Slot())
        async with slot.lock:
            if slot.value is not None:
                return slot.value
            stack = AsyncExitStack()
            try:
                value = await self._opener(stack)
            except BaseException:
                await stack.aclose()
                raise
            slot.stack, slot.value = stack, value
            slot.guard = self._until_shutdown(loop, slot)
            await slot.guard.__anext__()
            return value

    async def close(self) -> None:
        """Close the running loop's value now, and ask every other running loop to close its."""
        here = asyncio.get_running_loop()
        self._forget_closed_loops()
        for loop, slot in list(self._slots.items()):
            if loop is here:
                async with slot.lock:
                    await self._release(loop, slot)
            elif loop.is_running():  # another thread's loop: close there, on its own loop
                future = asyncio.run_coroutine_threadsafe(self._release(loop, slot), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(future), _CLOSE_ELSEWHERE_TIMEOUT)

    async def _until_shutdown(
        self, loop: asyncio.AbstractEventLoop, slot: _Slot[T]
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            slot.guard = None  # finishing already
            await self._release(loop, slot)

    async def _release(self, loop: asyncio.AbstractEventLoop, slot: _Slot[T]) -> None:
        if self._slots.get(loop) is slot:
            del self._slots[loop]
        stack, slot.stack, slot.value = slot.stack, None, None
        guard, slot.guard = slot.guard, None
        if stack is not None:
            await stack.aclose()
        if guard is not None:
            await guard.aclose()  # nothing left for the loop's shutdown to do

    def _forget_closed_loops(self) -> None:
        """Drop what loops closed without ``shutdown_asyncgens()`` left (nothing can close it)."""
        for loop in [loop for loop in self._slots if loop.is_closed()]:
            del self._slots[loop]
