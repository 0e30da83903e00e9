/* Input optimisation (most exciting inputs) and gradient receptive fields, on the device of the
 * image: every pass over image, gradient or output goes through the backend table
 * (csrc/backend.h), so a model on the GPU is analysed in place; only the neuron indices go in and
 * the activation trace / the receptive fields come out. */
#include "analysis.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* normalised taps k[0..2r] of a Gaussian of std sigma; r = ceil(3 sigma); NULL when r < 1 */
static float *gauss_taps(double sigma, int *r_out) {
  int r = (int)ceil(3 * sigma);
  *r_out = r;
  if (r < 1) return NULL;
  int kl = 2 * r + 1;
  float *k = malloc(sizeof(float) * kl);
  if (!k) { lv_set_error(LV_ENOMEM, "blur: out of memory"); return NULL; }
  double s = 0;
  for (int i = -r; i <= r; i++) { k[i + r] = (float)exp(-0.5 * i * i / (sigma * sigma)); s += k[i + r]; }
  for (int i = 0; i < kl; i++) k[i] = (float)(k[i] / s);
  return k;
}

/* neuron indices (host) into the backend's memory; NULL with error */
static int64_t *indices_to(const lv_backend *be, const int64_t *idx, int64_t n) {
  int64_t *d = be->alloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  if (d && n && be->memcpy_h2d(d, idx, sizeof(int64_t) * (size_t)n) < 0) { be->free(d); return NULL; }
  return d;
}

static int check_same_device(const char *what, lv_tensor *x, lv_tensor *o) {
  lv_tensor *ts[2] = {x, o};
  const char *names[2] = {"image", "output"};
  return lv_check_devices(what, ts, names, 2);
}

int lv_optimize_input(lv_tensor *x, lv_capture *cap, lv_tensor *loss, lv_tensor *out, const int64_t *neuron,
                      int iterations, const lv_optin_opts *o, float *trace, lv_progress_fn2 cb, void *ctx) {
  if (check_same_device("optimize_input", x, out) < 0) return -1;
  const lv_backend *be = lv_backend_of(x);
  int64_t K = x->shape[0], n = lv_numel(x), plane = n / (K ? K : 1);
  int64_t N = lv_numel(out) / (K ? K : 1);
  int64_t H = x->ndim >= 2 ? x->shape[x->ndim - 2] : 1, W = x->ndim >= 1 ? x->shape[x->ndim - 1] : plane;
  int on_host = x->st->device == LV_CPU;
  int r = 0, rc = 0, done = 0;
  float *taps = NULL, *tmp = NULL, *buf = NULL, *tr = NULL;
  int64_t *idx = NULL, ntr = (int64_t)iterations * K;
  if (o->blur_sigma > 0 && (taps = gauss_taps(o->blur_sigma, &r)) == NULL && r >= 1) return -1;
  /* every buffer allocated once: the loop itself allocates nothing */
  if (!(buf = be->alloc(sizeof(float) * (size_t)(n ? n : 1))) || be->memset0(buf, sizeof(float) * (size_t)n) < 0 ||
      !(idx = indices_to(be, neuron, K)) ||
      (taps && !(tmp = be->alloc(sizeof(float) * (size_t)n))) ||
      (!on_host && !(tr = be->alloc(sizeof(float) * (size_t)(ntr > 0 ? ntr : 1))))) {
    rc = -1;
    goto out;
  }
  if (on_host) tr = trace;
  for (int it = 0; it < iterations; it++) {
    if (lv_capture_replay(cap) < 0) { rc = -1; break; }
    if (be->index_cols(K, N, lv_f32(out), idx, tr + (int64_t)it * K, 0) < 0) { rc = -1; break; }
    done = it + 1;
    if (lv_backward(loss, NULL) < 0) { rc = -1; break; }
    if (!x->grad) { rc = lv_set_error(LV_ERUNTIME, "optimize_input: the loss does not depend on the image"); break; }
    float *g = lv_f32(x->grad);
    if (taps && be->blur_planes(n / (H * W), H, W, r, taps, g, tmp) < 0) { rc = -1; break; }
    if (be->momentum_step(n, lv_f32(x), g, buf, (float)o->lr, (float)o->momentum, o->clip, (float)o->clip_lo,
                          (float)o->clip_hi) < 0) { rc = -1; break; }
    if (o->l2_norm > 0 && be->renorm_rows(K, plane, lv_f32(x), o->l2_norm) < 0) { rc = -1; break; }
    if (cb && cb(ctx, it + 1, iterations)) { rc = 1; break; }
  }
  /* the trace crosses once, at the end */
  if (!on_host && done && be->memcpy_d2h(trace, tr, sizeof(float) * (size_t)(done * K)) < 0 && rc == 0) rc = -1;
out:
  free(taps);
  if (tmp) be->free(tmp);
  if (buf) be->free(buf);
  if (idx) be->free(idx);
  if (tr && !on_host) be->free(tr);
  return rc;
}

int lv_gradient_rfs(lv_tensor *x, lv_tensor *out, const int64_t *neuron, int64_t n, float *rf) {
  if (check_same_device("gradient_rf", x, out) < 0) return -1;
  if (out->ndim != 2 || out->shape[0] != x->shape[0])
    return lv_set_error(LV_EVALUE, "gradient_rf: expected the model's output shaped (batch, neurons)");
  const lv_backend *be = lv_backend_of(x);
  int64_t K = x->shape[0], N = out->shape[1], plane = lv_numel(x) / (K ? K : 1);
  int rc = 0;
  int64_t *idx = NULL;
  float *vals = NULL;
  int64_t shape[2] = {K, N};
  lv_tensor *seed = lv_tensor_new(2, shape, LV_F32, x->st->device, 1);
  if (!seed || !(idx = indices_to(be, neuron, n)) || !(vals = be->alloc(sizeof(float) * (size_t)(2 * K))) ||
      be->fill_f32(vals, 1.f, K) < 0 || be->fill_f32(vals + K, 0.f, K) < 0) {
    rc = -1;
    goto out;
  }
  /* the forward that made `out` is shared by every chunk: only the backward runs per chunk,
   * seeded with one neuron per copy of the image (rows past the last neuron stay zero) */
  for (int64_t s = 0; s < n; s += K) {
    int64_t k = n - s < K ? n - s : K;
    if (be->index_cols(k, N, lv_f32(seed), idx + s, vals, 1) < 0) { rc = -1; break; }
    if (lv_backward_ex(out, seed, 1) < 0) { rc = -1; break; }
    if (!x->grad) { rc = lv_set_error(LV_ERUNTIME, "gradient_rf: the output does not depend on the image"); break; }
    if (lv_copy_bytes(rf + s * plane, LV_CPU, lv_f32(x->grad), x->grad->st->device, sizeof(float) * (size_t)(k * plane)) < 0 ||
        be->fill_f32(lv_f32(x->grad), 0.f, lv_numel(x->grad)) < 0 ||
        be->index_cols(k, N, lv_f32(seed), idx + s, vals + K, 1) < 0) { rc = -1; break; }
  }
out:
  if (seed) lv_tensor_decref(seed);
  if (idx) be->free(idx);
  if (vals) be->free(vals);
  return rc;
}
