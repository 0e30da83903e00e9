/* BatchNorm (per channel over N and HW) and fused BatchNorm + ELU(1), forward and backward.
 * Vectorised: sums run in BN_V8 x 8 interleaved float lanes per plane, reduced by a fixed tree,
 * and accumulated over the planes in double, so every result is independent of the thread count
 * and bit-identical run to run.
 * Training statistics: one pass over x; each plane's mean and squared deviations (the second visit
 * of a plane is from L1) are merged over the planes by lv_f_var_merge (no E[x^2] - E[x]^2
 * cancellation). Normalisation and ELU are one pass; the backward is one reduction pass (the sums
 * of gz and gz * (x - mean), gz = gy * elu'(z) recomputed from the saved output) and one apply pass. */
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "formulas.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define BN_V8 4              /* vector accumulators per sum */
#define BN_L (8 * BN_V8)     /* floats per step */

static int bn_check(const char *who, int N, int C, int HW, const void *x, const void *y) {
  if (N < 1 || C < 1 || HW < 1 || !x || !y) {
    lv_set_error(LV_EVALUE, "%s: bad arguments (N %d, C %d, HW %d, buffers %s)", who, N, C, HW,
                 (!x || !y) ? "NULL" : "ok");
    return -1;
  }
  return 0;
}

/* the BN_V8 vector partial sums in a fixed tree */
static inline __attribute__((always_inline)) float acc_sum(const lv_v8f *a) {
  return lv_hsum8((a[0] + a[1]) + (a[2] + a[3]));
}

/* one plane (n floats): its mean and the sum of squared deviations from that mean */
LV_HOT static void plane_stats(const float *restrict x, int n, float *mean, float *m2) {
  int n0 = n - n % BN_L;
  lv_v8f a[BN_V8] = {{0}};
  for (int i = 0; i < n0; i += BN_L)
    for (int v = 0; v < BN_V8; v++) a[v] += lv_ld8(x + i + 8 * v);
  float s = acc_sum(a);
  for (int i = n0; i < n; i++) s += x[i];
  float m = s / (float)n;
  lv_v8f q[BN_V8] = {{0}}, mv = lv_bc8(m);
  for (int i = 0; i < n0; i += BN_L)
    for (int v = 0; v < BN_V8; v++) {
      lv_v8f d = lv_ld8(x + i + 8 * v) - mv;
      q[v] += d * d;
    }
  float t = acc_sum(q);
  for (int i = n0; i < n; i++) { float d = x[i] - m; t += d * d; }
  *mean = m;
  *m2 = t;
}

/* y = x * a + b, then ELU(1) if act */
LV_HOT static void plane_affine(const float *x, float *y, int n, float a, float b, int act) {
  if (act)
    for (int i = 0; i < n; i++) y[i] = lv_f_elu1_fast(x[i] * a + b);
  else
    for (int i = 0; i < n; i++) y[i] = x[i] * a + b;
}

/* s1 = sum gz, s2 = sum gz * (x - mu) over one plane; gz = gy * elu'(z) from the saved y, or gy */
LV_HOT static void plane_bwd_sums(const float *restrict x, const float *restrict y, const float *restrict gy,
                                  int n, float mu, float *s1, float *s2) {
  int n0 = n - n % BN_L;
  lv_v8f a[BN_V8] = {{0}}, b[BN_V8] = {{0}}, mv = lv_bc8(mu);
  float t1, t2;
  if (y) {
    for (int i = 0; i < n0; i += BN_L) {
      float g[BN_L];
      for (int l = 0; l < BN_L; l++) g[l] = lv_f_elu_grad(y[i + l] > 0.f, y[i + l], gy[i + l], 1.f);
      for (int v = 0; v < BN_V8; v++) {
        lv_v8f gv = lv_ld8(g + 8 * v);
        a[v] += gv;
        b[v] += gv * (lv_ld8(x + i + 8 * v) - mv);
      }
    }
    t1 = acc_sum(a), t2 = acc_sum(b);
    for (int i = n0; i < n; i++) {
      float g = lv_f_elu_grad(y[i] > 0.f, y[i], gy[i], 1.f);
      t1 += g;
      t2 += g * (x[i] - mu);
    }
  } else {
    for (int i = 0; i < n0; i += BN_L)
      for (int v = 0; v < BN_V8; v++) {
        lv_v8f gv = lv_ld8(gy + i + 8 * v);
        a[v] += gv;
        b[v] += gv * (lv_ld8(x + i + 8 * v) - mv);
      }
    t1 = acc_sum(a), t2 = acc_sum(b);
    for (int i = n0; i < n; i++) { t1 += gy[i]; t2 += gy[i] * (x[i] - mu); }
  }
  *s1 = t1;
  *s2 = t2;
}

