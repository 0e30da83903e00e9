// Kernels behind the nn op layer (csrc/ops/nn_ops.c) that the CUDA backend did not have yet:
// Linear (cuBLAS + bias kernels), grid_sample, avg_pool2d, constant pad, dropout (counter-based
// device RNG), the Poisson loss backward with a device-scalar output gradient, BatchNorm running
// statistics (incl. num_batches_tracked) without host synchronisation, and the gather of a batch
// from a device-resident block. Semantics: csrc/cpu/kernels.h and csrc/ops/nn_ops.c.
//
// Simple, correct kernels first. Determinism: every output is owned by one thread and reduced in
// a fixed order, except grid_sample's input gradient (atomicAdd, many output pixels read the same
// input pixel; rounding order varies within ~1e-6 relative).
#include <cmath>
#include "common.cuh"

namespace lvc {

// ---------------------------------------------------------------- Linear: y = x w^T + b
__global__ void k_add_bias_rows(int64_t M, int64_t O, const float *b, float *y) {
  LVC_GRID_STRIDE(i, M * O) y[i] += b[i % O];
}
// gb[o] += sum_i g[i, o]  (one thread per column, fixed order, double accumulator)
__global__ void k_col_sum(int64_t M, int64_t O, const float *g, float *gb) {
  LVC_GRID_STRIDE(o, O) {
    double s = 0;
    for (int64_t i = 0; i < M; i++) s += g[i * O + o];
    gb[o] += (float)s;
  }
}

int linear_fwd(lv_node *n) {
  const lv_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
  int64_t K = w->shape[1], O = w->shape[0], M = O ? numel(n->out) / O : 0;
  float *y = lv_f32(n->out);
  if (M * O == 0) return 0;
  if (K == 0) LVC_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * O) * sizeof(float), stream), "linear");
  else if (sgemm_rm(0, 1, M, O, K, 1.f, lv_f32(x), K, lv_f32(w), K, 0.f, y, O) < 0) return -1;
  if (b) {
    k_add_bias_rows<<<grid_for(M * O), 256, 0, stream>>>(M, O, lv_f32(b), y);
    LVC_LAUNCHED("linear bias");
  }
  return 0;
}

int linear_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  const lv_tensor *x = n->in[0], *w = n->in[1];
  int64_t K = w->shape[1], O = w->shape[0], M = O ? numel(gout) / O : 0;
  const float *g = lv_f32(gout);
  if (M == 0 || O == 0) return 0;
  if (gin[0] && K && sgemm_rm(0, 0, M, K, O, 1.f, g, O, lv_f32(w), K, 1.f, lv_f32(gin[0]), K) < 0) return -1;
  if (gin[1] && K && sgemm_rm(1, 0, O, K, M, 1.f, g, O, lv_f32(x), K, 1.f, lv_f32(gin[1]), K) < 0) return -1;
  if (gin[2]) {
    k_col_sum<<<grid_for(O, 128), 128, 0, stream>>>(M, O, g, lv_f32(gin[2]));
    LVC_LAUNCHED("linear backward (bias)");
  }
  return 0;
}

// ---------------------------------------------------------------- grid_sample (bilinear, zeros)
__device__ __forceinline__ float g_unnorm(float g, int S, int ac) {
  return ac ? (g + 1.f) * 0.5f * (float)(S - 1) : ((g + 1.f) * (float)S - 1.f) * 0.5f;
}

