"""report.html: written by train.py, self-contained, every section present, numbers equal metrics.json."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from typing import Any

import pytest

import train
from fitting_room import simulation
from fitting_room.report import REPORT_FILE

SECTIONS = {"data", "accuracy", "residuals", "calibration", "anomaly", "importance", "truth"}


class _Page(HTMLParser):
    """Section ids, image sources, verdict texts and the page's full text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.verdicts: dict[str, str] = {}
        self.text: list[str] = []
        self._section = ""
        self._in_verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id") or ""
            self.sections.append(self._section)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in {"link", "script"} or (tag == "a" and a.get("href")):
            self.links.append(tag)
        if tag == "p" and a.get("class") == "verdict":
            self._in_verdict = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_verdict = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_verdict:
            self.verdicts[self._section] = self.verdicts.get(self._section, "") + data


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], _Page]:
    root = tmp_path_factory.mktemp("report")
    simulation.write(simulation.generate(n_sessions=1500, n_items=60, seed=8), root / "data")
    assert train.main(["--data-dir", str(root / "data"), "--model-dir", str(root / "models")]) == 0
    metrics = json.loads((root / "models" / "metrics.json").read_text())
    page = _Page()
    page.feed((root / "models" / REPORT_FILE).read_text(encoding="utf-8"))
    return metrics, page


def test_report_has_every_section_and_embedded_pngs_only(trained: tuple[dict[str, Any], _Page]) -> None:
    _, page = trained
    assert set(page.sections) == SECTIONS
    assert set(page.verdicts) == SECTIONS, "every section opens with a plain-words verdict"
    # Scatter, residuals, calibration, one PR curve per detector variant, importances.
    assert len(page.images) == 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.links == [], "self-contained: no external stylesheets, scripts or links"


def test_report_numbers_match_metrics_json(trained: tuple[dict[str, Any], _Page]) -> None:
    metrics, page = trained
    d = metrics["duration"]
    assert f"off by {d['mae_minutes']:.2f} minutes" in page.verdicts["accuracy"]
    assert f"90% intervals contained {100 * d['coverage']:.1f}% of held-out sessions" in page.verdicts["calibration"]
    for name, figures in metrics["anomaly"].items():
        assert f"{name.replace('_', ' ')}: PR-AUC {figures['pr_auc']:.3f}" in page.verdicts["anomaly"]
    text = "".join(page.text)
    for nominal, empirical in d["coverage_by_level"].items():
        assert f"{float(nominal):.0%}{100 * empirical:.1f}%" in text
    truth = metrics["vs_truth"]
    assert f"{truth['duration']['mae_over_bayes_mae']:.3f}" in page.verdicts["truth"]
    limit = truth["anomaly"]["achievable_limit"]
    assert f"PR-AUC {limit['pr_auc']:.3f}" in page.verdicts["truth"]
    top = next(iter(d["feature_importance"]))
    assert f"relies most on {top}" in page.verdicts["importance"]
    assert f"Trained on {metrics['data']['sessions']} sessions" in page.verdicts["data"]
