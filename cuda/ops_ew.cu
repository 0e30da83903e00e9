// Generic ops on the GPU: elementwise binary (broadcasting) and unary ops with their gradients,
// reductions, and the shape ops. Same semantics as csrc/ops/{elementwise,reduce,shape}.c.
// Reductions are deterministic (fixed per-output order, double accumulation for sums);
// index_select backward uses atomicAdd (duplicate indices), so its rounding order may vary.
#include <cmath>
#include "common.cuh"
extern "C" {
#include "ops/ops.h"
}

namespace lvc {

// ---------------------------------------------------------------- index helpers
struct Strided {  // an nd index space with strides of up to two operands in it
  int nd;
  int64_t shape[LV_MAXDIM];
  int64_t sa[LV_MAXDIM];
  int64_t sb[LV_MAXDIM];
};

__device__ __forceinline__ void offs2(const Strided &p, int64_t k, int64_t &oa, int64_t &ob) {
  oa = 0; ob = 0;
  for (int i = p.nd - 1; i >= 0; --i) {
    int64_t d = p.shape[i], q = k % d;
    k /= d;
    oa += q * p.sa[i];
    ob += q * p.sb[i];
  }
}

// ---------------------------------------------------------------- reductions (generic)
// x is viewed through an index space split into kept dims (enumerated row-major -> output j)
// and reduced dims (enumerated row-major -> r in [0, count)).
struct RPlan {
  int nk, nr;
  int64_t kshape[LV_MAXDIM], kstride[LV_MAXDIM];
  int64_t rshape[LV_MAXDIM], rstride[LV_MAXDIM];
  int64_t M, count;
};

__device__ __forceinline__ int64_t koff(const RPlan &p, int64_t j) {
  int64_t o = 0;
  for (int i = p.nk - 1; i >= 0; --i) { int64_t d = p.kshape[i]; o += (j % d) * p.kstride[i]; j /= d; }
  return o;
}
__device__ __forceinline__ int64_t roff(const RPlan &p, int64_t r) {
  int64_t o = 0;
  for (int i = p.nr - 1; i >= 0; --i) { int64_t d = p.rshape[i]; o += (r % d) * p.rstride[i]; r /= d; }
  return o;
}

// reduction codes: csrc/opdef.h (LV_RSUM ...)

__device__ __forceinline__ bool better(float v, int64_t i, float b, int64_t bi, bool is_max) {
  // CPU semantics: first NaN wins; otherwise strictly better value; ties: the lower index
  bool vn = isnan(v), bn = isnan(b);
  if (bn) return vn && i < bi;
  if (vn) return true;
  if (v == b) return i < bi;
  return is_max ? v > b : v < b;
}

// one block per output element (grid-stride over outputs); blockDim.x a power of two <= 256
// out: float (sum..std, max, min) or int64 (argmax/argmin); aux: mean (var/std, float) or the
// argmax index (max/min, int64); accumulate: out += result (sum only, used for gradients)
__global__ void k_reduce(const float *x, RPlan p, int op, double corr, float *outf, int64_t *outi,
                         float *auxf, int64_t *auxi, int accumulate) {
  __shared__ double sd[256];
  __shared__ float sv[256];
  __shared__ int64_t si[256];
  int tid = threadIdx.x;
  for (int64_t j = blockIdx.x; j < p.M; j += gridDim.x) {
    int64_t base = koff(p, j);
    if (op <= LV_RSTD) {
      double s = 0;
      for (int64_t r = tid; r < p.count; r += blockDim.x) s += (double)x[base + roff(p, r)];
      sd[tid] = s;
      __syncthreads();
      for (int w = blockDim.x / 2; w > 0; w >>= 1) { if (tid < w) sd[tid] += sd[tid + w]; __syncthreads(); }
      double tot = sd[0];
      __syncthreads();
      if (op == LV_RSUM) { if (tid == 0) outf[j] = accumulate ? outf[j] + (float)tot : (float)tot; }
      else if (op == LV_RMEAN) { if (tid == 0) outf[j] = (float)(tot / (double)p.count); }
      else {
        double mu = tot / (double)p.count, q = 0;
        for (int64_t r = tid; r < p.count; r += blockDim.x) { double d = x[base + roff(p, r)] - mu; q += d * d; }
        sd[tid] = q;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w >>= 1) { if (tid < w) sd[tid] += sd[tid + w]; __syncthreads(); }
        if (tid == 0) {
          double den = (double)p.count - corr;
          double v = den > 0 ? sd[0] / den : NAN;
          outf[j] = (float)(op == LV_RSTD ? sqrt(v) : v);
          if (auxf) auxf[j] = (float)mu;
        }
        __syncthreads();
      }
    } else {
      bool is_max = (op == LV_RMAX || op == LV_RARGMAX);
      float b = 0.f; int64_t bi = INT64_MAX;
      for (int64_t r = tid; r < p.count; r += blockDim.x) {
        float v = x[base + roff(p, r)];
        if (bi == INT64_MAX || better(v, r, b, bi, is_max)) { b = v; bi = r; }
      }
      sv[tid] = b; si[tid] = bi;
      __syncthreads();
      for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (tid < w && si[tid + w] != INT64_MAX &&
            (si[tid] == INT64_MAX || better(sv[tid + w], si[tid + w], sv[tid], si[tid], is_max))) {
          sv[tid] = sv[tid + w]; si[tid] = si[tid + w];
        }
        __syncthreads();
      }
      if (tid == 0) {
        if (op == LV_RMAX || op == LV_RMIN) { outf[j] = sv[0]; if (auxi) auxi[j] = si[0]; }
        else outi[j] = si[0];
      }
      __syncthreads();
    }
  }
}

