# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels for the `numpy` backend: batch normalization in training mode.

Built as `dualnet.kernels._norm`. Arrays are (N, C, S): channels on axis 1, the statistics of
channel c taken over every n and s (S = H*W for spatial batchnorm, 1 for (N, D) features),
C-contiguous, one float dtype; per-channel vectors are (C,) of that dtype. The arithmetic is
that of `Backend.batchnorm_train` and `batchnorm_train_backward` in
`dualnet/backends/base.py` (the reference), which the numpy backend builds from these four
kernels in two passes over the data each way instead of ten to fifteen:

- `channel_moments(x, mean, var)`: mean and biased variance, two passes, sums in double;
- `channel_normalize(x, mean, scale, shift, out, relu=False)`: out = (x - mean) * scale +
  shift, or max(that, 0) with `relu` (a ReLU after the normalization, in the same pass);
- `channel_grad_sums(dout, x, mean, sum_g, sum_gx, keep=None)`: sums of dout and
  dout * (x - mean), in double;
- `channel_normalize_grad(dout, x, mean, k1, offset, k2, dx, keep=None)`:
  dx = k1 * (dout - offset - (x - mean) * k2).

With `keep` (the output of `channel_normalize(..., relu=True)`, dout's shape) the two backward
kernels take dout as 0 wherever keep is not positive: the ReLU's backward in the same passes.

A channel's sums run in one thread, in a fixed order, so results are deterministic; channels
(then (n, c) planes; for (N, D) features blocks of 64 columns, then rows) are spread over the
OpenMP threads, except in arrays too small to pay for waking them (`SERIAL_BELOW` elements).
"""

from cython.parallel cimport prange

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int dn_norm_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int dn_norm_max_threads(void) { return 1; }
    #endif
    """
    int dn_norm_max_threads() noexcept nogil

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


cdef inline double _sum(const floating *p, Py_ssize_t S) noexcept nogil:
    """sum of p[i], i < S, with eight accumulators so the additions do not wait on each other."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= S:
        a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3]
        a4 += p[i + 4]; a5 += p[i + 5]; a6 += p[i + 6]; a7 += p[i + 7]
        i += 8
    while i < S:
        a0 += p[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline double _sum_squares(const floating *p, Py_ssize_t S, double m) noexcept nogil:
    """sum of (p[i] - m)**2, i < S, likewise."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, d
    cdef Py_ssize_t i = 0
    while i + 8 <= S:
        d = p[i] - m; a0 += d * d
        d = p[i + 1] - m; a1 += d * d
        d = p[i + 2] - m; a2 += d * d
        d = p[i + 3] - m; a3 += d * d
        d = p[i + 4] - m; a4 += d * d
        d = p[i + 5] - m; a5 += d * d
        d = p[i + 6] - m; a6 += d * d
        d = p[i + 7] - m; a7 += d * d
        i += 8
    while i < S:
        d = p[i] - m; a0 += d * d
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline floating _masked(floating g, floating k) noexcept nogil:
    """g where k > 0, else 0. Both are loaded before the choice (the arguments), so the
    compiler makes it a select (vectorized, never a mispredicted branch on a random mask);
    `g[i] if k[i] > 0 else 0` would load g[i] only on one side and stay a branch."""
    return g if k > 0 else 0


cdef inline const floating *_offset(const floating *keep, Py_ssize_t i) noexcept nogil:
    """keep + i, or NULL for no keep."""
    if keep == NULL:
        return NULL
    return keep + i


cdef inline void _sums_of_grad(const floating *g, const floating *k, const floating *p,
                               Py_ssize_t S, double m, double *sum_g,
                               double *sum_gx) noexcept nogil:
    """sum_g += sum of g[i]; sum_gx += sum of g[i] * (p[i] - m), i < S; with k (not NULL),
    g[i] counts only where k[i] > 0 (`_masked`)."""
    cdef double g0 = 0, g1 = 0, g2 = 0, g3 = 0, x0 = 0, x1 = 0, x2 = 0, x3 = 0
    cdef double v0, v1, v2, v3
    cdef Py_ssize_t i = 0
    if k == NULL:
        while i + 4 <= S:
            g0 += g[i]; x0 += g[i] * (p[i] - m)
            g1 += g[i + 1]; x1 += g[i + 1] * (p[i + 1] - m)
            g2 += g[i + 2]; x2 += g[i + 2] * (p[i + 2] - m)
            g3 += g[i + 3]; x3 += g[i + 3] * (p[i + 3] - m)
            i += 4
    else:
        while i + 4 <= S:
            v0 = _masked(g[i], k[i])
            v1 = _masked(g[i + 1], k[i + 1])
            v2 = _masked(g[i + 2], k[i + 2])
            v3 = _masked(g[i + 3], k[i + 3])
            g0 += v0; x0 += v0 * (p[i] - m)
            g1 += v1; x1 += v1 * (p[i + 1] - m)
            g2 += v2; x2 += v2 * (p[i + 2] - m)
            g3 += v3; x3 += v3 * (p[i + 3] - m)
            i += 4
    while i < S:
        v0 = g[i] if k == NULL else _masked(g[i], k[i])
        g0 += v0; x0 += v0 * (p[i] - m)
        i += 1
    sum_g[0] += (g0 + g1) + (g2 + g3)
    sum_gx[0] += (x0 + x1) + (x2 + x3)


# (N, D) features (S = 1): a channel is a column, so these work on blocks of columns, each
# row's block added to per-column sums (whole vectors of columns at a time).
cdef enum:
    _BLOCK = 64


cdef void _feature_moments(const floating *x, Py_ssize_t N, Py_ssize_t D, Py_ssize_t c0,
                           Py_ssize_t c1, floating *mean, floating *var) noexcept nogil:
    """mean, var of columns c0 <= c < c1 of x (N, D), sums in double."""
    cdef double acc[_BLOCK]
    cdef double m[_BLOCK]
    cdef double d
    cdef Py_ssize_t w = c1 - c0, n, j
    cdef const floating *row
    for j in range(w):
        acc[j] = 0
    for n in range(N):
        row = x + n * D + c0
        for j in range(w):
            acc[j] += row[j]
    for j in range(w):
        m[j] = acc[j] / N
        acc[j] = 0
    for n in range(N):
        row = x + n * D + c0
        for j in range(w):
            d = row[j] - m[j]
            acc[j] += d * d
    for j in range(w):
        mean[c0 + j] = <floating>m[j]
        var[c0 + j] = <floating>(acc[j] / N)


cdef void _feature_grad_sums(const floating *g, const floating *k, const floating *x,
                             const floating *mean, Py_ssize_t N, Py_ssize_t D, Py_ssize_t c0,
                             Py_ssize_t c1, floating *sum_g, floating *sum_gx) noexcept nogil:
    """Column sums of g and of g * (x - mean) for columns c0 <= c < c1, in double (g masked
    by k)."""
    cdef double ag[_BLOCK]
    cdef double agx[_BLOCK]
    cdef floating masked[_BLOCK]
    cdef double v
    cdef Py_ssize_t w = c1 - c0, n, j
    for j in range(w):
        ag[j] = 0
        agx[j] = 0
    for n in range(N):
        if k == NULL:
            for j in range(w):
                v = g[n * D + c0 + j]
                ag[j] += v
                agx[j] += v * (<double>x[n * D + c0 + j] - mean[c0 + j])
        else:  # the row's masked block first: two loops that vectorize
            for j in range(w):
                masked[j] = _masked(g[n * D + c0 + j], k[n * D + c0 + j])
            for j in range(w):
                ag[j] += masked[j]
                agx[j] += masked[j] * (<double>x[n * D + c0 + j] - mean[c0 + j])
    for j in range(w):
        sum_g[c0 + j] = <floating>ag[j]
        sum_gx[c0 + j] = <floating>agx[j]


cdef Py_ssize_t _SERIAL_BELOW = 1 << 15
SERIAL_BELOW = _SERIAL_BELOW
"""Arrays with fewer elements run on one thread: waking the others costs more."""


cdef int _threads(Py_ssize_t size, bint serial) noexcept nogil:
    """The threads for an array of `size` elements: one when small, or when the caller says
    `serial` (BLAS's own threads are awake beside this kernel: `dualnet._threads`)."""
    return 1 if serial or size < _SERIAL_BELOW else dn_norm_max_threads()


def channel_moments(const floating[:, :, ::1] x, floating[::1] mean, floating[::1] var,
                    bint serial=False):
    """mean (C,) and biased variance (C,) of x (N, C, S) over n and s. Every function here
    runs on one thread with `serial`, else on OpenMP's threads from SERIAL_BELOW elements."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n, c
    cdef double M = <double>(N * S), m, q
    cdef Py_ssize_t block
    if S == 1:
        for block in prange((C + _BLOCK - 1) // _BLOCK, nogil=True, schedule="static",
                            num_threads=_threads(N * C, serial)):
            _feature_moments(&x[0, 0, 0], N, C, block * _BLOCK,
                             min(C, (block + 1) * _BLOCK), &mean[0], &var[0])
        return
    for c in prange(C, nogil=True, schedule="static",
                    num_threads=_threads(N * C * S, serial)):
        m = 0
        for n in range(N):
            m = m + _sum(&x[n, c, 0], S)
        m = m / M
        q = 0
        for n in range(N):
            q = q + _sum_squares(&x[n, c, 0], S, m)
        mean[c] = <floating>m
        var[c] = <floating>(q / M)


cdef inline floating _relu_if(floating v, bint relu) noexcept nogil:
    return 0 if relu and v < 0 else v


def channel_normalize(const floating[:, :, ::1] x, const floating[::1] mean,
                      const floating[::1] scale, const floating[::1] shift,
                      floating[:, :, ::1] out, bint relu=False, bint serial=False):
    """out (N, C, S) = (x - mean[c]) * scale[c] + shift[c]; with `relu`, max(that, 0)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n, c, i, plane
    cdef floating m, k, b
    cdef const floating *src
    cdef floating *dst
    if S == 1:  # a row of features at a time
        for n in prange(N, nogil=True, schedule="static",
                        num_threads=_threads(N * C, serial)):
            src = &x[n, 0, 0]
            dst = &out[n, 0, 0]
            for c in range(C):
                dst[c] = _relu_if((src[c] - mean[c]) * scale[c] + shift[c], relu)
        return
    for plane in prange(N * C, nogil=True, schedule="static",
                        num_threads=_threads(N * C * S, serial)):
        n = plane // C
        c = plane % C
        m = mean[c]
        k = scale[c]
        b = shift[c]
        src = &x[n, c, 0]
        dst = &out[n, c, 0]
        for i in range(S):
            dst[i] = _relu_if((src[i] - m) * k + b, relu)


def channel_grad_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                      const floating[::1] mean, floating[::1] sum_g, floating[::1] sum_gx,
                      keep=None, bint serial=False):
    """sum_g[c] = sum of dout[:, c], sum_gx[c] = sum of dout[:, c] * (x[:, c] - mean[c]);
    dout taken as 0 where `keep` (dout's shape) is not positive."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], S = dout.shape[2], n, c
    cdef double g, gx
    cdef Py_ssize_t block
    cdef const floating[:, :, ::1] kv
    cdef const floating *k = NULL
    if keep is not None:
        kv = keep
        k = &kv[0, 0, 0]
    if S == 1:
        for block in prange((C + _BLOCK - 1) // _BLOCK, nogil=True, schedule="static",
                            num_threads=_threads(N * C, serial)):
            _feature_grad_sums(&dout[0, 0, 0], k, &x[0, 0, 0], &mean[0], N, C,
                               block * _BLOCK, min(C, (block + 1) * _BLOCK), &sum_g[0],
                               &sum_gx[0])
        return
    for c in prange(C, nogil=True, schedule="static",
                    num_threads=_threads(N * C * S, serial)):
        g = 0
        gx = 0
        for n in range(N):
            _sums_of_grad(&dout[n, c, 0], _offset(k, (n * C + c) * S),
                          &x[n, c, 0], S, mean[c], &g, &gx)
        sum_g[c] = <floating>g
        sum_gx[c] = <floating>gx


def channel_normalize_grad(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                           const floating[::1] mean, const floating[::1] k1,
                           const floating[::1] offset, const floating[::1] k2,
                           floating[:, :, ::1] dx, keep=None, bint serial=False):
    """dx (N, C, S) = k1[c] * (dout - offset[c] - (x - mean[c]) * k2[c]); dout taken as 0
    where `keep` (dout's shape) is not positive."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], S = dout.shape[2], n, c, i, plane
    cdef floating m, a, o, b
    cdef const floating *g
    cdef const floating *p
    cdef const floating *q
    cdef floating *d
    cdef const floating[:, :, ::1] kv
    cdef const floating *k = NULL
    if keep is not None:
        kv = keep
        k = &kv[0, 0, 0]
    if S == 1:  # a row of features at a time
        for n in prange(N, nogil=True, schedule="static",
                        num_threads=_threads(N * C, serial)):
            g = &dout[n, 0, 0]
            q = _offset(k, n * C)
            p = &x[n, 0, 0]
            d = &dx[n, 0, 0]
            if q == NULL:
                for c in range(C):
                    d[c] = k1[c] * (g[c] - offset[c] - (p[c] - mean[c]) * k2[c])
            else:
                for c in range(C):
                    d[c] = k1[c] * (_masked(g[c], q[c]) - offset[c]
                                    - (p[c] - mean[c]) * k2[c])
        return
    for plane in prange(N * C, nogil=True, schedule="static",
                        num_threads=_threads(N * C * S, serial)):
        n = plane // C
        c = plane % C
        m = mean[c]
        a = k1[c]
        o = offset[c]
        b = k2[c]
        g = &dout[n, c, 0]
        q = _offset(k, (n * C + c) * S)
        p = &x[n, c, 0]
        d = &dx[n, c, 0]
        if q == NULL:
            for i in range(S):
                d[i] = a * (g[i] - o - (p[i] - m) * b)
        else:
            for i in range(S):
                d[i] = a * (_masked(g[i], q[i]) - o - (p[i] - m) * b)
