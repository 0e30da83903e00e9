/* Optimizer steps over many parameters in one call (PyTorch's update formulas, float32 state,
 * bias corrections in double). Used by lviv_c.optim and the C training loop. */
#include "ops/nn_ops.h"
#include "cpu/kernels.h"
#include "cuda_dispatch.h"
#include <math.h>

int lv_adam_update(int nslots, lv_optim_slot *s, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int amsgrad, int maximize) {
  for (int k = 0; k < nslots; k++) {
    lv_optim_slot *q = &s[k];
    if (!q->g) continue;
    if (q->step < 1) return lv_set_error(LV_EVALUE, "adam: step must be >= 1");
    if (amsgrad && !q->vmax) return lv_set_error(LV_EVALUE, "adam: amsgrad needs max_exp_avg_sq");
    if (q->device == LV_CUDA) { /* the backend's Adam kernel (same formula) */
      if (amsgrad || maximize)
        return lv_set_error(LV_ERUNTIME, "adam: amsgrad and maximize are not supported for CUDA parameters yet");
      if (!lv_cuda) return lv_set_error(LV_ERUNTIME, "adam: CUDA backend not loaded");
      if (lv_cuda->adam_step(q->n, q->p, q->g, q->m, q->v, (float)lr, (float)beta1, (float)beta2, (float)eps,
                             (float)weight_decay, q->step) < 0)
        return -1;
      continue;
    }
    if (!amsgrad && !maximize) { /* the common case: the SIMD kernel */
      if (lv_adam_step(q->n, q->p, q->g, q->m, q->v, (float)lr, (float)beta1, (float)beta2, (float)eps,
                       (float)weight_decay, q->step) < 0)
        return -1;
      continue;
    }
    double bc1 = 1.0 - pow(beta1, (double)q->step), bc2 = 1.0 - pow(beta2, (double)q->step);
    float step_size = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    float b1 = (float)beta1, b2 = (float)beta2, wd = (float)weight_decay, e = (float)eps;
    float *p = q->p, *m = q->m, *v = q->v, *vm = q->vmax;
    const float *g = q->g;
    int64_t n = q->n;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
      float gi = maximize ? -g[i] : g[i];
      if (wd != 0.f) gi += wd * p[i];
      m[i] += (gi - m[i]) * (1.f - b1);
      v[i] = v[i] * b2 + (1.f - b2) * gi * gi;
      float vv = v[i];
      if (amsgrad) { if (vm[i] < vv) vm[i] = vv; vv = vm[i]; }
      float denom = sqrtf(vv) / bc2s + e;
      p[i] -= step_size * m[i] / denom;
    }
  }
  return 0;
}

int lv_sgd_update(int nslots, lv_optim_slot *s, double lr, double momentum, double dampening,
                  double weight_decay, int nesterov, int maximize) {
  float mo = (float)momentum, da = (float)dampening, wd = (float)weight_decay, l = (float)lr;
  for (int k = 0; k < nslots; k++) {
    lv_optim_slot *q = &s[k];
    if (!q->g) continue;
    if (q->device == LV_CUDA)
      return lv_set_error(LV_ERUNTIME, "sgd: CUDA parameters are not supported yet (use Adam, or the model on the CPU)");
    if (mo != 0.f && !q->m) return lv_set_error(LV_EVALUE, "sgd: momentum needs a buffer");
    float *p = q->p, *b = q->m;
    const float *g = q->g;
    int64_t n = q->n;
    int first = q->step == 1;
    if (!maximize) {
      if (lv_sgd_step(n, p, g, b, l, mo, da, wd, nesterov, first) < 0) return -1;
      continue;
    }
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
      float d = maximize ? -g[i] : g[i];
      if (wd != 0.f) d += wd * p[i];
      if (mo != 0.f) {
        b[i] = first ? d : b[i] * mo + (1.f - da) * d;
        d = nesterov ? d + mo * b[i] : b[i];
      }
      p[i] -= l * d;
    }
  }
  return 0;
}
