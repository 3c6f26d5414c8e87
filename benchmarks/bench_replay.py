"""Store-day replay benchmark (issue #4): wait estimates, express vs FIFO, and rooms needed for a busy day.

    .venv/bin/python -m benchmarks.bench_replay [--replications 20] [--out benchmarks/results]

Targets, at 3 identical rooms, 85% offered load, Poisson arrivals flat over the day, 20 replications, on the
simulator's default store and on the boutique store, with the duration model trained on each store's history:
FIFO wait-estimate RMSE at most half the QL predictor's, the 80% `wait_interval` holding the realised wait for
75-85% of queued customers (under FIFO and under express, whose projection expects the customers still to come),
and express cutting the mean wait by at least 20% with p99 at most 1.5x FIFO's.
The same projection with the simulator's true distributions (`oracle`) shows how much of the remaining error
is the model's. Planning replays the busiest day of the default store's history on 3 to 10 rooms.

Writes `replay.md` and `replay_rooms.png` into the output folder and prints the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

from fitting_room.engine import Rules
from fitting_room.planning import plot_plan
from fitting_room.replay import (
    Scenario,
    StoreData,
    load_store,
    plan_rooms,
    run_policies,
    uniform_rooms,
)
from fitting_room.replay_stats import Estimate, headline_figures, percent_change, plan_report, policy_report
from fitting_room.settings import Policy

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = ("default", "boutique")
TARGET_P90 = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def headline(figures: Mapping[str, Mapping[str, Estimate]]) -> list[str]:
    """Markdown table of the issue's targets against the measured figures per store."""
    stores = list(figures)
    rows: list[tuple[str, str, Callable[[Estimate], str]]] = [
        ("FIFO wait-estimate RMSE / QL's (target ≤ 0.5)", "rmse_ratio", str),
        ("`wait_interval` 80% coverage (target 0.75-0.85)", "coverage", str),
        ("express `wait_interval` 80% coverage (target 0.75-0.85)", "express_coverage", str),
        ("express wait-estimate RMSE / QL's (no target)", "express_rmse_ratio", str),
        ("express mean wait vs FIFO (target ≤ -20%)", "express_mean", percent_change),
        ("express p99 / FIFO p99 (target ≤ 1.5)", "express_p99", str),
    ]
    lines = [f"| target | {' | '.join(stores)} |", f"| --- | {' | '.join('---' for _ in stores)} |"]
    for label, key, show in rows:
        lines.append(f"| {label} | {' | '.join(show(figures[s][key]) for s in stores)} |")
    return lines


def busiest_day(store: StoreData) -> str:
    """ISO date of the history day with the most sessions."""
    days = store.sessions["entry_time"].dt.date.value_counts()
    return str(days.idxmax())


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario, write the report and the plot, print the report."""
    args = parse_args(argv)
    started = time.perf_counter()
    sections: list[str] = []
    figures: dict[str, dict[str, Estimate]] = {}
    stores: dict[str, StoreData] = {}
    for profile in PROFILES:
        store = stores[profile] = load_store(profile, "trained", seed=args.seed)
        scenario = Scenario(
            rooms=uniform_rooms(3, store.largest_basket), rules=Rules(), replications=args.replications, seed=args.seed
        )
        by_policy = run_policies(store, scenario, list(Policy))
        figures[profile] = headline_figures(by_policy, args.seed)
        sections.append(policy_report(store, scenario, by_policy))

    default = stores["default"]
    oracle = replace(default, model_kind="oracle", predictor=None)
    scenario = Scenario(rooms=uniform_rooms(3, oracle.largest_basket), rules=Rules(), replications=args.replications)
    by_policy = run_policies(oracle, scenario, [Policy.FIFO])
    oracle_figures = headline_figures(by_policy, args.seed)
    sections.append(policy_report(oracle, scenario, by_policy))

    day = busiest_day(default)
    planning = Scenario(
        rooms=uniform_rooms(3, default.largest_basket),
        rules=Rules(),
        arrivals="history",
        first_day=date.fromisoformat(day),
        replications=args.replications,
        seed=args.seed,
        estimates=False,
    )
    points, best = plan_rooms(default, planning, range(3, 11), TARGET_P90, default.largest_basket)
    plot = plot_plan(
        points,
        TARGET_P90,
        f"default store, busiest history day ({day}): p90 wait by rooms",
        args.out / "replay_rooms.png",
    )
    sections.append(plan_report(points, best, TARGET_P90, f"busiest day of the default store's history ({day}), FIFO"))

    elapsed = time.perf_counter() - started
    report = "\n".join(
        [
            "## Store-day replay: targets",
            "",
            *headline(figures),
            "",
            f"With the simulator's true distributions instead of the trained model (default store, FIFO): "
            f"RMSE / QL's {oracle_figures['rmse_ratio']}, coverage {oracle_figures['coverage']}.",
            "",
            "Intervals are 95% over replications (t for means, replications resampled for pooled figures).",
            "",
            *sections,
            f"Rooms plot: `{plot.name}`. Whole benchmark: {elapsed:.0f} s.",
            "",
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
