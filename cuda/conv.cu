// conv2d forward / backward-data / backward-weight on cuDNN (legacy convolution API, cuDNN 8/9).
//
// Algorithms, chosen once per shape and per setting of the switches (lviv_c.backends.cudnn,
// csrc/backend.h lv_device_flags), like PyTorch:
//  - benchmark off (the default): cuDNN's heuristics (cudnnGet*Algorithm_v7), no timing, so the
//    choice is the same on every run; benchmark on: every candidate timed (cudnnFind*Ex, on
//    scratch buffers so no caller data is touched) and the fastest taken, which can differ
//    between runs;
//  - deterministic on (the default here; PyTorch's default is off): only candidates whose
//    determinism is CUDNN_DETERMINISTIC (no atomics: the same inputs give the same bits);
//    when none qualifies, the algorithms documented as deterministic (forward IMPLICIT_GEMM,
//    backward data and filter ALGO_1);
//  - TF32 (cudnn_allow_tf32, off by default): off, only candidates without tensor-op math and
//    the descriptor set to CUDNN_FMA_MATH (plain float32, as the CPU); on, the candidate's own
//    math type, applied before every call (forward and the two backward passes may differ).
//    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (rounding to half) is never taken.
// The workspace of a candidate is capped at LVIV_CUDNN_WORKSPACE_MB (default 256); one shared
// workspace grows to the largest chosen requirement. Backward results are accumulated with beta = 1.
// Threads: one mutex (conv_mu) over the plans, the workspace and the handle, held for a whole
// entry (common.cuh).
#include <cudnn.h>
#include <cstdlib>
#include <map>
#include <tuple>
#include "common.cuh"

namespace lvc {

static std::mutex conv_mu;
static cudnnHandle_t handle = nullptr;
static void *ws = nullptr;
static size_t ws_size = 0;

#define CD(call, what)                                                     \
  do {                                                                     \
    cudnnStatus_t s_ = (call);                                             \
    if (s_ != CUDNN_STATUS_SUCCESS) return lib_fail("cuDNN " what, cudnnGetErrorString(s_)); \
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
    cudnnStatus_t st = cudnnSetStream(handle, stream);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(handle);
      handle = nullptr;
      return lib_fail("cuDNN set stream", cudnnGetErrorString(st));
    }
  }
  return 0;
}

static int ensure_ws(size_t n) {
  if (n <= ws_size) return 0;
  dev_free(ws);
  ws = nullptr; ws_size = 0;
  LVC_CHECK(dev_malloc(&ws, n), "cuDNN workspace");
  ws_size = n;
  return 0;
}

// one chosen algorithm: its workspace and the math type applied before each call
struct Choice {
  int algo = 0;
  size_t ws = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  bool have = false;
};

// descriptors and chosen algorithms for one shape
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, b = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice fwd, data, filter;
  bool det = true, bench = false, tf32 = false;  // the switches it was made under
};

static void destroy_plan(Plan *p) {
  if (!p) return;
  if (p->x) cudnnDestroyTensorDescriptor(p->x);
  if (p->y) cudnnDestroyTensorDescriptor(p->y);
  if (p->b) cudnnDestroyTensorDescriptor(p->b);
  if (p->w) cudnnDestroyFilterDescriptor(p->w);
  if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
  delete p;
}

// the shape and the switches: a change of a switch makes (and keeps) another plan
typedef std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int, int> Key;
static std::map<Key, Plan *> plans;
static const size_t MAX_PLANS = 256;  // then all are released and made again on demand

static Key key_of(const lv_conv2d_desc *d, const lv_device_flags &f) {
  int sw = (f.cudnn_deterministic ? 1 : 0) | (f.cudnn_benchmark ? 2 : 0) | (f.cudnn_allow_tf32 ? 4 : 0);
  return Key(d->N, d->C_in, d->H, d->W, d->C_out, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw, d->dh, d->dw,
             d->groups, sw);
}

// fill the descriptors of a new plan (0, or -1 with the error set; the caller frees p)
static int plan_setup(const lv_conv2d_desc *d, Plan *p) {
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
  // the search sees the math types the switch allows
  CD(cudnnSetConvolutionMathType(p->conv, p->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH), "math type");
  int n, c, h, w;
  CD(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w), "output shape");
  if (n != d->N || c != d->C_out || h != d->Ho || w != d->Wo)
    return fail(LVC_ERUNTIME, "conv2d: cuDNN output shape (%d, %d, %d, %d) differs from (%d, %d, %d, %d)", n, c, h, w,
                d->N, d->C_out, d->Ho, d->Wo);
  CD(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->N, d->C_out, d->Ho, d->Wo), "output descriptor");
  CD(cudnnSetTensor4dDescriptor(p->b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, d->C_out, 1, 1), "bias descriptor");
  return 0;
}

