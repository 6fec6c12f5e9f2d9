"""Debug mode for numerics: name the first layer whose output or gradient is NaN or inf.

    with dualnet.debug():
        loss, grads = model.loss(X, y)
    # NonFiniteValueError: TwoLayerNet: layer 'affine2' produced 3 NaN and 0 inf of 40
    # values in its output (shape (4, 10)) - the first non-finite value of this pass

`DUALNET_DEBUG_NUMERICS=1` in the environment (read when dualnet is imported) turns it on
for a whole process, e.g. a `dualnet train` run. Like Chainer's debug mode or PyTorch's
anomaly detection: in the forward pass every layer's output, in the backward pass every
input gradient and parameter gradient is scanned, in the order they are computed, and the
first one holding NaN or inf raises `NonFiniteValueError` naming its layer. The input itself
is checked first, so bad data is not blamed on a layer.

Where it hooks in: `dualnet.models.Model._layer` and `Model._backward` (every layer of every
model passes through them, named as on the tape), the containers of `dualnet.nn`
(`Sequential`, `Residual`, `Gate`, named by their dotted child paths, e.g. '2' or 'block.body.0')
and `Module.__call__` for a module used on its own.

Off (the default) it costs one flag check per layer call. On, it reads every activation and
gradient once more (and synchronizes a GPU at each check): a tool for finding a bug, not
for production runs. The switch is process-wide (all threads see it).
"""

from __future__ import annotations

import contextlib
import os
import threading

from . import backend

__all__ = ["debug", "enabled", "NonFiniteValueError"]

_enabled = os.environ.get("DUALNET_DEBUG_NUMERICS", "").strip() not in ("", "0")
_local = threading.local()  # .path: names of the nn containers' children being run


class NonFiniteValueError(FloatingPointError):
    """A layer produced NaN or inf (only raised in debug mode).

    Attributes:
        layer: the layer's name ('affine2', '3.body.0'), or None for the input itself.
        what: 'output', 'input gradient', 'gradient of W2', 'loss', ...
        reason: a short summary, e.g. "layer 'affine2' produced NaN in its output".
    """

    def __init__(self, message, layer, what, reason):
        super().__init__(message)
        self.layer, self.what, self.reason = layer, what, reason


def enabled() -> bool:
    """Whether debug mode is on (the one check layers make when it is off)."""
    return _enabled


@contextlib.contextmanager
def debug(mode: bool = True):
    """Context manager: check every layer's outputs and gradients for NaN/inf inside it.

    `with dualnet.debug(False):` turns the checks off inside, e.g. under
    DUALNET_DEBUG_NUMERICS=1. The previous setting is restored on exit.
    """
    global _enabled
    before, _enabled = _enabled, bool(mode)
    try:
        yield
    finally:
        _enabled = before


def check(value, owner: str, layer: str | None, what: str, kind: str = ""):
    """Raise NonFiniteValueError unless every element of array `value` is finite.

    owner: the model or container the user called ('TwoLayerNet', 'Sequential');
    layer: the layer's name, None when `value` is the user's input; kind: the layer's
    class, for the message, where the name alone does not say it (nn children).
    """
    if value is None:  # an input gradient skipped on purpose (need_dx=False)
        return
    xp = backend.of(value).xp
    finite = xp.isfinite(value)
    if bool(finite.all()):
        return
    nan = int(xp.isnan(value).sum())
    inf = int(value.size) - int(finite.sum()) - nan
    counts = f"{nan} NaN and {inf} inf of {int(value.size)} values"
    shape = tuple(value.shape)
    if layer is None:
        raise NonFiniteValueError(f"{owner}: the {what} already holds {counts} (shape {shape}) "
                                  f"before any layer ran; check the data",
                                  None, what, f"the {what} holds {'NaN' if nan else 'inf'}")
    named = f"layer {layer!r}" + (f" ({kind})" if kind else "")
    raise NonFiniteValueError(f"{owner}: {named} produced {counts} in its {what} "
                              f"(shape {shape}) - the first non-finite value of this pass",
                              layer, what, f"{named} produced "
                              f"{'NaN' if nan else 'inf'} in its {what}")


def _path() -> list:
    if not hasattr(_local, "path"):
        _local.path = []
    return _local.path


def at_top() -> bool:
    """Whether no nn container is running around the current call (its input is the user's)."""
    return not _path()


def enter(owner: str, value, what: str):
    """Called by an nn container as it starts, in debug mode: at the outermost one, remember
    its name (errors start with it) and check the user's input `value`."""
    if at_top():
        _local.root = owner
        check(value, owner, None, what)


def watched(name: str, module, method: str, value):
    """`getattr(module, method)(value)` for the child `name` of an nn container, checked.

    The result of 'forward' is checked as the child's output; after 'backward', the input
    gradient and the child's own parameter gradients. Children of nested containers are
    named by their dotted path from the outermost container.
    """
    path = _path()
    path.append(name)
    try:
        out = getattr(module, method)(value)
        layer, kind, root = ".".join(path), type(module).__name__, _local.root
        if method == "forward":
            check(out, root, layer, "output", kind)
        else:
            check(out, root, layer, "input gradient", kind)
            for param, grad in module._grads.items():
                check(grad, root, layer, f"gradient of {param}", kind)
        return out
    finally:
        path.pop()
