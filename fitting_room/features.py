"""The one feature builder for the duration model, shared by training (frame) and the API (row).

A session's features describe the items taken into the room (counts and share per category,
price statistics, item count) and the entry time in the store's time zone (hour of day and
weekday, with cyclic encodings). `row` is the per-request path (plain Python + numpy, dict
lookups); `frame` is its vectorised twin for training and must produce identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from fitting_room.catalog import Catalog, Item

# Bump when the meaning or order of features changes: saved models built for another schema are refused.
FEATURE_SCHEMA_VERSION = 1
ITEMS_COLUMN = "entry_scans"  # what the API knows when a session starts: the items scanned in


def _read_only(values: np.ndarray) -> np.ndarray:
    """The array, made immutable so module constants cannot drift."""
    values.flags.writeable = False
    return values


# The time block comes from lookup tables, the one definition row() and frame() both index, so they return
# bit-identical values (vectorised and scalar sin/cos may differ in the last bit).
_MINUTES_PER_DAY = 24 * 60
_MINUTE = np.arange(_MINUTES_PER_DAY)
_DAY_ANGLE = 2.0 * np.pi * _MINUTE / _MINUTES_PER_DAY
# Per minute of the day: hour (with minutes as a fraction), hour_sin, hour_cos.
_DAY_BLOCK = _read_only(np.column_stack((_MINUTE / 60.0, np.sin(_DAY_ANGLE), np.cos(_DAY_ANGLE))))
_WEEKDAY = np.arange(7)
_WEEK_ANGLE = 2.0 * np.pi * _WEEKDAY / 7
# Per weekday (Monday 0): weekday, weekday_sin, weekday_cos, is_weekend.
_WEEK_BLOCK = _read_only(np.column_stack((_WEEKDAY, np.sin(_WEEK_ANGLE), np.cos(_WEEK_ANGLE), _WEEKDAY >= 5)))
# The same rows as Python floats for row(): one list per request instead of a dozen numpy writes.
_DAY_ROWS: tuple[tuple[float, ...], ...] = tuple(map(tuple, _DAY_BLOCK.tolist()))
_WEEK_ROWS: tuple[tuple[float, ...], ...] = tuple(map(tuple, _WEEK_BLOCK.tolist()))
_HEAD = ("n_items", "n_categories")
_PRICE = ("price_sum", "price_mean", "price_max", "price_min")
_TIME = ("hour", "hour_sin", "hour_cos", "weekday", "weekday_sin", "weekday_cos", "is_weekend")


class FeatureBuilder:
    """Fitted feature schema (categories, store time zone, feature names); picklable."""

    def __init__(self, categories: Sequence[str], timezone: str = "UTC") -> None:
        """Schema for these categories (order kept) with time-of-day read in `timezone` (IANA name)."""
        if len(set(categories)) != len(categories):
            raise ValueError("categories must be unique")
        self.categories: tuple[str, ...] = tuple(categories)
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._category_index = {c: i for i, c in enumerate(self.categories)}
        n_cat = len(self.categories)
        self._count_at = len(_HEAD)
        self._share_at = self._count_at + n_cat
        self._price_at = self._share_at + n_cat
        self._time_at = self._price_at + len(_PRICE)
        self.feature_names: tuple[str, ...] = (
            *_HEAD,
            *(f"count[{c}]" for c in self.categories),
            *(f"share[{c}]" for c in self.categories),
            *_PRICE,
            *_TIME,
        )

    @property
    def n_features(self) -> int:
        """Length of a feature row."""
        return len(self.feature_names)

    @property
    def schema(self) -> dict[str, Any]:
        """Everything a saved model must agree on to reuse this builder."""
        return {
            "version": FEATURE_SCHEMA_VERSION,
            "timezone": self.timezone,
            "categories": list(self.categories),
            "feature_names": list(self.feature_names),
        }

    def row(self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog) -> tuple[np.ndarray, list[str]]:
        """Features of one session (1-D float64) and the ids missing from the catalogue, as given."""
        # Plain Python floats, one array at the end: numpy calls on single values cost more than the arithmetic.
        counts = [0.0] * len(self.categories)
        unknown: list[str] = []
        total, highest, lowest = 0.0, -math.inf, math.inf
        category_index = self._category_index
        for raw in item_ids:
            item = catalog.lookup(raw)
            if item is None:
                unknown.append(raw)
                item = catalog.typical_item
            index = category_index.get(item.category)
            if index is not None:
                counts[index] += 1.0
            price = item.price
            total += price
            highest = max(highest, price)
            lowest = min(lowest, price)
        n = len(item_ids)
        if n:
            shares = [count / n for count in counts]
            prices = [total, total / n, highest, lowest]
        else:
            shares = counts  # all zero, like the prices
            prices = [0.0] * len(_PRICE)
        local = entry_time.astimezone(self._zone) if entry_time.tzinfo else entry_time
        x = np.array(
            [
                n,
                len(counts) - counts.count(0.0),
                *counts,
                *shares,
                *prices,
                *_DAY_ROWS[local.hour * 60 + local.minute],
                *_WEEK_ROWS[local.weekday()],
            ],
            dtype=np.float64,
        )
        return x, unknown

    def frame(self, sessions: pd.DataFrame, catalog: Catalog) -> np.ndarray:
        """Features of many sessions (n x n_features), identical to row() on each; uses entry_scans."""
        lists = sessions[ITEMS_COLUMN].tolist()
        n = len(lists)
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
        owner = np.repeat(np.arange(n), lengths)
        category, price = self._item_arrays(list(chain.from_iterable(lists)), catalog)
        x = np.zeros((n, self.n_features))
        known = category >= 0
        np.add.at(x, (owner[known], self._count_at + category[known]), 1.0)
        counts = x[:, self._count_at : self._share_at]
        x[:, 0] = lengths
        x[:, 1] = np.count_nonzero(counts, axis=1)
        # bincount adds in input order from 0.0, exactly like the running sum in row().
        total = np.bincount(owner, weights=price, minlength=n)
        highest = np.full(n, -np.inf)
        lowest = np.full(n, np.inf)
        np.maximum.at(highest, owner, price)
        np.minimum.at(lowest, owner, price)
        filled = lengths > 0
        x[filled, self._share_at : self._price_at] = counts[filled] / lengths[filled, None]
        x[filled, self._price_at : self._time_at] = np.column_stack(
            (total, total / np.maximum(lengths, 1), highest, lowest)
        )[filled]
        local = sessions["entry_time"].dt.tz_convert(self._zone)
        minute = (local.dt.hour * 60 + local.dt.minute).to_numpy(dtype=np.int64)
        self._fill_time(x, minute, local.dt.day_of_week.to_numpy(dtype=np.int64))
        return x

    def _item_arrays(self, flat_ids: list[str], catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """Category index (-1 outside the schema) and price per scanned id; unknown ids -> typical item."""
        resolved: dict[str, Item] = {}
        for raw in set(flat_ids):
            item = catalog.lookup(raw)
            resolved[raw] = item if item is not None else catalog.typical_item
        index = self._category_index
        category = np.fromiter(
            (index.get(resolved[r].category, -1) for r in flat_ids), dtype=np.int64, count=len(flat_ids)
        )
        price = np.fromiter((resolved[r].price for r in flat_ids), dtype=float, count=len(flat_ids))
        return category, price

    def _fill_time(self, x: np.ndarray, minute_of_day: np.ndarray, weekday: np.ndarray) -> None:
        """Write the time block of every row in place."""
        at = self._time_at
        x[:, at : at + _DAY_BLOCK.shape[1]] = _DAY_BLOCK[minute_of_day]
        x[:, at + _DAY_BLOCK.shape[1] : at + len(_TIME)] = _WEEK_BLOCK[weekday]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the schema only; the zone object is rebuilt from its name."""
        return {"categories": self.categories, "timezone": self.timezone}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from the pickled schema."""
        self.__init__(state["categories"], state["timezone"])  # type: ignore[misc]
