"""How flattened trees are evaluated, one row or a block of rows at a time: the fast path's strategies.

`fastpath` turns scikit-learn's fitted models into `TreeArrays` and compiles them here (`compile_trees`).
Every strategy answers `leaves` (the exit leaf of each tree), `leaf_values`, and `sums` / `row_sums` (leaf
values added tree by tree in order, as scikit-learn adds them):

- native walk (the default when built): the level walk's nodes as 16-byte records walked in C
  (fitting_room/treewalk.c through ctypes), groups of trees a level at a time so that their
  memory reads overlap. Under load a request finds the trees cold in cache, and then the numpy
  strategies' passes over all nodes or large tables cost 4-6 times their warm time; a walk reads
  one record per level of each tree. Needs `make native`; without it the others answer.
- level walk: every tree steps one level per numpy round, `node = left[node] + (x[f] > t)`;
  right children sit next to left ones and leaves loop to themselves, so no per-tree stop test;
  cost ~ 6 calls per level of the deepest tree.
- leaf masks (QuickScorer, Lucchese et al. 2015), for trees of at most 64 leaves: every split that
  sends the row right removes its left subtree's leaves from the tree's leaf set, and the exit
  leaf is the lowest surviving bit; ~8 calls over all split nodes at once, which wins for deep,
  thin trees such as boosting's.
- cell grid, for ensembles over few features (the detector's two-feature isolation forest): rows
  with the same rank among every feature's thresholds reach the same leaves, so each tree's exit
  leaf is tabulated per cell; a row costs a binary search per feature and ~5 calls, whatever the
  depth. Used when the tables stay within a few MB.

Without the native walk (or asked for "numpy"), the numpy strategy is chosen per ensemble by a cost
estimate.
"""

from __future__ import annotations

import ctypes
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from fitting_room import treewalk

__all__ = [
    "CellGrid",
    "CompiledTrees",
    "LeafMasks",
    "LevelWalk",
    "NativeWalk",
    "Strategy",
    "TreeArrays",
    "compile_trees",
]

# "auto": native when built, else "numpy"; "numpy": the cheapest numpy strategy for one row by the cost model.
Strategy = Literal["auto", "native", "numpy", "walk", "masks", "grid"]

# Rows evaluated at once in batch calls: bounds the (rows x nodes) work arrays to a few MB.
_CHUNK_CELLS = 1 << 18
_MAX_MASK_LEAVES = 64
# Index of the lowest zero bit of every 16-bit value (the exit leaf, for masks of at most 16 leaves).
_LOWEST_ZERO_BIT = np.bitwise_count(np.arange(1 << 16) ^ np.arange(1, (1 << 16) + 1)).astype(np.uint8) - np.uint8(1)
_LOWEST_ZERO_BIT.flags.writeable = False
# Cell tables (CellGrid) up to this size: the detector's two-feature isolation forest needs ~5 MB; wider
# ensembles would need far more (each tree's cells multiply over the columns it splits on) and fall back.
_MAX_GRID_BYTES = 8 << 20
_CELL_BYTES = 16  # a leaf id (intp) and a leaf value (float64) per cell
# Cost model for choosing a strategy, in units of one small numpy call (~0.5 us unloaded):
# a level-walk round is 6 calls over n_trees elements, the mask pass ~10 calls plus ~5 passes
# over every split node, the cell grid ~4 calls, a third of one per feature's binary search and
# a few passes over n_trees values. Per-element cost ~1 ns -> 0.002 units.
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

    def leaf_values(self, row: np.ndarray) -> np.ndarray:
        """Leaf value per tree for one row (1-D): the per-request path, as few numpy calls as the strategy allows."""
        ...

    def sums(self, x: np.ndarray, n_outputs: int) -> np.ndarray:
        """Per row, the trees as `n_outputs` equal runs, each run's leaf values added left to right:
        (n_outputs,) for one row (1-D), (n, n_outputs) for rows (2-D)."""
        ...

    def row_sums(self, row: np.ndarray, n_outputs: int) -> list[float]:
        """sums() of one row (1-D float64) as floats: the per-request path, with no array around the answer."""
        ...


