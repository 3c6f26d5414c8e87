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
# Sessions per block of draws computed at once (bounds temporaries to a few MB per array).
_BLOCK = 1024
# Above this many rooms the earliest-free room comes from a tournament tree instead of a scan.
_TREE_ROOMS = 32


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
        logq = np.log(np.maximum(_grid_matrix(grids), _SHORTEST))
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
        return self._log_quantile_block(slice(None), z)

    def _log_quantile_block(self, block: slice, z: FloatArray) -> FloatArray:
        """log_quantile for the sessions of one column block (z has one column per session in it)."""
        grid, y = self._z, self._y[block]
        upper = np.clip(np.searchsorted(grid, z), 1, len(grid) - 1)
        cols = np.arange(y.shape[0])[None, :]
        z0, z1 = grid[upper - 1], grid[upper]
        y0, y1 = y[cols, upper - 1], y[cols, upper]
        inner = y0 + (z - z0) / (z1 - z0) * (y1 - y0)
        below = y[:, 0] + self._low_slope[block] * (z - grid[0])
        above = y[:, -1] + self._high_slope[block] * (z - grid[-1])
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

    def _remaining_block(self, block: slice, e: FloatArray, survival: FloatArray, u: FloatArray) -> FloatArray:
        """remaining() for the sessions of one column block."""
        z = -ndtri(np.maximum(survival * u, np.finfo(np.float64).tiny))
        left = np.maximum(np.exp(self._log_quantile_block(block, z)) - e, 0.0)
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
    needs_class, class_fit = _needs_classes(floor, room_ids, waiting)
    order = promotion_order(waiting, rules, aging_due(floor, now, rules))
    rank = {s.session_id: i for i, s in enumerate(order)}
    keys = np.array([rank[s.session_id] for s in waiting], dtype=np.float64)
    passes = np.array([s.passed_over for s in waiting], dtype=np.int64)
    if _served_in_arrival_order(keys, passes, rules.max_passes):
        waits = _run_line_in_order(free, lengths, needs_class, class_fit)
    else:
        waits = _run_line(free, lengths, class_fit[:, needs_class], keys, passes, rules.max_passes)
    low, high = np.quantile(waits, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return Projection(
        waits={s.session_id: float(waits[:, j].mean()) for j, s in enumerate(waiting)},
        intervals={s.session_id: WaitInterval(float(low[j]), float(high[j]), level) for j, s in enumerate(waiting)},
        room_free_in=room_free_in,
    )


def _needs_classes(
    floor: Floor, room_ids: Sequence[str], waiting: Sequence[Session]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Class of each waiting customer by (item count, accessibility need), and which rooms fit each class."""
    needs = sorted({(s.item_count, s.needs_accessible) for s in waiting})
    index = {need: c for c, need in enumerate(needs)}
    needs_class = np.array([index[(s.item_count, s.needs_accessible)] for s in waiting], dtype=np.intp)
    specs = [floor.rooms[room_id].spec for room_id in room_ids]
    class_fit = np.array([[fits(spec, count, accessible) for count, accessible in needs] for spec in specs], dtype=bool)
    return needs_class, class_fit.reshape(len(specs), len(needs))


def _served_in_arrival_order(keys: FloatArray, passes: npt.NDArray[np.int64], max_passes: int) -> bool:
    """True when promotion order is arrival order, held customers included: then nobody is ever passed over."""
    held_key = np.arange(len(keys)) - 2.0 * len(keys)
    effective = np.where(passes >= max_passes, held_key, keys)
    return bool(np.all(np.diff(effective) > 0))


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


class _EarliestRoom:
    """Per sample, the room that frees first (lowest index among ties, like argmin); rooms' times change one at a time.

    Few rooms are scanned; many sit in a tournament tree per sample, so a change costs log2(rooms) steps.
    """

    def __init__(self, free: FloatArray, tree: bool) -> None:
        """Track a copy of `free` (samples × rooms, minutes until each room frees)."""
        n, rooms = free.shape
        self._rows = np.arange(n)
        self._tree = tree
        if not tree:
            self.free = free.copy()
            return
        width = 1 << max(rooms - 1, 1).bit_length()
        self.free = np.full((n, width), np.inf)
        self.free[:, :rooms] = free
        # winner[:, node] is the leaf winning node's subtree; leaves (width + i) win as themselves.
        self._winner = np.empty((n, 2 * width), dtype=np.intp)
        self._winner[:, width:] = np.arange(width)
        level = width
        while level > 1:
            nodes = np.arange(level // 2, level)
            self._winner[:, nodes] = self._better(self._winner[:, 2 * nodes], self._winner[:, 2 * nodes + 1])
            level //= 2
        self._width = width
        self._depth = width.bit_length() - 1

    def _better(self, left: npt.NDArray[np.intp], right: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """The winning leaf of each pair: the earlier, the left one on ties (lower index, as argmin)."""
        rows = self._rows[:, None] if left.ndim == 2 else self._rows[: len(left)]
        return np.where(self.free[rows, left] <= self.free[rows, right], left, right)

    def earliest(self) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """(room, minutes until it frees) per sample."""
        room = self._winner[:, 1] if self._tree else self.free.argmin(axis=1)
        return room, self.free[self._rows, room]

    def set(self, rows: npt.NDArray[np.intp], rooms: npt.NDArray[np.intp], times: FloatArray) -> None:
        """Room `rooms[i]` of sample `rows[i]` now frees at `times[i]`."""
        self.free[rows, rooms] = times
        if not self._tree:
            return
        # Flat indices: one-dimensional gathers cost a fraction of two-dimensional ones.
        free, winner = self.free.reshape(-1), self._winner.reshape(-1)
        free_base, winner_base = rows * self._width, rows * (2 * self._width)
        node = winner_base + ((rooms + self._width) >> 1)
        for _ in range(self._depth):
            left, right = winner[2 * node - winner_base], winner[2 * node - winner_base + 1]
            winner[node] = np.where(free[free_base + left] <= free[free_base + right], left, right)
            node = winner_base + ((node - winner_base) >> 1)


def _run_line_in_order(
    free: FloatArray,
    lengths: FloatArray,
    needs_class: npt.NDArray[np.intp],
    class_fit: npt.NDArray[np.bool_],
) -> FloatArray:
    """_run_line when promotion order is arrival order (see _served_in_arrival_order), in every sample at once.

    Then a freed room goes to the longest-waiting customer it fits, nobody is passed over, and within a class
    of equal needs customers are seated in arrival order: each room needs only the head of every class it fits.
    """
    n, q = lengths.shape
    classes = class_fit.shape[1]
    members = np.argsort(needs_class, kind="stable")  # columns grouped by class, arrival order within each
    counts = np.bincount(needs_class, minlength=classes)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    served = np.zeros((n, classes), dtype=np.intp)  # customers of each class seated so far
    # Each class's longest-waiting customer (a column number), inf once the class is empty.
    first = np.where(counts > 0, members[np.minimum(offsets, max(q - 1, 0))], np.inf)
    head = np.tile(first.astype(np.float64), (n, 1))
    left = np.full(n, q)
    clock = _EarliestRoom(free, tree=free.shape[1] > _TREE_ROOMS)
    seated_at = np.full((n, q), np.nan)
    for _ in range(q + free.shape[1]):
        room, t = clock.earliest()
        live = np.flatnonzero(np.isfinite(t) & (left > 0))
        if not len(live):
            break
        room, t = room[live], t[live]
        candidates = np.where(class_fit[room], head[live], np.inf)
        chosen_class = candidates.argmin(axis=1)
        chosen = candidates[np.arange(len(live)), chosen_class]
        has = np.isfinite(chosen)
        # A room nobody left in line fits stays free for the rest of the projection.
        h, c, j = live[has], chosen_class[has], chosen[has].astype(np.intp)
        seated_at[h, j] = t[has]
        left[h] -= 1
        served[h, c] += 1
        following = served[h, c]
        head[h, c] = np.where(following < counts[c], members[offsets[c] + np.minimum(following, counts[c] - 1)], np.inf)
        frees_at = np.full(len(live), np.inf)
        frees_at[has] = t[has] + lengths[h, j]
        clock.set(live, room, frees_at)
    horizon = np.nanmax(seated_at, axis=1, keepdims=True, initial=0.0)
    return np.asarray(np.where(np.isnan(seated_at), horizon, seated_at), dtype=np.float64)
