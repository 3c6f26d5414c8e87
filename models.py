"""Duration prediction and anomaly detection for fitting-room sessions.

DurationPredictor predicts the conditional median duration and a full predictive distribution:
a gradient-boosted median model m(x) on log minutes, a scale model s(x) of the absolute log
residual, and the empirical distribution of normalised residuals r = (log y - m(x)) / s(x).
Residuals and scales are out-of-fold (K-fold cross-fitting), so every training session
calibrates the intervals without being judged by a model that saw it. The quantile at p is
m(x) * exp(s(x) * Q_r(p)) with the conformal (n + 1) rank correction.

Labelled anomalies (is_anomaly true) are left out of the median and scale fits when labels
exist, but stay in the calibration residuals: the API sees anomalous sessions too, so the
interval coverage is calibrated on all sessions.

The saved m and s are fitted on all training sessions (labelled anomalies excluded); the
out-of-fold fits exist only to produce honest residuals and, for the detector, honest
duration judgements of the training sessions.

AnomalyDetector combines hard evidence (evidence.py) with learned behaviour. Without labels it
adds surprisals (-log10 p) of four tests learned from the store's history: how rare the evidence
pattern is, whether the dearest item went missing, how far the stay exceeds the central part of
the predicted distribution, and an IsolationForest fitted on sessions without hard evidence.
With labels, a gradient-boosted classifier over the same features and surprisals joins them.
The local entry hour is a detector feature for the label-trained classifier only (theft is
likelier late in the day); the unlabelled tests ignore it, because without labels a rare hour is
not evidence of anything. analyse() takes the entry time optionally; without it the hour is
missing and the classifier falls back to its learned default branch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from statistics import NormalDist
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import joblib
import numpy as np
import pandas as pd
import sklearn
from scipy.special import ndtr
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
)
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from fitting_room.catalog import Catalog
from fitting_room.errors import InvalidRequestError, ModelLoadError
from fitting_room.evidence import Evidence, Reason, collect_evidence, evidence_reasons, sessions_with_evidence
from fitting_room.fastpath import FastClassifier, FastIsolationForest, FastRegressors
from fitting_room.features import FeatureBuilder
from fitting_room.tree_strategies import CompiledTrees, NativeWalk

__all__ = [
    "QUANTILE_LEVELS",
    "AnomalyDetector",
    "AnomalyResult",
    "DurationEstimate",
    "DurationPredictor",
    "Reason",
]

# Probabilities of DurationEstimate.quantiles: 0.01, 0.02, ..., 0.99.
QUANTILE_LEVELS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 100))
_Z_LEVELS = np.array([NormalDist().inv_cdf(p) for p in QUANTILE_LEVELS])
_Z_LEVELS.flags.writeable = False
# _z_from_grid's tie-break added to a grid of len(QUANTILE_LEVELS) values, computed once.
_TIES = np.arange(len(QUANTILE_LEVELS)) * 1e-12
_TIES.flags.writeable = False
# _Z_LEVELS at the grid points _z_from_grid extrapolates from (1%, 5%, 95%, 99%), as Python floats.
_Z_FIRST, _Z_FIFTH, _Z_FIFTH_LAST, _Z_LAST = (float(_Z_LEVELS[i]) for i in (0, 4, -5, -1))
MIN_DURATION = 0.1  # minutes; shorter (or zero) durations are floored before taking logs
MIN_LEVEL, MAX_LEVEL = 0.5, 0.99
_Z_CLIP = 8.0  # normal scores beyond +-8 carry no extra meaning and would overflow p-values
_FORMAT = "fitting-room-model"
_FORMAT_VERSION = 1

M = TypeVar("M", bound="_Persistent")
T = TypeVar("T")


@dataclass(frozen=True)
class DurationInterval:
    """Predicted session duration in minutes.

    `median` is the point prediction (conditional median: half of comparable sessions take
    longer); [`low`, `high`] is the central interval holding a fraction `level` of sessions.
    """

    median: float
    low: float
    high: float
    level: float
    unknown_item_ids: list[str]


@dataclass(frozen=True)
class DurationEstimate(DurationInterval):
    """A DurationInterval with the whole distribution: `quantiles[i]` is the duration not exceeded with
    probability QUANTILE_LEVELS[i]."""

    quantiles: tuple[float, ...]


@dataclass(frozen=True)
class AnomalyResult:
    """Verdict on a finished session; `anomaly_score` is 0-1, higher is more suspicious."""

    is_anomaly: bool
    anomaly_score: float
    risk_level: str  # "low" | "medium" | "high"
    reasons: list[Reason]
    missing_items: list[str]
    unexpected_items: list[str]


class _Persistent:
    """joblib save/load with a checked envelope (class, library versions, feature schema).

    Fitted models keep a fast-path twin (fitting_room.fastpath: the trees as flat arrays, outputs
    equal to scikit-learn's) for the API's one-row calls; it is built at load and on first use after a
    fit, and never pickled, so the artifacts stay plain scikit-learn.
    """

    _fast: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the fast-path twin; it is rebuilt from the scikit-learn models."""
        return {k: v for k, v in self.__dict__.items() if k != "_fast"}

    def _compile(self) -> Any:
        """The fast-path twin of the fitted scikit-learn models."""
        raise NotImplementedError

    def _fast_path(self) -> Any:
        """The fast-path twin, compiled on first use."""
        if self._fast is None:
            self._fast = self._compile()
        return self._fast

    @property
    def inference(self) -> str:
        """How a request's row is scored: "native" (every ensemble on the compiled tree walk) or "numpy"."""
        return "native" if all(isinstance(t, NativeWalk) for t in self._compiled_trees()) else "numpy"

    def _compiled_trees(self) -> Sequence[CompiledTrees]:
        """The fast path's compiled ensembles."""
        raise NotImplementedError

    def _schema(self) -> dict[str, Any]:
        """What a saved copy must agree on with the current code to be usable."""
        raise NotImplementedError

    def _expected_schema(self) -> dict[str, Any]:
        """The schema the current code builds for this fitted model's settings."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the fitted model to `path` (joblib) with the metadata `load` checks."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        envelope = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "class": type(self).__name__,
            "sklearn_version": sklearn.__version__,
            "numpy_version": np.__version__,
            "schema": self._schema(),
            "model": self,
        }
        joblib.dump(envelope, path)

    @classmethod
    def load(cls: type[M], path: Path) -> M:
        """Read a model saved by `save`; ModelLoadError if missing, foreign, or built for other code."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} not found (run: python train.py)")
        try:
            with warnings.catch_warnings():
                # A version mismatch is reported below with a clearer message.
                warnings.simplefilter("ignore")
                envelope = joblib.load(path)
        except Exception as err:
            raise ModelLoadError(f"model file {path} cannot be read: {err}") from err
        if not isinstance(envelope, dict) or envelope.get("format") != _FORMAT:
            raise ModelLoadError(f"model file {path} is not a fitting-room model file")
        if envelope.get("class") != cls.__name__ or not isinstance(envelope.get("model"), cls):
            raise ModelLoadError(f"model file {path} holds a {envelope.get('class')}, expected a {cls.__name__}")
        if envelope.get("sklearn_version") != sklearn.__version__:
            raise ModelLoadError(
                f"model file {path} was built with scikit-learn {envelope.get('sklearn_version')}, "
                f"this service runs {sklearn.__version__}: retrain with python train.py"
            )
        model: M = envelope["model"]
        if envelope.get("schema") != model._expected_schema():
            raise ModelLoadError(
                f"model file {path} was built for another feature schema: retrain with python train.py"
            )
        model._fast_path()  # compile now, not on the first request
        return model


