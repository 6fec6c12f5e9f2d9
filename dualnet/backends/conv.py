"""Convolution algorithms: the face every backend's strategies share, and the settings that
choose among them.

A backend owns its ways of computing a 2-D convolution, one `ConvAlgorithm` each, and picks
one per call in `Backend.conv_algorithm` (one rule per backend). The rule reads two settings
kept here, which users change through `dualnet.layers.conv` (`set_algorithm`,
`set_memory_budget`) and `dualnet doctor` reports:

- the algorithm setting: 'auto' (each call takes the fastest algorithm its shape and backend
  allow), 'im2col' (im2col + GEMM for every shape) or 'winograd' (Winograd for every 3x3
  stride-1 call where the backend has it);
- the memory budget: a bound, in bytes, on the scratch memory one call holds at once
  (patches or transform coefficients, their gradients, GEMM results; not the arrays it
  returns). Chunked algorithms work through the batch in chunks that fit it; one sample is the
  smallest chunk, so a budget below one sample's scratch is exceeded.

Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, Ho, Wo), all one float dtype.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .. import _checks

#: Default bound, in bytes, on the scratch memory one fast convolution call holds at once.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: The values `set_algorithm` accepts.
ALGORITHM_SETTINGS = ("auto", "im2col", "winograd")


class _Settings:
    """The process-wide choices every backend's rule reads."""

    algorithm = "auto"
    memory_budget = int(os.environ.get("DUALNET_CONV_MEMORY_BUDGET", DEFAULT_MEMORY_BUDGET))


settings = _Settings()

#: Called with no arguments when the budget changes, so that held scratch can be dropped.
_on_budget_change = []


def set_memory_budget(nbytes: int) -> int:
    """Bound the fast convolution's scratch memory to `nbytes`; returns the old bound.

    The default is `DEFAULT_MEMORY_BUDGET` (256 MiB), or the `DUALNET_CONV_MEMORY_BUDGET`
    environment variable (bytes) read at import. Scratch buffers held from call to call are
    released.
    """
    nbytes = _checks.positive_int("set_memory_budget", "nbytes", nbytes)
    old, settings.memory_budget = settings.memory_budget, nbytes
    for release in _on_budget_change:
        release()
    return old


def get_memory_budget() -> int:
    """The current bound, in bytes, on the fast convolution's scratch memory."""
    return settings.memory_budget


def set_algorithm(name: str) -> str:
    """Choose how the fast convolution computes; returns the old choice.

    'auto' (the default): each call takes the fastest algorithm its shape and backend allow;
    'im2col': im2col + GEMM for every shape (the classic algorithm); 'winograd': Winograd for
    every 3x3 stride-1 call on the numpy backend, however few its channels (im2col elsewhere).
    """
    if name not in ALGORITHM_SETTINGS:
        raise ValueError(f"set_algorithm: name must be 'auto', 'im2col' or 'winograd', "
                         f"got {name!r}")
    old, settings.algorithm = settings.algorithm, name
    return old


def get_algorithm() -> str:
    """The current choice: 'auto', 'im2col' or 'winograd' (`set_algorithm`)."""
    return settings.algorithm


