"""Rooms, sessions and the waitlist of one store: the assignment rules as plain Python over a snapshot.

The engine never reads the clock and never touches the database: every operation takes `now` and mutates a
`Floor` (the store's rooms plus its active sessions) in place, recording what it touched in `Changes` so the
store can write exactly those rows in the same transaction. The same code runs the API, the tests and the
store-day replay.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from fitting_room.errors import ConflictError, InvalidRequestError, NotFoundError
from fitting_room.settings import Policy

# How far a server-clock time may lag the floor's last event and still be taken as "now" (see Floor.catch_up).
CLOCK_SKEW = timedelta(seconds=2)


class SessionStatus(StrEnum):
    """Life cycle of a customer's visit: waitlisted → assigned → completed, or waitlisted → cancelled."""

    WAITLISTED = "waitlisted"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


ACTIVE = (SessionStatus.WAITLISTED, SessionStatus.ASSIGNED)


@dataclass(frozen=True)
class RoomSpec:
    """A fitting room as configured in the rooms file."""

    room_id: str
    max_items: int
    accessible: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)


class PredictionLike(Protocol):
    """A duration model's estimate, as any model spells it."""

    @property
    def median(self) -> float:
        """Median minutes."""
        ...

    @property
    def low(self) -> float:
        """Lower end of the central interval."""
        ...

    @property
    def high(self) -> float:
        """Upper end of the central interval."""
        ...

    @property
    def level(self) -> float:
        """Coverage of the interval."""
        ...

    @property
    def quantiles(self) -> Sequence[float]:
        """Evenly spaced quantile grid."""
        ...

    @property
    def unknown_item_ids(self) -> Sequence[str]:
        """Items the model did not know."""
        ...


@dataclass(frozen=True)
class Prediction:
    """Predicted session duration in minutes: median, a central interval and a quantile grid."""

    median: float
    low: float
    high: float
    level: float
    quantiles: tuple[float, ...]
    unknown_item_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, estimate: PredictionLike) -> Prediction:
        """The engine's copy of a model's estimate (plain floats and tuples, as the store keeps them)."""
        return cls(
            median=float(estimate.median),
            low=float(estimate.low),
            high=float(estimate.high),
            level=float(estimate.level),
            quantiles=tuple(float(q) for q in estimate.quantiles),
            unknown_item_ids=tuple(estimate.unknown_item_ids),
        )


@dataclass
class Room:
    """A room's live state; `free_since` is None for a room never used (it counts as free longest)."""

    spec: RoomSpec
    session_id: str | None = None
    free_since: datetime | None = None
    last_event_at: datetime | None = None

    @property
    def room_id(self) -> str:
        """The room's id."""
        return self.spec.room_id

    @property
    def is_free(self) -> bool:
        """True when no session occupies the room."""
        return self.session_id is None


@dataclass
class Session:
    """One customer's visit, from arrival at the kiosk to leaving the room or the line."""

    session_id: str
    item_ids: tuple[str, ...]
    needs_accessible: bool
    arrived_at: datetime
    prediction: Prediction
    status: SessionStatus = SessionStatus.WAITLISTED
    queue_seq: int | None = None
    passed_over: int = 0
    room_id: str | None = None
    assigned_at: datetime | None = None
    ended_at: datetime | None = None
    last_event_at: datetime | None = None

    @property
    def item_count(self) -> int:
        """Number of items the customer carries in."""
        return len(self.item_ids)


@dataclass(frozen=True)
class Rules:
    """Assignment policy: waitlist order, the overtaking bound and express's aging cap.

    `express_aging` (express only; None switches it off): a customer who has waited `express_aging` times
    the wait a newcomer with the same needs would face in a FIFO line right now is served in arrival order.
    """

    policy: Policy = Policy.FIFO
    max_passes: int = 3
    express_aging: float | None = 2.0


@dataclass
class Changes:
    """Ids of the rows an operation touched, so the store writes exactly those."""

    rooms: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    promoted: list[str] = field(default_factory=list)

    def merge(self, other: Changes) -> None:
        """Add another operation's changes to these."""
        self.rooms |= other.rooms
        self.sessions |= other.sessions
        self.promoted.extend(other.promoted)


