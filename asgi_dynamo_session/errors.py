"""The exceptions the library raises; all of them derive from `SessionError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .record import Record


class SessionError(Exception):
    """Base class of every error this library raises on purpose."""


class StoreError(SessionError):
    """The session store could not be reached or answered with an error."""


class SessionTooLarge(SessionError):
    """The encoded session would exceed a store's size limit (the item's, or the uncompressed
    data's); nothing was written."""

    def __init__(self, size: int, limit: int, what: str = "session item") -> None:
        super().__init__(
            f"{what} is {size} bytes, over the {limit}-byte limit; nothing was written"
        )
        self.size = size
        self.limit = limit


class SessionConflict(SessionError):
    """A conditional save lost a race: the stored item changed or vanished since it was loaded.

    `current` is the stored record as it is now, or None when it was deleted or has expired.
    """

    def __init__(self, current: Record | None) -> None:
        super().__init__("the stored session changed since it was loaded")
        self.current = current