class _SumsOfLeaves:
    """`sums` from `leaves` and `value`, for the strategies that find leaves with numpy."""

    def sums(self: CompiledTrees, x: np.ndarray, n_outputs: int) -> np.ndarray:
        """Per row, the trees as `n_outputs` equal runs, each run's leaf values added left to right."""
        if x.ndim == 1:
            return _sequential_sum(self.leaf_values(x).reshape(n_outputs, -1))
        return _sequential_sum(self.value[self.leaves(x)].reshape(len(x), n_outputs, -1))

    def row_sums(self: CompiledTrees, row: np.ndarray, n_outputs: int) -> list[float]:
        """sums() of one row (1-D) as floats."""
        values: list[float] = self.sums(row, n_outputs).tolist()
        return values


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
class LevelWalk(_SumsOfLeaves):
    """Trees renumbered breadth-first into shared arrays; all trees step one level per round."""

    feature: np.ndarray  # intp, column each node tests
    threshold: np.ndarray  # float64, +inf at leaves so every non-NaN value stays put
    left: np.ndarray  # intp, global id of the left child (right = left + 1); the node itself at leaves
    nan_right: np.ndarray  # bool, a NaN goes right (False at leaves)
    value: np.ndarray  # float64, leaf values (0 at split nodes)
    roots: np.ndarray  # intp, global id of each tree's root
    source_id: np.ndarray  # intp, node id in the scikit-learn tree
    tree_depth: np.ndarray  # intp, per tree: levels from its root to its deepest leaf
    depth: int  # rounds: the deepest tree's levels

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
        tree_depth = np.zeros(len(trees), dtype=np.intp)
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
                    tree_depth[t] = max(tree_depth[t], level)
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
        _freeze(feature, threshold, left, nan_right, value, roots, source_id, tree_depth)
        depth = int(tree_depth.max(initial=0))
        return cls(feature, threshold, left, nan_right, value, roots, source_id, tree_depth, depth)

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

    def leaf_values(self, row: np.ndarray) -> np.ndarray:
        """Leaf value per tree for one row (1-D)."""
        return self.value[self.leaves(row)]


