"""benchmarks/bench_engine.py's operations run at a small size, so a benchmark that no longer runs fails `make test`."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.bench_engine import ENGINE_PLAN, SERVICE_PLAN, EngineOps, ServiceOps, measure
from fitting_room.engine import Rules

TINY = argparse.Namespace(calls=2, budget=0.0, max_call=30.0)


def test_every_engine_operation_runs_on_a_small_floor():
    measured = measure("engine", lambda n: EngineOps(n, Rules()), ENGINE_PLAN, [10], TINY)
    assert set(measured.figures) == {(op.name, 10) for op in ENGINE_PLAN}
    assert all(microseconds > 0 for microseconds in measured.figures.values())


def test_every_service_operation_runs_on_a_small_floor_on_sqlite(tmp_path: Path):
    measured = measure("service", lambda n: ServiceOps(n, Rules(), tmp_path / "floor.db"), SERVICE_PLAN, [10], TINY)
    assert set(measured.figures) == {(op.name, 10) for op in SERVICE_PLAN}
    assert all(microseconds > 0 for microseconds in measured.figures.values())
