"""The numpy backend's im2col algorithms: 'im2col', 'im2col-pairs' (chunked) and 'im2col-fused'.

Chunked: im2col into reused buffers, one GEMM per chunk.

A chunk of n samples unfolds into patches laid out (K, n, P), K = C*HH*WW rows and P = Ho*Wo
columns per sample, so each pass is one large GEMM over n*P columns instead of n thin ones
(BLAS runs much faster on one (F, K) x (K, n*P) product):

    forward   rows = w (F, K) @ cols (K, n*P);  out = NCHW of rows, + b (one kernel)
    backward  rows = dout as (F, n*P);  dw += rows @ cols^T;  dx = col2im(w^T @ rows)

Output pairs: with few filters the GEMM's short side is F, and BLAS runs a 32-row product
at about two thirds of the speed of a 64-row one here (bench/: 62 vs 100 GFLOP/s for conv
(b)'s shapes). Such layers compute two vertically adjacent outputs per patch column: the
window grows by one stride (HH + S rows), patch rows step 2S, and the filter matrix stacks
every filter twice, the second copy shifted down S rows, as (2F, C*(HH + S)*WW). The GEMM
gets 2F rows and the patches shrink to (HH + S)/(2 HH) of their size, for (HH + S)/HH of
the multiply-adds (8/7 for the course's 7x7 filters). Patch rows stay contiguous, so
im2col keeps its block copies.

Buffers come from `scratch`; chunks (`parts`) are sized to the memory budget.

Fused (`Im2colFused`; the compiled module with vector GEMMs): each thread takes whole
samples, builds one sample's patches in its cache and multiplies them there with the small
register-blocked GEMMs of `microkernels.h`, writing NCHW output directly. With fewer samples
than threads the forward takes blocks of a sample's output rows instead (one image: 7x7
3->32 at 32x32 in 0.09-0.12 ms on 2 cores against 0.17-0.19 ms on one).

Measured against the chunked path, fwd+bwd, on 2 cores of an AVX-512 EPYC (Zen 5): 0.5-0.6x
the time for conv (a) and (b) of bench/ (patches of 0.1-0.7 MB per thread), 0.5x for a 5x5
32->64 layer (1 MB), 0.78x with 7 MB per thread, 1.6x with 15 MB: hence `FUSED_MAX_BYTES`.
On an AVX2 EPYC (Zen 2/3): 0.52-0.95x on nine shapes up to 5 MB per thread (`FUSED_PAYS`);
with the 16-byte baseline kernels it was not measured and is left to the chunked path.
"""

from __future__ import annotations

from . import conv, scratch

#: Layers with at most this many filters compute output pairs (when the shape allows).
PAIRS_MAX_FILTERS = 32


def outputs_per_column(F, HH, stride, Ho):
    """2 (output pairs) where they pay, else 1: few filters, a window at least four strides
    tall (the taller window adds at most a quarter of the work) and an even Ho."""
    return 2 if F <= PAIRS_MAX_FILTERS and HH >= 4 * stride and Ho % 2 == 0 else 1


def _geometry(w_shape, stride, Ho, Wo, q):
    """(window height, (row, column) strides, K, P) of the patches, q outputs per column."""
    F, C, HH, WW = w_shape
    HHq = HH + (q - 1) * stride
    return HHq, (q * stride, stride), C * HHq * WW, (Ho // q) * Wo


def sample_bytes(w_shape, stride, Ho, Wo, q, itemsize):
    """Scratch bytes per sample: the backward pass holds patches, their gradient and dout."""
    _, _, K, P = _geometry(w_shape, stride, Ho, Wo, q)
    return (2 * K + q * w_shape[0]) * P * itemsize


def fixed_bytes(w_shape, stride, q, itemsize):
    """Bytes per call beside the per-sample scratch: the stacked filters, their gradient, its
    per-chunk term and the folded result (each at most q*F*K), and the views' alignment."""
    F, C, HH, WW = w_shape
    K = C * (HH + (q - 1) * stride) * WW
    return 4 * q * F * K * itemsize + 256


#: The largest per-thread workspace (patches, their gradient, dout^T, dw^T) of the fused path.
FUSED_MAX_BYTES = 8 * 2**20

#: The fused kernels' instruction sets (`NumpyBackend.fused_kernel`) with which the fused
#: path was measured faster than the chunked one, and so taken by default. AVX2 (2-core
#: EPYC Zen 2/3, 512 KiB L2, float32, fwd+bwd): 0.52-0.95 of the chunked time on all nine
#: shapes tried, workspaces 0.2-5 MB per thread (7x7 3->32 at 32x32 0.70, 5x5 64->64 at
#: 16x16 0.52, 4x4 stride-2 64->128 and 128->256 0.84). Baseline 16-byte vectors: not
#: measured, so left to the chunked path.
FUSED_PAYS = ("avx512", "avx2")

#: Whether the fused path may run: None (the default) where it pays (`Im2colFused.pays`);
#: True wherever it applies (tests, experiments on other CPUs); False never (tests run the
#: chunked path with compiled kernels).
fused_enabled = None


def _stacked_weights(xp, w, stride, q):
    """w (F, C, HH, WW) -> (q*F, C*(HH + (q-1)*stride)*WW): copy s shifted down s strides."""
    F, C, HH, WW = w.shape
    if q == 1:
        return w.reshape(F, -1)
    wq = xp.zeros((q, F, C, HH + (q - 1) * stride, WW), dtype=w.dtype)
    for s in range(q):
        wq[s, :, :, s * stride:s * stride + HH] = w
    return wq.reshape(q * F, -1)


def _folded(dwq, w_shape, stride, q):
    """Adjoint of `_stacked_weights`: (q*F, K) -> dw (F, C, HH, WW)."""
    F, C, HH, WW = w_shape
    if q == 1:
        return dwq.reshape(w_shape)
    dwq = dwq.reshape(q, F, C, HH + (q - 1) * stride, WW)
    dw = dwq[0, :, :, :HH].copy()
    for s in range(1, q):
        dw += dwq[s, :, :, s * stride:s * stride + HH]
    return dw


def forward(be, x, w, b, stride, pad, parts, Ho, Wo, q=1):
    """x (N, C, H, W) C-contiguous, w (F, C, HH, WW), b (F,) -> out (N, F, Ho, Wo)."""
    xp = be.xp
    F, WW = w.shape[0], w.shape[3]
    HHq, strides, K, P = _geometry(w.shape, stride, Ho, Wo, q)
    wq = _stacked_weights(xp, w, stride, q)
    out = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)
    for part in parts:
        n = part.stop - part.start
        cols, rows = scratch.arrays(be, x.dtype, (K, n, P), (q * F, n * P))
        be.im2col(x[part], HHq, WW, pad, strides, out=cols.transpose(1, 0, 2))
        be.matmul(wq, cols.reshape(K, n * P), out=rows)
        be.rows_to_nchw(rows, b, out[part], q)
    return out