// small reductions (count <= 32): one thread per output, same order as the CPU loop
__global__ void k_reduce_small_sum(const float *x, RPlan p, float *out, int accumulate) {
  LVC_GRID_STRIDE(j, p.M) {
    int64_t base = koff(p, j);
    double s = 0;
    for (int64_t r = 0; r < p.count; r++) s += (double)x[base + roff(p, r)];
    out[j] = accumulate ? out[j] + (float)s : (float)s;
  }
}

static int launch_reduce(const float *x, const RPlan &p, int op, double corr, float *outf,
                         int64_t *outi, float *auxf, int64_t *auxi, int accumulate) {
  if (p.M == 0) return 0;
  if (op == LV_RSUM && p.count <= 32) {
    k_reduce_small_sum<<<grid_for(p.M), 256, 0, stream>>>(x, p, outf, accumulate);
    LVC_LAUNCHED("reduce");
    return 0;
  }
  int threads = p.count >= 256 ? 256 : (p.count >= 64 ? 64 : 32);
  unsigned blocks = (unsigned)(p.M < 65535LL * 16 ? p.M : 65535LL * 16);
  k_reduce<<<blocks, threads, 0, stream>>>(x, p, op, corr, outf, outi, auxf, auxi, accumulate);
  LVC_LAUNCHED("reduce");
  return 0;
}

// dst (+)= sum of g (contiguous, shape oshape) over the dims where t's strides are 0
// (broadcast dims); dst has t's layout
static int sum_to(const float *g, int nd, const int64_t *oshape, const int64_t *st, float *dst) {
  RPlan p{};
  int64_t cs[LV_MAXDIM], s = 1;
  for (int i = nd - 1; i >= 0; i--) { cs[i] = s; s *= oshape[i]; }
  p.M = 1; p.count = 1;
  for (int i = 0; i < nd; i++) {
    if (st[i] == 0 && oshape[i] != 1) { p.rshape[p.nr] = oshape[i]; p.rstride[p.nr++] = cs[i]; p.count *= oshape[i]; }
    else { p.kshape[p.nk] = oshape[i]; p.kstride[p.nk++] = cs[i]; p.M *= oshape[i]; }
  }
  return launch_reduce(g, p, LV_RSUM, 0, dst, nullptr, nullptr, nullptr, 1);
}

// ---------------------------------------------------------------- binary
// one element: lv_f_binop / lv_f_binop_grad / lv_f_unop / lv_f_unop_grad (csrc/formulas.h)
__global__ void k_binary(int op, Strided p, int64_t N, const float *a, const float *b, float *o) {
  LVC_GRID_STRIDE(k, N) {
    int64_t oa, ob;
    offs2(p, k, oa, ob);
    o[k] = lv_f_binop(op, a[oa], b[ob]);
  }
}
__global__ void k_binary_same(int op, int64_t N, const float *a, const float *b, int bscalar, float *o) {
  LVC_GRID_STRIDE(k, N) o[k] = lv_f_binop(op, a[k], b[bscalar ? 0 : k]);
}

