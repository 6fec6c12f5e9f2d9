/* Vectorized kernels shared by dualnet's compiled modules (winograd.pyx, im2col.pyx), for the
   fused convolutions that keep one sample's data in a thread's cache.

   Written with GCC/clang vector extensions, so that one body serves every instruction set:
   each kernel is compiled for AVX-512 and AVX2+FMA (x86; `dn_select` installs the best one
   this CPU runs) and for baseline 16-byte vectors (SSE2, NEON). Other compilers get none
   (`dn_kernel` stays "scalar") and the layers keep their library-GEMM paths.

   - GEMM: C (m x n) = A (m x k) @ B (k x n), or C += A @ B with `acc`; B and C row-major with
     leading dimensions ldb/ldc, A[i, p] at A[i * lda + p * csa] (A may be a transposed view).
     The blocks multiplied sit in a thread's cache, where a library GEMM per block costs more
     in calls and packing than it computes. Register blocking: 6 rows of C by two vectors of
     columns, each row of B loaded once per 6 broadcasts of A.
   - Winograd F(2x2, 3x3) tile transforms over channel-innermost layouts (winograd.pyx's
     `_conv_forward_fused`), whole vectors of channels at a time: the arithmetic of the
     `_*_plane` functions there.

   Every module including this file gets its own copy (all definitions are static). */
#ifndef DUALNET_MICROKERNELS_H
#define DUALNET_MICROKERNELS_H

#include <stddef.h>

#define DN_GEMM_PARAMS(T) ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A, ptrdiff_t lda, \
                          ptrdiff_t csa, const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc, int acc
#define DN_TILE_PARAMS(T) const T *src, T *dst, const T *bias, ptrdiff_t C, ptrdiff_t th, \
                          ptrdiff_t tw
/* The distance between the 16 coefficients of a sample's (16, T, C) coefficient array: T*C
   and 16 more, so that the 16 streams a transform reads or writes at once do not all fall
   into the same cache sets when T*C is a multiple of 4 KiB. */
#define DN_STRIDE(T, C) ((T) * (C) + 16)

/* The kernels of one dtype, for one instruction set. */
#define DN_DECLARE_TABLE(NAME, T)                                                             \
typedef struct {                                                                              \
    void (*gemm)(DN_GEMM_PARAMS(T));                                                          \
    void (*input)(DN_TILE_PARAMS(T));                                                         \
    void (*input_grad)(DN_TILE_PARAMS(T));                                                    \
    void (*output)(DN_TILE_PARAMS(T));                                                        \
    void (*output_grad)(DN_TILE_PARAMS(T));                                                   \
} NAME;
DN_DECLARE_TABLE(dn_kernels_f32, float)
DN_DECLARE_TABLE(dn_kernels_f64, double)
static dn_kernels_f32 dn_f32;
static dn_kernels_f64 dn_f64;
static const char *dn_kernel = "scalar";

