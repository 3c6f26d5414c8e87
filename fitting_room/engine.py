"""Rooms, sessions and the waitlist of one store: the assignment rules as plain Python over a snapshot.

The engine never reads the clock and never touches the database: every operation takes `now` and mutates a
`Floor` (the store's rooms plus its active sessions) in place, recording what it touched in `Changes` so the
store can write exactly those rows in the same transaction. The same code runs the API, the tests and the
store-day replay.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter
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


class IntervalLike(Protocol):
    """A duration model's median and central interval, as any model spells them."""

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
    def unknown_item_ids(self) -> Sequence[str]:
        """Items the model did not know."""
        ...


class PredictionLike(IntervalLike, Protocol):
    """A duration model's estimate, as any model spells it: the interval and a quantile grid."""

    @property
    def quantiles(self) -> Sequence[float]:
        """Evenly spaced quantile grid."""
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
            quantiles=tuple(map(float, estimate.quantiles)),
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
    arrived: set[str] = field(default_factory=set)  # sessions created here: rows to insert, not update

    def merge(self, other: Changes) -> None:
        """Add another operation's changes to these."""
        self.rooms |= other.rooms
        self.sessions |= other.sessions
        self.promoted.extend(other.promoted)
        self.arrived |= other.arrived


@dataclass
class Floor:
    """A store's rooms and its active (waitlisted or assigned) sessions, as one consistent snapshot.

    Engine operations keep a private index of the floor (free rooms by size, the line by arrival number, waiting
    customers by their needs, occupied rooms by expected end, the line's expected minutes per need) so that each
    costs about log(size), and so that wait estimates of a large floor read samples of it (see `busy_sample`,
    `line_sample`) instead of all of it. It is built on first use and follows every
    change the engine makes; adding or removing rooms or sessions in the dicts directly is noticed and rebuilds
    it, but a Room's or Session's fields changed outside the engine need a `reindex()` afterwards.
    """

    rooms: dict[str, Room]
    active: dict[str, Session]
    next_queue_seq: int = 1
    _index: _FloorIndex | None = field(default=None, init=False, repr=False, compare=False)

    def _indexed(self) -> _FloorIndex:
        """The floor's index, (re)built when missing or when the dicts were changed behind the engine's back."""
        index = self._index
        if index is None or not index.matches(self):
            index = self._index = _FloorIndex(self)
        return index

    def reindex(self) -> None:
        """Forget the index: call after changing Room or Session fields outside the engine's functions."""
        self._index = None

    def copy(self) -> Floor:
        """A copy whose rooms and sessions are copies too: it stays as it is while this floor changes."""
        return Floor(
            rooms={room_id: replace(room) for room_id, room in self.rooms.items()},
            active={session_id: replace(session) for session_id, session in self.active.items()},
            next_queue_seq=self.next_queue_seq,
        )

    def waitlist(self) -> list[Session]:
        """Waiting customers in arrival order (position 1 first)."""
        return [self.active[session_id] for _, session_id in self._indexed().line]

    def positions(self) -> dict[str, int]:
        """1-based waitlist position of every waiting customer, contiguous by construction."""
        return {session_id: i for i, (_, session_id) in enumerate(self._indexed().line, start=1)}

    def position(self, session_id: str) -> int | None:
        """1-based waitlist position of one customer, None when they are not waiting."""
        return self._indexed().position(session_id)

    def room_kinds(self) -> dict[Bucket, int]:
        """Number of rooms of each kind, (accessible, max_items), free or occupied."""
        return dict(self._indexed().room_counts)

    def busy_rooms(self, kind: Bucket) -> int:
        """Number of rooms of this kind whose occupant is seated (has an assigned_at)."""
        return len(self._indexed().busy.get(kind, ()))

    def busy_sample(self, kind: Bucket, count: int) -> list[Room]:
        """Up to `count` occupied rooms of a kind, evenly spaced in the order their sessions are expected to end."""
        keys = self._indexed().busy.get(kind, [])
        return [self.rooms[room_id] for _, room_id in _evenly_spaced(keys, count)]

    def line_needs(self) -> dict[Need, int]:
        """Number of waiting customers of each kind of needs, (item count, needs accessible)."""
        return {need: len(keys) for need, keys in self._indexed().by_need.items()}

    def line_minutes(self, need: Need) -> float:
        """Sum of the expected session lengths (expected_duration) of the customers waiting with these needs."""
        return self._indexed().line_micros.get(need, 0) / _MICROS

    def line_sample(self, need: Need, count: int) -> list[Session]:
        """Up to `count` customers waiting with these needs, evenly spaced in arrival order."""
        keys = self._indexed().by_need.get(need, [])
        return [self.active[session_id] for _, session_id in _evenly_spaced(keys, count)]

    def ahead(self, session_id: str, need: Need) -> int:
        """Customers with these needs waiting ahead of a waiting customer (arrived before them)."""
        index = self._indexed()
        seq = index.queue_number(session_id)
        return bisect.bisect_left(index.by_need.get(need, []), (seq, session_id))

    def seated_occupant(self, room_id: str) -> Session | None:
        """The room's occupant once seated (has an assigned_at), else None."""
        session_id = self.rooms[room_id].session_id
        session = self.active.get(session_id) if session_id else None
        return session if session is not None and session.assigned_at is not None else None

    def holds_anyone(self, max_passes: int) -> bool:
        """Whether a waiting customer is held: passed over `max_passes` times (> 0) or more, served first."""
        if max_passes <= 0:
            return False  # everyone counts as held, so arrival order is still the order
        return any(passes >= max_passes for passes in self._indexed().pass_counts)

    def catch_up(self, now: datetime, max_skew: timedelta = CLOCK_SKEW) -> datetime:
        """A server-clock time moved up to the floor's latest event when it lags by at most `max_skew`.

        A request reads the clock before it queues for the write lock, so another request may commit a slightly
        later event first; such a lag is not a client's mistake and must not become a 422.
        """
        latest = self._indexed().latest_event(self)
        if latest is not None and now < latest <= now + max_skew:
            return latest
        return now

    def room(self, room_id: str) -> Room:
        """The room with this id, or NotFoundError."""
        try:
            return self.rooms[room_id]
        except KeyError:
            raise NotFoundError(f"unknown room {room_id!r}") from None


