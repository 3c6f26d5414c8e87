"""Store-day replay: whole days of customers through the real engine on a virtual clock, for planning.

    python -m fitting_room.replay [--profile default|boutique] [--rooms 3 | --rooms 3..10 | --rooms-file F]
        [--arrivals poisson|history] [--load 0.85] [--shape flat|store] [--day YYYY-MM-DD] [--days 1]
        [--policy fifo|express|both] [--max-passes 3] [--express-aging 2] [--replications 20]
        [--model trained|oracle] [--history-dir DIR] [--target-p90 10] [--plot PNG] [--report MD] [--seed 0]

Every customer arrives at the kiosk, is admitted by `engine.admit` (a room or a place in line, with the wait
estimate the API would return, from `estimates.project`; under express with the arrival forecast made from the
day's arrivals so far, as the service makes it from its sessions table), and leaves when their session ends,
which releases the room through `engine.release` and promotes whoever the policy picks. The clock is virtual:
each event carries its own time, as the API's `timestamp` and `exit_time` do, so a day takes well under a second.

Inputs. The store's history (`--history-dir` with the data-contract files, or a history generated in process
by `fitting_room.simulation` with the profile's settings) supplies the item catalogue, the baskets (drawn
with replacement, with their anomaly labels), the mean session length and the training data of the duration
model. Arrivals are either the history's own entry times of `--day` (and the following days) or a Poisson
process per hour: `--load` is the offered load per room (λ · mean length / rooms) and `--shape` spreads it
flat or like the profile's hourly traffic (the day's mean stays at `--load`). Session lengths are drawn from
the simulator when a customer enters the room (its hour effects use the entry time), seeded per customer,
so every policy and layout sees the same customers and the same lengths.

Model. `trained` (the default, and the honest headline: the estimator is judged with the model the service
would run) fits `models.DurationPredictor` on the history in process; `oracle` uses the simulator's true
conditional quantiles, isolating the projection's own error from the model's.

Report. Per policy: mean, p90 and p99 wait, the share of customers who waited and room utilisation, each with
a 95% interval over replications; for customers put on the waitlist, the RMSE and bias of the wait estimate
given at arrival against the realised wait, next to the QL predictor (position × mean length / rooms), the
state-blind Erlang C wait, and point projections with medians (no conditioning) and with expectations; and how
often the realised wait falls inside `wait_interval`. With a range of rooms (`--rooms 3..10`) it prints and
plots p90 wait against the number of rooms and names the smallest number that keeps p90 under the target.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from threadpoolctl import threadpool_limits

from fitting_room import simulation
from fitting_room.catalog import Catalog
from fitting_room.engine import (
    Floor,
    Prediction,
    PredictionLike,
    Room,
    RoomSpec,
    Rules,
    Session,
    SessionStatus,
    admit,
    aging_due,
    expected_duration,
    expected_remaining,
    list_schedule,
    minutes_between,
    promotion_order,
    release,
)
from fitting_room.estimates import (
    MIX_SIZE,
    SAMPLES,
    ArrivalForecast,
    PastArrival,
    Projection,
    forecast_arrivals,
    project,
)
from fitting_room.history import load_history
from fitting_room.planning import PlanPoint, erlang_wait_quantile, plot_plan, smallest_rooms
from fitting_room.replay_stats import describe, plan_report, policy_report, summarise_waits
from fitting_room.rooms import load_rooms
from fitting_room.settings import Policy

FloatArray = npt.NDArray[np.float64]

QUANTILE_PROBS: tuple[float, ...] = tuple(i / 100 for i in range(1, 100))


# ---------------------------------------------------------------------------------------------------------
# The store being replayed
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One customer at the kiosk: when, with what, and the label their session length is drawn with."""

    index: int
    at: datetime
    items: tuple[str, ...]
    anomaly_type: str = ""
    accessible: bool = False