@dataclass(frozen=True)
class NativeWalk:
    """LevelWalk's arrays walked by compiled C (fitting_room/treewalk.c): one call per row or block of rows.

    Each tree's walk touches only the nodes on the row's path, where the numpy strategies make ~10 calls over
    all nodes or large tables; under load, when caches are cold, that is most of a prediction's cost. Needs the
    library `make native` builds; `compile_trees` falls back to the numpy strategies without it.
    """

    walk: LevelWalk  # the same numbering: its value and source_id arrays answer for leaf ids
    library: treewalk.Library
    nodes: np.ndarray = field(repr=False)  # treewalk.NODE records, one per node of `walk`
    depth: np.ndarray  # int32, per tree: levels from its root to its deepest leaf
    roots: np.ndarray  # int32, per tree: its root's id
    forest: treewalk.Forest = field(repr=False)  # addresses of the three arrays above, which this keeps alive
    address: int  # of `forest`, passed on every call
    width: int  # columns a row needs: the C walk reads the ones the trees test unchecked

    @classmethod
    def build(cls, trees: Sequence[TreeArrays]) -> NativeWalk:
        """Flatten trees as LevelWalk does; ValueError when the library is not built."""
        library = treewalk.library()
        if library is None:
            raise ValueError("the native tree walk is not built: run `make native`")
        walk = LevelWalk.build(trees)
        width = 1 + max(int(np.max(t.feature)) for t in trees)
        if width - 1 > treewalk.MAX_FEATURE or len(walk.left) > treewalk.MAX_NODES:
            raise ValueError(f"{width} features or {len(walk.left)} nodes are beyond the native walk's records")
        leaf = walk.left == np.arange(len(walk.left))
        nodes = np.zeros(len(walk.left), dtype=treewalk.NODE)
        nodes["threshold"] = np.where(leaf, walk.value, walk.threshold)
        nodes["left"] = np.where(leaf, -1, walk.left)
        nodes["feature"] = walk.feature
        nodes["nan_right"] = walk.nan_right
        depth = walk.tree_depth.astype(np.int32)
        roots = walk.roots.astype(np.int32)
        _freeze(nodes, depth, roots)
        forest = treewalk.forest(nodes, roots, depth)
        return cls(walk, library, nodes, depth, roots, forest, ctypes.addressof(forest), width)

    @property
    def value(self) -> np.ndarray:
        """Leaf values, indexed by global node id."""
        return self.walk.value

    @property
    def source_id(self) -> np.ndarray:
        """scikit-learn's node id of each global node id."""
        return self.walk.source_id

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return self.walk.n_trees

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        rows = self._rows(x)
        n_rows = 1 if rows.ndim == 1 else len(rows)
        out = np.empty((n_rows, self.n_trees), dtype=np.intp)
        self.library.leaves(self.address, rows.tobytes(), n_rows, rows.shape[-1], out.ctypes.data)
        return out[0] if rows.ndim == 1 else out

    def leaf_values(self, row: np.ndarray) -> np.ndarray:
        """Leaf value per tree for one row (1-D)."""
        return self.walk.value[self.leaves(row)]

    def sums(self, x: np.ndarray, n_outputs: int) -> np.ndarray:
        """Per row, the trees as `n_outputs` equal runs, each run's leaf values added left to right."""
        self._check_runs(n_outputs)
        rows = self._rows(x)
        n_rows = 1 if rows.ndim == 1 else len(rows)
        # A ctypes buffer viewed by numpy: cheaper per call than an array's .ctypes address.
        out = (ctypes.c_double * (n_rows * n_outputs))()
        self.library.sums(self.address, rows.tobytes(), n_rows, rows.shape[-1], n_outputs, ctypes.addressof(out))
        sums = np.frombuffer(memoryview(out), dtype=np.float64)
        return sums if rows.ndim == 1 else sums.reshape(n_rows, n_outputs)

    def row_sums(self, row: np.ndarray, n_outputs: int) -> list[float]:
        """sums() of one row (1-D float64) as floats: ~7 µs less than sums() with a cold cache (no conversion, no
        array around the answer), which is what a request's prediction meets."""
        if row.ndim != 1 or row.dtype != np.float64 or len(row) < self.width:
            raise ValueError(f"expected one float64 row of at least {self.width} features, got {row.dtype} {row.shape}")
        self._check_runs(n_outputs)
        out = (ctypes.c_double * n_outputs)()
        self.library.sums(self.address, row.tobytes(), 1, len(row), n_outputs, ctypes.addressof(out))
        return out[:]

    def _check_runs(self, n_outputs: int) -> None:
        """ValueError unless the trees split into `n_outputs` equal runs (C divides them unchecked)."""
        if n_outputs < 1 or self.n_trees % n_outputs:
            raise ValueError(f"{self.n_trees} trees do not split into {n_outputs} equal runs")

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """x as one row (1-D) or rows (2-D) of float64 with at least the columns the trees test (C reads them
        unchecked); tobytes() hands C a contiguous copy."""
        rows = np.asarray(x, dtype=np.float64)
        if rows.ndim not in (1, 2) or rows.shape[-1] < self.width:
            raise ValueError(f"expected rows of at least {self.width} features, got shape {np.shape(x)}")
        return rows


