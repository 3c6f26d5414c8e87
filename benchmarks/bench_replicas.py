"""Assign-and-release throughput on SQLite and on PostgreSQL with one and two uvicorn replicas (issue #8).

    .venv/bin/python -m benchmarks.bench_replicas [--repeats 3] [--seconds 10] [--warmup 2] [--clients 16]
                                                  [--out benchmarks/results]

Three configurations: one uvicorn on a SQLite file, one uvicorn on PostgreSQL, two uvicorn replicas on one
PostgreSQL database. Each uvicorn is one worker on a free loopback port over the repository's data and models (a
small store is generated when they are missing) and a floor of 32 rooms; every run gets a fresh SQLite file or a
fresh database on one throwaway PostgreSQL server (tests/pg_cluster.py) and fresh server processes.

Client threads, each with a keep-alive `requests.Session`, repeat one customer's cycle: POST /assign_room with two
known items, then POST /detect_anomaly releasing that room at the server's clock (an actual_duration would put the
exit that many minutes after the entry, ahead of the clock, and the store would refuse every later arrival as
earlier than that exit). Requests go to the replicas in turn, as a round-robin load balancer would send them, so
with two replicas a room assigned by one is released through the other. With more rooms than clients nobody should
wait; a waitlisted answer is counted and that customer cancelled. Any non-200 answer or failed request is an error
and reported. Figures cover the window after the warm-up; clients finish the cycle in hand when it closes, so every
room should be free afterwards, which GET /rooms/status then checks on every replica (no session in two rooms,
replicas agree, waitlist length). Configurations are alternated within each repeat; the table gives medians,
per-repeat figures follow. Writes `replicas.md` into the output folder.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks._common import (
    ensure_store,
    load_average,
    machine_line,
    markdown_table,
    publish,
    store_parser,
)
from benchmarks.bench_http import call, server
from tests.pg_cluster import PostgresCluster, find_bindir

ROOMS = 32
ERRORS_SHOWN = 3
SATURATED = 0.9  # share of CPU time in use above which the cores, not waiting, set the pace


@dataclass(frozen=True)
class Config:
    """One configuration: the database behind the service and how many replicas share it."""

    name: str
    postgres: bool
    replicas: int


CONFIGS = (
    Config("SQLite, 1 uvicorn", postgres=False, replicas=1),
    Config("PostgreSQL, 1 replica", postgres=True, replicas=1),
    Config("PostgreSQL, 2 replicas", postgres=True, replicas=2),
)


@dataclass
class Tally:
    """What one client saw: completion times and latencies (perf_counter seconds), outcomes, errors."""

    requests: list[tuple[float, float]] = field(default_factory=list)  # (ended, latency)
    cycles: list[float] = field(default_factory=list)  # when the release answered
    waitlisted: int = 0
    errors: list[str] = field(default_factory=list)


class Ledger:
    """Which client holds which room, as the clients saw the answers: a room handed out twice is a conflict.

    A room leaves the ledger before its release is sent, so a room that the server gives to the next customer
    right after the release can never count; a conflict means the second assignment was answered before the
    first holder even asked to leave.
    """

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self.conflicts = 0

    def seat(self, room_id: str, session_id: str) -> None:
        """Record a room assigned to a session."""
        with self._lock:
            if room_id in self._held:
                self.conflicts += 1
            self._held[room_id] = session_id

    def free(self, room_id: str) -> None:
        """Forget a room whose release is about to be sent."""
        with self._lock:
            self._held.pop(room_id, None)


class Client:
    """One kiosk repeating assign-and-release cycles against the replicas in turn, over keep-alive connections."""

    def __init__(self, index: int, bases: Sequence[str], items: list[str], ledger: Ledger) -> None:
        self.bases = bases
        self.items = items
        self.ledger = ledger
        self.tally = Tally()
        # Clients start at different replicas so that each replica gets half of every kind of request.
        self._turn = itertools.count(index)

    def run(self, stop_at: float) -> Tally:
        """Cycle until stop_at, finishing the cycle in hand so its room is free afterwards."""
        with requests.Session() as http:
            while time.perf_counter() < stop_at:
                self.cycle(http)
        return self.tally

    def cycle(self, http: requests.Session) -> None:
        """Assign a room, then release it; a waitlisted customer is cancelled instead."""
        seat = self.post(http, "/assign_room", {"item_ids": self.items})
        if seat is None:
            return
        if seat["status"] == "waitlisted":
            self.tally.waitlisted += 1
            self.post(http, f"/sessions/{seat['session_id']}/cancel", None)
            return
        self.ledger.seat(seat["room_id"], seat["session_id"])
        self.ledger.free(seat["room_id"])
        exit_report = {"session_id": seat["session_id"], "room_id": seat["room_id"], "exit_scans": self.items}
        if self.post(http, "/detect_anomaly", exit_report) is not None:
            self.tally.cycles.append(time.perf_counter())

    def post(self, http: requests.Session, path: str, body: dict[str, Any] | None) -> Any:
        """POST to the next replica; the JSON answer, or None after recording an error."""
        base = self.bases[next(self._turn) % len(self.bases)]
        start = time.perf_counter()
        try:
            response = http.post(base + path, json=body, timeout=30)
        except requests.RequestException as err:
            self.tally.errors.append(f"POST {path}: {type(err).__name__}")
            return None
        ended = time.perf_counter()
        self.tally.requests.append((ended, ended - start))
        if response.status_code != 200:
            self.tally.errors.append(f"POST {path} answered {response.status_code}: {response.text[:160]}")
            return None
        return response.json()


@dataclass(frozen=True)
class Floor:
    """GET /rooms/status after the run: occupied rooms, sessions in two rooms, waitlist, replicas agreeing."""

    rooms: int
    occupied: int
    shared: int
    waitlist: int
    replicas_agree: bool

    @property
    def ok(self) -> bool:
        """Every room free and listed once, nobody waiting, every replica telling the same floor."""
        return self.rooms == ROOMS and not self.occupied and not self.shared and self.replicas_agree


@dataclass(frozen=True)
class Run:
    """One configuration's figures in one repeat."""

    config: Config
    cycles_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_busy: float  # share of the machine's CPU time in use during the window, all processes
    waitlisted: int
    errors: tuple[str, ...]
    conflicts: int
    floor: Floor
    load: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = store_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load before each window")
    parser.add_argument("--clients", type=int, default=16)
    return parser.parse_args(argv)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class Load:
    """The clients' tallies over one run, the measured window (perf_counter seconds) and its CPU share."""

    tallies: list[Tally]
    conflicts: int
    window: tuple[float, float]
    cpu_busy: float


