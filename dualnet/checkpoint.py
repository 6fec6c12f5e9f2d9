"""Checkpoint files: host `.npz` archives that never execute code when loaded.

A checkpoint is one nested state: dicts with string keys whose leaves are JSON values
(numbers, strings, bools, None, lists) or `numpy.ndarray`s. `save` stores each array as an
archive member named by its path (`params/W1`, `optim/W1/velocity`, ...) and everything else
as one JSON document, the 0-d unicode array `__meta__`; `load` rebuilds the same nested
state. `np.load(allow_pickle=False)` reads it all: nothing is unpickled, nothing executes.

Files are written to a temporary name in the same directory, fsync'ed, and renamed over the
target only when complete, so an interrupted or failed save never replaces the last good
checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save", "load"]

FORMAT = "dualnet-checkpoint"
VERSION = 1
_META = "__meta__"
_ARRAY = "__array__"  # JSON placeholder {"__array__": member name} for an array leaf


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit what it is loaded into."""


def _split(node, path, arrays):
    """JSON-able copy of `node` with every ndarray moved into `arrays` under its path."""
    if isinstance(node, np.ndarray):
        if node.dtype.hasobject:  # would be pickled, and refused by load
            raise TypeError(f"checkpoint.save: {path} is an object array; store numbers only")
        arrays[path] = node
        return {_ARRAY: path}
    if isinstance(node, np.generic):
        return node.item()
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str) or "/" in key or key == _ARRAY:
                raise TypeError(f"checkpoint.save: key {key!r} at {path or '/'} must be a "
                                f"string without '/'")
        return {key: _split(value, f"{path}/{key}" if path else key, arrays)
                for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_split(value, f"{path}/{i}", arrays) for i, value in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"checkpoint.save: {path} is a {type(node).__name__}; only numpy arrays "
                    f"and JSON values can be stored (move device arrays to the host first)")


def _join(node, arrays, path):
    if isinstance(node, dict):
        if set(node) == {_ARRAY}:
            if node[_ARRAY] not in arrays:
                raise CheckpointError(f"checkpoint {path} lacks the array {node[_ARRAY]!r} "
                                      f"its metadata refers to")
            return arrays[node[_ARRAY]]
        return {key: _join(value, arrays, path) for key, value in node.items()}
    if isinstance(node, list):
        return [_join(value, arrays, path) for value in node]
    return node


def save(path, state: dict) -> Path:
    """Write the nested `state` (JSON values and numpy arrays) to `path` atomically.

    The file is complete and fsync'ed under a temporary name before it replaces `path`.
    Returns the path written.
    """
    path = Path(path)
    arrays = {}
    document = json.dumps({"format": FORMAT, "version": VERSION,
                           "state": _split(state, "", arrays)})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # A file object keeps np.savez from appending '.npz' to the temporary name.
            np.savez(f, **{_META: np.array(document)}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt in the middle must not leave debris either.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path) -> dict:
    """Read the nested state written by `save`.

    Raises CheckpointError, naming the file, when it is missing, truncated, corrupt, not a
    dualnet checkpoint, or from a newer format version.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not an .npz archive "
                              f"({type(exc).__name__}: {exc})") from exc
    if _META not in arrays:
        raise CheckpointError(f"{path} is an .npz archive but not a dualnet checkpoint "
                              f"(no {_META!r} entry)")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "state" not in meta:
        raise CheckpointError(f"{path} is not a dualnet checkpoint")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta['version']}; this "
                              f"dualnet reads version {VERSION} and older - upgrade dualnet")
    return _join(meta["state"], arrays, path)
