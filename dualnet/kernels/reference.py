"""Pure array-namespace kernels: the fallback when no compiled kernel covers a case.

Every function takes the array module `xp` (numpy or cupy) first and works on any backend.
They loop over the (small) window offsets and do whole-array slicing inside, which is fast
enough to be useful and simple enough to read. Geometry is validated by the layers before
these are called; outputs keep the input dtype.
"""

from __future__ import annotations


def _out_size(size, window, pad, stride):
    return (size + 2 * pad - window) // stride + 1


def _strides(stride):
    """An int (both axes) or a (rows, columns) pair -> (sh, sw)."""
    return (stride, stride) if isinstance(stride, int) else tuple(stride)


def im2col(xp, x, HH, WW, pad, stride):
    """x (N, C, H, W) -> cols (N, C*HH*WW, Ho*Wo), rows ordered (c, hh, ww).

    `stride`: an int, or a (rows, columns) pair.
    """
    N, C, H, W = x.shape
    sh, sw = _strides(stride)
    Ho, Wo = _out_size(H, HH, pad, sh), _out_size(W, WW, pad, sw)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    cols = xp.empty((N, C, HH, WW, Ho, Wo), dtype=x.dtype)
    for i in range(HH):
        for j in range(WW):
            cols[:, :, i, j] = x_pad[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw]
    return cols.reshape(N, C * HH * WW, Ho * Wo)


def col2im(xp, cols, x_shape, HH, WW, pad, stride):
    """Adjoint of `im2col`: cols (N, C*HH*WW, Ho*Wo) -> dx (N, C, H, W), overlaps summed.

    The sum runs over window offsets in a fixed order, so results are deterministic.
    """
    N, C, H, W = x_shape
    sh, sw = _strides(stride)
    Ho, Wo = _out_size(H, HH, pad, sh), _out_size(W, WW, pad, sw)
    cols = cols.reshape(N, C, HH, WW, Ho, Wo)
    dx_pad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(HH):
        for j in range(WW):
            dx_pad[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw] += cols[:, :, i, j]
    if pad:
        return xp.ascontiguousarray(dx_pad[:, :, pad:pad + H, pad:pad + W])
    return dx_pad


