"""Per-operation cost of the floor as stores grow: 10 to 10,000 rooms with as many customers waiting.

    .venv/bin/python -m benchmarks.bench_engine [--sizes 10 1000 10000] [--out benchmarks/results]

Every room is occupied and n customers wait, so each measured operation meets the full floor. Two layers:

- engine (fitting_room.engine / estimates, in memory): admit a newcomer (joins the line), release a room (its
  first fitting waiting customer is promoted), cancel a waiting customer, one customer's waitlist position and
  wait estimate (what a kiosk's answer needs: estimates.estimate_wait, or the whole projection where only that
  can tell, as the service does), and the whole-floor reads: every position, and every customer's wait with every
  room's expected free time (estimates.project, what /rooms/status shows).
- service on SQLite (FittingRoomService over a fresh database file, instant stand-in models so only the
  floor is measured): assign (a newcomer joins the line, with their wait estimate), one waiting customer's
  session read (position and wait), exit (complete and release a known session, promote), cancel, and the floor
  status.

Whole-floor reads are output-sized: their answer holds a row per customer (and per room), so they cannot cost less
than n. Their rows show the cost per row of the answer too, and the ratio column compares that per-row cost.
Operations alternate so the floor keeps its size (release + admit, cancel + admit); each is timed alone and
the table shows medians. Reads are made one second later each time, so no answer is served from a memo of the
same floor and moment. An operation whose single call would exceed --max-call seconds, extrapolated with
the growth seen between the two previous sizes, is not run at the larger size and is reported as such.
Target (issue #7): at 10,000 rooms and 10,000 waiting, <= 2x the per-operation cost at 10.
Writes `engine.md` into the output folder and the README's figures when it has markers.

    .venv/bin/python -m benchmarks.bench_engine --sizes 10 1000 --budget 1 --layers engine   # a quick look
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, fmt_us, machine_line, markdown_table, publish
from fitting_room import engine
from fitting_room.catalog import Catalog
from fitting_room.engine import Floor, Prediction, Room, RoomSpec, Rules, Session, SessionStatus
from fitting_room.estimates import estimate_wait, project
from fitting_room.service import ExitReport, FittingRoomService
from fitting_room.store import Store

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
ITEMS = ("sku-0001", "sku-0002", "sku-0003")
_Z = [NormalDist().inv_cdf(p / 100) for p in range(1, 100)]
CATALOG = Catalog.from_mapping({item: {"category": "tops", "price": 20.0} for item in ITEMS})


def prediction(median: float, sigma: float = 0.4) -> Prediction:
    """A lognormal duration prediction around `median` minutes."""
    return Prediction(
        median=median,
        low=median * math.exp(sigma * _Z[4]),
        high=median * math.exp(sigma * _Z[94]),
        level=0.9,
        quantiles=tuple(median * math.exp(sigma * z) for z in _Z),
    )


@dataclass(frozen=True)
class _Reason:
    code: str
    message: str


@dataclass(frozen=True)
class _Verdict:
    is_anomaly: bool = False
    anomaly_score: float = 0.1
    risk_level: str = "low"
    reasons: tuple[_Reason, ...] = ()
    missing_items: tuple[str, ...] = ()
    unexpected_items: tuple[str, ...] = ()


class InstantPredictor:
    """Stand-in duration model: the floor is measured here, the models in bench_inference."""

    def estimate(self, item_ids: Sequence[str], *_args: Any, **_kwargs: Any) -> Any:
        """Four minutes per item, whatever the entry time, catalogue and level."""
        return prediction(4.0 * len(item_ids))

    def interval(self, item_ids: Sequence[str], *_args: Any, **_kwargs: Any) -> Any:
        """The estimate (its grid included)."""
        return self.estimate(item_ids)


class InstantDetector:
    """Stand-in anomaly model: nothing is flagged."""

    def analyse(self, **_kwargs: Any) -> Any:
        """A clean verdict."""
        return _Verdict()


def make_floor(n: int, seed: int = 0) -> Floor:
    """n rooms, all occupied, and n customers waiting, as of START."""
    rng = np.random.default_rng(seed)
    rooms: dict[str, Room] = {}
    active: dict[str, Session] = {}
    for i in range(n):
        room_id = f"room_{i:05d}"
        spec = RoomSpec(room_id, max_items=6 + 2 * (i % 4), accessible=i % 10 == 0)
        entered = START - timedelta(minutes=float(rng.uniform(0, 20)))
        occupant = Session(
            session_id=f"occupant-{i}",
            item_ids=ITEMS[: 1 + i % 3],
            needs_accessible=False,
            arrived_at=entered,
            prediction=prediction(float(rng.uniform(5, 25))),
            status=SessionStatus.ASSIGNED,
            room_id=room_id,
            assigned_at=entered,
            last_event_at=entered,
        )
        rooms[room_id] = Room(spec, session_id=occupant.session_id, last_event_at=entered)
        active[occupant.session_id] = occupant
    for j in range(n):
        arrived = START - timedelta(seconds=n - j)
        waiting = Session(
            session_id=f"waiting-{j}",
            item_ids=ITEMS[: 1 + j % 3],
            needs_accessible=False,
            arrived_at=arrived,
            prediction=prediction(float(rng.uniform(5, 25))),
            queue_seq=j + 1,
            last_event_at=arrived,
        )
        active[waiting.session_id] = waiting
    return Floor(rooms=rooms, active=active, next_queue_seq=n + 1)


class EngineOps:
    """Engine operations on an in-memory floor that keep its size; each call is one timed operation."""

    def __init__(self, n: int, rules: Rules) -> None:
        """A full floor of n rooms and n waiting."""
        self.floor = make_floor(n)
        self.rules = rules
        self.room_ids = sorted(self.floor.rooms)
        self.clock = START
        self.serial = 0
        self.last_new = f"waiting-{n - 1}"  # the newest customer in line

    def tick(self) -> datetime:
        """The next event time: one second later."""
        self.clock += timedelta(seconds=1)
        return self.clock

    def newcomer(self) -> Session:
        """A fresh arriving customer."""
        self.serial += 1
        self.last_new = f"new-{self.serial}"
        return Session(self.last_new, ITEMS[:2], False, self.clock, prediction(8.0))

    def admit(self, _i: int) -> object:
        """A newcomer joins the line (every room is taken)."""
        return engine.admit(self.floor, self.newcomer(), self.tick())

    def release(self, i: int) -> object:
        """Free a room; its first fitting waiting customer moves in."""
        room_id = self.room_ids[i % len(self.room_ids)]
        occupant = self.floor.rooms[room_id].session_id
        assert occupant is not None
        return engine.release(self.floor, occupant, room_id, self.tick(), self.rules)

    def cancel(self, _i: int) -> object:
        """The newest customer in line leaves it."""
        return engine.cancel(self.floor, self.last_new, self.tick())

    def position(self, _i: int) -> object:
        """The newest waiting customer's place in line (what one kiosk answer needs)."""
        return self.floor.position(self.last_new)

    def positions(self, _i: int) -> object:
        """Every waiting customer's place in line (a list as long as the line, for the status board)."""
        return self.floor.positions()

    def wait(self, _i: int) -> object:
        """The newest waiting customer's wait estimate, one second later each call (as a kiosk's poll)."""
        now = self.tick()
        one = estimate_wait(self.floor, self.last_new, now, self.rules)
        # Where no pool model covers the customer (small floors), the service projects the whole floor.
        return one if one is not None else project(self.floor, now, self.rules).waits[self.last_new]

    def project(self, _i: int) -> object:
        """Wait estimates for the whole line and expected free times of every room, one second later each call."""
        return project(self.floor, self.tick(), self.rules)


