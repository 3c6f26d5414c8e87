"""The rooms file: which fitting rooms a store (or each store of a chain) has and what each takes.

A JSON list of rooms configures the default store. A chain writes a JSON object instead, one entry per store
id: either that store's list of rooms or the path of its own rooms file (relative to this file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fitting_room.engine import RoomSpec
from fitting_room.errors import DataContractError

DEFAULT_STORE = "default"

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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataContractError(f"{path}: rooms file not found") from None
    except json.JSONDecodeError as err:
        raise DataContractError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None


def load_rooms(path: Path) -> list[RoomSpec]:
    """Rooms of one store from a rooms file holding a list."""
    return parse_rooms(_read_json(path), str(path))


def load_store_rooms(path: Path) -> dict[str, list[RoomSpec]]:
    """Rooms of every store a rooms file configures: {store id: rooms} (a plain list is the default store's)."""
    data = _read_json(path)
    if isinstance(data, list):
        return {DEFAULT_STORE: parse_rooms(data, str(path))}
    if not isinstance(data, dict) or not data:
        raise DataContractError(f"{path}: expected a list of rooms or an object of stores")
    stores: dict[str, list[RoomSpec]] = {}
    for store_id, entry in data.items():
        if not 1 <= len(store_id) <= 64:
            raise DataContractError(f"{path}: store id {store_id[:70]!r} must have 1-64 characters")
        if isinstance(entry, str):
            stores[store_id] = load_rooms(path.parent / entry)
        else:
            stores[store_id] = parse_rooms(entry, f"{path}: store {store_id}")
    return stores