@dataclass
class Floor:
    """A store's rooms and its active (waitlisted or assigned) sessions, as one consistent snapshot."""

    rooms: dict[str, Room]
    active: dict[str, Session]
    next_queue_seq: int = 1

    def waitlist(self) -> list[Session]:
        """Waiting customers in arrival order (position 1 first)."""
        waiting = [s for s in self.active.values() if s.status is SessionStatus.WAITLISTED]
        return sorted(waiting, key=_queue_seq)

    def positions(self) -> dict[str, int]:
        """1-based waitlist position of every waiting customer, contiguous by construction."""
        return {s.session_id: i for i, s in enumerate(self.waitlist(), start=1)}

    def catch_up(self, now: datetime, max_skew: timedelta = CLOCK_SKEW) -> datetime:
        """A server-clock time moved up to the floor's latest event when it lags by at most `max_skew`.

        A request reads the clock before it queues for the write lock, so another request may commit a slightly
        later event first; such a lag is not a client's mistake and must not become a 422.
        """
        latest = max((r.last_event_at for r in self.rooms.values() if r.last_event_at), default=None)
        if latest is not None and now < latest <= now + max_skew:
            return latest
        return now

    def room(self, room_id: str) -> Room:
        """The room with this id, or NotFoundError."""
        try:
            return self.rooms[room_id]
        except KeyError:
            raise NotFoundError(f"unknown room {room_id!r}") from None


def _queue_seq(session: Session) -> int:
    assert session.queue_seq is not None, "waitlisted sessions always have a queue number"
    return session.queue_seq


def fits(room: RoomSpec, item_count: int, needs_accessible: bool) -> bool:
    """True when a customer with this many items (and accessibility need) may use the room."""
    return item_count <= room.max_items and (room.accessible or not needs_accessible)


def check_admissible(rooms: Iterable[RoomSpec], item_count: int, needs_accessible: bool) -> None:
    """Raise InvalidRequestError when no configured room could ever take this customer."""
    specs = [r for r in rooms if r.accessible or not needs_accessible]
    if not specs:
        raise InvalidRequestError("this store has no accessible fitting room")
    largest = max(r.max_items for r in specs)
    if item_count > largest:
        kind = "accessible room" if needs_accessible else "room"
        raise InvalidRequestError(f"{item_count} items do not fit any {kind}: the largest takes {largest} items")


def best_free_room(rooms: Iterable[Room], item_count: int, needs_accessible: bool) -> Room | None:
    """Best fit: the free room with least spare capacity, accessible rooms last, then free longest."""
    candidates = [r for r in rooms if r.is_free and fits(r.spec, item_count, needs_accessible)]
    if not candidates:
        return None
    return min(candidates, key=lambda r: _fit_key(r, item_count, needs_accessible))


def _fit_key(room: Room, item_count: int, needs_accessible: bool) -> tuple[bool, int, float, str]:
    spare_accessible = room.spec.accessible and not needs_accessible
    free_since = room.free_since.timestamp() if room.free_since else float("-inf")
    return (spare_accessible, room.spec.max_items - item_count, free_since, room.room_id)


def _ensure_not_before(event: str, now: datetime, last: datetime | None) -> None:
    if last is not None and now < last:
        raise InvalidRequestError(
            f"{event} at {now.isoformat()} is earlier than the last event ({last.isoformat()}) it would change"
        )


def admit(floor: Floor, session: Session, now: datetime) -> Changes:
    """Seat a newly arrived customer in the best free room, or put them at the end of the line."""
    check_admissible((r.spec for r in floor.rooms.values()), session.item_count, session.needs_accessible)
    room = best_free_room(floor.rooms.values(), session.item_count, session.needs_accessible)
    if room is not None:
        _ensure_not_before("arrival", now, room.last_event_at)  # before any change: errors change nothing
    changes = Changes(sessions={session.session_id})
    floor.active[session.session_id] = session
    session.last_event_at = now
    if room is not None:
        _seat(session, room, now, changes)
        return changes
    session.status = SessionStatus.WAITLISTED
    session.queue_seq = floor.next_queue_seq
    floor.next_queue_seq += 1
    return changes


def _seat(session: Session, room: Room, now: datetime, changes: Changes) -> None:
    session.status = SessionStatus.ASSIGNED
    session.room_id = room.room_id
    session.assigned_at = now
    session.queue_seq = None
    session.last_event_at = now
    room.session_id = session.session_id
    room.free_since = None
    room.last_event_at = now
    changes.rooms.add(room.room_id)
    changes.sessions.add(session.session_id)


