"""Hypothesis state machine over the engine: its invariants hold after any sequence of operations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fitting_room import engine
from fitting_room.engine import CLOCK_SKEW, Floor, Room, Rules, Session, SessionStatus, fits
from fitting_room.errors import InvalidRequestError
from fitting_room.estimates import project
from fitting_room.settings import Policy
from tests.engine_factories import SessionFactory, at, make_floor


class FloorMachine(RuleBasedStateMachine):
    """Random arrivals, exits and cancellations against one floor."""

    floor: Floor
    policy_rules: Rules

    def __init__(self) -> None:
        super().__init__()
        self.new = SessionFactory()
        self.clock = 0.0

    @initialize(
        policy=st.sampled_from(list(Policy)),
        max_passes=st.integers(0, 3),
        aging=st.sampled_from([None, 1.0, 2.0]),
        sizes=st.lists(st.tuples(st.integers(1, 10), st.booleans()), min_size=1, max_size=5),
    )
    def setup(self, policy: Policy, max_passes: int, aging: float | None, sizes: list[tuple[int, bool]]) -> None:
        self.policy_rules = Rules(policy=policy, max_passes=max_passes, express_aging=aging)
        self.floor = make_floor(*((f"r{i}", n, acc) for i, (n, acc) in enumerate(sizes)))

    def _tick(self, minutes: float) -> float:
        self.clock += minutes
        return self.clock

    @rule(items=st.integers(1, 12), accessible=st.booleans(), minutes=st.floats(1, 60), gap=st.floats(0, 5))
    def arrive(self, items: int, accessible: bool, minutes: float, gap: float) -> None:
        self._admit(items, accessible, minutes, gap)

    # A crowd builds a line with distinct lengths, so express overtakes and passes and held customers occur.
    @rule(crowd=st.lists(st.tuples(st.integers(1, 12), st.booleans(), st.sampled_from([40.0, 3.0, 15.0, 1.0]))))
    def rush(self, crowd: list[tuple[int, bool, float]]) -> None:
        for items, accessible, minutes in crowd:
            self._admit(items, accessible, minutes, 0.0)

    # A restart under the other policy keeps the passes earned: FIFO then meets customers already held.
    @rule(policy=st.sampled_from(list(Policy)))
    def restart_with(self, policy: Policy) -> None:
        self.policy_rules = replace(self.policy_rules, policy=policy)

    def _admit(self, items: int, accessible: bool, minutes: float, gap: float) -> None:
        session = self.new(items=items, accessible=accessible, minutes=minutes)
        try:
            engine.admit(self.floor, session, at(self._tick(gap)))
        except InvalidRequestError:
            assert not any(fits(r.spec, items, accessible) for r in self.floor.rooms.values())
            assert session.session_id not in self.floor.active

    @precondition(lambda self: any(not r.is_free for r in self.floor.rooms.values()))
    @rule(data=st.data(), gap=st.floats(0, 30))
    def leave(self, data: st.DataObject, gap: float) -> None:
        occupied = sorted(r.room_id for r in self.floor.rooms.values() if not r.is_free)
        room_id = data.draw(st.sampled_from(occupied))
        session_id = self.floor.rooms[room_id].session_id or ""
        engine.release(self.floor, session_id, room_id, at(self._tick(gap)), self.policy_rules)
        assert session_id not in self.floor.active

    @precondition(lambda self: bool(self.floor.waitlist()))
    @rule(data=st.data(), gap=st.floats(0, 5))
    def give_up(self, data: st.DataObject, gap: float) -> None:
        waiting = data.draw(st.sampled_from(self.floor.waitlist()))
        engine.cancel(self.floor, waiting.session_id, at(self._tick(gap)))
        assert waiting.status is SessionStatus.CANCELLED

    @invariant()
    def one_room_per_session_and_one_session_per_room(self) -> None:
        occupants = [r.session_id for r in self.floor.rooms.values() if r.session_id]
        assert len(occupants) == len(set(occupants))
        for room in self.floor.rooms.values():
            if room.session_id:
                session = self.floor.active[room.session_id]
                assert session.status is SessionStatus.ASSIGNED and session.room_id == room.room_id
        assigned = [s for s in self.floor.active.values() if s.status is SessionStatus.ASSIGNED]
        assert sorted(s.session_id for s in assigned) == sorted(occupants)

    @invariant()
    def assigned_rooms_fit(self) -> None:
        for s in self.floor.active.values():
            if s.status is SessionStatus.ASSIGNED:
                assert fits(self.floor.rooms[s.room_id or ""].spec, s.item_count, s.needs_accessible)

    @invariant()
    def positions_are_contiguous(self) -> None:
        positions = sorted(self.floor.positions().values())
        assert positions == list(range(1, len(positions) + 1))

    @invariant()
    def no_room_idles_while_someone_it_fits_waits(self) -> None:
        for room in self.floor.rooms.values():
            if room.is_free:
                assert not any(fits(room.spec, s.item_count, s.needs_accessible) for s in self.floor.waitlist())

    @invariant()
    def overtaking_is_bounded(self) -> None:
        assert all(s.passed_over <= self.policy_rules.max_passes for s in self.floor.waitlist())

    @invariant()
    def indexed_answers_equal_brute_force(self) -> None:
        floor, now = self.floor, at(self.clock)
        line = sorted((s for s in floor.active.values() if s.status is SessionStatus.WAITLISTED), key=_seq)
        assert floor.waitlist() == line
        assert floor.positions() == {s.session_id: i for i, s in enumerate(line, start=1)}
        assert all(floor.position(s.session_id) == i for i, s in enumerate(line, start=1))
        for items in range(1, 13):
            for accessible in (False, True):
                indexed = floor._indexed().best_free_room(items, accessible)
                brute = best_free_room(floor.rooms.values(), items, accessible)
                assert indexed == (brute.room_id if brute else None)
        order = engine.promotion_order(line, self.policy_rules, engine.aging_due(floor, now, self.policy_rules))
        for room in floor.rooms.values():
            expected = next((s for s in order if fits(room.spec, s.item_count, s.needs_accessible)), None)
            assert engine.next_in_line(floor, room.spec, now, self.policy_rules) is expected
        latest = max((r.last_event_at for r in floor.rooms.values() if r.last_event_at), default=None)
        assert floor.catch_up(now) == (latest if latest is not None and now < latest <= now + CLOCK_SKEW else now)

    @invariant()
    def index_equals_a_fresh_one(self) -> None:
        kept, fresh = self.floor._indexed(), engine._FloorIndex(self.floor)
        assert (kept.line, kept.by_need, kept.passed, kept.free) == (
            fresh.line,
            fresh.by_need,
            fresh.passed,
            fresh.free,
        )
        # What wait estimates of large floors sample: occupied rooms by expected end, the line's expected minutes.
        assert (kept.busy, kept.line_micros, kept.room_counts, kept.pass_counts) == (
            fresh.busy,
            fresh.line_micros,
            fresh.room_counts,
            fresh.pass_counts,
        )

    # A rule, not an invariant: projecting after every single step would dominate the run time.
    @rule()
    def project_the_line(self) -> None:
        projection = project(self.floor, at(self.clock), self.policy_rules, samples=16)
        assert set(projection.waits) == set(self.floor.positions()) == set(projection.intervals)
        assert all(w > 0 for w in projection.waits.values())
        assert all(0 < i.low <= i.high for i in projection.intervals.values())


def best_free_room(rooms: Iterable[Room], item_count: int, needs_accessible: bool) -> Room | None:
    """Best fit by brute force, the rule as #4 states it: least spare capacity, accessible rooms last, free longest."""
    candidates = [r for r in rooms if r.is_free and fits(r.spec, item_count, needs_accessible)]
    if not candidates:
        return None

    def key(room: Room) -> tuple[bool, int, float, str]:
        spare_accessible = room.spec.accessible and not needs_accessible
        free_since = room.free_since.timestamp() if room.free_since else float("-inf")
        return (spare_accessible, room.spec.max_items - item_count, free_since, room.room_id)

    return min(candidates, key=key)


def _seq(session: Session) -> int:
    assert session.queue_seq is not None
    return session.queue_seq


FloorMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None, derandomize=True)
TestFloorMachine = FloorMachine.TestCase
