/* The CUDA op table: the C core's only view of the GPU backend.
 *
 * lviv_c._cuda (cuda/ (*.cu), built by nvcc) fills one lv_cuda_table and hands it to the core as a
 * capsule (_C._set_cuda_table); until then `lv_cuda` is NULL and every device allocation fails
 * with "CUDA backend not loaded". The core never links libcudart: it only calls through here.
 *
 * Conventions:
 *  - every entry returns 0 on success, -1 after calling core_set_error (filled in by the core
 *    before the table is used) with a message naming the op and the CUDA/cuBLAS/cuDNN error;
 *  - node-level entries (`*_fwd(lv_node *)`, `*_bwd(lv_node *, gout, gin)`) have exactly the
 *    semantics of the CPU op of the same name in csrc/ops/ (*.c) (forward overwrites node->out,
 *    backward ADDS into the zeroed gin[i] it is given, gin[i] NULL: not needed); every tensor
 *    they see lives on the device;
 *  - kernel-level entries mirror csrc/cpu/kernels.h (same arguments, device pointers);
 *  - all work is queued on one stream owned by the backend; only the d2h copies and
 *    synchronize() wait for it. */
#ifndef LV_CUDA_DISPATCH_H
#define LV_CUDA_DISPATCH_H
#include "lv.h"
#include "cpu/kernels.h"

