"""Wait estimates of large FIFO floors from pool models, at a cost that does not grow with the floor.

Simulating a line costs draws × (rooms + waiting): seconds at ten thousand rooms and customers, and a read of
one customer's wait would pay for the whole floor. Under FIFO a customer's wait depends only on the customers
ahead of them and the rooms they fit, and on a large floor the number of rooms freed by a given time is a sum over
many rooms: close to normal, with a mean and variance that renewal theory gives from a sample of the rooms and of
the line. A pool model computes those once per kind of customer (`Pattern`), in a time that does not grow with the
floor, and reads any customer's wait from it by their place in line. `estimates.project` and
`estimates.estimate_wait` decide when a floor is answered this way (`uses_pools`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.signal import fftconvolve, lfilter
from scipy.special import ndtr, ndtri

from fitting_room.duration_grids import SHORTEST_MINUTES, DurationGrids, FloatArray
from fitting_room.engine import Floor, Room, Rules, Session, SessionStatus, minutes_between
from fitting_room.settings import Policy

# Floors with at most this many sessions (seated and waiting) are always simulated: a few milliseconds, exact.
EXACT_SESSIONS = 64
# A pool needs this many rooms: with fewer, the count of rooms freed by a given time is too far from normal.
POOL_ROOMS = 32
# Seated rooms and waiting customers a pool model reads (evenly spaced samples): its cost, whatever the floor's size.
POOL_ROOM_SAMPLE = 256
POOL_LINE_SAMPLE = 128
# Time steps of a pool model, from now to beyond the high end of its last customer's wait; the coarse grid that
# first finds that end.
_POOL_STEPS = 256
_COARSE_STEPS = 64
# Quantile levels averaged for the expected wait (midpoints of equal slices of probability).
_POOL_LEVELS = 64
# Uniforms averaged for a room's expected remaining time on a large floor.
_FREE_POINTS = 32
# Each sampled session of a pool model is _ATOMS lengths at evenly spaced probabilities (a stratified draw).
_ATOMS = 32
# The survival-space uniform of a pool's longest remaining time (1 in 500 rooms run longer).
_LONGEST = 0.002
# Rooms the variance's per-room term is summed over (a subsample of the sampled rooms).
_VARIANCE_ROOMS = 64
# Normal scores and weights of the line's session lengths (probabilists' Gauss-Hermite), as uniforms for draw().
_NODES, _NODE_WEIGHTS = np.polynomial.hermite_e.hermegauss(20)
_NODE_WEIGHTS = _NODE_WEIGHTS / _NODE_WEIGHTS.sum()
_NODE_U = ndtr(-_NODES)

Pattern = frozenset[tuple[bool, int]]  # the kinds of rooms, (accessible, max_items), a customer fits


def uses_pools(floor: Floor, rules: Rules) -> bool:
    """Whether pool models estimate this floor's waits: a large floor served in arrival order (FIFO, nobody held)."""
    return (
        rules.policy is Policy.FIFO and len(floor.active) > EXACT_SESSIONS and not floor.holds_anyone(rules.max_passes)
    )


def _pattern(kinds: Iterable[tuple[bool, int]], need: tuple[int, bool]) -> Pattern:
    return frozenset(kind for kind in kinds if kind[1] >= need[0] and (kind[0] or not need[1]))


