/* The CPU backend: the lv_backend table (csrc/backend.h) filled with the CPU kernels
 * (csrc/cpu/kernels.h) and the CPU loops of the generic op nodes (csrc/cpu/cpu_ops.h), plus the
 * thin adapters where a kernel's C signature differs from the table's. */
#include "backend.h"
#include "cpu/cpu_ops.h"
#include "cpu/kernels.h"
#include "formulas.h"
#include <stdlib.h>
#include <string.h>

/* ---- memory: host memory (tensor storage itself is allocated by lv_storage_new) ---- */
static void *cpu_alloc(size_t nbytes) {
  void *p = malloc(nbytes ? nbytes : 1);
  if (!p) lv_set_error(LV_ENOMEM, "out of memory allocating %zu bytes", nbytes);
  return p;
}
static void cpu_free(void *p) { free(p); }
static int cpu_memcpy(void *dst, const void *src, size_t n) {
  if (n) memmove(dst, src, n);
  return 0;
}
static int cpu_memset0(void *p, size_t n) {
  if (n) memset(p, 0, n);
  return 0;
}
static int cpu_synchronize(void) { return 0; }

/* ---- small kernels ---- */
static int cpu_add_into(float *d, const float *s, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) d[i] += s[i];
  return 0;
}
static int cpu_mul_add(float *d, const float *a, const float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++) d[i] += a[i] * b[i];
  return 0;
}
static int cpu_where_fwd(int64_t n, const float *c, const float *a, const float *b, float *o) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) o[i] = lv_f_where(c[i], a[i], b[i]);
  return 0;
}
static int cpu_where_bwd(int64_t n, const float *c, const float *g, float *ga, float *gb) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    if (ga) ga[i] += lv_f_where(c[i], g[i], 0.f);
    if (gb) gb[i] += lv_f_where(c[i], 0.f, g[i]);
  }
  return 0;
}
static int cpu_cast(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n) {
  if (dst_dtype == src_dtype) memcpy(dst, src, (size_t)n * lv_dtype_size(dst_dtype));
  else if (dst_dtype == LV_F32) { const int64_t *s = src; float *d = dst; for (int64_t i = 0; i < n; i++) d[i] = (float)s[i]; }
  else { const float *s = src; int64_t *d = dst; for (int64_t i = 0; i < n; i++) d[i] = (int64_t)s[i]; }
  return 0;
}
static int cpu_fill_f32(float *d, float value, int64_t n) {
  for (int64_t i = 0; i < n; i++) d[i] = value;
  return 0;
}

