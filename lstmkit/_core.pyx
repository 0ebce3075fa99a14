# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled core: fused float/double kernels for LSTM, GRU and Elman RNN layers.

Knows arrays and numbers only.  BLAS comes from ``scipy.linalg.cython_blas``
(nothing is linked); the time loop of every kernel runs inside ``with nogil``
without allocating or touching a Python object.

Layout (see ``lstmkit/backends/base.py``): a layer-direction's input is a
*packed* sequence, ``x`` ``(N, I)`` with step ``t``'s ``batch_sizes[t]`` rows
after the earlier steps' rows, batch sizes non-increasing.  ``B`` state rows,
``H`` hidden, ``P`` output width (``proj_size`` or ``H``), ``G`` gate rows
(``4H`` LSTM ``[i|f|g|o]``, ``3H`` GRU ``[r|z|n]``, ``H`` RNN).  Weights keep
PyTorch's row-major layout; GEMMs use BLAS transpose flags, never copies.

Each cell has three ``def`` kernels: ``*_forward`` (inference, or training when
the cache arrays are given), ``*_backward`` and ``*_step`` (one dense inference
step with little per-call overhead: the path of ``LSTMCell.__call__``).  Callers
allocate every array; kernels write every element of every output and workspace
before reading it, so ``np.empty`` buffers are safe (the tests poison them with
NaN).