def drive(bases: Sequence[str], items: list[str], args: argparse.Namespace) -> Load:
    """Load the replicas with the clients through the warm-up and the measured window."""
    ledger = Ledger()
    clients = [Client(i, bases, items, ledger) for i in range(args.clients)]
    window_start = time.perf_counter() + args.warmup
    stop_at = window_start + args.seconds
    with ThreadPoolExecutor(args.clients) as pool:
        futures = [pool.submit(client.run, stop_at) for client in clients]
        time.sleep(max(0.0, window_start - time.perf_counter()))
        busy_start, total_start = cpu_ticks()
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        busy_end, total_end = cpu_ticks()
        tallies = [future.result() for future in futures]
    cpu_busy = (busy_end - busy_start) / max(1, total_end - total_start)
    return Load(tallies, ledger.conflicts, (window_start, stop_at), cpu_busy)


def floor_view(status: dict[str, Any]) -> tuple[Any, ...]:
    """The part of GET /rooms/status that replicas must agree on (estimates move with the clock)."""
    rooms = tuple((room["room_id"], room["session_id"]) for room in status["rooms"])
    return rooms, tuple(waiting["session_id"] for waiting in status["waitlist"])


def check_floor(bases: Sequence[str]) -> Floor:
    """Read GET /rooms/status from every replica once the clients have stopped."""
    statuses = [call(base, "GET", "/rooms/status") for base in bases]
    first = statuses[0]
    sessions = [room["session_id"] for room in first["rooms"] if room["session_id"]]
    return Floor(
        rooms=len(first["rooms"]),
        occupied=len(sessions),
        shared=len(sessions) - len(set(sessions)),
        waitlist=len(first["waitlist"]),
        replicas_agree=all(floor_view(status) == floor_view(first) for status in statuses),
    )


def summarise(config: Config, load: Load, floor: Floor) -> Run:
    """One run's figures: rates and latencies over the window, waitlisted answers and errors over the whole run."""
    start, end = load.window
    latencies = [lat for t in load.tallies for ended, lat in t.requests if start <= ended <= end]
    cycles = sum(1 for t in load.tallies for ended in t.cycles if start <= ended <= end)
    latencies_ms = np.asarray(latencies or [float("nan")]) * 1000.0
    return Run(
        config=config,
        cycles_per_s=cycles / (end - start),
        requests_per_s=len(latencies) / (end - start),
        p50_ms=float(np.percentile(latencies_ms, 50)),
        p99_ms=float(np.percentile(latencies_ms, 99)),
        cpu_busy=load.cpu_busy,
        waitlisted=sum(t.waitlisted for t in load.tallies),
        errors=tuple(error for t in load.tallies for error in t.errors),
        conflicts=load.conflicts,
        floor=floor,
        load=load_average(),
    )