/* gx += k * (gz - mg - (x - mu) * is * mgx) */
LV_HOT static void plane_bwd_apply(const float *restrict x, const float *restrict y, const float *restrict gy,
                                   float *gx, int n, float mu, float is, float k, float mg,
                                   float mgx) {
  if (y)
    for (int i = 0; i < n; i++) {
      float g = lv_f_elu_grad(y[i] > 0.f, y[i], gy[i], 1.f);
      gx[i] += k * (g - mg - (x[i] - mu) * is * mgx);
    }
  else
    for (int i = 0; i < n; i++) gx[i] += k * (gy[i] - mg - (x[i] - mu) * is * mgx);
}

/* BatchNorm1d (HW == 1): rows of C channels, vectorised over the channels of a chunk */
#define BN_CH 64

/* Welford over the rows n of channels [c0, c0 + nc): (mu, m2) per channel (lv_f_var_merge of one value) */
LV_HOT static void rows_stats(int N, int C, int c0, int nc, const float *x, double *mu, double *m2) {
  double cnt[BN_CH];
  for (int j = 0; j < nc; j++) cnt[j] = mu[j] = m2[j] = 0;
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C + c0;
    for (int j = 0; j < nc; j++) lv_f_var_merge(&cnt[j], &mu[j], &m2[j], 1.0, xr[j], 0.0);
  }
}

LV_HOT static void rows_affine(const float *x, float *y, int n, const float *a, const float *b, int act) {
  if (act)
    for (int i = 0; i < n; i++) y[i] = lv_f_elu1_fast(x[i] * a[i] + b[i]);
  else
    for (int i = 0; i < n; i++) y[i] = x[i] * a[i] + b[i];
}

LV_HOT static void rows_bwd_sums(int N, int C, int c0, int nc, const float *x, const float *y, const float *gy,
                                 const float *mu, double *sg, double *sgx) {
  for (int j = 0; j < nc; j++) sg[j] = sgx[j] = 0;
  for (int n = 0; n < N; n++) {
    size_t o = (size_t)n * C + c0;
    const float *xr = x + o, *gr = gy + o;
    if (y) {
      const float *yr = y + o;
      for (int j = 0; j < nc; j++) {
        float g = lv_f_elu_grad(yr[j] > 0.f, yr[j], gr[j], 1.f);
        sg[j] += g;
        sgx[j] += g * (xr[j] - mu[j]);
      }
    } else {
      for (int j = 0; j < nc; j++) {
        sg[j] += gr[j];
        sgx[j] += gr[j] * (xr[j] - mu[j]);
      }
    }
  }
}

/* gx += k * (gz - mg - (x - mu) * is * mgx), per-channel constants */
LV_HOT static void rows_bwd_apply(const float *x, const float *y, const float *gy, float *gx, int n,
                                  const float *mu, const float *is, const float *k, const float *mg,
                                  const float *mgx) {
  if (y)
    for (int i = 0; i < n; i++) {
      float g = lv_f_elu_grad(y[i] > 0.f, y[i], gy[i], 1.f);
      gx[i] += k[i] * (g - mg[i] - (x[i] - mu[i]) * is[i] * mgx[i]);
    }
  else
    for (int i = 0; i < n; i++) gx[i] += k[i] * (gy[i] - mg[i] - (x[i] - mu[i]) * is[i] * mgx[i]);
}

/* a channel's statistics (mean mu, squared deviations m2 over M values) -> mean, invstd, unbiased
 * variance, and the affine step y = x * ab[c] + ab[C + c] */
static void fwd_finish(int C, int c, double M, double mu, double m2, float eps, const float *gamma,
                       const float *beta, float *mean, float *invstd, float *var_unbiased, float *ab) {
  double var = m2 / M;
  float muf = (float)mu, is = (float)(1.0 / sqrt(var + eps));
  mean[c] = muf;
  invstd[c] = is;
  if (var_unbiased) var_unbiased[c] = (float)(M > 1 ? m2 / (M - 1) : var);
  float a = gamma ? gamma[c] * is : is;
  ab[c] = a;
  ab[C + c] = (beta ? beta[c] : 0.f) - muf * a;
}

