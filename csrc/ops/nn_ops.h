/* Neural-network ops of the C core (autograd nodes): linear, conv2d, batch_norm (+ fused ELU),
 * grid_sample, avg_pool2d, pad, dropout, poisson_loss; and the optimizer steps.
 *
 * The ops validate their arguments (messages name the op and the shapes) and call the CPU compute
 * kernels of csrc/cpu/kernels.h on raw buffers: forward outputs are overwritten, backward
 * gradients are accumulated (+=) into the zeroed buffers autograd hands in. */
#ifndef LV_NN_OPS_H
#define LV_NN_OPS_H
#include "lv.h"

/* ---------------- autograd ops ---------------- */
/* y = x @ w^T + b; x (..., K), w (O, K), b (O) or NULL */
lv_tensor *lv_linear(lv_tensor *x, lv_tensor *w, lv_tensor *b);
int lv_node_is_linear(const lv_node *n); /* a node made by lv_linear */
/* x (N, C, H, W), w (O, C/groups, kh, kw), b (O) or NULL; symmetric zero padding */
lv_tensor *lv_conv2d(lv_tensor *x, lv_tensor *w, lv_tensor *b, int sh, int sw, int ph, int pw,
                     int dh, int dw, int groups);
/* x (N, C, ...); weight/bias (C) or NULL; running_mean/var (C) or NULL; nbt: int64 scalar or
 * NULL. use_batch_stats: normalise with the batch statistics (training, or no running stats);
 * then the running stats (when given) are updated with factor momentum, or 1/nbt when
 * momentum < 0 (cumulative average); nbt is incremented on each batch-stats forward.
 * fuse_elu: y = elu(bn(x)) (alpha 1). Forward replays update the running stats again. */
lv_tensor *lv_batch_norm(lv_tensor *x, lv_tensor *weight, lv_tensor *bias, lv_tensor *running_mean,
                         lv_tensor *running_var, lv_tensor *nbt, int use_batch_stats,
                         double momentum, double eps, int fuse_elu);
/* x (N, C, H, W), grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo); bilinear, zeros padding */
lv_tensor *lv_grid_sample(lv_tensor *x, lv_tensor *grid, int align_corners);
/* x (N, C, H, W) or (C, H, W); count_include_pad, floor mode */
lv_tensor *lv_avg_pool2d(lv_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw);
/* constant pad; pads: (before, after) pairs starting from the LAST dim, npairs <= ndim */
lv_tensor *lv_pad(lv_tensor *x, int npairs, const int64_t *pads, double value);
/* inverted dropout: training -> x * mask / (1 - p), mask ~ Bernoulli(1 - p), fresh per forward */
lv_tensor *lv_dropout(lv_tensor *x, double p);
/* scalar scale * sum(yhat - y * log(yhat + eps)); mean: scale = 1 / numel */
lv_tensor *lv_poisson_loss_op(lv_tensor *yhat, lv_tensor *y, double eps, int mean);

/* ---------------- optimizers (csrc/optim.c): one call updates many parameters ---------------- */
typedef struct {
  float *p;        /* (n) parameter values */
  const float *g;  /* (n) gradient, NULL: skipped */
  float *m;        /* (n) Adam exp_avg / SGD momentum buffer (NULL when momentum == 0) */
  float *v;        /* (n) Adam exp_avg_sq */
  float *vmax;     /* (n) Adam max_exp_avg_sq (amsgrad), else NULL */
  int64_t n;
  int64_t step;    /* Adam: step count after this update (>= 1); SGD: 1 on the first step */
  int device;      /* LV_CPU or LV_CUDA: where p, g and the state live (all on one device) */
} lv_optim_slot;

int lv_adam_update(int nslots, lv_optim_slot *s, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int amsgrad, int maximize);
int lv_sgd_update(int nslots, lv_optim_slot *s, double lr, double momentum, double dampening,
                  double weight_decay, int nesterov, int maximize);

#endif
