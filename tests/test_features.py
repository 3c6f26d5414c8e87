"""The shared feature builder: per-request row() must equal training frame()."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from fitting_room.catalog import Catalog
from fitting_room.features import FeatureBuilder
from tests.factories import load_synthetic

CATALOG = Catalog.from_mapping(
    {
        "A-1": {"category": "Shoes/Running", "price": 90.0},
        "b.2": {"category": "Tops & Tees", "price": 20.0},
        "X_3": {"category": "Tops & Tees", "price": 40.0},
    }
)


def _value(builder: FeatureBuilder, x: np.ndarray, name: str) -> float:
    return float(x[builder.feature_names.index(name)])


def test_row_counts_shares_prices_and_time() -> None:
    builder = FeatureBuilder(CATALOG.categories, timezone="Europe/Berlin")
    x, unknown = builder.row([" a-1", "B.2", "x_3 "], datetime(2024, 3, 2, 9, 30, tzinfo=UTC), CATALOG)
    assert unknown == []
    assert x.shape == (len(builder.feature_names),)
    assert _value(builder, x, "n_items") == 3
    assert _value(builder, x, "count[Tops & Tees]") == 2
    assert _value(builder, x, "share[Shoes/Running]") == pytest.approx(1 / 3)
    assert _value(builder, x, "price_sum") == 150.0
    assert _value(builder, x, "price_max") == 90.0
    assert _value(builder, x, "price_min") == 20.0
    assert _value(builder, x, "hour") == 10.5  # 09:30 UTC is 10:30 in Berlin
    assert _value(builder, x, "weekday") == 5
    assert _value(builder, x, "is_weekend") == 1


def test_unknown_ids_fall_back_to_typical_item_and_are_reported() -> None:
    builder = FeatureBuilder(CATALOG.categories)
    x, unknown = builder.row(["A-1", " ghost-7 "], datetime(2024, 3, 4, 12, tzinfo=UTC), CATALOG)
    assert unknown == [" ghost-7 "]
    typical = CATALOG.typical_item
    assert typical.category == "Tops & Tees"
    assert _value(builder, x, f"count[{typical.category}]") == 1
    assert _value(builder, x, "price_sum") == 90.0 + typical.price


def test_empty_session() -> None:
    builder = FeatureBuilder(CATALOG.categories)
    x, unknown = builder.row([], datetime(2024, 3, 4, 12, tzinfo=UTC), CATALOG)
    assert unknown == [] and _value(builder, x, "n_items") == 0 and _value(builder, x, "price_max") == 0


def test_time_is_read_in_store_zone_whatever_the_input_offset() -> None:
    builder = FeatureBuilder(CATALOG.categories, timezone="America/New_York")
    utc, _ = builder.row(["A-1"], datetime(2024, 7, 1, 16, 0, tzinfo=UTC), CATALOG)
    local, _ = builder.row(["A-1"], datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("America/New_York")), CATALOG)
    np.testing.assert_array_equal(utc, local)
    assert _value(builder, utc, "hour") == 12.0


def test_row_equals_frame_exactly(tmp_path: Path) -> None:
    sessions, catalog, _ = load_synthetic(tmp_path, 300, seed=4, timezone="Europe/Berlin")
    # An unknown id, an empty session and a category missing from the schema.
    scans = sessions["entry_scans"].tolist()
    scans[0], scans[1] = ["ghost", "A-1"], []
    sessions["entry_scans"] = scans
    builder = FeatureBuilder(catalog.categories[1:], timezone="Europe/Berlin")
    frame = builder.frame(sessions, catalog)
    rows = np.vstack(
        [
            builder.row(items, t.to_pydatetime(), catalog)[0]
            for items, t in zip(sessions["entry_scans"], sessions["entry_time"], strict=True)
        ]
    )
    np.testing.assert_array_equal(frame, rows)


def test_frame_of_no_sessions() -> None:
    empty = pd.DataFrame(
        {"entry_scans": pd.Series([], dtype=object), "entry_time": pd.Series([], dtype="datetime64[ns, UTC]")}
    )
    builder = FeatureBuilder(CATALOG.categories)
    assert builder.frame(empty, CATALOG).shape == (0, len(builder.feature_names))


def test_builder_pickles_with_its_schema() -> None:
    import pickle

    builder = FeatureBuilder(CATALOG.categories, timezone="Asia/Tokyo")
    clone = pickle.loads(pickle.dumps(builder))
    assert clone.schema == builder.schema
    when = datetime(2024, 3, 4, 12, tzinfo=UTC)
    np.testing.assert_array_equal(clone.row(["A-1"], when, CATALOG)[0], builder.row(["A-1"], when, CATALOG)[0])
