/* Reference compute kernels for the nn ops: straightforward, correct, modestly fast (im2col +
 * GEMM convolutions, per-channel batch norm loops). Signatures follow csrc/cpu/kernels.h. */
#include "ops/nn_ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- conv2d: im2col + GEMM, per image and group ---------------- */
/* col (Cg*kh*kw, Ho*Wo) from x (Cg, H, W) */
static void im2col(const float *x, int Cg, int H, int W, int kh, int kw, int sh, int sw, int ph,
                   int pw, int dh, int dw, int Ho, int Wo, float *col) {
  int64_t P = (int64_t)Ho * Wo;
  int rows = Cg * kh * kw;
#pragma omp parallel for schedule(static) if (rows * P > 65536)
  for (int r = 0; r < rows; r++) {
    int c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    float *dst = col + (int64_t)r * P;
    const float *src = x + (int64_t)c * H * W;
    for (int oy = 0; oy < Ho; oy++) {
      int iy = oy * sh - ph + i * dh;
      float *d = dst + (int64_t)oy * Wo;
      if (iy < 0 || iy >= H) { memset(d, 0, sizeof(float) * Wo); continue; }
      const float *s = src + (int64_t)iy * W;
      for (int ox = 0; ox < Wo; ox++) {
        int ix = ox * sw - pw + j * dw;
        d[ox] = (ix >= 0 && ix < W) ? s[ix] : 0.f;
      }
    }
  }
}

/* x (Cg, H, W) += col2im(col) */
static void col2im(const float *col, int Cg, int H, int W, int kh, int kw, int sh, int sw, int ph,
                   int pw, int dh, int dw, int Ho, int Wo, float *x) {
  int64_t P = (int64_t)Ho * Wo;
  /* parallel over channels: rows of one channel only touch that channel */
#pragma omp parallel for schedule(static) if (Cg > 1 && Cg * kh * kw * P > 65536)
  for (int c = 0; c < Cg; c++) {
    float *dstc = x + (int64_t)c * H * W;
    for (int i = 0; i < kh; i++)
      for (int j = 0; j < kw; j++) {
        const float *src = col + ((int64_t)(c * kh + i) * kw + j) * P;
        for (int oy = 0; oy < Ho; oy++) {
          int iy = oy * sh - ph + i * dh;
          if (iy < 0 || iy >= H) continue;
          float *d = dstc + (int64_t)iy * W;
          const float *s = src + (int64_t)oy * Wo;
          for (int ox = 0; ox < Wo; ox++) {
            int ix = ox * sw - pw + j * dw;
            if (ix >= 0 && ix < W) d[ix] += s[ox];
          }
        }
      }
  }
}

int lvref_conv2d_forward(int N, int C_in, int H, int W, int C_out, int kh, int kw, int sh, int sw,
                         int ph, int pw, int dh, int dw, int groups, int Ho, int Wo,
                         const float *x, const float *w, const float *bias, float *y) {
  int Cg = C_in / groups, Og = C_out / groups;
  int64_t Kg = (int64_t)Cg * kh * kw, P = (int64_t)Ho * Wo;
  int direct = (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0);
  float *col = direct ? NULL : malloc(sizeof(float) * (size_t)(Kg * P > 0 ? Kg * P : 1));
  if (!direct && !col) return lv_set_error(LV_ENOMEM, "conv2d: out of memory for the column buffer");
  for (int n = 0; n < N; n++)
    for (int g = 0; g < groups; g++) {
      const float *xg = x + ((int64_t)n * C_in + (int64_t)g * Cg) * H * W;
      float *yg = y + ((int64_t)n * C_out + (int64_t)g * Og) * P;
      const float *B = xg;
      if (!direct) {
        im2col(xg, Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, col);
        B = col;
      }
      lv_sgemm(0, 0, Og, P, Kg, 1.f, w + (int64_t)g * Og * Kg, Kg, B, P, 0.f, yg, P);
      if (bias)
        for (int o = 0; o < Og; o++) {
          float b = bias[g * Og + o];
          float *r = yg + (int64_t)o * P;
          for (int64_t p = 0; p < P; p++) r[p] += b;
        }
    }
  free(col);
  return 0;
}