class ServiceOps:
    """The same operations through FittingRoomService on SQLite."""

    def __init__(self, n: int, rules: Rules, database: Path) -> None:
        """A fresh SQLite database holding a full floor of n rooms and n waiting."""
        floor = make_floor(n)
        self.store = Store(f"sqlite:///{database}")
        self.store.create_schema()
        with self.store.write() as tx:
            tx.sync_rooms([room.spec for room in floor.rooms.values()])
            seeded = engine.Changes(rooms=set(floor.rooms), sessions=set(floor.active), arrived=set(floor.active))
            tx.save(floor, seeded)
        self.service = FittingRoomService(self.store, rules, CATALOG, InstantPredictor(), InstantDetector())
        self.room_ids = sorted(floor.rooms)
        self.last_new = f"waiting-{n - 1}"  # the newest customer in line
        self.occupant = {room_id: room.session_id for room_id, room in floor.rooms.items()}
        self.clock = START

    def tick(self) -> datetime:
        """The next event time: one second later."""
        self.clock += timedelta(seconds=1)
        return self.clock

    def assign(self, _i: int) -> object:
        """A newcomer joins the line and is told their wait."""
        view = self.service.assign(list(ITEMS[:2]), False, self.tick())
        self.last_new = view.session.session_id
        return view

    def join(self, _i: int) -> object:
        """A newcomer joins the line without being told their wait: the cheap refill after an exit."""
        now = self.tick()
        self.last_new = f"joined-{now.timestamp()}"
        session = Session(self.last_new, ITEMS[:2], False, now, prediction(8.0))
        with self.store.write() as tx:
            floor = tx.load_floor()
            tx.save(floor, engine.admit(floor, session, now))
        return session

    def exit(self, i: int) -> object:
        """A known session leaves its room; the room's first fitting waiting customer moves in."""
        room_id = self.room_ids[i % len(self.room_ids)]
        session_id = self.occupant[room_id]
        assert session_id is not None
        result = self.service.check_exit(ExitReport(session_id, room_id, list(ITEMS)), self.tick())
        promoted = result.next_assignment
        self.occupant[room_id] = promoted.session_id if promoted is not None else None
        return result

    def cancel(self, _i: int) -> object:
        """The newest customer in line leaves it."""
        return self.service.cancel(self.last_new, self.tick())

    def session(self, _i: int) -> object:
        """The newest waiting customer's session read: position and wait, one second later each call."""
        view = self.service.session(self.last_new, self.tick())
        assert view.estimated_wait is not None
        return view

    def status(self, _i: int) -> object:
        """Every room and the waitlist with estimates, one second later each call (so never a memoised view)."""
        return self.service.floor_status(self.tick())

    def close(self) -> None:
        """Release the database."""
        self.store.close()


