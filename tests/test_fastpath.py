"""The fast path (fastpath and its tree_strategies) equals scikit-learn: random and edge-case rows, and every
leaf of every tree reached.

Every leaf is reached by construction: for each leaf, the splits on its path bound each feature to an
interval (lo, hi]; the leaf's point takes hi itself (exactly at a threshold, the `<=` boundary) or,
when the path only turned right on that feature, the next float above lo (the `>` boundary), and NaN
when lo is +inf (a split that sends only missing values right). IsolationForest compares float32
inputs, so its points are float32 values. Each point is checked tree by tree against scikit-learn
(IsolationForest: the leaf ids of tree.apply; boosting: each TreePredictor's own output), and the
test asserts that the points reach every leaf.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest
from threadpoolctl import threadpool_limits

from fitting_room import treewalk
from fitting_room.fastpath import (
    FastClassifier,
    FastIsolationForest,
    FastRegressor,
    FastRegressors,
    float32_upper_bounds,
)
from fitting_room.tree_strategies import (
    CellGrid,
    CompiledTrees,
    LeafMasks,
    LevelWalk,
    NativeWalk,
    Strategy,
    TreeArrays,
    compile_trees,
)

RTOL = 1e-9  # the bar; in practice the outputs are bit-identical
STRATEGIES = ("native", "walk", "masks", "grid")
TOO_BIG_FOR_GRID = {"three_class"}  # its cell tables would exceed the size limit (tested below)
N_FEATURES = 6


def _data(seed: int, n: int = 1500, n_features: int = N_FEATURES, nan_share: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    x[:, 1] = np.round(x[:, 1] * 3)  # ties and repeated values
    if n_features > 2:
        x[:, 2] = np.exp(x[:, 2])  # skewed
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    return x


def _target(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    filled = np.nan_to_num(x)
    return filled[:, 0] + np.sin(filled[:, 1]) + 0.5 * filled[:, 2] + 0.3 * rng.normal(size=len(x))


def _edge_rows(n_features: int, seed: int = 5) -> np.ndarray:
    """Random rows plus the awkward values: NaN, +-inf, +-1e300, +-0, float32 overflow, subnormals."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(400, n_features)) * rng.choice([0.1, 1.0, 10.0], size=(400, 1))
    specials = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, -0.0, 3.5e38, -3.5e38, 5e-324, 1e-40])
    rows[rng.random(rows.shape) < 0.15] = np.nan
    pick = rng.random(rows.shape) < 0.1
    rows[pick] = rng.choice(specials, size=int(pick.sum()))
    constant = np.array([[s] * n_features for s in specials])
    return np.vstack((rows, constant))


@pytest.fixture(scope="module")
def regressors() -> dict[str, HistGradientBoostingRegressor]:
    """Boosting regressors: trained with and without NaN, absolute and squared error, log link."""
    with threadpool_limits(1):
        x_nan = _data(0, nan_share=0.1)
        x = _data(1)
        y = _target(x)
        return {
            "absolute_error_nan": HistGradientBoostingRegressor(
                loss="absolute_error", max_iter=40, max_leaf_nodes=15, min_samples_leaf=5, random_state=0
            ).fit(x_nan, _target(x_nan)),
            "squared_error": HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=7, random_state=0).fit(x, y),
            "poisson": HistGradientBoostingRegressor(loss="poisson", max_iter=20, random_state=0).fit(x, np.exp(y / 3)),
        }


@pytest.fixture(scope="module")
def classifiers() -> dict[str, HistGradientBoostingClassifier]:
    """Binary (with NaN in training) and three-class boosting classifiers."""
    with threadpool_limits(1):
        x_nan = _data(2, nan_share=0.1)
        x = _data(3)
        return {
            "binary_nan": HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0).fit(
                x_nan, _target(x_nan) > 0.5
            ),
            "three_class": HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(
                x, np.digitize(_target(x), [-0.5, 0.5])
            ),
        }