def promotion_order(waiting: Sequence[Session], rules: Rules, due: Collection[str] = ()) -> list[Session]:
    """Waiting customers in the order a freed room is offered to them under the policy.

    Customers passed over `max_passes` times come first (the next fitting room is held for them), then
    those the aging cap made `due`, both in arrival order; then FIFO is arrival order and express is
    shortest predicted session first.
    """

    def key(s: Session) -> tuple[int, float, int]:
        if s.passed_over >= rules.max_passes:
            return (0, 0.0, _queue_seq(s))
        if s.session_id in due:
            return (1, 0.0, _queue_seq(s))
        length = s.prediction.median if rules.policy is Policy.EXPRESS else 0.0
        return (2, length, _queue_seq(s))

    return sorted(waiting, key=key)


def aging_due(floor: Floor, now: datetime, rules: Rules) -> frozenset[str]:
    """Express's aging cap: waiting customers who have waited `express_aging` times a FIFO newcomer's wait.

    The reference is derived from the floor alone (no stored deadline): the expected wait of someone with
    the same needs joining a FIFO line now. Under FIFO, everyone waits about what the line looked like on
    arrival, so this caps how far express may stretch a wait beyond what FIFO currently gives.
    """
    if rules.policy is not Policy.EXPRESS or rules.express_aging is None:
        return frozenset()
    waiting = floor.waitlist()
    if len(waiting) < 2:
        return frozenset()
    fifo = replace(rules, policy=Policy.FIFO)
    plan = list_schedule(floor, now, promotion_order(waiting, fifo), expected_remaining, expected_duration)
    return frozenset(
        s.session_id
        for s in waiting
        if minutes_between(s.arrived_at, now) >= rules.express_aging * plan.join_wait(floor, s)
    )


def fill_free_rooms(floor: Floor, now: datetime, rules: Rules) -> Changes:
    """Give every free room to the first waiting customer it fits, until no free room fits anyone."""
    changes = Changes()
    free = sorted(
        (r for r in floor.rooms.values() if r.is_free),
        key=lambda r: (r.free_since.timestamp() if r.free_since else float("-inf"), r.room_id),
    )
    for room in free:
        chosen = next_in_line(floor, room.spec, now, rules)
        if chosen is None:
            continue
        _count_passed_over(floor, chosen, room, changes)
        _seat(chosen, room, now, changes)
        changes.promoted.append(chosen.session_id)
    return changes


def next_in_line(floor: Floor, spec: RoomSpec, now: datetime, rules: Rules) -> Session | None:
    """The waiting customer a room with this spec goes to at `now` under the rules, if it fits anyone."""
    order = promotion_order(floor.waitlist(), rules, aging_due(floor, now, rules))
    return next((s for s in order if fits(spec, s.item_count, s.needs_accessible)), None)


def _count_passed_over(floor: Floor, chosen: Session, room: Room, changes: Changes) -> None:
    # Passed over means: the room was yours in arrival order (you are the longest-waiting customer it
    # fits) and it went to someone else. Counting everyone ahead instead would cap express after a few
    # short sessions and turn it back into FIFO; those further back are protected by the aging cap.
    first = next((s for s in floor.waitlist() if fits(room.spec, s.item_count, s.needs_accessible)), None)
    if first is not None and first is not chosen:
        first.passed_over += 1
        changes.sessions.add(first.session_id)


def release(floor: Floor, session_id: str, room_id: str, now: datetime, rules: Rules) -> Changes:
    """Complete the session occupying `room_id`, free the room and promote whoever it fits first."""
    room = floor.room(room_id)
    session = floor.active.get(session_id)
    if room.session_id != session_id or session is None:
        occupant = f"session {room.session_id!r}" if room.session_id else "nobody"
        raise ConflictError(f"session {session_id!r} is not in {room_id!r} (occupied by {occupant})")
    _ensure_not_before("exit", now, room.last_event_at)
    # The freed room goes to a waiting customer at the exit's time: refuse before changing anything if
    # that customer only arrived later (the exit report is out of order).
    heir = next_in_line(floor, room.spec, now, rules)
    if heir is not None:
        _ensure_not_before("exit", now, heir.last_event_at)
    session.status = SessionStatus.COMPLETED
    session.ended_at = now
    session.last_event_at = now
    del floor.active[session_id]
    room.session_id = None
    room.free_since = now
    room.last_event_at = now
    changes = Changes(rooms={room_id}, sessions={session_id})
    changes.merge(fill_free_rooms(floor, now, rules))
    return changes


