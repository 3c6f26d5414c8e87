"""Export the store's own finished sessions, with staff verdicts as labels, in the data contract.

    python -m fitting_room.store_history [--database PATH_OR_URL] [--store STORE_ID] [--out data/store_history.csv]

Closing the loop: every session the service completed is a training example, and a resolved
alert is a label. Labels: outcome ``theft`` -> is_anomaly true (anomaly_type theft);
``false_alarm`` or ``item_found`` -> false. Sessions never flagged, and alerts still open,
have no staff verdict, so their label is left empty (unknown): calling them normal would
teach the detector that the anomalies it missed are fine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from fitting_room.errors import DataContractError
from fitting_room.history import CONTRACT_COLUMNS
from fitting_room.rooms import DEFAULT_STORE
from fitting_room.store import Store

STORE_HISTORY_FILE = "store_history.csv"
# Staff outcome -> (is_anomaly, anomaly_type) in the contract's text form.
_LABELS: dict[str, tuple[str, str]] = {
    "theft": ("true", "theft"),
    "false_alarm": ("false", ""),
    "item_found": ("false", ""),
}


def database_url(database: str | None) -> str:
    """SQLAlchemy URL of `database` (a path or URL), or of the configured Settings database when None."""
    from fitting_room.settings import Settings

    return Settings().database_url if database is None else Settings(database=database).database_url


def store_history(url: str, store_id: str = DEFAULT_STORE) -> pd.DataFrame:
    """Finished sessions of one store of the database at `url` as contract columns (text, like a read CSV)."""
    _check_exists(url)
    store = Store(url, store_id)
    try:
        with store.read() as tx:
            finished = tx.finished_sessions()
    except SQLAlchemyError as err:
        raise DataContractError(f"state store {url}: cannot read finished sessions ({err})") from err
    finally:
        store.close()
    rows = [_row(session) for session in finished]
    return pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))


def write_store_history(url: str, out: Path, store_id: str = DEFAULT_STORE) -> pd.DataFrame:
    """Export one store's finished sessions to the CSV `out`; returns what was written."""
    frame = store_history(url, store_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return frame


def _row(session: dict[str, Any]) -> dict[str, Any]:
    is_anomaly, anomaly_type = _LABELS.get(session.get("outcome") or "", ("", ""))
    items = list(session["item_ids"])
    return {
        "session_id": session["session_id"],
        "room_id": session["room_id"],
        "entry_time": session["assigned_at"].isoformat(),
        "exit_time": session["ended_at"].isoformat() if session["ended_at"] is not None else "",
        "duration": session["actual_duration"],
        "entry_scans": json.dumps(items),
        "item_ids": json.dumps(items),
        "exit_scans": json.dumps(list(session["exit_scans"])),
        "is_anomaly": is_anomaly,
        "anomaly_type": anomaly_type,
    }


def _check_exists(url: str) -> None:
    """A missing SQLite file would be created empty by connecting; say it is missing instead."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not Path(url.removeprefix(prefix)).is_file():
        raise DataContractError(f"state store {url.removeprefix(prefix)}: file not found")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the export; 0 on success, 2 when the store cannot be read."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", default=None, help="state store path or SQLAlchemy URL (default: settings)")
    parser.add_argument("--store", default=DEFAULT_STORE, help="which store of a chain (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data") / STORE_HISTORY_FILE, help="CSV to write")
    args = parser.parse_args(argv)
    try:
        frame = write_store_history(database_url(args.database), args.out, args.store)
    except DataContractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labelled = int((frame["is_anomaly"] != "").sum())
    print(f"wrote {len(frame)} finished sessions ({labelled} with a staff verdict) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