@dataclass
class Measured:
    """Median per-call microseconds per (operation, size), or why a size was not run."""

    figures: dict[tuple[str, int], float]
    skipped: dict[tuple[str, int], str]


@dataclass(frozen=True)
class Op:
    """A measured operation: its name, the calls of one round ([op, refill op...] keep the floor's size), and for
    output-sized reads the number of rows its answer has on a floor of n rooms and n waiting."""

    name: str
    steps: Sequence[str]
    rows: Callable[[int], int] | None = None


def measure(
    layer: str,
    make: Callable[[int], Any],
    plan: Sequence[Op],
    sizes: Sequence[int],
    args: argparse.Namespace,
) -> Measured:
    """Time every operation of `plan` at every size."""
    result = Measured({}, {})
    for n in sizes:
        ops = make(n)
        for name, steps, _rows in ((op.name, op.steps, op.rows) for op in plan):
            expected_s = _extrapolate(sorted((m, t) for (op, m), t in result.figures.items() if op == name), n)
            if expected_s > args.max_call:
                result.skipped[(name, n)] = f"not run (~{expected_s:,.0f} s per call extrapolated)"
                continue
            main, *refills = (getattr(ops, step) for step in steps)
            times: list[float] = []
            deadline = time.perf_counter() + args.budget
            for i in range(-2, args.calls):  # two warm-up calls first
                began = time.perf_counter_ns()
                main(i)
                if i >= 0:
                    times.append((time.perf_counter_ns() - began) / 1000.0)
                for refill in refills:  # keeps the floor's size; not timed
                    refill(i)
                if len(times) >= 3 and time.perf_counter() > deadline:
                    break
            calls = len(times)
            result.figures[(name, n)] = float(np.median(times))
            print(f"{layer} {name} n={n}: {fmt_us(result.figures[(name, n)])} ({calls} calls)", file=sys.stderr)
        close = getattr(ops, "close", None)
        if close is not None:
            close()
    return result


