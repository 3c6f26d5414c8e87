"""Assignment rules of the engine: best fit, accessibility, promotion, cancel, event-time ordering."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fitting_room import engine
from fitting_room.engine import Rules, SessionStatus
from fitting_room.errors import ConflictError, InvalidRequestError, NotFoundError
from fitting_room.settings import Policy
from tests.engine_factories import SessionFactory, at, hand_computed_floor, make_floor

FIFO = Rules()


@pytest.fixture
def new() -> SessionFactory:
    return SessionFactory()


def test_best_fit_takes_the_smallest_room_that_fits(new):
    floor = make_floor(("big", 12, False), ("small", 4, False), ("mid", 8, False))
    s = new(items=5)
    engine.admit(floor, s, at(0))
    assert s.status is SessionStatus.ASSIGNED
    assert s.room_id == "mid"


def test_accessible_room_goes_to_others_only_when_nothing_else_fits(new):
    floor = make_floor(("acc", 4, True), ("plain", 8, False))
    first = new(items=2)
    engine.admit(floor, first, at(0))
    assert first.room_id == "plain", "a spare accessible room is kept for those who need it"
    second = new(items=2)
    engine.admit(floor, second, at(1))
    assert second.room_id == "acc", "when nothing else fits, the accessible room is used"


def test_customer_needing_access_only_gets_accessible_rooms(new):
    floor = make_floor(("plain", 8, False), ("acc", 8, True))
    s = new(items=1, accessible=True)
    engine.admit(floor, s, at(0))
    assert s.room_id == "acc"
    other = new(items=1, accessible=True)
    engine.admit(floor, other, at(1))
    assert other.status is SessionStatus.WAITLISTED


def test_ties_go_to_the_room_free_longest(new):
    floor = make_floor(("a", 6, False), ("b", 6, False))
    s1, s2 = new(), new()
    engine.admit(floor, s1, at(0))
    engine.admit(floor, s2, at(0))
    engine.release(floor, s2.session_id, s2.room_id or "", at(5), FIFO)
    engine.release(floor, s1.session_id, s1.room_id or "", at(6), FIFO)
    s3 = new()
    engine.admit(floor, s3, at(7))
    assert s3.room_id == s2.room_id, "the room freed first has been free longest"


def test_too_many_items_names_the_largest_room(new):
    floor = make_floor(("a", 6, False), ("b", 10, False))
    with pytest.raises(InvalidRequestError, match="largest takes 10 items"):
        engine.admit(floor, new(items=11), at(0))
    assert floor.active == {}


def test_accessible_need_without_accessible_room_is_refused(new):
    floor = make_floor(("a", 6, False))
    with pytest.raises(InvalidRequestError, match="no accessible"):
        engine.admit(floor, new(accessible=True), at(0))


def test_waitlist_positions_and_promotion_on_release(new):
    floor = make_floor(("a", 6, False))
    s1, s2, s3 = new(), new(), new()
    for s in (s1, s2, s3):
        engine.admit(floor, s, at(0))
    assert floor.positions() == {s2.session_id: 1, s3.session_id: 2}
    changes = engine.release(floor, s1.session_id, "a", at(10), FIFO)
    assert changes.promoted == [s2.session_id]
    assert s2.status is SessionStatus.ASSIGNED and s2.room_id == "a" and s2.assigned_at == at(10)
    assert floor.positions() == {s3.session_id: 1}


def test_freed_room_goes_to_first_waiting_customer_it_fits(new):
    floor = make_floor(("small", 4, False), ("big", 10, False))
    small_user, big_user = new(items=3), new(items=9)
    engine.admit(floor, small_user, at(0))
    engine.admit(floor, big_user, at(0))
    head = new(items=9)  # needs the big room
    behind = new(items=2)
    engine.admit(floor, head, at(1))
    engine.admit(floor, behind, at(2))
    engine.release(floor, small_user.session_id, "small", at(5), FIFO)
    assert behind.room_id == "small", "no head-of-line blocking"
    assert head.status is SessionStatus.WAITLISTED
    assert head.passed_over == 0, "a room that does not fit you does not count as overtaking"


def test_cancel_closes_up_positions(new):
    floor = make_floor(("a", 6, False))
    s1, s2, s3, s4 = new(), new(), new(), new()
    for s in (s1, s2, s3, s4):
        engine.admit(floor, s, at(0))
    engine.cancel(floor, s3.session_id, at(1))
    assert floor.positions() == {s2.session_id: 1, s4.session_id: 2}
    assert s3.status is SessionStatus.CANCELLED


def test_cancel_of_assigned_session_is_a_conflict(new):
    floor = make_floor(("a", 6, False))
    s = new()
    engine.admit(floor, s, at(0))
    with pytest.raises(ConflictError, match="not waiting"):
        engine.cancel(floor, s.session_id, at(1))


def test_release_of_wrong_session_is_a_conflict_and_changes_nothing(new):
    floor = make_floor(("a", 6, False), ("b", 6, False))
    s1, s2 = new(), new()
    engine.admit(floor, s1, at(0))
    engine.admit(floor, s2, at(0))
    with pytest.raises(ConflictError, match="not in"):
        engine.release(floor, s1.session_id, s2.room_id or "", at(3), FIFO)
    assert floor.rooms[s2.room_id or ""].session_id == s2.session_id
    assert s1.status is SessionStatus.ASSIGNED


def test_release_of_unknown_room_is_not_found(new):
    floor = make_floor(("a", 6, False))
    with pytest.raises(NotFoundError):
        engine.release(floor, "x", "nope", at(0), FIFO)


def test_event_earlier_than_the_rooms_last_event_is_refused(new):
    floor = make_floor(("a", 6, False))
    s = new()
    engine.admit(floor, s, at(10))
    with pytest.raises(InvalidRequestError, match="earlier than the last event"):
        engine.release(floor, s.session_id, "a", at(5), FIFO)
    assert s.status is SessionStatus.ASSIGNED


def test_express_serves_shortest_predicted_first_and_bounds_overtaking(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(minutes=10), at(0))
    slow = new(minutes=60)
    engine.admit(floor, slow, at(1))
    rules = Rules(policy=Policy.EXPRESS, max_passes=2)
    quick = [new(minutes=5) for _ in range(4)]
    for s in quick:
        engine.admit(floor, s, at(2))
    served = []
    t = 10.0
    for _ in range(4):
        occupant = floor.rooms["a"].session_id or ""
        changes = engine.release(floor, occupant, "a", at(t), rules)
        served.extend(changes.promoted)
        t += 5
    assert served[:2] == [quick[0].session_id, quick[1].session_id]
    assert served[2] == slow.session_id, "after max_passes overtakes the next fitting room is held"
    assert slow.passed_over == 2


def test_accessible_need_with_too_many_items_names_the_largest_accessible_room(new):
    floor = make_floor(("acc", 6, True), ("big", 12, False))
    with pytest.raises(InvalidRequestError, match="do not fit any accessible room: the largest takes 6 items"):
        engine.admit(floor, new(items=8, accessible=True), at(0))
    assert floor.active == {}


def test_only_the_customer_whose_turn_it_was_is_passed_over(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(minutes=10), at(0))
    first, second = new(minutes=60), new(minutes=60)
    quick = new(minutes=5)
    for s in (first, second, quick):
        engine.admit(floor, s, at(1))
    rules = Rules(policy=Policy.EXPRESS, express_aging=None)
    occupant = floor.rooms["a"].session_id or ""
    changes = engine.release(floor, occupant, "a", at(10), rules)
    assert changes.promoted == [quick.session_id]
    assert (first.passed_over, second.passed_over) == (1, 0), "the room was the first waiter's turn, not the second's"
    assert first.session_id in changes.sessions, "the pass is persisted"


def test_passes_are_only_counted_for_rooms_that_fit(new):
    floor = make_floor(("small", 2, False), ("big", 10, False))
    engine.admit(floor, new(items=2, minutes=10), at(0))
    engine.admit(floor, new(items=9, minutes=30), at(0))
    bulky, light = new(items=9, minutes=5), new(items=1, minutes=1)
    engine.admit(floor, bulky, at(1))
    engine.admit(floor, light, at(2))
    occupant = floor.rooms["small"].session_id or ""
    engine.release(floor, occupant, "small", at(10), Rules(policy=Policy.EXPRESS))
    assert light.room_id == "small"
    assert bulky.passed_over == 0, "a room that never fitted the bulky basket was not theirs to lose"


def test_express_aging_serves_a_long_waiter_before_shorter_sessions(new):
    # The long waiter has waited 100 min; a FIFO newcomer now would wait 30 + 5 = 35 min: 100 >= 2 x 35.
    rules = Rules(policy=Policy.EXPRESS, max_passes=100, express_aging=2.0)
    served = {}
    for aging in (2.0, None):
        floor = make_floor(("a", 6, False))
        occupant = new(minutes=100)
        engine.admit(floor, occupant, at(0))
        patient, quick = new(minutes=30), new(minutes=5)
        engine.admit(floor, patient, at(0))
        engine.admit(floor, quick, at(99))
        changes = engine.release(floor, occupant.session_id, "a", at(100), replace(rules, express_aging=aging))
        served[aging] = (changes.promoted, patient.session_id, quick.session_id)
    promoted, patient_id, _ = served[2.0]
    assert promoted == [patient_id], "past the aging cap the long waiter goes first"
    promoted, _, quick_id = served[None]
    assert promoted == [quick_id], "without the cap express serves the shortest session"


def test_aging_never_applies_under_fifo(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(minutes=100), at(0))
    for s in (new(minutes=30), new(minutes=5)):
        engine.admit(floor, s, at(0))
    assert engine.aging_due(floor, at(500), Rules(policy=Policy.FIFO)) == frozenset()


def test_arrival_earlier_than_the_free_rooms_last_event_is_refused_and_changes_nothing(new):
    floor = make_floor(("a", 6, False))
    s = new()
    engine.admit(floor, s, at(0))
    engine.release(floor, s.session_id, "a", at(10), FIFO)
    late_report = new()
    with pytest.raises(InvalidRequestError, match=r"arrival at .* is earlier than the last event"):
        engine.admit(floor, late_report, at(5))
    assert floor.active == {} and floor.rooms["a"].is_free


def test_exit_earlier_than_the_arrival_of_whoever_gets_the_room_is_refused(new):
    floor = make_floor(("a", 6, False))
    inside, waiting = new(), new()
    engine.admit(floor, inside, at(0))
    engine.admit(floor, waiting, at(10))
    with pytest.raises(InvalidRequestError, match=r"exit at .* is earlier than the last event"):
        engine.release(floor, inside.session_id, "a", at(8), FIFO)
    assert inside.status is SessionStatus.ASSIGNED and floor.rooms["a"].session_id == inside.session_id
    assert waiting.status is SessionStatus.WAITLISTED
    engine.release(floor, inside.session_id, "a", at(12), FIFO)
    assert waiting.room_id == "a" and waiting.assigned_at == at(12)


def test_cancellation_earlier_than_the_arrival_is_refused(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(), at(0))
    waiting = new()
    engine.admit(floor, waiting, at(10))
    with pytest.raises(InvalidRequestError, match=r"cancellation at .* is earlier than the last event"):
        engine.cancel(floor, waiting.session_id, at(9))
    assert floor.positions() == {waiting.session_id: 1}


def test_point_schedule_against_a_hand_computed_one(new):
    # Room a (4 items) frees at 10, room b (10 items) at 20; every session lasts 5 minutes.
    floor, s1, bulky, s3 = hand_computed_floor(new)
    schedule = engine.list_schedule(
        floor,
        at(4),
        engine.promotion_order(floor.waitlist(), FIFO),
        engine.expected_remaining,
        engine.expected_duration,
    )
    assert schedule.room_free_in == {"a": pytest.approx(6), "b": pytest.approx(16)}
    assert schedule.starts == {
        s1.session_id: pytest.approx(6),  # a at 10
        s3.session_id: pytest.approx(11),  # a again at 15: the bulky basket does not fit a
        bulky.session_id: pytest.approx(16),  # b at 20
    }
    assert schedule.join_wait(floor, bulky) == pytest.approx(21)


def test_fifo_serves_a_customer_already_held_first(new):
    # Passes earned under express stay when the store restarts under FIFO: the held customer goes first.
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(), at(0))
    early, held = new(), new()
    engine.admit(floor, early, at(1))
    engine.admit(floor, held, at(2))
    held.passed_over = 3
    floor.reindex()
    changes = engine.release(floor, floor.rooms["a"].session_id or "", "a", at(10), FIFO)
    assert changes.promoted == [held.session_id]
    assert early.passed_over == 1 and floor.positions() == {early.session_id: 1}


def test_sessions_added_behind_the_engines_back_are_indexed(new):
    floor = make_floor(("a", 6, False))
    engine.admit(floor, new(), at(0))
    waiting = new()
    engine.admit(floor, waiting, at(1))
    assert floor.positions() == {waiting.session_id: 1}
    late = replace(new(), queue_seq=floor.next_queue_seq, last_event_at=at(2))
    floor.active[late.session_id] = late  # as a store adding a row to a cached floor would
    assert floor.positions() == {waiting.session_id: 1, late.session_id: 2}
    assert floor.position(late.session_id) == 2 and floor.position("nobody") is None


def test_the_floor_keeps_what_a_large_floors_wait_estimate_samples(new):
    # Occupied rooms by expected end, the line's needs and total expected minutes: kept by admit, release and
    # cancel, so an estimate reads a sample of them without visiting the floor.
    floor = make_floor(*((f"r{i}", 6, i == 0) for i in range(4)))
    seated = [new(items=2, minutes=m) for m in (30.0, 10.0, 20.0, 40.0)]
    for s in seated:
        engine.admit(floor, s, at(0))
    waiting = [new(items=1 + i % 2, minutes=5.0 + i) for i in range(5)]
    for s in waiting:
        engine.admit(floor, s, at(1))
    assert floor.room_kinds() == {(True, 6): 1, (False, 6): 3}
    assert floor.busy_rooms((False, 6)) == 3 and floor.busy_rooms((True, 6)) == 1
    plain = [floor.active[r.session_id or ""].prediction.median for r in floor.busy_sample((False, 6), 3)]
    assert plain == sorted(plain), "in order of expected end"
    assert len(floor.busy_sample((False, 6), 1)) == 1
    assert floor.line_needs() == {(1, False): 3, (2, False): 2}
    assert floor.line_minutes((1, False)) == pytest.approx(5.0 + 7.0 + 9.0)
    assert [s.session_id for s in floor.line_sample((1, False), 2)] == [waiting[0].session_id, waiting[4].session_id]
    assert floor.ahead(waiting[4].session_id, (1, False)) == 2
    assert floor.ahead(waiting[4].session_id, (2, False)) == 2
    engine.cancel(floor, waiting[2].session_id, at(2))
    assert floor.line_minutes((1, False)) == pytest.approx(5.0 + 9.0)
    room = seated[1].room_id or ""
    engine.release(floor, seated[1].session_id, room, at(3), FIFO)  # the 10-minute room frees: waiting[0] moves in
    assert floor.rooms[room].session_id == waiting[0].session_id
    assert floor.busy_rooms((False, 6)) == 3
    assert floor.line_needs() == {(1, False): 1, (2, False): 2}
    assert floor.line_minutes((1, False)) == pytest.approx(9.0)
    fresh = engine._FloorIndex(floor)
    kept = floor._indexed()
    assert (kept.busy, kept.line_micros, kept.room_counts, kept.pass_counts) == (
        fresh.busy,
        fresh.line_micros,
        fresh.room_counts,
        fresh.pass_counts,
    )
    assert not floor.holds_anyone(FIFO.max_passes)
    waiting[1].passed_over = FIFO.max_passes
    floor.reindex()
    assert floor.holds_anyone(FIFO.max_passes) and not floor.holds_anyone(0)
