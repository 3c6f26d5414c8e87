"""Export of the state store's finished sessions with staff verdicts as labels (closing the loop)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fitting_room.engine import RoomSpec
from fitting_room.errors import DataContractError
from fitting_room.history import CONTRACT_COLUMNS, load_sessions
from fitting_room.service import ExitReport, FittingRoomService
from fitting_room.store_history import store_history, write_store_history
from tests.engine_factories import at
from tests.fakes import make_service

REPO = Path(__file__).resolve().parent.parent
ROOMS = [RoomSpec("room_1", 6), RoomSpec("room_2", 6)]
ITEMS = ["sku-0001", "sku-0002", "sku-0003"]
# What staff decided for each flagged session; None leaves the alert open.
VERDICTS: tuple[str | None, ...] = ("theft", "false_alarm", "item_found", None)


def fill_store(db: Path, clean: int = 3) -> dict[str, str]:
    """Complete `clean` unflagged sessions and one flagged session per VERDICTS entry.

    Returns the expected is_anomaly text per session id ("" = no staff verdict).
    """
    service = make_service(db, ROOMS)
    expected: dict[str, str] = {}
    minute = 0.0
    for verdict in (*[""] * clean, *VERDICTS):
        session_id = service.assign(ITEMS, False, at(minute)).session.session_id
        room = service.session(session_id, at(minute)).session.room_id or ""
        exit_scans = ITEMS if verdict == "" else ITEMS[:1]
        result = service.check_exit(
            ExitReport(session_id, room, exit_scans=exit_scans, actual_duration=12.5), at(minute + 13)
        )
        if verdict:
            assert result.alert_id is not None
            service.resolve_alert(result.alert_id, verdict, None, at(minute + 20))
        expected[session_id] = {"theft": "true", "false_alarm": "false", "item_found": "false"}.get(verdict or "", "")
        minute += 30
    service.assign(ITEMS, False, at(minute))  # still in the room: not finished, not exported
    service.store.close()
    return expected


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_export_has_contract_columns_and_staff_labels(db: Path) -> None:
    expected = fill_store(db)
    frame = store_history(f"sqlite:///{db}")
    assert list(frame.columns) == list(CONTRACT_COLUMNS)
    assert dict(zip(frame["session_id"], frame["is_anomaly"], strict=True)) == expected
    theft = frame[frame["is_anomaly"] == "true"]
    assert theft["anomaly_type"].tolist() == ["theft"]
    assert (frame.loc[frame["is_anomaly"] != "true", "anomaly_type"] == "").all()
    assert frame["duration"].tolist() == [12.5] * len(expected)
    first = frame.iloc[0]
    assert json.loads(first["entry_scans"]) == ITEMS and json.loads(first["exit_scans"]) == ITEMS
    # The gate measured 12.5 minutes in the room; the exit happened when it was reported, 13 minutes after the
    # room was assigned (the walk to the room is not in the measured duration).
    assert pd.Timestamp(first["exit_time"]) - pd.Timestamp(first["entry_time"]) == pd.Timedelta(minutes=13)


def test_written_csv_passes_the_history_loader(db: Path, tmp_path: Path) -> None:
    expected = fill_store(db)
    out = tmp_path / "out" / "store_history.csv"
    write_store_history(f"sqlite:///{db}", out)
    sessions = load_sessions(out, timezone="Europe/Berlin")
    assert len(sessions) == len(expected)
    labels = sessions["is_anomaly"]
    assert int(labels.fillna(False).sum()) == 1
    assert int((~labels.fillna(True)).sum()) == 2
    assert int(labels.isna().sum()) == len(expected) - 3  # never judged: unknown
    assert str(sessions["entry_time"].iloc[0].tzinfo) == "Europe/Berlin"


def test_missing_database_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="file not found"):
        store_history(f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()


def test_module_cli_writes_the_file(db: Path, tmp_path: Path) -> None:
    expected = fill_store(db, clean=1)
    out = tmp_path / "export.csv"
    result = subprocess.run(
        [sys.executable, "-m", "fitting_room.store_history", "--database", str(db), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(expected)} finished sessions (3 with a staff verdict)" in result.stdout
    assert len(pd.read_csv(out)) == len(expected)


def test_service_type_is_the_real_one(db: Path) -> None:
    # fill_store relies on the real service (alerts, resolution) with only the models faked.
    assert isinstance(make_service(db, ROOMS), FittingRoomService)


def test_each_store_of_a_chain_exports_only_its_own_sessions(db: Path) -> None:
    expected = fill_store(db)
    munich = make_service(db, ROOMS, store_id="munich-02")
    seated = munich.assign(ITEMS, False, at(0)).session
    munich.check_exit(ExitReport(seated.session_id, seated.room_id or "", ITEMS, actual_duration=4.0), at(5))
    munich.store.close()
    assert set(store_history(f"sqlite:///{db}")["session_id"]) == set(expected)
    assert store_history(f"sqlite:///{db}", "munich-02")["session_id"].tolist() == [seated.session_id]
