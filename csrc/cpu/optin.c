/* The CPU entries of input optimisation and gradient RFs (csrc/analysis.c): the arithmetic of
 * the original host loop, unchanged (the MEIs of a model are the same bits as before). */
#include "backend.h"
#include "cpu/cpu_ops.h"
#include <math.h>
#include <string.h>

int lv_cpu_index_cols(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put) {
  for (int64_t k = 0; k < K; k++) {
    if (put) mat[k * N + idx[k]] = vec[k];
    else vec[k] = mat[k * N + idx[k]];
  }
  return 0;
}

int lv_cpu_blur_planes(int64_t P, int64_t H, int64_t W, int r, const float *k, float *g, float *tmp) {
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W > 16384)
  for (int64_t p = 0; p < P; p++) {
    float *x = g + p * H * W, *t = tmp + p * H * W;
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++) {
        float a = 0;
        for (int i = -r; i <= r; i++) { int64_t q = xx + i; if (q >= 0 && q < W) a += k[i + r] * x[y * W + q]; }
        t[y * W + xx] = a;
      }
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++) {
        float a = 0;
        for (int i = -r; i <= r; i++) { int64_t q = y + i; if (q >= 0 && q < H) a += k[i + r] * t[q * W + xx]; }
        x[y * W + xx] = a;
      }
  }
  return 0;
}

int lv_cpu_momentum_step(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip,
                         float lo, float hi) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    buf[i] = momentum * buf[i] + g[i];
    float v = x[i] - lr * buf[i];
    g[i] = 0.f;
    x[i] = clip ? (v < lo ? lo : (v > hi ? hi : v)) : v;
  }
  return 0;
}

int lv_cpu_renorm_rows(int64_t K, int64_t D, float *x, double norm) {
#pragma omp parallel for schedule(static) if (K > 1 && K * D > 65536)
  for (int64_t k = 0; k < K; k++) {
    float *r = x + k * D;
    double s = 0;
    for (int64_t i = 0; i < D; i++) s += (double)r[i] * r[i];
    float f = s > 0 ? (float)(norm / sqrt(s)) : 1.f;
    for (int64_t i = 0; i < D; i++) r[i] *= f;
  }
  return 0;
}
