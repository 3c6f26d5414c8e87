"""Data contract validation of historical_sessions.csv."""

from pathlib import Path

import pandas as pd
import pytest

from fitting_room.errors import DataContractError
from fitting_room.history import load_history, load_sessions
from tests.factories import make_catalog_data, make_sessions, write_contract

HEADER = "session_id,room_id,entry_time,entry_scans,exit_scans,duration,exit_time,is_anomaly\n"
GOOD = 's1,r1,2024-03-01T10:00:00,"[""A-1""]","[""A-1""]",12.5,,\n'


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "historical_sessions.csv"
    path.write_text(header + body)
    return path


def test_loads_typed_frame(tmp_path: Path) -> None:
    body = (
        GOOD
        + 's2,r1,2024-03-01T10:00:00+00:00,"[""A-1"", "" b.2 ""]","[]",,2024-03-01T11:30:00+01:00,TRUE\n'
        + 's3,r2,2024-03-01 18:00,"[]","[]",0,,0\n'
    )
    sessions = load_sessions(_write(tmp_path, body), timezone="Europe/Berlin")
    assert list(sessions["session_id"]) == ["s1", "s2", "s3"]
    assert sessions["duration"].tolist() == [12.5, 30.0, 0.0]  # s2: 11:00 local entry, 12:30 exit
    assert str(sessions["entry_time"].dt.tz) == "Europe/Berlin"
    assert sessions["entry_time"].iloc[0].hour == 10  # naive = store-local
    assert sessions["entry_time"].iloc[1].hour == 11  # UTC converted to Berlin (CET)
    assert sessions["entry_scans"].iloc[1] == ["A-1", " b.2 "]
    assert sessions["is_anomaly"].tolist()[1:] == [True, False]
    assert pd.isna(sessions["is_anomaly"].iloc[0])
    assert sessions["item_ids"].iloc[1] == ["A-1", " b.2 "]  # defaults to the entry scans


def test_extra_columns_ignored_and_labels_optional(tmp_path: Path) -> None:
    header = "session_id,room_id,entry_time,entry_scans,exit_scans,duration,weather\n"
    sessions = load_sessions(_write(tmp_path, "s1,r1,2024-03-01T10:00:00Z,[],[],3,sunny\n", header))
    assert sessions["is_anomaly"].isna().all()
    assert "weather" not in sessions


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('s2,r1,yesterday,"[]","[]",5,,\n', "row 2 (line 3), column 'entry_time': 'yesterday' is not an ISO 8601"),
        ('s2,r1,2024-03-01T10:00:00,not json,"[]",5,,\n', "row 2 (line 3), column 'entry_scans'"),
        ('s2,r1,2024-03-01T10:00:00,"{""a"": 1}","[]",5,,\n', "row 2 (line 3), column 'entry_scans'"),
        ('s2,r1,2024-03-01T10:00:00,"[1]","[]",5,,\n', "column 'entry_scans': item id 1"),
        ('s2,r1,2024-03-01T10:00:00,"[]","[",5,,\n', "row 2 (line 3), column 'exit_scans'"),
        ('s2,r1,2024-03-01T10:00:00,"[]","[]",-3,,\n', "row 2 (line 3), column 'duration': negative duration"),
        ('s2,r1,2024-03-01T10:00:00,"[]","[]",abc,,\n', "column 'duration': 'abc' is not a number"),
        (
            's2,r1,2024-03-01T10:00:00,"[]","[]",,,\n',
            "row 2 (line 3), column 'duration': neither duration nor exit_time",
        ),
        ('s2,r1,2024-03-01T10:00:00,"[]","[]",,2024-03-01T09:00:00,\n', "column 'exit_time': exit_time is before"),
        ('s2,r1,2024-03-01T10:00:00,"[]","[]",5,,maybe\n', "row 2 (line 3), column 'is_anomaly'"),
        ('s1,r1,2024-03-01T10:00:00,"[]","[]",5,,\n', "row 2 (line 3), column 'session_id': 's1' repeats row 1"),
        (',r1,2024-03-01T10:00:00,"[]","[]",5,,\n', "row 2 (line 3), column 'session_id': is empty"),
    ],
)
def test_row_errors_name_file_row_and_column(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(DataContractError) as err:
        load_sessions(_write(tmp_path, GOOD + body))
    assert "historical_sessions.csv" in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("session_id,room_id,entry_scans,exit_scans,duration\n", "missing required column(s) 'entry_time'"),
        ("session_id,room_id,entry_time,entry_scans,exit_scans\n", "needs a 'duration' or an 'exit_time' column"),
    ],
)
def test_column_errors(tmp_path: Path, header: str, fragment: str) -> None:
    with pytest.raises(DataContractError) as err:
        load_sessions(_write(tmp_path, "s1,r1,x,[],[]\n", header))
    assert "historical_sessions.csv" in str(err.value)
    assert fragment in str(err.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match=r"historical_sessions\.csv: file not found"):
        load_sessions(tmp_path / "historical_sessions.csv")
    with pytest.raises(DataContractError, match="file is empty"):
        load_sessions(_write(tmp_path, "", header=""))
    with pytest.raises(DataContractError, match="contains no sessions"):
        load_sessions(_write(tmp_path, ""))


def test_load_history_reads_both_files(tmp_path: Path) -> None:
    catalog_data = make_catalog_data(n_items=10)
    write_contract(tmp_path, catalog_data, make_sessions(catalog_data, 30, timezone="America/New_York"))
    sessions, catalog = load_history(tmp_path, timezone="America/New_York")
    assert len(sessions) == 30 and len(catalog) == 10
    assert sessions["is_anomaly"].notna().all()
    assert (sessions["duration"] > 0).all()
