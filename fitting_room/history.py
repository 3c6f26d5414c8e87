"""Load and validate the data contract files into clean, typed frames.

historical_sessions.csv has one row per finished session. Required columns: session_id, room_id,
entry_time (ISO 8601), entry_scans and exit_scans (JSON lists of item ids), and duration (minutes)
or exit_time. Optional: item_ids, is_anomaly (true/false/1/0, empty = unknown), anomaly_type.
Other columns are ignored. Timestamps with an offset are converted to the store's time zone;
timestamps without one are read as store-local. Every error names the file and the row or column.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from fitting_room.catalog import Catalog
from fitting_room.errors import DataContractError

SESSIONS_FILE = "historical_sessions.csv"
CATALOG_FILE = "item_database.json"
REQUIRED_COLUMNS: tuple[str, ...] = ("session_id", "room_id", "entry_time", "entry_scans", "exit_scans")
# The data contract's columns, in the order the simulator and the store export write them.
CONTRACT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "room_id",
    "entry_time",
    "exit_time",
    "duration",
    "entry_scans",
    "exit_scans",
    "item_ids",
    "is_anomaly",
    "anomaly_type",
)
# Columns of the frame load_sessions returns, in order: the contract plus the CSV row each came from.
SESSION_COLUMNS: tuple[str, ...] = (*CONTRACT_COLUMNS, "source_row")
_TRUE = frozenset({"true", "1", "1.0", "yes"})
_FALSE = frozenset({"false", "0", "0.0", "no"})


def load_history(data_dir: Path, timezone: str = "UTC") -> tuple[pd.DataFrame, Catalog]:
    """Both contract files of a data folder: (sessions from load_sessions, item catalogue)."""
    data_dir = Path(data_dir)
    catalog = Catalog.load(data_dir / CATALOG_FILE)
    sessions = load_sessions(data_dir / SESSIONS_FILE, timezone=timezone)
    return sessions, catalog


def load_sessions(path: Path, timezone: str = "UTC") -> pd.DataFrame:
    """Validated sessions: one row per session with the SESSION_COLUMNS, times aware in `timezone`.

    `duration` is in minutes (taken from the duration column when given, else exit - entry);
    scan columns hold lists of ids as written; `is_anomaly` is a nullable boolean (NA = unknown);
    `source_row` is the 1-based data row in the file.
    """
    path = Path(path)
    zone = ZoneInfo(timezone)
    raw = _read_csv(path)
    _check_columns(path, raw.columns)
    report = _Reporter(path)
    n = len(raw)

    entry_time = report.column(raw["entry_time"], "entry_time", lambda v: _parse_time(v, zone))
    exit_col = raw["exit_time"] if "exit_time" in raw else pd.Series([""] * n, dtype=object)
    exit_time = report.column(exit_col, "exit_time", lambda v: _parse_time(v, zone), optional=True)
    duration = _durations(raw, report, entry_time, exit_time)

    sessions = pd.DataFrame(
        {
            "session_id": report.column(raw["session_id"], "session_id", _non_empty),
            "room_id": report.column(raw["room_id"], "room_id", _non_empty),
            "entry_time": _as_datetime(entry_time, zone),
            "exit_time": _as_datetime(exit_time, zone),
            "duration": np.asarray(duration, dtype=float),
            "entry_scans": report.column(raw["entry_scans"], "entry_scans", _parse_scans),
            "exit_scans": report.column(raw["exit_scans"], "exit_scans", _parse_scans),
        }
    )
    if "item_ids" in raw:
        given = report.column(raw["item_ids"], "item_ids", _parse_scans, optional=True)
        sessions["item_ids"] = [g if g is not None else e for g, e in zip(given, sessions["entry_scans"], strict=True)]
    else:
        sessions["item_ids"] = sessions["entry_scans"]
    labels = raw["is_anomaly"] if "is_anomaly" in raw else pd.Series([""] * n, dtype=object)
    flags = report.column(labels, "is_anomaly", _parse_label, optional=True)
    sessions["is_anomaly"] = pd.array(flags, dtype="boolean")
    types = raw["anomaly_type"] if "anomaly_type" in raw else pd.Series([""] * n, dtype=object)
    sessions["anomaly_type"] = [t.strip() or None for t in types]
    sessions["source_row"] = np.arange(1, n + 1)
    _check_unique_ids(path, sessions["session_id"])
    return sessions.loc[:, list(SESSION_COLUMNS)]


def has_labels(sessions: pd.DataFrame) -> bool:
    """Whether any session carries a known is_anomaly label."""
    return "is_anomaly" in sessions and bool(sessions["is_anomaly"].notna().any())


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV as strings (no NA guessing), column names stripped; contract errors on unreadable files."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError as err:
        raise DataContractError(f"{path}: file not found") from err
    except pd.errors.EmptyDataError as err:
        raise DataContractError(f"{path}: file is empty (expected a header row)") from err
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise DataContractError(f"{path}: not a readable CSV file ({err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataContractError(f"{path}: contains no sessions (only a header row)")
    return frame


def _check_columns(path: Path, columns: pd.Index) -> None:
    """Raise when a required column, or both duration and exit_time, is absent."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataContractError(f"{path}: missing required column(s) {', '.join(map(repr, missing))}")
    if "duration" not in columns and "exit_time" not in columns:
        raise DataContractError(f"{path}: needs a 'duration' or an 'exit_time' column (neither is present)")
    duplicated = sorted({c for c in columns if list(columns).count(c) > 1})
    if duplicated:
        raise DataContractError(f"{path}: column(s) {', '.join(map(repr, duplicated))} appear more than once")