@pytest.fixture(scope="module")
def forests() -> dict[str, IsolationForest]:
    """IsolationForests: the detector's shape (2 features), NaN in training, feature subsets, small trees."""
    return {
        "two_features": IsolationForest(n_estimators=25, random_state=0).fit(_data(4, n_features=2)),
        "nan": IsolationForest(n_estimators=10, random_state=1).fit(_data(5, nan_share=0.1)),
        "feature_subsets": IsolationForest(n_estimators=10, max_features=0.5, random_state=2).fit(_data(6)),
        "small_trees": IsolationForest(n_estimators=20, max_samples=48, random_state=3).fit(_data(7, n_features=3)),
    }


# ----------------------------------------------------------------------------------------------------------
# Points that reach every leaf


def _leaf_points(
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    n_features: int,
    as_float32: bool,
) -> np.ndarray:
    """One point per leaf of a tree (scikit-learn layout), built from its path's intervals."""
    points = []
    stack: list[tuple[int, np.ndarray, np.ndarray]] = [(0, np.full(n_features, -np.inf), np.full(n_features, np.inf))]
    while stack:
        node, lo, hi = stack.pop()
        if left[node] < 0:
            points.append(_inside(lo, hi, as_float32))
            continue
        f, t = int(feature[node]), float(threshold[node])
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[f] = min(hi[f], t)
        right_lo[f] = max(lo[f], t)
        stack.append((int(left[node]), lo, left_hi))
        stack.append((int(right[node]), right_lo, hi))
    return np.array(points)


def _inside(lo: np.ndarray, hi: np.ndarray, as_float32: bool) -> np.ndarray:
    """A point with lo < x <= hi in every feature, at a boundary whenever one exists."""
    point = np.zeros(len(lo))
    for f, (low, high) in enumerate(zip(lo, hi, strict=True)):
        if low == np.inf:
            point[f] = np.nan  # only missing values go right of a +inf threshold
        elif as_float32:
            point[f] = _float32_inside(low, high)
        elif np.isfinite(high):
            point[f] = high
        elif np.isfinite(low):
            point[f] = np.nextafter(low, np.inf)
    return point


def _float32_inside(low: float, high: float) -> float:
    """The float32 value nearest the interval's upper end (or just above its lower end) inside (low, high]."""
    if np.isfinite(high):
        value = np.float32(high)
        if float(value) > high:
            value = np.nextafter(value, np.float32(-np.inf))
        return float(value)
    if not np.isfinite(low):
        return 0.0
    value = np.float32(low)
    if float(value) <= low:
        value = np.nextafter(value, np.float32(np.inf))
    return float(value)


def _hist_tree_points(model: HistGradientBoostingRegressor | HistGradientBoostingClassifier) -> np.ndarray:
    n_features = model.n_features_in_
    points = []
    for iteration in model._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            points.append(
                _leaf_points(
                    np.where(leaf, -1, nodes["left"].astype(np.intp)),
                    np.where(leaf, -1, nodes["right"].astype(np.intp)),
                    nodes["feature_idx"],
                    nodes["num_threshold"],
                    n_features,
                    as_float32=False,
                )
            )
    return np.vstack(points)


def _forest_points(model: IsolationForest) -> np.ndarray:
    subsets = model._max_features != model.n_features_in_
    points = []
    for estimator, columns in zip(model.estimators_, model.estimators_features_, strict=True):
        tree = estimator.tree_
        feature = np.maximum(tree.feature, 0)
        if subsets:
            feature = np.asarray(columns)[feature]
        points.append(
            _leaf_points(
                tree.children_left,
                tree.children_right,
                feature,
                tree.threshold,
                model.n_features_in_,
                as_float32=True,
            )
        )
    return np.vstack(points)