/* ---- NN kernels with the table's signatures ---- */
static int cpu_bn_forward_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                                float eps, int elu, float *y, float *mean, float *invstd, float *var_unbiased) {
  return elu ? lv_bn_elu_forward_train(N, C, HW, x, gamma, beta, eps, y, mean, invstd, var_unbiased)
             : lv_batchnorm_forward_train(N, C, HW, x, gamma, beta, eps, y, mean, invstd, var_unbiased);
}
static int cpu_bn_forward_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                               const float *rmean, const float *rvar, float eps, int elu, float *y) {
  return elu ? lv_bn_elu_forward_eval(N, C, HW, x, gamma, beta, rmean, rvar, eps, y)
             : lv_batchnorm_forward_eval(N, C, HW, x, gamma, beta, rmean, rvar, eps, y);
}
static int cpu_bn_backward_train(int N, int C, int HW, const float *x, const float *y, const float *gy,
                                 const float *gamma, const float *mean, const float *invstd, int elu, float *gx,
                                 float *ggamma, float *gbeta) {
  return elu ? lv_bn_elu_backward_train(N, C, HW, x, y, gy, gamma, mean, invstd, gx, ggamma, gbeta)
             : lv_batchnorm_backward_train(N, C, HW, x, gy, gamma, mean, invstd, gx, ggamma, gbeta);
}
static int cpu_bn_backward_eval(int N, int C, int HW, const float *x, const float *y, const float *gy,
                                const float *gamma, const float *rmean, const float *rvar, float eps, int elu,
                                float *gx, float *ggamma, float *gbeta) {
  return elu ? lv_bn_elu_backward_eval(N, C, HW, x, y, gy, gamma, rmean, rvar, eps, gx, ggamma, gbeta)
             : lv_batchnorm_backward_eval(N, C, HW, x, gy, gamma, rmean, rvar, eps, gx, ggamma, gbeta);
}
static int cpu_bn_track(int C, double momentum, const float *mean, const float *var_unbiased, float *rmean,
                        float *rvar, int64_t *nbt) {
  double f = lv_f_bn_factor(momentum, nbt ? ++nbt[0] : 0);
  if (rmean && rvar)
    for (int c = 0; c < C; c++) {
      rmean[c] = lv_f_bn_running(rmean[c], mean[c], f);
      rvar[c] = lv_f_bn_running(rvar[c], var_unbiased[c], f);
    }
  return 0;
}
static int cpu_avg_pool2d_forward(const lv_pool2d_desc *d, const float *x, float *y) {
  return lv_avg_pool2d_forward(d->planes, d->H, d->W, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw, x, y);
}
static int cpu_avg_pool2d_backward(const lv_pool2d_desc *d, const float *gy, float *gx) {
  return lv_avg_pool2d_backward(d->planes, d->H, d->W, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw, gy, gx);
}
/* constant pad: rows of the last dim are copied with memcpy (forward) / accumulated (backward) */
static void pad_walk(const lv_pad_desc *d, const float *x, float *y, const float *gy, float *gx) {
  int nd = d->nd;
  int64_t last = nd ? d->in[nd - 1] : 1, rows = 1, ost[LV_MAXDIM], s = 1;
  for (int i = 0; i < nd; i++) rows *= d->in[i];
  rows = last ? rows / last : 0;
  for (int i = nd - 1; i >= 0; i--) { ost[i] = s; s *= d->out[i]; }
  for (int64_t r = 0; r < rows; r++) {
    int64_t rem = r, off = nd ? d->before[nd - 1] : 0;
    for (int i = nd - 2; i >= 0; i--) {
      int64_t idx = rem % d->in[i];
      rem /= d->in[i];
      off += (idx + d->before[i]) * ost[i];
    }
    if (y) memcpy(y + off, x + r * last, sizeof(float) * (size_t)last);
    else for (int64_t k = 0; k < last; k++) gx[r * last + k] += gy[off + k];
  }
}
static int cpu_pad_forward(const lv_pad_desc *d, float value, const float *x, float *y) {
  int64_t N = 1;
  for (int i = 0; i < d->nd; i++) N *= d->out[i];
  for (int64_t i = 0; i < N; i++) y[i] = value;
  pad_walk(d, x, y, NULL, NULL);
  return 0;
}
static int cpu_pad_backward(const lv_pad_desc *d, const float *gy, float *gx) {
  pad_walk(d, NULL, NULL, gy, gx);
  return 0;
}
/* the counter-based mask of csrc/formulas.h: the same as the GPU's for the same seed */
static int cpu_dropout_forward(int64_t n, const float *x, double p, uint64_t seed, float *mask, float *y) {
  float keep = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.f;
#pragma omp parallel for schedule(static) if (n > 100000)
  for (int64_t i = 0; i < n; i++) {
    mask[i] = lv_f_dropout_mask(seed, i, p, keep);
    y[i] = x[i] * mask[i];
  }
  return 0;
}
static int cpu_poisson_loss(int64_t n, const float *yhat, const float *y, float eps, float scale, float *loss,
                            float *grad) {
  double l;
  int rc = lv_poisson_loss(n, yhat, y, eps, scale, &l, grad);
  loss[0] = (float)l;
  return rc;
}
static int cpu_poisson_loss_backward(int64_t n, const float *gout, const float *grad, const float *yhat, float eps,
                                     float scale, float *gyhat, float *gy) {
  float g = gout[0];
  if (gyhat)
    for (int64_t i = 0; i < n; i++) gyhat[i] += g * grad[i];
  if (gy)
    for (int64_t i = 0; i < n; i++) gy[i] -= lv_f_poisson_grad_target(yhat[i], eps, scale, g);
  return 0;
}

