"""Per-row inference for fitted scikit-learn tree ensembles, with the trees flattened into numpy arrays.

A kiosk asks one row at a time, and scikit-learn's predict spends milliseconds per call on input
validation, thread pools and one Python call per tree. Here all trees of an ensemble share flat
arrays and are evaluated together, so a row costs a few dozen small numpy calls whatever the
number of trees. Two evaluation strategies, chosen per ensemble by a cost estimate:

- level walk: every tree steps one level per numpy round, `node = left[node] + (x[f] > t)`;
  right children sit next to left ones and leaves loop to themselves, so no per-tree stop test;
  cost ~ 6 calls per level of the deepest tree.
- leaf masks (QuickScorer, Lucchese et al. 2015), for trees of at most 64 leaves: every split that
  sends the row right removes its left subtree's leaves from the tree's 64-bit leaf set, and the
  exit leaf is the lowest surviving bit; a fixed ~11 calls over all split nodes at once, which wins
  for deep, thin trees such as boosting's.

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
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest
from sklearn.utils.extmath import softmax

__all__ = [
    "FastClassifier",
    "FastIsolationForest",
    "FastRegressor",
    "FastRegressors",
    "LeafMasks",
    "LevelWalk",
    "Strategy",
    "TreeArrays",
    "compile_trees",
    "float32_upper_bounds",
]

Strategy = Literal["auto", "walk", "masks"]

# Rows evaluated at once in batch calls: bounds the (rows x nodes) work arrays to a few MB.
_CHUNK_CELLS = 1 << 18
_ALL_LEAVES = np.uint64(2**64 - 1)
_MAX_MASK_LEAVES = 64
# Cost model for choosing a strategy, in units of one small numpy call (~0.5 us unloaded):
# a level-walk round is 6 calls over n_trees elements, the mask pass 11 calls plus ~6 passes
# over every split node. Per-element cost ~1 ns -> 0.002 units.
_CALL, _PER_ELEMENT = 1.0, 0.002


@dataclass(frozen=True)
class TreeArrays:
    """One fitted binary tree in scikit-learn's node numbering (children -1 at leaves)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_go_to_left: np.ndarray
    value: np.ndarray


class CompiledTrees(Protocol):
    """What both strategies offer: leaf ids per tree, leaf values, and scikit-learn's node ids."""

    @property
    def value(self) -> np.ndarray:
        """Leaf values, indexed by the ids leaves() returns."""
        ...

    @property
    def source_id(self) -> np.ndarray:
        """scikit-learn's node id of each leaf id."""
        ...

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        ...

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        ...


def _freeze(*arrays: np.ndarray) -> None:
    """Make compiled arrays read-only: they are shared by concurrent requests."""
    for array in arrays:
        array.flags.writeable = False


def _in_chunks(compiled: CompiledTrees, x: np.ndarray, cells_per_row: int) -> np.ndarray:
    """leaves() of many rows, a bounded block of rows at a time."""
    out = np.empty((x.shape[0], compiled.n_trees), dtype=np.intp)
    step = max(1, _CHUNK_CELLS // max(cells_per_row, 1))
    for start in range(0, x.shape[0], step):
        out[start : start + step] = compiled.leaves(x[start : start + step])
    return out


@dataclass(frozen=True)
class LevelWalk:
    """Trees renumbered breadth-first into shared arrays; all trees step one level per round."""

    feature: np.ndarray  # intp, column each node tests
    threshold: np.ndarray  # float64, +inf at leaves so every non-NaN value stays put
    left: np.ndarray  # intp, global id of the left child (right = left + 1); the node itself at leaves
    nan_right: np.ndarray  # bool, a NaN goes right (False at leaves)
    value: np.ndarray  # float64, leaf values (0 at split nodes)
    roots: np.ndarray  # intp, global id of each tree's root
    source_id: np.ndarray  # intp, node id in the scikit-learn tree
    depth: int  # rounds: levels from the root to the deepest leaf

    @classmethod
    def build(cls, trees: Sequence[TreeArrays]) -> LevelWalk:
        """Flatten trees given in scikit-learn's layout."""
        total = sum(len(t.left) for t in trees)
        feature = np.zeros(total, dtype=np.intp)
        threshold = np.full(total, np.inf)
        left = np.empty(total, dtype=np.intp)
        nan_right = np.zeros(total, dtype=bool)
        value = np.zeros(total)
        source_id = np.empty(total, dtype=np.intp)
        roots = np.empty(len(trees), dtype=np.intp)
        depth = 0
        base = 0
        for t, tree in enumerate(trees):
            roots[t] = base
            # Breadth first, giving each sibling pair two consecutive ids.
            queue: list[tuple[int, int, int]] = [(0, base, 0)]  # (source node, global id, level)
            next_id = base + 1
            for source, g, level in queue:
                source_id[g] = source
                lchild, rchild = int(tree.left[source]), int(tree.right[source])
                if lchild < 0:
                    left[g] = g
                    value[g] = tree.value[source]
                    depth = max(depth, level)
                    continue
                left[g] = next_id
                feature[g] = tree.feature[source]
                threshold[g] = tree.threshold[source]
                nan_right[g] = not tree.missing_go_to_left[source]
                queue.append((lchild, next_id, level + 1))
                queue.append((rchild, next_id + 1, level + 1))
                next_id += 2
            if next_id - base != len(tree.left):
                raise ValueError(f"tree {t} has nodes unreachable from its root")
            base = next_id
        _freeze(feature, threshold, left, nan_right, value, roots, source_id)
        return cls(feature, threshold, left, nan_right, value, roots, source_id, depth)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.roots)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        feature, threshold, left = self.feature, self.threshold, self.left
        if x.ndim == 1:
            node = self.roots
            if np.isnan(x).any():
                for _ in range(self.depth):
                    v = x[feature[node]]
                    node = left[node] + ((v > threshold[node]) | (np.isnan(v) & self.nan_right[node]))
                return node
            # The hot path: six small numpy calls per level.
            for _ in range(self.depth):
                node = left[node] + (x[feature[node]] > threshold[node])
            return node
        if x.shape[0] * self.n_trees > _CHUNK_CELLS:
            return _in_chunks(self, x, self.n_trees)
        flat = x.ravel()
        row_base = (np.arange(x.shape[0], dtype=np.intp) * x.shape[1])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], self.n_trees))
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            v = flat[row_base + feature[node]]
            go_right = v > threshold[node]
            if has_nan:
                go_right |= np.isnan(v) & self.nan_right[node]
            node = left[node] + go_right
        return np.ascontiguousarray(node)


