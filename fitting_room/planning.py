"""Capacity planning helpers: the Erlang C (M/M/c) baseline and the rooms-versus-wait plot.

Erlang C assumes Poisson arrivals, exponential session lengths and a steady state; it is here as the textbook
reference the store-day replay is compared with, not as the planning answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def erlang_c(rooms: int, offered_load: float) -> float:
    """Probability an arrival has to wait in M/M/c with `rooms` servers and offered load λ/μ (1 if overloaded)."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= rooms:
        return 1.0
    # Terms a^k / k! built incrementally, so large room counts do not overflow the factorial.
    term, total = 1.0, 1.0
    for k in range(1, rooms):
        term *= offered_load / k
        total += term
    last = term * offered_load / rooms * rooms / (rooms - offered_load)
    return last / (total + last)


def erlang_mean_wait(rooms: int, arrivals_per_minute: float, mean_duration: float) -> float:
    """Mean wait (minutes) of all customers in M/M/c; infinite when the rooms cannot keep up."""
    capacity = rooms / mean_duration
    if arrivals_per_minute >= capacity:
        return math.inf
    return erlang_c(rooms, arrivals_per_minute * mean_duration) / (capacity - arrivals_per_minute)


def erlang_wait_quantile(rooms: int, arrivals_per_minute: float, mean_duration: float, p: float) -> float:
    """The p-quantile of the wait in M/M/c: P(W > t) = C · exp(-(cμ - λ) t)."""
    capacity = rooms / mean_duration
    if arrivals_per_minute >= capacity:
        return math.inf
    waits = erlang_c(rooms, arrivals_per_minute * mean_duration)
    if waits <= 1 - p:
        return 0.0
    return math.log(waits / (1 - p)) / (capacity - arrivals_per_minute)


@dataclass(frozen=True)
class PlanPoint:
    """p90 wait (with a 95% interval over replications) for one number of rooms."""

    rooms: int
    p90: float
    p90_low: float
    p90_high: float
    mean: float
    erlang_p90: float


def smallest_rooms(points: Sequence[PlanPoint], target_p90: float) -> int | None:
    """Fewest rooms whose p90 wait, upper 95% bound included, stays under the target."""
    return next((p.rooms for p in sorted(points, key=lambda p: p.rooms) if p.p90_high <= target_p90), None)


def plot_plan(points: Sequence[PlanPoint], target_p90: float, title: str, path: Path) -> Path:
    """Write a PNG of p90 wait against rooms, with the target line and the Erlang C reference."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, also on machines without a display
    import matplotlib.pyplot as plt

    ordered = sorted(points, key=lambda p: p.rooms)
    rooms = [p.rooms for p in ordered]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.errorbar(
        rooms,
        [p.p90 for p in ordered],
        yerr=[[p.p90 - p.p90_low for p in ordered], [p.p90_high - p.p90 for p in ordered]],
        marker="o",
        capsize=3,
        label="p90 wait, replay (95% interval)",
    )
    ax.plot(rooms, [p.mean for p in ordered], marker=".", linestyle=":", label="mean wait, replay")
    erlang = [(r, p.erlang_p90) for r, p in zip(rooms, ordered, strict=True) if math.isfinite(p.erlang_p90)]
    if erlang:
        ax.plot(*zip(*erlang, strict=True), linestyle="--", color="grey", label="p90, Erlang C at the day's mean rate")
    ax.axhline(target_p90, color="red", linewidth=1, label=f"target p90 = {target_p90:g} min")
    ax.set_xlabel("fitting rooms")
    ax.set_ylabel("wait (minutes)")
    ax.set_xticks(rooms)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
