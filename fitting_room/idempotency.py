"""Idempotent retries: a change and its response are committed together under the client's key.

A retry with the same key and request returns the stored response without a second effect; concurrent retries
queue on the store's write lock, so the second one finds the first one's record. Reusing a key for another
request is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fitting_room.errors import InvalidRequestError
from fitting_room.store import Store

RETENTION = timedelta(hours=48)


def fingerprint(method: str, path: str, canonical_body: str) -> str:
    """A digest of what the request asks for, to tell a retry from a different request."""
    return hashlib.sha256(f"{method} {path}\n{canonical_body}".encode()).hexdigest()


def run_once(
    store: Store, key: str, request_fingerprint: str, now: datetime, action: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """Run `action` once per key; returns (response body, whether it was replayed)."""
    return store.retrying(lambda: _run_once(store, key, request_fingerprint, now, action))


def _run_once(
    store: Store, key: str, request_fingerprint: str, now: datetime, action: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    with store.write() as tx:
        found = tx.get_idempotency(key)
        if found is not None:
            stored_fingerprint, body = found
            if stored_fingerprint != request_fingerprint:
                raise InvalidRequestError(
                    "this Idempotency-Key was already used for a different request; use a new key"
                )
            return body, True
        body = action()
        tx.put_idempotency(key, request_fingerprint, body, now)
        tx.purge_idempotency(now - RETENTION)
        return body, False
