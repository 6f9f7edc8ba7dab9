"""`exclude=`: which requests get no session at all (static files, health checks, opted-out routes).

A ``str`` is a path prefix (``"/static/"`` excludes ``/static/app.css``); a compiled regex is
searched in the path (``re.search``, as Litestar's ``exclude`` patterns are: anchor it with ``^``
to match from the start). Litestar route handlers whose ``opt`` sets the opt key
(``@get("/ping", skip_session=True)``) are excluded too, where the middleware runs inside
Litestar (``DefineMiddleware``): only there does the scope name the route handler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

Exclude = str | re.Pattern[str]
Excluded = Callable[[MutableMapping[str, Any]], bool]


def excluder(exclude: Exclude | Iterable[Exclude] | None, opt_key: str | None) -> Excluded | None:
    """The test "this scope gets no session", built once; None when nothing can be excluded."""
    items = [exclude] if isinstance(exclude, (str, re.Pattern)) else list(exclude or ())
    prefixes: list[str] = []
    searches: list[Callable[[str], Any]] = []
    for item in items:
        if isinstance(item, str):
            if not item.startswith("/"):
                raise ValueError(
                    f"exclude prefix {item!r} must start with '/' (ASGI paths do); "
                    "pass re.compile(...) for a pattern"
                )
            prefixes.append(item)
        elif isinstance(item, re.Pattern) and isinstance(item.pattern, str):
            searches.append(item.search)
        else:
            raise TypeError(
                "exclude takes path prefixes (str) and compiled str regexes (re.Pattern), "
                f"not {item!r}"
            )
    if opt_key is not None and not (isinstance(opt_key, str) and opt_key):
        raise ValueError("exclude_opt_key must be a non-empty str or None")
    starts = tuple(prefixes)
    if not starts and not searches:
        return None if opt_key is None else _opted_out(opt_key)

    def excluded(scope: MutableMapping[str, Any]) -> bool:
        path: str = scope["path"]
        if path.startswith(starts):
            return True
        for search in searches:
            if search(path):
                return True
        return opt_key is not None and _handler_opts_out(scope, opt_key)

    return excluded


def _opted_out(opt_key: str) -> Excluded:
    def excluded(scope: MutableMapping[str, Any]) -> bool:
        return _handler_opts_out(scope, opt_key)

    return excluded


def _handler_opts_out(scope: MutableMapping[str, Any], opt_key: str) -> bool:
    """True when the scope's (Litestar) route handler sets the opt key in its ``opt``."""
    handler = scope.get("route_handler")
    if handler is None:
        return False
    opt = getattr(handler, "opt", None)
    return bool(opt.get(opt_key)) if isinstance(opt, dict) else False