/* a channel's sums (sum gz, sum gz (x - mu)) -> parameter gradients and the input gradient's
 * constants cc[2C + c] (k), cc[3C + c] (mean gz), cc[4C + c] (mean gz xhat); cc[C + c]: invstd */
static void bwd_finish(int C, int c, double M, int train, double sg, double sgx, const float *gamma,
                       float *ggamma, float *gbeta, float *cc) {
  float is = cc[C + c];
  sgx *= is; /* sum gz * xhat */
  if (ggamma && gamma) ggamma[c] += (float)sgx;
  if (gbeta) gbeta[c] += (float)sg;
  cc[2 * C + c] = (gamma ? gamma[c] : 1.f) * is;
  cc[3 * C + c] = train ? (float)(sg / M) : 0.f;
  cc[4 * C + c] = train ? (float)(sgx / M) : 0.f;
}

/* Schedules (the arithmetic is the same in each; none depends on the thread count):
 * - HW == 1 (BatchNorm1d): chunks of BN_CH channels per thread, rows vectorised over channels;
 * - at least as many channels as threads: one parallel loop over channels, each channel's planes
 *   reduced, merged and normalised by one thread (one barrier);
 * - fewer channels (the course LN's BatchNorm2d(1)): over the N*C planes, per-plane partials, the
 *   channels' merges, then the planes again, so that every thread works. */
#define BN_PAR(N, C, HW) if ((double)(N) * (C) * (HW) > 65536)

/* The schedule of (N, C, HW) (rows: HW == 1; per_channel: enough channels for every thread) and
 * its work space: per-plane partials (2 N C floats, not for rows) and nc per-channel floats. */
static int bn_schedule(const char *who, int N, int C, int HW, int nc, int *rows, int *per_channel,
                       float **part, float **chan) {
  *rows = HW == 1;
  *per_channel = !*rows && C >= omp_get_max_threads();
  *part = *rows ? NULL : malloc(2 * (size_t)N * C * sizeof **part);
  *chan = malloc((size_t)nc * C * sizeof **chan);
  if ((!*rows && !*part) || !*chan) {
    free(*part), free(*chan);
    return lv_set_error(LV_ENOMEM, "%s: out of memory", who), -1;
  }
  return 0;
}
/* the planes' schedule has three barriers: threads only from 1M values (below, one thread is done
 * in well under a millisecond, and a shared machine's descheduled thread costs more at a barrier) */
#define BN_PAR_PLANES(N, C, HW) if ((double)(N) * (C) * (HW) > (1 << 20))

/* training forward; act = 1 applies ELU(1) */
static int bn_fwd_train(const char *who, int act, int N, int C, int HW, const float *x,
                        const float *gamma, const float *beta, float eps, float *y, float *mean,
                        float *invstd, float *var_unbiased) {
  if (bn_check(who, N, C, HW, x, y)) return -1;
  if (!mean || !invstd) return lv_set_error(LV_EVALUE, "%s: mean/invstd outputs are required", who), -1;
  size_t P = (size_t)N * C;
  int rows, per_channel;
  float *part, *ab;
  if (bn_schedule(who, N, C, HW, 2, &rows, &per_channel, &part, &ab) < 0) return -1;
  double M = (double)N * HW;
  if (rows) {
    int nch = (C + BN_CH - 1) / BN_CH;
#pragma omp parallel for schedule(static) BN_PAR(N, C, HW)
    for (int q = 0; q < nch; q++) {
      int c0 = q * BN_CH, nc = C - c0 < BN_CH ? C - c0 : BN_CH;
      double mu[BN_CH], m2[BN_CH];
      rows_stats(N, C, c0, nc, x, mu, m2);
      for (int j = 0; j < nc; j++) fwd_finish(C, c0 + j, M, mu[j], m2[j], eps, gamma, beta, mean, invstd, var_unbiased, ab);
      for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * C + c0;
        rows_affine(x + o, y + o, nc, ab + c0, ab + C + c0, act);
      }
    }
  } else if (per_channel) {
#pragma omp parallel for schedule(static) BN_PAR(N, C, HW)
    for (int c = 0; c < C; c++) {
      double cnt = 0, mu = 0, m2 = 0;
      for (int n = 0; n < N; n++) {
        size_t p = (size_t)n * C + c;
        plane_stats(x + p * HW, HW, part + p, part + P + p);
        lv_f_var_merge(&cnt, &mu, &m2, (double)HW, part[p], part[P + p]);
      }
      fwd_finish(C, c, M, mu, m2, eps, gamma, beta, mean, invstd, var_unbiased, ab);
      for (int n = 0; n < N; n++) {
        size_t p = (size_t)n * C + c;
        plane_affine(x + p * HW, y + p * HW, HW, ab[c], ab[C + c], act);
      }
    }
  } else {
#pragma omp parallel BN_PAR_PLANES(N, C, HW)
    {
#pragma omp for schedule(static)
      for (size_t p = 0; p < P; p++) plane_stats(x + p * HW, HW, part + p, part + P + p);
#pragma omp for schedule(static)
      for (int c = 0; c < C; c++) {
        double cnt = 0, mu = 0, m2 = 0;
        for (int n = 0; n < N; n++) {
          size_t p = (size_t)n * C + c;
          lv_f_var_merge(&cnt, &mu, &m2, (double)HW, part[p], part[P + p]);
        }
        fwd_finish(C, c, M, mu, m2, eps, gamma, beta, mean, invstd, var_unbiased, ab);
      }
#pragma omp for schedule(static)
      for (size_t p = 0; p < P; p++) {
        int c = (int)(p % C);
        plane_affine(x + p * HW, y + p * HW, HW, ab[c], ab[C + c], act);
      }
    }
  }
  free(part), free(ab);
  return 0;
}