int binary_fwd(lv_node *n) {
  lv_tensor *a = n->in[0], *b = n->in[1], *o = n->out;
  int64_t N = numel(o);
  if (N == 0) return 0;
  int op = (int)n->ia[0];
  bool sa = a->ndim == o->ndim && numel(a) == N, sbs = b->ndim == o->ndim && numel(b) == N;
  if (sa && (sbs || numel(b) == 1)) {
    k_binary_same<<<grid_for(N), 256, 0, stream>>>(op, N, lv_f32(a), lv_f32(b), sbs ? 0 : 1, lv_f32(o));
  } else {
    Strided p{};
    p.nd = o->ndim;
    for (int i = 0; i < o->ndim; i++) p.shape[i] = o->shape[i];
    lv_broadcast_strides(a, o->ndim, o->shape, p.sa);
    lv_broadcast_strides(b, o->ndim, o->shape, p.sb);
    k_binary<<<grid_for(N), 256, 0, stream>>>(op, p, N, lv_f32(a), lv_f32(b), lv_f32(o));
  }
  LVC_LAUNCHED("binary op");
  return 0;
}

// gradient of side (0: a, 1: b) at output element k
__global__ void k_binary_grad(int op, int side, Strided p, int64_t N, const float *A, const float *B,
                              const float *O, const float *G, float *dst, int add) {
  LVC_GRID_STRIDE(k, N) {
    int64_t oa, ob;
    offs2(p, k, oa, ob);
    float r = lv_f_binop_grad(op, side, A[oa], B[ob], O[k], G[k]);
    if (add) dst[k] += r; else dst[k] = r;
  }
}

static bool same_shape(const lv_tensor *a, const lv_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return false;
  return true;
}

int binary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_tensor *a = n->in[0], *b = n->in[1], *o = n->out;
  int64_t N = numel(o);
  if (N == 0) return 0;
  int op = (int)n->ia[0];
  Strided p{};
  p.nd = o->ndim;
  for (int i = 0; i < o->ndim; i++) p.shape[i] = o->shape[i];
  lv_broadcast_strides(a, o->ndim, o->shape, p.sa);
  lv_broadcast_strides(b, o->ndim, o->shape, p.sb);
  for (int side = 0; side < 2; side++) {
    if (!gin[side]) continue;
    bool same = same_shape(side ? b : a, o);
    float *dst = lv_f32(gin[side]);
    Scratch sc(same ? 0 : (size_t)N * sizeof(float), 0);  // held until sum_to has queued its reduction
    if (!same) {
      dst = (float *)sc.p;
      if (!dst) return -1;
    }
    k_binary_grad<<<grid_for(N), 256, 0, stream>>>(op, side, p, N, lv_f32(a), lv_f32(b), lv_f32(o),
                                                  lv_f32(gout), dst, same ? 1 : 0);
    LVC_LAUNCHED("binary op backward");
    if (!same && sum_to(dst, o->ndim, o->shape, side ? p.sb : p.sa, lv_f32(gin[side])) < 0) return -1;
  }
  return 0;
}

// ---------------------------------------------------------------- unary
__global__ void k_unary(int op, int64_t N, const float *x, float *y, float p0, float p1) {
  LVC_GRID_STRIDE(i, N) {
    y[i] = lv_f_unop(op, x[i], p0, p1);
  }
}

__global__ void k_unary_bwd(int op, int64_t N, const float *x, const float *y, const float *g, float *d,
                            float p0, float p1) {
  LVC_GRID_STRIDE(i, N) {
    d[i] += lv_f_unop_grad(op, x[i], y[i], g[i], p0, p1);
  }
}

int unary_fwd(lv_node *n) {
  int64_t N = numel(n->out);
  if (N == 0) return 0;
  k_unary<<<grid_for(N), 256, 0, stream>>>((int)n->ia[0], N, lv_f32(n->in[0]), lv_f32(n->out),
                                            (float)n->fa[0], (float)n->fa[1]);
  LVC_LAUNCHED("unary op");
  return 0;
}

