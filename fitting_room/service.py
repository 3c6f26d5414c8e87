"""Use cases of the service (assign, cancel, exit check, status, alerts) over the store, engine and models.

Plain Python: no HTTP, no clock. Every method that changes state takes `now` and runs as one store
transaction, so an acknowledged change is committed before the caller answers.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from fitting_room import engine
from fitting_room.catalog import Catalog
from fitting_room.engine import (
    Floor,
    IntervalLike,
    Prediction,
    PredictionLike,
    Room,
    RoomSpec,
    Rules,
    Session,
    SessionStatus,
    minutes_between,
)
from fitting_room.errors import ConflictError, InvalidRequestError, NotFoundError
from fitting_room.estimates import (
    WAIT_LEVEL,
    ArrivalForecast,
    PastArrival,
    Projection,
    WaitInterval,
    estimate_wait,
    forecast_arrivals,
    project,
)
from fitting_room.settings import Policy
from fitting_room.store import Alert, Completion, Store, StoreBusyError
from fitting_room.wait_pools import Pools, uses_pools

ALERT_OUTCOMES = ("theft", "false_alarm", "item_found")
# Readers that may not wait (the event loop) project floors up to this many sessions themselves, a few ms.
QUICK_PROJECTION_SESSIONS = 32
# Results kept per (floor version, moment): enough for a few moments in flight at once.
MEMO_SIZE = 8
V = TypeVar("V")


class FloorMemo(Generic[V]):
    """Results computed from one floor version as of one moment, kept for the polls that ask again.

    Kiosks and tablets polling within the same second see the same floor version: compute once. Callers that
    compute hold the store's lock or the service's projection lock; `peek` needs neither (one dict lookup).
    """

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._size = size
        self._items: dict[tuple[int, datetime], V] = {}
        self._guard = threading.Lock()  # callers under different locks may store at once

    def peek(self, version: int, at: datetime) -> V | None:
        """The result for (version, at) if it is kept."""
        return self._items.get((version, at))

    def get(self, version: int, at: datetime, compute: Callable[[], V]) -> V:
        """The result for (version, at), computed now if it is not kept."""
        key = (version, at)
        found = self._items.get(key)
        if found is None:
            found = compute()
            with self._guard:
                if len(self._items) >= self._size:
                    self._items.pop(next(iter(self._items)))  # the oldest: dicts keep insertion order
                self._items[key] = found
        return found


class DurationModel(Protocol):
    """What the service needs of the duration model."""

    def estimate(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> PredictionLike:
        """Predicted duration distribution for a basket entering at `entry_time`."""
        ...

    def interval(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> IntervalLike:
        """The same estimate's median and central interval only."""
        ...


class ReasonLike(Protocol):
    """One explained reason of an anomaly result."""

    @property
    def code(self) -> str:
        """Machine-readable reason code."""
        ...

    @property
    def message(self) -> str:
        """The reason in words a floor manager understands."""
        ...


class AnomalyLike(Protocol):
    """What the service reads of an anomaly result."""

    @property
    def is_anomaly(self) -> bool:
        """Whether staff should look at the session."""
        ...

    @property
    def anomaly_score(self) -> float:
        """0-1, higher is more suspicious."""
        ...

    @property
    def risk_level(self) -> str:
        """low, medium or high."""
        ...

    @property
    def reasons(self) -> Sequence[ReasonLike]:
        """Explanations, most important first."""
        ...

    @property
    def missing_items(self) -> Sequence[str]:
        """Items scanned in but not out."""
        ...

    @property
    def unexpected_items(self) -> Sequence[str]:
        """Items scanned out that never went in."""
        ...


class AnomalyModel(Protocol):
    """What the service needs of the anomaly detector."""

    def analyse(
        self,
        *,
        entry_scans: Sequence[str],
        exit_scans: Sequence[str],
        duration: float,
        # The stored Prediction; models.py names its own estimate type, with the same fields.
        estimate: Any,
        catalog: Catalog,
        predictor: Any,
        entry_time: datetime | None = None,
    ) -> AnomalyLike:
        """Check one finished session."""
        ...