class ConvCall(NamedTuple):
    """The geometry of one convolution call, validated by the layer."""

    N: int
    C: int
    H: int
    W: int
    F: int
    HH: int
    WW: int
    stride: int
    pad: int
    Ho: int
    Wo: int
    itemsize: int
    groups: int = 1

    @classmethod
    def of(cls, x, w, stride, pad, Ho, Wo, groups=1):
        return cls(*x.shape, w.shape[0], *w.shape[2:], stride, pad, Ho, Wo, x.itemsize, groups)

    @property
    def w_shape(self):
        return (self.F, self.C // self.groups, self.HH, self.WW)


class ConvContext(NamedTuple):
    """What a forward pass keeps for its backward pass: the layer's cache, handed back unchanged.

    `parts`: the batch slices of the chunks (None for algorithms that do not chunk), or for a
    grouped call the contexts of its groups; `algorithm`: the name of the algorithm that ran
    (`ConvAlgorithm.name`).
    """

    x: object
    w: object
    stride: int
    pad: int
    parts: list | None
    groups: int
    algorithm: str


class ConvAlgorithm:
    """One way to compute a convolution on one backend, bound to that backend.

    The face every algorithm shows: `applies(call)` (can it compute this call at all),
    `scratch_bytes(call)` (the least scratch memory it needs for the call), `forward` and
    `backward`, `gradients` (backward's and the bias gradient, which the backend asks for),
    and `pools`/`forward_maxpool`/`maxpool_gradients` for a max pool over its output (in
    cache, where the algorithm can). Chunked
    algorithms (`chunked = True`) work through the batch in chunks sized by `chunk_bytes`
    and the budget, so they run within any budget (one sample is their smallest chunk); the
    others need their whole `scratch_bytes` within it (`fits`).
    """

    name = "abstract"
    #: Whether the algorithm works through the batch in budget-sized chunks.
    chunked = True
    #: Chunked algorithms: whether chunks also keep under the backend's `chunk_cap_bytes`.
    cache_sized = True

    def __init__(self, be):
        self.be = be

    def applies(self, call: ConvCall) -> bool:
        """Whether this algorithm can compute `call` (shape, compiled kernels, threads)."""
        return True

    def chunk_bytes(self, call: ConvCall) -> tuple[int, int]:
        """Chunked algorithms: (scratch bytes per sample, scratch bytes per call)."""
        raise NotImplementedError

    def scratch_bytes(self, call: ConvCall) -> int:
        """The least scratch memory, in bytes, `call` needs: a one-sample chunk's for chunked
        algorithms."""
        per_sample, per_call = self.chunk_bytes(call)
        return per_sample + per_call

    def fits(self, call: ConvCall, budget: int) -> bool:
        """Whether `call` can take this algorithm within `budget` bytes of scratch."""
        return self.applies(call) and (self.chunked or self.scratch_bytes(call) <= budget)

    def parts(self, call: ConvCall) -> list:
        """Chunked algorithms: the batch slices of the chunks that fit the memory budget."""
        cap = self.be.chunk_cap_bytes if self.cache_sized else None
        return chunks(call.N, *self.chunk_bytes(call), cap=cap)

    def forward(self, x, w, b, call: ConvCall):
        """x, w, b C-contiguous -> (out (N, F, Ho, Wo), parts or None)."""
        raise NotImplementedError

    def backward(self, dout, ctx: ConvContext, need_dx: bool):
        """dout (N, F, Ho, Wo) C-contiguous -> (dx (N, C, H, W) or None, dw (F, C, HH, WW))."""
        raise NotImplementedError

    def maxpool_gradients(self, dout, argmax, conv_shape, pool, keep, ctx: ConvContext,
                          need_dx: bool):
        """`gradients` where dout (N, F, Hp, Wp) is the gradient of a max pool over `pool` =
        (ph, pw, stride) windows of this convolution's output (`conv_shape`), argmax the
        pool's and keep, when given, the output of a ReLU after the pool. Here the backend's
        pool backward routes dout first; an algorithm that can route it in cache overrides
        this."""
        da = self.be.maxpool_backward(dout, argmax, conv_shape, *pool, keep=keep)
        return self.gradients(da, ctx, need_dx)

    def pools(self, call: ConvCall, pool) -> bool:
        """Whether `forward_maxpool` computes this call followed by a max pool over
        `pool` = (ph, pw, stride) windows."""
        return False

    def forward_maxpool(self, x, w, b, call: ConvCall, relu: bool):
        """Where `pools`: (out, argmax) of the max pool (then max(., 0) with `relu`) over
        the convolution's output, without writing that output (`Backend.conv2d_maxpool`)."""
        raise NotImplementedError

    def gradients(self, dout, ctx: ConvContext, need_dx: bool):
        """`backward`'s dx and dw, and db (F,): dout summed over N, Ho and Wo. An algorithm
        that reads every dout element anyway overrides this to sum db on the way."""
        dx, dw = self.backward(dout, ctx, need_dx)
        return dx, dw, dout.sum(axis=(0, 2, 3))

    def __repr__(self):
        return f"<{self.name} convolution on {self.be.name}>"


def chunks(N, sample_bytes, fixed_bytes=0, cap=None):
    """Batch slices whose scratch, `sample_bytes` per sample plus `fixed_bytes` per call, fits
    the memory budget and, when given, `cap` bytes."""
    limit = settings.memory_budget - fixed_bytes
    if cap is not None:
        limit = min(limit, cap)
    step = max(1, min(N, limit // max(1, sample_bytes)))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


class PortableIm2col(ConvAlgorithm):
    """'im2col-portable': per chunk, the backend's im2col, one batched GEMM and col2im.

    The base backend's reference: it needs only `im2col`/`col2im` and `xp.matmul`, so it runs
    on every backend (cupy and cuda-emu use it).
    """

    name = "im2col-portable"

    def chunk_bytes(self, call):
        # per sample: patches, their gradient, dout, a share of dx and a dw term
        K, P = call.C * call.HH * call.WW, call.Ho * call.Wo
        return (2 * K * P + call.C * call.H * call.W + call.F * K) * call.itemsize, 0

    def forward(self, x, w, b, call):
        xp, be = self.be.xp, self.be
        parts = self.parts(call)
        w2 = w.reshape(call.F, -1)
        out = xp.empty((call.N, call.F, call.Ho * call.Wo), dtype=x.dtype)
        for part in parts:
            # patches (n, C*HH*WW, Ho*Wo), a temporary freed at once; out (n, F, Ho*Wo) is NCHW
            xp.matmul(w2, be.im2col(x[part], call.HH, call.WW, call.pad, call.stride),
                      out=out[part])
        out += b[:, None]
        return out.reshape(call.N, call.F, call.Ho, call.Wo), parts

    def backward(self, dout, ctx, need_dx):
        xp, be = self.be.xp, self.be
        x, w, stride, pad = ctx.x, ctx.w, ctx.stride, ctx.pad
        N, F = dout.shape[:2]
        HH, WW = w.shape[2:]
        w2 = w.reshape(F, -1)
        dout = dout.reshape(N, F, -1)
        dw = xp.zeros_like(w2)
        dx = xp.empty_like(x) if need_dx else None
        for part in ctx.parts:
            # recomputing the patches costs less than keeping them: a chunk's patches are
            # rebuilt in cache, while kept ones come back from main memory (and fresh pages
            # for them fault in on every forward pass)
            cols = be.im2col(x[part], HH, WW, pad, stride)
            # sum over the chunk of dout_n @ cols_n.T, as one batched GEMM
            dw += xp.matmul(dout[part], cols.transpose(0, 2, 1)).sum(axis=0)
            del cols  # freed before the next buffer is made: one chunk's scratch at a time
            if need_dx:
                dcols = xp.matmul(w2.T, dout[part])  # (n, C*HH*WW, Ho*Wo)
                dx[part] = be.col2im(dcols, x[part].shape, HH, WW, pad, stride)
                del dcols
        return dx, dw.reshape(w.shape)


class Depthwise(ConvAlgorithm):
    """'depthwise': groups = C (filter f sees channel f // (F/C)), by the backend's direct
    depthwise kernels (`Backend.depthwise_forward`/`depthwise_backward`): a depthwise layer
    is memory-bound, and im2col would turn it into C tiny GEMMs."""

    name = "depthwise"
    chunked = False

    def applies(self, call):
        return call.groups == call.C > 1

    def scratch_bytes(self, call):
        """Nothing the budget needs to bound: the compiled kernels hold at most a padded input
        plane and Wo partial sums per tap in each thread (kilobytes), the others none."""
        return 0

    def forward(self, x, w, b, call):
        return self.be.depthwise_forward(x, w, b, call.stride, call.pad, call.Ho, call.Wo), None

    def backward(self, dout, ctx, need_dx):
        return self.be.depthwise_backward(dout, ctx.x, ctx.w, ctx.stride, ctx.pad, need_dx)


class Grouped(ConvAlgorithm):
    """'grouped': any other groups > 1, one convolution per group by the backend's rule for a
    single group; the groups' contexts are kept for backward. Each group's input channels and
    filters are copied out contiguous first, and its gradients copied back."""

    name = "grouped"
    chunked = False

    def applies(self, call):
        return call.groups > 1

    def scratch_bytes(self, call):
        """The copied input and output of one group, beside that group's own scratch."""
        g = call.groups
        return (call.N * (call.C // g) * call.H * call.W
                + call.N * (call.F // g) * call.Ho * call.Wo) * call.itemsize

    def _split(self, a, g, groups):
        size = a.shape[1] // groups
        return a[:, g * size:(g + 1) * size]

    def forward(self, x, w, b, call):
        xp, groups = self.be.xp, call.groups
        Fg = call.F // groups
        out = xp.empty((call.N, call.F, call.Ho, call.Wo), dtype=x.dtype)
        contexts = []
        for g in range(groups):
            part, ctx = self.be.conv2d(xp.ascontiguousarray(self._split(x, g, groups)),
                                       w[g * Fg:(g + 1) * Fg], b[g * Fg:(g + 1) * Fg],
                                       call.stride, call.pad, call.Ho, call.Wo)
            out[:, g * Fg:(g + 1) * Fg] = part
            contexts.append(ctx)
        return out, contexts

    def backward(self, dout, ctx, need_dx):
        xp, groups = self.be.xp, ctx.groups
        dx = xp.empty_like(ctx.x) if need_dx else None
        dw = xp.empty_like(ctx.w)
        Fg = dw.shape[0] // groups
        for g, group_ctx in enumerate(ctx.parts):
            dout_g = xp.ascontiguousarray(self._split(dout, g, groups))
            dx_g, dw[g * Fg:(g + 1) * Fg], _ = self.be.conv2d_backward(dout_g, group_ctx,
                                                                       need_dx)
            if need_dx:
                self._split(dx, g, groups)[...] = dx_g
        return dx, dw
