/* Optimizer steps over many parameters in one call (PyTorch's update formulas, float32 state,
 * bias corrections in double). lv_adam_update is the one Adam: lviv_c.optim.Adam and the C
 * training loop (csrc/train.c) both step through it, into the backend's adam_step (lv_f_adam);
 * lv_sgd_update likewise into sgd_step (lv_f_sgd). */
#include "ops/nn_ops.h"
#include "cpu/kernels.h"
#include "backend.h"
#include <math.h>

int lv_adam_update(int nslots, lv_optim_slot *s, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int amsgrad, int maximize) {
  lv_adam_attr at = {(float)lr, (float)beta1, (float)beta2, (float)eps, (float)weight_decay, 0, amsgrad, maximize};
  for (int k = 0; k < nslots; k++) {
    lv_optim_slot *q = &s[k];
    if (!q->g) continue;
    if (q->step < 1) return lv_set_error(LV_EVALUE, "adam: step must be >= 1");
    if (amsgrad && !q->vmax) return lv_set_error(LV_EVALUE, "adam: amsgrad needs max_exp_avg_sq");
    const lv_backend *be = lv_backend_for(q->device);
    if (!be) return -1;
    at.step = q->step;
    if (be->adam_step(q->n, q->p, q->g, q->m, q->v, amsgrad ? q->vmax : NULL, &at) < 0) return -1;
  }
  return 0;
}

int lv_sgd_update(int nslots, lv_optim_slot *s, double lr, double momentum, double dampening,
                  double weight_decay, int nesterov, int maximize) {
  lv_sgd_attr at = {(float)lr, (float)momentum, (float)dampening, (float)weight_decay, nesterov, maximize, 0};
  for (int k = 0; k < nslots; k++) {
    lv_optim_slot *q = &s[k];
    if (!q->g) continue;
    if (at.momentum != 0.f && !q->m) return lv_set_error(LV_EVALUE, "sgd: momentum needs a buffer");
    const lv_backend *be = lv_backend_for(q->device);
    if (!be) return -1;
    at.first = q->step == 1;
    if (be->sgd_step(q->n, q->p, q->g, at.momentum != 0.f ? q->m : NULL, &at) < 0) return -1;
  }
  return 0;
}