def _per_tree_values(
    model: HistGradientBoostingRegressor | HistGradientBoostingClassifier, x: np.ndarray
) -> np.ndarray:
    """scikit-learn's own output of each tree, (n, n_trees), trees iteration-major."""
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    return np.column_stack(
        [
            predictor.predict(x, known_cat_bitsets=known, f_idx_map=f_idx_map, n_threads=1)
            for iteration in model._predictors
            for predictor in iteration
        ]
    )


def _boosted_columns(model: HistGradientBoostingRegressor | HistGradientBoostingClassifier) -> list[int]:
    """Compiled position of each boosted tree, in _per_tree_values' order (iteration-major).

    A model compiled alone: output by output, each its baseline then its trees in iteration order.
    """
    per_output = 1 + len(model._predictors)
    return [k * per_output + 1 + it for it, iteration in enumerate(model._predictors) for k in range(len(iteration))]


def _assert_one_row_path_agrees(trees: CompiledTrees, points: np.ndarray) -> None:
    """The one-row path (a request's) reaches the same leaf, with the same value, as the block path, and the
    sums of both paths (one run per tree, and all trees in one run) are the leaf values added in order."""
    every_leaf = trees.leaves(points)
    for row, leaves in zip(points, every_leaf, strict=True):
        np.testing.assert_array_equal(trees.leaves(row), leaves)
        np.testing.assert_array_equal(trees.leaf_values(row), trees.value[leaves])
        np.testing.assert_array_equal(trees.sums(row, trees.n_trees), trees.value[leaves])
        np.testing.assert_array_equal(trees.sums(row, 1), np.cumsum(trees.value[leaves])[-1:])
        assert trees.row_sums(row, 1) == trees.sums(row, 1).tolist()
    np.testing.assert_array_equal(trees.sums(points, 1)[:, 0], np.cumsum(trees.value[every_leaf], axis=1)[:, -1])


# ----------------------------------------------------------------------------------------------------------
# Boosting


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["absolute_error_nan", "squared_error", "poisson"])
def test_regressor_equals_sklearn_on_random_and_edge_rows(regressors, name, strategy):
    model = regressors[name]
    fast = FastRegressor.from_sklearn(model, strategy)
    x = _edge_rows(N_FEATURES)
    expected = model.predict(x)
    np.testing.assert_allclose(fast.predict(x), expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose([fast.predict_one(row) for row in x], expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["absolute_error_nan", "squared_error", "poisson"])
def test_regressor_reaches_every_leaf_with_sklearns_values(regressors, name, strategy):
    model = regressors[name]
    fast = FastRegressor.from_sklearn(model, strategy)
    points = _hist_tree_points(model)
    columns = _boosted_columns(model)
    leaves = fast.trees.leaves(points)[:, columns]
    np.testing.assert_array_equal(fast.trees.value[leaves], _per_tree_values(model, points))
    reached = fast.apply(points)[:, columns]
    for t, predictor in enumerate(p for iteration in model._predictors for p in iteration):
        assert set(np.flatnonzero(predictor.nodes["is_leaf"])) == set(reached[:, t]), f"tree {t}"
    np.testing.assert_allclose(fast.predict(points), model.predict(points), rtol=RTOL, atol=0)
    np.testing.assert_allclose([fast.predict_one(row) for row in points], model.predict(points), rtol=RTOL, atol=0)
    _assert_one_row_path_agrees(fast.trees, points)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["binary_nan", "three_class"])
