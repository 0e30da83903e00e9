/* BatchNorm (per channel over N and HW) and fused BatchNorm + ELU(1), forward and backward.
 * Statistics are accumulated in double. Parallel over channels (OpenMP). */
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "formulas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bn_check(const char *who, int N, int C, int HW, const void *x, const void *y) {
  if (N < 1 || C < 1 || HW < 1 || !x || !y) {
    lv_set_error(LV_EVALUE, "%s: bad arguments (N %d, C %d, HW %d, buffers %s)", who, N, C, HW,
                 (!x || !y) ? "NULL" : "ok");
    return -1;
  }
  return 0;
}

/* training forward; act = 1 applies ELU(1) */
static int bn_fwd_train(const char *who, int act, int N, int C, int HW, const float *x,
                        const float *gamma, const float *beta, float eps, float *y, float *mean,
                        float *invstd, float *var_unbiased) {
  if (bn_check(who, N, C, HW, x, y)) return -1;
  if (!mean || !invstd) return lv_set_error(LV_EVALUE, "%s: mean/invstd outputs are required", who), -1;
  double M = (double)N * HW;
#pragma omp parallel for schedule(static) if ((double)N * C * HW > 65536)
  for (int c = 0; c < C; c++) {
    double s = 0;
    for (int n = 0; n < N; n++) {
      const float *xc = x + ((size_t)n * C + c) * HW;
      float t = 0.f;
      for (int i = 0; i < HW; i++) t += xc[i];
      s += t;
    }
    double mu = s / M, q = 0;
    float muf = (float)mu;
    for (int n = 0; n < N; n++) {
      const float *xc = x + ((size_t)n * C + c) * HW;
      float t = 0.f;
      for (int i = 0; i < HW; i++) { float dlt = xc[i] - muf; t += dlt * dlt; }
      q += t;
    }
    double var = q / M;
    float is = (float)(1.0 / sqrt(var + eps));
    mean[c] = muf;
    invstd[c] = is;
    if (var_unbiased) var_unbiased[c] = (float)(M > 1 ? var * M / (M - 1) : var);
    float a = gamma ? gamma[c] * is : is, b = (beta ? beta[c] : 0.f) - muf * a;
    for (int n = 0; n < N; n++) {
      const float *xc = x + ((size_t)n * C + c) * HW;
      float *yc = y + ((size_t)n * C + c) * HW;
      if (act)
        for (int i = 0; i < HW; i++) yc[i] = lv_f_elu1_fast(xc[i] * a + b);
      else
        for (int i = 0; i < HW; i++) yc[i] = xc[i] * a + b;
    }
  }
  return 0;
}

/* y = elu(x * a + b) over one plane through lv_f_elu1_fast, written with vector extensions (the
 * scalar loop does not vectorise: its selects become branches, mispredicted on real images);
 * every operation of lv_f_exp_neg in the same order and no contraction into FMAs, so that the
 * numbers are the scalar formula's in every clone. */
#define V8SEL(m, a, b) ((lv_v8f)(((m) & (lv_v8i)(a)) | (~(m) & (lv_v8i)(b))))
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LVIV_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=off")))
#endif
static void bn_eval_elu_plane(int HW, float a, float b, const float *x, float *y) {
  int i = 0;
  const lv_v8f va = lv_bc8(a), vb = lv_bc8(b), zero = lv_bc8(0.f), lo = lv_bc8(-87.f),
               one = lv_bc8(1.f), half = lv_bc8(0.5f);
  for (; i + 8 <= HW; i += 8) {
    lv_v8f z = lv_ld8(x + i) * va + vb;
    lv_v8f u = V8SEL(z < zero, z, zero);
    u = V8SEL(u < lo, lo, u);
    lv_v8f t = u * lv_bc8(1.44269504088896341f);
    lv_v8i n = __builtin_convertvector(t - half, lv_v8i);
    lv_v8f fn = __builtin_convertvector(n, lv_v8f);
    lv_v8f r = u - fn * lv_bc8(0.693359375f) + fn * lv_bc8(2.12194440e-4f);
    lv_v8f p = lv_bc8(1.9875691500E-4f);
    p = p * r + lv_bc8(1.3981999507E-3f);
    p = p * r + lv_bc8(8.3334519073E-3f);
    p = p * r + lv_bc8(4.1665795894E-2f);
    p = p * r + lv_bc8(1.6666665459E-1f);
    p = p * r + lv_bc8(5.0000001201E-1f);
    p = p * r * r + r + one;
    lv_v8f sc = (lv_v8f)((n + 127) << 23);
    lv_v8f e = p * sc - one;
    lv_st8(y + i, V8SEL(z > zero, z, e));
  }
  for (; i < HW; i++) y[i] = lv_f_elu1_fast(x[i] * a + b);
}

