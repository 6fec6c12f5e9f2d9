"""2-D convolution (NCHW): a naive loop reference and a fast version.

The fast layers pick an algorithm per call (`set_algorithm` overrides the choice; the cache
records the one taken):

- 'winograd-fused', 'winograd' (numpy backend; 3x3 filters, stride 1, enough channels):
  Winograd's F(2x2, 3x3), 16 multiplies per 2x2 output tile instead of 36, fused per sample
  in each thread's cache where the compiled kernels allow, else chunked (`winograd.py`);
- 'im2col-fused', 'im2col', 'im2col-pairs' (numpy backend, other shapes): im2col + GEMM,
  fused per sample in each thread's cache where the compiled kernels allow, else chunked into
  reused buffers, 'im2col-pairs' computing two outputs per patch column for few-filter layers
  (`conv_host.py`);
- 'im2col-portable' (cupy, cuda-emu): im2col + batched GEMM per chunk, below.
All give the naive layer's values to float rounding (the tests compare them).

Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, Ho, Wo) with
Ho = (H + 2*pad - HH) / stride + 1 (must be an integer; likewise Wo).

Memory: im2col patches are C*HH*WW times the size of the output planes (Winograd's transform
coefficients about 4 times the input), so the fast layers work through the batch in chunks.
The scratch memory one call holds at once (patches or coefficients, their gradients, GEMM
results; not the arrays it returns) stays under a budget: `DEFAULT_MEMORY_BUDGET` (256 MiB),
or the `DUALNET_CONV_MEMORY_BUDGET` environment variable (bytes) read at import, or
`set_memory_budget(nbytes)`. The backward pass recomputes each chunk's patches rather than
keeping them from the forward pass. On the numpy backend the chunk's scratch lives in
per-thread buffers reused from call to call (`_scratch`: sized by the budget, dropped by
`set_memory_budget`).
"""

from __future__ import annotations

import os

from . import _checks, _scratch, conv_host, winograd

#: Default bound, in bytes, on the scratch memory one fast convolution call holds at once.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

# On host backends, im2col chunks are also kept near this size even when the budget allows
# more: patches written by im2col are then still in cache when the GEMM reads them. Winograd
# chunks are not: its GEMMs are thin (inner dimension C), and they lose more speed on small
# chunks than the transforms gain from the cache (measured on conv (c) of bench/).
_HOST_CHUNK_BYTES = 8 * 2**20

# The pure-NumPy kernels hold up to two more scratch-sized temporaries (a padded or stacked
# copy of their input, their result) beside the buffer they fill.
_REFERENCE_OVERHEAD = 3

_memory_budget = int(os.environ.get("DUALNET_CONV_MEMORY_BUDGET", DEFAULT_MEMORY_BUDGET))
_algorithms = "auto"


def set_memory_budget(nbytes: int) -> int:
    """Bound the fast convolution's scratch memory to `nbytes`; returns the old bound.

    One sample is the smallest chunk, so a budget below one sample's scratch is exceeded.
    """
    global _memory_budget
    nbytes = _checks.positive_int("set_memory_budget", "nbytes", nbytes)
    old, _memory_budget = _memory_budget, nbytes
    _scratch.release()
    return old


def get_memory_budget() -> int:
    """The current bound, in bytes, on the fast convolution's scratch memory."""
    return _memory_budget


def set_algorithm(name: str) -> str:
    """Choose how the fast layers compute; returns the old choice.

    'auto' (the default): each call takes the fastest algorithm its shape and backend allow;
    'im2col': im2col + GEMM for every shape (the classic algorithm); 'winograd': Winograd for
    every 3x3 stride-1 call on the numpy backend, however few its channels (im2col elsewhere).
    """
    global _algorithms
    if name not in ("auto", "im2col", "winograd"):
        raise ValueError(f"set_algorithm: name must be 'auto', 'im2col' or 'winograd', "
                         f"got {name!r}")
    old, _algorithms = _algorithms, name
    return old


def get_algorithm() -> str:
    """The fast layers' current choice: 'auto', 'im2col' or 'winograd' (`set_algorithm`)."""
    return _algorithms


