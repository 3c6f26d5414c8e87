"""train.py's size-dependent decisions (issue #7), on small generated data with lowered thresholds.

A million sessions cannot run in a test; the large-data path is the same code with the thresholds of
--large-data, --baseline-max-sessions and --reuse-evaluation-models-from lowered below the data size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import train
from models import AnomalyDetector, DurationPredictor
from tests.factories import make_catalog_data, make_sessions, write_contract

N_SESSIONS, N_TRAIN = 400, 320  # the default test fraction holds out 80
FOREST = "random_forest_simple_features_mae_minutes"
LOWERED = ["--large-data", "300", "--baseline-max-sessions", "150", "--reuse-evaluation-models-from", "300"]


@dataclass
class _Progress:
    """Stands in for tqdm: records the stage total, the updates and the stage names."""

    total: int = 0
    n: int = 0
    names: list[str] = field(default_factory=list)

    def set_postfix_str(self, name: str) -> None:
        self.names.append(name)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


@dataclass
class _Run:
    metrics: dict[str, Any]
    model_dir: Path
    data_dir: Path
    progress: _Progress


def _train(root: Path, *options: str, labels: bool = True) -> _Run:
    catalog_data = make_catalog_data(n_items=40, seed=5)
    data = write_contract(root / "data", catalog_data, make_sessions(catalog_data, N_SESSIONS, seed=5), labels=labels)
    progress = _Progress()

    def fake_tqdm(*, total: int, **_: Any) -> _Progress:
        progress.total = total
        return progress

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "tqdm", fake_tqdm)
        assert train.main(["--data-dir", str(data), "--model-dir", str(root / "models"), *options]) == 0
    metrics = json.loads((root / "models" / "metrics.json").read_text())
    return _Run(metrics, root / "models", data, progress)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    return _train(tmp_path_factory.mktemp("large"), *LOWERED)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    return _train(tmp_path_factory.mktemp("small"))


def test_large_data_plan_is_taken_above_the_thresholds_and_recorded(large: _Run) -> None:
    assert large.metrics["training_plan"] == {
        "large_data": True,
        "large_data_from_sessions": 300,
        "cv_folds": train.LARGE_DATA_CV_FOLDS,
        "baseline_max_sessions": 150,
        "reuse_evaluation_models_from_sessions": 300,
        "saved_models_are_the_evaluated_ones": True,
    }


def test_large_data_forest_baseline_is_a_labelled_sample(large: _Run) -> None:
    duration = large.metrics["duration"]
    assert set(duration["baselines"]) == {"global_median_mae_minutes", "median_by_item_count_mae_minutes", FOREST}
    assert all(value > 0 for value in duration["baselines"].values())
    assert duration["baselines_fitted_on_sessions"] == {
        "global_median_mae_minutes": N_TRAIN,
        "median_by_item_count_mae_minutes": N_TRAIN,
        FOREST: 150,
    }
    assert duration["baselines_note"] == (
        f"random_forest_simple_features fitted on a random sample of 150 of the {N_TRAIN} training sessions"
    )


def test_large_data_models_are_valid_and_calibrated(large: _Run) -> None:
    duration = large.metrics["duration"]
    assert 0.75 <= duration["coverage"] <= 1.0
    curve = list(duration["coverage_by_level"].values())
    assert curve == sorted(curve)
    assert duration["mae_minutes"] < duration["baselines"]["global_median_mae_minutes"]
    assert set(large.metrics["anomaly"]) == {"with_labels", "without_labels"}
    for figures in large.metrics["anomaly"].values():
        assert 0.0 <= figures["pr_auc"] <= 1.0


def test_large_data_saves_the_evaluated_models_without_a_refit(large: _Run) -> None:
    saved = large.metrics["saved_models"]
    assert saved["fitted_on_sessions"] == N_TRAIN and saved["refitted_on_all_sessions"] is False
    predictor = DurationPredictor.load(large.model_dir / "duration_model.pkl")
    detector = AnomalyDetector.load(large.model_dir / "anomaly_model.pkl")
    assert predictor.cv_folds == detector.cv_folds == train.LARGE_DATA_CV_FOLDS
    assert predictor.n_sessions_ == N_TRAIN and predictor.n_iter_ == saved["duration_boosting_rounds"]
    # Out-of-fold judgements exist for exactly the training split: the held-out sessions were never fitted on.
    sessions = train.load_history(large.data_dir)[0]
    train_part, test_part = train._split(sessions, 0.2, 0)
    assert set(predictor.out_of_fold_) == set(train_part["session_id"].astype(str))
    assert not set(predictor.out_of_fold_) & set(test_part["session_id"].astype(str))
    # The saved detector is the evaluated with-labels one, so its threshold is the evaluated threshold.
    assert detector.threshold_ == large.metrics["anomaly"]["with_labels"]["threshold"] == saved["anomaly_threshold"]
    manifest = json.loads((large.model_dir / "manifest.json").read_text())
    assert manifest["data"]["fitted_on_sessions"] == N_TRAIN  # what GET /models shows
    report = (large.model_dir / "report.html").read_text()
    assert f"the saved models are these evaluated ones, fitted on the {N_TRAIN} training sessions" in report
    assert "fitted on a random sample of 150 of the 320 training sessions" in report


def test_small_data_keeps_the_default_path(small: _Run) -> None:
    plan = small.metrics["training_plan"]
    assert plan["large_data"] is False and plan["cv_folds"] == train.CV_FOLDS == 5
    assert plan["saved_models_are_the_evaluated_ones"] is False
    assert small.metrics["saved_models"]["fitted_on_sessions"] == N_SESSIONS
    assert small.metrics["saved_models"]["refitted_on_all_sessions"] is True
    assert small.metrics["duration"]["baselines_fitted_on_sessions"][FOREST] == N_TRAIN
    assert "baselines_note" not in small.metrics["duration"]
    assert DurationPredictor.load(small.model_dir / "duration_model.pkl").n_sessions_ == N_SESSIONS
    assert json.loads((small.model_dir / "manifest.json").read_text())["data"]["fitted_on_sessions"] == N_SESSIONS
    assert "refitted on all 400" in (small.model_dir / "report.html").read_text()


@pytest.mark.parametrize("run", ["small", "large"])
def test_progress_bar_counts_every_stage(run: str, request: pytest.FixtureRequest) -> None:
    progress = request.getfixturevalue(run).progress
    assert progress.n == progress.total > 0
    refit = "final duration model (all sessions)" in progress.names
    reused = "saving the evaluated models (large data: no refit)" in progress.names
    assert (refit, reused) == ((True, False) if run == "small" else (False, True))


def test_large_data_without_labels_saves_the_unsupervised_detector(tmp_path: Path) -> None:
    run = _train(tmp_path, *LOWERED, "--no-report", labels=False)
    assert run.metrics["saved_models"]["fitted_on_sessions"] == N_TRAIN
    assert run.metrics["saved_models"]["anomaly_uses_labels"] is False
    assert not AnomalyDetector.load(run.model_dir / "anomaly_model.pkl").supervised_
    assert run.progress.n == run.progress.total


@pytest.mark.parametrize("option", ["--large-data", "--baseline-max-sessions", "--reuse-evaluation-models-from"])
def test_thresholds_must_be_positive(option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--data-dir", str(tmp_path), option, "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_threshold_is_inclusive() -> None:
    args = train.parse_args(["--large-data", "400", "--reuse-evaluation-models-from", "401"])
    at, below = train.training_plan(400, args), train.training_plan(399, args)
    assert (at.large_data, at.cv_folds, at.reuse_evaluation_models) == (True, train.LARGE_DATA_CV_FOLDS, False)
    assert (below.large_data, below.cv_folds) == (False, train.CV_FOLDS)