// thread per (n, c, pixel)
__global__ void k_gs_fwd(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                         float *y) {
  int64_t P = (int64_t)Ho * Wo, total = (int64_t)N * C * P;
  LVC_GRID_STRIDE(e, total) {
    int64_t pix = e % P, nc = e / P, nn = nc / C;
    const float *g = grid + (nn * P + pix) * 2;
    Taps t;
    make_taps(g_unnorm(g[0], W, ac), g_unnorm(g[1], H, ac), H, W, t);
    const float *xc = x + nc * (int64_t)H * W;
    float s = 0.f;
    for (int k = 0; k < 4; k++) if (t.idx[k] >= 0) s += t.w[k] * xc[t.idx[k]];
    y[e] = s;
  }
}
// thread per (n, pixel): ggrid over channels in order; gx by atomicAdd
__global__ void k_gs_bwd(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                         const float *gy, float *gx, float *ggrid) {
  int64_t P = (int64_t)Ho * Wo, total = (int64_t)N * P, HW = (int64_t)H * W;
  float sx = ac ? 0.5f * (W - 1) : 0.5f * W, sy = ac ? 0.5f * (H - 1) : 0.5f * H;
  LVC_GRID_STRIDE(e, total) {
    int64_t pix = e % P, nn = e / P;
    const float *g = grid + e * 2;
    Taps t;
    make_taps(g_unnorm(g[0], W, ac), g_unnorm(g[1], H, ac), H, W, t);
    float dx = 0.f, dy = 0.f;
    for (int c = 0; c < C; c++) {
      float go = gy[(nn * C + c) * P + pix];
      if (gx) {
        float *gxc = gx + (nn * C + c) * HW;
        for (int k = 0; k < 4; k++) if (t.idx[k] >= 0) atomicAdd(gxc + t.idx[k], t.w[k] * go);
      }
      if (ggrid) {
        const float *xc = x + (nn * C + c) * HW;
        float v[4];
        for (int k = 0; k < 4; k++) v[k] = t.idx[k] >= 0 ? xc[t.idx[k]] : 0.f;
        dx += go * ((v[1] - v[0]) * (1.f - t.ty) + (v[3] - v[2]) * t.ty);
        dy += go * ((v[2] - v[0]) * (1.f - t.tx) + (v[3] - v[1]) * t.tx);
      }
    }
    if (ggrid) {
      ggrid[e * 2] += dx * sx;
      ggrid[e * 2 + 1] += dy * sy;
    }
  }
}

static int gs_check(const char *who, int N, int C, int H, int W, int Ho, int Wo, const void *a, const void *b) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || Ho < 0 || Wo < 0 || !a || !b)
    return fail(LVC_EVALUE, "%s: bad arguments (N %d, C %d, H %d, W %d, Ho %d, Wo %d)", who, N, C, H, W, Ho, Wo);
  return 0;
}

int grid_sample_forward(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                        float *y) {
  if (gs_check("grid_sample", N, C, H, W, Ho, Wo, x, grid) < 0) return -1;
  int64_t total = (int64_t)N * C * Ho * Wo;
  if (total == 0) return 0;
  k_gs_fwd<<<grid_for(total), 256, 0, stream>>>(N, C, H, W, Ho, Wo, ac, x, grid, y);
  LVC_LAUNCHED("grid_sample");
  return 0;
}

int grid_sample_backward(int N, int C, int H, int W, int Ho, int Wo, int ac, const float *x, const float *grid,
                         const float *gy, float *gx, float *ggrid) {
  if (gs_check("grid_sample backward", N, C, H, W, Ho, Wo, grid, gy) < 0) return -1;
  if (ggrid && !x) return fail(LVC_EVALUE, "grid_sample backward: x is needed for the grid gradient");
  int64_t total = (int64_t)N * Ho * Wo;
  if (total == 0 || (!gx && !ggrid)) return 0;
  k_gs_bwd<<<grid_for(total), 256, 0, stream>>>(N, C, H, W, Ho, Wo, ac, x, grid, gy, gx, ggrid);
  LVC_LAUNCHED("grid_sample backward");
  return 0;
}

