// conv2d forward / backward-data / backward-weight on cuDNN (legacy convolution API, cuDNN 8/9).
// Algorithms are chosen once per shape (cudnnFind*Ex on scratch buffers, so no caller data is
// touched) with the workspace capped at LVIV_CUDNN_WORKSPACE_MB (default 256); one shared
// workspace grows to the largest chosen requirement. TF32 is off (CUDNN_FMA_MATH) unless
// lviv_c.cuda.allow_tf32 is set. Backward results are accumulated with beta = 1.
#include <cudnn.h>
#include <cstdlib>
#include <map>
#include <tuple>
#include "common.cuh"

namespace lvc {

static cudnnHandle_t handle = nullptr;
static void *ws = nullptr;
static size_t ws_size = 0;

#define CD(call, what)                                                                     \
  do {                                                                                     \
    cudnnStatus_t s_ = (call);                                                             \
    if (s_ != CUDNN_STATUS_SUCCESS) return fail(LVC_ERUNTIME, "cuDNN %s: %s", what, cudnnGetErrorString(s_)); \
  } while (0)

static size_t ws_cap() {
  static size_t cap = 0;
  if (!cap) {
    const char *e = getenv("LVIV_CUDNN_WORKSPACE_MB");
    long mb = e ? atol(e) : 256;
    cap = (size_t)(mb > 0 ? mb : 256) << 20;
  }
  return cap;
}

static int get_handle() {
  if (init() < 0) return -1;
  if (!handle) {
    CD(cudnnCreate(&handle), "create");
    CD(cudnnSetStream(handle, stream), "set stream");
  }
  return 0;
}

static int ensure_ws(size_t n) {
  if (n <= ws_size) return 0;
  if (ws) cudaFreeAsync(ws, stream);
  ws = nullptr; ws_size = 0;
  LVC_CHECK(cudaMallocAsync(&ws, n, stream), "cuDNN workspace");
  ws_size = n;
  return 0;
}

// descriptors and chosen algorithms for one shape
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, b = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_fwd = 0, ws_data = 0, ws_filter = 0;
  bool have_fwd = false, have_data = false, have_filter = false;
};

typedef std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int, int> Key;
static std::map<Key, Plan *> plans;

static Key key_of(const lv_conv2d_desc *d) {
  return Key(d->N, d->C_in, d->H, d->W, d->C_out, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw, d->dh, d->dw,
             d->groups, allow_tf32 ? 1 : 0);
}

static int make_plan(const lv_conv2d_desc *d, Plan **out) {
  Key k = key_of(d);
  auto it = plans.find(k);
  if (it != plans.end()) { *out = it->second; return 0; }
  if (get_handle() < 0) return -1;
  Plan *p = new Plan();
  CD(cudnnCreateTensorDescriptor(&p->x), "tensor descriptor");
  CD(cudnnCreateTensorDescriptor(&p->y), "tensor descriptor");
  CD(cudnnCreateTensorDescriptor(&p->b), "tensor descriptor");
  CD(cudnnCreateFilterDescriptor(&p->w), "filter descriptor");
  CD(cudnnCreateConvolutionDescriptor(&p->conv), "convolution descriptor");
  CD(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->N, d->C_in, d->H, d->W), "input descriptor");
  CD(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, d->C_out, d->C_in / d->groups, d->kh, d->kw),
     "weight descriptor");
  CD(cudnnSetConvolution2dDescriptor(p->conv, d->ph, d->pw, d->sh, d->sw, d->dh, d->dw, CUDNN_CROSS_CORRELATION,
                                     CUDNN_DATA_FLOAT),
     "convolution descriptor");
  CD(cudnnSetConvolutionGroupCount(p->conv, d->groups), "group count");
  CD(cudnnSetConvolutionMathType(p->conv, allow_tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH), "math type");
  int n, c, h, w;
  CD(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w), "output shape");
  if (n != d->N || c != d->C_out || h != d->Ho || w != d->Wo)
    return fail(LVC_ERUNTIME, "conv2d: cuDNN output shape (%d, %d, %d, %d) differs from (%d, %d, %d, %d)", n, c, h, w,
                d->N, d->C_out, d->Ho, d->Wo);
  CD(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->N, d->C_out, d->Ho, d->Wo), "output descriptor");
  CD(cudnnSetTensor4dDescriptor(p->b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, d->C_out, 1, 1), "bias descriptor");
  plans[k] = p;
  *out = p;
  return 0;
}

static size_t xbytes(const lv_conv2d_desc *d) { return (size_t)d->N * d->C_in * d->H * d->W * 4; }
static size_t ybytes(const lv_conv2d_desc *d) { return (size_t)d->N * d->C_out * d->Ho * d->Wo * 4; }
static size_t wbytes(const lv_conv2d_desc *d) { return (size_t)d->C_out * (d->C_in / d->groups) * d->kh * d->kw * 4; }

