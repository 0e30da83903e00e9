// Shared declarations of the CUDA backend (lviv_c._cuda). One stream, one cuBLAS and one cuDNN
// handle, created lazily on first use (device_count() never creates a context).
//
// Threads. The core calls this backend with the GIL released (training epochs, backward, copies
// between devices), so two Python threads can be inside it at once. The rule: every piece of
// host-side state that is shared and mutable (a scratch slot, the cuDNN plans and workspace, the
// cuBLAS handle's math mode, a pinned staging ring) has its own mutex, held while the state is
// read or changed AND while the work that uses the memory it owns is queued. All work goes to
// one stream, which runs it in the order queued: the next holder's kernels run after ours, so the
// mutex covers the queuing, not the execution. Per-thread state (the training loop's loss
// accumulator) needs no lock. Lock order where two are held: conv -> scratch 1 -> 2 -> 3; a
// function never takes a mutex it already holds.
//
// Errors. Every kernel launch is followed by LVC_LAUNCHED(name of the op), and every cuBLAS or
// cuDNN call by a check: with LVIV_CUDA_SYNC=1 (lviv_c.cuda, the core's sync_launches switch)
// that also synchronises, so a fault is reported at the kernel that caused it. The words of
// every error: errors.cuh.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
extern "C" {
#include "backend.h"
}
#include "formulas.h"  // every scalar formula, shared with the CPU kernels
#include "errors.cuh"  // the words of CUDA errors (host only)

// lv_errkind values (lv.h): the backend reports errors through lv_backend::core_set_error
enum { LVC_EVALUE = LV_EVALUE, LVC_ENOMEM = LV_ENOMEM, LVC_ERUNTIME = LV_ERUNTIME };

namespace lvc {

extern lv_backend table;       // module.cu
extern cudaStream_t stream;       // module.cu, valid after init()
int init();                       // 0 or -1 with error set: device, stream, memory pool
const lv_device_flags &flags();   // the core's run-time switches (csrc/backend.h)

int fail(int kind, const char *fmt, ...);  // formats, reports through the table, returns -1
// report CUDA error e noticed at `what` (LVC_AT_CALL / LVC_AT_LAUNCH / LVC_AT_WAIT: errors.cuh);
// a sticky error marks the context unusable, and every later init() refuses with that message
int cuda_fail(cudaError_t e, const char *what, int at = LVC_AT_CALL);
// after every kernel launch and library call: the launch error, and with LVIV_CUDA_SYNC=1 a
// synchronisation and the kernel's own error; 0 or -1 with the error set
int launched(const char *what);
// a cuBLAS/cuDNN call failed with `msg`: reported as the library's error, unless the CUDA
// context is already broken (then the CUDA error, which explains it)
int lib_fail(const char *what, const char *msg);

// device memory: the stream-ordered pool (cudaMallocAsync) when the device supports memory pools
// (cudaDevAttrMemoryPoolsSupported, checked once in init(); LVIV_CUDA_NO_POOL=1 turns it off),
// else cudaMalloc / cudaFree (which then first waits for the stream)
cudaError_t dev_malloc(void **p, size_t n);
void dev_free(void *p);
bool uses_memory_pool();

// a growing device scratch buffer of the backend, locked for the lifetime of this object (the
// entry that uses it): Scratch s(nbytes, slot); if (!s.p) return -1;  Slots: 0 binary backward,
// 1..3 cuDNN algorithm search, 4 BatchNorm eval constants, 5 BatchNorm backward sums, 6 loss parts
struct Scratch {
  void *p = nullptr;
  Scratch(size_t nbytes, int slot);
  ~Scratch();
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;

 private:
  int slot_ = -1;
};

// free every cache (cuDNN plans and workspace, handles, scratch, staging rings) after waiting for
// the stream; they are made again on demand (lviv_c.cuda.empty_cache(), and at exit)
void release_caches();

// cublas.cu / cudnn.cu helpers used by other files
int sgemm_rm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

inline int64_t numel(const lv_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}
inline unsigned grid_for(int64_t n, int block = 256) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > 65535LL * 32) g = 65535LL * 32;  // grid-stride loops cover the rest
  return (unsigned)g;
}
}  // namespace lvc

#define LVC_CHECK(call, what)                                  \
  do {                                                         \
    cudaError_t e_ = (call);                                   \
    if (e_ != cudaSuccess) return lvc::cuda_fail(e_, what);    \
  } while (0)
// a call that waits for queued work (copies to the host, synchronize): a kernel's fault shows here
#define LVC_WAIT(call, what)                                                  \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) return lvc::cuda_fail(e_, what, LVC_AT_WAIT);      \
  } while (0)
// after EVERY kernel launch (and cuBLAS/cuDNN call): the one place LVIV_CUDA_SYNC acts
#define LVC_LAUNCHED(what)                          \
  do {                                              \
    if (lvc::launched(what) < 0) return -1;         \
  } while (0)

#define LVC_GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

