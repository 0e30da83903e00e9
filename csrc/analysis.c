/* Input optimisation in C (most exciting inputs): replay a captured graph whose leaf is the
 * image batch, backward, precondition the gradient, SGD with momentum, constrain. */
#include "analysis.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* separable Gaussian blur of each (H, W) plane, zero padding, in place */
static int blur_planes(float *g, int64_t P, int64_t H, int64_t W, double sigma) {
  int r = (int)ceil(3 * sigma);
  if (r < 1) return 0;
  int kl = 2 * r + 1;
  float *k = malloc(sizeof(float) * kl), *tmp = malloc(sizeof(float) * H * W);
  if (!k || !tmp) { free(k); free(tmp); return lv_set_error(LV_ENOMEM, "blur: out of memory"); }
  double s = 0;
  for (int i = -r; i <= r; i++) { k[i + r] = (float)exp(-0.5 * i * i / (sigma * sigma)); s += k[i + r]; }
  for (int i = 0; i < kl; i++) k[i] = (float)(k[i] / s);
  for (int64_t p = 0; p < P; p++) {
    float *x = g + p * H * W;
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++) {
        float a = 0;
        for (int i = -r; i <= r; i++) { int64_t q = xx + i; if (q >= 0 && q < W) a += k[i + r] * x[y * W + q]; }
        tmp[y * W + xx] = a;
      }
    for (int64_t y = 0; y < H; y++)
      for (int64_t xx = 0; xx < W; xx++) {
        float a = 0;
        for (int i = -r; i <= r; i++) { int64_t q = y + i; if (q >= 0 && q < H) a += k[i + r] * tmp[q * W + xx]; }
        x[y * W + xx] = a;
      }
  }
  free(k); free(tmp);
  return 0;
}

int lv_optimize_input(lv_tensor *x, lv_capture *cap, lv_tensor *loss, lv_tensor *out, const int64_t *neuron,
                      int iterations, const lv_optin_opts *o, float *trace, lv_progress_fn2 cb, void *ctx) {
  int64_t K = x->shape[0], plane = lv_numel(x) / K;
  int64_t N = lv_numel(out) / K;
  int64_t H = x->ndim >= 2 ? x->shape[x->ndim - 2] : 1, W = x->ndim >= 1 ? x->shape[x->ndim - 1] : plane;
  float *buf = calloc((size_t)lv_numel(x), sizeof(float));
  if (!buf) return lv_set_error(LV_ENOMEM, "optimize_input: out of memory");
  float *xd = lv_f32(x);
  int rc = 0;
  for (int it = 0; it < iterations; it++) {
    if (lv_capture_replay(cap) < 0) { rc = -1; break; }
    const float *od = lv_f32(out);
    for (int64_t k = 0; k < K; k++) trace[(int64_t)it * K + k] = od[k * N + neuron[k]];
    if (lv_backward(loss, NULL) < 0) { rc = -1; break; }
    if (!x->grad) { rc = lv_set_error(LV_ERUNTIME, "optimize_input: the loss does not depend on the image"); break; }
    float *g = lv_f32(x->grad);
    if (o->blur_sigma > 0 && blur_planes(g, lv_numel(x) / (H * W), H, W, o->blur_sigma) < 0) { rc = -1; break; }
    int64_t n = lv_numel(x);
    for (int64_t i = 0; i < n; i++) {
      buf[i] = (float)o->momentum * buf[i] + g[i];
      xd[i] -= (float)o->lr * buf[i];
      g[i] = 0.f;
    }
    if (o->clip) for (int64_t i = 0; i < n; i++) xd[i] = xd[i] < o->clip_lo ? (float)o->clip_lo : (xd[i] > o->clip_hi ? (float)o->clip_hi : xd[i]);
    if (o->l2_norm > 0)
      for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t i = 0; i < plane; i++) s += (double)xd[k * plane + i] * xd[k * plane + i];
        float f = s > 0 ? (float)(o->l2_norm / sqrt(s)) : 1.f;
        for (int64_t i = 0; i < plane; i++) xd[k * plane + i] *= f;
      }
    if (cb && cb(ctx, it + 1, iterations)) { rc = 1; break; }
  }
  free(buf);
  return rc;
}