@dataclass(frozen=True)
class LeafMasks(_SumsOfLeaves):
    """Split nodes of all trees in one array, each with the leaves it removes when the row goes right."""

    feature: np.ndarray  # intp, per split node
    threshold: np.ndarray  # float64, per split node
    nan_right: np.ndarray  # bool, per split node
    remove_if_right: np.ndarray  # uint8-64, per split node: its left subtree's leaves (bit k = k-th leaf)
    tree_start: np.ndarray  # intp, first split node of each tree (single-leaf trees get a no-op split)
    leaf_base: np.ndarray  # intp, global id of each tree's leftmost leaf
    value: np.ndarray  # float64, per leaf, trees in order, leaves left to right
    source_id: np.ndarray  # intp, per leaf: node id in the scikit-learn tree
    count_base: np.ndarray  # intp, leaf_base - 1: the bit count in leaves() includes the exit leaf itself

    @classmethod
    def build(cls, trees: Sequence[TreeArrays]) -> LeafMasks:
        """Flatten trees of at most 64 leaves each."""
        feature: list[int] = []
        threshold: list[float] = []
        nan_right: list[bool] = []
        remove: list[int] = []
        tree_start: list[int] = []
        leaf_base: list[int] = []
        value: list[float] = []
        source_id: list[int] = []
        widest = 1
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
            widest = max(widest, len(leaf_index))
            for node in sorted(leaf_index, key=leaf_index.__getitem__):
                value.append(float(tree.value[node]))
                source_id.append(node)
            if not left_range:  # a single leaf: one split that never removes anything
                feature.append(0)
                threshold.append(np.inf)
                nan_right.append(False)
                remove.append(0)
            for node, (lo, hi) in left_range.items():
                feature.append(int(tree.feature[node]))
                threshold.append(float(tree.threshold[node]))
                nan_right.append(not bool(tree.missing_go_to_left[node]))
                remove.append(((1 << (hi - lo)) - 1) << lo)
        # The narrowest unsigned type holding a tree's leaves: fewer bytes per split for every call to touch.
        mask_type = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(t).bits >= widest)
        arrays = (
            np.array(feature, dtype=np.intp),
            np.array(threshold, dtype=np.float64),
            np.array(nan_right, dtype=bool),
            np.array(remove, dtype=mask_type),
            np.array(tree_start, dtype=np.intp),
            np.array(leaf_base, dtype=np.intp),
            np.array(value, dtype=np.float64),
            np.array(source_id, dtype=np.intp),
            np.array(leaf_base, dtype=np.intp) - 1,
        )
        _freeze(*arrays)
        return cls(*arrays)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.tree_start)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        if x.ndim == 1:
            v = x[self.feature]  # plain indexing: `...` costs a microsecond per call
        elif x.shape[0] * len(self.feature) > _CHUNK_CELLS:
            return _in_chunks(self, x, len(self.feature))
        else:
            v = x[:, self.feature]
        go_right = v > self.threshold
        # NaN may change directions; np.minimum propagates NaN, so one reduction over the row(s) finds it
        # (far fewer values than split nodes, and no floating-point warnings, unlike a sum's inf - inf).
        least = np.minimum.reduce(x, axis=None, initial=np.inf)
        if least != least:
            go_right |= np.isnan(v) & self.nan_right
        # Leaves removed by the splits that send the row right (a product with the bool beats np.where);
        # the exit leaf is the lowest one left.
        removed = np.bitwise_or.reduceat(self.remove_if_right * go_right, self.tree_start, axis=-1)
        if removed.dtype.itemsize <= 2:  # one lookup in a 64 KB table instead of three calls
            return self.leaf_base + _LOWEST_ZERO_BIT.take(removed)  # take: fancy indexing by uint16 is slow
        # removed ^ (removed + 1) sets exactly the bits up to and including the lowest zero bit.
        return self.count_base + np.bitwise_count(removed ^ (removed + 1))

    def leaf_values(self, row: np.ndarray) -> np.ndarray:
        """Leaf value per tree for one row (1-D)."""
        return self.value[self.leaves(row)]