def service_env(data_dir: Path, model_dir: Path, rooms_file: Path) -> dict[str, str]:
    """This environment without any FITTING_ROOM_* setting of its own, pointed at the store and the rooms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITTING_ROOM_")}
    env.update(
        FITTING_ROOM_DATA_DIR=str(data_dir),
        FITTING_ROOM_MODEL_DIR=str(model_dir),
        FITTING_ROOM_ROOMS_FILE=str(rooms_file),
    )
    return env


def fresh_database(config: Config, cluster: PostgresCluster, work: Path) -> str:
    """An empty database for one run: a new PostgreSQL database or a new SQLite file."""
    name = f"bench_{uuid.uuid4().hex}"
    return cluster.create_database(name) if config.postgres else str(work / f"{name}.db")


def measure_run(
    config: Config,
    cluster: PostgresCluster,
    env: dict[str, str],
    items: list[str],
    args: argparse.Namespace,
    work: Path,
) -> Run:
    """Start the configuration's replicas on a fresh database, load them, check the floor, stop them."""
    database = fresh_database(config, cluster, work)
    with ExitStack() as stack:
        # One after the other: the first migrates the empty database, the second finds it migrated.
        bases = [
            stack.enter_context(server(env | {"FITTING_ROOM_DATABASE": database}, work / f"uvicorn-{i}.log"))
            for i in range(config.replicas)
        ]
        for base in bases:
            ready = call(base, "GET", "/readyz")
            if ready.get("status") != "ready":
                raise RuntimeError(f"{config.name}: server not ready: {ready}")
        load = drive(bases, items, args)
        return summarise(config, load, check_floor(bases))


def measure(args: argparse.Namespace, work: Path) -> list[Run]:
    """Every configuration once per repeat, alternated, on one PostgreSQL server."""
    data_dir, model_dir = ensure_store(args.data_dir, args.model_dir, work)
    items = sorted(json.loads((data_dir / "item_database.json").read_text()))[:2]
    rooms_file = work / "rooms.json"
    rooms_file.write_text(
        json.dumps([{"room_id": f"room_{i}", "max_items": 12, "accessible": False} for i in range(1, ROOMS + 1)])
    )
    env = service_env(data_dir, model_dir, rooms_file)
    runs = []
    cluster = PostgresCluster().start()
    try:
        for repeat in range(1, args.repeats + 1):
            for config in CONFIGS:
                run = measure_run(config, cluster, env, items, args, work)
                runs.append(run)
                print(
                    f"repeat {repeat}, {config.name}: {run.cycles_per_s:.1f} cycles/s, p50 {run.p50_ms:.1f} ms, "
                    f"p99 {run.p99_ms:.1f} ms, {len(run.errors)} errors, floor {'ok' if run.floor.ok else 'NOT ok'}",
                    file=sys.stderr,
                )
    finally:
        cluster.stop()
    return runs


def floor_text(floor: Floor) -> str:
    """GET /rooms/status after a run, in a few words."""
    text = f"{floor.rooms - floor.occupied}/{floor.rooms} free, waitlist {floor.waitlist}"
    if floor.shared:
        text += f", **{floor.shared} sessions in two rooms**"
    if not floor.replicas_agree:
        text += ", **replicas disagree**"
    return text


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def summary_rows(runs: list[Run]) -> list[list[str]]:
    """One row per configuration: medians over the repeats and the per-repeat cycle rates."""
    rows = []
    for config in CONFIGS:
        own = [run for run in runs if run.config == config]
        floors = sorted({floor_text(run.floor) for run in own})
        rows.append(
            [
                config.name,
                f"{median([r.cycles_per_s for r in own]):.1f}",
                f"{median([r.requests_per_s for r in own]):.1f}",
                f"{median([r.p50_ms for r in own]):.1f}",
                f"{median([r.p99_ms for r in own]):.1f}",
                ", ".join(f"{r.cycles_per_s:.1f}" for r in own),
                f"{median([r.cpu_busy for r in own]):.0%}",
                str(sum(r.waitlisted for r in own)),
                str(sum(len(r.errors) for r in own)),
                "; ".join(floors),
            ]
        )
    return rows