static int bn_fwd_eval(const char *who, int act, int N, int C, int HW, const float *x,
                       const float *gamma, const float *beta, const float *rm, const float *rv,
                       float eps, float *y) {
  if (bn_check(who, N, C, HW, x, y)) return -1;
  if (!rm || !rv) return lv_set_error(LV_EVALUE, "%s: running statistics are required", who), -1;
  float *ab = malloc(2 * (size_t)C * sizeof *ab);
  if (!ab) return lv_set_error(LV_ENOMEM, "%s: out of memory", who), -1;
  for (int c = 0; c < C; c++) {
    float is = (float)(1.0 / sqrt((double)rv[c] + eps));
    ab[c] = gamma ? gamma[c] * is : is;
    ab[C + c] = (beta ? beta[c] : 0.f) - rm[c] * ab[c];
  }
  if (HW == 1) {
#pragma omp parallel for schedule(static) BN_PAR(N, C, HW)
    for (int n = 0; n < N; n++) rows_affine(x + (size_t)n * C, y + (size_t)n * C, C, ab, ab + C, act);
  } else {
#pragma omp parallel for schedule(static) collapse(2) BN_PAR(N, C, HW)
    for (int n = 0; n < N; n++)
      for (int c = 0; c < C; c++) {
        size_t o = ((size_t)n * C + c) * HW;
        plane_affine(x + o, y + o, HW, ab[c], ab[C + c], act);
      }
  }
  free(ab);
  return 0;
}

/* gx[i] += k * (gy[i] * f), f = y[i] > 0 ? 1 : y[i] + 1 (elu'(z) from the output; g * 1 == g,
 * so the same numbers as lv_f_elu_grad) over one plane, eval mode. Written with vector
 * extensions and a bitwise select: GCC does not if-convert the scalar loop (a branch per element,
 * mispredicted on real images); no contraction into FMAs, so every clone rounds as the scalar
 * formula does. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LVIV_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=off")))
#endif
static void bn_eval_gx_elu(int HW, float k, const float *gy, const float *y, float *gx) {
  int i = 0;
  lv_v8f kk = lv_bc8(k), one = lv_bc8(1.f), zero = lv_bc8(0.f);
  for (; i + 8 <= HW; i += 8) {
    lv_v8f yv = lv_ld8(y + i), a = yv + one;
    lv_v8i m = yv > zero; /* all ones where y > 0 */
    lv_v8f f = (lv_v8f)((m & (lv_v8i)one) | (~m & (lv_v8i)a));
    lv_st8(gx + i, lv_ld8(gx + i) + kk * (lv_ld8(gy + i) * f));
  }
  for (; i < HW; i++) {
    float f = y[i] > 0.f ? 1.f : y[i] + 1.f;
    gx[i] += k * (gy[i] * f);
  }
}

