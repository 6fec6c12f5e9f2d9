"""Normalization fitted on train, and augmentation on backend arrays."""

import numpy as np
import pytest

from dualnet import backend
from dualnet.data import Normalizer, augment, random_crop, random_flip


def test_normalizer_per_channel_uses_training_statistics_only():
    rng = np.random.RandomState(0)
    X_train = (rng.randn(50, 3, 4, 4) * [[[[2.0]], [[5.0]], [[0.5]]]] + 7).astype(np.float32)
    X_test = np.full((2, 3, 4, 4), 7.0, np.float32)
    norm = Normalizer().fit(X_train)
    Z = norm(X_train)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    expected = (7.0 - X_train.mean(axis=(0, 2, 3))) / X_train.std(axis=(0, 2, 3))
    np.testing.assert_allclose(norm(X_test)[0, :, 0, 0], expected, rtol=1e-4)


def test_normalizer_per_pixel_and_errors():
    X = np.random.RandomState(1).rand(20, 1, 3, 3)
    Z = Normalizer(per="pixel").fit(X)(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    with pytest.raises(RuntimeError, match="fit"):
        Normalizer()(X)
    with pytest.raises(ValueError, match="per"):
        Normalizer(per="image")


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    x = np.arange(64 * 2 * 3 * 4, dtype=np.float32).reshape(64, 2, 3, 4)
    out = random_flip(x, seed=0)
    assert out.shape == x.shape and out.dtype == x.dtype
    flipped = [np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x, strict=True)]
    kept = [np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each is one or the other
    assert 10 < sum(flipped) < 54


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = np.random.RandomState(2).rand(32, 3, 5, 6).astype(np.float32)
    pad = 2
    out = random_crop(x, pad, seed=1)
    assert out.shape == x.shape and out.dtype == np.float32
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        matches = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                   if np.array_equal(o, p[:, i:i + 5, j:j + 6])]
        assert matches, "a crop must be a 5x6 window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ between images
    assert random_crop(x, 0) is x


def test_augment_runs_on_every_available_backend():
    x = np.random.RandomState(3).rand(8, 3, 6, 6).astype(np.float32)
    for name in backend.available():
        be = backend.get(name)
        out = augment(be.asarray(x), pad=1, seed=4)
        assert backend.of(out) is backend.of(be.asarray(x))
        assert be.to_numpy(out).shape == x.shape
