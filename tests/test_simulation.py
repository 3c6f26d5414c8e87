"""Tests of the mock-data generator: file contract, anomaly signatures and truth calibration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitting_room import simulation as sim
from fitting_room.errors import InvalidRequestError
from fitting_room.history import CONTRACT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
N_SESSIONS = 4000


@dataclass
class Written:
    """A generated data set read back from disk, as a training script would see it."""

    profile: sim.Profile
    data: sim.SimulatedData
    items: dict[str, dict[str, Any]]
    sessions: pd.DataFrame
    truth: pd.DataFrame
    entry: list[list[str]]
    exit: list[list[str]]


def _read(out_dir: Path) -> tuple[dict[str, dict[str, Any]], pd.DataFrame, pd.DataFrame]:
    items = json.loads((out_dir / sim.ITEM_DATABASE_FILE).read_text())
    # Empty strings are meaningful in the contract (no anomaly type), so no NA parsing.
    sessions = pd.read_csv(out_dir / sim.SESSIONS_FILE, dtype=str, keep_default_na=False)
    truth = pd.read_csv(out_dir / sim.TRUTH_FILE, dtype=str, keep_default_na=False)
    return items, sessions, truth


@pytest.fixture(scope="module", params=["default", "boutique"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    profile = sim.get_profile(request.param)
    data = sim.generate(N_SESSIONS, 200, 11, profile)
    out_dir = tmp_path_factory.mktemp(f"sim_{profile.name}")
    sim.write(data, out_dir)
    items, sessions, truth = _read(out_dir)
    return Written(
        profile,
        data,
        items,
        sessions,
        truth,
        [json.loads(s) for s in sessions["entry_scans"]],
        [json.loads(s) for s in sessions["exit_scans"]],
    )


def _missing_and_extra(w: Written) -> tuple[list[list[str]], list[list[str]]]:
    missing = [[i for i in a if i not in b] for a, b in zip(w.entry, w.exit, strict=True)]
    extra = [[i for i in b if i not in a] for a, b in zip(w.entry, w.exit, strict=True)]
    return missing, extra


def test_files_follow_the_column_contract(written: Written) -> None:
    assert list(written.sessions.columns) == list(CONTRACT_COLUMNS)
    assert list(written.truth.columns) == list(sim.TRUTH_COLUMNS)
    assert len(written.sessions) == len(written.truth) == N_SESSIONS
    assert written.sessions["session_id"].is_unique
    assert (written.sessions["session_id"] == written.truth["session_id"]).all()
    assert set(written.sessions["is_anomaly"]) <= {"true", "false"}
    assert set(written.sessions["anomaly_type"]) <= {"", "theft", "tag_swap", "overstay"}
    assert set(written.truth["benign_event"]) <= {"", "left_in_room", "read_miss"}
    assert (written.sessions["entry_scans"] == written.sessions["item_ids"]).all()
    assert ((written.sessions["is_anomaly"] == "true") == (written.sessions["anomaly_type"] != "")).all()


def test_item_database_has_prices_categories_and_every_scanned_item(written: Written) -> None:
    for attrs in written.items.values():
        assert isinstance(attrs["category"], str)
        assert isinstance(attrs["price"], float)
        assert attrs["price"] > 0
    scanned = {i for row in written.entry + written.exit for i in row}
    assert scanned <= set(written.items)
    assert all(1 <= len(row) <= written.profile.max_items for row in written.entry)
    assert all(len(set(row)) == len(row) for row in written.entry)


def test_default_profile_ids_and_categories() -> None:
    data = sim.generate(50, 200, 1)
    assert {"sku-0042", "sku-0015", "sku-0000", "sku-0199"} <= set(data.item_database)
    assert all(re.fullmatch(r"sku-\d{4}", i) for i in data.item_database)
    assert {a["category"] for a in data.item_database.values()} == {
        "tops",
        "trousers",
        "dresses",
        "jackets",
        "skirts",
        "knitwear",
        "accessories",
        "shoes",
    }


def test_boutique_profile_is_a_different_store() -> None:
    default = sim.generate(200, 200, 5)
    boutique = sim.generate(200, 200, 5, sim.BOUTIQUE_PROFILE)
    assert not any(re.search(r"sku-\d+", i) for i in boutique.item_database)
    assert all(re.fullmatch(r"BTQ-[A-Z]{2}\d{2}-\d", i) for i in boutique.item_database)
    cats_default = {a["category"] for a in default.item_database.values()}
    cats_boutique = {a["category"] for a in boutique.item_database.values()}
    assert cats_default.isdisjoint(cats_boutique)
    assert set(boutique.sessions["room_id"]).isdisjoint(default.sessions["room_id"])
    # Naive local timestamps in the boutique, explicit offsets in the default store.
    assert not boutique.sessions["entry_time"].str.contains(r"[+Z]").any()
    assert default.sessions["entry_time"].str.endswith("+00:00").all()
    assert sim.BOUTIQUE_PROFILE.noise_sigma != sim.DEFAULT_PROFILE.noise_sigma


def test_duration_is_exit_minus_entry_and_rooms_never_overlap(written: Written) -> None:
    s = written.sessions
    entry = pd.to_datetime(s["entry_time"], format="ISO8601")
    exit_ = pd.to_datetime(s["exit_time"], format="ISO8601")
    minutes = (exit_ - entry).dt.total_seconds() / 60
    duration = s["duration"].astype(float)
    assert (duration > 0).all()
    np.testing.assert_allclose(duration, minutes, atol=0.0051)
    assert entry.is_monotonic_increasing
    assert (entry.dt.hour >= written.profile.open_hour).all()
    assert (entry.dt.hour < written.profile.close_hour).all()
    open_days = [d for d, t in enumerate(written.profile.weekday_traffic) if t > 0]
    assert set(entry.dt.day_of_week) <= set(open_days)
    frame = pd.DataFrame({"room": s["room_id"], "entry": entry, "exit": exit_})
    for _, room in frame.groupby("room"):
        assert (room["entry"].iloc[1:].to_numpy() >= room["exit"].iloc[:-1].to_numpy()).all()


def test_anomalies_carry_their_signature(written: Written) -> None:
    s, t = written.sessions, written.truth
    missing, extra = _missing_and_extra(written)
    ratio = s["duration"].astype(float) / t["true_median_duration"].astype(float)
    counts = s["anomaly_type"].value_counts()
    assert {"theft", "tag_swap", "overstay"} <= set(counts.index)
    for row, kind in enumerate(s["anomaly_type"]):
        if kind == "theft":
            assert 1 <= len(missing[row]) <= 2
            assert extra[row] == []
        elif kind == "tag_swap":
            assert len(missing[row]) == len(extra[row]) == 1
            real, fake = written.items[missing[row][0]], written.items[extra[row][0]]
            assert fake["category"] == real["category"]
            assert fake["price"] < real["price"]
            assert len(written.exit[row]) == len(written.entry[row])
        elif kind == "overstay":
            assert missing[row] == extra[row] == []
        elif t["benign_event"].iloc[row] == "":
            assert written.exit[row] == written.entry[row]
    overstay = ratio[s["anomaly_type"] == "overstay"]
    assert overstay.median() > 2.0
    assert (overstay > 1.2).mean() > 0.9
    assert ratio[s["anomaly_type"] == ""].median() < 1.1


def test_benign_events_are_not_anomalies(written: Written) -> None:
    s, t = written.sessions, written.truth
    missing, extra = _missing_and_extra(written)
    benign = t["benign_event"] != ""
    assert benign.sum() > 0
    assert (s.loc[benign, "is_anomaly"] == "false").all()
    for row in np.flatnonzero(benign.to_numpy()):
        assert len(missing[row]) == 1
        assert extra[row] == []
    assert (t["anomaly_type"] == s["anomaly_type"]).all()
    assert (t["is_anomaly"] == s["is_anomaly"]).all()


def test_anomaly_rates_are_a_few_percent(written: Written) -> None:
    anomaly_share = (written.sessions["is_anomaly"] == "true").mean()
    benign_share = (written.truth["benign_event"] != "").mean()
    assert 0.02 < anomaly_share < 0.08
    assert 0.015 < benign_share < 0.09


def test_thefts_take_more_expensive_items_than_benign_misses() -> None:
    data = sim.generate(20_000, 200, 3)
    s, t = data.sessions, data.truth
    db = data.item_database
    gone: dict[str, list[float]] = {"theft": [], "benign": []}
    for a, b, kind, event in zip(s["entry_scans"], s["exit_scans"], s["anomaly_type"], t["benign_event"], strict=True):
        key = "theft" if kind == "theft" else "benign" if event else ""
        if key:
            entry, exit_ = json.loads(a), json.loads(b)
            gone[key] += [db[i]["price"] for i in entry if i not in exit_]
    assert np.median(gone["theft"]) > 1.15 * np.median(gone["benign"])


def test_truth_is_calibrated_on_generated_sessions(written: Written) -> None:
    duration = written.sessions["duration"].astype(float).to_numpy()
    median = written.truth["true_median_duration"].astype(float).to_numpy()
    q05 = written.truth["true_q05"].astype(float).to_numpy()
    q95 = written.truth["true_q95"].astype(float).to_numpy()
    assert (q05 < median).all()
    assert (median < q95).all()
    assert 0.47 <= (duration <= median).mean() <= 0.53
    assert 0.88 <= ((duration >= q05) & (duration <= q95)).mean() <= 0.92
    assert 0.03 <= (duration < q05).mean() <= 0.07
    # Noise grows with basket size; the truth must follow it in both small and large baskets.
    size = np.array([len(row) for row in written.entry])
    for group in (size <= 2, size >= 4):
        inside = (duration[group] >= q05[group]) & (duration[group] <= q95[group])
        assert 0.86 <= inside.mean() <= 0.94
        assert 0.45 <= (duration[group] <= median[group]).mean() <= 0.55


def test_truth_file_matches_the_in_process_helpers(written: Written) -> None:
    rows = slice(0, 300)
    got = sim.true_quantiles(
        written.profile,
        written.items,
        written.entry[rows],
        written.sessions["entry_time"].iloc[rows].tolist(),
        (0.05, 0.5, 0.95),
    )
    want = written.truth[["true_q05", "true_median_duration", "true_q95"]].iloc[rows].astype(float)
    np.testing.assert_allclose(got, want.to_numpy(), atol=1e-4)


@pytest.mark.parametrize("profile", [sim.DEFAULT_PROFILE, sim.BOUTIQUE_PROFILE], ids=lambda p: p.name)
def test_mixture_quantiles_match_monte_carlo(profile: sim.Profile) -> None:
    catalog = sim.make_catalog(profile, 100, np.random.default_rng(0))
    # An expensive basket item makes a tag swap possible, so all four components are active.
    dearest = max(range(len(catalog.ids)), key=lambda i: catalog.price[i])
    basket = [catalog.ids[(dearest + k) % len(catalog.ids)] for k in range(5)]
    when = pd.Timestamp(profile.start_date) + pd.Timedelta(hours=profile.close_hour - 1)
    hour_factor = profile.theft_hour_factor[-1]
    n = 40_000
    rng = np.random.default_rng(1)
    p_theft = profile.theft_rate * hour_factor
    labels = rng.choice(
        ["", "theft", "tag_swap", "overstay"],
        size=n,
        p=[
            1 - p_theft - profile.tag_swap_rate - profile.overstay_rate,
            p_theft,
            profile.tag_swap_rate,
            profile.overstay_rate,
        ],
    )
    durations = sim.sample_durations(profile, catalog, [basket] * n, [when] * n, rng, list(labels))
    probs = (0.05, 0.5, 0.95)
    mixed = sim.true_quantiles(profile, catalog, [basket], [when], probs)[0]
    for p, q in zip(probs, mixed, strict=True):
        assert abs((durations <= q).mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    normal = sim.sample_durations(profile, catalog, [basket] * n, [when] * n, rng)
    pure = sim.true_quantiles(profile, catalog, [basket], [when], probs, mixture=False)[0]
    for p, q in zip(probs, pure, strict=True):
        assert abs((normal <= q).mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    base = sim.base_durations(profile, catalog, [basket], [when])[0]
    assert sim.true_median(profile, catalog, [basket], [when], mixture=False)[0] == pytest.approx(base)
    # The documented heteroscedastic noise: sigma(n) = noise_sigma + noise_sigma_per_item * (n - 1).
    sigma = profile.noise_sigma + profile.noise_sigma_per_item * (len(basket) - 1)
    np.testing.assert_allclose(pure, base * np.exp(sigma * np.array([-1.6448536, 0.0, 1.6448536])), rtol=1e-6)
    assert mixed[1] > pure[1]


def test_durations_grow_with_basket_size_and_depend_on_time() -> None:
    profile = sim.DEFAULT_PROFILE
    catalog = sim.make_catalog(profile, 200, np.random.default_rng(0))
    ids = list(catalog.ids)
    monday_noon = pd.Timestamp("2026-03-02T12:30:00+00:00")
    saturday_evening = pd.Timestamp("2026-03-07T19:30:00+00:00")
    small = sim.base_durations(profile, catalog, [ids[:1]], [monday_noon])[0]
    large = sim.base_durations(profile, catalog, [ids[:6]], [monday_noon])[0]
    later = sim.base_durations(profile, catalog, [ids[:1]], [saturday_evening])[0]
    assert large > small
    assert later > small
    # Fatigue: six items take less than six times the try-on of one.
    assert large < 6 * small


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path: Path) -> None:
    contents = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        sim.write(sim.generate(400, 60, seed, sim.BOUTIQUE_PROFILE), tmp_path / name)
        contents.append(
            [(tmp_path / name / f).read_bytes() for f in (sim.ITEM_DATABASE_FILE, sim.SESSIONS_FILE, sim.TRUTH_FILE)]
        )
    assert contents[0] == contents[1]
    assert all(x != y for x, y in zip(contents[0], contents[2], strict=True))


def test_tiny_catalogue_still_yields_valid_baskets_and_swaps() -> None:
    profile = sim.DEFAULT_PROFILE
    data = sim.generate(1500, len(profile.categories), 2, profile)
    for a, b, kind in zip(
        data.sessions["entry_scans"], data.sessions["exit_scans"], data.sessions["anomaly_type"], strict=True
    ):
        entry, exit_ = json.loads(a), json.loads(b)
        assert len(set(entry)) == len(entry)
        if kind == "tag_swap":
            (fake,) = [i for i in exit_ if i not in entry]
            (real,) = [i for i in entry if i not in exit_]
            assert data.item_database[fake]["price"] < data.item_database[real]["price"]
    with pytest.raises(InvalidRequestError):
        sim.generate(10, len(profile.categories) - 1, 2, profile)


def test_cli_writes_the_three_files(tmp_path: Path) -> None:
    out_dir = tmp_path / "nested" / "out"
    cmd = [sys.executable, "simulate_data.py", "--out-dir", str(out_dir), "--sessions", "300"]
    cmd += ["--items", "60", "--seed", "5", "--profile", "boutique"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    items, sessions, truth = _read(out_dir)
    assert len(items) == 60
    assert len(sessions) == len(truth) == 300
    bad = subprocess.run(
        [sys.executable, "simulate_data.py", "--out-dir", str(out_dir), "--sessions", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
