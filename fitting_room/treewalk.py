"""ctypes binding of treewalk.c, the compiled tree walk behind the "native" strategy (tree_strategies.NativeWalk).

`make native` builds the library next to this file with the system's C compiler (`make run` and `make test` do
it first). Where it is missing, the numpy strategies answer instead, with the same numbers.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

LIBRARY_PATH = Path(__file__).with_name("_treewalk.so")
# treewalk_abi() of the treewalk.c this binding describes: a library built from another is not used.
ABI = 3

log = logging.getLogger(__name__)

_INDEX = ctypes.c_ssize_t  # numpy's intp
_POINTER = ctypes.c_void_p
# treewalk.c's node_t: one 16-byte record per node; a leaf has left -1 and its value in `threshold`.
NODE = np.dtype(
    [("threshold", np.float64), ("left", np.int32), ("feature", np.uint16), ("nan_right", np.uint8), ("unused", "u1")]
)
MAX_FEATURE = np.iinfo(np.uint16).max
MAX_NODES = np.iinfo(np.int32).max


class Forest(ctypes.Structure):
    """treewalk.c's forest_t: addresses of the node records and per-tree arrays, which its owner keeps alive."""

    _fields_ = (("n_trees", _INDEX), ("nodes", _POINTER), ("roots", _POINTER), ("depth", _POINTER))


@dataclass(frozen=True)
class Library:
    """The library's two walks, with their argument types declared."""

    leaves: Any  # (forest, rows, n_rows, n_columns, out intp n_rows x n_trees)
    sums: Any  # (forest, rows, n_rows, n_columns, n_outputs, out float64 n_rows x n_outputs)


@cache
def library(path: Path = LIBRARY_PATH) -> Library | None:
    """The built library, or None (logged once) when it is missing or built from another treewalk.c."""
    try:
        handle = ctypes.CDLL(str(path))
    except OSError as err:
        log.warning("native tree walk unavailable (%s): run `make native`; numpy strategies answer", err)
        return None
    handle.treewalk_abi.restype = ctypes.c_int
    if handle.treewalk_abi() != ABI:
        log.warning("native tree walk %s was built from another treewalk.c: run `make native`", path)
        return None
    # Rows come as bytes (c_char_p takes them without a copy) or an address; outputs as an address.
    handle.treewalk_leaves.argtypes = (_POINTER, ctypes.c_char_p, _INDEX, _INDEX, _POINTER)
    handle.treewalk_leaves.restype = None
    handle.treewalk_sums.argtypes = (_POINTER, ctypes.c_char_p, _INDEX, _INDEX, _INDEX, _POINTER)
    handle.treewalk_sums.restype = None
    return Library(leaves=handle.treewalk_leaves, sums=handle.treewalk_sums)


def forest(nodes: np.ndarray, roots: np.ndarray, depth: np.ndarray) -> Forest:
    """A forest_t over contiguous 1-D arrays: NODE records, and per tree its root and its depth (int32)."""
    for name, array, dtype in (("nodes", nodes, NODE), ("roots", roots, np.int32), ("depth", depth, np.int32)):
        if array.dtype != dtype or array.ndim != 1 or not array.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous 1-D array of {dtype}")
    if len(roots) != len(depth):
        raise ValueError(f"{len(roots)} roots but {len(depth)} depths")
    return Forest(len(roots), nodes.ctypes.data, roots.ctypes.data, depth.ctypes.data)