int lvref_conv2d_backward(int N, int C_in, int H, int W, int C_out, int kh, int kw, int sh, int sw,
                          int ph, int pw, int dh, int dw, int groups, int Ho, int Wo,
                          const float *x, const float *w, const float *gy,
                          float *gx, float *gw, float *gb) {
  int Cg = C_in / groups, Og = C_out / groups;
  int64_t Kg = (int64_t)Cg * kh * kw, P = (int64_t)Ho * Wo;
  int direct = (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0);
  float *col = direct ? NULL : malloc(sizeof(float) * (size_t)(Kg * P > 0 ? Kg * P : 1));
  if (!direct && !col) return lv_set_error(LV_ENOMEM, "conv2d backward: out of memory for the column buffer");
  for (int n = 0; n < N; n++)
    for (int g = 0; g < groups; g++) {
      const float *xg = x + ((int64_t)n * C_in + (int64_t)g * Cg) * H * W;
      const float *gyg = gy + ((int64_t)n * C_out + (int64_t)g * Og) * P;
      const float *wg = w + (int64_t)g * Og * Kg;
      if (gw) {
        const float *B = xg;
        if (!direct) {
          im2col(xg, Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, col);
          B = col;
        }
        /* gw_g (Og, Kg) += gy_g (Og, P) @ col^T (P, Kg) */
        lv_sgemm(0, 1, Og, Kg, P, 1.f, gyg, P, B, P, 1.f, gw + (int64_t)g * Og * Kg, Kg);
      }
      if (gx) {
        float *gxg = gx + ((int64_t)n * C_in + (int64_t)g * Cg) * H * W;
        if (direct) {
          lv_sgemm(1, 0, Kg, P, Og, 1.f, wg, Kg, gyg, P, 1.f, gxg, P);
        } else {
          /* col (Kg, P) = w_g^T (Kg, Og) @ gy_g (Og, P) */
          lv_sgemm(1, 0, Kg, P, Og, 1.f, wg, Kg, gyg, P, 0.f, col, P);
          col2im(col, Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, gxg);
        }
      }
      if (gb)
        for (int o = 0; o < Og; o++) {
          const float *r = gyg + (int64_t)o * P;
          double s = 0;
          for (int64_t p = 0; p < P; p++) s += r[p];
          gb[g * Og + o] += (float)s;
        }
    }
  free(col);
  return 0;
}

/* ---------------- batch norm (+ ELU) over (N, C, HW) ---------------- */
static inline float elu1(float z) { return z > 0 ? z : expm1f(z); }

int lvref_bn_forward_train(int N, int C, int HW, const float *x, const float *gamma,
                           const float *beta, float eps, int elu, float *y, float *mean,
                           float *invstd, float *var_unbiased) {
  int64_t M = (int64_t)N * HW;
#pragma omp parallel for schedule(static) if (M * C > 16384)
  for (int c = 0; c < C; c++) {
    double s = 0, ss = 0;
    for (int n = 0; n < N; n++) {
      const float *p = x + ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) s += p[i];
    }
    double mu = M ? s / M : 0;
    for (int n = 0; n < N; n++) {
      const float *p = x + ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) { double d = p[i] - mu; ss += d * d; }
    }
    double var = M ? ss / M : 0;
    float is = (float)(1.0 / sqrt(var + eps));
    mean[c] = (float)mu;
    invstd[c] = is;
    if (var_unbiased) var_unbiased[c] = (float)(M > 1 ? ss / (M - 1) : NAN);
    float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
    float a = g * is, off = b - (float)mu * a;
    for (int n = 0; n < N; n++) {
      const float *p = x + ((int64_t)n * C + c) * HW;
      float *q = y + ((int64_t)n * C + c) * HW;
      if (elu) for (int i = 0; i < HW; i++) q[i] = elu1(p[i] * a + off);
      else for (int i = 0; i < HW; i++) q[i] = p[i] * a + off;
    }
  }
  return 0;
}

int lvref_bn_forward_eval(int N, int C, int HW, const float *x, const float *gamma,
                          const float *beta, const float *rmean, const float *rvar, float eps,
                          int elu, float *y) {
#pragma omp parallel for schedule(static) if ((int64_t)N * HW * C > 16384)
  for (int c = 0; c < C; c++) {
    float is = (float)(1.0 / sqrt((double)rvar[c] + eps));
    float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
    float a = g * is, off = b - rmean[c] * a;
    for (int n = 0; n < N; n++) {
      const float *p = x + ((int64_t)n * C + c) * HW;
      float *q = y + ((int64_t)n * C + c) * HW;
      if (elu) for (int i = 0; i < HW; i++) q[i] = elu1(p[i] * a + off);
      else for (int i = 0; i < HW; i++) q[i] = p[i] * a + off;
    }
  }
  return 0;
}

static inline float delu(float gy, float y, int elu) { return elu ? (y > 0 ? gy : gy * (y + 1.f)) : gy; }