def test_classifier_equals_sklearn(classifiers, name, strategy):
    model = classifiers[name]
    if strategy == "grid" and name in TOO_BIG_FOR_GRID:
        with pytest.raises(ValueError, match="cell tables would take"):
            FastClassifier.from_sklearn(model, strategy)
        return
    fast = FastClassifier.from_sklearn(model, strategy)
    x = np.vstack((_edge_rows(N_FEATURES), _hist_tree_points(model)))
    np.testing.assert_allclose(fast.predict_proba(x), model.predict_proba(x), rtol=RTOL, atol=0)
    np.testing.assert_allclose(fast.decision_function(x), model.decision_function(x), rtol=RTOL, atol=0)
    leaves = fast.trees.leaves(x)[:, _boosted_columns(model)]
    np.testing.assert_array_equal(fast.trees.value[leaves], _per_tree_values(model, x))
    if name == "binary_nan":
        expected = model.predict_proba(x)[:, 1]
        np.testing.assert_allclose([fast.positive_proba_one(row) for row in x], expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_classifier_reaches_every_leaf(classifiers, strategy):
    model = classifiers["binary_nan"]
    fast = FastClassifier.from_sklearn(model, strategy)
    points = _hist_tree_points(model)
    reached = fast.apply(points)[:, _boosted_columns(model)]
    for t, predictor in enumerate(p for iteration in model._predictors for p in iteration):
        assert set(np.flatnonzero(predictor.nodes["is_leaf"])) == set(reached[:, t]), f"tree {t}"
    _assert_one_row_path_agrees(fast.trees, points)


def test_regressors_in_one_pass_equal_each_model(regressors):
    models = [regressors["absolute_error_nan"], regressors["squared_error"], regressors["poisson"]]
    group = FastRegressors.from_sklearn(models)
    x = _edge_rows(N_FEATURES)
    expected = np.column_stack([m.predict(x) for m in models])
    np.testing.assert_allclose(group.predict(x), expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose(np.array([group.predict(row) for row in x]), expected, rtol=RTOL, atol=0)


# ----------------------------------------------------------------------------------------------------------
# IsolationForest


def _forest_strategies(name: str) -> list[Strategy]:
    strategies: list[Strategy] = ["native", "walk"]
    if name == "small_trees":  # masks hold trees of <= 64 leaves
        strategies.append("masks")
    if name != "nan":  # six features in every tree: far too many cells
        strategies.append("grid")
    return strategies


@pytest.mark.parametrize("name", ["two_features", "nan", "feature_subsets", "small_trees"])
def test_isolation_forest_equals_sklearn_on_random_and_edge_rows(forests, name):
    model = forests[name]
    x = _edge_rows(model.n_features_in_)
    with np.errstate(over="ignore"):  # scikit-learn's own float32 cast of +-1e300
        expected = model.score_samples(x)
        expected_decision = model.decision_function(x)
    for strategy in _forest_strategies(name):
        fast = FastIsolationForest.from_sklearn(model, strategy)
        np.testing.assert_allclose(fast.score_samples(x), expected, rtol=RTOL, atol=0)
        np.testing.assert_allclose([fast.score_one(row) for row in x], expected, rtol=RTOL, atol=0)
        np.testing.assert_allclose(fast.decision_function(x), expected_decision, rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", ["two_features", "nan", "feature_subsets", "small_trees"])
def test_isolation_forest_reaches_every_leaf_as_sklearn(forests, name):
    model = forests[name]
    points = _forest_points(model)
    x32 = points.astype(np.float32)
    subsets = model._max_features != model.n_features_in_
    expected = np.column_stack(
        [
            estimator.apply(x32[:, columns] if subsets else x32)
            for estimator, columns in zip(model.estimators_, model.estimators_features_, strict=True)
        ]
    )
    for strategy in _forest_strategies(name):
        fast = FastIsolationForest.from_sklearn(model, strategy)
        np.testing.assert_array_equal(fast.apply(points), expected)
        for t, estimator in enumerate(model.estimators_):
            assert set(np.flatnonzero(estimator.tree_.children_left < 0)) == set(expected[:, t]), f"tree {t}"
        expected_scores = model.score_samples(points)
        np.testing.assert_allclose(fast.score_samples(points), expected_scores, rtol=RTOL, atol=0)
        np.testing.assert_allclose([fast.score_one(row) for row in points], expected_scores, rtol=RTOL, atol=0)
        _assert_one_row_path_agrees(fast.trees, points)


def test_float32_upper_bounds_match_float32_rounding():
    rng = np.random.default_rng(11)
    f32 = np.finfo(np.float32)
    thresholds = np.concatenate(
        (
            rng.normal(size=300) * 10.0 ** rng.integers(-40, 39, size=300),
            rng.normal(size=50).astype(np.float32).astype(np.float64),  # exactly a float32
            [0.0, -0.0, float(f32.max), -float(f32.max), 3.5e38, -3.5e38, 1e300, -1e300, 1e-45, -1e-45, 1e-50],
        )
    )
    bounds = float32_upper_bounds(thresholds)
    for t, u in zip(thresholds, bounds, strict=True):
        candidates = [t, u, np.nextafter(u, np.inf), np.nextafter(u, -np.inf), 2 * u, u / 2]
        with np.errstate(over="ignore", invalid="ignore"):
            down = np.float32(t)
            for v in (down, np.nextafter(down, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))):
                candidates += [float(v), np.nextafter(float(v), np.inf), np.nextafter(float(v), -np.inf)]
            x = np.array(candidates, dtype=np.float64)
            expected = x.astype(np.float32).astype(np.float64) <= t
        np.testing.assert_array_equal(x <= u, expected, err_msg=f"threshold {t!r}")


# ----------------------------------------------------------------------------------------------------------
# Choice of strategy, inputs, concurrency


def test_native_walk_is_built_and_auto_picks_it(regressors, classifiers, forests):
    # `make test` builds the library first (`make native`); the API's models must run on it.
    assert treewalk.library() is not None, "fitting_room/_treewalk.so is missing: run `make native`"
    assert isinstance(FastRegressor(regressors["absolute_error_nan"]).trees, NativeWalk)
    assert isinstance(FastClassifier(classifiers["three_class"]).trees, NativeWalk)
    assert isinstance(FastIsolationForest(forests["two_features"]).trees, NativeWalk)


def test_auto_strategy_without_the_library_picks_by_cost_and_size(regressors, classifiers, forests, monkeypatch):
    # Asked for, the cost model picks the same without the library as with it.
    assert isinstance(FastIsolationForest(forests["two_features"], strategy="numpy").trees, CellGrid)
    monkeypatch.setattr(treewalk, "library", lambda: None)
    with pytest.raises(ValueError, match="make native"):
        FastRegressor(regressors["squared_error"], strategy="native")
    # Cell tables whenever they stay small: the detector's two-feature forest, small boosting models.
    assert isinstance(FastIsolationForest(forests["two_features"]).trees, CellGrid)
    assert isinstance(FastRegressor(regressors["absolute_error_nan"]).trees, CellGrid)
    # Too many cells: leaf masks for boosting (<= 64 leaves), the level walk for large trees.
    assert isinstance(FastClassifier(classifiers["three_class"]).trees, LeafMasks)
    assert isinstance(FastIsolationForest(forests["nan"]).trees, LevelWalk)
    with pytest.raises(ValueError, match="leaf masks hold 64"):
        FastIsolationForest(forests["two_features"], strategy="masks")
    with pytest.raises(ValueError, match="cell tables would take"):
        FastIsolationForest(forests["nan"], strategy="grid")


def test_strategies_agree_on_boundary_thresholds_and_single_leaf_trees():
    # Hand-made trees: a split at +inf (only NaN can go right), at -0.0 (0.0 goes left: 0.0 <= -0.0), a
    # NaN-left split, and single-leaf trees; every strategy must send every awkward value the same way.
    def split(feature: int, threshold: float, nan_left: bool, low: float, high: float) -> TreeArrays:
        return TreeArrays(
            left=np.array([1, -1, -1]),
            right=np.array([2, -1, -1]),
            feature=np.array([feature, 0, 0]),
            threshold=np.array([threshold, np.inf, np.inf]),
            missing_go_to_left=np.array([nan_left, True, True]),
            value=np.array([0.0, low, high]),
        )

    leaf = TreeArrays(*(np.array([v]) for v in (-1, -1, 0, np.inf, True, 2.5)))
    trees = [split(0, np.inf, False, 1.0, 2.0), split(1, -0.0, True, 3.0, 4.0), leaf, split(1, 1e300, False, 5.0, 6.0)]
    values = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, np.nextafter(1e300, np.inf), 5e-324, -5e-324]
    x = np.array([(a, b) for a in values for b in values])
    expected = compile_trees(trees, "walk").leaves(x)
    for strategy in ("native", "masks", "grid"):
        compiled = compile_trees(trees, strategy)
        np.testing.assert_array_equal(compiled.value[compiled.leaves(x)], LevelWalk.build(trees).value[expected])
        _assert_one_row_path_agrees(compiled, x)
    only_leaves = compile_trees([leaf, leaf], "grid")
    assert only_leaves.leaf_values(np.array([np.nan])).tolist() == [2.5, 2.5]
    np.testing.assert_array_equal(only_leaves.value[only_leaves.leaves(x[:, :1])], np.full((len(x), 2), 2.5))


def test_native_walk_refuses_rows_without_the_columns_its_trees_test(regressors):
    trees = FastRegressor(regressors["squared_error"], "native").trees
    assert isinstance(trees, NativeWalk)
    assert 2 <= trees.width <= N_FEATURES  # one past the last column some tree splits on
    with pytest.raises(ValueError, match=f"at least {trees.width} features"):
        trees.leaves(np.zeros(trees.width - 1))
    with pytest.raises(ValueError, match=f"at least {trees.width} features"):
        trees.sums(np.zeros((3, trees.width - 1)), 1)
    with pytest.raises(ValueError, match="equal runs"):
        trees.sums(np.zeros(N_FEATURES), trees.n_trees + 1)
    # The request's path reads the row's bytes as they are: only a float64 row with the columns will do.
    with pytest.raises(ValueError, match=f"at least {trees.width} features"):
        trees.row_sums(np.zeros(trees.width - 1), 1)
    with pytest.raises(ValueError, match="float64 row"):
        trees.row_sums(np.zeros(N_FEATURES, dtype=np.float32), 1)
    with pytest.raises(ValueError, match="float64 row"):
        trees.row_sums(np.zeros((1, N_FEATURES)), 1)
    with pytest.raises(ValueError, match="equal runs"):
        trees.row_sums(np.zeros(N_FEATURES), trees.n_trees + 1)


def test_a_missing_or_foreign_library_is_not_used(tmp_path, caplog):
    assert treewalk.library.__wrapped__(tmp_path / "absent.so") is None
    # A library whose treewalk_abi() differs was built from another treewalk.c: its layout may differ too.
    source = tmp_path / "foreign.c"
    source.write_text(f"int treewalk_abi(void) {{ return {treewalk.ABI + 1}; }}\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "foreign.so"), str(source)], check=True)
    assert treewalk.library.__wrapped__(tmp_path / "foreign.so") is None
    assert "built from another treewalk.c" in caplog.text


def test_refuses_what_it_cannot_reproduce(regressors):
    x = _data(8)
    categorical = HistGradientBoostingRegressor(max_iter=5, categorical_features=[1]).fit(
        np.abs(np.round(x)), _target(x)
    )
    with pytest.raises(ValueError, match="categorical"):
        FastRegressor(categorical)
    with pytest.raises(TypeError):
        FastRegressor(IsolationForest(n_estimators=2).fit(x))
    fast = FastRegressor(regressors["squared_error"])
    with pytest.raises(ValueError, match="features"):
        fast.predict(np.zeros(N_FEATURES + 1))
    with pytest.raises(ValueError, match="one row"):
        fast.predict_one(np.zeros((2, N_FEATURES)))


@pytest.mark.parametrize("strategy", ["native", "grid"])
def test_compiled_arrays_are_read_only_and_concurrent_calls_agree(regressors, forests, strategy):
    fast = FastRegressor(regressors["absolute_error_nan"], strategy)
    forest = FastIsolationForest(forests["two_features"], strategy)
    assert not fast.trees.value.flags.writeable
    if isinstance(forest.trees, CellGrid):
        assert not forest.trees.offsets.flags.writeable
        assert not forest.trees.cell_value.flags.writeable
        assert not any(b.flags.writeable for b in forest.trees.bound_arrays)
    else:  # the C walk reads the LevelWalk's arrays
        assert isinstance(forest.trees, NativeWalk)
        assert not forest.trees.walk.threshold.flags.writeable
        assert not forest.trees.walk.left.flags.writeable
    x = _edge_rows(N_FEATURES)
    x2 = _edge_rows(2)
    expected = fast.predict(x)
    expected_scores = forest.score_samples(x2)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (fast.predict_one(x[i]), forest.score_one(x2[i])), range(len(x))))
    np.testing.assert_array_equal([g[0] for g in got], expected)
    np.testing.assert_array_equal([g[1] for g in got], expected_scores)


