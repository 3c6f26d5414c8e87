"""Model card: one self-contained HTML page (plots as embedded PNGs) a store manager can read.

Every number printed comes from the metrics dict train.py writes to metrics.json; the plots
come from the same held-out split. Each section opens with a plain-words verdict.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

REPORT_FILE = "report.html"
_MAX_SCATTER = 5000  # points in the scatter plot; more only slows the browser


@dataclass(frozen=True)
class DurationDiagnostics:
    """Held-out sessions: actual and predicted median minutes, local entry hour, item count."""

    actual: np.ndarray
    predicted: np.ndarray
    hour: np.ndarray
    n_items: np.ndarray


@dataclass(frozen=True)
class AnomalyCurve:
    """Labels and scores of one detector variant on the labelled held-out sessions."""

    y: np.ndarray
    score: np.ndarray
    threshold: float


@dataclass(frozen=True)
class ReportInputs:
    """What the plots need beyond metrics.json."""

    duration: DurationDiagnostics
    anomaly: dict[str, AnomalyCurve] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)


def write_report(path: Path, metrics: dict[str, Any], inputs: ReportInputs) -> Path:
    """Render the model card for `metrics` to `path` (HTML, no external files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(metrics, inputs), encoding="utf-8")
    return path


def render_report(metrics: dict[str, Any], inputs: ReportInputs) -> str:
    """The model card as one HTML string."""
    sections = [
        _data_section(metrics),
        _accuracy_section(metrics, inputs.duration),
        _residual_section(inputs.duration),
        _calibration_section(metrics),
        _anomaly_section(metrics, inputs.anomaly),
        _importance_section(inputs.importances),
    ]
    if "vs_truth" in metrics:
        sections.append(_truth_section(metrics["vs_truth"]))
    body = "\n".join(sections)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>Fitting-room models: report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}"
        ".verdict{background:#f3f6fa;border-left:4px solid #3a6ea5;padding:.5rem .8rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}"
        "img{max-width:100%}</style></head><body>\n"
        f"<h1>Fitting-room models</h1><p>Trained {_e(metrics.get('created_at', ''))}; figures are measured on "
        f"{metrics['split']['test']} held-out sessions the evaluated models never saw "
        f"({_saved_models_text(metrics)}).</p>\n{body}\n</body></html>\n"
    )


def _saved_models_text(metrics: dict[str, Any]) -> str:
    """Which models were saved: refitted on every session, or (large data) the evaluated ones themselves."""
    saved = metrics.get("saved_models", {})
    if saved.get("refitted_on_all_sessions", True):
        return f"the saved models are then refitted on all {metrics['data']['sessions']}"
    return (
        f"the saved models are these evaluated ones, fitted on the {saved['fitted_on_sessions']} training "
        "sessions: at this size a refit on all sessions is skipped"
    )


def _data_section(metrics: dict[str, Any]) -> str:
    data = metrics["data"]
    d = data["duration_minutes"]
    rows = [
        ("sessions", data["sessions"]),
        ("rooms", data["rooms"]),
        ("first / last entry", f"{data['first_entry']} / {data['last_entry']}"),
        ("catalogue items", data["catalog_items"]),
        ("unknown item scans", data["unknown_item_scans"]),
        ("duration p05 / median / p95 (min)", f"{d['p05']:.1f} / {d['median']:.1f} / {d['p95']:.1f}"),
        ("labelled sessions / anomalies", f"{data['labelled_sessions']} / {data['labelled_anomalies']}"),
    ]
    if "store_history_sessions" in data:
        rows.append(("sessions from the store's own history", data["store_history_sessions"]))
    verdict = (
        f"Trained on {data['sessions']} sessions in {data['rooms']} rooms, "
        f"{data['labelled_anomalies']} of them labelled anomalies."
    )
    return _section("data", "Data summary", verdict, _table(["", "value"], rows))


