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

Future arrivals (express only). Under express a customer who arrives later with a shorter predicted session is
served first, so the line as it stands understates the wait of anyone who can be overtaken. Given an
`ArrivalForecast` (estimated by `forecast_arrivals` from the store's recent arrivals, never from the clock or a
simulator's truth), each projection also draws a Poisson stream of future customers: the rate from the recent
arrivals (drawn per projection from its gamma posterior, so the interval carries the rate's own uncertainty),
each newcomer's needs and duration distribution resampled from recent customers' predictions. Newcomers join
the line when they arrive, take a free room that fits them at once (as `engine.admit` does), earn passes and
become due under the aging cap like everyone else. Under FIFO nobody who arrives later is ever served before a
customer already waiting (a room that fits no one waiting is the only one a newcomer can take, and it can never
become one that does), so FIFO projections ignore the forecast and are exactly the line's.

Large floors (FIFO). Simulating costs draws × (rooms + waiting). Above EXACT_SESSIONS sessions `project` answers
each customer a pool model covers from it instead (see `Pools` and `PoolModel`): a renewal / central-limit model
of how many rooms free by each time, made from samples of the floor of a fixed size, so one customer's estimate
(`estimate_wait`) costs the same on ten thousand rooms as on a hundred and the whole line about 5 µs a customer.
Customers no pool model covers (behind someone whose rooms only partly overlap theirs, or in a pool of fewer than
POOL_ROOMS rooms) and every floor under express are still simulated.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.signal import fftconvolve, lfilter
from scipy.special import ndtr, ndtri

from fitting_room.engine import (
    MIN_REMAINING_MINUTES,
    Floor,
    Room,
    Rules,
    Session,
    SessionStatus,
    aging_due,
    expected_duration,
    expected_remaining,
    fits,
    list_schedule,
    minutes_between,
    promotion_order,
)
from fitting_room.settings import Policy

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
# The arrival rate is measured over the last hour: the store's traffic changes by the hour (the simulator's
# and most shops' hourly profiles), so a longer window lags the afternoon rush and a shorter one is noise.
RATE_WINDOW = timedelta(hours=1)
# Future customers' needs and durations are resampled from this many most recent customers: the basket mix
# drifts slowly, so a hundred customers describe it better than the dozen of the rate window.
MIX_SIZE = 100
# Future arrivals are drawn in blocks of at least this many per projection, more for the draws that run out of
# them before everyone now waiting is seated. The cost grows with the square of line plus newcomers, so a draw
# stops at _MAX_ARRIVALS newcomers: beyond, the last of a very long line would not see later ones overtake.
_MIN_ARRIVALS = 8
_MAX_ARRIVALS = 1024


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


@dataclass(frozen=True)
class PastArrival:
    """A customer who arrived at the kiosk: when, what they needed and the duration predicted for them."""

    arrived_at: datetime
    item_count: int
    needs_accessible: bool
    median: float
    quantiles: tuple[float, ...]

    @classmethod
    def of(cls, session: Session) -> PastArrival:
        """The arrival record of a session (waiting, seated, completed or cancelled alike)."""
        return cls(
            arrived_at=session.arrived_at,
            item_count=session.item_count,
            needs_accessible=session.needs_accessible,
            median=session.prediction.median,
            quantiles=tuple(session.prediction.quantiles),
        )

    def _order(self) -> tuple[datetime, float, int, bool, tuple[float, ...]]:
        # A total order on what was observed (never on session ids, which differ between replays of one day).
        return (self.arrived_at, self.median, self.item_count, self.needs_accessible, self.quantiles)


@dataclass(frozen=True)
class ArrivalForecast:
    """Who is expected to arrive: a Poisson rate known as `events` arrivals in `exposure` minutes, and a mix.

    The rate's posterior is gamma(events, exposure), mean `rate`; newcomers are drawn from `mix` with replacement.
    """

    events: int
    exposure: float
    mix: tuple[PastArrival, ...]

    @property
    def rate(self) -> float:
        """Expected arrivals per minute."""
        return self.events / self.exposure


def forecast_arrivals(
    history: Iterable[PastArrival],
    now: datetime,
    window: timedelta = RATE_WINDOW,
    mix_size: int = MIX_SIZE,
) -> ArrivalForecast | None:
    """The arrival process as of `now` from the store's past arrivals; None when they cannot tell (fresh store).

    Rate: the k arrivals of the last `window` strictly before `now`, counted from the oldest of them: k - 1
    arrivals in now - t_oldest minutes. Counting from the oldest arrival instead of the window's start keeps the
    first hour of a day (or of a fresh store) from reading as a quiet hour; over a full window it equals k / window
    up to O(1/k). An arrival at exactly `now` is left out: a projection made because someone just arrived would
    otherwise always count one more. Mix: the `mix_size` latest arrivals up to and including `now`; the rate
    counts only among them too.
    """
    # Only the `mix_size` latest count, for the rate too: a caller (the service's query) that passes just those
    # gets the same forecast as one that passes the whole day. A busy hour then gives a k-nearest estimate.
    known = sorted((a for a in history if a.arrived_at <= now), key=PastArrival._order, reverse=True)[:mix_size]
    since = now - window
    recent = [a.arrived_at for a in known if since <= a.arrived_at < now]
    if len(recent) < 2:
        return None
    exposure = minutes_between(recent[-1], now)
    return ArrivalForecast(events=len(recent) - 1, exposure=exposure, mix=tuple(known))


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


def project(
    floor: Floor,
    now: datetime,
    rules: Rules,
    samples: int = SAMPLES,
    level: float = WAIT_LEVEL,
    seed: int = SEED,
    arrivals: ArrivalForecast | None = None,
    pools: Pools | None = None,
) -> Projection:
    """Expected wait and a central `level` interval for every waiting customer, projected from `now`.

    Under express, `arrivals` adds the customers expected to arrive while the line waits (see the module's
    docstring); without it, or under FIFO, only the customers on the floor are projected. Small floors, and every
    floor under express, are projected by simulation (`project_exactly`); on a large FIFO floor the customers a pool
    model covers get its estimate (see `PoolModel`), the others the simulation's. `pools`, made for this floor and
    moment, lends the pool models it already has.
    """
    if not uses_pools(floor, rules):
        return project_exactly(floor, now, rules, samples, level, seed, arrivals)
    pools = pools if pools is not None and pools.level == level else Pools(floor, now, level)
    waits: dict[str, float] = {}
    intervals: dict[str, WaitInterval] = {}
    by_pattern: dict[Pattern, list[tuple[str, int]]] = {}
    uncovered = False
    for session_id, spot in pools.spots(floor).items():
        if spot is None:
            uncovered = True
        else:
            by_pattern.setdefault(spot[0], []).append((session_id, spot[1]))
    for pattern, members in by_pattern.items():
        model = pools.model(floor, pattern)
        means, lows, highs = model.summary(np.array([k for _, k in members], dtype=np.float64))
        for (session_id, _), mean, low, high in zip(members, means, lows, highs, strict=True):
            waits[session_id] = float(mean)
            intervals[session_id] = WaitInterval(float(low), float(high), level)
    if not uncovered:
        return Projection(waits=waits, intervals=intervals, room_free_in=expected_free_in(floor, now))
    # Customers behind someone whose rooms only partly overlap theirs compete in ways one pool cannot tell, and a
    # pool of few rooms is no sum of many: the simulation answers for them (and for the rooms, as it runs anyway).
    exact = project_exactly(floor, now, rules, samples, level, seed, arrivals)
    waits = {sid: waits.get(sid, w) for sid, w in exact.waits.items()}
    intervals = {sid: intervals.get(sid, i) for sid, i in exact.intervals.items()}
    return Projection(waits=waits, intervals=intervals, room_free_in=exact.room_free_in)


def estimate_wait(
    floor: Floor,
    session_id: str,
    now: datetime,
    rules: Rules,
    level: float = WAIT_LEVEL,
    pools: Pools | None = None,
) -> tuple[float, WaitInterval] | None:
    """One waiting customer's wait from a pool model, None when only `project` can tell (then it costs the floor).

    The answer is the one `project` gives the same customer on the same floor at the same moment. `pools`, made
    for this floor and moment, keeps pool models for the next customer asked about.
    """
    if not uses_pools(floor, rules):
        return None
    pools = pools if pools is not None and pools.level == level else Pools(floor, now, level)
    spot = pools.spot(floor, session_id)
    if spot is None:
        return None
    means, lows, highs = pools.model(floor, spot[0]).summary(np.array([spot[1]], dtype=np.float64))
    return float(means[0]), WaitInterval(float(lows[0]), float(highs[0]), level)


def project_exactly(
    floor: Floor,
    now: datetime,
    rules: Rules,
    samples: int = SAMPLES,
    level: float = WAIT_LEVEL,
    seed: int = SEED,
    arrivals: ArrivalForecast | None = None,
) -> Projection:
    """`project` by simulating the whole floor `samples` times, whatever its size (see the module's docstring)."""
    room_ids = sorted(floor.rooms)
    occupants = [_occupant(floor, room_id) for room_id in room_ids]
    waiting = floor.waitlist()  # arrival order: column j is the j-th longest waiting customer
    sessions: list[Session] = [o for o in occupants if o is not None] + waiting
    elapsed = [minutes_between(o.assigned_at, now) for o in occupants if o is not None and o.assigned_at]
    rng = np.random.default_rng(seed)
    draws = 1.0 - rng.random((samples, len(sessions)))
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
    if arrivals is not None and arrivals.events > 0 and rules.policy is Policy.EXPRESS:
        waits = _run_line_with_arrivals(floor, now, rules, room_ids, free, lengths, arrivals, rng)
        return _summarise(waiting, waits, level, room_free_in)
    needs_class, class_fit = _needs_classes(floor, room_ids, waiting)
    order = promotion_order(waiting, rules, aging_due(floor, now, rules))
    rank = {s.session_id: i for i, s in enumerate(order)}
    keys = np.array([rank[s.session_id] for s in waiting], dtype=np.float64)
    passes = np.array([s.passed_over for s in waiting], dtype=np.int64)
    if _served_in_arrival_order(keys, passes, rules.max_passes):
        waits = _run_line_in_order(free, lengths, needs_class, class_fit)
    else:
        waits = _run_line(free, lengths, class_fit[:, needs_class], keys, passes, rules.max_passes)
    return _summarise(waiting, waits, level, room_free_in)


def _summarise(
    waiting: Sequence[Session], waits: FloatArray, level: float, room_free_in: dict[str, float]
) -> Projection:
    """Mean and central interval of each waiting customer's projected waits (columns in arrival order)."""
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


def _run_line_with_arrivals(
    floor: Floor,
    now: datetime,
    rules: Rules,
    room_ids: Sequence[str],
    free: FloatArray,
    lengths: FloatArray,
    forecast: ArrivalForecast,
    rng: np.random.Generator,
) -> FloatArray:
    """Express with the forecast's newcomers: minutes until each customer waiting now is seated (columns)."""
    waiting = floor.waitlist()
    n, q = lengths.shape
    mix = forecast.mix
    needs = sorted(
        {(s.item_count, s.needs_accessible) for s in waiting} | {(a.item_count, a.needs_accessible) for a in mix}
    )
    index = {need: c for c, need in enumerate(needs)}
    specs = [floor.rooms[room_id].spec for room_id in room_ids]
    class_fit = np.array([[fits(spec, *need) for need in needs] for spec in specs], dtype=bool).reshape(
        len(specs), len(needs)
    )
    waiting_class = np.array([index[(s.item_count, s.needs_accessible)] for s in waiting], dtype=np.intp)
    mix_class = np.array([index[(a.item_count, a.needs_accessible)] for a in mix], dtype=np.intp)
    mix_median = np.array([a.median for a in mix], dtype=np.float64)
    grids = DurationGrids([a.quantiles for a in mix])

    # The aging cap's reference, a FIFO newcomer's expected wait, as it is now for each kind of needs. The
    # engine recomputes it at every event; on a line that neither builds up nor drains it stays near today's value.
    fifo = replace(rules, policy=Policy.FIFO)
    plan = list_schedule(floor, now, promotion_order(waiting, fifo), expected_remaining, expected_duration)
    join_wait = np.array(
        [
            min(
                (plan.free_after[room_id] for room_id, spec in zip(room_ids, specs, strict=True) if fits(spec, *need)),
                default=math.inf,
            )
            for need in needs
        ]
    )
    aging = rules.express_aging
    if aging is None:
        waiting_due: FloatArray = np.full(q, math.inf)
        mix_due: FloatArray = np.full(len(mix), math.inf)
    else:
        due_now = aging_due(floor, now, rules)
        waited = np.array([minutes_between(s.arrived_at, now) for s in waiting])
        later = np.maximum(aging * join_wait[waiting_class] - waited, 0.0)
        waiting_due = np.asarray(np.where([s.session_id in due_now for s in waiting], -math.inf, later), np.float64)
        mix_due = np.asarray(aging * join_wait[mix_class], dtype=np.float64)  # minutes after their own arrival

    # Newcomers matter until the last customer waiting now is seated: about when FIFO would seat them plus,
    # under the aging cap, the longest anyone may be overtaken. Too few is detected below and extended.
    last_start = max(plan.starts.values(), default=0.0)
    mean_length = float(np.mean([_mean_length(a.quantiles) for a in mix]))
    finite = join_wait[np.isfinite(join_wait)]
    overtaking = aging * float(finite.max()) if aging is not None and finite.size else 3.0 * (last_start + mean_length)
    expected = forecast.rate * (last_start + overtaking + mean_length)
    block = min(math.ceil(expected + 3.0 * math.sqrt(expected)) + _MIN_ARRIVALS, _MAX_ARRIVALS)

    # Each draw of the projection has its own rate from the posterior: the interval carries the rate's uncertainty.
    rates = np.asarray(rng.gamma(forecast.events, 1.0 / forecast.exposure, n), dtype=np.float64)
    arrive = np.zeros((n, 0))
    picks = np.zeros((n, 0), dtype=np.intp)
    arrival_lengths = np.zeros((n, 0))
    last: FloatArray = np.zeros(n)
    seated_at = np.full((n, q), np.nan)
    rows = np.arange(n)  # the draws still to (re)run
    medians = np.array([s.prediction.median for s in waiting], dtype=np.float64)
    passes = np.array([s.passed_over for s in waiting], dtype=np.int64)
    while True:
        times = last[:, None] + np.cumsum(rng.exponential(1.0, (n, block)), axis=1) / rates[:, None]
        pick = rng.integers(0, len(mix), (n, block))
        drawn = grids.draw(pick, 1.0 - rng.random((n, block)))
        arrive, picks = np.hstack([arrive, times]), np.hstack([picks, pick])
        arrival_lengths = np.hstack([arrival_lengths, drawn])
        last = arrive[:, -1]
        m = len(rows)
        seated_at[rows] = _run_arriving_line(
            free[rows],
            np.hstack([lengths[rows], arrival_lengths[rows]]),
            np.hstack([np.zeros((m, q)), arrive[rows]]),
            np.hstack([np.broadcast_to(waiting_class, (m, q)), mix_class[picks[rows]]]),
            class_fit,
            np.hstack([np.broadcast_to(medians, (m, q)), mix_median[picks[rows]]]),
            np.hstack([np.broadcast_to(waiting_due, (m, q)), arrive[rows] + mix_due[picks[rows]]]),
            np.hstack([np.broadcast_to(passes, (m, q)), np.zeros((m, arrive.shape[1]), dtype=np.int64)]),
            rules.max_passes,
            q,
        )
        # A draw whose last newcomer came before everyone waiting now was seated ran out of newcomers: run it
        # again with more. The others are final, as newcomers arriving later cannot change what came before.
        short = last[rows] < np.nanmax(seated_at[rows], axis=1, initial=0.0)
        if not short.any() or arrive.shape[1] >= _MAX_ARRIVALS:
            break
        rows = rows[short]
        block = min(arrive.shape[1], _MAX_ARRIVALS - arrive.shape[1])
    horizon = np.nanmax(seated_at, axis=1, keepdims=True, initial=0.0)
    return np.asarray(np.where(np.isnan(seated_at), horizon, seated_at), dtype=np.float64)


def _mean_length(quantiles: Sequence[float]) -> float:
    """Mean session length over an evenly spaced quantile grid, as engine.expected_duration."""
    return sum(quantiles) / len(quantiles)


def _run_arriving_line(
    free: FloatArray,
    lengths: FloatArray,
    arrive: FloatArray,
    need: npt.NDArray[np.intp],
    class_fit: npt.NDArray[np.bool_],
    key: FloatArray,
    due_at: FloatArray,
    passes: npt.NDArray[np.int64],
    max_passes: int,
    current: int,
) -> FloatArray:
    """_run_line with customers who join later; minutes until each of the first `current` columns is seated.

    Every array is samples × customers, customers in arrival order in every sample: the first `current` wait now
    (`arrive` 0), the others arrive `arrive` minutes from now. A freed room goes to the customer already arrived
    it fits with the lowest promotion key: held (passed over `max_passes` times) first, then due (from `due_at` on),
    both in arrival order, then by `key` (the predicted median). A free room that fits nobody who has arrived waits
    for the next newcomer it fits, who takes it on arrival as engine.admit would. Customers not yet seated when
    everyone of the first `current` is are never looked at again.
    """
    n, cols = lengths.shape
    ids = np.arange(n)  # the sample each row simulates: rows of finished samples are dropped now and then
    free = free.copy()
    # Someone no room fits any more (rooms removed from the rooms file) keeps the projection horizon.
    waiting = np.asarray(class_fit.any(axis=0), dtype=bool)[need]
    seated_at = np.full((n, current), np.nan)
    passed = passes.astype(np.int64)
    order = np.arange(cols, dtype=np.float64)
    held_key, due_key = order - 2.0 * cols, order - 1.0 * cols
    # Columns are in arrival order in every sample, so the earliest arrival of each column never decreases:
    # columns past the latest room event's time have arrived in no sample and are left out of the round.
    earliest = arrive.min(axis=0, initial=np.inf)
    # Every round seats one customer or moves an idle room on to a later arrival (or for ever): it ends.
    while True:
        rows = np.arange(len(ids))
        room = free.argmin(axis=1)
        t = free[rows, room]
        live = np.isfinite(t) & waiting[:, :current].any(axis=1)
        if not live.any():
            break
        if live.sum() < 0.75 * len(ids):
            # Drop finished samples once a quarter of the rows are: rounds then cost what the live ones need.
            keep = np.flatnonzero(live)
            ids, free, waiting, passed = ids[keep], free[keep], waiting[keep], passed[keep]
            lengths, arrive, need, key, due_at = lengths[keep], arrive[keep], need[keep], key[keep], due_at[keep]
            room, t, live = room[keep], t[keep], live[keep]
            rows = np.arange(len(ids))
            earliest = arrive.min(axis=0, initial=np.inf)
        p = max(int(np.searchsorted(earliest, t[live].max(), side="right")), current)
        now_t = t[:, None]
        fitting = waiting[:, :p] & class_fit[room[:, None], need[:, :p]]
        candidates = fitting & (arrive[:, :p] <= now_t) & live[:, None]
        has = candidates.any(axis=1)
        rank = np.where(
            passed[:, :p] >= max_passes,
            held_key[:p],
            np.where(due_at[:, :p] <= now_t, due_key[:p], key[:, :p]),
        )
        chosen = np.where(candidates, rank, np.inf).argmin(axis=1)
        first = candidates.argmax(axis=1)  # the longest-waiting customer it fits: passed over if not chosen
        h = np.flatnonzero(has)
        j, r, when = chosen[h], room[h], t[h]
        mine = j < current
        seated_at[ids[h[mine]], j[mine]] = when[mine]
        waiting[h, j] = False
        free[h, r] = when + lengths[h, j]
        over = np.flatnonzero(has & (first != chosen))
        passed[over, first[over]] += 1
        idle = np.flatnonzero(live & ~has)
        if len(idle):
            # A room nobody who has arrived fits is free until the next newcomer it fits (or for ever).
            ahead = waiting[idle] & class_fit[room[idle, None], need[idle]] & (arrive[idle] > t[idle, None])
            free[idle, room[idle]] = np.where(ahead, arrive[idle], np.inf).min(axis=1, initial=np.inf)
    return seated_at


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


# Large floors. Simulating a line costs draws × (rooms + waiting): seconds at ten thousand rooms and customers, and
# a read of one customer's wait would pay for the whole floor. Under FIFO a customer's wait depends only on the
# customers ahead of them and the rooms they fit, and on a large floor the number of rooms freed by a given time is
# a sum over many rooms: close to normal, with a mean and variance that renewal theory gives from a sample of the
# rooms and of the line. A pool model computes those once per kind of customer (`Pattern`), in a time that does not
# grow with the floor, and reads any customer's wait from it by their place in line.

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

    def __init__(self, floor: Floor, now: datetime, level: float = WAIT_LEVEL) -> None:
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
        return cls.build(
            [o.prediction.quantiles for o in occupants],
            np.array(elapsed, dtype=np.float64),
            np.array(room_weights, dtype=np.float64),
            np.array(strata, dtype=np.intp),
            idle,
            [s.prediction.quantiles for s in line],
            np.array(line_weights, dtype=np.float64),
            mean_length,
            waiting,
            level,
        )

    @classmethod
    def build(
        cls,
        occupant_grids: Sequence[Sequence[float]],
        elapsed: FloatArray,
        room_weights: FloatArray,
        kinds: npt.NDArray[np.intp],
        idle: float,
        line_grids: Sequence[Sequence[float]],
        line_weights: FloatArray,
        mean_length: float,
        last: int,
        level: float,
    ) -> PoolModel:
        """A pool model: seated rooms (each standing for `room_weights` rooms), `idle` free ones, the line's sample.

        Rooms of one kind (equal `kinds`) are consecutive and in order of expected end, an evenly spaced sample of
        that kind. `mean_length` is the line's mean expected session length and `last` the number waiting (the
        grid reaches past the last one's wait).
        """
        rooms = _RoomsAhead(occupant_grids, elapsed, room_weights, kinds, idle)
        mix = _LineMix(line_grids, line_weights, mean_length)
        pool = room_weights.sum() + idle
        sessions = len(occupant_grids) + len(line_grids)
        # A coarse grid over a generous horizon finds when the last customer's wait surely ends; the fine grid then
        # spans just that (its steps set how finely chains of sessions are timed).
        # The coarse grid needs only the mean: the count's spread stays well under the square root of the count
        # (a renewal count's variance is about its mean times the lengths' squared coefficient of variation), so
        # the highest quantile read is reached by the time the mean passes the last place by a few such roots.
        goal = last - 0.5 + 3.0 * math.sqrt(last) + 3.0
        horizon = rooms.longest() + (last / pool + 1.0) * mean_length * 1.5 + 1.0
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
        rows = np.arange(len(grids))
        durations = DurationGrids(grids)
        # Gauss-Hermite nodes in normal-score space: a length is exp of a near-linear function of a normal score,
        # so these few atoms keep its mean and spread (evenly spaced probabilities lose the tails: 0.5% of the mean
        # at sigma 0.4, which a line ten rounds deep adds up). As project_exactly draws them: fixed lengths stay.
        self.atoms = durations.draw(np.broadcast_to(rows[:, None], (len(grids), len(_NODES))), _NODE_U[None, :])
        self._weights = (weights / weights.sum())[:, None] * _NODE_WEIGHTS[None, :]
        self._weights = self._weights.ravel()
        # Means over the quantile grids, as the floor's exact sum of the line's expected lengths counts them.
        means = np.maximum(np.exp(durations._y).mean(axis=1), _SHORTEST)
        mean = max(mean_length, _SHORTEST)
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
    squares = (w[::step] * (w.sum() / max(w[::step].sum(), _SHORTEST))) @ (alone**2) + rooms.idle * uc_total**2
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
    seated = [(room_id, o) for room_id in room_ids if (o := _occupant(floor, room_id)) is not None]
    if seated:
        grids = DurationGrids([o.prediction.quantiles for _, o in seated])
        elapsed = np.array([minutes_between(o.assigned_at, now) for _, o in seated if o.assigned_at is not None])
        u = (np.arange(_FREE_POINTS) + 0.5) / _FREE_POINTS
        left = grids.conditional_remaining(np.arange(len(seated)), elapsed, u).mean(axis=1)
        free_in.update((room_id, float(m)) for (room_id, _), m in zip(seated, left, strict=True))
    return free_in
