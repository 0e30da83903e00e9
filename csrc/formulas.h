/* Every scalar formula of lviv_c, written once and compiled by both compilers: gcc for the CPU
 * kernels (csrc/ops/, csrc/cpu/) and nvcc for the CUDA kernels (cuda/). Kernels differ only in how
 * they loop over the data; what happens to one element is here. Change a formula here and both
 * backends change (the CPU tests then exercise the arithmetic the GPU runs).
 *
 * Under nvcc the functions are __host__ __device__; under a C compiler plain static inline.
 * Everything is float32 arithmetic unless a function says double (accumulations). Op codes:
 * csrc/opdef.h. Include only math.h and the op definition: no tensors, no errors. */
#ifndef LV_FORMULAS_H
#define LV_FORMULAS_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "opdef.h"

#ifdef __CUDACC__
#define LV_HD static __host__ __device__ __forceinline__
#else
#define LV_HD static inline
#endif

/* ---------------------------------------------------------------- binary elementwise */
LV_HD float lv_f_binop(int op, float x, float y) {
  switch (op) {
    case LV_ADD: return x + y;
    case LV_SUB: return x - y;
    case LV_MUL: return x * y;
    case LV_DIV: return x / y;
    case LV_POW: return powf(x, y);
    case LV_MAXIMUM: return (x > y || isnan(x)) ? x : y; /* NaN propagates from either side */
    case LV_MINIMUM: return (x < y || isnan(x)) ? x : y;
    case LV_EQ: return (float)(x == y);
    case LV_NE: return (float)(x != y);
    case LV_LT: return (float)(x < y);
    case LV_LE: return (float)(x <= y);
    case LV_GT: return (float)(x > y);
    case LV_GE: return (float)(x >= y);
  }
  return 0.f;
}

/* d out / d (side 0: x, 1: y) times g, at one output element o = op(x, y); ties of
 * maximum/minimum split the gradient in halves; comparisons have none */
LV_HD float lv_f_binop_grad(int op, int side, float x, float y, float o, float g) {
  switch (op) {
    case LV_ADD: return g;
    case LV_SUB: return side ? -g : g;
    case LV_MUL: return side ? g * x : g * y;
    case LV_DIV: return side ? -g * x / (y * y) : g / y;
    case LV_POW: return side ? (x > 0 ? g * o * logf(x) : 0.f) : (y == 0 ? 0.f : g * y * powf(x, y - 1));
    case LV_MAXIMUM:
      return side ? (y > x ? g : (y == x ? 0.5f * g : 0.f)) : (x > y ? g : (x == y ? 0.5f * g : 0.f));
    case LV_MINIMUM:
      return side ? (y < x ? g : (y == x ? 0.5f * g : 0.f)) : (x < y ? g : (x == y ? 0.5f * g : 0.f));
  }
  return 0.f;
}

/* ---------------------------------------------------------------- ELU */
/* elu(x) = x > 0 ? x : alpha (exp(x) - 1) */
LV_HD float lv_f_elu(float x, float alpha) { return x > 0 ? x : alpha * expm1f(x); }
/* g * elu'(x) from the saved output y: pos is x > 0 (equivalently y > 0 for alpha > 0) */
LV_HD float lv_f_elu_grad(int pos, float y, float g, float alpha) { return pos ? g : g * (y + alpha); }

/* Chan et al.'s merge of two partial variance statistics (count, mean, sum of squared deviations
 * from the mean) in double: (n, mean, m2) <- (n, mean, m2) + (nb, mb, m2b). Exact in real arithmetic,
 * stable in floating point (no E[x^2] - E[x]^2 cancellation); the BatchNorm statistics. */
LV_HD void lv_f_var_merge(double *n, double *mean, double *m2, double nb, double mb, double m2b) {
  double na = *n, nt = na + nb, d = mb - *mean;
  *mean += d * (nb / nt);
  *m2 += m2b + d * d * (na * nb / nt);
  *n = nt;
}

/* exp(x) for x <= 0 (clamped at -87): Cephes-style degree-6 polynomial after range reduction,
 * relative error below 1e-7; vectorises where expm1f would not (the fused BatchNorm+ELU) */
