"""Shared helpers of the benchmarks: machine line, timing, writing results and the README's figures."""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sklearn

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine_line() -> str:
    """What the figures were measured on: CPU, cores, load, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {load_average()} (shared machine); "
        f"Python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}"
    )


def time_calls(call: Callable[[int], object], n_calls: int, budget_s: float) -> np.ndarray:
    """Wall time in microseconds of each call(i), i = 0, 1, ..., stopping early once the budget is spent."""
    times = []
    deadline = time.perf_counter() + budget_s
    for i in range(n_calls):
        start = time.perf_counter_ns()
        call(i)
        times.append((time.perf_counter_ns() - start) / 1000.0)
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    return np.asarray(times)


def fmt_us(value: float) -> str:
    """Microseconds with a sensible number of digits."""
    if value >= 10_000:
        return f"{value / 1000:,.1f} ms"
    if value >= 100:
        return f"{value:,.0f} µs"
    return f"{value:.1f} µs"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(out_dir: Path, name: str, text: str) -> Path:
    """Write one benchmark's markdown into the results folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path


def update_readme(section: str, text: str, readme: Path = REPO / "README.md") -> bool:
    """Replace the README's figures between `<!-- bench:{section} -->` and `<!-- /bench:{section} -->`.

    Returns False (README untouched) when the markers are absent.
    """
    if not readme.is_file():
        return False
    content = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- bench:{re.escape(section)} -->\n).*?(<!-- /bench:{re.escape(section)} -->)", re.S)
    if not pattern.search(content):
        return False
    readme.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), content), "utf-8")
    return True


def publish(out_dir: Path, name: str, text: str) -> None:
    """Print the figures, write them to `<out_dir>/<name>.md` and replace the README's `bench:<name>` block."""
    print(text)
    write_result(out_dir, f"{name}.md", text)
    update_readme(name, text)


def store_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options every benchmark over a trained store takes: --data-dir, --model-dir, --out."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def ensure_store(data_dir: Path, model_dir: Path, work_dir: Path, sessions: int = 4000) -> tuple[Path, Path]:
    """(data_dir, model_dir) holding data and trained models; made with the repository's scripts if missing."""
    have_data = (data_dir / "item_database.json").is_file() and (data_dir / "historical_sessions.csv").is_file()
    have_models = (model_dir / "duration_model.pkl").is_file() and (model_dir / "anomaly_model.pkl").is_file()
    if have_data and have_models:
        return data_dir, model_dir
    data_dir, model_dir = work_dir / "data", work_dir / "models"
    print(f"no data or models found: generating a store of {sessions} sessions in {work_dir}", file=sys.stderr)
    for script, args in (
        ("simulate_data.py", ["--out-dir", str(data_dir), "--sessions", str(sessions), "--seed", "7"]),
        ("train.py", ["--data-dir", str(data_dir), "--model-dir", str(model_dir)]),
    ):
        subprocess.run([sys.executable, script, *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return data_dir, model_dir
