# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels for the `numpy` backend: im2col/col2im and max/average pooling.

Built as `dualnet.kernels._im2col`. The layouts are those of `dualnet/kernels/reference.py`
(the spec), so `NumpyBackend` can swap one for the other:

- `im2col(x (N, C, H, W), HH, WW, pad, stride) -> cols (N, C*HH*WW, Ho*Wo)`, rows (c, hh, ww);
  `stride` an int or a (rows, columns) pair, here and in col2im.
- `col2im(cols, x_shape, HH, WW, pad, stride) -> dx (N, C, H, W)`, overlaps summed.
- `maxpool_forward(x, ph, pw, stride) -> out, argmax (N, C, Ho, Wo)`, argmax int64 into the
  (H, W) plane, first maximum on ties (and the first NaN, like `numpy.argmax`).
- `maxpool_backward(dout, argmax, x_shape, ph, pw, stride) -> dx (N, C, H, W)`.
- `avgpool_forward/avgpool_backward` likewise, without argmax.
- `rows_to_nchw(rows, bias, out, q)` / `nchw_to_rows(dout, rows, q)`: the fast convolution's
  GEMM rows (q*F, N*(Ho/q)*Wo) to NCHW (N, F, Ho, Wo) plus bias, and back.
- `conv_forward_fused` / `conv_backward_fused`: a whole convolution, one sample per thread at a
  time: its patches in the thread's cache and the small GEMMs of `microkernels.h`.

Every kernel works on whole (n, c) planes, one plane per loop iteration, and those iterations
run in parallel under OpenMP when the extension was built with it. Sums into one plane happen
in a fixed order inside one thread, so results are deterministic and need no atomics; col2im
and maxpool_backward add in the same order as the reference and so match it bit for bit.
float32 stays float32 (fused types); inputs must be C-contiguous (the layers ensure it).
"""

import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from dualnet.kernels.microkernels cimport (
    dn_gemm,
    dn_kernel,
    dn_max_threads,
    dn_select,
    dn_use,
)

# The SHA-256 of this file as it was compiled, defined by setup.py (empty when built another
# way): dualnet.backend compares it with the installed source and refuses a stale build.
cdef extern from *:
    """
    #ifndef DUALNET_SOURCE_SHA256
    #define DUALNET_SOURCE_SHA256 ""
    #endif
    """
    const char *DUALNET_SOURCE_SHA256

SOURCE_SHA256 = DUALNET_SOURCE_SHA256.decode("ascii")


ctypedef fused floating:
    float
    double


dn_select()
FUSED_KERNEL = dn_kernel.decode("ascii")
"""The instruction set of the fused convolution's GEMMs (see `microkernels.h`): 'avx512',
'avx2', 'vector', or 'scalar' (no fused kernels in this build)."""


def use_gemm_kernel(name):
    """Run the fused convolution's GEMMs with instruction set `name` from now on (tests check
    every one this CPU has); returns whether this CPU and build have it."""
    return bool(dn_use(name.encode("ascii")))



# -- helpers ------------------------------------------------------------------------------
cdef inline Py_ssize_t _out_size(Py_ssize_t size, Py_ssize_t window, Py_ssize_t pad,
                                 Py_ssize_t stride) noexcept nogil:
    return (size + 2 * pad - window) // stride + 1


cdef inline void _valid_range(Py_ssize_t offset, Py_ssize_t size, Py_ssize_t n_out,
                              Py_ssize_t stride, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Output positions o in [lo, hi) whose input index o*stride + offset lies in [0, size).

    Computing the range once per row keeps the bounds test out of the innermost loop.
    """
    cdef Py_ssize_t a = 0, b
    if offset < 0:
        a = (-offset + stride - 1) // stride
    b = (size - offset + stride - 1) // stride if size > offset else 0
    if b > n_out:
        b = n_out
    if a > b:
        a = b
    lo[0] = a
    hi[0] = b


