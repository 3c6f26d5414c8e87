"""Small synthetic data in the data contract, with a known duration process, for the tests.

Item ids and categories deliberately look nothing like sku-NNNN. Durations follow a
multiplicative lognormal process: D = median(x) * exp(sigma(x) * eps), eps ~ N(0, 1), where the
median depends on the items' categories, the hour and the weekday, and sigma on the item count.
Anomalies: overstays (x2.5-5), thefts (items missing at exit) and tag swaps; some normal
sessions have a misread exit tag (hard evidence without wrongdoing).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from fitting_room.catalog import Catalog
from fitting_room.history import CATALOG_FILE, SESSIONS_FILE, load_sessions

# category -> (minutes per item, typical price)
CATEGORIES: dict[str, tuple[float, float]] = {
    "Shoes/Running": (2.0, 90.0),
    "Tops & Tees": (3.0, 30.0),
    "Dresses (long)": (5.0, 80.0),
    "Acc. & Bags": (1.0, 25.0),
    "Jeans|Denim": (4.0, 60.0),
}
BASE_MINUTES = 3.0
PREFIXES = ("A-", "b.", "X_", "zz/", "Q ")


def make_catalog_data(n_items: int = 60, seed: int = 0) -> dict[str, dict[str, Any]]:
    """item_database.json content with odd ids ("A-1", "b.2", "X_3", ...) and odd categories."""
    rng = np.random.default_rng(seed)
    names = list(CATEGORIES)
    data: dict[str, dict[str, Any]] = {}
    for i in range(n_items):
        category = names[i % len(names)]
        price = round(float(CATEGORIES[category][1] * rng.lognormal(0.0, 0.4)), 2)
        data[f"{PREFIXES[i % len(PREFIXES)]}{i + 1}"] = {"category": category, "price": price, "colour": "red"}
    return data


def true_log_median(categories: list[str], local: datetime) -> float:
    """log of the true median minutes for items of these categories entering at store-local `local`."""
    minutes = BASE_MINUTES + sum(CATEGORIES[c][0] for c in categories)
    hour = local.hour + local.minute / 60.0
    return float(np.log(minutes) + 0.15 * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + 0.1 * (local.weekday() >= 5))


def true_sigma(n_items: int) -> float:
    """Spread of log duration: grows with the item count (so per-bucket coverage is tested)."""
    return 0.2 + 0.03 * n_items


def make_sessions(
    catalog_data: dict[str, dict[str, Any]],
    n: int,
    seed: int = 0,
    *,
    timezone: str = "UTC",
    anomaly_rate: float = 0.06,
    misread_rate: float = 0.01,
    start: str = "2024-03-04",
) -> pd.DataFrame:
    """Sessions as CSV-ready strings plus truth columns (true_median, true_sigma, anomaly_type)."""
    rng = np.random.default_rng(seed)
    zone = ZoneInfo(timezone)
    ids = list(catalog_data)
    by_category: dict[str, list[str]] = {}
    for item_id, attrs in catalog_data.items():
        by_category.setdefault(attrs["category"], []).append(item_id)
    day0 = datetime.fromisoformat(start)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        items = [ids[j] for j in rng.integers(0, len(ids), size=k)]
        local = day0 + timedelta(days=int(rng.integers(0, 56)), minutes=int(rng.integers(9 * 60, 21 * 60)))
        local = local.replace(tzinfo=zone)
        log_median = true_log_median([catalog_data[x]["category"] for x in items], local)
        sigma = true_sigma(k)
        duration = float(np.exp(log_median + sigma * rng.standard_normal()))
        exit_scans = list(items)
        kind = _anomaly_kind(rng, anomaly_rate)
        if kind == "overstay":
            duration *= float(rng.uniform(2.5, 5.0))
        elif kind == "theft":
            dearest = sorted(range(k), key=lambda j: -catalog_data[items[j]]["price"])
            for j in sorted(dearest[: int(rng.integers(1, min(2, k) + 1))], reverse=True):
                del exit_scans[j]
            duration *= float(rng.uniform(1.0, 1.6))
        elif kind == "tag_swap":
            kind = _swap(exit_scans, items, catalog_data, by_category) or "theft"
        elif rng.random() < misread_rate:
            del exit_scans[int(rng.integers(0, k))]
        stamp = local if i % 3 else local.astimezone(ZoneInfo("UTC"))
        rows.append(
            {
                "session_id": f"s-{seed}-{i}",
                "room_id": f"cabin {i % 4}",
                "entry_time": stamp.isoformat() if i % 2 else local.replace(tzinfo=None).isoformat(),
                "entry_scans": json.dumps([_spell(x, i) for x in items]),
                "exit_scans": json.dumps(exit_scans),
                "duration": f"{duration:.3f}",
                "is_anomaly": "true" if kind else "false",
                "anomaly_type": kind or "",
                "true_median": float(np.exp(log_median)),
                "true_sigma": sigma,
            }
        )
    return pd.DataFrame(rows)


def write_contract(
    directory: Path,
    catalog_data: dict[str, dict[str, Any]],
    sessions: pd.DataFrame,
    *,
    labels: bool = True,
) -> Path:
    """Write item_database.json and historical_sessions.csv (truth columns dropped) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CATALOG_FILE).write_text(json.dumps(catalog_data, indent=1), encoding="utf-8")
    frame = sessions.drop(columns=["true_median", "true_sigma"], errors="ignore")
    if not labels:
        frame = frame.drop(columns=["is_anomaly", "anomaly_type"])
    frame.to_csv(directory / SESSIONS_FILE, index=False)
    return directory


def load_synthetic(
    directory: Path, n: int, seed: int = 0, *, timezone: str = "UTC", **options: Any
) -> tuple[pd.DataFrame, Catalog, pd.DataFrame]:
    """(loaded sessions, catalog, raw frame with truth) for n synthetic sessions, via the real loader."""
    catalog_data = make_catalog_data(seed=seed)
    raw = make_sessions(catalog_data, n, seed, timezone=timezone, **options)
    write_contract(directory, catalog_data, raw)
    sessions = load_sessions(directory / SESSIONS_FILE, timezone=timezone)
    return sessions, Catalog.from_mapping(catalog_data), raw


def _anomaly_kind(rng: np.random.Generator, rate: float) -> str | None:
    """None for a normal session, else one of the anomaly kinds."""
    if rng.random() >= rate:
        return None
    return str(rng.choice(["overstay", "theft", "tag_swap"]))


def _swap(
    exit_scans: list[str],
    items: list[str],
    catalog_data: dict[str, dict[str, Any]],
    by_category: dict[str, list[str]],
) -> str | None:
    """Replace one exit tag by a cheaper item of the same category; None if no such item exists."""
    for j, item_id in enumerate(items):
        price = catalog_data[item_id]["price"]
        cheaper = [
            c
            for c in by_category[catalog_data[item_id]["category"]]
            if catalog_data[c]["price"] < price and c not in items
        ]
        if cheaper:
            exit_scans[j] = min(cheaper, key=lambda c: catalog_data[c]["price"])
            return "tag_swap"
    return None


def _spell(item_id: str, i: int) -> str:
    """Entry scans sometimes spell ids in another case or with padding, as real scanners do."""
    return f" {item_id.upper()} " if i % 5 == 0 else item_id
