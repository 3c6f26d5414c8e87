"""Statistics and reports of store-day replays: intervals over replications, wait and estimate summaries, tables.

`fitting_room.replay` runs the days; this module turns its replications into the figures and markdown the
replay command and `make bench-replay` print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from fitting_room.planning import PlanPoint

if TYPE_CHECKING:
    from fitting_room.replay import FloatArray, Outcome, Replication, Scenario, Shown, StoreData

ESTIMATORS: tuple[str, ...] = ("ours", "point_expected", "point_median", "erlang", "ql")
ESTIMATOR_NAMES: Mapping[str, str] = {
    "ours": "projection, mean over draws (`estimated_wait`)",
    "point_expected": "point projection, conditional expectations",
    "point_median": "point projection, medians (plain)",
    "erlang": "Erlang C, state-blind",
    "ql": "QL: position × mean / rooms",
}


# ---------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A figure with a 95% interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        """`value [low, high]` with sensible precision."""
        return f"{_fmt(self.value)} [{_fmt(self.low)}, {_fmt(self.high)}]"


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean of per-replication values with a 95% Student-t interval."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if len(arr) < 2:
        return Estimate(mean, mean, mean)
    half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return Estimate(mean, mean - half, mean + half)


def bootstrap(
    groups: Sequence[Any], statistic: Callable[[Sequence[Any]], float], seed: int = 0, rounds: int = 400
) -> Estimate:
    """A statistic of all replications pooled, with a 95% percentile interval from resampling replications."""
    value = statistic(groups)
    rng = np.random.default_rng(seed)
    draws = [statistic([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(rounds)]
    finite = [d for d in draws if math.isfinite(d)]
    if not finite:
        return Estimate(value, value, value)
    low, high = np.quantile(finite, [0.025, 0.975])
    return Estimate(value, float(low), float(high))


def _waits(reps: Sequence[Replication]) -> FloatArray:
    return np.array([o.wait for r in reps for o in r.outcomes()], dtype=np.float64)


def _quantile_of(p: float) -> Callable[[Sequence[Replication]], float]:
    def statistic(reps: Sequence[Replication]) -> float:
        waits = _waits(reps)
        return float(np.quantile(waits, p)) if len(waits) else math.nan

    return statistic


@dataclass(frozen=True)
class WaitSummary:
    """How long customers waited under one policy."""

    customers: int
    mean: Estimate
    p90: Estimate
    p99: Estimate
    waited: Estimate
    utilisation: Estimate


def summarise_waits(reps: Sequence[Replication], seed: int = 0) -> WaitSummary:
    """Mean, p90, p99 wait, share who waited and utilisation, with 95% intervals over replications."""
    return WaitSummary(
        customers=sum(len(r.outcomes()) for r in reps),
        mean=t_interval([float(np.mean([o.wait for o in r.outcomes()])) for r in reps]),
        p90=bootstrap(reps, _quantile_of(0.9), seed),
        p99=bootstrap(reps, _quantile_of(0.99), seed),
        waited=t_interval([float(np.mean([o.wait > 0 for o in r.outcomes()])) for r in reps]),
        utilisation=t_interval([float(np.mean([d.utilisation for d in r.days])) for r in reps]),
    )


def _queued(reps: Sequence[Replication]) -> list[Outcome]:
    return [o for r in reps for o in r.outcomes() if o.estimate is not None]


def _predicted(o: Outcome, estimator: str) -> float:
    if estimator == "ours":
        assert o.estimate is not None
        return o.estimate[0]
    return o.baselines[estimator]


def _rmse(estimator: str) -> Callable[[Sequence[Replication]], float]:
    def statistic(reps: Sequence[Replication]) -> float:
        errors = [_predicted(o, estimator) - o.wait for o in _queued(reps)]
        return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.nan

    return statistic


def _rmse_ratio(estimator: str) -> Callable[[Sequence[Replication]], float]:
    def statistic(reps: Sequence[Replication]) -> float:
        return _rmse(estimator)(reps) / _rmse("ql")(reps)

    return statistic


def _coverage(reps: Sequence[Replication]) -> float:
    inside = [o.estimate[1] <= o.wait <= o.estimate[2] for o in _queued(reps) if o.estimate is not None]
    return float(np.mean(inside)) if inside else math.nan


@dataclass(frozen=True)
class EstimateSummary:
    """How good the wait told at arrival was, for customers who queued."""

    customers: int
    rmse: dict[str, Estimate]
    ratio_to_ql: dict[str, Estimate]
    bias: dict[str, float]
    coverage: Estimate


def summarise_estimates(reps: Sequence[Replication], seed: int = 0) -> EstimateSummary | None:
    """RMSE (and its ratio to QL's), bias and interval coverage of every estimator; None without queues."""
    queued = _queued(reps)
    if not queued or "ql" not in queued[0].baselines:
        return None
    return EstimateSummary(
        customers=len(queued),
        rmse={e: bootstrap(reps, _rmse(e), seed) for e in ESTIMATORS},
        ratio_to_ql={e: bootstrap(reps, _rmse_ratio(e), seed) for e in ESTIMATORS},
        bias={e: float(np.mean([_predicted(o, e) - o.wait for o in queued])) for e in ESTIMATORS},
        coverage=bootstrap(reps, _coverage, seed),
    )


def _refreshes(reps: Sequence[Replication]) -> list[tuple[Shown, float]]:
    return [r for rep in reps for day in rep.days for r in day.refreshes]


def _refresh_rmse(which: str) -> Callable[[Sequence[Replication]], float]:
    def statistic(reps: Sequence[Replication]) -> float:
        errors = [(s.estimate[0] if which == "ours" else s.ql) - left for s, left in _refreshes(reps)]
        return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.nan

    return statistic


@dataclass(frozen=True)
class RefreshSummary:
    """How good the estimates shown after every event were, against the wait that was still to come."""

    shown: int
    ratio_to_ql: Estimate
    rmse: Estimate
    coverage: Estimate


def summarise_refreshes(reps: Sequence[Replication], seed: int = 0) -> RefreshSummary | None:
    """RMSE against QL's and interval coverage of every estimate shown while customers waited."""
    shown = _refreshes(reps)
    if not shown:
        return None

    def coverage(rs: Sequence[Replication]) -> float:
        return float(np.mean([s.estimate[1] <= left <= s.estimate[2] for s, left in _refreshes(rs)]))

    return RefreshSummary(
        shown=len(shown),
        ratio_to_ql=bootstrap(reps, lambda rs: _refresh_rmse("ours")(rs) / _refresh_rmse("ql")(rs), seed),
        rmse=bootstrap(reps, _refresh_rmse("ours"), seed),
        coverage=bootstrap(reps, coverage, seed),
    )


def paired_ratio(
    base: Sequence[Replication], other: Sequence[Replication], statistic: Callable[[Sequence[Replication]], float]
) -> Estimate:
    """statistic(other) / statistic(base) over the same customers, replications resampled in pairs."""
    pairs = list(zip(base, other, strict=True))
    return bootstrap(pairs, lambda ps: statistic([x for _, x in ps]) / statistic([b for b, _ in ps]))


def _mean_wait(reps: Sequence[Replication]) -> float:
    return float(_waits(reps).mean())


# ---------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------


def describe(store: StoreData, scenario: Scenario) -> str:
    """One line saying what was replayed."""
    if scenario.arrivals == "history":
        arrivals = f"history arrivals from {scenario.first_day or 'the first day'}"
    else:
        arrivals = f"Poisson arrivals at {scenario.load:.0%} load per room ({scenario.shape} over the day)"
    return (
        f"store `{store.profile.name}`, {len(scenario.rooms)} rooms, {arrivals}, {scenario.days} day(s) × "
        f"{scenario.replications} replications, model `{store.model_kind}`, mean session "
        f"{store.mean_duration:.1f} min, max_passes {scenario.rules.max_passes}, "
        f"express_aging {scenario.rules.express_aging}"
    )


def wait_table(summaries: Mapping[str, WaitSummary]) -> list[str]:
    """Markdown rows of the wait summary per policy."""
    lines = [
        "| policy | customers | mean wait (min) | p90 | p99 | share who waited | utilisation |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for name, s in summaries.items():
        lines.append(f"| {name} | {s.customers} | {s.mean} | {s.p90} | {s.p99} | {s.waited} | {s.utilisation} |")
    return lines


def estimate_table(summary: EstimateSummary) -> list[str]:
    """Markdown rows comparing the wait estimators."""
    lines = [
        "| estimator | RMSE (min) | RMSE / QL's | bias (min) |",
        "| --- | --- | --- | ---: |",
    ]
    for e in ESTIMATORS:
        lines.append(
            f"| {ESTIMATOR_NAMES[e]} | {summary.rmse[e]} | {summary.ratio_to_ql[e]} | {summary.bias[e]:+.2f} |"
        )
    lines.append(f"\n`wait_interval` (80%) holds the realised wait for {summary.coverage} of them.")
    return lines


def policy_report(store: StoreData, scenario: Scenario, by_policy: Mapping[str, Sequence[Replication]]) -> str:
    """Markdown report of a scenario run under one or more policies."""
    lines = [f"### {describe(store, scenario)}", ""]
    summaries = {name: summarise_waits(reps, scenario.seed) for name, reps in by_policy.items()}
    lines += wait_table(summaries)
    if "fifo" in by_policy and "express" in by_policy:
        mean = paired_ratio(by_policy["fifo"], by_policy["express"], _mean_wait)
        p99 = paired_ratio(by_policy["fifo"], by_policy["express"], _quantile_of(0.99))
        lines += ["", f"express vs fifo, same customers: mean wait {percent_change(mean)}, p99 ratio {p99}."]
    for name, reps in by_policy.items():
        summary = summarise_estimates(reps, scenario.seed)
        if summary is None:
            continue
        lines += ["", f"Wait estimates under `{name}` ({summary.customers} customers queued on arrival):", ""]
        lines += estimate_table(summary)
        refreshed = summarise_refreshes(reps, scenario.seed)
        if refreshed is not None:
            lines.append(
                f"Re-projected after every event ({refreshed.shown} estimates shown while waiting, against the "
                f"wait still to come): RMSE {refreshed.rmse}, {refreshed.ratio_to_ql} of QL's; the interval "
                f"holds it for {refreshed.coverage}."
            )
    return "\n".join(lines) + "\n"


def headline_figures(by_policy: Mapping[str, Sequence[Replication]], seed: int = 0) -> dict[str, Estimate]:
    """The issue's targets: FIFO estimate RMSE over QL's, interval coverage (FIFO and express), express vs FIFO."""
    figures: dict[str, Estimate] = {}
    fifo = by_policy.get("fifo")
    summary = summarise_estimates(fifo, seed) if fifo is not None else None
    if summary is not None:
        figures["rmse_ratio"] = summary.ratio_to_ql["ours"]
        figures["coverage"] = summary.coverage
    express = by_policy.get("express")
    express_summary = summarise_estimates(express, seed) if express is not None else None
    if express_summary is not None:
        figures["express_coverage"] = express_summary.coverage
        figures["express_rmse_ratio"] = express_summary.ratio_to_ql["ours"]
    if fifo is not None and "express" in by_policy:
        figures["express_mean"] = paired_ratio(fifo, by_policy["express"], _mean_wait)
        figures["express_p99"] = paired_ratio(fifo, by_policy["express"], _quantile_of(0.99))
    return figures


def percent_change(ratio: Estimate) -> str:
    """A ratio with its interval as a signed percentage change."""
    return f"{ratio.value - 1:+.0%} [{ratio.low - 1:+.0%}, {ratio.high - 1:+.0%}]"


def plan_report(points: Sequence[PlanPoint], best: int | None, target_p90: float, what: str) -> str:
    """Markdown table of the rooms sweep and the recommendation."""
    lines = [
        f"### Rooms needed: {what}",
        "",
        "| rooms | p90 wait (min) | 95% interval | mean wait | Erlang C p90 |",
        "| ---: | ---: | --- | ---: | ---: |",
    ]
    for p in points:
        lines.append(
            f"| {p.rooms} | {_fmt(p.p90)} | [{_fmt(p.p90_low)}, {_fmt(p.p90_high)}] | {_fmt(p.mean)} | "
            f"{_fmt(p.erlang_p90)} |"
        )
    verdict = (
        f"Smallest number of rooms keeping p90 wait under {target_p90:g} min (upper 95% bound included): **{best}**."
        if best is not None
        else f"No number of rooms tried keeps p90 wait under {target_p90:g} min."
    )
    return "\n".join([*lines, "", verdict]) + "\n"