Need = tuple[int, bool]  # (item count, needs an accessible room): customers with equal needs fit the same rooms
Bucket = tuple[bool, int]  # (accessible, max_items): rooms of one kind
# Sums of expected minutes are kept as integer microminutes: the same line gives the same sum whatever the order
# customers joined and left it in (float sums would drift with the history).
_MICROS = 1_000_000


def _need(session: Session) -> Need:
    return (session.item_count, session.needs_accessible)


def _micros(session: Session) -> int:
    return round(expected_duration(session) * _MICROS)


def _busy_key(room: Room, occupant: Session) -> tuple[float, str]:
    """Order of occupied rooms: when the session is expected to end (seated time plus its median), then by id."""
    assert occupant.assigned_at is not None
    return (occupant.assigned_at.timestamp() + 60.0 * occupant.prediction.median, room.room_id)


def _evenly_spaced(values: Sequence[Any], count: int) -> Sequence[Any]:
    """`count` values at the middle of equal slices of a sorted list (all of them when it is no longer)."""
    n = len(values)
    if n <= count:
        return values
    return [values[(2 * i + 1) * n // (2 * count)] for i in range(count)]


def _free_key(room: Room) -> tuple[float, str]:
    """Order of free rooms: free longest first (never used counts as longest), then by id."""
    return (room.free_since.timestamp() if room.free_since else float("-inf"), room.room_id)


class _FloorIndex:
    """Sorted views of one Floor, kept right by the engine's operations (see Floor).

    Lists are kept sorted with bisect: a search is O(log n) and an insert or removal moves at most n pointers,
    a memmove that stays in microseconds at 10,000 entries. Kinds of rooms and kinds of needs are few (sizes
    times accessibility), so scanning those is constant work whatever the floor's size.
    """

    def __init__(self, floor: Floor) -> None:
        """Index the floor as it is now."""
        self._rooms_ref, self._active_ref = floor.rooms, floor.active
        self._sizes = (len(floor.rooms), len(floor.active))
        self.largest: dict[bool, int | None] = {
            needs: max((r.spec.max_items for r in floor.rooms.values() if r.spec.accessible or not needs), default=None)
            for needs in (False, True)
        }
        self.free: dict[Bucket, list[tuple[float, str]]] = {}
        self._free_keys: dict[str, tuple[Bucket, tuple[float, str]]] = {}
        self._latest: datetime | None = None
        self._latest_known = False
        for room in floor.rooms.values():
            self.free.setdefault(_bucket(room.spec), [])
            if room.is_free:
                self.room_freed(room)
        self.buckets = sorted(self.free)  # (accessible, max_items): the best-fit order of room kinds
        self.room_counts = Counter(_bucket(room.spec) for room in floor.rooms.values())
        # Seated rooms of each kind in the order their sessions should end: wait estimates of a large floor read
        # an evenly spaced sample of them (a sample stratified by end time) instead of every room.
        self.busy: dict[Bucket, list[tuple[float, str]]] = {bucket: [] for bucket in self.buckets}
        for room in floor.rooms.values():
            occupant = floor.active.get(room.session_id) if room.session_id else None
            if occupant is not None and occupant.assigned_at is not None:
                self.busy[_bucket(room.spec)].append(_busy_key(room, occupant))
        for keys in self.busy.values():
            keys.sort()
        self.line: list[tuple[int, str]] = []
        self.by_need: dict[Need, list[tuple[int, str]]] = {}
        self.passed: dict[Need, list[tuple[int, str]]] = {}
        self.line_micros: dict[Need, int] = {}  # expected minutes of the customers waiting with each need
        # How many waiting customers were passed over how many times (> 0): whether anyone is held, without a scan.
        self.pass_counts: Counter[int] = Counter()
        self._passes: dict[str, int] = {}
        self._entries: dict[str, tuple[int, Need, int]] = {}
        for session in floor.active.values():
            if session.status is SessionStatus.WAITLISTED:
                self.joined(session)

    def matches(self, floor: Floor) -> bool:
        """Whether the floor's dicts are still the ones indexed, with the entries the engine put there."""
        return (
            floor.rooms is self._rooms_ref
            and floor.active is self._active_ref
            and (len(floor.rooms), len(floor.active)) == self._sizes
        )

    def resized(self, floor: Floor) -> None:
        """Record the engine's own insertion or removal of an active session."""
        self._sizes = (len(floor.rooms), len(floor.active))

    def is_waiting(self, session_id: str) -> bool:
        """Whether the customer is in the indexed line."""
        return session_id in self._entries

    def position(self, session_id: str) -> int | None:
        """1-based place in line, None when not waiting."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        return bisect.bisect_left(self.line, (entry[0], session_id)) + 1

    def queue_number(self, session_id: str) -> int:
        """A waiting customer's queue number (KeyError when not waiting)."""
        return self._entries[session_id][0]

    def joined(self, session: Session) -> None:
        """A customer now waits with their queue number."""
        key = (_queue_seq(session), session.session_id)
        need, micros = _need(session), _micros(session)
        self._entries[session.session_id] = (key[0], need, micros)
        bisect.insort(self.line, key)
        bisect.insort(self.by_need.setdefault(need, []), key)
        self.line_micros[need] = self.line_micros.get(need, 0) + micros
        if session.passed_over > 0:
            bisect.insort(self.passed.setdefault(need, []), key)
            self._count_passes(session.session_id, session.passed_over)

    def left_line(self, session_id: str) -> None:
        """A customer no longer waits (seated or cancelled)."""
        seq, need, micros = self._entries.pop(session_id)
        key = (seq, session_id)
        _remove_sorted(self.line, key)
        _remove_sorted(self.by_need[need], key)
        self.line_micros[need] -= micros
        if not self.by_need[need]:
            del self.by_need[need]
            del self.line_micros[need]
        self._count_passes(session_id, 0)
        passed = self.passed.get(need)
        if passed is not None and _remove_sorted(passed, key) and not passed:
            del self.passed[need]

    def passed_over(self, session: Session) -> None:
        """A waiting customer's pass count went up."""
        if session.passed_over == 1:
            seq, need, _ = self._entries[session.session_id]
            bisect.insort(self.passed.setdefault(need, []), (seq, session.session_id))
        self._count_passes(session.session_id, session.passed_over)

    def _count_passes(self, session_id: str, passes: int) -> None:
        """Record a waiting customer's pass count (0: not passed over, or left the line)."""
        before = self._passes.pop(session_id, 0)
        if before:
            self.pass_counts[before] -= 1
            if not self.pass_counts[before]:
                del self.pass_counts[before]
        if passes:
            self._passes[session_id] = passes
            self.pass_counts[passes] += 1

    def room_freed(self, room: Room) -> None:
        """A room is free (with its free_since set)."""
        bucket, key = _bucket(room.spec), _free_key(room)
        self._free_keys[room.room_id] = (bucket, key)
        bisect.insort(self.free[bucket], key)

    def room_taken(self, room: Room) -> None:
        """A free room is occupied."""
        bucket, key = self._free_keys.pop(room.room_id)
        _remove_sorted(self.free[bucket], key)

    def room_seated(self, room: Room, occupant: Session) -> None:
        """A room's occupant is seated (assigned_at set): the room joins its kind's busy list."""
        bisect.insort(self.busy[_bucket(room.spec)], _busy_key(room, occupant))

    def room_vacated(self, room: Room, occupant: Session) -> None:
        """A room's seated occupant left: the room leaves its kind's busy list."""
        # The key again from the occupant at hand (their fields change only through the engine): no map to keep.
        if occupant.assigned_at is not None:
            _remove_sorted(self.busy[_bucket(room.spec)], _busy_key(room, occupant))

    def room_event(self, room: Room, now: datetime) -> None:
        """Set a room's last event time, keeping the floor's latest event known."""
        previous = room.last_event_at
        room.last_event_at = now
        if not self._latest_known:
            return
        if self._latest is None or now >= self._latest:
            self._latest = now
        elif previous is not None and previous >= self._latest:
            self._latest_known = False  # the latest room event moved back: recount on demand

    def latest_event(self, floor: Floor) -> datetime | None:
        """Latest last_event_at over the rooms."""
        if not self._latest_known:
            self._latest = max((r.last_event_at for r in floor.rooms.values() if r.last_event_at), default=None)
            self._latest_known = True
        return self._latest

    def fitting_needs(self, spec: RoomSpec) -> Iterable[Need]:
        """Needs of waiting customers that the room fits."""
        return (need for need in self.by_need if fits(spec, *need))

    def first_fitting(self, spec: RoomSpec) -> str | None:
        """Longest-waiting customer the room fits (arrival order), as a session id."""
        heads = [self.by_need[need][0] for need in self.fitting_needs(spec)]
        return min(heads)[1] if heads else None

    def first_held(self, floor: Floor, spec: RoomSpec, max_passes: int) -> str | None:
        """Longest-waiting customer the room fits among those passed over `max_passes` times or more."""
        if max_passes <= 0:
            return self.first_fitting(spec)
        held = [
            next((key for key in self.passed[need] if floor.active[key[1]].passed_over >= max_passes), None)
            for need in self.fitting_needs(spec)
            if need in self.passed
        ]
        found = [key for key in held if key is not None]
        return min(found)[1] if found else None

    def best_free_room(self, item_count: int, needs_accessible: bool) -> str | None:
        """Best fit among the free rooms, as a room id: least spare capacity, accessible rooms last, free longest."""
        for bucket in self.buckets:
            accessible, max_items = bucket
            if max_items >= item_count and (accessible or not needs_accessible) and self.free[bucket]:
                return self.free[bucket][0][1]
        return None

    def next_room_to_fill(self) -> str | None:
        """The free room free longest among those that fit some waiting customer, as a room id."""
        smallest: dict[bool, int] = {}
        for count, needs in self.by_need:
            smallest[needs] = min(count, smallest.get(needs, count))
        heads = [
            self.free[bucket][0]
            for bucket in self.buckets
            if self.free[bucket]
            and (
                bucket[1] >= smallest.get(False, math.inf) or (bucket[0] and bucket[1] >= smallest.get(True, math.inf))
            )
        ]
        return min(heads)[1] if heads else None


def _bucket(spec: RoomSpec) -> Bucket:
    return (spec.accessible, spec.max_items)


def _remove_sorted(values: list[Any], key: Any) -> bool:
    """Remove `key` from a sorted list; False when it is not there."""
    i = bisect.bisect_left(values, key)
    if i < len(values) and values[i] == key:
        del values[i]
        return True
    return False


def _queue_seq(session: Session) -> int:
    assert session.queue_seq is not None, "waitlisted sessions always have a queue number"
    return session.queue_seq


def fits(room: RoomSpec, item_count: int, needs_accessible: bool) -> bool:
    """True when a customer with this many items (and accessibility need) may use the room."""
    return item_count <= room.max_items and (room.accessible or not needs_accessible)


def _check_largest(largest: int | None, item_count: int, needs_accessible: bool) -> None:
    """Raise InvalidRequestError when the largest room this customer may use (None: none) cannot take them."""
    if largest is None:
        raise InvalidRequestError("this store has no accessible fitting room")
    if item_count > largest:
        kind = "accessible room" if needs_accessible else "room"
        raise InvalidRequestError(f"{item_count} items do not fit any {kind}: the largest takes {largest} items")


def _ensure_not_before(event: str, now: datetime, last: datetime | None) -> None:
    if last is not None and now < last:
        raise InvalidRequestError(
            f"{event} at {now.isoformat()} is earlier than the last event ({last.isoformat()}) it would change"
        )


def admit(floor: Floor, session: Session, now: datetime) -> Changes:
    """Seat a newly arrived customer in the best free room, or put them at the end of the line."""
    index = floor._indexed()
    _check_largest(index.largest[session.needs_accessible], session.item_count, session.needs_accessible)
    room_id = index.best_free_room(session.item_count, session.needs_accessible)
    room = floor.rooms[room_id] if room_id is not None else None
    if room is not None:
        _ensure_not_before("arrival", now, room.last_event_at)  # before any change: errors change nothing
    changes = Changes(sessions={session.session_id}, arrived={session.session_id})
    session.last_event_at = now
    if room is None:
        session.status = SessionStatus.WAITLISTED
        session.queue_seq = floor.next_queue_seq
        floor.next_queue_seq += 1
    floor.active[session.session_id] = session
    index.resized(floor)
    if room is not None:
        session.status = SessionStatus.ASSIGNED  # not waiting, even for the instant before it is seated
        _seat(floor, session, room, now, changes)
    else:
        index.joined(session)
    return changes


def _seat(floor: Floor, session: Session, room: Room, now: datetime, changes: Changes) -> None:
    index = floor._indexed()
    if index.is_waiting(session.session_id):
        index.left_line(session.session_id)
    index.room_taken(room)
    session.status = SessionStatus.ASSIGNED
    session.room_id = room.room_id
    session.assigned_at = now
    session.queue_seq = None
    session.last_event_at = now
    room.session_id = session.session_id
    room.free_since = None
    index.room_seated(room, session)
    index.room_event(room, now)
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
    # Free rooms in order of free_since, each to the customer next in line for it. The line only shrinks
    # here, so a room that fits nobody never will: taking the first free room that fits someone each time
    # is that order without visiting the rooms that fit nobody.
    changes = Changes()
    index = floor._indexed()
    while (room_id := index.next_room_to_fill()) is not None:
        room = floor.rooms[room_id]
        chosen = next_in_line(floor, room.spec, now, rules)
        assert chosen is not None, "a room that fits a waiting customer has someone next in line"
        _count_passed_over(floor, chosen, room, changes)
        _seat(floor, chosen, room, now, changes)
        changes.promoted.append(chosen.session_id)
    return changes


def next_in_line(floor: Floor, spec: RoomSpec, now: datetime, rules: Rules) -> Session | None:
    """The waiting customer a room with this spec goes to at `now` under the rules, if it fits anyone."""
    if rules.policy is Policy.FIFO:
        # FIFO's promotion order: the held in arrival order, then everyone in arrival order (no aging).
        index = floor._indexed()
        chosen = index.first_held(floor, spec, rules.max_passes)
        if chosen is None:
            chosen = index.first_fitting(spec)
        return floor.active[chosen] if chosen is not None else None
    order = promotion_order(floor.waitlist(), rules, aging_due(floor, now, rules))
    return next((s for s in order if fits(spec, s.item_count, s.needs_accessible)), None)


def _count_passed_over(floor: Floor, chosen: Session, room: Room, changes: Changes) -> None:
    # Passed over means: the room was yours in arrival order (you are the longest-waiting customer it
    # fits) and it went to someone else. Counting everyone ahead instead would cap express after a few
    # short sessions and turn it back into FIFO; those further back are protected by the aging cap.
    index = floor._indexed()
    first_id = index.first_fitting(room.spec)
    if first_id is not None and first_id != chosen.session_id:
        first = floor.active[first_id]
        first.passed_over += 1
        index.passed_over(first)
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
    index = floor._indexed()
    session.status = SessionStatus.COMPLETED
    session.ended_at = now
    session.last_event_at = now
    del floor.active[session_id]
    index.resized(floor)
    index.room_vacated(room, session)
    room.session_id = None
    room.free_since = now
    index.room_event(room, now)
    index.room_freed(room)
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
    index = floor._indexed()
    index.left_line(session_id)
    session.status = SessionStatus.CANCELLED
    session.queue_seq = None
    session.ended_at = now
    session.last_event_at = now
    del floor.active[session_id]
    index.resized(floor)
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
