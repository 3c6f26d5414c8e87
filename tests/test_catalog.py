"""Item database loading, validation and case/whitespace-insensitive lookups."""

import json
from pathlib import Path

import pytest

from fitting_room.catalog import Catalog, Item, normalize_item_id
from fitting_room.errors import DataContractError

DATA = {
    "A-1": {"category": "Shoes/Running", "price": 90, "colour": "red"},
    "b.2": {"category": "Tops & Tees", "price": 20.5},
    "X_3": {"category": "Tops & Tees", "price": 35.0},
    "SKU-0011": {"category": "Acc. & Bags", "price": 10},
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  SKU-0011 ", "sku-0011"), ("sku-0011", "sku-0011"), ("\tA-1\n", "a-1"), ("Straße", "strasse")],
)
def test_normalize_item_id(raw: str, expected: str) -> None:
    assert normalize_item_id(raw) == expected


def test_lookup_ignores_case_and_whitespace() -> None:
    catalog = Catalog.from_mapping(DATA)
    expected = Item("SKU-0011", "Acc. & Bags", 10.0)
    for variant in ("SKU-0011", " sku-0011", "Sku-0011  "):
        assert catalog.lookup(variant) == expected
    assert catalog.display_id("  sku-0011 ") == "SKU-0011"
    assert " a-1 " in catalog


def test_unknown_ids() -> None:
    catalog = Catalog.from_mapping(DATA)
    assert catalog.lookup("nope") is None
    assert catalog.display_id("  Nope ") == "Nope"
    assert "nope" not in catalog


def test_categories_and_typical_item() -> None:
    catalog = Catalog.from_mapping(DATA)
    assert catalog.categories == ("Acc. & Bags", "Shoes/Running", "Tops & Tees")
    assert catalog.typical_item.category == "Tops & Tees"  # most common
    assert catalog.typical_item.price == pytest.approx((20.5 + 35.0) / 2)  # median of 10, 20.5, 35, 90
    assert len(catalog) == 4


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"A-1": {"price": 3}}, "'category'"),
        ({"A-1": {"category": "x", "price": "cheap"}}, "'price'"),
        ({"A-1": {"category": "x", "price": -1}}, "'price'"),
        ({"A-1": {"category": "x", "price": True}}, "'price'"),
        ({"A-1": {"category": "x", "price": 1}, " a-1": {"category": "y", "price": 2}}, "duplicates"),
        ({}, "no items"),
    ],
)
def test_invalid_entries_name_source_and_item(data: dict, fragment: str) -> None:
    with pytest.raises(DataContractError) as err:
        Catalog.from_mapping(data, source="items.json")
    assert "items.json" in str(err.value)
    assert fragment in str(err.value)


def test_load_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match=r"item_database\.json: file not found"):
        Catalog.load(tmp_path / "item_database.json")
    broken = tmp_path / "item_database.json"
    broken.write_text('{"A-1": {"category": "x", "price": 1},\n oops}')
    with pytest.raises(DataContractError, match=r"item_database.json: not valid JSON at line 2"):
        Catalog.load(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(DataContractError, match="expected a JSON object"):
        Catalog.load(broken)


def test_load_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "item_database.json"
    path.write_text(json.dumps(DATA))
    assert Catalog.load(path).lookup("x_3") == Item("X_3", "Tops & Tees", 35.0)
