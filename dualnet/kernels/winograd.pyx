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
coefficient rows, so each thread writes long contiguous runs. These serve the chunked path.

The fused path (`winograd_conv_forward`, `winograd_conv_backward`) runs a whole convolution one
sample per thread at a time, channels-last, with the vector kernels of `microkernels.h`.
"""

import numpy as np

from cython.parallel cimport parallel, prange, threadid
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

# -- kernels of the fused convolution (microkernels.h) -------------------------------------
from dualnet.kernels.microkernels cimport (
    DN_STRIDE,
    dn_f32,
    dn_f64,
    dn_gemm,
    dn_kernel,
    dn_max_threads,
    dn_select,
    dn_use,
)

dn_select()
FUSED_KERNEL = dn_kernel.decode("ascii")
"""The instruction set of the fused path's kernels (small GEMMs and tile transforms), the best
this CPU runs: 'avx512', 'avx2', 'vector' (16-byte vectors) or 'scalar' (a compiler without
vector extensions: no fused kernels, and the layers keep the chunked path)."""


def use_gemm_kernel(name):
    """Run the fused kernels of instruction set `name` from now on (tests check every one this
    CPU has); returns whether this CPU and build have it. `FUSED_KERNEL` keeps the best one."""
    return bool(dn_use(name.encode("ascii")))


# The tile transforms of one sample (see `_conv_forward_fused`); `bias` only for the output.
cdef inline void _input_tiles(const floating *xs, floating *Vt, Py_ssize_t C, Py_ssize_t th,
                              Py_ssize_t tw) noexcept nogil:
    if floating is float:
        dn_f32.input(xs, Vt, NULL, C, th, tw)
    else:
        dn_f64.input(xs, Vt, NULL, C, th, tw)


cdef inline void _input_tiles_grad(const floating *dVt, floating *dxs, Py_ssize_t C,
                                   Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    if floating is float:
        dn_f32.input_grad(dVt, dxs, NULL, C, th, tw)
    else:
        dn_f64.input_grad(dVt, dxs, NULL, C, th, tw)


cdef inline void _output_tiles(const floating *Mt, const floating *bias, floating *ys,
                               Py_ssize_t F, Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    if floating is float:
        dn_f32.output(Mt, ys, bias, F, th, tw)
    else:
        dn_f64.output(Mt, ys, bias, F, th, tw)


cdef inline void _output_tiles_grad(const floating *dys, floating *dMt, Py_ssize_t F,
                                    Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    if floating is float:
        dn_f32.output_grad(dys, dMt, NULL, F, th, tw)
    else:
        dn_f64.output_grad(dys, dMt, NULL, F, th, tw)


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


# -- fused convolution ---------------------------------------------------------------------
# One sample at a time per thread, everything in the thread's slice of a workspace, so that
# nothing but the sample's input and output crosses main memory:
#
#   x[n] (C, H, W) --transpose--> xs (Hp, Wp, C), zero-bordered
#   xs --input transform--> Vt (16, T, C)        T = th*tw tiles, channels innermost
#   Mt[k] = Vt[k] @ U_t[k]                        (T, F) = (T, C) @ (C, F), k = 0..15
#   Mt --output transform + bias--> ys (2th, 2tw, F) --transpose--> y[n] (F, Ho, Wo)
#
# and backward the adjoints, with dU[k] += dMt[k]^T @ Vt[k] summed per thread. Channels (or
# filters) innermost let every transform work on whole vectors of contiguous channels
# (microkernels.h), with no stride-2 access and no per-row copies; the two transposes per
# array move a quarter as much data as the coefficients. Workspace layouts are
# `fused_workspace`'s.

cdef void _to_channels_last(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            floating *dst, Py_ssize_t row) noexcept nogil:
    """dst[(h * row + w) * C + c] = src[(c * H + h) * W + w]: a sample's planes (C, H, W) into
    the workspace's channels-last layout, whose rows hold `row` positions.

    The loop runs through the source in memory order: a sample in main memory then streams in,
    while the scattered stores land in the cached workspace. On conv (c) of bench/ this order
    beat both 16x16 blocks and a loop over the destination's rows (one A/B each, 10-25%, on a
    noisy VM)."""
    cdef Py_ssize_t c, h, w
    cdef const floating *plane
    for c in range(C):
        plane = src + c * H * W
        for h in range(H):
            for w in range(W):
                dst[(h * row + w) * C + c] = plane[h * W + w]


cdef void _from_channels_last(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t row, floating *dst) noexcept nogil:
    """The inverse of `_to_channels_last`, in the destination's memory order."""
    cdef Py_ssize_t c, h, w
    cdef floating *plane
    for c in range(C):
        plane = dst + c * H * W
        for h in range(H):
            for w in range(W):
                plane[h * W + w] = src[(h * row + w) * C + c]