class DurationModel(Protocol):
    """What the replay needs of a duration model (the service's `DurationPredictor` fits)."""

    def estimate(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> PredictionLike:
        """Predicted duration distribution for a basket entering at `entry_time`."""
        ...


@dataclass(frozen=True)
class StoreData:
    """A store's history and everything derived from it that the replay draws on."""

    profile: simulation.Profile
    sessions: pd.DataFrame
    catalog: Catalog
    sim_catalog: simulation.Catalog
    baskets: tuple[tuple[tuple[str, ...], str], ...]
    mean_duration: float
    model_kind: str
    predictor: DurationModel | None = None

    @property
    def largest_basket(self) -> int:
        """Most items any history basket holds."""
        return max(len(items) for items, _ in self.baskets)

    def predict(self, arrivals: Sequence[Arrival]) -> dict[int, Prediction]:
        """The duration prediction the service would make for each arrival, keyed by arrival index."""
        if not arrivals:
            return {}
        if self.predictor is not None:
            # One row at a time: OpenMP threads only add start-up cost, and fight over a shared machine.
            with threadpool_limits(limits=1):
                return {a.index: Prediction.of(self.predictor.estimate(a.items, a.at, self.catalog)) for a in arrivals}
        grid = simulation.true_quantiles(
            self.profile,
            self.sim_catalog,
            [list(a.items) for a in arrivals],
            [_wall(a.at) for a in arrivals],
            QUANTILE_PROBS,
        )
        return {a.index: _oracle_prediction(row) for a, row in zip(arrivals, grid, strict=True)}


def _oracle_prediction(grid: FloatArray) -> Prediction:
    values = tuple(float(q) for q in grid)
    return Prediction(median=values[49], low=values[4], high=values[94], level=0.9, quantiles=values)


def _wall(at: datetime) -> datetime:
    # The replay's clock is store-local time written as UTC; the simulator wants the local wall clock.
    return at.astimezone(UTC).replace(tzinfo=None)


def load_store(
    profile_name: str,
    model_kind: str = "trained",
    history_dir: Path | None = None,
    history_sessions: int = 10_000,
    seed: int = 0,
    predictor: DurationModel | None = None,
) -> StoreData:
    """Read (or generate with the simulator) a store's history and fit the duration model on it.

    `model_kind` is `trained` (fit on the history), `oracle` (the simulator's true quantiles) or `given`
    (use `predictor`, e.g. the very model a running service loaded).
    """
    profile = simulation.get_profile(profile_name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = history_dir
        if folder is None:
            folder = Path(tmp)
            simulation.write(simulation.generate(history_sessions, seed=seed, profile=profile), folder)
        sessions, catalog = load_history(folder)
        item_database = json.loads((folder / simulation.ITEM_DATABASE_FILE).read_text(encoding="utf-8"))
    sim_catalog = simulation.Catalog.from_item_database(profile, item_database)
    labels = sessions["anomaly_type"].fillna("").astype(str)
    baskets = tuple(
        (tuple(items), label if label in simulation.ANOMALY_TYPES else "")
        for items, label in zip(sessions["item_ids"], labels, strict=True)
    )
    if model_kind == "given" and predictor is None:
        raise ValueError("model 'given' needs a predictor")
    if model_kind == "trained":
        from models import DurationPredictor

        with threadpool_limits(limits=1):
            predictor = DurationPredictor(random_state=seed).fit(sessions, catalog)
    elif model_kind == "oracle":
        predictor = None
    elif model_kind != "given":
        raise ValueError(f"unknown model {model_kind!r}: trained, oracle or given")
    return StoreData(
        profile=profile,
        sessions=sessions,
        catalog=catalog,
        sim_catalog=sim_catalog,
        baskets=baskets,
        mean_duration=float(sessions["duration"].mean()),
        model_kind=model_kind,
        predictor=predictor,
    )


def open_days(profile: simulation.Profile, first: date, count: int) -> list[date]:
    """The next `count` days from `first` on which the store opens."""
    days: list[date] = []
    day = first
    while len(days) < count:
        if profile.weekday_traffic[day.weekday()] > 0:
            days.append(day)
        day += timedelta(days=1)
    return days


def hourly_rates(store: StoreData, rooms: int, load: float, shape: str) -> list[float]:
    """Arrivals per minute for each opening hour: offered load `load` per room on average over the day."""
    profile = store.profile
    hours = profile.close_hour - profile.open_hour
    if shape == "flat":
        weights = [1.0] * hours
    elif shape == "store":
        mean = sum(profile.hour_traffic) / hours
        weights = [w / mean for w in profile.hour_traffic]
    else:
        raise ValueError(f"unknown shape {shape!r}: flat or store")
    base = load * rooms / store.mean_duration
    return [base * w for w in weights]


def poisson_arrivals(
    store: StoreData, day: date, rates: Sequence[float], rng: np.random.Generator, first_index: int, accessible: float
) -> list[Arrival]:
    """A day of Poisson arrivals with the given rate per opening hour and baskets drawn from the history."""
    profile = store.profile
    opens = datetime(day.year, day.month, day.day, profile.open_hour, tzinfo=UTC)
    last_entry = (profile.close_hour - profile.open_hour) * 60 - profile.last_entry_minutes
    minutes: list[float] = []
    for hour, rate in enumerate(rates):
        count = int(rng.poisson(rate * 60))
        minutes.extend(float(m) for m in hour * 60 + 60 * rng.random(count))
    minutes = sorted(m for m in minutes if m < last_entry)
    picks = rng.integers(0, len(store.baskets), len(minutes))
    needs = rng.random(len(minutes)) < accessible
    return [
        Arrival(
            index=first_index + i,
            at=opens + timedelta(minutes=m),
            items=store.baskets[int(p)][0],
            anomaly_type=store.baskets[int(p)][1],
            accessible=bool(n),
        )
        for i, (m, p, n) in enumerate(zip(minutes, picks, needs, strict=True))
    ]


def history_arrivals(store: StoreData, day: date, first_index: int) -> list[Arrival]:
    """The history's own customers of one day: their entry times and baskets."""
    frame = store.sessions
    local = frame["entry_time"].dt.tz_convert(UTC)
    rows = frame[local.dt.date == day].sort_values("entry_time")
    labels = rows["anomaly_type"].fillna("").astype(str)
    return [
        Arrival(
            index=first_index + i,
            at=entry.to_pydatetime().astimezone(UTC),
            items=tuple(items),
            anomaly_type=label if label in simulation.ANOMALY_TYPES else "",
        )
        for i, (entry, items, label) in enumerate(zip(rows["entry_time"], rows["item_ids"], labels, strict=True))
    ]


class DurationDraws:
    """Session lengths of a day's customers, drawn from the simulator and scaled to the hour they enter."""

    def __init__(self, store: StoreData, arrivals: Sequence[Arrival], seed: Sequence[int]) -> None:
        """One draw per customer (seeded, so every policy and layout sees the same lengths)."""
        profile, catalog = store.profile, store.sim_catalog
        self.open_hour = profile.open_hour
        self.hours = profile.close_hour - profile.open_hour
        self.row = {a.index: i for i, a in enumerate(arrivals)}
        items = [list(a.items) for a in arrivals]
        when = [_wall(a.at) for a in arrivals]
        labels = [a.anomaly_type for a in arrivals]
        rng = np.random.default_rng(list(seed))
        self.drawn = (
            simulation.sample_durations(profile, catalog, items, when, rng, labels) if arrivals else np.zeros(0)
        )
        # The simulator's length is base(entry hour, weekday) x noise, the hour effect a step function: one
        # draw at the arrival's hour rescales exactly to whichever opening hour the customer enters in.
        self.base_at_arrival = simulation.base_durations(profile, catalog, items, when) if arrivals else np.zeros(0)
        by_hour = [
            t.replace(hour=profile.open_hour + h, minute=0, second=0, microsecond=0)
            for t in when
            for h in range(self.hours)
        ]
        per_hour = [basket for basket in items for _ in range(self.hours)]
        self.base = (
            simulation.base_durations(profile, catalog, per_hour, by_hour).reshape(len(arrivals), self.hours)
            if arrivals
            else np.zeros((0, self.hours))
        )

    def __call__(self, arrival: Arrival, entered_at: datetime) -> float:
        """Minutes this customer stays once in a room entered at `entered_at`."""
        row = self.row[arrival.index]
        local = _wall(entered_at)
        late = local.date() > _wall(arrival.at).date()
        hour = self.hours - 1 if late else min(max(local.hour - self.open_hour, 0), self.hours - 1)
        return float(self.drawn[row] * self.base[row, hour] / self.base_at_arrival[row])


# ---------------------------------------------------------------------------------------------------------
# Floors the replay drives: the engine in process, or the service over HTTP
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrived:
    """What the kiosk learnt: a room, or a place in line with the wait estimate (and baselines, in process)."""

    session_id: str
    room_id: str | None
    position: int | None = None
    estimate: tuple[float, float, float] | None = None  # mean, low, high
    baselines: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Promotion:
    """The waiting customer a freed room went to."""

    session_id: str
    room_id: str


class FloorBackend(Protocol):
    """The rooms being replayed: arrivals at the kiosk and exits at the gate, each at its event time."""

    def arrive(self, arrival: Arrival) -> Arrived:
        """Admit a customer at `arrival.at`."""
        ...

    def leave(self, arrival: Arrival, session_id: str, room_id: str, at: datetime, /) -> Promotion | None:
        """The customer leaves their room at `at`; returns who was promoted into it."""
        ...


@dataclass(frozen=True)
class Shown:
    """The estimate a waiting customer saw on the status board right after an event."""

    index: int
    at: datetime
    estimate: tuple[float, float, float]  # mean, low, high
    ql: float


class InProcessFloor:
    """The engine on an in-memory floor, with the estimate the service would give and the baselines.

    With `refresh`, every event also re-projects the line and records what each waiting customer was shown.
    """

    def __init__(
        self,
        rooms: Sequence[RoomSpec],
        rules: Rules,
        predictions: Mapping[int, Prediction],
        mean_duration: float,
        estimates: bool = True,
        samples: int = SAMPLES,
        refresh: bool = False,
    ) -> None:
        """An empty floor with these rooms; `predictions` by arrival index, as the service would make them."""
        self.floor = Floor(rooms={r.room_id: Room(r) for r in rooms}, active={})
        self.rules = rules
        self.predictions = predictions
        self.mean_duration = mean_duration
        self.estimates = estimates
        self.samples = samples
        self.refresh = refresh
        self.shown: list[Shown] = []
        # The latest arrivals, as the service reads them back from its sessions table for express's forecast.
        self.arrivals: deque[PastArrival] = deque(maxlen=MIX_SIZE)

    def arrive(self, arrival: Arrival) -> Arrived:
        """Admit as the service does; estimate the wait of a customer who has to queue."""
        session = Session(
            session_id=f"c{arrival.index:06d}",
            item_ids=arrival.items,
            needs_accessible=arrival.accessible,
            arrived_at=arrival.at,
            prediction=self.predictions[arrival.index],
        )
        admit(self.floor, session, arrival.at)
        self.arrivals.append(PastArrival.of(session))
        if session.status is SessionStatus.ASSIGNED:
            return Arrived(session.session_id, session.room_id)
        position = self.floor.positions()[session.session_id]
        if not self.estimates:
            return Arrived(session.session_id, None, position)
        projection = self._project(arrival.at)
        self._show(arrival.at, projection)
        interval = projection.intervals[session.session_id]
        estimate = (projection.waits[session.session_id], interval.low, interval.high)
        return Arrived(session.session_id, None, position, estimate, self._baselines(session, position))

    def _project(self, at: datetime) -> Projection:
        """The service's projection: under express with the arrival forecast from the latest arrivals."""
        return project(self.floor, at, self.rules, samples=self.samples, arrivals=self._forecast(at))

    def _forecast(self, at: datetime) -> ArrivalForecast | None:
        return forecast_arrivals(self.arrivals, at) if self.rules.policy is Policy.EXPRESS else None

    def _show(self, at: datetime, projection: Projection) -> None:
        if not self.refresh:
            return
        per_room = self.mean_duration / len(self.floor.rooms)
        for session_id, position in self.floor.positions().items():
            interval = projection.intervals[session_id]
            estimate = (projection.waits[session_id], interval.low, interval.high)
            self.shown.append(Shown(int(session_id[1:]), at, estimate, position * per_room))

    def _baselines(self, session: Session, position: int) -> dict[str, float]:
        at = session.arrived_at
        order = promotion_order(self.floor.waitlist(), self.rules, aging_due(self.floor, at, self.rules))
        expected = list_schedule(self.floor, at, order, expected_remaining, expected_duration)
        median = list_schedule(self.floor, at, order, _median_left, _median)
        return {
            "point_expected": expected.starts[session.session_id],
            "point_median": median.starts[session.session_id],
            "ql": position * self.mean_duration / len(self.floor.rooms),
        }

    def leave(self, _arrival: Arrival, session_id: str, room_id: str, at: datetime, /) -> Promotion | None:
        """Release the room at `at` and report the promotion."""
        changes = release(self.floor, session_id, room_id, at, self.rules)
        if self.refresh and self.floor.waitlist():
            self._show(at, self._project(at))
        if not changes.promoted:
            return None
        promoted = self.floor.active[changes.promoted[0]]
        return Promotion(promoted.session_id, promoted.room_id or "")


def _median_left(session: Session, elapsed: float) -> float:
    # The plain projection: an occupant past their median is "due now".
    return max(session.prediction.median - elapsed, 0.0)


def _median(session: Session) -> float:
    return session.prediction.median


class HttpClient(Protocol):
    """The part of an HTTP client the replay uses (FastAPI's TestClient, or an httpx client with a base URL)."""

    def post(self, url: str, *, json: Any = None) -> Any:
        """POST a JSON body; the response has `status_code` and `json()`."""
        ...


class HttpFloor:
    """The service over HTTP: arrivals as POST /assign_room with `timestamp`, exits as POST /detect_anomaly."""

    def __init__(self, client: HttpClient) -> None:
        """Drive the service behind `client`."""
        self.client = client

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text}")
        result: dict[str, Any] = response.json()
        return result

    def arrive(self, arrival: Arrival) -> Arrived:
        """Assign with the arrival's scan time as the event time."""
        body = self._post(
            "/assign_room",
            {"item_ids": list(arrival.items), "timestamp": arrival.at.isoformat(), "accessible": arrival.accessible},
        )
        if body["status"] == "assigned":
            return Arrived(body["session_id"], body["room_id"])
        interval = body["wait_interval"]
        estimate = (float(body["estimated_wait"]), float(interval["low"]), float(interval["high"]))
        return Arrived(body["session_id"], None, body["position"], estimate)

    def leave(self, arrival: Arrival, session_id: str, room_id: str, at: datetime, /) -> Promotion | None:
        """Report the exit with its event time and every item scanned out."""
        body = self._post(
            "/detect_anomaly",
            {
                "session_id": session_id,
                "room_id": room_id,
                "exit_scans": list(arrival.items),
                "exit_time": at.isoformat(),
            },
        )
        promoted = body["next_assignment"]
        return None if promoted is None else Promotion(promoted["session_id"], promoted["room_id"])


# ---------------------------------------------------------------------------------------------------------
# One day
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One customer's day: the realised wait and, if they queued, what they were told on arrival."""

    index: int
    arrived_at: datetime
    wait: float
    position: int | None
    estimate: tuple[float, float, float] | None
    baselines: Mapping[str, float]


@dataclass(frozen=True)
class DayResult:
    """Everyone's outcome and how busy the rooms were."""

    outcomes: list[Outcome]
    busy_minutes: float
    open_minutes: float
    rooms: int
    refreshes: list[tuple[Shown, float]] = field(default_factory=list)  # with the realised remaining wait

    @property
    def utilisation(self) -> float:
        """Share of room time occupied between opening and the last exit (or closing, if later)."""
        return self.busy_minutes / (self.rooms * self.open_minutes) if self.open_minutes > 0 else 0.0


def replay_day(
    arrivals: Sequence[Arrival],
    floor: FloorBackend,
    duration_of: Callable[[Arrival, datetime], float],
    rooms: int,
    opens: datetime,
    closes: datetime,
) -> DayResult:
    """Run arrivals and exits in event-time order (exits first at equal times) and record every wait."""
    by_index = {a.index: a for a in arrivals}
    events: list[tuple[datetime, int, int]] = [(a.at, 1, a.index) for a in arrivals]
    heapq.heapify(events)
    in_room: dict[int, tuple[str, str]] = {}
    waiting: dict[str, tuple[int, Arrived]] = {}
    outcomes: dict[int, Outcome] = {}
    busy = 0.0
    last = closes

    def seat(index: int, session_id: str, room_id: str, at: datetime, told: Arrived | None) -> None:
        nonlocal busy
        arrival = by_index[index]
        minutes = duration_of(arrival, at)
        busy += minutes
        in_room[index] = (session_id, room_id)
        heapq.heappush(events, (at + timedelta(minutes=minutes), 0, index))
        outcomes[index] = Outcome(
            index=index,
            arrived_at=arrival.at,
            wait=minutes_between(arrival.at, at),
            position=told.position if told else None,
            estimate=told.estimate if told else None,
            baselines=told.baselines if told else {},
        )

    while events:
        at, kind, index = heapq.heappop(events)
        arrival = by_index[index]
        if kind == 1:
            told = floor.arrive(arrival)
            if told.room_id is not None:
                seat(index, told.session_id, told.room_id, at, None)
            else:
                waiting[told.session_id] = (index, told)
            continue
        last = max(last, at)
        session_id, room_id = in_room.pop(index)
        promoted = floor.leave(arrival, session_id, room_id, at)
        if promoted is not None:
            next_index, told = waiting.pop(promoted.session_id)
            seat(next_index, promoted.session_id, promoted.room_id, at, told)
    if waiting:
        raise RuntimeError(f"{len(waiting)} customers were never seated")
    return DayResult(
        outcomes=[outcomes[a.index] for a in arrivals],
        busy_minutes=busy,
        open_minutes=minutes_between(opens, last),
        rooms=rooms,
    )


# ---------------------------------------------------------------------------------------------------------
# Many days, many replications
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What to replay: arrivals, layout, policy and how many replications."""

    rooms: tuple[RoomSpec, ...]
    rules: Rules
    arrivals: str = "poisson"
    load: float = 0.85
    shape: str = "flat"
    first_day: date | None = None
    days: int = 1
    replications: int = 20
    seed: int = 0
    accessible: float = 0.0
    estimates: bool = True
    samples: int = SAMPLES
    refresh: bool = False


@dataclass(frozen=True)
class Replication:
    """The days of one replication."""

    days: list[DayResult]

    def outcomes(self) -> list[Outcome]:
        """Every customer of every day."""
        return [o for d in self.days for o in d.outcomes]


def uniform_rooms(count: int, max_items: int) -> tuple[RoomSpec, ...]:
    """`count` identical rooms that take `max_items` items each."""
    return tuple(RoomSpec(f"room_{i:02d}", max_items) for i in range(1, count + 1))


class ArrivalPlan:
    """The customers of every replication and their predictions, made once and shared by every run."""

    def __init__(self, store: StoreData, scenario: Scenario) -> None:
        """Poisson rates follow the scenario's load on its own rooms, whatever layout later replays them."""
        self.store = store
        self.scenario = scenario
        self.rates = hourly_rates(store, len(scenario.rooms), scenario.load, scenario.shape)
        self._cache: dict[int, tuple[list[list[Arrival]], dict[int, Prediction]]] = {}

    def first_day(self) -> date:
        """The scenario's first day: given, else the history's first (history) or the day after it (Poisson)."""
        if self.scenario.first_day is not None:
            return self.scenario.first_day
        entries = self.store.sessions["entry_time"].dt.tz_convert(UTC)
        if self.scenario.arrivals == "history":
            return entries.min().date()
        return entries.max().date() + timedelta(days=1)

    def days_of(self, replication: int) -> list[date]:
        """Calendar days of one replication (history arrivals replay the same days each time)."""
        days = self.scenario.days
        skip = 0 if self.scenario.arrivals == "history" else replication * days
        return open_days(self.store.profile, self.first_day(), skip + days)[skip:]

    def get(self, replication: int) -> tuple[list[list[Arrival]], dict[int, Prediction]]:
        """Arrivals per day and the predictions for them."""
        # History arrivals are the same customers in every replication; only their session lengths differ.
        key = 0 if self.scenario.arrivals == "history" else replication
        if key not in self._cache:
            self._cache[key] = self._make(key)
        return self._cache[key]

    def _make(self, replication: int) -> tuple[list[list[Arrival]], dict[int, Prediction]]:
        s = self.scenario
        per_day: list[list[Arrival]] = []
        rng = np.random.default_rng([s.seed, replication])
        index = 0
        for day in self.days_of(replication):
            if s.arrivals == "history":
                day_arrivals = history_arrivals(self.store, day, index)
            else:
                day_arrivals = poisson_arrivals(self.store, day, self.rates, rng, index, s.accessible)
            per_day.append(day_arrivals)
            index += len(day_arrivals)
        return per_day, self.store.predict([a for d in per_day for a in d])


def run_replications(store: StoreData, scenario: Scenario, plan: ArrivalPlan | None = None) -> list[Replication]:
    """Replay every replication of a scenario through the engine in process."""
    plan = plan or ArrivalPlan(store, scenario)
    profile = store.profile
    results: list[Replication] = []
    for r in range(scenario.replications):
        per_day, predictions = plan.get(r)
        days: list[DayResult] = []
        for number, (day, arrivals) in enumerate(zip(plan.days_of(r), per_day, strict=True)):
            draws = DurationDraws(store, arrivals, (scenario.seed, r, number))
            floor = InProcessFloor(
                scenario.rooms,
                scenario.rules,
                predictions,
                store.mean_duration,
                estimates=scenario.estimates,
                samples=scenario.samples,
                refresh=scenario.refresh,
            )
            opens = datetime(day.year, day.month, day.day, profile.open_hour, tzinfo=UTC)
            closes = datetime(day.year, day.month, day.day, profile.close_hour, tzinfo=UTC)
            result = replay_day(arrivals, floor, draws, len(scenario.rooms), opens, closes)
            rate = float(np.mean(plan.rates)) if scenario.arrivals == "poisson" else _day_rate(arrivals)
            result = _with_erlang(result, rate, len(scenario.rooms), store.mean_duration)
            seated = {o.index: o.arrived_at + timedelta(minutes=o.wait) for o in result.outcomes}
            result.refreshes.extend((shown, minutes_between(shown.at, seated[shown.index])) for shown in floor.shown)
            days.append(result)
        results.append(Replication(days))
    return results


def _day_rate(arrivals: Sequence[Arrival]) -> float:
    """Arrivals per minute between a day's first and last arrival."""
    span = minutes_between(arrivals[0].at, arrivals[-1].at) if len(arrivals) > 1 else 0.0
    return len(arrivals) / span if span > 0 else 0.0


def _with_erlang(result: DayResult, rate: float, rooms: int, mean_duration: float) -> DayResult:
    # Erlang C's mean wait of those who wait, 1 / (cμ - λ), at the planned arrival rate (steady state);
    # an overloaded day has no steady state, so λ is held just below capacity.
    capacity = rooms / mean_duration
    rate = min(rate, 0.99 * capacity)
    outcomes = []
    for o in result.outcomes:
        if o.estimate is None:
            outcomes.append(o)
            continue
        baselines = {**o.baselines, "erlang": 1.0 / (capacity - rate)}
        outcomes.append(Outcome(o.index, o.arrived_at, o.wait, o.position, o.estimate, baselines))
    return DayResult(outcomes, result.busy_minutes, result.open_minutes, result.rooms, result.refreshes)


def run_policies(store: StoreData, scenario: Scenario, policies: Iterable[Policy]) -> dict[str, list[Replication]]:
    """The scenario under each policy, sharing arrivals, predictions and session lengths."""
    plan = ArrivalPlan(store, scenario)
    return {
        policy.value: run_replications(store, replace(scenario, rules=replace(scenario.rules, policy=policy)), plan)
        for policy in policies
    }


def plan_rooms(
    store: StoreData, scenario: Scenario, counts: Sequence[int], target_p90: float, max_items: int
) -> tuple[list[PlanPoint], int | None]:
    """p90 wait per number of rooms for one arrival profile (fixed, whatever the rooms), and the smallest count."""
    # The arrival profile is the scenario's at its own number of rooms; only the layout varies.
    plan = ArrivalPlan(store, replace(scenario, estimates=False))
    mean_rate = float(np.mean(plan.rates)) if scenario.arrivals == "poisson" else _day_rate(plan.get(0)[0][0])
    points: list[PlanPoint] = []
    for count in counts:
        layout = replace(scenario, rooms=uniform_rooms(count, max_items), estimates=False)
        reps = run_replications(store, layout, plan)
        summary = summarise_waits(reps, scenario.seed)
        points.append(
            PlanPoint(
                rooms=count,
                p90=summary.p90.value,
                p90_low=summary.p90.low,
                p90_high=summary.p90.high,
                mean=summary.mean.value,
                erlang_p90=erlang_wait_quantile(count, mean_rate, store.mean_duration, 0.9),
            )
        )
    return points, smallest_rooms(points, target_p90)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def parse_rooms(text: str) -> list[int]:
    """`3` or `3..10` as a list of room counts."""
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
            if not 1 <= low <= high:
                raise ValueError
            return list(range(low, high + 1))
        count = int(text)
        if count < 1:
            raise ValueError
        return [count]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rooms must be N or A..B with 1 <= A <= B, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m fitting_room.replay",
        description="Replay store days through the engine on a virtual clock; compare policies and plan rooms.",
    )
    parser.add_argument("--profile", default="default", help="simulator profile of the store (default, boutique)")
    parser.add_argument("--history-dir", type=Path, help="data-contract folder; default: generate one in process")
    parser.add_argument("--history-sessions", type=int, default=10_000, help="size of a generated history")
    parser.add_argument("--model", choices=("trained", "oracle"), default="trained", help="duration model")
    parser.add_argument("--arrivals", choices=("poisson", "history"), default="poisson")
    parser.add_argument("--load", type=float, default=0.85, help="Poisson: offered load per room")
    parser.add_argument("--shape", choices=("flat", "store"), default="flat", help="Poisson: rate over the day")
    parser.add_argument("--day", type=date.fromisoformat, help="first day (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=1, help="days per replication")
    parser.add_argument("--rooms", type=parse_rooms, default=[3], help="N identical rooms, or A..B to plan")
    parser.add_argument("--rooms-file", type=Path, help="a rooms file layout instead of identical rooms")
    parser.add_argument("--accessible", type=float, default=0.0, help="share of customers needing access")
    parser.add_argument("--policy", choices=("fifo", "express", "both"), default="both")
    parser.add_argument("--max-passes", type=int, default=3)
    parser.add_argument("--express-aging", type=float, default=2.0, help="0 switches the aging cap off")
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--samples", type=int, default=SAMPLES, help="projection draws per estimate")
    parser.add_argument(
        "--refresh", action="store_true", help="also score the estimates re-projected after every event"
    )
    parser.add_argument("--target-p90", type=float, default=10.0, help="planning: p90 wait target, minutes")
    parser.add_argument("--plot", type=Path, help="planning: write the PNG here")
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.replications < 1 or args.days < 1:
        parser.error("--replications and --days must be at least 1")
    if args.rooms_file and len(args.rooms) > 1:
        parser.error("--rooms A..B plans identical rooms; leave out --rooms-file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replay and print the report."""
    args = parse_args(argv)
    started = time.perf_counter()
    store = load_store(args.profile, args.model, args.history_dir, args.history_sessions, args.seed)
    aging = args.express_aging if args.express_aging > 0 else None
    rules = Rules(max_passes=args.max_passes, express_aging=aging)
    rooms = (
        tuple(load_rooms(args.rooms_file)) if args.rooms_file else uniform_rooms(args.rooms[0], store.largest_basket)
    )
    scenario = Scenario(
        rooms=rooms,
        rules=rules,
        arrivals=args.arrivals,
        load=args.load,
        shape=args.shape,
        first_day=args.day,
        days=args.days,
        replications=args.replications,
        seed=args.seed,
        accessible=args.accessible,
        samples=args.samples,
        refresh=args.refresh,
    )
    if len(args.rooms) > 1:
        policy = Policy.EXPRESS if args.policy == "express" else Policy.FIFO
        scenario = replace(scenario, rules=Rules(policy, args.max_passes, aging))
        points, best = plan_rooms(store, scenario, args.rooms, args.target_p90, store.largest_basket)
        report = plan_report(points, best, args.target_p90, describe(store, scenario))
        if args.plot:
            plot_plan(points, args.target_p90, f"{store.profile.name}: p90 wait by rooms ({policy.value})", args.plot)
            report += f"\nPlot: `{args.plot}`\n"
    else:
        policies = list(Policy) if args.policy == "both" else [Policy(args.policy)]
        by_policy = run_policies(store, scenario, policies)
        report = policy_report(store, scenario, by_policy)
    report += f"\n_{time.perf_counter() - started:.0f} s on this machine._\n"
    print(report)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
