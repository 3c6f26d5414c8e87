"""The store-day replay: the same customers over HTTP and in process, reproducibility, planning helpers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fitting_room import simulation
from fitting_room.engine import Rules
from fitting_room.planning import PlanPoint, erlang_c, erlang_mean_wait, smallest_rooms
from fitting_room.replay import (
    Arrival,
    ArrivalPlan,
    DurationDraws,
    HttpFloor,
    InProcessFloor,
    Scenario,
    StoreData,
    load_store,
    main,
    parse_rooms,
    poisson_arrivals,
    replay_day,
    run_replications,
    uniform_rooms,
)
from fitting_room.replay_stats import summarise_waits
from fitting_room.settings import Policy, Settings
from tests.conftest import Artifacts
from tests.fakes import FakePredictor

ROOMS = uniform_rooms(2, 12)
CUSTOMERS = 20


@pytest.fixture(scope="module")
def small_store() -> StoreData:
    """A small generated history with an instant stand-in model (five minutes per item, lognormal)."""
    return load_store("default", "given", history_sessions=800, seed=3, predictor=FakePredictor())


def _day(store: StoreData, load: float = 0.95) -> tuple[list[Arrival], datetime]:
    """The first customers of a Poisson day on ROOMS, and the day's opening time."""
    plan = ArrivalPlan(store, Scenario(rooms=ROOMS, rules=Rules(), load=load, replications=1, seed=5))
    day = plan.days_of(0)[0]
    arrivals = poisson_arrivals(store, day, plan.rates, np.random.default_rng(5), 0, 0.0)
    return arrivals[:CUSTOMERS], datetime(day.year, day.month, day.day, store.profile.open_hour, tzinfo=UTC)


@pytest.mark.slow  # every request runs the real models: about 10 s per policy on a shared 2-core machine
@pytest.mark.parametrize("policy", [Policy.FIFO, Policy.EXPRESS])
def test_http_replay_with_timestamps_matches_the_in_process_replay(
    artifacts: Artifacts, tmp_path: Path, policy: Policy
):
    from api import create_app, load_models

    predictor, _, _ = load_models(artifacts.model_dir)
    store = load_store("default", "given", history_dir=artifacts.data_dir, predictor=predictor)
    rules = Rules(policy=policy)
    arrivals, opens = _day(store, load=1.6)  # a long line from few customers: every request costs a model call
    draws = DurationDraws(store, arrivals, (5, 0, 0))

    in_process = InProcessFloor(ROOMS, rules, store.predict(arrivals), store.mean_duration)
    local = replay_day(arrivals, in_process, draws, len(ROOMS), opens, opens)

    rooms_file = tmp_path / "rooms.json"
    rooms_file.write_text(json.dumps([{"room_id": r.room_id, "max_items": r.max_items} for r in ROOMS]))
    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=artifacts.model_dir,
        database=str(tmp_path / "state.db"),
        rooms_file=rooms_file,
        policy=policy,
    )
    with TestClient(create_app(settings)) as client:
        remote = replay_day(arrivals, HttpFloor(client), draws, len(ROOMS), opens, opens)

    queued = [o for o in local.outcomes if o.estimate is not None]
    assert len(queued) >= 10, "the day must build a line for the comparison to mean anything"
    assert [o.wait for o in remote.outcomes] == pytest.approx([o.wait for o in local.outcomes], abs=1e-6)
    assert [o.position for o in remote.outcomes] == [o.position for o in local.outcomes]
    for there, here in zip(remote.outcomes, local.outcomes, strict=True):
        assert (there.estimate is None) == (here.estimate is None)
        if here.estimate is not None and there.estimate is not None:
            assert there.estimate == pytest.approx(here.estimate, rel=1e-9)


def test_replications_are_reproducible_and_policies_see_the_same_customers(small_store: StoreData):
    scenario = Scenario(rooms=ROOMS, rules=Rules(), load=0.9, replications=2, seed=1, estimates=False)
    first = run_replications(small_store, scenario)
    again = run_replications(small_store, scenario)
    assert [o.wait for r in first for o in r.outcomes()] == [o.wait for r in again for o in r.outcomes()]
    express = run_replications(small_store, replace(scenario, rules=Rules(Policy.EXPRESS)))
    assert [o.arrived_at for r in first for o in r.outcomes()] == [o.arrived_at for r in express for o in r.outcomes()]
    summary = summarise_waits(first)
    assert summary.customers == sum(len(r.outcomes()) for r in first)
    assert 0 < summary.utilisation.value <= 1
    assert summary.p90.low <= summary.p90.value <= summary.p90.high