Gate math is a branch-free ``tanh`` (sigmoid as ``tanh(x/2)/2 + 1/2``, which
never overflows) that GCC vectorises; on x86-64 Linux the elementwise kernels
are built three times (AVX-512, AVX2, SSE2) and glibc picks one at load time.
"""
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE,
                             PyBuffer_Release, PyObject_GetBuffer)
from cython cimport floating
from libc.math cimport NAN
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

cdef extern from *:
    r"""
    #include <math.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #if defined(__linux__)
    #  include <sys/mman.h>
    #endif
    #if defined(__unix__) || defined(__APPLE__)
    #  include <unistd.h>
    #endif
    #if defined(_WIN32)
    #  include <malloc.h>
    /* lk_yield serves the placement of Python threads (lstmkit/_threads.py), which
       needs sched_setaffinity: Linux's */
    #  define lk_yield() ((void)0)
    #else
    #  include <sched.h>
    #  define lk_yield() ((void)sched_yield())
    #endif

    #if defined(__GNUC__) || defined(__clang__)
    #  define LK_INLINE static inline __attribute__((always_inline))
    #  define LK_RESTRICT __restrict__
    #  define LK_PREFETCH_W(p) __builtin_prefetch((p), 1)
    #  define LK_PREFETCH_R(p) __builtin_prefetch((p), 0)
    #  define LK_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
    #elif defined(_MSC_VER)
    #  define LK_INLINE static __forceinline
    #  define LK_RESTRICT __restrict
    #  define LK_PREFETCH_W(p) ((void)0)
    #  define LK_PREFETCH_R(p) ((void)0)
    #  define LK_PREFETCH_L2(p) ((void)0)
    #else
    #  define LK_INLINE static inline
    #  define LK_RESTRICT
    #  define LK_PREFETCH_W(p) ((void)0)
    #  define LK_PREFETCH_R(p) ((void)0)
    #  define LK_PREFETCH_L2(p) ((void)0)
    #endif

    /* One clone per x86-64 level, chosen once at load time by glibc's ifunc:
       a portable binary whose gate loops still run on AVX-512/AVX2.  (musl,
       macOS, Windows and other CPUs get one build at the baseline level.) */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__GLIBC__) && !defined(LK_NO_CLONES)
    #  define LK_KERNEL static __attribute__((target_clones( \
           "arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #  define LK_KERNEL static
    #endif

    /* tanh(x) = -e / (2 + e), e = expm1(-2|x|), sign restored.  expm1 by
       Cody-Waite reduction y = n ln2 + r, |r| <= ln2/2, a Taylor polynomial
       for expm1(r) and 2^n built in the exponent bits (the 1.5*2^52 shift
       rounds y/ln2 to an integer without a float->int conversion).  No branch,
       no libm call: GCC vectorises it (needs -fno-trapping-math for the
       clamp).  |x| is clamped where tanh rounds to +-1; NaN passes the clamp
       and propagates.  Max error: 3 ulp (double), 2.5 ulp (float). */
    LK_INLINE double lk_tanh_d(double x) {
        double ax = fabs(x);
        ax = ax > 20.0 ? 20.0 : ax;
        const double y = -2.0 * ax, shift = 6755399441055744.0;
        const double t = y * 1.4426950408889634 + shift, n = t - shift;
        const double r = (y - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
        double p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r * r + r;                              /* expm1(r) */
        uint64_t bits; memcpy(&bits, &t, sizeof bits);
        bits = (bits << 52) + 0x3ff0000000000000ULL;    /* 2^n, n in [-58, 0] */
        double s; memcpy(&s, &bits, sizeof s);
        const double e = s * p + (s - 1.0);             /* expm1(y) */
        return copysign(-e / (2.0 + e), x);
    }

    LK_INLINE float lk_tanh_f(float x) {
        float ax = fabsf(x);
        ax = ax > 10.0f ? 10.0f : ax;
        const float y = -2.0f * ax, shift = 12582912.0f;
        const float t = y * 1.44269504f + shift, n = t - shift;
        const float r = (y - n * 0.693145752f) - n * 1.42860677e-06f;
        float p = 1.0f / 40320.0f;
        p = p * r + 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r * r + r;
        uint32_t bits; memcpy(&bits, &t, sizeof bits);
        bits = (bits << 23) + 0x3f800000u;              /* 2^n, n in [-29, 0] */
        float s; memcpy(&s, &bits, sizeof s);
        const float e = s * p + (s - 1.0f);
        return copysignf(-e / (2.0f + e), x);
    }

    /* Flush-to-zero + denormals-are-zero for the calling thread (SSE control
       register), returning the previous setting; a no-op returning 0 where
       there is no such register (then lk_denormals_restore does nothing). */
    #if defined(__x86_64__) || defined(_M_X64)
    #  include <xmmintrin.h>
    static unsigned lk_denormals_flush(void) {
        const unsigned old = _mm_getcsr();
        _mm_setcsr(old | 0x8040u);  /* FTZ (bit 15) | DAZ (bit 6) */
        return old;
    }
    static void lk_denormals_restore(unsigned old) { _mm_setcsr(old); }
    static unsigned lk_fp_mode(void) { return _mm_getcsr(); }
    #else
    static unsigned lk_denormals_flush(void) { return 0; }
    static void lk_denormals_restore(unsigned old) { (void)old; }
    static unsigned lk_fp_mode(void) { return 0; }
    #endif

    LK_INLINE double lk_sigmoid_d(double x) { return 0.5 * lk_tanh_d(0.5 * x) + 0.5; }
    LK_INLINE float lk_sigmoid_f(float x) { return 0.5f * lk_tanh_f(0.5f * x) + 0.5f; }

    /* The elementwise kernels, written once for T = float/double (suffix S).
       Rows are contiguous; n rows of width H (gate blocks H apart). */
    #define LK_DEFINE_KERNELS(T, S)                                                  \
    /* Test twins: out = tanh(x), out = sigmoid(x). */                               \
    LK_KERNEL void lk_tanh_arr_##S(Py_ssize_t n, const T *LK_RESTRICT x,             \
                                   T *LK_RESTRICT out) {                             \
        for (Py_ssize_t k = 0; k < n; k++) out[k] = lk_tanh_##S(x[k]);               \
    }                                                                                \
    LK_KERNEL void lk_sigmoid_arr_##S(Py_ssize_t n, const T *LK_RESTRICT x,          \
                                      T *LK_RESTRICT out) {                          \
        for (Py_ssize_t k = 0; k < n; k++) out[k] = lk_sigmoid_##S(x[k]);            \
    }                                                                                \
    /* LSTM step: g (n, 4H) pre-activations [i|f|g|o]; c (n, H) c_prev in, c out;   \
       h (n, H) = o * tanh(c).  With tanhc (n, H) (training), g is overwritten     \
       with the activations and tanhc receives tanh(c). */                           \
    /* (units [j0, j1) of each row: a thread's share) */                           \
    LK_KERNEL void lk_lstm_fwd_units_##S(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0,  \
                                         Py_ssize_t j1, T *LK_RESTRICT g,            \
                                         T *LK_RESTRICT c, T *LK_RESTRICT h,         \
                                         T *LK_RESTRICT tanhc) {                     \
        for (Py_ssize_t b = 0; b < n; b++) {                                         \
            T *gb = g + b * 4 * H, *cb = c + b * H, *hb = h + b * H;                 \
            if (tanhc) {                                                             \
                T *tb = tanhc + b * H;                                               \
                for (Py_ssize_t j = j0; j < j1; j++) {                               \
                    const T i = lk_sigmoid_##S(gb[j]), f = lk_sigmoid_##S(gb[H + j]);\
                    const T gg = lk_tanh_##S(gb[2 * H + j]);                         \
                    const T o = lk_sigmoid_##S(gb[3 * H + j]);                       \
                    const T cn = f * cb[j] + i * gg, tc = lk_tanh_##S(cn);           \
                    gb[j] = i; gb[H + j] = f; gb[2 * H + j] = gg; gb[3 * H + j] = o; \
                    cb[j] = cn; tb[j] = tc; hb[j] = o * tc;                          \
                }                                                                    \
            } else {                                                                 \
                for (Py_ssize_t j = j0; j < j1; j++) {                               \
                    const T i = lk_sigmoid_##S(gb[j]), f = lk_sigmoid_##S(gb[H + j]);\
                    const T gg = lk_tanh_##S(gb[2 * H + j]);                         \
                    const T o = lk_sigmoid_##S(gb[3 * H + j]);                       \
                    const T cn = f * cb[j] + i * gg;                                 \
                    cb[j] = cn; hb[j] = o * lk_tanh_##S(cn);                         \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    LK_KERNEL void lk_lstm_fwd_##S(Py_ssize_t n, Py_ssize_t H, T *LK_RESTRICT g,     \
                                   T *LK_RESTRICT c, T *LK_RESTRICT h,               \
                                   T *LK_RESTRICT tanhc) {                           \
        lk_lstm_fwd_units_##S(n, H, 0, H, g, c, h, tanhc);                           \
    }                                                                                \
    /* LSTM step backward: from the activations g, c_prev, tanh(c), dh (n, H)      \
       (total gradient of h_cell) and dc (n, H) (gradient of c from later steps),   \
       writes dg (n, 4H) (gates' pre-activation gradients) and dc <- dc_prev. */    \
    /* (units [j0, j1) of each row: a thread's share) */                           \
    LK_KERNEL void lk_lstm_bwd_units_##S(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0,  \
                                         Py_ssize_t j1, const T *LK_RESTRICT g,      \
                                         const T *LK_RESTRICT cprev,                 \
                                         const T *LK_RESTRICT tanhc,                 \
                                         const T *LK_RESTRICT dh, T *LK_RESTRICT dc, \
                                         T *LK_RESTRICT dg) {                        \
        for (Py_ssize_t b = 0; b < n; b++) {                                         \
            const T *gb = g + b * 4 * H, *cp = cprev + b * H, *tc = tanhc + b * H;   \
            const T *dhb = dh + b * H;                                               \
            T *dcb = dc + b * H, *dgb = dg + b * 4 * H;                              \
            for (Py_ssize_t j = j0; j < j1; j++) {                                   \
                const T i = gb[j], f = gb[H + j], gg = gb[2 * H + j], o = gb[3 * H + j];\
                const T t = tc[j], d = dhb[j];                                       \
                const T dcn = dcb[j] + d * o * (1 - t * t);                          \
                dgb[j] = dcn * gg * i * (1 - i);                                     \
                dgb[H + j] = dcn * cp[j] * f * (1 - f);                              \
                dgb[2 * H + j] = dcn * i * (1 - gg * gg);                            \
                dgb[3 * H + j] = d * t * o * (1 - o);                                \
                dcb[j] = dcn * f;                                                    \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    LK_KERNEL void lk_lstm_bwd_##S(Py_ssize_t n, Py_ssize_t H, const T *LK_RESTRICT g,\
                                   const T *LK_RESTRICT cprev,                       \
                                   const T *LK_RESTRICT tanhc,                       \
                                   const T *LK_RESTRICT dh, T *LK_RESTRICT dc,       \
                                   T *LK_RESTRICT dg) {                              \
        lk_lstm_bwd_units_##S(n, H, 0, H, g, cprev, tanhc, dh, dc, dg);              \
    }                                                                                \
    /* GRU step: gi (n, 3H) input part [r|z|n] (b_hr, b_hz already added);         \
       gh (n, 3H) = h_prev W_hh^T; bhn (H); h (n, H) h_prev in, h out.  With ghn   \
       (n, H) (training), gi is overwritten with r, z, n and ghn gets gh_n + b_hn.*/\
    /* (units [j0, j1) of each row: a thread's share) */                           \
    LK_KERNEL void lk_gru_fwd_units_##S(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0,   \
                                        Py_ssize_t j1, T *LK_RESTRICT gi,            \
                                        const T *LK_RESTRICT gh,                     \
                                        const T *LK_RESTRICT bhn, T *LK_RESTRICT h,  \
                                        T *LK_RESTRICT ghn) {                        \
        for (Py_ssize_t b = 0; b < n; b++) {                                         \
            T *gb = gi + b * 3 * H, *hb = h + b * H;                                 \
            const T *hh = gh + b * 3 * H;                                            \
            if (ghn) {                                                               \
                T *nb = ghn + b * H;                                                 \
                for (Py_ssize_t j = j0; j < j1; j++) {                               \
                    const T r = lk_sigmoid_##S(gb[j] + hh[j]);                       \
                    const T z = lk_sigmoid_##S(gb[H + j] + hh[H + j]);               \
                    const T a = hh[2 * H + j] + bhn[j];                              \
                    const T nn = lk_tanh_##S(gb[2 * H + j] + r * a);                 \
                    gb[j] = r; gb[H + j] = z; gb[2 * H + j] = nn; nb[j] = a;         \
                    hb[j] = nn + z * (hb[j] - nn);                                   \
                }                                                                    \
            } else {                                                                 \
                for (Py_ssize_t j = j0; j < j1; j++) {                               \
                    const T r = lk_sigmoid_##S(gb[j] + hh[j]);                       \
                    const T z = lk_sigmoid_##S(gb[H + j] + hh[H + j]);               \
                    const T nn = lk_tanh_##S(gb[2 * H + j] + r * (hh[2 * H + j] + bhn[j]));\
                    hb[j] = nn + z * (hb[j] - nn);                                   \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    LK_KERNEL void lk_gru_fwd_##S(Py_ssize_t n, Py_ssize_t H, T *LK_RESTRICT gi,     \
                                  const T *LK_RESTRICT gh, const T *LK_RESTRICT bhn, \
                                  T *LK_RESTRICT h, T *LK_RESTRICT ghn) {            \
        lk_gru_fwd_units_##S(n, H, 0, H, gi, gh, bhn, h, ghn);                       \
    }                                                                                \
    /* GRU step backward: g (n, 3H) r, z, n; ghn (n, H); hprev (n, H); dh (n, H)   \
       total gradient of h in, dh * z out; dgh (n, 3H) = [dr, dz, dn * r] (the     \
       recurrent product's gradient), dgin (n, H) = dn (the input part's). */      \
    /* (units [j0, j1) of each row: a thread's share) */                           \
    LK_KERNEL void lk_gru_bwd_units_##S(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0,   \
                                        Py_ssize_t j1, const T *LK_RESTRICT g,       \
                                        const T *LK_RESTRICT ghn,                    \
                                        const T *LK_RESTRICT hprev,                  \
                                        T *LK_RESTRICT dh, T *LK_RESTRICT dgh,       \
                                        T *LK_RESTRICT dgin) {                       \
        for (Py_ssize_t b = 0; b < n; b++) {                                         \
            const T *gb = g + b * 3 * H, *ab = ghn + b * H, *hp = hprev + b * H;     \
            T *dhb = dh + b * H, *dgb = dgh + b * 3 * H, *dnb = dgin + b * H;        \
            for (Py_ssize_t j = j0; j < j1; j++) {                                   \
                const T r = gb[j], z = gb[H + j], nn = gb[2 * H + j], d = dhb[j];    \
                const T dn = d * (1 - z) * (1 - nn * nn);                            \
                dgb[j] = dn * ab[j] * r * (1 - r);                                   \
                dgb[H + j] = d * (hp[j] - nn) * z * (1 - z);                         \
                dgb[2 * H + j] = dn * r;                                             \
                dnb[j] = dn;                                                         \
                dhb[j] = d * z;                                                      \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    LK_KERNEL void lk_gru_bwd_##S(Py_ssize_t n, Py_ssize_t H, const T *LK_RESTRICT g,\
                                  const T *LK_RESTRICT ghn,                          \
                                  const T *LK_RESTRICT hprev, T *LK_RESTRICT dh,     \
                                  T *LK_RESTRICT dgh, T *LK_RESTRICT dgin) {         \
        lk_gru_bwd_units_##S(n, H, 0, H, g, ghn, hprev, dh, dgh, dgin);              \
    }                                                                                \
    /* Elman step on n = rows * H contiguous values: h = act(g); with store,       \
       g = act(g) too (kept for backward). */                                        \
    LK_KERNEL void lk_rnn_fwd_##S(Py_ssize_t n, T *LK_RESTRICT g, T *LK_RESTRICT h,  \
                                  int relu, int store) {                             \
        if (relu) {                                                                  \
            for (Py_ssize_t k = 0; k < n; k++) {                                     \
                const T v = g[k] < 0 ? (T)0 : g[k];   /* NaN propagates */           \
                h[k] = v; if (store) g[k] = v;                                       \
            }                                                                        \
        } else {                                                                     \
            for (Py_ssize_t k = 0; k < n; k++) {                                     \
                const T v = lk_tanh_##S(g[k]);                                       \
                h[k] = v; if (store) g[k] = v;                                       \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    /* Elman step backward: dg = dh * act'(pre) from the activations a. */          \
    LK_KERNEL void lk_rnn_bwd_##S(Py_ssize_t n, const T *LK_RESTRICT a,              \
                                  const T *LK_RESTRICT dh, T *LK_RESTRICT dg,        \
                                  int relu) {                                        \
        if (relu) {                                                                  \
            for (Py_ssize_t k = 0; k < n; k++) dg[k] = a[k] > 0 ? dh[k] : (T)0;      \
        } else {                                                                     \
            for (Py_ssize_t k = 0; k < n; k++) dg[k] = dh[k] * (1 - a[k] * a[k]);    \
        }                                                                            \
    }

    LK_DEFINE_KERNELS(float, f)
    LK_DEFINE_KERNELS(double, d)

    /* Small-batch GEMM over packed panels: out[m, n] (+)= a[m, k] @ b[k, n] for a
       few rows m.  BLAS re-packs b on every call and, for a row-major h @ W^T,
       skips its small-matrix path; a recurrent product reuses the same b every
       step, so it is packed once per call into panels of LK_NR_S columns
       (panel p = b[:, p*NR:(p+1)*NR] stored k-major, the last one zero-padded)
       and streamed once per LK_MR rows.  The MR x NR accumulators stay in
       vector registers: one broadcast of a and one panel load per NR FMAs. */
    #define LK_MR 4
    #define LK_NR_f 32
    #define LK_NR_d 32

    /* Where the panel kernel is used for the recurrent products (it always runs
       as the test twin): GCC keeps its 4 x 32 accumulators in vector registers
       on AVX2 for float (2.5 us for 4 x 128 x 64 vs BLAS's 2-25 us) and on
       AVX-512 for double; elsewhere (double on AVX2: 20 us; SSE2; other
       compilers and CPUs) it was slower than BLAS or not measured. */
    static int lk_panels_pay(int dbl) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__GLIBC__) && !defined(LK_NO_CLONES)
        __builtin_cpu_init();
        return dbl ? __builtin_cpu_supports("avx512f") : __builtin_cpu_supports("avx2");
    #else
        (void)dbl;
        return 0;
    #endif
    }
    /* Where the whole-sequence products (the input projection with W_ih^T packed
       once per call and the biases added as its rows are stored, the backward's
       dx (LSTM, RNN) and weight gradients) go through the panel kernel too: on AVX-512, where
       the kernel runs at ~94% of the FMA peak and OpenBLAS at 85-95% of it, with
       a pass that writes the bias rows first and packing copies (on Zen 4, float32
       T50 B32 I128 H512, float64 inference 6-25% faster: see docs/performance.md).
       On AVX2 the kernel keeps 16 accumulators in 16 registers and runs at half
       rate.  Elsewhere BLAS.  One rule for both dtypes (dbl kept for callers). */
    static int lk_proj_panels_pay(int dbl) {
        (void)dbl;
        return lk_panels_pay(1);
    }
    #if defined(__x86_64__) || defined(_M_X64)
    #  include <immintrin.h>
    #  define LK_PAUSE() _mm_pause()
    #else
    #  define LK_PAUSE() ((void)0)
    #endif
    /* A second thread needs pthreads and GCC/Clang atomics; elsewhere every
       loop runs on the calling thread (the barrier is never entered). */
    #if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
    #  include <pthread.h>
    #  include <sched.h>
    #  include <time.h>
    #  define LK_HAVE_PTHREAD 1
    #  define LK_ATOMIC_ADD(p, v) __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL)
    #  define LK_ATOMIC_STORE(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
    #  define LK_ATOMIC_LOAD(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
    #else
    #  define LK_HAVE_PTHREAD 0
    #  define sched_yield() ((void)0)
    #  define LK_ATOMIC_ADD(p, v) (*(p) += (v))
    #  define LK_ATOMIC_STORE(p, v) (*(p) = (v))
    #  define LK_ATOMIC_LOAD(p) (*(p))
    #endif
    /* The workspace pool (see "The workspace pool" below): freed blocks kept
       for the next call instead of handed back to the system, at most
       lk_pool.cap bytes idle (the oldest given back first).  A request takes
       the smallest idle block of its size to 5/4 of it, else a new block.
       Blocks are 64-byte aligned (malloc gives 16), so that no vector load of
       a panel row straddles two cache lines (on Zen 4 the layer timings did
       not change measurably; CPUs with costlier split loads, before Skylake
       and many ARM cores, gain); from 4 MiB advised for transparent huge
       pages, as NumPy does for its large arrays, and 2 MiB-aligned so that
       whole huge pages can back them.  Both
       threads of a call and Python callers use it: a mutex guards it. */
    #define LK_POOL_SLOTS 64
    static struct {
        void *ptr[LK_POOL_SLOTS];
        size_t size[LK_POOL_SLOTS];
        int n;
        size_t idle, cap;
    } lk_pool;
    #if LK_HAVE_PTHREAD
    static pthread_mutex_t lk_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
    #  define LK_POOL_LOCK() pthread_mutex_lock(&lk_pool_mutex)
    #  define LK_POOL_UNLOCK() pthread_mutex_unlock(&lk_pool_mutex)
    #else  /* one thread in the core; Python callers hold the GIL */
    #  define LK_POOL_LOCK() ((void)0)
    #  define LK_POOL_UNLOCK() ((void)0)
    #endif
    /* 64-byte aligned memory (see above), freed by lk_block_free. */
    static void *lk_block_alloc(size_t n) {
        void *p = NULL;
    #if defined(_WIN32)
        p = _aligned_malloc(n, 64);
    #else
        const size_t big = (size_t)4 << 20;
        if (posix_memalign(&p, n >= big ? ((size_t)2 << 20) : 64, n) != 0) return NULL;
    #  if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (n >= big) madvise(p, n, MADV_HUGEPAGE);
    #  endif
    #endif
        return p;
    }
    static void lk_block_free(void *p) {
    #if defined(_WIN32)
        _aligned_free(p);
    #else
        free(p);
    #endif
    }
    static void lk_pool_drop(int i) {  /* the entry leaves the list (lock held) */
        for (; i < lk_pool.n - 1; i++) {
            lk_pool.ptr[i] = lk_pool.ptr[i + 1];
            lk_pool.size[i] = lk_pool.size[i + 1];
        }
        lk_pool.n--;
    }
    static void lk_pool_trim(size_t room) {  /* room for `room` more bytes and a slot (lock held) */
        while (lk_pool.n > 0 && (lk_pool.idle + room > lk_pool.cap || lk_pool.n >= LK_POOL_SLOTS)) {
            lk_block_free(lk_pool.ptr[0]);
            lk_pool.idle -= lk_pool.size[0];
            lk_pool_drop(0);
        }
    }
    /* A block of at least `want` bytes (its size in *got), or NULL. */
    static void *lk_pool_take(size_t want, size_t *got) {
        int best = -1;
        LK_POOL_LOCK();
        for (int i = 0; i < lk_pool.n; i++)
            if (want <= lk_pool.size[i] && lk_pool.size[i] <= want + want / 4
                    && (best < 0 || lk_pool.size[i] < lk_pool.size[best]))
                best = i;
        if (best >= 0) {
            void *p = lk_pool.ptr[best];
            *got = lk_pool.size[best];
            lk_pool.idle -= lk_pool.size[best];
            lk_pool_drop(best);
            LK_POOL_UNLOCK();
            return p;
        }
        LK_POOL_UNLOCK();
        *got = want;
        return lk_block_alloc(want ? want : 1);
    }
    static void lk_pool_give(void *p, size_t size) {
        if (p == NULL) return;
        LK_POOL_LOCK();
        if (size > lk_pool.cap) {
            LK_POOL_UNLOCK();
            lk_block_free(p);
            return;
        }
        lk_pool_trim(size);
        lk_pool.ptr[lk_pool.n] = p;
        lk_pool.size[lk_pool.n] = size;
        lk_pool.n++;
        lk_pool.idle += size;
        LK_POOL_UNLOCK();
    }
    #if LK_HAVE_PTHREAD
    /* Held across fork, so that no other thread is half-way through the list
       the child inherits. */
    static void lk_pool_fork_lock(void) { pthread_mutex_lock(&lk_pool_mutex); }
    static void lk_pool_fork_unlock(void) { pthread_mutex_unlock(&lk_pool_mutex); }
    static void lk_pool_init(void) {
        pthread_atfork(lk_pool_fork_lock, lk_pool_fork_unlock, lk_pool_fork_unlock);
    }
    #else
    static void lk_pool_init(void) {}
    #endif
    static void lk_pool_limit(int set, size_t cap, size_t *idle, int *n) {
        LK_POOL_LOCK();
        if (set) {
            lk_pool.cap = cap;
            lk_pool_trim(0);
        }
        *idle = lk_pool.idle;
        *n = lk_pool.n;
        LK_POOL_UNLOCK();
    }
    /* A packed operand larger than half of this CPU's L2 per core (sysconf; 1 MB
       where it cannot be read) is fetched ahead by the panel kernel (on the Xeon
       with 2 MB: 5-15% faster at 2 MB, +-1% at 1 MB). */
    static size_t lk_ahead = 0;  /* a race between threads writes the same value */
    static size_t lk_ahead_bytes(void) {
        if (lk_ahead == 0) {
            long v = -1;
    #if defined(_SC_LEVEL2_CACHE_SIZE)
            v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    #endif
            lk_ahead = (v > 0 ? (size_t)v : (size_t)1 << 20) / 2;
        }
        return lk_ahead;
    }
    /* test switch: the size over which b is fetched ahead (0: from this CPU's L2 again) */
    static size_t lk_set_ahead_bytes(size_t v) {
        const size_t old = lk_ahead_bytes();
        lk_ahead = v;
        return old;
    }
    /* float rows in blocks of 8 (8 x 32 accumulators: 16 of the 32 AVX-512
       registers) where the x86-64-v4 clone runs: on an Intel Xeon, whose two FMA
       units need 8 or more independent sums each 4 cycles, 4 rows kept the kernel at
       ~65% of the FMA peak (16 x 128 x 512 137 -> 150 GFLOP/s, 64 x 256 x 1024 144
       -> 160); with AVX2's 16 registers they would spill, and double's 8 x 32 would
       take all 32.  A test switch (lk_set_rows8) turns them off. */
    static int lk_rows8_on = -1;  /* a race between threads writes the same value */
    static int lk_rows8(void) {
        if (lk_rows8_on < 0) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__GLIBC__) && !defined(LK_NO_CLONES)
            __builtin_cpu_init();
            lk_rows8_on = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                && __builtin_cpu_supports("avx512cd");
    #else
            lk_rows8_on = 0;
    #endif
        }
        return lk_rows8_on;
    }
    static int lk_set_rows8(int on) {
        const int old = lk_rows8();
        lk_rows8_on = on;
        return old;
    }
    /* One block of MRV rows of the panel kernel below (rows r0.., mr of them real):
       MRV x NR accumulators over the whole k. */
    #define LK_PANEL_BLOCK(T, RS, KS, MRV, PF)                                       \
            {                                                                        \
                const T *ar[MRV];                                                  \
                /* rows past m repeat the last row: computed, never stored */       \
                for (int r = 0; r < MRV; r++) ar[r] = a + (r0 + (r < mr ? r : mr - 1)) * RS;\
                T acc[MRV][NR];                                                    \
                for (int r = 0; r < MRV; r++)                                      \
                    for (int c = 0; c < NR; c++) acc[r][c] = 0;                      \
                /* the rows it adds to (a step's gate rows, in a block of the    \
                   input projection that L2 no longer holds): fetched while the   \
                   k loop runs, not at the store (T100 B64 H256: 7% faster) */    \
                if (accumulate)                                                      \
                    for (Py_ssize_t r = 0; r < mr; r++)                              \
                        for (Py_ssize_t c = 0; c < w_; c += 64 / (Py_ssize_t)sizeof(T))\
                            LK_PREFETCH_W(out + (r0 + r) * ldo + p0 + c);             \
                for (Py_ssize_t kk = 0; kk < k; kk++) {                              \
                    const T *wk = w + kk * NR;                                       \
                    if (PF && --tick == 0) {  /* (LK_PANEL_LOOP) */                  \
                        for (int l = 0; l < NR * (int)sizeof(T); l += 64)            \
                            LK_PREFETCH_L2((const char *)(ahead + row * NR) + l);    \
                        row++;                                                       \
                        tick = blocks;                                               \
                    }                                                                \
                    for (int r = 0; r < MRV; r++) {                                \
                        const T av = ar[r][kk * KS];                                \
                        for (int c = 0; c < NR; c++) acc[r][c] += av * wk[c];        \
                    }                                                                \
                }                                                                    \
                for (Py_ssize_t r = 0; r < mr; r++) {                                \
                    T *o = out + (r0 + r) * ldo + p0;                                \
                    if (accumulate)                                                  \
                        for (Py_ssize_t c = 0; c < w_; c++) o[c] += acc[r][c];       \
                    else if (bias)  /* as BLAS's beta = 1 onto a row of biases */   \
                        for (Py_ssize_t c = 0; c < w_; c++) o[c] = bias[p0 + c] + acc[r][c];\
                    else                                                             \
                        for (Py_ssize_t c = 0; c < w_; c++) o[c] = acc[r][c];        \
                }                                                                    \
            }
    /* The panel kernel's loop over m > 1 rows: panel outer, rows inner, so that each
       panel (k * NR values) is read from memory once per call and then from cache for
       the other row blocks.  With AHEAD the row blocks also fetch the next panel into
       L2 as they go, a row of it every `blocks` k steps: a b that L2 does not keep
       (W_hh^T at H512: 4 MB) otherwise comes from L3 for each panel's first block at a
       fraction of the FMA rate (Intel Xeon, 2 MB of L2: 4 x 512 x 2048 at 57 GFLOP/s;
       8, 16 and 32 rows x 512 x 2048 75 -> 91, 95 -> 116 and 113 -> 121).  Its own
       function: beside the others in one, it cost the blocks without it 2-5%. */
    #define LK_PANEL_LOOP(T, RS, KS, AHEAD)                                          \
        const int rows8 = sizeof(T) == 4 && lk_rows8();                              \
        const Py_ssize_t blocks = rows8 ? m / 8 + (m % 8 + LK_MR - 1) / LK_MR        \
                                        : (m + LK_MR - 1) / LK_MR;                   \
        (void)blocks;                                                                \
        for (Py_ssize_t p0 = 0; p0 < n; p0 += NR) {                                  \
            const T *w = packed + p0 * k;                                            \
            const Py_ssize_t w_ = n - p0 < NR ? n - p0 : NR;                         \
            const T *ahead = AHEAD && p0 + NR < n ? w + k * NR : NULL;               \
            (void)ahead;                                                             \
            Py_ssize_t bi = 0, mr;                                                   \
            for (Py_ssize_t r0 = 0; r0 < m; r0 += mr, bi++) {                        \
                mr = rows8 && m - r0 >= 8 ? 8 : m - r0 < LK_MR ? m - r0 : LK_MR;     \
                Py_ssize_t row = (bi * k + blocks - 1) / blocks;                     \
                Py_ssize_t tick = row * blocks - bi * k + 1;                         \
                (void)row; (void)tick;                                               \
                /* a last block of 1 or 2 rows on 2 or 4 accumulators (the FMA      \
                   latency bounds them, still 2x faster than 4 rows of which 2-3 are \
                   thrown away: a packed batch's shrinking steps); each row sums in   \
                   the same order in every block, so the bits do not change */       \
                if (mr == 8) {                                                       \
                    if (AHEAD && ahead) LK_PANEL_BLOCK(T, RS, KS, 8, AHEAD)          \
                    else LK_PANEL_BLOCK(T, RS, KS, 8, 0)                             \
                }                                                                    \
                else if (mr == 1) LK_PANEL_BLOCK(T, RS, KS, 1, 0)                     \
                else if (mr == 2) LK_PANEL_BLOCK(T, RS, KS, 2, 0)                     \
                else if (AHEAD && ahead) LK_PANEL_BLOCK(T, RS, KS, LK_MR, AHEAD)      \
                else LK_PANEL_BLOCK(T, RS, KS, LK_MR, 0)                              \
            }                                                                        \
        }
    /* The panel kernel NAME: out[m, n] (+)= a[m, k] @ b, b packed by lk_pack, a[r, kk]
       at a[r * RS + kk * KS] (RS = lda, KS = 1: a as stored; RS = 1, KS = lda: a
       given transposed). */
    #define LK_DEFINE_PANEL_GEMM(T, NAME, NRV, RS, KS)                               \
    LK_KERNEL void NAME##_ahead(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,            \
                                const T *LK_RESTRICT a, Py_ssize_t lda,              \
                                const T *LK_RESTRICT packed, int accumulate,         \
                                const T *LK_RESTRICT bias, T *LK_RESTRICT out,       \
                                Py_ssize_t ldo) {                                    \
        enum { NR = NRV };                                                           \
        LK_PANEL_LOOP(T, RS, KS, 1)                                                  \
    }                                                                                \
    LK_KERNEL void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,                    \
                        const T *LK_RESTRICT a, Py_ssize_t lda,                      \
                        const T *LK_RESTRICT packed, int accumulate,                 \
                        const T *LK_RESTRICT bias, T *LK_RESTRICT out,               \
                        Py_ssize_t ldo) {                                            \
        enum { NR = NRV };                                                           \
        if (m == 1) {  /* a gemv, panel by panel, each as 4 chains over k mod 4: 8     \
                          independent FMA chains (one k-long chain would wait on FMA  \
                          latency), and a column's order of sums does not depend on   \
                          which panels a call covers (two threads split by panels) */  \
            for (Py_ssize_t p0 = 0; p0 < n; p0 += NR) {                              \
                const T *wq = packed + p0 * k;                                       \
                const Py_ssize_t cols = n - p0 < NR ? n - p0 : NR;                   \
                T part[4][NR];                                                       \
                for (int j = 0; j < 4; j++)                                          \
                    for (int c = 0; c < NR; c++) part[j][c] = 0;                     \
                Py_ssize_t kk = 0;                                                   \
                for (; kk + 4 <= k; kk += 4)                                         \
                    for (int j = 0; j < 4; j++) {                                    \
                        const T av = a[(kk + j) * KS];                               \
                        for (int c = 0; c < NR; c++)                                 \
                            part[j][c] += av * wq[(kk + j) * NR + c];                \
                    }                                                                \
                for (; kk < k; kk++) {                                               \
                    const T av = a[kk * KS];                                         \
                    for (int c = 0; c < NR; c++) part[0][c] += av * wq[kk * NR + c]; \
                }                                                                    \
                T *o = out + p0;                                                     \
                for (Py_ssize_t c = 0; c < cols; c++) {                              \
                    const T v = (part[0][c] + part[1][c]) + (part[2][c] + part[3][c]);\
                    o[c] = accumulate ? o[c] + v : bias ? bias[p0 + c] + v : v;      \
                }                                                                    \
            }                                                                        \
            return;                                                                  \
        }                                                                            \
        if (m > LK_MR && (size_t)k * (size_t)n * sizeof(T) > lk_ahead_bytes()) {     \
            NAME##_ahead(m, n, k, a, lda, packed, accumulate, bias, out, ldo);       \
            return;                                                                  \
        }                                                                            \
        LK_PANEL_LOOP(T, RS, KS, 0)                                                  \
    }

    #define LK_DEFINE_PANEL(T, S)                                                    \
    /* Pack b = src (k, n), row stride ld, into panels as lk_pack does, adding   \
       its column sums to sum (n values) when sum is not NULL */                                      \
    LK_KERNEL void lk_pack_sum_##S(Py_ssize_t k, Py_ssize_t n, const T *LK_RESTRICT src,\
                                   Py_ssize_t ld, T *LK_RESTRICT packed,             \
                                   T *LK_RESTRICT sum) {                             \
        enum { NR = LK_NR_##S };                                                     \
        for (Py_ssize_t p0 = 0; p0 < n; p0 += NR) {                                  \
            T *dst = packed + p0 * k;                                                \
            const Py_ssize_t w = n - p0 < NR ? n - p0 : NR;                          \
            if (w == NR && sum) {                                                    \
                T s[NR];                                                             \
                for (int c = 0; c < NR; c++) s[c] = sum[p0 + c];                     \
                for (Py_ssize_t kk = 0; kk < k; kk++)                                \
                    for (int c = 0; c < NR; c++) {                                   \
                        const T v = src[kk * ld + p0 + c];                           \
                        dst[kk * NR + c] = v;                                        \
                        s[c] += v;                                                   \
                    }                                                                \
                for (int c = 0; c < NR; c++) sum[p0 + c] = s[c];                     \
            } else if (w == NR) {                                                    \
                for (Py_ssize_t kk = 0; kk < k; kk++)                                \
                    for (int c = 0; c < NR; c++) dst[kk * NR + c] = src[kk * ld + p0 + c];\
            } else {                                                                 \
                for (Py_ssize_t kk = 0; kk < k; kk++) {                              \
                    for (Py_ssize_t c = 0; c < w; c++) {                             \
                        const T v = src[kk * ld + p0 + c];                           \
                        dst[kk * NR + c] = v;                                        \
                        if (sum) sum[p0 + c] += v;                                   \
                    }                                                                \
                    for (Py_ssize_t c = w; c < NR; c++) dst[kk * NR + c] = 0;        \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    /* Pack b (k, n) into panels; b is src (k, n) row-major, or src (n, k) with   \
       trans (then b = src^T).  packed holds ceil(n / NR) * k * NR values. */      \
    static void lk_pack_##S(Py_ssize_t k, Py_ssize_t n, const T *LK_RESTRICT src,    \
                            int trans, T *LK_RESTRICT packed) {                      \
        const Py_ssize_t NR = LK_NR_##S;                                             \
        if (!trans) {                                                                \
            lk_pack_sum_##S(k, n, src, n, packed, NULL);                             \
            return;                                                                  \
        }                                                                            \
        for (Py_ssize_t p0 = 0; p0 < n; p0 += NR) {                                  \
            T *dst = packed + p0 * k;                                                \
            const Py_ssize_t w = n - p0 < NR ? n - p0 : NR;                          \
            for (Py_ssize_t k0 = 0; k0 < k; k0 += 16) {  /* one cache line of each src row */\
                const Py_ssize_t k1 = k - k0 < 16 ? k : k0 + 16;                     \
                const Py_ssize_t pf = k0 + 4 * 64 / (Py_ssize_t)sizeof(T);           \
                for (Py_ssize_t c = 0; c < w; c++) {                                 \
                    const T *row = src + (p0 + c) * k;                               \
                    /* NR rows at once are more streams than the hardware tracks:   \
                       fetch 4 lines ahead in the row (a cold float32 (2048, 512)     \
                       weight packed 20% faster) */                                    \
                    if (pf < k) LK_PREFETCH_R(row + pf);                             \
                    if (sizeof(T) == 8 && pf + 8 < k) LK_PREFETCH_R(row + pf + 8);   \
                    for (Py_ssize_t kk = k0; kk < k1; kk++) dst[kk * NR + c] = row[kk];\
                }                                                                    \
            }                                                                        \
            for (Py_ssize_t kk = 0; kk < k; kk++)                                    \
                for (Py_ssize_t c = w; c < NR; c++) dst[kk * NR + c] = 0;            \
        }                                                                            \
    }                                                                                \
    LK_DEFINE_PANEL_GEMM(T, lk_panel_gemm_##S, LK_NR_##S, lda, 1)                     \
    /* the same with a given transposed, a[r, kk] at a[kk * lda + r]: the backward's \
       weight gradients read the layer's input and hidden states in place */          \
    LK_DEFINE_PANEL_GEMM(T, lk_panel_gemm_at_##S, LK_NR_##S, 1, lda)

    LK_DEFINE_PANEL(float, f)
    LK_DEFINE_PANEL(double, d)

    /* The backward's weight gradients on the panel kernel: for the gate columns
       [g0, g1) of dg (N, G), dw_a[g0:g1] = dg^T a and dw_b[g0:g1] = dg^T b, with
       a (N, I) the layer's input and b (N, P) the previous hidden states.  As
       the kernel's [a | b]^T dg, in blocks of LK_WG_KC rows of the sum: each
       block of dg is packed into panels once for both products (BLAS packs dg^T
       once per product: 7% of a training step at T100 B64 H256), the column
       sums of dg (the bias gradient, when db) taken by the same pass; a and b
       are read in place by lk_panel_gemm_at (transposing them first cost 3.5%
       of the step), and the transposed sums are kept in a scratch that is
       written out at the end (columns in chunks, so that the scratch stays
       within LK_WG_ACC_BYTES).  Neither the split [g0, g1) between threads nor
       the chunks change bits: each output sums the same blocks in the same
       order.  I or P may be 0 (one product).  Returns -1, having written
       nothing, when memory is short. */
    #define LK_WG_KC 256
    #define LK_WG_ACC_BYTES (4 << 20)
    #define LK_DEFINE_WGRAD(T, S)                                                    \
    /* dst[c, r] = src[r, c] for r < rows, c < cols, in 16 x 16 tiles */          \
    LK_KERNEL void lk_transpose_##S(Py_ssize_t rows, Py_ssize_t cols,                \
                                    const T *LK_RESTRICT src, Py_ssize_t lds,        \
                                    T *LK_RESTRICT dst, Py_ssize_t ldd) {            \
        for (Py_ssize_t r0 = 0; r0 < rows; r0 += 16)                                 \
            for (Py_ssize_t c0 = 0; c0 < cols; c0 += 16) {                           \
                const Py_ssize_t r1 = rows - r0 < 16 ? rows : r0 + 16;               \
                const Py_ssize_t c1 = cols - c0 < 16 ? cols : c0 + 16;               \
                for (Py_ssize_t c = c0; c < c1; c++)                                 \
                    for (Py_ssize_t r = r0; r < r1; r++)                             \
                        dst[c * ldd + r] = src[r * lds + c];                         \
            }                                                                        \
    }                                                                                \
    static int lk_weight_grads_##S(Py_ssize_t N, Py_ssize_t G, Py_ssize_t g0,        \
                                   Py_ssize_t g1, const T *dg, Py_ssize_t I,         \
                                   const T *a, Py_ssize_t P, const T *b, T *dw_a,    \
                                   T *dw_b, T *db) {                                 \
        const Py_ssize_t NR = LK_NR_##S, KC = LK_WG_KC, M = I + P;                   \
        if (g1 <= g0) return 0;                                                      \
        /* columns in chunks whose transposed sums fit LK_WG_ACC_BYTES */          \
        Py_ssize_t cw = LK_WG_ACC_BYTES / ((M > 0 ? M : 1) * (Py_ssize_t)sizeof(T)) / NR * NR;\
        if (cw < NR) cw = NR;                                                        \
        if (cw > g1 - g0) cw = g1 - g0;                                              \
        size_t pk_n, acc_n;  /* from the pool: the same sizes every call */         \
        T *pk = (T *)lk_pool_take((size_t)((cw + NR - 1) / NR * NR) * KC * sizeof(T), &pk_n);\
        T *acc = (T *)lk_pool_take((size_t)M * cw * sizeof(T), &acc_n);              \
        if (pk == NULL || acc == NULL) {                                             \
            lk_pool_give(pk, pk_n); lk_pool_give(acc, acc_n);                        \
            return -1;                                                               \
        }                                                                            \
        for (Py_ssize_t c0 = g0; c0 < g1; c0 += cw) {                                \
            const Py_ssize_t gw = g1 - c0 < cw ? g1 - c0 : cw;                       \
            if (db)                                                                  \
                for (Py_ssize_t c = 0; c < gw; c++) db[c0 + c] = 0;                  \
            if (N <= 0)                                                              \
                for (Py_ssize_t i = 0; i < M * gw; i++) acc[i] = 0;                  \
            for (Py_ssize_t k0 = 0; k0 < N; k0 += KC) {                              \
                const Py_ssize_t kc = N - k0 < KC ? N - k0 : KC;                     \
                lk_pack_sum_##S(kc, gw, dg + k0 * G + c0, G, pk, db ? db + c0 : NULL);\
                if (I > 0)                                                           \
                    lk_panel_gemm_at_##S(I, gw, kc, a + k0 * I, I, pk, k0 > 0, NULL, \
                                         acc, gw);                                   \
                if (P > 0)                                                           \
                    lk_panel_gemm_at_##S(P, gw, kc, b + k0 * P, P, pk, k0 > 0, NULL, \
                                         acc + I * gw, gw);                          \
            }                                                                        \
            if (I > 0) lk_transpose_##S(I, gw, acc, gw, dw_a + c0 * I, I);           \
            if (P > 0) lk_transpose_##S(P, gw, acc + I * gw, gw, dw_b + c0 * P, P);  \
        }                                                                            \
        lk_pool_give(pk, pk_n); lk_pool_give(acc, acc_n);                            \
        return 0;                                                                    \
    }

    LK_DEFINE_WGRAD(float, f)
    LK_DEFINE_WGRAD(double, d)

    /* A sense-reversing barrier for two threads that gives up on a stalled
       partner: the last to arrive compares its arrival with the first's; more
       than LK_STALL_S and half a step apart means one of them was descheduled.
       Once is a hiccup (a daemon woke, a page fault storm); the LK_STALL_STRIKES-th
       time in a call the machine is busy, and the last to arrive sets `solo`
       before releasing, so both see the same decision.  lk_barrier_wait returns 0
       from then on: the caller does all the work alone and the worker returns. */
    #define LK_STALL_S 1e-3
    #define LK_STALL_STRIKES 3
    typedef struct { int n, count, sense, solo, strikes; double arrived[2], released; } lk_barrier;
    static double lk_now(void) {
    #if LK_HAVE_PTHREAD
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    #else
        return 0.0;
    #endif
    }
    /* Test hooks: the worker sleeps 5 ms before each of lk_stall_steps steps
       (-1: all) from lk_stall_step on (a thread descheduled on a busy machine);
       lk_solo_count counts fallbacks. */
    static Py_ssize_t lk_stall_step = -1, lk_stall_steps = -1;
    static int lk_solo_count = 0, lk_team_count = 0;
    static void lk_maybe_stall(int tid, Py_ssize_t s) {
    #if LK_HAVE_PTHREAD
        if (tid == 1 && lk_stall_step >= 0 && s >= lk_stall_step
                && (lk_stall_steps < 0 || s < lk_stall_step + lk_stall_steps)) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
    #else
        (void)tid; (void)s;
    #endif
    }
    static int lk_barrier_wait(lk_barrier *b, int *sense, int tid, int judge) {
        *sense = !*sense;
        b->arrived[tid] = lk_now();  /* published to the other by the add */
        if (LK_ATOMIC_ADD(&b->count, 1) == b->n) {
            LK_ATOMIC_STORE(&b->count, 0);
            const double a = b->arrived[0], c = b->arrived[1];
            const double first = a < c ? a : c, last = a < c ? c : a;
            /* late by more than 1 ms and by more than half the step's length */
            if (judge && last - first > LK_STALL_S
                    && last - first > 0.5 * (first - b->released)
                    && ++b->strikes >= LK_STALL_STRIKES) {
                LK_ATOMIC_STORE(&b->solo, 1);
                LK_ATOMIC_ADD(&lk_solo_count, 1);
            }
            b->released = lk_now();
            LK_ATOMIC_STORE(&b->sense, *sense);
        } else {
            unsigned spins = 0;  /* spin briefly, then give the CPU away */
            while (LK_ATOMIC_LOAD(&b->sense) != *sense) {
                if (++spins < 2048) { LK_PAUSE(); } else { sched_yield(); }
            }
        }
        return !LK_ATOMIC_LOAD(&b->solo);
    }
    /* Two threads for one core call: the caller and a worker.  The worker is
       lk_helper's thread, kept between calls: creating and joining a thread per
       call cost 50-80 us on these machines (with its affinity set), 2-4% of a
       T100 B16 H128 layer at two threads.  After a call it waits
       LK_HELPER_SPIN_S for the next one (the next layer, direction or step of
       a Python loop), giving the CPU away to anything else runnable, then
       sleeps; after LK_HELPER_IDLE_S asleep it exits, so that a process does
       not keep a thread it no longer uses (Python 3.12 warns when a process
       with threads forks).  One call holds it at a time: a call made meanwhile
       (another Python thread in the core) starts a thread of its own. */
    typedef struct {
        lk_barrier bar;
        int nthreads;
        int pooled;  /* the worker is lk_helper's thread (else one to join) */
    #if LK_HAVE_PTHREAD
        pthread_t worker;
    #endif
    } lk_team;
    #if LK_HAVE_PTHREAD
    #  include <errno.h>
    #  define LK_HELPER_SPIN_S 2e-4
    #  define LK_HELPER_IDLE_S 1
    static struct {
        pthread_mutex_t mu;
        pthread_cond_t job, done_cv;
        int alive, held, sleeping, waiting;
        unsigned long posted, done, start;  /* calls posted and finished */
        void *(*fn)(void *);
        void *arg;
        unsigned mode;  /* the caller's control register (denormals flushed or not) */
        pthread_t thread;
    #  if defined(__linux__)
        cpu_set_t placed;  /* the mask last given to the thread */
        int has_placed;
    #  endif
    } lk_helper = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                   PTHREAD_COND_INITIALIZER};
    static int lk_helper_count = 0;  /* threads lk_helper started (a test hook reads it) */
    static void *lk_helper_main(void *unused) {
        unsigned long seen = lk_helper.start;
        (void)unused;
        for (;;) {
            const double t0 = lk_now();
            unsigned spins = 0;
            while (LK_ATOMIC_LOAD(&lk_helper.posted) == seen) {
                LK_PAUSE();
                if ((++spins & 255) == 0) {
                    if (lk_now() - t0 > LK_HELPER_SPIN_S) break;
                    sched_yield();
                }
            }
            if (LK_ATOMIC_LOAD(&lk_helper.posted) == seen) {
                pthread_mutex_lock(&lk_helper.mu);
                lk_helper.sleeping = 1;
                while (LK_ATOMIC_LOAD(&lk_helper.posted) == seen) {
                    struct timespec ts;
                    clock_gettime(CLOCK_REALTIME, &ts);
                    ts.tv_sec += LK_HELPER_IDLE_S;
                    if (pthread_cond_timedwait(&lk_helper.job, &lk_helper.mu, &ts) == ETIMEDOUT
                            && LK_ATOMIC_LOAD(&lk_helper.posted) == seen
                            && !LK_ATOMIC_LOAD(&lk_helper.held)) {
                        lk_helper.alive = lk_helper.sleeping = 0;  /* a caller starts another */
                        pthread_mutex_unlock(&lk_helper.mu);
                        return NULL;
                    }
                }
                lk_helper.sleeping = 0;
                pthread_mutex_unlock(&lk_helper.mu);
            }
            seen = LK_ATOMIC_LOAD(&lk_helper.posted);
            /* as a thread started for the call would have inherited it */
            if (lk_fp_mode() != lk_helper.mode) lk_denormals_restore(lk_helper.mode);
            lk_helper.fn(lk_helper.arg);
            LK_ATOMIC_STORE(&lk_helper.done, seen);
            pthread_mutex_lock(&lk_helper.mu);
            if (lk_helper.waiting) pthread_cond_signal(&lk_helper.done_cv);
            pthread_mutex_unlock(&lk_helper.mu);
        }
    }
    /* The helper runs on the caller's CPUs but the one the caller is on: left to
       the scheduler, a thread woken after the machine idled a while runs beside
       the thread that woke it, and the two time-share one CPU until load
       balancing moves one (T100 B16 H128: 15 ms against 2.4). */
    #  if defined(__linux__)
    /* The caller's CPUs but the one it is on (its whole mask, as a thread started for
       the call inherits, when that is its only CPU); 0 when they cannot be read. */
    static int lk_away_mask(cpu_set_t *mask) {
        const int here = sched_getcpu();
        if (sched_getaffinity(0, sizeof *mask, mask) != 0) return 0;
        if (here >= 0 && CPU_ISSET(here, mask) && CPU_COUNT(mask) > 1) CPU_CLR(here, mask);
        return 1;
    }
    #  endif
    static void lk_helper_place(void) {
    #  if defined(__linux__)
        cpu_set_t mask;
        if (!lk_away_mask(&mask)) return;
        if (lk_helper.has_placed && CPU_EQUAL(&mask, &lk_helper.placed)) return;
        if (pthread_setaffinity_np(lk_helper.thread, sizeof mask, &mask) == 0) {
            lk_helper.placed = mask;
            lk_helper.has_placed = 1;
        }
    #  endif
    }
    /* Post fn(arg) to the helper: 0 (nothing posted) when another call holds it or no
       thread can be started. */
    static int lk_helper_post(void *(*fn)(void *), void *arg) {
        int free_ = 0;
        if (!__atomic_compare_exchange_n(&lk_helper.held, &free_, 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            return 0;
        pthread_mutex_lock(&lk_helper.mu);
        if (!lk_helper.alive) {
            pthread_attr_t attr;
            int ok = pthread_attr_init(&attr) == 0;
            lk_helper.start = lk_helper.posted;
            if (ok) {
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                ok = pthread_create(&lk_helper.thread, &attr, lk_helper_main, NULL) == 0;
                pthread_attr_destroy(&attr);
            }
            if (!ok) {
                pthread_mutex_unlock(&lk_helper.mu);
                LK_ATOMIC_STORE(&lk_helper.held, 0);
                return 0;
            }
            lk_helper.alive = 1;
    #  if defined(__linux__)
            lk_helper.has_placed = 0;
    #  endif
            LK_ATOMIC_ADD(&lk_helper_count, 1);
        }
        lk_helper_place();
        lk_helper.fn = fn;
        lk_helper.arg = arg;
        lk_helper.mode = lk_fp_mode();
        LK_ATOMIC_STORE(&lk_helper.posted, lk_helper.posted + 1);
        if (lk_helper.sleeping) pthread_cond_signal(&lk_helper.job);
        pthread_mutex_unlock(&lk_helper.mu);
        return 1;
    }
    /* Until the posted call has returned (spinning briefly, then asleep); then
       the helper is free for the next call. */
    static void lk_helper_wait(void) {
        const unsigned long want = lk_helper.posted;
        unsigned spins = 0;
        while (LK_ATOMIC_LOAD(&lk_helper.done) != want && ++spins < 4096) LK_PAUSE();
        if (LK_ATOMIC_LOAD(&lk_helper.done) != want) {
            pthread_mutex_lock(&lk_helper.mu);
            lk_helper.waiting = 1;
            while (LK_ATOMIC_LOAD(&lk_helper.done) != want)
                pthread_cond_wait(&lk_helper.done_cv, &lk_helper.mu);
            lk_helper.waiting = 0;
            pthread_mutex_unlock(&lk_helper.mu);
        }
        LK_ATOMIC_STORE(&lk_helper.held, 0);
    }
    /* A forked child has no helper thread (the fork held the mutex, so no call
       was half-way through posting): start afresh. */
    static void lk_helper_after_fork(void) {
        pthread_mutex_init(&lk_helper.mu, NULL);
        pthread_cond_init(&lk_helper.job, NULL);
        pthread_cond_init(&lk_helper.done_cv, NULL);
        lk_helper.alive = lk_helper.held = lk_helper.sleeping = lk_helper.waiting = 0;
        lk_helper.posted = lk_helper.done = lk_helper.start = 0;
    }
    static void lk_helper_fork_lock(void) { pthread_mutex_lock(&lk_helper.mu); }
    static void lk_helper_fork_unlock(void) { pthread_mutex_unlock(&lk_helper.mu); }
    static void lk_helper_init(void) {
        pthread_atfork(lk_helper_fork_lock, lk_helper_fork_unlock, lk_helper_after_fork);
    }
    static unsigned long lk_helper_posts(void) { return LK_ATOMIC_LOAD(&lk_helper.posted); }
    #else
    static int lk_helper_count = 0;
    static void lk_helper_init(void) {}
    static int lk_helper_post(void *(*fn)(void *), void *arg) { (void)fn; (void)arg; return 0; }
    static void lk_helper_wait(void) {}
    static unsigned long lk_helper_posts(void) { return 0; }
    #endif
    static void lk_team_start(lk_team *t, int want, void *(*fn)(void *), void *arg) {
        t->bar.n = 2; t->bar.count = 0; t->bar.sense = 0; t->bar.solo = 0; t->bar.strikes = 0;
        t->bar.released = lk_now();
        t->nthreads = 1;
        t->pooled = 0;
    #if LK_HAVE_PTHREAD
        if (want > 1) {
            t->nthreads = 2;  /* before the worker starts: it reads it */
            if (lk_helper_post(fn, arg)) {
                t->pooled = 1;
                LK_ATOMIC_ADD(&lk_team_count, 1);
                return;
            }
            pthread_attr_t attr, *use = NULL;
    #  if defined(__linux__)
            /* placed as lk_helper_place places the helper */
            cpu_set_t mask;
            if (lk_away_mask(&mask) && pthread_attr_init(&attr) == 0) {
                if (pthread_attr_setaffinity_np(&attr, sizeof mask, &mask) == 0) use = &attr;
                else pthread_attr_destroy(&attr);
            }
    #  endif
            if (pthread_create(&t->worker, use, fn, arg) != 0) t->nthreads = 1;
            else LK_ATOMIC_ADD(&lk_team_count, 1);
            if (use) pthread_attr_destroy(use);
        }
    #else
        (void)want; (void)fn; (void)arg;
    #endif
    }
    /* End of a phase: 1 while the two threads go on sharing the work, 0 when the
       calling thread works alone (one thread, or the team fell back).  `judge`:
       the two had equal shares since the last barrier, so a late one stalled
       (not after work only the caller does, like the input projection). */
    static int lk_team_wait(lk_team *t, int *sense, int tid, int judge) {
        return t->nthreads > 1 && !LK_ATOMIC_LOAD(&t->bar.solo)
               && lk_barrier_wait(&t->bar, sense, tid, judge);
    }
    static void lk_team_end(lk_team *t) {
    #if LK_HAVE_PTHREAD
        if (t->nthreads > 1 && t->pooled) lk_helper_wait();
        else if (t->nthreads > 1) pthread_join(t->worker, NULL);
    #else
        (void)t;
    #endif
    }
    """
    void lk_tanh_arr_f(Py_ssize_t n, const float* x, float* out) noexcept nogil
    void lk_tanh_arr_d(Py_ssize_t n, const double* x, double* out) noexcept nogil
    void lk_sigmoid_arr_f(Py_ssize_t n, const float* x, float* out) noexcept nogil
    void lk_sigmoid_arr_d(Py_ssize_t n, const double* x, double* out) noexcept nogil
    void lk_lstm_fwd_f(Py_ssize_t n, Py_ssize_t H, float* g, float* c, float* h,
                       float* tanhc) noexcept nogil
    void lk_lstm_fwd_d(Py_ssize_t n, Py_ssize_t H, double* g, double* c, double* h,
                       double* tanhc) noexcept nogil
    void lk_lstm_bwd_f(Py_ssize_t n, Py_ssize_t H, const float* g, const float* cprev,
                       const float* tanhc, const float* dh, float* dc,
                       float* dg) noexcept nogil
    void lk_lstm_bwd_d(Py_ssize_t n, Py_ssize_t H, const double* g, const double* cprev,
                       const double* tanhc, const double* dh, double* dc,
                       double* dg) noexcept nogil
    void lk_gru_fwd_f(Py_ssize_t n, Py_ssize_t H, float* gi, const float* gh,
                      const float* bhn, float* h, float* ghn) noexcept nogil
    void lk_gru_fwd_d(Py_ssize_t n, Py_ssize_t H, double* gi, const double* gh,
                      const double* bhn, double* h, double* ghn) noexcept nogil
    void lk_gru_bwd_f(Py_ssize_t n, Py_ssize_t H, const float* g, const float* ghn,
                      const float* hprev, float* dh, float* dgh,
                      float* dgin) noexcept nogil
    void lk_gru_bwd_d(Py_ssize_t n, Py_ssize_t H, const double* g, const double* ghn,
                      const double* hprev, double* dh, double* dgh,
                      double* dgin) noexcept nogil
    void lk_rnn_fwd_f(Py_ssize_t n, float* g, float* h, int relu, int store) noexcept nogil
    void lk_rnn_fwd_d(Py_ssize_t n, double* g, double* h, int relu, int store) noexcept nogil
    void lk_rnn_bwd_f(Py_ssize_t n, const float* a, const float* dh, float* dg,
                      int relu) noexcept nogil
    void lk_rnn_bwd_d(Py_ssize_t n, const double* a, const double* dh, double* dg,
                      int relu) noexcept nogil
    int LK_MR, LK_NR_f, LK_NR_d
    unsigned lk_denormals_flush() noexcept nogil
    void lk_denormals_restore(unsigned old) noexcept nogil
    void lk_yield() noexcept nogil
    size_t lk_set_ahead_bytes(size_t v) noexcept nogil
    int lk_set_rows8(int on) noexcept nogil
    int lk_panels_pay(int dbl) noexcept nogil
    int lk_proj_panels_pay(int dbl) noexcept nogil
    void* lk_block_alloc(size_t n) noexcept nogil
    void* lk_pool_take(size_t want, size_t* got) noexcept nogil
    void lk_pool_give(void* p, size_t size) noexcept nogil
    void lk_pool_limit(int set, size_t cap, size_t* idle, int* n) noexcept nogil
    void lk_pool_init() noexcept nogil
    void lk_block_free(void* p) noexcept nogil
    void lk_pack_f(Py_ssize_t k, Py_ssize_t n, const float* src, int trans,
                   float* packed) noexcept nogil
    void lk_pack_d(Py_ssize_t k, Py_ssize_t n, const double* src, int trans,
                   double* packed) noexcept nogil
    void lk_panel_gemm_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a,
                         Py_ssize_t lda, const float* packed, int accumulate,
                         const float* bias, float* out, Py_ssize_t ldo) noexcept nogil
    void lk_panel_gemm_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* a,
                         Py_ssize_t lda, const double* packed, int accumulate,
                         const double* bias, double* out, Py_ssize_t ldo) noexcept nogil
    int lk_weight_grads_f(Py_ssize_t N, Py_ssize_t G, Py_ssize_t g0, Py_ssize_t g1,
                          const float* dg, Py_ssize_t I, const float* a, Py_ssize_t P,
                          const float* b, float* dw_a, float* dw_b, float* db) noexcept nogil
    int lk_weight_grads_d(Py_ssize_t N, Py_ssize_t G, Py_ssize_t g0, Py_ssize_t g1,
                          const double* dg, Py_ssize_t I, const double* a, Py_ssize_t P,
                          const double* b, double* dw_a, double* dw_b, double* db) noexcept nogil
    ctypedef struct lk_team:
        int nthreads
    void lk_team_start(lk_team* t, int want, void* (*fn)(void*) noexcept nogil,
                       void* arg) noexcept nogil
    int lk_team_wait(lk_team* t, int* sense, int tid, bint judge) noexcept nogil
    void lk_team_end(lk_team* t) noexcept nogil
    void lk_maybe_stall(int tid, Py_ssize_t s) noexcept nogil
    Py_ssize_t lk_stall_step, lk_stall_steps
    int lk_solo_count, lk_team_count, lk_helper_count
    void lk_helper_init() noexcept nogil
    int lk_helper_post(void* (*fn)(void*) noexcept nogil, void* arg) noexcept nogil
    void lk_helper_wait() noexcept nogil
    unsigned long lk_helper_posts() noexcept nogil
    void lk_lstm_fwd_units_f(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                             float* g, float* c, float* h, float* tanhc) noexcept nogil
    void lk_lstm_fwd_units_d(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                             double* g, double* c, double* h, double* tanhc) noexcept nogil
    void lk_lstm_bwd_units_f(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                             const float* g, const float* cprev, const float* tanhc,
                             const float* dh, float* dc, float* dg) noexcept nogil
    void lk_lstm_bwd_units_d(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                             const double* g, const double* cprev, const double* tanhc,
                             const double* dh, double* dc, double* dg) noexcept nogil
    void lk_gru_fwd_units_f(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            float* gi, const float* gh, const float* bhn, float* h,
                            float* ghn) noexcept nogil
    void lk_gru_fwd_units_d(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            double* gi, const double* gh, const double* bhn, double* h,
                            double* ghn) noexcept nogil
    void lk_gru_bwd_units_f(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            const float* g, const float* ghn, const float* hprev, float* dh,
                            float* dgh, float* dgin) noexcept nogil
    void lk_gru_bwd_units_d(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            const double* g, const double* ghn, const double* hprev, double* dh,
                            double* dgh, double* dgin) noexcept nogil


# ---------------------------------------------------------------------------
# BLAS and small helpers (C level)
# ---------------------------------------------------------------------------

cdef void _gemm(bint ta, bint tb, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb,
                floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major ``C[m, n] = alpha * op(A) @ op(B) + beta * C`` (op = transpose if flag).

    Fortran BLAS sees a row-major matrix as its transpose, so this is the
    column-major ``C^T = op(B)^T op(A)^T``: operands and ``m``/``n`` swap.
    A single row (``m == 1``, batch 1) goes to gemv: gemm would repack ``B``
    on every call, which costs more than the product.  ``beta == 0`` never
    reads ``C`` (BLAS semantics, kept on every path).
    """
    cdef char ca = b'T' if ta else b'N'
    cdef char cb = b'T' if tb else b'N'
    cdef int one = 1, inc
    cdef Py_ssize_t i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # empty sum: BLAS would reject the leading dimensions
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if tb and not ta and 1 < m <= 4 and m * n > 1200 and <double>m * n * k <= 1e6:
        # OpenBLAS's small-matrix path skips this shape (M*N > 1200 for 'T','N')
        # and its packed path re-packs B for a few rows: a gemv per row is faster
        # (H128 B4: 12 vs 25 us).  The forward kernels use panels instead.
        for i in range(m):
            _gemm(False, True, 1, n, k, alpha, a + i * lda, lda, b, ldb, beta, c + i * ldc, ldc)
        return
    if m == 1:
        # tb: c = B @ a with B row-major (n, k) = column-major (k, n) -> gemv 'T'.
        # not tb: c = a @ B, B row-major (k, n) = column-major (n, k) -> gemv 'N'.
        if beta == 0:  # don't count on gemv ignoring y (NaN * 0 = NaN in some scal paths)
            for j in range(n):
                c[j] = 0
        inc = lda if ta else 1  # stride of a's k values
        if floating is float:
            if tb:
                sgemv(&cb, &k, &n, &alpha, <float*>b, &ldb, <float*>a, &inc,
                      &beta, c, &one)
            else:
                sgemv(&cb, &n, &k, &alpha, <float*>b, &ldb, <float*>a, &inc,
                      &beta, c, &one)
        else:
            if tb:
                dgemv(&cb, &k, &n, &alpha, <double*>b, &ldb, <double*>a, &inc,
                      &beta, c, &one)
            else:
                dgemv(&cb, &n, &k, &alpha, <double*>b, &ldb, <double*>a, &inc,
                      &beta, c, &one)
        return
    # scipy declares the operands non-const (scipy/scipy#14262)
    if floating is float:
        sgemm(&cb, &ca, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&cb, &ca, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


#: Panel kernel vs BLAS for the per-step product: the kernel reads the packed
#: weights once per step, BLAS re-packs them on every call.  Measured on Zen 4,
#: one thread (docs/performance.md): the kernel wins from 2 up to at least 64
#: rows at hidden 128-512; one row stays on gemv, more rows go to BLAS (which
#: can also use more threads).
cdef Py_ssize_t _PANEL_MAX_ROWS = 64
PANEL_MAX_ROWS = _PANEL_MAX_ROWS


cdef inline void _recurrent_gemm(int rows, int g, int p, const floating* h,
                                 const floating* w_hh, const floating* packed,
                                 floating beta, floating* out) noexcept nogil:
    """One step's recurrent product ``out[rows, g] = h[rows, p] @ w_hh[g, p]^T + beta*out``
    (``beta`` 0 or 1).

    ``packed``: ``w_hh^T`` in panels (:func:`_panels_for`: NULL for one row over fewer
    than 4 steps, or where panels do not pay); then up to ``_PANEL_MAX_ROWS`` rows go to
    the panel kernel (one row to its gemv loop), more to BLAS, whose small-matrix path
    this call shape misses (see docs/performance.md).  Without panels one row goes to
    gemv.
    """
    if 0 < rows <= _PANEL_MAX_ROWS and packed != NULL:
        _panel_gemm(rows, g, p, h, p, packed, beta != 0, out, g)
    else:
        _gemm(False, True, rows, g, p, 1, h, p, w_hh, p, beta, out, g)


cdef inline void _recurrent_gemm_bwd(int rows, int g, int p, const floating* dg,
                                     const floating* w_hh, const floating* packed,
                                     floating beta, floating* dh) noexcept nogil:
    """Its backward: ``dh[rows, p] = dg[rows, g] @ w_hh[g, p] + beta * dh``;
    ``packed``: ``w_hh`` in panels or NULL."""
    if 0 < rows <= _PANEL_MAX_ROWS and packed != NULL:
        _panel_gemm(rows, p, g, dg, g, packed, beta != 0, dh, p)
    else:
        _gemm(False, False, rows, p, g, 1, dg, g, w_hh, p, beta, dh, p)


cdef floating* _gates_block(Py_ssize_t s, Py_ssize_t T, const int64_t* bs, bint reverse,
                            Py_ssize_t off, Py_ssize_t live, Py_ssize_t R, Py_ssize_t* lo,
                            Py_ssize_t* hi, int G, int I, const floating* x,
                            const floating* w_ih, const floating* pk, const floating* b1,
                            int n1,
                            const floating* b2, int n2, floating* gates,
                            bint project) noexcept nogil:
    """Gate rows of packed rows ``[off, off + live)`` (step ``s`` in loop order).

    ``gates`` holds ``R`` rows: the input projection of a block of consecutive
    steps, rows ``[lo, hi)``.  When step ``s`` is past the block, the next
    block (as many steps as fit in ``R`` rows, at least this one) is
    projected.  ``R >= N`` projects everything at once (training keeps it);
    inference passes a few hundred KB so the whole-sequence buffer is never held.
    ``project`` false: only move ``lo``/``hi`` (the thread that does not project).
    ``pk``: ``w_ih`` in panels (:func:`_input_projection`) or NULL.
    """
    cdef Py_ssize_t rows = live, k = s + 1, t
    if off < lo[0] or off + live > hi[0]:
        while k < T:
            t = T - 1 - k if reverse else k
            if rows + bs[t] > R:
                break
            rows += bs[t]
            k += 1
        lo[0] = off + live - rows if reverse else off
        hi[0] = lo[0] + rows
        if project:
            _input_projection(<int>rows, G, I, x + lo[0] * I, w_ih, pk, b1, n1, b2, n2, gates, 0,
                              G)
    return gates + (off - lo[0]) * G


cdef inline Py_ssize_t _packed_size(Py_ssize_t k, Py_ssize_t n,
                                     const floating* like) noexcept nogil:
    """Values :func:`_pack` writes for a (k, n) operand (``like`` picks the dtype)."""
    cdef Py_ssize_t nr = LK_NR_f if floating is float else LK_NR_d
    return (n + nr - 1) // nr * nr * k


cdef inline void _pack(Py_ssize_t k, Py_ssize_t n, const floating* src, bint trans,
                       floating* packed) noexcept nogil:
    """Panels of the GEMM operand ``b`` (k, n): ``src`` (k, n), or (n, k) with ``trans``."""
    if floating is float:
        lk_pack_f(k, n, src, trans, packed)
    else:
        lk_pack_d(k, n, src, trans, packed)


cdef inline void _panel_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* a,
                             Py_ssize_t lda, const floating* packed, bint accumulate,
                             floating* out, Py_ssize_t ldo,
                             const floating* bias=NULL) noexcept nogil:
    """``out[m, n] (+)= a[m, k] @ b`` with ``b`` packed by :func:`_pack`; ``bias`` (n values
    or NULL) is added to every row when not ``accumulate``."""
    if floating is float:
        lk_panel_gemm_f(m, n, k, a, lda, packed, accumulate, bias, out, ldo)
    else:
        lk_panel_gemm_d(m, n, k, a, lda, packed, accumulate, bias, out, ldo)


cdef inline Py_ssize_t _split_at(Py_ssize_t n) noexcept nogil:
    """Where the worker's share of ``n`` columns starts: half the 32-column panels."""
    return min(n, (n + 63) // 64 * 32)


cdef void _input_projection(int n, int g, int i, const floating* x, const floating* w_ih,
                            const floating* pk, const floating* b1, int n1,
                            const floating* b2, int n2, floating* out, Py_ssize_t c0,
                            Py_ssize_t c1, int nq=1, Py_ssize_t stride=0) noexcept nogil:
    """Columns ``[c0, c1)`` of ``out[n, g] = x[n, i] @ w_ih[g, i]^T + b1 + b2`` (all
    columns, or one thread's share of a two-thread call).  Always one GEMM per side of
    :func:`_split_at` (``g``), where a two-thread call splits the columns, so that one and
    two threads make the same calls: BLAS may round a share of the columns differently
    from the whole (its small-matrix path blocks by the width).

    The biases (either may be NULL) cover the first ``n1``/``n2`` columns; each
    row is pre-filled with their sum and the GEMM accumulates with beta = 1.
    ``pk``: ``w_ih^T`` in panels followed by that sum (:func:`_proj_panels_for`),
    or NULL; then the panel kernel does it, adding the biases as it stores (the
    columns of any share are its own, so one and two threads agree there too).
    ``nq`` > 1 does the columns ``[c0, c1)`` of each of ``nq`` gate blocks ``stride``
    apart (a share of the units, :func:`_forward_units`): with panels in one pass over
    ``x``; without, one GEMM per block, which BLAS may round differently from a GEMM
    over the whole width (so :func:`_forward_units` requires panels).
    """
    cdef Py_ssize_t mid = _split_at(g)
    cdef int q
    if pk != NULL:
        _panel_gemm_rows(n, g, i, x, pk, b1 != NULL or b2 != NULL, out, c0, c1, nq, stride)
        return
    if nq > 1:
        for q in range(nq):
            _input_projection(n, g, i, x, w_ih, pk, b1, n1, b2, n2, out, c0 + q * stride,
                              c1 + q * stride)
        return
    if c0 < mid < c1:
        _projection_cols(n, g, i, x, w_ih, b1, n1, b2, n2, out, c0, mid)
        _projection_cols(n, g, i, x, w_ih, b1, n1, b2, n2, out, mid, c1)
    else:
        _projection_cols(n, g, i, x, w_ih, b1, n1, b2, n2, out, c0, c1)


#: Rows of ``x`` the panel projection takes at a time: all its panels run over
#: these before the next rows come, so they stay in L2 (256 KB of them).
cdef Py_ssize_t _PROJ_CHUNK_BYTES = 256 * 1024


cdef void _panel_gemm_rows(Py_ssize_t n, Py_ssize_t g, Py_ssize_t i, const floating* x,
                           const floating* pk, bint bias, floating* out, Py_ssize_t c0,
                           Py_ssize_t c1, int nq=1, Py_ssize_t stride=0) noexcept nogil:
    """Columns ``[c0, c1)`` (``c0`` on a panel boundary) of ``out[n, g] = x[n, i] @ b``
    (+ the bias sum packed after ``b``, with ``bias``), ``b`` (i, g) packed in ``pk``
    (:func:`_sequence_panels_for`, ``i`` > 0), a chunk of rows at a time: the input
    projection and the backward's ``dx``.  ``nq`` > 1: those columns of ``nq`` blocks
    ``stride`` apart (a multiple of the panel width), each chunk of rows through all
    of them."""
    cdef Py_ssize_t r0, q, a, rows = _PROJ_CHUNK_BYTES // max(1, i * <Py_ssize_t>sizeof(floating))
    rows = max(4, rows // 4 * 4)
    cdef const floating* bsum = pk + _packed_size(i, g, pk) if bias else NULL
    if n <= 0 or c1 <= c0:
        return
    r0 = 0
    while r0 < n:
        for q in range(nq):
            a = c0 + q * stride
            _panel_gemm(min(rows, n - r0), c1 - c0, i, x + r0 * i, i, pk + a * i, False,
                        out + r0 * g + a, g, bsum + a if bias else NULL)
        r0 += rows


cdef void _projection_biases(Py_ssize_t j0, Py_ssize_t j1, const floating* b1, Py_ssize_t n1,
                             const floating* b2, Py_ssize_t n2, floating* out) noexcept nogil:
    """``out[j] = 0 + b1[j] + b2[j]`` for ``j`` in ``[j0, j1)``; ``b1``/``b2`` (either may be
    NULL) cover the first ``n1``/``n2`` columns.  The projection's biases, for BLAS's
    pre-filled rows and the panel kernel's store alike (the same sums either way)."""
    cdef Py_ssize_t j
    for j in range(j0, j1):
        out[j] = 0
        if b1 != NULL and j < n1:
            out[j] += b1[j]
        if b2 != NULL and j < n2:
            out[j] += b2[j]


cdef void _projection_cols(int n, int g, int i, const floating* x, const floating* w_ih,
                           const floating* b1, int n1, const floating* b2, int n2,
                           floating* out, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Columns ``[c0, c1)`` of :func:`_input_projection` in one GEMM."""
    cdef Py_ssize_t r
    cdef floating beta = 0
    if n <= 0 or c1 <= c0:
        return
    if b1 != NULL or b2 != NULL:
        _projection_biases(c0, c1, b1, n1, b2, n2, out)
        for r in range(1, n):
            memcpy(out + r * g + c0, out + c0, (c1 - c0) * sizeof(floating))
        beta = 1
    _gemm(False, True, n, <int>(c1 - c0), i, 1, x, i, w_ih + c0 * i, i, beta, out + c0, g)


cdef inline void _add(Py_ssize_t n, floating* dst, const floating* src) noexcept nogil:
    """``dst += src`` over ``n`` contiguous values."""
    cdef Py_ssize_t k
    for k in range(n):
        dst[k] += src[k]


cdef void _colsum(Py_ssize_t n, Py_ssize_t g, const floating* a, Py_ssize_t lda,
                  floating* out) noexcept nogil:
    """``out[g] = a[:n, :g].sum(axis=0)`` (row by row, vectorised along ``g``)."""
    cdef Py_ssize_t r, j
    for j in range(g):
        out[j] = 0
    for r in range(n):
        _add(g, out, a + r * lda)


cdef inline void _lstm_rows(Py_ssize_t n, Py_ssize_t H, floating* g, floating* c,
                            floating* h, floating* tanhc) noexcept nogil:
    if floating is float:
        lk_lstm_fwd_f(n, H, g, c, h, tanhc)
    else:
        lk_lstm_fwd_d(n, H, g, c, h, tanhc)


cdef inline void _lstm_rows_bwd(Py_ssize_t n, Py_ssize_t H, const floating* g,
                                const floating* cprev, const floating* tanhc,
                                const floating* dh, floating* dc,
                                floating* dg) noexcept nogil:
    if floating is float:
        lk_lstm_bwd_f(n, H, g, cprev, tanhc, dh, dc, dg)
    else:
        lk_lstm_bwd_d(n, H, g, cprev, tanhc, dh, dc, dg)


cdef inline void _gru_rows(Py_ssize_t n, Py_ssize_t H, floating* gi, const floating* gh,
                           const floating* bhn, floating* h, floating* ghn) noexcept nogil:
    if floating is float:
        lk_gru_fwd_f(n, H, gi, gh, bhn, h, ghn)
    else:
        lk_gru_fwd_d(n, H, gi, gh, bhn, h, ghn)


cdef inline void _gru_rows_bwd(Py_ssize_t n, Py_ssize_t H, const floating* g,
                               const floating* ghn, const floating* hprev, floating* dh,
                               floating* dgh, floating* dgin) noexcept nogil:
    if floating is float:
        lk_gru_bwd_f(n, H, g, ghn, hprev, dh, dgh, dgin)
    else:
        lk_gru_bwd_d(n, H, g, ghn, hprev, dh, dgh, dgin)


cdef inline void _rnn_rows(Py_ssize_t n, floating* g, floating* h, bint relu,
                           bint store) noexcept nogil:
    if floating is float:
        lk_rnn_fwd_f(n, g, h, relu, store)
    else:
        lk_rnn_fwd_d(n, g, h, relu, store)


cdef inline void _rnn_rows_bwd(Py_ssize_t n, const floating* a, const floating* dh,
                               floating* dg, bint relu) noexcept nogil:
    if floating is float:
        lk_rnn_bwd_f(n, a, dh, dg, relu)
    else:
        lk_rnn_bwd_d(n, a, dh, dg, relu)


# ---------------------------------------------------------------------------
# Time loops (C level).  Step order: forward t = 0..T-1, reverse t = T-1..0;
# ``off`` is the first packed row of step t.  State rows 0..live-1 of ``h``/``c``
# are the live sequences; the others keep their value, which gives both the
# final state of finished rows (forward) and state0 of not-yet-started rows
# (reverse).  Training copies h_prev/c_prev of every row into row-aligned caches.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Two threads in one LSTM (no projection), GRU or RNN call (2-64 rows, packed
# panels): the caller and one worker (lk_team) split each step by whole
# 32-column panels of the recurrent product and by units of the gate loops,
# and meet at barriers.  Where every step has the same rows, each thread runs
# half of the batch rows through the whole sequence instead (_forward_rows,
# _backward_rows: no barrier between steps), or the forward splits everything
# by hidden units (_forward_units, one barrier a step).  Every value is computed by the same code on the same operands as on
# one thread, so results are the same bits at 1 and 2 threads; a step with one
# row, and a block of the input projection of at most 4 rows, run on the
# caller alone.
# ---------------------------------------------------------------------------

cdef enum:  # the cell of a two-thread job
    _LSTM = 0
    _GRU = 1
    _RNN = 2


ctypedef struct _TeamJob:
    lk_team team
    Py_ssize_t T, N, R
    Py_ssize_t cols, units  # the worker's first product column / unit
    int isz, H    # I, H
    bint reverse
    bint zero_start  # forward, LSTM/RNN: the first step's recurrent product is 0 (_zero_start)
    const int64_t* bs
    const void* x
    const void* w_ih
    const void* w_hh
    const void* w_pk
    const void* w_ih_pk  # or NULL; forward: w_ih^T in panels and the bias sum
                         # (_input_projection); backward: w_ih in panels (dx)
    const void* b_ih
    const void* b_hh
    const void* dy
    void* dx      # backward's whole-sequence products (the tail)
    void* dw_ih
    void* dw_hh
    void* db_ih
    void* db_hh
    void* h       # backward: dh
    void* c       # backward: dc
    void* y
    void* gates
    void* hprev
    void* cprev
    void* tanhc
    void* dgates
    void* gh      # GRU: the step's recurrent product (B, 3H)
    void* ghn     # GRU training: gh_n + b_hn (N, H)
    void* dgin    # GRU backward: the input part's n-block gradient (N, H)
    bint wg_panels  # backward: the weight gradients on the panel kernel (_wg_panels)
    bint relu     # RNN: ReLU, else tanh
    int cell      # _LSTM, _GRU or _RNN (the backward's loop serves all three)
    int split     # _BY_COLUMNS (_forward_2t/_backward_2t's own loops), _BY_UNITS (forward) or
                  # _BY_ROWS; the forward's units and rows pack w_pk and w_ih_pk themselves


cdef inline void _lstm_units(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                             floating* g, floating* c, floating* h,
                             floating* tanhc) noexcept nogil:
    if floating is float:
        lk_lstm_fwd_units_f(n, H, j0, j1, g, c, h, tanhc)
    else:
        lk_lstm_fwd_units_d(n, H, j0, j1, g, c, h, tanhc)


cdef inline void _lstm_units_bwd(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                                 const floating* g, const floating* cprev,
                                 const floating* tanhc, const floating* dh, floating* dc,
                                 floating* dg) noexcept nogil:
    if floating is float:
        lk_lstm_bwd_units_f(n, H, j0, j1, g, cprev, tanhc, dh, dc, dg)
    else:
        lk_lstm_bwd_units_d(n, H, j0, j1, g, cprev, tanhc, dh, dc, dg)


cdef inline void _gru_units(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            floating* gi, const floating* gh, const floating* bhn, floating* h,
                            floating* ghn) noexcept nogil:
    if floating is float:
        lk_gru_fwd_units_f(n, H, j0, j1, gi, gh, bhn, h, ghn)
    else:
        lk_gru_fwd_units_d(n, H, j0, j1, gi, gh, bhn, h, ghn)


cdef floating* _team_gates(_TeamJob* j, int tid, Py_ssize_t s, Py_ssize_t off, int live,
                           int G, const floating* b2, int n2, Py_ssize_t* lo, Py_ssize_t* hi,
                           Py_ssize_t c_lo, Py_ssize_t c_hi, int* sense,
                           bint* solo) noexcept nogil:
    """A two-thread loop's :func:`_gates_block`: when step ``s`` starts a new block of the
    input projection, each thread projects its columns ``[c_lo, c_hi)`` (a block of a few
    rows: the caller all of it, as BLAS's path for them depends on the width) and both
    meet; ``solo`` is set if the partner stalled there (the caller goes on alone)."""
    cdef Py_ssize_t lo0 = lo[0], hi0 = hi[0]
    cdef const floating* x = <const floating*>j.x
    cdef floating* gt = _gates_block(s, j.T, j.bs, j.reverse, off, live, j.R, lo, hi, G, j.isz,
                                     x, <const floating*>j.w_ih, <const floating*>j.w_ih_pk,
                                     <const floating*>j.b_ih, G, b2, n2, <floating*>j.gates, False)
    if lo[0] != lo0 or hi[0] != hi0:
        if hi[0] - lo[0] > 4 or tid == 0:
            if hi[0] - lo[0] <= 4:
                c_lo, c_hi = 0, G
            _input_projection(<int>(hi[0] - lo[0]), G, j.isz, x + lo[0] * j.isz,
                              <const floating*>j.w_ih, <const floating*>j.w_ih_pk,
                              <const floating*>j.b_ih, G, b2, n2, <floating*>j.gates, c_lo, c_hi)
        solo[0] = not lk_team_wait(&j.team, sense, tid, False)
    return gt


cdef inline int _panel_weight_grads(Py_ssize_t N, Py_ssize_t G, Py_ssize_t g0, Py_ssize_t g1,
                                    const floating* dg, Py_ssize_t I, const floating* a,
                                    Py_ssize_t P, const floating* b, floating* dw_a,
                                    floating* dw_b, floating* db) noexcept nogil:
    """``dw_a[g0:g1] = dg[:, g0:g1]^T a``, ``dw_b[g0:g1] = dg[:, g0:g1]^T b`` and ``db`` the
    column sums on the panel kernel (``lk_weight_grads``); -1, nothing written, when
    memory is short."""
    if floating is float:
        return lk_weight_grads_f(N, G, g0, g1, dg, I, a, P, b, dw_a, dw_b, db)
    else:
        return lk_weight_grads_d(N, G, g0, g1, dg, I, a, P, b, dw_a, dw_b, db)


cdef inline Py_ssize_t _half_at(Py_ssize_t n) noexcept nogil:
    """Where :func:`_weight_grads` splits ``n`` rows: a multiple of 16, at most n/2."""
    return (n // 32) * 16


cdef void _weight_grads(int part, Py_ssize_t N, int G, int I, int P, const floating* dg,
                        const floating* x, const floating* hprev, const floating* w_ih,
                        const floating* w_ih_pk, floating* dx, floating* dw_ih,
                        floating* dw_hh, floating* db_ih, floating* db_hh,
                        bint wg_panels) noexcept nogil:
    """The LSTM (and RNN) backward's whole-sequence products from ``dg`` (N, G): ``dx = dg w_ih``,
    ``dw_ih = dg^T x``, ``dw_hh = dg^T hprev`` and the bias sums, in two halves (``dx``
    by rows, the rest by gate rows); ``part`` 0 or 1 does one half (a thread's share),
    2 both.  Every path makes these same calls, so one and two threads give the same
    bits: BLAS may round a whole product and its halves differently at small shapes.
    ``w_ih_pk``: ``w_ih`` in panels, or NULL; then ``dx`` takes the panel kernel, which
    reads ``dg`` in place where BLAS packs it first.  ``wg_panels``: the weight and bias
    gradients too (:func:`_wg_panels`)."""
    cdef Py_ssize_t nh = _half_at(N), gh = _half_at(G)
    if part != 1:
        _weight_grads_rows(0, nh, 0, gh, N, G, I, P, dg, x, hprev, w_ih, w_ih_pk, dx, dw_ih,
                           dw_hh, db_ih, db_hh, wg_panels)
    if part != 0:
        _weight_grads_rows(nh, N, gh, G, N, G, I, P, dg, x, hprev, w_ih, w_ih_pk, dx, dw_ih,
                           dw_hh, db_ih, db_hh, wg_panels)


cdef void _weight_grads_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t g0, Py_ssize_t g1,
                             Py_ssize_t N, int G, int I, int P, const floating* dg,
                             const floating* x, const floating* hprev,
                             const floating* w_ih, const floating* w_ih_pk, floating* dx,
                             floating* dw_ih, floating* dw_hh, floating* db_ih,
                             floating* db_hh, bint wg_panels) noexcept nogil:
    """One half of :func:`_weight_grads`: ``dx`` rows [n0, n1), gate rows [g0, g1)."""
    if n1 > n0 and w_ih_pk != NULL:
        _panel_gemm_rows(n1 - n0, I, G, dg + n0 * G, w_ih_pk, False, dx + n0 * I, 0, I)
    elif n1 > n0:
        _gemm(False, False, <int>(n1 - n0), I, G, 1, dg + n0 * G, G, w_ih, I, 0, dx + n0 * I, I)
    if g1 <= g0:
        return
    # the weight gradients and db_ih on panels (see _wg_panels), else BLAS
    if not wg_panels or _panel_weight_grads(
            N, G, g0, g1, dg, I, x, P, hprev, dw_ih, dw_hh, db_ih) != 0:
        _gemm(True, False, <int>(g1 - g0), I, <int>N, 1, dg + g0, G, x, I, 0, dw_ih + g0 * I, I)
        _gemm(True, False, <int>(g1 - g0), P, <int>N, 1, dg + g0, G, hprev, P, 0,
              dw_hh + g0 * P, P)
        if db_ih != NULL:
            _colsum(N, g1 - g0, dg + g0, G, db_ih + g0)
    if db_hh != NULL and db_ih != NULL:  # the same sum: one pass over dg, not two
        memmove(db_hh + g0, db_ih + g0, (g1 - g0) * sizeof(floating))
    elif db_hh != NULL:
        _colsum(N, g1 - g0, dg + g0, G, db_hh + g0)


cdef inline bint _same_rows(Py_ssize_t T, const int64_t* bs) noexcept nogil:
    """Whether every step has the same rows (no shrinking packed batch)."""
    cdef Py_ssize_t t
    for t in range(1, T):
        if bs[t] != bs[0]:
            return False
    return True


cdef enum:  # how a two-thread loop shares the work (_TeamJob.split)
    _BY_COLUMNS = 0
    _BY_UNITS = 1
    _BY_ROWS = 2

cdef int _SPLIT_FORCE = -1  # test switch (_force_split): -1 the rule below


def _force_split(int split=-1):
    """Test switch: make two-thread loops share the work by columns (0), units (1) or
    rows (2) wherever that split can run, or by the rule (-1); returns the previous
    setting.  The backward has no split by units: 0 and 1 give it its own loop by
    units, 2 rows."""
    global _SPLIT_FORCE
    if split not in (-1, _BY_COLUMNS, _BY_UNITS, _BY_ROWS):
        raise ValueError(f"split: expected -1, 0, 1 or 2, got {split}")
    old, _SPLIT_FORCE = _SPLIT_FORCE, split
    return old


cdef inline bint _rows_pay(Py_ssize_t B, Py_ssize_t w) noexcept nogil:
    """Whether two threads split ``B`` rows in halves (``w``: bytes of the weights each
    thread reads every step); see :func:`_forward_split`.  No share of the rows may end in
    a single row where one thread has two or more: the kernel's one-row loop sums in
    another order.  An even ``B`` ensures it (each share has at least two rows, and one
    thread's blocks of rows, whole steps in chunks of a multiple of 4 rows, never leave
    one row over)."""
    if _SPLIT_FORCE >= 0:
        return B >= 4 and B % 2 == 0
    return B >= 8 and B % 8 == 0 and w <= min(B * (512 << 10), 8 << 20)


cdef int _backward_split(Py_ssize_t T, const int64_t* bs, Py_ssize_t G, Py_ssize_t H,
                         size_t item) noexcept nogil:
    """How a two-thread backward through time shares each step: by batch rows
    (:func:`_backward_rows`, by the rule of :func:`_forward_split`) where every step has the
    same rows, else by hidden units (``_BY_COLUMNS``: :func:`_backward_2t`'s own loop)."""
    if T > 0 and _same_rows(T, bs) and _rows_pay(bs[0], G * H * <Py_ssize_t>item) \
            and _SPLIT_FORCE in (-1, _BY_ROWS):
        return _BY_ROWS
    return _BY_COLUMNS


cdef int _forward_split(bint team, const int64_t[::1] bs, Py_ssize_t I, Py_ssize_t H,
                        Py_ssize_t G, size_t item, bint y, void* pk, void* pk_ih) noexcept nogil:
    """How a two-thread forward shares the work (``_TeamJob.split``).

    :func:`_forward_rows` and :func:`_forward_units` need every step to have the same
    rows, both products on the panel kernel (it computes each row and each panel alone,
    so a share gives the bits of the whole; BLAS may not) and the output ``y`` kept.  By
    rows, each thread streams all of ``W_hh`` and ``W_ih`` every step for half the rows: it
    paid (two threads, units/rows time 1.0-1.32 at B8-B64, H128-H512,
    benchmarks/bench_split.py) where each half is whole 4-row blocks of the kernel and the
    weights stay in cache for that few rows: a multiple of 8 rows and up to 512 KB of
    weights a row, at most 8 MB.  It lost or tied beyond (B4 H512 0.63, B12 H256 0.84,
    B16 H1024 0.94, B32 H1024 1.02, B32 I1024 H512 0.90).  By units, each half of the
    units must be whole panels."""
    cdef bint rows, units
    if not team or not y or pk == NULL or pk_ih == NULL or bs.shape[0] == 0 \
            or not _same_rows(bs.shape[0], &bs[0]):
        return _BY_COLUMNS
    units = H % (2 * LK_NR_f) == 0 and H % (2 * LK_NR_d) == 0
    rows = _rows_pay(bs[0], G * (H + I) * <Py_ssize_t>item)
    if rows and _SPLIT_FORCE in (-1, _BY_ROWS):
        return _BY_ROWS
    if units and _SPLIT_FORCE in (-1, _BY_UNITS):
        return _BY_UNITS
    return _BY_COLUMNS


cdef Py_ssize_t _units_count = 0  # forwards that took _forward_units (a test hook reads it)
cdef Py_ssize_t _rows_count = 0  # ... and _forward_rows or _backward_rows


cdef void _forward_units(_TeamJob* j, int tid, floating* kind) noexcept nogil:
    """Thread ``tid``'s part of a layer's forward split by hidden units (:func:`_forward_split`): each thread
    owns hidden units ``[u_lo, u_hi)`` and every column computed for them -- those units'
    columns of each gate block (packing ``w_hh`` and ``w_ih``, the input projection, the
    recurrent product), the gate loop, ``c`` -- and writes ``h`` straight into its row of
    ``y``, which the next step reads.  Nothing one thread writes is read by the other until
    the next step's product, which reads all of ``h``: one barrier a step, where
    :func:`_forward_2t` needs two or three.  If the worker stalls, the caller takes every
    unit from the next step on, reading the worker's panels and projected columns after
    the barrier that decided it."""
    global _units_count
    cdef int H = j.H, I = j.isz, q, sense = 0
    cdef int nq = 4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1
    cdef int G = nq * H, n2 = 2 * H if j.cell == _GRU else G
    cdef Py_ssize_t T = j.T, B = j.bs[0], s, t, r, off, lo = 0, hi = 0, lo0, hi0
    cdef Py_ssize_t u_lo = 0, u_hi = H, c0, c1
    cdef bint train = j.hprev != NULL, gru = j.cell == _GRU
    cdef size_t row
    cdef floating* w_pk = <floating*>j.w_pk
    cdef floating* w_ih_pk = <floating*>j.w_ih_pk
    cdef const floating* b_ih = <const floating*>j.b_ih
    cdef const floating* b_hh = <const floating*>j.b_hh
    cdef floating* y = <floating*>j.y
    cdef floating* c = <floating*>j.c
    cdef floating* hin = <floating*>j.h
    cdef floating* hout
    cdef floating* gt
    if j.team.nthreads > 1:
        if tid:
            u_lo = j.units
        else:
            u_hi = j.units
    if tid == 0:
        _units_count += 1
    row = <size_t>(u_hi - u_lo) * sizeof(floating)
    for q in range(nq):  # this thread's panels: both packs in parallel
        c0, c1 = q * H + u_lo, q * H + u_hi
        _pack(H, c1 - c0, <const floating*>j.w_hh + c0 * H, True, w_pk + c0 * H)
        _pack(I, c1 - c0, <const floating*>j.w_ih + c0 * I, True, w_ih_pk + c0 * I)
        _projection_biases(c0, c1, b_ih, G, b_hh, n2, w_ih_pk + _packed_size(I, G, w_ih_pk))
    for s in range(T):
        t = T - 1 - s if j.reverse else s
        off = t * B
        hout = y + off * H
        lk_maybe_stall(tid, s)
        if train:
            for r in range(B):
                memcpy(<floating*>j.hprev + (off + r) * H + u_lo, hin + r * H + u_lo, row)
                if j.cell == _LSTM:
                    memcpy(<floating*>j.cprev + (off + r) * H + u_lo, c + r * H + u_lo, row)
        lo0, hi0 = lo, hi
        gt = _gates_block(s, T, j.bs, j.reverse, off, B, j.R, &lo, &hi, G, I,
                          <const floating*>j.x, <const floating*>j.w_ih, w_ih_pk, b_ih, G, b_hh,
                          n2, <floating*>j.gates, False)
        if lo != lo0 or hi != hi0:  # a new block of the input projection
            _input_projection(<int>(hi - lo), G, I, <const floating*>j.x + lo * I,
                              <const floating*>j.w_ih, w_ih_pk, b_ih, G, b_hh, n2,
                              <floating*>j.gates, u_lo, u_hi, nq, H)
        for q in range(nq if gru or s > 0 or not j.zero_start else 0):
            _panel_gemm(B, u_hi - u_lo, H, hin, H, w_pk + (q * H + u_lo) * H, not gru,
                        (<floating*>j.gh if gru else gt) + q * H + u_lo, G)
        if j.cell == _LSTM:
            _lstm_units(B, H, u_lo, u_hi, gt, c, hout,
                        <floating*>j.tanhc + off * H if train else NULL)
        elif gru:
            for r in range(B):
                memcpy(hout + r * H + u_lo, hin + r * H + u_lo, row)
            _gru_units(B, H, u_lo, u_hi, gt, <floating*>j.gh, b_hh + 2 * H, hout,
                       <floating*>j.ghn + off * H if train else NULL)
        else:
            for r in range(B):
                _rnn_rows(u_hi - u_lo, gt + r * G + u_lo, hout + r * H + u_lo, j.relu, train)
        hin = hout
        if not lk_team_wait(&j.team, &sense, tid, True):
            if tid:
                return
            u_lo, u_hi = 0, H  # alone from here on
            row = <size_t>H * sizeof(floating)
    if tid == 0 and T > 0:
        memcpy(<floating*>j.h, hin, <size_t>B * H * sizeof(floating))


cdef void _forward_rows(_TeamJob* j, int tid, floating* kind) noexcept nogil:
    """Thread ``tid``'s part of a layer's forward split by batch rows: the rows of a batch
    are independent sequences, so after packing half of the panels each and meeting once
    (each needs all of them), each thread runs its rows ``[r_lo, r_hi)`` of every step --
    the input projection, the recurrent product, the gate loop, ``h`` into ``y`` -- with no
    barrier between steps."""
    global _rows_count
    cdef int H = j.H, I = j.isz, sense = 0
    cdef int nq = 4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1
    cdef int G = nq * H, n2 = 2 * H if j.cell == _GRU else G
    cdef Py_ssize_t T = j.T, B = j.bs[0], s, t, off, n, r_lo = 0, r_hi = B, c_lo = 0, c_hi = G
    cdef bint train = j.hprev != NULL, gru = j.cell == _GRU
    cdef floating* w_pk = <floating*>j.w_pk
    cdef floating* w_ih_pk = <floating*>j.w_ih_pk
    cdef const floating* b_ih = <const floating*>j.b_ih
    cdef const floating* b_hh = <const floating*>j.b_hh
    cdef const floating* bsum = w_ih_pk + _packed_size(I, G, w_ih_pk)
    cdef floating* y = <floating*>j.y
    cdef floating* hin
    cdef floating* hout
    cdef floating* gt
    cdef floating* gh
    if tid == 0:
        _rows_count += 1
    if j.team.nthreads > 1:
        if tid:
            r_lo, c_lo = B // 2, j.cols
        else:
            r_hi, c_hi = B // 2, j.cols
    _pack(H, c_hi - c_lo, <const floating*>j.w_hh + c_lo * H, True, w_pk + c_lo * H)
    _pack(I, c_hi - c_lo, <const floating*>j.w_ih + c_lo * I, True, w_ih_pk + c_lo * I)
    _projection_biases(c_lo, c_hi, b_ih, G, b_hh, n2, <floating*>bsum)
    if b_ih == NULL and b_hh == NULL:
        bsum = NULL
    lk_team_wait(&j.team, &sense, tid, False)  # each reads all the panels from here on
    n = r_hi - r_lo
    if n <= 0:
        return
    hin = <floating*>j.h + r_lo * H
    gh = <floating*>j.gh + r_lo * G if gru else NULL
    for s in range(T):
        t = T - 1 - s if j.reverse else s
        off = t * B + r_lo
        hout = y + off * H
        lk_maybe_stall(tid, s)
        if train:
            memcpy(<floating*>j.hprev + off * H, hin, <size_t>n * H * sizeof(floating))
            if j.cell == _LSTM:
                memcpy(<floating*>j.cprev + off * H, <floating*>j.c + r_lo * H,
                       <size_t>n * H * sizeof(floating))
        gt = <floating*>j.gates + (off if train else r_lo) * G
        _panel_gemm(n, G, I, <const floating*>j.x + off * I, I, w_ih_pk, False, gt, G, bsum)
        if gru or s > 0 or not j.zero_start:
            _panel_gemm(n, G, H, hin, H, w_pk, not gru, gh if gru else gt, G)
        if j.cell == _LSTM:
            _lstm_units(n, H, 0, H, gt, <floating*>j.c + r_lo * H, hout,
                        <floating*>j.tanhc + off * H if train else NULL)
        elif gru:
            memcpy(hout, hin, <size_t>n * H * sizeof(floating))
            _gru_units(n, H, 0, H, gt, gh, b_hh + 2 * H, hout,
                       <floating*>j.ghn + off * H if train else NULL)
        else:
            _rnn_rows(n * H, gt, hout, j.relu, train)
        hin = hout
    memcpy(<floating*>j.h + r_lo * H, hin, <size_t>n * H * sizeof(floating))


cdef void _forward_2t(_TeamJob* j, int tid, floating* kind) noexcept nogil:
    """Thread ``tid``'s part of a layer's forward (:func:`_lstm_forward`, :func:`_gru_forward`,
    :func:`_rnn_forward`; ``kind`` picks the dtype): the input projection's blocks and the
    step's recurrent product by panel columns, then the gate loop by hidden units
    (:func:`_forward_rows` or :func:`_forward_units` where they apply)."""
    cdef int H = j.H, live, sense = 0
    cdef int G = (4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1) * H
    cdef Py_ssize_t T = j.T, s, t, r, off = j.N if j.reverse else 0, lo = 0, hi = 0
    cdef Py_ssize_t a_lo, a_hi, c_lo = 0, c_hi = G, u_lo = 0, u_hi = H
    cdef const floating* w_pk = <const floating*>j.w_pk
    cdef const floating* b_hh = <const floating*>j.b_hh
    cdef floating* h = <floating*>j.h
    cdef floating* y = <floating*>j.y
    cdef floating* hprev = <floating*>j.hprev
    cdef floating* gt
    cdef floating* out  # the product's target: the gate rows, or the GRU's gh apart
    cdef bint train = hprev != NULL, gru = j.cell == _GRU, solo = False
    if j.split == _BY_UNITS:
        _forward_units(j, tid, kind)
        return
    if j.split == _BY_ROWS:
        _forward_rows(j, tid, kind)
        return
    if j.team.nthreads > 1:
        if tid:
            c_lo, u_lo = j.cols, j.units
        else:
            c_hi, u_hi = j.cols, j.units
    for s in range(T):
        t = T - 1 - s if j.reverse else s
        live = <int>j.bs[t]
        if j.reverse:
            off -= live
        if live > 0:
            lk_maybe_stall(tid, s)
            if train and tid == 0:
                memcpy(hprev + off * H, h, <size_t>live * H * sizeof(floating))
                if j.cell == _LSTM:
                    memcpy(<floating*>j.cprev + off * H, <floating*>j.c,
                           <size_t>live * H * sizeof(floating))
            gt = _team_gates(j, tid, s, off, live, G, b_hh, 2 * H if gru else G, &lo, &hi, c_lo,
                             c_hi, &sense, &solo)
            if solo:
                if tid:
                    return
                c_lo, c_hi, u_lo, u_hi = 0, G, 0, H  # alone from here on
            out = <floating*>j.gh if gru else gt
            if not gru and s == 0 and j.zero_start:
                pass
            elif live > 1:
                if c_hi > c_lo:
                    _panel_gemm(live, c_hi - c_lo, H, h, H, w_pk + c_lo * H, not gru, out + c_lo, G)
            elif tid == 0:  # as on one thread
                _recurrent_gemm(1, G, H, h, <const floating*>j.w_hh, w_pk, 0 if gru else 1, out)
            # both have read all of h before either writes its share
            if not lk_team_wait(&j.team, &sense, tid, live > 1):
                if tid:
                    return
                c_lo, c_hi, u_lo, u_hi = 0, G, 0, H
            if live > 1 or tid == 0:
                a_lo = u_lo if live > 1 else 0
                a_hi = u_hi if live > 1 else H
                if j.cell == _LSTM:
                    _lstm_units(live, H, a_lo, a_hi, gt, <floating*>j.c, h,
                                <floating*>j.tanhc + off * H if train else NULL)
                elif gru:
                    _gru_units(live, H, a_lo, a_hi, gt, <floating*>j.gh, b_hh + 2 * H, h,
                               <floating*>j.ghn + off * H if train else NULL)
                else:
                    for r in range(live):
                        _rnn_rows(a_hi - a_lo, gt + r * H + a_lo, h + r * H + a_lo, j.relu, train)
                if y != NULL:
                    for r in range(live):
                        memcpy(y + (off + r) * H + a_lo, h + r * H + a_lo,
                               <size_t>(a_hi - a_lo) * sizeof(floating))
            if not lk_team_wait(&j.team, &sense, tid, live > 1):
                if tid:
                    return
                c_lo, c_hi, u_lo, u_hi = 0, G, 0, H
        if not j.reverse:
            off += live


cdef void* _fwd_worker_f(void* job) noexcept nogil:
    _forward_2t(<_TeamJob*>job, 1, <float*>NULL)
    return NULL


cdef void* _fwd_worker_d(void* job) noexcept nogil:
    _forward_2t(<_TeamJob*>job, 1, <double*>NULL)
    return NULL


cdef void _backward_2t(_TeamJob* j, int tid, floating* kind) noexcept nogil:
    """Thread ``tid``'s part of a layer's backward through time (:func:`_lstm_backward`,
    :func:`_gru_backward`, :func:`_rnn_backward`): per step the gate-gradient loop by hidden
    units, then the product ``dh (+)= dG W_hh`` by the same units (so each thread then reads
    only the ``dh`` it wrote); after the loop, the whole-sequence products by halves."""
    cdef int H = j.H, live, sense = 0
    cdef int G = (4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1) * H
    cdef Py_ssize_t T = j.T, s, t, r, off = 0 if j.reverse else j.N
    cdef Py_ssize_t u_lo = 0, u_hi = H, a_lo, a_hi
    cdef const floating* dy = <const floating*>j.dy
    cdef const floating* gates = <const floating*>j.gates
    cdef const floating* w_pk = <const floating*>j.w_pk
    cdef floating* dh = <floating*>j.h
    cdef floating* dg = <floating*>j.dgates
    cdef bint add = j.cell == _GRU  # the GRU's dh already holds d * z
    cdef bint alone = j.team.nthreads < 2
    if j.split == _BY_ROWS:
        _backward_rows(j, tid, kind)
        return
    if not alone:
        if tid:
            u_lo = j.units
        else:
            u_hi = j.units
    for s in range(T):
        t = s if j.reverse else T - 1 - s
        live = <int>j.bs[t]
        if not j.reverse:
            off -= live
        if live > 0:
            lk_maybe_stall(tid, s)
            # one row: the caller does the whole step, after the worker's last product
            if live == 1 and not lk_team_wait(&j.team, &sense, tid, False):
                if tid:
                    return
                u_lo, u_hi, alone = 0, H, True
            if live > 1 or tid == 0:
                a_lo = u_lo if live > 1 else 0
                a_hi = u_hi if live > 1 else H
                for r in range(live):
                    _add(a_hi - a_lo, dh + r * H + a_lo, dy + (off + r) * H + a_lo)
                if j.cell == _LSTM:
                    _lstm_units_bwd(live, H, a_lo, a_hi, gates + off * G,
                                    <const floating*>j.cprev + off * H,
                                    <const floating*>j.tanhc + off * H, dh, <floating*>j.c,
                                    dg + off * G)
                elif j.cell == _GRU:
                    _gru_units_bwd(live, H, a_lo, a_hi, gates + off * G,
                                   <const floating*>j.ghn + off * H,
                                   <const floating*>j.hprev + off * H, dh, dg + off * G,
                                   <floating*>j.dgin + off * H)
                else:
                    for r in range(live):
                        _rnn_rows_bwd(a_hi - a_lo, gates + (off + r) * H + a_lo,
                                      dh + r * H + a_lo, dg + (off + r) * H + a_lo, j.relu)
            if not lk_team_wait(&j.team, &sense, tid, live > 1):
                if tid:
                    return
                u_lo, u_hi, alone = 0, H, True  # alone from this product on
            if live > 1:
                if u_hi > u_lo:
                    _panel_gemm(live, u_hi - u_lo, G, dg + off * G, G, w_pk + u_lo * G, add,
                                dh + u_lo, H)
            elif tid == 0:  # as on one thread
                _recurrent_gemm_bwd(1, G, H, dg + off * G, <const floating*>j.w_hh, w_pk,
                                    1 if add else 0, dh)
            if live == 1 and not lk_team_wait(&j.team, &sense, tid, live > 1):
                if tid:
                    return
                u_lo, u_hi, alone = 0, H, True
        if j.reverse:
            off += live
    _backward_products(j, 2 if alone else tid, kind)


cdef void _backward_rows(_TeamJob* j, int tid, floating* kind) noexcept nogil:
    """Thread ``tid``'s part of a backward through time split by batch rows (every step the
    same rows; :func:`_backward_split`): each thread takes its rows ``[r_lo, r_hi)`` of every
    step -- the gate-gradient loop and ``dh (+)= dG W_hh`` -- with no barrier, then both meet
    once and share the whole-sequence products as :func:`_backward_2t` does."""
    cdef int H = j.H, sense = 0
    cdef int G = (4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1) * H
    cdef Py_ssize_t T = j.T, B = j.bs[0], s, t, off, n, r_lo = 0, r_hi = B
    cdef const floating* gates = <const floating*>j.gates
    cdef floating* dh = <floating*>j.h
    cdef floating* dg = <floating*>j.dgates
    cdef bint alone
    global _rows_count
    if tid == 0:
        _rows_count += 1
    if j.team.nthreads > 1:
        if tid:
            r_lo = B // 2
        else:
            r_hi = B // 2
    n = r_hi - r_lo
    dh += r_lo * H
    for s in range(T):
        t = s if j.reverse else T - 1 - s
        off = t * B + r_lo
        lk_maybe_stall(tid, s)
        _add(n * H, dh, <const floating*>j.dy + off * H)
        if j.cell == _LSTM:
            _lstm_units_bwd(n, H, 0, H, gates + off * G, <const floating*>j.cprev + off * H,
                            <const floating*>j.tanhc + off * H, dh, <floating*>j.c + r_lo * H,
                            dg + off * G)
        elif j.cell == _GRU:
            _gru_units_bwd(n, H, 0, H, gates + off * G, <const floating*>j.ghn + off * H,
                           <const floating*>j.hprev + off * H, dh, dg + off * G,
                           <floating*>j.dgin + off * H)
        else:
            _rnn_rows_bwd(n * H, gates + off * H, dh, dg + off * H, j.relu)
        _panel_gemm(n, H, G, dg + off * G, G, <const floating*>j.w_pk, j.cell == _GRU, dh, H)
    alone = not lk_team_wait(&j.team, &sense, tid, False)  # every row's dG, for the products
    if alone and tid:
        return
    _backward_products(j, 2 if alone else tid, kind)


cdef void _backward_products(_TeamJob* j, int part, floating* kind) noexcept nogil:
    """The backward's whole-sequence products from the whole ``dG``: ``part`` 0 or 1 one
    thread's half of each, 2 all of them."""
    cdef int H = j.H
    cdef int G = (4 if j.cell == _LSTM else 3 if j.cell == _GRU else 1) * H
    cdef floating* dg = <floating*>j.dgates
    if j.cell == _GRU:
        _gru_weight_grads(part, j.N, H, j.isz, dg, <const floating*>j.dgin,
                          <const floating*>j.x, <const floating*>j.hprev,
                          <const floating*>j.w_ih, <floating*>j.dx, <floating*>j.dw_ih,
                          <floating*>j.dw_hh, <floating*>j.db_ih, <floating*>j.db_hh,
                          j.wg_panels)
    else:
        _weight_grads(part, j.N, G, j.isz, H, dg, <const floating*>j.x,
                      <const floating*>j.hprev, <const floating*>j.w_ih,
                      <const floating*>j.w_ih_pk, <floating*>j.dx,
                      <floating*>j.dw_ih, <floating*>j.dw_hh, <floating*>j.db_ih,
                      <floating*>j.db_hh, j.wg_panels)


cdef void* _bwd_worker_f(void* job) noexcept nogil:
    _backward_2t(<_TeamJob*>job, 1, <float*>NULL)
    return NULL


cdef void* _bwd_worker_d(void* job) noexcept nogil:
    _backward_2t(<_TeamJob*>job, 1, <double*>NULL)
    return NULL


#: Multiply-adds of a layer call (rows x gate rows x (input + hidden)) from which it yields
#: its CPU once on entry: ~0.2 us a call, under 1% from here (2^20 multiply-adds ~ 10 us).
cdef Py_ssize_t _YIELD_WORK = 1 << 20
cdef bint _YIELD = True  # test switch (_use_yield)
cdef Py_ssize_t _yields = 0  # layer calls that yielded (a test hook)


def _panel_ahead_from(size_t nbytes):
    """Test switch: the packed size over which the panel kernel fetches the next panel
    ahead (``LK_PANEL_LOOP``; half of this CPU's L2 by default, ``0`` restores that);
    returns the previous size."""
    return lk_set_ahead_bytes(nbytes)


def _use_rows8(int on):
    """Test switch: float rows of the panel kernel in blocks of 8 (``lk_rows8``: on where
    the x86-64-v4 clone runs; ``-1`` asks the CPU again); returns the previous setting.
    On a CPU without AVX-512 turning it on runs correctly but spills registers."""
    return lk_set_rows8(on)


def _use_yield(bint on):
    """Test switch: whether a layer call yields its CPU on entry (:func:`_let_waiting_run`);
    returns the previous setting and how many calls have yielded."""
    global _YIELD
    old, _YIELD = _YIELD, on
    return old, _yields


cdef inline void _let_waiting_run(Py_ssize_t work) noexcept nogil:
    """On entering a layer's time loop, the GIL just released: yield this CPU once.  A thread
    woken here (the one waiting for that GIL, or another Python thread's work handed over)
    otherwise waits in this CPU's run queue for the whole call while the other CPU idles (the
    scheduler neither preempts nor moves it for milliseconds on these VMs); run now, it enters
    the core, and the thread policy moves it to a free CPU (``lstmkit/_threads.py``, ``_place``).
    With nothing waiting it returns at once; a waiting task of another process only runs
    earlier, the fair share is unchanged."""
    global _yields
    if _YIELD and work >= _YIELD_WORK:
        _yields += 1
        lk_yield()


cdef bint _ZERO_START = True  # test switch (_use_zero_start)
cdef Py_ssize_t _zero_starts = 0  # forwards that skipped their first product (a test hook)


def _use_zero_start(bint on):
    """Test switch: whether a forward may skip its first step's recurrent product
    (:func:`_zero_start`); returns the previous setting and how many forwards skipped it."""
    global _ZERO_START
    old, _ZERO_START = _ZERO_START, on
    return old, _zero_starts


cdef bint _zero_start(Py_ssize_t B, Py_ssize_t P, const floating* h0, Py_ssize_t G,
                      const floating* w_hh, Py_ssize_t I) noexcept nogil:
    """May the first step skip its recurrent product ``h0 w_hh^T`` (added to the gates, LSTM
    and RNN)?  Yes when every value of ``h0`` is zero (no state given) and ``w_hh`` is finite,
    so that each of its sums is a zero that adds nothing (0 * inf is NaN, which the gates must
    then get).  Asked from 8 rows, where a step's product (B*G*P multiply-adds) outweighs one
    pass over ``w_hh``; not without inputs or state columns (``I`` or ``P`` 0), where gates
    of bias alone keep a -0 bias that adding the +0 product would make +0."""
    global _zero_starts
    cdef Py_ssize_t i
    cdef bint nonzero = False, bad = False
    if B < 8 or I == 0 or P == 0 or not _ZERO_START:
        return False
    for i in range(B * P):
        nonzero |= h0[i] != 0
    if nonzero:
        return False
    for i in range(G * P):
        bad |= (w_hh[i] - w_hh[i]) != 0  # inf - inf and NaN - NaN are NaN
    if not bad:
        _zero_starts += 1
    return not bad


cdef void _lstm_forward(Py_ssize_t T, const int64_t* bs, bint reverse, int N, int I,
                        int H, int P, const floating* x, const floating* w_ih,
                        const floating* w_ih_pk, const floating* w_hh, const floating* w_pk,
                        const floating* b_ih, const floating* b_hh, const floating* w_hr,
                        const floating* w_hr_pk,
                        floating* h, floating* c, floating* y, floating* gates,
                        Py_ssize_t R, floating* hcell, floating* hprev,
                        floating* cprev, floating* tanhc, bint zero_start=False) noexcept nogil:
    """LSTM layer-direction forward.  ``h`` (B, P), ``c`` (B, H): state0 in, state_n out.

    ``w_pk``/``w_hr_pk``: ``w_hh^T``/``w_hr^T`` in panels, or NULL.  ``gates``
    (R, 4H) workspace, ``R = N`` when training (activations on return), else
    ``R >= max(batch_sizes)`` (see :func:`_gates_block`).  ``y``
    (N, P) or NULL.  ``hcell``: projection only, ``(N, H)`` when training
    (cached) else ``(B, H)``.  Training: ``hprev`` (N, P), ``cprev``/``tanhc``
    (N, H) caches; all three NULL for inference.
    """
    cdef int G = 4 * H
    cdef bint train = hprev != NULL
    # every step's rows the same, no projection: h goes straight into its row of y and
    # the next step reads it there (no copy a step)
    cdef bint direct = y != NULL and w_hr == NULL and _same_rows(T, bs)
    cdef Py_ssize_t s, t, off = N if reverse else 0, lo = 0, hi = 0
    cdef int live
    cdef floating* hin = h
    cdef floating* hc
    cdef floating* gt
    for s in range(T):
        t = T - 1 - s if reverse else s
        live = <int>bs[t]
        if reverse:
            off -= live
        if live > 0:
            if train:
                memcpy(hprev + off * P, hin, <size_t>live * P * sizeof(floating))
                memcpy(cprev + off * H, c, <size_t>live * H * sizeof(floating))
            gt = _gates_block(s, T, bs, reverse, off, live, R, &lo, &hi, G, I, x, w_ih,
                              w_ih_pk, b_ih, G, b_hh, G, gates, True)
            if s > 0 or not zero_start:  # (_zero_start)
                _recurrent_gemm(live, G, P, hin, w_hh, w_pk, 1, gt)
            if direct:
                hc = y + off * P
            elif w_hr == NULL:
                hc = h
            else:
                hc = hcell + off * H if train else hcell
            _lstm_rows(live, H, gt, c, hc, tanhc + off * H if train else NULL)
            if direct:
                hin = hc
            elif w_hr != NULL:
                _recurrent_gemm(live, P, H, hc, w_hr, w_hr_pk, 0, h)
            if y != NULL and not direct:
                memcpy(y + off * P, h, <size_t>live * P * sizeof(floating))
        if not reverse:
            off += live
    if hin != h:
        memcpy(h, hin, <size_t>bs[0] * P * sizeof(floating))


cdef void _lstm_backward(Py_ssize_t T, const int64_t* bs, bint reverse, int N, int I,
                         int H, int P, const floating* x, const floating* w_ih,
                         const floating* w_ih_pk, const floating* w_hh, const floating* w_pk,
                         const floating* w_hr,
                         const floating* gates, const floating* hprev,
                         const floating* cprev, const floating* tanhc,
                         const floating* hcell, const floating* dy, floating* dh,
                         floating* dc, floating* dgates, floating* dhtot,
                         floating* dhcell, floating* dx, floating* dw_ih,
                         floating* dw_hh, floating* db_ih, floating* db_hh,
                         floating* dw_hr, int threads, bint wg_panels) noexcept nogil:
    """LSTM layer-direction backward through time.

    ``dh`` (B, P), ``dc`` (B, H): d state_n in, d state0 out.  Workspaces
    ``dgates`` (N, 4H); projection only: ``dhtot`` (N, P), ``dhcell`` (B, H).
    Outputs ``dx`` (N, I), ``dw_ih`` (4H, I), ``dw_hh`` (4H, P), ``db_*`` (4H)
    or NULL, ``dw_hr`` (P, H) or NULL.  ``w_pk``: ``w_hh`` in panels, or NULL.
    ``threads``: with panels and no projection, the time loop may run on two threads
    (by batch rows or hidden units, :func:`_backward_split`).  ``wg_panels``: see :func:`_wg_panels`.
    """
    cdef int G = 4 * H
    cdef Py_ssize_t s, t, off = 0 if reverse else N
    cdef int live
    cdef const floating* src
    cdef _TeamJob job
    job.split = _backward_split(T, bs, G, H, sizeof(floating))
    if threads > 1 and w_hr == NULL and w_pk != NULL:
        # the same loop on two threads (_backward_2t)
        job.T, job.N, job.isz, job.H, job.reverse, job.bs = T, N, I, H, reverse, bs
        job.units, job.cell = _split_at(H), _LSTM
        job.w_hh, job.w_pk, job.gates, job.cprev, job.tanhc = w_hh, w_pk, gates, cprev, tanhc
        job.dy, job.h, job.c, job.dgates = dy, dh, dc, dgates
        job.x, job.hprev, job.w_ih, job.dx, job.dw_ih, job.dw_hh = x, hprev, w_ih, dx, dw_ih, dw_hh
        job.w_ih_pk, job.wg_panels = w_ih_pk, wg_panels
        job.db_ih, job.db_hh = db_ih, db_hh
        if floating is float:
            lk_team_start(&job.team, threads, _bwd_worker_f, &job)
        else:
            lk_team_start(&job.team, threads, _bwd_worker_d, &job)
        _backward_2t(&job, 0, dh)
        lk_team_end(&job.team)
        return
    for s in range(T):
        t = s if reverse else T - 1 - s
        live = <int>bs[t]
        if not reverse:
            off -= live
        if live > 0:
            if w_hr != NULL:
                # total gradient of this step's h, kept for dW_hr
                memcpy(dhtot + off * P, dh, <size_t>live * P * sizeof(floating))
                _add(<Py_ssize_t>live * P, dhtot + off * P, dy + off * P)
                _gemm(False, False, live, H, P, 1, dhtot + off * P, P, w_hr, H, 0, dhcell, H)
                src = dhcell
            else:
                _add(<Py_ssize_t>live * P, dh, dy + off * P)
                src = dh
            _lstm_rows_bwd(live, H, gates + off * G, cprev + off * H, tanhc + off * H,
                           src, dc, dgates + off * G)
            _recurrent_gemm_bwd(live, G, P, dgates + off * G, w_hh, w_pk, 0, dh)
        if reverse:
            off += live
    _weight_grads(2, N, G, I, P, dgates, x, hprev, w_ih, w_ih_pk, dx, dw_ih, dw_hh, db_ih, db_hh,
                  wg_panels)
    if w_hr != NULL:
        _gemm(True, False, P, H, N, 1, dhtot, P, hcell, H, 0, dw_hr, H)


cdef void _gru_forward(Py_ssize_t T, const int64_t* bs, bint reverse, int N, int I, int H,
                       const floating* x, const floating* w_ih, const floating* w_ih_pk,
                       const floating* w_hh, const floating* w_pk, const floating* b_ih,
                       const floating* b_hh,
                       floating* h, floating* y, floating* gates, Py_ssize_t R,
                       floating* gh, floating* hprev, floating* ghn) noexcept nogil:
    """GRU layer-direction forward.  ``h`` (B, H): state0 in, state_n out.

    ``gates`` (R, 3H) (as in :func:`_lstm_forward`) gets ``x W_ih^T + b_ih +
    [b_hr, b_hz, 0]`` (b_hn stays apart: r multiplies it), then r, z, n when
    training; ``w_pk``: ``w_hh^T`` in panels or NULL; ``gh`` (B, 3H) per-step
    workspace; ``b_hh`` must not be NULL (zeros when bias=False).  Training:
    ``hprev``/``ghn`` (N, H) caches, NULL for inference.
    """
    cdef int G = 3 * H
    cdef bint train = hprev != NULL
    cdef Py_ssize_t s, t, off = N if reverse else 0, lo = 0, hi = 0
    cdef int live
    cdef floating* gt
    for s in range(T):
        t = T - 1 - s if reverse else s
        live = <int>bs[t]
        if reverse:
            off -= live
        if live > 0:
            if train:
                memcpy(hprev + off * H, h, <size_t>live * H * sizeof(floating))
            gt = _gates_block(s, T, bs, reverse, off, live, R, &lo, &hi, G, I, x, w_ih,
                              w_ih_pk, b_ih, G, b_hh, 2 * H, gates, True)
            _recurrent_gemm(live, G, H, h, w_hh, w_pk, 0, gh)
            _gru_rows(live, H, gt, gh, b_hh + 2 * H, h, ghn + off * H if train else NULL)
            if y != NULL:
                memcpy(y + off * H, h, <size_t>live * H * sizeof(floating))
        if not reverse:
            off += live


cdef void _gru_backward(Py_ssize_t T, const int64_t* bs, bint reverse, int N, int I, int H,
                        const floating* x, const floating* w_ih, const floating* w_hh,
                        const floating* w_pk, const floating* gates, const floating* hprev,
                        const floating* ghn,
                        const floating* dy, floating* dh, floating* dgh, floating* dgin,
                        floating* dx, floating* dw_ih, floating* dw_hh, floating* db_ih,
                        floating* db_hh, bint wg_panels) noexcept nogil:
    """GRU backward.  ``dh`` (B, H): d h_n in, d h_0 out.  Workspaces ``dgh`` (N, 3H)
    (gradient of the recurrent product, n block times r) and ``dgin`` (N, H)
    (the input part's n block; its r, z blocks equal ``dgh``'s)."""
    cdef int G = 3 * H
    cdef Py_ssize_t s, t, off = 0 if reverse else N
    cdef int live
    for s in range(T):
        t = s if reverse else T - 1 - s
        live = <int>bs[t]
        if not reverse:
            off -= live
        if live > 0:
            _add(<Py_ssize_t>live * H, dh, dy + off * H)
            _gru_rows_bwd(live, H, gates + off * G, ghn + off * H, hprev + off * H, dh,
                          dgh + off * G, dgin + off * H)
            _recurrent_gemm_bwd(live, G, H, dgh + off * G, w_hh, w_pk, 1, dh)
        if reverse:
            off += live
    _gru_weight_grads(2, N, H, I, dgh, dgin, x, hprev, w_ih, dx, dw_ih, dw_hh, db_ih, db_hh,
                      wg_panels)


cdef void _gru_weight_grads(int part, Py_ssize_t N, int H, int I, const floating* dgh,
                            const floating* dgin, const floating* x, const floating* hprev,
                            const floating* w_ih, floating* dx, floating* dw_ih,
                            floating* dw_hh, floating* db_ih, floating* db_hh,
                            bint wg_panels) noexcept nogil:
    """The GRU backward's whole-sequence products, in two halves as in
    :func:`_weight_grads` (``part`` 0, 1 or 2 for both): ``dx`` by rows, the
    weight and bias gradients by gate rows (the n block of ``dw_ih``/``db_ih`` comes
    from ``dgin``, the rest from ``dgh``)."""
    cdef Py_ssize_t nh = _half_at(N), gh = _half_at(3 * H)
    if part != 1:
        _gru_weight_grads_rows(0, nh, 0, gh, N, H, I, dgh, dgin, x, hprev, w_ih, dx, dw_ih,
                               dw_hh, db_ih, db_hh, wg_panels)
    if part != 0:
        _gru_weight_grads_rows(nh, N, gh, 3 * H, N, H, I, dgh, dgin, x, hprev, w_ih, dx, dw_ih,
                               dw_hh, db_ih, db_hh, wg_panels)


cdef void _gru_weight_grads_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t g0, Py_ssize_t g1,
                                 Py_ssize_t N, int H, int I, const floating* dgh,
                                 const floating* dgin, const floating* x,
                                 const floating* hprev, const floating* w_ih, floating* dx,
                                 floating* dw_ih, floating* dw_hh, floating* db_ih,
                                 floating* db_hh, bint wg_panels) noexcept nogil:
    """One half of :func:`_gru_weight_grads`: ``dx`` rows [n0, n1), gate rows [g0, g1)."""
    cdef int G = 3 * H
    cdef Py_ssize_t a1 = min(g1, 2 * H), b0 = max(g0, 2 * H)  # [g0, a1) from dgh, [b0, g1) dgin
    if n1 > n0:
        _gemm(False, False, <int>(n1 - n0), I, 2 * H, 1, dgh + n0 * G, G, w_ih, I, 0,
              dx + n0 * I, I)
        _gemm(False, False, <int>(n1 - n0), I, H, 1, dgin + n0 * H, H,
              w_ih + 2 * <Py_ssize_t>H * I, I, 1,
              dx + n0 * I, I)
    if g1 > g0 and wg_panels:
        if _gru_weight_grads_panels(g0, g1, N, H, I, dgh, dgin, x, hprev, dw_ih, dw_hh, db_ih,
                                    db_hh) == 0:
            return
    if g1 > g0:
        _gemm(True, False, <int>(g1 - g0), H, <int>N, 1, dgh + g0, G, hprev, H, 0,
              dw_hh + g0 * H, H)
        if db_hh != NULL:
            _colsum(N, g1 - g0, dgh + g0, G, db_hh + g0)
    if a1 > g0:
        _gemm(True, False, <int>(a1 - g0), I, <int>N, 1, dgh + g0, G, x, I, 0, dw_ih + g0 * I, I)
        if db_ih != NULL and db_hh != NULL:  # r, z: the same sum as db_hh's
            memmove(db_ih + g0, db_hh + g0, (a1 - g0) * sizeof(floating))
        elif db_ih != NULL:
            _colsum(N, a1 - g0, dgh + g0, G, db_ih + g0)
    if g1 > b0:
        _gemm(True, False, <int>(g1 - b0), I, <int>N, 1, dgin + (b0 - 2 * H), H, x, I, 0,
              dw_ih + b0 * I, I)
        if db_ih != NULL:
            _colsum(N, g1 - b0, dgin + (b0 - 2 * H), H, db_ih + b0)


cdef int _gru_weight_grads_panels(Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t N, int H, int I,
                                 const floating* dgh, const floating* dgin, const floating* x,
                                 const floating* hprev, floating* dw_ih, floating* dw_hh,
                                 floating* db_ih, floating* db_hh) noexcept nogil:
    """:func:`_gru_weight_grads_rows`' gate rows [g0, g1) on the panel kernel
    (:func:`_panel_weight_grads`): r and z take ``x`` and ``hprev`` against ``dgh``, n takes
    ``hprev`` against ``dgh`` and ``x`` against ``dgin``.  -1 when memory is short: each
    product either completes or writes nothing, so some gradients may be written, and
    BLAS redoes them all."""
    cdef Py_ssize_t G = 3 * H, a1 = min(g1, 2 * H), b0 = max(g0, 2 * H)
    cdef floating* db = db_hh if db_hh != NULL else db_ih  # r, z: one sum for both
    if a1 > g0:
        if _panel_weight_grads(N, G, g0, a1, dgh, I, x, H, hprev, dw_ih, dw_hh, db) != 0:
            return -1
        if db_ih != NULL and db_hh != NULL:
            memmove(db_ih + g0, db_hh + g0, (a1 - g0) * sizeof(floating))
    if g1 > b0:
        if _panel_weight_grads(N, G, b0, g1, dgh, 0, NULL, H, hprev, NULL, dw_hh, db_hh) != 0:
            return -1
        if _panel_weight_grads(N, H, b0 - 2 * H, g1 - 2 * H, dgin, I, x, 0, NULL,
                               dw_ih + 2 * <Py_ssize_t>H * I, NULL,
                               db_ih + 2 * H if db_ih != NULL else NULL) != 0:
            return -1
    return 0


cdef inline void _gru_units_bwd(Py_ssize_t n, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                                const floating* g, const floating* ghn, const floating* hprev,
                                floating* dh, floating* dgh, floating* dgin) noexcept nogil:
    if floating is float:
        lk_gru_bwd_units_f(n, H, j0, j1, g, ghn, hprev, dh, dgh, dgin)
    else:
        lk_gru_bwd_units_d(n, H, j0, j1, g, ghn, hprev, dh, dgh, dgin)


cdef void _rnn_forward(Py_ssize_t T, const int64_t* bs, bint reverse, bint relu, int N,
                       int I, int H, const floating* x, const floating* w_ih,
                       const floating* w_ih_pk, const floating* w_hh, const floating* w_pk,
                       const floating* b_ih, const floating* b_hh, floating* h, floating* y,
                       floating* gates,
                       Py_ssize_t R, floating* hprev, bint zero_start=False) noexcept nogil:
    """Elman RNN forward.  ``h`` (B, H) state0 in, state_n out; ``gates`` (R, H)
    workspace (as in :func:`_lstm_forward`), holding the activations when
    training (``hprev`` (N, H) given); ``w_pk``: ``w_hh^T`` in panels or NULL."""
    cdef bint train = hprev != NULL
    cdef bint direct = y != NULL and _same_rows(T, bs)  # h into y, as in _lstm_forward
    cdef Py_ssize_t s, t, off = N if reverse else 0, lo = 0, hi = 0
    cdef int live
    cdef floating* hin = h
    cdef floating* gt
    for s in range(T):
        t = T - 1 - s if reverse else s
        live = <int>bs[t]
        if reverse:
            off -= live
        if live > 0:
            if train:
                memcpy(hprev + off * H, hin, <size_t>live * H * sizeof(floating))
            gt = _gates_block(s, T, bs, reverse, off, live, R, &lo, &hi, H, I, x, w_ih,
                              w_ih_pk, b_ih, H, b_hh, H, gates, True)
            if s > 0 or not zero_start:  # (_zero_start)
                _recurrent_gemm(live, H, H, hin, w_hh, w_pk, 1, gt)
            if direct:
                hin = y + off * H
                _rnn_rows(<Py_ssize_t>live * H, gt, hin, relu, train)
            else:
                _rnn_rows(<Py_ssize_t>live * H, gt, h, relu, train)
                if y != NULL:
                    memcpy(y + off * H, h, <size_t>live * H * sizeof(floating))
        if not reverse:
            off += live
    if hin != h:
        memcpy(h, hin, <size_t>bs[0] * H * sizeof(floating))


cdef void _rnn_backward(Py_ssize_t T, const int64_t* bs, bint reverse, bint relu, int N,
                        int I, int H, const floating* x, const floating* w_ih,
                        const floating* w_ih_pk, const floating* w_hh, const floating* w_pk,
                        const floating* act,
                        const floating* hprev,
                        const floating* dy, floating* dh, floating* dg, floating* dx,
                        floating* dw_ih, floating* dw_hh, floating* db_ih,
                        floating* db_hh, bint wg_panels) noexcept nogil:
    """Elman RNN backward.  ``dh`` (B, H): d h_n in, d h_0 out; ``dg`` (N, H) workspace."""
    cdef Py_ssize_t s, t, off = 0 if reverse else N
    cdef int live
    for s in range(T):
        t = s if reverse else T - 1 - s
        live = <int>bs[t]
        if not reverse:
            off -= live
        if live > 0:
            _add(<Py_ssize_t>live * H, dh, dy + off * H)
            _rnn_rows_bwd(<Py_ssize_t>live * H, act + off * H, dh, dg + off * H, relu)
            _recurrent_gemm_bwd(live, H, H, dg + off * H, w_hh, w_pk, 0, dh)
        if reverse:
            off += live
    _weight_grads(2, N, H, I, H, dg, x, hprev, w_ih, w_ih_pk, dx, dw_ih, dw_hh, db_ih, db_hh,
                  wg_panels)


# ---------------------------------------------------------------------------
# Python entry points: check every shape (the C code trusts them), then run
# the C kernels without the GIL.
# ---------------------------------------------------------------------------


cdef int _INT_MAX = 2147483647


cdef int _shape(object name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t want_rows,
                Py_ssize_t want_cols) except -1:
    if rows != want_rows or cols != want_cols:
        raise ValueError(f"{name}: expected shape ({want_rows}, {want_cols}), "
                         f"got ({rows}, {cols})")
    return 0


cdef int _vec(object name, Py_ssize_t n, Py_ssize_t want) except -1:
    if n != want:
        raise ValueError(f"{name}: expected shape ({want},), got ({n},)")
    return 0


cdef int _check_batch_sizes(const int64_t[::1] bs, Py_ssize_t B, Py_ssize_t N) except -1:
    """batch_sizes must be non-increasing, within [0, B], and sum to N."""
    cdef Py_ssize_t t, total = 0
    cdef int64_t prev = B
    for t in range(bs.shape[0]):
        if bs[t] < 0 or bs[t] > prev:
            raise ValueError(
                f"batch_sizes must be non-increasing and within [0, {B}] "
                f"(the state's batch size); got {[bs[k] for k in range(bs.shape[0])]}")
        prev = bs[t]
        total += bs[t]
    if total != N:
        raise ValueError(f"batch_sizes sum to {total} but the input has {N} rows")
    return 0


cdef int _check_dims(Py_ssize_t N, Py_ssize_t I, Py_ssize_t G, Py_ssize_t P) except -1:
    if N > _INT_MAX or I > _INT_MAX or G > _INT_MAX or P > _INT_MAX:
        raise ValueError("array dimensions must fit in a 32-bit BLAS int")
    return 0


cdef inline floating* _p2(floating[:, ::1] a) noexcept nogil:
    """Data pointer of an optional array (NULL for None)."""
    if a is None:
        return NULL
    return &a[0, 0]


cdef inline const floating* _c1(const floating[::1] a) noexcept nogil:
    if a is None:
        return NULL
    return &a[0]


cdef inline const floating* _c2(const floating[:, ::1] a) noexcept nogil:
    if a is None:
        return NULL
    return &a[0, 0]


cdef class _Panels:
    """Owner of one packed operand (back to the workspace pool with the object); ``ptr``
    NULL when the rows are better served by BLAS."""
    cdef void* ptr
    cdef size_t size

    def __dealloc__(self):
        lk_pool_give(self.ptr, self.size)


cdef _Panels _panels_for(Py_ssize_t rows, Py_ssize_t k, Py_ssize_t n, size_t item,
                         bint use, Py_ssize_t steps):
    """Room for a (k, n) operand in panels when some step has more than one row
    (``rows``: the largest batch size; ``use`` false: never), or for one row over
    4+ ``steps`` (the kernel's gemv loop beats BLAS's sgemv call by more than the
    packing costs: T1000 B1 H32: 0.46 -> 0.31 us a step).  The caller packs it
    inside ``nogil``."""
    cdef _Panels p = _Panels()
    cdef Py_ssize_t nr = LK_NR_f if item == sizeof(float) else LK_NR_d
    cdef Py_ssize_t size = (n + nr - 1) // nr * nr * k
    p.ptr = NULL
    if use and (rows > 1 or steps >= 4) and k > 0 and n > 0 \
            and lk_panels_pay(item == sizeof(double)):
        p.ptr = lk_pool_take(size * item, &p.size)
        if p.ptr == NULL:
            raise MemoryError()
    return p


cdef bint _PROJ_PANELS = True


def _use_projection_panels(bint on):
    """Test switch: whether the whole-sequence products (the input projection, the
    backward's ``dx`` for LSTM and RNN, the weight gradients) may take the panel kernel;
    returns the previous setting."""
    global _PROJ_PANELS
    old, _PROJ_PANELS = _PROJ_PANELS, on
    return old


cdef inline bint _wg_panels(bint panels, size_t item) noexcept nogil:
    """Whether a backward's weight and bias gradients take the panel kernel: where the
    whole-sequence products may (``panels`` of this call, the test switch, the CPU)."""
    return panels and _PROJ_PANELS and lk_proj_panels_pay(item == sizeof(double))


cdef _Panels _sequence_panels_for(Py_ssize_t N, Py_ssize_t k, Py_ssize_t n, Py_ssize_t extra,
                                  size_t item, bint use):
    """Room for the (k, n) operand of a whole-sequence product over ``N`` rows in panels,
    and ``extra`` values after it, where the panel kernel serves such products (the
    input projection, the backward's ``dx``; ``use`` false: never).

    Packing costs a pass over the weights each call, which a few rows do not repay
    when the weights are large: I = H = 1024 (16 MB), 16 rows took 0.43x BLAS's
    speed, 128 rows 0.76x, 256 rows or more 1.3-1.5x; up to 1 MB of weights, which
    stay in L2, 16 rows already broke even (``_use_projection_panels``, LSTM
    inference, one thread)."""
    cdef _Panels p = _Panels()
    cdef Py_ssize_t nr = LK_NR_f if item == sizeof(float) else LK_NR_d
    p.ptr = NULL
    if (use and _PROJ_PANELS and k > 0 and n > 0
            and (N >= 256 or (N >= 16 and <size_t>(k * n) * item <= (1 << 20)))
            and lk_proj_panels_pay(item == sizeof(double))):
        p.ptr = lk_pool_take(((n + nr - 1) // nr * nr * k + extra) * item, &p.size)
        if p.ptr == NULL:
            raise MemoryError()
    return p


cdef _Panels _proj_panels_for(Py_ssize_t N, Py_ssize_t I, Py_ssize_t G, size_t item,
                              bint use):
    """Room for ``w_ih^T`` in panels and the bias sum after it (:func:`_input_projection`).
    The caller fills it inside ``nogil`` with :func:`_pack_projection`."""
    return _sequence_panels_for(N, I, G, G, item, use)


cdef void _pack_projection(Py_ssize_t I, Py_ssize_t G, const floating* w_ih,
                           const floating* b1, Py_ssize_t n1, const floating* b2,
                           Py_ssize_t n2, floating* pk) noexcept nogil:
    """Fill :func:`_proj_panels_for`'s room: ``w_ih`` (G, I) transposed into panels,
    then the bias sum per column (:func:`_projection_biases`)."""
    _pack(I, G, w_ih, True, pk)
    _projection_biases(0, G, b1, n1, b2, n2, pk + _packed_size(I, G, pk))


cdef int _check_gates(object name, const int64_t[::1] bs, Py_ssize_t rows, Py_ssize_t cols,
                      Py_ssize_t N, Py_ssize_t G, bint train) except -1:
    """Training: ``gates`` (N, G); inference: (R, G), R >= the largest batch size."""
    if train:
        return _shape(name, rows, cols, N, G)
    if cols != G or (bs.shape[0] > 0 and rows < bs[0]) or rows < 0:
        want = bs[0] if bs.shape[0] > 0 else 0
        raise ValueError(f"{name}: expected shape (R, {G}) with R >= {want} "
                         f"(the largest batch size), got ({rows}, {cols})")
    return 0


def lstm_forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                 const floating[:, ::1] w_hh, const floating[::1] b_ih,
                 const floating[::1] b_hh, const floating[:, ::1] w_hr,
                 const int64_t[::1] batch_sizes, bint reverse,
                 const floating[:, ::1] h0, const floating[:, ::1] c0,
                 floating[:, ::1] h, floating[:, ::1] c, floating[:, ::1] y,
                 floating[:, ::1] gates, floating[:, ::1] hcell,
                 floating[:, ::1] hprev=None, floating[:, ::1] cprev=None,
                 floating[:, ::1] tanhc=None, bint panels=True,
                 bint flush_denormals=False, int threads=1):
    """LSTM layer-direction forward over a packed sequence (see the module docstring).

    ``x`` (N, I); ``w_ih`` (4H, I), ``w_hh`` (4H, P), ``b_ih``/``b_hh`` (4H) or
    None, ``w_hr`` (P, H) or None.  ``h0`` (B, P), ``c0`` (B, H) are copied into
    the outputs ``h``, ``c`` (state_n on return).  ``y`` (N, P) outputs or None.
    ``gates`` workspace: (N, 4H) when training (it then holds the activations
    i, f, g, o), else (R, 4H) with R >= max(batch_sizes): the input is
    projected R rows at a time.  ``hcell``: None without projection, else
    (N, H) when training, (B, H) otherwise.  Training: pass ``hprev`` (N, P),
    ``cprev``/``tanhc`` (N, H).  ``panels``: allow the packed-panel kernel
    (else BLAS for every per-step product and for the products over ``w_ih``, the
    input projection and the backward's ``dx``; a test switch).  ``threads``: 2 runs
    the time loop on two threads where panels serve it (2-64 rows, no
    projection; :func:`_forward_2t`), with the same results as on one
    (the caller's policy decides).  ``flush_denormals``:
    run with the calling thread's SSE flush-to-zero and denormals-are-zero
    flags set (restored on return; x86-64 only, elsewhere no effect; BLAS
    worker threads other than the caller keep their own setting).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], G = w_ih.shape[0]
    cdef Py_ssize_t H = G // 4, P = w_hh.shape[1], B = h0.shape[0]
    cdef bint train = hprev is not None
    if G % 4:
        raise ValueError(f"weight_ih: expected 4*hidden_size rows, got {G}")
    _check_dims(N, I, G, P)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], G, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], G, P)
    if b_ih is not None:
        _vec("bias_ih", b_ih.shape[0], G)
    if b_hh is not None:
        _vec("bias_hh", b_hh.shape[0], G)
    if w_hr is not None:
        _shape("weight_hr", w_hr.shape[0], w_hr.shape[1], P, H)
    elif P != H:
        raise ValueError(f"weight_hh: expected {H} columns without weight_hr, got {P}")
    _shape("h0", h0.shape[0], h0.shape[1], B, P)
    _shape("c0", c0.shape[0], c0.shape[1], B, H)
    _shape("h", h.shape[0], h.shape[1], B, P)
    _shape("c", c.shape[0], c.shape[1], B, H)
    if y is not None:
        _shape("y", y.shape[0], y.shape[1], N, P)
    _check_gates("gates", batch_sizes, gates.shape[0], gates.shape[1], N, G, train)
    if w_hr is not None:
        if hcell is None:
            raise ValueError("hcell: a workspace is needed with weight_hr")
        _shape("hcell", hcell.shape[0], hcell.shape[1], N if train else B, H)
    if train:
        if cprev is None or tanhc is None:
            raise ValueError("training needs hprev, cprev and tanhc")
        _shape("hprev", hprev.shape[0], hprev.shape[1], N, P)
        _shape("cprev", cprev.shape[0], cprev.shape[1], N, H)
        _shape("tanhc", tanhc.shape[0], tanhc.shape[1], N, H)
    _check_batch_sizes(batch_sizes, B, N)
    cdef Py_ssize_t rows = batch_sizes[0] if N else 0
    # two threads: 2-64 rows on the panel path, no projection (_forward_2t)
    cdef bint team = threads > 1 and w_hr is None and 1 < rows <= _PANEL_MAX_ROWS  # and pk.ptr
    cdef _Panels pk = _panels_for(rows, P, G, sizeof(floating), panels, batch_sizes.shape[0])
    cdef _Panels pk_hr = _panels_for(rows, H, P, sizeof(floating), panels and w_hr is not None,
                                     batch_sizes.shape[0])
    cdef _Panels pk_ih = _proj_panels_for(N, I, G, sizeof(floating), panels)
    cdef _TeamJob job
    job.split = _forward_split(team, batch_sizes, I, H, G, sizeof(floating), y is not None,
                               pk.ptr, pk_ih.ptr)
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * G * (I + P))
            job.zero_start = _zero_start(B, P, &h0[0, 0], G, &w_hh[0, 0], I) if N else False
            memmove(&h[0, 0], &h0[0, 0], B * P * sizeof(floating))
            memmove(&c[0, 0], &c0[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL and job.split == _BY_COLUMNS:
                _pack(P, G, &w_hh[0, 0], True, <floating*>pk.ptr)
            if pk_ih.ptr != NULL and job.split == _BY_COLUMNS:
                _pack_projection(I, G, &w_ih[0, 0], _c1(b_ih), G, _c1(b_hh), G,
                                 <floating*>pk_ih.ptr)
            if pk_hr.ptr != NULL:
                _pack(H, P, &w_hr[0, 0], True, <floating*>pk_hr.ptr)
            if team and pk.ptr != NULL:
                job.T, job.N, job.R = batch_sizes.shape[0], N, gates.shape[0]
                job.isz, job.H, job.reverse, job.bs = I, H, reverse, &batch_sizes[0]
                job.cols, job.units, job.cell = _split_at(G), _split_at(H), _LSTM
                job.x, job.w_ih, job.w_hh, job.w_pk = &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], pk.ptr
                job.w_ih_pk = pk_ih.ptr
                job.b_ih, job.b_hh, job.h, job.c, job.y = _c1(b_ih), _c1(b_hh), &h[0, 0], &c[0, 0], _p2(y)
                job.gates, job.hprev, job.cprev, job.tanhc = &gates[0, 0], _p2(hprev), _p2(cprev), _p2(tanhc)
                if floating is float:
                    lk_team_start(&job.team, threads, _fwd_worker_f, &job)
                else:
                    lk_team_start(&job.team, threads, _fwd_worker_d, &job)
                _forward_2t(&job, 0, &h[0, 0])
                lk_team_end(&job.team)
            else:
                _lstm_forward(batch_sizes.shape[0], &batch_sizes[0], reverse, N, I, H, P,
                              &x[0, 0], &w_ih[0, 0], <floating*>pk_ih.ptr, &w_hh[0, 0],
                              <floating*>pk.ptr, _c1(b_ih), _c1(b_hh), _c2(w_hr),
                              <floating*>pk_hr.ptr, &h[0, 0],
                              &c[0, 0], _p2(y), &gates[0, 0], gates.shape[0], _p2(hcell),
                              _p2(hprev), _p2(cprev), _p2(tanhc), job.zero_start)
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


def lstm_backward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                  const floating[:, ::1] w_hh, const floating[:, ::1] w_hr,
                  const int64_t[::1] batch_sizes, bint reverse,
                  const floating[:, ::1] gates, const floating[:, ::1] hprev,
                  const floating[:, ::1] cprev, const floating[:, ::1] tanhc,
                  const floating[:, ::1] hcell, const floating[:, ::1] dy,
                  const floating[:, ::1] dhn, const floating[:, ::1] dcn,
                  floating[:, ::1] dh0, floating[:, ::1] dc0, floating[:, ::1] dgates,
                  floating[:, ::1] dhtot, floating[:, ::1] dhcell, floating[:, ::1] dx,
                  floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                  floating[::1] db_hh, floating[:, ::1] dw_hr, bint panels=True,
                  bint flush_denormals=False, int threads=1):
    """Backward of :func:`lstm_forward` (training mode) for the gradients ``dy`` (N, P),
    ``dhn`` (B, P), ``dcn`` (B, H).

    Cache inputs as filled by the forward.  Outputs: ``dh0`` (B, P), ``dc0``
    (B, H), ``dx`` (N, I), ``dw_ih`` (4H, I), ``dw_hh`` (4H, P), ``db_ih``/``db_hh``
    (4H) or None, ``dw_hr`` (P, H) or None.  Workspaces: ``dgates`` (N, 4H);
    with projection ``dhtot`` (N, P) and ``dhcell`` (B, H), else None.
    ``panels``, ``threads``: as in :func:`lstm_forward`.
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], G = w_ih.shape[0]
    cdef Py_ssize_t H = G // 4, P = w_hh.shape[1], B = dhn.shape[0]
    if G % 4:
        raise ValueError(f"weight_ih: expected 4*hidden_size rows, got {G}")
    _check_dims(N, I, G, P)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], G, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], G, P)
    _shape("gates", gates.shape[0], gates.shape[1], N, G)
    _shape("hprev", hprev.shape[0], hprev.shape[1], N, P)
    _shape("cprev", cprev.shape[0], cprev.shape[1], N, H)
    _shape("tanhc", tanhc.shape[0], tanhc.shape[1], N, H)
    _shape("d_y", dy.shape[0], dy.shape[1], N, P)
    _shape("d_h_n", dhn.shape[0], dhn.shape[1], B, P)
    _shape("d_c_n", dcn.shape[0], dcn.shape[1], B, H)
    _shape("dh0", dh0.shape[0], dh0.shape[1], B, P)
    _shape("dc0", dc0.shape[0], dc0.shape[1], B, H)
    _shape("dgates", dgates.shape[0], dgates.shape[1], N, G)
    _shape("dx", dx.shape[0], dx.shape[1], N, I)
    _shape("dw_ih", dw_ih.shape[0], dw_ih.shape[1], G, I)
    _shape("dw_hh", dw_hh.shape[0], dw_hh.shape[1], G, P)
    if db_ih is not None:
        _vec("db_ih", db_ih.shape[0], G)
    if db_hh is not None:
        _vec("db_hh", db_hh.shape[0], G)
    if w_hr is not None:
        _shape("weight_hr", w_hr.shape[0], w_hr.shape[1], P, H)
        if hcell is None or dhtot is None or dhcell is None or dw_hr is None:
            raise ValueError("weight_hr needs hcell, dhtot, dhcell and dw_hr")
        _shape("hcell", hcell.shape[0], hcell.shape[1], N, H)
        _shape("dhtot", dhtot.shape[0], dhtot.shape[1], N, P)
        _shape("dhcell", dhcell.shape[0], dhcell.shape[1], B, H)
        _shape("dw_hr", dw_hr.shape[0], dw_hr.shape[1], P, H)
    elif P != H:
        raise ValueError(f"weight_hh: expected {H} columns without weight_hr, got {P}")
    _check_batch_sizes(batch_sizes, B, N)
    cdef bint wgp = _wg_panels(panels, sizeof(floating))
    cdef _Panels pk = _panels_for(batch_sizes[0] if N else 0, G, P, sizeof(floating), panels,
                                  batch_sizes.shape[0])
    cdef _Panels pk_dx = _sequence_panels_for(N, G, I, 0, sizeof(floating), panels)
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * G * (I + P))
            memmove(&dh0[0, 0], &dhn[0, 0], B * P * sizeof(floating))
            memmove(&dc0[0, 0], &dcn[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL:
                _pack(G, P, &w_hh[0, 0], False, <floating*>pk.ptr)
            if pk_dx.ptr != NULL:
                _pack(G, I, &w_ih[0, 0], False, <floating*>pk_dx.ptr)
            _lstm_backward(batch_sizes.shape[0], &batch_sizes[0], reverse, N, I, H, P,
                           &x[0, 0], &w_ih[0, 0], <floating*>pk_dx.ptr, &w_hh[0, 0],
                           <floating*>pk.ptr, _c2(w_hr),
                           &gates[0, 0],
                           &hprev[0, 0], &cprev[0, 0], &tanhc[0, 0], _c2(hcell), &dy[0, 0],
                           &dh0[0, 0], &dc0[0, 0], &dgates[0, 0], _p2(dhtot), _p2(dhcell),
                           &dx[0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                           NULL if db_ih is None else &db_ih[0],
                           NULL if db_hh is None else &db_hh[0], _p2(dw_hr),
                           threads if 1 < batch_sizes[0] <= _PANEL_MAX_ROWS else 1, wgp)
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


def gru_forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                const floating[:, ::1] w_hh, const floating[::1] b_ih,
                const floating[::1] b_hh, const int64_t[::1] batch_sizes, bint reverse,
                const floating[:, ::1] h0, floating[:, ::1] h, floating[:, ::1] y,
                floating[:, ::1] gates, floating[:, ::1] gh,
                floating[:, ::1] hprev=None, floating[:, ::1] ghn=None,
                bint panels=True,
                 bint flush_denormals=False, int threads=1):
    """GRU layer-direction forward over a packed sequence.

    ``x`` (N, I); ``w_ih`` (3H, I), ``w_hh`` (3H, H), ``b_ih`` (3H) or None,
    ``b_hh`` (3H) (zeros when the layer has no bias).  ``h0`` (B, H) is copied
    into ``h`` (state_n on return); ``y`` (N, H) or None.  Workspaces ``gates``
    ((N, 3H) training, else (R, 3H) as in :func:`lstm_forward`), ``gh`` (B, 3H).
    Training: ``hprev``/``ghn`` (N, H) caches; ``gates`` then holds r, z, n.
    ``panels``, ``threads``: as in :func:`lstm_forward` (:func:`_forward_2t`).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], G = w_ih.shape[0]
    cdef Py_ssize_t H = G // 3, B = h0.shape[0]
    cdef bint train = hprev is not None
    if G % 3:
        raise ValueError(f"weight_ih: expected 3*hidden_size rows, got {G}")
    _check_dims(N, I, G, H)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], G, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], G, H)
    if b_ih is not None:
        _vec("bias_ih", b_ih.shape[0], G)
    if b_hh is None:
        raise ValueError("bias_hh: pass zeros when the layer has no bias")
    _vec("bias_hh", b_hh.shape[0], G)
    _shape("h0", h0.shape[0], h0.shape[1], B, H)
    _shape("h", h.shape[0], h.shape[1], B, H)
    if y is not None:
        _shape("y", y.shape[0], y.shape[1], N, H)
    _check_gates("gates", batch_sizes, gates.shape[0], gates.shape[1], N, G, train)
    _shape("gh", gh.shape[0], gh.shape[1], B, G)
    if train:
        if ghn is None:
            raise ValueError("training needs hprev and ghn")
        _shape("hprev", hprev.shape[0], hprev.shape[1], N, H)
        _shape("ghn", ghn.shape[0], ghn.shape[1], N, H)
    _check_batch_sizes(batch_sizes, B, N)
    cdef Py_ssize_t rows = batch_sizes[0] if N else 0
    cdef bint team = threads > 1 and 1 < rows <= _PANEL_MAX_ROWS  # and pk.ptr
    cdef _Panels pk = _panels_for(rows, H, G, sizeof(floating), panels, batch_sizes.shape[0])
    cdef _Panels pk_ih = _proj_panels_for(N, I, G, sizeof(floating), panels)
    cdef _TeamJob job
    job.split = _forward_split(team, batch_sizes, I, H, G, sizeof(floating), y is not None,
                               pk.ptr, pk_ih.ptr)
    job.zero_start = False  # GRU's product is stored apart, not added: always run
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * G * (I + H))
            memmove(&h[0, 0], &h0[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL and job.split == _BY_COLUMNS:
                _pack(H, G, &w_hh[0, 0], True, <floating*>pk.ptr)
            if pk_ih.ptr != NULL and job.split == _BY_COLUMNS:
                _pack_projection(I, G, &w_ih[0, 0], _c1(b_ih), G, &b_hh[0], 2 * H,
                                 <floating*>pk_ih.ptr)
            if team and pk.ptr != NULL:
                job.T, job.N, job.R = batch_sizes.shape[0], N, gates.shape[0]
                job.isz, job.H, job.reverse, job.bs = I, H, reverse, &batch_sizes[0]
                job.cols, job.units, job.cell = _split_at(G), _split_at(H), _GRU
                job.x, job.w_ih, job.w_hh, job.w_pk = &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], pk.ptr
                job.w_ih_pk = pk_ih.ptr
                job.b_ih, job.b_hh, job.h, job.y = _c1(b_ih), &b_hh[0], &h[0, 0], _p2(y)
                job.gates, job.gh, job.hprev, job.ghn = &gates[0, 0], &gh[0, 0], _p2(hprev), _p2(ghn)
                if floating is float:
                    lk_team_start(&job.team, threads, _fwd_worker_f, &job)
                else:
                    lk_team_start(&job.team, threads, _fwd_worker_d, &job)
                _forward_2t(&job, 0, &h[0, 0])
                lk_team_end(&job.team)
            else:
                _gru_forward(batch_sizes.shape[0], &batch_sizes[0], reverse, N, I, H, &x[0, 0],
                             &w_ih[0, 0], <floating*>pk_ih.ptr, &w_hh[0, 0], <floating*>pk.ptr,
                             _c1(b_ih), &b_hh[0],
                             &h[0, 0], _p2(y), &gates[0, 0], gates.shape[0], &gh[0, 0],
                             _p2(hprev), _p2(ghn))
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


def gru_backward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                 const floating[:, ::1] w_hh, const int64_t[::1] batch_sizes,
                 bint reverse, const floating[:, ::1] gates,
                 const floating[:, ::1] hprev, const floating[:, ::1] ghn,
                 const floating[:, ::1] dy, const floating[:, ::1] dhn,
                 floating[:, ::1] dh0, floating[:, ::1] dgh, floating[:, ::1] dgin,
                 floating[:, ::1] dx, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                 floating[::1] db_ih, floating[::1] db_hh, bint panels=True,
                 bint flush_denormals=False, int threads=1):
    """Backward of :func:`gru_forward` (training mode) for ``dy`` (N, H), ``dhn`` (B, H).

    Outputs ``dh0`` (B, H), ``dx`` (N, I), ``dw_ih`` (3H, I), ``dw_hh`` (3H, H),
    ``db_ih``/``db_hh`` (3H) or None.  Workspaces ``dgh`` (N, 3H), ``dgin`` (N, H).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], G = w_ih.shape[0]
    cdef Py_ssize_t H = G // 3, B = dhn.shape[0]
    if G % 3:
        raise ValueError(f"weight_ih: expected 3*hidden_size rows, got {G}")
    _check_dims(N, I, G, H)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], G, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], G, H)
    _shape("gates", gates.shape[0], gates.shape[1], N, G)
    _shape("hprev", hprev.shape[0], hprev.shape[1], N, H)
    _shape("ghn", ghn.shape[0], ghn.shape[1], N, H)
    _shape("d_y", dy.shape[0], dy.shape[1], N, H)
    _shape("d_h_n", dhn.shape[0], dhn.shape[1], B, H)
    _shape("dh0", dh0.shape[0], dh0.shape[1], B, H)
    _shape("dgh", dgh.shape[0], dgh.shape[1], N, G)
    _shape("dgin", dgin.shape[0], dgin.shape[1], N, H)
    _shape("dx", dx.shape[0], dx.shape[1], N, I)
    _shape("dw_ih", dw_ih.shape[0], dw_ih.shape[1], G, I)
    _shape("dw_hh", dw_hh.shape[0], dw_hh.shape[1], G, H)
    if db_ih is not None:
        _vec("db_ih", db_ih.shape[0], G)
    if db_hh is not None:
        _vec("db_hh", db_hh.shape[0], G)
    _check_batch_sizes(batch_sizes, B, N)
    cdef bint wgp = _wg_panels(panels, sizeof(floating))
    cdef Py_ssize_t rows = batch_sizes[0] if N else 0
    cdef bint team = threads > 1 and 1 < rows <= _PANEL_MAX_ROWS  # and pk.ptr
    cdef _Panels pk = _panels_for(rows, G, H, sizeof(floating), panels, batch_sizes.shape[0])
    cdef _TeamJob job
    job.split = _backward_split(batch_sizes.shape[0] if N else 0,
                                &batch_sizes[0] if N else NULL, G, H, sizeof(floating))
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * G * (I + H))
            memmove(&dh0[0, 0], &dhn[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL:
                _pack(G, H, &w_hh[0, 0], False, <floating*>pk.ptr)
            if team and pk.ptr != NULL:
                job.T, job.N, job.isz, job.H = batch_sizes.shape[0], N, I, H
                job.reverse, job.bs, job.units, job.cell = reverse, &batch_sizes[0], _split_at(H), _GRU
                job.x, job.w_ih, job.w_hh, job.w_pk = &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], pk.ptr
                job.w_ih_pk = NULL  # dx goes through BLAS (two products, a strided dgh)
                job.wg_panels = wgp
                job.gates, job.hprev, job.ghn = &gates[0, 0], &hprev[0, 0], &ghn[0, 0]
                job.dy, job.h, job.dgates, job.dgin = &dy[0, 0], &dh0[0, 0], &dgh[0, 0], &dgin[0, 0]
                job.dx, job.dw_ih, job.dw_hh = &dx[0, 0], &dw_ih[0, 0], &dw_hh[0, 0]
                job.db_ih = NULL if db_ih is None else &db_ih[0]
                job.db_hh = NULL if db_hh is None else &db_hh[0]
                if floating is float:
                    lk_team_start(&job.team, threads, _bwd_worker_f, &job)
                else:
                    lk_team_start(&job.team, threads, _bwd_worker_d, &job)
                _backward_2t(&job, 0, &dh0[0, 0])
                lk_team_end(&job.team)
            else:
                _gru_backward(batch_sizes.shape[0], &batch_sizes[0], reverse, N, I, H,
                              &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], <floating*>pk.ptr,
                              &gates[0, 0], &hprev[0, 0], &ghn[0, 0], &dy[0, 0], &dh0[0, 0],
                              &dgh[0, 0], &dgin[0, 0], &dx[0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                              NULL if db_ih is None else &db_ih[0],
                              NULL if db_hh is None else &db_hh[0], wgp)
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


def rnn_forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                const floating[:, ::1] w_hh, const floating[::1] b_ih,
                const floating[::1] b_hh, const int64_t[::1] batch_sizes, bint reverse,
                bint relu, const floating[:, ::1] h0, floating[:, ::1] h,
                floating[:, ::1] y, floating[:, ::1] gates, floating[:, ::1] hprev=None,
                bint panels=True,
                 bint flush_denormals=False, int threads=1):
    """Elman RNN (tanh, or ReLU with ``relu``) layer-direction forward.

    ``x`` (N, I); ``w_ih`` (H, I), ``w_hh`` (H, H), biases (H) or None.  ``h0``
    (B, H) copied into ``h`` (state_n on return); ``y`` (N, H) or None;
    ``gates`` workspace ((N, H) training, else (R, H) as in :func:`lstm_forward`).
    Training: ``hprev`` (N, H) cache; ``gates`` then holds the activations.
    ``panels``: as in :func:`lstm_forward`.
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], H = w_ih.shape[0], B = h0.shape[0]
    cdef bint train = hprev is not None
    _check_dims(N, I, H, H)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], H, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], H, H)
    if b_ih is not None:
        _vec("bias_ih", b_ih.shape[0], H)
    if b_hh is not None:
        _vec("bias_hh", b_hh.shape[0], H)
    _shape("h0", h0.shape[0], h0.shape[1], B, H)
    _shape("h", h.shape[0], h.shape[1], B, H)
    if y is not None:
        _shape("y", y.shape[0], y.shape[1], N, H)
    _check_gates("gates", batch_sizes, gates.shape[0], gates.shape[1], N, H, train)
    if train:
        _shape("hprev", hprev.shape[0], hprev.shape[1], N, H)
    _check_batch_sizes(batch_sizes, B, N)
    cdef Py_ssize_t rows = batch_sizes[0] if N else 0
    cdef bint team = threads > 1 and 1 < rows <= _PANEL_MAX_ROWS  # and pk.ptr
    cdef _Panels pk = _panels_for(rows, H, H, sizeof(floating), panels, batch_sizes.shape[0])
    cdef _Panels pk_ih = _proj_panels_for(N, I, H, sizeof(floating), panels)
    cdef _TeamJob job
    job.split = _forward_split(team, batch_sizes, I, H, H, sizeof(floating), y is not None,
                               pk.ptr, pk_ih.ptr)
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * H * (I + H))
            job.zero_start = _zero_start(B, H, &h0[0, 0], H, &w_hh[0, 0], I) if N else False
            memmove(&h[0, 0], &h0[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL and job.split == _BY_COLUMNS:
                _pack(H, H, &w_hh[0, 0], True, <floating*>pk.ptr)
            if pk_ih.ptr != NULL and job.split == _BY_COLUMNS:
                _pack_projection(I, H, &w_ih[0, 0], _c1(b_ih), H, _c1(b_hh), H,
                                 <floating*>pk_ih.ptr)
            if team and pk.ptr != NULL:
                job.T, job.N, job.R = batch_sizes.shape[0], N, gates.shape[0]
                job.isz, job.H, job.reverse, job.bs = I, H, reverse, &batch_sizes[0]
                job.cols, job.units, job.relu, job.cell = _split_at(H), _split_at(H), relu, _RNN
                job.x, job.w_ih, job.w_hh, job.w_pk = &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], pk.ptr
                job.w_ih_pk = pk_ih.ptr
                job.b_ih, job.b_hh, job.h, job.y = _c1(b_ih), _c1(b_hh), &h[0, 0], _p2(y)
                job.gates, job.hprev = &gates[0, 0], _p2(hprev)
                if floating is float:
                    lk_team_start(&job.team, threads, _fwd_worker_f, &job)
                else:
                    lk_team_start(&job.team, threads, _fwd_worker_d, &job)
                _forward_2t(&job, 0, &h[0, 0])
                lk_team_end(&job.team)
            else:
                _rnn_forward(batch_sizes.shape[0], &batch_sizes[0], reverse, relu, N, I, H,
                             &x[0, 0], &w_ih[0, 0], <floating*>pk_ih.ptr, &w_hh[0, 0],
                             <floating*>pk.ptr, _c1(b_ih), _c1(b_hh), &h[0, 0], _p2(y),
                             &gates[0, 0], gates.shape[0], _p2(hprev), job.zero_start)
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


def rnn_backward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                 const floating[:, ::1] w_hh, const int64_t[::1] batch_sizes,
                 bint reverse, bint relu, const floating[:, ::1] act,
                 const floating[:, ::1] hprev, const floating[:, ::1] dy,
                 const floating[:, ::1] dhn, floating[:, ::1] dh0, floating[:, ::1] dg,
                 floating[:, ::1] dx, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                 floating[::1] db_ih, floating[::1] db_hh, bint panels=True,
                 bint flush_denormals=False, int threads=1):
    """Backward of :func:`rnn_forward` (training mode): ``act`` is its ``gates``.

    Outputs ``dh0`` (B, H), ``dx`` (N, I), ``dw_ih`` (H, I), ``dw_hh`` (H, H),
    ``db_ih``/``db_hh`` (H) or None; workspace ``dg`` (N, H).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], H = w_ih.shape[0], B = dhn.shape[0]
    _check_dims(N, I, H, H)
    _shape("weight_ih", w_ih.shape[0], w_ih.shape[1], H, I)
    _shape("weight_hh", w_hh.shape[0], w_hh.shape[1], H, H)
    _shape("act", act.shape[0], act.shape[1], N, H)
    _shape("hprev", hprev.shape[0], hprev.shape[1], N, H)
    _shape("d_y", dy.shape[0], dy.shape[1], N, H)
    _shape("d_h_n", dhn.shape[0], dhn.shape[1], B, H)
    _shape("dh0", dh0.shape[0], dh0.shape[1], B, H)
    _shape("dg", dg.shape[0], dg.shape[1], N, H)
    _shape("dx", dx.shape[0], dx.shape[1], N, I)
    _shape("dw_ih", dw_ih.shape[0], dw_ih.shape[1], H, I)
    _shape("dw_hh", dw_hh.shape[0], dw_hh.shape[1], H, H)
    if db_ih is not None:
        _vec("db_ih", db_ih.shape[0], H)
    if db_hh is not None:
        _vec("db_hh", db_hh.shape[0], H)
    _check_batch_sizes(batch_sizes, B, N)
    cdef bint wgp = _wg_panels(panels, sizeof(floating))
    cdef Py_ssize_t rows = batch_sizes[0] if N else 0
    cdef bint team = threads > 1 and 1 < rows <= _PANEL_MAX_ROWS  # and pk.ptr
    cdef _Panels pk = _panels_for(rows, H, H, sizeof(floating), panels, batch_sizes.shape[0])
    cdef _Panels pk_dx = _sequence_panels_for(N, H, I, 0, sizeof(floating), panels)
    cdef _TeamJob job
    job.split = _backward_split(batch_sizes.shape[0] if N else 0,
                                &batch_sizes[0] if N else NULL, H, H, sizeof(floating))
    cdef unsigned csr = lk_denormals_flush() if flush_denormals else 0
    try:
        with nogil:
            _let_waiting_run(N * H * (I + H))
            memmove(&dh0[0, 0], &dhn[0, 0], B * H * sizeof(floating))
            if pk.ptr != NULL:
                _pack(H, H, &w_hh[0, 0], False, <floating*>pk.ptr)
            if pk_dx.ptr != NULL:
                _pack(H, I, &w_ih[0, 0], False, <floating*>pk_dx.ptr)
            if team and pk.ptr != NULL:
                job.T, job.N, job.isz, job.H = batch_sizes.shape[0], N, I, H
                job.reverse, job.bs, job.units, job.relu = reverse, &batch_sizes[0], _split_at(H), relu
                job.cell = _RNN
                job.x, job.w_ih, job.w_hh, job.w_pk = &x[0, 0], &w_ih[0, 0], &w_hh[0, 0], pk.ptr
                job.w_ih_pk, job.wg_panels = pk_dx.ptr, wgp
                job.gates, job.hprev, job.dy, job.h = &act[0, 0], &hprev[0, 0], &dy[0, 0], &dh0[0, 0]
                job.dgates, job.dx, job.dw_ih, job.dw_hh = &dg[0, 0], &dx[0, 0], &dw_ih[0, 0], &dw_hh[0, 0]
                job.db_ih = NULL if db_ih is None else &db_ih[0]
                job.db_hh = NULL if db_hh is None else &db_hh[0]
                if floating is float:
                    lk_team_start(&job.team, threads, _bwd_worker_f, &job)
                else:
                    lk_team_start(&job.team, threads, _bwd_worker_d, &job)
                _backward_2t(&job, 0, &dh0[0, 0])
                lk_team_end(&job.team)
            else:
                _rnn_backward(batch_sizes.shape[0], &batch_sizes[0], reverse, relu, N, I, H,
                              &x[0, 0], &w_ih[0, 0], <floating*>pk_dx.ptr, &w_hh[0, 0],
                              <floating*>pk.ptr, &act[0, 0],
                              &hprev[0, 0], &dy[0, 0], &dh0[0, 0], &dg[0, 0], &dx[0, 0],
                              &dw_ih[0, 0], &dw_hh[0, 0], NULL if db_ih is None else &db_ih[0],
                              NULL if db_hh is None else &db_hh[0], wgp)
    finally:
        if flush_denormals:
            lk_denormals_restore(csr)


# ---------------------------------------------------------------------------
# One dense step (LSTMCell, GRUCell, RNNCell).  A Python loop over a cell pays
# the argument handling on every call, so these entry points take plain
# objects and read their buffers directly (a fraction of the cost of typed
# memoryviews) and malloc their small workspace.
# ---------------------------------------------------------------------------

cdef struct _Buffers:
    Py_buffer views[10]
    int n       # views acquired so far (released by _release)
    char kind   # b'f' or b'd': the dtype of the first buffer, which all share


cdef int _take(_Buffers* bufs, object obj, object name, int ndim, Py_ssize_t d0,
               Py_ssize_t d1, bint writable, void** data) except -1:
    """Acquire ``obj``'s C-contiguous buffer; check dtype and shape (``-1``: any size)."""
    cdef Py_buffer* v = &bufs.views[bufs.n]
    cdef int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
    cdef char fmt
    if writable:
        flags |= PyBUF_WRITABLE
    try:
        PyObject_GetBuffer(obj, v, flags)
    except (ValueError, BufferError, TypeError) as exc:  # e.g. not C-contiguous
        raise ValueError(f"{name}: {exc}") from None
    bufs.n += 1
    fmt = v.format[0] if v.format != NULL and v.format[1] == 0 else 0
    if fmt == 0 or (fmt != bufs.kind if bufs.kind else fmt != b'f' and fmt != b'd'):
        raise ValueError(f"{name}: expected a float32 or float64 array of the input's dtype")
    bufs.kind = fmt
    if (v.ndim != ndim or (d0 >= 0 and v.shape[0] != d0)
            or (ndim == 2 and d1 >= 0 and v.shape[1] != d1)):
        got = tuple([v.shape[k] for k in range(v.ndim)])
        want = (d0, d1)[:ndim]
        raise ValueError(f"{name}: expected shape {want} (-1: any), got {got}")
    data[0] = v.buf
    return 0


cdef void _release(_Buffers* bufs) noexcept:
    cdef int k
    for k in range(bufs.n):
        PyBuffer_Release(&bufs.views[k])
    bufs.n = 0


cdef void* _workspace(char kind, Py_ssize_t n, bint poison) except NULL:
    """``n`` uninitialised values (NaN with ``poison``, a test hook); free() it."""
    cdef size_t item = sizeof(float) if kind == b'f' else sizeof(double)
    cdef void* ws = malloc(max(n, 1) * item)
    cdef Py_ssize_t k
    if ws == NULL:
        raise MemoryError()
    if poison:
        for k in range(n):
            if kind == b'f':
                (<float*>ws)[k] = NAN
            else:
                (<double*>ws)[k] = NAN
    return ws


cdef int _take_common(_Buffers* bufs, x, w_ih, w_hh, b_ih, b_hh, int gates,
                      Py_ssize_t* dims, void** data) except -1:
    """x (B, I), w_ih (gates*H, I), w_hh (gates*H, H), biases (gates*H) or None;
    ``dims`` <- B, I, H; ``data`` <- the five data pointers (NULL for a None bias)."""
    cdef Py_ssize_t g
    _take(bufs, x, "input", 2, -1, -1, False, &data[0])
    dims[0], dims[1] = bufs.views[0].shape[0], bufs.views[0].shape[1]
    _take(bufs, w_ih, "weight_ih", 2, -1, dims[1], False, &data[1])
    g = bufs.views[1].shape[0]
    if g % gates:
        raise ValueError(f"weight_ih: expected {gates}*hidden_size rows, got {g}")
    dims[2] = g // gates
    _take(bufs, w_hh, "weight_hh", 2, g, dims[2], False, &data[2])
    data[3] = data[4] = NULL
    if b_ih is not None:
        _take(bufs, b_ih, "bias_ih", 1, g, -1, False, &data[3])
    if b_hh is not None:
        _take(bufs, b_hh, "bias_hh", 1, g, -1, False, &data[4])
    _check_dims(dims[0], dims[1], g, dims[2])
    return 0


cdef int _run_step(_Buffers* bufs, int kind, Py_ssize_t* dims, void** d, void* h0,
                   void* c0, void* h, void* c, bint poison, bint blas) except -1:
    """The entry points' common tail: one step through :func:`_cell_compute` with a
    malloc'd workspace: the arithmetic of :class:`CellStep` up to ``_PANELS_MIN_ROWS``
    rows; more rows read the weights in place (packing them per call costs more than
    the panels save; CellStep keeps them packed).  ``blas``: BLAS products (threaded)."""
    cdef Py_ssize_t B = dims[0], I = dims[1], H = dims[2]
    cdef bint dbl = bufs.kind == b'd'
    cdef int via = _VIA_BLAS if blas else _step_via(dbl, B)
    cdef void* ws
    if via == _VIA_PANELS:
        via = _VIA_NT if lk_nt_pays(dbl, B) else _VIA_BLAS
    ws = _workspace(bufs.kind, _cell_workspace(kind, via, B, I, H), poison)
    try:
        with nogil:
            if dbl:
                _cell_compute(kind, via, B, I, H, <double*>d[0], <double*>d[1],
                              <double*>d[2], <double*>d[3], <double*>d[4], <double*>h0,
                              <double*>c0, <double*>h, <double*>c, <double*>ws, NULL, NULL)
            else:
                _cell_compute(kind, via, B, I, H, <float*>d[0], <float*>d[1],
                              <float*>d[2], <float*>d[3], <float*>d[4], <float*>h0,
                              <float*>c0, <float*>h, <float*>c, <float*>ws, NULL, NULL)
    finally:
        free(ws)
    return 0


def lstm_step(x, w_ih, w_hh, b_ih, b_hh, h0, c0, h, c, bint poison=False, bint blas=False):
    """One LSTM step without projection (``LSTMCell``), inference.

    ``x`` (B, I), ``w_ih`` (4H, I), ``w_hh`` (4H, H), ``b_ih``/``b_hh`` (4H) or
    None, ``h0``/``c0`` (B, H) -> written into ``h``/``c`` (B, H).  float32 or
    float64, one dtype, C-contiguous (else ValueError).  ``poison``: fill the
    internal workspace with NaN first (a test hook).  ``blas``: the products through
    BLAS (which may be threaded) rather than the few-row kernel.
    """
    cdef _Buffers bufs
    cdef Py_ssize_t dims[3]
    cdef void* d[9]
    bufs.n = 0
    bufs.kind = 0
    try:
        _take_common(&bufs, x, w_ih, w_hh, b_ih, b_hh, 4, dims, d)
        _take(&bufs, h0, "h0", 2, dims[0], dims[2], False, &d[5])
        _take(&bufs, c0, "c0", 2, dims[0], dims[2], False, &d[6])
        _take(&bufs, h, "h", 2, dims[0], dims[2], True, &d[7])
        _take(&bufs, c, "c", 2, dims[0], dims[2], True, &d[8])
        _run_step(&bufs, _K_LSTM, dims, d, d[5], d[6], d[7], d[8], poison, blas)
    finally:
        _release(&bufs)


def gru_step(x, w_ih, w_hh, b_ih, b_hh, h0, h, bint poison=False, bint blas=False):
    """One GRU step (``GRUCell``), inference: ``x`` (B, I), ``w_ih`` (3H, I),
    ``w_hh`` (3H, H), biases (3H) or None, ``h0`` (B, H) -> written into ``h``."""
    cdef _Buffers bufs
    cdef Py_ssize_t dims[3]
    cdef void* d[7]
    bufs.n = 0
    bufs.kind = 0
    try:
        _take_common(&bufs, x, w_ih, w_hh, b_ih, b_hh, 3, dims, d)
        _take(&bufs, h0, "h0", 2, dims[0], dims[2], False, &d[5])
        _take(&bufs, h, "h", 2, dims[0], dims[2], True, &d[6])
        _run_step(&bufs, _K_GRU, dims, d, d[5], NULL, d[6], NULL, poison, blas)
    finally:
        _release(&bufs)


def rnn_step(x, w_ih, w_hh, b_ih, b_hh, bint relu, h0, h, bint poison=False,
             bint blas=False):
    """One Elman step (``RNNCell``), inference: ``x`` (B, I), ``w_ih`` (H, I),
    ``w_hh`` (H, H), biases (H) or None, ``h0`` (B, H) -> written into ``h``."""
    cdef _Buffers bufs
    cdef Py_ssize_t dims[3]
    cdef void* d[7]
    bufs.n = 0
    bufs.kind = 0
    try:
        _take_common(&bufs, x, w_ih, w_hh, b_ih, b_hh, 1, dims, d)
        _take(&bufs, h0, "h0", 2, dims[0], dims[2], False, &d[5])
        _take(&bufs, h, "h", 2, dims[0], dims[2], True, &d[6])
        _run_step(&bufs, _K_RNN_RELU if relu else _K_RNN_TANH, dims, d, d[5], NULL, d[6],
                  NULL, poison, blas)
    finally:
        _release(&bufs)


# ---------------------------------------------------------------------------
# CellStep: the Python loop's step (LSTMCell/GRUCell/RNNCell.__call__).  One
# object per cell holds what does not change between steps (dtype, sizes, the
# cell's live parameter dict, a workspace), checks the arrays by reading the
# ndarray fields directly and allocates the outputs itself, so a step costs
# little more than its products.  Weights are read as they are at every step
# (never cached): an optimizer's in-place update is seen by the next step.
# ---------------------------------------------------------------------------

from cpython.object cimport PyObject
from cpython.dict cimport PyDict_GetItem
from cpython.weakref cimport PyWeakref_GetObject
from libc.string cimport memcmp, memset

import numpy as _np_module
cdef object np_ndarray = _np_module.ndarray

cdef extern from *:
    r"""
    /* ndarray's leading fields (PyArrayObject_fields in numpy/ndarraytypes.h, the
       same in NumPy 1.7+ and 2.x); CellStep checks them against a real array
       once (cellstep_layout_ok) before trusting them. */
    typedef struct {
        PyObject_HEAD
        char *data;
        int nd;
        Py_ssize_t *dimensions;
        Py_ssize_t *strides;
        PyObject *base;
        PyObject *descr;
        int flags;
    } lk_ndarray_fields;
    #define LK_NPY_C_CONTIGUOUS 0x0001
    #define LK_NPY_ALIGNED 0x0100
    #define LK_NPY_WRITEABLE 0x0400
    static inline char *lk_nd_data(PyObject *o) { return ((lk_ndarray_fields *)o)->data; }
    static inline int lk_nd_ndim(PyObject *o) { return ((lk_ndarray_fields *)o)->nd; }
    static inline Py_ssize_t lk_nd_dim(PyObject *o, int i) { return ((lk_ndarray_fields *)o)->dimensions[i]; }
    static inline Py_ssize_t lk_nd_stride(PyObject *o, int i) { return ((lk_ndarray_fields *)o)->strides[i]; }
    static inline PyObject *lk_nd_descr(PyObject *o) { return ((lk_ndarray_fields *)o)->descr; }
    static inline int lk_nd_flags(PyObject *o) { return ((lk_ndarray_fields *)o)->flags; }

    /* Few-row GEMM straight from the weights, two operand pairs at once:
       out[m, n] = (out | bias | 0) + a1[m, k1] @ w1[n, k1]^T + a2[m, k2] @ w2[n, k2]^T.
       A step's products are bound by reading the weights (batch <= 4) or by FMAs
       (more rows); BLAS re-packs the weights on every call and its per-row gemv
       reads them once per row, while packing them here for the panel kernel costs
       more than the product.  So each weight row is read in place (dot products
       along k in 32-byte vectors, MR batch rows x NB weight rows of accumulators,
       lanes summed once at the end), in blocks of LK_NT_JB weight rows kept in L1
       while every batch row passes.  No weight is cached between steps. */
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(LK_NT_SCALAR)
    typedef float lk_vf __attribute__((vector_size(32)));
    typedef double lk_vd __attribute__((vector_size(32)));
    typedef int lk_vi8 __attribute__((vector_size(32)));
    #  if defined(__clang__)
    #    define LK_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
             __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
    #    define LK_UNROLL _Pragma("unroll")
    #  else
    #    define LK_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
             __builtin_shuffle(a, b, (lk_vi8){i0, i1, i2, i3, i4, i5, i6, i7})
    #    define LK_UNROLL _Pragma("GCC unroll 8")
    #  endif
    /* s[c] = the sum of v[c]'s lanes, c < NB: pairs of vectors are interleaved and
       added (a transpose that adds), so NB sums cost ~NB shuffles, not NB*7 adds. */
    LK_INLINE void lk_hsum_f2(const lk_vf *v, float *s) {
        const lk_vf p = LK_SHUF8(v[0], v[1], 0, 8, 1, 9, 4, 12, 5, 13)
                      + LK_SHUF8(v[0], v[1], 2, 10, 3, 11, 6, 14, 7, 15);
        s[0] = (p[0] + p[4]) + (p[2] + p[6]);
        s[1] = (p[1] + p[5]) + (p[3] + p[7]);
    }
    LK_INLINE void lk_hsum_f4(const lk_vf *v, float *s) {
        const lk_vf p = LK_SHUF8(v[0], v[1], 0, 8, 1, 9, 4, 12, 5, 13)
                      + LK_SHUF8(v[0], v[1], 2, 10, 3, 11, 6, 14, 7, 15);
        const lk_vf q = LK_SHUF8(v[2], v[3], 0, 8, 1, 9, 4, 12, 5, 13)
                      + LK_SHUF8(v[2], v[3], 2, 10, 3, 11, 6, 14, 7, 15);
        /* p = [v0 v1 v0 v1 | v0 v1 v0 v1] partial sums, q the same for v2 v3 */
        const lk_vf r = LK_SHUF8(p, q, 0, 1, 8, 9, 4, 5, 12, 13)
                      + LK_SHUF8(p, q, 2, 3, 10, 11, 6, 7, 14, 15);
        s[0] = r[0] + r[4]; s[1] = r[1] + r[5]; s[2] = r[2] + r[6]; s[3] = r[3] + r[7];
    }
    LK_INLINE void lk_hsum_d2(const lk_vd *v, double *s) {
        s[0] = (v[0][0] + v[0][2]) + (v[0][1] + v[0][3]);
        s[1] = (v[1][0] + v[1][2]) + (v[1][1] + v[1][3]);
    }
    LK_INLINE void lk_hsum_d4(const lk_vd *v, double *s) { lk_hsum_d2(v, s); lk_hsum_d2(v + 2, s + 2); }
    LK_INLINE void lk_hsum_f8(const lk_vf *v, float *s) { lk_hsum_f4(v, s); lk_hsum_f4(v + 4, s + 4); }
    LK_INLINE void lk_hsum_d8(const lk_vd *v, double *s) { lk_hsum_d4(v, s); lk_hsum_d4(v + 4, s + 4); }

    /* MR rows of out[., j0:j0+NB] for all j0: dot products of a's rows with w's rows,
       over (a1, w1, k1) then (a2, w2, k2), started from bias (or out, or 0). */
    #define LK_NT_BLOCK(T, S, V, L, MR, NB)                                              \
    LK_INLINE void lk_nt_##S##MR##x##NB(int mr, Py_ssize_t n, const T *LK_RESTRICT a1, Py_ssize_t k1,\
            const T *LK_RESTRICT w1, const T *LK_RESTRICT a2, Py_ssize_t k2,              \
            const T *LK_RESTRICT w2, const T *LK_RESTRICT bias, int accumulate,           \
            T *LK_RESTRICT out, Py_ssize_t ldo) {                                         \
        for (Py_ssize_t j0 = 0; j0 < n; j0 += NB) {                                       \
            const Py_ssize_t nb = n - j0 < NB ? n - j0 : NB;                              \
            V acc[MR][NB];                                                                \
            T sums[NB];                                                                   \
            LK_UNROLL for (int r = 0; r < MR; r++)                                        \
                LK_UNROLL for (int c = 0; c < NB; c++) acc[r][c] = (V){0};                \
            for (int pair = 0; pair < 2; pair++) {                                        \
                const T *a = pair ? a2 : a1, *w = pair ? w2 : w1;                         \
                const Py_ssize_t k = pair ? k2 : k1, kv = k - k % L;                      \
                const T *wr[NB];                                                          \
                if (k == 0) continue;                                                     \
                LK_UNROLL for (int c = 0; c < NB; c++) wr[c] = w + (j0 + (c < nb ? c : nb - 1)) * k;\
                for (Py_ssize_t kk = 0; kk < kv; kk += L) {                               \
                    V av[MR], wv[NB];                                                     \
                    LK_UNROLL for (int r = 0; r < MR; r++) memcpy(&av[r], a + (r < mr ? r : mr - 1) * k + kk, sizeof(V));\
                    LK_UNROLL for (int c = 0; c < NB; c++) memcpy(&wv[c], wr[c] + kk, sizeof(V));\
                    LK_UNROLL for (int r = 0; r < MR; r++)                                \
                        LK_UNROLL for (int c = 0; c < NB; c++) acc[r][c] += av[r] * wv[c];\
                }                                                                         \
                if (kv < k) {  /* the tail of k goes into lane 0 */                       \
                    LK_UNROLL for (int r = 0; r < MR; r++)                                \
                        LK_UNROLL for (int c = 0; c < NB; c++) {                          \
                            T t = 0;                                                      \
                            for (Py_ssize_t kk = kv; kk < k; kk++) t += a[(r < mr ? r : mr - 1) * k + kk] * wr[c][kk];\
                            acc[r][c][0] += t;                                            \
                        }                                                                 \
                }                                                                         \
            }                                                                             \
            LK_UNROLL for (int r = 0; r < MR; r++) {                                      \
                T *o = out + r * ldo + j0;                                                \
                if (r >= mr) break;  /* a repeated row: computed, never stored */         \
                lk_hsum_##S##NB(acc[r], sums);                                            \
                LK_UNROLL for (int c = 0; c < NB; c++)                                    \
                    if (c < nb)                                                           \
                        o[c] = sums[c] + (accumulate ? o[c] : bias ? bias[j0 + c] : (T)0);\
            }                                                                             \
        }                                                                                 \
    }
    #else
    #define LK_NT_BLOCK(T, S, V, L, MR, NB)                                              \
    LK_INLINE void lk_nt_##S##MR##x##NB(int mr, Py_ssize_t n, const T *LK_RESTRICT a1, Py_ssize_t k1,\
            const T *LK_RESTRICT w1, const T *LK_RESTRICT a2, Py_ssize_t k2,              \
            const T *LK_RESTRICT w2, const T *LK_RESTRICT bias, int accumulate,           \
            T *LK_RESTRICT out, Py_ssize_t ldo) {                                         \
        for (Py_ssize_t j = 0; j < n; j++)                                                \
            for (int r = 0; r < mr; r++) {                                                \
                T s = accumulate ? out[r * ldo + j] : bias ? bias[j] : (T)0;              \
                for (Py_ssize_t kk = 0; kk < k1; kk++) s += a1[r * k1 + kk] * w1[j * k1 + kk];\
                for (Py_ssize_t kk = 0; kk < k2; kk++) s += a2[r * k2 + kk] * w2[j * k2 + kk];\
                out[r * ldo + j] = s;                                                     \
            }                                                                             \
    }
    #endif
    /* out[m, n] = (out if accumulate, else bias or 0) + a1[m, k1] @ w1[n, k1]^T
       + a2[m, k2] @ w2[n, k2]^T (k2 = 0: no second pair).  Four rows at a time;
       4 weight rows per block where AVX-512 gives 32 vector registers, else 2. */
    #define LK_DEFINE_NT(T, S, V, L)                                                      \
    LK_NT_BLOCK(T, S, V, L, 1, 4)                                                         \
    LK_NT_BLOCK(T, S, V, L, 1, 8)                                                         \
    LK_NT_BLOCK(T, S, V, L, 2, 8)                                                         \
    LK_NT_BLOCK(T, S, V, L, 2, 4)                                                         \
    LK_NT_BLOCK(T, S, V, L, 3, 2)                                                         \
    LK_NT_BLOCK(T, S, V, L, 3, 4)                                                         \
    LK_NT_BLOCK(T, S, V, L, 4, 2)                                                         \
    LK_NT_BLOCK(T, S, V, L, 4, 4)                                                         \
    LK_KERNEL void lk_nt_gemm_##S(Py_ssize_t m, Py_ssize_t n, const T *a1, Py_ssize_t k1,  \
            const T *w1, const T *a2, Py_ssize_t k2, const T *w2, const T *bias,          \
            int accumulate, T *out, Py_ssize_t ldo) {                                     \
        const int wide = lk_nt_wide();                                                    \
        /* weight rows in blocks of LK_NT_JB (kept in L1) outside, batch rows inside */   \
        for (Py_ssize_t j0 = 0; j0 < n; j0 += LK_NT_JB) {                                  \
            const Py_ssize_t nn = n - j0 < LK_NT_JB ? n - j0 : LK_NT_JB;                    \
            const T *v1 = w1 + j0 * k1, *v2 = w2 ? w2 + j0 * k2 : w2;                      \
            const T *bj = bias ? bias + j0 : bias;                                         \
            for (Py_ssize_t r0 = 0; r0 < m; r0 += 4) {                                     \
                const T *b1 = a1 + r0 * k1, *b2 = a2 ? a2 + r0 * k2 : a2;                  \
                T *o = out + r0 * ldo + j0;                                                \
                switch (m - r0 < 4 ? m - r0 : 4) {                                         \
                case 4:                                                                    \
                    if (wide) lk_nt_##S##4x4(4, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    else lk_nt_##S##4x2(4, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    break;                                                                 \
                case 3:                                                                    \
                    if (wide) lk_nt_##S##3x4(3, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    else lk_nt_##S##3x2(3, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    break;                                                                 \
                case 2:                                                                    \
                    if (wide) lk_nt_##S##2x8(2, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    else lk_nt_##S##2x4(2, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    break;                                                                 \
                default:                                                                   \
                    if (wide) lk_nt_##S##1x8(1, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    else lk_nt_##S##1x4(1, nn, b1, k1, v1, b2, k2, v2, bj, accumulate, o, ldo);\
                    break;                                                                 \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }
    #ifndef LK_NT_JB
    #define LK_NT_JB 32
    #endif
    static int lk_nt_wide(void) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
        return __builtin_cpu_supports("avx512f");
    #else
        return 0;
    #endif
    }
    LK_DEFINE_NT(float, f, lk_vf, 8)
    LK_DEFINE_NT(double, d, lk_vd, 4)

    /* Does lk_nt_gemm beat BLAS for a step of `rows` rows?  Measured on Zen 4
       (docs/performance.md, "Cell steps from Python"): with AVX-512 (32 vector
       registers: 4 weight rows per block) at batch 1-64 in float and double; with
       AVX2 only, in float up to 4 rows; elsewhere (no target clones, other
       compilers and CPUs) not measured: BLAS. */
    static int lk_nt_pays(int dbl, Py_ssize_t rows) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__GLIBC__) && !defined(LK_NO_CLONES)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return 1;
        return !dbl && rows <= 4 && __builtin_cpu_supports("avx2");
    #else
        (void)dbl; (void)rows;
        return 0;
    #endif
    }
    """
    char* lk_nd_data(PyObject* o) noexcept nogil
    int lk_nd_ndim(PyObject* o) noexcept nogil
    Py_ssize_t lk_nd_dim(PyObject* o, int i) noexcept nogil
    Py_ssize_t lk_nd_stride(PyObject* o, int i) noexcept nogil
    PyObject* lk_nd_descr(PyObject* o) noexcept nogil
    int lk_nd_flags(PyObject* o) noexcept nogil
    int LK_NPY_C_CONTIGUOUS, LK_NPY_ALIGNED, LK_NPY_WRITEABLE
    void lk_nt_gemm_f(Py_ssize_t m, Py_ssize_t n, const float* a1, Py_ssize_t k1,
                      const float* w1, const float* a2, Py_ssize_t k2, const float* w2,
                      const float* bias, int accumulate, float* out,
                      Py_ssize_t ldo) noexcept nogil
    void lk_nt_gemm_d(Py_ssize_t m, Py_ssize_t n, const double* a1, Py_ssize_t k1,
                      const double* w1, const double* a2, Py_ssize_t k2, const double* w2,
                      const double* bias, int accumulate, double* out,
                      Py_ssize_t ldo) noexcept nogil
    int lk_nt_pays(int dbl, Py_ssize_t rows) noexcept nogil


cdef enum:
    _K_LSTM = 0
    _K_GRU = 1
    _K_RNN_TANH = 2
    _K_RNN_RELU = 3


cdef enum:
    _VIA_BLAS = 0    # BLAS gemm (threaded when the policy gave threads)
    _VIA_NT = 1      # lk_nt_gemm: the weights read in place
    _VIA_PANELS = 2  # the panel kernel over the weights packed once (CellStep's cache)


cdef void _products(int via, Py_ssize_t m, Py_ssize_t n, const floating* a1, Py_ssize_t k1,
                    const floating* w1, const floating* a2, Py_ssize_t k2,
                    const floating* w2, const floating* bias, floating* out,
                    Py_ssize_t ldo, const floating* pk1, const floating* pk2) noexcept nogil:
    """``out[m, n] = bias + a1 @ w1^T + a2 @ w2^T`` (``a2`` NULL: no second pair; ``bias``
    NULL: 0), rows ``ldo`` apart, through ``via``; ``pk1``/``pk2``: ``w1^T``/``w2^T`` in
    panels (``_VIA_PANELS``; all ``n`` columns of ``w``, ``n`` the whole row)."""
    cdef Py_ssize_t r, j
    if via == _VIA_NT:
        if floating is float:
            lk_nt_gemm_f(m, n, a1, k1, w1, a2, k2 if a2 != NULL else 0, w2, bias, 0, out, ldo)
        else:
            lk_nt_gemm_d(m, n, a1, k1, w1, a2, k2 if a2 != NULL else 0, w2, bias, 0, out, ldo)
        return
    # over panels with biases, the first product stores bias + a1 w1^T (no pass filling
    # the rows first); without, rows of +0 are added to, as on BLAS's path (a stored
    # accumulator could be the -0 of an FMA whose product underflowed)
    if via == _VIA_PANELS and bias != NULL:
        _panel_gemm(m, n, k1, a1, k1, pk1, False, out, ldo, bias)
        if a2 != NULL:
            _panel_gemm(m, n, k2, a2, k2, pk2, True, out, ldo)
        return
    for r in range(m):
        for j in range(n):
            out[r * ldo + j] = 0 if bias == NULL else bias[j]
    if via == _VIA_PANELS:
        _panel_gemm(m, n, k1, a1, k1, pk1, True, out, ldo)
        if a2 != NULL:
            _panel_gemm(m, n, k2, a2, k2, pk2, True, out, ldo)
        return
    _gemm(False, True, <int>m, <int>n, <int>k1, 1, a1, <int>k1, w1, <int>k1, 1, out, <int>ldo)
    if a2 != NULL:
        _gemm(False, True, <int>m, <int>n, <int>k2, 1, a2, <int>k2, w2, <int>k2, 1, out,
              <int>ldo)


cdef inline const floating* _bias_sum(Py_ssize_t n, const floating* b1, const floating* b2,
                                      floating* room) noexcept nogil:
    """``b1 + b2`` over ``n`` values (either NULL: the other; both: NULL)."""
    cdef Py_ssize_t j
    if b1 == NULL or b2 == NULL:
        return b2 if b1 == NULL else b1
    for j in range(n):
        room[j] = b1[j] + b2[j]
    return room


cdef void _cell_compute(int kind, int via, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                        const floating* x, const floating* w_ih, const floating* w_hh,
                        const floating* b_ih, const floating* b_hh, const floating* h0,
                        const floating* c0, floating* h, floating* c, floating* ws,
                        const floating* pk_ih, const floating* pk_hh) noexcept nogil:
    """One step of a built-in cell into ``h`` (and ``c``).  ``h0``/``c0`` NULL: zero state
    (the recurrent product is skipped).  ``ws``: :func:`_cell_workspace` values; ``via``:
    how the products run (see :func:`_products`; ``pk_ih``/``pk_hh``: the weights in
    panels for ``_VIA_PANELS``)."""
    cdef Py_ssize_t G = (4 if kind == _K_LSTM else 3 if kind == _K_GRU else 1) * H, j
    cdef floating* gates = ws + 4 * H
    cdef floating* gh
    cdef const floating* bias
    if kind == _K_GRU and via == _VIA_PANELS:  # panels span all 3H columns: as the layer
        gh = gates + B * G
        for j in range(G):
            ws[j] = (0 if b_ih == NULL else b_ih[j]) + (0 if b_hh == NULL or j >= 2 * H
                                                       else b_hh[j])
        _products(via, B, G, x, I, w_ih, NULL, 0, NULL, ws, gates, G, pk_ih, NULL)
        if h0 != NULL:
            _products(via, B, G, h0, H, w_hh, NULL, 0, NULL, NULL, gh, G, pk_hh, NULL)
            memcpy(h, h0, B * H * sizeof(floating))
        else:
            memset(gh, 0, B * G * sizeof(floating))
            memset(h, 0, B * H * sizeof(floating))
    elif kind == _K_GRU:
        gh = gates + B * G
        # r, z: x W_ih^T + h W_hh^T + b_i + b_h in one pass; n: x W_in^T + b_in and
        # h W_hn^T apart (r multiplies the latter plus b_hn)
        bias = _bias_sum(2 * H, b_ih, b_hh, ws)
        _products(via, B, 2 * H, x, I, w_ih, h0, H, w_hh, bias, gates, G, NULL, NULL)
        _products(via, B, H, x, I, w_ih + 2 * H * I, NULL, 0, NULL,
                  b_ih + 2 * H if b_ih != NULL else NULL, gates + 2 * H, G, NULL, NULL)
        memset(gh, 0, B * G * sizeof(floating))
        if h0 != NULL:
            _products(via, B, H, h0, H, w_hh + 2 * H * H, NULL, 0, NULL, NULL, gh + 2 * H, G,
                      NULL, NULL)
            memcpy(h, h0, B * H * sizeof(floating))
        else:
            memset(h, 0, B * H * sizeof(floating))
    if kind == _K_GRU:
        if b_hh != NULL:
            bias = b_hh + 2 * H
        else:
            for j in range(H):
                ws[2 * H + j] = 0
            bias = ws + 2 * H
        _gru_rows(B, H, gates, gh, bias, h, NULL)
        return
    _products(via, B, G, x, I, w_ih, h0, H, w_hh, _bias_sum(G, b_ih, b_hh, ws), gates, G,
              pk_ih, pk_hh)
    if kind == _K_LSTM:
        if c0 != NULL:
            memcpy(c, c0, B * H * sizeof(floating))
        else:
            memset(c, 0, B * H * sizeof(floating))
        _lstm_rows(B, H, gates, c, h, NULL)
    else:
        _rnn_rows(B * H, gates, h, kind == _K_RNN_RELU, False)


cdef inline Py_ssize_t _cell_workspace(int kind, int via, Py_ssize_t B, Py_ssize_t I,
                                       Py_ssize_t H) noexcept nogil:
    """Values :func:`_cell_compute` needs: biases (4H), gates (B*G), GRU's h products (B*G)."""
    cdef Py_ssize_t G = (4 if kind == _K_LSTM else 3 if kind == _K_GRU else 1) * H
    return 4 * H + (2 if kind == _K_GRU else 1) * B * G


cdef struct _CellRows:  # rows of a cell step: the caller's, or those the helper computes
    int kind, via
    Py_ssize_t n, n_in, n_hid
    const void* x
    const void* w_ih
    const void* w_hh
    const void* b_ih
    const void* b_hh
    const void* h0
    const void* c0
    void* h
    void* c
    void* ws
    const void* pk_ih
    const void* pk_hh


cdef void* _cell_rows_f(void* arg) noexcept nogil:
    cdef _CellRows* r = <_CellRows*>arg
    _cell_compute(r.kind, r.via, r.n, r.n_in, r.n_hid, <const float*>r.x, <const float*>r.w_ih,
                  <const float*>r.w_hh, <const float*>r.b_ih, <const float*>r.b_hh,
                  <const float*>r.h0, <const float*>r.c0, <float*>r.h, <float*>r.c,
                  <float*>r.ws, <const float*>r.pk_ih, <const float*>r.pk_hh)
    return NULL


cdef void* _cell_rows_d(void* arg) noexcept nogil:
    cdef _CellRows* r = <_CellRows*>arg
    _cell_compute(r.kind, r.via, r.n, r.n_in, r.n_hid, <const double*>r.x, <const double*>r.w_ih,
                  <const double*>r.w_hh, <const double*>r.b_ih, <const double*>r.b_hh,
                  <const double*>r.h0, <const double*>r.c0, <double*>r.h, <double*>r.c,
                  <double*>r.ws, <const double*>r.pk_ih, <const double*>r.pk_hh)
    return NULL


cdef inline Py_ssize_t _cell_split_at(Py_ssize_t B) noexcept nogil:
    """The caller's rows of a step split with the helper: about half, whole 4-row blocks of
    the panel kernel (each share >= 2 rows, so no row takes the one-row loop, which sums in
    another order: the bits are those of one thread)."""
    return min(B - 2, ((B + 1) // 2 + 3) // 4 * 4)


cdef inline int _step_via(bint dbl, Py_ssize_t B) noexcept nogil:
    """How a step of ``B`` rows runs its products: ``lk_nt_gemm`` where it beats BLAS;
    from ``_PANELS_MIN_ROWS`` rows the panel kernel over packed weights (where panels
    pay), which CellStep keeps packed between steps (checked against a copy at every
    step); past ``_PANEL_MAX_ROWS`` rows BLAS, which the thread policy may give threads
    (up to 64 rows one thread of these kernels beat two of BLAS: docs/performance.md)."""
    if B > _PANEL_MAX_ROWS:
        return _VIA_BLAS
    if B >= _PANELS_MIN_ROWS and lk_panels_pay(dbl):
        return _VIA_PANELS
    return _VIA_NT if lk_nt_pays(dbl, B) else _VIA_BLAS


#: Rows from which a step's products run over packed weights: comparing the weights with
#: the copy they were packed from (~10 us for 384 KB) then costs less than the panel
#: kernel saves over lk_nt_gemm (docs/performance.md, "Cell steps from Python").
cdef Py_ssize_t _PANELS_MIN_ROWS = 32


cdef inline bint _plain(PyObject* a, PyObject* descr, Py_ssize_t d0, Py_ssize_t d1) noexcept:
    """Is ``a`` an aligned C-contiguous ndarray of ``descr`` and shape ``(d0, d1)``
    (``d1 < 0``: 1-D ``(d0,)``; ``d0 < 0``: any rows)?"""
    if lk_nd_descr(a) != descr or (lk_nd_flags(a) & (LK_NPY_C_CONTIGUOUS | LK_NPY_ALIGNED)) \
            != (LK_NPY_C_CONTIGUOUS | LK_NPY_ALIGNED):
        return False
    if d1 < 0:
        return lk_nd_ndim(a) == 1 and lk_nd_dim(a, 0) == d0
    return lk_nd_ndim(a) == 2 and (d0 < 0 or lk_nd_dim(a, 0) == d0) and lk_nd_dim(a, 1) == d1


def cellstep_layout_ok(a):
    """Do the ndarray fields CellStep reads agree with ``a`` (an ndarray)?  (Checked once.)"""
    cdef PyObject* p = <PyObject*>a
    if lk_nd_ndim(p) != a.ndim or <size_t>lk_nd_data(p) != a.__array_interface__["data"][0]:
        return False
    if lk_nd_descr(p) != <PyObject*>a.dtype:
        return False
    for i in range(a.ndim):
        if lk_nd_dim(p, i) != a.shape[i] or lk_nd_stride(p, i) != a.strides[i]:
            return False
    c = bool(lk_nd_flags(p) & LK_NPY_C_CONTIGUOUS)
    al = bool(lk_nd_flags(p) & LK_NPY_ALIGNED)
    w = bool(lk_nd_flags(p) & LK_NPY_WRITEABLE)
    return (c, al, w) == (a.flags.c_contiguous, a.flags.aligned, a.flags.writeable)


ctypedef int (*_get_threads_t)() noexcept nogil

#: What CellStep.__call__ returns when the arguments are the plain case but the thread
#: policy must size the core's BLAS around the step (``_threads.kernel``: the backend's
#: ``cell_step`` does, with the same arithmetic).
NEEDS_POLICY = False


cdef class CellStep:
    """``step(input, hx)``: one inference step of a built-in cell, or ``None`` when the
    arguments are not the plain case (the caller's checked path then handles them,
    errors included), or :data:`NEEDS_POLICY` when ``_threads.kernel`` would change the
    core's BLAS threads for this step (the caller runs it inside the policy instead).

    The plain case: ``input`` an ndarray ``(B, input_size)``, ``B >= 1``, ``hx``
    ``None`` or the state arrays ``(B, hidden_size)`` (an ndarray for GRU/RNN, a
    tuple of two for LSTM), every array and parameter aligned, C-contiguous and of
    the cell's dtype, the cell still on the backend this step was made for and that
    backend's ``cell_step`` not replaced (the step stands in for it).  Returns
    ``(h_1, c_1)`` for LSTM, else ``h_1``: new arrays.  Parameters are looked up in
    the cell's parameter dict at every step (assignments and in-place updates are
    seen); nothing the caller passes is written.
    """
    cdef int kind
    cdef Py_ssize_t n_in, n_hid, n_gate, row_work, wpt2
    cdef object params, owner, backend, dtype, config, calls, threads_globals, pools
    cdef object unneeded, empty, full, shape, backend_dict, cell_step
    cdef PyObject* descr
    cdef _get_threads_t blas_get
    cdef _get_threads_t numpy_get
    cdef bint no_pool, dbl
    cdef char* ws
    cdef size_t ws_bytes
    cdef bint busy
    # _VIA_PANELS: the weights as last packed (copy) and packed, valid while equal
    cdef char* wcopy
    cdef char* wpack
    cdef bint wvalid

    def __cinit__(self):
        self.ws = NULL
        self.ws_bytes = 0
        self.busy = False
        self.wcopy = self.wpack = NULL
        self.wvalid = False

    def __init__(self, int kind, Py_ssize_t input_size, Py_ssize_t hidden_size, dtype,
                 dict params, owner, backend, dict config, threads_module):
        """``kind``: 0 LSTM, 1 GRU, 2 RNN tanh, 3 RNN ReLU; ``params``: the cell's live
        parameter dict; ``owner``: the module (held weakly; its ``backend`` attribute must stay
        ``backend``); ``config``: a dict whose ``POISON_WORKSPACES`` entry poisons the
        outputs and workspace with NaN (a test hook); ``threads_module``: lstmkit._threads."""
        import numpy as np
        if kind < 0 or kind > 3:
            raise ValueError(f"kind: expected 0-3, got {kind}")
        _check_dims(1, input_size, 4 * hidden_size, hidden_size)
        self.kind = kind
        self.n_in, self.n_hid = input_size, hidden_size
        self.n_gate = (4 if kind == _K_LSTM else 3 if kind == _K_GRU else 1) * hidden_size
        self.row_work = self.n_gate * (input_size + hidden_size)
        self.dtype = np.dtype(dtype)
        if self.dtype != np.float32 and self.dtype != np.float64:
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.dbl = self.dtype == np.float64
        self.descr = <PyObject*>self.dtype
        import weakref
        # weakly: the module holds this step, which must not keep it (and its panels) alive
        self.owner = weakref.ref(owner)
        self.params, self.backend, self.config = params, backend, config
        self.backend_dict = vars(backend)
        self.cell_step = getattr(type(backend), "cell_step")
        self.empty, self.full = np.empty, np.full
        self.shape = None
        self.threads_globals = vars(threads_module)
        self.calls = threads_module._C
        self.unneeded = threads_module.kernel_unneeded
        self.wpt2 = 2 * threads_module.WORK_PER_THREAD
        self.pools = None
        probe = np.empty((2, 3), self.dtype)[:, :2]
        if not cellstep_layout_ok(probe) or not cellstep_layout_ok(np.empty((3, 2), self.dtype)):
            raise RuntimeError("this NumPy's ndarray layout is not the one CellStep reads")

    def __dealloc__(self):
        free(self.ws)
        free(self.wcopy)
        lk_block_free(self.wpack)

    cdef int _packed_weights(self, size_t item) except -1:
        """Room for the weights' copy and panels (allocated on the first ``_VIA_PANELS`` step)."""
        cdef Py_ssize_t G = self.n_gate
        if self.wcopy == NULL:
            self.wcopy = <char*>malloc(G * (self.n_in + self.n_hid) * item)
            self.wpack = <char*>lk_block_alloc((_packed_size(self.n_in, G, <float*>NULL)
                                            + _packed_size(self.n_hid, G, <float*>NULL)) * item)
            self.wvalid = False
            if self.wcopy == NULL or self.wpack == NULL:
                free(self.wcopy)
                lk_block_free(self.wpack)
                self.wcopy = self.wpack = NULL
                raise MemoryError()
        return 0

    cdef void _refresh_panels(self, const char* w_ih, const char* w_hh,
                              size_t item) noexcept nogil:
        """Repack whichever weight differs (bitwise) from the copy it was packed from: an
        optimizer's in-place update or a new array is seen by this step."""
        cdef Py_ssize_t G = self.n_gate, I = self.n_in, H = self.n_hid
        cdef Py_ssize_t n1 = _packed_size(I, G, <float*>NULL)
        cdef size_t b1 = G * I * item, b2 = G * H * item
        if not self.wvalid or memcmp(w_ih, self.wcopy, b1) != 0:
            memcpy(self.wcopy, w_ih, b1)
            if item == sizeof(double):
                _pack(I, G, <const double*>w_ih, True, <double*>self.wpack)
            else:
                _pack(I, G, <const float*>w_ih, True, <float*>self.wpack)
        if not self.wvalid or memcmp(w_hh, self.wcopy + b1, b2) != 0:
            memcpy(self.wcopy + b1, w_hh, b2)
            if item == sizeof(double):
                _pack(H, G, <const double*>w_hh, True, <double*>self.wpack + n1)
            else:
                _pack(H, G, <const float*>w_hh, True, <float*>self.wpack + n1)
        self.wvalid = True

    cdef int _gate(self, Py_ssize_t work) except -1:
        """1 when ``_threads.kernel(work)`` would change nothing (see its ``kernel_unneeded``),
        read without calling Python: the core pool's raw getter and ``_threads._C``."""
        cdef PyObject* pools = PyDict_GetItem(self.threads_globals, "_POOLS")
        if pools == NULL or <object>pools is None:
            return 0
        if <object>pools is not self.pools:
            self._refresh(<object>pools)
        if self.no_pool:
            return 1
        calls = self.calls
        if calls.active != 0:
            return 0
        if work >= self.wpt2:  # kernel() would ask decide(): 1 thread only under a ceiling of 1
            explicit = calls.explicit
            if explicit is None:
                if self.numpy_get == NULL:
                    return 1 if self.unneeded(work) else 0
                if self.numpy_get() > 1:
                    return 0
            elif explicit != 1:
                return 0
        if self.blas_get != NULL:
            return self.blas_get() == 1
        return 1 if self.unneeded(work) else 0

    cdef int _refresh(self, pools) except -1:
        import ctypes
        self.pools = pools
        self.no_pool = pools.set is None
        self.blas_get = self.numpy_get = NULL
        if not self.no_pool and isinstance(pools.get, ctypes._CFuncPtr):
            self.blas_get = <_get_threads_t><size_t>ctypes.cast(pools.get, ctypes.c_void_p).value
        if isinstance(pools.numpy_get, ctypes._CFuncPtr):
            self.numpy_get = <_get_threads_t><size_t>ctypes.cast(pools.numpy_get,
                                                                 ctypes.c_void_p).value
        return 0

    cdef char* _workspace(self, size_t nbytes, bint* own) except NULL:
        """This step's workspace (grown as needed), or a fresh one (``own``: free it) when
        another Python thread is using it."""
        cdef char* ws
        own[0] = self.busy
        if self.busy:
            ws = <char*>malloc(nbytes if nbytes else 1)
        else:
            if nbytes > self.ws_bytes:
                ws = <char*>malloc(nbytes)
                if ws != NULL:
                    free(self.ws)
                    self.ws, self.ws_bytes = ws, nbytes
            ws = self.ws
            self.busy = True
        if ws == NULL:
            raise MemoryError()
        return ws

    def __call__(self, input, hx=None):
        cdef PyObject* descr = self.descr
        cdef PyObject* x = <PyObject*>input
        cdef PyObject* h0 = NULL
        cdef PyObject* c0 = NULL
        cdef PyObject* w_ih
        cdef PyObject* w_hh
        cdef PyObject* b_ih
        cdef PyObject* b_hh
        cdef PyObject* found
        cdef Py_ssize_t B, H = self.n_hid, G = self.n_gate, nvals, k
        cdef Py_ssize_t n1 = _packed_size(self.n_in, self.n_gate, <float*>NULL)
        cdef size_t item
        cdef char* ws
        cdef bint own = False, poison
        cdef int via
        cdef int kind = self.kind
        cdef Py_ssize_t split = 0
        cdef _CellRows mine, rows
        cdef void* hd
        cdef void* cd = NULL
        ndarray = np_ndarray
        if type(input) is not ndarray or not _plain(x, descr, -1, self.n_in):
            return None
        B = lk_nd_dim(x, 0)
        if B < 1:
            return None
        if hx is not None:
            if kind == _K_LSTM:
                if type(hx) is not tuple or len(<tuple>hx) != 2:
                    return None
                h0 = <PyObject*>(<tuple>hx)[0]
                c0 = <PyObject*>(<tuple>hx)[1]
                if type(<object>h0) is not ndarray or type(<object>c0) is not ndarray \
                        or not _plain(h0, descr, B, H) or not _plain(c0, descr, B, H):
                    return None
            else:
                if type(hx) is not ndarray or not _plain(<PyObject*>hx, descr, B, H):
                    return None
                h0 = <PyObject*>hx
        found = PyWeakref_GetObject(self.owner)
        if <object>found is None or getattr(<object>found, "backend", None) is not self.backend:
            return None
        params = self.params
        w_ih = PyDict_GetItem(params, "weight_ih")
        w_hh = PyDict_GetItem(params, "weight_hh")
        b_ih = PyDict_GetItem(params, "bias_ih")
        b_hh = PyDict_GetItem(params, "bias_hh")
        if w_ih == NULL or w_hh == NULL or type(<object>w_ih) is not ndarray \
                or type(<object>w_hh) is not ndarray or not _plain(w_ih, descr, G, self.n_in) \
                or not _plain(w_hh, descr, G, H):
            return None
        if b_ih != NULL and (type(<object>b_ih) is not ndarray or not _plain(b_ih, descr, G, -1)):
            return None
        if b_hh != NULL and (type(<object>b_hh) is not ndarray or not _plain(b_hh, descr, G, -1)):
            return None
        if PyDict_GetItem(self.backend_dict, "cell_step") != NULL \
                or getattr(type(self.backend), "cell_step") is not self.cell_step:
            return None  # the backend's cell_step was replaced (a wrapper, a spy): it runs
        via = _step_via(self.dbl, B)
        # The thread policy sizes the core's BLAS: a step that calls no BLAS needs none
        if via == _VIA_BLAS and not self._gate(B * self.row_work):
            return NEEDS_POLICY
        found = PyDict_GetItem(self.config, "POISON_WORKSPACES")
        poison = found != NULL and bool(<object>found)
        shape = self.shape
        if shape is None or (<tuple>shape)[0] != B:
            shape = self.shape = (B, H)
        if poison:
            h = self.full(shape, NAN, self.dtype)
            c = self.full(shape, NAN, self.dtype) if kind == _K_LSTM else None
        else:
            h = self.empty(shape, self.dtype)
            c = self.empty(shape, self.dtype) if kind == _K_LSTM else None
        hd = lk_nd_data(<PyObject*>h)
        if c is not None:
            cd = lk_nd_data(<PyObject*>c)
        item = sizeof(double) if self.dbl else sizeof(float)
        # Over packed panels, rows may be shared with the core's helper thread (the
        # policy's split_threads, as for a layer; the helper only, never a thread started
        # for one step): it computes the last B - split rows into its own workspace.
        if via == _VIA_PANELS:
            found = PyDict_GetItem(self.config, "_split_threads")
            if found != NULL and (<object>found)(B * self.row_work) > 1:
                split = _cell_split_at(B)
        nvals = _cell_workspace(kind, via, B, self.n_in, H) + (4 * H if split else 0)
        ws = self._workspace(nvals * item, &own)
        try:
            if via == _VIA_PANELS:
                if own:  # another Python thread holds this step's workspace and panels
                    via = _VIA_NT if lk_nt_pays(self.dbl, B) else _VIA_BLAS
                    split = 0
                else:
                    self._packed_weights(item)
            if poison:
                for k in range(nvals):
                    if self.dbl:
                        (<double*>ws)[k] = NAN
                    else:
                        (<float*>ws)[k] = NAN
            with nogil:
                if via == _VIA_PANELS:
                    self._refresh_panels(lk_nd_data(w_ih), lk_nd_data(w_hh), item)
                mine.kind, mine.via, mine.n, mine.n_in, mine.n_hid = kind, via, B, self.n_in, H
                mine.x, mine.w_ih, mine.w_hh = lk_nd_data(x), lk_nd_data(w_ih), lk_nd_data(w_hh)
                mine.b_ih = lk_nd_data(b_ih) if b_ih != NULL else NULL
                mine.b_hh = lk_nd_data(b_hh) if b_hh != NULL else NULL
                mine.h0 = lk_nd_data(h0) if h0 != NULL else NULL
                mine.c0 = lk_nd_data(c0) if c0 != NULL else NULL
                mine.h, mine.c, mine.ws = hd, cd, ws
                mine.pk_ih, mine.pk_hh = self.wpack, self.wpack + n1 * item
                if split:  # the helper's rows: the same, from row `split` on
                    rows = mine
                    rows.n = B - split
                    rows.x = <const char*>mine.x + split * self.n_in * item
                    rows.h0 = <const char*>mine.h0 + split * H * item if h0 != NULL else NULL
                    rows.c0 = <const char*>mine.c0 + split * H * item if c0 != NULL else NULL
                    rows.h = <char*>hd + split * H * item
                    rows.c = <char*>cd + split * H * item if cd != NULL else NULL
                    rows.ws = ws + _cell_workspace(kind, via, split, self.n_in, H) * item
                    if lk_helper_post(_cell_rows_d if self.dbl else _cell_rows_f, &rows):
                        mine.n = split
                    else:
                        split = 0
                if self.dbl:
                    _cell_rows_d(&mine)
                else:
                    _cell_rows_f(&mine)
                if split:
                    lk_helper_wait()
        finally:
            if own:
                free(ws)
            else:
                self.busy = False
        return (h, c) if kind == _K_LSTM else h


# ---------------------------------------------------------------------------
# The workspace pool: the memory of a layer's caches and workspaces, kept for
# the next call of the same shape
# ---------------------------------------------------------------------------
#
# A training step allocates its caches (gates, states, tanh(c)), the
# backward's workspaces and the kernels' scratch (packed weights, the weight
# gradients' blocks) afresh each call.  Blocks that size are mmap'ed by malloc
# and unmapped on free, so every call faulted in and zeroed fresh pages: 22% of
# a step at T200 B8 H128 L2 bidirectional (84 ms against 66 with the memory
# kept), 6% at T100 B64 H256 L2.  They come from the pool in C (lk_pool_take,
# above) instead: freed blocks stay for the next call, at most `limit` bytes idle.

cdef extern from "Python.h":
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)

cdef enum:
    _NUMPY_DOMAIN = 389047  # tracemalloc sees a block in use as NumPy's own memory

cdef size_t _pool_cap = 0  # mirrors lk_pool.cap


cdef class _Block:
    """Pool memory as a writable byte buffer; back to the pool when the last array on it goes."""
    cdef void* ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer* buf, int flags):
        buf.buf = self.ptr
        buf.obj = self
        buf.len = self.size
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = NULL
        if flags & PyBUF_FORMAT:
            buf.format = b"B"
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer* buf):
        pass

    def __dealloc__(self):
        if self.ptr != NULL:
            PyTraceMalloc_Untrack(_NUMPY_DOMAIN, <size_t>self.ptr)
            lk_pool_give(self.ptr, <size_t>self.size)