@dataclass(frozen=True)
class SessionView:
    """A session as callers see it, with its live position and wait estimate."""

    session: Session
    position: int | None = None
    estimated_wait: float | None = None
    wait_interval: WaitInterval | None = None
    completion: Completion | None = None


@dataclass(frozen=True)
class RoomView:
    """A room with its occupant and when it is expected to free."""

    room: Room
    session: Session | None
    predicted_end: datetime | None
    predicted_free_at: datetime | None


@dataclass(frozen=True)
class FloorView:
    """All rooms and the waitlist as of one moment."""

    at: datetime
    rooms: list[RoomView]
    waitlist: list[SessionView]


@dataclass(frozen=True)
class ExitReport:
    """An exit gate's report of a finished session (fields the server knows may be omitted)."""

    session_id: str
    room_id: str
    exit_scans: Sequence[str]
    entry_scans: Sequence[str] | None = None
    entry_time: datetime | None = None
    exit_time: datetime | None = None
    actual_duration: float | None = None
    predicted_duration: float | None = None


@dataclass(frozen=True)
class ExitResult:
    """The anomaly verdict for a session and what it changed on the floor."""

    session_id: str
    anomaly: AnomalyLike
    duration: float
    predicted_duration: float
    room_released: bool = False
    next_assignment: Session | None = None
    alert_id: int | None = None


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return uuid.uuid4().hex


