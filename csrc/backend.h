/* The backend contract: one struct of entry points that every backend fills, the CPU
 * (csrc/cpu/backend.c, lv_cpu_backend) and the GPU (cuda/module.cu, lviv_c._cuda) alike, with
 * designated initializers. An op (csrc/ops/) validates its arguments and infers shapes once, then
 * calls lv_backend_of(tensor)->entry(...): the only place that knows which devices exist is
 * lv_backend_of / lv_check_devices below.
 *
 * The CUDA backend hands its table to the core as a capsule (_C._set_cuda_table); until then
 * `lv_cuda` is NULL and every device allocation fails with "CUDA backend not loaded". The core
 * never links libcudart: it only calls through here.
 *
 * Conventions:
 *  - every entry returns 0 on success, -1 after reporting an error (the core's lv_set_error; the
 *    CUDA backend through core_set_error, which the core fills in before the table is used);
 *  - node-level entries (`*_fwd(lv_node *)`, `*_bwd(lv_node *, gout, gin)`) run one generic op
 *    node (csrc/ops/: its inputs in[], output out, and the attributes the op's comment lists):
 *    forward overwrites node->out, backward ADDS into the zeroed gin[i] it is given (gin[i] NULL:
 *    not needed);
 *  - kernel-level entries work on raw buffers of the backend's memory, with the arguments and
 *    semantics documented in csrc/cpu/kernels.h (forward outputs overwritten, gradients +=);
 *  - the scalar arithmetic of both backends comes from csrc/formulas.h;
 *  - the CUDA backend queues all work on one stream; only the d2h copies and synchronize() wait.
 * Adding an entry: add it here, fill it in csrc/cpu/backend.c and cuda/module.cu, bump
 * LV_BACKEND_ABI. */
#ifndef LV_BACKEND_H
#define LV_BACKEND_H
#include "lv.h"

#define LV_BACKEND_ABI 6