def workspace(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` on pool memory (see the comment
    above :class:`_Block`): for a layer's caches and workspaces, never for what a caller keeps."""
    dt = _np_module.dtype(dtype)
    dims = (shape,) if _np_module.ndim(shape) == 0 else tuple(shape)
    count = 1
    for d in dims:
        count *= _operator.index(d)
    nbytes = count * dt.itemsize
    if nbytes < _POOL_MIN or _pool_cap == 0 or nbytes > _POOL_MAX:
        return _np_module.empty(shape, dt)
    cdef _Block blk = _Block.__new__(_Block)
    cdef size_t got
    blk.ptr = lk_pool_take(<size_t>nbytes, &got)
    blk.size = <Py_ssize_t>got
    if blk.ptr == NULL:
        raise MemoryError(f"workspace of {nbytes} bytes")
    PyTraceMalloc_Track(_NUMPY_DOMAIN, <size_t>blk.ptr, <size_t>blk.size)
    blk.shape[0], blk.strides[0] = blk.size, 1
    return _np_module.frombuffer(blk, dtype=dt, count=count).reshape(dims)


#: Smaller requests come from NumPy: malloc keeps such blocks on its heap anyway.
_POOL_MIN = 1 << 18
#: Larger ones too (NumPy raises its own error for sizes no machine has).
_POOL_MAX = 1 << 62


def workspace_pool(limit=None):
    """``(idle bytes, idle blocks, limit)`` of the pool; with ``limit``, first set the most idle
    bytes it keeps (0: none; idle blocks over the limit are freed now)."""
    global _pool_cap
    cdef size_t idle
    cdef int n
    if limit is not None:
        if isinstance(limit, bool) or not hasattr(limit, "__index__") or not 0 <= limit <= _POOL_MAX:
            raise ValueError(f"workspace_pool: limit must be a non-negative integer of bytes "
                             f"(at most 2**62), got {limit!r}")
        _pool_cap = _operator.index(limit)
    lk_pool_limit(limit is not None, _pool_cap, &idle, &n)
    return idle, n, _pool_cap


def _default_pool_limit():
    """512 MiB, at most 1/16 of the machine's memory."""
    try:
        phys = _os.sysconf("SC_PAGE_SIZE") * _os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        phys = 8 << 30
    return int(min(512 << 20, phys // 16))


import operator as _operator
import os as _os
lk_pool_init()
lk_helper_init()
workspace_pool(_default_pool_limit())


# ---------------------------------------------------------------------------
# Test twins of the C helpers
# ---------------------------------------------------------------------------

def tanh_array(const floating[::1] x, floating[::1] out):
    """``out[:] = tanh(x)`` with the kernels' vectorised tanh (test twin)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out: expected the shape of x")
    with nogil:
        if floating is float:
            lk_tanh_arr_f(x.shape[0], &x[0], &out[0])
        else:
            lk_tanh_arr_d(x.shape[0], &x[0], &out[0])


def sigmoid_array(const floating[::1] x, floating[::1] out):
    """``out[:] = sigmoid(x) = tanh(x/2)/2 + 1/2`` with the kernels' tanh (test twin)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out: expected the shape of x")
    with nogil:
        if floating is float:
            lk_sigmoid_arr_f(x.shape[0], &x[0], &out[0])
        else:
            lk_sigmoid_arr_d(x.shape[0], &x[0], &out[0])


def gemm(bint trans_a, bint trans_b, floating alpha, const floating[:, ::1] a,
         const floating[:, ::1] b, floating beta, floating[:, ::1] c):
    """``c[:] = alpha * op(a) @ op(b) + beta * c`` through the row-major BLAS wrapper
    (test twin)."""
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    if kb != k:
        raise ValueError(f"inner dimensions differ: {k} and {kb}")
    _shape("c", c.shape[0], c.shape[1], m, n)
    _check_dims(m, k, n, 1)
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, alpha, &a[0, 0], max(1, a.shape[1]), &b[0, 0],
              max(1, b.shape[1]), beta, &c[0, 0], max(1, c.shape[1]))


def panel_gemm(const floating[:, ::1] a, const floating[:, ::1] b, bint trans_b,
               floating[:, ::1] out, bint accumulate=False, int repeat=1):
    """``out (+)= a @ op(b)`` through the packed-panel small-GEMM kernel (test twin):
    ``a`` (m, k), ``b`` (k, n), or (n, k) with ``trans_b``.  ``repeat``: run the
    kernel that many times on one packing (for timing it alone)."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef floating* packed
    cdef Py_ssize_t i, j, rep
    if kb != k:
        raise ValueError(f"inner dimensions differ: {k} and {kb}")
    _shape("out", out.shape[0], out.shape[1], m, n)
    if m == 0 or n == 0:
        return
    packed = <floating*>lk_block_alloc(max(1, _packed_size(k, n, &out[0, 0])) * sizeof(floating))
    if packed == NULL:
        raise MemoryError()
    try:
        with nogil:
            if k == 0:
                for i in range(m):
                    for j in range(n):
                        if not accumulate:
                            out[i, j] = 0
            else:
                _pack(k, n, &b[0, 0], trans_b, packed)
                for rep in range(max(1, repeat)):
                    _panel_gemm(m, n, k, &a[0, 0], k, packed, accumulate, &out[0, 0], n)
    finally:
        lk_block_free(packed)


def nt_gemm(const floating[:, ::1] a, const floating[:, ::1] w, floating[:, ::1] out,
            bint accumulate=False, int repeat=1):
    """``out (+)= a @ w.T`` through the cell steps' few-row kernel (test twin): ``a``
    (m, k), ``w`` (n, k).  ``repeat``: run it that many times (for timing it alone)."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = w.shape[0], rep
    if w.shape[1] != k:
        raise ValueError(f"inner dimensions differ: {k} and {w.shape[1]}")
    _shape("out", out.shape[0], out.shape[1], m, n)
    if m == 0 or n == 0 or k == 0:
        if not accumulate:
            out[:, :] = 0
        return
    with nogil:
        for rep in range(max(1, repeat)):
            if floating is float:
                lk_nt_gemm_f(m, n, &a[0, 0], k, &w[0, 0], NULL, 0, NULL, NULL, accumulate,
                             &out[0, 0], n)
            else:
                lk_nt_gemm_d(m, n, &a[0, 0], k, &w[0, 0], NULL, 0, NULL, NULL, accumulate,
                             &out[0, 0], n)


def _stall_worker_at(Py_ssize_t step, Py_ssize_t steps=-1):
    """Test hook: the second thread of a two-thread loop sleeps 5 ms before each of
    ``steps`` time steps (-1: all) from ``step`` on (loop order; step -1: never), as
    a thread descheduled on a busy machine would.  Returns how many two-thread loops
    have started so far, how many of them gave up on their second thread and how many
    forwards took :func:`_forward_units` and how many loops (forward or backward) went by
    rows (:func:`_forward_rows`, :func:`_backward_rows`)."""
    global lk_stall_step, lk_stall_steps
    lk_stall_step, lk_stall_steps = step, steps
    return lk_team_count, lk_solo_count, _units_count, _rows_count


def _helper_threads():
    """Test hooks: how many times the core's kept worker thread (lk_helper) has been started
    in this process (a call reuses it while it lives; it exits after idling a second), and
    how many calls have been posted to it (two-thread layer calls, shared cell steps)."""
    return lk_helper_count, lk_helper_posts()


def projection_panels_used(dtype):
    """Whether the whole-sequence products (the input projection, the backward's ``dx``
    for LSTM and RNN, the weight gradients) take the panel kernel for ``dtype`` now: this
    CPU and build allow it and the test switch (:func:`_use_projection_panels`) is on."""
    import numpy as _np
    return bool(_PROJ_PANELS and lk_proj_panels_pay(_np.dtype(dtype) == _np.float64))


def lk_panels_used(dtype):
    """Whether this CPU and build take the packed-panel path (and so the two-thread
    loops) for ``dtype`` (float32 or float64)."""
    import numpy as _np
    return bool(lk_panels_pay(_np.dtype(dtype) == _np.float64))
