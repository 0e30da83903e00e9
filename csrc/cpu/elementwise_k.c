/* Elementwise kernels: ELU, fused Poisson loss + gradient, avg_pool2d, Adam / SGD updates. */
#include "cpu/kernels.h"
#include "formulas.h"
#include <math.h>
#include <stdlib.h>

#define PAR_MIN 32768 /* below this many elements, stay single-threaded */

int lv_elu_forward(int64_t n, const float *x, float alpha, float *y) {
  if (n < 0 || (n && (!x || !y))) return lv_set_error(LV_EVALUE, "elu: bad arguments"), -1;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) y[i] = lv_f_elu(x[i], alpha);
  return 0;
}

int lv_elu_backward(int64_t n, const float *y, const float *gy, float alpha, float *gx) {
  if (n < 0 || (n && (!y || !gy || !gx))) return lv_set_error(LV_EVALUE, "elu_backward: bad arguments"), -1;
  if (!(alpha > 0.f)) return lv_set_error(LV_EVALUE, "elu_backward: alpha must be > 0 (got %g)", alpha), -1;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) gx[i] += lv_f_elu_grad(y[i] > 0.f, y[i], gy[i], alpha);
  return 0;
}

int lv_poisson_loss(int64_t n, const float *yhat, const float *y, float eps, float scale,
                    double *loss, float *grad) {
  if (n < 0 || !loss || (n && (!yhat || !y))) return lv_set_error(LV_EVALUE, "poisson_loss: bad arguments"), -1;
  double s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    s += lv_f_poisson_term(yhat[i], y[i], eps);
    if (grad) grad[i] = lv_f_poisson_grad(yhat[i], y[i], eps, scale);
  }
  *loss = scale * s;
  return 0;
}

static int pool_check(const char *who, int planes, int H, int W, int kh, int kw, int sh, int sw,
                      int ph, int pw, int *Ho, int *Wo) {
  if (planes < 0 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 ||
      2 * ph > kh || 2 * pw > kw || H + 2 * ph < kh || W + 2 * pw < kw) {
    lv_set_error(LV_EVALUE, "%s: bad arguments (input %dx%d, kernel %dx%d, stride %d,%d, padding %d,%d; "
                 "padding must be at most half the kernel)", who, H, W, kh, kw, sh, sw, ph, pw);
    return -1;
  }
  *Ho = (H + 2 * ph - kh) / sh + 1;
  *Wo = (W + 2 * pw - kw) / sw + 1;
  return 0;
}

int lv_avg_pool2d_forward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                          const float *x, float *y) {
  int Ho, Wo;
  if (pool_check("avg_pool2d", planes, H, W, kh, kw, sh, sw, ph, pw, &Ho, &Wo)) return -1;
#pragma omp parallel for schedule(static) if ((double)planes * H * W > 65536)
  for (int p = 0; p < planes; p++) {
    const float *xp = x + (size_t)p * H * W;
    float *yp = y + (size_t)p * Ho * Wo;
    for (int oy = 0; oy < Ho; oy++) {
      int y0 = oy * sh - ph, y1 = y0 + kh;
      int ye = y1 < H + ph ? y1 : H + ph;
      int ya = y0 < 0 ? 0 : y0, yb = y1 < H ? y1 : H;
      for (int ox = 0; ox < Wo; ox++) {
        int x0 = ox * sw - pw, x1 = x0 + kw;
        int xe = x1 < W + pw ? x1 : W + pw;
        int xa = x0 < 0 ? 0 : x0, xb = x1 < W ? x1 : W;
        float s = 0.f;
        for (int iy = ya; iy < yb; iy++)
          for (int ix = xa; ix < xb; ix++) s += xp[(size_t)iy * W + ix];
        yp[(size_t)oy * Wo + ox] = s / (float)((ye - y0) * (xe - x0));
      }
    }
  }
  return 0;
}

int lv_avg_pool2d_backward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                           const float *gy, float *gx) {
  int Ho, Wo;
  if (pool_check("avg_pool2d_backward", planes, H, W, kh, kw, sh, sw, ph, pw, &Ho, &Wo)) return -1;
#pragma omp parallel for schedule(static) if ((double)planes * H * W > 65536)
  for (int p = 0; p < planes; p++) {
    const float *gp = gy + (size_t)p * Ho * Wo;
    float *xp = gx + (size_t)p * H * W;
    for (int oy = 0; oy < Ho; oy++) {
      int y0 = oy * sh - ph, y1 = y0 + kh;
      int ye = y1 < H + ph ? y1 : H + ph;
      int ya = y0 < 0 ? 0 : y0, yb = y1 < H ? y1 : H;
      for (int ox = 0; ox < Wo; ox++) {
        int x0 = ox * sw - pw, x1 = x0 + kw;
        int xe = x1 < W + pw ? x1 : W + pw;
        int xa = x0 < 0 ? 0 : x0, xb = x1 < W ? x1 : W;
        float g = gp[(size_t)oy * Wo + ox] / (float)((ye - y0) * (xe - x0));
        for (int iy = ya; iy < yb; iy++)
          for (int ix = xa; ix < xb; ix++) xp[(size_t)iy * W + ix] += g;
      }
    }
  }
  return 0;
}

int lv_adam_step(int64_t n, float *p, const float *g, float *m, float *v, float *vmax, const lv_adam_attr *a) {
  if (n < 0 || a->step < 1 || (n && (!p || !g || !m || !v)) || (a->amsgrad && n && !vmax))
    return lv_set_error(LV_EVALUE, "adam: bad arguments (n %lld, step %lld; step counts from 1; amsgrad needs "
                        "max_exp_avg_sq)", (long long)n, (long long)a->step), -1;
  lv_adam_consts c = lv_f_adam_consts(a->lr, a->beta1, a->beta2, a->step);
  float b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
  if (!a->amsgrad && !a->maximize) { /* the common case, vectorised */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) lv_f_adam(&p[i], g[i], &m[i], &v[i], NULL, c, b1, b2, eps, wd);
    return 0;
  }
  float sg = a->maximize ? -1.f : 1.f;
  float *vm = a->amsgrad ? vmax : NULL;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) lv_f_adam(&p[i], sg * g[i], &m[i], &v[i], vm ? &vm[i] : NULL, c, b1, b2, eps, wd);
  return 0;
}

int lv_sgd_step(int64_t n, float *p, const float *g, float *buf, const lv_sgd_attr *a) {
  if (n < 0 || !a || (n && (!p || !g)) || (a->momentum != 0.f && n && !buf))
    return lv_set_error(LV_EVALUE, "sgd: bad arguments (momentum needs a buffer)"), -1;
  if (a->nesterov && (a->momentum <= 0.f || a->dampening != 0.f))
    return lv_set_error(LV_EVALUE, "sgd: nesterov needs momentum > 0 and zero dampening"), -1;
  float sg = a->maximize ? -1.f : 1.f, *b = a->momentum != 0.f ? buf : NULL;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++)
    lv_f_sgd(&p[i], sg * g[i], b ? &b[i] : NULL, a->lr, a->momentum, a->dampening, a->weight_decay,
             a->nesterov, a->first);
  return 0;
}
