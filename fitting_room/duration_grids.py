"""Session length distributions from the models' quantile grids, conditioned on the time already spent.

Distributions are the 99-point quantile grids of the predictions, interpolated on the normal-score scale in
log minutes and extended beyond the first and last grid points along the slope of the outer grid points
(a lognormal tail), so conditioning on a long elapsed time still leaves a sensible remaining time. The wait
estimates (fitting_room/estimates.py, fitting_room/wait_pools.py) draw from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

from fitting_room.engine import MIN_REMAINING_MINUTES

FloatArray = npt.NDArray[np.float64]

# Quantiles below this many minutes are treated as this (a log of zero has no tail to extend).
SHORTEST_MINUTES = 1e-3
# Grids narrower than this (log minutes) are a fixed duration, with no distribution to condition.
_DEGENERATE = 1e-9
# Grid points on each side used for the slope of the extended tails.
_TAIL_POINTS = 4
# Sessions per block of draws computed at once (bounds temporaries to a few MB per array).
_BLOCK = 1024


class DurationGrids:
    """Session length distributions of several sessions from their quantile grids, with lognormal tails."""

    def __init__(self, grids: Sequence[Sequence[float]]) -> None:
        """Grid point i (1-based) of n is the quantile at probability i / (n + 1); grids are resampled to 99."""
        logq = np.log(np.maximum(_grid_matrix(grids), SHORTEST_MINUTES))
        n = logq.shape[1]
        self._z = ndtri(np.arange(1, n + 1) / (n + 1))
        self.fixed = logq[:, -1] - logq[:, 0] < _DEGENERATE
        # A strictly increasing grid keeps the inverse (minutes -> normal score) well defined.
        self._y = np.maximum.accumulate(logq, axis=1) + np.arange(n) * 1e-12
        k = _TAIL_POINTS
        z = self._z
        self._low_slope = np.where(self.fixed, 0.0, (self._y[:, k] - self._y[:, 0]) / (z[k] - z[0]))
        self._high_slope = np.where(self.fixed, 0.0, (self._y[:, -1] - self._y[:, -1 - k]) / (z[-1] - z[-1 - k]))

    def grid_means(self) -> FloatArray:
        """Mean of each session's grid points, in minutes (a quick stand-in for its mean length)."""
        return np.asarray(np.exp(self._y).mean(axis=1), dtype=np.float64)

    def log_quantile(self, z: FloatArray) -> FloatArray:
        """Log minutes at normal scores `z` (samples × sessions), interpolated, tails extended linearly."""
        return self._log_quantile_at(np.arange(len(self._y))[None, :], z)

    def _log_quantile_at(self, sessions: npt.NDArray[np.intp], z: FloatArray) -> FloatArray:
        """log_quantile of the given sessions (an index array broadcast against z) at normal scores z."""
        # Gathers of single grid points: whole grids for thousands of draws would be tens of megabytes.
        grid, y = self._z, self._y
        upper = np.clip(np.searchsorted(grid, z), 1, len(grid) - 1)
        z0, z1 = grid[upper - 1], grid[upper]
        y0, y1 = y[sessions, upper - 1], y[sessions, upper]
        inner = y0 + (z - z0) / (z1 - z0) * (y1 - y0)
        below = y[sessions, 0] + self._low_slope[sessions] * (z - grid[0])
        above = y[sessions, -1] + self._high_slope[sessions] * (z - grid[-1])
        return np.asarray(np.where(z < grid[0], below, np.where(z > grid[-1], above, inner)), dtype=np.float64)

    def normal_score(self, session: int, minutes: float) -> float:
        """The normal score of a duration for one session: Phi of it is P(D <= minutes)."""
        if minutes <= 0:
            return -math.inf
        logm = math.log(minutes)
        y = self._y[session]
        low, high = float(self._low_slope[session]), float(self._high_slope[session])
        if logm < y[0]:
            return float(self._z[0] + (logm - y[0]) / low) if low > 0 else -math.inf
        if logm > y[-1]:
            return float(self._z[-1] + (logm - y[-1]) / high) if high > 0 else math.inf
        return float(np.interp(logm, y, self._z))

    def remaining(self, elapsed: Sequence[float], u: FloatArray) -> FloatArray:
        """Remaining minutes D - e given D > e per session (columns), one row per uniform draw in (0, 1]."""
        e = np.maximum(np.asarray(elapsed, dtype=np.float64), 0.0)
        # Draw in survival space, P(D > d) = survival(e) * u, so far tails keep their precision.
        score = np.full(len(e), -np.inf)  # nothing elapsed: the whole distribution is still ahead
        for i in np.flatnonzero(e > 0):
            score[i] = self.normal_score(int(i), float(e[i]))
        survival = ndtr(-score)
        u = np.asarray(u, dtype=np.float64)
        out = np.empty(np.broadcast_shapes(u.shape, e.shape))
        # Column blocks bound the (draws x sessions) temporaries of long lines; every value is computed alone.
        for start in range(0, len(e), _BLOCK):
            block = slice(start, start + _BLOCK)
            u_block = u[:, block] if u.shape[1] > 1 else u
            out[:, block] = self._remaining_block(block, e[block], survival[block], u_block)
        return out

    def draw(self, sessions: npt.NDArray[np.intp], u: FloatArray) -> FloatArray:
        """Whole session lengths (nothing elapsed) of the given sessions (any shape), one per uniform in (0, 1]."""
        z = -ndtri(np.asarray(u, dtype=np.float64))  # as remaining() with no time elapsed: survival 1
        length = np.exp(self._log_quantile_at(sessions, z))
        fixed = np.maximum(np.exp(self._y[sessions, 0]), MIN_REMAINING_MINUTES)
        return np.asarray(np.where(self.fixed[sessions], fixed, length), dtype=np.float64)

    def survival(self, sessions: npt.NDArray[np.intp], minutes: FloatArray) -> FloatArray:
        """P(D > minutes) of the given sessions (one row of `minutes` each), all at once; fixed grids are steps."""
        y, z = self._y[sessions], self._z
        rows, points = y.shape
        minutes = np.asarray(minutes, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logm = np.log(np.maximum(minutes, 0.0))  # -inf at zero: nothing is shorter than that
        # One search for every row: each row is moved into a range of the number line of its own (clipped queries
        # stay in their row's range), so a flat searchsorted finds each value's grid interval in its own row.
        first, last = y[:, :1], y[:, -1:]
        span = float(np.max(last - first, initial=0.0)) + 2.0
        shift = np.arange(rows, dtype=np.float64)[:, None] * span
        flat = (y - first + shift).ravel()
        query = np.clip(logm - first, -1.0, span - 1.0) + shift
        offsets = (np.arange(rows) * points)[:, None]
        pos = np.searchsorted(flat, query.ravel(), side="right").reshape(query.shape) - offsets
        upper = np.clip(pos, 1, points - 1)
        row = np.arange(rows)[:, None]
        y0, y1 = y[row, upper - 1], y[row, upper]
        with np.errstate(divide="ignore", invalid="ignore"):
            # Clipped: shifted values lose the last bits, so a value may land one tied grid point off.
            frac = np.clip((logm - y0) / (y1 - y0), 0.0, 1.0)
            inner = z[upper - 1] + frac * (z[upper] - z[upper - 1])
            low, high = self._low_slope[sessions][:, None], self._high_slope[sessions][:, None]
            below = np.where(low > 0, z[0] + (logm - first) / low, -np.inf)
            above = np.where(high > 0, z[-1] + (logm - last) / high, np.inf)
        score = np.where(pos <= 0, below, np.where(pos >= points, above, inner))
        score = np.where(np.isneginf(logm), -np.inf, score)
        steps = minutes < np.exp(first)
        return np.asarray(np.where(self.fixed[sessions][:, None], steps, ndtr(-score)), dtype=np.float64)

    def conditional_remaining(self, sessions: npt.NDArray[np.intp], elapsed: FloatArray, u: FloatArray) -> FloatArray:
        """remaining() for many sessions (rows) at the same uniforms u (columns), without a loop over sessions."""
        e = np.maximum(np.asarray(elapsed, dtype=np.float64), 0.0)
        alive = self.survival(sessions, e[:, None])[:, 0]
        z = -ndtri(np.maximum(alive[:, None] * u[None, :], np.finfo(np.float64).tiny))
        left = np.maximum(np.exp(self._log_quantile_at(sessions[:, None], z)) - e[:, None], 0.0)
        fixed_left = np.maximum(np.exp(self._y[sessions, 0]) - e, MIN_REMAINING_MINUTES)[:, None]
        left = np.where(alive[:, None] > 0, left, MIN_REMAINING_MINUTES)
        return np.asarray(np.where(self.fixed[sessions][:, None], fixed_left, left), dtype=np.float64)

    def _remaining_block(self, block: slice, e: FloatArray, survival: FloatArray, u: FloatArray) -> FloatArray:
        """remaining() for the sessions of one column block."""
        z = -ndtri(np.maximum(survival * u, np.finfo(np.float64).tiny))
        sessions = np.arange(len(self._y))[block][None, :]
        left = np.maximum(np.exp(self._log_quantile_at(sessions, z)) - e, 0.0)
        fixed_left = np.maximum(np.exp(self._y[block, 0]) - e, MIN_REMAINING_MINUTES)
        left = np.where(self.fixed[block], fixed_left, np.where(survival > 0, left, MIN_REMAINING_MINUTES))
        return np.asarray(left, dtype=np.float64)


def _grid_matrix(grids: Sequence[Sequence[float]], points: int = 99) -> FloatArray:
    """Quantile grids as rows of `points` columns; grids of another length are resampled."""
    if all(len(g) == points for g in grids):
        return np.array(grids, dtype=np.float64).reshape(len(grids), points)
    return np.array([_regrid(g, points) for g in grids], dtype=np.float64)


def _regrid(quantiles: Sequence[float], points: int = 99) -> FloatArray:
    values = np.asarray(quantiles, dtype=np.float64)
    if len(values) == points:
        return values
    if len(values) == 1:
        return np.full(points, values[0])
    given = np.arange(1, len(values) + 1) / (len(values) + 1)
    return np.asarray(np.interp(np.arange(1, points + 1) / (points + 1), given, values), dtype=np.float64)


class DurationDistribution:
    """One session's length distribution (see DurationGrids)."""

    def __init__(self, quantiles: Sequence[float]) -> None:
        """From an evenly spaced quantile grid."""
        self._grids = DurationGrids([quantiles])

    def quantile(self, p: float) -> float:
        """Minutes not exceeded with probability p."""
        return float(np.exp(self._grids.log_quantile(np.array([[ndtri(p)]])))[0, 0])

    def remaining(self, elapsed: float, u: FloatArray) -> FloatArray:
        """Remaining minutes D - e given D > e, one per uniform draw in (0, 1]."""
        return self._grids.remaining([elapsed], np.asarray(u, dtype=np.float64)[:, None])[:, 0]

    def expected_remaining(self, elapsed: float, points: int = 400) -> float:
        """E[D - e | D > e] by the midpoint rule over the conditional distribution's probabilities."""
        return float(self.remaining(elapsed, (np.arange(points) + 0.5) / points).mean())