static void conv_release_plans();

// called with conv_mu held
static int make_plan(const lv_conv2d_desc *d, Plan **out) {
  const lv_device_flags f = flags();  // one snapshot: the key and the plan agree
  Key k = key_of(d, f);
  auto it = plans.find(k);
  if (it != plans.end()) { *out = it->second; return 0; }
  if (get_handle() < 0) return -1;
  if (plans.size() >= MAX_PLANS) conv_release_plans();
  Plan *p = new Plan();
  p->det = f.cudnn_deterministic != 0;
  p->bench = f.cudnn_benchmark != 0;
  p->tf32 = f.cudnn_allow_tf32 != 0;
  if (plan_setup(d, p) < 0) goto fail;  // the one error path: every descriptor made so far freed
  plans[k] = p;
  *out = p;
  return 0;
fail:
  destroy_plan(p);
  return -1;
}

static size_t xbytes(const lv_conv2d_desc *d) { return (size_t)d->N * d->C_in * d->H * d->W * 4; }
static size_t ybytes(const lv_conv2d_desc *d) { return (size_t)d->N * d->C_out * d->Ho * d->Wo * 4; }
static size_t wbytes(const lv_conv2d_desc *d) { return (size_t)d->C_out * (d->C_in / d->groups) * d->kh * d->kw * 4; }

// Is candidate r acceptable under the plan's switches? Then take it (math type, workspace).
template <class Perf>
static bool take(const Perf &r, const Plan *p, size_t cap, Choice &c) {
  if (r.status != CUDNN_STATUS_SUCCESS || r.memory > cap) return false;
  if (p->det && r.determinism != CUDNN_DETERMINISTIC) return false;
  if (r.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;  // would round to half
  if (!p->tf32 && r.mathType == CUDNN_TENSOR_OP_MATH) return false;
  c.algo = (int)r.algo;
  c.ws = r.memory;
  c.math = p->tf32 ? r.mathType : CUDNN_FMA_MATH;
  c.have = true;
  return true;
}

// the workspace of the chosen algorithm under the math type applied (it can differ from the
// candidate's report when the math type was changed to FMA)
static int choice_ws(const Plan *p, int which, Choice &c) {
  size_t n = 0;
  CD(cudnnSetConvolutionMathType(p->conv, c.math), "math type");
  if (which == 0)
    CD(cudnnGetConvolutionForwardWorkspaceSize(handle, p->x, p->w, p->conv, p->y, (cudnnConvolutionFwdAlgo_t)c.algo, &n),
       "forward workspace size");
  else if (which == 1)
    CD(cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p->w, p->y, p->conv, p->x,
                                                    (cudnnConvolutionBwdDataAlgo_t)c.algo, &n),
       "backward-data workspace size");
  else
    CD(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, p->x, p->y, p->conv, p->w,
                                                      (cudnnConvolutionBwdFilterAlgo_t)c.algo, &n),
       "backward-filter workspace size");
  if (n > c.ws) c.ws = n;
  return 0;
}

static const char *const PASS[3] = {"forward", "backward-data", "backward-filter"};

// choose the algorithm of one pass (0 forward, 1 backward data, 2 backward filter); conv_mu held
static int choose(const lv_conv2d_desc *d, Plan *p, int which) {
  Choice &c = which == 0 ? p->fwd : which == 1 ? p->data : p->filter;
  size_t cap = ws_cap();
  int got = 0;
  CD(cudnnSetConvolutionMathType(p->conv, p->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH), "math type");
  if (p->bench) {  // time every candidate on scratch buffers (slots 1..3)
    if (ensure_ws(cap) < 0) {  // fall back to a smaller search workspace
      cudaGetLastError();
      cap = 64u << 20;
      if (ensure_ws(cap) < 0) return -1;
    }
    Scratch sx(xbytes(d), 1), sy(ybytes(d), 2), sw(wbytes(d), 3);
    if (!sx.p || !sy.p || !sw.p) return -1;
    if (which == 0) {
      cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      CD(cudnnFindConvolutionForwardAlgorithmEx(handle, p->x, sx.p, p->w, sw.p, p->conv, p->y, sy.p,
                                                CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, r, ws, cap),
         "find forward algorithm");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    } else if (which == 1) {
      cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      CD(cudnnFindConvolutionBackwardDataAlgorithmEx(handle, p->w, sw.p, p->y, sy.p, p->conv, p->x, sx.p,
                                                     CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, r, ws, cap),
         "find backward-data algorithm");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      CD(cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, p->x, sx.p, p->y, sy.p, p->conv, p->w, sw.p,
                                                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, r, ws, cap),
         "find backward-filter algorithm");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    }
    LVC_LAUNCHED("cuDNN algorithm search");
  } else {  // cuDNN's heuristics, best first (no timing: the same choice on every run)
    if (which == 0) {
      cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      CD(cudnnGetConvolutionForwardAlgorithm_v7(handle, p->x, p->w, p->conv, p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                &got, r),
         "forward algorithm heuristics");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    } else if (which == 1) {
      cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      CD(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, p->w, p->y, p->conv, p->x,
                                                     CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, r),
         "backward-data algorithm heuristics");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      CD(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, p->x, p->y, p->conv, p->w,
                                                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, r),
         "backward-filter algorithm heuristics");
      for (int i = 0; i < got && !take(r[i], p, cap, c); i++) {}
    }
  }
  if (!c.have) {  // none qualified: the algorithms cuDNN documents as deterministic
    c.algo = which == 0 ? (int)CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM
             : which == 1 ? (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 : (int)CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
    c.ws = 0;
    c.math = p->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    if (choice_ws(p, which, c) < 0)
      return fail(LVC_ERUNTIME,
                  "conv2d: cuDNN offers no %s algorithm for this shape%s", PASS[which],
                  p->det ? " that is deterministic; lviv_c.backends.cudnn.deterministic = False allows the others" : "");
    c.have = true;
    return 0;
  }
  return choice_ws(p, which, c);
}

