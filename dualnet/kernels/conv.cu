// dualnet's GPU kernels: im2col/col2im, depthwise convolution and max/average pooling, NCHW,
// float32 and float64.
//
// One self-contained file (no local #include) compiled three ways with no edits:
//   * by CuPy at run time (NVRTC, `cupy.RawModule`) for the `cupy` backend,
//   * by nvcc in the tests, warnings as errors,
//   * by the host C++ compiler behind `emulate.h` for the `cuda-emu` backend.
// The layout contract is `dualnet/kernels/reference.py`: every kernel here computes exactly
// what its pure-array twin there computes.
//
// Conventions:
//   * Every entry point is `extern "C"` (unmangled names, so CuPy's on-disk cache works and
//     the emulator can look them up), named `<kernel>_f32` / `<kernel>_f64`, and wraps one
//     templated `__device__` body.
//   * One thread per output element, in a grid-stride loop: any grid size covers any array,
//     and threads never cooperate (no shared memory, no __syncthreads, no atomics), which is
//     what lets the emulator run the threads one after another.
//   * Flat indices and every geometry scalar are 64-bit (`long long`, passed from Python as
//     numpy.int64), so arrays over 2**31 elements index correctly.
//   * Backward kernels gather: each input-gradient element sums the outputs it fed, in a
//     fixed order, so results are deterministic.

typedef long long i64;

// The shape of one sliding-window operation. `k_h x k_w` is the filter or pooling window;
// pooling passes pad = 0. `total` is the number of elements the kernel's threads cover.
struct Geometry {
    i64 total;
    i64 C, H, W;
    i64 k_h, k_w;
    i64 pad, stride;
    i64 H_out, W_out;
};

__device__ inline i64 first_index() {
    return static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ inline i64 grid_stride() {
    return static_cast<i64>(blockDim.x) * gridDim.x;
}

// Range [lo, hi] of output positions along one axis whose window covers input position
// `p` (already shifted by the padding); empty when lo > hi.
__device__ inline void covering_outputs(i64 p, i64 k, i64 stride, i64 n_out, i64* lo, i64* hi) {
    *lo = p < k ? 0 : (p - k) / stride + 1;
    i64 last = p / stride;
    *hi = last < n_out - 1 ? last : n_out - 1;
}

// The windows covering element `idx` of an input (N, C, H, W), for the gathering backward
// kernels: its position (h, w) shifted by the padding, its plane n * C + c, and the ranges
// [oh_lo, oh_hi] x [ow_lo, ow_hi] of output positions whose window holds it.
struct Cover {
    i64 h, w, plane;
    i64 oh_lo, oh_hi, ow_lo, ow_hi;
};

__device__ inline Cover covering_windows(i64 idx, const Geometry& g) {
    Cover c;
    c.w = idx % g.W + g.pad;
    c.h = idx / g.W % g.H + g.pad;
    c.plane = idx / (g.W * g.H);
    covering_outputs(c.h, g.k_h, g.stride, g.H_out, &c.oh_lo, &c.oh_hi);
    covering_outputs(c.w, g.k_w, g.stride, g.W_out, &c.ow_lo, &c.ow_hi);
    return c;
}

// x (N, C, H, W) -> cols (N, C*k_h*k_w, H_out*W_out), rows ordered (c, i, j).
// One thread per element of cols; zero where the window hangs over the padding.
template <typename T>
__device__ void im2col_body(const T* __restrict__ x, T* __restrict__ cols, Geometry g) {
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        i64 ow = idx % g.W_out;
        i64 oh = idx / g.W_out % g.H_out;
        i64 j = idx / (g.W_out * g.H_out) % g.k_w;
        i64 i = idx / (g.W_out * g.H_out * g.k_w) % g.k_h;
        i64 nc = idx / (g.W_out * g.H_out * g.k_w * g.k_h);  // n * C + c
        i64 h = oh * g.stride - g.pad + i;
        i64 w = ow * g.stride - g.pad + j;
        bool inside = h >= 0 && h < g.H && w >= 0 && w < g.W;
        cols[idx] = inside ? x[(nc * g.H + h) * g.W + w] : T(0);
    }
}

