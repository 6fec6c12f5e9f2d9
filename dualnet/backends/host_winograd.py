"""The numpy backend's Winograd algorithms, 'winograd' (chunked) and 'winograd-fused': 3x3
stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3).

Each 2x2 output tile needs 16 multiplies instead of 36 (Lavin & Gray, 2016; the transforms
and their layouts are specified in `dualnet/kernels/reference.py`). Per batch chunk:

    forward    V = input transform of x          (16, C, T)   T = tiles in the chunk
               M[k] = U[k] @ V[k], k = 0..15     (16, F, T)   U: the filters, (16, F, C)
               out = output transform of M, + b  (n, F, Ho, Wo), written in NCHW directly
    backward   dM = adjoint output transform of dout
               dU += dM[k] @ V[k]^T;  dV[k] = U[k]^T @ dM[k];  dx = adjoint input transform

so the three GEMM passes of im2col + GEMM shrink to 16/36 of their work, and the patches
(9x the input) become transform coefficients (4x the input). The numpy backend takes it for
3x3 stride-1 filters where it pays (`winograd_pays`: many input channels) or where
`set_algorithm("winograd")` asks; the values match im2col + GEMM to float rounding (tests
compare both with the naive layers).

Two ways to run it:
- fused (`WinogradFused`; the compiled module with vector kernels, and at least a sample
  per thread): each thread takes whole samples and runs the steps above on one
  sample while it is in its cache, channels-last so that the transforms run on vectors of
  channels, with small register-blocked GEMMs instead of library calls
  (`kernels/winograd.pyx`, `kernels/microkernels.h`). The coefficients never go to main
  memory: measured on conv (c) of bench/ (2-core EPYC Zen 5, AVX-512), fwd+bwd 8.5-10 ms
  against 23-25 ms chunked. With AVX-512 kernels it needs no cap on the workspace: with 12
  and 23 MB per thread (64 channels at 56x56, 32 at 112x112) it still took 0.5-0.6x the
  chunked time. With AVX2 kernels (Zen 2/3) it pays only while a thread's bytes per sample
  stay near its L2 (`AVX2_FUSED_MAX_BYTES`, `WinogradFused.pays`).
- chunked (`WinogradChunked`: `forward`, `backward`): each step over a whole batch chunk,
  with the library's batched GEMM; used by the NumPy fallback, for batches smaller than the
  thread count, and when the fused workspace would not fit the memory budget.
"""

from __future__ import annotations

from ..kernels import reference
from . import conv, scratch


def sample_bytes(C, F, H, W, pad, itemsize):
    """Scratch bytes per sample: the backward pass holds V, dV and dM at once."""
    th, tw = reference.winograd_tiles(H, W, pad)
    return 16 * th * tw * (2 * C + F) * itemsize


#: With AVX2 kernels the fused path is taken by default only while the bytes each thread
#: works through per sample, its workspace (sized for backward) and the transformed filters
#: U (16*F*C) that every sample reads again, stay within this. Measured (2-core EPYC Zen 2/3,
#: 512 KiB L2, float32, fwd+bwd, fused/chunked time): 0.51-0.84 for the eight shapes of
#: 1.5-5.3 MiB (64-256 channels and filters at 8x8 to 32x32), 1.02-1.27 for the four of
#: 6.6-9.6 MiB (256 -> 256 at 4x4 and 8x8, 128 -> 256 at 16x16, 128 -> 128 at 32x32).
#: With AVX-512 kernels (Zen 5) the fused path was the faster without a cap (module
#: docstring).
AVX2_FUSED_MAX_BYTES = 6 * 2**20

#: Whether the fused path may run: None (the default) where it pays (`WinogradFused.pays`);
#: True wherever it applies (tests, experiments on other CPUs); False never (tests run the
#: chunked path with compiled transforms).
fused_enabled = None


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
        V, M = scratch.arrays(be, x.dtype, (16, C, T), (16, F, T))
        be.winograd_input(x[part], pad, V)
        be.matmul(U, V, out=M)
        be.winograd_output(M, b, out[part])
    return out


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
        V, dM, dV = scratch.arrays(be, x.dtype, (16, C, T), (16, F, T),
                                    (16, C, T) if need_dx else (0,))
        be.winograd_input(x[part], pad, V)
        be.winograd_output_grad(dout[part], dM)
        if part.start == 0:
            be.matmul(dM, V.transpose(0, 2, 1), out=dU)
        else:
            dU += be.matmul(dM, V.transpose(0, 2, 1))
        if need_dx:
            be.matmul(U_t, dM, out=dV)
            be.winograd_input_grad(dV, pad, dx[part])
    return dx, reference.winograd_filter_grad(xp, dU)


