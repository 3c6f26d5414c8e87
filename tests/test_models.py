"""DurationPredictor and AnomalyDetector on synthetic data with a known process; save/load checks."""

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr
from threadpoolctl import threadpool_limits

from fitting_room.catalog import Catalog
from fitting_room.errors import InvalidRequestError, ModelLoadError
from fitting_room.evidence import collect_evidence
from models import (
    DETECTOR_FEATURES,
    QUANTILE_LEVELS,
    AnomalyDetector,
    DurationEstimate,
    DurationPredictor,
    _duration_scores,
    _evidence_columns,
    _feature_rows,
    _local_hour,
    _local_hours,
    _pattern_shares,
)
from tests.factories import load_synthetic

N_TEST = 2000


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Two shared cores: OpenMP spinning across processes costs far more than it gains.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[DurationPredictor, pd.DataFrame, pd.DataFrame, Catalog]:
    """Predictor fitted on 2,500 anomaly-free sessions; 2,000 held out with their true medians."""
    directory = tmp_path_factory.mktemp("clean")
    sessions, catalog, raw = load_synthetic(
        directory, 2500 + N_TEST, seed=11, timezone="Europe/Berlin", anomaly_rate=0.0, misread_rate=0.0
    )
    predictor = DurationPredictor(timezone="Europe/Berlin", cv_folds=3).fit(sessions.iloc[:-N_TEST], catalog)
    return predictor, sessions.iloc[-N_TEST:], raw.iloc[-N_TEST:], catalog


