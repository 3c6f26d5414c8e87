"""Per-row model latency: the fast path (fitting_room.fastpath) against scikit-learn on the same fitted models.

    .venv/bin/python -m benchmarks.bench_inference [--model-dir models] [--data-dir data] [--out benchmarks/results]

Loads the models train.py wrote (through DurationPredictor.load / AnomalyDetector.load; a small store is
generated and trained into a temporary folder when they are missing), takes feature rows of real historical
sessions, checks the fast path's outputs against scikit-learn's on every row, then times one-row calls:
the median over many calls, each call timed alone, rows cycled. The fast path is timed twice: the native walk
the API uses (fitting_room/treewalk.c, `make native`) and the numpy strategies it falls back to. Both are timed
again cold: before each call, COLD_BYTES are read, evicting the caches much as a request's way through uvicorn,
FastAPI and the network stack does under load. scikit-learn is timed as the service would run it (default
OpenMP threads) and limited to one thread, the fairer baseline for one row; the speed-up column divides the
one-thread figure by the native walk's. Targets (issue #7): >= 20x for the anomaly model, >= 10x for the
duration model. Writes `inference.md` into the output folder and the README's figures when it has markers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from benchmarks._common import (
    ensure_store,
    fmt_us,
    machine_line,
    markdown_table,
    publish,
    store_parser,
    time_calls,
)
from fitting_room.fastpath import FastClassifier, FastIsolationForest, FastRegressor, FastRegressors
from fitting_room.history import load_history
from fitting_room.tree_strategies import Strategy

TARGETS = {"duration model": 10.0, "anomaly model": 20.0}
# Read before each cold call: several times this machine's L2 cache (2 MB per core).
COLD_BYTES = 16 << 20
COLD_CALLS = 300
# The fast paths timed: the native walk (as the API compiles the models), then the numpy strategies.
PATHS: tuple[Strategy, Strategy] = ("native", "numpy")


@dataclass(frozen=True)
class Case:
    """One model (or pair of models) called on one row: scikit-learn, the native walk, the numpy strategies."""

    name: str
    detail: str
    sklearn: Callable[[int], object]
    # The fast path's call, native walk (as the API scores) then numpy strategies: fast_case makes them.
    paths: tuple[Callable[[int], object], Callable[[int], object]]
    max_rel_diff: float  # of both fast paths against scikit-learn


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = store_parser(__doc__)
    parser.add_argument("--rows", type=int, default=500, help="distinct historical sessions to cycle through")
    parser.add_argument("--fast-calls", type=int, default=3000)
    parser.add_argument("--sklearn-calls", type=int, default=300)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds at most per scikit-learn timing")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def rel_diff(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Largest relative difference (absolute where the reference is 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = np.where(a == 0, 1.0, np.abs(a))
    return float(np.max(np.abs(a - b) / scale))


def build_cases(model_dir: Path, data_dir: Path, n_rows: int, seed: int) -> tuple[list[Case], str]:
    """The timed cases over the stored models and feature rows of real sessions; and a models line."""
    import models  # the repository's models.py; imported late so --help stays fast

    predictor = models.DurationPredictor.load(model_dir / "duration_model.pkl")
    detector = models.AnomalyDetector.load(model_dir / "anomaly_model.pkl")
    sessions, catalog = load_history(data_dir, predictor.timezone)
    sample = sessions.sample(n=min(n_rows, len(sessions)), random_state=seed)
    x_duration = predictor.builder_.frame(sample, catalog)
    features = detector.session_features(sample, catalog, predictor)
    x_isolation = np.ascontiguousarray(features[:, models._BEHAVIOUR])
    n = len(sample)

    median, scale = predictor.median_model_, predictor.scale_model_
    isolation = detector.isolation_
    fast_median = [FastRegressor(median, p) for p in PATHS]
    fast_scale = [FastRegressor(scale, p) for p in PATHS]
    fast_duration = [FastRegressors([median, scale], p) for p in PATHS]
    fast_isolation = [FastIsolationForest(isolation, p) for p in PATHS]

    both = np.column_stack((median.predict(x_duration), scale.predict(x_duration)))
    isolation_scores = isolation.score_samples(x_isolation)
    cases = [
        fast_case(
            "duration median model",
            f"HGB regressor, {median.n_iter_} trees, {x_duration.shape[1]} features",
            lambda i: median.predict(x_duration[i % n][None, :]),
            lambda f, i: f.predict_one(x_duration[i % n]),
            fast_median,
            both[:, 0],
        ),
        fast_case(
            "duration scale model",
            f"HGB regressor, {scale.n_iter_} trees",
            lambda i: scale.predict(x_duration[i % n][None, :]),
            lambda f, i: f.predict_one(x_duration[i % n]),
            fast_scale,
            both[:, 1],
        ),
        fast_case(
            "duration model",
            "median + scale per estimate; fast path: one pass over both",
            lambda i: (median.predict(x_duration[i % n][None, :]), scale.predict(x_duration[i % n][None, :])),
            lambda f, i: f.predict(x_duration[i % n]),
            fast_duration,
            both,
        ),
        fast_case(
            "anomaly isolation forest",
            f"IsolationForest, {len(isolation.estimators_)} trees, {x_isolation.shape[1]} features",
            lambda i: isolation.score_samples(x_isolation[i % n][None, :]),
            lambda f, i: f.score_one(x_isolation[i % n]),
            fast_isolation,
            isolation_scores,
        ),
    ]
    classifier = detector.classifier_
    if classifier is None:
        cases.append(
            Case(
                "anomaly model",
                "unsupervised: the isolation forest is its only model",
                cases[-1].sklearn,
                cases[-1].paths,
                cases[-1].max_rel_diff,
            )
        )
    else:
        x_classifier = np.column_stack((features, detector._surprisals(features)))
        fast_classifier = [FastClassifier(classifier, p) for p in PATHS]
        proba = classifier.predict_proba(x_classifier)[:, 1]
        cases.append(
            fast_case(
                "anomaly classifier",
                f"HGB classifier, {classifier.n_iter_} trees, {x_classifier.shape[1]} features",
                lambda i: classifier.predict_proba(x_classifier[i % n][None, :]),
                lambda f, i: f.positive_proba_one(x_classifier[i % n]),
                fast_classifier,
                proba,
            )
        )
        cases.append(
            fast_case(
                "anomaly model",
                "isolation forest + classifier per exit check",
                lambda i: (
                    isolation.score_samples(x_isolation[i % n][None, :]),
                    classifier.predict_proba(x_classifier[i % n][None, :]),
                ),
                lambda f, i: (f[0].score_one(x_isolation[i % n]), f[1].positive_proba_one(x_classifier[i % n])),
                list(zip(fast_isolation, fast_classifier, strict=True)),
                np.column_stack((isolation_scores, proba)),
            )
        )
    strategies = (
        f"numpy strategies: median {type(fast_median[1].trees).__name__}, scale {type(fast_scale[1].trees).__name__}, "
        f"isolation {type(fast_isolation[1].trees).__name__}"
    )
    return cases, strategies


def fast_case(
    name: str,
    detail: str,
    sklearn: Callable[[int], object],
    call: Callable[[Any, int], Any],
    twins: Sequence[Any],
    expected: npt.ArrayLike,
) -> Case:
    """A case whose fast paths are `call(twin, i)` on row i, for the native twin and the numpy one (in the order
    of PATHS); the same call on every row is checked against scikit-learn's `expected` outputs."""
    n = len(np.asarray(expected))
    diff = max(rel_diff(expected, [call(twin, i) for i in range(n)]) for twin in twins)
    native, numpy_twin = twins
    return Case(name, detail, sklearn, (partial(call, native), partial(call, numpy_twin)), diff)


