"""Item database (item_database.json) and the one rule for matching item ids."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitting_room.errors import DataContractError

TYPICAL_ITEM_ID = "(typical item)"


def normalize_item_id(raw: str) -> str:
    """Matching key of an item id: surrounding whitespace stripped, case folded ("  SKU-0011 " -> "sku-0011")."""
    return raw.strip().casefold()


@dataclass(frozen=True)
class Item:
    """One catalogue entry; `item_id` is spelled as in the database, `price` is in store currency."""

    item_id: str
    category: str
    price: float


class Catalog:
    """Read-only item database with case- and whitespace-insensitive lookups."""

    def __init__(self, items: Mapping[str, Item]) -> None:
        """Build from items keyed by their normalised id (use `from_mapping` or `load`)."""
        if not items:
            raise ValueError("a catalog needs at least one item")
        self._items: dict[str, Item] = dict(items)
        self.categories: tuple[str, ...] = tuple(sorted({i.category for i in self._items.values()}))
        self.typical_item: Item = _typical_item(list(self._items.values()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Any]], source: str = "item database") -> Catalog:
        """Validate `{item_id: {"category": str, "price": number, ...}}`; errors name `source` and the item."""
        if not isinstance(data, Mapping):
            raise DataContractError(f"{source}: expected a JSON object of items, got {type(data).__name__}")
        if not data:
            raise DataContractError(f"{source}: contains no items")
        items: dict[str, Item] = {}
        first_spelling: dict[str, str] = {}
        for raw_id, attrs in data.items():
            item = _parse_item(raw_id, attrs, source)
            key = normalize_item_id(item.item_id)
            if key in items:
                raise DataContractError(
                    f"{source}: item {raw_id!r} duplicates {first_spelling[key]!r} "
                    "(ids are matched ignoring case and surrounding whitespace)"
                )
            items[key] = item
            first_spelling[key] = raw_id
        return cls(items)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Read item_database.json; DataContractError names the file on a missing or malformed file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise DataContractError(f"{path}: file not found") from err
        except (OSError, UnicodeDecodeError) as err:
            raise DataContractError(f"{path}: cannot be read ({err})") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataContractError(
                f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from err
        return cls.from_mapping(data, source=str(path))

    def lookup(self, item_id: str) -> Item | None:
        """The item for an id in any case/whitespace variant, or None when the database lacks it."""
        return self._items.get(normalize_item_id(item_id))

    def display_id(self, item_id: str) -> str:
        """Id as written in the database, or the raw id stripped when the database lacks it."""
        item = self._items.get(normalize_item_id(item_id))
        return item.item_id if item is not None else item_id.strip()

    def __len__(self) -> int:
        """Number of items."""
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        """Items in database order."""
        return iter(self._items.values())

    def __contains__(self, item_id: object) -> bool:
        """Whether an id (any case/whitespace variant) is in the database."""
        return isinstance(item_id, str) and normalize_item_id(item_id) in self._items


def _parse_item(raw_id: object, attrs: object, source: str) -> Item:
    """One validated Item from a JSON entry."""
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise DataContractError(f"{source}: item id {raw_id!r} must be a non-empty string")
    where = f"{source}: item {raw_id!r}"
    if not isinstance(attrs, Mapping):
        raise DataContractError(f"{where}: expected an object with category and price")
    category = attrs.get("category")
    if not isinstance(category, str) or not category.strip():
        raise DataContractError(f"{where}: 'category' must be a non-empty string, got {category!r}")
    price = attrs.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise DataContractError(f"{where}: 'price' must be a number, got {price!r}")
    if not math.isfinite(price) or price < 0:
        raise DataContractError(f"{where}: 'price' must be finite and >= 0, got {price!r}")
    return Item(item_id=raw_id.strip(), category=category.strip(), price=float(price))


def _typical_item(items: list[Item]) -> Item:
    """Stand-in for unknown ids: most common category (ties: alphabetical), median catalogue price."""
    counts = Counter(i.category for i in items)
    category = min(counts, key=lambda c: (-counts[c], c))
    price = float(statistics.median(i.price for i in items))
    return Item(item_id=TYPICAL_ITEM_ID, category=category, price=price)
