/* The C training loop over captured graphs. No Python here: the binding releases the GIL. */
#include "train.h"
#include "ops/nn_ops.h"
#include "cpu/kernels.h"
#include "backend.h"
#include "fuse.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lv_graph_free(lv_graph *g) {
  if (!g) return;
  lv_capture_free(&g->cap);
  lv_tensor_decref(g->x);
  lv_tensor_decref(g->y);
  lv_tensor_decref(g->out);
  lv_tensor_decref(g->loss);
  free(g);
}

lv_adam *lv_adam_new(int n, lv_tensor **params, double lr, double b1, double b2, double eps, double wd) {
  lv_adam *a = calloc(1, sizeof *a);
  if (!a) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  a->n = n;
  a->p = calloc(n ? n : 1, sizeof *a->p);
  a->m = calloc(n ? n : 1, sizeof *a->m);
  a->v = calloc(n ? n : 1, sizeof *a->v);
  a->mdev = calloc(n ? n : 1, sizeof *a->mdev);
  if (!a->p || !a->m || !a->v || !a->mdev) { lv_adam_free(a); lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  for (int i = 0; i < n; i++) {
    a->p[i] = params[i];
    lv_tensor_incref(params[i]);
    int64_t k = lv_numel(params[i]);
    /* moments live next to the parameter, in its backend's memory */
    const lv_backend *be = lv_backend_of(params[i]);
    a->mdev[i] = be->device;
    size_t nb = (size_t)(k ? k : 1) * sizeof(float);
    a->m[i] = be->alloc(nb);
    a->v[i] = a->m[i] ? be->alloc(nb) : NULL;
    if (!a->m[i] || !a->v[i] || be->memset0(a->m[i], nb) < 0 || be->memset0(a->v[i], nb) < 0) {
      lv_adam_free(a); return NULL;
    }
  }
  a->lr = lr; a->beta1 = b1; a->beta2 = b2; a->eps = eps; a->weight_decay = wd;
  return a;
}

void lv_adam_free(lv_adam *a) {
  if (!a) return;
  for (int i = 0; i < a->n; i++) {
    if (!a->p || !a->p[i]) continue; /* a partly built optimizer: p[i] set before its moments */
    const lv_backend *be = lv_backend_of(a->p[i]);
    if (a->m && a->m[i]) be->free(a->m[i]);
    if (a->v && a->v[i]) be->free(a->v[i]);
    lv_tensor_decref(a->p[i]);
  }
  free(a->p); free(a->m); free(a->v); free(a->mdev);
  free(a);
}

static const lv_op op_adam_prof = {"Adam", NULL, NULL, NULL};

int lv_adam_apply(lv_adam *a) { return lv_adam_apply_fused(a, NULL); }

int lv_adam_apply_fused(lv_adam *a, lv_fuse_plan *plan) {
  double t0 = lv_profiling() ? lv_prof_now() : 0, t_fused = 0;
  a->step++;
  for (int i = 0; i < a->n; i++) {
    lv_tensor *p = a->p[i];
    if (plan) { /* the weights the plan fuses step in lv_linear_adam_step (csrc/fuse.c) */
      double t1 = lv_profiling() ? lv_prof_now() : 0;
      int r = lv_fuse_step(plan, i, a);
      if (r < 0) return -1;
      if (lv_profiling()) t_fused += lv_prof_now() - t1;
      if (r) continue;
    }
    if (!p->grad) continue;
    /* the one Adam (csrc/optim.c, also behind lviv_c.optim.Adam) */
    lv_optim_slot slot = {lv_f32(p), lv_f32(p->grad), a->m[i], a->v[i], NULL, lv_numel(p), a->step, p->st->device};
    if (lv_adam_update(1, &slot, a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, 0, 0) < 0) return -1;
    if (p->st->device == LV_CPU) {
      p->grad_stale = 1; /* the next backward overwrites instead of adding (no zeroing pass) */
    } else if (lv_backend_of(p)->memset0(lv_data(p->grad), (size_t)slot.n * sizeof(float)) < 0) {
      return -1;
    }
  }
  if (lv_profiling()) lv_profile_add(&op_adam_prof, 0, lv_prof_now() - t0 - t_fused);
  return 0;
}

int lv_graph_gather(lv_graph *g, const float *xblock, int64_t xrow, const float *yblock, int64_t yrow,
                    const int64_t *idx, int64_t nb, int block_dev) {
  if (nb != g->batch) return lv_set_error(LV_EVALUE, "graph captured for batch %lld, got %lld", (long long)g->batch, (long long)nb);
  if (block_dev == LV_CUDA) { /* device-resident blocks: a gather kernel, no host copy */
    if (!lv_on_cuda(g->x)) return lv_set_error(LV_EVALUE, "the data blocks are on the GPU but the model's graph is on the CPU");
    if (lv_cuda->gather_rows_dev(lv_f32(g->x), xblock, xrow, idx, nb) < 0) return -1;
    if (g->y && yblock && lv_cuda->gather_rows_dev(lv_f32(g->y), yblock, yrow, idx, nb) < 0) return -1;
    return 0;
  }
  if (lv_on_cuda(g->x)) { /* host blocks -> device placeholders through pinned staging */
    if (lv_cuda->gather_rows(lv_f32(g->x), xblock, xrow, idx, nb) < 0) return -1;
    if (g->y && yblock && lv_cuda->gather_rows(lv_f32(g->y), yblock, yrow, idx, nb) < 0) return -1;
    return 0;
  }
  float *x = lv_f32(g->x);
  for (int64_t i = 0; i < nb; i++) memcpy(x + i * xrow, xblock + idx[i] * xrow, (size_t)xrow * sizeof(float));
  if (g->y && yblock) {
    float *y = lv_f32(g->y);
    for (int64_t i = 0; i < nb; i++) memcpy(y + i * yrow, yblock + idx[i] * yrow, (size_t)yrow * sizeof(float));
  }
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int lv_train_epoch(lv_graph *full, lv_graph *rem, lv_adam *opt, const float *xblock, int64_t xrow,
                   const float *yblock, int64_t yrow, const int64_t *order, int64_t n, int accum,
                   lv_progress_fn cb, void *ctx, double *loss_sum, int block_dev) {
  int64_t B = full->batch;
  int64_t nbatch = (n + B - 1) / B;
  int no_step = accum == 0; /* accum 0: backward only, the caller steps (multi-scan cycling) */
  if (accum < 1) accum = 1;
  double last = now(), total = 0;
  int since_step = 0, read_last = 0, rc = 0; /* read_last: total already read after the last batch */
  int dev = lv_on_cuda(full->loss);
  /* one pass over each large Linear weight per step where the graphs allow it (csrc/fuse.c) */
  lv_fuse_plan *plan = NULL;
  if (!no_step && accum == 1 && lv_fuse_plan_new(full, rem, opt, &plan) < 0) return -1;
  /* on the GPU the batch losses are summed on the device and read back only for progress
   * reports and at the end: no host synchronisation per batch */
  if (dev && lv_cuda->loss_accumulate(NULL, 1) < 0) { rc = -1; goto out; }
  for (int64_t b = 0; b < nbatch; b++) {
    int64_t s = b * B, nb = n - s < B ? n - s : B;
    lv_graph *g = nb == B ? full : rem;
    if (!g) { rc = lv_set_error(LV_ERUNTIME, "no graph for the last batch of %lld items", (long long)nb); goto out; }
    if (lv_graph_gather(g, xblock, xrow, yblock, yrow, order + s, nb, block_dev) < 0 ||
        lv_capture_replay(&g->cap) < 0) { rc = -1; goto out; }
    if (dev) { if (lv_cuda->loss_accumulate(lv_f32(g->loss), 0) < 0) { rc = -1; goto out; } }
    else total += lv_f32(g->loss)[0];
    if (lv_backward(g->loss, NULL) < 0) { rc = -1; goto out; }
    if (!no_step && (++since_step == accum || b == nbatch - 1)) {
      if (lv_adam_apply_fused(opt, plan) < 0) { rc = -1; goto out; }
      since_step = 0;
    }
    double t = now();
    if (cb && (t - last > 0.1 || b == 0 || b == nbatch - 1)) {
      last = t;
      if (dev && lv_cuda->loss_read(&total) < 0) { rc = -1; goto out; }
      read_last = b == nbatch - 1;
      if (cb(ctx, b + 1, nbatch, total)) { if (loss_sum) *loss_sum = total; rc = 1; goto out; }
    }
  }
  if (dev && !read_last && lv_cuda->loss_read(&total) < 0) { rc = -1; goto out; } /* one read per call at least */
  if (loss_sum) *loss_sum = total;
out:
  lv_fuse_plan_free(plan);
  return rc;
}

int lv_predict(lv_graph *full, lv_graph *rem, const float *xblock, int64_t xrow, const int64_t *idx,
               int64_t n, float *out, lv_progress_fn cb, void *ctx, int block_dev) {
  int64_t B = full->batch;
  int64_t N = lv_numel(full->out) / B;
  double last = now();
  for (int64_t s = 0; s < n; s += B) {
    int64_t nb = n - s < B ? n - s : B;
    lv_graph *g = nb == B ? full : rem;
    if (!g) return lv_set_error(LV_ERUNTIME, "no graph for the last batch of %lld items", (long long)nb);
    if (lv_graph_gather(g, xblock, xrow, NULL, 0, idx + s, nb, block_dev) < 0) return -1;
    if (lv_capture_replay(&g->cap) < 0) return -1;
    if (lv_copy_bytes(out + s * N, LV_CPU, lv_f32(g->out), g->out->st->device, (size_t)(nb * N) * sizeof(float)) < 0)
      return -1;
    double t = now();
    if (cb && t - last > 0.1) { last = t; if (cb(ctx, s + nb, n, 0)) return 1; }
  }
  return 0;
}