def _conv_geometry(layer, x, w, b, conv_param):
    """Validate a convolution; returns (backend, stride, pad, Ho, Wo)."""
    be = _checks.floating(layer, x=x, w=w, b=b)
    _checks.ndim(layer, "x", x, 4, "(N, C, H, W)")
    _checks.ndim(layer, "w", w, 4, "(F, C, HH, WW)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{layer}: channel mismatch: x {tuple(x.shape)} has C={x.shape[1]} "
                         f"but w {tuple(w.shape)} expects C={w.shape[1]}")
    _checks.shape(layer, "b", b, (w.shape[0],))
    stride = _checks.positive_int(layer, "conv_param['stride']", conv_param.get("stride", 1))
    pad = _checks.positive_int(layer, "conv_param['pad']", conv_param.get("pad", 0), minimum=0)
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    Ho = _checks.window_output(layer, H, HH, pad, stride, "height")
    Wo = _checks.window_output(layer, W, WW, pad, stride, "width")
    return be, stride, pad, Ho, Wo


def conv_forward_naive(x, w, b, conv_param):
    """Reference convolution with explicit loops over samples, filters and positions.

    conv_param: {'stride': int, 'pad': int} (zero padding on every side).
    Returns out (N, F, Ho, Wo), cache (x, w, b, conv_param).
    """
    be, stride, pad, Ho, Wo = _conv_geometry("conv_forward_naive", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    HH, WW = w.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = x_pad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = (window * w[f]).sum() + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """Reference gradients: each output position sends dout back through its window.

    Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x, w, b, conv_param = cache
    be, stride, pad, Ho, Wo = _conv_geometry("conv_backward_naive", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad = xp.zeros_like(x_pad)
    dw = xp.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * x_pad[n, :, rows, cols]
                    dx_pad[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    dx = dx_pad[:, :, pad:pad + H, pad:pad + W]
    return xp.ascontiguousarray(dx), dw, db


def _chunks(be, N, sample_bytes, fixed_bytes=0, cache_sized=True):
    """Batch slices whose scratch, `sample_bytes` per sample plus `fixed_bytes` per call, fits
    the budget (and, with `cache_sized` on host backends, `_HOST_CHUNK_BYTES`)."""
    limit = _memory_budget - fixed_bytes
    if be.host and cache_sized:
        limit = min(limit, _HOST_CHUNK_BYTES)
    step = max(1, min(N, limit // max(1, sample_bytes)))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


def _host_path(be):
    """Whether the backend's kernels write patches into caller-provided buffers (`out=`).

    Those run `conv_host`: patches laid out (C*HH*WW, n, Ho*Wo) make each chunk one large
    GEMM per pass instead of n thin ones. Backends whose kernels take no `out=` (cupy,
    cuda-emu) keep the portable per-sample path.
    """
    return getattr(be, "kernels_take_out", False)


def _algorithm(be, x, w, stride, pad, Ho, Wo):
    """'winograd-fused', 'winograd', 'im2col-fused', 'im2col', 'im2col-pairs' or
    'im2col-portable' (see the module docstring)."""
    if not _host_path(be):
        return "im2col-portable"
    N, C = x.shape[:2]
    if _algorithms != "im2col" and stride == 1 and tuple(w.shape[2:]) == (3, 3):
        fused = winograd.fused_applies(be, x.shape, w.shape[0], pad, x.itemsize,
                                       _memory_budget)
        if _algorithms == "winograd" or (
                be.winograd_compiled and _winograd_pays(C, N * Ho * Wo, fused)):
            return "winograd-fused" if fused else "winograd"
    if conv_host.fused_applies(be, N, w.shape, stride, Ho, Wo, x.itemsize, _memory_budget):
        return "im2col-fused"
    if _algorithms == "im2col":
        return "im2col"
    if _algorithms == "auto" and conv_host.outputs_per_column(
            w.shape[0], w.shape[2], stride, Ho) == 2:
        return "im2col-pairs"
    return "im2col"


def _winograd_pays(C, outputs, fused):
    """Whether Winograd beats im2col for C input channels and N*Ho*Wo outputs per filter,
    `fused`: on the fused path.

    Its 16 GEMMs have inner dimension C: with few channels the transforms dominate.
    `bench/conv_algorithms.py` measured (2-core EPYC, float32, fwd+bwd, compiled kernels)
    Winograd/im2col time ratios, both fused (Zen 5, AVX-512): 0.39-0.92 for C >= 32 (one
    shape of 60 at 1.3), 0.57-0.98 for C = 16, 2-5 for C = 3; both chunked (an older,
    AVX2-only EPYC): 0.5-0.96 for C >= 64, 0.75-1.04 for C = 32 from 8192 outputs (1.0-1.16
    below), 0.9-1.7 for C = 16. The NumPy fallback transforms are slower still, so 'auto'
    asks only with compiled ones.
    """
    if fused:
        return C >= 16
    return C >= 64 or (C >= 32 and outputs >= 8192)


def conv_forward_fast(x, w, b, conv_param):
    """Convolution by im2col + GEMM (or Winograd: see the module docstring), in batch chunks.

    Returns out (N, F, Ho, Wo) in x's dtype, cache for `conv_backward_fast`.
    """
    be, stride, pad, Ho, Wo = _conv_geometry("conv_forward_fast", x, w, b, conv_param)
    xp = be.xp
    x = xp.ascontiguousarray(x)
    b = xp.ascontiguousarray(b)
    N, C, H, W = x.shape
    F = w.shape[0]
    algo = _algorithm(be, x, w, stride, pad, Ho, Wo)
    q = 2 if algo == "im2col-pairs" else 1
    if algo == "winograd-fused":
        return winograd.forward_fused(be, x, w, b, pad), (x, w, stride, pad, None, algo)
    if algo == "im2col-fused":
        return (conv_host.forward_fused(be, x, w, b, stride, pad, Ho, Wo),
                (x, w, stride, pad, None, algo))
    if algo == "winograd":
        sample_bytes = winograd.sample_bytes(C, F, H, W, pad, x.itemsize)
        fixed_bytes = winograd.fixed_bytes(C, F, x.itemsize)
        compiled = be.winograd_compiled
    elif algo != "im2col-portable":
        sample_bytes = conv_host.sample_bytes(w.shape, stride, Ho, Wo, q, x.itemsize)
        fixed_bytes = conv_host.fixed_bytes(w.shape, stride, q, x.itemsize)
        compiled = be.im2col_compiled
    else:  # patches, their gradient, dout, a share of dx and a dw term
        K, P = w[0].size, Ho * Wo
        sample_bytes, fixed_bytes = (2 * K * P + x[0].size + F * K) * x.itemsize, 0
        compiled = True
    if not compiled:  # pure-NumPy kernels build each result before copying it into scratch
        sample_bytes *= _REFERENCE_OVERHEAD
    parts = _chunks(be, N, sample_bytes, fixed_bytes, cache_sized=algo != "winograd")
    cache = (x, w, stride, pad, parts, algo)
    if algo == "winograd":
        return winograd.forward(be, x, w, b, pad, parts), cache
    if algo != "im2col-portable":
        return conv_host.forward(be, x, w, b, stride, pad, parts, Ho, Wo, q), cache
    w2 = w.reshape(F, -1)
    HH, WW = w.shape[2:]
    out = xp.empty((N, F, Ho * Wo), dtype=x.dtype)
    for part in parts:
        # patches (n, C*HH*WW, Ho*Wo), a temporary freed at once; out (n, F, Ho*Wo) is NCHW
        xp.matmul(w2, be.im2col(x[part], HH, WW, pad, stride), out=out[part])
    out += b[:, None]
    return out.reshape(N, F, Ho, Wo), cache


def conv_backward_fast(dout, cache, need_dx=True):
    """Gradients of `conv_forward_fast`: per chunk, two GEMMs and the backend's col2im
    (or the adjoint Winograd transforms).

    need_dx=False skips the input gradient (returned as None), a third of the work; the
    first layer of a network has no use for it.

    Returns dx (N, C, H, W) or None, dw (F, C, HH, WW), db (F,).
    """
    x, w, stride, pad, parts, algo = cache
    be = _checks.floating("conv_backward_fast", dout=dout, w=w)
    xp = be.xp
    N, F = dout.shape[:2]
    dout = xp.ascontiguousarray(dout)
    db = dout.sum(axis=(0, 2, 3))
    if algo == "winograd-fused":
        dx, dw = winograd.backward_fused(be, dout, x, w, pad, need_dx)
        return dx, dw, db
    if algo == "im2col-fused":
        dx, dw = conv_host.backward_fused(be, dout, x, w, stride, pad, need_dx)
        return dx, dw, db
    if algo == "winograd":
        dx, dw = winograd.backward(be, dout, x, w, pad, parts, need_dx)
        return dx, dw, db
    if algo != "im2col-portable":
        q = 2 if algo == "im2col-pairs" else 1
        dx, dw = conv_host.backward(be, dout, x, w, stride, pad, parts, q, need_dx)
        return dx, dw, db
    HH, WW = w.shape[2:]
    w2 = w.reshape(F, -1)
    dout = dout.reshape(N, F, -1)
    dw = xp.zeros_like(w2)
    dx = xp.empty_like(x) if need_dx else None
    for part in parts:
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
    return dx, dw.reshape(w.shape), db
