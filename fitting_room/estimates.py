"""Wait estimates: the floor projected forward many times through the rules the engine promotes with.

Each projection draws every occupant's remaining time from its duration distribution conditioned on the time
already spent in the room (so a session past its median is not "due now") and every waiting customer's
session length from theirs, then hands each room, as it frees, to the first customer in promotion order it
fits, counting passes as the engine does. The estimate is the mean over the draws (the wait that minimises
squared error, not the wait of one "typical" future) and the interval holds the central `level` of them.
The draws come from a fixed seed, so the same floor at the same moment always gives the same answer.

Distributions are the 99-point quantile grids of the predictions, interpolated on the normal-score scale in
log minutes and extended beyond the first and last grid points along the slope of the outer grid points
(a lognormal tail), so conditioning on a long elapsed time still leaves a sensible remaining time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

from fitting_room.engine import (
    MIN_REMAINING_MINUTES,
    Floor,
    Rules,
    Session,
    aging_due,
    fits,
    minutes_between,
    promotion_order,
)

FloatArray = npt.NDArray[np.float64]

WAIT_LEVEL = 0.8
SAMPLES = 512
SEED = 4
# Quantiles below this many minutes are treated as this (a log of zero has no tail to extend).
_SHORTEST = 1e-3
# Grids narrower than this (log minutes) are a fixed duration, with no distribution to condition.
_DEGENERATE = 1e-9
# Grid points on each side used for the slope of the extended tails.
_TAIL_POINTS = 4


@dataclass(frozen=True)
class WaitInterval:
    """A central interval of a projected wait, in minutes."""

    low: float
    high: float
    level: float


@dataclass(frozen=True)
class Projection:
    """Expected minutes until each waiting customer gets a room, its interval, and when rooms free."""

    waits: dict[str, float]
    intervals: dict[str, WaitInterval]
    room_free_in: dict[str, float]


class DurationGrids:
    """Session length distributions of several sessions from their quantile grids, with lognormal tails."""

    def __init__(self, grids: Sequence[Sequence[float]]) -> None:
        """Grid point i (1-based) of n is the quantile at probability i / (n + 1); grids are resampled to 99."""
        logq = np.log(np.maximum(np.array([_regrid(g) for g in grids], dtype=np.float64), _SHORTEST))
        n = logq.shape[1]
        self._z = ndtri(np.arange(1, n + 1) / (n + 1))
        self.fixed = logq[:, -1] - logq[:, 0] < _DEGENERATE
        # A strictly increasing grid keeps the inverse (minutes -> normal score) well defined.
        self._y = np.maximum.accumulate(logq, axis=1) + np.arange(n) * 1e-12
        k = _TAIL_POINTS
        z = self._z
        self._low_slope = np.where(self.fixed, 0.0, (self._y[:, k] - self._y[:, 0]) / (z[k] - z[0]))
        self._high_slope = np.where(self.fixed, 0.0, (self._y[:, -1] - self._y[:, -1 - k]) / (z[-1] - z[-1 - k]))

    def log_quantile(self, z: FloatArray) -> FloatArray:
        """Log minutes at normal scores `z` (samples × sessions), interpolated, tails extended linearly."""
        grid, y = self._z, self._y
        upper = np.clip(np.searchsorted(grid, z), 1, len(grid) - 1)
        cols = np.arange(y.shape[0])[None, :]
        z0, z1 = grid[upper - 1], grid[upper]
        y0, y1 = y[cols, upper - 1], y[cols, upper]
        inner = y0 + (z - z0) / (z1 - z0) * (y1 - y0)
        below = y[:, 0] + self._low_slope * (z - grid[0])
        above = y[:, -1] + self._high_slope * (z - grid[-1])
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
        survival = ndtr(-np.array([self.normal_score(i, float(x)) for i, x in enumerate(e)]))
        z = -ndtri(np.maximum(survival * u, np.finfo(np.float64).tiny))
        left = np.maximum(np.exp(self.log_quantile(z)) - e, 0.0)
        fixed_left = np.maximum(np.exp(self._y[:, 0]) - e, MIN_REMAINING_MINUTES)
        left = np.where(self.fixed, fixed_left, np.where(survival > 0, left, MIN_REMAINING_MINUTES))
        return np.asarray(left, dtype=np.float64)


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


def project(
    floor: Floor,
    now: datetime,
    rules: Rules,
    samples: int = SAMPLES,
    level: float = WAIT_LEVEL,
    seed: int = SEED,
) -> Projection:
    """Expected wait and a central `level` interval for every waiting customer, projected from `now`."""
    room_ids = sorted(floor.rooms)
    occupants = [_occupant(floor, room_id) for room_id in room_ids]
    waiting = floor.waitlist()  # arrival order: column j is the j-th longest waiting customer
    sessions: list[Session] = [o for o in occupants if o is not None] + waiting
    elapsed = [minutes_between(o.assigned_at, now) for o in occupants if o is not None and o.assigned_at]
    draws = 1.0 - np.random.default_rng(seed).random((samples, len(sessions)))
    lengths = np.zeros((samples, 0))
    if sessions:
        grids = DurationGrids([s.prediction.quantiles for s in sessions])
        lengths = grids.remaining(elapsed + [0.0] * len(waiting), draws)
    free = np.zeros((samples, len(room_ids)))
    column = 0
    for r, occupant in enumerate(occupants):
        if occupant is not None:
            free[:, r] = lengths[:, column]
            column += 1
    room_free_in = {room_id: float(free[:, r].mean()) for r, room_id in enumerate(room_ids)}
    if not waiting:
        return Projection(waits={}, intervals={}, room_free_in=room_free_in)
    lengths = lengths[:, column:]
    fit = np.array(
        [[fits(floor.rooms[rid].spec, s.item_count, s.needs_accessible) for s in waiting] for rid in room_ids]
    )
    order = promotion_order(waiting, rules, aging_due(floor, now, rules))
    rank = {s.session_id: i for i, s in enumerate(order)}
    keys = np.array([rank[s.session_id] for s in waiting], dtype=np.float64)
    passes = np.array([s.passed_over for s in waiting])
    waits = _run_line(free, lengths, fit, keys, passes, rules.max_passes)
    low, high = np.quantile(waits, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return Projection(
        waits={s.session_id: float(waits[:, j].mean()) for j, s in enumerate(waiting)},
        intervals={s.session_id: WaitInterval(float(low[j]), float(high[j]), level) for j, s in enumerate(waiting)},
        room_free_in=room_free_in,
    )


def _occupant(floor: Floor, room_id: str) -> Session | None:
    session_id = floor.rooms[room_id].session_id
    session = floor.active.get(session_id) if session_id else None
    return session if session is not None and session.assigned_at is not None else None


def _run_line(
    free: FloatArray,
    lengths: FloatArray,
    fit: npt.NDArray[np.bool_],
    keys: FloatArray,
    passes: npt.NDArray[np.int64],
    max_passes: int,
) -> FloatArray:
    """Seat the line in every sample at once; returns minutes until each customer (column) is seated.

    Columns are in arrival order and `keys` rank them in promotion order. As in the engine, each room as it
    frees goes to the lowest-key waiting customer it fits; the longest-waiting customer it fits is passed
    over when that is someone else, and after `max_passes` the next fitting room is held for them.
    """
    n, q = lengths.shape
    rows = np.arange(n)
    free = free.copy()
    waiting = np.ones((n, q), dtype=bool)
    # A customer no room fits any more (rooms removed from the rooms file) keeps the projection horizon.
    seated_at = np.full((n, q), np.nan)
    key = np.tile(keys, (n, 1))
    held_key = np.arange(q) - 2.0 * q  # held customers come first, in arrival order
    passed = np.tile(passes, (n, 1))
    key[passed >= max_passes] = np.broadcast_to(held_key, (n, q))[passed >= max_passes]
    for _ in range(q + free.shape[1]):
        room = free.argmin(axis=1)
        t = free[rows, room]
        live = np.isfinite(t) & waiting.any(axis=1)
        if not live.any():
            break
        candidates = waiting & fit[room]
        has = candidates.any(axis=1) & live
        # A room nobody left in line fits stays free for the rest of the projection.
        idle = live & ~has
        free[rows[idle], room[idle]] = np.inf
        chosen = np.where(candidates, key, np.inf).argmin(axis=1)
        first = candidates.argmax(axis=1)
        h, j, r = rows[has], chosen[has], room[has]
        seated_at[h, j] = t[has]
        waiting[h, j] = False
        free[h, r] = t[has] + lengths[h, j]
        over = has & (first != chosen)
        o, f = rows[over], first[over]
        passed[o, f] += 1
        held = passed[o, f] >= max_passes
        key[o[held], f[held]] = held_key[f[held]]
    horizon = np.nanmax(seated_at, axis=1, keepdims=True, initial=0.0)
    return np.asarray(np.where(np.isnan(seated_at), horizon, seated_at), dtype=np.float64)
