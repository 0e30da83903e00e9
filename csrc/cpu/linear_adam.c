/* The fused Linear-weight Adam step (lv_linear_adam_step, csrc/cpu/kernels.h): the weight
 * gradient of a tile of w (4 rows x 1024 columns) computed into cache (an AVX-512 or AVX2 kernel
 * on packed operands), its L1-regularizer term and Adam applied to the tile at once, while the
 * next tile's w, m and v are prefetched: one pass over w, m and v per
 * step, the gradient GEMM's arithmetic hidden under that memory traffic. The unfused path instead
 * writes the gradient GEMM into a zeroed full-size buffer, runs the L1 term's abs / sum /
 * broadcast / sign passes, accumulates the two gradients, and then Adam's own pass.
 *
 * Bits: each gradient element is the dot product over the batch as one chain of fused
 * multiply-adds from 0 in batch order (with FMA hardware; multiply then add without), which is
 * what OpenBLAS's SGEMM kernels compute for the unfused backward (tests/test_fused_step.py checks
 * the two loops give the same weights); the gradient is dW + the L1 term as autograd's
 * accumulation adds them; Adam is lv_f_adam with lv_adam_step's constants, compiled without
 * floating-point contraction like it. */
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "formulas.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* a tile: TR rows x TC columns of w (TC a multiple of LV_SUM_SEG and of the packing width) */
#define TR 4
#define TC 1024

/* per thread: the tile's gradient, the packed block of x and the packed gradients of a tile */
static size_t ws_thread(int64_t M) { return (size_t)TR * TC + (size_t)(M + 1) * TC + (size_t)(M + 1) * TR; }
size_t lv_linear_adam_ws_floats(int64_t M) { return (size_t)lv_num_threads() * ws_thread(M); }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LVIV_NO_CLONES)
/* AVX2 clone without floating-point contraction (ISO C's default, as for lv_adam_step) */
#define ADAM_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
/* the AVX-512 gradient kernel, chosen at run time */
#define LV_AVX512 1
/* O3 so that the multiply-adds contract to FMAs at any build level (the sanitizer build's -O1) */
#define GRAD512 __attribute__((target("arch=x86-64-v4"), optimize("O3", "fp-contract=fast", "no-tree-slp-vectorize")))
#define GRAD256 __attribute__((target_clones("arch=x86-64-v3", "default"), \
                               optimize("O3", "fp-contract=fast", "no-tree-slp-vectorize")))
#else
#define ADAM_HOT
#define LV_AVX512 0
#define GRAD256
#endif

/* Prefetch the next tile (pn rows of pc floats at stride K of w, m, v; pw NULL: none), the part
 * for chunk c of the current tile's chunks of `width` columns: the lines of columns [c, c+width). */
static inline __attribute__((always_inline)) void prefetch_part(const float *pw, const float *pm, const float *pv,
                                                                int64_t K, int64_t pn, int64_t pc, int64_t c,
                                                                int64_t width) {
  if (!pw) return;
  for (int64_t k = c; k < c + width && k < pc; k += 16)
    for (int64_t r = 0; r < pn; r++) {
      __builtin_prefetch(pw + r * K + k, 1, 3);
      __builtin_prefetch(pm + r * K + k, 1, 3);
      __builtin_prefetch(pv + r * K + k, 1, 3);
    }
}

/* d (rn x cn, leading dimension TC) = the tile's gradient from the packed operands: gp (M x TR,
 * the tile rows' output gradients, row i = batch row i) and xp (chunks of M x 16 columns: the
 * block's inputs), each element one contracted chain acc = acc + g * x from 0 in batch order. */