#if defined(__GNUC__)
#define DN_DEFINE_GEMM(NAME, T, VB, ATTR)                                                   \
typedef T NAME##_vec __attribute__((vector_size(VB), aligned(sizeof(T)), may_alias));    \
ATTR static inline __attribute__((always_inline)) void                                   \
NAME##_block(const int R, const int NV, ptrdiff_t k, const T *A, ptrdiff_t lda,           \
             ptrdiff_t csa, const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc, int acc) {    \
    /* Loads and stores through the vector type, not memcpy (see DN_LD). */               \
    const ptrdiff_t VL = VB / sizeof(T);                                                  \
    NAME##_vec c[6][2], b[2];                                                             \
    for (int r = 0; r < R; r++)                                                           \
        for (int v = 0; v < NV; v++)                                                      \
            c[r][v] = acc ? *(const NAME##_vec *)(C + r * ldc + v * VL) : (NAME##_vec){0}; \
    for (ptrdiff_t p = 0; p < k; p++) {                                                   \
        for (int v = 0; v < NV; v++) b[v] = *(const NAME##_vec *)(B + p * ldb + v * VL);  \
        for (int r = 0; r < R; r++) {                                                     \
            const T a = A[r * lda + p * csa];                                             \
            for (int v = 0; v < NV; v++) c[r][v] += a * b[v];                             \
        }                                                                                 \
    }                                                                                     \
    for (int r = 0; r < R; r++)                                                           \
        for (int v = 0; v < NV; v++) *(NAME##_vec *)(C + r * ldc + v * VL) = c[r][v];     \
}                                                                                         \
ATTR static inline __attribute__((always_inline)) void                                   \
NAME##_rows(const int R, ptrdiff_t n, ptrdiff_t k, const T *A, ptrdiff_t lda,             \
            ptrdiff_t csa, const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc, int acc) {     \
    const ptrdiff_t VL = VB / sizeof(T);                                                  \
    ptrdiff_t j = 0;                                                                      \
    for (; j + 2 * VL <= n; j += 2 * VL)                                                  \
        NAME##_block(R, 2, k, A, lda, csa, B + j, ldb, C + j, ldc, acc);                  \
    for (; j + VL <= n; j += VL)                                                          \
        NAME##_block(R, 1, k, A, lda, csa, B + j, ldb, C + j, ldc, acc);                  \
    for (; j < n; j++)                                                                    \
        for (int r = 0; r < R; r++) {                                                     \
            T s = acc ? C[r * ldc + j] : (T)0;                                            \
            for (ptrdiff_t p = 0; p < k; p++) s += A[r * lda + p * csa] * B[p * ldb + j]; \
            C[r * ldc + j] = s;                                                           \
        }                                                                                 \
}                                                                                         \
ATTR static void NAME(DN_GEMM_PARAMS(T)) {                                               \
    ptrdiff_t i = 0;                                                                      \
    for (; i + 6 <= m; i += 6)                                                            \
        NAME##_rows(6, n, k, A + i * lda, lda, csa, B, ldb, C + i * ldc, ldc, acc);       \
    A += i * lda;                                                                         \
    C += i * ldc;                                                                         \
    switch (m - i) { /* constant row counts, so each block is unrolled */                 \
        case 5: NAME##_rows(5, n, k, A, lda, csa, B, ldb, C, ldc, acc); break;            \
        case 4: NAME##_rows(4, n, k, A, lda, csa, B, ldb, C, ldc, acc); break;            \
        case 3: NAME##_rows(3, n, k, A, lda, csa, B, ldb, C, ldc, acc); break;            \
        case 2: NAME##_rows(2, n, k, A, lda, csa, B, ldb, C, ldc, acc); break;            \
        case 1: NAME##_rows(1, n, k, A, lda, csa, B, ldb, C, ldc, acc); break;            \
    }                                                                                     \
}
/* Load and store of V, a vector type (unaligned, see DN_DEFINE_GEMM) or the scalar type
   itself, through a may_alias pointer. Not memcpy: GCC's generic tuning splits an unaligned
   memcpy'd 32-byte vector into 16-byte halves stored to the stack and reloaded whole, a
   store-forwarding stall on every load (the AVX2 transforms and GEMM ran 3-4x slower). */
#define DN_LD(V, p) ({ typedef V dn_u_ __attribute__((may_alias)); *(const dn_u_ *)(p); })
#define DN_ST(V, p, x) do { typedef V dn_u_ __attribute__((may_alias)); *(dn_u_ *)(p) = (x); } \
                       while (0)

/* One span of channels [c, c + lanes of V) of one tile. s: the tile's source, o: its
   destination; row: the distance between image rows, ks: between coefficients. */
#define DN_INPUT_SPAN(V, S, s, o, c) {                                                        \
    V t_[16];                                                                                 \
    for (int j = 0; j < 4; j++) { /* down each column j: BT d */                              \
        V d0 = DN_LD(V, s + j * C + c), d1 = DN_LD(V, s + row + j * C + c);                   \
        V d2 = DN_LD(V, s + 2 * row + j * C + c), d3 = DN_LD(V, s + 3 * row + j * C + c);     \
        t_[j] = d0 - d2; t_[4 + j] = d1 + d2; t_[8 + j] = d2 - d1; t_[12 + j] = d1 - d3;      \
    }                                                                                         \
    for (int i = 0; i < 4; i++) { /* then across each row i: (BT d) BT^T */                   \
        DN_ST(V, o + (4 * i) * ks + c, t_[4 * i] - t_[4 * i + 2]);                            \
        DN_ST(V, o + (4 * i + 1) * ks + c, t_[4 * i + 1] + t_[4 * i + 2]);                    \
        DN_ST(V, o + (4 * i + 2) * ks + c, t_[4 * i + 2] - t_[4 * i + 1]);                    \
        DN_ST(V, o + (4 * i + 3) * ks + c, t_[4 * i + 1] - t_[4 * i + 3]);                    \
    }                                                                                         \
}
#define DN_INPUT_GRAD_SPAN(V, S, s, o, c) {                                                   \
    V g_[16];                                                                                 \
    for (int i = 0; i < 4; i++) { /* across each row i: v BT */                               \
        V v0 = DN_LD(V, s + (4 * i) * ks + c), v1 = DN_LD(V, s + (4 * i + 1) * ks + c);       \
        V v2 = DN_LD(V, s + (4 * i + 2) * ks + c), v3 = DN_LD(V, s + (4 * i + 3) * ks + c);   \
        g_[4 * i] = v0; g_[4 * i + 1] = v1 - v2 + v3;                                         \
        g_[4 * i + 2] = v1 + v2 - v0; g_[4 * i + 3] = -v3;                                    \
    }                                                                                         \
    for (int j = 0; j < 4; j++) { /* then down each column j, added into the plane */         \
        S *p_ = o + j * C + c;                                                                \
        DN_ST(V, p_, DN_LD(V, p_) + g_[j]);                                                   \
        DN_ST(V, p_ + row, DN_LD(V, p_ + row) + g_[4 + j] - g_[8 + j] + g_[12 + j]);          \
        DN_ST(V, p_ + 2 * row, DN_LD(V, p_ + 2 * row) + g_[4 + j] + g_[8 + j] - g_[j]);       \
        DN_ST(V, p_ + 3 * row, DN_LD(V, p_ + 3 * row) - g_[12 + j]);                          \
    }                                                                                         \
}
#define DN_OUTPUT_SPAN(V, S, s, o, c) {                                                       \
    V r0_[4], r1_[4], b_ = DN_LD(V, bias + c);                                                \
    for (int l = 0; l < 4; l++) { /* down: AT m, rows 0-2 and 1-3 of column l */              \
        V m0 = DN_LD(V, s + l * ks + c), m1 = DN_LD(V, s + (4 + l) * ks + c);                 \
        V m2 = DN_LD(V, s + (8 + l) * ks + c), m3 = DN_LD(V, s + (12 + l) * ks + c);          \
        r0_[l] = m0 + m1 + m2; r1_[l] = m1 - m2 - m3;                                         \
    }                                                                                         \
    DN_ST(V, o + c, r0_[0] + r0_[1] + r0_[2] + b_); /* then across: (AT m) AT^T + b */        \
    DN_ST(V, o + C + c, r0_[1] - r0_[2] - r0_[3] + b_);                                       \
    DN_ST(V, o + row + c, r1_[0] + r1_[1] + r1_[2] + b_);                                     \
    DN_ST(V, o + row + C + c, r1_[1] - r1_[2] - r1_[3] + b_);                                 \
}
#define DN_OUTPUT_GRAD_SPAN(V, S, s, o, c) {                                                  \
    V g00 = DN_LD(V, s + c), g01 = DN_LD(V, s + C + c);                                       \
    V g10 = DN_LD(V, s + row + c), g11 = DN_LD(V, s + row + C + c);                           \
    V r0_[4] = {g00, g00 + g01, g00 - g01, -g01}; /* across: g AT */                          \
    V r1_[4] = {g10, g10 + g11, g10 - g11, -g11};                                             \
    for (int l = 0; l < 4; l++) { /* then down: AT^T (g AT) */                                \
        DN_ST(V, o + l * ks + c, r0_[l]);                                                     \
        DN_ST(V, o + (4 + l) * ks + c, r0_[l] + r1_[l]);                                      \
        DN_ST(V, o + (8 + l) * ks + c, r0_[l] - r1_[l]);                                      \
        DN_ST(V, o + (12 + l) * ks + c, -r1_[l]);                                             \
    }                                                                                         \
}

