"""Launch code for `conv.cu`, shared by the `cupy` and `cuda-emu` backends.

`ConvKernelBackend` holds everything about calling a conv.cu kernel except the launch
itself: it validates arrays and geometry with real exceptions (a bad index in a kernel would
corrupt memory, not raise), makes inputs contiguous, allocates outputs, picks the per-dtype
entry point, computes the 1-D grid and block, and passes every scalar as a `numpy.int64`
(the kernels declare `long long`). Subclasses supply one method,
`_launch(entry, grid, block, args)`:

- `CupyBackend` (`cupy.py`): a function of a lazily compiled `cupy.RawModule`;
- `EmuBackend` (`emu.py`): a ctypes call into conv.cu compiled for the CPU.

Their convolution is the base backend's portable im2col + batched GEMM on these kernels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _checks
from ..kernels import reference
from ..kernels.cuda import DTYPE_SUFFIX
from .base import Backend


def launch_config(total: int, block: int, max_grid: int) -> tuple[int, int]:
    """(grid, block) for `total` elements: one thread each, the grid capped at `max_grid`.

    The kernels loop with a grid stride, so a capped grid still covers every element.
    """
    return max(1, min(math.ceil(total / block), max_grid)), block


class Geometry(NamedTuple):
    """conv.cu's `struct Geometry` minus `total`, in the kernels' argument order."""

    C: int
    H: int
    W: int
    k_h: int
    k_w: int
    pad: int
    stride: int
    H_out: int
    W_out: int


class ConvKernelBackend(Backend):
    """A backend whose heavy kernels are conv.cu's; subclasses implement `_launch`.

    Shapes and dtypes are those of the `Backend` contract; float32 stays float32.
    """

    #: Threads per block.
    block = 256
    #: Most blocks per launch; tests lower it to exercise several grid-stride passes.
    max_grid = 4096

    def _launch(self, entry: str, grid: int, block: int, args: tuple) -> None:
        """Run kernel `entry` on a 1-D grid; `args` are arrays and numpy scalars."""
        raise NotImplementedError

    # -- validation ------------------------------------------------------------------
    def _where(self, op):
        return f"{op} ({self.name} kernel)"

    def _array(self, op, name, a, ndim, dtypes=tuple(DTYPE_SUFFIX)):
        """`a` checked (array of this backend, `ndim`-D, one of `dtypes`), made contiguous."""
        where = self._where(op)
        if not self.owns(a):
            raise TypeError(f"{where}: {name} must be a {self.xp.__name__}.ndarray, got "
                            f"{type(a).__module__}.{type(a).__name__}")
        if a.dtype not in dtypes:
            allowed = " or ".join(str(np.dtype(d)) for d in dtypes)
            raise TypeError(f"{where}: {name} must be {allowed}, got {a.dtype}")
        _checks.ndim(where, name, a, ndim)
        return self.xp.ascontiguousarray(a)

    def _geometry(self, op, x_shape, k_h, k_w, pad, stride, floor=False) -> tuple[int, Geometry]:
        """Validated (N, Geometry) of a sliding window over x_shape (N, C, H, W); the windows
        must fit exactly, or with `floor` those running past the padded input are dropped."""
        where = self._where(op)
        if len(x_shape) != 4:
            raise ValueError(f"{where}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
        N, C, H, W = (_checks.positive_int(where, "x_shape", d, minimum=0) for d in x_shape)
        k_h = _checks.positive_int(where, "window height", k_h)
        k_w = _checks.positive_int(where, "window width", k_w)
        pad = _checks.positive_int(where, "pad", pad, minimum=0)
        stride = _checks.positive_int(where, "stride", stride)
        H_out = _checks.window_output(where, H, k_h, pad, stride, "height", floor)
        W_out = _checks.window_output(where, W, k_w, pad, stride, "width", floor)
        return N, Geometry(C, H, W, k_h, k_w, pad, stride, H_out, W_out)

    def _same_dtype(self, op, **arrays):
        """All `arrays` share one dtype (a kernel reads them all as its T)."""
        if len({a.dtype for a in arrays.values()}) > 1:
            found = ", ".join(f"{name}={a.dtype}" for name, a in arrays.items())
            raise TypeError(f"{self._where(op)}: dtype mismatch ({found})")

    def _run(self, kernel, out, inputs, outputs, g: Geometry, extra=()) -> None:
        """Launch `kernel` with one thread per element of `out` (the array it fills); `extra`
        scalars follow the geometry."""
        total = out.size
        if total == 0:
            return  # an empty grid is an invalid launch, and there is nothing to compute
        entry = f"{kernel}_{DTYPE_SUFFIX[out.dtype]}"
        grid, block = launch_config(total, self.block, self.max_grid)
        scalars = tuple(np.int64(v) for v in (total, *g, *extra))
        self._launch(entry, grid, block, (*inputs, *outputs, *scalars))

    # -- kernels ---------------------------------------------------------------------
    def im2col(self, x, HH, WW, pad, stride):
        x = self._array("im2col", "x", x, 4)
        N, g = self._geometry("im2col", x.shape, HH, WW, pad, stride, floor=True)
        cols = self.xp.empty((N, g.C * g.k_h * g.k_w, g.H_out * g.W_out), dtype=x.dtype)
        self._run("im2col", cols, (x,), (cols,), g)
        return cols

    def col2im(self, cols, x_shape, HH, WW, pad, stride):
        cols = self._array("col2im", "cols", cols, 3)
        N, g = self._geometry("col2im", x_shape, HH, WW, pad, stride, floor=True)
        _checks.shape(self._where("col2im"), "cols", cols,
                      (N, g.C * g.k_h * g.k_w, g.H_out * g.W_out))
        dx = self.xp.empty((N, g.C, g.H, g.W), dtype=cols.dtype)
        self._run("col2im", dx, (cols,), (dx,), g)
        return dx

    def maxpool_forward(self, x, ph, pw, stride):
        x = self._array("maxpool_forward", "x", x, 4)
        N, g = self._geometry("maxpool_forward", x.shape, ph, pw, 0, stride)
        out = self.xp.empty((N, g.C, g.H_out, g.W_out), dtype=x.dtype)
        argmax = self.xp.empty(out.shape, dtype=np.int64)
        self._run("maxpool_forward", out, (x,), (out, argmax), g)
        return out, argmax

    def maxpool_backward(self, dout, argmax, x_shape, ph, pw, stride, keep=None):
        op = "maxpool_backward"
        dout = self._array(op, "dout", dout, 4)
        if keep is not None:
            dout = self.xp.ascontiguousarray(dout * (keep > 0))
        argmax = self._array(op, "argmax", argmax, 4, dtypes=(np.int64,))
        N, g = self._geometry(op, x_shape, ph, pw, 0, stride)
        out_shape = (N, g.C, g.H_out, g.W_out)
        _checks.shape(self._where(op), "dout", dout, out_shape)
        _checks.shape(self._where(op), "argmax", argmax, out_shape)
        dx = self.xp.empty((N, g.C, g.H, g.W), dtype=dout.dtype)
        self._run(op, dx, (dout, argmax), (dx,), g)
        return dx

    def avgpool_forward(self, x, ph, pw, stride):
        x = self._array("avgpool_forward", "x", x, 4)
        N, g = self._geometry("avgpool_forward", x.shape, ph, pw, 0, stride)
        out = self.xp.empty((N, g.C, g.H_out, g.W_out), dtype=x.dtype)
        self._run("avgpool_forward", out, (x,), (out,), g)
        return out

    def avgpool_backward(self, dout, x_shape, ph, pw, stride):
        op = "avgpool_backward"
        dout = self._array(op, "dout", dout, 4)
        N, g = self._geometry(op, x_shape, ph, pw, 0, stride)
        _checks.shape(self._where(op), "dout", dout, (N, g.C, g.H_out, g.W_out))
        dx = self.xp.empty((N, g.C, g.H, g.W), dtype=dout.dtype)
        self._run(op, dx, (dout,), (dx,), g)
        return dx

    def _depthwise_geometry(self, op, x_shape, w, stride, pad):
        """(N, Geometry, multiplier) of a depthwise call; w (C*m, 1, HH, WW) checked."""
        N, g = self._geometry(op, x_shape, w.shape[2], w.shape[3], pad, stride, floor=True)
        F = w.shape[0]
        if w.shape[1] != 1 or g.C == 0 or F % g.C:
            raise ValueError(f"{self._where(op)}: w must have shape (C*m, 1, HH, WW) for "
                             f"C={g.C} channels, got {tuple(w.shape)}")
        return N, g, F // g.C

    def depthwise_forward(self, x, w, b, stride, pad, Ho, Wo):
        op = "depthwise_forward"
        x, w, b = (self._array(op, name, a, ndim)
                   for name, a, ndim in (("x", x, 4), ("w", w, 4), ("b", b, 1)))
        self._same_dtype(op, x=x, w=w, b=b)
        N, g, m = self._depthwise_geometry(op, x.shape, w, stride, pad)
        _checks.shape(self._where(op), "b", b, (w.shape[0],))
        if (Ho, Wo) != (g.H_out, g.W_out):
            raise ValueError(f"{self._where(op)}: output size {(Ho, Wo)} does not match the "
                             f"geometry's {(g.H_out, g.W_out)}")
        out = self.xp.empty((N, w.shape[0], Ho, Wo), dtype=x.dtype)
        self._run(op, out, (x, w, b), (out,), g, extra=(N, m))
        return out

    def depthwise_backward(self, dout, x, w, stride, pad, need_dx=True):
        op = "depthwise_backward"
        dout, x, w = (self._array(op, name, a, 4) for name, a in (("dout", dout), ("x", x),
                                                                   ("w", w)))
        self._same_dtype(op, dout=dout, x=x, w=w)
        N, g, m = self._depthwise_geometry(op, x.shape, w, stride, pad)
        _checks.shape(self._where(op), "dout", dout, (N, w.shape[0], g.H_out, g.W_out))
        dx = None
        if need_dx:
            dx = self.xp.empty(x.shape, dtype=x.dtype)
            self._run("depthwise_backward_input", dx, (dout, w), (dx,), g, extra=(N, m))
        dw = self.xp.empty(w.shape, dtype=w.dtype)
        self._run("depthwise_backward_filter", dw, (dout, x), (dw,), g, extra=(N, m))
        return dx, dw

    def self_test(self) -> str | None:
        """Run im2col on a tiny input; None when it matches the reference, else what differed."""
        x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
        got = self.to_numpy(self.im2col(self.asarray(x), 2, 2, 1, 1))
        want = reference.im2col(np, x, 2, 2, 1, 1)
        if got.shape != want.shape or not np.array_equal(got, want):
            return f"conv.cu's im2col ran but gave wrong results on {self.name}"
        return None