def _extrapolate(measured: Sequence[tuple[int, float]], n: int) -> float:
    """Seconds one call would take at size n, by the growth seen between the last two sizes (1 < power <= 2)."""
    if not measured:
        return 0.0
    m, t = measured[-1]
    power = 2.0
    if len(measured) >= 2:
        (m0, t0), (m1, t1) = measured[-2:]
        power = min(max(math.log(max(t1, 1e-9) / max(t0, 1e-9)) / math.log(m1 / m0), 1.0), 2.0)
    return t * (n / m) ** power / 1e6


def table(title: str, measured: Measured, plan: Sequence[Op], sizes: Sequence[int]) -> str:
    """Markdown: one row per operation, one column per size, and the ratio of the largest to the smallest.

    Output-sized reads show their cost per row of the answer too, and their ratio is of that per-row cost.
    """
    rows = []
    for op in plan:
        name = op.name
        per_row = op.rows or (lambda _n: 1)
        cells = []
        for n in sizes:
            if (name, n) in measured.figures:
                figure = measured.figures[(name, n)]
                extra = f" ({fmt_us(figure / per_row(n))} per row)" if op.rows else ""
                cells.append(fmt_us(figure) + extra)
            else:
                cells.append(measured.skipped.get((name, n), "—"))
        small, large = (name, sizes[0]), (name, sizes[-1])
        if small in measured.figures and large in measured.figures:
            ratio = (measured.figures[large] / per_row(sizes[-1])) / (measured.figures[small] / per_row(sizes[0]))
            per = " per row" if op.rows else ""
            shown = f"{ratio:,.1f}" if ratio >= 0.1 else f"{ratio:.2f}"  # a per-row ratio can fall far below 1
            cells.append(f"{shown}x{per} {'(met)' if ratio <= 2.0 else '(NOT met)'}")
        else:
            cells.append("NOT met (not run)")
        label = f"{name}, output-sized" if op.rows else name
        rows.append([label, *cells])
    header = ["operation", *(f"{n:,} rooms + {n:,} waiting" for n in sizes), f"{sizes[-1]:,} vs {sizes[0]:,} (≤ 2x)"]
    return f"#### {title}\n\n" + markdown_table(header, rows)


ENGINE_PLAN: list[Op] = [
    Op("admit (joins the line)", ["admit", "cancel"]),
    Op("release + promotion", ["release", "admit"]),
    Op("cancel", ["cancel", "admit"]),
    Op("waitlist position (one customer)", ["position"]),
    Op("wait estimate (one customer)", ["wait"]),
    Op("waitlist positions (whole line: n rows)", ["positions"], rows=lambda n: n),
    Op("wait estimates (project: n customers + n rooms)", ["project"], rows=lambda n: 2 * n),
]
SERVICE_PLAN: list[Op] = [
    Op("assign (joins the line, with its wait)", ["assign", "cancel"]),
    Op("exit + release + promotion", ["exit", "join"]),
    Op("cancel", ["cancel", "join"]),
    # After a cancel round the newest customer (joined by the refill) waits: their session is read.
    Op("session read (one waiting customer's wait)", ["session"]),
    Op("floor status (n customers + n rooms)", ["status"], rows=lambda n: 2 * n),
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--calls", type=int, default=200, help="most timed calls per operation and size")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per operation and size")
    parser.add_argument("--max-call", type=float, default=30.0, help="skip sizes whose one call would take longer")
    parser.add_argument("--layers", nargs="+", choices=["engine", "service"], default=["engine", "service"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write it out."""
    args = parse_args(argv)
    rules = Rules()
    sizes = sorted(args.sizes)
    parts = ["### Scaling: cost per operation as the floor grows (median, FIFO policy)", ""]
    if "engine" in args.layers:
        in_memory = measure("engine", lambda n: EngineOps(n, rules), ENGINE_PLAN, sizes, args)
        parts += [table("Engine, in memory", in_memory, ENGINE_PLAN, sizes), ""]
    if "service" in args.layers:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as work:
            on_sqlite = measure(
                "service", lambda n: ServiceOps(n, rules, Path(work) / f"floor-{n}.db"), SERVICE_PLAN, sizes, args
            )
        parts += [table("Service on SQLite (stand-in models)", on_sqlite, SERVICE_PLAN, sizes), ""]
    text = "\n".join([*parts, f"`make bench-engine` on {machine_line()}."])
    publish(args.out, "engine", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