@dataclass(frozen=True)
class CellGrid(_SumsOfLeaves):
    """Trees over few features as lookup tables: the row's rank among each feature's thresholds picks a cell per tree.

    All rows with the same number of thresholds below them in every feature (NaN is a rank of its own) take
    the same path in every tree, so the exit leaves are tabulated once per such cell. A row then costs one
    binary search per feature plus a few numpy calls, whatever the trees' depth. `offsets[r, t]` is tree t's
    part of the cell index for global rank row r; rows of all features are stacked, one NaN row after each.
    """

    columns: tuple[int, ...]  # the columns some tree splits on
    # Per column: its sorted distinct thresholds (floats, for bisect; thousands: kept out of the repr).
    bounds: tuple[tuple[float, ...], ...] = field(repr=False)
    bound_arrays: tuple[np.ndarray, ...] = field(repr=False)  # the same as float64 arrays, for rows in bulk
    first_row: tuple[int, ...]  # per column: its first row in `offsets`
    offsets: np.ndarray  # int32 (rows, n_trees): tree t's share of the cell index for each rank
    cell_leaf: np.ndarray  # intp, global leaf id of each cell
    cell_value: np.ndarray  # float64, value of that leaf (saves a lookup per call)
    value: np.ndarray  # float64, per global node id (leaves only are ever read)
    source_id: np.ndarray  # intp, per global node id: node id in the scikit-learn tree

    @classmethod
    def build(cls, trees: Sequence[TreeArrays], max_bytes: int = _MAX_GRID_BYTES) -> CellGrid:
        """Tabulate trees; ValueError when the tables would take more than `max_bytes`."""
        layout = _GridLayout.of(trees, max_bytes)
        if layout is None:
            raise ValueError(f"cell tables would take more than {max_bytes} bytes")
        columns, bounds, cells = layout.columns, layout.bounds, layout.cells
        local, classes = layout.local, layout.classes
        n_rows = sum(len(b) + 2 for b in bounds)
        cell_base = np.concatenate(([0], np.cumsum(cells)))
        offsets = np.zeros((n_rows, len(trees)), dtype=np.int32)  # the size limit keeps cell ids far below 2**31
        cell_leaf = np.empty(int(cell_base[-1]), dtype=np.intp)
        width = 1 + max([0, *columns, *(int(np.max(t.feature)) for t in trees)])
        node_base = 0
        for t, tree in enumerate(trees):
            stride, row = 1, 0
            representatives = []
            for j, u in enumerate(local[t]):
                rows = slice(row, row + len(bounds[j]) + 2)
                row = rows.stop
                if len(u):
                    # Rank r of a value among the column's thresholds -> rank among this tree's (NaN last).
                    rank = np.concatenate(([0], np.searchsorted(u, bounds[j], side="right"), [len(u) + 1]))
                    offsets[rows, t] = rank * stride
                    # One value per class: each threshold itself, one just above the last, and NaN.
                    representatives.append(np.concatenate((u, [np.nextafter(u[-1], np.inf), np.nan])))
                else:
                    representatives.append(np.zeros(1))
                stride *= classes[t][j]
            offsets[: len(bounds[0]) + 2 if columns else 0, t] += cell_base[t]
            # Every cell of the tree: class k_j of column j at index sum_j k_j * stride_j.
            ks = np.indices(tuple(reversed(classes[t]))).reshape(len(columns), cells[t])[::-1]
            points = np.zeros((cells[t], width))
            for j, column in enumerate(columns):
                points[:, column] = representatives[j][ks[j]]
            cell_leaf[cell_base[t] : cell_base[t + 1]] = node_base + _tree_exits(tree, points)
            node_base += len(tree.left)
        value = np.concatenate([np.asarray(t.value, dtype=np.float64) for t in trees])
        source_id = np.concatenate([np.arange(len(t.left), dtype=np.intp) for t in trees])
        first_row = tuple(int(r) for r in np.cumsum([0] + [len(b) + 2 for b in bounds])[:-1])
        arrays = (offsets, cell_leaf, value[cell_leaf], value, source_id)
        _freeze(*arrays, *bounds)
        return cls(tuple(columns), tuple(tuple(b.tolist()) for b in bounds), tuple(bounds), first_row, *arrays)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return self.offsets.shape[1]

    def _cells_one(self, row: np.ndarray) -> np.ndarray:
        """Cell index per tree for one row: a bisect per column, one offsets row each, summed."""
        values = row.tolist()
        ranks = []
        for column, bounds, first in zip(self.columns, self.bounds, self.first_row, strict=True):
            v = values[column]
            # bisect_left counts the thresholds t < v, i.e. the splits that send v right (v > t).
            ranks.append(first + (len(bounds) + 1 if v != v else bisect_left(bounds, v)))
        if len(ranks) == 1:
            return self.offsets[ranks[0]]
        if len(ranks) == 2:  # the detector's isolation forest: two views and one add
            return self.offsets[ranks[0]] + self.offsets[ranks[1]]
        return np.add.reduce(self.offsets[ranks], axis=0, dtype=self.offsets.dtype)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf id per tree: (n_trees,) for one row (1-D), (n, n_trees) for rows (2-D)."""
        if x.ndim == 1:
            return self.cell_leaf.take(self._cells_one(x)) if self.columns else self.cell_leaf[: self.n_trees]
        if x.shape[0] * self.n_trees > _CHUNK_CELLS:
            return _in_chunks(self, x, self.n_trees)
        cell = np.zeros((x.shape[0], self.n_trees), dtype=np.intp)
        if not self.columns:
            return self.cell_leaf[cell + np.arange(self.n_trees)]
        for column, bounds, first in zip(self.columns, self.bound_arrays, self.first_row, strict=True):
            v = x[:, column]
            rank = np.where(np.isnan(v), len(bounds) + 1, np.searchsorted(bounds, v, side="left"))
            cell += self.offsets[first + rank]
        return self.cell_leaf[cell]

    def leaf_values(self, row: np.ndarray) -> np.ndarray:
        """Leaf value per tree for one row (1-D)."""
        if not self.columns:
            return self.cell_value[: self.n_trees]
        return self.cell_value.take(self._cells_one(row))  # take: fancy indexing by int32 is slow


@dataclass(frozen=True)
class _GridLayout:
    """Sizes of a CellGrid, cheap to get without building it (compile_trees asks before choosing)."""

    columns: list[int]  # the columns some tree splits on
    local: list[list[np.ndarray]]  # per tree and column: its distinct thresholds
    classes: list[list[int]]  # per tree and column: rank classes (thresholds + 1, + 1 for NaN; 1 when unused)
    bounds: list[np.ndarray]  # per column: distinct thresholds of all trees
    cells: list[int]  # per tree: number of cells

    @classmethod
    def of(cls, trees: Sequence[TreeArrays], max_bytes: int) -> _GridLayout | None:
        """The layout of these trees, or None as soon as it is clear that it would exceed `max_bytes`."""
        splits = [np.asarray(t.left) >= 0 for t in trees]
        columns = sorted({int(f) for t, s in zip(trees, splits, strict=True) for f in np.asarray(t.feature)[s]})
        local: list[list[np.ndarray]] = []
        classes: list[list[int]] = []
        cells: list[int] = []
        for tree, split in zip(trees, splits, strict=True):
            feature, threshold = np.asarray(tree.feature)[split], np.asarray(tree.threshold, dtype=np.float64)[split]
            local.append([np.unique(threshold[feature == c]) for c in columns])
            classes.append([len(u) + 2 if len(u) else 1 for u in local[-1]])
            cells.append(math.prod(classes[-1]))
            if _CELL_BYTES * sum(cells) > max_bytes:  # wide ensembles stop here, after a tree or two
                return None
        bounds = [np.unique(np.concatenate([u[j] for u in local] + [np.empty(0)])) for j in range(len(columns))]
        layout = cls(columns, local, classes, bounds, cells)
        return layout if layout.nbytes <= max_bytes else None

    @property
    def nbytes(self) -> int:
        """Size of the tables: int32 offsets, and a leaf id and a value per cell."""
        return 4 * sum(len(b) + 2 for b in self.bounds) * len(self.local) + _CELL_BYTES * sum(self.cells)


def _tree_exits(tree: TreeArrays, points: np.ndarray) -> np.ndarray:
    """Exit node of one tree (scikit-learn layout) for each point: `x <= threshold` or missing_go_to_left goes left."""
    left, right = np.asarray(tree.left), np.asarray(tree.right)
    feature, threshold = np.asarray(tree.feature), np.asarray(tree.threshold, dtype=np.float64)
    nan_left = np.asarray(tree.missing_go_to_left, dtype=bool)
    node = np.zeros(len(points), dtype=np.intp)
    rows = np.arange(len(points))
    for _ in range(_depth(tree)):
        v = points[rows, feature[node]]
        go_left = (v <= threshold[node]) | (np.isnan(v) & nan_left[node])
        node = np.where(left[node] < 0, node, np.where(go_left, left[node], right[node]))
    return node


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


def compile_trees(
    trees: Sequence[TreeArrays], strategy: Strategy = "auto"
) -> NativeWalk | LevelWalk | LeafMasks | CellGrid:
    """Compile trees with the given strategy (see Strategy)."""
    if strategy == "native" or (strategy == "auto" and treewalk.library() is not None):
        return NativeWalk.build(trees)
    if strategy == "walk":
        return LevelWalk.build(trees)
    if strategy == "masks":
        return LeafMasks.build(trees)
    if strategy == "grid":
        return CellGrid.build(trees)
    n_trees = len(trees)
    costs: dict[str, float] = {"walk": max(_depth(t) for t in trees) * 6 * (_CALL + n_trees * _PER_ELEMENT)}
    if max(_n_leaves(t) for t in trees) <= _MAX_MASK_LEAVES:
        n_splits = sum(max(_n_leaves(t) - 1, 1) for t in trees)
        costs["masks"] = 10 * _CALL + 5 * n_splits * _PER_ELEMENT
    layout = _GridLayout.of(trees, _MAX_GRID_BYTES)
    if layout is not None:
        # A bisect per column (~1/3 of a call) and ~4 calls over n_trees values.
        costs["grid"] = (4 + len(layout.columns) / 3) * _CALL + (len(layout.columns) + 3) * n_trees * _PER_ELEMENT
    return compile_trees(trees, min(costs, key=costs.__getitem__))  # type: ignore[arg-type]


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """Left-to-right sum along the last axis; a cumulative sum never reorders, unlike np.sum's pairwise sum."""
    # np.add.accumulate is np.cumsum without its wrapper layers (the same loop, ~1 us less per call).
    return np.add.accumulate(values, axis=-1)[..., -1]
