"""The rooms file: which fitting rooms a store has and what each takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fitting_room.engine import RoomSpec
from fitting_room.errors import DataContractError

_KNOWN_KEYS = {"room_id", "max_items", "accessible", "attributes"}


def parse_rooms(data: Any, source: str) -> list[RoomSpec]:
    """Rooms from the decoded JSON list; DataContractError naming the entry that is wrong."""
    if not isinstance(data, list) or not data:
        raise DataContractError(f"{source}: expected a non-empty JSON list of rooms")
    specs: list[RoomSpec] = []
    for index, entry in enumerate(data, start=1):
        where = f"{source}: room {index}"
        if not isinstance(entry, dict):
            raise DataContractError(f"{where}: expected an object")
        room_id = entry.get("room_id")
        max_items = entry.get("max_items")
        accessible = entry.get("accessible", False)
        if not isinstance(room_id, str) or not 1 <= len(room_id) <= 64:
            raise DataContractError(f"{where}: room_id must be a string of 1-64 characters")
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise DataContractError(f"{where} ({room_id}): max_items must be a positive integer")
        if not isinstance(accessible, bool):
            raise DataContractError(f"{where} ({room_id}): accessible must be true or false")
        extra = {k: v for k, v in entry.items() if k not in _KNOWN_KEYS} | dict(entry.get("attributes") or {})
        specs.append(RoomSpec(room_id, max_items, accessible, extra))
    ids = [s.room_id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataContractError(f"{source}: duplicate room_id {', '.join(duplicates)}")
    return specs


def load_rooms(path: Path) -> list[RoomSpec]:
    """Rooms from a rooms file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataContractError(f"{path}: rooms file not found") from None
    except json.JSONDecodeError as err:
        raise DataContractError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
    return parse_rooms(data, str(path))