LV_HD float lv_f_exp_neg(float x) {
  x = x < -87.f ? -87.f : x;
  float t = x * 1.44269504088896341f;
  int n = (int)truncf(t - 0.5f); /* round to nearest for t <= 0; truncf (same value) lets gcc vectorise */
  float fn = (float)n;
  float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.f;
  int bits = (n + 127) << 23;
  float sc;
  memcpy(&sc, &bits, sizeof sc);
  return p * sc;
}
/* ELU with alpha 1 through lv_f_exp_neg: the activation of the fused BatchNorm+ELU */
LV_HD float lv_f_elu1_fast(float z) {
  float e = lv_f_exp_neg(z < 0.f ? z : 0.f) - 1.f;
  return z > 0.f ? z : e;
}

/* ---------------------------------------------------------------- unary elementwise */
/* y = op(v) with the parameters p0, p1 of csrc/opdef.h */
LV_HD float lv_f_unop(int op, float v, float p0, float p1) {
  switch (op) {
    case LV_NEG: return -v;
    case LV_EXP: return expf(v);
    case LV_LOG: return logf(v);
    case LV_SQRT: return sqrtf(v);
    case LV_ABS: return fabsf(v);
    case LV_SIGN: return (float)((v > 0) - (v < 0));
    case LV_ELU: return lv_f_elu(v, p0);
    case LV_RELU: return v > 0 ? v : 0.f;
    case LV_TANH: return tanhf(v);
    case LV_SIGMOID: return 1.f / (1.f + expf(-v));
    case LV_CLAMP: return v < p0 ? p0 : (v > p1 ? p1 : v);
    case LV_AFFINE: return p0 * v + p1;
    case LV_POWS: return p0 == 2.f ? v * v : powf(v, p0);
    case LV_RDIV: return p0 / v;
    case LV_SQUARE: return v * v;
    case LV_LOG1P: return log1pf(v);
    case LV_SOFTPLUS: return v > 20.f ? v : log1pf(expf(v));
    case LV_SIN: return sinf(v);
    case LV_COS: return cosf(v);
  }
  return 0.f;
}

/* g * op'(v), given the input v and the output o = op(v) */
LV_HD float lv_f_unop_grad(int op, float v, float o, float g, float p0, float p1) {
  (void)p1;
  switch (op) {
    case LV_NEG: return -g;
    case LV_EXP: return g * o;
    case LV_LOG: return g / v;
    case LV_SQRT: return g * 0.5f / o;
    case LV_ABS: return v > 0 ? g : (v < 0 ? -g : 0.f);
    case LV_SIGN: return 0.f;
    case LV_ELU: return lv_f_elu_grad(v > 0, o, g, p0);
    case LV_RELU: return v > 0 ? g : 0.f;
    case LV_TANH: return g * (1.f - o * o);
    case LV_SIGMOID: return g * o * (1.f - o);
    case LV_CLAMP: return (v >= p0 && v <= p1) ? g : 0.f;
    case LV_AFFINE: return g * p0;
    case LV_POWS: return p0 == 0.f ? 0.f : g * p0 * powf(v, p0 - 1.f);
    case LV_RDIV: return -g * o / v;
    case LV_SQUARE: return 2.f * g * v;
    case LV_LOG1P: return g / (1.f + v);
    case LV_SOFTPLUS: return g / (1.f + expf(-v));
    case LV_SIN: return g * cosf(v);
    case LV_COS: return -g * sinf(v);
  }
  return 0.f;
}

/* ---------------------------------------------------------------- Poisson loss */
/* loss = scale * sum_i term_i (summed in double), term = yhat - y log(yhat + eps) */
LV_HD double lv_f_poisson_term(float yhat, float y, float eps) {
  double d = (double)yhat + eps;
  return (double)yhat - (double)y * log(d);
}
/* d loss / d yhat_i = scale (1 - y / (yhat + eps)) */
LV_HD float lv_f_poisson_grad(float yhat, float y, float eps, float scale) {
  double d = (double)yhat + eps;
  return scale * (float)(1.0 - (double)y / d);
}
/* d loss / d y_i times the output gradient g: -g scale log(yhat + eps) (subtract this) */
LV_HD float lv_f_poisson_grad_target(float yhat, float eps, float scale, float g) {
  return g * scale * logf(yhat + eps);
}

