"""Train the duration and anomaly models from the data contract files.

    python train.py [--data-dir data] [--model-dir models] [--timezone Europe/Berlin]
                    [--include-store-history [--database PATH_OR_URL]]

Writes duration_model.pkl, anomaly_model.pkl (joblib), metrics.json, manifest.json and
report.html (the model card) into the model folder. Metrics come from models fitted on a random
training split and scored on the held-out rest; the saved models are then refitted on all
sessions with the same settings. When the data folder holds simulation_truth.csv (simulated
data), metrics.json gets a vs_truth section comparing the held-out figures with the truth.
With --include-store-history the state store's finished sessions (resolved alerts as labels,
see fitting_room/store_history.py) are exported to store_history.csv in the model folder and
trained on together with the data folder's history. Exit code 2 means an input file breaks
the data contract (the message names the file and row or column).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import joblib
import numpy as np
import pandas as pd
import scipy
import sklearn
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from fitting_room.catalog import Catalog
from fitting_room.errors import DataContractError
from fitting_room.evaluation import (
    anomaly_limit,
    anomaly_scores,
    duration_baselines,
    duration_importances,
    evaluate_anomaly,
    evaluate_duration,
    load_truth,
    vs_truth,
)
from fitting_room.features import ITEMS_COLUMN
from fitting_room.history import SESSIONS_FILE, has_labels, load_history, load_sessions
from fitting_room.manifest import write_manifest
from fitting_room.report import REPORT_FILE, AnomalyCurve, DurationDiagnostics, ReportInputs, write_report
from fitting_room.store_history import STORE_HISTORY_FILE, database_url, write_store_history
from models import AnomalyDetector, DurationPredictor

DURATION_FILE = "duration_model.pkl"
ANOMALY_FILE = "anomaly_model.pkl"
METRICS_FILE = "metrics.json"
MIN_SESSIONS = 50


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder with the contract files")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="where models are written")
    parser.add_argument(
        "--timezone",
        type=_zone_name,
        default=os.environ.get("FITTING_ROOM_TIMEZONE", "UTC"),
        help="store time zone, IANA name (default: $FITTING_ROOM_TIMEZONE or UTC)",
    )
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out share for metrics")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the models")
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenMP threads (1 avoids oversubscribing a shared machine)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="independent fits run at once, one thread each; results do not depend on it (default: usable cores)",
    )
    parser.add_argument(
        "--include-store-history",
        action="store_true",
        help="also train on the state store's finished sessions (staff alert verdicts as labels)",
    )
    parser.add_argument(
        "--database",
        default=None,
        help="state store path or SQLAlchemy URL for --include-store-history (default: $FITTING_ROOM_DATABASE)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip report.html (saves the plotting time)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; 0 on success, 2 when an input file breaks the data contract."""
    args = parse_args(argv)
    try:
        sessions, catalog = load_history(args.data_dir, timezone=args.timezone)
        if len(sessions) < MIN_SESSIONS:
            raise DataContractError(
                f"{args.data_dir / SESSIONS_FILE}: only {len(sessions)} sessions, need at least {MIN_SESSIONS}"
            )
        n_store = 0
        if args.include_store_history:
            sessions, n_store = _with_store_history(sessions, args)
    except DataContractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with threadpool_limits(limits=args.threads):
        metrics = train(sessions, catalog, args, store_sessions=n_store)
    print(_summary(metrics))
    return 0


def _with_store_history(sessions: pd.DataFrame, args: argparse.Namespace) -> tuple[pd.DataFrame, int]:
    """History plus the state store's finished sessions, both validated by the same loader."""
    path = args.model_dir / STORE_HISTORY_FILE
    exported = write_store_history(database_url(args.database), path)
    if exported.empty:
        print(f"note: the state store has no finished sessions yet ({path})", file=sys.stderr)
        return sessions, 0
    store = load_sessions(path, timezone=args.timezone)
    # A session already in the history file (e.g. an earlier export appended to it) counts once.
    store = store[~store["session_id"].isin(set(sessions["session_id"]))]
    return pd.concat([sessions, store], ignore_index=True), len(store)


