"""Expiry policies: how long a session lives in the browser and in the table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

#: OnSessionEnd sessions keep their item this long after the last write or refresh.
SESSION_END_ITEM_LIFETIME = timedelta(weeks=2)
#: Epoch seconds of 9999-12-31: no stored moment or duration is read beyond it.
_MAX_SECONDS = 253_402_214_400
#: The longest sliding window read back from an item: a century.
_MAX_WINDOW = 100 * 366 * 86_400


@dataclass(frozen=True)
class OnSessionEnd:
    """The cookie lasts until the browser closes (no Max-Age); the item is kept two weeks."""


@dataclass(frozen=True)
class OnInactivity:
    """The session ends `duration` after its last refresh; the cookie gets that Max-Age."""

    duration: timedelta

    def __post_init__(self) -> None:
        if not timedelta(0) < self.duration <= timedelta(seconds=_MAX_WINDOW):
            raise ValueError("OnInactivity duration must be positive and at most a century")


@dataclass(frozen=True)
class AtDateTime:
    """The session ends at a fixed, timezone-aware moment."""

    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("AtDateTime needs a timezone-aware datetime")
        if not 0 <= self.at.timestamp() <= _MAX_SECONDS:
            raise ValueError("AtDateTime must lie between 1970 and the end of 9999")


Expiry = OnSessionEnd | OnInactivity | AtDateTime


def window(expiry: Expiry) -> timedelta | None:
    """The sliding lifetime a refresh renews, or None for a fixed end."""
    if isinstance(expiry, OnInactivity):
        return expiry.duration
    if isinstance(expiry, OnSessionEnd):
        return SESSION_END_ITEM_LIFETIME
    return None


def expiry_date(expiry: Expiry, now: float) -> datetime:
    """When a session refreshed at `now` (epoch seconds) ends under `expiry`."""
    if isinstance(expiry, AtDateTime):
        return expiry.at.astimezone(timezone.utc)
    span = window(expiry)
    assert span is not None
    return datetime.fromtimestamp(now, timezone.utc) + span


def dump_policy(expiry: Expiry) -> str:
    """A short text form of a per-session policy, kept with the stored item."""
    if isinstance(expiry, OnInactivity):
        return f"inactivity:{expiry.duration.total_seconds()!r}"  # repr: exact round trip
    if isinstance(expiry, AtDateTime):
        return f"at:{expiry.at.timestamp()!r}"
    return "session"


def load_policy(text: str) -> Expiry:
    """The policy `dump_policy` wrote; ValueError for anything else (including absurd numbers)."""
    kind, _, value = text.partition(":")
    try:
        if kind == "inactivity":
            seconds = float(value)
            if not 0 < seconds <= _MAX_WINDOW:
                raise ValueError(seconds)
            return OnInactivity(timedelta(seconds=seconds))
        if kind == "at":
            stamp = float(value)
            if not 0 <= stamp <= _MAX_SECONDS:
                raise ValueError(stamp)
            return AtDateTime(datetime.fromtimestamp(stamp, timezone.utc))
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"unreadable expiry policy {text!r}") from exc
    if kind == "session" and not value:
        return OnSessionEnd()
    raise ValueError(f"unknown expiry policy {text!r}")
