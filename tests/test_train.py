"""train.py end to end on tiny data sets in the contract (odd ids and categories), and its failures."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import train
from fitting_room.catalog import Catalog
from fitting_room.history import SESSIONS_FILE
from models import AnomalyDetector, DurationPredictor
from tests.factories import make_catalog_data, make_sessions, write_contract

REPO = Path(__file__).resolve().parent.parent


def _data(directory: Path, labels: bool = True, n: int = 400) -> Path:
    catalog_data = make_catalog_data(n_items=40, seed=5)
    return write_contract(directory, catalog_data, make_sessions(catalog_data, n, seed=5), labels=labels)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_trains_and_writes_models_and_metrics(tmp_path: Path) -> None:
    data, model_dir = _data(tmp_path / "data"), tmp_path / "models"
    result = _run_cli("--data-dir", str(data), "--model-dir", str(model_dir), "--timezone", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    assert "duration: MAE" in result.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(metrics["versions"]) >= {"python", "sklearn", "numpy", "pandas"}
    assert metrics["data"]["sessions"] == 400 and metrics["data"]["timezone"] == "Europe/Berlin"
    assert "Shoes/Running" in metrics["data"]["categories"]
    assert metrics["split"] == {"test_fraction": 0.2, "seed": 0, "train": 320, "test": 80}
    duration = metrics["duration"]
    assert duration["mae_minutes"] > 0 and 0 <= duration["coverage"] <= 1
    assert set(duration["baselines"]) == {
        "global_median_mae_minutes",
        "median_by_item_count_mae_minutes",
        "random_forest_simple_features_mae_minutes",
    }
    assert duration["mae_minutes"] < duration["baselines"]["global_median_mae_minutes"]
    assert set(metrics["anomaly"]) == {"with_labels", "without_labels"}
    unsupervised = metrics["anomaly"]["without_labels"]
    assert 0 <= unsupervised["pr_auc"] <= 1
    assert set(unsupervised["baselines"]) == {
        "rule_any_missing_or_unexpected_pr_auc",
        "isolation_forest_alone_pr_auc",
    }
    predictor = DurationPredictor.load(model_dir / "duration_model.pkl")
    detector = AnomalyDetector.load(model_dir / "anomaly_model.pkl")
    catalog = Catalog.load(data / "item_database.json")
    estimate = predictor.estimate([" a-1 ", "B.2"], datetime(2024, 3, 9, 11, tzinfo=UTC), catalog)
    assert estimate.low <= estimate.median <= estimate.high and estimate.unknown_item_ids == []
    result_ = detector.analyse(
        entry_scans=["A-1", "b.2"],
        exit_scans=["b.2"],
        duration=estimate.median,
        estimate=estimate,
        catalog=catalog,
        predictor=predictor,
    )
    assert result_.missing_items == ["A-1"]


def test_training_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, model_dir = _data(tmp_path / "data", labels=False), tmp_path / "models"
    assert train.main(["--data-dir", str(data), "--model-dir", str(model_dir)]) == 0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["data"]["labelled_sessions"] == 0
    assert metrics["anomaly"] == {"without_labels": None}  # nothing labelled to score against
    assert metrics["saved_models"]["anomaly_uses_labels"] is False
    assert not AnomalyDetector.load(model_dir / "anomaly_model.pkl").supervised_
    assert "no labelled test sessions" in capsys.readouterr().out


def test_malformed_row_exits_2_naming_file_row_and_column(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", n=60)
    path = data / SESSIONS_FILE
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"[""', '"[oops ""', 1)  # break the first scan list of data row 3
    path.write_text("\n".join(lines) + "\n")
    result = _run_cli("--data-dir", str(data), "--model-dir", str(tmp_path / "models"))
    assert result.returncode == 2
    assert SESSIONS_FILE in result.stderr
    assert "row 3 (line 4), column 'entry_scans'" in result.stderr
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        ("no_catalog", "item_database.json: file not found"),
        ("no_column", "missing required column(s) 'exit_scans'"),
        ("too_few", "only 20 sessions, need at least 50"),
    ],
)
def test_contract_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, fragment: str
) -> None:
    data = _data(tmp_path / "data", n=20 if breakage == "too_few" else 60)
    if breakage == "no_catalog":
        (data / "item_database.json").unlink()
    if breakage == "no_column":
        path = data / SESSIONS_FILE
        path.write_text(path.read_text().replace("exit_scans", "exit_scan", 1))
    assert train.main(["--data-dir", str(data), "--model-dir", str(tmp_path / "models")]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_trains_on_the_simulators_boutique_output(tmp_path: Path) -> None:
    from fitting_room.simulation import BOUTIQUE_PROFILE, generate, write

    write(generate(n_sessions=600, n_items=60, seed=3, profile=BOUTIQUE_PROFILE), tmp_path / "data")
    model_dir = tmp_path / "models"
    assert train.main(["--data-dir", str(tmp_path / "data"), "--model-dir", str(model_dir)]) == 0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["data"]["sessions"] == 600
    assert 0.75 <= metrics["duration"]["coverage"] <= 1.0
    assert metrics["duration"]["mae_minutes"] < metrics["duration"]["baselines"]["global_median_mae_minutes"]


def test_cli_trains_on_history_plus_the_store_history(tmp_path: Path) -> None:
    from tests.test_store_history import fill_store

    expected = fill_store(tmp_path / "state.db")
    data, model_dir = _data(tmp_path / "data", n=200), tmp_path / "models"
    result = _run_cli(
        "--data-dir",
        str(data),
        "--model-dir",
        str(model_dir),
        "--include-store-history",
        "--database",
        str(tmp_path / "state.db"),
        "--no-report",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["data"]["sessions"] == 200 + len(expected)
    assert metrics["data"]["store_history_sessions"] == len(expected)
    exported = (model_dir / "store_history.csv").read_text().splitlines()
    assert len(exported) == 1 + len(expected)
    # 1 theft from staff on top of the generated labels; unjudged store sessions stay unlabelled.
    generated = sum(1 for line in (data / SESSIONS_FILE).read_text().splitlines() if ",true," in line)
    assert metrics["data"]["labelled_anomalies"] == generated + 1
    assert metrics["data"]["labelled_sessions"] == 200 + 3  # theft, false alarm, item found
    assert not (model_dir / "report.html").exists()
    assert "training" not in result.stderr, "no progress bar when stderr is not a terminal"


def test_missing_store_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path / "data", n=60)
    argv = ["--data-dir", str(data), "--model-dir", str(tmp_path / "m"), "--include-store-history"]
    assert train.main([*argv, "--database", str(tmp_path / "none.db")]) == 2
    assert "none.db: file not found" in capsys.readouterr().err
