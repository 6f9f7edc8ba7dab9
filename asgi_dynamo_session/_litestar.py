"""Litestar's ``request.get_session_id()`` under our middleware, without importing Litestar.

Litestar reads the id from its per-connection state, ``scope["state"]["_ls_connection_state"]``
(a ``litestar.utils.scope.state.ScopeState``, attribute ``session_id``), which its own session
middleware fills. We fill it the same way with the loaded session's id; where Litestar has not
created that state yet (the middleware wraps the whole app), we create it with Litestar's own
class, and only when Litestar is already imported.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

_STATE_KEY = "_ls_connection_state"
_STATE_MODULE = "litestar.utils.scope.state"


def note_session_id(scope: MutableMapping[str, Any], session_id: str | None) -> None:
    """Make Litestar's ``get_session_id()`` answer `session_id` for this connection."""
    state = scope.get("state")
    if state is not None and not isinstance(state, dict):
        return
    holder = None if state is None else state.get(_STATE_KEY)
    if holder is None:
        module = sys.modules.get(_STATE_MODULE)
        if module is None:  # not a Litestar app: nothing reads it
            return
        holder = module.ScopeState.from_scope(scope)
    holder.session_id = session_id