def _check(name, a, ndim):
    """Real exceptions, not asserts: kernels read raw memory."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")


def _check_like(name, a, shape, dtype):
    """`_check`, and a must have this shape and dtype."""
    _check(name, a, len(shape))
    if a.shape != tuple(shape) or a.dtype != dtype:
        raise ValueError(f"{name} must be {tuple(shape)} of dtype {dtype}, "
                         f"got {a.shape} {a.dtype}")


def _check_geometry(size, window, pad, stride, what):
    if window < 1 or stride < 1 or pad < 0 or size + 2 * pad < window:
        raise ValueError(f"bad {what} geometry: size {size}, window {window}, pad {pad}, "
                         f"stride {stride}")


# -- im2col / col2im -----------------------------------------------------------------------
cdef void _im2col_plane(const floating *x, floating *cols, Py_ssize_t rs, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t r0, Py_ssize_t r1,
                        Py_ssize_t Wo) noexcept nogil:
    """Output rows [r0, r1) of one (H, W) plane -> its HH*WW rows of (r1 - r0)*Wo columns,
    `rs` elements apart, padding zeros (r0 = 0, r1 = Ho: the whole plane).

    Stride 1 with "same" width (Wo == W): a window offset shifts the whole plane by a constant
    (di*W + dj), so each row of cols is one block copy, after which the few columns that
    wrapped around a plane row (|dj| of them per output row) are zeroed. Other geometries copy
    one output row at a time.
    """
    cdef Py_ssize_t i, j, ho, wo, h, wo_lo, wo_hi, ho_lo, ho_hi, shift, k_lo, k_hi
    cdef Py_ssize_t R = r1 - r0, base = r0 * Wo  # dst[k - base] holds output position k
    cdef const floating *src
    cdef floating *dst
    cdef bint block = sh == 1 and sw == 1 and Wo == W
    for i in range(HH):
        _valid_range(i - pad, H, r1, sh, &ho_lo, &ho_hi)
        if ho_lo < r0:
            ho_lo = r0
        if ho_hi < ho_lo:
            ho_hi = ho_lo
        for j in range(WW):
            _valid_range(j - pad, W, Wo, sw, &wo_lo, &wo_hi)
            dst = cols + (i * WW + j) * rs
            if ho_lo >= ho_hi or wo_lo >= wo_hi:
                memset(dst, 0, R * Wo * sizeof(floating))
                continue
            if ho_lo > r0:
                memset(dst, 0, (ho_lo - r0) * Wo * sizeof(floating))
            if ho_hi < r1:
                memset(dst + ho_hi * Wo - base, 0, (r1 - ho_hi) * Wo * sizeof(floating))
            if block:
                # dst[k - base] = x[k + shift] for k in rows [ho_lo, ho_hi), clipped to the
                # plane
                shift = (i - pad) * W + (j - pad)
                k_lo = ho_lo * Wo + wo_lo
                k_hi = (ho_hi - 1) * Wo + wo_hi
                memcpy(dst + k_lo - base, x + k_lo + shift, (k_hi - k_lo) * sizeof(floating))
                for ho in range(ho_lo - r0, ho_hi - r0):
                    for wo in range(wo_lo):
                        dst[ho * Wo + wo] = 0
                    for wo in range(wo_hi, Wo):
                        dst[ho * Wo + wo] = 0
                continue
            for ho in range(ho_lo, ho_hi):
                h = ho * sh + i - pad
                # columns wo map to input w = wo*sw + j - pad
                src = x + h * W + j - pad
                if wo_lo > 0:
                    memset(dst + ho * Wo - base, 0, wo_lo * sizeof(floating))
                if sw == 1:
                    memcpy(dst + ho * Wo - base + wo_lo, src + wo_lo,
                           (wo_hi - wo_lo) * sizeof(floating))
                else:
                    for wo in range(wo_lo, wo_hi):
                        dst[ho * Wo - base + wo] = src[wo * sw]
                if wo_hi < Wo:
                    memset(dst + ho * Wo - base + wo_hi, 0, (Wo - wo_hi) * sizeof(floating))


cdef void _col2im_plane(const floating *cols, floating *dx, Py_ssize_t rs, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t Ho,
                        Py_ssize_t Wo) noexcept nogil:
    """Adjoint of `_im2col_plane`: sums the HH*WW rows back into one zeroed (H, W) plane.

    Window offsets are visited in (i, j) order, the reference's order, so each dx element
    receives its terms in the same sequence there and here.
    """
    cdef Py_ssize_t i, j, ho, wo, h, wo_lo, wo_hi, ho_lo, ho_hi
    cdef const floating *src
    cdef floating *dst
    memset(dx, 0, H * W * sizeof(floating))
    for i in range(HH):
        _valid_range(i - pad, H, Ho, sh, &ho_lo, &ho_hi)
        for j in range(WW):
            _valid_range(j - pad, W, Wo, sw, &wo_lo, &wo_hi)
            for ho in range(ho_lo, ho_hi):
                h = ho * sh + i - pad
                src = cols + (i * WW + j) * rs + ho * Wo
                dst = dx + h * W + j - pad
                if sw == 1:  # a separate loop the compiler can vectorize
                    for wo in range(wo_lo, wo_hi):
                        dst[wo] += src[wo]
                else:
                    for wo in range(wo_lo, wo_hi):
                        dst[wo * sw] += src[wo]


def _im2col_fused(const floating[:, :, :, ::1] x, floating[:, :, :] cols,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad, Py_ssize_t sh,
                  Py_ssize_t sw):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = _out_size(H, HH, pad, sh), Wo = _out_size(W, WW, pad, sw)
    cdef Py_ssize_t rs = cols.strides[1] // sizeof(floating)
    cdef Py_ssize_t plane, n, c
    for plane in prange(N * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        _im2col_plane(&x[n, c, 0, 0], &cols[n, c * HH * WW, 0], rs, H, W, HH, WW, pad,
                      sh, sw, 0, Ho, Wo)


def _col2im_fused(const floating[:, :, :] cols, floating[:, :, :, ::1] dx,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad, Py_ssize_t sh,
                  Py_ssize_t sw):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho = _out_size(H, HH, pad, sh), Wo = _out_size(W, WW, pad, sw)
    cdef Py_ssize_t rs = cols.strides[1] // sizeof(floating)
    cdef Py_ssize_t plane, n, c
    for plane in prange(N * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        _col2im_plane(&cols[n, c * HH * WW, 0], &dx[n, c, 0, 0], rs, H, W, HH, WW, pad,
                      sh, sw, Ho, Wo)


def _strides(stride):
    """An int (both axes) or a (rows, columns) pair -> (sh, sw)."""
    if isinstance(stride, tuple):
        return int(stride[0]), int(stride[1])
    return int(stride), int(stride)


def _window_shape(x_shape, HH, WW, pad, stride, layer):
    N, C, H, W = (int(s) for s in x_shape)
    sh, sw = _strides(stride)
    _check_geometry(H, HH, pad, sh, f"{layer} height")
    _check_geometry(W, WW, pad, sw, f"{layer} width")
    return N, C, H, W, _out_size(H, HH, pad, sh), _out_size(W, WW, pad, sw)


def _check_cols(name, cols, shape, dtype):
    """A (N, K, P) patch array: any strides on the first two axes, the last contiguous."""
    if not isinstance(cols, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(cols).__name__}")
    if cols.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {cols.dtype}")
    if cols.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {cols.shape}")
    if cols.shape[2] > 1 and cols.strides[2] != cols.itemsize:
        raise ValueError(f"{name} must be contiguous along its last axis")


def im2col(x, HH, WW, pad, stride, out=None):
    """x (N, C, H, W) -> cols (N, C*HH*WW, Ho*Wo) in x's dtype.

    Row c*HH*WW + i*WW + j, column ho*Wo + wo holds x[n, c, ho*sh + i - pad, wo*sw + j - pad]
    (zero outside the input), `stride` being an int (sh = sw) or a pair (sh, sw). Returned
    C-contiguous, or written into `out`: an array of that shape and dtype whose last axis is
    contiguous (its first two axes may have any strides, e.g. a transposed view of a
    (C*HH*WW, N, Ho*Wo) buffer).
    """
    _check("im2col: x", x, 4)
    N, C, H, W, Ho, Wo = _window_shape(x.shape, HH, WW, pad, stride, "im2col")
    shape = (N, C * HH * WW, Ho * Wo)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        _check_cols("im2col: out", out, shape, x.dtype)
    if out.size:
        _im2col_fused(x, out, HH, WW, pad, *_strides(stride))
    return out


def col2im(cols, x_shape, HH, WW, pad, stride, out=None):
    """Adjoint of `im2col`: cols (N, C*HH*WW, Ho*Wo) -> dx (N, C, H, W), overlaps summed.

    cols needs only a contiguous last axis. `out`, when given, is a C-contiguous
    (N, C, H, W) array of cols' dtype that receives dx (and is returned).
    """
    if not isinstance(cols, np.ndarray) or cols.ndim != 3:
        _check("col2im: cols", cols, 3)
    N, C, H, W, Ho, Wo = _window_shape(x_shape, HH, WW, pad, stride, "col2im")
    if cols.dtype != np.float32 and cols.dtype != np.float64:
        raise TypeError(f"col2im: cols must be float32 or float64, got {cols.dtype}")
    if cols.shape != (N, C * HH * WW, Ho * Wo):
        raise ValueError(f"col2im: cols must have shape {(N, C * HH * WW, Ho * Wo)} for "
                         f"x_shape {(N, C, H, W)}, got {cols.shape}")
    _check_cols("col2im: cols", cols, cols.shape, cols.dtype)
    if out is None:
        out = np.empty((N, C, H, W), dtype=cols.dtype)
    else:
        _check("col2im: out", out, 4)
        if out.shape != (N, C, H, W) or out.dtype != cols.dtype:
            raise ValueError(f"col2im: out must be a {cols.dtype} array of shape "
                             f"{(N, C, H, W)}, got {out.dtype} {out.shape}")
    if out.size:
        _col2im_fused(cols, out, HH, WW, pad, *_strides(stride))
    return out


# -- GEMM rows <-> NCHW ---------------------------------------------------------------------
# The fast convolution's GEMMs hold a chunk's outputs as rows: (q*F, N*(Ho/q)*Wo), row s*F + f
# holding filter f's output rows q*hp + s (hp = 0 .. Ho/q - 1) one sample after another; q is
# 1, or 2 when the host convolution computes vertical output pairs (`backends/host_im2col.py`).
# -- fused convolution ---------------------------------------------------------------------
# Per sample, in the thread's workspace row (K = C*HH*WW, P = Ho*Wo):
#   forward   cols (K, P) = im2col(x[n]);  y[n] (F, P) = bias + w (F, K) @ cols
#   backward  cols again;  dyt (P, F) = dout[n]^T;  dWt (K, F) += cols @ dyt   (per thread)
#             db (F,) += dout[n] summed per filter while it is transposed        (per thread)
#             dcols (K, P) = w^T @ dout[n] (into cols);  dx[n] = col2im(dcols)
# The output is NCHW as the GEMM writes it, and nothing but x, dout and the results crosses
# main memory. cols' rows lie `_cols_stride(P)` elements apart, not P: the GEMMs walk down its
# columns, and with P a multiple of 1024 (32x32 outputs) rows 4 KiB apart all fall in the
# same L1 sets, which hold 8 lines (7x7 3->32 at 32x32 forward: 7.3-7.8 ms at stride P,
# 6.0 ms at P + 16, 2-core AVX2 EPYC).
cdef inline Py_ssize_t _cols_stride(Py_ssize_t P) noexcept nogil:
    return P + 16


cdef extern from *:
    """
    /* sum of x[0 .. n) in vector lanes (another order than NumPy's pairwise sum: the same
       to rounding): one plane of dout, the bias gradient's share of one sample and filter. */
    #define DN_SUM(T, SUFFIX)                                                                \
    static inline T dn_sum_##SUFFIX(const T *x, Py_ssize_t n) {                              \
        T s = 0;                                                                            \
        _Pragma("omp simd reduction(+:s)")                                                  \
        for (Py_ssize_t i = 0; i < n; i++)                                                  \
            s += x[i];                                                                      \
        return s;                                                                           \
    }
    DN_SUM(float, f)
    DN_SUM(double, d)
    """
    float dn_sum_f(const float *x, Py_ssize_t n) noexcept nogil
    double dn_sum_d(const double *x, Py_ssize_t n) noexcept nogil


cdef inline floating dn_sum(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return dn_sum_f(x, n)
    else:
        return dn_sum_d(x, n)


cdef inline void _conv_rows(const floating *x, const floating *w2, const floating *bias,
                            floating *cols, Py_ssize_t RS, floating *dst, Py_ssize_t ldc,
                            Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t F,
                            Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad, Py_ssize_t stride,
                            Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t Wo) noexcept nogil:
    """Output rows [r0, r1) of one sample x (C, H, W): its patches into the thread's cols
    (rows RS apart), then dst (F, (r1 - r0) * Wo), rows ldc apart, = bias + w2 (F, K) @ cols."""
    cdef Py_ssize_t K = C * HH * WW
    cdef Py_ssize_t c, f, p
    for c in range(C):
        _im2col_plane(x + c * H * W, cols + c * HH * WW * RS, RS, H, W, HH, WW, pad, stride,
                      stride, r0, r1, Wo)
    for f in range(F):
        for p in range((r1 - r0) * Wo):
            dst[f * ldc + p] = bias[f]
    dn_gemm(F, (r1 - r0) * Wo, K, w2, K, 1, cols, RS, dst, ldc, 1)


def _conv_forward_fused(const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
                        const floating[::1] bias, floating[:, :, ::1] y, floating[:, ::1] ws,
                        Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad, Py_ssize_t stride,
                        Py_ssize_t Ho, Py_ssize_t Wo):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w2.shape[0], K = w2.shape[1], P = Ho * Wo, RS = _cols_stride(P)
    cdef int nthreads = ws.shape[0]
    # With fewer samples than threads each sample splits into blocks of output rows, so that
    # one image (an app's latency) still runs on every core.
    cdef Py_ssize_t blocks = 1 if N >= nthreads else (nthreads + N - 1) // N
    cdef Py_ssize_t rows = (Ho + blocks - 1) // blocks
    cdef floating *cols = NULL
    cdef Py_ssize_t item, n, r0, r1
    blocks = (Ho + rows - 1) // rows  # rows rounded up: fewer blocks may cover Ho
    with nogil, parallel(num_threads=nthreads):
        cols = &ws[threadid(), 0]
        for item in prange(N * blocks, schedule="static"):
            n = item // blocks
            r0 = item % blocks * rows
            r1 = r0 + rows if r0 + rows < Ho else Ho
            _conv_rows(&x[n, 0, 0, 0], &w2[0, 0], &bias[0], cols, RS, &y[n, 0, r0 * Wo], P, C,
                       H, W, F, HH, WW, pad, stride, r0, r1, Wo)


cdef inline void _transpose_planes(const floating *src, floating *dst, Py_ssize_t F,
                                   Py_ssize_t P) noexcept nogil:
    """dst (P, F) = src (F, P)^T, by blocks of 64 columns of src: the 64 rows of dst a
    block writes stay in L1 while every plane's stretch is read (column by column, each
    write would be to another line of a dst larger than L1)."""
    cdef Py_ssize_t p0, p1, f, p
    cdef const floating *g
    for p0 in range(0, P, 64):
        p1 = p0 + 64 if p0 + 64 < P else P
        for f in range(F):
            g = src + f * P
            for p in range(p0, p1):
                dst[p * F + f] = g[p]


def _conv_backward_fused(const floating[:, :, ::1] dy, const floating[:, :, :, ::1] x,
                         const floating[:, ::1] w2, floating[:, :, :, ::1] dx,
                         floating[:, ::1] ws, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad,
                         Py_ssize_t stride, Py_ssize_t Ho, Py_ssize_t Wo, bint need_dx,
                         const int64_t[:, :, ::1] argmax, const floating[:, :, ::1] keep,
                         bint pooled, bint masked):
    """dy (N, F, Ho*Wo), or with `pooled` a max pool's gradient (N, F, Hp*Wp) that each
    sample first routes to its `argmax` positions in the thread's workspace (times
    keep > 0 where `masked`), as `_maxpool_backward_fused` would into main memory (without
    the input gradient, straight into the transposed block the filter gradient's GEMM
    reads), its bias-gradient share summed from the pool's values on the way."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w2.shape[0], K = w2.shape[1], P = Ho * Wo, RS = _cols_stride(P)
    cdef Py_ssize_t Pp = dy.shape[2]
    cdef int nthreads = ws.shape[0]
    cdef floating *dWt = NULL
    cdef floating *cols = NULL
    cdef floating *dyt = NULL
    cdef floating *db = NULL
    cdef floating *routed = NULL
    cdef floating *dst = NULL
    cdef const floating *dn = NULL
    cdef const floating *gp = NULL
    cdef const floating *kp = NULL
    cdef const int64_t *idx = NULL
    cdef Py_ssize_t n, c, f, k, sp, sf
    cdef floating v
    cdef double total
    cdef int t
    # every row's shares of dw and db start at zero, rows of threads that never start
    # included (the OpenMP runtime may give fewer threads than asked; without OpenMP, one)
    for t in range(nthreads):
        memset(&ws[t, 0], 0, K * F * sizeof(floating))
        memset(&ws[t, K * F + K * RS + P * F], 0, F * sizeof(floating))
    with nogil, parallel(num_threads=nthreads):
        dWt = &ws[threadid(), 0]  # (K, F): this thread's share of the filter gradient
        cols = dWt + K * F
        dyt = cols + K * RS
        db = dyt + P * F          # (F,): its share of the bias gradient
        routed = db + F           # (F, P), pooled: this sample's gradient of the conv output
        for n in prange(N, schedule="static"):
            for c in range(C):
                _im2col_plane(&x[n, c, 0, 0], cols + c * HH * WW * RS, RS, H, W, HH, WW, pad,
                              stride, stride, 0, Ho, Wo)
            if pooled:
                # routed into its own (F, P) block where the input gradient's GEMM needs
                # it, else straight into dyt, transposed; db from the pool's values
                dst = routed if need_dx else dyt
                sp = 1 if need_dx else F  # dst's strides along p and along f
                sf = P if need_dx else 1
                memset(dst, 0, F * P * sizeof(floating))
                for f in range(F):
                    gp = &dy[n, f, 0]
                    kp = &keep[n, f, 0] if masked else gp
                    idx = &argmax[n, f, 0]
                    total = 0
                    for k in range(Pp):
                        v = _kept(gp, kp, k, masked)
                        dst[idx[k] * sp + f * sf] += v
                        total = total + v
                    db[f] += <floating>total
                if need_dx:
                    dn = routed
                    _transpose_planes(dn, dyt, F, P)
            else:
                dn = &dy[n, 0, 0]
                _transpose_planes(dn, dyt, F, P)
                for f in range(F):
                    db[f] += dn_sum(dn + f * P, P)
            dn_gemm(K, F, P, cols, RS, 1, dyt, F, dWt, F, 1)
            if need_dx:
                dn_gemm(K, P, F, &w2[0, 0], 1, K, dn, P, cols, RS, 0)
                for c in range(C):
                    _col2im_plane(cols + c * HH * WW * RS, &dx[n, c, 0, 0], RS, H, W, HH, WW,
                                  pad, stride, stride, Ho, Wo)