def _accuracy_section(metrics: dict[str, Any], diag: DurationDiagnostics) -> str:
    d = metrics["duration"]
    best = min(d["baselines"].values())
    verdict = (
        f"The predicted duration is off by {d['mae_minutes']:.2f} minutes on average "
        f"(best simple baseline: {best:.2f} min; "
        + ("the model is better" if d["mae_minutes"] < best else "the model is NOT better")
        + ")."
    )
    fig, ax = plt.subplots(figsize=(5.5, 5))
    keep = _subsample(len(diag.actual))
    ax.scatter(diag.predicted[keep], diag.actual[keep], s=4, alpha=0.3)
    top = float(np.quantile(diag.actual, 0.995)) if len(diag.actual) else 1.0
    ax.plot([0, top], [0, top], color="k", lw=1, label="perfect")
    ax.set(xlabel="predicted median (min)", ylabel="actual (min)", xlim=(0, top), ylim=(0, top))
    ax.legend()
    rows = [("model", d["mae_minutes"])] + [(k.removesuffix("_mae_minutes"), v) for k, v in d["baselines"].items()]
    table = _table(["predictor", "MAE (min)"], [(n, f"{v:.2f}") for n, v in rows])
    if "baselines_note" in d:  # a baseline fitted on a sample (large data) says so
        table += f"<p>{_e(d['baselines_note'])}.</p>"
    return _section("accuracy", "Predicted vs actual duration", verdict, _img(fig) + table)


def _residual_section(diag: DurationDiagnostics) -> str:
    log_ratio = np.log(np.maximum(diag.actual, 0.1) / np.maximum(diag.predicted, 0.1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    worst = 0.0
    for ax, key, label in ((axes[0], diag.hour, "entry hour"), (axes[1], diag.n_items, "items")):
        groups = sorted(set(key.tolist()))
        # Tiny groups are noisy; judge bias only where at least 30 sessions fall.
        sizable = [g for g in groups if (key == g).sum() >= 30]
        worst = max([worst] + [abs(float(np.median(log_ratio[key == g]))) for g in sizable])
        ax.boxplot([log_ratio[key == g] for g in groups], showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), [str(g) for g in groups])
        ax.axhline(0, color="k", lw=1)
        ax.set(xlabel=label, ylabel="log(actual / predicted)")
    verdict = (
        "Residuals centre on zero at every hour and basket size (largest group median off by "
        f"{100 * (np.exp(worst) - 1):.0f}%)."
        if worst < 0.1
        else f"Some groups are biased: a group median is off by {100 * (np.exp(worst) - 1):.0f}%."
    )
    return _section("residuals", "Residuals by hour and item count", verdict, _img(fig))


def _calibration_section(metrics: dict[str, Any]) -> str:
    d = metrics["duration"]
    curve = d["coverage_by_level"]
    nominal = [float(k) for k in curve]
    empirical = [float(v) for v in curve.values()]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(nominal, empirical, "o-", label="held-out")
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfect")
    ax.set(xlabel="nominal interval level", ylabel="share of sessions inside", xlim=(0.45, 1), ylim=(0.45, 1))
    ax.legend()
    verdict = (
        f"{d['level']:.0%} intervals contained {100 * d['coverage']:.1f}% of held-out sessions "
        f"(mean width {d['mean_width_minutes']:.1f} min); worst basket size: "
        f"{100 * min(b['coverage'] for b in d['coverage_by_item_count'].values()):.1f}%."
    )
    rows = [(f"{n:.0%}", f"{100 * e:.1f}%") for n, e in zip(nominal, empirical, strict=True)]
    buckets = [(k, b["sessions"], f"{100 * b['coverage']:.1f}%") for k, b in d["coverage_by_item_count"].items()]
    tables = (
        _table(["nominal", "empirical"], rows)
        + "<p>By item count:</p>"
        + _table(["items", "sessions", "coverage"], buckets)
    )
    return _section("calibration", "Interval coverage (calibration curve)", verdict, _img(fig) + tables)


def _anomaly_section(metrics: dict[str, Any], curves: dict[str, AnomalyCurve]) -> str:
    parts = []
    verdicts = []
    for name, figures in metrics["anomaly"].items():
        if figures is None or name not in curves:
            verdicts.append(f"{name.replace('_', ' ')}: no labelled held-out sessions of both classes to score.")
            continue
        curve = curves[name]
        precision, recall, thresholds = precision_recall_curve(curve.y, curve.score)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(recall, precision, label=f"detector (PR-AUC {figures['pr_auc']:.3f})")
        at = int(np.searchsorted(thresholds, curve.threshold, side="left"))
        at = min(at, len(thresholds) - 1)
        ax.plot(recall[at], precision[at], "ro", label="chosen threshold")
        ax.axhline(float(curve.y.mean()), color="grey", ls=":", label="random")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=name.replace("_", " "))
        ax.legend(loc="lower left")
        best = max(figures["baselines"].values())
        verdicts.append(
            f"{name.replace('_', ' ')}: PR-AUC {figures['pr_auc']:.3f} "
            f"({'above' if figures['pr_auc'] > best else 'NOT above'} the best baseline {best:.3f}); "
            f"at the threshold it flags {100 * figures['flagged_rate']:.1f}% of sessions, "
            f"{100 * figures['precision']:.0f}% of flags are real and it catches {100 * figures['recall']:.0f}% "
            "of anomalies."
        )
        parts.append(_img(fig))
    if not verdicts:
        verdicts.append("No anomaly metrics.")
    return _section("anomaly", "Anomaly detection: precision-recall", " ".join(verdicts), "".join(parts))


