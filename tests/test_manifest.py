"""Model verification: nothing is unpickled unless its SHA-256 matches the manifest train.py wrote."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fitting_room.errors import ModelLoadError
from fitting_room.manifest import ANOMALY_MODEL, DURATION_MODEL, read_manifest, verify_artifact, write_manifest


class Booby:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def make_store(tmp_path: Path, marker: Path) -> tuple[Path, Path]:
    data_dir, model_dir = tmp_path / "data", tmp_path / "models"
    data_dir.mkdir()
    model_dir.mkdir()
    (data_dir / "item_database.json").write_text(json.dumps({"A-1": {"category": "hats", "price": 9.5}}))
    for name in (DURATION_MODEL, ANOMALY_MODEL):
        (model_dir / name).write_bytes(pickle.dumps(Booby(marker)))
    return data_dir, model_dir


def test_manifest_round_trip_and_tampering(tmp_path: Path):
    model_dir = tmp_path
    for name in (DURATION_MODEL, ANOMALY_MODEL):
        (model_dir / name).write_bytes(b"model bytes " + name.encode())
    write_manifest(model_dir, {"sklearn_version": "1.9.1"})
    manifest = read_manifest(model_dir)
    assert verify_artifact(model_dir, DURATION_MODEL, manifest) == model_dir / DURATION_MODEL
    (model_dir / DURATION_MODEL).write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        verify_artifact(model_dir, DURATION_MODEL, manifest)
    with pytest.raises(ModelLoadError, match="not listed"):
        verify_artifact(model_dir, "other.pkl", manifest)


@pytest.mark.parametrize("manifest", ["missing", "wrong-hash"])
def test_malicious_pickle_is_never_executed(tmp_path: Path, manifest: str):
    from api import create_app
    from fitting_room.settings import Settings

    marker = tmp_path / "pwned.txt"
    data_dir, model_dir = make_store(tmp_path, marker)
    if manifest == "wrong-hash":
        good = {name: {"sha256": "0" * 64} for name in (DURATION_MODEL, ANOMALY_MODEL)}
        (model_dir / "manifest.json").write_text(json.dumps({"artifacts": good}))
    settings = Settings(data_dir=data_dir, model_dir=model_dir, database=str(tmp_path / "db.sqlite"))
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        [problem] = ready.json()["problems"]
        assert "models" in problem
        assert ("manifest missing" if manifest == "missing" else DURATION_MODEL) in problem
        refused = client.post("/predict_duration", json={"item_ids": ["A-1"]})
        assert refused.status_code == 503
        assert "models are not loaded" in refused.json()["detail"]
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/rooms/status").status_code == 200, "the floor stays visible without models"
    assert not marker.exists(), "the pickle's payload ran"
    # The same file unpickled directly does run: the test would catch a loader that skipped verification.
    pickle.loads((model_dir / DURATION_MODEL).read_bytes())
    assert marker.exists()