# ----------------------------------------------------------------------------------------------------------
# models.py uses the fast path for a request's rows, with scikit-learn's numbers


@pytest.fixture(scope="module")
def fitted_models(tmp_path_factory):
    """A small DurationPredictor and supervised and unsupervised AnomalyDetectors."""
    from models import AnomalyDetector, DurationPredictor
    from tests.factories import load_synthetic

    sessions, catalog, _ = load_synthetic(tmp_path_factory.mktemp("fast"), 700, seed=3, anomaly_rate=0.15)
    with threadpool_limits(1):
        predictor = DurationPredictor(max_iter=60, scale_max_iter=30, cv_folds=2).fit(sessions, catalog)
        supervised = AnomalyDetector(n_estimators=20, min_labels=5, cv_folds=2).fit(sessions, catalog, predictor)
        unsupervised = AnomalyDetector(n_estimators=20, use_labels=False).fit(sessions, catalog, predictor)
    assert supervised.classifier_ is not None
    return predictor, supervised, unsupervised, sessions, catalog


def test_estimate_uses_the_fast_path_with_sklearns_numbers(fitted_models):
    predictor, _, _, sessions, catalog = fitted_models
    for items, entry in zip(sessions["entry_scans"][:30], sessions["entry_time"][:30], strict=True):
        estimate = predictor.estimate(items, entry.to_pydatetime(), catalog)
        x, _ = predictor.builder_.row(items, entry.to_pydatetime(), catalog)
        center = predictor.median_model_.predict(x[None, :])[0]
        assert estimate.median == pytest.approx(np.exp(center), rel=RTOL, abs=0)
    assert isinstance(predictor._fast, FastRegressors)


@pytest.mark.parametrize("which", [1, 2])
def test_detector_scores_requests_on_the_fast_path_with_sklearns_numbers(fitted_models, which):
    predictor, detector, sessions, catalog = (
        fitted_models[0],
        fitted_models[which],
        fitted_models[3],
        fitted_models[4],
    )
    features = detector.session_features(sessions.iloc[:100], catalog, predictor)
    # 100 rows go through scikit-learn, 1 and 40 through the fast path.
    expected = detector.score(features)
    np.testing.assert_allclose(detector.score(features[:40]), expected[:40], rtol=RTOL, atol=0)
    np.testing.assert_allclose([detector.score(row[None, :])[0] for row in features], expected, rtol=RTOL, atol=0)


def test_saved_models_hold_no_fast_path_and_load_compiles_it(fitted_models, tmp_path):
    from models import AnomalyDetector, DurationPredictor

    predictor, detector = fitted_models[0], fitted_models[1]
    for model, cls in ((predictor, DurationPredictor), (detector, AnomalyDetector)):
        model._fast_path()
        assert "_fast" not in model.__getstate__()
        model.save(tmp_path / "model.pkl")
        loaded = cls.load(tmp_path / "model.pkl")
        assert loaded._fast is not None
