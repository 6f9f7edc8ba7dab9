"""A live progress line on stderr: rewritten in place on a terminal, periodic lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Scanned and deleted counts with rate and ETA; the ETA comes from the table's ItemCount
    (which DynamoDB refreshes about every six hours, so it is an estimate)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        total: int | None,
        verb: str | None,
        interval: float,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream
        self.total = total
        self.verb = verb
        self.interval = interval
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._shown = float("-inf") if self.tty or not interval else self.started
        self._last: tuple[int, int] | None = None
        self._width = 0
        self.scanned = 0
        self.done = 0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.scanned / elapsed
        parts = [f"scanned {self.scanned:,}"]
        if self.total:
            share = min(100, 100 * self.scanned // self.total)
            parts[0] += f" of ~{self.total:,} ({share}%)"
        if self.verb is not None:
            parts.append(f"{self.verb} {self.done:,}")
        parts.append(f"{rate:,.0f} items/s")
        if self.total and rate > 0 and self.scanned < self.total:
            parts.append(f"ETA {duration((self.total - self.scanned) / rate)}")
        elif self.total:
            parts.append("ETA soon")
        return ", ".join(parts)

    def update(self, scanned: int, done: int, *, force: bool = False) -> None:
        self.scanned, self.done = scanned, done
        now = time.monotonic()
        every = 0.1 if self.tty else self.interval
        if (scanned, done) == self._last or (not force and now - self._shown < every):
            return
        self._shown, self._last = now, (scanned, done)
        text = self.line()
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """The last figures (unless just shown), and the terminal's line ended."""
        self.update(self.scanned, self.done, force=True)
        if self.tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()
