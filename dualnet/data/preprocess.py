"""Preprocessing: normalization fitted on training data, and minibatch augmentation.

Everything here takes (N, C, H, W) arrays of any backend and returns arrays of the same
backend and dtype: augmentation runs where the batch already is (on the GPU with `cupy`).
"""

from __future__ import annotations

import numpy as np

from .. import backend

__all__ = ["Normalizer", "random_crop", "random_flip", "augment"]


class Normalizer:
    """`(x - mean) / std` with statistics fitted on the training split only.

    per: 'channel' (one mean/std per channel, shape (1, C, 1, 1)) or 'pixel' (the course's
    mean image and a per-pixel std, shape (1, C, H, W)).
    """

    def __init__(self, per: str = "channel", eps: float = 1e-8):
        if per not in ("channel", "pixel"):
            raise ValueError(f"Normalizer: per must be 'channel' or 'pixel', got {per!r}")
        self.per, self.eps = per, eps
        self.mean = self.std = None

    def fit(self, X_train) -> Normalizer:
        """Fit on X_train (N, C, H, W); statistics are kept as float64 host arrays."""
        X = backend.of(X_train).to_numpy(X_train).astype(np.float64)
        if X.ndim != 4:
            raise ValueError(f"Normalizer.fit: X_train must be (N, C, H, W), got {X.shape}")
        axes = (0, 2, 3) if self.per == "channel" else (0,)
        self.mean = X.mean(axis=axes, keepdims=True)
        self.std = X.std(axis=axes, keepdims=True) + self.eps
        return self

    def __call__(self, X):
        """X (N, C, H, W) normalized, same backend and dtype as X."""
        if self.mean is None:
            raise RuntimeError("Normalizer: call fit(X_train) before normalizing")
        be = backend.of(X)
        mean = be.asarray(self.mean, dtype=X.dtype)
        std = be.asarray(self.std, dtype=X.dtype)
        return (X - mean) / std


def random_flip(x, p: float = 0.5, seed=None):
    """x (N, C, H, W) with each image mirrored left-right with probability `p`."""
    be = backend.of(x)
    flip = be.rand((x.shape[0],), np.float32, seed=seed) < p
    return be.xp.where(flip[:, None, None, None], x[..., ::-1], x)


def random_crop(x, pad: int, seed=None):
    """x (N, C, H, W) zero-padded by `pad` and cropped back to H x W at a random offset
    per image (the CIFAR augmentation of the ResNet paper with pad=4)."""
    if pad == 0:
        return x
    be = backend.of(x)
    xp = be.xp
    N, C, H, W = x.shape
    padded = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # offsets in [0, 2*pad]; one draw gives both so a seed fixes the whole crop
    offsets = (be.rand((2, N), np.float32, seed=seed) * (2 * pad + 1)).astype(np.int64)
    offsets = xp.minimum(offsets, 2 * pad)  # float rounding can reach 2*pad+1
    rows = offsets[0][:, None] + xp.arange(H)[None, :]          # (N, H)
    cols = offsets[1][:, None] + xp.arange(W)[None, :]          # (N, W)
    n = xp.arange(N)[:, None, None, None]
    c = xp.arange(C)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]


def augment(x, pad: int = 4, flip: bool = True, seed=None):
    """`random_crop` then (when `flip`) `random_flip` of a minibatch x (N, C, H, W)."""
    x = random_crop(x, pad, seed=seed)
    if flip:
        x = random_flip(x, seed=None if seed is None else seed + 1)
    return x
