"""Wait estimates of large floors: pool models against the simulation, and what one customer's estimate costs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from scipy.special import ndtr

from fitting_room import estimates
from fitting_room.duration_grids import DurationDistribution, DurationGrids
from fitting_room.engine import Floor, Room, RoomSpec, Rules, Session, SessionStatus
from fitting_room.estimates import WAIT_LEVEL, Projection, estimate_wait, project, project_exactly
from fitting_room.settings import Policy
from fitting_room.wait_pools import (
    EXACT_SESSIONS,
    POOL_LINE_SAMPLE,
    POOL_ROOM_SAMPLE,
    Pools,
    expected_free_in,
    uses_pools,
)
from tests.engine_factories import T0, constant_prediction, lognormal_prediction

FIFO = Rules()
# Agreement with the simulation (512 draws) on mid-size floors, per customer: the expected wait, the median and
# both ends of the 80% interval within 0.3 minutes plus 2% of the simulated value (measured on the two floors
# tested: at most 0.26 min), and the pool's intervals holding 72-88% of an independent simulation's draws
# (measured: 0.785-0.790; the simulation's own intervals: 0.798-0.805).
TOLERANCE_MINUTES = 0.3
TOLERANCE_SHARE = 0.02
COVERAGE = (0.72, 0.88)


class CountingDict(dict[str, Any]):
    """A dict that counts the reads of its values (for the work of an estimate, not its time)."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        CountingDict.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.reads += 1
        return super().get(key, default)

    def values(self) -> Any:
        CountingDict.reads += len(self)
        return super().values()

    def items(self) -> Any:
        CountingDict.reads += len(self)
        return super().items()

    def __iter__(self) -> Any:
        CountingDict.reads += len(self)
        return super().__iter__()


def large_floor(
    rooms: int,
    waiting: int,
    seed: int = 0,
    spec: Callable[[int], RoomSpec] | None = None,
    needs: Callable[[int], tuple[int, bool]] | None = None,
    sigma: float = 0.4,
    active: dict[str, Session] | None = None,
) -> Floor:
    """Every room occupied (lengths around 5-25 minutes, 0-20 already spent) and a line, as of T0."""
    rng = np.random.default_rng(seed)
    by_id: dict[str, Room] = {}
    sessions: dict[str, Session] = active if active is not None else {}
    for i in range(rooms):
        room_spec = spec(i) if spec else RoomSpec(f"r{i:05d}", 6 + 2 * (i % 4), accessible=i % 10 == 0)
        seated = T0 - timedelta(minutes=float(rng.uniform(0, 20)))
        occupant = Session(
            session_id=f"o{i:05d}",
            item_ids=("sku",) * 2,
            needs_accessible=room_spec.accessible,
            arrived_at=seated,
            prediction=lognormal_prediction(float(rng.uniform(5, 25)), sigma),
            status=SessionStatus.ASSIGNED,
            room_id=room_spec.room_id,
            assigned_at=seated,
            last_event_at=seated,
        )
        by_id[room_spec.room_id] = Room(room_spec, session_id=occupant.session_id, last_event_at=seated)
        sessions[occupant.session_id] = occupant
    for j in range(waiting):
        items, accessible = needs(j) if needs else (1 + j % 3, False)
        arrived = T0 - timedelta(seconds=waiting - j)
        sessions[f"w{j:05d}"] = Session(
            session_id=f"w{j:05d}",
            item_ids=("sku",) * items,
            needs_accessible=accessible,
            arrived_at=arrived,
            prediction=lognormal_prediction(float(rng.uniform(5, 25)), sigma),
            queue_seq=j + 1,
            last_event_at=arrived,
        )
    return Floor(rooms=by_id, active=sessions, next_queue_seq=waiting + 1)