// Adjoint of im2col: cols (N, C*k_h*k_w, H_out*W_out) -> dx (N, C, H, W).
// One thread per element of dx, summing every column entry that was copied from it.
template <typename T>
__device__ void col2im_body(const T* __restrict__ cols, T* __restrict__ dx, Geometry g) {
    const i64 positions = g.H_out * g.W_out;
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        const Cover c = covering_windows(idx, g);
        T sum = T(0);
        for (i64 oh = c.oh_lo; oh <= c.oh_hi; ++oh) {
            i64 i = c.h - oh * g.stride;
            for (i64 ow = c.ow_lo; ow <= c.ow_hi; ++ow) {
                i64 j = c.w - ow * g.stride;
                i64 row = (c.plane * g.k_h + i) * g.k_w + j;
                sum += cols[row * positions + oh * g.W_out + ow];
            }
        }
        dx[idx] = sum;
    }
}

// x (N, C, H, W) -> out, argmax (N, C, H_out, W_out); argmax is the flat index h * W + w of
// the window's FIRST maximum (row-major), NaN counting as the maximum, as numpy.argmax does.
template <typename T>
__device__ void maxpool_forward_body(const T* __restrict__ x, T* __restrict__ out,
                                     i64* __restrict__ argmax, Geometry g) {
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        i64 ow = idx % g.W_out;
        i64 oh = idx / g.W_out % g.H_out;
        const T* plane = x + idx / (g.W_out * g.H_out) * g.H * g.W;
        i64 best_at = oh * g.stride * g.W + ow * g.stride;
        T best = plane[best_at];
        for (i64 i = 0; i < g.k_h; ++i) {
            for (i64 j = 0; j < g.k_w; ++j) {
                i64 at = (oh * g.stride + i) * g.W + ow * g.stride + j;
                T v = plane[at];
                bool best_is_nan = best != best;
                if (!best_is_nan && (v > best || v != v)) {
                    best = v;
                    best_at = at;
                }
            }
        }
        out[idx] = best;
        argmax[idx] = best_at;
    }
}

// dout, argmax (N, C, H_out, W_out) -> dx (N, C, H, W): each dx element sums the dout of the
// windows whose argmax points at it (overlapping windows may share a maximum).
template <typename T>
__device__ void maxpool_backward_body(const T* __restrict__ dout, const i64* __restrict__ argmax,
                                      T* __restrict__ dx, Geometry g) {
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        const Cover c = covering_windows(idx, g);  // pooling: pad is 0
        const i64 out_plane = c.plane * g.H_out * g.W_out;
        T sum = T(0);
        for (i64 oh = c.oh_lo; oh <= c.oh_hi; ++oh) {
            for (i64 ow = c.ow_lo; ow <= c.ow_hi; ++ow) {
                i64 o = out_plane + oh * g.W_out + ow;
                if (argmax[o] == c.h * g.W + c.w) {
                    sum += dout[o];
                }
            }
        }
        dx[idx] = sum;
    }
}

// x (N, C, H, W) -> out (N, C, H_out, W_out), the mean of each window.
template <typename T>
__device__ void avgpool_forward_body(const T* __restrict__ x, T* __restrict__ out, Geometry g) {
    const T window_size = T(g.k_h * g.k_w);
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        i64 ow = idx % g.W_out;
        i64 oh = idx / g.W_out % g.H_out;
        const T* plane = x + idx / (g.W_out * g.H_out) * g.H * g.W;
        T sum = T(0);
        for (i64 i = 0; i < g.k_h; ++i) {
            for (i64 j = 0; j < g.k_w; ++j) {
                sum += plane[(oh * g.stride + i) * g.W + ow * g.stride + j];
            }
        }
        out[idx] = sum / window_size;
    }
}

// dout (N, C, H_out, W_out) -> dx (N, C, H, W): each window's gradient shared by its inputs.
template <typename T>
__device__ void avgpool_backward_body(const T* __restrict__ dout, T* __restrict__ dx, Geometry g) {
    const T window_size = T(g.k_h * g.k_w);
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        const Cover c = covering_windows(idx, g);  // pooling: pad is 0
        const i64 out_plane = c.plane * g.H_out * g.W_out;
        T sum = T(0);
        for (i64 oh = c.oh_lo; oh <= c.oh_hi; ++oh) {
            for (i64 ow = c.ow_lo; ow <= c.ow_hi; ++ow) {
                sum += dout[out_plane + oh * g.W_out + ow] / window_size;
            }
        }
        dx[idx] = sum;
    }
}