class FittingRoomService:
    """The store's fitting rooms: one instance per process, shared by all requests."""

    def __init__(
        self,
        store: Store,
        rules: Rules,
        catalog: Catalog,
        predictor: DurationModel,
        detector: AnomalyModel,
        new_id: Callable[[], str] = new_session_id,
    ) -> None:
        self.store = store
        self.rules = rules
        self.catalog = catalog
        self.predictor = predictor
        self.detector = detector
        self.new_id = new_id
        self._projections: FloorMemo[Projection] = FloorMemo()
        self._floor_views: FloorMemo[FloorView] = FloorMemo()
        # A large FIFO floor's pool models (see wait_pools.Pools), shared by the waits read of it at one moment. Two
        # readers may make the same model at once: each is a function of the floor version, so either one is kept.
        self._pools: FloorMemo[Pools] = FloorMemo()
        # Long projections run from a copy of the floor outside the store's lock, one at a time per store.
        self._projecting = threading.Lock()
        # Express's latest arrivals as of one floor version: every arrival is a write that bumps the version.
        self._arrivals: tuple[int, list[PastArrival]] | None = None

    def predict(self, item_ids: Sequence[str], entry_time: datetime, level: float = 0.9) -> Prediction:
        """Predicted duration (minutes) of a session with these items entering at `entry_time`."""
        return Prediction.of(self.predictor.estimate(item_ids, entry_time, self.catalog, level))

    def predict_interval(self, item_ids: Sequence[str], entry_time: datetime, level: float = 0.9) -> IntervalLike:
        """predict() without the quantile grid: the median and interval a kiosk shows."""
        return self.predictor.interval(item_ids, entry_time, self.catalog, level)

    def assign(
        self, item_ids: Sequence[str], needs_accessible: bool, now: datetime, *, server_clock: bool = False
    ) -> SessionView:
        """Give an arriving customer the best free room, or a durable place in line.

        `server_clock` says `now` was read from the server's clock (no event time in the request).
        """
        prediction = self.predict(item_ids, now)
        session = Session(
            session_id=self.new_id(),
            item_ids=tuple(item_ids),
            needs_accessible=needs_accessible,
            arrived_at=now,
            prediction=prediction,
        )
        return self.store.retrying(lambda: self._admit(session, now, server_clock))

    def _admit(self, session: Session, now: datetime, server_clock: bool) -> SessionView:
        # The view is built after the commit but under the store's lock (the floor is shared with later changes),
        # or from a copy after the lock when projecting the line takes long.
        with self.store.locked():
            with self.store.write() as tx:
                floor = tx.load_floor()
                if server_clock:
                    now = session.arrived_at = floor.catch_up(now)
                changes = engine.admit(floor, session, now)
                tx.save(floor, changes)
            if session.status is not SessionStatus.WAITLISTED:
                return self._view(floor, replace(session), now, tx.floor_version)
            # On a large floor one customer's wait costs a pool model, not the floor: no copy, no wait for others.
            one = self._one_wait(floor, session.session_id, now, tx.floor_version)
            if one is not None or self._quick_to_project(floor):
                return self._view(floor, replace(session), now, tx.floor_version, one)
            frozen = floor.copy()
        with self._projecting:
            return self._view(frozen, frozen.active[session.session_id], now, tx.floor_version)

    def cancel(self, session_id: str, now: datetime) -> SessionView:
        """Take a waiting customer out of the line."""
        return self.store.retrying(lambda: self._cancel(session_id, now))

    def _cancel(self, session_id: str, now: datetime) -> SessionView:
        with self.store.write() as tx:
            self._require_session(tx.session_exists(session_id), session_id)
            floor = tx.load_floor()
            if session_id not in floor.active:
                stored, _ = tx.get_session(session_id)
                raise ConflictError(f"session {session_id!r} is not waiting (it is {stored.status.value})")
            session = engine.cancel(floor, session_id, floor.catch_up(now))
            tx.save(floor, engine.Changes(sessions={session_id}), ended=[session])
        return SessionView(session=session)

    def session(self, session_id: str, at: datetime, *, wait: bool = True) -> SessionView:
        """A session with its position and wait as of `at`.

        `wait=False`: StoreBusyError instead of waiting for a writer or projecting the line (see floor_status).
        """
        frozen: tuple[Floor, int] | None = None
        with self.store.floor(wait) as snapshot:
            live = snapshot.floor.active.get(session_id)
            if live is not None and live.status is SessionStatus.WAITLISTED:
                floor, version = snapshot.floor, snapshot.version
                kept = self._projections.peek(version, at) is not None
                # On a large floor one customer's wait costs a pool model, not the floor: answered here at once.
                one = None if kept else self._one_wait(floor, session_id, at, version)
                if kept or one is not None or self._quick_to_project(floor):
                    return self._view(floor, replace(live), at, version, one)
                if not wait:
                    raise StoreBusyError(self.store.store_id)
                frozen = (snapshot.floor.copy(), snapshot.version)
        if frozen is not None:
            floor, version = frozen
            with self._projecting:  # writers go on meanwhile: the projection reads a copy of the floor
                return self._view(floor, floor.active[session_id], at, version)
        with self.store.read() as tx:
            stored, completion = tx.get_session(session_id)
        return SessionView(session=stored, completion=completion)

    def configure_rooms(self, specs: Sequence[RoomSpec], now: datetime) -> list[str]:
        """Replace the room configuration; new rooms go to waiting customers they fit at once.

        Returns the ids of rooms no longer configured but kept because a customer is in them.
        """
        return self.store.retrying(lambda: self._configure_rooms(specs, now))

    def _configure_rooms(self, specs: Sequence[RoomSpec], now: datetime) -> list[str]:
        with self.store.write() as tx:
            kept = tx.sync_rooms(specs)
            floor = tx.load_floor()
            tx.save(floor, engine.fill_free_rooms(floor, now, self.rules))
        return kept

    def floor_status(self, at: datetime, *, wait: bool = True) -> FloorView:
        """Every room and the waitlist as of `at`.

        `wait=False` answers only what is quick: StoreBusyError instead of waiting for a writer, or instead of
        projecting a large floor (or any under express) when no view of this floor version and moment is kept yet
        (a projection takes milliseconds to seconds as the line grows: a caller that must not stall hands that
        to a thread).
        """
        # Polls of an unchanged floor within one second find their view without the store's lock.
        version = self.store.known_version()
        kept = self._floor_views.peek(version, at) if version is not None else None
        if kept is not None:
            return kept
        with self.store.floor(wait) as snapshot:
            version = snapshot.version
            kept = self._floor_views.peek(version, at)
            if kept is not None:
                return kept
            if self._quick_to_project(snapshot.floor):
                # Views hold copies of the floor's objects, so one view can be handed to every poll that asks again.
                return self._floor_views.get(version, at, lambda: self._floor_view(snapshot.floor, at, version))
            if not wait:
                raise StoreBusyError(self.store.store_id)
            frozen = snapshot.floor.copy()
        with self._projecting:  # writers go on meanwhile: the projection reads a copy of the floor
            return self._floor_views.get(version, at, lambda: self._floor_view(frozen, at, version))

    def _floor_view(self, floor: Floor, at: datetime, version: int) -> FloorView:
        projection = self._projection(floor, at, version)
        rooms = [self._room_view(floor, room, projection, at) for room in floor.rooms.values()]
        waitlist = [
            SessionView(replace(s), i, projection.waits[s.session_id], projection.intervals[s.session_id])
            for i, s in enumerate(floor.waitlist(), start=1)
        ]
        return FloorView(at=at, rooms=rooms, waitlist=waitlist)

    def waitlist_length(self) -> int:
        """Number of customers waiting right now (cheap: no projection)."""
        with self.store.read() as tx:
            return tx.count_waiting()

    def check_exit(self, report: ExitReport, now: datetime) -> ExitResult:
        """Analyse a finished session; if it is the one in that room, complete it and free the room."""
        analysed = self.analyse_if_unknown(report, now)
        return analysed if analysed is not None else self.complete_exit(report, now)

    def complete_exit(self, report: ExitReport, now: datetime) -> ExitResult:
        """check_exit of a session the store knows (analyse_if_unknown said so): complete it and free the room."""
        return self.store.retrying(lambda: self._complete(report, now))

    def seen(self, session_id: str) -> bool:
        """True when a floor this process holds has had the session: the store knows it, for good (no I/O, no lock).

        False says nothing: analyse_if_unknown has the answer.
        """
        return self.store.seen_on_floor(session_id)

    def analyse_if_unknown(self, report: ExitReport, now: datetime, *, wait: bool = True) -> ExitResult | None:
        """The analysis of a session this store never saw (no state change); None when the store knows it."""
        with self.store.floor(wait) as snapshot:
            room_exists = report.room_id in snapshot.floor.rooms
            known = report.session_id in snapshot.floor.active or self.store.session_exists(report.session_id)
        if not room_exists:
            raise NotFoundError(f"unknown room {report.room_id!r}")
        return None if known else self._analyse_unknown(report, now)

    def list_alerts(self, status: str | None = None, limit: int = 100) -> list[Alert]:
        """Alerts for staff, open ones first."""
        with self.store.read() as tx:
            return tx.list_alerts(status, limit)

    def resolve_alert(self, alert_id: int, outcome: str, note: str | None, now: datetime) -> Alert:
        """Record what staff found for an alert (its label for the next training)."""
        if outcome not in ALERT_OUTCOMES:
            raise InvalidRequestError(f"outcome must be one of {', '.join(ALERT_OUTCOMES)}")
        return self.store.retrying(lambda: self._resolve_alert(alert_id, outcome, note, now))

    def _resolve_alert(self, alert_id: int, outcome: str, note: str | None, now: datetime) -> Alert:
        with self.store.write() as tx:
            alert = tx.get_alert(alert_id)
            if alert.status == "resolved":
                raise ConflictError(f"alert {alert_id} is already resolved as {alert.outcome!r}")
            tx.resolve_alert(alert_id, outcome, note, now)
            return tx.get_alert(alert_id)

    def _analyse_unknown(self, report: ExitReport, now: datetime) -> ExitResult:
        if report.entry_scans is None:
            raise InvalidRequestError(
                f"session {report.session_id!r} is unknown to this store: entry_scans are required"
            )
        exit_time, duration = _exit_time_and_duration(report, report.entry_time, now, on_floor=False)
        entry_time = report.entry_time or exit_time - timedelta(minutes=duration)
        estimate = self.predict(report.entry_scans, entry_time)
        anomaly = self._analyse(report.entry_scans, report.exit_scans, duration, estimate, entry_time)
        return ExitResult(
            session_id=report.session_id,
            anomaly=anomaly,
            duration=duration,
            predicted_duration=estimate.median,
        )

    def _complete(self, report: ExitReport, now: datetime) -> ExitResult:
        with self.store.write() as tx:
            floor = tx.load_floor()
            now = floor.catch_up(now)  # `now` is the server's clock: explicit times come in the report
            if report.room_id not in floor.rooms:
                raise NotFoundError(f"unknown room {report.room_id!r}")
            session = floor.active.get(report.session_id)
            if session is None:
                stored, _ = tx.get_session(report.session_id)
                raise ConflictError(
                    f"session {report.session_id!r} is {stored.status.value}, not in {report.room_id!r}"
                )
            if session.room_id != report.room_id:
                where = f"in {session.room_id!r}" if session.room_id else "waiting for a room"
                raise ConflictError(f"session {report.session_id!r} is {where}, not in {report.room_id!r}")
            assert session.assigned_at is not None
            exit_time, duration = _exit_time_and_duration(report, session.assigned_at, now, on_floor=True)
            anomaly = self._analyse(
                session.item_ids, report.exit_scans, duration, session.prediction, session.assigned_at
            )
            changes = engine.release(floor, session.session_id, report.room_id, exit_time, self.rules)
            completion = Completion(list(report.exit_scans), duration, _anomaly_record(anomaly))
            tx.save(floor, changes, ended=[session], completions={session.session_id: completion})
            alert_id = self._raise_alert(tx, session, anomaly, exit_time) if anomaly.is_anomaly else None
            promoted = replace(floor.active[changes.promoted[0]]) if changes.promoted else None
        return ExitResult(
            session_id=session.session_id,
            anomaly=anomaly,
            duration=duration,
            predicted_duration=session.prediction.median,
            room_released=True,
            next_assignment=promoted,
            alert_id=alert_id,
        )

    def _analyse(
        self,
        entry_scans: Sequence[str],
        exit_scans: Sequence[str],
        duration: float,
        estimate: Prediction,
        entry_time: datetime,
    ) -> AnomalyLike:
        return self.detector.analyse(
            entry_scans=entry_scans,
            exit_scans=exit_scans,
            duration=duration,
            estimate=estimate,
            catalog=self.catalog,
            predictor=self.predictor,
            entry_time=entry_time,
        )

    @staticmethod
    def _raise_alert(tx: Any, session: Session, anomaly: AnomalyLike, now: datetime) -> int:
        record = _anomaly_record(anomaly)
        return int(
            tx.add_alert(
                {
                    "session_id": session.session_id,
                    "room_id": session.room_id,
                    "raised_at": now,
                    "anomaly_score": record["anomaly_score"],
                    "risk_level": record["risk_level"],
                    "reasons": record["reasons"],
                    "missing_items": record["missing_items"],
                    "unexpected_items": record["unexpected_items"],
                }
            )
        )

    def _quick_to_project(self, floor: Floor) -> bool:
        """True when projecting this whole floor takes a few milliseconds at most (FIFO, a small floor)."""
        # About 0.1-0.2 ms per session on the floor under FIFO; express's forecast reads the store and its
        # newcomers make it costlier, so it never counts as quick. A large FIFO floor costs about 5 µs per
        # session (pool models, see estimates.project): quick for one customer (_one_wait), not for all of them.
        return self.rules.policy is Policy.FIFO and len(floor.active) <= QUICK_PROJECTION_SESSIONS

    def _one_wait(self, floor: Floor, session_id: str, at: datetime, version: int) -> tuple[float, WaitInterval] | None:
        """One waiting customer's wait from a pool model of a large floor; None when it takes the whole projection."""
        if not uses_pools(floor, self.rules):
            return None
        return estimate_wait(floor, session_id, at, self.rules, pools=self._pool_models(floor, at, version))

    def _pool_models(self, floor: Floor, at: datetime, version: int) -> Pools:
        """The pool models of this floor version and moment, shared by every wait read of it."""
        return self._pools.get(version, at, lambda: Pools(floor, at, WAIT_LEVEL))

    def _view(
        self,
        floor: Floor,
        session: Session,
        at: datetime,
        version: int,
        one: tuple[float, WaitInterval] | None = None,
    ) -> SessionView:
        if session.status is not SessionStatus.WAITLISTED:
            return SessionView(session=session, estimated_wait=0.0)
        if one is None:
            projection = self._projection(floor, at, version)
            one = (projection.waits[session.session_id], projection.intervals[session.session_id])
        return SessionView(
            session=session,
            position=floor.position(session.session_id),
            estimated_wait=one[0],
            wait_interval=one[1],
        )

    def _projection(self, floor: Floor, at: datetime, version: int) -> Projection:
        # The latest arrivals change only with the floor version, so the memo's key still covers everything.
        def compute() -> Projection:
            # The pool models the session reads of this moment made are this projection's too.
            pools = self._pool_models(floor, at, version) if uses_pools(floor, self.rules) else None
            return project(floor, at, self.rules, arrivals=self._arrival_forecast(at, version), pools=pools)

        return self._projections.get(version, at, compute)

    def _arrival_forecast(self, at: datetime, version: int) -> ArrivalForecast | None:
        """Who express expects to arrive, from the store's latest arrivals (FIFO's waits do not depend on it)."""
        if self.rules.policy is not Policy.EXPRESS:
            return None
        if self._arrivals is None or self._arrivals[0] != version:
            with self.store.read() as tx:
                self._arrivals = (version, tx.recent_arrivals())
        latest = self._arrivals[1]
        if latest and at < latest[0].arrived_at:  # as of a moment before the latest arrival (`?at=` earlier)
            with self.store.read() as tx:
                latest = tx.recent_arrivals(at)
        return forecast_arrivals(latest, at)

    @staticmethod
    def _room_view(floor: Floor, room: Room, projection: Projection, at: datetime) -> RoomView:
        session = floor.active.get(room.session_id) if room.session_id else None
        if session is None or session.assigned_at is None:
            return RoomView(room=replace(room), session=None, predicted_end=None, predicted_free_at=None)
        predicted_end = session.assigned_at + timedelta(minutes=session.prediction.median)
        free_at = at + timedelta(minutes=projection.room_free_in[room.room_id])
        return RoomView(
            room=replace(room), session=replace(session), predicted_end=predicted_end, predicted_free_at=free_at
        )

    @staticmethod
    def _require_session(exists: bool, session_id: str) -> None:
        if not exists:
            raise NotFoundError(f"unknown session {session_id!r}")


