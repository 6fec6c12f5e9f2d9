# cython: language_level=3
"""Declarations of `microkernels.h` (see there) for the modules that include it."""

cdef extern from "microkernels.h":
    ctypedef struct dn_kernels_f32:
        void gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *A, Py_ssize_t lda,
                  Py_ssize_t csa, const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc,
                  int acc) noexcept nogil
        void input(const float *src, float *dst, const float *bias, Py_ssize_t C,
                   Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void input_grad(const float *src, float *dst, const float *bias, Py_ssize_t C,
                        Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void output(const float *src, float *dst, const float *bias, Py_ssize_t C,
                    Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void output_grad(const float *src, float *dst, const float *bias, Py_ssize_t C,
                         Py_ssize_t th, Py_ssize_t tw) noexcept nogil
    ctypedef struct dn_kernels_f64:
        void gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *A, Py_ssize_t lda,
                  Py_ssize_t csa, const double *B, Py_ssize_t ldb, double *C, Py_ssize_t ldc,
                  int acc) noexcept nogil
        void input(const double *src, double *dst, const double *bias, Py_ssize_t C,
                   Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void input_grad(const double *src, double *dst, const double *bias, Py_ssize_t C,
                        Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void output(const double *src, double *dst, const double *bias, Py_ssize_t C,
                    Py_ssize_t th, Py_ssize_t tw) noexcept nogil
        void output_grad(const double *src, double *dst, const double *bias, Py_ssize_t C,
                         Py_ssize_t th, Py_ssize_t tw) noexcept nogil
    dn_kernels_f32 dn_f32
    dn_kernels_f64 dn_f64
    const char *dn_kernel
    void dn_select()
    int dn_use(const char *name)
    int dn_max_threads() noexcept nogil
    Py_ssize_t DN_STRIDE(Py_ssize_t T, Py_ssize_t C) noexcept nogil


ctypedef fused dn_floating:
    float
    double


cdef inline void dn_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const dn_floating *A,
                         Py_ssize_t lda, Py_ssize_t csa, const dn_floating *B, Py_ssize_t ldb,
                         dn_floating *C, Py_ssize_t ldc, int acc) noexcept nogil:
    """The installed GEMM of A's dtype (see microkernels.h for the arguments)."""
    if dn_floating is float:
        dn_f32.gemm(m, n, k, A, lda, csa, B, ldb, C, ldc, acc)
    else:
        dn_f64.gemm(m, n, k, A, lda, csa, B, ldb, C, ldc, acc)