// ---------------------------------------------------------------- avg_pool2d
// count_include_pad True, floor mode: a window divides by its extent clipped to the padded input
// (always kh*kw in floor mode; computed like csrc/cpu/elementwise_k.c for identical rounding)
__device__ __forceinline__ float ap_div(int oy, int ox, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) {
  int y0 = oy * sh - ph, y1 = y0 + kh, ye = y1 < H + ph ? y1 : H + ph;
  int x0 = ox * sw - pw, x1 = x0 + kw, xe = x1 < W + pw ? x1 : W + pw;
  return (float)((ye - y0) * (xe - x0));
}
__global__ void k_ap_fwd(int64_t planes, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                         int pw, const float *x, float *y) {
  int64_t P = (int64_t)Ho * Wo, total = planes * P;
  LVC_GRID_STRIDE(e, total) {
    int64_t pl = e / P;
    int oy = (int)((e % P) / Wo), ox = (int)(e % Wo);
    int y0 = oy * sh - ph, x0 = ox * sw - pw;
    const float *xp = x + pl * (int64_t)H * W;
    float s = 0.f;
    for (int i = 0; i < kh; i++) {
      int yy = y0 + i;
      if (yy < 0 || yy >= H) continue;
      for (int j = 0; j < kw; j++) {
        int xx = x0 + j;
        if (xx >= 0 && xx < W) s += xp[(int64_t)yy * W + xx];
      }
    }
    y[e] = s / ap_div(oy, ox, H, W, kh, kw, sh, sw, ph, pw);
  }
}
// thread per input pixel: sum of the gradients of the windows that contain it (no atomics)
__global__ void k_ap_bwd(int64_t planes, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                         int pw, const float *gy, float *gx) {
  int64_t HW = (int64_t)H * W, total = planes * HW;
  LVC_GRID_STRIDE(e, total) {
    int64_t pl = e / HW;
    int yy = (int)((e % HW) / W), xx = (int)(e % W);
    // windows oy with oy*sh - ph <= yy < oy*sh - ph + kh
    int py = yy + ph, px = xx + pw;
    int oy_hi = py / sh, ox_hi = px / sw;
    int oy_lo = py - kh + 1 <= 0 ? 0 : (py - kh + sh) / sh;
    int ox_lo = px - kw + 1 <= 0 ? 0 : (px - kw + sw) / sw;
    if (oy_hi > Ho - 1) oy_hi = Ho - 1;
    if (ox_hi > Wo - 1) ox_hi = Wo - 1;
    const float *g = gy + pl * (int64_t)Ho * Wo;
    float s = 0.f;
    for (int oy = oy_lo; oy <= oy_hi; oy++)
      for (int ox = ox_lo; ox <= ox_hi; ox++) s += g[(int64_t)oy * Wo + ox] / ap_div(oy, ox, H, W, kh, kw, sh, sw, ph, pw);
    gx[e] += s;
  }
}

static int ap_dims(const char *who, int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                   int *Ho, int *Wo) {
  if (planes < 0 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 ||
      H + 2 * ph < kh || W + 2 * pw < kw)
    return fail(LVC_EVALUE, "%s: bad arguments (H %d, W %d, kernel %dx%d, stride %dx%d, padding %dx%d)", who, H, W,
                kh, kw, sh, sw, ph, pw);
  *Ho = (H + 2 * ph - kh) / sh + 1;
  *Wo = (W + 2 * pw - kw) / sw + 1;
  return 0;
}

int avg_pool2d_forward(const lv_pool2d_desc *d, const float *x, float *y) {
  int planes = d->planes, H = d->H, W = d->W, kh = d->kh, kw = d->kw, sh = d->sh, sw = d->sw, ph = d->ph, pw = d->pw;
  int Ho, Wo;
  if (ap_dims("avg_pool2d", planes, H, W, kh, kw, sh, sw, ph, pw, &Ho, &Wo) < 0) return -1;
  int64_t total = (int64_t)planes * Ho * Wo;
  if (total == 0) return 0;
  k_ap_fwd<<<grid_for(total), 256, 0, stream>>>(planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, x, y);
  LVC_LAUNCHED("avg_pool2d");
  return 0;
}

int avg_pool2d_backward(const lv_pool2d_desc *d, const float *gy, float *gx) {
  int planes = d->planes, H = d->H, W = d->W, kh = d->kh, kw = d->kw, sh = d->sh, sw = d->sw, ph = d->ph, pw = d->pw;
  int Ho, Wo;
  if (ap_dims("avg_pool2d backward", planes, H, W, kh, kw, sh, sw, ph, pw, &Ho, &Wo) < 0) return -1;
  int64_t total = (int64_t)planes * H * W;
  if (total == 0) return 0;
  k_ap_bwd<<<grid_for(total), 256, 0, stream>>>(planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, gy, gx);
  LVC_LAUNCHED("avg_pool2d backward");
  return 0;
}

