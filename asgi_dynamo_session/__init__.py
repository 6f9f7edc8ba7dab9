"""Server-side sessions in DynamoDB for any ASGI app."""

from ._access import get_session
from ._users import SessionInfo
from .dynamodb import DynamoDBStore, DynamoDBStoreKey, DynamoDBStoreProps
from .errors import SessionConflict, SessionError, SessionTooLarge, StoreError
from .events import SessionEvent
from .expiry import AtDateTime, OnInactivity, OnSessionEnd
from .middleware import SessionMiddleware
from .record import Record
from .session import Session
from .store import MemoryStore, SessionStore

__all__ = [
    "AtDateTime",
    "DynamoDBStore",
    "DynamoDBStoreKey",
    "DynamoDBStoreProps",
    "MemoryStore",
    "OnInactivity",
    "OnSessionEnd",
    "Record",
    "Session",
    "SessionConflict",
    "SessionError",
    "SessionEvent",
    "SessionInfo",
    "SessionMiddleware",
    "SessionStore",
    "SessionTooLarge",
    "StoreError",
    "get_session",
]