def backward(be, dout, x, w, stride, pad, parts, q=1, need_dx=True):
    """Gradients of `forward` for dout (N, F, Ho, Wo) C-contiguous: dx (or None), dw.

    Each chunk's patches are recomputed: rebuilt in cache, they cost less than kept ones
    coming back from main memory.
    """
    xp = be.xp
    F, WW = w.shape[0], w.shape[3]
    HHq, strides, K, P = _geometry(w.shape, stride, *dout.shape[2:], q)
    wq = _stacked_weights(xp, w, stride, q)
    dwq = xp.empty((q * F, K), dtype=x.dtype)
    dx = xp.empty_like(x) if need_dx else None
    for part in parts:
        n = part.stop - part.start
        cols, rows, dcols = scratch.arrays(be, x.dtype, (K, n, P), (q * F, n * P),
                                            (K, n, P) if need_dx else (0,))
        be.im2col(x[part], HHq, WW, pad, strides, out=cols.transpose(1, 0, 2))
        be.nchw_to_rows(dout[part], rows, q)
        # dw += sum over the chunk of dout_n @ cols_n.T: one GEMM over n*P
        if part.start == 0:
            be.matmul(rows, cols.reshape(K, n * P).T, out=dwq)
        else:
            dwq += be.matmul(rows, cols.reshape(K, n * P).T)
        if need_dx:
            be.matmul(wq.T, rows, out=dcols.reshape(K, n * P))
            be.col2im(dcols.transpose(1, 0, 2), x[part].shape, HHq, WW, pad, strides,
                      out=dx[part])
    return dx, _folded(dwq, w.shape, stride, q)


class Im2colChunked(conv.ConvAlgorithm):
    """'im2col': im2col + one GEMM per batch chunk (`forward`, `backward` above)."""

    name = "im2col"
    #: Outputs per patch column: 1, or 2 for vertical output pairs.
    q = 1

    def chunk_bytes(self, call):
        sample = sample_bytes(call.w_shape, call.stride, call.Ho, call.Wo, self.q, call.itemsize)
        if not self.be.im2col_compiled:
            sample *= scratch.REFERENCE_OVERHEAD
        return sample, fixed_bytes(call.w_shape, call.stride, self.q, call.itemsize)

    def forward(self, x, w, b, call):
        parts = self.parts(call)
        return forward(self.be, x, w, b, call.stride, call.pad, parts, call.Ho, call.Wo,
                       self.q), parts

    def backward(self, dout, ctx, need_dx):
        return backward(self.be, dout, ctx.x, ctx.w, ctx.stride, ctx.pad, ctx.parts, self.q,
                        need_dx)


class Im2colPairs(Im2colChunked):
    """'im2col-pairs': chunked im2col computing two vertical outputs per patch column, for
    layers with few filters (`outputs_per_column`)."""

    name = "im2col-pairs"
    q = 2

    def applies(self, call):
        return outputs_per_column(call.F, call.HH, call.stride, call.Ho) == 2