@dataclass(frozen=True)
class LeafMasks:
    """Split nodes of all trees in one array, each with the leaves it removes when the row goes right."""

    feature: np.ndarray  # intp, per split node
    threshold: np.ndarray  # float64, per split node
    nan_right: np.ndarray  # bool, per split node
    keep_if_right: np.ndarray  # uint64, per split node: leaves outside its left subtree (bit k = k-th leaf)
    tree_start: np.ndarray  # intp, first split node of each tree (single-leaf trees get a no-op split)
    leaf_base: np.ndarray  # intp, global id of each tree's leftmost leaf
    value: np.ndarray  # float64, per leaf, trees in order, leaves left to right
    source_id: np.ndarray  # intp, per leaf: node id in the scikit-learn tree

    @classmethod
    def build(cls, trees: Sequence[TreeArrays]) -> LeafMasks:
        """Flatten trees of at most 64 leaves each."""
        feature: list[int] = []
        threshold: list[float] = []
        nan_right: list[bool] = []
        keep: list[int] = []
        tree_start: list[int] = []
        leaf_base: list[int] = []
        value: list[float] = []
        source_id: list[int] = []
        for t, tree in enumerate(trees):
            tree_start.append(len(feature))
            leaf_base.append(len(value))
            # In-order traversal numbers leaves left to right; a split's left subtree is a bit range.
            leaf_index: dict[int, int] = {}
            left_range: dict[int, tuple[int, int]] = {}
            stack: list[tuple[int, bool]] = [(0, False)]
            first_leaf: dict[int, int] = {}
            while stack:
                node, children_done = stack.pop()
                lchild, rchild = int(tree.left[node]), int(tree.right[node])
                if lchild < 0:
                    leaf_index[node] = len(leaf_index)
                    first_leaf[node] = leaf_index[node]
                    continue
                if children_done:
                    first_leaf[node] = first_leaf[lchild]
                    left_range[node] = (first_leaf[lchild], first_leaf[rchild])
                    continue
                stack.extend(((node, True), (rchild, False), (lchild, False)))
            if len(leaf_index) > _MAX_MASK_LEAVES:
                raise ValueError(f"tree {t} has {len(leaf_index)} leaves; leaf masks hold {_MAX_MASK_LEAVES}")
            for node in sorted(leaf_index, key=leaf_index.__getitem__):
                value.append(float(tree.value[node]))
                source_id.append(node)
            if not left_range:  # a single leaf: one split that never removes anything
                feature.append(0)
                threshold.append(np.inf)
                nan_right.append(False)
                keep.append(2**64 - 1)
            for node, (lo, hi) in left_range.items():
                feature.append(int(tree.feature[node]))
                threshold.append(float(tree.threshold[node]))
                nan_right.append(not bool(tree.missing_go_to_left[node]))
                keep.append((2**64 - 1) ^ (((1 << (hi - lo)) - 1) << lo))
        arrays = (
            np.array(feature, dtype=np.intp),
            np.array(threshold, dtype=np.float64),
            np.array(nan_right, dtype=bool),
            np.array(keep, dtype=np.uint64),
            np.array(tree_start, dtype=np.intp),
            np.array(leaf_base, dtype=np.intp),
            np.array(value, dtype=np.float64),
            np.array(source_id, dtype=np.intp),
        )
        _freeze(*arrays)
        return cls(*arrays)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.tree_start)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        if x.ndim == 2 and x.shape[0] * len(self.feature) > _CHUNK_CELLS:
            return _in_chunks(self, x, len(self.feature))
        v = x[..., self.feature]
        go_right = v > self.threshold
        if np.isnan(v).any():
            go_right |= np.isnan(v) & self.nan_right
        alive = np.bitwise_and.reduceat(np.where(go_right, self.keep_if_right, _ALL_LEAVES), self.tree_start, axis=-1)
        # Index of the lowest set bit: the number of ones below it.
        lowest = np.bitwise_count(~alive & (alive - np.uint64(1)))
        return self.leaf_base + lowest


