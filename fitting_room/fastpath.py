"""Per-row inference for fitted scikit-learn tree ensembles, with the trees flattened into arrays.

A kiosk asks one row at a time, and scikit-learn's predict spends milliseconds per call on input
validation, thread pools and one Python call per tree. Here each model's trees are flattened into
`TreeArrays` and compiled together by one of `fitting_room.tree_strategies` (the C walk when built), so
a row costs one C call, or a few small numpy calls, whatever the number of trees; this module turns
the strategies' leaf sums back into each model's outputs.

Outputs equal scikit-learn's (bit for bit in practice; tests/test_fastpath.py requires a relative
difference <= 1e-9 and reaches every leaf): the same comparisons (`x <= threshold` goes left, NaN
follows the node's `missing_go_to_left`), IsolationForest's float32 input rounding folded into its
thresholds, and leaf values added in scikit-learn's order (a cumulative sum is strictly sequential,
unlike np.sum's pairwise sum). Compiled arrays are read-only, so concurrent requests share them.

Supported: HistGradientBoostingRegressor (identity and log links), HistGradientBoostingClassifier
(binary and multiclass) without categorical features, and IsolationForest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest
from sklearn.utils.extmath import softmax

from fitting_room.tree_strategies import Strategy, TreeArrays, compile_trees

__all__ = [
    "FastClassifier",
    "FastIsolationForest",
    "FastRegressor",
    "FastRegressors",
    "float32_upper_bounds",
]


def _as_rows(x: Any, n_features: int) -> np.ndarray:
    """float64 view of a row (1-D) or rows (2-D) with the fitted number of columns."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != n_features:
        raise ValueError(f"expected rows of {n_features} features, got shape {array.shape}")
    return array


def _hist_trees(model: HistGradientBoostingRegressor | HistGradientBoostingClassifier) -> list[TreeArrays]:
    """The boosting model's trees, preceded by one single-leaf tree per output holding the baseline."""
    if getattr(model, "_preprocessor", None) is not None or getattr(model, "is_categorical_", None) is not None:
        raise ValueError("models with categorical features are not supported by the fast path")
    trees = [_constant_tree(b) for b in np.asarray(model._baseline_prediction, dtype=np.float64).ravel()]
    for iteration in model._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported by the fast path")
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(
                TreeArrays(
                    left=np.where(leaf, -1, nodes["left"].astype(np.intp)),
                    right=np.where(leaf, -1, nodes["right"].astype(np.intp)),
                    feature=nodes["feature_idx"].astype(np.intp),
                    threshold=nodes["num_threshold"].astype(np.float64),
                    missing_go_to_left=nodes["missing_go_to_left"].astype(bool),
                    value=nodes["value"].astype(np.float64),
                )
            )
    return trees


def _constant_tree(value: float) -> TreeArrays:
    """A single-leaf tree."""
    return TreeArrays(
        left=np.array([-1]),
        right=np.array([-1]),
        feature=np.array([0]),
        threshold=np.array([np.inf]),
        missing_go_to_left=np.array([True]),
        value=np.array([float(value)]),
    )