/* A transform over every tile of one sample: `s` and `o` point at the tile's first element
   on each side (the image side is at (2ty, 2tx) of a plane with rows of `row` elements). */
#define DN_DEFINE_TILES(FNAME, VEC, T, ATTR, SPAN, ROW, SRC_AT, DST_AT)                       \
ATTR static void FNAME(DN_TILE_PARAMS(T)) {                                                   \
    const ptrdiff_t VL = sizeof(VEC) / sizeof(T), ks = DN_STRIDE(th * tw, C), row = (ROW) * C; \
    (void)bias;                                                                               \
    for (ptrdiff_t ty = 0; ty < th; ty++)                                                     \
        for (ptrdiff_t tx = 0; tx < tw; tx++) {                                               \
            const ptrdiff_t t = ty * tw + tx, img = 2 * ty * row + 2 * tx * C;                \
            (void)t; (void)img;                                                               \
            const T *s = src + (SRC_AT);                                                      \
            T *o = dst + (DST_AT);                                                            \
            ptrdiff_t c = 0;                                                                  \
            for (; c + VL <= C; c += VL) SPAN(VEC, T, s, o, c)                                \
            for (; c < C; c++) SPAN(T, T, s, o, c)                                            \
        }                                                                                     \
}

/* Both dtypes' GEMM and transforms for one instruction set, and a function installing them. */
#define DN_DEFINE_KERNELS(ISA, VB, ATTR)                                                      \
DN_DEFINE_GEMM(dn_##ISA##_sgemm, float, VB, ATTR)                                             \
DN_DEFINE_GEMM(dn_##ISA##_dgemm, double, VB, ATTR)                                            \
DN_DEFINE_KERNELS_OF(ISA, s, float, dn_##ISA##_sgemm_vec, ATTR)                               \
DN_DEFINE_KERNELS_OF(ISA, d, double, dn_##ISA##_dgemm_vec, ATTR)                              \
static void dn_##ISA##_install(void) {                                                        \
    dn_f32 = (dn_kernels_f32){dn_##ISA##_sgemm, dn_##ISA##_s_input, dn_##ISA##_s_input_grad,  \
                              dn_##ISA##_s_output, dn_##ISA##_s_output_grad};                 \
    dn_f64 = (dn_kernels_f64){dn_##ISA##_dgemm, dn_##ISA##_d_input, dn_##ISA##_d_input_grad,  \
                              dn_##ISA##_d_output, dn_##ISA##_d_output_grad};                 \
    dn_kernel = #ISA;                                                                         \
}
/* Layouts: images (Hp, Wp, C) with Wp = 2tw + 2 (input side) or (2th, 2tw, C) (output side);
   coefficients (16, T, C). */
#define DN_DEFINE_KERNELS_OF(ISA, P, T, VEC, ATTR)                                            \
DN_DEFINE_TILES(dn_##ISA##_##P##_input, VEC, T, ATTR, DN_INPUT_SPAN, 2 * tw + 2, img, t * C)  \
DN_DEFINE_TILES(dn_##ISA##_##P##_input_grad, VEC, T, ATTR, DN_INPUT_GRAD_SPAN, 2 * tw + 2,    \
                t * C, img)                                                                   \
DN_DEFINE_TILES(dn_##ISA##_##P##_output, VEC, T, ATTR, DN_OUTPUT_SPAN, 2 * tw, t * C, img)    \
DN_DEFINE_TILES(dn_##ISA##_##P##_output_grad, VEC, T, ATTR, DN_OUTPUT_GRAD_SPAN, 2 * tw, img, \
                t * C)

/* Per-instruction-set builds on x86, where the toolchain is known to handle them: not on
   Windows (MinGW's GCC misaligns AVX stack spills, GCC bug 54412), not on macOS (some Apple
   toolchains lack __builtin_cpu_supports' runtime symbol), and only with compilers that
   take target attributes (GCC >= 5, clang). Elsewhere the 16-byte vector kernels serve. */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(_WIN32) && !defined(__APPLE__) \
    && (defined(__clang__) || __GNUC__ >= 5)
#define DN_X86 1
DN_DEFINE_KERNELS(avx512, 64, __attribute__((target("avx512f"))))
DN_DEFINE_KERNELS(avx2, 32, __attribute__((target("avx2,fma"))))
#endif
DN_DEFINE_KERNELS(vector, 16, )
#endif

/* Install the kernels named "avx512", "avx2" or "vector" if this CPU and build have them. */
static int dn_use(const char *name) {
#if defined(__GNUC__)
#if defined(DN_X86)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512") && __builtin_cpu_supports("avx512f")) {
        dn_avx512_install();
        return 1;
    }
    if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2")
            && __builtin_cpu_supports("fma")) {
        dn_avx2_install();
        return 1;
    }
#endif
    if (!strcmp(name, "vector")) {
        dn_vector_install();
        return 1;
    }
#endif
    (void)name;
    return 0;
}

static void dn_select(void) {
    if (!dn_use("avx512") && !dn_use("avx2"))
        dn_use("vector");
}

#ifdef _OPENMP
#include <omp.h>
static int dn_max_threads(void) { return omp_get_max_threads(); }
#else
static int dn_max_threads(void) { return 1; }
#endif

#endif /* DUALNET_MICROKERNELS_H */