class Pools:
    """The pool models of one floor as of one moment, each made when first asked for (see PoolModel).

    A pool is the rooms of one pattern. A pool model covers a waiting customer when the pool has POOL_ROOMS rooms
    or more and everyone ahead of them fits either exactly their rooms or none of them: then a room of the pool goes
    to whoever of its customers waits longest, and the customer is seated at its k-th release, k their place among
    them. Someone ahead whose rooms only partly overlap (a larger basket, an accessibility need) breaks that count.
    """

    def __init__(self, floor: Floor, now: datetime, level: float) -> None:
        """The kinds of rooms and of waiting customers' needs on the floor now."""
        self.now = now
        self.level = level
        self.kinds = floor.room_kinds()
        self.patterns = {need: _pattern(self.kinds, need) for need in floor.line_needs()}
        self._models: dict[Pattern, PoolModel] = {}

    def covers(self, pattern: Pattern) -> bool:
        """Whether a pool of this pattern is large enough for a model."""
        return sum(self.kinds[kind] for kind in pattern) >= POOL_ROOMS

    def spot(self, floor: Floor, session_id: str) -> tuple[Pattern, int] | None:
        """(pattern, place among the pool's customers) of a waiting customer; None when no pool model covers them."""
        session = floor.active.get(session_id)
        if session is None or session.status is not SessionStatus.WAITLISTED:
            return None
        pattern = self.patterns.get((session.item_count, session.needs_accessible))
        if pattern is None or not self.covers(pattern):
            return None
        place = 1
        for need, theirs in self.patterns.items():
            if theirs == pattern:
                place += floor.ahead(session_id, need)
            elif theirs & pattern and floor.ahead(session_id, need):
                return None
        return pattern, place

    def spots(self, floor: Floor) -> dict[str, tuple[Pattern, int] | None]:
        """spot() of every waiting customer, in one pass along the line."""
        covered = {pattern: self.covers(pattern) for pattern in self.patterns.values()}
        placed: Counter[Pattern] = Counter()
        crossed: set[Pattern] = set()  # patterns with someone of an overlapping other pattern ahead from here on
        out: dict[str, tuple[Pattern, int] | None] = {}
        for session in floor.waitlist():
            pattern = self.patterns[(session.item_count, session.needs_accessible)]
            if pattern not in placed:
                crossed.update(other for other in covered if other != pattern and other & pattern)
            placed[pattern] += 1
            fine = covered[pattern] and pattern not in crossed
            out[session.session_id] = (pattern, placed[pattern]) if fine else None
        return out

    def model(self, floor: Floor, pattern: Pattern) -> PoolModel:
        """The pool model of a pattern (made once per Pools)."""
        model = self._models.get(pattern)
        if model is None:
            model = self._models[pattern] = PoolModel.of(floor, pattern, self, self.now, self.level)
        return model


def _allocate(sizes: dict[Any, int], total: int) -> dict[Any, int]:
    """`total` samples shared among groups in proportion to their sizes (largest remainders), one at least each."""
    sizes = {key: n for key, n in sizes.items() if n > 0}
    whole = sum(sizes.values())
    if whole <= total:
        return sizes
    quota = {key: n * total / whole for key, n in sizes.items()}
    share = {key: max(1, math.floor(q)) for key, q in quota.items()}
    for key in sorted(quota, key=lambda k: (share[k] - quota[k], str(k)))[: max(total - sum(share.values()), 0)]:
        share[key] += 1
    return {key: min(n, sizes[key]) for key, n in share.items()}


def _renewal(g: FloatArray) -> FloatArray:
    """u = sum over m >= 0 of g convolved m times (u = delta + g * u), on the grid of g."""
    a = -g.copy()
    a[0] = 1.0 - min(float(g[0]), 0.999)  # durations that round to 0 renew at once: bounded so u stays finite
    impulse = np.zeros(len(g))
    impulse[0] = 1.0
    return np.asarray(lfilter([1.0], a, impulse), dtype=np.float64)


