"""API keys and roles: which key may call what.

Roles are ordered: kiosk < staff < admin; each role may do everything the roles below it may. Keys are compared
in constant time (digests of equal length, every configured key checked) so timing reveals nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any

from fitting_room.errors import AuthenticationError, DataContractError, PermissionDeniedError
from fitting_room.rooms import DEFAULT_STORE


class Role(IntEnum):
    """What a key may do; a higher role includes every lower one."""

    KIOSK = 1
    STAFF = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name as written in the keys file."""
        return self.name.lower()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured keys, each with its role (and store, for chains)."""

    def __init__(self, keys: Mapping[str, tuple[Role, str]]) -> None:
        self._entries = [(_digest(k), role, store) for k, (role, store) in keys.items()]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stores(self) -> set[str]:
        """Every store some key belongs to."""
        return {store for _digest, _role, store in self._entries}

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Keys from a JSON file `{"<key>": "kiosk" | "staff" | "admin"}` (or `{"role": ..., "store": ...}`)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataContractError(f"{path}: API keys file not found") from None
        except json.JSONDecodeError as err:
            raise DataContractError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "API keys") -> KeyRing:
        """Validate the decoded keys file; errors name the entry but never the key itself."""
        if not isinstance(data, dict) or not data:
            raise DataContractError(f"{source}: expected a non-empty JSON object of keys")
        keys: dict[str, tuple[Role, str]] = {}
        for index, (key, value) in enumerate(data.items(), start=1):
            if not isinstance(key, str) or len(key) < 16:
                raise DataContractError(f"{source}: key {index} is shorter than 16 characters")
            role_name, store = (value, DEFAULT_STORE) if isinstance(value, str) else _role_and_store(value)
            try:
                keys[key] = (Role[str(role_name).upper()], store)
            except KeyError:
                raise DataContractError(
                    f"{source}: key {index} has role {role_name!r}; expected kiosk, staff or admin"
                ) from None
        return cls(keys)

    def identify(self, presented: str | None) -> tuple[Role, str]:
        """Role and store of a presented key; AuthenticationError when missing or unknown."""
        if not presented:
            raise AuthenticationError("missing API key: send it in the X-API-Key header")
        digest = _digest(presented)
        found: tuple[Role, str] | None = None
        for expected, role, store in self._entries:
            if hmac.compare_digest(digest, expected):
                found = (role, store)
        if found is None:
            raise AuthenticationError("unknown API key")
        return found


def _role_and_store(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise DataContractError('API keys: each value is a role name or {"role": ..., "store": ...}')
    return value["role"], str(value.get("store", DEFAULT_STORE))


def authorize(role: Role, needed: Role, action: str) -> None:
    """PermissionDeniedError unless `role` includes `needed`."""
    if role < needed:
        raise PermissionDeniedError(f"role {role.label!r} may not {action}; it needs {needed.label!r}")