def _importance_section(importances: dict[str, float]) -> str:
    if not importances:
        return _section("importance", "Feature importance", "Not computed.", "")
    top = list(importances.items())[:15]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1))
    ax.barh([n for n, _ in top][::-1], [v for _, v in top][::-1])
    ax.set(xlabel="increase in mean |log error| x100 when shuffled (about % of duration)")
    fig.tight_layout()
    verdict = (
        f"The duration model relies most on {top[0][0]}"
        + (f" and {top[1][0]}" if len(top) > 1 else "")
        + " (permutation importance of the median model on held-out sessions)."
    )
    return _section("importance", "Feature importance (duration model)", verdict, _img(fig))


def _truth_section(truth: dict[str, Any]) -> str:
    d = truth["duration"]
    rows = [
        ("MAE / Bayes MAE", f"{d['mae_over_bayes_mae']:.3f}", "≤ 1.05", d["targets_met"]["mae"]),
        ("90% coverage", f"{d['coverage']:.3f}", "0.88-0.92", d["targets_met"]["coverage"]),
        ("worst bucket coverage", f"{d['min_bucket_coverage']:.3f}", "≥ 0.85", d["targets_met"]["coverage_per_bucket"]),
        ("width / true 5-95% width", f"{d['width_over_true_width']:.3f}", "≤ 1.25", d["targets_met"]["width"]),
    ]
    for name, figures in truth["anomaly"].items():
        if name == "achievable_limit":
            continue
        minimum = "≥ 0.90" if name == "with_labels" else "≥ 0.75"
        rows.append(
            (f"PR-AUC {name.replace('_', ' ')}", f"{figures['pr_auc']:.3f}", minimum, figures["targets_met"]["pr_auc"])
        )
        if name == "with_labels":
            rows.append(
                (
                    "precision at recall ≥ 0.8",
                    f"{figures['precision_at_recall_0.8']:.3f}",
                    "≥ 0.6",
                    figures["targets_met"]["precision_at_recall_0.8"],
                )
            )
    table = _table(["figure", "measured", "target", "met"], [(a, b, c, "yes" if ok else "no") for a, b, c, ok in rows])
    met = sum(1 for *_, ok in rows if ok)
    verdict = (
        f"Against the simulator's ground truth, {met} of {len(rows)} targets are met; the model's MAE is "
        f"{d['mae_over_bayes_mae']:.3f}x the best possible (Bayes) MAE of {d['bayes_mae_minutes']:.2f} min."
    )
    limit = truth["anomaly"].get("achievable_limit")
    if limit:
        verdict += (
            f" The Bayes-optimal detector, which knows the simulator's exact mixture, reaches PR-AUC "
            f"{limit['pr_auc']:.3f} (precision {limit['precision_at_recall_0.8']:.3f} at recall 0.8) on the same "
            "sessions: the data's own limit, so targets above it cannot be met."
        )
    return _section("truth", "Against the ground truth (simulated data only)", verdict, table)


def _section(anchor: str, title: str, verdict: str, content: str) -> str:
    return f"<section id='{anchor}'><h2>{_e(title)}</h2><p class='verdict'>{_e(verdict)}</p>\n{content}</section>"


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(fig: Figure) -> str:
    """The figure as an inline base64 PNG (closed afterwards so figures never pile up)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<p><img alt='plot' src='data:image/png;base64,{data}'></p>"


def _subsample(n: int) -> np.ndarray:
    """Evenly spaced indices, at most _MAX_SCATTER of them (deterministic)."""
    return np.unique(np.linspace(0, n - 1, min(n, _MAX_SCATTER)).astype(int)) if n else np.array([], int)


def _e(value: Any) -> str:
    return html.escape(str(value))
