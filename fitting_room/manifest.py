"""models/manifest.json: what train.py produced, so the server can verify artifacts before unpickling.

A pickle is code that runs when loaded. The server therefore hashes each artifact and compares it with the
manifest first; a missing manifest, a missing entry or a mismatch means the file is never unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fitting_room.errors import ModelLoadError

MANIFEST_NAME = "manifest.json"
DURATION_MODEL = "duration_model.pkl"
ANOMALY_MODEL = "anomaly_model.pkl"
ARTIFACTS = (DURATION_MODEL, ANOMALY_MODEL)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path, details: Mapping[str, Any], trained_at: datetime | None = None) -> Path:
    """Hash every artifact in `model_dir` and write the manifest beside them."""
    manifest = {
        "trained_at": (trained_at or datetime.now(UTC)).isoformat(),
        "artifacts": {name: {"sha256": sha256_file(model_dir / name)} for name in ARTIFACTS},
        **details,
    }
    path = model_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return path


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest's content; ModelLoadError when it is missing or malformed."""
    path = model_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: manifest missing; no model is loaded without one") from None
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: manifest is not valid JSON ({err.msg})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise ModelLoadError(f"{path}: manifest has no 'artifacts' table")
    return manifest


def verify_artifact(model_dir: Path, name: str, manifest: Mapping[str, Any]) -> Path:
    """The artifact's path once its SHA-256 matches the manifest; ModelLoadError naming the file otherwise."""
    path = model_dir / name
    entry = manifest["artifacts"].get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ModelLoadError(f"{path}: not listed in {MANIFEST_NAME}; refusing to load it")
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file missing")
    actual = sha256_file(path)
    if not hmac.compare_digest(actual.encode(), entry["sha256"].encode()):
        raise ModelLoadError(
            f"{path}: SHA-256 {actual[:12]}… does not match the manifest's {entry['sha256'][:12]}…; "
            "refusing to unpickle it"
        )
    return path
