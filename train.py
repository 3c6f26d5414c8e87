"""Train the duration and anomaly models from the data contract files.

    python train.py [--data-dir data] [--model-dir models] [--timezone Europe/Berlin]
                    [--include-store-history [--database PATH_OR_URL]] [--jobs N] [--threads N]
                    [--large-data 200000] [--baseline-max-sessions 200000]
                    [--reuse-evaluation-models-from 500000]

Writes duration_model.pkl, anomaly_model.pkl (joblib), metrics.json, manifest.json and
report.html (the model card) into the model folder. Metrics come from models fitted on a random
training split and scored on the held-out rest; the saved models are then refitted on all
sessions with the same settings. When the data folder holds simulation_truth.csv (simulated
data), metrics.json gets a vs_truth section comparing the held-out figures with the truth.
With --include-store-history the state store's finished sessions (resolved alerts as labels,
see fitting_room/store_history.py) are exported to store_history.csv in the model folder and
trained on together with the data folder's history. Exit code 2 means an input file breaks
the data contract (the message names the file and row or column).

Large data (issue #7): from --large-data sessions on, cross-fits use 2 folds instead of 5; the
random-forest baseline is fitted on a sample of at most --baseline-max-sessions training sessions;
from --reuse-evaluation-models-from sessions on, the evaluated models are saved instead of refitted
on all sessions. metrics.json's "training_plan" says which applied; the README's "Offline:
1,000,000 sessions" gives the measured effect of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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
    FOREST_BASELINE,
    anomaly_limit,
    anomaly_scores,
    duration_baselines,
    duration_importances,
    evaluate_anomaly,
    evaluate_duration,
    forest_sample_size,
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
# Size-dependent decisions (issue #7; README "Offline: 1,000,000 sessions" has their measured effects). Below
# LARGE_DATA_SESSIONS nothing changes: the 20,000-session default data trains exactly as before.
CV_FOLDS = 5  # cross-fitting folds: duration residuals and scales, label-classifier thresholds
LARGE_DATA_SESSIONS = 200_000
# From LARGE_DATA_SESSIONS on, each fold model still trains on >= 80,000 sessions with 2 folds, where
# the learning curve is flat: its out-of-fold residuals are those of 5 folds at 40% of the fits' cost.
LARGE_DATA_CV_FOLDS = 2
# The random-forest baseline only fills a row of the report; its MAE stops moving long before this.
BASELINE_MAX_SESSIONS = 200_000
# From this many sessions on, the saved models are the evaluated ones (fitted on the training split,
# >= 400,000 sessions with the default test fraction) instead of a second fit on every session: the
# refit would add 25% more data where the learning curve is flat (and the models are within 0.3% of
# the Bayes MAE), at the cost of both fits again; without it the held-out figures are the served models'.
REUSE_EVALUATION_MODELS_SESSIONS = 500_000


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
    parser.add_argument(
        "--large-data",
        type=_positive_int,
        default=LARGE_DATA_SESSIONS,
        metavar="SESSIONS",
        help=f"from this many sessions on, cross-fits use {LARGE_DATA_CV_FOLDS} folds instead of {CV_FOLDS} "
        f"(default: {LARGE_DATA_SESSIONS})",
    )
    parser.add_argument(
        "--baseline-max-sessions",
        type=_positive_int,
        default=BASELINE_MAX_SESSIONS,
        metavar="SESSIONS",
        help="the random-forest baseline (report only) is fitted on a random sample of at most this many "
        f"training sessions (default: {BASELINE_MAX_SESSIONS})",
    )
    parser.add_argument(
        "--reuse-evaluation-models-from",
        type=_positive_int,
        default=REUSE_EVALUATION_MODELS_SESSIONS,
        metavar="SESSIONS",
        help="from this many sessions on, save the evaluated models (fitted on the training split) instead of "
        f"refitting on all sessions (default: {REUSE_EVALUATION_MODELS_SESSIONS})",
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
    """Evaluate on a held-out split, refit on everything (below the reuse threshold), save models, metrics, report."""
    truth = load_truth(args.data_dir)
    plan = training_plan(len(sessions), args)
    stages = 6 + has_labels(sessions) + (truth is not None) + (not getattr(args, "no_report", False))
    stages -= plan.reuse_evaluation_models  # one "saving the evaluated models" stage instead of two refits
    # Stage-level progress: each stage is one long fit or evaluation, so a bar per row would
    # only slow 1M-session runs down; disable=None hides it when stderr is not a terminal.
    progress = tqdm(total=stages, desc="training", unit="stage", file=sys.stderr, disable=None)
    try:
        return _train(sessions, catalog, args, plan, store_sessions, truth, progress)
    finally:
        progress.close()


def _train(
    sessions: pd.DataFrame,
    catalog: Catalog,
    args: argparse.Namespace,
    plan: TrainingPlan,
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
    predictor = _predictor(args, plan).fit(train_part, catalog)
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
        "training_plan": plan.as_metrics(),
        "duration": evaluate_duration(predictor, test_part, catalog)
        | _baselines(train_part, test_part, catalog, args, plan),
        "anomaly": {},
    }
    step("feature importance")
    metrics["duration"]["feature_importance"] = duration_importances(predictor, test_part, catalog, args.seed)
    curves: dict[str, AnomalyCurve] = {}
    detectors: dict[str, AnomalyDetector] = {}
    # Session features depend on the duration model only: both detectors share them.
    train_features = AnomalyDetector.session_features(train_part, catalog, predictor)
    test_features = AnomalyDetector.session_features(test_part, catalog, predictor)
    for name, use_labels in (("with_labels", True), ("without_labels", False)):
        if use_labels and not has_labels(train_part):
            continue
        step(f"anomaly detector ({name.replace('_', ' ')})")
        detector = _detector(args, plan, use_labels=use_labels).fit(train_part, catalog, predictor, train_features)
        detectors[name] = detector
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
    if plan.reuse_evaluation_models:
        step("saving the evaluated models (large data: no refit)")
        final_predictor = predictor
        # The with-labels detector is the final recipe (use_labels=True); without labels in the training split
        # the without-labels one is the same fit, as a detector that wants labels but finds none is unsupervised.
        final_detector = detectors.get("with_labels", detectors["without_labels"])
        fitted_on = len(train_part)
    else:
        step("final duration model (all sessions)")
        final_predictor = _predictor(args, plan).fit(sessions, catalog)
        step("final anomaly detector (all sessions)")
        final_detector = _detector(args, plan).fit(sessions, catalog, final_predictor)
        fitted_on = len(sessions)
    metrics["saved_models"] = {
        "fitted_on_sessions": fitted_on,
        "refitted_on_all_sessions": not plan.reuse_evaluation_models,
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
            # GET /models shows this: at large data the served models saw the training split only.
            "data": metrics["data"] | {"fitted_on_sessions": fitted_on},
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


@dataclass(frozen=True)
class TrainingPlan:
    """The size-dependent settings of one run, chosen once from the number of sessions (metrics.json)."""

    sessions: int
    large_data_sessions: int
    cv_folds: int
    baseline_max_sessions: int
    reuse_from_sessions: int

    @property
    def large_data(self) -> bool:
        """Whether the large-data settings apply."""
        return self.sessions >= self.large_data_sessions

    @property
    def reuse_evaluation_models(self) -> bool:
        """Whether the evaluated models are saved as they are instead of refitted on all sessions."""
        return self.sessions >= self.reuse_from_sessions

    def as_metrics(self) -> dict[str, Any]:
        """The plan as metrics.json records it."""
        return {
            "large_data": self.large_data,
            "large_data_from_sessions": self.large_data_sessions,
            "cv_folds": self.cv_folds,
            "baseline_max_sessions": self.baseline_max_sessions,
            "reuse_evaluation_models_from_sessions": self.reuse_from_sessions,
            "saved_models_are_the_evaluated_ones": self.reuse_evaluation_models,
        }


def training_plan(n_sessions: int, args: argparse.Namespace) -> TrainingPlan:
    """Settings for training on `n_sessions`; the thresholds come from the CLI (defaults: the constants above)."""
    # getattr: train() is also called with hand-built namespaces that predate these options.
    large_from = getattr(args, "large_data", LARGE_DATA_SESSIONS)
    # Evaluation and final fits share the plan, so the held-out figures describe the saved models' recipe.
    return TrainingPlan(
        sessions=n_sessions,
        large_data_sessions=large_from,
        cv_folds=LARGE_DATA_CV_FOLDS if n_sessions >= large_from else CV_FOLDS,
        baseline_max_sessions=getattr(args, "baseline_max_sessions", BASELINE_MAX_SESSIONS),
        reuse_from_sessions=getattr(args, "reuse_evaluation_models_from", REUSE_EVALUATION_MODELS_SESSIONS),
    )


def _baselines(
    train_part: pd.DataFrame, test_part: pd.DataFrame, catalog: Catalog, args: argparse.Namespace, plan: TrainingPlan
) -> dict[str, Any]:
    """metrics["duration"] entries of the baselines, with how many training sessions each was fitted on."""
    baselines = duration_baselines(
        train_part, test_part, catalog, args.seed, args.jobs, forest_max_sessions=plan.baseline_max_sessions
    )
    n_train, n_forest = len(train_part), forest_sample_size(len(train_part), plan.baseline_max_sessions)
    out: dict[str, Any] = {
        "baselines": baselines,
        "baselines_fitted_on_sessions": dict.fromkeys(baselines, n_train) | {FOREST_BASELINE: n_forest},
    }
    if n_forest < n_train:
        out["baselines_note"] = (
            f"{FOREST_BASELINE.removesuffix('_mae_minutes')} fitted on a random sample of {n_forest} "
            f"of the {n_train} training sessions"
        )
    return out


def _predictor(args: argparse.Namespace, plan: TrainingPlan) -> DurationPredictor:
    """Duration model with the CLI's settings."""
    return DurationPredictor(timezone=args.timezone, random_state=args.seed, cv_folds=plan.cv_folds, n_jobs=args.jobs)


def _detector(args: argparse.Namespace, plan: TrainingPlan, use_labels: bool = True) -> AnomalyDetector:
    """Anomaly detector with the CLI's settings."""
    return AnomalyDetector(random_state=args.seed, use_labels=use_labels, cv_folds=plan.cv_folds, n_jobs=args.jobs)


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


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _zone_name(value: str) -> str:
    """argparse type: an IANA time zone name."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from err
    return value


if __name__ == "__main__":
    sys.exit(main())