def _n_leaves(tree: TreeArrays) -> int:
    """Number of leaves of a tree in scikit-learn's layout."""
    return int(np.count_nonzero(np.asarray(tree.left) < 0))


def _depth(tree: TreeArrays) -> int:
    """Levels from the root to the deepest leaf."""
    deepest, level, frontier = 0, 0, [0]
    while frontier:
        deepest = level
        frontier = [int(c) for n in frontier if tree.left[n] >= 0 for c in (tree.left[n], tree.right[n])]
        level += 1
    return deepest


def compile_trees(trees: Sequence[TreeArrays], strategy: Strategy = "auto") -> LevelWalk | LeafMasks:
    """Compile trees with the given strategy, or the cheaper one by the cost model ("auto")."""
    if strategy == "walk":
        return LevelWalk.build(trees)
    if strategy == "masks":
        return LeafMasks.build(trees)
    if max(_n_leaves(t) for t in trees) > _MAX_MASK_LEAVES:
        return LevelWalk.build(trees)
    n_trees = len(trees)
    n_splits = sum(max(_n_leaves(t) - 1, 1) for t in trees)
    walk_cost = max(_depth(t) for t in trees) * 6 * (_CALL + n_trees * _PER_ELEMENT)
    mask_cost = 11 * _CALL + 6 * n_splits * _PER_ELEMENT
    return LevelWalk.build(trees) if walk_cost <= mask_cost else LeafMasks.build(trees)


def _as_rows(x: Any, n_features: int) -> np.ndarray:
    """float64 view of a row (1-D) or rows (2-D) with the fitted number of columns."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != n_features:
        raise ValueError(f"expected rows of {n_features} features, got shape {array.shape}")
    return array


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """Left-to-right sum along the last axis; cumsum never reorders, unlike np.sum's pairwise sum."""
    return np.cumsum(values, axis=-1)[..., -1]


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
    as scikit-learn does. Outputs are rows of a (n_outputs, longest) table of tree positions,
    padded with a trailing zero-valued tree: adding +0.0 at the end leaves a sum unchanged.
    """

    def __init__(
        self, models: Sequence[HistGradientBoostingRegressor | HistGradientBoostingClassifier], strategy: Strategy
    ) -> None:
        """Compile fitted models that take the same rows; ValueError for what cannot be reproduced."""
        n_features = {int(m.n_features_in_) for m in models}
        if len(n_features) != 1:
            raise ValueError(f"models take different numbers of features: {sorted(n_features)}")
        self.n_features = n_features.pop()
        trees: list[TreeArrays] = []
        outputs: list[list[int]] = []
        for model in models:
            k_outputs = int(model.n_trees_per_iteration_)
            first = len(trees)
            model_trees = _hist_trees(model)
            trees.extend(model_trees)
            # Baselines first (one per output), then iteration-major, output-minor.
            outputs.extend(list(range(first + k, first + len(model_trees), k_outputs)) for k in range(k_outputs))
        zero = len(trees)
        trees.append(_constant_tree(0.0))
        longest = max(len(o) for o in outputs)
        self.layout = np.array([o + [zero] * (longest - len(o)) for o in outputs], dtype=np.intp)
        _freeze(self.layout)
        self.trees = compile_trees(trees, strategy)

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """Raw predictions: (n_outputs,) for one row (1-D), (n, n_outputs) for rows (2-D)."""
        values = self.trees.value[self.trees.leaves(rows)]
        return _sequential_sum(values[..., self.layout])

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering, (n, n_trees) (baselines and padding included)."""
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
        return float(self._group.predict(_one_row(x, self.n_features))[0])

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
        return float(expit(self._sums.raw(_one_row(x, self.n_features))[0]))

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
        depths = _sequential_sum(self.trees.value[self.trees.leaves(rows)])
        if self._denominator == 0.0:  # one training sample: scikit-learn defines the score as -0.5
            return np.full(len(rows), -0.5)
        return np.asarray(-(2.0 ** (-(depths / self._denominator))))

    def score_one(self, x: Any) -> float:
        """score_samples of one row (1-D)."""
        row = _one_row(x, self.n_features)
        if self._denominator == 0.0:
            return -0.5
        depth = np.cumsum(self.trees.value[self.trees.leaves(row)])[-1:]
        # numpy's array power, as score_samples: Python's float power may differ in the last bit.
        return float(-(2.0 ** (-(depth / self._denominator)))[0])

    def decision_function(self, x: Any) -> np.ndarray:
        """score_samples minus the fitted offset: negative for outliers."""
        return self.score_samples(x) - self.offset_

    def apply(self, x: Any) -> np.ndarray:
        """Leaf per tree in scikit-learn's node numbering, (n, n_trees)."""
        return self.trees.source_id[self.trees.leaves(np.atleast_2d(_as_rows(x, self.n_features)))]
