"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3), on host backends.

Each 2x2 output tile needs 16 multiplies instead of 36 (Lavin & Gray, 2016; the transforms
and their layouts are specified in `dualnet/kernels/reference.py`). Per batch chunk:

    forward    V = input transform of x          (16, C, T)   T = tiles in the chunk
               M[k] = U[k] @ V[k], k = 0..15     (16, F, T)   U: the filters, (16, F, C)
               out = output transform of M, + b  (n, F, Ho, Wo), written in NCHW directly
    backward   dM = adjoint output transform of dout
               dU += dM[k] @ V[k]^T;  dV[k] = U[k]^T @ dM[k];  dx = adjoint input transform

so the three GEMM passes of im2col + GEMM shrink to 16/36 of their work, and the patches
(9x the input) become transform coefficients (4x the input). `conv_forward_fast` takes this
path for 3x3 stride-1 filters on the numpy backend where it pays (`conv._winograd_pays`: many
input channels) or where `set_algorithm("winograd")` asks; the values match im2col + GEMM to
float rounding (tests compare both with the naive layers).

Two ways to run it:
- fused (`forward_fused`, `backward_fused`; the compiled module with vector kernels, and at
  least a sample per thread): each thread takes whole samples and runs the steps above on one
  sample while it is in its cache, channels-last so that the transforms run on vectors of
  channels, with small register-blocked GEMMs instead of library calls
  (`kernels/winograd.pyx`, `kernels/microkernels.h`). The coefficients never go to main
  memory: measured on conv (c) of bench/ (2-core EPYC, AVX-512), fwd+bwd 8.5-10 ms against
  23-25 ms chunked. Unlike fused im2col it needs no cap on the workspace: with 12 and 23 MB per
  thread (64 channels at 56x56, 32 at 112x112) it still took 0.5-0.6x the chunked time.
- chunked (`forward`, `backward`): each step over a whole batch chunk, with the library's
  batched GEMM; used by the NumPy fallback, for batches smaller than the thread count, and
  when the fused workspace would not fit the memory budget.
"""

from __future__ import annotations

from ..kernels import reference
from . import _scratch


def sample_bytes(C, F, H, W, pad, itemsize):
    """Scratch bytes per sample: the backward pass holds V, dV and dM at once."""
    th, tw = reference.winograd_tiles(H, W, pad)
    return 16 * th * tw * (2 * C + F) * itemsize


def fused_bytes(be, C, F, H, W, pad, itemsize):
    """Scratch of the fused path: a workspace row per thread, sized for backward (the larger),
    plus the arena's alignment."""
    wino = be.winograd_fused
    return wino.max_threads() * wino.fused_workspace(C, F, H, W, pad, True) * itemsize + 64


def fused_applies(be, x_shape, F, pad, itemsize, budget):
    """Whether the fused path can run (compiled with vector kernels), keep every thread busy,
    and keep its workspaces and per-call arrays within `budget` bytes."""
    N, C, H, W = x_shape
    if not fused_enabled or be.winograd_fused is None or N < be.winograd_fused.max_threads():
        return False
    return fused_bytes(be, C, F, H, W, pad, itemsize) + fixed_bytes(C, F, itemsize) <= budget


#: Tests turn this off to run the chunked path with compiled transforms.
fused_enabled = True


def fixed_bytes(C, F, itemsize):
    """Bytes per call beside the per-sample scratch: U, dU and their transforms' temporaries
    (each at most 16*F*C), and the views' alignment."""
    return 8 * 16 * F * C * itemsize + 256


def forward(be, x, w, b, pad, parts):
    """x (N, C, H, W) C-contiguous, w (F, C, 3, 3), b (F,) contiguous, all one float dtype
    -> out (N, F, Ho, Wo); `parts`: the batch slices of the chunks."""
    xp = be.xp
    N, C, H, W = x.shape
    F = w.shape[0]
    th, tw = reference.winograd_tiles(H, W, pad)
    U = reference.winograd_filter(xp, w)
    out = xp.empty((N, F, H + 2 * pad - 2, W + 2 * pad - 2), dtype=x.dtype)
    for part in parts:
        T = (part.stop - part.start) * th * tw
        V, M = _scratch.arrays(be, x.dtype, (16, C, T), (16, F, T))
        be.winograd_input(x[part], pad, V)
        xp.matmul(U, V, out=M)
        be.winograd_output(M, b, out[part])
    return out


def forward_fused(be, x, w, b, pad):
    """`forward` on the fused path (see the module docstring); same arguments and result."""
    wino = be.winograd_fused
    N, C, H, W = x.shape
    F = w.shape[0]
    ws, = _scratch.arrays(be, x.dtype, (wino.max_threads(),
                                        wino.fused_workspace(C, F, H, W, pad, False)))
    U_t = be.xp.ascontiguousarray(reference.winograd_filter(be.xp, w).transpose(0, 2, 1))
    out = be.xp.empty((N, F, H + 2 * pad - 2, W + 2 * pad - 2), dtype=x.dtype)
    return wino.winograd_conv_forward(x, U_t, b, pad, out, ws)


def backward_fused(be, dout, x, w, pad, need_dx=True):
    """`backward` on the fused path; same arguments (no chunks) and results."""
    xp, wino = be.xp, be.winograd_fused
    N, C, H, W = x.shape
    F = w.shape[0]
    ws, = _scratch.arrays(be, x.dtype, (wino.max_threads(),
                                        wino.fused_workspace(C, F, H, W, pad, True)))
    dx = xp.empty_like(x) if need_dx else None
    dU = wino.winograd_conv_backward(dout, x, reference.winograd_filter(xp, w), pad, dx, ws)
    return dx, reference.winograd_filter_grad(xp, dU)


def backward(be, dout, x, w, pad, parts, need_dx=True):
    """Gradients of `forward` for dout (N, F, Ho, Wo) C-contiguous: dx (N, C, H, W) or None,
    dw (F, C, 3, 3), in x's dtype.

    The input transform is recomputed per chunk (it is cheap, and kept coefficients would come
    back from main memory); the bias gradient is the caller's.
    """
    xp = be.xp
    N, C, H, W = x.shape
    F = w.shape[0]
    th, tw = reference.winograd_tiles(H, W, pad)
    U_t = reference.winograd_filter(xp, w).transpose(0, 2, 1)
    dU = xp.empty((16, F, C), dtype=x.dtype)
    dx = xp.empty_like(x) if need_dx else None
    for part in parts:
        T = (part.stop - part.start) * th * tw
        V, dM, dV = _scratch.arrays(be, x.dtype, (16, C, T), (16, F, T),
                                    (16, C, T) if need_dx else (0,))
        be.winograd_input(x[part], pad, V)
        be.winograd_output_grad(dout[part], dM)
        if part.start == 0:
            xp.matmul(dM, V.transpose(0, 2, 1), out=dU)
        else:
            dU += xp.matmul(dM, V.transpose(0, 2, 1))
        if need_dx:
            xp.matmul(U_t, dM, out=dV)
            be.winograd_input_grad(dV, pad, dx[part])
    return dx, reference.winograd_filter_grad(xp, dU)
