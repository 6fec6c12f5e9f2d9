"""What every dualnet model shares: parameters, initialization, loss, backward, moving.

A model subclasses `Model`, fills `self.params` in its constructor with `_add_weight`,
`_add_zeros` and `_add_ones`, and implements `_scores(X)` as a chain of `self._layer(...)`
calls. `Model.loss` then gives the course's contract:

- `loss(X)` -> class scores (N, C), computed in 'test' mode;
- `loss(X, y)` -> (loss, grads), 'train' mode, softmax loss plus
  `0.5 * reg * sum(W**2)` over the weights only (every parameter whose name starts with
  'W': W1, W2, ... - never biases, gamma or beta), grads keyed like `params`.

`_layer` runs one layer function and records its backward function and cache on a tape, so
no model writes its own backward loop; residual connections are `_fork`/`_join` marks on the
tape. Because every layer passes through `_layer` under a name, a model can also re-run a
forward pass and name the first layer whose output is not finite (`first_nonfinite_layer`),
which is what the Solver reports when the loss turns into NaN or inf. In debug mode
(`dualnet.debug()`, see `dualnet.numerics`) `_layer` and `_backward` check every output and
gradient as it is computed and raise at the first NaN or inf, naming the layer.

Parameters are drawn on the host from NumPy's *global* legacy random state, exactly as the
course does (`np.random.seed(231)` before building a model reproduces the course's
weights), then moved to the default backend (`dualnet.backend.use`) in the model's dtype.
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from .. import _checks, numerics
from .._threads import blas_one_thread, blas_own_threads
from ..backend import current, get, of
from ..layers import softmax_loss

__all__ = ["Model", "init_scale"]

# Tape marks for residual connections (see `_fork`, `_join`, `_backward`).
_FORK = "fork"
_JOIN = "join"


def _takes_need_dx(fn) -> bool:
    """Whether backward function `fn` accepts the `need_dx` keyword (asked once per step;
    remembered, since reading a signature costs as much as a small layer)."""
    try:
        return _signature_takes_need_dx(fn)
    except TypeError:  # an unhashable callable: read its signature every time
        return _signature_takes_need_dx.__wrapped__(fn)


@functools.lru_cache(maxsize=256)
def _signature_takes_need_dx(fn) -> bool:
    try:
        return "need_dx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return False


def _l2(loss, dW, W, reg: float):
    """loss + 0.5 * reg * sum(W**2) and dW + reg * W (a new array), by W's backend."""
    decayed, squares = of(W).l2_decay(dW, W, reg)
    return loss + 0.5 * reg * squares, decayed


def init_scale(weight_scale, fan_in: int) -> float:
    """Standard deviation of a weight with `fan_in` inputs.

    weight_scale: a number (the course's fixed scale), 'he' (sqrt(2 / fan_in), for ReLU
    networks) or 'xavier' (sqrt(1 / fan_in)).
    """
    if weight_scale == "he":
        return math.sqrt(2.0 / fan_in)
    if weight_scale == "xavier":
        return math.sqrt(1.0 / fan_in)
    if isinstance(weight_scale, str):
        raise ValueError(f"weight_scale must be a number, 'he' or 'xavier', got {weight_scale!r}")
    return float(weight_scale)


