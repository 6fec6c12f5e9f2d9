"""The bundled digits: shapes, dtype, a deterministic stratified split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dualnet.data import get_digits_data
from dualnet.data.digits import load_digits_arrays


@pytest.fixture(scope="module")
def digits():
    return get_digits_data()


def test_shapes_dtypes_and_sizes(digits):
    assert digits["X_train"].shape == (1197, 1, 8, 8)
    assert digits["X_val"].shape == (300, 1, 8, 8)
    assert digits["X_test"].shape == (300, 1, 8, 8)
    assert all(digits[f"X_{s}"].dtype == np.float32 for s in ("train", "val", "test"))
    assert all(digits[f"y_{s}"].dtype == np.int64 for s in ("train", "val", "test"))
    assert digits["class_names"] == [str(d) for d in range(10)]


def _sorted_images(a):
    """The multiset of 8x8 images in `a` (values in [0, 1]) as sorted byte strings."""
    return sorted(map(bytes, np.round(a * 16).astype(np.uint8)))


def test_split_is_a_partition_of_the_bundled_images():
    data = get_digits_data(subtract_mean=False)
    images = load_digits().images / 16.0
    ours = np.concatenate([data["X_train"], data["X_val"], data["X_test"]])[:, 0]
    assert _sorted_images(ours) == _sorted_images(images)
    assert ours.min() == 0.0 and ours.max() == 1.0


def test_split_is_deterministic_and_stratified(digits):
    again = get_digits_data()
    for k in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(digits[k], again[k])
    assert set(np.bincount(digits["y_test"], minlength=10)) <= {29, 30, 31}
    other = get_digits_data(seed=1)
    assert not np.array_equal(other["y_test"], digits["y_test"])


def test_mean_of_training_split_subtracted(digits):
    np.testing.assert_allclose(digits["X_train"].mean(axis=0), 0, atol=1e-6)
    raw = get_digits_data(subtract_mean=False)
    mean = raw["X_train"].mean(axis=0)
    np.testing.assert_allclose(digits["X_test"], raw["X_test"] - mean, atol=1e-6)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="num_validation"):
        get_digits_data(num_validation=1000, num_test=900)


def test_arrays_are_scikit_learns_digits():
    images, labels = load_digits_arrays()
    reference = load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