// ---------------------------------------------------------------- constant pad
// thread per output element: the value, or the input element it came from
__global__ void k_pad_fwd(lv_pad_desc d, int64_t total, float value, const float *x, float *y) {
  LVC_GRID_STRIDE(e, total) {
    int64_t rem = e, src = 0, stride = 1;
    bool inside = true;
    for (int i = d.nd - 1; i >= 0; i--) {
      int64_t o = rem % d.out[i];
      rem /= d.out[i];
      int64_t k = o - d.before[i];
      if (k < 0 || k >= d.in[i]) { inside = false; break; }
      src += k * stride;
      stride *= d.in[i];
    }
    y[e] = inside ? x[src] : value;
  }
}
// thread per input element: gx += gy at its output position
__global__ void k_pad_bwd(lv_pad_desc d, int64_t total, const float *gy, float *gx) {
  LVC_GRID_STRIDE(e, total) {
    int64_t rem = e, dst = 0, stride = 1;
    for (int i = d.nd - 1; i >= 0; i--) {
      int64_t k = rem % d.in[i];
      rem /= d.in[i];
      dst += (k + d.before[i]) * stride;
      stride *= d.out[i];
    }
    gx[e] += gy[dst];
  }
}

static int64_t prod(int nd, const int64_t *s) {
  int64_t p = 1;
  for (int i = 0; i < nd; i++) p *= s[i];
  return p;
}

int pad_forward(const lv_pad_desc *d, float value, const float *x, float *y) {
  if (d->nd < 0 || d->nd > LV_MAXDIM) return fail(LVC_EVALUE, "pad: bad rank %d", d->nd);
  int64_t total = prod(d->nd, d->out);
  if (total == 0) return 0;
  k_pad_fwd<<<grid_for(total), 256, 0, stream>>>(*d, total, value, x, y);
  LVC_LAUNCHED("pad");
  return 0;
}

int pad_backward(const lv_pad_desc *d, const float *gy, float *gx) {
  if (d->nd < 0 || d->nd > LV_MAXDIM) return fail(LVC_EVALUE, "pad backward: bad rank %d", d->nd);
  int64_t total = prod(d->nd, d->in);
  if (total == 0) return 0;
  k_pad_bwd<<<grid_for(total), 256, 0, stream>>>(*d, total, gy, gx);
  LVC_LAUNCHED("pad backward");
  return 0;
}

// ---------------------------------------------------------------- dropout
// the counter-based mask of csrc/formulas.h (lv_f_dropout_mask), the seed drawn by the op layer
// (csrc/ops/nn_ops.c, one draw per forward): the CPU's mask, bit for bit
__global__ void k_dropout(int64_t n, const float *x, double p, float keep, uint64_t seed, float *mask, float *y) {
  LVC_GRID_STRIDE(i, n) {
    float m = lv_f_dropout_mask(seed, i, p, keep);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}
int dropout_forward(int64_t n, const float *x, double p, uint64_t seed, float *mask, float *y) {
  if (n < 0 || !(p >= 0 && p <= 1)) return fail(LVC_EVALUE, "dropout: bad arguments (n %lld, p %g)", (long long)n, p);
  if (n == 0) return 0;
  float keep = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.f;
  k_dropout<<<grid_for(n), 256, 0, stream>>>(n, x, p, keep, seed, mask, y);
  LVC_LAUNCHED("dropout");
  return 0;
}

// ---------------------------------------------------------------- Poisson loss backward
__global__ void k_poisson_bwd(int64_t n, const float *gout, const float *grad, const float *yhat, float eps,
                              float scale, float *gyhat, float *gy) {
  float g = *gout;
  LVC_GRID_STRIDE(i, n) {
    if (gyhat) gyhat[i] += g * grad[i];
    if (gy) gy[i] -= lv_f_poisson_grad_target(yhat[i], eps, scale, g);
  }
}
int poisson_loss_backward(int64_t n, const float *gout, const float *grad, const float *yhat, float eps, float scale,
                          float *gyhat, float *gy) {
  if (n <= 0 || (!gyhat && !gy)) return 0;
  k_poisson_bwd<<<grid_for(n), 256, 0, stream>>>(n, gout, grad, yhat, eps, scale, gyhat, gy);
  LVC_LAUNCHED("poisson_loss backward");
  return 0;
}

// ---------------------------------------------------------------- BatchNorm running statistics
// one block: thread 0 bumps num_batches_tracked and fixes the factor, then all threads update
__global__ void k_bn_track(int C, double momentum, const float *mean, const float *var, float *rm, float *rv,
                           long long *nbt) {
  __shared__ double f;
  if (threadIdx.x == 0) f = lv_f_bn_factor(momentum, nbt ? ++nbt[0] : 0);
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    if (rm) rm[c] = lv_f_bn_running(rm[c], mean[c], f);
    if (rv) rv[c] = lv_f_bn_running(rv[c], var[c], f);
  }
}
int bn_track(int C, double momentum, const float *mean, const float *var_unbiased, float *rmean, float *rvar,
             int64_t *nbt) {
  if (C < 0) return fail(LVC_EVALUE, "batch_norm running statistics: bad channel count %d", C);
  if (!nbt && !(rmean && rvar)) return 0;
  k_bn_track<<<1, 256, 0, stream>>>(C, momentum, mean, var_unbiased, rmean && rvar ? rmean : nullptr,
                                    rmean && rvar ? rvar : nullptr, (long long *)nbt);
  LVC_LAUNCHED("batch_norm running statistics");
  return 0;
}