def rows_to_nchw(xp, rows, bias, out_shape, q=1):
    """The fast convolution's GEMM rows (q*F, N*(Ho/q)*Wo) plus bias (F,) -> (N, F, Ho, Wo).

    Row s*F + f, column (n, hp, wo) holds output (n, f, q*hp + s, wo): q = 1, or 2 when the
    host convolution computes vertical output pairs.
    """
    N, F, Ho, Wo = out_shape
    nchw = rows.reshape(q, F, N, Ho // q, Wo).transpose(2, 1, 3, 0, 4).reshape(out_shape)
    return nchw + bias[:, None, None]


def nchw_to_rows(xp, dout, q=1):
    """The inverse layout change of `rows_to_nchw` (no bias): (N, F, Ho, Wo) -> rows."""
    N, F, Ho, Wo = dout.shape
    rows = dout.reshape(N, F, Ho // q, q, Wo).transpose(3, 1, 0, 2, 4)
    return xp.ascontiguousarray(rows).reshape(q * F, N * (Ho // q) * Wo)


def _depthwise_taps(x_pad, i, j, stride, Ho, Wo):
    """The inputs tap (i, j) of every output position sees: (N, C, 1, Ho, Wo) of x_pad."""
    return x_pad[:, :, None, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]


def depthwise_forward(xp, x, w, bias, stride, pad, Ho, Wo):
    """Depthwise convolution (groups = C): x (N, C, H, W), w (C*m, 1, HH, WW), bias (C*m,)
    -> out (N, C*m, Ho, Wo); filter f sees input channel f // m (m: the channel multiplier).

    (Ho, Wo) may be the floor of the windows that fit: the taps start at the padded origin.
    """
    N, C = x.shape[:2]
    F, _, HH, WW = w.shape
    m = F // C
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    taps = w.reshape(C, m, HH, WW)
    out = xp.zeros((N, C, m, Ho, Wo), dtype=x.dtype)
    for i in range(HH):
        for j in range(WW):
            out += _depthwise_taps(x_pad, i, j, stride, Ho, Wo) * taps[:, :, i, j, None, None]
    out += bias.reshape(C, m)[:, :, None, None]
    return out.reshape(N, F, Ho, Wo)


def depthwise_backward(xp, dout, x, w, stride, pad, need_dx=True):
    """Gradients of `depthwise_forward` (without the bias): dout (N, C*m, Ho, Wo) ->
    dx (N, C, H, W) or None, dw (C*m, 1, HH, WW). Sums run over taps in a fixed order."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    m, (Ho, Wo) = F // C, dout.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    dout5 = dout.reshape(N, C, m, Ho, Wo)
    taps = w.reshape(C, m, HH, WW)
    dw = xp.empty((C, m, HH, WW), dtype=x.dtype)
    dx_pad = xp.zeros(x_pad.shape, dtype=x.dtype) if need_dx else None
    for i in range(HH):
        for j in range(WW):
            dw[:, :, i, j] = (dout5 * _depthwise_taps(x_pad, i, j, stride, Ho, Wo)).sum(
                axis=(0, 3, 4))
            if need_dx:
                share = (dout5 * taps[:, :, i, j, None, None]).sum(axis=2)
                dx_pad[:, :, i:i + stride * (Ho - 1) + 1:stride,
                       j:j + stride * (Wo - 1) + 1:stride] += share
    dx = None
    if need_dx:
        dx = xp.ascontiguousarray(dx_pad[:, :, pad:pad + H, pad:pad + W]) if pad else dx_pad
    return dx, dw.reshape(F, 1, HH, WW)


def _windows(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> (N, C, Ho, Wo, ph*pw): every pooling window, flattened row-major."""
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, ph, 0, stride), _out_size(W, pw, 0, stride)
    win = xp.empty((N, C, Ho, Wo, ph * pw), dtype=x.dtype)
    for i in range(ph):
        for j in range(pw):
            win[..., i * pw + j] = x[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
    return win


def maxpool_forward(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int64 into the H*W plane."""
    W = x.shape[3]
    win = _windows(xp, x, ph, pw, stride)
    k = win.argmax(axis=-1)  # first maximum on ties, like the naive loop
    out = xp.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    Ho, Wo = out.shape[2:]
    rows = (xp.arange(Ho) * stride)[:, None] + k // pw
    cols = (xp.arange(Wo) * stride)[None, :] + k % pw
    return out, (rows * W + cols).astype(xp.int64)


def maxpool_backward(xp, dout, argmax, x_shape, ph, pw, stride):
    """Route dout (N, C, Ho, Wo) to the argmax positions -> dx (N, C, H, W)."""
    N, C, H, W = x_shape
    plane = xp.arange(N * C, dtype=xp.int64)[:, None] * (H * W)
    flat = (plane + argmax.reshape(N * C, -1)).ravel()
    # bincount sums every contribution to a position in a fixed order: deterministic.
    dx = xp.bincount(flat, weights=dout.ravel(), minlength=N * C * H * W)
    return dx.astype(dout.dtype, copy=False).reshape(x_shape)


def avgpool_forward(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> mean over each ph x pw window, (N, C, Ho, Wo)."""
    return _windows(xp, x, ph, pw, stride).mean(axis=-1, dtype=x.dtype)


def avgpool_backward(xp, dout, x_shape, ph, pw, stride):
    """Spread dout (N, C, Ho, Wo) evenly over each window -> dx (N, C, H, W)."""
    Ho, Wo = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    share = dout / dout.dtype.type(ph * pw)
    for i in range(ph):
        for j in range(pw):
            dx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += share
    return dx


# -- Winograd F(2x2, 3x3) ------------------------------------------------------------------
# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016): one 2x2 tile of a
# 3x3 stride-1 correlation is AT [(G g G^T) * (BT d BT^T)] AT^T for the 4x4 input tile d under
# it, 16 multiplies instead of 36. Over a layer the elementwise products become 16 GEMMs,
# one per transform coefficient: M[k] (F, T) = U[k] (F, C) @ V[k] (C, T), T the tiles.
# Tile (ty, tx) covers padded rows 2ty..2ty+3 and columns 2tx..2tx+3; positions outside the
# image are zeros, and outputs beyond (Ho, Wo) (odd sizes) are dropped.
WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
WINOGRAD_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def winograd_tiles(H, W, pad):
    """Tiles per plane (th, tw) for a 3x3 stride-1 convolution of an (H, W) plane."""
    return (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2


def _winograd_filter_matrix(xp, dtype):
    """G kron G (16, 9): row 4i + j maps a filter's 9 taps (row-major) to U[4i + j]."""
    G = xp.asarray(WINOGRAD_G, dtype=dtype)  # entries 0, +-1/2, 1: the products are exact
    return xp.kron(G, G)


def winograd_filter(xp, w):
    """w (F, C, 3, 3) -> U (16, F, C) = G w G^T per (f, c), coefficient-major.

    One GEMM, (G kron G) (16, 9) @ taps (9, F*C): the two products with G (inner dimension
    3, 4 columns) run at a fraction of the speed of one with F*C columns."""
    F, C = w.shape[:2]
    taps = w.reshape(F * C, 9).T
    return xp.matmul(_winograd_filter_matrix(xp, w.dtype), taps).reshape(16, F, C)


def winograd_filter_grad(xp, dU):
    """Adjoint of `winograd_filter`: dU (16, F, C) -> dw (F, C, 3, 3) = G^T dU G."""
    F, C = dU.shape[1:]
    dtaps = xp.matmul(dU.reshape(16, F * C).T, _winograd_filter_matrix(xp, dU.dtype))
    return dtaps.reshape(F, C, 3, 3)


def _padded_plane(xp, x, pad, th, tw):
    """x (N, C, H, W) inside zeros of (N, C, 2*th + 2, 2*tw + 2), offset by `pad`."""
    N, C, H, W = x.shape
    xpad = xp.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    xpad[:, :, pad:pad + H, pad:pad + W] = x
    return xpad


def winograd_input(xp, x, pad):
    """x (N, C, H, W) -> V (16, C, N*th*tw): BT d BT^T of every 4x4 input tile d."""
    N, C, H, W = x.shape
    th, tw = winograd_tiles(H, W, pad)
    xpad = _padded_plane(xp, x, pad, th, tw)
    d = xp.stack([xp.stack([xpad[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)])
                  for i in range(4)])  # (4, 4, N, C, th, tw)
    BT = xp.asarray(WINOGRAD_BT, dtype=x.dtype)
    V = xp.einsum("ki,ijncuv,lj->klcnuv", BT, d, BT)
    return xp.ascontiguousarray(V).reshape(16, C, N * th * tw)


def winograd_output(xp, M, bias, out_shape):
    """M (16, F, N*th*tw) -> y (N, F, Ho, Wo) = AT m AT^T per tile, plus bias (F,) if given."""
    N, F, Ho, Wo = out_shape
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    AT = xp.asarray(WINOGRAD_AT, dtype=M.dtype)
    y = xp.einsum("rk,klfnuv,sl->nfurvs", AT, M.reshape(4, 4, F, N, th, tw), AT)
    y = y.reshape(N, F, 2 * th, 2 * tw)[:, :, :Ho, :Wo]
    if bias is not None:
        y = y + bias[:, None, None]
    return xp.ascontiguousarray(y)


def winograd_output_grad(xp, dout):
    """Adjoint of `winograd_output` (without bias): dout (N, F, Ho, Wo) -> dM (16, F, N*th*tw)."""
    N, F, Ho, Wo = dout.shape
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    dy = xp.zeros((N, F, 2 * th, 2 * tw), dtype=dout.dtype)
    dy[:, :, :Ho, :Wo] = dout
    AT = xp.asarray(WINOGRAD_AT, dtype=dout.dtype)
    dM = xp.einsum("rk,nfurvs,sl->klfnuv", AT, dy.reshape(N, F, th, 2, tw, 2), AT)
    return xp.ascontiguousarray(dM).reshape(16, F, N * th * tw)


def winograd_input_grad(xp, dV, x_shape, pad):
    """Adjoint of `winograd_input`: dV (16, C, N*th*tw) -> dx (N, C, H, W), overlaps summed."""
    N, C, H, W = x_shape
    th, tw = winograd_tiles(H, W, pad)
    BT = xp.asarray(WINOGRAD_BT, dtype=dV.dtype)
    dd = xp.einsum("ki,klcnuv,lj->ijncuv", BT, dV.reshape(4, 4, C, N, th, tw), BT)
    dxpad = xp.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=dV.dtype)
    for i in range(4):  # tiles overlap by two rows and columns: a fixed order of sums
        for j in range(4):
            dxpad[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] += dd[i, j]
    return xp.ascontiguousarray(dxpad[:, :, pad:pad + H, pad:pad + W])
