"""Checkpoint files: round trip, no pickles, clear errors, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualnet import checkpoint
from dualnet.checkpoint import CheckpointError


def _state():
    return {"params": {"W1": np.arange(6, dtype=np.float32).reshape(2, 3),
                       "b1": np.zeros(3)},
            "rng": {"keys": np.arange(4, dtype=np.uint32), "pos": 3, "gauss": 0.25},
            "history": [1.5, 2.0], "name": "adam", "none": None, "t": np.int64(7)}


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", _state())
    state = checkpoint.load(path)
    assert state["params"]["W1"].dtype == np.float32
    assert np.array_equal(state["params"]["W1"], _state()["params"]["W1"])
    assert state["rng"]["keys"].dtype == np.uint32
    assert state["history"] == [1.5, 2.0] and state["none"] is None
    assert state["t"] == 7 and state["name"] == "adam"
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left


def test_metadata_is_json_and_arrays_are_plain(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", _state())
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["__meta__"]))
        assert meta["format"] == "dualnet-checkpoint"
        assert archive["params/W1"].shape == (2, 3)


def test_refuses_to_store_what_would_be_pickled(tmp_path):
    with pytest.raises(TypeError, match="object array"):
        checkpoint.save(tmp_path / "ck.npz", {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path / "ck.npz", {"x": {1, 2}})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no-meta", "pickled", "newer"])
def test_damaged_files_give_a_clear_error(tmp_path, damage):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, _state())
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "no-meta":
        np.savez(path, a=np.zeros(2))
    elif damage == "pickled":
        meta = json.dumps({"format": "dualnet-checkpoint", "version": 1,
                           "state": {"x": {"__array__": "x"}}})
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.array(meta), x=np.array([{"a": 1}], dtype=object))
    elif damage == "newer":
        meta = json.dumps({"format": "dualnet-checkpoint", "version": 99, "state": {}})
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.array(meta))
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.npz")


def test_a_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, _state())

    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"params": {"W1": np.ones(2)}})
    monkeypatch.undo()
    assert checkpoint.load(path)["params"]["W1"].shape == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