#define LV_CUDA_TABLE_ABI 3

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lv_cuda_table {
  int abi;          /* LV_CUDA_TABLE_ABI */
  int table_size;   /* sizeof(lv_cuda_table) as compiled by the backend */
  /* set by the core when it receives the table; the backend reports errors through it */
  int (*core_set_error)(int kind, const char *msg);

  /* ---- memory (bytes) ---- */
  void *(*alloc)(size_t nbytes);                       /* NULL + error on failure */
  void (*free)(void *p);                               /* stream-ordered, never fails */
  int (*memcpy_h2d)(void *dst, const void *src, size_t n);
  int (*memcpy_d2h)(void *dst, const void *src, size_t n); /* waits for the stream */
  int (*memcpy_d2d)(void *dst, const void *src, size_t n);
  int (*memset0)(void *p, size_t n);
  int (*synchronize)(void);

  /* ---- generic ops (node level, csrc/ops/ (*.c)) ---- */
  int (*binary_fwd)(lv_node *n);
  int (*binary_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*unary_fwd)(lv_node *n);
  int (*unary_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*reduce_fwd)(lv_node *n);
  int (*reduce_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*matmul_fwd)(lv_node *n);
  int (*matmul_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*permute_fwd)(lv_node *n);
  int (*permute_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*slice_fwd)(lv_node *n);
  int (*slice_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*isel_fwd)(lv_node *n);
  int (*isel_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*cat_fwd)(lv_node *n);
  int (*cat_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*expand_fwd)(lv_node *n);
  int (*expand_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  /* dst (n floats) += src (n floats): reshape/clone backward, autograd accumulation */
  int (*add_into)(float *dst, const float *src, int64_t n);
  /* dtype cast between float32 and int64 (n elements; same dtype: plain copy) */
  int (*cast)(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n);
  /* d[i] = value for n floats */
  int (*fill_f32)(float *d, float value, int64_t n);

  /* ---- NN kernels (kernel level, csrc/cpu/kernels.h semantics) ---- */
  int (*conv2d_forward)(const lv_conv2d_desc *d, const float *x, const float *w,
                        const float *bias, float *y);
  int (*conv2d_backward_data)(const lv_conv2d_desc *d, const float *gy, const float *w,
                              float *gx /* += */);
  int (*conv2d_backward_weight)(const lv_conv2d_desc *d, const float *x, const float *gy,
                                float *gw /* += nullable */, float *gb /* += nullable */);
  /* elu: 0 plain BatchNorm, 1 fused BatchNorm+ELU (alpha 1); y must not alias x when elu */
  int (*bn_forward_train)(int N, int C, int HW, const float *x, const float *gamma,
                          const float *beta, float eps, int elu, float *y, float *mean,
                          float *invstd, float *var_unbiased);
  int (*bn_forward_eval)(int N, int C, int HW, const float *x, const float *gamma,
                         const float *beta, const float *rmean, const float *rvar, float eps,
                         int elu, float *y);
  int (*bn_backward_train)(int N, int C, int HW, const float *x, const float *y,
                           const float *gy, const float *gamma, const float *mean,
                           const float *invstd, int elu, float *gx, float *ggamma, float *gbeta);
  int (*bn_backward_eval)(int N, int C, int HW, const float *x, const float *y, const float *gy,
                          const float *gamma, const float *rmean, const float *rvar, float eps,
                          int elu, float *gx, float *ggamma, float *gbeta);
  int (*readout_forward)(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                         const float *pos, const float *feat, const float *bias, float *out);
  int (*readout_backward)(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                          const float *pos, const float *feat, const float *gout, float *gx,
                          float *gpos, float *gfeat, float *gbias);
  /* *loss_dev: device float, OVERWRITTEN with the loss; grad (n) overwritten, nullable */
  int (*poisson_loss)(int64_t n, const float *yhat, const float *y, float eps, float scale,
                      float *loss_dev, float *grad);
  int (*adam_step)(int64_t n, float *p, const float *g, float *m, float *v, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int64_t step);

  /* ---- training loop helpers ---- */
  /* dst (nb, row) device <- rows idx[i] of a host block (staged through pinned memory) */
  int (*gather_rows)(float *dst, const float *host_block, int64_t row, const int64_t *idx,
                     int64_t nb);
  /* the backend's device accumulator (a double): reset != 0 sets it to 0 first; then, when
   * val_dev is not NULL, adds *val_dev (a device float) to it. No host synchronisation. */
  int (*loss_accumulate)(const float *val_dev, int reset);
  int (*loss_read)(double *out); /* waits for the stream */

  /* ---- nn op layer (csrc/ops/nn_ops.c), ABI 2 ---- */
  int (*linear_fwd)(lv_node *n);
  int (*linear_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*grid_sample_forward)(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                             const float *x, const float *grid, float *y);
  int (*grid_sample_backward)(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                              const float *x, const float *grid, const float *gy,
                              float *gx /* += nullable */, float *ggrid /* += nullable */);
  int (*avg_pool2d_forward)(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph,
                            int pw, const float *x, float *y);
  int (*avg_pool2d_backward)(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph,
                             int pw, const float *gy, float *gx /* += */);
  int (*pad_forward)(const lv_pad_desc *d, float value, const float *x, float *y);
  int (*pad_backward)(const lv_pad_desc *d, const float *gy, float *gx /* += */);
  /* mask[i] = u(seed, i) >= p ? 1/(1-p) : 0 (counter-based hash: a new seed redraws the
   * mask), y = x * mask; n floats */
  int (*dropout_forward)(int64_t n, const float *x, float p, uint64_t seed, float *mask, float *y);
  /* d[i] += a[i] * b[i] for n floats */
  int (*mul_add)(float *d, const float *a, const float *b, int64_t n);
  /* Poisson loss backward with the output gradient a device scalar *gout:
   * gyhat[i] += *gout * grad[i] (nullable); gy[i] -= *gout * scale * log(yhat[i] + eps) (nullable) */
  int (*poisson_loss_backward)(int64_t n, const float *gout, const float *grad, const float *yhat,
                               float eps, float scale, float *gyhat, float *gy);
  /* BatchNorm running statistics after a batch-statistics forward, without host sync:
   * nbt (device int64, nullable) += 1; f = momentum < 0 ? (nbt ? 1/nbt : 0) : momentum;
   * running = (1 - f) * running + f * batch (computed in double; rmean/rvar nullable) */
  int (*bn_track)(int C, double momentum, const float *mean, const float *var_unbiased,
                  float *rmean, float *rvar, int64_t *nbt);
  /* dst (nb, row) <- rows idx[i] of a DEVICE-resident block; idx on the host (staged) */
  int (*gather_rows_dev)(float *dst, const float *dev_block, int64_t row, const int64_t *idx,
                         int64_t nb);
  /* Gaussian readout read positions (csrc/ops/readout_ops.c ReadoutPositions). project bit 0:
   * clamp mu (2N) to [-1, 1] in place; bit 1: sigma >= 0 in place unless type 0 (full).
   * sample: out/eps/mask (B, N, 2), eps ~ N(0, 1) from a counter-based generator keyed by seed;
   * pos = mu + sigma eps (type 0 full 2x2 row-major (N, 2, 2), 1 uncorrelated (N, 2),
   * 2 isotropic (N)); else out/mask (N, 2) from mu. out = clamp(pos, -1, 1), mask = inside. */
  int (*readout_pos_forward)(int64_t B, int64_t N, int sample, int type, int project, float *mu,
                             float *sigma, uint64_t seed, float *eps, float *mask, float *out);
  /* gmu (2N) += sum_b g*mask; gsigma += sum_b (g*mask) eps^T per type (both nullable) */
  int (*readout_pos_backward)(int64_t B, int64_t N, int sample, int type, const float *g,
                              const float *mask, const float *eps, float *gmu, float *gsigma);
} lv_cuda_table;

/* NULL until lviv_c._cuda has been imported and registered its table */
extern lv_cuda_table *lv_cuda;
/* install (or, with NULL, remove) the table; checks abi/size. Returns 0 or -1 with error. */
int lv_cuda_install(lv_cuda_table *t);

static inline int lv_on_cuda(const lv_tensor *t) { return t && t->st->device == LV_CUDA; }

/* copies between any two devices (n bytes); the CUDA cases need the table */
int lv_copy_bytes(void *dst, int dst_dev, const void *src, int src_dev, size_t n);
/* a copy of t on `device` (no autograd); NULL with error */
lv_tensor *lv_tensor_to_device(lv_tensor *t, int device);

#ifdef __cplusplus
}
#endif
#endif