// Depthwise convolution (groups = C): filter f of F = C*m sees input channel f / m only; w is
// (F, k_h*k_w), `multiplier` is m. `H_out`/`W_out` may be the floor of the windows that fit:
// windows start at the padded origin either way.

// x (N, C, H, W), w, bias (F) -> out (N, F, H_out, W_out). One thread per output element.
template <typename T>
__device__ void depthwise_forward_body(const T* __restrict__ x, const T* __restrict__ w,
                                       const T* __restrict__ bias, T* __restrict__ out,
                                       Geometry g, i64 multiplier) {
    const i64 F = g.C * multiplier;
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        i64 ow = idx % g.W_out;
        i64 oh = idx / g.W_out % g.H_out;
        i64 nf = idx / (g.W_out * g.H_out);  // n * F + f
        i64 f = nf % F;
        const T* plane = x + (nf / F * g.C + f / multiplier) * g.H * g.W;
        const T* taps = w + f * g.k_h * g.k_w;
        T sum = bias[f];
        for (i64 i = 0; i < g.k_h; ++i) {
            i64 h = oh * g.stride - g.pad + i;
            if (h < 0 || h >= g.H) continue;
            for (i64 j = 0; j < g.k_w; ++j) {
                i64 c = ow * g.stride - g.pad + j;
                if (c >= 0 && c < g.W) sum += plane[h * g.W + c] * taps[i * g.k_w + j];
            }
        }
        out[idx] = sum;
    }
}

// dout (N, F, H_out, W_out), w -> dx (N, C, H, W). One thread per input element, gathering
// over its channel's m filters and the windows that hold it.
template <typename T>
__device__ void depthwise_backward_input_body(const T* __restrict__ dout,
                                              const T* __restrict__ w, T* __restrict__ dx,
                                              Geometry g, i64 multiplier) {
    const i64 positions = g.H_out * g.W_out;
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        const Cover c = covering_windows(idx, g);  // c.plane = n * C + channel
        const i64 first_filter = c.plane * multiplier;  // n * F + channel * m
        const i64 first_tap = c.plane % g.C * multiplier * g.k_h * g.k_w;
        T sum = T(0);
        for (i64 k = 0; k < multiplier; ++k) {
            const T* grad = dout + (first_filter + k) * positions;
            const T* taps = w + first_tap + k * g.k_h * g.k_w;
            for (i64 oh = c.oh_lo; oh <= c.oh_hi; ++oh) {
                i64 i = c.h - oh * g.stride;
                for (i64 ow = c.ow_lo; ow <= c.ow_hi; ++ow) {
                    sum += grad[oh * g.W_out + ow] * taps[i * g.k_w + c.w - ow * g.stride];
                }
            }
        }
        dx[idx] = sum;
    }
}

// dout (N, F, H_out, W_out), x (N, C, H, W) -> dw (F, k_h*k_w). One thread per filter tap,
// summing over the batch and the output positions in a fixed order.
template <typename T>
__device__ void depthwise_backward_filter_body(const T* __restrict__ dout,
                                               const T* __restrict__ x, T* __restrict__ dw,
                                               Geometry g, i64 N, i64 multiplier) {
    const i64 F = g.C * multiplier;
    const i64 positions = g.H_out * g.W_out;
    for (i64 idx = first_index(); idx < g.total; idx += grid_stride()) {
        i64 j = idx % g.k_w;
        i64 i = idx / g.k_w % g.k_h;
        i64 f = idx / (g.k_w * g.k_h);
        T sum = T(0);
        for (i64 n = 0; n < N; ++n) {
            const T* grad = dout + (n * F + f) * positions;
            const T* plane = x + (n * g.C + f / multiplier) * g.H * g.W;
            for (i64 oh = 0; oh < g.H_out; ++oh) {
                i64 h = oh * g.stride - g.pad + i;
                if (h < 0 || h >= g.H) continue;
                for (i64 ow = 0; ow < g.W_out; ++ow) {
                    i64 c = ow * g.stride - g.pad + j;
                    if (c >= 0 && c < g.W) sum += grad[oh * g.W_out + ow] * plane[h * g.W + c];
                }
            }
        }
        dw[idx] = sum;
    }
}