class _BoostedSums:
    """Raw predictions of one or more boosting models over the same rows, all trees in one pass.

    Output o (model m, class k) is its baseline plus its trees' leaf values, added left to right
    as scikit-learn does. Trees are compiled output by output, each output's baseline first and
    padded with zero-valued trees to the longest output (adding +0.0 at the end leaves a sum
    unchanged), so the leaf values reshape into (n_outputs, longest) without a gather.
    """

    def __init__(
        self, models: Sequence[HistGradientBoostingRegressor | HistGradientBoostingClassifier], strategy: Strategy
    ) -> None:
        """Compile fitted models that take the same rows; ValueError for what cannot be reproduced."""
        n_features = {int(m.n_features_in_) for m in models}
        if len(n_features) != 1:
            raise ValueError(f"models take different numbers of features: {sorted(n_features)}")
        self.n_features = n_features.pop()
        outputs: list[list[TreeArrays]] = []
        for model in models:
            k_outputs = int(model.n_trees_per_iteration_)
            # _hist_trees gives the baselines (one per output), then trees iteration-major, output-minor.
            model_trees = _hist_trees(model)
            outputs.extend(model_trees[k::k_outputs] for k in range(k_outputs))
        self.n_outputs = len(outputs)
        self.longest = max(len(o) for o in outputs)
        zero = _constant_tree(0.0)
        self.trees = compile_trees([t for o in outputs for t in o + [zero] * (self.longest - len(o))], strategy)

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """Raw predictions: (n_outputs,) for one row (1-D), (n, n_outputs) for rows (2-D)."""
        return self.trees.sums(rows, self.n_outputs)

    def raw_row(self, row: np.ndarray) -> list[float]:
        """Raw predictions of one row (1-D float64) as floats."""
        return self.trees.row_sums(row, self.n_outputs)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering, (n, n_trees): output by output, baseline first, then
        the output's trees in iteration order and any zero-valued padding."""
        return self.trees.source_id[self.trees.leaves(np.atleast_2d(rows))]


def _inverse_link(model: HistGradientBoostingRegressor) -> bool:
    """True for the log link (predict = exp(raw)), False for identity; ValueError for others."""
    if not isinstance(model, HistGradientBoostingRegressor):
        raise TypeError(f"expected a HistGradientBoostingRegressor, got {type(model).__name__}")
    link = type(model._loss.link).__name__
    if link not in ("IdentityLink", "LogLink"):
        raise ValueError(f"link {link} is not supported by the fast path")
    return link == "LogLink"