class Model:
    """Base class: parameter dict, L2 regularization, loss/backward, device moves.

    Attributes:
        params: dict name -> array (W1, b1, gamma1, beta1, ...) on one backend, in `dtype`.
        reg: L2 strength; may be changed at any time (`model.reg = 0.5`).
        dtype: the numpy dtype every computation runs in; inputs are cast to it.
        bn_params: one dict per normalization layer ('mode', running statistics).
    """

    #: Whether `loss` runs the step's matrix products on BLAS's own threads and dualnet's
    #: OpenMP kernels on one (`dualnet._threads.blas_own_threads`): for models of dense
    #: layers only. Models with convolutions hold BLAS to one thread instead, so that it
    #: never spins beside their parallel kernels (`blas_one_thread`).
    blas_threads_in_step = False

    def __init__(self, *, reg=0.0, weight_scale=1e-2, dtype=np.float32):
        name = type(self).__name__  # errors name the class the user built, not this base
        self.reg = _checks.number(name, "reg", reg, at_least=0)
        self.weight_scale = _checks.weight_scale(name, weight_scale)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: dtype must be float32 or float64, got {self.dtype}")
        self.params = {}
        self.bn_params = []
        self._tape = None   # list while a training forward pass runs, else None
        self._watch = None  # callable(name, out) while first_nonfinite_layer runs

    # -- construction ---------------------------------------------------------------------
    def _add(self, name, host_array):
        self.params[name] = current().asarray(host_array, dtype=self.dtype)

    def _add_weight(self, name, shape, fan_in):
        """params[name] = scale * standard normal of `shape` from numpy's global RNG."""
        self._add(name, init_scale(self.weight_scale, fan_in) * np.random.randn(*shape))

    def _add_zeros(self, name, shape):
        self._add(name, np.zeros(shape))

    def _add_ones(self, name, shape):
        self._add(name, np.ones(shape))

    # -- the forward pass, one named layer at a time --------------------------------------
    def _layer(self, name, forward, backward, x, param_names=(), *extra):
        """out of `forward(x, *params[param_names], *extra)`, with its backward taped.

        `backward(dout, cache)` must return dx, or (dx, *grads in param_names order), which
        is the contract of every layer and sandwich function in `dualnet.layers`.
        """
        out, cache = forward(x, *(self.params[k] for k in param_names), *extra)
        if self._watch is not None:
            self._watch(name, out)
        if numerics.enabled():
            numerics.check(out, type(self).__name__, name, "output")
        if self._tape is not None:
            self._tape.append((name, backward, cache, param_names))
        return out

    def _fork(self):
        """Mark the start of a residual branch whose input is added back by `_join`."""
        if self._tape is not None:
            self._tape.append(_FORK)

    def _join(self, out, skip):
        """out + skip, closing the innermost `_fork`."""
        if self._tape is not None:
            self._tape.append(_JOIN)
        return out + skip

    def _backward(self, dout):
        """Walk the tape backwards from dscores; returns grads keyed like params.

        The first taped layer's input gradient goes nowhere, so a backward function that
        takes `need_dx` (the conv layers and sandwiches) is told to skip it there.
        """
        grads = {}
        skips = []  # upstream gradients waiting at open residual forks
        first = self._tape[0] if self._tape else None
        debug = numerics.enabled()
        for entry in reversed(self._tape):
            if entry is _JOIN:      # out = branch + skip: both receive dout
                skips.append(dout)
            elif entry is _FORK:    # the branch input also fed the skip
                dout = dout + skips.pop()
            else:
                layer, backward, cache, names = entry
                if entry is first and _takes_need_dx(backward):
                    result = backward(dout, cache, need_dx=False)
                else:
                    result = backward(dout, cache)
                if not isinstance(result, tuple):
                    result = (result,)
                dout = result[0]
                grads.update(zip(names, result[1:], strict=True))
                if debug:
                    self._check_gradients(layer, result, names)
        return grads

    def _check_gradients(self, layer, result, names):
        """Debug mode: the input gradient and parameter gradients `layer` returned."""
        owner = type(self).__name__
        numerics.check(result[0], owner, layer, "input gradient")
        for name, grad in zip(names, result[1:], strict=True):
            numerics.check(grad, owner, layer, f"gradient of {name}")

    def _scores(self, X):
        """Class scores (N, num_classes) from `_layer` calls; subclasses implement it."""
        raise NotImplementedError

    def _set_mode(self, mode):
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        dropout_param = getattr(self, "dropout_param", None)
        if dropout_param:
            dropout_param["mode"] = mode

    # -- the course contract ----------------------------------------------------------------
    def loss(self, X, y=None):
        """Scores for X, or the loss and its gradients when labels y are given.

        Args:
            X: (N, *input_dim) array on the parameters' backend; cast to `dtype`.
            y: optional (N,) integer labels in [0, num_classes).

        Returns:
            scores (N, num_classes) if y is None, else (loss, grads): loss a 0-d value in
            `dtype`, grads a dict with one array per parameter, same shapes and dtype.
        """
        X = X.astype(self.dtype, copy=False)
        if numerics.enabled():
            numerics.check(X, type(self).__name__, None, "input X")
        self._set_mode("test" if y is None else "train")
        # once for every layer's products and kernels (dualnet._threads)
        with blas_own_threads() if self.blas_threads_in_step else blas_one_thread():
            if y is None:
                return self._scores(X)
            self._tape = []
            try:
                data_loss, dscores = softmax_loss(self._scores(X), y)
                if numerics.enabled():
                    numerics.check(data_loss, type(self).__name__, "softmax_loss", "loss")
                grads = self._backward(dscores)
            finally:
                self._tape = None
            return self._regularize(data_loss, grads)

    def _regularize(self, loss, grads):
        # float(): a NumPy float64 reg would silently upcast float32 grads.
        reg = float(self.reg)
        if reg == 0:
            return loss, grads
        for name in self.weight_names():
            loss, grads[name] = _l2(loss, grads[name], self.params[name], reg)
        return loss, grads

    def weight_names(self):
        """Names of the regularized parameters: those starting with 'W', in params order."""
        return [k for k in self.params if k.startswith("W")]

    def num_params(self) -> int:
        """Total number of scalar parameters (running statistics are not parameters)."""
        return sum(int(v.size) for v in self.params.values())

    # -- backends ---------------------------------------------------------------------------
    @property
    def backend(self):
        """The Backend holding this model's parameters."""
        return of(*self.params.values())

    def to(self, name):
        """Move every parameter and running statistic to backend `name`; returns self."""
        target = get(name)

        def move(a):
            return a if of(a) is target else target.asarray(of(a).to_numpy(a))

        self.params = {k: move(v) for k, v in self.params.items()}
        for bn_param in self.bn_params:
            for key in ("running_mean", "running_var"):
                if key in bn_param:
                    bn_param[key] = move(bn_param[key])
        return self

    # -- diagnostics ------------------------------------------------------------------------
    def first_nonfinite_layer(self, X, y=None):
        """Re-run the forward pass on X and name the first layer whose output is not finite.

        Returns the layer's name (e.g. 'affine_relu2'), or None when every layer output is
        finite. Running statistics are restored afterwards, so the check changes nothing.
        """
        found = []

        def watch(name, out):
            if not found and not bool(of(out).xp.isfinite(out).all()):
                found.append(name)

        saved = [dict(p) for p in self.bn_params]
        self._watch = watch
        try:
            # overflow is what we are looking for; debug mode would raise at the first one
            with np.errstate(all="ignore"), numerics.debug(False):
                self.loss(X, y)
        finally:
            self._watch = None
            for bn_param, before in zip(self.bn_params, saved, strict=True):
                bn_param.clear()
                bn_param.update(before)
        return found[0] if found else None

    def __repr__(self):
        return (f"<{type(self).__name__}: {self.num_params():,} parameters, {self.dtype}, "
                f"backend {self.backend.name!r}>")