int unary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  int64_t N = numel(n->out);
  if (N == 0) return 0;
  k_unary_bwd<<<grid_for(N), 256, 0, stream>>>((int)n->ia[0], N, lv_f32(n->in[0]), lv_f32(n->out),
                                                lv_f32(gout), lv_f32(gin[0]), (float)n->fa[0], (float)n->fa[1]);
  LVC_LAUNCHED("unary op backward");
  return 0;
}

// ---------------------------------------------------------------- reduce op
static void make_rplan(const lv_tensor *a, uint32_t dims, RPlan *p) {
  *p = RPlan{};
  int64_t s = 1, st[LV_MAXDIM];
  for (int i = a->ndim - 1; i >= 0; i--) { st[i] = s; s *= a->shape[i]; }
  p->M = 1; p->count = 1;
  for (int i = 0; i < a->ndim; i++) {
    if (dims & (1u << i)) { p->rshape[p->nr] = a->shape[i]; p->rstride[p->nr++] = st[i]; p->count *= a->shape[i]; }
    else { p->kshape[p->nk] = a->shape[i]; p->kstride[p->nk++] = st[i]; p->M *= a->shape[i]; }
  }
}

int reduce_fwd(lv_node *n) {
  lv_tensor *a = n->in[0], *o = n->out;
  RPlan p;
  make_rplan(a, (uint32_t)n->ia[1], &p);
  int op = (int)n->ia[0];
  bool idx_out = (op == LV_RARGMAX || op == LV_RARGMIN);
  float *auxf = nullptr; int64_t *auxi = nullptr;
  if (n->aux[0]) { if (op == LV_RMAX || op == LV_RMIN) auxi = lv_i64(n->aux[0]); else auxf = lv_f32(n->aux[0]); }
  return launch_reduce(lv_f32(a), p, op, n->fa[0], idx_out ? nullptr : lv_f32(o),
                       idx_out ? lv_i64(o) : nullptr, auxf, auxi, 0);
}

// d[k] += f(g[j(k)]) over every input element k; j(k) the output it reduces into, r(k) its
// index in the reduced sub-space
struct EPlan {
  int nd;
  int64_t shape[LV_MAXDIM], ost[LV_MAXDIM], rst[LV_MAXDIM];
};
__global__ void k_reduce_bwd(EPlan p, int64_t N, int op, const float *x, const float *g, const float *y,
                             const float *mu, const int64_t *bi, float c, float *d) {
  LVC_GRID_STRIDE(k, N) {
    int64_t rem = k, off = 0, ro = 0;
    for (int i = p.nd - 1; i >= 0; --i) {
      int64_t q = rem % p.shape[i];
      rem /= p.shape[i];
      off += q * p.ost[i];
      ro += q * p.rst[i];
    }
    float r;
    switch (op) {
      case LV_RSUM: r = g[off]; break;
      case LV_RMEAN: r = g[off] * c; break;
      case LV_RVAR: r = g[off] * c * (x[k] - mu[off]); break;
      case LV_RSTD: r = y[off] > 0 ? g[off] * c * (x[k] - mu[off]) / y[off] : 0.f; break;
      case LV_RMAX: case LV_RMIN: r = ro == bi[off] ? g[off] : 0.f; break;
      default: r = 0.f;
    }
    d[k] += r;
  }
}

int reduce_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_tensor *a = n->in[0];
  int op = (int)n->ia[0];
  if (op >= LV_RARGMAX) return 0;
  uint32_t dims = (uint32_t)n->ia[1];
  EPlan p{};
  p.nd = a->ndim;
  int64_t so = 1, sr = 1, count = 1;
  for (int i = a->ndim - 1; i >= 0; i--) {
    p.shape[i] = a->shape[i];
    if (dims & (1u << i)) { p.ost[i] = 0; p.rst[i] = sr; sr *= a->shape[i]; count *= a->shape[i]; }
    else { p.ost[i] = so; p.rst[i] = 0; so *= a->shape[i]; }
  }
  int64_t N = numel(a);
  if (N == 0) return 0;
  double den = (double)count - n->fa[0];
  float c = op == LV_RMEAN ? 1.f / (float)count : op == LV_RVAR ? (float)(2.0 / den) : (float)(1.0 / den);
  const float *mu = (op == LV_RVAR || op == LV_RSTD) ? lv_f32(n->aux[0]) : nullptr;
  const int64_t *bi = (op == LV_RMAX || op == LV_RMIN) ? lv_i64(n->aux[0]) : nullptr;
  k_reduce_bwd<<<grid_for(N), 256, 0, stream>>>(p, N, op, lv_f32(a), lv_f32(gout), lv_f32(n->out), mu, bi,
                                                 c, lv_f32(gin[0]));
  LVC_LAUNCHED("reduction backward");
  return 0;
}