def train(
    sessions: pd.DataFrame, catalog: Catalog, args: argparse.Namespace, store_sessions: int = 0
) -> dict[str, Any]:
    """Evaluate on a held-out split, refit on everything, save models, metrics and report; returns the metrics."""
    truth = load_truth(args.data_dir)
    stages = 6 + has_labels(sessions) + (truth is not None) + (not getattr(args, "no_report", False))
    # Stage-level progress: each stage is one long fit or evaluation, so a bar per row would
    # only slow 1M-session runs down; disable=None hides it when stderr is not a terminal.
    progress = tqdm(total=stages, desc="training", unit="stage", file=sys.stderr, disable=None)
    try:
        return _train(sessions, catalog, args, store_sessions, truth, progress)
    finally:
        progress.close()


def _train(
    sessions: pd.DataFrame,
    catalog: Catalog,
    args: argparse.Namespace,
    store_sessions: int,
    truth: pd.DataFrame | None,
    progress: tqdm,
) -> dict[str, Any]:
    """The stages of train(), advancing `progress` after each."""

    def step(name: str) -> None:
        progress.set_postfix_str(name)
        progress.update(1)

    train_part, test_part = _split(sessions, args.test_fraction, args.seed)
    progress.set_postfix_str("duration model (held-out split)")
    predictor = _predictor(args).fit(train_part, catalog)
    step("duration metrics")
    data = _data_summary(sessions, catalog, args)
    if args.include_store_history:
        data["store_history_sessions"] = store_sessions
    metrics: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "data": data,
        "split": {
            "test_fraction": args.test_fraction,
            "seed": args.seed,
            "train": len(train_part),
            "test": len(test_part),
        },
        "duration": evaluate_duration(predictor, test_part, catalog)
        | {"baselines": duration_baselines(train_part, test_part, catalog, args.seed, args.jobs)},
        "anomaly": {},
    }
    step("feature importance")
    metrics["duration"]["feature_importance"] = duration_importances(predictor, test_part, catalog, args.seed)
    curves: dict[str, AnomalyCurve] = {}
    # Session features depend on the duration model only: both detectors share them.
    train_features = AnomalyDetector.session_features(train_part, catalog, predictor)
    test_features = AnomalyDetector.session_features(test_part, catalog, predictor)
    for name, use_labels in (("with_labels", True), ("without_labels", False)):
        if use_labels and not has_labels(train_part):
            continue
        step(f"anomaly detector ({name.replace('_', ' ')})")
        detector = AnomalyDetector(random_state=args.seed, use_labels=use_labels, n_jobs=args.jobs).fit(
            train_part, catalog, predictor, train_features
        )
        metrics["anomaly"][name] = evaluate_anomaly(
            detector,
            predictor,
            train_part,
            test_part,
            catalog,
            args.seed,
            train_features=train_features,
            test_features=test_features,
        )
        scored = anomaly_scores(detector, predictor, test_part, catalog, test_features)
        if scored is not None:
            curves[name] = AnomalyCurve(scored.y, scored.score, scored.threshold)
    if truth is not None:
        step("comparison with the simulation truth")
        in_truth = test_part[test_part["session_id"].astype(str).isin(truth.index)]
        limit = anomaly_limit(args.data_dir, in_truth)
        metrics["vs_truth"] = vs_truth(predictor, test_part, catalog, truth, metrics["anomaly"], limit)
    step("final duration model (all sessions)")
    final_predictor = _predictor(args).fit(sessions, catalog)
    step("final anomaly detector (all sessions)")
    final_detector = AnomalyDetector(random_state=args.seed, n_jobs=args.jobs).fit(sessions, catalog, final_predictor)
    metrics["saved_models"] = {
        "fitted_on_sessions": len(sessions),
        "duration_boosting_rounds": final_predictor.n_iter_,
        "anomaly_uses_labels": final_detector.supervised_,
        "anomaly_threshold": final_detector.threshold_,
    }
    args.model_dir.mkdir(parents=True, exist_ok=True)
    final_predictor.save(args.model_dir / DURATION_FILE)
    final_detector.save(args.model_dir / ANOMALY_FILE)
    (args.model_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_manifest(
        args.model_dir,
        {
            "sklearn_version": sklearn.__version__,
            "versions": metrics["versions"],
            "feature_schema": final_predictor.builder_.schema,
            "data": metrics["data"],
            "headline_metrics": _headline(metrics),
        },
    )
    step("report")
    if not getattr(args, "no_report", False):
        median, _, _ = predictor.estimate_frame(test_part, catalog)
        diagnostics = DurationDiagnostics(
            actual=test_part["duration"].to_numpy(dtype=float),
            predicted=median,
            hour=test_part["entry_time"].map(lambda t: t.hour).to_numpy(dtype=int),
            n_items=test_part[ITEMS_COLUMN].map(len).to_numpy(dtype=int),
        )
        inputs = ReportInputs(diagnostics, curves, metrics["duration"]["feature_importance"])
        write_report(args.model_dir / REPORT_FILE, metrics, inputs)
        step("done")
    return metrics


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few held-out figures GET /models shows (anomaly PR-AUC only where labels allowed scoring)."""
    duration = metrics["duration"]
    headline: dict[str, Any] = {
        "duration_mae_minutes": duration["mae_minutes"],
        "duration_coverage": duration["coverage"],
        "duration_level": duration["level"],
        "duration_mean_width_minutes": duration["mean_width_minutes"],
    }
    for name, figures in metrics["anomaly"].items():
        if figures is not None:
            headline[f"anomaly_{name}_pr_auc"] = figures["pr_auc"]
    return headline


def _predictor(args: argparse.Namespace) -> DurationPredictor:
    """Duration model with the CLI's settings."""
    return DurationPredictor(timezone=args.timezone, random_state=args.seed, n_jobs=args.jobs)


def _split(sessions: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random train/test split of sessions."""
    order = np.random.default_rng(seed).permutation(len(sessions))
    n_test = round(len(sessions) * test_fraction)
    return sessions.iloc[np.sort(order[n_test:])], sessions.iloc[np.sort(order[:n_test])]


def _data_summary(sessions: pd.DataFrame, catalog: Catalog, args: argparse.Namespace) -> dict[str, Any]:
    """What the models were trained on."""
    scans = [item for items in sessions[ITEMS_COLUMN] for item in items]
    labels = sessions["is_anomaly"]
    types = sessions.loc[labels.fillna(False).astype(bool), "anomaly_type"].fillna("unspecified")
    duration = sessions["duration"]
    return {
        "data_dir": str(args.data_dir),
        "timezone": args.timezone,
        "sessions": len(sessions),
        "rooms": int(sessions["room_id"].nunique()),
        "first_entry": sessions["entry_time"].min().isoformat(),
        "last_entry": sessions["entry_time"].max().isoformat(),
        "catalog_items": len(catalog),
        "categories": list(catalog.categories),
        "scanned_items": len(scans),
        "unknown_item_scans": sum(1 for item in scans if item not in catalog),
        "duration_minutes": {
            "p05": float(duration.quantile(0.05)),
            "median": float(duration.median()),
            "p95": float(duration.quantile(0.95)),
        },
        "labelled_sessions": int(labels.notna().sum()),
        "labelled_anomalies": int(labels.fillna(False).astype(bool).sum()),
        "anomaly_types": {str(k): int(v) for k, v in types.value_counts().items()},
    }


def _versions() -> dict[str, str]:
    """Library versions the models were built with."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "joblib": joblib.__version__,
    }


def _summary(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    d = metrics["duration"]
    lines = [
        f"sessions: {metrics['data']['sessions']} (test {metrics['split']['test']})",
        f"duration: MAE {d['mae_minutes']:.2f} min, {d['level']:.0%} coverage {d['coverage']:.3f}, "
        f"mean width {d['mean_width_minutes']:.1f} min",
    ]
    for name, result in metrics["anomaly"].items():
        if result is None:
            lines.append(f"anomaly ({name}): no labelled test sessions of both classes")
        else:
            lines.append(
                f"anomaly ({name}): PR-AUC {result['pr_auc']:.3f}, precision {result['precision']:.2f}, "
                f"recall {result['recall']:.2f}"
            )
    if "vs_truth" in metrics:
        t = metrics["vs_truth"]["duration"]
        lines.append(
            f"vs truth: MAE / Bayes MAE {t['mae_over_bayes_mae']:.3f}, worst item-count coverage "
            f"{t['min_bucket_coverage']:.3f}, width / true width {t['width_over_true_width']:.3f}"
        )
        limit = metrics["vs_truth"]["anomaly"].get("achievable_limit")
        if limit:
            lines.append(
                f"vs truth: Bayes-optimal anomaly PR-AUC {limit['pr_auc']:.3f}, "
                f"precision at recall 0.8 {limit['precision_at_recall_0.8']:.3f}"
            )
    return "\n".join(lines)


def _zone_name(value: str) -> str:
    """argparse type: an IANA time zone name."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from err
    return value


if __name__ == "__main__":
    sys.exit(main())