/* backward; y != NULL means ELU(1) was applied after the normalisation (gz = gy * elu'(z)).
 * train: gx = gamma*invstd/M * (M gz - sum gz - xhat sum(gz xhat)); eval: gx = gz*gamma*invstd */
static int bn_bwd(const char *who, int train, int N, int C, int HW, const float *x, const float *y,
                  const float *gy, const float *gamma, const float *mean, const float *invstd,
                  const float *rm, const float *rv, float eps, float *gx, float *ggamma,
                  float *gbeta) {
  if (bn_check(who, N, C, HW, x, gy)) return -1;
  if (train && (!mean || !invstd)) return lv_set_error(LV_EVALUE, "%s: mean/invstd are required", who), -1;
  if (!train && (!rm || !rv)) return lv_set_error(LV_EVALUE, "%s: running statistics are required", who), -1;
  if (!train && !ggamma && !gbeta) {
    /* eval mode, input gradient only (the analysis: RFs, MEIs): gx += gamma invstd g, one pass
     * over gy (and y), no statistics (the general loop below gives the same numbers, reading x
     * and summing for nothing) */
    if (!gx) return 0;
#pragma omp parallel for schedule(static) if ((double)N * C * HW > 65536)
    for (int64_t p = 0; p < (int64_t)N * C; p++) {
      int c = (int)(p % C);
      float k = (gamma ? gamma[c] : 1.f) * (float)(1.0 / sqrt((double)rv[c] + eps));
      size_t o = (size_t)p * HW;
      if (y) bn_eval_gx_elu(HW, k, gy + o, y + o, gx + o);
      else
        for (int i = 0; i < HW; i++) gx[o + i] += k * gy[o + i];
    }
    return 0;
  }
  size_t P = (size_t)N * C;
  int rows, per_channel;
  /* per plane: sum gz, sum gz (x - mu); per channel: mu, invstd, k, mean gz, mean gz xhat */
  float *part, *cc;
  if (bn_schedule(who, N, C, HW, 5, &rows, &per_channel, &part, &cc) < 0) return -1;
  for (int c = 0; c < C; c++) {
    cc[c] = train ? mean[c] : rm[c];
    cc[C + c] = train ? invstd[c] : (float)(1.0 / sqrt((double)rv[c] + eps));
  }
  double M = (double)N * HW;
  if (rows) {
    int nch = (C + BN_CH - 1) / BN_CH;
#pragma omp parallel for schedule(static) BN_PAR(N, C, HW)
    for (int q = 0; q < nch; q++) {
      int c0 = q * BN_CH, nc = C - c0 < BN_CH ? C - c0 : BN_CH;
      double sg[BN_CH], sgx[BN_CH];
      rows_bwd_sums(N, C, c0, nc, x, y, gy, cc + c0, sg, sgx);
      for (int j = 0; j < nc; j++) bwd_finish(C, c0 + j, M, train, sg[j], sgx[j], gamma, ggamma, gbeta, cc);
      if (gx)
        for (int n = 0; n < N; n++) {
          size_t o = (size_t)n * C + c0;
          rows_bwd_apply(x + o, y ? y + o : NULL, gy + o, gx + o, nc, cc + c0, cc + C + c0, cc + 2 * C + c0,
                         cc + 3 * C + c0, cc + 4 * C + c0);
        }
    }
  } else if (per_channel) {
#pragma omp parallel for schedule(static) BN_PAR(N, C, HW)
    for (int c = 0; c < C; c++) {
      double sg = 0, sgx = 0;
      for (int n = 0; n < N; n++) {
        size_t p = (size_t)n * C + c;
        plane_bwd_sums(x + p * HW, y ? y + p * HW : NULL, gy + p * HW, HW, cc[c], part + p, part + P + p);
        sg += part[p];
        sgx += part[P + p];
      }
      bwd_finish(C, c, M, train, sg, sgx, gamma, ggamma, gbeta, cc);
      if (gx)
        for (int n = 0; n < N; n++) {
          size_t p = (size_t)n * C + c;
          plane_bwd_apply(x + p * HW, y ? y + p * HW : NULL, gy + p * HW, gx + p * HW, HW, cc[c], cc[C + c],
                          cc[2 * C + c], cc[3 * C + c], cc[4 * C + c]);
        }
    }
  } else {
#pragma omp parallel BN_PAR_PLANES(N, C, HW)
    {
#pragma omp for schedule(static)
      for (size_t p = 0; p < P; p++) {
        int c = (int)(p % C);
        plane_bwd_sums(x + p * HW, y ? y + p * HW : NULL, gy + p * HW, HW, cc[c], part + p, part + P + p);
      }
#pragma omp for schedule(static)
      for (int c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        for (int n = 0; n < N; n++) {
          size_t p = (size_t)n * C + c;
          sg += part[p];
          sgx += part[P + p];
        }
        bwd_finish(C, c, M, train, sg, sgx, gamma, ggamma, gbeta, cc);
      }
      if (gx) {
#pragma omp for schedule(static)
        for (size_t p = 0; p < P; p++) {
          int c = (int)(p % C);
          plane_bwd_apply(x + p * HW, y ? y + p * HW : NULL, gy + p * HW, gx + p * HW, HW, cc[c], cc[C + c],
                          cc[2 * C + c], cc[3 * C + c], cc[4 * C + c]);
        }
      }
    }
  }
  free(part), free(cc);
  return 0;
}