GRAD256 static void tile_grad(int64_t M, const float *gp, const float *xp, int64_t rn, int64_t cn,
                                float *d, const float *pw, const float *pm, const float *pv, int64_t K,
                                int64_t pn, int64_t pc) {
  for (int64_t c = 0; c < cn; c += 16) {
    prefetch_part(pw, pm, pv, K, pn, pc, c, 16);
    const float *xc = xp + c * M;
    lv_v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    for (int64_t i = 0; i < M; i++) {
      lv_v8f x0 = lv_ld8(xc + i * 16), x1 = lv_ld8(xc + i * 16 + 8);
      const float *g = gp + i * TR;
      lv_v8f g0 = lv_bc8(g[0]), g1 = lv_bc8(g[1]), g2 = lv_bc8(g[2]), g3 = lv_bc8(g[3]);
      a0 += g0 * x0; b0 += g0 * x1;
      a1 += g1 * x0; b1 += g1 * x1;
      a2 += g2 * x0; b2 += g2 * x1;
      a3 += g3 * x0; b3 += g3 * x1;
    }
    /* all TR rows and 16 columns (d has TR rows of TC, a multiple of 16): the caller reads only
     * rn rows and cn columns */
    lv_st8(d + c, a0); lv_st8(d + c + 8, b0);
    lv_st8(d + TC + c, a1); lv_st8(d + TC + c + 8, b1);
    lv_st8(d + 2 * TC + c, a2); lv_st8(d + 2 * TC + c + 8, b2);
    lv_st8(d + 3 * TC + c, a3); lv_st8(d + 3 * TC + c + 8, b3);
  }
}

#if LV_AVX512
typedef float v16f __attribute__((vector_size(64)));
typedef float v16fu __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64)));
/* the same with 32-column chunks in 16-float vectors (xp in chunks of M x 32) */
GRAD512 static void tile_grad512(int64_t M, const float *gp, const float *xp, int64_t rn, int64_t cn,
                                 float *d, const float *pw, const float *pm, const float *pv, int64_t K,
                                 int64_t pn, int64_t pc) {
  for (int64_t c = 0; c < cn; c += 32) {
    prefetch_part(pw, pm, pv, K, pn, pc, c, 32);
    const float *xc = xp + c * M;
    v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    for (int64_t i = 0; i < M; i++) {
      v16f x0 = *(const v16fu *)(xc + i * 32), x1 = *(const v16fu *)(xc + i * 32 + 16);
      const float *g = gp + i * TR;
      v16f g0 = __builtin_shuffle((v16f){g[0]}, (v16i){0}), g1 = __builtin_shuffle((v16f){g[1]}, (v16i){0});
      v16f g2 = __builtin_shuffle((v16f){g[2]}, (v16i){0}), g3 = __builtin_shuffle((v16f){g[3]}, (v16i){0});
      a0 += g0 * x0; b0 += g0 * x1;
      a1 += g1 * x0; b1 += g1 * x1;
      a2 += g2 * x0; b2 += g2 * x1;
      a3 += g3 * x0; b3 += g3 * x1;
    }
    *(v16fu *)(d + c) = a0; *(v16fu *)(d + c + 16) = b0;
    *(v16fu *)(d + TC + c) = a1; *(v16fu *)(d + TC + c + 16) = b1;
    *(v16fu *)(d + 2 * TC + c) = a2; *(v16fu *)(d + 2 * TC + c + 16) = b2;
    *(v16fu *)(d + 3 * TC + c) = a3; *(v16fu *)(d + 3 * TC + c + 16) = b3;
  }
}
#endif

/* pack the block x[:, c0:c0+cn] (row stride K) as chunks of M x width columns (the last chunk
 * zero-padded) */
static void pack_x(int64_t M, const float *x, int64_t K, int64_t cn, int64_t width, float *xp) {
  for (int64_t c = 0; c < cn; c += width) {
    int64_t n = cn - c < width ? cn - c : width;
    float *o = xp + c * M;
    for (int64_t i = 0; i < M; i++) {
      memcpy(o + i * width, x + i * K + c, (size_t)n * sizeof(float));
      if (n < width) memset(o + i * width + n, 0, (size_t)(width - n) * sizeof(float));
    }
  }
}

/* pack gy[:, r0:r0+rn] (row stride O) as M x TR (missing rows zero) */
static void pack_gy(int64_t M, const float *gy, int64_t O, int64_t rn, float *gp) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t r = 0; r < TR; r++) gp[i * TR + r] = r < rn ? gy[i * O + r] : 0.f;
}

/* one row of a tile: n elements of w, m, v with their Linear gradient d */
ADAM_HOT static void adam_row(int64_t n, float *restrict w, float *restrict m, float *restrict v,
                              const float *restrict d, int has_l1, float l1g, lv_adam_consts c,
                              float b1, float b2, float eps, float wd) {
  if (has_l1) {
    for (int64_t j = 0; j < n; j++) {
      float p = w[j];
      float g = d[j] + lv_f_unop_grad(LV_ABS, p, fabsf(p), l1g, 0.f, 0.f);
      lv_f_adam(&w[j], g, &m[j], &v[j], NULL, c, b1, b2, eps, wd);
    }
  } else {
    for (int64_t j = 0; j < n; j++) lv_f_adam(&w[j], d[j], &m[j], &v[j], NULL, c, b1, b2, eps, wd);
  }
}

