"""`Record`: one stored session as the store protocol passes it around."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._users import Binding


@dataclass
class Record:
    """A session's id, data, expiry and the version its conditional save checks.

    `version` is 0 for a record not stored yet; stores bump it on every write. `created_at` is
    kept across saves and id cycles (it bounds `absolute_timeout`); `policy` is a per-session
    expiry policy in `expiry.dump_policy` form, or None for the middleware's. `user` is the
    session's binding to a user (`Session.set_user`), None for an unbound session.
    """

    id: str
    data: dict[str, Any]
    expiry_date: datetime
    version: int = 0
    created_at: datetime | None = None
    policy: str | None = None
    packed: bytes | None = field(default=None, repr=False, compare=False)
    user: Binding | None = None
    # Set by our stores on a loaded record: `data` encoded, as stored (saves the middleware a
    # pack per request). Not a constructor argument: a changed `data` never meets stale bytes.
    _snapshot: bytes | None = field(default=None, init=False, repr=False, compare=False)
    # Set by a store's `take`: which take ended the record, so that `restore` can undo it.
    _taken: str | None = field(default=None, init=False, repr=False, compare=False)
    # Set by our stores: the tokens of the stored item's last writes, carried into the next save.
    _tokens: str | None = field(default=None, init=False, repr=False, compare=False)
    # Set by a store's `bind`: the hashed ids of the sessions `max_sessions` ended for it.
    _ended: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