class DurationPredictor(_Persistent):
    """Conditional median and predictive distribution of session duration (minutes)."""

    def __init__(
        self,
        *,
        timezone: str = "UTC",
        random_state: int = 0,
        max_iter: int = 1000,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        scale_max_iter: int = 100,
        cv_folds: int = 5,
        exclude_labelled_anomalies: bool = True,
        n_jobs: int = 1,
    ) -> None:
        """Store hyperparameters; `max_iter` caps boosting rounds (early stopping picks fewer).

        `n_jobs` independent fits (cross-fitting folds) run at once, one thread each; results do not depend on it.
        """
        self.timezone = timezone
        self.random_state = random_state
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.scale_max_iter = scale_max_iter
        self.cv_folds = cv_folds
        self.exclude_labelled_anomalies = exclude_labelled_anomalies
        self.n_jobs = n_jobs

    def fit(self, sessions: pd.DataFrame, catalog: Catalog) -> DurationPredictor:
        """Learn from history.load_sessions() output; needs at least 2 * cv_folds sessions."""
        if len(sessions) < 2 * self.cv_folds:
            raise ValueError(f"need at least {2 * self.cv_folds} sessions to fit, got {len(sessions)}")
        self._fast = None
        self.builder_ = FeatureBuilder(catalog.categories, self.timezone)
        x = self.builder_.frame(sessions, catalog)
        log_y = np.log(np.maximum(sessions["duration"].to_numpy(dtype=float), MIN_DURATION))
        train = ~_labelled_anomalies(sessions) if self.exclude_labelled_anomalies else np.ones(len(x), bool)
        self.median_model_ = self._median_model(self.max_iter, early_stopping=True).fit(x[train], log_y[train])
        self.n_iter_ = int(self.median_model_.n_iter_)
        folds = list(KFold(self.cv_folds, shuffle=True, random_state=self.random_state).split(x))
        _, oof_median = self._cross_fit(x, log_y, train, folds, partial(self._median_model, self.n_iter_))
        abs_residual = np.abs(log_y - oof_median)
        self.scale_floor_ = max(0.2 * float(np.median(abs_residual[train])), 1e-3)
        self.scale_model_, oof_scale = self._cross_fit(x, abs_residual, train, folds, self._scale_model, full=True)
        oof_scale = np.maximum(oof_scale, self.scale_floor_)
        self.residuals_ = np.sort((log_y - oof_median) / oof_scale)
        self.quantile_grid_ = np.array([self._residual_quantile(p) for p in QUANTILE_LEVELS])
        ids = sessions["session_id"].astype(str).tolist()
        self.out_of_fold_ = dict(zip(ids, zip(oof_median.tolist(), oof_scale.tolist(), strict=True), strict=True))
        self.n_sessions_ = len(x)
        self.n_train_sessions_ = int(train.sum())
        return self

    def estimate(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> DurationEstimate:
        """Predicted duration for a session starting now with these items; `level` in 0.5-0.99."""
        found, center, scale = self._row_interval(item_ids, entry_time, catalog, level)
        grid = np.exp(center + scale * self.quantile_grid_)
        # The interval's fields as found, and the grid as Python floats (the same values).
        return DurationEstimate(**vars(found), quantiles=tuple(grid.tolist()))

    def interval(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> DurationInterval:
        """estimate() without the quantile grid, which a kiosk's prediction never shows (a sixth of its cost)."""
        return self._row_interval(item_ids, entry_time, catalog, level)[0]

    def _row_interval(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float
    ) -> tuple[DurationInterval, float, float]:
        """The interval, and the log-scale centre and scale of the distribution it comes from."""
        if not MIN_LEVEL <= level <= MAX_LEVEL:
            raise InvalidRequestError(f"interval level must be between {MIN_LEVEL} and {MAX_LEVEL}, got {level}")
        x, unknown = self.builder_.row(item_ids, entry_time, catalog)
        # Both models in one fast-path pass; the same numbers as their predict().
        center, raw_scale = self._fast_path().predict_row(x)
        scale = max(raw_scale, self.scale_floor_)
        median = math.exp(center)
        low = math.exp(center + scale * self._residual_quantile((1.0 - level) / 2.0))
        high = math.exp(center + scale * self._residual_quantile((1.0 + level) / 2.0))
        return DurationInterval(median, min(low, median), max(high, median), float(level), unknown), center, scale

    def estimate_frame(
        self, sessions: pd.DataFrame, catalog: Catalog, level: float = 0.9
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, low, high) minutes for many sessions at once; the same numbers as estimate()."""
        if not MIN_LEVEL <= level <= MAX_LEVEL:
            raise InvalidRequestError(f"interval level must be between {MIN_LEVEL} and {MAX_LEVEL}, got {level}")
        x = self.builder_.frame(sessions, catalog)
        center = self.median_model_.predict(x)
        scale = np.maximum(self.scale_model_.predict(x), self.scale_floor_)
        median = np.exp(center)
        low = np.exp(center + scale * self._residual_quantile((1.0 - level) / 2.0))
        high = np.exp(center + scale * self._residual_quantile((1.0 + level) / 2.0))
        return median, np.minimum(low, median), np.maximum(high, median)

    def quantile_of(self, duration: float, estimate: DurationEstimate) -> float:
        """P(D <= duration) under the estimate's distribution, in [0, 1]; near 1 means an overstay."""
        return float(ndtr(self.z_of(duration, estimate)))

    def z_of(self, duration: float, estimate: DurationEstimate) -> float:
        """Normal score of quantile_of (0 = median, 2.33 = 99th percentile), clipped to +-8."""
        log_grid = np.log(np.asarray(estimate.quantiles, dtype=float))
        return float(_z_from_grid(np.array([math.log(max(duration, MIN_DURATION))]), log_grid[None, :])[0])

    def history_log_grids(self, sessions: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """(log minutes, n x 99 log quantile grids) per session; out-of-fold for sessions fitted on."""
        center = np.empty(len(sessions))
        scale = np.empty(len(sessions))
        unseen = []
        for i, session_id in enumerate(sessions["session_id"].astype(str)):
            stored = self.out_of_fold_.get(session_id)
            if stored is None:
                unseen.append(i)
            else:
                center[i], scale[i] = stored
        if unseen:
            x = self.builder_.frame(sessions.iloc[unseen], catalog)
            center[unseen] = self.median_model_.predict(x)
            scale[unseen] = np.maximum(self.scale_model_.predict(x), self.scale_floor_)
        log_y = np.log(np.maximum(sessions["duration"].to_numpy(dtype=float), MIN_DURATION))
        return log_y, center[:, None] + scale[:, None] * self.quantile_grid_[None, :]

    def history_z(self, sessions: pd.DataFrame, catalog: Catalog) -> np.ndarray:
        """z_of each session's observed duration; out-of-fold for sessions this model was fitted on."""
        return _z_from_grid(*self.history_log_grids(sessions, catalog))

    def _residual_quantile(self, p: float) -> float:
        """Conformal quantile of the normalised residuals: rank ceil((n+1)p) above the median, floor below."""
        n = len(self.residuals_)
        rank = math.ceil((n + 1) * p) if p >= 0.5 else math.floor((n + 1) * p)
        return float(self.residuals_[min(max(rank, 1), n) - 1])

    def _median_model(self, max_iter: int, early_stopping: bool = False) -> HistGradientBoostingRegressor:
        """Absolute-error boosting on log minutes: its prediction is the conditional median."""
        return HistGradientBoostingRegressor(
            loss="absolute_error",
            learning_rate=self.learning_rate,
            max_iter=max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=early_stopping,
            validation_fraction=0.1,
            n_iter_no_change=30,
            random_state=self.random_state,
        )

    def _scale_model(self) -> HistGradientBoostingRegressor:
        """Heavily regularised model of the mean absolute log residual (the local spread)."""
        return HistGradientBoostingRegressor(
            loss="squared_error",
            learning_rate=0.05,
            max_iter=self.scale_max_iter,
            max_leaf_nodes=7,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=self.random_state,
        )

    def _cross_fit(
        self,
        x: np.ndarray,
        target: np.ndarray,
        train: np.ndarray,
        folds: list[tuple[np.ndarray, np.ndarray]],
        make: Callable[[], Any],
        full: bool = False,
    ) -> tuple[Any, np.ndarray]:
        """_cross_fitted where each fold's model sees only `train` rows outside it (and the full model all of them)."""
        in_train = [(rows[train[rows]], held_out) for rows, held_out in folds]
        return _cross_fitted(make, x, target, in_train, np.flatnonzero(train) if full else None, self.n_jobs)

    def _schema(self) -> dict[str, Any]:
        return self.builder_.schema

    def _expected_schema(self) -> dict[str, Any]:
        return FeatureBuilder(self.builder_.categories, self.builder_.timezone).schema

    def _compile(self) -> FastRegressors:
        return FastRegressors([self.median_model_, self.scale_model_])

    def _compiled_trees(self) -> Sequence[CompiledTrees]:
        return [self._fast_path().trees]


# Features of a finished session; larger is more suspicious for all but n_items.
DETECTOR_FEATURES: tuple[str, ...] = (
    "duration_z",  # normal score of the duration's quantile under the predicted distribution
    "duration_z_robust",  # (log minutes - log median) / scale of the central 50% of that distribution
    "n_missing",
    "n_unexpected",
    "n_swaps",
    "missing_value",  # store currency
    "missing_share",  # missing value / value taken in
    "swap_value",  # price lost to probable tag swaps
    "n_items",
    "missing_rank",  # share of the other items cheaper than the dearest missing one (1 = dearest taken)
    "entry_hour",  # store-local hour with minutes as a fraction; NaN when unknown (classifier only)
)
_Z, _Z_ROBUST, _N_MISSING, _N_UNEXPECTED, _N_SWAPS = 0, 1, 2, 3, 4
_N_ITEMS, _MISSING_RANK, _HOUR = 8, 9, 10
_BEHAVIOUR = (_Z_ROBUST, _N_ITEMS)  # what the IsolationForest sees
_IQR_Z = 2.0 * NormalDist().inv_cdf(0.75)  # width of the central 50% of a standard normal
_IQR_COLUMNS = tuple(QUANTILE_LEVELS.index(p) for p in (0.25, 0.5, 0.75))  # lower, median, upper quartile
RISK_LEVELS = ("low", "medium", "high")
# Up to this many rows (a request's), scores come from the fast path; larger batches (training, evaluation)
# from scikit-learn's multithreaded predict. Both give the same numbers.
_FAST_PATH_ROWS = 64


class AnomalyDetector(_Persistent):
    """Scores finished sessions 0-1 (higher = more suspicious) and explains why.

    Without labels, suspicion is a sum of surprisals (-log10 p-values, larger is worse) of four
    tests, each asking how unusual the session is for this store: the evidence pattern (share
    of historical sessions with the same numbers of missing / unexpected items / swaps), the
    price rank of the dearest missing item (thieves take expensive items, misreads hit any
    item), the overstay (duration against the central part of the predicted distribution) and
    the IsolationForest fitted on sessions without hard evidence; a probable tag swap adds
    `swap_weight`. `anomaly_score` is the share of historical sessions that were less
    suspicious, and a session is flagged when Fisher's combination of the four p-values is
    <= `flag_p`.
    With labels, a gradient-boosted classifier on the features and the surprisals gives
    `anomaly_score` as a probability; the flag threshold is the one with the best out-of-fold
    precision among those keeping recall >= `target_recall`.
    Risk: "high" when flagged, "medium" from the medium band, else "low".
    """

    def __init__(
        self,
        *,
        random_state: int = 0,
        n_estimators: int = 100,
        swap_weight: float = 3.0,
        flag_p: float = 0.01,
        medium_p: float = 0.05,
        target_recall: float = 0.85,
        medium_recall: float = 0.95,
        min_labels: int = 50,
        cv_folds: int = 5,
        use_labels: bool = True,
        currency: str = "€",
        n_jobs: int = 1,
    ) -> None:
        """Store settings; `min_labels` positives and negatives are needed to train on labels.

        `n_jobs` independent classifier fits run at once, one thread each; results do not depend on it.
        """
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.swap_weight = swap_weight
        self.flag_p = flag_p
        self.medium_p = medium_p
        self.target_recall = target_recall
        self.medium_recall = medium_recall
        self.min_labels = min_labels
        self.cv_folds = cv_folds
        self.use_labels = use_labels
        self.currency = currency
        self.n_jobs = n_jobs

    def fit(
        self,
        sessions: pd.DataFrame,
        catalog: Catalog,
        predictor: DurationPredictor,
        features: np.ndarray | None = None,
    ) -> AnomalyDetector:
        """Learn normal behaviour (and labels when present) from history.load_sessions() output.

        `features` is session_features(sessions, catalog, predictor) when the caller already has it.
        """
        self._fast = None
        if features is None:
            features = self.session_features(sessions, catalog, predictor)
        self.pattern_share_ = _pattern_shares(features)
        labelled_anomaly = _labelled_anomalies(sessions)
        clean = ~features[:, _N_MISSING : _N_SWAPS + 1].any(axis=1) & ~labelled_anomaly
        if clean.sum() < 10:
            raise ValueError("need at least 10 sessions without hard evidence to learn normal behaviour")
        self.isolation_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
        self.isolation_.fit(features[clean][:, _BEHAVIOUR])
        self.isolation_reference_ = np.sort(self._isolation_raw(features[clean]))
        surprisal = self._surprisals(features)
        self.suspicion_reference_ = _reference_grid(surprisal.sum(axis=1))
        labels = sessions["is_anomaly"] if "is_anomaly" in sessions else pd.Series(pd.NA, index=sessions.index)
        known = labels.notna().to_numpy()
        y = labels[known].astype(bool).to_numpy()
        self.supervised_ = bool(self.use_labels and y.sum() >= self.min_labels and (~y).sum() >= self.min_labels)
        self.classifier_: HistGradientBoostingClassifier | None = None
        if self.supervised_:
            self._fit_classifier(features[known], y)
        else:
            self.threshold_ = self._score_from_suspicion(np.array([_fisher_inverse(self.flag_p)]))[0]
            self.medium_threshold_ = self._score_from_suspicion(np.array([_fisher_inverse(self.medium_p)]))[0]
        self._fast = None  # a small fit may have compiled it before the classifier existed
        return self

    def analyse(
        self,
        *,
        entry_scans: Sequence[str],
        exit_scans: Sequence[str],
        duration: float,
        estimate: DurationEstimate,
        catalog: Catalog,
        predictor: DurationPredictor,
        entry_time: datetime | None = None,
    ) -> AnomalyResult:
        """Verdict, score and reasons for a finished session of `duration` minutes that began at `entry_time`."""
        evidence = collect_evidence(entry_scans, exit_scans, catalog)
        z, z_robust = _duration_scores(math.log(max(duration, MIN_DURATION)), estimate.quantiles)
        # getattr: a wrapped or fast-path predictor may not carry the time zone; UTC is the default.
        hour = _local_hour(entry_time, getattr(predictor, "timezone", "UTC"))
        # One row of DETECTOR_FEATURES as Python floats: the same numbers as _feature_rows, without 2-D arrays.
        features = [z, z_robust, *map(float, _evidence_columns(evidence)), hour]
        score = self._score_one(features)
        is_anomaly = bool(score >= self.threshold_)
        reasons = evidence_reasons(evidence, self.currency)
        reasons += self._behaviour_reasons(features, duration, estimate, is_anomaly and not reasons)
        return AnomalyResult(
            is_anomaly=is_anomaly,
            anomaly_score=score,
            risk_level=self.risk_level(score),
            reasons=reasons,
            missing_items=[m.item_id for m in evidence.missing],
            unexpected_items=[u.item_id for u in evidence.unexpected],
        )

    def score(self, features: np.ndarray) -> np.ndarray:
        """anomaly_score (0-1, higher = more suspicious) for rows of DETECTOR_FEATURES."""
        surprisal = self._surprisals(features)
        if self.classifier_ is None:
            return self._score_from_suspicion(surprisal.sum(axis=1))
        inputs = np.column_stack((features, surprisal))
        if len(inputs) <= _FAST_PATH_ROWS:
            return np.asarray(self._fast_path().classifier.predict_proba(inputs)[:, 1])
        return self.classifier_.predict_proba(inputs)[:, 1]

    @staticmethod
    def session_features(sessions: pd.DataFrame, catalog: Catalog, predictor: DurationPredictor) -> np.ndarray:
        """DETECTOR_FEATURES of finished sessions; durations judged out-of-fold where possible."""
        log_y, log_grid = predictor.history_log_grids(sessions, catalog)
        evidence = _evidence_block(sessions["entry_scans"].tolist(), sessions["exit_scans"].tolist(), catalog)
        return _feature_rows(log_y, log_grid, evidence, _local_hours(sessions["entry_time"], predictor.timezone))

    def risk_level(self, score: float) -> str:
        """Risk band of a score: high at or above the flag threshold, medium from the medium band, else low."""
        if score >= self.threshold_:
            return "high"
        return "medium" if score >= self.medium_threshold_ else "low"

    def _isolation_raw(self, features: np.ndarray) -> np.ndarray:
        """IsolationForest abnormality of the behaviour columns; higher is more abnormal."""
        if len(features) <= _FAST_PATH_ROWS:
            return -np.asarray(self._fast_path().isolation.score_samples(features[:, _BEHAVIOUR]))
        return -self.isolation_.score_samples(features[:, _BEHAVIOUR])

    def _surprisals(self, features: np.ndarray) -> np.ndarray:
        """-log10 p of the evidence-pattern, price-rank, overstay and isolation tests (n x 4; + swap prior)."""
        reference = self.isolation_reference_
        exceed = len(reference) - np.searchsorted(reference, self._isolation_raw(features), side="left")
        p_isolation = (1.0 + exceed) / (1.0 + len(reference))
        p_overstay = np.maximum(ndtr(-features[:, _Z_ROBUST]), 1e-300)
        unseen = 1.0 / (1.0 + self.pattern_share_["n"])  # a pattern never seen in training
        codes = _pattern_codes(features)
        p_pattern = np.array([self.pattern_share_.get(key, unseen) for key in _PATTERNS])[codes]
        n = np.maximum(features[:, _N_ITEMS], 1.0)
        rank = features[:, _MISSING_RANK] * (features[:, _N_MISSING] > 0) * (n > 1)
        # Under a random miss the dearest missing item is uniform over the basket's price order.
        p_rank = 1.0 - rank * (n - 1.0) / n
        surprisal = -np.log10(np.column_stack((p_pattern, p_rank, p_overstay, p_isolation)))
        surprisal[:, 0] += self.swap_weight * (features[:, _N_SWAPS] > 0)
        return surprisal

    def _score_from_suspicion(self, suspicion: np.ndarray) -> np.ndarray:
        """Share of training sessions less suspicious, strictly increasing so ranks survive."""
        grid = self.suspicion_reference_
        levels = np.linspace(0.0, 1.0, len(grid))
        inside = np.interp(suspicion, grid, levels)
        # Beyond the training range, keep ordering instead of saturating at exactly 0 or 1.
        above = suspicion > grid[-1]
        inside[above] = 1.0 - 1e-3 * np.exp(-(suspicion[above] - grid[-1]))
        below = suspicion < grid[0]
        inside[below] = 1e-3 * np.exp(suspicion[below] - grid[0])
        return np.clip(inside, 0.0, 1.0)

    def _fit_classifier(self, features: np.ndarray, y: np.ndarray) -> None:
        """Label-trained classifier; thresholds chosen on out-of-fold probabilities."""
        inputs = np.column_stack((features, self._surprisals(features)))
        folds = list(StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.random_state).split(inputs, y))
        classifier, out_of_fold = _cross_fitted(self._classifier, inputs, y, folds, np.arange(len(y)), self.n_jobs)
        self.threshold_, self.validation_precision_, self.validation_recall_ = _threshold_for_recall(
            y, out_of_fold, self.target_recall
        )
        medium, _, _ = _threshold_for_recall(y, out_of_fold, self.medium_recall)
        self.medium_threshold_ = min(medium, self.threshold_)
        self.classifier_ = classifier

    def _classifier(self) -> HistGradientBoostingClassifier:
        """Small boosted classifier; log loss keeps its probabilities roughly calibrated."""
        return HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=200,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=self.random_state,
        )

    def _behaviour_reasons(
        self, features: Sequence[float], duration: float, estimate: DurationEstimate, need_one: bool
    ) -> list[Reason]:
        """Overstay / unusual-behaviour reasons; `need_one` forces a reason for a flagged session."""
        quantile = float(ndtr(features[_Z]))
        if quantile >= 0.95:
            return [
                Reason(
                    "overstay",
                    f"stayed {duration:.0f} min, longer than {_percent(quantile)} of comparable "
                    f"sessions (predicted {estimate.median:.0f} min)",
                )
            ]
        if need_one:
            return [
                Reason(
                    "unusual_behaviour",
                    "the visit does not look like past sessions with similar items "
                    f"(stayed {duration:.0f} min, predicted {estimate.median:.0f} min)",
                )
            ]
        return []

    def _schema(self) -> dict[str, Any]:
        return {"detector_features": list(DETECTOR_FEATURES)}

    def _expected_schema(self) -> dict[str, Any]:
        return {"detector_features": list(DETECTOR_FEATURES)}

    def _compiled_trees(self) -> Sequence[CompiledTrees]:
        fast: _DetectorTwin = self._fast_path()
        return [fast.isolation.trees] + ([fast.classifier.trees] if fast.classifier is not None else [])

    def _compile(self) -> _DetectorTwin:
        classifier = getattr(self, "classifier_", None)
        reference = getattr(self, "suspicion_reference_", None)  # absent while fit() is still running
        return _DetectorTwin(
            isolation=FastIsolationForest(self.isolation_),
            classifier=FastClassifier(classifier) if classifier is not None else None,
            suspicion_levels=np.linspace(0.0, 1.0, len(reference)) if reference is not None else None,
        )

    def _score_one(self, features: list[float]) -> float:
        """score() of one row of DETECTOR_FEATURES given as floats; the same number, a few numpy calls."""
        fast: _DetectorTwin = self._fast_path()
        surprisal = self._surprisals_one(features, fast.isolation)
        if fast.classifier is None:
            # np.add.reduce over the four values, as surprisal.sum(axis=1) adds a row (not Python's sum).
            return self._score_from_suspicion_one(float(np.add.reduce(np.array(surprisal))), fast.suspicion_levels)
        return fast.classifier.positive_proba_one(np.array(features + surprisal))

    def _surprisals_one(self, features: list[float], isolation: FastIsolationForest) -> list[float]:
        """_surprisals of one row as floats (the same numbers: same operations, numpy for logs and powers)."""
        z_robust, n_items = features[_Z_ROBUST], features[_N_ITEMS]
        n_missing, n_swaps = features[_N_MISSING], features[_N_SWAPS]
        reference = self.isolation_reference_
        abnormality = -isolation.score_one(np.array((z_robust, n_items)))
        exceed = len(reference) - int(np.searchsorted(reference, abnormality, side="left"))
        p_isolation = (1.0 + exceed) / (1.0 + len(reference))
        p_overstay = max(float(ndtr(-z_robust)), 1e-300)
        code = min(int(n_missing), 2) * 6 + min(int(features[_N_UNEXPECTED]), 2) * 2 + (n_swaps > 0)
        p_pattern = self.pattern_share_.get(_PATTERNS[code], 1.0 / (1.0 + self.pattern_share_["n"]))
        n = max(n_items, 1.0)
        rank = features[_MISSING_RANK] * (n_missing > 0) * (n > 1)
        p_rank = 1.0 - rank * (n - 1.0) / n
        surprisal: list[float] = (-np.log10(np.array((p_pattern, p_rank, p_overstay, p_isolation)))).tolist()
        surprisal[0] += self.swap_weight * (n_swaps > 0)
        return surprisal

    def _score_from_suspicion_one(self, suspicion: float, levels: np.ndarray | None) -> float:
        """_score_from_suspicion of one value, with the interpolation levels compiled once."""
        grid = self.suspicion_reference_
        if levels is None or len(levels) != len(grid):
            levels = np.linspace(0.0, 1.0, len(grid))
        inside = float(np.interp(suspicion, grid, levels))
        top, bottom = float(grid[-1]), float(grid[0])
        # np.exp of a one-value array, as the block version applies it (a scalar exp may differ in the last bit).
        if suspicion > top:
            inside = 1.0 - 1e-3 * float(np.exp(np.array([-(suspicion - top)]))[0])
        elif suspicion < bottom:
            inside = 1e-3 * float(np.exp(np.array([suspicion - bottom]))[0])
        return min(max(inside, 0.0), 1.0)


@dataclass(frozen=True)
class _DetectorTwin:
    """The detector's fast path: its compiled trees and what per-request scoring precomputes once."""

    isolation: FastIsolationForest
    classifier: FastClassifier | None
    suspicion_levels: np.ndarray | None  # np.linspace(0, 1) over suspicion_reference_ (None during fit)


def _cross_fitted(
    make: Callable[[], Any],
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    full_rows: np.ndarray | None,
    n_jobs: int,
) -> tuple[Any, np.ndarray]:
    """(Model fitted on `full_rows`, or None without them; out-of-fold predictions for every row).

    Each fold's model is fitted on its first rows and predicts its held-out ones; the fits (and the full one)
    are independent, so they run as one parallel batch.
    """
    fits = [partial(_fit_predict, make, x, y, rows, held_out) for rows, held_out in folds]
    if full_rows is not None:
        fits.append(partial(_fit_predict, make, x, y, full_rows, np.arange(0)))
    results = _in_parallel(fits, n_jobs)
    out = np.empty(len(x))
    for (_, held_out), (_, predicted) in zip(folds, results, strict=False):
        out[held_out] = predicted
    return (results[-1][0] if full_rows is not None else None), out


def _fit_predict(
    make: Callable[[], Any], x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, predict_rows: np.ndarray
) -> tuple[Any, np.ndarray]:
    """A new model fitted on `fit_rows` and its predictions (class-1 probability for classifiers) on `predict_rows`."""
    model = make().fit(x[fit_rows], y[fit_rows])
    if not len(predict_rows):
        return model, np.empty(0)
    if hasattr(model, "predict_proba"):
        return model, model.predict_proba(x[predict_rows])[:, 1]
    return model, model.predict(x[predict_rows])


def _in_parallel(tasks: Sequence[Callable[[], T]], n_jobs: int) -> list[T]:
    """Results of independent tasks in order, `n_jobs` at a time in threads (the same numbers as in turn)."""
    if n_jobs <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(min(n_jobs, len(tasks))) as pool:
        return list(pool.map(_single_threaded, tasks))


def _single_threaded(task: Callable[[], T]) -> T:
    """Run a task with one OpenMP thread: a new thread would start with one per core and oversubscribe."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return task()


def _local_hour(entry_time: datetime | None, timezone: str) -> float:
    """Store-local hour of day with minutes as a fraction; NaN when the entry time is unknown."""
    # A plain datetime is never missing: pd.isna is only asked about anything else (None, NaT, ...).
    if type(entry_time) is not datetime and (entry_time is None or pd.isna(entry_time)):
        return math.nan
    if entry_time.tzinfo is not None:
        entry_time = entry_time.astimezone(ZoneInfo(timezone))
    return entry_time.hour + entry_time.minute / 60.0


def _local_hours(entry_times: pd.Series, timezone: str) -> np.ndarray:
    """_local_hour of many entry times at once (the same numbers)."""
    times = pd.to_datetime(entry_times)
    if times.dt.tz is not None:
        times = times.dt.tz_convert(timezone)
    return times.dt.hour.to_numpy(dtype=float) + times.dt.minute.to_numpy(dtype=float) / 60.0


def _evidence_columns(evidence: Evidence) -> tuple[float, ...]:
    """The evidence block of DETECTOR_FEATURES (n_missing to missing_rank) of one session."""
    value = evidence.missing_value
    taken_in = evidence.taken_in_value
    return (
        len(evidence.missing),
        len(evidence.unexpected),
        len(evidence.swaps),
        value,
        value / taken_in if taken_in > 0 else 0.0,
        evidence.swap_value,
        len(evidence.taken_in_prices),
        evidence.dearest_missing_rank,
    )


def _evidence_block(
    entry_scans: Sequence[Sequence[str]], exit_scans: Sequence[Sequence[str]], catalog: Catalog
) -> np.ndarray:
    """_evidence_columns of many sessions (n x 8); only sessions with evidence pay for collect_evidence."""
    # Without missing or unexpected items, a session's columns are those of empty evidence but its item count.
    block = np.tile(np.array(_evidence_columns(Evidence((), (), ())), dtype=float), (len(entry_scans), 1))
    block[:, _N_ITEMS - _N_MISSING] = np.fromiter(map(len, entry_scans), dtype=float, count=len(entry_scans))
    for i in np.flatnonzero(sessions_with_evidence(entry_scans, exit_scans)).tolist():
        block[i] = _evidence_columns(collect_evidence(entry_scans[i], exit_scans[i], catalog))
    return block


def _feature_rows(log_y: np.ndarray, log_grid: np.ndarray, evidence: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """DETECTOR_FEATURES given log minutes, log quantile grids, evidence blocks (_evidence_columns) and entry hours."""
    z = _z_from_grid(log_y, log_grid)
    lower, median, upper = _IQR_COLUMNS
    spread = np.maximum(log_grid[:, upper] - log_grid[:, lower], 1e-9) / _IQR_Z
    z_robust = np.clip((log_y - log_grid[:, median]) / spread, -_Z_CLIP, _Z_CLIP)
    rows = np.empty((len(log_y), len(DETECTOR_FEATURES)))
    rows[:, _Z] = z
    rows[:, _Z_ROBUST] = z_robust
    rows[:, _N_MISSING:_HOUR] = evidence
    rows[:, _HOUR] = hours
    return rows


# Evidence patterns: missing (0, 1, 2+), unexpected (0, 1, 2+), swap (0, 1); _pattern_codes indexes this list.
_PATTERNS: tuple[tuple[int, int, int], ...] = tuple((m, u, s) for m in range(3) for u in range(3) for s in range(2))


def _pattern_codes(features: np.ndarray) -> np.ndarray:
    """Index into _PATTERNS of each feature row's evidence pattern."""
    missing = np.minimum(features[:, _N_MISSING], 2).astype(np.int64)
    unexpected = np.minimum(features[:, _N_UNEXPECTED], 2).astype(np.int64)
    return missing * 6 + unexpected * 2 + (features[:, _N_SWAPS] > 0)


def _pattern_shares(features: np.ndarray) -> dict[Any, float]:
    """Share of sessions with each evidence pattern (no evidence counts as 1: not surprising)."""
    counts = np.bincount(_pattern_codes(features), minlength=len(_PATTERNS))
    n = float(len(features))
    shares: dict[Any, float] = {
        _PATTERNS[code]: (float(counts[code]) + 1.0) / (n + 1.0) for code in np.flatnonzero(counts)
    }
    shares[(0, 0, 0)] = 1.0
    shares["n"] = n
    return shares


def _fisher_inverse(p: float, k: int = 4) -> float:
    """Sum of k surprisals (-log10 p) at which Fisher's combined p-value equals `p`."""
    low, high = 0.0, 400.0
    for _ in range(200):
        mid = (low + high) / 2.0
        t = 10.0**-mid
        log_t = -math.log(t)
        combined = t * sum(log_t**i / math.factorial(i) for i in range(k))
        low, high = (mid, high) if combined > p else (low, mid)
    return (low + high) / 2.0


def _labelled_anomalies(sessions: pd.DataFrame) -> np.ndarray:
    """Boolean mask of sessions labelled is_anomaly true (unknown labels count as not labelled)."""
    if "is_anomaly" not in sessions:
        return np.zeros(len(sessions), dtype=bool)
    return sessions["is_anomaly"].fillna(False).astype(bool).to_numpy()


def _z_from_grid(log_value: np.ndarray, log_grid: np.ndarray) -> np.ndarray:
    """Normal score of each value under its row's quantile grid (log minutes at QUANTILE_LEVELS).

    Inside the grid the normal score is interpolated linearly in log minutes; beyond it the
    line through the 5% and 1% (95% and 99%) points is extended, a lognormal-like tail.
    """
    out = np.empty(len(log_value))
    for i, (value, grid) in enumerate(zip(log_value, log_grid, strict=True)):
        strict = grid + np.arange(len(grid)) * 1e-12  # ties would make interpolation ill-defined
        if value < strict[0]:
            slope = (_Z_LEVELS[4] - _Z_LEVELS[0]) / max(strict[4] - strict[0], 1e-9)
            out[i] = _Z_LEVELS[0] - slope * (strict[0] - value)
        elif value > strict[-1]:
            slope = (_Z_LEVELS[-1] - _Z_LEVELS[-5]) / max(strict[-1] - strict[-5], 1e-9)
            out[i] = _Z_LEVELS[-1] + slope * (value - strict[-1])
        else:
            out[i] = np.interp(value, strict, _Z_LEVELS)
    return np.clip(out, -_Z_CLIP, _Z_CLIP)


def _duration_scores(log_value: float, quantiles: Sequence[float]) -> tuple[float, float]:
    """(duration_z, duration_z_robust) of one session: _feature_rows' first columns, on floats instead of 2-D arrays.

    The same operations in the same order: numpy for the logs and the interpolation, Python floats (the same
    IEEE arithmetic) for the rest.
    """
    log_grid = np.log(np.asarray(quantiles, dtype=float))
    strict = log_grid + (_TIES if len(log_grid) == len(_TIES) else np.arange(len(log_grid)) * 1e-12)
    first, last = strict.item(0), strict.item(-1)
    if log_value < first:
        slope = (_Z_FIFTH - _Z_FIRST) / max(strict.item(4) - first, 1e-9)
        z = _Z_FIRST - slope * (first - log_value)
    elif log_value > last:
        slope = (_Z_LAST - _Z_FIFTH_LAST) / max(last - strict.item(-5), 1e-9)
        z = _Z_LAST + slope * (log_value - last)
    else:
        z = float(np.interp(log_value, strict, _Z_LEVELS))
    lower, median, upper = (log_grid.item(i) for i in _IQR_COLUMNS)
    spread = max(upper - lower, 1e-9) / _IQR_Z
    z_robust = (log_value - median) / spread
    return min(max(z, -_Z_CLIP), _Z_CLIP), min(max(z_robust, -_Z_CLIP), _Z_CLIP)


def _reference_grid(values: np.ndarray, points: int = 1001) -> np.ndarray:
    """Quantiles 0, 0.001, ..., 1 of the training values, nudged strictly increasing."""
    grid = np.quantile(values, np.linspace(0.0, 1.0, points))
    return grid + np.arange(points) * 1e-9


def _threshold_for_recall(y: np.ndarray, score: np.ndarray, target: float) -> tuple[float, float, float]:
    """(threshold, precision, recall): best precision among thresholds with recall >= target."""
    precision, recall, thresholds = precision_recall_curve(y, score)
    ok = recall[:-1] >= target
    if not ok.any():
        return float(thresholds[0]), float(precision[0]), float(recall[0])
    candidates = np.flatnonzero(ok)
    # Ties go to the highest threshold (fewest alerts).
    best = candidates[::-1][np.argmax(precision[candidates][::-1])]
    return float(thresholds[best]), float(precision[best]), float(recall[best])


def _percent(quantile: float) -> str:
    """Share for reason texts, e.g. 97% or 99.7% (one decimal above 99%)."""
    if quantile >= 0.99:
        return f"{math.floor(quantile * 1000) / 10:g}%"
    return f"{math.floor(quantile * 100)}%"
