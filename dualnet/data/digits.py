"""The default dataset: scikit-learn's bundled handwritten digits (no download).

1797 grayscale 8x8 images of the digits 0-9 (what `sklearn.datasets.load_digits` returns,
pixel values 0..16), split into train/val/test with a fixed seed and stratified by class, so
every run and every machine sees the same split.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["get_digits_data", "load_digits_arrays"]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """images float64 (1797, 8, 8) in 0..16 and labels int64 (1797,).

    Reads the CSV that scikit-learn bundles (`sklearn/datasets/data/digits.csv.gz`, 64
    pixels then the label on each row) without importing scikit-learn, whose import takes
    seconds of a one-minute first run; if the file has moved, asks `load_digits`.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None:
        raise ImportError("the digits dataset comes with scikit-learn: pip install scikit-learn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        with gzip.open(csv, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of range(len(y)) whose every prefix holds the classes in about their
    overall proportions: shuffle, then sort by each item's rank within its class divided
    by the class size (stable, so ties keep the shuffled order)."""
    order = np.random.RandomState(seed).permutation(len(y))
    labels = y[order]
    rank = np.empty(len(y))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    return order[np.argsort(rank, kind="stable")]


def get_digits_data(num_validation=300, num_test=300, subtract_mean=True, seed=0,
                    dtype=np.float32) -> dict:
    """Digits as the course's dict, ready for `Solver`.

    Keys: X_train (N_train, 1, 8, 8), X_val (num_validation, 1, 8, 8), X_test
    (num_test, 1, 8, 8) as `dtype`, pixels scaled to [0, 1] (minus the training mean image
    when `subtract_mean`); y_train, y_val, y_test int64 in [0, 10); `class_names` '0'..'9'.
    N_train = 1797 - num_validation - num_test. `seed` fixes the (stratified) split.
    """
    images, y = load_digits_arrays()
    X = (images / 16.0).astype(dtype)[:, None]  # (1797, 1, 8, 8)
    if num_validation < 1 or num_test < 1 or num_validation + num_test >= len(X):
        raise ValueError(f"get_digits_data: need num_validation, num_test >= 1 with sum < "
                         f"{len(X)}, got {num_validation} and {num_test}")
    order = _stratified_order(y, seed)
    test, val = order[:num_test], order[num_test:num_test + num_validation]
    train = order[num_test + num_validation:]
    X_train, X_val, X_test = X[train], X[val], X[test]
    if subtract_mean:
        mean_image = X_train.mean(axis=0)
        X_train, X_val, X_test = X_train - mean_image, X_val - mean_image, X_test - mean_image
    return {"X_train": X_train, "y_train": y[train], "X_val": X_val, "y_val": y[val],
            "X_test": X_test, "y_test": y[test], "class_names": [str(d) for d in range(10)]}
