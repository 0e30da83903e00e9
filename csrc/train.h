/* Captured graphs and the C training loop: gather -> replay forward -> backward -> Adam. */
#ifndef LV_TRAIN_H
#define LV_TRAIN_H
#include "lv.h"

typedef struct lv_graph {
  lv_capture cap;
  lv_tensor *x;     /* placeholder input, (B, ...) */
  lv_tensor *y;     /* placeholder target, (B, N); NULL for prediction graphs */
  lv_tensor *out;   /* model output, (B, N) */
  lv_tensor *loss;  /* scalar loss with its grad_fn; NULL for prediction graphs */
  int64_t batch;    /* B */
} lv_graph;

void lv_graph_free(lv_graph *g);

typedef struct lv_adam {
  int n;
  lv_tensor **p;    /* parameters (leaves, float32) */
  float **m, **v;   /* first/second moments, one array per parameter shaped like it */
  int *mdev;        /* the device (LV_CPU / LV_CUDA) each parameter's moments were allocated on */
  int64_t step;
  double lr, beta1, beta2, eps, weight_decay;
} lv_adam;

lv_adam *lv_adam_new(int n, lv_tensor **params, double lr, double b1, double b2, double eps, double wd);
void lv_adam_free(lv_adam *a);
/* one Adam step from the parameters' .grad (PyTorch's formula), then zero the grads */
int lv_adam_apply(lv_adam *a);
/* the same, with the weights that `plan` fuses stepped by it (csrc/fuse.h; plan nullable) */
struct lv_fuse_plan;
int lv_adam_apply_fused(lv_adam *a, struct lv_fuse_plan *plan);

/* called about every `interval` seconds from the loop; returns non-zero to stop (Ctrl-C) */
typedef int (*lv_progress_fn)(void *ctx, int64_t done, int64_t total, double loss_sum);

/* Gather rows `order[i*B ...]` of the blocks into the graph's placeholders. block_dev: where the
 * blocks live (LV_CPU: host arrays; LV_CUDA: device-resident copies, gathered on the device). */
int lv_graph_gather(lv_graph *g, const float *xblock, int64_t xrow, const float *yblock, int64_t yrow,
                    const int64_t *idx, int64_t nb, int block_dev);

/* One training epoch over `order` (n indices into the blocks), batches of full->batch and a
 * last short batch through `rem` (may be NULL when n % B == 0). `accum` batches per step; accum 0:
 * no optimizer step at all (gradients accumulate; the caller steps, e.g. cycling over scans).
 * Returns 0, -1 on error, 1 when stopped by the progress callback. */
int lv_train_epoch(lv_graph *full, lv_graph *rem, lv_adam *opt, const float *xblock, int64_t xrow,
                   const float *yblock, int64_t yrow, const int64_t *order, int64_t n, int accum,
                   lv_progress_fn cb, void *ctx, double *loss_sum, int block_dev);

/* one kind of batch in multi-scan training: a graph and its scan's blocks (host or device) */
typedef struct {
  lv_graph *g;
  const float *x, *y;
  int64_t xrow, yrow;
  int dev; /* LV_CPU / LV_CUDA: where the blocks live */
} lv_multi_kind;
/* one multi-scan epoch (csrc/train_multi.c): batch b runs kinds[kind[b]] on the g->batch rows
 * order[start[b]...]; Adam steps after every step_every batches; returns 0, 1 (stopped) or -1.
 * cb (every 0.1 s) gets the loss sum so far when report_loss, else 0 (on the GPU: no read-back;
 * the sum is read once at the end) */
int lv_train_multi_epoch(const lv_multi_kind *kinds, int nkinds, const int32_t *kind, const int64_t *start,
                         int64_t nbatch, const int64_t *order, lv_adam *opt, int step_every, lv_progress_fn cb,
                         void *ctx, int report_loss, double *loss_sum);

/* Predictions of the graphs for rows idx (n of them) into out (n, N). */
int lv_predict(lv_graph *full, lv_graph *rem, const float *xblock, int64_t xrow, const int64_t *idx,
               int64_t n, float *out, lv_progress_fn cb, void *ctx, int block_dev);
#endif