#ifdef __cplusplus
extern "C" {
#endif

/* Run-time switches of the device backends, owned by the core and set from Python
 * (lviv_c.backends.cudnn / lviv_c.backends.cuda.matmul, LVIV_CUDA_SYNC through lviv_c.cuda).
 * A backend reads them through core_flags() each time it needs one, so a change applies to the
 * next op. The CPU backend ignores them. */
typedef struct lv_device_flags {
  int cudnn_deterministic; /* 1 (default): only cuDNN algorithms whose results are reproducible */
  int cudnn_benchmark;     /* 1: time the candidates (cudnnFind); 0 (default): cuDNN's heuristics */
  int cudnn_allow_tf32;    /* 1: TF32 tensor cores in cuDNN convolutions (default 0) */
  int matmul_allow_tf32;   /* 1: TF32 tensor cores in cuBLAS matmuls (default 0) */
  int sync_launches;       /* 1 (LVIV_CUDA_SYNC=1): synchronise and check after every kernel launch */
} lv_device_flags;
/* the core's one copy (csrc/backend.c) */
lv_device_flags *lv_flags(void);

typedef struct lv_backend {
  int abi;          /* LV_BACKEND_ABI */
  int table_size;   /* sizeof(lv_backend) as compiled by the backend */
  const char *name; /* "cpu", "cuda" */
  int device;       /* LV_CPU, LV_CUDA */
  /* filled by the core when it installs a loaded backend (NULL in the CPU's own table) */
  int (*core_set_error)(int kind, const char *msg); /* report an error */
  uint64_t (*core_rng_next)(void);                  /* the global seeded generator */
  const lv_device_flags *(*core_flags)(void);       /* the run-time switches (lv_flags) */

  /* ---- memory (bytes) ---- */
  void *(*alloc)(size_t nbytes);                       /* NULL + error on failure */
  void (*free)(void *p);                               /* never fails */
  int (*memcpy_h2d)(void *dst, const void *src, size_t n); /* host -> this backend */
  int (*memcpy_d2h)(void *dst, const void *src, size_t n); /* this backend -> host; waits */
  int (*memcpy_d2d)(void *dst, const void *src, size_t n); /* within this backend */
  int (*memset0)(void *p, size_t n);
  int (*synchronize)(void);

  /* ---- generic ops (node level, csrc/ops/ *.c) ---- */
  int (*binary_fwd)(lv_node *n);
  int (*binary_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*unary_fwd)(lv_node *n);
  int (*unary_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*reduce_fwd)(lv_node *n);
  int (*reduce_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*matmul_fwd)(lv_node *n);
  int (*matmul_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  int (*linear_fwd)(lv_node *n);
  int (*linear_bwd)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
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

  /* ---- small kernels ---- */
  /* dst (n floats) += src (n floats): reshape/clone backward, autograd accumulation */
  int (*add_into)(float *dst, const float *src, int64_t n);
  /* d[i] += a[i] * b[i] for n floats */
  int (*mul_add)(float *d, const float *a, const float *b, int64_t n);
  /* where (lv_f_where) on n same-shaped floats: out = c != 0 ? a : b; its backward adds g into
   * ga where c != 0 and into gb elsewhere (ga / gb nullable) */
  int (*where_fwd)(int64_t n, const float *c, const float *a, const float *b, float *out);
  int (*where_bwd)(int64_t n, const float *c, const float *g, float *ga, float *gb);
  /* dtype cast between float32 and int64 (n elements; same dtype: plain copy) */
  int (*cast)(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n);
  /* d[i] = value for n floats */
  int (*fill_f32)(float *d, float value, int64_t n);

  /* ---- NN kernels (kernel level, csrc/cpu/kernels.h semantics) ---- */
  /* floats of workspace the conv entries want kept with the node (0: they manage their own) */
  size_t (*conv2d_workspace_floats)(const lv_conv2d_desc *d);
  int (*conv2d_forward)(const lv_conv2d_desc *d, const float *x, const float *w,
                        const float *bias, float *y, float *ws /* nullable */);
  int (*conv2d_backward_data)(const lv_conv2d_desc *d, const float *gy, const float *w,
                              float *gx /* += */, float *ws /* nullable */);
  int (*conv2d_backward_weight)(const lv_conv2d_desc *d, const float *x, const float *gy,
                                float *gw /* += nullable */, float *gb /* += nullable */,
                                float *ws /* nullable */);
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
  /* BatchNorm running statistics after a batch-statistics forward (on the GPU without host
   * sync): nbt (int64, nullable) += 1; f = lv_f_bn_factor(momentum, nbt);
   * running = lv_f_bn_running(running, batch, f) (rmean/rvar nullable) */
  int (*bn_track)(int C, double momentum, const float *mean, const float *var_unbiased,
                  float *rmean, float *rvar, int64_t *nbt);
  int (*grid_sample_forward)(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                             const float *x, const float *grid, float *y);
  int (*grid_sample_backward)(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                              const float *x, const float *grid, const float *gy,
                              float *gx /* += nullable */, float *ggrid /* += nullable */);
  int (*avg_pool2d_forward)(const lv_pool2d_desc *d, const float *x, float *y);
  int (*avg_pool2d_backward)(const lv_pool2d_desc *d, const float *gy, float *gx /* += */);
  int (*pad_forward)(const lv_pad_desc *d, float value, const float *x, float *y);
  int (*pad_backward)(const lv_pad_desc *d, const float *gy, float *gx /* += */);
  /* inverted dropout: mask[i] = lv_f_dropout_mask(seed, i, p, 1/(1-p)), y = x * mask (n floats).
   * The op draws the seed from the global generator (one draw per forward, on every device),
   * so every backend gives the same mask for the same seed (csrc/formulas.h) */
  int (*dropout_forward)(int64_t n, const float *x, double p, uint64_t seed, float *mask, float *y);
  /* Poisson loss (lv_poisson_loss): *loss (one float in this backend's memory) OVERWRITTEN with
   * scale * sum(yhat - y log(yhat + eps)); grad (n) overwritten with d loss / d yhat, nullable */
  int (*poisson_loss)(int64_t n, const float *yhat, const float *y, float eps, float scale,
                      float *loss, float *grad);
  /* its backward, the output gradient *gout one float in this backend's memory:
   * gyhat[i] += *gout * grad[i] (nullable); gy[i] -= lv_f_poisson_grad_target (nullable) */
  int (*poisson_loss_backward)(int64_t n, const float *gout, const float *grad, const float *yhat,
                               float eps, float scale, float *gyhat, float *gy);
  int (*readout_forward)(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                         const float *pos, const float *feat, const float *bias, float *out);
  int (*readout_backward)(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                          const float *pos, const float *feat, const float *gout, float *gx,
                          float *gpos, float *gfeat, float *gbias);
  /* Gaussian readout read positions (lv_readout_pos_forward in csrc/cpu/kernels.h) */
  int (*readout_pos_forward)(int64_t B, int64_t N, int sample, int type, int project, float *mu,
                             float *sigma, uint64_t seed, float *eps, float *mask, float *out);
  int (*readout_pos_backward)(int64_t B, int64_t N, int sample, int type, const float *g,
                              const float *mask, const float *eps, float *gmu, float *gsigma);
  /* Adam (lv_f_adam) in place on n floats; vmax (amsgrad) nullable */
  int (*adam_step)(int64_t n, float *p, const float *g, float *m, float *v, float *vmax,
                   const lv_adam_attr *a);
  /* SGD (lv_f_sgd) in place on n floats; buf nullable without momentum */
  int (*sgd_step)(int64_t n, float *p, const float *g, float *buf, const lv_sgd_attr *a);

  /* ---- training-loop helpers of a device backend (NULL in the CPU's table: the CPU loop
   * reads the host blocks and the loss directly) ---- */
  /* dst (nb, row) device <- rows idx[i] of a host block (staged through pinned memory) */
  int (*gather_rows)(float *dst, const float *host_block, int64_t row, const int64_t *idx,
                     int64_t nb);
  /* dst (nb, row) <- rows idx[i] of a DEVICE-resident block; idx on the host (staged) */
  int (*gather_rows_dev)(float *dst, const float *dev_block, int64_t row, const int64_t *idx,
                         int64_t nb);
  /* the backend's device accumulator (a double): reset != 0 sets it to 0 first; then, when
   * val_dev is not NULL, adds *val_dev (a device float) to it. No host synchronisation. */
  int (*loss_accumulate)(const float *val_dev, int reset);
  int (*loss_read)(double *out); /* waits for the stream */

  /* ---- input optimisation and gradient RFs (csrc/analysis.c; CPU: csrc/cpu/optin.c, CUDA:
   * cuda/analysis.cu), all on this backend's memory ---- */
  /* one column per row of a (K, N) matrix, idx (K int64) in this backend's memory:
   * put == 0: vec[k] = mat[k * N + idx[k]]; put != 0: mat[k * N + idx[k]] = vec[k] */
  int (*index_cols)(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put);
  /* separable Gaussian blur of P (H, W) planes of g in place, zero padding: rows then columns
   * with the 2r+1 taps (on the HOST, normalised); tmp: P*H*W floats of scratch */
  int (*blur_planes)(int64_t P, int64_t H, int64_t W, int r, const float *taps, float *g, float *tmp);
  /* SGD with momentum on n floats: buf = momentum * buf + g; x -= lr * buf; g = 0; then, when
   * clip, x clamped to [lo, hi] */
  int (*momentum_step)(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip,
                       float lo, float hi);
  /* K rows of D floats each rescaled to L2 norm `norm` (squares summed in double; a zero row is
   * left as it is) */
  int (*renorm_rows)(int64_t K, int64_t D, float *x, double norm);
} lv_backend;

/* the CPU backend (csrc/cpu/backend.c) */
extern const lv_backend lv_cpu_backend;
/* NULL until lviv_c._cuda has been imported and registered its table */
extern lv_backend *lv_cuda;
/* the emulated CUDA device (csrc/cpu/emulated.c): a test-only table of the CPU kernels with the
 * CUDA storage tag, installed like the real one (LVIV_EMULATE_CUDA=1, lviv_c/cuda.py) */
lv_backend *lv_emulated_backend(void);
/* its transfer counters (copies and bytes host -> device, device -> host, device copies) */
typedef struct lv_emulated_stats { uint64_t h2d, h2d_bytes, d2h, d2h_bytes, d2d; } lv_emulated_stats;
lv_emulated_stats *lv_emulated_counters(void);
/* install (or, with NULL, remove) the CUDA table; checks abi/size and that every entry is
 * filled. Returns 0 or -1 with error. */
int lv_cuda_install(lv_backend *t);

/* the backend that owns t's memory (t on the GPU implies the CUDA backend is loaded) */
static inline const lv_backend *lv_backend_of(const lv_tensor *t) {
  return t->st->device == LV_CUDA ? lv_cuda : &lv_cpu_backend;
}
/* the backend of a device code (LV_CPU, LV_CUDA); NULL with an error when it is not loaded */
const lv_backend *lv_backend_for(int device);
/* the one device check of every op: the non-NULL tensors of ts (n of them) live on one device
 * whose backend is loaded; else an error "op: expected all tensors on the same device, got cpu
 * (what[i]) and cuda (what[j])". what may be NULL (then tensor indices are named). 0 or -1. */
int lv_check_devices(const char *op, lv_tensor *const *ts, const char *const *what, int n);

/* ---- index helpers of the node-level entries, shared by the backends (host code) ---- */
/* strides of t (contiguous) in the index space of an nd-dim output; 0 on broadcast dims */
static inline void lv_broadcast_strides(const lv_tensor *t, int nd, const int64_t *oshape, int64_t *st) {
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; i--) {
    int it = t->ndim - nd + i;
    int64_t d = it >= 0 ? t->shape[it] : 1;
    st[i] = (d == 1 && oshape[i] != 1) ? 0 : s;
    if (it >= 0) s *= d;
  }
}
/* a matmul operand as (batch, rows, cols): 2-d is one batch */
static inline void lv_matmul_dims(const lv_tensor *t, int64_t *B, int64_t *r, int64_t *c) {
  if (t->ndim == 2) { *B = 1; *r = t->shape[0]; *c = t->shape[1]; }
  else { *B = t->shape[0]; *r = t->shape[1]; *c = t->shape[2]; }
}

/* the sizes of a matmul node: a (Ba, N, K) @ b (Bb, K, M) -> (B, N, M), B = max(Ba, Bb) */
typedef struct { int64_t Ba, Bb, B, N, K, M; } lv_matmul_shape;
static inline lv_matmul_shape lv_matmul_shape_of(const lv_node *n) {
  lv_matmul_shape s;
  int64_t K2;
  lv_matmul_dims(n->in[0], &s.Ba, &s.N, &s.K);
  lv_matmul_dims(n->in[1], &s.Bb, &K2, &s.M);
  s.B = s.Ba > s.Bb ? s.Ba : s.Bb;
  return s;
}

static inline int lv_on_cuda(const lv_tensor *t) { return t && t->st->device == LV_CUDA; }

/* copies between any two devices (n bytes); the CUDA cases need the table */
int lv_copy_bytes(void *dst, int dst_dev, const void *src, int src_dev, size_t n);
/* a copy of t on `device` (no autograd); NULL with error */
lv_tensor *lv_tensor_to_device(lv_tensor *t, int device);

#ifdef __cplusplus
}
#endif
#endif