@pytest.fixture(scope="module")
def anomalous(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[DurationPredictor, pd.DataFrame, pd.DataFrame, Catalog]:
    """Predictor fitted on 2,500 sessions with 8% anomalies; the last 1,000 held out."""
    directory = tmp_path_factory.mktemp("anomalous")
    sessions, catalog, raw = load_synthetic(directory, 3500, seed=12, anomaly_rate=0.08, misread_rate=0.02)
    predictor = DurationPredictor(cv_folds=3).fit(sessions.iloc[:2500], catalog)
    return predictor, sessions, raw, catalog


def _estimates(predictor: DurationPredictor, sessions: pd.DataFrame, catalog: Catalog, level: float) -> list:
    pairs = zip(sessions["entry_scans"], sessions["entry_time"], strict=True)
    return [predictor.estimate(items, t.to_pydatetime(), catalog, level) for items, t in pairs]


def test_estimate_frame_matches_estimate(clean: tuple) -> None:
    predictor, test, _, catalog = clean
    some = test.iloc[:50]
    median, low, high = predictor.estimate_frame(some, catalog, 0.8)
    estimates = _estimates(predictor, some, catalog, 0.8)
    np.testing.assert_allclose(median, [e.median for e in estimates], rtol=1e-12)
    np.testing.assert_allclose(low, [e.low for e in estimates], rtol=1e-12)
    np.testing.assert_allclose(high, [e.high for e in estimates], rtol=1e-12)


def test_median_is_close_to_the_true_median(clean: tuple) -> None:
    predictor, test, raw, catalog = clean
    median, _, _ = predictor.estimate_frame(test, catalog)
    truth = raw["true_median"].to_numpy()
    assert np.median(np.abs(np.log(median / truth))) < 0.08
    y = test["duration"].to_numpy()
    bayes_mae = np.mean(np.abs(y - truth))
    assert np.mean(np.abs(y - median)) < 1.08 * bayes_mae


@pytest.mark.parametrize(("level", "low", "high"), [(0.9, 0.86, 0.94), (0.5, 0.44, 0.56)])
def test_interval_coverage_on_held_out_sessions(clean: tuple, level: float, low: float, high: float) -> None:
    predictor, test, _, catalog = clean
    _, low_end, high_end = predictor.estimate_frame(test, catalog, level)
    y = test["duration"].to_numpy()
    covered = (low_end <= y) & (y <= high_end)
    assert low <= covered.mean() <= high
    # The noise grows with the item count: coverage must hold for small and large baskets alike.
    n_items = test["entry_scans"].map(len).to_numpy()
    for bucket in (n_items <= 3, n_items >= 6):
        assert covered[bucket].mean() >= low - 0.04


def test_levels_are_selectable_and_nested(clean: tuple) -> None:
    predictor, test, _, catalog = clean
    row = test.iloc[0]
    when = row["entry_time"].to_pydatetime()
    intervals = [predictor.estimate(row["entry_scans"], when, catalog, level) for level in (0.5, 0.8, 0.9, 0.99)]
    for inner, outer in itertools.pairwise(intervals):
        assert outer.low <= inner.low <= inner.median <= inner.high <= outer.high
    assert intervals[0].level == 0.5
    with pytest.raises(InvalidRequestError):
        predictor.estimate(row["entry_scans"], when, catalog, 0.3)


def test_quantile_grid_and_quantile_of(clean: tuple) -> None:
    predictor, test, _, catalog = clean
    estimate = _estimates(predictor, test.iloc[:1], catalog, 0.9)[0]
    assert isinstance(estimate, DurationEstimate)
    assert len(estimate.quantiles) == len(QUANTILE_LEVELS) == 99
    assert QUANTILE_LEVELS[0] == 0.01 and QUANTILE_LEVELS[-1] == 0.99
    assert all(a <= b for a, b in zip(estimate.quantiles, estimate.quantiles[1:], strict=False))
    assert predictor.quantile_of(estimate.quantiles[89], estimate) == pytest.approx(0.9, abs=0.01)
    assert predictor.quantile_of(estimate.median, estimate) == pytest.approx(0.5, abs=0.05)
    values = [predictor.quantile_of(d, estimate) for d in (0.0, 0.5, estimate.median, 3 * estimate.high, 1e6)]
    assert values == sorted(values)
    assert values[0] < 0.001 and values[-1] > 0.999
    assert all(0.0 <= v <= 1.0 for v in values)


def test_quantile_of_is_calibrated(clean: tuple) -> None:
    predictor, test, _, catalog = clean
    estimates = _estimates(predictor, test.iloc[:20], catalog, 0.9)
    one_by_one = [predictor.quantile_of(d, e) for d, e in zip(test["duration"], estimates, strict=False)]
    q = ndtr(predictor.history_z(test, catalog))  # held-out sessions: judged by the fitted models
    np.testing.assert_allclose(q[:20], one_by_one, atol=1e-9)
    # Probability integral transform: uniform when the predicted distribution is right.
    assert np.histogram(q, bins=5, range=(0, 1))[0].min() > 0.15 * len(q)


def test_unknown_and_differently_spelled_ids(clean: tuple) -> None:
    predictor, _, _, catalog = clean
    when = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
    plain = predictor.estimate(["A-1", "b.2"], when, catalog)
    spelled = predictor.estimate([" a-1", "B.2 "], when, catalog)
    assert plain == spelled and plain.unknown_item_ids == []
    with_ghost = predictor.estimate(["A-1", " Ghost-9 "], when, catalog)
    assert with_ghost.unknown_item_ids == [" Ghost-9 "]
    assert with_ghost.median > 0


def test_detector_scores_anomalies_above_normal_sessions(anomalous: tuple) -> None:
    predictor, sessions, raw, catalog = anomalous
    train, test, kinds = sessions.iloc[:2500], sessions.iloc[2500:], raw["anomaly_type"].iloc[2500:].to_numpy()
    for use_labels in (True, False):
        detector = AnomalyDetector(use_labels=use_labels, cv_folds=3).fit(train, catalog, predictor)
        assert detector.supervised_ is use_labels
        score = detector.score(detector.session_features(test, catalog, predictor))
        assert np.all((score >= 0) & (score <= 1))
        normal = np.quantile(score[kinds == ""], 0.9)
        for kind in ("theft", "overstay", "tag_swap"):
            assert np.median(score[kinds == kind]) > normal, (use_labels, kind)
        flagged = score >= detector.threshold_
        assert flagged[kinds != ""].mean() > 0.6
        assert flagged[kinds == ""].mean() < 0.05


def test_analyse_verdicts_and_reasons(anomalous: tuple) -> None:
    predictor, sessions, _, catalog = anomalous
    detector = AnomalyDetector(cv_folds=3).fit(sessions.iloc[:2500], catalog, predictor)
    items = ["Q 5", "A-1", "b.2"]
    when = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
    estimate = predictor.estimate(items, when, catalog)

    def analyse(exit_scans: list[str], duration: float):
        return detector.analyse(
            entry_scans=items,
            exit_scans=exit_scans,
            duration=duration,
            estimate=estimate,
            catalog=catalog,
            predictor=predictor,
        )

    normal = analyse([" q 5", "A-1", "B.2"], estimate.median)
    assert not normal.is_anomaly and normal.reasons == [] and normal.missing_items == []
    assert normal.risk_level == "low"
    theft = analyse(["b.2"], estimate.median * 1.3)
    assert theft.missing_items == ["Q 5", "A-1"]
    assert theft.anomaly_score > normal.anomaly_score
    assert theft.reasons[0].code == "missing_items"
    assert theft.reasons[0].message.startswith("2 items not scanned out: Q 5 (€")
    overstay = analyse(items, estimate.median * 6)
    assert overstay.is_anomaly and overstay.risk_level == "high"
    assert overstay.anomaly_score >= detector.threshold_
    assert [r.code for r in overstay.reasons] == ["overstay"]
    assert "longer than 99" in overstay.reasons[0].message
    assert f"(predicted {estimate.median:.0f} min)" in overstay.reasons[0].message


def test_save_load_roundtrip(anomalous: tuple, tmp_path: Path) -> None:
    predictor, sessions, _, catalog = anomalous
    detector = AnomalyDetector(cv_folds=3, use_labels=False).fit(sessions.iloc[:2500], catalog, predictor)
    predictor.save(tmp_path / "duration_model.pkl")
    detector.save(tmp_path / "anomaly_model.pkl")
    predictor2 = DurationPredictor.load(tmp_path / "duration_model.pkl")
    detector2 = AnomalyDetector.load(tmp_path / "anomaly_model.pkl")
    when = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
    estimate = predictor.estimate(["A-1"], when, catalog, 0.8)
    assert predictor2.estimate(["A-1"], when, catalog, 0.8) == estimate
    kwargs = {"entry_scans": ["A-1"], "exit_scans": [], "duration": 30.0, "estimate": estimate, "catalog": catalog}
    assert detector2.analyse(**kwargs, predictor=predictor2) == detector.analyse(**kwargs, predictor=predictor)


def test_load_refuses_wrong_files(anomalous: tuple, tmp_path: Path) -> None:
    predictor, *_ = anomalous
    path = tmp_path / "duration_model.pkl"
    with pytest.raises(ModelLoadError, match="not found"):
        DurationPredictor.load(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError, match="cannot be read"):
        DurationPredictor.load(path)
    joblib.dump({"some": "dict"}, path)
    with pytest.raises(ModelLoadError, match="not a fitting-room model"):
        DurationPredictor.load(path)
    predictor.save(path)
    with pytest.raises(ModelLoadError, match="holds a DurationPredictor, expected a AnomalyDetector"):
        AnomalyDetector.load(path)
    envelope = joblib.load(path)
    joblib.dump(envelope | {"sklearn_version": "0.1"}, path)
    with pytest.raises(ModelLoadError, match=r"scikit-learn 0\.1"):
        DurationPredictor.load(path)
    envelope["schema"] = envelope["schema"] | {"feature_names": ["n_items"]}
    joblib.dump(envelope, path)
    with pytest.raises(ModelLoadError, match="another feature schema"):
        DurationPredictor.load(path)


def test_entry_hour_reaches_the_classifier_the_same_way_from_history_and_analyse(anomalous: tuple) -> None:
    predictor, sessions, _, catalog = anomalous
    detector = AnomalyDetector(cv_folds=3).fit(sessions.iloc[:2500], catalog, predictor)
    assert detector.supervised_
    held_out = sessions.iloc[2500:2520]
    features = detector.session_features(held_out, catalog, predictor)
    hours = features[:, DETECTOR_FEATURES.index("entry_hour")]
    local = [t.hour + t.minute / 60 for t in held_out["entry_time"]]
    assert hours.tolist() == pytest.approx(local)
    scores = detector.score(features)
    for (_, row), score in zip(held_out.iterrows(), scores, strict=True):
        estimate = predictor.estimate(row["entry_scans"], row["entry_time"].to_pydatetime(), catalog)
        kwargs = {
            "entry_scans": row["entry_scans"],
            "exit_scans": row["exit_scans"],
            "duration": row["duration"],
            "estimate": estimate,
            "catalog": catalog,
            "predictor": predictor,
        }
        # A UTC entry time is converted to the store's zone before its hour is taken.
        as_utc = row["entry_time"].to_pydatetime().astimezone(UTC)
        assert detector.analyse(**kwargs, entry_time=as_utc).anomaly_score == pytest.approx(score, abs=1e-6)
        assert 0.0 <= detector.analyse(**kwargs).anomaly_score <= 1.0  # the hour is optional


@pytest.mark.parametrize("use_labels", [True, False])
def test_analyse_scores_exactly_as_the_block_path(anomalous: tuple, use_labels: bool) -> None:
    # analyse() computes one row with Python floats and one-row fast paths; score() takes rows of
    # _feature_rows. Both must give the same numbers, bit for bit, or per-request verdicts would drift.
    predictor, sessions, _, catalog = anomalous
    detector = AnomalyDetector(cv_folds=3, use_labels=use_labels).fit(sessions.iloc[:2500], catalog, predictor)
    assert detector.supervised_ is use_labels
    held_out = sessions.iloc[2500:2650]
    cases = [
        (row["entry_scans"], row["exit_scans"], row["duration"], row["entry_time"].to_pydatetime())
        for _, row in held_out.iterrows()
    ]
    first = cases[0]
    cases += [
        (first[0], first[1], 0.0, None),  # below the grid, unknown entry hour (NaN for the classifier)
        (first[0], first[1], 1e5, first[3]),  # far above the grid
        (first[0], [], 30.0, first[3]),  # everything missing
        ([], ["unknown-1"], 5.0, first[3]),  # nothing taken in, an unknown id out
        (first[0], [f" {i.upper()} " for i in reversed(first[0])], 12.0, first[3]),  # spelling and order only
    ]
    for entry, exit_, duration, when in cases:
        estimate = predictor.estimate(entry, when or first[3], catalog)
        result = detector.analyse(
            entry_scans=entry,
            exit_scans=exit_,
            duration=duration,
            estimate=estimate,
            catalog=catalog,
            predictor=predictor,
            entry_time=when,
        )
        log_y = np.array([math.log(max(duration, 0.1))])
        log_grid = np.log(np.array(estimate.quantiles))[None, :]
        evidence = np.array([_evidence_columns(collect_evidence(entry, exit_, catalog))])
        row = _feature_rows(log_y, log_grid, evidence, np.array([_local_hour(when, predictor.timezone)]))
        assert _duration_scores(float(log_y[0]), estimate.quantiles) == tuple(row[0, :2].tolist())
        assert result.anomaly_score == detector.score(row)[0]
        assert detector._surprisals_one(row[0].tolist(), detector._fast_path().isolation) == (
            detector._surprisals(row)[0].tolist()
        )


def test_session_features_equal_the_per_session_definitions(anomalous: tuple) -> None:
    predictor, sessions, _, catalog = anomalous
    some = sessions.iloc[2400:2700].copy()
    swapped = some["entry_scans"].iloc[2]
    dear = catalog.lookup(swapped[0])
    assert dear is not None
    cheapest = min((i for i in catalog if i.category == dear.category), key=lambda i: i.price)
    edge_cases = [
        ([], []),  # empty scans
        ([], ["unknown-1"]),
        (["unknown-1", " UNKNOWN-1"], ["unknown-1"]),  # an unknown id, twice in two spellings
        (some["entry_scans"].iloc[0] * 2, [f" {i.upper()} " for i in some["entry_scans"].iloc[0]]),  # duplicates
        (some["entry_scans"].iloc[1], list(reversed(some["entry_scans"].iloc[1]))),  # order only
        (swapped, [cheapest.item_id.lower(), *swapped[1:]]),  # a cheaper tag of the same category
    ]
    for row, (entry, exit_) in enumerate(edge_cases):
        some.iat[row, some.columns.get_loc("entry_scans")] = entry
        some.iat[row, some.columns.get_loc("exit_scans")] = exit_
    features = AnomalyDetector.session_features(some, catalog, predictor)
    log_y, log_grid = predictor.history_log_grids(some, catalog)
    pairs = zip(some["entry_scans"], some["exit_scans"], strict=True)
    evidence = np.array([_evidence_columns(collect_evidence(entry, exit_, catalog)) for entry, exit_ in pairs])
    hours = np.array([_local_hour(t, predictor.timezone) for t in some["entry_time"]])
    expected = _feature_rows(log_y, log_grid, evidence, hours)
    np.testing.assert_array_equal(features, expected)
    assert (features[:, DETECTOR_FEATURES.index("n_missing")] > 0).sum() >= 5
    assert features[5, DETECTOR_FEATURES.index("n_swaps")] == (cheapest.price < dear.price)


def test_pattern_shares_count_each_evidence_pattern(anomalous: tuple) -> None:
    predictor, sessions, _, catalog = anomalous
    features = AnomalyDetector.session_features(sessions.iloc[:2500], catalog, predictor)
    patterns = [
        (int(min(row[2], 2)), int(min(row[3], 2)), int(row[4] > 0)) for row in features
    ]  # n_missing, n_unexpected, n_swaps
    counts = {key: patterns.count(key) for key in set(patterns)}
    expected = {key: (count + 1.0) / (len(features) + 1.0) for key, count in counts.items()}
    assert _pattern_shares(features) == expected | {(0, 0, 0): 1.0, "n": float(len(features))}


def test_parallel_fits_give_the_same_models(anomalous: tuple) -> None:
    _, sessions, _, catalog = anomalous
    history = sessions.iloc[:1500]
    one, two = (DurationPredictor(cv_folds=3, max_iter=60, n_jobs=n).fit(history, catalog) for n in (1, 2))
    np.testing.assert_array_equal(one.residuals_, two.residuals_)
    assert one.out_of_fold_ == two.out_of_fold_
    detectors = [AnomalyDetector(cv_folds=3, n_jobs=n).fit(history, catalog, one) for n in (1, 2)]
    assert detectors[0].supervised_ and detectors[0].threshold_ == detectors[1].threshold_
    features = detectors[0].session_features(sessions.iloc[1500:1700], catalog, one)
    np.testing.assert_array_equal(detectors[0].score(features), detectors[1].score(features))


def test_local_hours_equal_local_hour_including_unknown_times() -> None:
    # Around both DST switches, an unknown time, and late evening.
    stamps = ["2024-03-31 00:59:00+00:00", "NaT", "2024-10-27 01:30:00+00:00", "2024-06-01 23:45:00+00:00"]
    times = pd.Series(pd.to_datetime(stamps))
    expected = [_local_hour(t, "Europe/Berlin") for t in times]
    np.testing.assert_array_equal(_local_hours(times, "Europe/Berlin"), np.array(expected))


def test_interval_is_the_estimate_without_its_grid(clean: tuple) -> None:
    predictor, test, _, catalog = clean
    for items, t in zip(test["entry_scans"].iloc[:20], test["entry_time"].iloc[:20], strict=True):
        for level in (0.5, 0.9, 0.99):
            estimate = predictor.estimate(items, t.to_pydatetime(), catalog, level)
            interval = predictor.interval(items, t.to_pydatetime(), catalog, level)
            assert not hasattr(interval, "quantiles")
            assert (interval.median, interval.low, interval.high, interval.level) == (
                estimate.median,
                estimate.low,
                estimate.high,
                estimate.level,
            )
            assert interval.unknown_item_ids == estimate.unknown_item_ids
    with pytest.raises(InvalidRequestError):
        predictor.interval(["A-1"], test["entry_time"].iloc[0].to_pydatetime(), catalog, 0.3)