def test_every_customer_is_seated_and_no_room_is_double_booked(small_store: StoreData):
    arrivals, opens = _day(small_store, load=1.2)
    draws = DurationDraws(small_store, arrivals, (1, 2, 3))
    floor = InProcessFloor(ROOMS, Rules(), small_store.predict(arrivals), small_store.mean_duration, samples=64)
    result = replay_day(arrivals, floor, draws, len(ROOMS), opens, opens)
    assert len(result.outcomes) == len(arrivals)
    assert all(o.wait >= 0 for o in result.outcomes)
    assert not floor.floor.active, "the day ends with every room free and nobody waiting"
    assert result.busy_minutes > 0


def test_session_lengths_follow_the_hour_the_customer_enters(small_store: StoreData):
    arrivals, _ = _day(small_store)
    draws = DurationDraws(small_store, arrivals[:3], (0, 0, 0))
    first = arrivals[0]
    now = draws(first, first.at)
    later = first.at.replace(hour=19)
    base = simulation.base_durations(
        small_store.profile,
        small_store.sim_catalog,
        [list(first.items)] * 2,
        [first.at.replace(tzinfo=None), later.replace(tzinfo=None)],
    )
    assert draws(first, later) == pytest.approx(now * base[1] / base[0])
    assert draws(first, first.at) == now, "the same customer always gets the same draw"


def test_erlang_c_matches_the_textbook_values():
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_mean_wait(1, 0.5, 1.0) == pytest.approx(1.0), "M/M/1 at rho 0.5: Wq = rho / (mu - lambda)"


def test_smallest_rooms_uses_the_upper_bound_of_p90():
    points = [
        PlanPoint(3, 30.0, 25.0, 35.0, 10.0, 40.0),
        PlanPoint(4, 9.0, 7.0, 12.0, 3.0, 11.0),
        PlanPoint(5, 4.0, 3.0, 6.0, 1.0, 5.0),
    ]
    assert smallest_rooms(points, 10.0) == 5
    assert smallest_rooms(points, 5.0) is None


@pytest.mark.parametrize(("text", "rooms"), [("3", [3]), ("3..5", [3, 4, 5])])
def test_rooms_option(text: str, rooms: list[int]):
    assert parse_rooms(text) == rooms


def test_cli_plans_rooms_and_writes_report_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    plot, report = tmp_path / "plan.png", tmp_path / "plan.md"
    argv = ["--model", "oracle", "--history-sessions", "800", "--rooms", "1..2", "--replications", "1"]
    assert main([*argv, "--target-p90", "30", "--plot", str(plot), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "| rooms | p90 wait" in printed
    assert "Smallest number of rooms" in printed or "No number of rooms" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.read_text() in printed


def test_cli_compares_policies_with_estimates(capsys: pytest.CaptureFixture[str]):
    argv = ["--model", "oracle", "--history-sessions", "800", "--replications", "1", "--samples", "64"]
    assert main([*argv, "--rooms", "1", "--load", "0.8"]) == 0
    printed = capsys.readouterr().out
    assert "| fifo |" in printed and "| express |" in printed
    assert "QL: position × mean / rooms" in printed
    assert "`wait_interval` (80%)" in printed


def test_oracle_quantiles_are_the_simulators_truth(small_store: StoreData):
    oracle = replace(small_store, model_kind="oracle", predictor=None)
    arrival = Arrival(0, datetime(2026, 3, 3, 12, tzinfo=UTC), small_store.baskets[0][0])
    prediction = oracle.predict([arrival])[0]
    truth = simulation.true_quantiles(
        small_store.profile, small_store.sim_catalog, [list(arrival.items)], [arrival.at.replace(tzinfo=None)]
    )[0]
    assert prediction.low == pytest.approx(truth[0])
    assert prediction.median == pytest.approx(truth[1])
    assert prediction.high == pytest.approx(truth[2])
    assert np.all(np.diff(prediction.quantiles) >= 0)
