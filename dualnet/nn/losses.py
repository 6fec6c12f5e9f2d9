"""Losses as objects: `forward(scores, y) -> loss`, then `backward() -> dscores`."""

from __future__ import annotations

from .. import layers


class _Loss:
    """Wraps a functional loss `(x, y) -> (loss, dx)`; backward returns the saved dx."""

    functional = None

    def forward(self, scores, y):
        loss, self._dscores = type(self).functional(scores, y)
        return loss

    __call__ = forward

    def backward(self):
        """d loss / d scores, (N, C), from the last `forward`."""
        return self._dscores


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy averaged over the batch (`softmax_loss`)."""

    functional = staticmethod(layers.softmax_loss)


class MultiMarginLoss(_Loss):
    """Multiclass SVM hinge loss with margin 1, averaged over the batch (`svm_loss`)."""

    functional = staticmethod(layers.svm_loss)
