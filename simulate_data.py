"""Write simulated fitting-room data (item database, session history, truth) into a directory.

Usage: python simulate_data.py [--out-dir data] [--sessions 20000] [--items 200] [--seed 42]
[--profile default|boutique]. The generative model is documented in fitting_room/simulation.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fitting_room.errors import FittingRoomError
from fitting_room.simulation import PROFILES, generate, get_profile, write


def _positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="output directory")
    parser.add_argument("--sessions", type=_positive_int, default=20_000, help="number of sessions")
    parser.add_argument("--items", type=_positive_int, default=200, help="catalogue size")
    parser.add_argument("--seed", type=int, default=42, help="random seed (same seed, same files)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default", help="simulated store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and write the data; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data = generate(args.sessions, args.items, args.seed, get_profile(args.profile))
        paths = write(data, args.out_dir)
    except FittingRoomError as err:
        parser.error(str(err))
    n_anomalies = int(data.sessions["is_anomaly"].sum())
    print(
        f"wrote {len(data.sessions)} sessions ({n_anomalies} labelled anomalies) and "
        f"{len(data.item_database)} items ({args.profile} profile, seed {args.seed}) to "
        + ", ".join(str(p) for p in paths.values())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