cdef inline Py_ssize_t _pool_block_rows(Py_ssize_t N, Py_ssize_t Ho,
                                         int nthreads) noexcept nogil:
    """Output rows per work item of the fused convolution + 2x2 pool: the whole sample, or
    with fewer samples than threads an even share of its rows (whole pooling windows)."""
    cdef Py_ssize_t blocks = 1 if N >= nthreads else (nthreads + N - 1) // N
    return ((Ho + blocks - 1) // blocks + 1) // 2 * 2


def _conv_maxpool_forward_fused(const floating[:, :, :, ::1] x, const floating[:, ::1] w2,
                                const floating[::1] bias, floating[:, :, ::1] out,
                                int64_t[:, :, ::1] argmax, floating[:, ::1] ws,
                                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad,
                                Py_ssize_t stride, Py_ssize_t Ho, Py_ssize_t Wo, bint relu):
    """`_conv_forward_fused` whose GEMM writes each block of output rows into the thread's
    workspace, where the 2x2 stride-2 max pool (then max(., 0) with `relu`) reads it from
    cache: the convolution's output never reaches main memory."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w2.shape[0], K = w2.shape[1], P = Ho * Wo, RS = _cols_stride(P)
    cdef Py_ssize_t Wp = Wo // 2
    cdef int nthreads = ws.shape[0]
    cdef Py_ssize_t rows = _pool_block_rows(N, Ho, nthreads)
    cdef Py_ssize_t blocks = (Ho + rows - 1) // rows
    cdef Py_ssize_t BS = rows * Wo  # elements per filter in the thread's output block
    cdef floating *cols = NULL
    cdef floating *conv = NULL
    cdef floating *o = NULL
    cdef floating v
    cdef Py_ssize_t item, n, r0, r1, f, p, q0, q
    with nogil, parallel(num_threads=nthreads):
        cols = &ws[threadid(), 0]
        conv = cols + K * RS  # (F, BS): this block of the convolution's output
        for item in prange(N * blocks, schedule="static"):
            n = item // blocks
            r0 = item % blocks * rows
            r1 = r0 + rows if r0 + rows < Ho else Ho
            _conv_rows(&x[n, 0, 0, 0], &w2[0, 0], &bias[0], cols, RS, conv, BS, C, H, W, F, HH,
                       WW, pad, stride, r0, r1, Wo)
            q0 = r0 // 2 * Wp
            q = (r1 - r0) // 2 * Wp
            for f in range(F):
                _maxpool_2x2s2_plane(conv + f * BS, &out[n, f, q0], &argmax[n, f, q0], Wo,
                                     (r1 - r0) // 2, Wp, r0 * Wo)
                if relu:  # np.maximum(v, 0): NaN and -0.0 kept
                    o = &out[n, f, q0]
                    for p in range(q):
                        v = o[p]
                        o[p] = v if (v >= 0 or v != v) else 0


def max_threads():
    """The threads the fused kernels run on (OpenMP's count; 1 when built without it)."""
    return dn_max_threads()


def fused_workspace(C, F, HH, WW, Ho, Wo, backward, pool=False):
    """Elements of one thread's workspace for `conv_forward_fused` (backward=False),
    `conv_maxpool_forward_fused` (pool=True) or `conv_backward_fused` (pool=True: through a
    max pool, with argmax), rounded up to whole 128-byte lines of float64. The backward's
    is the largest."""
    K, P = C * HH * WW, Ho * Wo
    if backward:
        size = K * F + K * _cols_stride(P) + P * F + F + (F * P if pool else 0)
    else:
        size = K * _cols_stride(P) + (F * P if pool else 0)
    return (size + 15) // 16 * 16


def _check_fused(x, w, pad, stride, ws, backward, pool=False):
    """(Ho, Wo) of a valid fused call; real exceptions, the kernels read raw memory."""
    _check("x", x, 4)
    _check("w", w, 4)
    _check("ws", ws, 2)
    if w.dtype != x.dtype or ws.dtype != x.dtype:
        raise ValueError(f"w and ws must have x's dtype {x.dtype}, got {w.dtype} and {ws.dtype}")
    if FUSED_KERNEL == "scalar":
        raise RuntimeError("the fused convolution needs a C compiler with vector extensions "
                           "(GCC or clang); this build has none")
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w {w.shape} does not fit x {x.shape}")
    _check_geometry(H, HH, pad, stride, "height")
    _check_geometry(W, WW, pad, stride, "width")
    Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    need = fused_workspace(C, F, HH, WW, Ho, Wo, backward, pool)
    if ws.shape[0] < 1 or ws.shape[1] < need:
        raise ValueError(f"ws must have shape (threads >= 1, >= {need}), got {ws.shape}")
    return Ho, Wo


def conv_forward_fused(x, w, bias, pad, stride, y, ws):
    """x (N, C, H, W), w (F, C, HH, WW), bias (F,) -> y (N, F, Ho, Wo), filled in place;
    returns y. ws: (threads, >= fused_workspace(..., backward=False)) scratch, a row per
    thread (`max_threads()` rows use every core)."""
    Ho, Wo = _check_fused(x, w, pad, stride, ws, False)
    _check("bias", bias, 1)
    _check("y", y, 4)
    F = w.shape[0]
    if bias.shape != (F,) or y.shape != (x.shape[0], F, Ho, Wo) or y.dtype != x.dtype \
            or bias.dtype != x.dtype:
        raise ValueError(f"bias {bias.shape} and y {y.shape} must be ({F},) and "
                         f"{(x.shape[0], F, Ho, Wo)} of dtype {x.dtype}")
    _conv_forward_fused(x, w.reshape(F, -1), bias, y.reshape(x.shape[0], F, Ho * Wo), ws,
                        w.shape[2], w.shape[3], pad, stride, Ho, Wo)
    return y


def conv_maxpool_forward_fused(x, w, bias, pad, stride, out, argmax, ws, relu):
    """`conv_forward_fused` followed by a 2x2 stride-2 max pool (and, with `relu`,
    max(out, 0)) without the convolution's output: x (N, C, H, W), w (F, C, HH, WW),
    bias (F,) -> out (N, F, Ho/2, Wo/2) in x's dtype and argmax (same shape, int64: flat
    index into the (Ho, Wo) plane, as `maxpool_forward` gives), filled in place; Ho and Wo
    must be even. ws: (threads, >= fused_workspace(..., backward=False, pool=True))."""
    Ho, Wo = _check_fused(x, w, pad, stride, ws, False, pool=True)
    N, F = x.shape[0], w.shape[0]
    if Ho % 2 or Wo % 2:
        raise ValueError(f"the 2x2 pool needs an even convolution output, got {(Ho, Wo)}")
    _check("bias", bias, 1)
    _check("out", out, 4)
    shape = (N, F, Ho // 2, Wo // 2)
    if bias.shape != (F,) or bias.dtype != x.dtype or out.shape != shape \
            or out.dtype != x.dtype or not isinstance(argmax, np.ndarray) \
            or argmax.shape != shape or argmax.dtype != np.int64 \
            or not argmax.flags.c_contiguous:
        raise ValueError(f"bias {bias.shape}, out {out.shape} and argmax {argmax.shape} must "
                         f"be ({F},) and {shape} ({x.dtype}; argmax int64, C-contiguous)")
    _conv_maxpool_forward_fused(x, w.reshape(F, -1), bias, out.reshape(N, F, -1),
                                argmax.reshape(N, F, -1), ws, w.shape[2], w.shape[3], pad,
                                stride, Ho, Wo, relu)
    return out, argmax


def conv_backward_fused(dout, x, w, pad, stride, dx, ws, argmax=None, keep=None):
    """Gradients of `conv_forward_fused`: dout (N, F, Ho, Wo) -> dx (N, C, H, W) filled in place
    (or None: skipped); returns dw (F, C, HH, WW) and db (F,), dout summed over N, Ho and
    Wo. ws: (threads, >= fused_workspace(..., backward=True)); each thread sums its samples'
    shares of dw and db in its row, and the rows are added in order at the end.

    With `argmax` (`maxpool_forward`'s, or `conv_maxpool_forward_fused`'s), dout is instead
    the gradient of a max pool over the convolution's output, (N, F, Hp, Wp) like argmax,
    and with `keep` too (dout's shape and dtype) that of a ReLU after the pool, keep its
    output: each sample's is routed in the thread's workspace (fused_workspace(...,
    backward=True, pool=True)), not in main memory. argmax's entries are trusted, as in
    every fast-layer cache: they index raw memory.
    """
    pooled = argmax is not None
    Ho, Wo = _check_fused(x, w, pad, stride, ws, True, pooled)
    _check("dout", dout, 4)
    F, C, HH, WW = w.shape
    N = x.shape[0]
    if pooled:
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64 \
                or not argmax.flags.c_contiguous or argmax.ndim != 4 \
                or argmax.shape[:2] != (N, F) or dout.shape != argmax.shape \
                or dout.dtype != x.dtype:
            raise ValueError(f"dout {dout.dtype} {dout.shape} and argmax (int64, C-contiguous) "
                             f"must both be ({N}, {F}, Hp, Wp), dout of dtype {x.dtype}")
        if keep is not None:
            _check_like("keep", keep, dout.shape, dout.dtype)
    elif dout.shape != (N, F, Ho, Wo) or dout.dtype != x.dtype:
        raise ValueError(f"dout must be {(N, F, Ho, Wo)} of dtype {x.dtype}, "
                         f"got {dout.shape} {dout.dtype}")
    if dx is not None:
        _check_like("dx", dx, x.shape, x.dtype)
    skipped = np.empty((0, 0, 0, 0), dtype=x.dtype)  # typed stand-ins, never indexed
    dout3 = dout.reshape(N, F, -1)
    _conv_backward_fused(dout3, x, w.reshape(F, -1), skipped if dx is None else dx, ws, HH, WW,
                         pad, stride, Ho, Wo, dx is not None,
                         argmax.reshape(N, F, -1) if pooled else np.empty((0, 0, 0), np.int64),
                         dout3 if keep is None else keep.reshape(N, F, -1), pooled,
                         keep is not None)
    K = C * HH * WW
    at = K * F + K * _cols_stride(Ho * Wo) + Ho * Wo * F  # each row's db share
    dw = np.ascontiguousarray(ws[:, :K * F].sum(axis=0).reshape(K, F).T).reshape(w.shape)
    return dw, ws[:, at:at + F].sum(axis=0)


def _rows_to_nchw_fused(const floating[:, ::1] rows, const floating[::1] bias,
                        floating[:, :, :, ::1] out, Py_ssize_t q):
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t P = (Ho // q) * Wo, plane, n, f, s, hp, k
    cdef const floating *src
    cdef floating *dst
    cdef floating bf
    for plane in prange(N * F, nogil=True, schedule="static"):
        n = plane // F
        f = plane % F
        bf = bias[f]
        for s in range(q):
            src = &rows[s * F + f, n * P]
            for hp in range(Ho // q):
                dst = &out[n, f, hp * q + s, 0]
                for k in range(Wo):
                    dst[k] = src[hp * Wo + k] + bf


def _nchw_to_rows_fused(const floating[:, :, :, ::1] dout, floating[:, ::1] rows,
                        Py_ssize_t q):
    cdef Py_ssize_t N = dout.shape[0], F = dout.shape[1], Ho = dout.shape[2]
    cdef Py_ssize_t Wo = dout.shape[3], P = (Ho // q) * Wo, plane, n, f, s, hp
    for plane in prange(N * F, nogil=True, schedule="static"):
        n = plane // F
        f = plane % F
        for s in range(q):
            for hp in range(Ho // q):
                memcpy(&rows[s * F + f, n * P + hp * Wo], &dout[n, f, hp * q + s, 0],
                       Wo * sizeof(floating))


def _check_rows(name, rows, nchw, q):
    _check(name, rows, 2)
    N, F, Ho, Wo = nchw.shape
    if q < 1 or Ho % q:
        raise ValueError(f"{name}: Ho={Ho} is not a multiple of q={q}")
    shape = (q * F, N * (Ho // q) * Wo)
    if rows.shape != shape or rows.dtype != nchw.dtype:
        raise ValueError(f"{name} must be a {nchw.dtype} array of shape {shape}, "
                         f"got {rows.dtype} {rows.shape}")


def rows_to_nchw(rows, bias, out, q=1):
    """GEMM rows (q*F, N*(Ho/q)*Wo) plus bias (F,) -> out (N, F, Ho, Wo), in place."""
    _check("rows_to_nchw: out", out, 4)
    _check_rows("rows_to_nchw: rows", rows, out, q)
    _check("rows_to_nchw: bias", bias, 1)
    if bias.shape != (out.shape[1],) or bias.dtype != out.dtype:
        raise ValueError(f"rows_to_nchw: bias must be a {out.dtype} array of shape "
                         f"{(out.shape[1],)}, got {bias.dtype} {bias.shape}")
    if out.size:
        _rows_to_nchw_fused(rows, bias, out, q)
    return out


def nchw_to_rows(dout, rows, q=1):
    """dout (N, F, Ho, Wo) -> rows (q*F, N*(Ho/q)*Wo), in place; returns rows."""
    _check("nchw_to_rows: dout", dout, 4)
    _check_rows("nchw_to_rows: rows", rows, dout, q)
    if dout.size:
        _nchw_to_rows_fused(dout, rows, q)
    return rows


# -- pooling --------------------------------------------------------------------------------
cdef inline void _maxpool_2x2s2_plane(const floating *x, floating *out, int64_t *argmax,
                                      Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                      Py_ssize_t at) noexcept nogil:
    """2x2 windows at stride 2 without data-dependent branches: on random data the scan's
    compare-and-jumps mispredict about half the time (that scan: 15.7 ms single-threaded on
    (128, 32, 32, 32) float32; this loop: 3.4 ms).

    A pairwise tournament finds the same first maximum as the scan in `_maxpool_plane`:
    the first maximum of (a, b), of (c, d), then the earlier of the two unless the later is
    strictly larger. A window holding a NaN (rare) takes the scan, so NaN still wins once.
    x may start `at` elements into its plane (a block of rows): argmax counts from the plane.
    """
    cdef Py_ssize_t ho, wo, off, o1, o2, sel
    cdef floating a, b, c, d, w1, w2
    cdef const floating *r0
    cdef const floating *r1
    for ho in range(Ho):
        r0 = x + 2 * ho * W
        r1 = r0 + W
        for wo in range(Wo):
            a = r0[2 * wo]
            b = r0[2 * wo + 1]
            c = r1[2 * wo]
            d = r1[2 * wo + 1]
            if a != a or b != b or c != c or d != d:
                _maxpool_window(r0 + 2 * wo, W, 2, 2, &out[ho * Wo + wo], &off)
            else:
                o1 = b > a
                o2 = d > c
                w1 = b if b > a else a
                w2 = d if d > c else c
                sel = w2 > w1
                off = o1 + sel * (W + o2 - o1)
                out[ho * Wo + wo] = r0[2 * wo + off]
            argmax[ho * Wo + wo] = at + 2 * ho * W + 2 * wo + off


cdef inline void _maxpool_window(const floating *x, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                 floating *best_out, Py_ssize_t *off_out) noexcept nogil:
    """The reference scan over one window at x: first maximum, a NaN wins once."""
    cdef Py_ssize_t i, j, off = 0
    cdef floating v, best = x[0]
    for i in range(ph):
        for j in range(pw):
            v = x[i * W + j]
            if v > best or (v != v and best == best):
                best = v
                off = i * W + j
    best_out[0] = best
    off_out[0] = off


cdef void _maxpool_plane(const floating *x, floating *out, int64_t *argmax, Py_ssize_t W,
                         Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t Ho,
                         Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t ho, wo, i, j, at, best_at, base
    cdef floating v, best
    cdef const floating *row
    if ph == 2 and pw == 2 and stride == 2:
        _maxpool_2x2s2_plane(x, out, argmax, W, Ho, Wo, 0)
        return
    if ph == 2 and pw == 2:
        # the common 2x2 window, unrolled: the same comparisons in the same (i, j) order
        for ho in range(Ho):
            row = x + ho * stride * W
            for wo in range(Wo):
                base = ho * stride * W + wo * stride
                best_at = base
                best = row[wo * stride]
                v = row[wo * stride + 1]
                if v > best or (v != v and best == best):
                    best = v
                    best_at = base + 1
                v = row[W + wo * stride]
                if v > best or (v != v and best == best):
                    best = v
                    best_at = base + W
                v = row[W + wo * stride + 1]
                if v > best or (v != v and best == best):
                    best = v
                    best_at = base + W + 1
                out[ho * Wo + wo] = best
                argmax[ho * Wo + wo] = best_at
        return
    for ho in range(Ho):
        for wo in range(Wo):
            best_at = ho * stride * W + wo * stride
            best = x[best_at]
            for i in range(ph):
                for j in range(pw):
                    at = (ho * stride + i) * W + wo * stride + j
                    v = x[at]
                    # strict '>' keeps the first maximum; a NaN wins once, like numpy.argmax
                    if v > best or (v != v and best == best):
                        best = v
                        best_at = at
            out[ho * Wo + wo] = best
            argmax[ho * Wo + wo] = best_at


def _maxpool_forward_fused(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                           int64_t[:, :, :, ::1] argmax, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t stride):
    cdef Py_ssize_t C = x.shape[1], W = x.shape[3], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t plane, n, c
    for plane in prange(x.shape[0] * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        _maxpool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &argmax[n, c, 0, 0], W, ph, pw,
                       stride, Ho, Wo)


cdef inline floating _kept(const floating *g, const floating *keep, Py_ssize_t k,
                           bint masked) noexcept nogil:
    """g[k], times (keep[k] > 0) when `masked`: relu_backward's product, NaN * 0 included."""
    if masked:
        return g[k] * (keep[k] > 0)
    return g[k]


def _maxpool_backward_fused(const floating[:, :, :, ::1] dout,
                            const int64_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] dx,
                            const floating[:, :, :, ::1] keep, bint masked):
    cdef Py_ssize_t C = dx.shape[1], HW = dx.shape[2] * dx.shape[3]
    cdef Py_ssize_t HoWo = dout.shape[2] * dout.shape[3]
    cdef Py_ssize_t plane, n, c, k
    cdef const floating *g
    cdef const floating *kp
    cdef const int64_t *idx
    cdef floating *d
    for plane in prange(dx.shape[0] * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        g = &dout[n, c, 0, 0]
        kp = &keep[n, c, 0, 0]
        idx = &argmax[n, c, 0, 0]
        d = &dx[n, c, 0, 0]
        memset(d, 0, HW * sizeof(floating))
        for k in range(HoWo):
            d[idx[k]] += _kept(g, kp, k, masked)


def _maxpool_backward_2x2_fused(const floating[:, :, :, ::1] dout,
                                const int64_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] dx,
                                const floating[:, :, :, ::1] keep, bint masked):
    """2x2 windows at stride 2 tiling the plane (even H and W): each window writes its four
    dx values once (no memset, no scatter); an argmax outside its window is folded back
    into the window."""
    cdef Py_ssize_t C = dx.shape[1], W = dx.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t plane, n, c, ho, wo, base, off, row
    cdef const floating *g
    cdef const floating *kp
    cdef const int64_t *idx
    cdef floating *d
    cdef floating zero = 0
    for plane in prange(dx.shape[0] * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        g = &dout[n, c, 0, 0]
        kp = &keep[n, c, 0, 0]
        idx = &argmax[n, c, 0, 0]
        d = &dx[n, c, 0, 0]
        for ho in range(Ho):
            for wo in range(Wo):
                base = 2 * ho * W + 2 * wo
                off = idx[ho * Wo + wo] - base
                # map off onto the window's {0, 1, W, W+1} with arithmetic, not a test: the
                # identity for a trusted argmax, and no write can leave the window
                row = off >= W
                off = row * W + ((off - row * W) & 1)
                # four zeros, then the one gradient at its offset: no data-dependent branch
                d[base] = zero
                d[base + 1] = zero
                d[base + W] = zero
                d[base + W + 1] = zero
                # zero + g, not g: the value the reference's zeros + g gives (-0.0 too)
                d[base + off] = zero + _kept(g, kp, ho * Wo + wo, masked)


def maxpool_forward(x, ph, pw, stride):
    """x (N, C, H, W) -> out (N, C, Ho, Wo) in x's dtype, argmax (N, C, Ho, Wo) int64."""
    _check("maxpool_forward: x", x, 4)
    N, C, H, W, Ho, Wo = _window_shape(x.shape, ph, pw, 0, stride, "maxpool_forward")
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N, C, Ho, Wo), dtype=np.int64)
    if out.size:
        _maxpool_forward_fused(x, out, argmax, ph, pw, stride)
    return out, argmax


def maxpool_backward(dout, argmax, x_shape, ph, pw, stride, keep=None):
    """dout (N, C, Ho, Wo) routed to its argmax positions -> dx (N, C, H, W), dout's dtype;
    with `keep` (dout's shape and dtype), dout * (keep > 0) is routed instead: the gradient
    through a ReLU after the pool, keep its output.

    argmax must come from `maxpool_forward` on an input of shape x_shape: its entries index
    raw memory and are trusted, as in every fast-layer cache.
    """
    _check("maxpool_backward: dout", dout, 4)
    N, C, H, W, Ho, Wo = _window_shape(x_shape, ph, pw, 0, stride, "maxpool_backward")
    if dout.shape != (N, C, Ho, Wo) or argmax.shape != dout.shape:
        raise ValueError(f"maxpool_backward: dout {dout.shape} and argmax {argmax.shape} must "
                         f"both be {(N, C, Ho, Wo)}")
    if keep is not None:
        _check_like("maxpool_backward: keep", keep, dout.shape, dout.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    masked = keep is not None
    if not masked:
        keep = dout  # a typed stand-in, never read
    if dx.size and ph == pw == stride == 2 and H == 2 * Ho and W == 2 * Wo:
        _maxpool_backward_2x2_fused(dout, argmax, dx, keep, masked)
    elif dx.size:
        _maxpool_backward_fused(dout, argmax, dx, keep, masked)
    return dx


cdef void _avgpool_plane(const floating *x, floating *out, Py_ssize_t W, Py_ssize_t ph,
                         Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t Ho,
                         Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t ho, wo, i, j
    cdef floating acc
    cdef floating count = <floating>(ph * pw)
    for ho in range(Ho):
        for wo in range(Wo):
            acc = 0
            for i in range(ph):
                for j in range(pw):
                    acc = acc + x[(ho * stride + i) * W + wo * stride + j]
            out[ho * Wo + wo] = acc / count


cdef void _avgpool_backward_plane(const floating *dout, floating *dx, Py_ssize_t H,
                                  Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                  Py_ssize_t stride, Py_ssize_t Ho,
                                  Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t ho, wo, i, j
    cdef floating share
    cdef floating count = <floating>(ph * pw)
    memset(dx, 0, H * W * sizeof(floating))
    # window offsets outermost: the reference's summation order
    for i in range(ph):
        for j in range(pw):
            for ho in range(Ho):
                for wo in range(Wo):
                    share = dout[ho * Wo + wo] / count
                    dx[(ho * stride + i) * W + wo * stride + j] += share


def _avgpool_forward_fused(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride):
    cdef Py_ssize_t C = x.shape[1], W = x.shape[3], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t plane, n, c
    for plane in prange(x.shape[0] * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        _avgpool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], W, ph, pw, stride, Ho, Wo)


def _avgpool_backward_fused(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride):
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t plane, n, c
    for plane in prange(dx.shape[0] * C, nogil=True, schedule="static"):
        n = plane // C
        c = plane % C
        _avgpool_backward_plane(&dout[n, c, 0, 0], &dx[n, c, 0, 0], H, W, ph, pw, stride,
                                Ho, Wo)


def avgpool_forward(x, ph, pw, stride):
    """x (N, C, H, W) -> mean over each ph x pw window, (N, C, Ho, Wo) in x's dtype."""
    _check("avgpool_forward: x", x, 4)
    N, C, H, W, Ho, Wo = _window_shape(x.shape, ph, pw, 0, stride, "avgpool_forward")
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    if out.size:
        _avgpool_forward_fused(x, out, ph, pw, stride)
    return out


def avgpool_backward(dout, x_shape, ph, pw, stride):
    """Spread dout (N, C, Ho, Wo) evenly over each window -> dx (N, C, H, W)."""
    _check("avgpool_backward: dout", dout, 4)
    N, C, H, W, Ho, Wo = _window_shape(x_shape, ph, pw, 0, stride, "avgpool_backward")
    if dout.shape != (N, C, Ho, Wo):
        raise ValueError(f"avgpool_backward: dout must have shape {(N, C, Ho, Wo)}, "
                         f"got {dout.shape}")
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    if dx.size:
        _avgpool_backward_fused(dout, dx, ph, pw, stride)
    return dx


# -- depthwise convolution -----------------------------------------------------------------
# groups = C: filter f of F = C*m sees input channel f // m only, w (F, 1, HH, WW). The layer
# is memory-bound, so the kernels make one pass over each plane instead of building patches:
# a thread copies the (n, c) input plane into a zero-padded plane in its cache once, and then
# every output row is a sum of HH*WW scaled rows of it, with no bounds tests in the innermost
# loops (contiguous for stride 1, which the compiler vectorizes). The filter gradient keeps
# Wo partial sums per tap (elementwise products, vectorized too) and adds them up at the end,
# in a fixed order. Output sizes (Ho, Wo) come from the arrays and may be the floor of the
# windows that fit (windows start at the padded origin). Each thread's row of `ws` holds its
# padded plane and its partial sums (`depthwise_workspace`).

cdef extern from *:
    """
    /* The 3x3 stride-1 filter-gradient row: acc (9, Wo) += g[wo] times the padded plane's
       three rows r, r + Wp, r + 2 Wp at columns wo, wo + 1, wo + 2. In C with restrict
       pointers: the nine accumulator streams and the plane rows live in one workspace row,
       and without restrict the compiler cannot rule out their overlap, so it would not
       vectorize the loop. */
    #define DN_DEPTHWISE_ACC3X3(T, SUFFIX)                                                   \
    static inline void dn_depthwise_acc3x3_##SUFFIX(const T *__restrict__ g,               \
            const T *__restrict__ r, Py_ssize_t Wp, Py_ssize_t Wo, T *__restrict__ acc) {   \
        for (Py_ssize_t wo = 0; wo < Wo; ++wo) {                                            \
            const T gw = g[wo];                                                             \
            acc[wo] += gw * r[wo];                                                          \
            acc[Wo + wo] += gw * r[wo + 1];                                                 \
            acc[2 * Wo + wo] += gw * r[wo + 2];                                             \
            acc[3 * Wo + wo] += gw * r[Wp + wo];                                            \
            acc[4 * Wo + wo] += gw * r[Wp + wo + 1];                                        \
            acc[5 * Wo + wo] += gw * r[Wp + wo + 2];                                        \
            acc[6 * Wo + wo] += gw * r[2 * Wp + wo];                                        \
            acc[7 * Wo + wo] += gw * r[2 * Wp + wo + 1];                                    \
            acc[8 * Wo + wo] += gw * r[2 * Wp + wo + 2];                                    \
        }                                                                                   \
    }
    DN_DEPTHWISE_ACC3X3(float, f)
    DN_DEPTHWISE_ACC3X3(double, d)
    """
    void dn_depthwise_acc3x3_f(const float *g, const float *r, Py_ssize_t Wp, Py_ssize_t Wo,
                               float *acc) noexcept nogil
    void dn_depthwise_acc3x3_d(const double *g, const double *r, Py_ssize_t Wp, Py_ssize_t Wo,
                               double *acc) noexcept nogil


def depthwise_workspace(H, W, HH, WW, pad, Ho, Wo):
    """Elements of one thread's workspace row for the depthwise kernels: a padded input
    plane (or, for the 3x3 stride-1 input gradient, a dout plane with a 2-pixel border) and
    the filter gradient's partial sums."""
    return max((H + 2 * pad) * (W + 2 * pad), (Ho + 4) * (Wo + 4)) + HH * WW * Wo


cdef void _pad_plane(const floating *x, floating *xp, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t pad) noexcept nogil:
    """x (H, W) -> xp (H + 2 pad, W + 2 pad), zeros around."""
    cdef Py_ssize_t Wp = W + 2 * pad, h
    memset(xp, 0, (H + 2 * pad) * Wp * sizeof(floating))
    for h in range(H):
        memcpy(xp + (h + pad) * Wp + pad, x + h * W, W * sizeof(floating))


cdef void _depthwise_plane(const floating *xp, Py_ssize_t Wp, const floating *taps,
                           floating bias, floating *out, Py_ssize_t HH, Py_ssize_t WW,
                           Py_ssize_t stride, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """One filter over one padded plane xp (rows Wp apart) -> one (Ho, Wo) plane, bias first,
    then the taps in order."""
    cdef Py_ssize_t ho, wo, i, j
    cdef floating t
    cdef floating *o
    cdef const floating *r
    cdef const floating *r0
    cdef const floating *r1
    cdef const floating *r2
    if HH == 3 and WW == 3 and stride == 1:
        # the common case unrolled: one store per output, no chain through memory; the same
        # order of sums as below (bias, then the taps row by row)
        for ho in range(Ho):
            o = out + ho * Wo
            r0 = xp + ho * Wp
            r1 = r0 + Wp
            r2 = r1 + Wp
            for wo in range(Wo):
                o[wo] = (bias + taps[0] * r0[wo] + taps[1] * r0[wo + 1] + taps[2] * r0[wo + 2]
                         + taps[3] * r1[wo] + taps[4] * r1[wo + 1] + taps[5] * r1[wo + 2]
                         + taps[6] * r2[wo] + taps[7] * r2[wo + 1] + taps[8] * r2[wo + 2])
        return
    for ho in range(Ho):
        o = out + ho * Wo
        for wo in range(Wo):
            o[wo] = bias
        for i in range(HH):
            for j in range(WW):
                t = taps[i * WW + j]
                r = xp + (ho * stride + i) * Wp + j
                if stride == 1:
                    for wo in range(Wo):
                        o[wo] += t * r[wo]
                else:
                    for wo in range(Wo):
                        o[wo] += t * r[wo * stride]


cdef void _depthwise_input_grad_plane(const floating *dout, const floating *taps,
                                      floating *dxp, Py_ssize_t Wp, Py_ssize_t m,
                                      Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride,
                                      Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """The m filters of one channel send dout (m planes of (Ho, Wo)) back into the padded
    plane dxp (zeroed by the caller); one thread per plane, so no atomics, a fixed order."""
    cdef Py_ssize_t k, ho, wo, i, j
    cdef floating t
    cdef floating *d
    cdef const floating *g
    for k in range(m):
        for ho in range(Ho):
            g = dout + (k * Ho + ho) * Wo
            for i in range(HH):
                for j in range(WW):
                    t = taps[(k * HH + i) * WW + j]
                    d = dxp + (ho * stride + i) * Wp + j
                    if stride == 1:
                        for wo in range(Wo):
                            d[wo] += t * g[wo]
                    else:
                        for wo in range(Wo):
                            d[wo * stride] += t * g[wo]


cdef void _depthwise_filter_grad_plane(const floating *dout, const floating *xp,
                                       Py_ssize_t Wp, floating *acc, Py_ssize_t HH,
                                       Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t Ho,
                                       Py_ssize_t Wo) noexcept nogil:
    """acc (HH*WW, Wo) += dout (Ho, Wo) times the padded plane under each tap, per column."""
    cdef Py_ssize_t ho, wo, i, j
    cdef floating *a
    cdef const floating *g
    cdef const floating *r
    if HH == 3 and WW == 3 and stride == 1:  # the common case: each dout value read once
        for ho in range(Ho):
            if floating is float:
                dn_depthwise_acc3x3_f(dout + ho * Wo, xp + ho * Wp, Wp, Wo, acc)
            else:
                dn_depthwise_acc3x3_d(dout + ho * Wo, xp + ho * Wp, Wp, Wo, acc)
        return
    for ho in range(Ho):
        g = dout + ho * Wo
        for i in range(HH):
            for j in range(WW):
                a = acc + (i * WW + j) * Wo
                r = xp + (ho * stride + i) * Wp + j
                if stride == 1:
                    for wo in range(Wo):
                        a[wo] += g[wo] * r[wo]
                else:
                    for wo in range(Wo):
                        a[wo] += g[wo] * r[wo * stride]


def _depthwise_forward_fused(const floating[:, :, :, ::1] x, const floating[:, ::1] w,
                             const floating[::1] bias, floating[:, :, :, ::1] out,
                             floating[:, ::1] ws, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t pad,
                             Py_ssize_t stride):
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3], Wp = W + 2 * pad
    cdef Py_ssize_t F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t m = F // C, plane, n, c, f
    cdef floating *xp = NULL
    with nogil, parallel(num_threads=ws.shape[0]):
        xp = &ws[threadid(), 0]
        for plane in prange(x.shape[0] * C, schedule="static"):
            n = plane // C
            c = plane % C
            _pad_plane(&x[n, c, 0, 0], xp, H, W, pad)
            for f in range(c * m, (c + 1) * m):
                _depthwise_plane(xp, Wp, &w[f, 0], bias[f], &out[n, f, 0, 0], HH, WW, stride,
                                 Ho, Wo)


cdef void _depthwise_input_grad_3x3(const floating *dout, const floating *taps, floating *dx,
                                    floating *gp, Py_ssize_t m, Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t pad, Py_ssize_t Ho,
                                    Py_ssize_t Wo) noexcept nogil:
    """3x3 stride 1: each dx element gathers its nine taps from dout set in a 2-pixel zero
    border (gp, (Ho + 4, Wo + 4)), one store per element, the channel's m filters in turn."""
    cdef Py_ssize_t Wg = Wo + 4, k, h, x, ho
    cdef const floating *t
    cdef const floating *r0
    cdef const floating *r1
    cdef const floating *r2
    cdef floating *d
    cdef floating v
    memset(gp, 0, (Ho + 4) * Wg * sizeof(floating))
    for k in range(m):
        for ho in range(Ho):
            memcpy(gp + (ho + 2) * Wg + 2, dout + (k * Ho + ho) * Wo, Wo * sizeof(floating))
        t = taps + k * 9
        for h in range(H):
            # padded row y = h + pad takes dout rows y - i (i = 0, 1, 2): gp rows y - i + 2
            r0 = gp + (h + pad + 2) * Wg + pad + 2
            r1 = r0 - Wg
            r2 = r1 - Wg
            d = dx + h * W
            for x in range(W):
                v = (t[0] * r0[x] + t[1] * r0[x - 1] + t[2] * r0[x - 2]
                     + t[3] * r1[x] + t[4] * r1[x - 1] + t[5] * r1[x - 2]
                     + t[6] * r2[x] + t[7] * r2[x - 1] + t[8] * r2[x - 2])
                if k == 0:
                    d[x] = v
                else:
                    d[x] += v


def _depthwise_input_grad_fused(const floating[:, :, :, ::1] dout, const floating[:, ::1] w,
                                floating[:, :, :, ::1] dx, floating[:, ::1] ws, Py_ssize_t HH,
                                Py_ssize_t WW, Py_ssize_t pad, Py_ssize_t stride):
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3], Wp = W + 2 * pad
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3], m = dout.shape[1] // C
    cdef Py_ssize_t plane, n, c, h
    cdef floating *dxp = NULL
    with nogil, parallel(num_threads=ws.shape[0]):
        dxp = &ws[threadid(), 0]
        for plane in prange(dx.shape[0] * C, schedule="static"):
            n = plane // C
            c = plane % C
            if HH == 3 and WW == 3 and stride == 1:
                _depthwise_input_grad_3x3(&dout[n, c * m, 0, 0], &w[c * m, 0], &dx[n, c, 0, 0],
                                          dxp, m, H, W, pad, Ho, Wo)
                continue
            memset(dxp, 0, (H + 2 * pad) * Wp * sizeof(floating))
            _depthwise_input_grad_plane(&dout[n, c * m, 0, 0], &w[c * m, 0], dxp, Wp, m, HH, WW,
                                        stride, Ho, Wo)
            for h in range(H):
                memcpy(&dx[n, c, h, 0], dxp + (h + pad) * Wp + pad, W * sizeof(floating))


def _depthwise_filter_grad_fused(const floating[:, :, :, ::1] dout,
                                 const floating[:, :, :, ::1] x, floating[:, ::1] dw,
                                 floating[:, ::1] ws, Py_ssize_t HH, Py_ssize_t WW,
                                 Py_ssize_t pad, Py_ssize_t stride):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3], m = F // C
    cdef Py_ssize_t Wp = W + 2 * pad, f, n, k, wo
    cdef floating *xp = NULL
    cdef floating *acc = NULL
    cdef floating total
    with nogil, parallel(num_threads=ws.shape[0]):
        xp = &ws[threadid(), 0]
        acc = xp + max((H + 2 * pad) * Wp, (Ho + 4) * (Wo + 4))
        for f in prange(F, schedule="static"):
            memset(acc, 0, HH * WW * Wo * sizeof(floating))
            for n in range(N):
                _pad_plane(&x[n, f // m, 0, 0], xp, H, W, pad)
                _depthwise_filter_grad_plane(&dout[n, f, 0, 0], xp, Wp, acc, HH, WW, stride,
                                             Ho, Wo)
            for k in range(HH * WW):
                total = 0
                for wo in range(Wo):
                    total = total + acc[k * Wo + wo]
                dw[f, k] = total


def _check_depthwise(op, x, w, out_or_dout, pad, stride):
    """Real exceptions before the kernels read raw memory: contiguous arrays of one float
    dtype, w (C*m, 1, HH, WW), and an output (N, C*m, Ho, Wo) no larger than the windows that
    fit."""
    _check(f"{op}: x", x, 4)
    _check(f"{op}: w", w, 4)
    _check(f"{op}: out", out_or_dout, 4)
    if w.dtype != x.dtype or out_or_dout.dtype != x.dtype:
        raise ValueError(f"{op}: arrays must share x's dtype {x.dtype}")
    N, C, H, W = x.shape
    F, one, HH, WW = w.shape
    if one != 1 or C == 0 or F % C:
        raise ValueError(f"{op}: w must have shape (C*m, 1, HH, WW) for C={C}, got {w.shape}")
    _check_geometry(H, HH, pad, stride, "height")
    _check_geometry(W, WW, pad, stride, "width")
    Ho, Wo = out_or_dout.shape[2:]
    if out_or_dout.shape[:2] != (N, F) or not (
            0 < Ho <= _out_size(H, HH, pad, stride) and 0 < Wo <= _out_size(W, WW, pad, stride)):
        raise ValueError(f"{op}: output {out_or_dout.shape} does not fit x {x.shape} and "
                         f"w {w.shape} with pad {pad}, stride {stride}")
    return F, HH, WW


def _depthwise_ws(op, ws, x, HH, WW, pad, Ho, Wo):
    _check(f"{op}: ws", ws, 2)
    need = depthwise_workspace(x.shape[2], x.shape[3], HH, WW, pad, Ho, Wo)
    if ws.dtype != x.dtype or ws.shape[0] < 1 or ws.shape[1] < need:
        raise ValueError(f"{op}: ws must be (threads >= 1, >= {need}) of dtype {x.dtype}, "
                         f"got {ws.shape} {ws.dtype}")


def depthwise_forward(x, w, bias, pad, stride, out, ws):
    """x (N, C, H, W), w (C*m, 1, HH, WW), bias (C*m,) -> out (N, C*m, Ho, Wo), filled in
    place (filter f on channel f // m); returns out. ws: (threads, >= depthwise_workspace(...))
    scratch, a row per thread (`max_threads()` rows use every core)."""
    F, HH, WW = _check_depthwise("depthwise_forward", x, w, out, pad, stride)
    _check("depthwise_forward: bias", bias, 1)
    if bias.shape != (F,) or bias.dtype != x.dtype:
        raise ValueError(f"depthwise_forward: bias must be ({F},) {x.dtype}, got "
                         f"{bias.shape} {bias.dtype}")
    _depthwise_ws("depthwise_forward", ws, x, HH, WW, pad, *out.shape[2:])
    if out.size:
        _depthwise_forward_fused(x, w.reshape(F, HH * WW), bias, out, ws, HH, WW, pad, stride)
    return out


def depthwise_backward(dout, x, w, pad, stride, dx, dw, ws):
    """Gradients of `depthwise_forward` (bias aside): dout (N, C*m, Ho, Wo) -> dx (N, C, H, W)
    filled in place unless None, and dw (C*m, 1, HH, WW) filled in place; returns (dx, dw).
    ws: as for `depthwise_forward`."""
    F, HH, WW = _check_depthwise("depthwise_backward", x, w, dout, pad, stride)
    _depthwise_ws("depthwise_backward", ws, x, HH, WW, pad, *dout.shape[2:])
    _check("depthwise_backward: dw", dw, 4)
    if dw.shape != w.shape or dw.dtype != x.dtype:
        raise ValueError(f"depthwise_backward: dw must be {w.shape} {x.dtype}")
    if dx is not None:
        _check("depthwise_backward: dx", dx, 4)
        if dx.shape != x.shape or dx.dtype != x.dtype:
            raise ValueError(f"depthwise_backward: dx must be {x.shape} {x.dtype}")
        if dx.size:
            _depthwise_input_grad_fused(dout, w.reshape(F, HH * WW), dx, ws, HH, WW, pad,
                                        stride)
    if dw.size:
        if dout.size:
            _depthwise_filter_grad_fused(dout, x, dw.reshape(F, HH * WW), ws, HH, WW, pad,
                                         stride)
        else:
            dw[...] = 0
    return dx, dw