// ---------------------------------------------------------------- permute / slice / expand
// out[k] = src[base + sum idx_i * st_i] over the output index space (and the += inverse)
struct Gather {
  int nd;
  int64_t shape[LV_MAXDIM], st[LV_MAXDIM], base;
};
__device__ __forceinline__ int64_t goff(const Gather &p, int64_t k) {
  int64_t o = p.base;
  for (int i = p.nd - 1; i >= 0; --i) { int64_t d = p.shape[i]; o += (k % d) * p.st[i]; k /= d; }
  return o;
}
template <typename T>
__global__ void k_gather(Gather p, int64_t N, const T *src, T *dst) {
  LVC_GRID_STRIDE(k, N) dst[k] = src[goff(p, k)];
}
// injective maps only (permute, slice): no two k hit the same offset
__global__ void k_scatter_add(Gather p, int64_t N, const float *g, float *d) {
  LVC_GRID_STRIDE(k, N) d[goff(p, k)] += g[k];
}

static int run_gather(const Gather &p, int64_t N, const void *src, void *dst, int dtype) {
  if (N == 0) return 0;
  if (dtype == LV_I64) k_gather<int64_t><<<grid_for(N), 256, 0, stream>>>(p, N, (const int64_t *)src, (int64_t *)dst);
  else k_gather<float><<<grid_for(N), 256, 0, stream>>>(p, N, (const float *)src, (float *)dst);
  LVC_LAUNCHED("gather");
  return 0;
}

static void permute_plan(const lv_node *n, Gather *p) {
  const lv_tensor *a = n->in[0];
  int64_t ist[LV_MAXDIM], s = 1;
  for (int i = a->ndim - 1; i >= 0; i--) { ist[i] = s; s *= a->shape[i]; }
  *p = Gather{};
  p->nd = a->ndim;
  for (int i = 0; i < a->ndim; i++) { int q = (int)n->ia[i]; p->shape[i] = a->shape[q]; p->st[i] = ist[q]; }
}
int permute_fwd(lv_node *n) {
  Gather p;
  permute_plan(n, &p);
  return run_gather(p, numel(n->out), lv_data(n->in[0]), lv_data(n->out), n->in[0]->dtype);
}
int permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  Gather p;
  permute_plan(n, &p);
  int64_t N = numel(gout);
  if (N == 0) return 0;
  k_scatter_add<<<grid_for(N), 256, 0, stream>>>(p, N, lv_f32(gout), lv_f32(gin[0]));
  LVC_LAUNCHED("permute backward");
  return 0;
}

static void slice_plan(const lv_node *n, Gather *p) {
  const lv_tensor *a = n->in[0];
  int nd = a->ndim;
  int64_t ist[LV_MAXDIM], s = 1;
  for (int i = nd - 1; i >= 0; i--) { ist[i] = s; s *= a->shape[i]; }
  const int64_t *st = (const int64_t *)n->extra;  // [start(nd), step(nd), len(nd)]
  *p = Gather{};
  p->nd = nd;
  for (int i = 0; i < nd; i++) { p->base += st[i] * ist[i]; p->st[i] = st[nd + i] * ist[i]; p->shape[i] = st[2 * nd + i]; }
}
int slice_fwd(lv_node *n) {
  Gather p;
  slice_plan(n, &p);
  return run_gather(p, numel(n->out), lv_data(n->in[0]), lv_data(n->out), n->in[0]->dtype);
}
int slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  Gather p;
  slice_plan(n, &p);
  int64_t N = numel(gout);
  if (N == 0) return 0;
  k_scatter_add<<<grid_for(N), 256, 0, stream>>>(p, N, lv_f32(gout), lv_f32(gin[0]));
  LVC_LAUNCHED("slice backward");
  return 0;
}