class _Reporter:
    """Applies a per-cell parser to a column and raises one error naming file, first bad row and column."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def column(
        self,
        values: pd.Series,
        name: str,
        parse: Callable[[str], object],
        optional: bool = False,
    ) -> list:
        """Parsed cells (None for empty optional cells); parse raises ValueError with the problem."""
        out: list = []
        for index, cell in enumerate(values):
            text = str(cell).strip()
            if optional and not text:
                out.append(None)
                continue
            try:
                out.append(parse(text))
            except ValueError as err:
                self.fail(index, name, str(err))
        return out

    def fail(self, index: int, column: str, problem: str) -> NoReturn:
        """Raise the DataContractError for 0-based data row `index`."""
        raise DataContractError(f"{self.path}: row {index + 1} (line {index + 2}), column {column!r}: {problem}")


def _non_empty(text: str) -> str:
    """The stripped cell, which must not be empty."""
    if not text:
        raise ValueError("is empty")
    return text


def _parse_time(text: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 timestamp as an aware datetime in `zone` (naive values are store-local)."""
    if not text:
        raise ValueError("is empty, expected an ISO 8601 timestamp")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"{text!r} is not an ISO 8601 timestamp") from err
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=zone)
    return stamp.astimezone(zone)


def _as_datetime(values: list, zone: ZoneInfo) -> pd.Series:
    """Aware datetimes (or None) as a datetime64 column in `zone`."""
    stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    return stamps.dt.tz_convert(zone)


def _durations(raw: pd.DataFrame, report: _Reporter, entry_time: list, exit_time: list) -> list[float]:
    """Minutes per session: the duration cell when given, else exit_time - entry_time; never negative."""
    cells = raw["duration"] if "duration" in raw else pd.Series([""] * len(raw), dtype=object)
    durations: list[float] = []
    for index, cell in enumerate(cells):
        text = str(cell).strip()
        if text:
            try:
                value = float(text)
            except ValueError:
                report.fail(index, "duration", f"{text!r} is not a number of minutes")
            if not math.isfinite(value):
                report.fail(index, "duration", f"{text!r} is not a finite number of minutes")
            if value < 0:
                report.fail(index, "duration", f"negative duration {text}")
        elif exit_time[index] is not None:
            value = (exit_time[index] - entry_time[index]).total_seconds() / 60.0
            if value < 0:
                report.fail(index, "exit_time", "exit_time is before entry_time (negative duration)")
        else:
            report.fail(index, "duration", "neither duration nor exit_time is given")
        durations.append(value)
    return durations


def _parse_scans(text: str) -> list[str]:
    """A JSON list of non-empty item-id strings."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{_short(text)} is not a JSON list of item ids ({err.msg})") from err
    if not isinstance(value, list):
        raise ValueError(f"{_short(text)} is not a JSON list of item ids")
    for element in value:
        if not isinstance(element, str) or not element.strip():
            raise ValueError(f"item id {element!r} in {_short(text)} is not a non-empty string")
    # A store has few distinct ids but millions of scans: one shared string per id saves most of the memory.
    return [sys.intern(element) for element in value]


def _parse_label(text: str) -> bool:
    """is_anomaly flag: true/false/1/0/yes/no in any case."""
    folded = text.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false/1/0 or leave empty)")


def _check_unique_ids(path: Path, ids: pd.Series) -> None:
    """Raise on the first repeated session_id, naming both rows."""
    duplicated = ids.duplicated(keep="first")
    if duplicated.any():
        index = int(np.flatnonzero(duplicated.to_numpy())[0])
        first = int(np.flatnonzero((ids == ids.iloc[index]).to_numpy())[0])
        raise DataContractError(
            f"{path}: row {index + 1} (line {index + 2}), column 'session_id': "
            f"{ids.iloc[index]!r} repeats row {first + 1}"
        )


def _short(text: str, limit: int = 60) -> str:
    """repr of a cell, shortened for messages."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