// Every entry point takes its arrays first, then the ten geometry scalars in this order
// (the depthwise ones then the batch size N and the channel multiplier m).
#define GEOMETRY_PARAMS \
    i64 total, i64 C, i64 H, i64 W, i64 k_h, i64 k_w, i64 pad, i64 stride, i64 H_out, i64 W_out
#define GEOMETRY {total, C, H, W, k_h, k_w, pad, stride, H_out, W_out}
#define DEPTHWISE_PARAMS GEOMETRY_PARAMS, i64 N, i64 multiplier

// The extern "C" entry points for one dtype T, named with `suffix` (f32 or f64).
#define DUALNET_ENTRY_POINTS(T, suffix)                                                        \
    extern "C" __global__ void im2col_##suffix(                                               \
            const T* __restrict__ x, T* __restrict__ cols, GEOMETRY_PARAMS) {                 \
        im2col_body<T>(x, cols, Geometry GEOMETRY);                                           \
    }                                                                                         \
    extern "C" __global__ void col2im_##suffix(                                               \
            const T* __restrict__ cols, T* __restrict__ dx, GEOMETRY_PARAMS) {                \
        col2im_body<T>(cols, dx, Geometry GEOMETRY);                                          \
    }                                                                                         \
    extern "C" __global__ void maxpool_forward_##suffix(                                      \
            const T* __restrict__ x, T* __restrict__ out, i64* __restrict__ argmax,           \
            GEOMETRY_PARAMS) {                                                                \
        maxpool_forward_body<T>(x, out, argmax, Geometry GEOMETRY);                           \
    }                                                                                         \
    extern "C" __global__ void maxpool_backward_##suffix(                                     \
            const T* __restrict__ dout, const i64* __restrict__ argmax, T* __restrict__ dx,   \
            GEOMETRY_PARAMS) {                                                                \
        maxpool_backward_body<T>(dout, argmax, dx, Geometry GEOMETRY);                        \
    }                                                                                         \
    extern "C" __global__ void avgpool_forward_##suffix(                                      \
            const T* __restrict__ x, T* __restrict__ out, GEOMETRY_PARAMS) {                  \
        avgpool_forward_body<T>(x, out, Geometry GEOMETRY);                                   \
    }                                                                                         \
    extern "C" __global__ void avgpool_backward_##suffix(                                     \
            const T* __restrict__ dout, T* __restrict__ dx, GEOMETRY_PARAMS) {                \
        avgpool_backward_body<T>(dout, dx, Geometry GEOMETRY);                                \
    }                                                                                         \
    extern "C" __global__ void depthwise_forward_##suffix(                                    \
            const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,     \
            T* __restrict__ out, DEPTHWISE_PARAMS) {                                          \
        (void)N; /* the three depthwise kernels share one parameter list */                   \
        depthwise_forward_body<T>(x, w, bias, out, Geometry GEOMETRY, multiplier);            \
    }                                                                                         \
    extern "C" __global__ void depthwise_backward_input_##suffix(                             \
            const T* __restrict__ dout, const T* __restrict__ w, T* __restrict__ dx,          \
            DEPTHWISE_PARAMS) {                                                               \
        (void)N;                                                                              \
        depthwise_backward_input_body<T>(dout, w, dx, Geometry GEOMETRY, multiplier);         \
    }                                                                                         \
    extern "C" __global__ void depthwise_backward_filter_##suffix(                            \
            const T* __restrict__ dout, const T* __restrict__ x, T* __restrict__ dw,          \
            DEPTHWISE_PARAMS) {                                                               \
        depthwise_backward_filter_body<T>(dout, x, dw, Geometry GEOMETRY, N, multiplier);     \
    }

DUALNET_ENTRY_POINTS(float, f32)
DUALNET_ENTRY_POINTS(double, f64)