static void expand_strides(const lv_tensor *a, const lv_tensor *o, int64_t *st) {
  int64_t s = 1;
  for (int i = o->ndim - 1; i >= 0; i--) {
    int ia = a->ndim - o->ndim + i;
    int64_t d = ia >= 0 ? a->shape[ia] : 1;
    st[i] = (d == 1 && o->shape[i] != 1) ? 0 : s;
    s *= d;
  }
}
int expand_fwd(lv_node *n) {
  lv_tensor *a = n->in[0], *o = n->out;
  Gather p{};
  p.nd = o->ndim;
  for (int i = 0; i < o->ndim; i++) p.shape[i] = o->shape[i];
  expand_strides(a, o, p.st);
  return run_gather(p, numel(o), lv_data(a), lv_data(o), LV_F32);
}
int expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_tensor *a = n->in[0], *o = n->out;
  int64_t st[LV_MAXDIM];
  expand_strides(a, o, st);
  return sum_to(lv_f32(gout), o->ndim, o->shape, st, lv_f32(gin[0]));
}

// ---------------------------------------------------------------- index_select / cat
template <typename T>
__global__ void k_isel(int64_t outer, int64_t K, int64_t inner, int64_t D, const int64_t *id, const T *src, T *dst) {
  int64_t N = outer * K * inner;
  LVC_GRID_STRIDE(e, N) {
    int64_t q = e % inner, t = e / inner, k = t % K, o = t / K;
    int64_t j = id[k] < 0 ? id[k] + D : id[k];
    dst[e] = src[(o * D + j) * inner + q];
  }
}
__global__ void k_isel_bwd(int64_t outer, int64_t K, int64_t inner, int64_t D, const int64_t *id, const float *g, float *d) {
  int64_t N = outer * K * inner;
  LVC_GRID_STRIDE(e, N) {
    int64_t q = e % inner, t = e / inner, k = t % K, o = t / K;
    int64_t j = id[k] < 0 ? id[k] + D : id[k];
    atomicAdd(d + (o * D + j) * inner + q, g[e]);  // indices may repeat
  }
}
static void isel_dims(const lv_node *n, int64_t *outer, int64_t *K, int64_t *inner, int64_t *D) {
  const lv_tensor *a = n->in[0];
  int dim = (int)n->ia[0];
  *outer = 1; *inner = 1; *D = a->shape[dim]; *K = numel(n->in[1]);
  for (int i = 0; i < dim; i++) *outer *= a->shape[i];
  for (int i = dim + 1; i < a->ndim; i++) *inner *= a->shape[i];
}
int isel_fwd(lv_node *n) {
  int64_t outer, K, inner, D;
  isel_dims(n, &outer, &K, &inner, &D);
  int64_t N = outer * K * inner;
  if (N == 0) return 0;
  if (n->in[0]->dtype == LV_I64)
    k_isel<int64_t><<<grid_for(N), 256, 0, stream>>>(outer, K, inner, D, lv_i64(n->in[1]), lv_i64(n->in[0]), lv_i64(n->out));
  else
    k_isel<float><<<grid_for(N), 256, 0, stream>>>(outer, K, inner, D, lv_i64(n->in[1]), lv_f32(n->in[0]), lv_f32(n->out));
  LVC_LAUNCHED("index_select");
  return 0;
}
int isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  int64_t outer, K, inner, D;
  isel_dims(n, &outer, &K, &inner, &D);
  int64_t N = outer * K * inner;
  if (N == 0) return 0;
  k_isel_bwd<<<grid_for(N), 256, 0, stream>>>(outer, K, inner, D, lv_i64(n->in[1]), lv_f32(gout), lv_f32(gin[0]));
  LVC_LAUNCHED("index_select backward");
  return 0;
}

