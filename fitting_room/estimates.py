"""Wait estimates: the floor projected forward many times through the rules the engine promotes with.

Each projection draws every occupant's remaining time from its duration distribution conditioned on the time
already spent in the room (so a session past its median is not "due now") and every waiting customer's
session length from theirs, then hands each room, as it frees, to the first customer in promotion order it
fits, counting passes as the engine does. The estimate is the mean over the draws (the wait that minimises
squared error, not the wait of one "typical" future) and the interval holds the central `level` of them.
The draws come from a fixed seed, so the same floor at the same moment always gives the same answer.

The distributions are the models' quantile grids with lognormal tails (fitting_room/duration_grids.py).

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

Large floors (FIFO). Simulating costs draws × (rooms + waiting). Above wait_pools.EXACT_SESSIONS sessions
`project` answers each customer a pool model covers from it instead (fitting_room/wait_pools.py): a renewal /
central-limit model of how many rooms free by each time, made from samples of the floor of a fixed size, so one
customer's estimate (`estimate_wait`) costs the same on ten thousand rooms as on a hundred and the whole line about
5 µs a customer. Customers no pool model covers (behind someone whose rooms only partly overlap theirs, or in a pool
of fewer than wait_pools.POOL_ROOMS rooms) and every floor under express are still simulated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from fitting_room.duration_grids import DurationGrids, FloatArray
from fitting_room.engine import (
    Floor,
    Rules,
    Session,
    aging_due,
    expected_duration,
    expected_remaining,
    fits,
    list_schedule,
    minutes_between,
    promotion_order,
)
from fitting_room.settings import Policy
from fitting_room.wait_pools import Pattern, PoolModel, Pools, expected_free_in, uses_pools

WAIT_LEVEL = 0.8
SAMPLES = 512
SEED = 4
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
    pools = _pools_for(floor, now, level, pools)
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
        read = _pool_waits(pools.model(floor, pattern), [place for _, place in members], level)
        for (session_id, _), (wait, interval) in zip(members, read, strict=True):
            waits[session_id] = wait
            intervals[session_id] = interval
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
    pools = _pools_for(floor, now, level, pools)
    spot = pools.spot(floor, session_id)
    if spot is None:
        return None
    return _pool_waits(pools.model(floor, spot[0]), [spot[1]], level)[0]


def _pool_waits(model: PoolModel, places: Sequence[int], level: float) -> list[tuple[float, WaitInterval]]:
    """Expected wait and interval of the customers at these places of a pool model's line."""
    means, lows, highs = model.summary(np.array(places, dtype=np.float64))
    return [
        (float(mean), WaitInterval(float(low), float(high), level))
        for mean, low, high in zip(means, lows, highs, strict=True)
    ]


def _pools_for(floor: Floor, now: datetime, level: float, pools: Pools | None) -> Pools:
    """The pool models lent for this floor and moment when they are at `level`, else new ones."""
    return pools if pools is not None and pools.level == level else Pools(floor, now, level)


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
    occupants = [floor.seated_occupant(room_id) for room_id in room_ids]
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