int lvref_bn_backward_train(int N, int C, int HW, const float *x, const float *y, const float *gy,
                            const float *gamma, const float *mean, const float *invstd, int elu,
                            float *gx, float *ggamma, float *gbeta) {
  int64_t M = (int64_t)N * HW;
#pragma omp parallel for schedule(static) if (M * C > 16384)
  for (int c = 0; c < C; c++) {
    double sg = 0, sgx = 0;
    float mu = mean[c], is = invstd[c];
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        float gz = delu(gy[o + i], elu ? y[o + i] : 0.f, elu);
        sg += gz;
        sgx += gz * (x[o + i] - mu) * is;
      }
    }
    if (ggamma) ggamma[c] += (float)sgx;
    if (gbeta) gbeta[c] += (float)sg;
    if (!gx) continue;
    float g = gamma ? gamma[c] : 1.f;
    float k = g * is, mg = (float)(sg / M), mgx = (float)(sgx / M);
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        float gz = delu(gy[o + i], elu ? y[o + i] : 0.f, elu);
        float xh = (x[o + i] - mu) * is;
        gx[o + i] += k * (gz - mg - xh * mgx);
      }
    }
  }
  return 0;
}

int lvref_bn_backward_eval(int N, int C, int HW, const float *x, const float *y, const float *gy,
                           const float *gamma, const float *rmean, const float *rvar, float eps,
                           int elu, float *gx, float *ggamma, float *gbeta) {
#pragma omp parallel for schedule(static) if ((int64_t)N * HW * C > 16384)
  for (int c = 0; c < C; c++) {
    float is = (float)(1.0 / sqrt((double)rvar[c] + eps));
    float g = gamma ? gamma[c] : 1.f, mu = rmean[c];
    double sg = 0, sgx = 0;
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        float gz = delu(gy[o + i], elu ? y[o + i] : 0.f, elu);
        sg += gz;
        sgx += gz * (x[o + i] - mu) * is;
        if (gx) gx[o + i] += gz * g * is;
      }
    }
    if (ggamma) ggamma[c] += (float)sgx;
    if (gbeta) gbeta[c] += (float)sg;
  }
  return 0;
}

/* ---------------- grid_sample (bilinear, zeros) ---------------- */
static inline float unnorm(float g, int size, int align, float *scale) {
  if (align) { *scale = 0.5f * (size - 1); return (g + 1.f) * *scale; }
  *scale = 0.5f * size;
  return ((g + 1.f) * size - 1.f) * 0.5f;
}

int lvref_grid_sample_forward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                              const float *x, const float *grid, float *y) {
  int64_t P = (int64_t)Ho * Wo, HWi = (int64_t)H * W;
  for (int n = 0; n < N; n++) {
    const float *xn = x + (int64_t)n * C * HWi;
    float *yn = y + (int64_t)n * C * P;
#pragma omp parallel for schedule(static) if (P * C > 16384)
    for (int64_t p = 0; p < P; p++) {
      float sx, sy;
      float ix = unnorm(grid[((int64_t)n * P + p) * 2], W, align_corners, &sx);
      float iy = unnorm(grid[((int64_t)n * P + p) * 2 + 1], H, align_corners, &sy);
      float fx = floorf(ix), fy = floorf(iy);
      int x0 = (int)fx, y0 = (int)fy, x1 = x0 + 1, y1 = y0 + 1;
      float wx1 = ix - fx, wx0 = 1.f - wx1, wy1 = iy - fy, wy0 = 1.f - wy1;
      int vx0 = x0 >= 0 && x0 < W, vx1 = x1 >= 0 && x1 < W, vy0 = y0 >= 0 && y0 < H, vy1 = y1 >= 0 && y1 < H;
      for (int c = 0; c < C; c++) {
        const float *xc = xn + c * HWi;
        float v = 0.f;
        if (vy0 && vx0) v += wy0 * wx0 * xc[(int64_t)y0 * W + x0];
        if (vy0 && vx1) v += wy0 * wx1 * xc[(int64_t)y0 * W + x1];
        if (vy1 && vx0) v += wy1 * wx0 * xc[(int64_t)y1 * W + x0];
        if (vy1 && vx1) v += wy1 * wx1 * xc[(int64_t)y1 * W + x1];
        yn[c * P + p] = v;
      }
    }
  }
  return 0;
}