// Find on scratch buffers (slots 1..3) so nothing of the caller's is overwritten
static int find_algos(const lv_conv2d_desc *d, Plan *p, int which) {
  size_t cap = ws_cap();
  if (ensure_ws(cap) < 0) {  // fall back to a smaller search workspace
    cudaGetLastError();
    cap = 64u << 20;
    if (ensure_ws(cap) < 0) return -1;
  }
  void *sx = scratch(xbytes(d), 1), *sy = scratch(ybytes(d), 2), *sw = scratch(wbytes(d), 3);
  if (!sx || !sy || !sw) return -1;
  int got = 0;
  if (which == 0) {
    cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CD(cudnnFindConvolutionForwardAlgorithmEx(handle, p->x, sx, p->w, sw, p->conv, p->y, sy,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, r, ws, cap),
       "find forward algorithm");
    for (int i = 0; i < got; i++)
      if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= cap) {
        p->fwd = r[i].algo; p->ws_fwd = r[i].memory; p->have_fwd = true; return 0;
      }
  } else if (which == 1) {
    cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CD(cudnnFindConvolutionBackwardDataAlgorithmEx(handle, p->w, sw, p->y, sy, p->conv, p->x, sx,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, r, ws, cap),
       "find backward-data algorithm");
    for (int i = 0; i < got; i++)
      if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= cap) {
        p->bwd_data = r[i].algo; p->ws_data = r[i].memory; p->have_data = true; return 0;
      }
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CD(cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, p->x, sx, p->y, sy, p->conv, p->w, sw,
                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, r, ws, cap),
       "find backward-filter algorithm");
    for (int i = 0; i < got; i++)
      if (r[i].status == CUDNN_STATUS_SUCCESS && r[i].memory <= cap) {
        p->bwd_filter = r[i].algo; p->ws_filter = r[i].memory; p->have_filter = true; return 0;
      }
  }
  return fail(LVC_ERUNTIME, "conv2d: cuDNN found no algorithm within the %zu MB workspace cap", cap >> 20);
}

// ws: the CPU's kept workspace, unused here (cuDNN keeps one shared workspace)
int conv2d_forward(const lv_conv2d_desc *d, const float *x, const float *w, const float *bias, float *y, float *ws) {
  (void)ws;
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  if (!p->have_fwd && find_algos(d, p, 0) < 0) return -1;
  if (ensure_ws(p->ws_fwd) < 0) return -1;
  float one = 1.f, zero = 0.f;
  CD(cudnnConvolutionForward(handle, &one, p->x, x, p->w, w, p->conv, p->fwd, ws, p->ws_fwd, &zero, p->y, y),
     "convolution forward");
  if (bias) CD(cudnnAddTensor(handle, &one, p->b, bias, &one, p->y, y), "bias add");
  return 0;
}

int conv2d_backward_data(const lv_conv2d_desc *d, const float *gy, const float *w, float *gx, float *ws) {
  (void)ws;
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  if (!p->have_data && find_algos(d, p, 1) < 0) return -1;
  if (ensure_ws(p->ws_data) < 0) return -1;
  float one = 1.f;
  CD(cudnnConvolutionBackwardData(handle, &one, p->w, w, p->y, gy, p->conv, p->bwd_data, ws, p->ws_data, &one, p->x,
                                  gx),
     "convolution backward data");
  return 0;
}

int conv2d_backward_weight(const lv_conv2d_desc *d, const float *x, const float *gy, float *gw, float *gb, float *ws) {
  (void)ws;
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  float one = 1.f;
  if (gw) {
    if (!p->have_filter && find_algos(d, p, 2) < 0) return -1;
    if (ensure_ws(p->ws_filter) < 0) return -1;
    CD(cudnnConvolutionBackwardFilter(handle, &one, p->x, x, p->y, gy, p->conv, p->bwd_filter, ws, p->ws_filter,
                                      &one, p->w, gw),
       "convolution backward filter");
  }
  if (gb) CD(cudnnConvolutionBackwardBias(handle, &one, p->y, gy, &one, p->b, gb), "convolution backward bias");
  return 0;
}

void conv_release() {
  for (auto &kv : plans) {
    Plan *p = kv.second;
    cudnnDestroyTensorDescriptor(p->x); cudnnDestroyTensorDescriptor(p->y); cudnnDestroyTensorDescriptor(p->b);
    cudnnDestroyFilterDescriptor(p->w); cudnnDestroyConvolutionDescriptor(p->conv);
    delete p;
  }
  plans.clear();
}

}  // namespace lvc