def repeat_rows(runs: list[Run]) -> list[list[str]]:
    """Every run's own figures, in the order they ran."""
    return [
        [
            str(i // len(CONFIGS) + 1),
            run.config.name,
            f"{run.cycles_per_s:.1f}",
            f"{run.requests_per_s:.1f}",
            f"{run.p50_ms:.1f}",
            f"{run.p99_ms:.1f}",
            f"{run.cpu_busy:.0%}",
            str(run.waitlisted),
            str(len(run.errors)),
            str(run.conflicts),
            floor_text(run.floor),
            run.load,
        ]
        for i, run in enumerate(runs)
    ]


def correctness(runs: list[Run]) -> str:
    """Whether the floor stayed consistent, with the first errors quoted when there were any."""
    errors = [error for run in runs for error in run.errors]
    conflicts = sum(run.conflicts for run in runs)
    waitlisted = sum(run.waitlisted for run in runs)
    consistent = not errors and not conflicts and all(run.floor.ok and not run.floor.waitlist for run in runs)
    if consistent and not waitlisted:
        verdict = (
            "every run, two replicas on one database included, kept the floor consistent: no errors, no room handed "
            "out twice, nobody waitlisted, and afterwards all rooms free, the waitlist empty and the replicas "
            "telling the same floor"
        )
    else:
        verdict = (
            f"the runs saw {len(errors)} errors, {conflicts} rooms handed out twice and {waitlisted} waitlisted "
            "answers; the floors after the runs are in the tables"
        )
    if errors:
        verdict += "; first errors: " + "; ".join(f"`{e}`" for e in sorted(set(errors))[:ERRORS_SHOWN])
    return verdict


def times(value: float, reference: float) -> str:
    """value as a multiple of reference, "n/a" when the reference is zero."""
    return f"{value / reference:.2f}×" if reference else "n/a"


def reading(runs: list[Run], args: argparse.Namespace) -> str:
    """The paragraph saying what the figures do and do not show."""
    rate = {c: median([r.cycles_per_s for r in runs if r.config == c]) for c in CONFIGS}
    sqlite, pg1, pg2 = (rate[c] for c in CONFIGS)
    spread = max(
        (
            max(own) / min(own) - 1
            for own in ([r.cycles_per_s for r in runs if r.config == c] for c in CONFIGS)
            if min(own) > 0
        ),
        default=float("nan"),
    )
    least, most = min(r.cpu_busy for r in runs), max(r.cpu_busy for r in runs)
    cpu = (
        "CPU was the limit throughout"
        if least >= SATURATED
        else f"a run at {least:.0%} still had CPU to spare, so waiting for the store's lock and its commits, not CPU "
        "alone, bounds the rate"
    )
    return (
        f"Reading: PostgreSQL with one replica ran {times(pg1, sqlite)} SQLite's cycle rate and two replicas "
        f"{times(pg2, pg1)} one replica's. The machine's 2 cores are shared by the {args.clients} Python client "
        "threads, the uvicorn processes, PostgreSQL and other work on this machine; they were "
        f"{least:.0%} to {most:.0%} busy during the windows, other work included: {cpu}. Every assignment and "
        "release of the store holds its one row lock through a durable commit (SQLite in WAL mode with "
        "synchronous=FULL, PostgreSQL with its defaults, both on the same local disk), whichever replica takes it, "
        "so a second replica cannot run them side by side: it adds a process competing for the same cores, lock "
        "waits across processes and, as each replica keeps the floor in memory only until another process writes, "
        "requests alternating between replicas make most writes read the floor back from the database. What the "
        "figures do show is each back end's cost per cycle under the same load and, on correctness, that "
        f"{correctness(runs)}. They do not show what replicas on machines of their own would add, a database "
        "across a network, or a chain, whose stores lock different rows. Cycle rates of one configuration varied "
        f"by up to {spread:.0%} between repeats on this shared machine; smaller differences are noise."
    )


def report(runs: list[Run], args: argparse.Namespace, postgres_version: str) -> str:
    """Markdown: medians per configuration, every repeat's figures, the reading and the machine."""
    summary = markdown_table(
        [
            "configuration",
            "cycles/s",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "cycles/s per repeat",
            "CPU busy",
            "waitlisted",
            "errors",
            "floor after each run",
        ],
        summary_rows(runs),
    )
    repeats = markdown_table(
        [
            "repeat",
            "configuration",
            "cycles/s",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "CPU busy",
            "waitlisted",
            "errors",
            "rooms handed out twice",
            "floor after the run",
            "load average after",
        ],
        repeat_rows(runs),
    )
    return "\n".join(
        [
            f"### Assign-and-release cycles: SQLite vs PostgreSQL with 1 and 2 uvicorn replicas ({args.clients} "
            f"clients, {ROOMS} rooms, medians of {args.repeats} × {args.seconds:g} s after {args.warmup:g} s warm-up)",
            "",
            summary,
            "",
            "A cycle is POST /assign_room then POST /detect_anomaly releasing that room; latencies are per request, "
            "both kinds together. CPU busy is the whole machine's during the window. Errors are non-200 answers and "
            "failed requests over the whole run, warm-up and wind-down included.",
            "",
            repeats,
            "",
            reading(runs, args),
            "",
            f"`make bench-replicas` on {machine_line()}; PostgreSQL {postgres_version}.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write it out."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as work:
        runs = measure(args, Path(work))
    text = report(runs, args, find_bindir().parent.name)
    publish(args.out, "replicas", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
