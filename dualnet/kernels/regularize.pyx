# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""CPU kernels for the `numpy` backend: dropout and L2 weight decay, one pass each.

Built as `dualnet.kernels._regularize`. Both run for every layer of every training step,
where NumPy takes several passes and temporaries:

- `dropout(x, p, scale, bit_generator, blocks, out, mask)`: mask = scale where u < p, else 0,
  and out = x * mask, in place of five passes and three temporaries (the float64 uniforms,
  their float32 copy, the comparison). The uniform numbers u are exactly those
  `RandomState.random_sample` draws from `bit_generator` (the global generator of
  `np.random`, or a seeded RandomState's), which is left advanced as if random_sample had
  drawn them, so the course's seeded numbers are kept; u is compared in double, as the
  course's `np.random.rand(*x.shape) < p` does.
- `l2_decay(dW, W, reg, out)`: out = dW + reg * W, returning sum(W**2): one pass over the
  weights instead of four, which counts for the first layer of a fully connected net on
  images (3072 x 100 weights, larger than a core's cache).

How the numbers are drawn: random_sample's double is made of two 32-bit outputs a, b of the
bit generator, ((a >> 5) * 2**26 + (b >> 6)) / 2**53. For any bit generator the kernel asks
its own `next_double` for each number, as random_sample does. For MT19937 (the legacy and
global generator) it instead runs the Mersenne Twister on the generator's state itself, in
blocks: the twist of 624 state words, then the tempering of each word, which vectorize, in
place of one call through a function pointer per 32-bit output (4.5 ns each on the
benchmark machine). That reads NumPy's state struct (624 words, then the position), a
layout NumPy has kept since 1.17; `mt19937_matches` compares the two ways on a generator of
its own, and the backend uses the block path only when they agree.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    #ifndef DUALNET_SOURCE_SHA256
    #define DUALNET_SOURCE_SHA256 ""
    #endif
    """
    const char *DUALNET_SOURCE_SHA256

SOURCE_SHA256 = DUALNET_SOURCE_SHA256.decode("ascii")

cdef extern from "numpy/random/bitgen.h":
    ctypedef struct bitgen_t:
        void *state
        uint64_t (*next_uint64)(void *st) noexcept nogil
        uint32_t (*next_uint32)(void *st) noexcept nogil
        double (*next_double)(void *st) noexcept nogil
        uint64_t (*next_raw)(void *st) noexcept nogil

cdef extern from *:
    """
    /* NumPy's MT19937 state (numpy/random/src/mt19937/mt19937.h). */
    typedef struct { uint32_t key[624]; int pos; } dn_mt_state;

    /* The Mersenne Twister's recurrence: 624 new state words from the old ones. */
    static void dn_mt_twist(uint32_t *key) {
        const uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix = 0x9908b0dfu;
        uint32_t y;
        int i;
        for (i = 0; i < 624 - 397; i++) {
            y = (key[i] & upper) | (key[i + 1] & lower);
            key[i] = key[i + 397] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
        }
        for (; i < 623; i++) {
            y = (key[i] & upper) | (key[i + 1] & lower);
            key[i] = key[i + 397 - 624] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
        }
        y = (key[623] & upper) | (key[0] & lower);
        key[623] = key[396] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
    }

    /* The next n outputs of the generator into out, tempered, advancing its state. */
    static void dn_mt_outputs(dn_mt_state *s, uint32_t *out, Py_ssize_t n) {
        while (n > 0) {
            if (s->pos >= 624) {
                dn_mt_twist(s->key);
                s->pos = 0;
            }
            Py_ssize_t m = 624 - s->pos < n ? 624 - s->pos : n;
            const uint32_t *key = s->key + s->pos;
            for (Py_ssize_t i = 0; i < m; i++) {
                uint32_t y = key[i];
                y ^= y >> 11;
                y ^= (y << 7) & 0x9d2c5680u;
                y ^= (y << 15) & 0xefc60000u;
                y ^= y >> 18;
                out[i] = y;
            }
            s->pos += (int)m;
            out += m;
            n -= m;
        }
    }

    /* random_sample's double from two consecutive outputs. */
    static inline double dn_mt_double(uint32_t a, uint32_t b) {
        return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) / 9007199254740992.0;
    }
    """
    ctypedef struct dn_mt_state:
        int pos
    void dn_mt_outputs(dn_mt_state *s, uint32_t *out, Py_ssize_t n) noexcept nogil
    double dn_mt_double(uint32_t a, uint32_t b) noexcept nogil


ctypedef fused floating:
    float
    double

cdef enum:
    _CHUNK = 512  # numbers drawn per block of MT19937 outputs (two outputs each)


cdef bitgen_t *_bitgen(bit_generator) except NULL:
    return <bitgen_t *> PyCapsule_GetPointer(bit_generator.capsule, "BitGenerator")


def dropout(const floating[::1] x, double p, floating scale, bit_generator, bint blocks,
            floating[::1] out, floating[::1] mask):
    """mask[i] = scale if u_i < p else 0 and out[i] = x[i] * mask[i], u_i the next numbers
    of `bit_generator` in order (see the module docstring). x, out, mask: one float dtype,
    same length. `blocks`: draw by blocks from the generator's MT19937 state (only for an
    MT19937 bit generator, and where `mt19937_matches()`). The caller holds the generator's
    lock."""
    cdef bitgen_t *bg = _bitgen(bit_generator)
    cdef Py_ssize_t n = x.shape[0], i, start, m
    cdef uint32_t words[2 * _CHUNK]
    cdef double u
    with nogil:
        if not blocks:
            for i in range(n):
                u = bg.next_double(bg.state)
                mask[i] = scale if u < p else 0
                out[i] = x[i] * mask[i]
        else:
            start = 0
            while start < n:
                m = min(<Py_ssize_t>_CHUNK, n - start)
                dn_mt_outputs(<dn_mt_state *> bg.state, words, 2 * m)
                for i in range(m):
                    u = dn_mt_double(words[2 * i], words[2 * i + 1])
                    mask[start + i] = scale if u < p else 0
                    out[start + i] = x[start + i] * mask[start + i]
                start += m


def mt19937_matches(bit_generator, Py_ssize_t n=5000):
    """Whether the block path draws what `next_double` draws from an MT19937 generator:
    runs both on copies of `bit_generator`'s state (it is left as it was) for n numbers,
    across several twists, and compares the numbers and the states after."""
    import numpy as np

    state = bit_generator.state
    fast, slow = np.random.MT19937(), np.random.MT19937()
    fast.state, slow.state = state, state
    cdef bitgen_t *f = _bitgen(fast)
    cdef bitgen_t *s = _bitgen(slow)
    cdef Py_ssize_t i
    cdef uint32_t pair[2]
    for i in range(n):
        dn_mt_outputs(<dn_mt_state *> f.state, pair, 2)
        if dn_mt_double(pair[0], pair[1]) != s.next_double(s.state):
            return False
    after_fast, after_slow = fast.state["state"], slow.state["state"]
    return (after_fast["pos"] == after_slow["pos"]
            and np.array_equal(after_fast["key"], after_slow["key"]))


cdef extern from *:
    """
    /* out = dW + reg * W; returns sum(W**2): float sums of blocks of 1024 (vectorized),
       added up in double. */
    #define DN_L2_DECAY(NAME, T)                                                    \
    static double NAME(const T *dW, const T *W, T reg, T *out, Py_ssize_t n) {      \
        double total = 0;                                                           \
        for (Py_ssize_t start = 0; start < n; start += 1024) {                      \
            const Py_ssize_t end = start + 1024 < n ? start + 1024 : n;             \
            T block = 0;                                                            \
            _Pragma("omp simd reduction(+:block)")                                  \
            for (Py_ssize_t i = start; i < end; i++) {                              \
                out[i] = dW[i] + reg * W[i];                                        \
                block += W[i] * W[i];                                               \
            }                                                                       \
            total += block;                                                         \
        }                                                                           \
        return total;                                                               \
    }
    DN_L2_DECAY(dn_l2_decay_f32, float)
    DN_L2_DECAY(dn_l2_decay_f64, double)
    """
    double dn_l2_decay_f32(const float *dW, const float *W, float reg, float *out,
                           Py_ssize_t n) noexcept nogil
    double dn_l2_decay_f64(const double *dW, const double *W, double reg, double *out,
                           Py_ssize_t n) noexcept nogil


def l2_decay(const floating[::1] dW, const floating[::1] W, floating reg, floating[::1] out):
    """out = dW + reg * W (one float dtype, same length); returns sum(W**2) as a float."""
    cdef Py_ssize_t n = W.shape[0]
    cdef double squares = 0
    if n == 0:
        return squares
    with nogil:
        if floating is float:
            squares = dn_l2_decay_f32(&dW[0], &W[0], reg, &out[0], n)
        else:
            squares = dn_l2_decay_f64(&dW[0], &W[0], reg, &out[0], n)
    return squares