class FastRegressors:
    """Several HistGradientBoostingRegressors over the same rows (e.g. a median and a scale model), one pass."""

    def __init__(self, models: Sequence[HistGradientBoostingRegressor], strategy: Strategy = "auto") -> None:
        """Compile fitted regressors (identity or log link) taking the same features."""
        self._log_link = np.array([_inverse_link(m) for m in models])
        self._any_log = bool(self._log_link.any())
        self._sums = _BoostedSums(models, strategy)
        self.n_features = self._sums.n_features
        self.trees = self._sums.trees

    @classmethod
    def from_sklearn(
        cls, models: Sequence[HistGradientBoostingRegressor], strategy: Strategy = "auto"
    ) -> FastRegressors:
        """Fast twin of fitted regressors."""
        return cls(models, strategy)

    def predict(self, x: Any) -> np.ndarray:
        """Predictions (n, n_models) for rows (n, n_features) or (n_models,) for one row (n_features,)."""
        raw = self._sums.raw(_as_rows(x, self.n_features))
        return np.where(self._log_link, np.exp(raw), raw) if self._any_log else raw

    def predict_row(self, x: Any) -> list[float]:
        """Predictions of one row (1-D), one per model, as floats: the per-request call."""
        raw = self._sums.raw_row(_one_row(x, self.n_features))
        if not self._any_log:
            return raw
        values: list[float] = np.where(self._log_link, np.exp(raw), raw).tolist()  # as predict() computes them
        return values

    def apply(self, x: Any) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering (see _BoostedSums.apply)."""
        return self._sums.apply(_as_rows(x, self.n_features))


class FastRegressor:
    """HistGradientBoostingRegressor.predict on flat arrays."""

    def __init__(self, model: HistGradientBoostingRegressor, strategy: Strategy = "auto") -> None:
        """Compile a fitted regressor (identity or log link)."""
        self._group = FastRegressors([model], strategy)
        self.n_features = self._group.n_features
        self.trees = self._group.trees

    @classmethod
    def from_sklearn(cls, model: HistGradientBoostingRegressor, strategy: Strategy = "auto") -> FastRegressor:
        """Fast twin of a fitted regressor."""
        return cls(model, strategy)

    def predict(self, x: Any) -> np.ndarray:
        """Predictions, shape (n,), for rows (n, n_features) or one row (n_features,)."""
        return np.atleast_2d(self._group.predict(x))[:, 0]

    def predict_one(self, x: Any) -> float:
        """Prediction for one row (1-D): the kiosk's per-request call."""
        return self._group.predict_row(x)[0]

    def apply(self, x: Any) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering (see _BoostedSums.apply)."""
        return self._group.apply(x)


class FastClassifier:
    """HistGradientBoostingClassifier.predict_proba on flat arrays."""

    def __init__(self, model: HistGradientBoostingClassifier, strategy: Strategy = "auto") -> None:
        """Compile a fitted classifier (binary or multiclass)."""
        if not isinstance(model, HistGradientBoostingClassifier):
            raise TypeError(f"expected a HistGradientBoostingClassifier, got {type(model).__name__}")
        self.classes_ = model.classes_
        self._sums = _BoostedSums([model], strategy)
        self.n_features = self._sums.n_features
        self.trees = self._sums.trees
        self._binary = int(model.n_trees_per_iteration_) == 1

    @classmethod
    def from_sklearn(cls, model: HistGradientBoostingClassifier, strategy: Strategy = "auto") -> FastClassifier:
        """Fast twin of a fitted classifier."""
        return cls(model, strategy)

    def decision_function(self, x: Any) -> np.ndarray:
        """Raw scores: (n,) for binary, (n, n_classes) for multiclass, as scikit-learn."""
        raw = self._sums.raw(np.atleast_2d(_as_rows(x, self.n_features)))
        return raw[:, 0] if self._binary else raw

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (n, n_classes), with scikit-learn's link (sigmoid or softmax)."""
        raw = self._sums.raw(np.atleast_2d(_as_rows(x, self.n_features)))
        if not self._binary:
            return np.asarray(softmax(raw))
        proba = np.empty((len(raw), 2))
        proba[:, 1] = expit(raw[:, 0])
        proba[:, 0] = 1 - proba[:, 1]
        return proba

    def positive_proba_one(self, x: Any) -> float:
        """Probability of classes_[1] for one row (1-D) of a binary classifier."""
        if not self._binary:
            raise ValueError("positive_proba_one needs a binary classifier")
        # expit of a (1,) array, as predict_proba applies it.
        return float(expit(np.array(self._sums.raw_row(_one_row(x, self.n_features))))[0])

    def apply(self, x: Any) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering (see _BoostedSums.apply)."""
        return self._sums.apply(_as_rows(x, self.n_features))


def _one_row(x: Any, n_features: int) -> np.ndarray:
    """A single row as a 1-D float64 array; ValueError otherwise."""
    row = _as_rows(x, n_features)
    if row.ndim != 1:
        raise ValueError(f"expected one row of {n_features} features, got shape {row.shape}")
    return row


def float32_upper_bounds(threshold: np.ndarray) -> np.ndarray:
    """For each t, the largest float64 u with float32(x) <= t exactly when x <= u (for non-NaN x).

    IsolationForest rounds inputs to float32 before comparing them with float64 thresholds;
    comparing the unrounded input with u gives the same answer without a cast per call (and
    without overflow warnings for values beyond float32's range).
    """
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond float32's range is +-inf, as the cast of an input
        below = t.astype(np.float32)
        # Round down: the largest float32 a <= t, and the next float32 b above it.
        below = np.where(below.astype(np.float64) > t, np.nextafter(below, np.float32(-np.inf)), below)
        above = np.nextafter(below, np.float32(np.inf))
    a, b = below.astype(np.float64), above.astype(np.float64)
    overflow_half_ulp = 2.0**103  # half the gap between float32's largest value and 2**128
    with np.errstate(invalid="ignore"):
        middle = np.where(np.isinf(b), a + overflow_half_ulp, np.where(np.isinf(a), b - overflow_half_ulp, (a + b) / 2))
    # A tie rounds to the neighbour with an even last bit (infinities count as even).
    a_even = (below.view(np.uint32) & 1) == 0
    bound = np.where(a_even, middle, np.nextafter(middle, -np.inf))
    return np.where(np.isposinf(t), np.inf, bound)


def _average_path_length(n_samples_leaf: np.ndarray) -> np.ndarray:
    """scikit-learn's average path length of an unsuccessful BST search among n samples (same float ops)."""
    n = np.asarray(n_samples_leaf, dtype=np.float64)
    out = np.zeros(n.shape)
    many = n > 2
    out[n == 2] = 1.0
    out[many] = 2.0 * (np.log(n[many] - 1.0) + np.euler_gamma) - 2.0 * (n[many] - 1.0) / n[many]
    return out


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Depth of each node with the root at 1, as Tree.compute_node_depths (children follow parents)."""
    depths = np.empty(len(left), dtype=np.int64)
    depths[0] = 1
    for node in range(len(left)):
        if left[node] >= 0:
            depths[left[node]] = depths[right[node]] = depths[node] + 1
    return depths


class FastIsolationForest:
    """IsolationForest.score_samples and decision_function on flat arrays."""

    def __init__(self, model: IsolationForest, strategy: Strategy = "auto") -> None:
        """Compile a fitted IsolationForest."""
        if not isinstance(model, IsolationForest):
            raise TypeError(f"expected an IsolationForest, got {type(model).__name__}")
        self.n_features = int(model.n_features_in_)
        self.offset_ = float(model.offset_)
        # scikit-learn indexes columns per tree only when trees saw a subset of the features.
        subsample = model._max_features != self.n_features
        trees = []
        for estimator, columns in zip(model.estimators_, model.estimators_features_, strict=True):
            tree = estimator.tree_
            left, right = tree.children_left.astype(np.intp), tree.children_right.astype(np.intp)
            feature = np.maximum(tree.feature, 0).astype(np.intp)
            if subsample:
                feature = np.asarray(columns, dtype=np.intp)[feature]
            # A leaf adds what scikit-learn adds for it: its depth + the average path length below it - 1.
            contribution = _node_depths(left, right) + _average_path_length(tree.n_node_samples) - 1.0
            trees.append(
                TreeArrays(
                    left=left,
                    right=right,
                    feature=feature,
                    threshold=np.where(left >= 0, float32_upper_bounds(tree.threshold), np.inf),
                    missing_go_to_left=tree.missing_go_to_left.astype(bool),
                    value=contribution,
                )
            )
        self.trees = compile_trees(trees, strategy)
        self._denominator = float(len(model.estimators_) * _average_path_length(np.array([model.max_samples_]))[0])

    @classmethod
    def from_sklearn(cls, model: IsolationForest, strategy: Strategy = "auto") -> FastIsolationForest:
        """Fast twin of a fitted IsolationForest."""
        return cls(model, strategy)

    def score_samples(self, x: Any) -> np.ndarray:
        """Opposite of the anomaly score, (n,): the lower, the more abnormal."""
        rows = np.atleast_2d(_as_rows(x, self.n_features))
        depths = self.trees.sums(rows, 1)[:, 0]
        if self._denominator == 0.0:  # one training sample: scikit-learn defines the score as -0.5
            return np.full(len(rows), -0.5)
        return np.asarray(-(2.0 ** (-(depths / self._denominator))))

    def score_one(self, x: Any) -> float:
        """score_samples of one row (1-D)."""
        row = _one_row(x, self.n_features)
        if self._denominator == 0.0:
            return -0.5
        depth = np.array(self.trees.row_sums(row, 1))
        # numpy's array power, as score_samples: Python's float power may differ in the last bit.
        # depth / -d is exactly -(depth / d) (IEEE division is sign-symmetric): one call fewer.
        return -float((2.0 ** (depth / -self._denominator))[0])

    def decision_function(self, x: Any) -> np.ndarray:
        """score_samples minus the fitted offset: negative for outliers."""
        return self.score_samples(x) - self.offset_

    def apply(self, x: Any) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering, (n, n_trees)."""
        return self.trees.source_id[self.trees.leaves(np.atleast_2d(_as_rows(x, self.n_features)))]