def _conv_forward_fused(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U_t,
                        const floating[::1] bias, floating[:, :, :, ::1] y,
                        floating[:, ::1] ws, Py_ssize_t pad):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2, T = th * tw
    cdef Py_ssize_t Wp = 2 * tw + 2, xs_size = (2 * th + 2) * Wp * C
    cdef int nthreads = ws.shape[0]
    cdef floating *xs = NULL
    cdef floating *Vt = NULL
    cdef floating *Mt = NULL
    cdef floating *ys = NULL
    cdef Py_ssize_t n, k
    with nogil, parallel(num_threads=nthreads):
        xs = &ws[threadid(), 0]
        Vt = xs + xs_size
        Mt = Vt + 16 * DN_STRIDE(T, C)
        ys = Mt + 16 * DN_STRIDE(T, F)
        memset(xs, 0, xs_size * sizeof(floating))  # the border stays zero
        for n in prange(N, schedule="static"):
            _to_channels_last(&x[n, 0, 0, 0], C, H, W, xs + (pad * Wp + pad) * C, Wp)
            _input_tiles(xs, Vt, C, th, tw)
            for k in range(16):
                dn_gemm(T, F, C, Vt + k * DN_STRIDE(T, C), C, 1, &U_t[k, 0, 0], F,
                      Mt + k * DN_STRIDE(T, F), F, 0)
            _output_tiles(Mt, &bias[0], ys, F, th, tw)
            _from_channels_last(ys, F, Ho, Wo, 2 * tw, &y[n, 0, 0, 0])


def _conv_backward_fused(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                         const floating[:, :, ::1] U, floating[:, :, :, ::1] dx,
                         floating[:, ::1] ws, Py_ssize_t pad, bint need_dx):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2, T = th * tw
    cdef Py_ssize_t Wp = 2 * tw + 2, xs_size = (2 * th + 2) * Wp * C, ys_size = 4 * T * F
    cdef int nthreads = ws.shape[0]
    cdef floating *dU = NULL
    cdef floating *xs = NULL
    cdef floating *Vt = NULL
    cdef floating *dys = NULL
    cdef floating *dMt = NULL
    cdef floating *dVt = NULL
    cdef floating *dxs = NULL
    cdef Py_ssize_t n, k
    cdef int t
    # every row's share of dU starts at zero, rows of threads that never start included (the
    # OpenMP runtime may give fewer threads than asked; without OpenMP there is one)
    for t in range(nthreads):
        memset(&ws[t, 0], 0, 16 * F * C * sizeof(floating))
    with nogil, parallel(num_threads=nthreads):
        dU = &ws[threadid(), 0]  # (16, F, C): this thread's share of the filter gradient
        xs = dU + 16 * F * C
        Vt = xs + xs_size
        dys = Vt + 16 * DN_STRIDE(T, C)  # (2th, 2tw, F): dout[n], zeros beyond (Ho, Wo)
        dMt = dys + ys_size
        dVt = dMt + 16 * DN_STRIDE(T, F)
        dxs = dVt + 16 * DN_STRIDE(T, C)
        memset(xs, 0, xs_size * sizeof(floating))
        memset(dys, 0, ys_size * sizeof(floating))
        for n in prange(N, schedule="static"):
            _to_channels_last(&x[n, 0, 0, 0], C, H, W, xs + (pad * Wp + pad) * C, Wp)
            _input_tiles(xs, Vt, C, th, tw)
            _to_channels_last(&dy[n, 0, 0, 0], F, Ho, Wo, dys, 2 * tw)
            _output_tiles_grad(dys, dMt, F, th, tw)
            for k in range(16):  # dU[k] += dMt[k]^T @ Vt[k]: (F, T) @ (T, C)
                dn_gemm(F, C, T, dMt + k * DN_STRIDE(T, F), 1, F, Vt + k * DN_STRIDE(T, C), C,
                      dU + k * F * C, C, 1)
            if need_dx:
                for k in range(16):  # dVt[k] = dMt[k] @ U[k]: (T, F) @ (F, C)
                    dn_gemm(T, C, F, dMt + k * DN_STRIDE(T, F), F, 1, &U[k, 0, 0], C,
                          dVt + k * DN_STRIDE(T, C), C, 0)
                memset(dxs, 0, xs_size * sizeof(floating))
                _input_tiles_grad(dVt, dxs, C, th, tw)
                _from_channels_last(dxs + (pad * Wp + pad) * C, C, H, W, Wp, &dx[n, 0, 0, 0])


