"""Pictures of a training run: filter grids, training curves, confusion matrices, mistakes.

Every `plot_*` function builds a `matplotlib.figure.Figure` directly, without pyplot: no
global backend switch, no window, no figure left open, so it is safe on a headless server
and inside a test. Pass `path` to write a PNG; the Figure is returned either way (a notebook
displays it).

Arrays may be of any backend; they are copied to the host for plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import ceil, sqrt

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import backend

__all__ = [
    "visualize_grid", "plot_filters", "plot_training_curves", "confusion_matrix",
    "plot_confusion_matrix", "plot_misclassified", "save_figure",
]


def _host(a) -> np.ndarray:
    return backend.of(a).to_numpy(a) if hasattr(a, "shape") else np.asarray(a)


def _rescale(img: np.ndarray, ubound: float) -> np.ndarray:
    """img linearly mapped onto [0, ubound] (a constant image maps to 0)."""
    low, high = img.min(), img.max()
    return ubound * (img - low) / (high - low) if high > low else np.zeros_like(img)


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Tile images into a square grid, each rescaled to [0, ubound] (the course function).

    Xs: (N, H, W, C). Returns a float64 (G*H + (G-1)*padding, G*W + (G-1)*padding, C) array
    with G = ceil(sqrt(N)); unused cells and the padding are 0.
    """
    Xs = _host(Xs)
    N, H, W, C = Xs.shape
    grid_size = int(ceil(sqrt(N)))
    step_h, step_w = H + padding, W + padding
    grid = np.zeros((grid_size * step_h - padding, grid_size * step_w - padding, C))
    for n in range(N):
        y0, x0 = (n // grid_size) * step_h, (n % grid_size) * step_w
        grid[y0:y0 + H, x0:x0 + W] = _rescale(Xs[n].astype(np.float64), ubound)
    return grid


def save_figure(fig: Figure, path) -> Figure:
    """Write `fig` as a PNG to `path` (nothing when None); returns `fig`."""
    if path is not None:
        fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return fig


def plot_filters(W, path=None, title="first-layer filters") -> Figure:
    """Grid of conv filters W (F, C, HH, WW), C = 1 or 3, each rescaled on its own.
    With C other than 1 or 3, each channel is shown as its own grayscale tile."""
    W = _host(W)
    if W.ndim != 4:
        raise ValueError(f"plot_filters: W must be (F, C, HH, WW), got shape {W.shape}")
    if W.shape[1] not in (1, 3):
        W = W.reshape(-1, 1, *W.shape[2:])
    grid = visualize_grid(W.transpose(0, 2, 3, 1), ubound=1.0)
    side = min(8.0, max(4.0, 0.4 * sqrt(len(W)) * max(W.shape[2:]) / 3))
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot()
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{title}: {W.shape[0]} x {W.shape[2]}x{W.shape[3]}")
    return save_figure(fig, path)


_HISTORY_KEYS = ("loss_history", "train_acc_history", "val_acc_history")


def _history(run) -> dict:
    """The three course histories of a Solver or of a mapping (e.g. history.json)."""
    get = run.get if isinstance(run, Mapping) else lambda k, d: getattr(run, k, d)
    return {k: np.array([float(v) for v in get(k, [])]) for k in _HISTORY_KEYS}


def plot_training_curves(runs, path=None, title=None, smooth=None) -> Figure:
    """Loss per iteration (left) and train/val accuracy per epoch (right).

    runs: a Solver (anything with `loss_history`, `train_acc_history`, `val_acc_history`)
    or a mapping with those keys, or a dict {label: either} to compare several runs (e.g.
    update rules) on one figure; each run keeps one colour, train dashed, val solid.
    smooth: moving-average window drawn over the raw loss (default: about 1/50 of the run).
    """
    if isinstance(runs, Mapping) and not any(k in runs for k in _HISTORY_KEYS):
        named = dict(runs)
    else:
        named = {"": runs}
    fig = Figure(figsize=(11, 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for k, (label, run) in enumerate(named.items()):
        h = _history(run)
        color = f"C{k}"
        loss = h["loss_history"]
        window = smooth or max(1, len(loss) // 50)
        ax_loss.plot(loss, color=color, alpha=0.3 if window > 1 else 1.0, linewidth=0.8,
                     label=None if window > 1 else (label or None))
        if window > 1:
            avg = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax_loss.plot(np.arange(window - 1, len(loss)), avg, color=color,
                         label=label or None)
        # the Solver checks after the first iteration (epoch 0) and after every epoch
        epochs = np.arange(len(h["train_acc_history"]))
        prefix = f"{label} " if label else ""
        ax_acc.plot(epochs, h["train_acc_history"], "--o", color=color, markersize=3,
                    label=f"{prefix}train")
        ax_acc.plot(np.arange(len(h["val_acc_history"])), h["val_acc_history"],
                    "-o", color=color, markersize=3, label=f"{prefix}val")
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts int64 (num_classes, num_classes): entry [i, j] = images of class i predicted j."""
    y_true = _host(y_true).astype(np.int64).ravel()
    y_pred = _host(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: {y_true.shape[0]} labels but "
                         f"{y_pred.shape[0]} predictions")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} has labels outside [0, {num_classes})")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def plot_confusion_matrix(y_true, y_pred, class_names, path=None, title=None) -> Figure:
    """Heat map of row-normalized confusions (each true class sums to 1), with the counts
    written in the cells when there are at most 20 classes."""
    K = len(class_names)
    counts = confusion_matrix(y_true, y_pred, K)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(16.0, max(4.5, 0.45 * K + 2))
    fig = Figure(figsize=(side, side * 0.85), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = np.arange(K)
    fontsize = "small" if K <= 20 else 5
    ax.set_xticks(ticks, class_names, rotation=90 if K > 10 else 45, ha="center",
                  fontsize=fontsize)
    ax.set_yticks(ticks, class_names, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true")
    if K <= 20:
        for i, j in np.ndindex(K, K):
            if counts[i, j]:
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize="x-small",
                        color="white" if rates[i, j] > 0.5 else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.1%})")
    return save_figure(fig, path)


def plot_misclassified(X, y_true, y_pred, class_names, path=None, max_images=36) -> Figure:
    """Grid of up to `max_images` misclassified images X (N, C, H, W) (C = 1 or 3), each
    rescaled on its own and labelled 'true -> predicted'. All tiles share one axes, which
    draws far faster than one axes per image."""
    X, y_true, y_pred = _host(X), _host(y_true), _host(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    N, C, H, W = X.shape
    pad = max(2, H // 3)  # white room for the labels between rows
    cols = max(1, int(ceil(sqrt(len(wrong)))))
    rows = max(1, int(ceil(len(wrong) / cols)))
    fig = Figure(figsize=(1.3 * cols + 0.4, 1.4 * rows + 0.6), dpi=100)
    ax = fig.add_subplot()
    ax.set_axis_off()
    for k, n in enumerate(wrong):
        r, c = divmod(k, cols)
        x0, y0 = c * (W + pad), r * (H + pad)
        img = _rescale(X[n].transpose(1, 2, 0).astype(np.float64), 1.0)
        ax.imshow(img[:, :, 0] if C == 1 else img, cmap="gray" if C == 1 else None,
                  vmin=0, vmax=1, extent=(x0, x0 + W, y0 + H, y0), interpolation="nearest")
        ax.text(x0 + W / 2, y0 - 0.2, f"{class_names[y_true[n]]} -> {class_names[y_pred[n]]}",
                ha="center", va="bottom", fontsize=6)
    ax.set_xlim(-pad / 2, cols * (W + pad) - pad / 2)
    ax.set_ylim(rows * (H + pad), -pad)
    shown = f"{len(wrong)} of {int((y_true != y_pred).sum())}"
    ax.set_title(f"misclassified ({shown} shown; true -> predicted)" if len(wrong)
                 else "no misclassified images", fontsize=10)
    return save_figure(fig, path)