static int bn_fwd_eval(const char *who, int act, int N, int C, int HW, const float *x,
                       const float *gamma, const float *beta, const float *rm, const float *rv,
                       float eps, float *y) {
  if (bn_check(who, N, C, HW, x, y)) return -1;
  if (!rm || !rv) return lv_set_error(LV_EVALUE, "%s: running statistics are required", who), -1;
#pragma omp parallel for schedule(static) collapse(2) if ((double)N * C * HW > 65536)
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      float is = (float)(1.0 / sqrt((double)rv[c] + eps));
      float a = gamma ? gamma[c] * is : is, b = (beta ? beta[c] : 0.f) - rm[c] * a;
      const float *xc = x + ((size_t)n * C + c) * HW;
      float *yc = y + ((size_t)n * C + c) * HW;
      if (act)
        bn_eval_elu_plane(HW, a, b, xc, yc);
      else
        for (int i = 0; i < HW; i++) yc[i] = xc[i] * a + b;
    }
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
  double M = (double)N * HW;
#pragma omp parallel for schedule(static) if ((double)N * C * HW > 65536)
  for (int c = 0; c < C; c++) {
    float mu = train ? mean[c] : rm[c];
    float is = train ? invstd[c] : (float)(1.0 / sqrt((double)rv[c] + eps));
    double sg = 0, sgx = 0;
    for (int n = 0; n < N; n++) {
      size_t o = ((size_t)n * C + c) * HW;
      const float *xc = x + o, *gc = gy + o, *yc = y ? y + o : NULL;
      float t1 = 0.f, t2 = 0.f;
      if (yc)
        for (int i = 0; i < HW; i++) {
          float g = lv_f_elu_grad(yc[i] > 0.f, yc[i], gc[i], 1.f);
          t1 += g;
          t2 += g * (xc[i] - mu);
        }
      else
        for (int i = 0; i < HW; i++) { t1 += gc[i]; t2 += gc[i] * (xc[i] - mu); }
      sg += t1;
      sgx += t2;
    }
    sgx *= is; /* sum gz * xhat */
    if (ggamma && gamma) ggamma[c] += (float)sgx;
    if (gbeta) gbeta[c] += (float)sg;
    if (!gx) continue;
    float gm = gamma ? gamma[c] : 1.f;
    float k = gm * is;
    float mg = train ? (float)(sg / M) : 0.f, mgx = train ? (float)(sgx / M) : 0.f;
    for (int n = 0; n < N; n++) {
      size_t o = ((size_t)n * C + c) * HW;
      const float *xc = x + o, *gc = gy + o, *yc = y ? y + o : NULL;
      float *gxc = gx + o;
      for (int i = 0; i < HW; i++) {
        float g = yc ? lv_f_elu_grad(yc[i] > 0.f, yc[i], gc[i], 1.f) : gc[i];
        float xh = (xc[i] - mu) * is;
        gxc[i] += k * (g - mg - xh * mgx);
      }
    }
  }
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
