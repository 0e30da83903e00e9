#ifndef LV_ANALYSIS_H
#define LV_ANALYSIS_H
#include "lv.h"

typedef struct {
  double lr, momentum;
  double blur_sigma;      /* Gaussian blur of the gradient (0: off) */
  int clip;               /* clamp the free image to [clip_lo, clip_hi] after each step */
  double clip_lo, clip_hi;
  double l2_norm;         /* > 0: rescale each image to this L2 norm after each step */
} lv_optin_opts;

typedef int (*lv_progress_fn2)(void *ctx, int64_t done, int64_t total);

/* x: (K, ...) leaf image batch requiring grad; cap: the captured graph x -> out (K, N) -> loss;
 * neuron[k]: the neuron image k excites (trace[it*K + k] = out[k, neuron[k]] before step it). */
int lv_optimize_input(lv_tensor *x, lv_capture *cap, lv_tensor *loss, lv_tensor *out, const int64_t *neuron,
                      int iterations, const lv_optin_opts *o, float *trace, lv_progress_fn2 cb, void *ctx);

/* gradient receptive fields: x (K, ...) the image repeated K times, requiring grad; out (K, N)
 * the model's output at x, its graph kept. For the n neurons neuron[] (chunks of K), one
 * backward each through the SAME forward (retain_graph), seeded with out[k, neuron[s + k]] = 1;
 * rf (host, n x plane floats) gets d out[k, neuron] / d x[k]. */
int lv_gradient_rfs(lv_tensor *x, lv_tensor *out, const int64_t *neuron, int64_t n, float *rf);
#endif
