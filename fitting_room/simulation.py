"""Seeded generative model of a clothing store's fitting rooms, used to create mock training data.

Files written by `write` (the data contract; `simulate_data.py` is the CLI):

* ``item_database.json``: ``{item_id: {"category", "price", "name", "size", "color", ...}}``.
* ``historical_sessions.csv``: one row per finished session with ``session_id, room_id,
  entry_time, exit_time, duration, entry_scans, exit_scans, item_ids, is_anomaly,
  anomaly_type``. Scans are JSON lists of item ids, ``item_ids`` equals ``entry_scans``,
  ``duration`` is ``exit_time - entry_time`` in minutes rounded to 2 decimals (timestamps
  are whole seconds), ``is_anomaly`` is ``true``/``false``, ``anomaly_type`` is empty or one
  of ``theft``, ``tag_swap``, ``overstay``. Rows are in chronological order of entry.
* ``simulation_truth.csv`` (evaluation only, never for training): ``session_id,
  true_median_duration, true_q05, true_q95, is_anomaly, anomaly_type, benign_event``.

Generative process (all parameters live in a frozen `Profile`; two are shipped: ``default``
and ``boutique``; every random draw comes from ``numpy.random.default_rng`` seeded by
``seed``, so the same seed and profile give byte-identical files):

1. Catalogue. Each category has a popularity share, a lognormal list price
   (``price_median``, ``price_sigma``) and a try-on time in minutes. Items are split over
   categories in proportion to popularity (at least one each), shuffled over the ids, and
   get a lognormal(0, 0.6) popularity weight within their category.
2. Arrivals. The store is open on days with ``weekday_traffic > 0`` from ``open_hour`` to
   ``close_hour`` local time. Every room runs independently through the day: after the
   previous customer leaves (plus a fixed changeover) the room stays empty for an
   exponential gap with mean ``mean_idle_gap_minutes / (hour_traffic[h] *
   weekday_traffic[d])``, h being the hour the room became free, so busy hours and days
   produce more and denser sessions and a room never holds two sessions at once. No
   session starts later than ``last_entry_minutes`` before closing. Days follow each other
   from ``start_date`` until enough sessions exist; the first ``n_sessions`` in time order
   are kept.
3. Basket. The item count n follows ``item_count_probs`` (P(n=1), P(n=2), ...; most
   sessions hold 1-5 items); items are drawn without replacement with probability
   ``category popularity * item weight / category weight``.
4. Duration in minutes, for a normal session:
   ``base = (setup_minutes + sum_i tryon[cat_i] * n ** -fatigue_exponent)
   * hour_effect[entry hour] * weekday_effect[entry weekday]`` and
   ``duration = base * exp(sigma(n) * Z)``, Z ~ N(0, 1), with heteroscedastic noise
   ``sigma(n) = noise_sigma + noise_sigma_per_item * (n - 1)``. The hour and weekday effects
   are step functions of the local entry hour and weekday.
5. Labelled anomalies (``is_anomaly`` true), drawn per session before the duration:
   ``theft`` with probability ``theft_rate * theft_hour_factor[entry hour]``, ``tag_swap``
   with probability ``tag_swap_rate`` when the basket allows one (some item has a strictly
   cheaper item of its category outside the basket; otherwise 0), ``overstay`` with
   probability ``overstay_rate``. Each anomaly multiplies the duration by a log-uniform
   factor on ``[low, high]`` (``theft_duration``, ``tag_swap_duration``,
   ``overstay_duration``; overstay is 2.5-5x in the default profile). A thief takes 1 item
   (2 with ``theft_two_items_prob`` when n >= 2), chosen with weight ``price **
   theft_price_power``, so expensive items go missing. A tag swapper removes one such item
   (same price weighting) and the exit reader sees instead a strictly cheaper item of the
   same category that was not in the basket, in the same list position.
6. Benign events (``is_anomaly`` false), only in otherwise normal sessions and without any
   effect on duration: ``left_in_room`` (rate ``left_in_room_rate``) and ``read_miss`` (rate
   ``read_miss_rate``) each drop one uniformly chosen item from ``exit_scans``. They mimic
   a one-item theft, but the missing item is not price-biased, the session is not longer
   and the hour pattern is flat, so separating them is possible but not perfect.
   Tag swaps are the only sessions whose exit scans contain an item that was not scanned
   at entry.

Truth. ``true_median_duration``, ``true_q05`` and ``true_q95`` are quantiles of the
distribution of the duration of ALL sessions (the mixture of the normal and the three
anomalous components, with the session's own mixture weights) given the session's
covariates: its items and its entry time. That is what a model trained on the whole
history would estimate. Each mixture component is ``log(duration / base) = sigma(n) * Z +
U`` with U uniform on ``[log low, log high]`` (U = 0 for normal sessions); its CDF has the
closed form ``sigma / (b - a) * (G((z - a) / sigma) - G((z - b) / sigma))`` with ``G(t) =
t * Phi(t) + phi(t)``. The mixture quantile is found with Brent's method (xtol 1e-12) for
each distinct (sigma, weights) combination, so the truth is exact (written with 4 decimals);
recorded durations are rounded to whole seconds, which is negligible at these scales. On
200,000 sessions of either profile 49.9 % of durations fall at or below the true median and
90.0 % inside [true_q05, true_q95], also within every basket size and entry hour.
Timestamps: the default profile writes ``+00:00`` offsets, the boutique naive local times;
the hour and weekday effects always apply to the local time as written.

For model builders (values: default / boutique): noise sigma 0.25 + 0.012 per extra item /
0.38 + 0.010 per extra item; anomaly rates theft ~1.2 % / ~0.6 % (hour dependent), tag_swap
0.8 % / 1.2 %, overstay 1.8 % / 3.0 % (about 3.8 % / 4.8 % of sessions labelled in total);
benign misses left_in_room 2.0 % / 3.0 % and read_miss 1.5 % / 2.5 % of normal sessions.
Try-on times are not in the item database: a model has to learn them per category.

In-process API for other tools (e.g. a store-day replay): `Profile`, `get_profile`,
`Catalog`, `generate`, `write`, `sample_durations`, `base_durations`, `true_quantiles`
and `true_median`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, special

from fitting_room.errors import InvalidRequestError
from fitting_room.history import CONTRACT_COLUMNS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TRUTH_COLUMNS: tuple[str, ...] = (
    "session_id",
    "true_median_duration",
    "true_q05",
    "true_q95",
    "is_anomaly",
    "anomaly_type",
    "benign_event",
)
ITEM_DATABASE_FILE = "item_database.json"
SESSIONS_FILE = "historical_sessions.csv"
TRUTH_FILE = "simulation_truth.csv"

# Label codes: index into ANOMALY_TYPES and into the columns of the mixture weights.
NORMAL, THEFT, TAG_SWAP, OVERSTAY = 0, 1, 2, 3
ANOMALY_TYPES: tuple[str, ...] = ("", "theft", "tag_swap", "overstay")
NO_EVENT, LEFT_IN_ROOM, READ_MISS = 0, 1, 2
BENIGN_EVENTS: tuple[str, ...] = ("", "left_in_room", "read_miss")

_SECONDS_PER_DAY = 86_400
# Duplicate items in a basket are redrawn; the cap only bites for tiny catalogues, whose
# remaining rows then get an exact draw without replacement.
_MAX_DEDUP_ROUNDS = 50


@dataclass(frozen=True)
class CategorySpec:
    """One product category: demand share, lognormal list price and try-on time."""

    name: str
    popularity: float
    price_median: float
    price_sigma: float
    tryon_minutes: float
    sizes: tuple[str, ...]
    nouns: tuple[str, ...]


@dataclass(frozen=True)
class FactorRange:
    """Duration multiplier drawn log-uniformly on [low, high] (low == high: constant)."""

    low: float
    high: float


@dataclass(frozen=True)
class Profile:
    """All parameters of one simulated store; see the module docstring for their roles."""

    name: str
    id_style: Literal["sku", "boutique"]
    session_id_prefix: str
    categories: tuple[CategorySpec, ...]
    colors: tuple[str, ...]
    adjectives: tuple[str, ...]
    materials: tuple[str, ...]
    price_rounding: Literal["99", "5"]
    room_ids: tuple[str, ...]
    start_date: str
    utc_offset_minutes: int
    write_utc_offset: bool
    open_hour: int
    close_hour: int
    last_entry_minutes: int
    changeover_seconds: int
    hour_traffic: tuple[float, ...]
    weekday_traffic: tuple[float, ...]
    mean_idle_gap_minutes: float
    hour_effect: tuple[float, ...]
    weekday_effect: tuple[float, ...]
    item_count_probs: tuple[float, ...]
    setup_minutes: float
    fatigue_exponent: float
    noise_sigma: float
    noise_sigma_per_item: float
    theft_rate: float
    theft_hour_factor: tuple[float, ...]
    theft_two_items_prob: float
    theft_price_power: float
    theft_duration: FactorRange
    tag_swap_rate: float
    tag_swap_duration: FactorRange
    overstay_rate: float
    overstay_duration: FactorRange
    left_in_room_rate: float
    read_miss_rate: float

    def __post_init__(self) -> None:
        """Reject inconsistent parameters early, so a typo cannot yield silent nonsense."""
        n_hours = self.close_hour - self.open_hour
        if not 0 <= self.open_hour < self.close_hour <= 24:
            raise InvalidRequestError(f"profile {self.name}: bad opening hours")
        for label, values in (
            ("hour_traffic", self.hour_traffic),
            ("hour_effect", self.hour_effect),
            ("theft_hour_factor", self.theft_hour_factor),
        ):
            if len(values) != n_hours:
                raise InvalidRequestError(f"profile {self.name}: {label} needs {n_hours} values")
        if not 0 <= self.last_entry_minutes < n_hours * 60:
            raise InvalidRequestError(f"profile {self.name}: last entry must fall within opening hours")
        if len(self.weekday_traffic) != 7 or len(self.weekday_effect) != 7:
            raise InvalidRequestError(f"profile {self.name}: weekday tuples need 7 values")
        if min(self.hour_traffic) <= 0 or max(self.weekday_traffic) <= 0:
            raise InvalidRequestError(f"profile {self.name}: traffic must be positive")
        if abs(sum(self.item_count_probs) - 1.0) > 1e-9:
            raise InvalidRequestError(f"profile {self.name}: item_count_probs must sum to 1")
        if len({c.name for c in self.categories}) != len(self.categories):
            raise InvalidRequestError(f"profile {self.name}: duplicate category names")
        worst = self.theft_rate * max(self.theft_hour_factor) + self.tag_swap_rate + self.overstay_rate
        if worst >= 1.0 or self.left_in_room_rate + self.read_miss_rate >= 1.0:
            raise InvalidRequestError(f"profile {self.name}: event rates too large")
        for fr in (self.theft_duration, self.tag_swap_duration, self.overstay_duration):
            if not 0 < fr.low <= fr.high:
                raise InvalidRequestError(f"profile {self.name}: bad factor range {fr}")

    @property
    def max_items(self) -> int:
        """Largest basket the profile can draw."""
        return len(self.item_count_probs)

    def noise_sigma_for(self, n_items: npt.ArrayLike) -> FloatArray:
        """Lognormal noise sigma for baskets of the given sizes (at least one item)."""
        n = np.maximum(np.asarray(n_items, dtype=np.float64), 1.0)
        return self.noise_sigma + self.noise_sigma_per_item * (n - 1.0)


_CLOTHING_SIZES = ("XS", "S", "M", "L", "XL")
_EU_SIZES = ("34", "36", "38", "40", "42", "44")
_SUIT_SIZES = ("46", "48", "50", "52", "54", "56")

DEFAULT_PROFILE = Profile(
    name="default",
    id_style="sku",
    session_id_prefix="sess-",
    categories=(
        CategorySpec("tops", 0.24, 25.0, 0.35, 3.0, _CLOTHING_SIZES, ("t-shirt", "blouse", "top")),
        CategorySpec("trousers", 0.16, 45.0, 0.30, 4.5, ("W28", "W30", "W32", "W34", "W36"), ("jeans", "chinos")),
        CategorySpec("dresses", 0.14, 55.0, 0.40, 5.0, _EU_SIZES, ("dress", "maxi dress")),
        CategorySpec("jackets", 0.09, 90.0, 0.40, 4.0, _CLOTHING_SIZES, ("jacket", "parka")),
        CategorySpec("skirts", 0.08, 35.0, 0.30, 3.5, _EU_SIZES, ("skirt", "mini skirt")),
        CategorySpec("knitwear", 0.12, 50.0, 0.35, 3.5, _CLOTHING_SIZES, ("jumper", "cardigan")),
        CategorySpec("accessories", 0.07, 18.0, 0.50, 1.0, ("one size",), ("belt", "cap", "scarf")),
        CategorySpec(
            "shoes",
            0.10,
            70.0,
            0.40,
            3.0,
            ("37", "38", "39", "40", "41", "42", "43", "44"),
            ("sneakers", "boots"),
        ),
    ),
    colors=("black", "white", "navy", "grey", "beige", "red", "olive", "blue"),
    adjectives=("classic", "slim", "relaxed", "cropped", "oversized", "basic"),
    materials=(),
    price_rounding="99",
    room_ids=tuple(f"room_{i}" for i in range(1, 7)),
    start_date="2026-01-05",
    utc_offset_minutes=0,
    write_utc_offset=True,
    open_hour=9,
    close_hour=21,
    last_entry_minutes=10,
    changeover_seconds=30,
    # 09 .. 20 h: slow morning, lunch peak, after-work peak.
    hour_traffic=(0.35, 0.55, 0.70, 0.95, 0.90, 0.75, 0.80, 0.90, 1.00, 1.00, 0.80, 0.50),
    weekday_traffic=(0.75, 0.75, 0.80, 0.85, 1.00, 1.35, 1.15),
    mean_idle_gap_minutes=6.0,
    # Lunch-break shoppers hurry, evening and weekend shoppers take their time.
    hour_effect=(1.05, 1.05, 1.00, 0.88, 0.90, 1.00, 1.00, 1.00, 1.05, 1.08, 1.10, 1.00),
    weekday_effect=(0.97, 0.97, 0.98, 1.00, 1.02, 1.08, 1.10),
    item_count_probs=(0.20, 0.23, 0.19, 0.13, 0.09, 0.06, 0.04, 0.025, 0.015, 0.01, 0.006, 0.004),
    setup_minutes=2.0,
    fatigue_exponent=0.15,
    noise_sigma=0.25,
    noise_sigma_per_item=0.012,
    theft_rate=0.012,
    theft_hour_factor=(0.7, 0.7, 0.8, 1.0, 1.0, 0.8, 0.8, 0.9, 1.0, 1.3, 1.6, 1.9),
    theft_two_items_prob=0.35,
    theft_price_power=2.0,
    theft_duration=FactorRange(1.1, 1.6),
    tag_swap_rate=0.008,
    tag_swap_duration=FactorRange(1.05, 1.4),
    overstay_rate=0.018,
    overstay_duration=FactorRange(2.5, 5.0),
    left_in_room_rate=0.02,
    read_miss_rate=0.015,
)

BOUTIQUE_PROFILE = Profile(
    name="boutique",
    id_style="boutique",
    session_id_prefix="BQ",
    categories=(
        CategorySpec("suits", 0.18, 650.0, 0.35, 9.0, _SUIT_SIZES, ("two-piece suit", "tuxedo")),
        CategorySpec(
            "shirts",
            0.24,
            140.0,
            0.30,
            3.5,
            ("38", "39", "40", "41", "42", "43"),
            ("dress shirt", "oxford shirt"),
        ),
        CategorySpec("evening wear", 0.16, 900.0, 0.45, 8.0, _EU_SIZES, ("gown", "cocktail dress")),
        CategorySpec("blazers", 0.14, 420.0, 0.35, 5.5, _SUIT_SIZES, ("blazer", "sport coat")),
        CategorySpec("coats", 0.10, 780.0, 0.40, 4.5, _CLOTHING_SIZES, ("overcoat", "trench coat")),
        CategorySpec("silk scarves", 0.10, 160.0, 0.35, 1.2, ("one size",), ("scarf", "carre")),
        CategorySpec("leather goods", 0.08, 380.0, 0.45, 1.5, ("one size",), ("belt", "gloves", "clutch")),
    ),
    colors=("charcoal", "midnight", "ivory", "burgundy", "camel", "forest"),
    adjectives=("tailored", "double-breasted", "bespoke", "heritage", "atelier"),
    materials=("wool", "silk", "cashmere", "linen", "leather", "cotton"),
    price_rounding="5",
    room_ids=("suite-A", "suite-B", "suite-C", "suite-D"),
    start_date="2026-02-02",
    utc_offset_minutes=60,
    write_utc_offset=False,
    open_hour=10,
    close_hour=19,
    last_entry_minutes=20,
    changeover_seconds=120,
    # 10 .. 18 h: quiet start, steady afternoon; Sunday closed, Saturday busiest.
    hour_traffic=(0.40, 0.60, 0.80, 0.70, 0.90, 1.00, 1.00, 0.85, 0.60),
    weekday_traffic=(0.50, 0.80, 0.80, 0.90, 1.10, 1.60, 0.0),
    mean_idle_gap_minutes=14.0,
    hour_effect=(0.95, 1.00, 1.00, 0.92, 1.05, 1.10, 1.12, 1.05, 0.95),
    weekday_effect=(1.00, 1.00, 1.00, 1.05, 1.05, 1.15, 1.00),
    item_count_probs=(0.30, 0.27, 0.18, 0.11, 0.07, 0.04, 0.02, 0.01),
    setup_minutes=4.0,
    fatigue_exponent=0.25,
    noise_sigma=0.38,
    noise_sigma_per_item=0.01,
    theft_rate=0.006,
    # Thefts cluster around the staff lunch hour, when the floor is thin.
    theft_hour_factor=(0.8, 0.9, 1.0, 1.6, 1.4, 1.0, 0.9, 0.9, 0.8),
    theft_two_items_prob=0.25,
    theft_price_power=1.5,
    theft_duration=FactorRange(1.2, 1.8),
    tag_swap_rate=0.012,
    tag_swap_duration=FactorRange(1.1, 1.5),
    overstay_rate=0.03,
    overstay_duration=FactorRange(2.0, 4.0),
    left_in_room_rate=0.03,
    read_miss_rate=0.025,
)

PROFILES: Mapping[str, Profile] = MappingProxyType(
    {DEFAULT_PROFILE.name: DEFAULT_PROFILE, BOUTIQUE_PROFILE.name: BOUTIQUE_PROFILE}
)


def get_profile(name: str) -> Profile:
    """Return the shipped profile called `name` (``default`` or ``boutique``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidRequestError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


@dataclass(frozen=True)
class Catalog:
    """Item catalogue as parallel arrays, plus lookups the simulator needs per category."""

    ids: tuple[str, ...]
    category: IntArray
    price: FloatArray
    draw_prob: FloatArray
    attributes: tuple[dict[str, Any], ...]
    category_names: tuple[str, ...]
    tryon: FloatArray
    n_cheaper: IntArray
    category_pos: IntArray
    by_category: IntArray

    @classmethod
    def build(
        cls,
        profile: Profile,
        ids: Sequence[str],
        category: IntArray,
        price: FloatArray,
        draw_prob: FloatArray,
        attributes: Sequence[dict[str, Any]],
    ) -> Catalog:
        """Derive the per-category price ranks from the raw item arrays."""
        n_cat = len(profile.categories)
        # Stable price order within each category: position p holds the p-th cheapest item.
        order = np.lexsort((np.arange(len(ids)), price, category))
        counts = np.bincount(category, minlength=n_cat)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        by_category = np.full((n_cat, max(int(counts.max()), 1)), -1, dtype=np.int64)
        category_pos = np.empty(len(ids), dtype=np.int64)
        n_cheaper = np.empty(len(ids), dtype=np.int64)
        for c in range(n_cat):
            members = order[starts[c] : starts[c] + counts[c]]
            by_category[c, : counts[c]] = members
            category_pos[members] = np.arange(counts[c])
            # Strictly cheaper only: a swapped-in tag must show a lower price.
            n_cheaper[members] = np.searchsorted(price[members], price[members], side="left")
        tryon = np.array([c.tryon_minutes for c in profile.categories])[category]
        return cls(
            ids=tuple(ids),
            category=category.astype(np.int64),
            price=price.astype(np.float64),
            draw_prob=draw_prob.astype(np.float64),
            attributes=tuple(attributes),
            category_names=tuple(c.name for c in profile.categories),
            tryon=tryon.astype(np.float64),
            n_cheaper=n_cheaper,
            category_pos=category_pos,
            by_category=by_category,
        )

    @classmethod
    def from_item_database(cls, profile: Profile, item_database: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """Rebuild a catalogue from an ``item_database.json`` mapping (uniform draw weights)."""
        names = {c.name: i for i, c in enumerate(profile.categories)}
        ids = sorted(item_database)
        try:
            category = np.array([names[item_database[i]["category"]] for i in ids], dtype=np.int64)
            price = np.array([float(item_database[i]["price"]) for i in ids])
        except KeyError as err:
            raise InvalidRequestError(f"item database does not match profile {profile.name}: {err}") from None
        pop = np.array([c.popularity for c in profile.categories])
        per_cat = np.bincount(category, minlength=len(pop)).astype(np.float64)
        draw = pop[category] / per_cat[category]
        attrs = [dict(item_database[i]) for i in ids]
        return cls.build(profile, ids, category, price, draw / draw.sum(), attrs)

    def item_database(self) -> dict[str, dict[str, Any]]:
        """The ``item_database.json`` content, keyed by item id in id order."""
        return {item_id: dict(attrs) for item_id, attrs in zip(self.ids, self.attributes, strict=True)}

    def encode(self, item_lists: Sequence[Sequence[str]]) -> IntArray:
        """Item-id lists to a (sessions, longest list) index matrix padded with -1."""
        index = {item_id: i for i, item_id in enumerate(self.ids)}
        k = max([len(items) for items in item_lists] + [1])
        out = np.full((len(item_lists), k), -1, dtype=np.int64)
        for row, items in enumerate(item_lists):
            try:
                out[row, : len(items)] = [index[i] for i in items]
            except KeyError as err:
                raise InvalidRequestError(f"unknown item id {err} in session {row}") from None
        return out


@dataclass(frozen=True)
class SimulatedData:
    """Everything `generate` produces; `sessions` and `truth` hold the CSV columns."""

    profile: Profile
    catalog: Catalog
    item_database: dict[str, dict[str, Any]]
    sessions: pd.DataFrame
    truth: pd.DataFrame


def make_catalog(profile: Profile, n_items: int, rng: np.random.Generator) -> Catalog:
    """Draw a catalogue of `n_items` items for `profile`."""
    n_cat = len(profile.categories)
    if n_items < n_cat:
        raise InvalidRequestError(f"profile {profile.name} needs at least {n_cat} items (one per category)")
    pop = np.array([c.popularity for c in profile.categories])
    pop = pop / pop.sum()
    # Largest-remainder split with one item per category guaranteed.
    raw = 1 + pop * (n_items - n_cat)
    counts = np.floor(raw).astype(np.int64)
    short = n_items - int(counts.sum())
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    category = rng.permutation(np.repeat(np.arange(n_cat), counts))

    med = np.array([c.price_median for c in profile.categories])[category]
    psig = np.array([c.price_sigma for c in profile.categories])[category]
    raw_price = med * np.exp(psig * rng.standard_normal(n_items))
    if profile.price_rounding == "99":
        price = np.maximum(np.floor(raw_price), 1.0) + 0.99
    else:
        price = np.maximum(np.round(raw_price / 5.0) * 5.0, 5.0)
    price = np.round(price, 2)

    weight = np.exp(0.6 * rng.standard_normal(n_items))
    cat_weight = np.bincount(category, weights=weight, minlength=n_cat)
    draw_prob = pop[category] * weight / cat_weight[category]
    draw_prob = draw_prob / draw_prob.sum()

    ids = _item_ids(profile, n_items, rng)
    color = rng.integers(0, len(profile.colors), n_items)
    adjective = rng.integers(0, len(profile.adjectives), n_items)
    noun_pick = rng.random(n_items)
    size_pick = rng.random(n_items)
    material = rng.integers(0, max(len(profile.materials), 1), n_items)
    attrs: list[dict[str, Any]] = []
    for i in range(n_items):
        spec = profile.categories[int(category[i])]
        noun = spec.nouns[int(noun_pick[i] * len(spec.nouns))]
        entry: dict[str, Any] = {
            "category": spec.name,
            "price": float(price[i]),
            "name": f"{profile.colors[color[i]].title()} {profile.adjectives[adjective[i]]} {noun}",
            "size": spec.sizes[int(size_pick[i] * len(spec.sizes))],
            "color": profile.colors[color[i]],
        }
        if profile.materials:
            entry["material"] = profile.materials[material[i]]
        attrs.append(entry)
    # Id order is the catalogue order, so the JSON file lists items sorted by id.
    order = np.argsort(np.array(ids), kind="stable")
    return Catalog.build(
        profile,
        [ids[i] for i in order],
        category[order],
        price[order],
        draw_prob[order],
        [attrs[i] for i in order],
    )


def _item_ids(profile: Profile, n_items: int, rng: np.random.Generator) -> list[str]:
    """Item ids in the profile's format, unique by construction."""
    if profile.id_style == "sku":
        width = max(4, len(str(n_items - 1)))
        return [f"sku-{i:0{width}d}" for i in range(n_items)]
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: they read as digits on labels
    space = len(letters) ** 2 * 100
    if n_items > space:
        raise InvalidRequestError(f"boutique ids allow at most {space} items")
    codes = rng.choice(space, size=n_items, replace=False)
    out = []
    for code in codes.tolist():
        pair, digits = divmod(code, 100)
        a, b = letters[pair // len(letters)], letters[pair % len(letters)]
        check = (ord(a) * 3 + ord(b) * 7 + digits) % 10
        out.append(f"BTQ-{a}{b}{digits:02d}-{check}")
    return out


# ---------------------------------------------------------------------------------------
# Duration model shared by generation, sampling and truth
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Covariates:
    """Per-session quantities that fully determine the duration distribution."""

    base: FloatArray
    sigma: FloatArray
    weights: FloatArray  # (sessions, 4): normal, theft, tag_swap, overstay
    swap_slots: BoolArray  # (sessions, width): items a tag swapper could replace


def _swap_slots(catalog: Catalog, items: IntArray) -> tuple[BoolArray, IntArray]:
    """Per basket item: is there a strictly cheaper same-category item outside the basket, and how many."""
    valid = items >= 0
    safe = np.where(valid, items, 0)
    rank = catalog.n_cheaper[safe]
    n_groups = len(catalog.category_names) + 1
    rank_span = int(catalog.n_cheaper.max()) + 1
    # Key = (row, category, price rank); rows sorted separately are sorted as one flat array,
    # so two searchsorted calls count same-category basket items with a lower price rank.
    # This is O(n log n) instead of the O(n * width**2) pairwise comparison.
    group = np.arange(len(items), dtype=np.int64)[:, None] * n_groups + np.where(
        valid, catalog.category[safe], n_groups - 1
    )
    key = group * rank_span + rank
    flat = np.sort(key, axis=1).ravel()
    cheaper_inside = np.searchsorted(flat, key, side="left") - np.searchsorted(flat, group * rank_span, side="left")
    available = np.where(valid, rank - cheaper_inside, 0).astype(np.int64)
    return available > 0, available


def _hour_index(profile: Profile, hour: IntArray) -> IntArray:
    """Local clock hour to an index into the per-hour tuples (clipped to opening hours)."""
    n_hours = profile.close_hour - profile.open_hour
    return np.clip(hour - profile.open_hour, 0, n_hours - 1).astype(np.int64)


def _covariates(profile: Profile, catalog: Catalog, items: IntArray, hour: IntArray, weekday: IntArray) -> _Covariates:
    """Base duration, noise sigma and mixture weights from baskets and local entry clock."""
    valid = items >= 0
    n = valid.sum(axis=1)
    tryon = np.where(valid, catalog.tryon[np.where(valid, items, 0)], 0.0).sum(axis=1)
    fatigue = np.power(np.maximum(n, 1).astype(np.float64), -profile.fatigue_exponent)
    h = _hour_index(profile, hour)
    base = (
        (profile.setup_minutes + tryon * fatigue)
        * np.asarray(profile.hour_effect)[h]
        * np.asarray(profile.weekday_effect)[weekday]
    )
    slots, _ = _swap_slots(catalog, items)
    weights = np.empty((len(n), 4))
    weights[:, THEFT] = profile.theft_rate * np.asarray(profile.theft_hour_factor)[h] * (n > 0)
    weights[:, TAG_SWAP] = profile.tag_swap_rate * slots.any(axis=1)
    weights[:, OVERSTAY] = profile.overstay_rate
    weights[:, NORMAL] = 1.0 - weights[:, 1:].sum(axis=1)
    return _Covariates(base, profile.noise_sigma_for(n), weights, slots)


def _factor_ranges(profile: Profile) -> tuple[FactorRange, ...]:
    """Duration factor range per label code."""
    return (
        FactorRange(1.0, 1.0),
        profile.theft_duration,
        profile.tag_swap_duration,
        profile.overstay_duration,
    )


def _draw_durations(
    profile: Profile,
    cov: _Covariates,
    labels: IntArray,
    rng: np.random.Generator,
) -> FloatArray:
    """Duration in minutes: base * lognormal noise * log-uniform factor of the label."""
    z = rng.standard_normal(len(labels))
    v = rng.random(len(labels))
    ranges = _factor_ranges(profile)
    lo = np.log([r.low for r in ranges])[labels]
    hi = np.log([r.high for r in ranges])[labels]
    return np.asarray(cov.base * np.exp(cov.sigma * z + lo + v * (hi - lo)), dtype=np.float64)


def _antiderivative_phi(t: float) -> float:
    """G(t) = t * Phi(t) + phi(t), the antiderivative of the normal CDF."""
    return float(t * special.ndtr(t) + math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi))


def _component_cdf(z: float, sigma: float, factor: FactorRange) -> float:
    """P(sigma * Z + U <= z) with U uniform on [log low, log high]."""
    a, b = math.log(factor.low), math.log(factor.high)
    if b - a < 1e-12:
        return float(special.ndtr((z - a) / sigma))
    return sigma / (b - a) * (_antiderivative_phi((z - a) / sigma) - _antiderivative_phi((z - b) / sigma))


def _mixture_log_quantiles(
    profile: Profile, sigma: FloatArray, weights: FloatArray, probs: Sequence[float]
) -> FloatArray:
    """log(quantile / base) of the duration mixture for each session, shape (n, len(probs))."""
    out = np.empty((len(sigma), len(probs)))
    if len(sigma) == 0:
        return out
    ranges = _factor_ranges(profile)
    keys = np.column_stack([sigma, weights])
    # Few distinct (basket size, hour, swap-possible) combinations exist, so solve per key.
    # Column-wise codes folded into one dense integer avoid the slow row-wise np.unique(axis=0);
    # re-densifying after each column keeps the folded code from overflowing.
    combined = np.zeros(len(keys), dtype=np.int64)
    for col in keys.T:
        values, codes = np.unique(col, return_inverse=True)
        combined = np.unique(combined * len(values) + codes.reshape(-1), return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    unique = keys[first]
    top = math.log(max(r.high for r in ranges))
    solved = np.empty((len(unique), len(probs)))
    for row, key in enumerate(unique):
        s, w = float(key[0]), key[1:]

        def cdf(z: float, s: float = s, w: FloatArray = w) -> float:
            return sum(float(w[k]) * _component_cdf(z, s, ranges[k]) for k in range(4))

        lo, hi = -1.0 - 12.0 * s, top + 1.0 + 12.0 * s
        for j, p in enumerate(probs):
            solved[row, j] = optimize.brentq(lambda z, p=p: cdf(z) - p, lo, hi, xtol=1e-12)
    out[:] = solved[inverse.reshape(-1)]
    return out


# ---------------------------------------------------------------------------------------
# Public helpers for arbitrary baskets
# ---------------------------------------------------------------------------------------


def _as_catalog(profile: Profile, catalog: Catalog | Mapping[str, Mapping[str, Any]]) -> Catalog:
    """Accept either a `Catalog` or an ``item_database.json`` mapping."""
    return catalog if isinstance(catalog, Catalog) else Catalog.from_item_database(profile, catalog)


def _local_clock(profile: Profile, entry_times: Any) -> tuple[IntArray, IntArray]:
    """Local hour and weekday (Mon=0) of entry times; aware times use the profile offset."""
    ts = pd.DatetimeIndex(pd.to_datetime(entry_times))
    if ts.tz is not None:
        offset = timedelta(minutes=profile.utc_offset_minutes)
        ts = ts.tz_convert("UTC").tz_localize(None) + offset
    return (
        np.asarray(ts.hour, dtype=np.int64),
        np.asarray(ts.day_of_week, dtype=np.int64),
    )


def _prepare(
    profile: Profile,
    catalog: Catalog | Mapping[str, Mapping[str, Any]],
    item_lists: Sequence[Sequence[str]],
    entry_times: Any,
) -> _Covariates:
    """Covariates of externally supplied sessions."""
    cat = _as_catalog(profile, catalog)
    items = cat.encode(item_lists)
    hour, weekday = _local_clock(profile, entry_times)
    if len(hour) != len(items):
        raise InvalidRequestError("item_lists and entry_times differ in length")
    return _covariates(profile, cat, items, hour, weekday)


def base_durations(
    profile: Profile,
    catalog: Catalog | Mapping[str, Mapping[str, Any]],
    item_lists: Sequence[Sequence[str]],
    entry_times: Any,
) -> FloatArray:
    """Noise-free base duration (minutes) of each session: the median of a normal session."""
    return _prepare(profile, catalog, item_lists, entry_times).base


def sample_durations(
    profile: Profile,
    catalog: Catalog | Mapping[str, Mapping[str, Any]],
    item_lists: Sequence[Sequence[str]],
    entry_times: Any,
    rng: np.random.Generator,
    anomaly_types: Sequence[str] | None = None,
) -> FloatArray:
    """Draw durations (minutes); sessions are normal unless `anomaly_types` names a label."""
    cov = _prepare(profile, catalog, item_lists, entry_times)
    names = anomaly_types if anomaly_types is not None else [""] * len(cov.base)
    if len(names) != len(cov.base):
        raise InvalidRequestError("anomaly_types and item_lists differ in length")
    try:
        labels = np.array([ANOMALY_TYPES.index(a or "") for a in names], dtype=np.int64)
    except ValueError:
        raise InvalidRequestError(f"anomaly types must be among {ANOMALY_TYPES}") from None
    return _draw_durations(profile, cov, labels, rng)


def true_quantiles(
    profile: Profile,
    catalog: Catalog | Mapping[str, Mapping[str, Any]],
    item_lists: Sequence[Sequence[str]],
    entry_times: Any,
    probs: Sequence[float] = (0.05, 0.5, 0.95),
    mixture: bool = True,
) -> FloatArray:
    """True duration quantiles, shape (sessions, len(probs)); mixture=False: normal only."""
    cov = _prepare(profile, catalog, item_lists, entry_times)
    return _quantiles_from_covariates(profile, cov, probs, mixture)


def true_median(
    profile: Profile,
    catalog: Catalog | Mapping[str, Mapping[str, Any]],
    item_lists: Sequence[Sequence[str]],
    entry_times: Any,
    mixture: bool = True,
) -> FloatArray:
    """True median duration (minutes) of each session, as in ``simulation_truth.csv``."""
    return true_quantiles(profile, catalog, item_lists, entry_times, (0.5,), mixture)[:, 0]


def _quantiles_from_covariates(profile: Profile, cov: _Covariates, probs: Sequence[float], mixture: bool) -> FloatArray:
    """Quantiles in minutes for precomputed covariates."""
    if mixture:
        logq = _mixture_log_quantiles(profile, cov.sigma, cov.weights, probs)
    else:
        logq = cov.sigma[:, None] * special.ndtri(np.asarray(probs, dtype=np.float64))[None, :]
    return np.asarray(cov.base[:, None] * np.exp(logq), dtype=np.float64)


# ---------------------------------------------------------------------------------------
# Store simulation
# ---------------------------------------------------------------------------------------


def _weighted_pick(weights: FloatArray, u: FloatArray) -> IntArray:
    """Column index per row, drawn with probability proportional to non-negative weights."""
    cum = np.cumsum(weights, axis=1)
    target = u * cum[:, -1]
    picked = (cum <= target[:, None]).sum(axis=1)
    return np.minimum(picked, weights.shape[1] - 1).astype(np.int64)


def _draw_baskets(profile: Profile, catalog: Catalog, m: int, rng: np.random.Generator) -> IntArray:
    """(m, max_items) matrix of distinct item indices per basket, padded with -1."""
    width = profile.max_items
    n_items = len(catalog.ids)
    count_cum = np.cumsum(profile.item_count_probs)
    counts = np.searchsorted(count_cum, rng.random(m) * count_cum[-1], side="right") + 1
    counts = np.minimum(counts, min(width, n_items))
    valid = np.arange(width)[None, :] < counts[:, None]
    item_cum = np.cumsum(catalog.draw_prob)

    def draw(size: int) -> IntArray:
        picks = np.searchsorted(item_cum, rng.random(size) * item_cum[-1], side="right")
        return np.minimum(picks, n_items - 1).astype(np.int64)

    items = np.where(valid, draw(m * width).reshape(m, width), -1)
    earlier = np.tril(np.ones((width, width), dtype=bool), k=-1)
    rows = np.zeros(0, dtype=np.int64)
    for _ in range(_MAX_DEDUP_ROUNDS):
        ordered = np.sort(items, axis=1)
        rows = np.flatnonzero(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1))
        if rows.size == 0:
            return items
        sub = items[rows]
        dup = ((sub[:, :, None] == sub[:, None, :]) & earlier[None]).any(axis=2) & (sub >= 0)
        sub[dup] = draw(int(dup.sum()))
        items[rows] = sub
    # Tiny catalogues only: finish the stubborn rows exactly.
    for row in rows.tolist():
        k = int(counts[row])
        items[row, :k] = rng.choice(n_items, size=k, replace=False, p=catalog.draw_prob)
    return items


@dataclass(frozen=True)
class _Raw:
    """Sessions of a batch of days, before anomaly effects on scans are applied."""

    day: IntArray
    room: IntArray
    entry_s: IntArray
    duration_s: IntArray
    items: IntArray
    labels: IntArray
    base: FloatArray
    sigma: FloatArray
    weights: FloatArray
    swap_slots: BoolArray


def _simulate_days(
    profile: Profile,
    catalog: Catalog,
    day_offsets: IntArray,
    weekdays: IntArray,
    rng: np.random.Generator,
) -> _Raw:
    """Run every room of every given day forward, one session per step for all at once."""
    n_rooms = len(profile.room_ids)
    rd_day = np.repeat(np.arange(len(day_offsets)), n_rooms)
    rd_room = np.tile(np.arange(n_rooms), len(day_offsets))
    rd_weekday = weekdays[rd_day]
    clock = np.full(len(rd_day), profile.open_hour * 3600, dtype=np.int64)
    last_entry = profile.close_hour * 3600 - profile.last_entry_minutes * 60
    hour_traffic = np.asarray(profile.hour_traffic)
    day_traffic = np.asarray(profile.weekday_traffic)
    active = np.arange(len(rd_day))
    parts: list[_Raw] = []
    while active.size:
        h = _hour_index(profile, clock[active] // 3600)
        traffic = hour_traffic[h] * day_traffic[rd_weekday[active]]
        gap = rng.exponential(size=active.size) * profile.mean_idle_gap_minutes * 60 / traffic
        entry = clock[active] + np.rint(gap).astype(np.int64)
        keep = entry < last_entry
        active, entry = active[keep], entry[keep]
        if not active.size:
            break
        m = active.size
        items = _draw_baskets(profile, catalog, m, rng)
        cov = _covariates(profile, catalog, items, entry // 3600, rd_weekday[active])
        u = rng.random(m)
        cum = np.cumsum(cov.weights[:, [THEFT, TAG_SWAP, OVERSTAY]], axis=1)
        labels = np.where(
            u < cum[:, 0],
            THEFT,
            np.where(u < cum[:, 1], TAG_SWAP, np.where(u < cum[:, 2], OVERSTAY, NORMAL)),
        ).astype(np.int64)
        minutes = _draw_durations(profile, cov, labels, rng)
        duration_s = np.maximum(np.rint(minutes * 60.0).astype(np.int64), 1)
        clock[active] = entry + duration_s + profile.changeover_seconds
        parts.append(
            _Raw(
                rd_day[active],
                rd_room[active],
                entry,
                duration_s,
                items,
                labels,
                cov.base,
                cov.sigma,
                cov.weights,
                cov.swap_slots,
            )
        )
    return _concat(parts, profile.max_items)


def _concat(parts: Sequence[_Raw], width: int) -> _Raw:
    """Concatenate batches field by field."""
    if not parts:
        empty_i = np.zeros(0, dtype=np.int64)
        return _Raw(
            empty_i,
            empty_i,
            empty_i,
            empty_i,
            np.zeros((0, width), dtype=np.int64),
            empty_i,
            np.zeros(0),
            np.zeros(0),
            np.zeros((0, 4)),
            np.zeros((0, width), dtype=bool),
        )
    return _Raw(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Raw.__dataclass_fields__))


def _take(raw: _Raw, index: IntArray) -> _Raw:
    """Rows `index` of every field."""
    return _Raw(*(getattr(raw, f)[index] for f in _Raw.__dataclass_fields__))


def _open_days(profile: Profile, first: int, n_days: int) -> tuple[IntArray, IntArray]:
    """Offsets (from start_date) and weekdays of the next `n_days` open days from `first`."""
    start_weekday = date.fromisoformat(profile.start_date).weekday()
    offsets: list[int] = []
    day = first
    while len(offsets) < n_days:
        if profile.weekday_traffic[(start_weekday + day) % 7] > 0:
            offsets.append(day)
        day += 1
    arr = np.asarray(offsets, dtype=np.int64)
    return arr, (start_weekday + arr) % 7


def _schedule(profile: Profile, catalog: Catalog, n_sessions: int, rng: np.random.Generator) -> tuple[_Raw, IntArray]:
    """Simulate whole days until `n_sessions` exist; return the first ones and day offsets."""
    parts: list[_Raw] = []
    offsets: list[IntArray] = []
    total, next_day, batch = 0, 0, 14
    while total < n_sessions:
        days, weekdays = _open_days(profile, next_day, batch)
        raw = _simulate_days(profile, catalog, days, weekdays, rng)
        # Day indices are per batch; shift them into one running day numbering.
        done_days = sum(len(o) for o in offsets)
        parts.append(dataclasses.replace(raw, day=raw.day + done_days))
        offsets.append(days)
        total += len(raw.day)
        next_day = int(days[-1]) + 1
        per_day = max(total / max(done_days + len(days), 1), 1.0)
        batch = max(math.ceil((n_sessions - total) / per_day * 1.05) + 2, 1)
    raw = _concat(parts, profile.max_items)
    day_offsets = np.concatenate(offsets)
    absolute = day_offsets[raw.day] * _SECONDS_PER_DAY + raw.entry_s
    order = np.lexsort((raw.room, absolute))[:n_sessions]
    return _take(raw, order), day_offsets


def _apply_events(profile: Profile, catalog: Catalog, raw: _Raw, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Exit-scan matrix after thefts, tag swaps and benign misses; and benign event codes."""
    items = raw.items
    valid = items >= 0
    n = valid.sum(axis=1)
    exit_items = items.copy()
    price = np.where(valid, catalog.price[np.where(valid, items, 0)], 0.0)
    n_sessions = len(n)

    theft = np.flatnonzero(raw.labels == THEFT)
    if theft.size:
        w = price[theft] ** profile.theft_price_power
        first = _weighted_pick(w, rng.random(theft.size))
        exit_items[theft, first] = -1
        w[np.arange(theft.size), first] = 0.0
        two = (n[theft] >= 2) & (rng.random(theft.size) < profile.theft_two_items_prob)
        second = _weighted_pick(w, rng.random(theft.size))
        exit_items[theft[two], second[two]] = -1

    swap = np.flatnonzero(raw.labels == TAG_SWAP)
    if swap.size:
        _, available = _swap_slots(catalog, items[swap])
        w = np.where(available > 0, price[swap] ** profile.theft_price_power, 0.0)
        slot = _weighted_pick(w, rng.random(swap.size))
        rows = np.arange(swap.size)
        target = items[swap, slot]
        k = np.floor(rng.random(swap.size) * available[rows, slot]).astype(np.int64)
        # Map k to the k-th cheaper item not in the basket by skipping basket positions.
        basket = items[swap]
        safe = np.where(basket >= 0, basket, 0)
        excluded = np.where(
            (basket >= 0)
            & (catalog.category[safe] == catalog.category[target][:, None])
            & (catalog.price[safe] < catalog.price[target][:, None]),
            catalog.category_pos[safe],
            np.iinfo(np.int64).max,
        )
        excluded.sort(axis=1)
        for col in range(excluded.shape[1]):
            k += excluded[:, col] <= k
        exit_items[swap, slot] = catalog.by_category[catalog.category[target], k]

    benign = np.zeros(n_sessions, dtype=np.int64)
    normal = np.flatnonzero(raw.labels == NORMAL)
    u = rng.random(normal.size)
    benign[normal] = np.where(
        u < profile.left_in_room_rate,
        LEFT_IN_ROOM,
        np.where(u < profile.left_in_room_rate + profile.read_miss_rate, READ_MISS, NO_EVENT),
    )
    hit = np.flatnonzero(benign != NO_EVENT)
    slot = np.floor(rng.random(hit.size) * n[hit]).astype(np.int64)
    exit_items[hit, slot] = -1
    return exit_items, benign


def _json_lists(catalog: Catalog, matrix: IntArray) -> list[str]:
    """Rows of an index matrix (-1 = no item) as JSON lists of item ids."""
    quoted = np.array([json.dumps(i) for i in catalog.ids] + [""], dtype=object)
    present = matrix >= 0
    n = present.sum(axis=1)
    cells = quoted[matrix]
    # Left-align rows with holes (removed exit scans) so each row is one contiguous slice.
    holes = np.flatnonzero((present[:, 1:] & ~present[:, :-1]).any(axis=1))
    if holes.size:
        order = np.argsort(~present[holes], axis=1, kind="stable")
        cells[holes] = np.take_along_axis(cells[holes], order, axis=1)
    out = np.empty(len(n), dtype=object)
    for k in np.unique(n).tolist():
        rows = np.flatnonzero(n == k)
        out[rows] = [f"[{', '.join(r)}]" for r in cells[rows, :k].tolist()]
    return [str(text) for text in out]


def _timestamps(profile: Profile, day_offsets: IntArray, seconds: IntArray) -> npt.NDArray[Any]:
    """ISO 8601 local timestamps, with the profile's UTC offset if it writes one."""
    start = np.datetime64(profile.start_date, "s")
    stamps = start + (day_offsets * _SECONDS_PER_DAY + seconds).astype("timedelta64[s]")
    text = np.datetime_as_string(stamps, unit="s")
    if not profile.write_utc_offset:
        return text
    sign = "+" if profile.utc_offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(profile.utc_offset_minutes), 60)
    return np.strings.add(text, f"{sign}{hours:02d}:{minutes:02d}")


def _session_ids(profile: Profile, n_sessions: int) -> list[str]:
    """Unique session ids in chronological order, formatted per profile."""
    if profile.id_style == "sku":
        width = max(7, len(str(n_sessions)))
        return [f"{profile.session_id_prefix}{i:0{width}d}" for i in range(1, n_sessions + 1)]
    # Multiplying by an odd constant mod 2**32 is a bijection: unique, but not sequential.
    codes = (np.arange(1, n_sessions + 1, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return [f"{profile.session_id_prefix}{c:08X}" for c in codes.tolist()]


def generate(
    n_sessions: int = 20_000,
    n_items: int = 200,
    seed: int = 42,
    profile: Profile = DEFAULT_PROFILE,
) -> SimulatedData:
    """Simulate a catalogue and `n_sessions` finished sessions with their ground truth."""
    if n_sessions < 1:
        raise InvalidRequestError("n_sessions must be at least 1")
    catalog_rng, schedule_rng, event_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    catalog = make_catalog(profile, n_items, catalog_rng)
    raw, day_offsets = _schedule(profile, catalog, n_sessions, schedule_rng)
    exit_items, benign = _apply_events(profile, catalog, raw, event_rng)

    days = day_offsets[raw.day]
    entry_text = _timestamps(profile, days, raw.entry_s)
    exit_text = _timestamps(profile, days, raw.entry_s + raw.duration_s)
    entry_json = _json_lists(catalog, raw.items)
    session_ids = _session_ids(profile, n_sessions)
    anomaly = np.asarray(ANOMALY_TYPES, dtype=object)[raw.labels]
    is_anomaly = raw.labels != NORMAL
    sessions = pd.DataFrame(
        {
            "session_id": session_ids,
            "room_id": np.asarray(profile.room_ids, dtype=object)[raw.room],
            "entry_time": entry_text,
            "exit_time": exit_text,
            "duration": np.round(raw.duration_s / 60.0, 2),
            "entry_scans": entry_json,
            "exit_scans": _json_lists(catalog, exit_items),
            "item_ids": entry_json,
            "is_anomaly": is_anomaly,
            "anomaly_type": anomaly,
        },
        columns=list(CONTRACT_COLUMNS),
    )
    cov = _Covariates(raw.base, raw.sigma, raw.weights, raw.swap_slots)
    q = _quantiles_from_covariates(profile, cov, (0.05, 0.5, 0.95), mixture=True)
    truth = pd.DataFrame(
        {
            "session_id": session_ids,
            "true_median_duration": np.round(q[:, 1], 4),
            "true_q05": np.round(q[:, 0], 4),
            "true_q95": np.round(q[:, 2], 4),
            "is_anomaly": is_anomaly,
            "anomaly_type": anomaly,
            "benign_event": np.asarray(BENIGN_EVENTS, dtype=object)[benign],
        },
        columns=list(TRUTH_COLUMNS),
    )
    return SimulatedData(profile, catalog, catalog.item_database(), sessions, truth)


def _tmp_sibling(path: Path) -> Path:
    """Temporary name next to `path`; renamed over it so readers never see half a file."""
    return path.with_name(path.name + ".tmp")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV with lowercase booleans, as the data contract spells them.

    The csv module is used instead of DataFrame.to_csv because it is about five times
    faster on these string-heavy columns, which dominates the time for a million rows.
    """
    columns: list[list[Any]] = []
    for name in frame.columns:
        values = frame[name]
        if values.dtype == bool:
            columns.append(np.where(values.to_numpy(dtype=bool), "true", "false").tolist())
        else:
            columns.append(values.tolist())
    tmp = _tmp_sibling(path)
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(frame.columns))
        writer.writerows(zip(*columns, strict=True))
    os.replace(tmp, path)


def write(data: SimulatedData, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the three contract files into `out_dir` (created if missing); return their paths."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "item_database": root / ITEM_DATABASE_FILE,
        "sessions": root / SESSIONS_FILE,
        "truth": root / TRUTH_FILE,
    }
    tmp = _tmp_sibling(paths["item_database"])
    tmp.write_text(json.dumps(data.item_database, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, paths["item_database"])
    _write_csv(data.sessions, paths["sessions"])
    _write_csv(data.truth, paths["truth"])
    return paths