// block copy between a part (outer, w) and the whole (outer, W) at column pos
template <typename T>
__global__ void k_cat_part(int64_t outer, int64_t w, int64_t W, int64_t pos, const T *part, T *whole, int back) {
  int64_t N = outer * w;
  LVC_GRID_STRIDE(e, N) {
    int64_t q = e / w, r = e % w;
    if (!back) whole[q * W + pos + r] = part[e];
    else ((float *)part)[e] += ((const float *)whole)[q * W + pos + r];
  }
}
static int cat_run(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  int dim = (int)n->ia[0];
  lv_tensor *o = n->out;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= o->shape[i];
  for (int i = dim + 1; i < o->ndim; i++) inner *= o->shape[i];
  int64_t W = o->shape[dim] * inner, pos = 0;
  for (int t = 0; t < n->n_in; t++) {
    int64_t w = n->in[t]->shape[dim] * inner;
    if (outer * w > 0) {
      if (!gout) {
        if (o->dtype == LV_I64)
          k_cat_part<int64_t><<<grid_for(outer * w), 256, 0, stream>>>(outer, w, W, pos, lv_i64(n->in[t]), lv_i64(o), 0);
        else
          k_cat_part<float><<<grid_for(outer * w), 256, 0, stream>>>(outer, w, W, pos, lv_f32(n->in[t]), lv_f32(o), 0);
        LVC_LAUNCHED("cat");
      } else if (gin[t]) {
        k_cat_part<float><<<grid_for(outer * w), 256, 0, stream>>>(outer, w, W, pos, lv_f32(gin[t]), lv_f32(gout), 1);
        LVC_LAUNCHED("cat backward");
      }
    }
    pos += w;
  }
  return 0;
}
int cat_fwd(lv_node *n) { return cat_run(n, nullptr, nullptr); }
int cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) { return cat_run(n, gout, gin); }

// ---------------------------------------------------------------- small helpers
__global__ void k_add(float *d, const float *s, int64_t n) { LVC_GRID_STRIDE(i, n) d[i] += s[i]; }
__global__ void k_fill(float *d, float v, int64_t n) { LVC_GRID_STRIDE(i, n) d[i] = v; }
__global__ void k_f2i(int64_t *d, const float *s, int64_t n) { LVC_GRID_STRIDE(i, n) d[i] = (int64_t)s[i]; }
__global__ void k_i2f(float *d, const int64_t *s, int64_t n) { LVC_GRID_STRIDE(i, n) d[i] = (float)s[i]; }

int add_into(float *dst, const float *src, int64_t n) {
  if (n <= 0) return 0;
  k_add<<<grid_for(n), 256, 0, stream>>>(dst, src, n);
  LVC_LAUNCHED("gradient accumulation");
  return 0;
}
__global__ void k_where_fwd(int64_t n, const float *c, const float *a, const float *b, float *o) {
  LVC_GRID_STRIDE(i, n) o[i] = lv_f_where(c[i], a[i], b[i]);
}
__global__ void k_where_bwd(int64_t n, const float *c, const float *g, float *ga, float *gb) {
  LVC_GRID_STRIDE(i, n) {
    if (ga) ga[i] += lv_f_where(c[i], g[i], 0.f);
    if (gb) gb[i] += lv_f_where(c[i], 0.f, g[i]);
  }
}
int where_fwd(int64_t n, const float *c, const float *a, const float *b, float *out) {
  if (n <= 0) return 0;
  k_where_fwd<<<grid_for(n), 256, 0, stream>>>(n, c, a, b, out);
  LVC_LAUNCHED("where");
  return 0;
}
int where_bwd(int64_t n, const float *c, const float *g, float *ga, float *gb) {
  if (n <= 0 || (!ga && !gb)) return 0;
  k_where_bwd<<<grid_for(n), 256, 0, stream>>>(n, c, g, ga, gb);
  LVC_LAUNCHED("where backward");
  return 0;
}
int fill_f32(float *d, float value, int64_t n) {
  if (init() < 0) return -1;
  if (n <= 0) return 0;
  k_fill<<<grid_for(n), 256, 0, stream>>>(d, value, n);
  LVC_LAUNCHED("fill");
  return 0;
}
int cast(void *dst, int dst_dtype, const void *src, int src_dtype, int64_t n) {
  if (n <= 0) return 0;
  if (dst_dtype == src_dtype) {
    LVC_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * (dst_dtype == LV_I64 ? 8 : 4), cudaMemcpyDeviceToDevice, stream), "cast");
    return 0;
  }
  if (dst_dtype == LV_F32) k_i2f<<<grid_for(n), 256, 0, stream>>>((float *)dst, (const int64_t *)src, n);
  else k_f2i<<<grid_for(n), 256, 0, stream>>>((int64_t *)dst, (const float *)src, n);
  LVC_LAUNCHED("cast");
  return 0;
}

}  // namespace lvc