def winograd_pays(C, outputs, fused):
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


class WinogradChunked(conv.ConvAlgorithm):
    """'winograd': each step over a batch chunk with the library's batched GEMM."""

    name = "winograd"
    # no cache-sized cap: the thin GEMMs (inner dimension C) lose more speed on small chunks
    # than the transforms gain from the cache (measured on conv (c) of bench/)
    cache_sized = False

    def applies(self, call):
        return call.stride == 1 and (call.HH, call.WW) == (3, 3)

    def chunk_bytes(self, call):
        sample = sample_bytes(call.C, call.F, call.H, call.W, call.pad, call.itemsize)
        if not self.be.winograd_compiled:
            sample *= scratch.REFERENCE_OVERHEAD
        return sample, fixed_bytes(call.C, call.F, call.itemsize)

    def forward(self, x, w, b, call):
        parts = self.parts(call)
        return forward(self.be, x, w, b, call.pad, parts), parts

    def backward(self, dout, ctx, need_dx):
        return backward(self.be, dout, ctx.x, ctx.w, ctx.pad, ctx.parts, need_dx)


class WinogradFused(conv.ConvAlgorithm):
    """'winograd-fused': per sample in each thread's cache, channels-last (module docstring)."""

    name = "winograd-fused"
    chunked = False

    def _workspace(self, call, backward):
        """Elements of one thread's workspace row."""
        return self.be.winograd_fused.fused_workspace(call.C, call.F, call.H, call.W, call.pad,
                                                      backward)

    def applies(self, call):
        """3x3 stride 1, compiled with vector kernels, and every thread busy."""
        wino = self.be.winograd_fused
        return (call.stride == 1 and (call.HH, call.WW) == (3, 3)
                and fused_enabled is not False
                and wino is not None and call.N >= wino.max_threads())

    def pays(self, call):
        """Whether 'auto' takes this path where it applies: with AVX-512 kernels, or AVX2 ones
        within `AVX2_FUSED_MAX_BYTES`; the baseline 16-byte kernels were not
        measured and leave it to the chunked path."""
        kernel = self.be.fused_kernel
        per_sample = (self._workspace(call, True) + 16 * call.F * call.C) * call.itemsize
        return kernel == "avx512" or (kernel == "avx2" and per_sample <= AVX2_FUSED_MAX_BYTES)

    def scratch_bytes(self, call):
        """A workspace row per thread, sized for backward (the larger), the arena's alignment
        and the per-call arrays."""
        return (self.be.winograd_fused.max_threads() * self._workspace(call, True)
                * call.itemsize + 64 + fixed_bytes(call.C, call.F, call.itemsize))

    def forward(self, x, w, b, call):
        be, wino = self.be, self.be.winograd_fused
        ws, = scratch.arrays(be, x.dtype, (wino.max_threads(), self._workspace(call, False)))
        U_t = be.xp.ascontiguousarray(reference.winograd_filter(be.xp, w).transpose(0, 2, 1))
        out = be.xp.empty((call.N, call.F, call.Ho, call.Wo), dtype=x.dtype)
        return wino.winograd_conv_forward(x, U_t, b, call.pad, out, ws), None

    def backward(self, dout, ctx, need_dx):
        be, wino = self.be, self.be.winograd_fused
        x, w = ctx.x, ctx.w
        call = conv.ConvCall.of(x, w, 1, ctx.pad, *dout.shape[2:])
        ws, = scratch.arrays(be, x.dtype, (wino.max_threads(), self._workspace(call, True)))
        dx = be.xp.empty_like(x) if need_dx else None
        dU = wino.winograd_conv_backward(dout, x, reference.winograd_filter(be.xp, w), ctx.pad,
                                         dx, ws)
        return dx, reference.winograd_filter_grad(be.xp, dU)
