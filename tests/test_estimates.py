"""Wait estimates: duration distributions conditioned on elapsed time, and the projected line."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import norm

from fitting_room import engine, estimates
from fitting_room.duration_grids import DurationDistribution
from fitting_room.engine import MIN_REMAINING_MINUTES, Floor, Room, Rules, Session
from fitting_room.estimates import project
from fitting_room.settings import Policy
from tests.engine_factories import (
    SessionFactory,
    at,
    constant_prediction,
    hand_computed_floor,
    lognormal_prediction,
    make_floor,
)

FIFO = Rules()


@pytest.fixture
def new() -> SessionFactory:
    return SessionFactory()


def lognormal_remaining(median: float, sigma: float, elapsed: float) -> float:
    """E[D - e | D > e] for a lognormal D, in closed form."""
    mu = math.log(median)
    if elapsed <= 0:
        return math.exp(mu + sigma**2 / 2)
    z = (mu - math.log(elapsed)) / sigma
    tail_mean = math.exp(mu + sigma**2 / 2) * norm.cdf(z + sigma)
    return tail_mean / norm.cdf(z) - elapsed


def test_distribution_reproduces_its_quantile_grid():
    dist = DurationDistribution(lognormal_prediction(10.0, 0.3).quantiles)
    assert dist.quantile(0.5) == pytest.approx(10.0, rel=1e-6)
    assert dist.quantile(0.05) == pytest.approx(10.0 * math.exp(0.3 * norm.ppf(0.05)), rel=1e-3)
    # Beyond the grid the tail continues as a lognormal with the grid's own spread.
    assert dist.quantile(0.999) == pytest.approx(10.0 * math.exp(0.3 * norm.ppf(0.999)), rel=1e-3)


@pytest.mark.parametrize("elapsed", [0.0, 5.0, 10.0, 15.0, 30.0])
def test_expected_remaining_is_conditioned_on_elapsed_time(elapsed: float):
    dist = DurationDistribution(lognormal_prediction(10.0, 0.3).quantiles)
    assert dist.expected_remaining(elapsed, points=4000) == pytest.approx(
        lognormal_remaining(10.0, 0.3, elapsed), rel=0.02
    )


def test_a_session_past_its_median_is_not_due_now():
    dist = DurationDistribution(lognormal_prediction(10.0, 0.3).quantiles)
    assert dist.expected_remaining(15.0) > 2.0, "half again the median in: a few minutes still to go"
    assert dist.expected_remaining(30.0) > 1.0, "far past the whole grid the tail still leaves time"


def test_a_fixed_duration_counts_down_and_then_waits_the_minimum():
    dist = DurationDistribution(constant_prediction(10.0).quantiles)
    assert dist.expected_remaining(4.0) == pytest.approx(6.0)
    assert dist.expected_remaining(12.0) == MIN_REMAINING_MINUTES


def test_projection_against_a_hand_computed_schedule(new):
    # Fixed durations make the projection exact: room a (4 items) frees at 10, room b (10 items) at 20.
    floor, s1, bulky, s3 = hand_computed_floor(new)
    projection = project(floor, at(4), FIFO)
    assert projection.waits == {
        s1.session_id: pytest.approx(6),
        s3.session_id: pytest.approx(11),
        bulky.session_id: pytest.approx(16),
    }
    assert projection.room_free_in == {"a": pytest.approx(6), "b": pytest.approx(16)}
    for session_id, wait in projection.waits.items():
        interval = projection.intervals[session_id]
        assert (interval.low, interval.high, interval.level) == (pytest.approx(wait), pytest.approx(wait), 0.8)


def test_projection_counts_passes_and_holds_rooms_like_the_engine(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(minutes=10), at(0))
    slow, quick1, quick2 = new(minutes=60), new(minutes=5), new(minutes=5)
    for s in (slow, quick1, quick2):
        engine.admit(floor, s, at(0))
    rules = Rules(policy=Policy.EXPRESS, max_passes=1, express_aging=None)
    projected = project(floor, at(0), rules).waits
    assert projected == {
        quick1.session_id: pytest.approx(10),
        slow.session_id: pytest.approx(15),  # passed over once, so the next room is held for them
        quick2.session_id: pytest.approx(75),
    }
    # The engine, run forward with the same fixed durations, seats everyone when the projection said.
    clock = 0.0
    while floor.active:
        occupant = floor.active[floor.rooms["a"].session_id or ""]
        clock = engine.minutes_between(at(0), occupant.assigned_at or at(0)) + occupant.prediction.median
        for session_id in engine.release(floor, occupant.session_id, "a", at(clock), rules).promoted:
            assert clock == pytest.approx(projected[session_id])


def test_projection_mean_and_interval_follow_the_conditional_distribution(new):
    floor = make_floor(("a", 6, False))
    occupant = new(prediction=lognormal_prediction(10.0, 0.3))
    engine.admit(floor, occupant, at(0))
    waiting = new()
    engine.admit(floor, waiting, at(1))
    projection = project(floor, at(12), FIFO, samples=20_000)
    assert projection.waits[waiting.session_id] == pytest.approx(lognormal_remaining(10.0, 0.3, 12.0), rel=0.03)
    # The 80% interval is the 10th and 90th percentile of D - 12 given D > 12.
    survival = norm.sf((math.log(12.0) - math.log(10.0)) / 0.3)

    def conditional_quantile(p: float) -> float:
        return 10.0 * math.exp(0.3 * norm.isf(survival * (1 - p))) - 12.0

    interval = projection.intervals[waiting.session_id]
    assert interval.low == pytest.approx(conditional_quantile(0.1), rel=0.05)
    assert interval.high == pytest.approx(conditional_quantile(0.9), rel=0.05)


def test_projection_is_deterministic_whatever_the_order_of_the_snapshot(new):
    floor = make_floor(("a", 6, False), ("b", 6, False))
    for i in range(6):
        engine.admit(floor, new(prediction=lognormal_prediction(8.0 + i, 0.35)), at(i))
    first = project(floor, at(7), FIFO)
    shuffled = Floor(
        rooms={rid: floor.rooms[rid] for rid in reversed(list(floor.rooms))},
        active={sid: floor.active[sid] for sid in reversed(list(floor.active))},
        next_queue_seq=floor.next_queue_seq,
    )
    assert project(shuffled, at(7), FIFO) == first
    assert project(floor, at(7), FIFO) == first


def test_intervals_widen_and_waits_grow_along_the_line(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(prediction=lognormal_prediction(10.0)), at(0))
    line = [new(prediction=lognormal_prediction(10.0)) for _ in range(4)]
    for s in line:
        engine.admit(floor, s, at(1))
    projection = project(floor, at(2), FIFO)
    waits = [projection.waits[s.session_id] for s in line]
    widths = [projection.intervals[s.session_id].high - projection.intervals[s.session_id].low for s in line]
    assert waits == sorted(waits) and widths == sorted(widths)
    assert all(projection.intervals[s.session_id].low <= w for s, w in zip(line, waits, strict=True))


def test_projection_as_of_an_earlier_time_does_not_count_negative_elapsed(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(minutes=10), at(5))
    waiting = new(minutes=5)
    engine.admit(floor, waiting, at(6))
    assert project(floor, at(0), FIFO).waits[waiting.session_id] == pytest.approx(10)


def test_a_free_room_nobody_fits_is_ignored(new):
    floor = Floor(rooms={"tiny": Room(engine.RoomSpec("tiny", 1)), "big": Room(engine.RoomSpec("big", 10))}, active={})
    engine.admit(floor, new(items=5, minutes=10), at(0))
    waiting = new(items=5, minutes=5)
    engine.admit(floor, waiting, at(1))
    assert floor.rooms["tiny"].is_free
    assert project(floor, at(1), FIFO).waits == {waiting.session_id: pytest.approx(9)}


def test_quantile_grids_of_another_length_are_resampled(new):
    floor = make_floor(("a", 6, False))
    coarse = engine.Prediction(10.0, 6.0, 16.0, 0.9, (6.0, 10.0, 16.0))
    engine.admit(floor, Session("s", ("x",), False, at(0), coarse), at(0))
    waiting = new()
    engine.admit(floor, waiting, at(0))
    wait = project(floor, at(0), FIFO).waits[waiting.session_id]
    assert 6.0 < wait < 16.0


def test_waits_are_finite_after_many_overdue_sessions(new):
    floor = make_floor(("a", 6, False), ("b", 6, False))
    start = datetime(2026, 12, 4, 9, tzinfo=UTC)
    for _ in range(2):
        engine.admit(floor, new(prediction=lognormal_prediction(5.0, 0.2), arrived=start), start)
    waiting = new()
    engine.admit(floor, waiting, start)
    projection = project(floor, start + timedelta(hours=5), FIFO)
    assert np.isfinite(projection.waits[waiting.session_id])
    assert 0 < projection.waits[waiting.session_id] < 5


@pytest.mark.parametrize("seed", range(40))
def test_the_in_order_line_equals_the_general_one(seed: int):
    # When promotion order is arrival order the per-class runner must seat exactly as the general one.
    rng = np.random.default_rng(seed)
    samples, rooms, line = 16, int(rng.choice([1, 3, 40])), int(rng.integers(1, 30))
    free = np.where(rng.random((samples, rooms)) < 0.2, 0.0, rng.exponential(10.0, (samples, rooms)))
    lengths = rng.exponential(8.0, (samples, line))
    needs_class = rng.integers(0, 4, line)
    needs_class = np.unique(needs_class, return_inverse=True)[1]  # classes numbered 0..k-1, none empty
    class_fit = rng.random((rooms, needs_class.max() + 1)) < 0.6
    keys = np.arange(line, dtype=np.float64)
    general = estimates._run_line(free, lengths, class_fit[:, needs_class], keys, np.zeros(line, np.int64), 3)
    assert np.array_equal(estimates._run_line_in_order(free, lengths, needs_class, class_fit), general)


@pytest.mark.parametrize("rooms", [1, 2, 5, 33, 100])
def test_the_room_tree_finds_the_first_earliest_room_like_argmin(rooms: int):
    rng = np.random.default_rng(rooms)
    free = rng.integers(0, 5, (8, rooms)).astype(np.float64)  # many ties
    scan, tree = estimates._EarliestRoom(free, tree=False), estimates._EarliestRoom(free, tree=True)
    rows = np.arange(8)
    for _ in range(50):
        (scan_room, scan_t), (tree_room, tree_t) = scan.earliest(), tree.earliest()
        assert np.array_equal(scan_room, tree_room) and np.array_equal(scan_t, tree_t)
        times = np.where(rng.random(8) < 0.2, np.inf, scan_t + rng.integers(0, 3, 8))
        scan.set(rows, scan_room, times)
        tree.set(rows, tree_room, times)