def simulated_draws(floor: Floor, seed: int, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """The simulation's draws of every waiting customer's wait (columns in arrival order)."""
    kept: dict[str, np.ndarray] = {}
    summarise = estimates._summarise

    def keep(waiting: Any, waits: np.ndarray, level: float, room_free_in: Any) -> Projection:
        kept["waits"] = waits
        return summarise(waiting, waits, level, room_free_in)

    with monkeypatch.context() as patch:
        patch.setattr(estimates, "_summarise", keep)
        project_exactly(floor, T0, FIFO, seed=seed)
    return kept["waits"]


def assert_close(pooled: float, simulated: float, what: str) -> None:
    assert abs(pooled - simulated) <= TOLERANCE_MINUTES + TOLERANCE_SHARE * simulated, (what, pooled, simulated)


def test_survival_of_many_sessions_at_once_is_the_scalar_normal_score():
    rng = np.random.default_rng(1)
    grids = [lognormal_prediction(float(m), float(s)).quantiles for m, s in rng.uniform((3, 0.1), (30, 0.9), (40, 2))]
    grids += [constant_prediction(7.0).quantiles, tuple(sorted([5.0] * 40 + list(rng.uniform(2, 20, 59))))]
    durations = DurationGrids(grids)
    minutes = rng.uniform(0, 90, (len(grids), 50))
    minutes[:, 0] = 0.0
    expected = np.array([[ndtr(-durations.normal_score(i, m)) for m in row] for i, row in enumerate(minutes)])
    expected[-2] = minutes[-2] < 7.0  # a fixed length: a step
    assert np.allclose(durations.survival(np.arange(len(grids)), minutes), expected, atol=1e-12)
    elapsed = rng.uniform(0, 40, len(grids))
    u = (np.arange(16) + 0.5) / 16
    looped = durations.remaining(list(elapsed), np.repeat(u[:, None], len(grids), axis=1)).T
    assert np.allclose(durations.conditional_remaining(np.arange(len(grids)), elapsed, u), looped, atol=1e-9)


@pytest.mark.parametrize(
    ("rooms", "waiting", "rules"),
    [
        (10, 20, FIFO),  # small: simulated
        (20, 80, FIFO),  # large, but a pool of 20 rooms is no sum of many
        (40, 40, Rules(policy=Policy.EXPRESS)),  # express is always simulated
    ],
    ids=["small", "few-rooms", "express"],
)
def test_floors_no_pool_model_covers_are_simulated_exactly(rooms: int, waiting: int, rules: Rules):
    floor = large_floor(rooms, waiting)
    assert project(floor, T0, rules) == project_exactly(floor, T0, rules)
    assert estimate_wait(floor, floor.waitlist()[-1].session_id, T0, rules) is None
    assert uses_pools(floor, rules) is (rooms + waiting > EXACT_SESSIONS and rules.policy is Policy.FIFO)


def test_a_held_customer_makes_fifo_simulate_the_floor():
    floor = large_floor(40, 40)
    floor.active["w00020"].passed_over = FIFO.max_passes  # held: served first, out of arrival order
    floor.reindex()
    assert not uses_pools(floor, FIFO)
    assert project(floor, T0, FIFO) == project_exactly(floor, T0, FIFO)


@pytest.mark.parametrize("seed", [0, 1])
def test_pool_model_agrees_with_the_simulation_on_a_mid_size_floor(seed: int, monkeypatch: pytest.MonkeyPatch):
    floor = large_floor(300, 300, seed)  # six kinds of rooms, three basket sizes: every customer fits every room
    pooled, simulated = project(floor, T0, FIFO), project_exactly(floor, T0, FIFO)
    waiting = floor.waitlist()
    assert all(spot is not None for spot in Pools(floor, T0, WAIT_LEVEL).spots(floor).values())
    for s in waiting:
        sid = s.session_id
        assert_close(pooled.waits[sid], simulated.waits[sid], f"mean of {sid}")
        assert_close(pooled.intervals[sid].low, simulated.intervals[sid].low, f"low end of {sid}")
        assert_close(pooled.intervals[sid].high, simulated.intervals[sid].high, f"high end of {sid}")
    medians_pooled = project(floor, T0, FIFO, level=0.0).intervals
    medians_simulated = project_exactly(floor, T0, FIFO, level=0.0).intervals
    for s in waiting:
        assert_close(medians_pooled[s.session_id].low, medians_simulated[s.session_id].low, f"median of {s}")
    # Calibration: how often an independent simulation's draws fall inside each interval.
    draws = simulated_draws(floor, seed=5, monkeypatch=monkeypatch)
    low = np.array([pooled.intervals[s.session_id].low for s in waiting])
    high = np.array([pooled.intervals[s.session_id].high for s in waiting])
    coverage = float(((draws >= low) & (draws <= high)).mean())
    assert COVERAGE[0] <= coverage <= COVERAGE[1]


def test_customers_behind_someone_with_other_rooms_are_simulated(monkeypatch: pytest.MonkeyPatch):
    # Customer 51 needs an accessible room (a tenth of the rooms): those behind them compete for rooms they only
    # partly share, which one pool cannot tell. Those ahead are a pool; the rest get the simulation's answer.
    floor = large_floor(100, 100, 2, spec=lambda i: RoomSpec(f"r{i:03d}", 8, i % 10 == 0), needs=lambda j: (2, j == 50))
    pooled, simulated = project(floor, T0, FIFO), project_exactly(floor, T0, FIFO)
    spots = Pools(floor, T0, WAIT_LEVEL).spots(floor)
    ids = [s.session_id for s in floor.waitlist()]
    assert [spots[sid] is not None for sid in ids] == [True] * 50 + [False] * 50
    for sid in ids[:50]:
        assert_close(pooled.waits[sid], simulated.waits[sid], sid)
    assert all(pooled.waits[sid] == simulated.waits[sid] for sid in ids[50:])
    assert all(pooled.intervals[sid] == simulated.intervals[sid] for sid in ids[50:])
    assert estimate_wait(floor, ids[60], T0, FIFO) is None
    assert estimate_wait(floor, ids[10], T0, FIFO) == (pooled.waits[ids[10]], pooled.intervals[ids[10]])


def test_customers_whose_rooms_others_never_use_form_pools_of_their_own():
    # Small accessible rooms and large plain ones: accessible two-item customers fit only the first, eight-item
    # customers only the second. Interleaved in one line they never compete: two pools. Pools of 40 rooms are
    # near the smallest modelled, their line's order weighs more: 0.7 minutes plus 3% (measured: 0.49 at most).
    floor = large_floor(
        80,
        80,
        3,
        spec=lambda i: RoomSpec(f"r{i:03d}", 4, True) if i % 2 else RoomSpec(f"r{i:03d}", 12, False),
        needs=lambda j: (2, True) if j % 3 == 0 else (8, False),
    )
    pooled, simulated = project(floor, T0, FIFO), project_exactly(floor, T0, FIFO)
    spots = Pools(floor, T0, WAIT_LEVEL).spots(floor)
    assert len({spot[0] for spot in spots.values() if spot is not None}) == 2
    for s in floor.waitlist():
        assert spots[s.session_id] is not None
        assert (
            abs(pooled.waits[s.session_id] - simulated.waits[s.session_id])
            <= 0.7 + 0.03 * simulated.waits[s.session_id]
        )


def test_one_customers_estimate_is_the_projections_answer():
    floor = large_floor(200, 200, 4)
    projection = project(floor, T0, FIFO)
    pools = Pools(floor, T0, WAIT_LEVEL)
    for s in floor.waitlist()[::37]:
        assert estimate_wait(floor, s.session_id, T0, FIFO) == (
            projection.waits[s.session_id],
            projection.intervals[s.session_id],
        )
        assert estimate_wait(floor, s.session_id, T0, FIFO, pools=pools) == estimate_wait(floor, s.session_id, T0, FIFO)


def test_one_customers_estimate_reads_as_many_sessions_on_a_floor_ten_times_larger():
    # Work, not time: the sessions the estimate reads from the floor, and the sessions its pool model is made of.
    reads, sessions = {}, {}
    for size in (400, 4000):
        floor = large_floor(size, size, active=CountingDict())
        floor.positions()  # the engine's index, built once per floor (and then kept up to date) is not the estimate's
        last = floor.waitlist()[-1].session_id
        CountingDict.reads = 0
        pools = Pools(floor, T0, WAIT_LEVEL)
        assert estimate_wait(floor, last, T0, FIFO, pools=pools) is not None
        reads[size] = CountingDict.reads
        sessions[size] = next(iter(pools._models.values())).sessions
    assert sessions[400] == sessions[4000] == POOL_ROOM_SAMPLE + POOL_LINE_SAMPLE
    assert reads[400] == reads[4000] <= POOL_ROOM_SAMPLE + POOL_LINE_SAMPLE + 8


def test_a_whole_floor_of_one_pool_is_read_without_simulating(monkeypatch: pytest.MonkeyPatch):
    floor = large_floor(500, 500, 5)

    def refuse(*_args: Any, **_kwargs: Any) -> Projection:
        raise AssertionError("a floor whose customers pool models cover needs no simulation")

    monkeypatch.setattr(estimates, "project_exactly", refuse)
    projection = project(floor, T0, FIFO)
    assert set(projection.waits) == set(floor.positions()) == set(projection.intervals)
    assert set(projection.room_free_in) == set(floor.rooms)
    waits = [projection.waits[s.session_id] for s in floor.waitlist()]
    intervals = [projection.intervals[s.session_id] for s in floor.waitlist()]
    assert waits == sorted(waits), "further back in one pool, never a shorter wait"
    assert all(i.low <= w <= i.high for w, i in zip(waits, intervals, strict=True))


def test_a_large_floors_rooms_free_after_their_occupants_expected_remaining_time():
    floor = large_floor(100, 100, 6)
    free_in = expected_free_in(floor, T0)
    for room_id in list(floor.rooms)[:10]:
        occupant = floor.active[floor.rooms[room_id].session_id or ""]
        assert occupant.assigned_at is not None
        elapsed = (T0 - occupant.assigned_at).total_seconds() / 60
        exact = DurationDistribution(occupant.prediction.quantiles).expected_remaining(elapsed, points=4000)
        assert free_in[room_id] == pytest.approx(exact, rel=0.03, abs=0.05)


def test_a_pool_with_rooms_free_now_seats_that_many_at_once():
    # Not a state the engine leaves (it fills free rooms), but one a floor built by hand can be in.
    floor = large_floor(0, 70)
    floor.rooms.update({f"r{i:02d}": Room(RoomSpec(f"r{i:02d}", 6)) for i in range(40)})
    floor.reindex()
    projection = project(floor, T0, FIFO)
    waits = [projection.waits[s.session_id] for s in floor.waitlist()]
    assert waits[:40] == [0.0] * 40
    assert all(w > 0 for w in waits[40:])