const lv_backend lv_cpu_backend = {
    .abi = LV_BACKEND_ABI,
    .table_size = (int)sizeof(lv_backend),
    .name = "cpu",
    .device = LV_CPU,
    .core_set_error = NULL,
    .core_rng_next = NULL,
    .core_flags = NULL,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memcpy_h2d = cpu_memcpy,
    .memcpy_d2h = cpu_memcpy,
    .memcpy_d2d = cpu_memcpy,
    .memset0 = cpu_memset0,
    .synchronize = cpu_synchronize,
    .binary_fwd = lv_cpu_binary_fwd,
    .binary_bwd = lv_cpu_binary_bwd,
    .unary_fwd = lv_cpu_unary_fwd,
    .unary_bwd = lv_cpu_unary_bwd,
    .reduce_fwd = lv_cpu_reduce_fwd,
    .reduce_bwd = lv_cpu_reduce_bwd,
    .matmul_fwd = lv_cpu_matmul_fwd,
    .matmul_bwd = lv_cpu_matmul_bwd,
    .linear_fwd = lv_cpu_linear_fwd,
    .linear_bwd = lv_cpu_linear_bwd,
    .permute_fwd = lv_cpu_permute_fwd,
    .permute_bwd = lv_cpu_permute_bwd,
    .slice_fwd = lv_cpu_slice_fwd,
    .slice_bwd = lv_cpu_slice_bwd,
    .isel_fwd = lv_cpu_isel_fwd,
    .isel_bwd = lv_cpu_isel_bwd,
    .cat_fwd = lv_cpu_cat_fwd,
    .cat_bwd = lv_cpu_cat_bwd,
    .expand_fwd = lv_cpu_expand_fwd,
    .expand_bwd = lv_cpu_expand_bwd,
    .add_into = cpu_add_into,
    .mul_add = cpu_mul_add,
    .where_fwd = cpu_where_fwd,
    .where_bwd = cpu_where_bwd,
    .cast = cpu_cast,
    .fill_f32 = cpu_fill_f32,
    .conv2d_workspace_floats = lv_conv2d_workspace_floats,
    .conv2d_forward = lv_conv2d_forward,
    .conv2d_backward_data = lv_conv2d_backward_data,
    .conv2d_backward_weight = lv_conv2d_backward_weight,
    .bn_forward_train = cpu_bn_forward_train,
    .bn_forward_eval = cpu_bn_forward_eval,
    .bn_backward_train = cpu_bn_backward_train,
    .bn_backward_eval = cpu_bn_backward_eval,
    .bn_track = cpu_bn_track,
    .grid_sample_forward = lv_grid_sample_forward,
    .grid_sample_backward = lv_grid_sample_backward,
    .avg_pool2d_forward = cpu_avg_pool2d_forward,
    .avg_pool2d_backward = cpu_avg_pool2d_backward,
    .pad_forward = cpu_pad_forward,
    .pad_backward = cpu_pad_backward,
    .dropout_forward = cpu_dropout_forward,
    .poisson_loss = cpu_poisson_loss,
    .poisson_loss_backward = cpu_poisson_loss_backward,
    .readout_forward = lv_readout_forward,
    .readout_backward = lv_readout_backward,
    .readout_pos_forward = lv_readout_pos_forward,
    .readout_pos_backward = lv_readout_pos_backward,
    .adam_step = lv_adam_step,
    .sgd_step = lv_sgd_step,
    .gather_rows = NULL, /* device-only entries: the CPU loop reads host blocks directly */
    .gather_rows_dev = NULL,
    .loss_accumulate = NULL,
    .loss_read = NULL,
    .index_cols = lv_cpu_index_cols,
    .blur_planes = lv_cpu_blur_planes,
    .momentum_step = lv_cpu_momentum_step,
    .renorm_rows = lv_cpu_renorm_rows,
};