// ---------------------------------------------------------------- device-resident batch gather
// idx_mu: held from taking a slot of the ring to queuing the kernel that reads it (common.cuh)
static const int NIDX = 4;
static std::mutex idx_mu;
static int64_t *idx_host[NIDX];  // pinned
static int64_t *idx_dev[NIDX];
static size_t idx_cap[NIDX];
static cudaEvent_t idx_ev[NIDX];
static bool idx_used[NIDX];
static int idx_next = 0;

__global__ void k_gather_rows(float *dst, const float *src, int64_t row, const int64_t *idx, int64_t nb) {
  LVC_GRID_STRIDE(e, nb * row) {
    int64_t i = e / row, k = e % row;
    dst[e] = src[idx[i] * row + k];
  }
}

int gather_rows_dev(float *dst, const float *dev_block, int64_t row, const int64_t *idx, int64_t nb) {
  if (init() < 0) return -1;
  if (nb <= 0 || row <= 0) return 0;
  std::lock_guard<std::mutex> lk(idx_mu);
  int s = idx_next;
  idx_next = (idx_next + 1) % NIDX;
  // the pinned index buffer is reused only after the copy that read it has finished
  if (idx_used[s]) LVC_WAIT(cudaEventSynchronize(idx_ev[s]), "batch index staging");
  if (!idx_ev[s]) LVC_CHECK(cudaEventCreateWithFlags(&idx_ev[s], cudaEventDisableTiming), "batch index staging");
  size_t bytes = (size_t)nb * sizeof(int64_t);
  if (idx_cap[s] < bytes) {
    if (idx_host[s]) cudaFreeHost(idx_host[s]);
    dev_free(idx_dev[s]);
    idx_host[s] = nullptr; idx_dev[s] = nullptr; idx_cap[s] = 0;
    LVC_CHECK(cudaMallocHost((void **)&idx_host[s], bytes), "batch index staging");
    LVC_CHECK(dev_malloc((void **)&idx_dev[s], bytes), "batch index staging");
    idx_cap[s] = bytes;
  }
  memcpy(idx_host[s], idx, bytes);
  LVC_CHECK(cudaMemcpyAsync(idx_dev[s], idx_host[s], bytes, cudaMemcpyHostToDevice, stream), "batch index copy");
  LVC_CHECK(cudaEventRecord(idx_ev[s], stream), "batch index staging");
  idx_used[s] = true;
  k_gather_rows<<<grid_for(nb * row), 256, 0, stream>>>(dst, dev_block, row, idx_dev[s], nb);
  LVC_LAUNCHED("batch gather");
  return 0;
}

