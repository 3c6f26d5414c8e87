"""API keys file parsing, constant-time identification and the role order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fitting_room.auth import KeyRing, Role, authorize
from fitting_room.errors import AuthenticationError, DataContractError, PermissionDeniedError

KIOSK_KEY, STAFF_KEY, ADMIN_KEY = "kiosk-key-000000001", "staff-key-000000001", "admin-key-000000001"


def test_keys_file_roles_and_stores(tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text(
        json.dumps({KIOSK_KEY: "kiosk", STAFF_KEY: {"role": "staff", "store": "berlin-01"}, ADMIN_KEY: "admin"})
    )
    ring = KeyRing.load(path)
    assert len(ring) == 3
    assert ring.identify(KIOSK_KEY) == (Role.KIOSK, "default")
    assert ring.identify(STAFF_KEY) == (Role.STAFF, "berlin-01")
    assert ring.identify(ADMIN_KEY) == (Role.ADMIN, "default")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[]", "non-empty JSON object"),
        ("{", "not valid JSON"),
        (json.dumps({"short": "kiosk"}), "shorter than 16"),
        (json.dumps({KIOSK_KEY: "cashier"}), "expected kiosk, staff or admin"),
        (json.dumps({KIOSK_KEY: {"store": "x"}}), "role name"),
    ],
)
def test_malformed_keys_file_is_refused_without_echoing_keys(tmp_path: Path, content: str, fragment: str):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(DataContractError, match=fragment) as err:
        KeyRing.load(path)
    assert KIOSK_KEY not in str(err.value)


def test_missing_and_unknown_keys_are_401():
    ring = KeyRing.from_mapping({KIOSK_KEY: "kiosk"})
    with pytest.raises(AuthenticationError, match="missing"):
        ring.identify(None)
    with pytest.raises(AuthenticationError, match="unknown"):
        ring.identify(KIOSK_KEY + "x")


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (Role.KIOSK, Role.KIOSK, True),
        (Role.KIOSK, Role.STAFF, False),
        (Role.STAFF, Role.KIOSK, True),
        (Role.STAFF, Role.ADMIN, False),
        (Role.ADMIN, Role.STAFF, True),
    ],
)
def test_roles_include_the_ones_below(role: Role, needed: Role, allowed: bool):
    if allowed:
        authorize(role, needed, "do it")
    else:
        with pytest.raises(PermissionDeniedError, match=f"needs '{needed.label}'"):
            authorize(role, needed, "do it")