// table entries implemented in the op files
namespace lvc {
// ops_ew.cu
int binary_fwd(lv_node *n);
int binary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int unary_fwd(lv_node *n);
int unary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int reduce_fwd(lv_node *n);
int reduce_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int permute_fwd(lv_node *n);
int permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int slice_fwd(lv_node *n);
int slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int isel_fwd(lv_node *n);
int isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int cat_fwd(lv_node *n);
int cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int expand_fwd(lv_node *n);
int expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int add_into(float *dst, const float *src, int64_t n);
int where_fwd(int64_t n, const float *c, const float *a, const float *b, float *out);
int where_bwd(int64_t n, const float *c, const float *g, float *ga, float *gb);
int cast(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n);
int fill_f32(float *d, float value, int64_t n);
// blas.cu
int matmul_fwd(lv_node *n);
int matmul_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
// conv.cu
int conv2d_forward(const lv_conv2d_desc *d, const float *x, const float *w, const float *bias, float *y, float *ws);
int conv2d_backward_data(const lv_conv2d_desc *d, const float *gy, const float *w, float *gx, float *ws);
int conv2d_backward_weight(const lv_conv2d_desc *d, const float *x, const float *gy, float *gw, float *gb,
                           float *ws);
void conv_release();
// blas.cu
void blas_release();
// nn.cu
int bn_forward_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                     float eps, int elu, float *y, float *mean, float *invstd, float *var_unbiased);
int bn_forward_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                    const float *rmean, const float *rvar, float eps, int elu, float *y);
int bn_backward_train(int N, int C, int HW, const float *x, const float *y, const float *gy,
                      const float *gamma, const float *mean, const float *invstd, int elu,
                      float *gx, float *ggamma, float *gbeta);
int bn_backward_eval(int N, int C, int HW, const float *x, const float *y, const float *gy,
                     const float *gamma, const float *rmean, const float *rvar, float eps, int elu,
                     float *gx, float *ggamma, float *gbeta);
int readout_forward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                    const float *pos, const float *feat, const float *bias, float *out);
int readout_backward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                     const float *pos, const float *feat, const float *gout, float *gx,
                     float *gpos, float *gfeat, float *gbias);
int poisson_loss(int64_t n, const float *yhat, const float *y, float eps, float scale,
                 float *loss_dev, float *grad);
int adam_step(int64_t n, float *p, const float *g, float *m, float *v, float *vmax, const lv_adam_attr *a);
int sgd_step(int64_t n, float *p, const float *g, float *buf, const lv_sgd_attr *a);
int gather_rows(float *dst, const float *host_block, int64_t row, const int64_t *idx, int64_t nb);
int loss_accumulate(const float *val_dev, int reset);
int loss_read(double *out);
void nn_release();
// nn_ops.cu
int linear_fwd(lv_node *n);
int linear_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int grid_sample_forward(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                        float *y);
int grid_sample_backward(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                         const float *gy, float *gx, float *ggrid);
int avg_pool2d_forward(const lv_pool2d_desc *d, const float *x, float *y);
int avg_pool2d_backward(const lv_pool2d_desc *d, const float *gy, float *gx);
int pad_forward(const lv_pad_desc *d, float value, const float *x, float *y);
int pad_backward(const lv_pad_desc *d, const float *gy, float *gx);
int dropout_forward(int64_t n, const float *x, double p, uint64_t seed, float *mask, float *y);
int mul_add(float *d, const float *a, const float *b, int64_t n);
int poisson_loss_backward(int64_t n, const float *gout, const float *grad, const float *yhat, float eps, float scale,
                          float *gyhat, float *gy);
int bn_track(int C, double momentum, const float *mean, const float *var_unbiased, float *rmean, float *rvar,
             int64_t *nbt);
int gather_rows_dev(float *dst, const float *dev_block, int64_t row, const int64_t *idx, int64_t nb);
int readout_pos_forward(int64_t B, int64_t N, int sample, int type, int project, float *mu, float *sigma,
                        uint64_t seed, float *eps, float *mask, float *out);
int readout_pos_backward(int64_t B, int64_t N, int sample, int type, const float *g, const float *mask,
                         const float *eps, float *gmu, float *gsigma);
void nn_ops_release();
}  // namespace lvc

// bilinear taps (zeros outside) at pixel coordinates (ix, iy): the readout and grid_sample
struct Taps { int idx[4]; float w[4]; float tx, ty; };
__device__ __forceinline__ void make_taps(float ix, float iy, int H, int W, Taps &t) {
  float fx = floorf(ix), fy = floorf(iy);
  int x0 = (int)fx, y0 = (int)fy;
  float tx = ix - fx, ty = iy - fy;
  t.tx = tx; t.ty = ty;
  t.w[0] = (1.f - tx) * (1.f - ty);
  t.w[1] = tx * (1.f - ty);
  t.w[2] = (1.f - tx) * ty;
  t.w[3] = tx * ty;
  bool vx0 = x0 >= 0 && x0 < W, vx1 = x0 + 1 >= 0 && x0 + 1 < W;
  bool vy0 = y0 >= 0 && y0 < H, vy1 = y0 + 1 >= 0 && y0 + 1 < H;
  t.idx[0] = (vx0 && vy0) ? y0 * W + x0 : -1;
  t.idx[1] = (vx1 && vy0) ? y0 * W + x0 + 1 : -1;
  t.idx[2] = (vx0 && vy1) ? (y0 + 1) * W + x0 : -1;
  t.idx[3] = (vx1 && vy1) ? (y0 + 1) * W + x0 + 1 : -1;
}

// analysis.cu: input optimisation and gradient RFs (csrc/analysis.c)
namespace lvc {
int index_cols(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put);
int blur_planes(int64_t P, int64_t H, int64_t W, int r, const float *taps, float *g, float *tmp);
int momentum_step(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip, float lo,
                  float hi);
int renorm_rows(int64_t K, int64_t D, float *x, double norm);
}  // namespace lvc