def cancel(floor: Floor, session_id: str, now: datetime) -> Session:
    """Take a waiting customer out of the line; positions behind them close up."""
    session = floor.active.get(session_id)
    if session is None or session.status is not SessionStatus.WAITLISTED:
        state = session.status.value if session else "not active"
        raise ConflictError(f"session {session_id!r} is not waiting (it is {state})")
    _ensure_not_before("cancellation", now, session.last_event_at)
    session.status = SessionStatus.CANCELLED
    session.queue_seq = None
    session.ended_at = now
    session.last_event_at = now
    del floor.active[session_id]
    return session


# Below this a projection would tell a customer "now" while nobody has left yet.
MIN_REMAINING_MINUTES = 0.5


def minutes_between(start: datetime, end: datetime) -> float:
    """Minutes from start to end (negative when end is earlier)."""
    return (end - start).total_seconds() / 60.0


def expected_duration(session: Session) -> float:
    """Mean session length (minutes) over the prediction's evenly spaced quantile grid."""
    grid = session.prediction.quantiles
    return sum(grid) / len(grid)


def expected_remaining(session: Session, elapsed: float) -> float:
    """Expected minutes left after `elapsed` minutes in the room, E[D - e | D > e] over the quantile grid."""
    grid = session.prediction.quantiles
    beyond = [q - elapsed for q in grid if q > elapsed]
    if beyond:
        return max(sum(beyond) / len(beyond), MIN_REMAINING_MINUTES)
    # Past every grid point: the tail beyond it is about as long as the last grid step.
    step = grid[-1] - grid[-2] if len(grid) > 1 else grid[-1]
    return max(step, MIN_REMAINING_MINUTES)


Remaining = Callable[[Session, float], float]
Duration = Callable[[Session], float]


@dataclass(frozen=True)
class Schedule:
    """A point projection: minutes from `now` until each customer is seated and until rooms free."""

    starts: dict[str, float]
    room_free_in: dict[str, float]
    free_after: dict[str, float]

    def join_wait(self, floor: Floor, session: Session) -> float:
        """Wait of a newcomer with this session's needs who joins behind everyone scheduled."""
        # No fitting room at all (taken out of the rooms file while they wait): no finite wait to compare.
        return min(
            (
                t
                for room_id, t in self.free_after.items()
                if fits(floor.rooms[room_id].spec, session.item_count, session.needs_accessible)
            ),
            default=math.inf,
        )


def list_schedule(
    floor: Floor, now: datetime, order: Sequence[Session], remaining: Remaining, duration: Duration
) -> Schedule:
    """Run the line forward with one duration per session, each freed room going to the first in `order` it fits."""
    # The same rule as fill_free_rooms; passes earned on the way are ignored, the order is fixed at `now`.
    room_free_in: dict[str, float] = {}
    for room_id in sorted(floor.rooms):
        occupant = floor.active.get(floor.rooms[room_id].session_id or "")
        if occupant is None or occupant.assigned_at is None:
            room_free_in[room_id] = 0.0
        else:
            room_free_in[room_id] = remaining(occupant, max(minutes_between(occupant.assigned_at, now), 0.0))
    free_after = dict(room_free_in)
    heap = [(t, room_id) for room_id, t in room_free_in.items()]
    heapq.heapify(heap)
    pending = list(order)
    starts: dict[str, float] = {}
    while heap and pending:
        t, room_id = heapq.heappop(heap)
        spec = floor.rooms[room_id].spec
        chosen = next((s for s in pending if fits(spec, s.item_count, s.needs_accessible)), None)
        if chosen is None:
            continue  # nobody left in line fits this room: it stays free
        pending.remove(chosen)
        starts[chosen.session_id] = t
        free_after[room_id] = t + duration(chosen)
        heapq.heappush(heap, (free_after[room_id], room_id))
    return Schedule(starts=starts, room_free_in=room_free_in, free_after=free_after)