/* ---------------------------------------------------------------- Adam */
/* PyTorch's Adam for one element, the bias corrections folded into two constants computed once
 * per step (lv_f_adam_consts): g' = (maximize ? -g : g) + wd p; m = b1 m + (1 - b1) g';
 * v = b2 v + (1 - b2) g'^2; amsgrad: vmax = max(vmax, v), used in place of v;
 * p -= step_size m / (sqrt(v) isb2 + eps). */
typedef struct lv_adam_consts {
  float step_size; /* lr / (1 - beta1^step) */
  float isb2;      /* 1 / sqrt(1 - beta2^step) */
} lv_adam_consts;

LV_HD lv_adam_consts lv_f_adam_consts(double lr, double beta1, double beta2, int64_t step) {
  double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
  lv_adam_consts c;
  c.step_size = (float)(lr / bc1);
  c.isb2 = (float)(1.0 / sqrt(bc2));
  return c;
}

LV_HD void lv_f_adam(float *p, float g, float *m, float *v, float *vmax, lv_adam_consts c, float b1,
                     float b2, float eps, float wd) {
  float gi = g + wd * *p;
  float mi = b1 * *m + (1.f - b1) * gi;
  float vi = b2 * *v + (1.f - b2) * gi * gi;
  *m = mi;
  *v = vi;
  if (vmax) { if (*vmax < vi) *vmax = vi; vi = *vmax; }
  *p -= c.step_size * mi / (sqrtf(vi) * c.isb2 + eps);
}

/* ---------------------------------------------------------------- where */
/* torch.where for one element: a where the condition is nonzero, else b (a select, never a
 * blend: an inf or NaN in the branch not taken does not leak into the result) */
LV_HD float lv_f_where(float c, float a, float b) { return c != 0.f ? a : b; }

/* ---------------------------------------------------------------- SGD */
/* PyTorch's SGD for one element: g' = (maximize ? -g : g) + wd p; with momentum != 0:
 * buf = first ? g' : momentum buf + (1 - dampening) g', g' = nesterov ? g' + momentum buf : buf;
 * p -= lr g'. buf is NULL without momentum. */
LV_HD void lv_f_sgd(float *p, float g, float *buf, float lr, float momentum, float dampening, float wd,
                    int nesterov, int first) {
  float gi = g + wd * *p;
  if (buf) {
    float b = first ? gi : momentum * *buf + (1.f - dampening) * gi;
    *buf = b;
    gi = nesterov ? gi + momentum * b : b;
  }
  *p -= lr * gi;
}

/* ---------------------------------------------------------------- BatchNorm running statistics */
/* the update factor of one training forward: momentum, or with momentum < 0 the cumulative
 * average 1/k over the k batches tracked so far (k = 0, no counter: 0, nothing moves) */
LV_HD double lv_f_bn_factor(double momentum, int64_t k) {
  return momentum >= 0 ? momentum : (k > 0 ? 1.0 / (double)k : 0.0);
}
/* running = (1 - f) running + f batch, in double */
LV_HD float lv_f_bn_running(float running, float batch, double f) {
  return (float)((1.0 - f) * running + f * batch);
}

/* ---------------------------------------------------------------- Gaussian readout positions */
/* a standard normal pair (Box-Muller) from 64 random bits: 24 bits each for u1 in (0, 1] and
 * u2 in [0, 1) */
LV_HD void lv_f_gauss_pair(uint64_t u, float *e0, float *e1) {
  float u1 = (float)((u >> 40) + 1) * 0x1.0p-24f;
  float u2 = (float)((u >> 16) & 0xffffff) * 0x1.0p-24f;
  float rad = sqrtf(-2.f * logf(u1)), th = 6.2831853071795865f * u2;
  *e0 = rad * cosf(th);
  *e1 = rad * sinf(th);
}
/* the read position of neuron n for the noise (e0, e1): mu (N, 2) + sigma eps, sigma per
 * lv_gauss_type: full (N, 2, 2) row-major (pos_c = sum_d s[c][d] eps_d), uncorrelated (N, 2),
 * isotropic (N) */
