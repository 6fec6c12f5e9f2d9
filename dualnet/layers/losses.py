"""Classification losses on scores x (N, C) and integer labels y (N,), averaged over N."""

from __future__ import annotations

from .. import _checks


def _scores_and_labels(layer, x, y):
    be = _checks.floating(layer, x=x)
    _checks.ndim(layer, "x", x, 2, "(N, C) scores")
    N, C = x.shape
    if N == 0:  # the mean over no examples is NaN, which would poison whatever uses it
        raise ValueError(f"{layer}: x has shape {tuple(x.shape)}: the loss of an empty batch is "
                         f"undefined; give at least one example")
    _checks.labels(layer, y, N, C, be.xp)
    return be.xp, N


def softmax_loss(x, y):
    """Cross-entropy of softmax(x) against y.

    Stable for huge logits: scores are shifted by their row maximum and the loss uses
    log-sum-exp, so no exp overflows and no log(0) occurs.

    Returns:
        loss (0-d, x's dtype), dx (N, C).
    """
    xp, N = _scores_and_labels("softmax_loss", x, y)
    shifted = x - x.max(axis=1, keepdims=True)
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    rows = xp.arange(N)
    loss = -log_probs[rows, y].sum() / x.dtype.type(N)
    dx = xp.exp(log_probs)
    dx[rows, y] -= 1
    dx /= N
    return loss, dx


def svm_loss(x, y):
    """Multiclass hinge loss with margin 1: sum_j!=y max(0, x_j - x_y + 1), averaged.

    Returns:
        loss (0-d, x's dtype), dx (N, C).
    """
    xp, N = _scores_and_labels("svm_loss", x, y)
    rows = xp.arange(N)
    correct = x[rows, y][:, None]
    margins = xp.maximum(0, x - correct + 1)
    margins[rows, y] = 0
    loss = margins.sum() / x.dtype.type(N)
    dx = (margins > 0).astype(x.dtype)
    dx[rows, y] -= dx.sum(axis=1)
    dx /= N
    return loss, dx
