# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU tile transforms of the Winograd F(2x2, 3x3) convolution, for the `numpy` backend.

Built as `dualnet.kernels._winograd`. The spec, with the transform matrices and layouts, is
the `winograd_*` functions of `dualnet/kernels/reference.py`; these compute the same values
with the matrices multiplied out into adds and subtracts:

- `winograd_input(x (N, C, H, W), pad, V (16, C, N*th*tw))`: BT d BT^T of each input tile.
- `winograd_output(M (16, F, N*th*tw), bias (F,) or None, y (N, F, Ho, Wo))`.
- `winograd_output_grad(dout (N, F, Ho, Wo), dM (16, F, N*th*tw))`.
- `winograd_input_grad(dV (16, C, N*th*tw), pad, dx (N, C, H, W))`: tiles overlap, and
  each (n, c) plane sums its tiles in a fixed order inside one thread: deterministic.

Each kernel fills arrays the caller provides (C-contiguous, matching dtypes), one (n, channel)
plane per loop iteration, in parallel under OpenMP when the extension was built with it.
Planes are visited channel-major: consecutive iterations fill consecutive tiles of the same
coefficient rows, so each thread writes long contiguous runs.
"""

import numpy as np

from cython.parallel cimport prange
from libc.string cimport memcpy, memset

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


# -- planes --------------------------------------------------------------------------------
# Coefficient k of tile t = ty*tw + tx lives at coeffs[k * ks + t], so one row of tiles is a
# contiguous run of `tw` values in each of the 16 coefficient streams. The kernels work on one
# row of tiles at a time, at most _SEG tiles wide (stack buffers; wider planes take several
# segments), and apply each 4-point transform along whole rows: first down the 4 image rows
# (contiguous, vectorizable), then across (stride-2 reads within those rows).
cdef enum:
    _SEG = 64
    _SEG_COLS = 2 * _SEG + 2


cdef inline void _load_row(const floating *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t r,
                           Py_ssize_t c0, Py_ssize_t n, floating *dst) noexcept nogil:
    """dst[0:n] = x[r, c0:c0+n], zeros outside the (H, W) plane."""
    cdef Py_ssize_t lo = 0, hi = n
    if r < 0 or r >= H:
        memset(dst, 0, n * sizeof(floating))
        return
    if c0 < 0:
        lo = min(-c0, n)
    if c0 + n > W:
        hi = max(W - c0, lo)
    memset(dst, 0, lo * sizeof(floating))
    memcpy(dst + lo, x + r * W + c0 + lo, (hi - lo) * sizeof(floating))
    memset(dst + hi, 0, (n - hi) * sizeof(floating))


cdef void _input_plane(const floating *x, floating *V, Py_ssize_t ks, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t pad, Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    """V = BT d BT^T for every tile d of one plane, BT = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0],
    [0,1,0,-1]]: rows first (t = BT d), then columns (v = t BT^T)."""
    cdef floating d[4 * _SEG_COLS]
    cdef floating t[4 * _SEG_COLS]
    cdef floating *tk
    cdef floating *out
    cdef Py_ssize_t ty, seg, tx0, nt, nc, c, i, k, tx
    for ty in range(th):
        for seg in range((tw + _SEG - 1) // _SEG):
            tx0 = seg * _SEG
            nt = min(_SEG, tw - tx0)
            nc = 2 * nt + 2
            for i in range(4):
                _load_row(x, H, W, 2 * ty - pad + i, 2 * tx0 - pad, nc, d + i * _SEG_COLS)
            for c in range(nc):
                t[c] = d[c] - d[2 * _SEG_COLS + c]
                t[_SEG_COLS + c] = d[_SEG_COLS + c] + d[2 * _SEG_COLS + c]
                t[2 * _SEG_COLS + c] = d[2 * _SEG_COLS + c] - d[_SEG_COLS + c]
                t[3 * _SEG_COLS + c] = d[_SEG_COLS + c] - d[3 * _SEG_COLS + c]
            for k in range(4):
                tk = t + k * _SEG_COLS
                out = V + 4 * k * ks + ty * tw + tx0
                for tx in range(nt):
                    out[tx] = tk[2 * tx] - tk[2 * tx + 2]
                    out[ks + tx] = tk[2 * tx + 1] + tk[2 * tx + 2]
                    out[2 * ks + tx] = tk[2 * tx + 2] - tk[2 * tx + 1]
                    out[3 * ks + tx] = tk[2 * tx + 1] - tk[2 * tx + 3]


cdef void _input_grad_plane(const floating *dV, floating *dx, Py_ssize_t ks, Py_ssize_t H,
                            Py_ssize_t W, Py_ssize_t pad, Py_ssize_t th,
                            Py_ssize_t tw) noexcept nogil:
    """Adjoint of `_input_plane` (d = BT^T v BT per tile), summed into one zeroed plane.

    Tiles overlap by two rows and columns; they are added in a fixed order (tile rows, then
    tiles along a row), so the result is deterministic.
    """
    cdef floating g[4 * _SEG_COLS]
    cdef const floating *vk
    cdef floating *gk
    cdef floating *row
    cdef Py_ssize_t ty, seg, tx0, nt, nc, c, c0, lo, hi, i, k, tx, r
    memset(dx, 0, H * W * sizeof(floating))
    for ty in range(th):
        for seg in range((tw + _SEG - 1) // _SEG):
            tx0 = seg * _SEG
            nt = min(_SEG, tw - tx0)
            nc = 2 * nt + 2
            for k in range(4):  # across: g_k = v_k BT, overlapping tiles summed
                vk = dV + 4 * k * ks + ty * tw + tx0
                gk = g + k * _SEG_COLS
                # tile tx adds (a, b - e + f, b + e - a, -f) to columns 2tx .. 2tx+3, so
                # column 2m gets a[m] + (b + e - a)[m-1] and 2m+1 gets (b - e + f)[m] - f[m-1]
                gk[0] = vk[0]
                gk[1] = vk[ks] - vk[2 * ks] + vk[3 * ks]
                for tx in range(1, nt):
                    gk[2 * tx] = vk[tx] + vk[ks + tx - 1] + vk[2 * ks + tx - 1] - vk[tx - 1]
                    gk[2 * tx + 1] = (vk[ks + tx] - vk[2 * ks + tx] + vk[3 * ks + tx]
                                      - vk[3 * ks + tx - 1])
                gk[2 * nt] = vk[ks + nt - 1] + vk[2 * ks + nt - 1] - vk[nt - 1]
                gk[2 * nt + 1] = -vk[3 * ks + nt - 1]
            # down: image row i of the tile gets (BT^T g)_i
            c0 = 2 * tx0 - pad
            lo = max(-c0, 0)
            hi = min(W - c0, nc)
            for i in range(4):
                r = 2 * ty - pad + i
                if r < 0 or r >= H or lo >= hi:
                    continue
                row = dx + r * W + c0
                if i == 0:
                    for c in range(lo, hi):
                        row[c] += g[c]
                elif i == 1:
                    for c in range(lo, hi):
                        row[c] += g[_SEG_COLS + c] - g[2 * _SEG_COLS + c] + g[3 * _SEG_COLS + c]
                elif i == 2:
                    for c in range(lo, hi):
                        row[c] += g[_SEG_COLS + c] + g[2 * _SEG_COLS + c] - g[c]
                else:
                    for c in range(lo, hi):
                        row[c] -= g[3 * _SEG_COLS + c]


cdef void _output_plane(const floating *M, floating *y, Py_ssize_t ks, floating bias,
                        Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th,
                        Py_ssize_t tw) noexcept nogil:
    """y = AT m AT^T + bias for every tile of one output plane, AT = [[1,1,1,0], [0,1,-1,-1]]:
    down the coefficient rows first (r = AT m), then across."""
    cdef floating r[8 * _SEG]
    cdef floating out[2 * _SEG_COLS]
    cdef const floating *m
    cdef Py_ssize_t ty, seg, tx0, nt, tx, l, oy, n
    for ty in range(th):
        for seg in range((tw + _SEG - 1) // _SEG):
            tx0 = seg * _SEG
            nt = min(_SEG, tw - tx0)
            for l in range(4):
                m = M + l * ks + ty * tw + tx0
                for tx in range(nt):
                    r[l * _SEG + tx] = m[tx] + m[4 * ks + tx] + m[8 * ks + tx]
                    r[(4 + l) * _SEG + tx] = m[4 * ks + tx] - m[8 * ks + tx] - m[12 * ks + tx]
            for tx in range(nt):
                out[2 * tx] = r[tx] + r[_SEG + tx] + r[2 * _SEG + tx] + bias
                out[2 * tx + 1] = r[_SEG + tx] - r[2 * _SEG + tx] - r[3 * _SEG + tx] + bias
                out[_SEG_COLS + 2 * tx] = (r[4 * _SEG + tx] + r[5 * _SEG + tx]
                                           + r[6 * _SEG + tx] + bias)
                out[_SEG_COLS + 2 * tx + 1] = (r[5 * _SEG + tx] - r[6 * _SEG + tx]
                                               - r[7 * _SEG + tx] + bias)
            n = min(2 * nt, Wo - 2 * tx0)  # an odd Wo drops the last tile's second column
            oy = 2 * ty
            memcpy(y + oy * Wo + 2 * tx0, out, n * sizeof(floating))
            if oy + 1 < Ho:
                memcpy(y + (oy + 1) * Wo + 2 * tx0, out + _SEG_COLS, n * sizeof(floating))


cdef void _output_grad_plane(const floating *dy, floating *dM, Py_ssize_t ks, Py_ssize_t Ho,
                             Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    """Adjoint of `_output_plane`: dm = AT^T g AT for each 2x2 tile g of dy (zeros beyond)."""
    cdef floating g[2 * _SEG_COLS]
    cdef floating r[8 * _SEG]
    cdef floating *out
    cdef Py_ssize_t ty, seg, tx0, nt, tx, i
    for ty in range(th):
        for seg in range((tw + _SEG - 1) // _SEG):
            tx0 = seg * _SEG
            nt = min(_SEG, tw - tx0)
            for i in range(2):  # the tile row's two output rows, zero-padded to 2*nt
                _load_row(dy, Ho, Wo, 2 * ty + i, 2 * tx0, 2 * nt, g + i * _SEG_COLS)
            for i in range(2):  # across: r_i = g_i AT
                for tx in range(nt):
                    r[4 * i * _SEG + tx] = g[i * _SEG_COLS + 2 * tx]
                    r[(4 * i + 1) * _SEG + tx] = (g[i * _SEG_COLS + 2 * tx]
                                                  + g[i * _SEG_COLS + 2 * tx + 1])
                    r[(4 * i + 2) * _SEG + tx] = (g[i * _SEG_COLS + 2 * tx]
                                                  - g[i * _SEG_COLS + 2 * tx + 1])
                    r[(4 * i + 3) * _SEG + tx] = -g[i * _SEG_COLS + 2 * tx + 1]
            for i in range(4):  # down: dm = AT^T r
                out = dM + i * ks + ty * tw + tx0
                for tx in range(nt):
                    out[tx] = r[i * _SEG + tx]
                    out[4 * ks + tx] = r[i * _SEG + tx] + r[(4 + i) * _SEG + tx]
                    out[8 * ks + tx] = r[i * _SEG + tx] - r[(4 + i) * _SEG + tx]
                    out[12 * ks + tx] = -r[(4 + i) * _SEG + tx]


# -- entry points --------------------------------------------------------------------------
def _check(name, a, ndim, dtype=None):
    """Real exceptions, not asserts: kernels read raw memory."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _tiles(x_shape, pad):
    N, C, H, W = x_shape
    if pad < 0 or H + 2 * pad < 3 or W + 2 * pad < 3:
        raise ValueError(f"bad Winograd geometry: plane ({H}, {W}), 3x3 window, pad {pad}")
    return (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2


def _check_coeffs(name, a, channels, tiles, dtype):
    _check(name, a, 3, dtype)
    if a.shape != (16, channels, tiles):
        raise ValueError(f"{name} must have shape {(16, channels, tiles)}, got {a.shape}")


def _input_fused(const floating[:, :, :, ::1] x, floating[:, :, ::1] V, Py_ssize_t pad,
                 Py_ssize_t th, Py_ssize_t tw):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t ks = V.shape[1] * V.shape[2], plane, n, c
    for plane in prange(N * C, nogil=True, schedule="static"):
        c = plane // N
        n = plane % N
        _input_plane(&x[n, c, 0, 0], &V[0, c, n * th * tw], ks, H, W, pad, th, tw)


def winograd_input(x, pad, V):
    """x (N, C, H, W) -> V (16, C, N*th*tw), filled in place; returns V."""
    _check("x", x, 4)
    th, tw = _tiles(x.shape, pad)
    _check_coeffs("V", V, x.shape[1], x.shape[0] * th * tw, x.dtype)
    _input_fused(x, V, pad, th, tw)
    return V


def _input_grad_fused(const floating[:, :, ::1] dV, floating[:, :, :, ::1] dx, Py_ssize_t pad,
                      Py_ssize_t th, Py_ssize_t tw):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t ks = dV.shape[1] * dV.shape[2], plane, n, c
    for plane in prange(N * C, nogil=True, schedule="static"):
        c = plane // N
        n = plane % N
        _input_grad_plane(&dV[0, c, n * th * tw], &dx[n, c, 0, 0], ks, H, W, pad, th, tw)


def winograd_input_grad(dV, pad, dx):
    """dV (16, C, N*th*tw) -> dx (N, C, H, W), filled in place; returns dx."""
    _check("dx", dx, 4)
    th, tw = _tiles(dx.shape, pad)
    _check_coeffs("dV", dV, dx.shape[1], dx.shape[0] * th * tw, dx.dtype)
    _input_grad_fused(dV, dx, pad, th, tw)
    return dx


def _output_fused(const floating[:, :, ::1] M, const floating[::1] bias,
                  floating[:, :, :, ::1] y):
    cdef Py_ssize_t N = y.shape[0], F = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2
    cdef Py_ssize_t ks = M.shape[1] * M.shape[2], plane, n, f
    for plane in prange(N * F, nogil=True, schedule="static"):
        f = plane // N
        n = plane % N
        _output_plane(&M[0, f, n * th * tw], &y[n, f, 0, 0], ks, bias[f], Ho, Wo, th, tw)


def winograd_output(M, bias, y):
    """M (16, F, N*th*tw) -> y (N, F, Ho, Wo) plus bias (F,) (None: zeros), in place; returns y."""
    _check("y", y, 4)
    N, F, Ho, Wo = y.shape
    _check_coeffs("M", M, F, N * ((Ho + 1) // 2) * ((Wo + 1) // 2), y.dtype)
    if bias is None:
        bias = np.zeros(F, dtype=y.dtype)
    _check("bias", bias, 1, y.dtype)
    if bias.shape != (F,):
        raise ValueError(f"bias must have shape {(F,)}, got {bias.shape}")
    _output_fused(M, bias, y)
    return y


def _output_grad_fused(const floating[:, :, :, ::1] dy, floating[:, :, ::1] dM):
    cdef Py_ssize_t N = dy.shape[0], F = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2
    cdef Py_ssize_t ks = dM.shape[1] * dM.shape[2], plane, n, f
    for plane in prange(N * F, nogil=True, schedule="static"):
        f = plane // N
        n = plane % N
        _output_grad_plane(&dy[n, f, 0, 0], &dM[0, f, n * th * tw], ks, Ho, Wo, th, tw)


def winograd_output_grad(dout, dM):
    """dout (N, F, Ho, Wo) -> dM (16, F, N*th*tw), filled in place; returns dM."""
    _check("dout", dout, 4)
    N, F, Ho, Wo = dout.shape
    _check_coeffs("dM", dM, F, N * ((Ho + 1) // 2) * ((Wo + 1) // 2), dout.dtype)
    _output_grad_fused(dout, dM)
    return dM