int lv_batchnorm_forward_train(int N, int C, int HW, const float *x, const float *gamma,
                               const float *beta, float eps, float *y, float *mean, float *invstd,
                               float *var_unbiased) {
  return bn_fwd_train("batchnorm", 0, N, C, HW, x, gamma, beta, eps, y, mean, invstd, var_unbiased);
}
int lv_batchnorm_forward_eval(int N, int C, int HW, const float *x, const float *gamma,
                              const float *beta, const float *rm, const float *rv, float eps, float *y) {
  return bn_fwd_eval("batchnorm", 0, N, C, HW, x, gamma, beta, rm, rv, eps, y);
}
int lv_batchnorm_backward_train(int N, int C, int HW, const float *x, const float *gy,
                                const float *gamma, const float *mean, const float *invstd,
                                float *gx, float *ggamma, float *gbeta) {
  return bn_bwd("batchnorm_backward", 1, N, C, HW, x, NULL, gy, gamma, mean, invstd, NULL, NULL, 0.f,
                gx, ggamma, gbeta);
}
int lv_batchnorm_backward_eval(int N, int C, int HW, const float *x, const float *gy,
                               const float *gamma, const float *rm, const float *rv, float eps,
                               float *gx, float *ggamma, float *gbeta) {
  return bn_bwd("batchnorm_backward", 0, N, C, HW, x, NULL, gy, gamma, NULL, NULL, rm, rv, eps, gx,
                ggamma, gbeta);
}
int lv_bn_elu_forward_train(int N, int C, int HW, const float *x, const float *gamma,
                            const float *beta, float eps, float *y, float *mean, float *invstd,
                            float *var_unbiased) {
  if (x == y) return lv_set_error(LV_EVALUE, "bn_elu: y must not alias x in training"), -1;
  return bn_fwd_train("bn_elu", 1, N, C, HW, x, gamma, beta, eps, y, mean, invstd, var_unbiased);
}
int lv_bn_elu_forward_eval(int N, int C, int HW, const float *x, const float *gamma,
                           const float *beta, const float *rm, const float *rv, float eps, float *y) {
  return bn_fwd_eval("bn_elu", 1, N, C, HW, x, gamma, beta, rm, rv, eps, y);
}
int lv_bn_elu_backward_train(int N, int C, int HW, const float *x, const float *y, const float *gy,
                             const float *gamma, const float *mean, const float *invstd, float *gx,
                             float *ggamma, float *gbeta) {
  if (!y) return lv_set_error(LV_EVALUE, "bn_elu_backward: saved output y is required"), -1;
  return bn_bwd("bn_elu_backward", 1, N, C, HW, x, y, gy, gamma, mean, invstd, NULL, NULL, 0.f, gx,
                ggamma, gbeta);
}
int lv_bn_elu_backward_eval(int N, int C, int HW, const float *x, const float *y, const float *gy,
                            const float *gamma, const float *rm, const float *rv, float eps,
                            float *gx, float *ggamma, float *gbeta) {
  if (!y) return lv_set_error(LV_EVALUE, "bn_elu_backward: saved output y is required"), -1;
  return bn_bwd("bn_elu_backward", 0, N, C, HW, x, y, gy, gamma, NULL, NULL, rm, rv, eps, gx, ggamma,
                gbeta);
}