LV_HD void lv_f_readout_pos(int type, const float *mu, const float *sg, int64_t n, float e0, float e1, float *v0,
                            float *v1) {
  if (type == LV_GAUSS_FULL) {
    const float *s = sg + 4 * n;
    *v0 = mu[2 * n] + s[0] * e0 + s[1] * e1;
    *v1 = mu[2 * n + 1] + s[2] * e0 + s[3] * e1;
  } else if (type == LV_GAUSS_UNCORRELATED) {
    *v0 = mu[2 * n] + sg[2 * n] * e0;
    *v1 = mu[2 * n + 1] + sg[2 * n + 1] * e1;
  } else {
    *v0 = mu[2 * n] + sg[n] * e0;
    *v1 = mu[2 * n + 1] + sg[n] * e1;
  }
}
/* a position clamped to [-1, 1], and 1 where it was inside (the clamp's gradient mask) */
LV_HD float lv_f_clamp1(float v) { return v < -1.f ? -1.f : (v > 1.f ? 1.f : v); }
LV_HD float lv_f_inside1(float v) { return (v >= -1.f && v <= 1.f) ? 1.f : 0.f; }
/* backward of the sampled positions, per neuron: the sums over the batch of the masked output
 * gradient and its products with eps, acc = (m0, m1, s00, s01, s10, s11) in double, one sample
 * (2 values of g, mask, eps) at a time; then lv_f_readout_pos_grad adds them to gmu (2 values
 * at 2n) and gsigma (per lv_gauss_type; nullable) */
LV_HD void lv_f_readout_pos_acc(const float *g, const float *mask, const float *eps, double *acc) {
  float g0 = g[0] * mask[0], g1 = g[1] * mask[1];
  float e0 = eps[0], e1 = eps[1];
  acc[0] += g0; acc[1] += g1;
  acc[2] += g0 * e0; acc[3] += g0 * e1; acc[4] += g1 * e0; acc[5] += g1 * e1;
}
LV_HD void lv_f_readout_pos_grad(int type, int64_t n, const double *acc, float *gmu, float *gsg) {
  if (gmu) { gmu[2 * n] += (float)acc[0]; gmu[2 * n + 1] += (float)acc[1]; }
  if (!gsg) return;
  if (type == LV_GAUSS_FULL) {
    float *d = gsg + 4 * n;
    d[0] += (float)acc[2]; d[1] += (float)acc[3]; d[2] += (float)acc[4]; d[3] += (float)acc[5];
  } else if (type == LV_GAUSS_UNCORRELATED) {
    gsg[2 * n] += (float)acc[2];
    gsg[2 * n + 1] += (float)acc[5];
  } else {
    gsg[n] += (float)(acc[2] + acc[5]);
  }
}
/* one sampled read position of neuron n from 64 random bits: eps, mask and the clamped position
 * (2 values each) */
LV_HD void lv_f_readout_sample(int type, const float *mu, const float *sg, int64_t n, uint64_t bits, float *eps,
                               float *mask, float *out) {
  float v0, v1;
  lv_f_gauss_pair(bits, &eps[0], &eps[1]);
  lv_f_readout_pos(type, mu, sg, n, eps[0], eps[1], &v0, &v1);
  mask[0] = lv_f_inside1(v0);
  mask[1] = lv_f_inside1(v1);
  out[0] = lv_f_clamp1(v0);
  out[1] = lv_f_clamp1(v1);
}

/* ---------------------------------------------------------------- counter-based random numbers
 * One 64-bit seed drawn from the global generator per op call, then element i's number is a hash
 * of (seed, i): both backends consume the global generator identically (one draw per call) and
 * produce the same numbers, whatever the order or the threads the elements are visited in. */
LV_HD uint64_t lv_f_mix64(uint64_t z) { /* splitmix64's finaliser */
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
/* u in [0, 1) with 53 random bits, element i of the stream of `seed` */
LV_HD double lv_f_counter_u01(uint64_t seed, int64_t i) {
  uint64_t r = lv_f_mix64(lv_f_mix64(seed) + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
  return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}
/* inverted dropout's mask value of element i: 0 with probability p, else keep = 1/(1-p) */
LV_HD float lv_f_dropout_mask(uint64_t seed, int64_t i, double p, float keep) {
  return lv_f_counter_u01(seed, i) >= p ? keep : 0.f;
}

#endif
