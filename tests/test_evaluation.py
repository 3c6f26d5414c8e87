"""Held-out evaluation and the comparison with the simulator's truth, on small generated stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from threadpoolctl import threadpool_limits

from fitting_room import simulation
from fitting_room.catalog import Catalog
from fitting_room.evaluation import (
    COVERAGE_LEVELS,
    FOREST_BASELINE,
    anomaly_limit,
    bayes_anomaly_posterior,
    duration_baselines,
    evaluate_duration,
    forest_sample_size,
    load_truth,
    precision_at_recall,
    vs_truth,
)
from fitting_room.history import load_history
from models import DurationPredictor
from tests.factories import load_synthetic

N_TEST = 1000


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Catalog, DurationPredictor]:
    """A 3,000-session default-profile store; predictor fitted on all but the last N_TEST sessions."""
    directory = tmp_path_factory.mktemp("sim")
    simulation.write(simulation.generate(n_sessions=3000, n_items=80, seed=4), directory)
    sessions, catalog = load_history(directory)
    predictor = DurationPredictor(cv_folds=3).fit(sessions.iloc[:-N_TEST], catalog)
    return directory, sessions, catalog, predictor


def test_coverage_by_level_is_a_rising_calibration_curve(store: tuple) -> None:
    _, sessions, catalog, predictor = store
    metrics = evaluate_duration(predictor, sessions.iloc[-N_TEST:], catalog)
    curve = metrics["coverage_by_level"]
    assert list(curve) == [f"{level:g}" for level in COVERAGE_LEVELS]
    values = list(curve.values())
    assert values == sorted(values)
    assert curve["0.9"] == pytest.approx(metrics["coverage"])
    for level, empirical in zip(COVERAGE_LEVELS, values, strict=True):
        assert abs(empirical - level) < 0.06


def test_vs_truth_against_bayes_mae_and_true_width(store: tuple) -> None:
    directory, sessions, catalog, predictor = store
    truth = load_truth(directory)
    assert truth is not None
    test = sessions.iloc[-N_TEST:]
    anomaly = {"without_labels": {"pr_auc": 0.8, "precision_at_recall_0.8": 0.7, "baselines": {"rule": 0.5}}}
    result = vs_truth(predictor, test, catalog, truth, anomaly)
    d = result["duration"]
    assert d["sessions"] == N_TEST
    # The Bayes MAE is computed from the truth alone; a fitted model cannot beat it by much.
    expected_bayes = np.mean(
        np.abs(test["duration"].to_numpy() - truth.loc[test["session_id"], "true_median_duration"])
    )
    assert d["bayes_mae_minutes"] == pytest.approx(expected_bayes)
    assert 0.95 < d["mae_over_bayes_mae"] < 1.3
    assert 0.8 < d["width_over_true_width"] < 1.4
    assert d["min_bucket_coverage"] == min(b["coverage"] for b in d["coverage_by_item_count"].values())
    assert set(d["targets_met"]) == {"mae", "coverage", "coverage_per_bucket", "width"}
    assert result["anomaly"]["without_labels"]["targets_met"] == {"pr_auc": True, "above_baselines": True}
    assert "with_labels" not in result["anomaly"]


def test_bayes_posterior_is_calibrated_and_the_limit_is_reported(store: tuple) -> None:
    directory, sessions, _, _ = store
    limit = anomaly_limit(directory, sessions)
    assert limit is not None and limit["profile"] == "default" and limit["sessions"] == len(sessions)
    assert 0.5 < limit["pr_auc"] <= 1.0 and 0.0 < limit["precision_at_recall_0.8"] <= 1.0
    raw = pd.read_csv(directory / simulation.SESSIONS_FILE, dtype=str)
    database = json.loads((directory / simulation.ITEM_DATABASE_FILE).read_text())
    posterior = bayes_anomaly_posterior(
        simulation.DEFAULT_PROFILE,
        database,
        [list(x) for x in sessions["entry_scans"]],
        [list(x) for x in sessions["exit_scans"]],
        sessions["duration"].to_numpy(dtype=float),
        raw["entry_time"].to_numpy(),
    )
    y = sessions["is_anomaly"].astype(bool).to_numpy()
    # A true posterior's sum is the expected number of anomalies.
    assert posterior.sum() == pytest.approx(y.sum(), rel=0.25)
    swaps = (sessions["anomaly_type"] == "tag_swap").to_numpy()
    assert (posterior[swaps] == 1.0).all(), "only tag swaps show unexpected items"


def test_no_limit_for_data_not_from_the_simulator(tmp_path: Path) -> None:
    sessions, _, _ = load_synthetic(tmp_path, 200, seed=2)
    assert anomaly_limit(tmp_path, sessions) is None


def test_forest_baseline_is_fitted_on_a_capped_sample(store: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    _, sessions, catalog, _ = store
    train, test = sessions.iloc[:-N_TEST], sessions.iloc[-N_TEST:]
    rows_fitted: list[int] = []
    fit = RandomForestRegressor.fit

    def spy(self: RandomForestRegressor, x: np.ndarray, y: np.ndarray, *args: object, **kwargs: object) -> object:
        rows_fitted.append(len(x))
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(RandomForestRegressor, "fit", spy)
    full = duration_baselines(train, test, catalog)
    at_size = duration_baselines(train, test, catalog, forest_max_sessions=len(train))
    capped = duration_baselines(train, test, catalog, forest_max_sessions=500)
    assert rows_fitted == [len(train), len(train), 500]
    assert at_size == full, "a cap at or above the training size changes nothing"
    medians = ("global_median_mae_minutes", "median_by_item_count_mae_minutes")
    assert all(capped[name] == full[name] for name in medians), "the medians always use every session"
    assert capped[FOREST_BASELINE] != full[FOREST_BASELINE]
    assert capped[FOREST_BASELINE] == pytest.approx(full[FOREST_BASELINE], rel=0.1)
    assert capped == duration_baselines(train, test, catalog, forest_max_sessions=500), "the sample is seeded"
    assert (forest_sample_size(10, None), forest_sample_size(10, 3), forest_sample_size(10, 30)) == (10, 3, 10)


def test_precision_at_recall() -> None:
    y = np.array([1, 0, 1, 0, 1, 0], bool)
    score = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    # Recall 0.8 needs all three positives: threshold 0.2 keeps 5 sessions, 3 of them positive.
    assert precision_at_recall(y, score) == pytest.approx(3 / 5)