def time_cold(calls: Sequence[Callable[[int], object]], evict: np.ndarray) -> np.ndarray:
    """Wall time in microseconds of COLD_CALLS calls of each of `calls` (calls x COLD_CALLS), each after reading
    `evict` (not timed); the calls take turns, so that they meet the same conditions."""
    times = np.empty((len(calls), COLD_CALLS))
    for i in range(COLD_CALLS):
        for k, call in enumerate(calls):
            evict.sum()
            start = time.perf_counter_ns()
            call(i)
            times[k, i] = (time.perf_counter_ns() - start) / 1000.0
    return times


def run(args: argparse.Namespace) -> str:
    """Measure every case and return the markdown report."""
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as work:
        data_dir, model_dir = ensure_store(args.data_dir, args.model_dir, Path(work))
        cases, strategies = build_cases(model_dir, data_dir, args.rows, args.seed)
        evict = np.ones(COLD_BYTES // 8)
        rows = []
        verdicts = []
        for case in cases:
            # Warm-up: first calls pay for lazy imports and thread-pool start.
            for i in range(20):
                case.paths[0](i)
                case.sklearn(i)
            fast, numpy_path = (float(np.median(time_calls(c, args.fast_calls, args.budget))) for c in case.paths)
            cold = np.median(time_cold(case.paths, evict), axis=1).tolist()
            threaded = float(np.median(time_calls(case.sklearn, args.sklearn_calls, args.budget)))
            with threadpool_limits(1):
                single = float(np.median(time_calls(case.sklearn, args.sklearn_calls, args.budget)))
            speedup = single / fast
            target = TARGETS.get(case.name)
            if target is not None:
                verdicts.append(
                    f"{case.name} {speedup:.0f}x (target >= {target:.0f}x: {'met' if speedup >= target else 'NOT met'})"
                )
            rows.append(
                [
                    f"**{case.name}**" if target else case.name,
                    case.detail,
                    fmt_us(threaded),
                    fmt_us(single),
                    fmt_us(fast),
                    f"**{speedup:.0f}x**" if target else f"{speedup:.0f}x",
                    fmt_us(numpy_path),
                    fmt_us(cold[0]),
                    fmt_us(cold[1]),
                    f"{case.max_rel_diff:.1e}",
                ]
            )
            print(
                f"{case.name}: sklearn {threaded:.0f}/{single:.0f} us, native {fast:.1f} us (cold {cold[0]:.1f}), "
                f"numpy {numpy_path:.1f} us (cold {cold[1]:.1f})",
                file=sys.stderr,
            )
    table = markdown_table(
        [
            "model, one row per call",
            "what",
            "scikit-learn (default threads)",
            "scikit-learn (1 thread)",
            "native walk",
            "speed-up vs 1 thread",
            "numpy strategies",
            "native, cold",
            "numpy, cold",
            "max rel. diff",
        ],
        rows,
    )
    return "\n".join(
        [
            "### Model inference, one row per call (median)",
            "",
            table,
            "",
            f"{'; '.join(verdicts)}. Outputs checked on {args.rows} historical sessions; {strategies}.",
            "",
            f"`make bench-inference` on {machine_line()}.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write it out."""
    args = parse_args(argv)
    report = run(args)
    publish(args.out, "inference", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