def max_threads():
    """The threads the fused kernels run on (OpenMP's count; 1 when built without it)."""
    return dn_max_threads()


def fused_workspace(C, F, H, W, pad, backward):
    """Elements of one thread's workspace for `winograd_conv_forward` (backward=False) or
    `winograd_conv_backward`, rounded up to whole 128-byte lines of float64."""
    th, tw = _tiles((1, C, H, W), pad)
    T = th * tw
    xs = (2 * th + 2) * (2 * tw + 2) * C
    if backward:  # dU, xs, Vt, dys, dMt, dVt, dxs
        size = 16 * F * C + xs + 4 * T * F + 16 * (2 * (T * C + 16) + T * F + 16) + xs
    else:  # xs, Vt, Mt, ys
        size = xs + 16 * (T * C + 16) + 16 * (T * F + 16) + 4 * T * F
    return (size + 15) // 16 * 16


def _check_workspace(ws, C, F, H, W, pad, backward, dtype):
    _check("ws", ws, 2, dtype)
    need = fused_workspace(C, F, H, W, pad, backward)
    if ws.shape[0] < 1 or ws.shape[1] < need:
        raise ValueError(f"ws must have shape (threads >= 1, >= {need}), got {ws.shape}")


def _check_fused_kernels():
    if FUSED_KERNEL == "scalar":
        raise RuntimeError("the fused Winograd kernels need a C compiler with vector "
                           "extensions (GCC or clang); this build has none")


def _check_filters(name, U, shape, dtype):
    _check(name, U, 3, dtype)
    if U.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {U.shape}")


def winograd_conv_forward(x, U_t, bias, pad, y, ws):
    """The whole forward convolution, fused per sample: x (N, C, H, W), U_t (16, C, F) (the
    transformed filters, transposed), bias (F,) -> y (N, F, Ho, Wo), in place; returns y.

    ws: (threads, >= fused_workspace(..., backward=False)) scratch, one row per thread
    (`max_threads()` rows use every core).
    """
    _check("x", x, 4)
    _check("y", y, 4, x.dtype)
    _check("bias", bias, 1, x.dtype)
    N, C, H, W = x.shape
    F = bias.shape[0]
    _tiles(x.shape, pad)
    _check_filters("U_t", U_t, (16, C, F), x.dtype)
    if y.shape != (N, F, H + 2 * pad - 2, W + 2 * pad - 2):
        raise ValueError(f"y must have shape {(N, F, H + 2 * pad - 2, W + 2 * pad - 2)}, "
                         f"got {y.shape}")
    _check_workspace(ws, C, F, H, W, pad, False, x.dtype)
    _check_fused_kernels()
    _conv_forward_fused(x, U_t, bias, y, ws, pad)
    return y


def winograd_conv_backward(dout, x, U, pad, dx, ws):
    """Gradients of `winograd_conv_forward`, fused per sample: dout (N, F, Ho, Wo), x, U
    (16, F, C) (the transformed filters) -> dx (N, C, H, W) filled in place (or None:
    skipped), and returns dU (16, F, C), the gradient of U.

    ws: (threads, >= fused_workspace(..., backward=True)); each thread sums its samples'
    share of dU in its row, and the rows are added in order at the end.
    """
    _check("x", x, 4)
    _check("dout", dout, 4, x.dtype)
    N, C, H, W = x.shape
    F = dout.shape[1]
    _tiles(x.shape, pad)
    _check_filters("U", U, (16, F, C), x.dtype)
    if dout.shape != (N, F, H + 2 * pad - 2, W + 2 * pad - 2):
        raise ValueError(f"dout must have shape {(N, F, H + 2 * pad - 2, W + 2 * pad - 2)}, "
                         f"got {dout.shape}")
    if dx is not None:
        _check("dx", dx, 4, x.dtype)
        if dx.shape != x.shape:
            raise ValueError(f"dx must have shape {x.shape}, got {dx.shape}")
    _check_workspace(ws, C, F, H, W, pad, True, x.dtype)
    _check_fused_kernels()
    skipped = np.empty((0, 0, 0, 0), dtype=x.dtype)  # a typed stand-in, never indexed
    _conv_backward_fused(dout, x, U, skipped if dx is None else dx, ws, pad, dx is not None)
    return ws[:, :16 * F * C].sum(axis=0).reshape(16, F, C)


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