class PoolModel:
    """When the rooms of one pool free, as the mean and variance of how many have freed by each time.

    Each room of the pool frees first when its occupant's remaining time (conditioned on the time already spent)
    runs out and then again after each session it takes; the sessions are those of the pool's line, whose lengths
    are drawn from the line's mix. The rooms' counts are independent, so by renewal theory the count N(t) of
    releases by t has mean n(t) = sum_r (F_r * U)(t) and variance sum_r [(F_r * W)(t) - (F_r * U)(t)^2], F_r the
    room's remaining-time distribution, U the renewal function of the mix and W = 2 U * U - U. The customer k-th in
    the pool is seated when N reaches k: P(wait <= t) = P(N(t) >= k) ~ Phi((n(t) - k + 1/2) / sqrt(v(t))).
    Sums over the rooms come from an evenly spaced sample of them in order of expected end (stratified: it keeps
    the spread of remaining times), the mix from an evenly spaced sample of the line, rescaled to the line's exact
    mean length (which the floor keeps). The variance draws each renewal from the mix rescaled per customer to the
    same mean: which customer follows which is fixed by the line, only their own spread is chance.
    """

    def __init__(self, t: FloatArray, mean: FloatArray, variance: FloatArray, level: float, sessions: int) -> None:
        """From the releases' mean and variance on the time grid `t`; `sessions` the sessions read to make it."""
        self.t = t
        self.mean = mean
        self.variance = variance
        self.sessions = sessions
        self.levels = np.concatenate(
            [(np.arange(_POOL_LEVELS) + 0.5) / _POOL_LEVELS, [(1 - level) / 2, (1 + level) / 2]]
        )
        # h_a(t) = n(t) - z_a sqrt(v(t)) reaches k - 1/2 when P(wait <= t) reaches a; a running maximum (and a
        # ramp far below a customer) keeps it increasing, so each quantile is an interpolation.
        h = mean[None, :] - ndtri(self.levels)[:, None] * np.sqrt(variance)[None, :]
        self._h = np.maximum.accumulate(h, axis=1) + np.arange(len(t)) * 1e-9

    def reaches(self, place: float) -> bool:
        """Whether the grid covers the highest quantile of the wait of the customer at this place."""
        return bool(self._h[:, -1].min() >= place - 0.5)

    def summary(self, places: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Expected wait, low and high end of the interval of the customers at these places in the pool."""
        quantiles = np.array([np.interp(places - 0.5, h, self.t) for h in self._h])
        # The mean along contiguous rows: the same sum whether one customer or the whole line is asked about.
        return np.ascontiguousarray(quantiles[:_POOL_LEVELS].T).mean(axis=1), quantiles[-2], quantiles[-1]

    @classmethod
    def of(cls, floor: Floor, pattern: Pattern, pools: Pools, now: datetime, level: float) -> PoolModel:
        """The pool model of a floor's rooms of this pattern, from samples of its seated rooms and its line."""
        kinds = sorted(pattern)
        seated = {kind: floor.busy_rooms(kind) for kind in kinds}
        # Rooms free now, or whose occupant is not seated yet, free at once (as project_exactly counts them).
        idle = sum(pools.kinds[kind] for kind in kinds) - sum(seated.values())
        rooms: list[Room] = []
        room_weights: list[float] = []
        strata: list[int] = []
        for stratum, (kind, count) in enumerate(_allocate(seated, POOL_ROOM_SAMPLE).items()):
            picked = floor.busy_sample(kind, count)
            rooms += picked
            room_weights += [seated[kind] / len(picked)] * len(picked)  # each stands for its slice of the kind
            strata += [stratum] * len(picked)
        occupants = [floor.active[room.session_id or ""] for room in rooms]
        needs = {need: n for need, n in floor.line_needs().items() if pools.patterns[need] == pattern}
        line: list[Session] = []
        line_weights: list[float] = []
        for need, count in _allocate(needs, POOL_LINE_SAMPLE).items():
            picked_line = floor.line_sample(need, count)
            line += picked_line
            line_weights += [needs[need] / len(picked_line)] * len(picked_line)
        waiting = sum(needs.values())
        mean_length = sum(floor.line_minutes(need) for need in needs) / waiting
        elapsed = [minutes_between(o.assigned_at, now) if o.assigned_at else 0.0 for o in occupants]
        ahead = _RoomsAhead(
            [o.prediction.quantiles for o in occupants],
            np.array(elapsed, dtype=np.float64),
            np.array(room_weights, dtype=np.float64),
            np.array(strata, dtype=np.intp),
            idle,
        )
        mix = _LineMix([s.prediction.quantiles for s in line], np.array(line_weights, dtype=np.float64), mean_length)
        return cls.build(ahead, mix, len(occupants) + len(line), waiting, level)

    @classmethod
    def build(cls, rooms: _RoomsAhead, mix: _LineMix, sessions: int, last: int, level: float) -> PoolModel:
        """A pool model from samples of its seated rooms and of its line (`sessions` sampled in all).

        `last` is the number waiting: the grid reaches past the last one's wait.
        """
        pool = rooms.weights.sum() + rooms.idle
        # A coarse grid over a generous horizon finds when the last customer's wait surely ends; the fine grid then
        # spans just that (its steps set how finely chains of sessions are timed).
        # The coarse grid needs only the mean: the count's spread stays well under the square root of the count
        # (a renewal count's variance is about its mean times the lengths' squared coefficient of variation), so
        # the highest quantile read is reached by the time the mean passes the last place by a few such roots.
        goal = last - 0.5 + 3.0 * math.sqrt(last) + 3.0
        horizon = rooms.longest() + (last / pool + 1.0) * mix.mean_length * 1.5 + 1.0
        while True:
            t, mean, _ = _releases(rooms, mix, horizon, _COARSE_STEPS, spread=False)
            if mean[-1] >= goal or horizon > 1e6:
                break
            horizon *= 2.0  # a rare floor whose line outlasts the first guess
        end = float(np.interp(goal, np.maximum.accumulate(mean) + np.arange(len(t)) * 1e-9, t))
        fine = cls(*_releases(rooms, mix, min(end * 1.1 + 2 * t[1], horizon), _POOL_STEPS), level, sessions)
        return fine if fine.reaches(last) else cls(*_releases(rooms, mix, horizon, _POOL_STEPS), level, sessions)


class _RoomsAhead:
    """The sampled seated rooms of a pool as atoms: each room's remaining time at _ATOMS evenly spaced probabilities."""

    def __init__(
        self,
        grids: Sequence[Sequence[float]],
        elapsed: FloatArray,
        weights: FloatArray,
        kinds: npt.NDArray[np.intp],
        idle: float,
    ) -> None:
        u = (np.arange(_ATOMS) + 0.5) / _ATOMS
        if len(grids):
            rows = np.arange(len(grids))
            left = DurationGrids(grids).conditional_remaining(rows, elapsed, np.append(u, _LONGEST))
            self.atoms, self._longest = left[:, :-1], float(left[:, -1].max())
        else:
            self.atoms, self._longest = np.zeros((0, _ATOMS)), 0.0
        self.weights = weights
        self.kinds = kinds
        self.idle = idle  # rooms free now: they free at 0
        self._atom_weights = np.repeat(weights / _ATOMS, _ATOMS)

    def longest(self) -> float:
        """A remaining time longer than every sampled room's but for 1 in 500."""
        return self._longest

    def freed(self, dt: float, size: int) -> FloatArray:
        """Expected number of the pool's rooms whose first release is at or before each of the grid's times."""
        bins = np.ceil(self.atoms.ravel() / dt).astype(np.int64)  # at or before time i * dt
        keep = bins < size
        counts = np.bincount(bins[keep], self._atom_weights[keep], minlength=size)
        return np.asarray(np.cumsum(counts) + self.idle, dtype=np.float64)

    def masses(self, dt: float, size: int, rows: slice = slice(None)) -> FloatArray:
        """First releases as masses at the nearest of `size` grid times dt apart: of all rooms, or one row per room."""
        if rows == slice(None):
            bins = np.rint(self.atoms.ravel() / dt).astype(np.int64)
            keep = bins < size
            return np.asarray(np.bincount(bins[keep], self._atom_weights[keep], minlength=size), dtype=np.float64)
        atoms = self.atoms[rows]
        bins = np.rint(atoms / dt).astype(np.int64)
        keep = bins < size
        index = np.arange(len(atoms))[:, None] * size + bins
        flat = np.bincount(index[keep], minlength=len(atoms) * size)
        return np.asarray(flat.reshape(len(atoms), size) / _ATOMS, dtype=np.float64)


class _LineMix:
    """Session lengths of a pool's line: atoms of a weighted sample of its customers, rescaled to the line's mean."""

    def __init__(self, grids: Sequence[Sequence[float]], weights: FloatArray, mean_length: float) -> None:
        self.mean_length = mean_length  # the line's mean expected session length, from the floor's exact sum
        rows = np.arange(len(grids))
        durations = DurationGrids(grids)
        # Gauss-Hermite nodes in normal-score space: a length is exp of a near-linear function of a normal score,
        # so these few atoms keep its mean and spread (evenly spaced probabilities lose the tails: 0.5% of the mean
        # at sigma 0.4, which a line ten rounds deep adds up). As project_exactly draws them: fixed lengths stay.
        self.atoms = durations.draw(np.broadcast_to(rows[:, None], (len(grids), len(_NODES))), _NODE_U[None, :])
        self._weights = (weights / weights.sum())[:, None] * _NODE_WEIGHTS[None, :]
        self._weights = self._weights.ravel()
        # Means over the quantile grids, as the floor's exact sum of the line's expected lengths counts them.
        means = np.maximum(durations.grid_means(), SHORTEST_MINUTES)
        mean = max(mean_length, SHORTEST_MINUTES)
        self._scaled = (self.atoms * (mean / float(weights @ means / weights.sum()))).ravel()
        self._common = (self.atoms * (mean / means)[:, None]).ravel()

    def masses(self, dt: float, size: int, common_mean: bool) -> FloatArray:
        """The mix as masses at the nearest grid times; `common_mean` rescales each customer to the line's mean."""
        bins = np.rint((self._common if common_mean else self._scaled) / dt).astype(np.int64)
        keep = bins < size
        return np.asarray(np.bincount(bins[keep], self._weights[keep], minlength=size), dtype=np.float64)


def _releases(
    rooms: _RoomsAhead, mix: _LineMix, horizon: float, steps: int, spread: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Times of a grid of `steps` steps up to `horizon`, and the mean and variance of the pool's releases by each.

    `spread=False` leaves the variance out (zeros): the coarse grid that looks for the horizon needs the mean only.
    """
    size = steps + 1
    dt = horizon / steps
    t = np.arange(size) * dt
    # First releases count exactly at the grid's times. Masses rounded to the nearest grid time feed the renewals,
    # so a chain of sessions is not late by half a step per link.
    f_sum = rooms.masses(dt, size)
    f_sum[0] += rooms.idle
    u = _renewal(mix.masses(dt, size, common_mean=False))
    mean = np.convolve(f_sum, np.cumsum(u))[:size] + rooms.freed(dt, size) - np.cumsum(f_sum)
    if not spread:
        return np.asarray(t, dtype=np.float64), np.asarray(mean, dtype=np.float64), np.zeros(size)
    uc = _renewal(mix.masses(dt, size, common_mean=True))
    uc_total = np.cumsum(uc)
    second = np.cumsum(2.0 * np.convolve(uc, uc)[:size] - uc)
    # The squares need each room alone: every n-th sampled room (still spread over the end times) stands for n.
    w = rooms.weights
    step = max(len(w) // _VARIANCE_ROOMS, 1)
    alone = np.zeros((0, size))
    if len(w):  # a pool whose rooms are all free has none seated
        alone = fftconvolve(rooms.masses(dt, size, slice(None, None, step)), uc_total[None, :], axes=1)[:, :size]
    squares = (w[::step] * (w.sum() / max(w[::step].sum(), SHORTEST_MINUTES))) @ (alone**2) + rooms.idle * uc_total**2
    variance = np.convolve(f_sum, second)[:size] - squares
    # The sample's own error: n(t) sums a sample of the rooms, and a room's count differs from its neighbours' in
    # the order of end times by more than chance alone (two rooms due at the same time may have spreads far
    # apart). That error is as large as the count's own spread on a floor of thousands of rooms, so the interval
    # carries it too: the successive-difference variance of a stratified sample, per kind of room.
    variance += _sample_variance(alone, w[::step], rooms.kinds[::step], np.bincount(rooms.kinds))
    return (
        np.asarray(t, dtype=np.float64),
        np.asarray(mean, dtype=np.float64),
        np.asarray(np.maximum(variance, 0.0), dtype=np.float64),
    )


def _sample_variance(
    counts: FloatArray, weights: FloatArray, kinds: npt.NDArray[np.intp], sampled: npt.NDArray[np.intp]
) -> FloatArray:
    """Variance of a stratified sample's estimate of the pool's expected releases, by successive differences.

    `counts` holds per-room expected releases (rows) of a subsample of the sampled rooms, in order of expected end
    within each kind; each sampled room of a kind stands for `weights` rooms, and `sampled[kind]` were sampled.
    A kind of N rooms sampled n times adds N^2 (1 - n/N) / n times half the mean squared difference of successive
    rows (rooms a few strata apart: a little more than neighbours differ, so the estimate errs on the wide side).
    """
    total = np.zeros(counts.shape[1])
    for kind in np.unique(kinds):
        rows = np.flatnonzero(kinds == kind)
        if len(rows) < 2:
            continue
        weight = float(weights[rows[0]])  # rooms of the kind each sampled room stands for: N / n
        spread = np.mean(np.diff(counts[rows], axis=0) ** 2, axis=0) / 2
        total += weight**2 * int(sampled[kind]) * max(1.0 - 1.0 / weight, 0.0) * spread
    return total


def expected_free_in(floor: Floor, now: datetime) -> dict[str, float]:
    """Expected minutes until each room frees: its seated occupant's expected remaining time, 0 when free."""
    room_ids = sorted(floor.rooms)
    free_in = dict.fromkeys(room_ids, 0.0)
    seated = [(room_id, o) for room_id in room_ids if (o := floor.seated_occupant(room_id)) is not None]
    if seated:
        grids = DurationGrids([o.prediction.quantiles for _, o in seated])
        elapsed = np.array([minutes_between(o.assigned_at, now) for _, o in seated if o.assigned_at is not None])
        u = (np.arange(_FREE_POINTS) + 0.5) / _FREE_POINTS
        left = grids.conditional_remaining(np.arange(len(seated)), elapsed, u).mean(axis=1)
        free_in.update((room_id, float(m)) for (room_id, _), m in zip(seated, left, strict=True))
    return free_in