// ---------------------------------------------------------------- Gaussian readout positions
__global__ void k_pos_project(int64_t N, int type, int project, float *mu, float *sg, int64_t nsg) {
  LVC_GRID_STRIDE(i, 2 * N > nsg ? 2 * N : nsg) {
    if ((project & 1) && i < 2 * N) mu[i] = lv_f_clamp1(mu[i]);
    if ((project & 2) && sg && type != 0 && i < nsg && sg[i] < 0.f) sg[i] = 0.f;
  }
}
__global__ void k_pos_mean(int64_t N, const float *mu, float *mask, float *out) {
  LVC_GRID_STRIDE(i, 2 * N) {
    mask[i] = lv_f_inside1(mu[i]);
    out[i] = lv_f_clamp1(mu[i]);
  }
}
// thread per (b, n): a Box-Muller pair from the hash of (seed, b*N + n)
__global__ void k_pos_sample(int64_t B, int64_t N, int type, const float *mu, const float *sg, uint64_t seed,
                             float *eps, float *mask, float *out) {
  LVC_GRID_STRIDE(e, B * N) {
    int64_t n = e % N, o = e * 2;
    lv_f_readout_sample(type, mu, sg, n, lv_f_mix64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(e + 1)), eps + o, mask + o,
                        out + o);
  }
}

int readout_pos_forward(int64_t B, int64_t N, int sample, int type, int project, float *mu, float *sigma,
                        uint64_t seed, float *eps, float *mask, float *out) {
  if (N < 0 || type < 0 || type > 2 || (sample && (B < 1 || !sigma || !eps)))
    return fail(LVC_EVALUE, "readout_positions: bad arguments (B %lld, N %lld, type %d)", (long long)B, (long long)N, type);
  if (N == 0) return 0;
  int64_t nsg = sigma ? N * (type == 0 ? 4 : type == 1 ? 2 : 1) : 0;
  if (project & 3) {
    int64_t m = 2 * N > nsg ? 2 * N : nsg;
    k_pos_project<<<grid_for(m), 256, 0, stream>>>(N, type, project, mu, sigma, nsg);
    LVC_LAUNCHED("readout_positions (projection)");
  }
  if (!sample) {
    k_pos_mean<<<grid_for(2 * N), 256, 0, stream>>>(N, mu, mask, out);
  } else {
    k_pos_sample<<<grid_for(B * N), 256, 0, stream>>>(B, N, type, mu, sigma, lv_f_mix64(seed), eps, mask, out);
  }
  LVC_LAUNCHED("readout_positions");
  return 0;
}

// thread per neuron: sums over the batch in order (deterministic), double accumulators
__global__ void k_pos_bwd(int64_t B, int64_t N, int sample, int type, const float *g, const float *mask,
                          const float *eps, float *gmu, float *gsg) {
  LVC_GRID_STRIDE(n, N) {
    if (!sample) {
      if (gmu) {
        gmu[2 * n] += g[2 * n] * mask[2 * n];
        gmu[2 * n + 1] += g[2 * n + 1] * mask[2 * n + 1];
      }
      continue;
    }
    double acc[6] = {0, 0, 0, 0, 0, 0};
    for (int64_t b = 0; b < B; b++) {
      int64_t o = (b * N + n) * 2;
      lv_f_readout_pos_acc(g + o, mask + o, eps + o, acc);
    }
    lv_f_readout_pos_grad(type, n, acc, gmu, gsg);
  }
}

int readout_pos_backward(int64_t B, int64_t N, int sample, int type, const float *g, const float *mask,
                         const float *eps, float *gmu, float *gsigma) {
  if (N <= 0 || (!gmu && !gsigma)) return 0;
  k_pos_bwd<<<grid_for(N, 128), 128, 0, stream>>>(B, N, sample, type, g, mask, eps, gmu, sample ? gsigma : nullptr);
  LVC_LAUNCHED("readout_positions backward");
  return 0;
}

// the index ring (release_caches, after the stream finished)
void nn_ops_release() {
  std::lock_guard<std::mutex> lk(idx_mu);
  for (int s = 0; s < NIDX; s++) {
    if (idx_host[s]) cudaFreeHost(idx_host[s]);
    dev_free(idx_dev[s]);
    if (idx_ev[s]) cudaEventDestroy(idx_ev[s]);
    idx_host[s] = nullptr; idx_dev[s] = nullptr; idx_cap[s] = 0; idx_ev[s] = nullptr; idx_used[s] = false;
  }
  idx_next = 0;
}

}  // namespace lvc