int lvref_grid_sample_backward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                               const float *x, const float *grid, const float *gy, float *gx,
                               float *ggrid) {
  int64_t P = (int64_t)Ho * Wo, HWi = (int64_t)H * W;
#pragma omp parallel for schedule(static) if (N > 1 && P * C > 16384)
  for (int n = 0; n < N; n++) {
    const float *xn = x + (int64_t)n * C * HWi;
    const float *gyn = gy + (int64_t)n * C * P;
    float *gxn = gx ? gx + (int64_t)n * C * HWi : NULL;
    for (int64_t p = 0; p < P; p++) {
      float sx, sy;
      float ix = unnorm(grid[((int64_t)n * P + p) * 2], W, align_corners, &sx);
      float iy = unnorm(grid[((int64_t)n * P + p) * 2 + 1], H, align_corners, &sy);
      float fx = floorf(ix), fy = floorf(iy);
      int x0 = (int)fx, y0 = (int)fy, x1 = x0 + 1, y1 = y0 + 1;
      float wx1 = ix - fx, wx0 = 1.f - wx1, wy1 = iy - fy, wy0 = 1.f - wy1;
      int vx0 = x0 >= 0 && x0 < W, vx1 = x1 >= 0 && x1 < W, vy0 = y0 >= 0 && y0 < H, vy1 = y1 >= 0 && y1 < H;
      double dix = 0, diy = 0;
      for (int c = 0; c < C; c++) {
        const float *xc = xn + c * HWi;
        float g = gyn[c * P + p];
        float v00 = (vy0 && vx0) ? xc[(int64_t)y0 * W + x0] : 0.f;
        float v01 = (vy0 && vx1) ? xc[(int64_t)y0 * W + x1] : 0.f;
        float v10 = (vy1 && vx0) ? xc[(int64_t)y1 * W + x0] : 0.f;
        float v11 = (vy1 && vx1) ? xc[(int64_t)y1 * W + x1] : 0.f;
        dix += g * ((v01 - v00) * wy0 + (v11 - v10) * wy1);
        diy += g * ((v10 - v00) * wx0 + (v11 - v01) * wx1);
        if (gxn) {
          float *gc = gxn + c * HWi;
          if (vy0 && vx0) gc[(int64_t)y0 * W + x0] += g * wy0 * wx0;
          if (vy0 && vx1) gc[(int64_t)y0 * W + x1] += g * wy0 * wx1;
          if (vy1 && vx0) gc[(int64_t)y1 * W + x0] += g * wy1 * wx0;
          if (vy1 && vx1) gc[(int64_t)y1 * W + x1] += g * wy1 * wx1;
        }
      }
      if (ggrid) {
        ggrid[((int64_t)n * P + p) * 2] += (float)(dix * sx);
        ggrid[((int64_t)n * P + p) * 2 + 1] += (float)(diy * sy);
      }
    }
  }
  return 0;
}

/* ---------------- avg_pool2d (count_include_pad, floor) ---------------- */
int lvref_avg_pool2d_forward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph,
                             int pw, const float *x, float *y) {
  int Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
  float inv = 1.f / (kh * kw);
#pragma omp parallel for schedule(static) if ((int64_t)planes * Ho * Wo * kh * kw > 65536)
  for (int q = 0; q < planes; q++) {
    const float *xp = x + (int64_t)q * H * W;
    float *yp = y + (int64_t)q * Ho * Wo;
    for (int oy = 0; oy < Ho; oy++)
      for (int ox = 0; ox < Wo; ox++) {
        float s = 0.f;
        for (int i = 0; i < kh; i++) {
          int iy = oy * sh - ph + i;
          if (iy < 0 || iy >= H) continue;
          for (int j = 0; j < kw; j++) {
            int ix = ox * sw - pw + j;
            if (ix >= 0 && ix < W) s += xp[(int64_t)iy * W + ix];
          }
        }
        yp[(int64_t)oy * Wo + ox] = s * inv;
      }
  }
  return 0;
}

int lvref_avg_pool2d_backward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph,
                              int pw, const float *gy, float *gx) {
  int Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
  float inv = 1.f / (kh * kw);
#pragma omp parallel for schedule(static) if ((int64_t)planes * Ho * Wo * kh * kw > 65536)
  for (int q = 0; q < planes; q++) {
    float *xp = gx + (int64_t)q * H * W;
    const float *yp = gy + (int64_t)q * Ho * Wo;
    for (int oy = 0; oy < Ho; oy++)
      for (int ox = 0; ox < Wo; ox++) {
        float g = yp[(int64_t)oy * Wo + ox] * inv;
        for (int i = 0; i < kh; i++) {
          int iy = oy * sh - ph + i;
          if (iy < 0 || iy >= H) continue;
          for (int j = 0; j < kw; j++) {
            int ix = ox * sw - pw + j;
            if (ix >= 0 && ix < W) xp[(int64_t)iy * W + ix] += g;
          }
        }
      }
  }
  return 0;
}

/* ---------------- Poisson loss with its gradient ---------------- */
int lvref_poisson_loss(int64_t n, const float *yhat, const float *y, float eps, float scale,
                       double *loss, float *grad) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float d = yhat[i] + eps;
    s += (double)yhat[i] - (double)y[i] * log((double)d);
    if (grad) grad[i] = scale * (1.f - y[i] / d);
  }
  *loss = s * scale;
  return 0;
}