int lv_linear_adam_step(int64_t O, int64_t K, int64_t M, const float *gy, const float *x, float *w,
                        float *m, float *v, int has_l1, float l1g, const lv_adam_attr *a, float *ws,
                        double *segsum, double *abs_sum) {
  if (O < 0 || K < 0 || M < 0 || a->step < 1 || a->amsgrad || a->maximize || (gy && M && !x) || !ws)
    return lv_set_error(LV_EVALUE, "linear_adam_step: bad arguments (O %lld, K %lld, M %lld, step %lld)",
                        (long long)O, (long long)K, (long long)M, (long long)a->step);
  int sums = abs_sum && segsum && K % LV_SUM_SEG == 0;
  if (abs_sum) *abs_sum = NAN;
  if (O == 0 || K == 0) { if (sums) *abs_sum = 0; return 0; }
  lv_adam_consts c = lv_f_adam_consts(a->lr, a->beta1, a->beta2, a->step);
  float b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
  int64_t ngroups = (O + TR - 1) / TR, ncb = (K + TC - 1) / TC;
  int T = omp_in_parallel() ? 1 : lv_num_threads();
  if (T > ngroups) T = (int)ngroups;
  if ((double)O * (double)K < 65536) T = 1;
#if LV_AVX512
  int wide = __builtin_cpu_supports("x86-64-v4");
#else
  int wide = 0;
#endif
  int64_t width = wide ? 32 : 16;
#pragma omp parallel num_threads(T)
  {
    /* each thread its rows (whole groups of TR); column blocks outer, so that the block of x
     * stays in cache over the thread's rows */
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t rs = ngroups * t / nt * TR, re = ngroups * (t + 1) / nt * TR;
    if (re > O) re = O;
    float *d = ws + (size_t)t * ws_thread(M), *xp = d + TR * TC, *gp = xp + (M + 1) * TC;
    for (int64_t cb = 0; cb < ncb && rs < re; cb++) {
      int64_t c0 = cb * TC, cn = K - c0 < TC ? K - c0 : TC;
      if (gy && M) pack_x(M, x + c0, K, cn, width, xp);
      for (int64_t r0 = rs; r0 < re; r0 += TR) {
        int64_t rn = re - r0 < TR ? re - r0 : TR;
        /* the next tile of this thread, to prefetch */
        int64_t nr = r0 + TR, nc = c0;
        if (nr >= re) { nr = rs; nc = c0 + TC; }
        const float *pw = NULL, *pm = NULL, *pv = NULL;
        int64_t pn = 0, pc = 0;
        if (nc < K) {
          pw = w + nr * K + nc; pm = m + nr * K + nc; pv = v + nr * K + nc;
          pn = re - nr < TR ? re - nr : TR; pc = K - nc < TC ? K - nc : TC;
        }
        if (gy && M) {
          pack_gy(M, gy + r0, O, rn, gp);
#if LV_AVX512
          if (wide) tile_grad512(M, gp, xp, rn, cn, d, pw, pm, pv, K, pn, pc);
          else
#endif
          tile_grad(M, gp, xp, rn, cn, d, pw, pm, pv, K, pn, pc);
        } else {
          for (int64_t r = 0; r < rn; r++) memset(d + r * TC, 0, (size_t)cn * sizeof(float));
        }
        for (int64_t r = 0; r < rn; r++) {
          float *wr = w + (r0 + r) * K + c0;
          adam_row(cn, wr, m + (r0 + r) * K + c0, v + (r0 + r) * K + c0, d + r * TC, has_l1, l1g, c, b1,
                   b2, eps, wd);
          if (sums)
            for (int64_t j = 0; j < cn; j += LV_SUM_SEG)
              segsum[((r0 + r) * K + c0 + j) / LV_SUM_SEG] = lv_sum_seg(wr + j, LV_SUM_SEG, 1);
        }
      }
    }
  }
  if (sums) {
    double s = 0;
    for (int64_t k = 0, n = O * K / LV_SUM_SEG; k < n; k++) s += segsum[k];
    *abs_sum = s;
  }
  return 0;
}