class Im2colFused(conv.ConvAlgorithm):
    """'im2col-fused': per sample in each thread's cache (see the module docstring)."""

    name = "im2col-fused"
    chunked = False

    def _workspace(self, call, backward, pool=False):
        """Elements of one thread's workspace row (`pool`: through a max pool)."""
        return self.be.im2col_fused.fused_workspace(call.C, call.F, call.HH, call.WW, call.Ho,
                                                    call.Wo, backward, pool)

    def applies(self, call):
        """Compiled vector GEMMs and a thread's workspace (sized for backward, the larger)
        within `FUSED_MAX_BYTES`. With fewer samples than threads the forward splits each
        sample into blocks of output rows (an app's one image still runs on every core) and
        the backward is the chunked one's (`backward`)."""
        mod = self.be.im2col_fused
        if fused_enabled is False or mod is None:
            return False
        return self._workspace(call, True) * call.itemsize <= FUSED_MAX_BYTES

    def pays(self, call):
        """Whether 'auto' takes this path where it applies: with the kernels of `FUSED_PAYS`."""
        return self.be.fused_kernel in FUSED_PAYS

    def scratch_bytes(self, call):
        """All threads' workspaces (+ 64 bytes of arena alignment) and the per-call arrays."""
        return (self.be.im2col_fused.max_threads() * self._workspace(call, True)
                * call.itemsize + 64 + fixed_bytes(call.w_shape, call.stride, 1, call.itemsize))

    def forward(self, x, w, b, call):
        be, mod = self.be, self.be.im2col_fused
        ws, = scratch.arrays(be, x.dtype, (mod.max_threads(), self._workspace(call, False)))
        out = be.xp.empty((call.N, call.F, call.Ho, call.Wo), dtype=x.dtype)
        return mod.conv_forward_fused(x, be.xp.ascontiguousarray(w), b, call.pad, call.stride,
                                      out, ws), None

    def pools(self, call, pool):
        """2x2 stride-2 windows tiling an even output (ThreeLayerConvNet's conv-ReLU-pool):
        the pool reads each block of output rows from the thread's workspace."""
        return tuple(pool) == (2, 2, 2) and call.Ho % 2 == 0 and call.Wo % 2 == 0

    def forward_maxpool(self, x, w, b, call, relu):
        be, mod = self.be, self.be.im2col_fused
        ws, = scratch.arrays(be, x.dtype, (mod.max_threads(), self._workspace(call, False, True)))
        shape = (call.N, call.F, call.Ho // 2, call.Wo // 2)
        out, argmax = be.xp.empty(shape, dtype=x.dtype), be.xp.empty(shape, dtype=be.xp.int64)
        return mod.conv_maxpool_forward_fused(x, be.xp.ascontiguousarray(w), b, call.pad,
                                              call.stride, out, argmax, ws, relu)

    def maxpool_gradients(self, dout, argmax, conv_shape, pool, keep, ctx, need_dx):
        """The pool's gradient routed per sample in the thread's workspace, not through a
        conv_shape array in main memory (as `gradients`, with whole samples only)."""
        be, mod = self.be, self.be.im2col_fused
        x, w = ctx.x, ctx.w
        call = conv.ConvCall.of(x, w, ctx.stride, ctx.pad, *conv_shape[2:])
        row = self._workspace(call, True, True)
        threads = mod.max_threads()
        # scratch_bytes holds the plain backward's rows; each pooled row is longer
        extra = threads * (row - self._workspace(call, True)) * call.itemsize
        if call.N < threads or row * call.itemsize > FUSED_MAX_BYTES or (
                self.scratch_bytes(call) + extra > conv.settings.memory_budget):
            return super().maxpool_gradients(dout, argmax, conv_shape, pool, keep, ctx, need_dx)
        ws, = scratch.arrays(be, x.dtype, (threads, row))
        dx = be.xp.empty_like(x) if need_dx else None
        dw, db = mod.conv_backward_fused(dout, x, be.xp.ascontiguousarray(w), ctx.pad,
                                         ctx.stride, dx, ws, argmax=argmax, keep=keep)
        return dx, dw, db

    def backward(self, dout, ctx, need_dx):
        dx, dw, _ = self.gradients(dout, ctx, need_dx)
        return dx, dw

    def gradients(self, dout, ctx, need_dx):
        """dx, dw and db, the fused kernel summing db as it transposes dout."""
        be, mod = self.be, self.be.im2col_fused
        x, w = ctx.x, ctx.w
        call = conv.ConvCall.of(x, w, ctx.stride, ctx.pad, *dout.shape[2:])
        if call.N < mod.max_threads():
            # The fused backward takes whole samples (its col2im would sum rows shared by
            # two blocks), so here it would leave threads idle; the chunked GEMMs split
            # large products instead. One sample, fused/chunked: 0.9x for 7x7 3->32 at
            # 32x32, 1.2x for 5x5 64->64 at 16x16, 1.7x for 4x4 stride-2 64->128 at 32x32.
            chunked = be.conv_algorithms()["im2col"]
            return chunked.gradients(dout, ctx._replace(parts=chunked.parts(call)), need_dx)
        ws, = scratch.arrays(be, x.dtype, (mod.max_threads(), self._workspace(call, True)))
        dx = be.xp.empty_like(x) if need_dx else None
        dw, db = mod.conv_backward_fused(dout, x, be.xp.ascontiguousarray(w), ctx.pad,
                                         ctx.stride, dx, ws)
        return dx, dw, db