// ws: the CPU's kept workspace, unused here (cuDNN keeps one shared workspace)
int conv2d_forward(const lv_conv2d_desc *d, const float *x, const float *w, const float *bias, float *y, float *ws_) {
  (void)ws_;
  std::lock_guard<std::mutex> lk(conv_mu);
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  if (!p->fwd.have && choose(d, p, 0) < 0) return -1;
  if (ensure_ws(p->fwd.ws) < 0) return -1;
  float one = 1.f, zero = 0.f;
  CD(cudnnSetConvolutionMathType(p->conv, p->fwd.math), "math type");
  CD(cudnnConvolutionForward(handle, &one, p->x, x, p->w, w, p->conv, (cudnnConvolutionFwdAlgo_t)p->fwd.algo, ws,
                             p->fwd.ws, &zero, p->y, y),
     "convolution forward");
  LVC_LAUNCHED("conv2d (cuDNN forward)");
  if (bias) {
    CD(cudnnAddTensor(handle, &one, p->b, bias, &one, p->y, y), "bias add");
    LVC_LAUNCHED("conv2d bias (cuDNN)");
  }
  return 0;
}

int conv2d_backward_data(const lv_conv2d_desc *d, const float *gy, const float *w, float *gx, float *ws_) {
  (void)ws_;
  std::lock_guard<std::mutex> lk(conv_mu);
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  if (!p->data.have && choose(d, p, 1) < 0) return -1;
  if (ensure_ws(p->data.ws) < 0) return -1;
  float one = 1.f;
  CD(cudnnSetConvolutionMathType(p->conv, p->data.math), "math type");
  CD(cudnnConvolutionBackwardData(handle, &one, p->w, w, p->y, gy, p->conv, (cudnnConvolutionBwdDataAlgo_t)p->data.algo,
                                  ws, p->data.ws, &one, p->x, gx),
     "convolution backward data");
  LVC_LAUNCHED("conv2d backward data (cuDNN)");
  return 0;
}

int conv2d_backward_weight(const lv_conv2d_desc *d, const float *x, const float *gy, float *gw, float *gb, float *ws_) {
  (void)ws_;
  std::lock_guard<std::mutex> lk(conv_mu);
  Plan *p;
  if (make_plan(d, &p) < 0) return -1;
  float one = 1.f;
  if (gw) {
    if (!p->filter.have && choose(d, p, 2) < 0) return -1;
    if (ensure_ws(p->filter.ws) < 0) return -1;
    CD(cudnnSetConvolutionMathType(p->conv, p->filter.math), "math type");
    CD(cudnnConvolutionBackwardFilter(handle, &one, p->x, x, p->y, gy, p->conv,
                                      (cudnnConvolutionBwdFilterAlgo_t)p->filter.algo, ws, p->filter.ws, &one, p->w, gw),
       "convolution backward filter");
    LVC_LAUNCHED("conv2d backward weight (cuDNN)");
  }
  if (gb) {
    CD(cudnnConvolutionBackwardBias(handle, &one, p->y, gy, &one, p->b, gb), "convolution backward bias");
    LVC_LAUNCHED("conv2d backward bias (cuDNN)");
  }
  return 0;
}

// conv_mu held
static void conv_release_plans() {
  for (auto &kv : plans) destroy_plan(kv.second);
  plans.clear();
}

// every plan, the workspace and the handle (release_caches; made again on demand)
void conv_release() {
  std::lock_guard<std::mutex> lk(conv_mu);
  conv_release_plans();
  dev_free(ws);
  ws = nullptr; ws_size = 0;
  if (handle) cudnnDestroy(handle);
  handle = nullptr;
}

}  // namespace lvc