def _exit_time_and_duration(
    report: ExitReport, entry_time: datetime | None, now: datetime, *, on_floor: bool
) -> tuple[datetime, float]:
    """Exit time and duration (minutes) of a report; missing ones follow from the others.

    A session on the floor leaves at `exit_time`, else now: an event without a time happens when it is reported,
    and an exit dated entry + actual_duration could lie in the future and block the room's next arrival. An
    unknown session (analysis only) is dated exit_time, else entry + actual_duration, else now.
    """
    if report.actual_duration is None and entry_time is None:
        raise InvalidRequestError("give actual_duration, or entry_time with exit_time")
    if report.exit_time is not None:
        exit_time = report.exit_time
    elif not on_floor and report.actual_duration is not None and entry_time is not None:
        exit_time = entry_time + timedelta(minutes=report.actual_duration)
    else:
        exit_time = now
    if report.actual_duration is not None:
        return exit_time, report.actual_duration
    assert entry_time is not None
    duration = minutes_between(entry_time, exit_time)
    if duration < 0:
        raise InvalidRequestError(
            f"exit_time {exit_time.isoformat()} is before the entry time {entry_time.isoformat()}"
        )
    return exit_time, duration


def _anomaly_record(anomaly: AnomalyLike) -> dict[str, Any]:
    return {
        "is_anomaly": bool(anomaly.is_anomaly),
        "anomaly_score": float(anomaly.anomaly_score),
        "risk_level": anomaly.risk_level,
        "reasons": [{"code": r.code, "message": r.message} for r in anomaly.reasons],
        "missing_items": list(anomaly.missing_items),
        "unexpected_items": list(anomaly.unexpected_items),
    }
