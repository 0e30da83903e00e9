// NN kernels of the CUDA backend: BatchNorm (+ fused ELU) forward/backward, the Gaussian readout,
// the Poisson loss with its gradient, Adam, and the training-loop helpers (batch gather through
// pinned staging buffers, an on-device loss accumulator). Semantics: csrc/cpu/kernels.h.
//
// Determinism: BatchNorm statistics and gradients, the loss, and the readout's feature, bias
// and position gradients are reduced in a fixed order (one owner thread/block per output).
// The readout's input gradient gx (many neurons read the same pixels) uses atomicAdd: its
// rounding order varies between runs, within ~1e-6 relative of a fixed-order sum.
#include <cmath>
#include "common.cuh"

namespace lvc {

// ---------------------------------------------------------------- BatchNorm
// block reduction of two doubles (blockDim.x power of two <= 1024)
__device__ __forceinline__ void block_sum2(double &a, double &b) {
  __shared__ double sa[1024], sb[1024];
  int t = threadIdx.x;
  sa[t] = a; sb[t] = b;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (t < w) { sa[t] += sa[t + w]; sb[t] += sb[t + w]; }
    __syncthreads();
  }
  a = sa[0]; b = sb[0];
  __syncthreads();
}

// one block per channel: mean, biased var (two passes, double), invstd, unbiased var
__global__ void k_bn_stats(int N, int C, int HW, const float *x, float eps, float *mean, float *invstd,
                           float *var_unbiased) {
  int c = blockIdx.x;
  int64_t M = (int64_t)N * HW;
  double s = 0, dummy = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    int64_t nn = i / HW, h = i % HW;
    s += x[(nn * C + c) * (int64_t)HW + h];
  }
  block_sum2(s, dummy);
  double mu = s / (double)M, q = 0;
  dummy = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    int64_t nn = i / HW, h = i % HW;
    double d = x[(nn * C + c) * (int64_t)HW + h] - mu;
    q += d * d;
  }
  block_sum2(q, dummy);
  if (threadIdx.x == 0) {
    double var = q / (double)M;
    mean[c] = (float)mu;
    invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
    if (var_unbiased) var_unbiased[c] = (float)(M > 1 ? q / (double)(M - 1) : NAN);
  }
}

// y = (x - mean) * scale + shift per channel (scale = gamma * invstd), optional ELU
__global__ void k_bn_apply(int64_t total, int C, int HW, const float *x, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, int elu, float *y) {
  LVC_GRID_STRIDE(i, total) {
    int c = (int)((i / HW) % C);
    float z = (x[i] - mean[c]) * invstd[c];
    if (gamma) z = z * gamma[c];
    if (beta) z += beta[c];
    y[i] = elu ? lv_f_elu1_fast(z) : z;
  }
}

// eval: mean = running mean, invstd = 1/sqrt(running var + eps)
__global__ void k_bn_eval_consts(int C, const float *rvar, float eps, float *invstd) {
  LVC_GRID_STRIDE(c, C) invstd[c] = 1.f / sqrtf(rvar[c] + eps);
}

static int threads_for(int64_t M) { return M >= 1024 ? 1024 : M >= 256 ? 256 : 64; }

int bn_forward_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float eps,
                     int elu, float *y, float *mean, float *invstd, float *var_unbiased) {
  if (N < 1 || C < 1 || HW < 1) return fail(LVC_EVALUE, "batch_norm: bad shape (N %d, C %d, HW %d)", N, C, HW);
  int64_t M = (int64_t)N * HW, total = M * C;
  k_bn_stats<<<C, threads_for(M), 0, stream>>>(N, C, HW, x, eps, mean, invstd, var_unbiased);
  LVC_LAUNCHED("batch_norm statistics");
  k_bn_apply<<<grid_for(total), 256, 0, stream>>>(total, C, HW, x, mean, invstd, gamma, beta, elu, y);
  LVC_LAUNCHED("batch_norm");
  return 0;
}

int bn_forward_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                    const float *rmean, const float *rvar, float eps, int elu, float *y) {
  if (N < 0 || C < 1 || HW < 1) return fail(LVC_EVALUE, "batch_norm: bad shape (N %d, C %d, HW %d)", N, C, HW);
  Scratch sc((size_t)C * sizeof(float), 4);  // held until the kernels reading it are queued
  float *inv = (float *)sc.p;
  if (!inv) return -1;
  k_bn_eval_consts<<<grid_for(C), 256, 0, stream>>>(C, rvar, eps, inv);
  LVC_LAUNCHED("batch_norm");
  int64_t total = (int64_t)N * C * HW;
  if (total == 0) return 0;
  k_bn_apply<<<grid_for(total), 256, 0, stream>>>(total, C, HW, x, rmean, inv, gamma, beta, elu, y);
  LVC_LAUNCHED("batch_norm");
  return 0;
}

// gyz = gy * ELU'(z) from the saved output (y > 0 ? 1 : y + 1)
__device__ __forceinline__ float gz(const float *gy, const float *y, int elu, int64_t i) {
  float g = gy[i];
  if (elu) { float o = y[i]; g = lv_f_elu_grad(o > 0.f, o, g, 1.f); }
  return g;
}

// per channel: sum(gyz), sum(gyz * xhat) -> sums[2c], sums[2c+1]
__global__ void k_bn_bwd_sums(int N, int C, int HW, const float *x, const float *y, const float *gy,
                              const float *mean, const float *invstd, int elu, double *sums) {
  int c = blockIdx.x;
  int64_t M = (int64_t)N * HW;
  double s1 = 0, s2 = 0;
  float mu = mean[c], is = invstd[c];
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    int64_t nn = i / HW, h = i % HW, k = (nn * C + c) * (int64_t)HW + h;
    float g = gz(gy, y, elu, k);
    s1 += g;
    s2 += (double)g * ((x[k] - mu) * is);
  }
  block_sum2(s1, s2);
  if (threadIdx.x == 0) { sums[2 * c] = s1; sums[2 * c + 1] = s2; }
}

// train: gx += gamma * invstd / M * (M gyz - sum1 - xhat sum2); eval: gx += gamma * invstd * gyz
__global__ void k_bn_bwd_apply(int64_t total, int C, int HW, int64_t M, const float *x, const float *y,
                               const float *gy, const float *gamma, const float *mean, const float *invstd,
                               int elu, const double *sums, int train, float *gx) {
  LVC_GRID_STRIDE(i, total) {
    int c = (int)((i / HW) % C);
    float g = gz(gy, y, elu, i), is = invstd[c], ga = gamma ? gamma[c] : 1.f;
    if (train) {
      float xhat = (x[i] - mean[c]) * is;
      float s1 = (float)(sums[2 * c] / (double)M), s2 = (float)(sums[2 * c + 1] / (double)M);
      gx[i] += ga * is * (g - s1 - xhat * s2);
    } else {
      gx[i] += ga * is * g;
    }
  }
}
__global__ void k_bn_param_grads(int C, const double *sums, float *ggamma, float *gbeta) {
  LVC_GRID_STRIDE(c, C) {
    if (ggamma) ggamma[c] += (float)sums[2 * c + 1];
    if (gbeta) gbeta[c] += (float)sums[2 * c];
  }
}

static int bn_backward(int N, int C, int HW, const float *x, const float *y, const float *gy, const float *gamma,
                       const float *mean, const float *invstd, int elu, int train, float *gx, float *ggamma,
                       float *gbeta) {
  if (N < 1 || C < 1 || HW < 1) return fail(LVC_EVALUE, "batch_norm backward: bad shape (N %d, C %d, HW %d)", N, C, HW);
  int64_t M = (int64_t)N * HW, total = M * C;
  Scratch sc((size_t)C * 2 * sizeof(double), 5);
  double *sums = (double *)sc.p;
  if (!sums) return -1;
  k_bn_bwd_sums<<<C, threads_for(M), 0, stream>>>(N, C, HW, x, y, gy, mean, invstd, elu, sums);
  LVC_LAUNCHED("batch_norm backward");
  if (gx) {
    k_bn_bwd_apply<<<grid_for(total), 256, 0, stream>>>(total, C, HW, M, x, y, gy, gamma, mean, invstd, elu, sums,
                                                        train, gx);
    LVC_LAUNCHED("batch_norm backward");
  }
  if (gamma && (ggamma || gbeta)) {  // affine=False: no parameter gradients (CPU semantics)
    k_bn_param_grads<<<grid_for(C), 256, 0, stream>>>(C, sums, ggamma, gbeta);
    LVC_LAUNCHED("batch_norm backward");
  }
  return 0;
}

int bn_backward_train(int N, int C, int HW, const float *x, const float *y, const float *gy, const float *gamma,
                      const float *mean, const float *invstd, int elu, float *gx, float *ggamma, float *gbeta) {
  return bn_backward(N, C, HW, x, y, gy, gamma, mean, invstd, elu, 1, gx, ggamma, gbeta);
}

int bn_backward_eval(int N, int C, int HW, const float *x, const float *y, const float *gy, const float *gamma,
                     const float *rmean, const float *rvar, float eps, int elu, float *gx, float *ggamma,
                     float *gbeta) {
  Scratch sc((size_t)C * sizeof(float), 4);  // lock order 4 -> 5 (bn_backward)
  float *inv = (float *)sc.p;
  if (!inv) return -1;
  k_bn_eval_consts<<<grid_for(C), 256, 0, stream>>>(C, rvar, eps, inv);
  LVC_LAUNCHED("batch_norm backward");
  return bn_backward(N, C, HW, x, y, gy, gamma, rmean, inv, elu, 0, gx, ggamma, gbeta);
}

// ---------------------------------------------------------------- Gaussian readout
__device__ __forceinline__ void taps_at(const float *pos, int B, int Nn, int shared, int b, int n, int H, int W,
                                        Taps &t) {
  const float *p = shared ? pos + 2 * (int64_t)n : pos + 2 * ((int64_t)b * Nn + n);
  make_taps((p[0] + 1.f) * (0.5f * (W - 1)), (p[1] + 1.f) * (0.5f * (H - 1)), H, W, t);
}
__device__ __forceinline__ float tap_read(const float *xc, const Taps &t) {
  float s = 0.f;
  for (int k = 0; k < 4; k++) if (t.idx[k] >= 0) s += t.w[k] * xc[t.idx[k]];
  return s;
}

// thread per (b, n): out = sum_c feat[c, n] * sample + bias
__global__ void k_readout_fwd(int B, int C, int H, int W, int Nn, int shared, const float *x, const float *pos,
                              const float *feat, const float *bias, float *out) {
  int64_t total = (int64_t)B * Nn;
  LVC_GRID_STRIDE(e, total) {
    int b = (int)(e / Nn), n = (int)(e % Nn);
    Taps t;
    taps_at(pos, B, Nn, shared, b, n, H, W, t);
    const float *xb = x + (int64_t)b * C * H * W;
    float s = bias ? bias[n] : 0.f;
    for (int c = 0; c < C; c++) s += feat[(int64_t)c * Nn + n] * tap_read(xb + (int64_t)c * H * W, t);
    out[e] = s;
  }
}

// thread per (b, n): gx (atomicAdd) and, for per-image positions, gpos[b, n]
__global__ void k_readout_bwd_x(int B, int C, int H, int W, int Nn, int shared, const float *x, const float *pos,
                                const float *feat, const float *gout, float *gx, float *gpos) {
  int64_t total = (int64_t)B * Nn;
  float sx = 0.5f * (W - 1), sy = 0.5f * (H - 1);
  LVC_GRID_STRIDE(e, total) {
    int b = (int)(e / Nn), n = (int)(e % Nn);
    float g = gout[e];
    if (g == 0.f) continue;
    Taps t;
    taps_at(pos, B, Nn, shared, b, n, H, W, t);
    const float *xb = x + (int64_t)b * C * H * W;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    for (int c = 0; c < C; c++) {
      float f = feat[(int64_t)c * Nn + n];
      const float *xc = xb + (int64_t)c * H * W;
      for (int k = 0; k < 4; k++) {
        if (t.idx[k] < 0) continue;
        if (gpos && !shared) v[k] += f * xc[t.idx[k]];
        if (gx) atomicAdd(gx + ((int64_t)b * C + c) * H * W + t.idx[k], g * t.w[k] * f);
      }
    }
    if (gpos && !shared) {
      gpos[2 * e] += g * sx * ((v[1] - v[0]) * (1.f - t.ty) + (v[3] - v[2]) * t.ty);
      gpos[2 * e + 1] += g * sy * ((v[2] - v[0]) * (1.f - t.tx) + (v[3] - v[1]) * t.tx);
    }
  }
}

// thread per (c, n): gfeat[c, n] += sum_b gout[b, n] * sample(b, c, n)   (fixed order over b)
__global__ void k_readout_bwd_feat(int B, int C, int H, int W, int Nn, int shared, const float *x, const float *pos,
                                   const float *gout, float *gfeat) {
  int64_t total = (int64_t)C * Nn;
  LVC_GRID_STRIDE(e, total) {
    int c = (int)(e / Nn), n = (int)(e % Nn);
    float s = 0.f;
    for (int b = 0; b < B; b++) {
      float g = gout[(int64_t)b * Nn + n];
      if (g == 0.f) continue;
      Taps t;
      taps_at(pos, B, Nn, shared, b, n, H, W, t);
      s += g * tap_read(x + ((int64_t)b * C + c) * H * W, t);
    }
    gfeat[e] += s;
  }
}

// thread per n: gbias[n] += sum_b gout[b, n]; shared positions: gpos[n] += sum over b
__global__ void k_readout_bwd_n(int B, int C, int H, int W, int Nn, int shared, const float *x, const float *pos,
                                const float *feat, const float *gout, float *gpos, float *gbias) {
  float sx = 0.5f * (W - 1), sy = 0.5f * (H - 1);
  LVC_GRID_STRIDE(n, (int64_t)Nn) {
    float sb = 0.f, gp0 = 0.f, gp1 = 0.f;
    for (int b = 0; b < B; b++) {
      float g = gout[(int64_t)b * Nn + n];
      sb += g;
      if (!(shared && gpos) || g == 0.f) continue;
      Taps t;
      taps_at(pos, B, Nn, shared, b, (int)n, H, W, t);
      float v[4] = {0.f, 0.f, 0.f, 0.f};
      for (int c = 0; c < C; c++) {
        float f = feat[(int64_t)c * Nn + n];
        const float *xc = x + ((int64_t)b * C + c) * H * W;
        for (int k = 0; k < 4; k++) if (t.idx[k] >= 0) v[k] += f * xc[t.idx[k]];
      }
      gp0 += g * sx * ((v[1] - v[0]) * (1.f - t.ty) + (v[3] - v[2]) * t.ty);
      gp1 += g * sy * ((v[2] - v[0]) * (1.f - t.tx) + (v[3] - v[1]) * t.tx);
    }
    if (gbias) gbias[n] += sb;
    if (shared && gpos) { gpos[2 * n] += gp0; gpos[2 * n + 1] += gp1; }
  }
}

static int ro_check(const char *who, int B, int C, int H, int W, int Nn, const void *x, const void *pos,
                    const void *feat) {
  if (B < 0 || C < 1 || H < 1 || W < 1 || Nn < 0 || !x || !pos || !feat)
    return fail(LVC_EVALUE, "%s: bad arguments (B %d, C %d, H %d, W %d, neurons %d)", who, B, C, H, W, Nn);
  return 0;
}

int readout_forward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x, const float *pos,
                    const float *feat, const float *bias, float *out) {
  if (ro_check("readout", B, C, H, W, Nn, x, pos, feat) < 0) return -1;
  int64_t total = (int64_t)B * Nn;
  if (total == 0) return 0;
  k_readout_fwd<<<grid_for(total), 256, 0, stream>>>(B, C, H, W, Nn, shared_pos, x, pos, feat, bias, out);
  LVC_LAUNCHED("readout");
  return 0;
}

int readout_backward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x, const float *pos,
                     const float *feat, const float *gout, float *gx, float *gpos, float *gfeat, float *gbias) {
  if (ro_check("readout backward", B, C, H, W, Nn, x, pos, feat) < 0) return -1;
  int64_t total = (int64_t)B * Nn;
  if (total == 0) return 0;
  if (gx || (gpos && !shared_pos)) {
    k_readout_bwd_x<<<grid_for(total), 256, 0, stream>>>(B, C, H, W, Nn, shared_pos, x, pos, feat, gout, gx,
                                                         shared_pos ? nullptr : gpos);
    LVC_LAUNCHED("readout backward");
  }
  if (gfeat) {
    k_readout_bwd_feat<<<grid_for((int64_t)C * Nn), 256, 0, stream>>>(B, C, H, W, Nn, shared_pos, x, pos, gout,
                                                                        gfeat);
    LVC_LAUNCHED("readout backward");
  }
  if (gbias || (gpos && shared_pos)) {
    k_readout_bwd_n<<<grid_for(Nn), 128, 0, stream>>>(B, C, H, W, Nn, shared_pos, x, pos, feat, gout,
                                                      shared_pos ? gpos : nullptr, gbias);
    LVC_LAUNCHED("readout backward");
  }
  return 0;
}

// ---------------------------------------------------------------- Poisson loss
// pass 1: per-block partial sums (double) and the gradient; pass 2: one block sums the partials
__global__ void k_poisson(int64_t n, const float *yhat, const float *y, float eps, float scale, double *part,
                          float *grad) {
  __shared__ double sh[256];
  double s = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    s += lv_f_poisson_term(yhat[i], y[i], eps);
    if (grad) grad[i] = lv_f_poisson_grad(yhat[i], y[i], eps, scale);
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) { if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w]; __syncthreads(); }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}
__global__ void k_sum_parts(int nparts, const double *part, double scale, float *out) {
  __shared__ double sh[256];
  double s = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) { if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w]; __syncthreads(); }
  if (threadIdx.x == 0) *out = (float)(scale * sh[0]);
}

int poisson_loss(int64_t n, const float *yhat, const float *y, float eps, float scale, float *loss_dev, float *grad) {
  if (n < 0 || !loss_dev) return fail(LVC_EVALUE, "poisson_loss: bad arguments");
  int blocks = (int)((n + 255) / 256);
  if (blocks > 1024) blocks = 1024;
  if (blocks < 1) blocks = 1;
  Scratch sc((size_t)blocks * sizeof(double), 6);
  double *part = (double *)sc.p;
  if (!part) return -1;
  k_poisson<<<blocks, 256, 0, stream>>>(n, yhat, y, eps, scale, part, grad);
  LVC_LAUNCHED("poisson_loss");
  k_sum_parts<<<1, 256, 0, stream>>>(blocks, part, (double)scale, loss_dev);
  LVC_LAUNCHED("poisson_loss");
  return 0;
}

// ---------------------------------------------------------------- Adam (PyTorch formula)
__global__ void k_adam(int64_t n, float *p, const float *g, float *m, float *v, float *vmax, float sg,
                       lv_adam_consts c, float b1, float b2, float eps, float wd) {
  LVC_GRID_STRIDE(i, n) lv_f_adam(&p[i], sg * g[i], &m[i], &v[i], vmax ? &vmax[i] : nullptr, c, b1, b2, eps, wd);
}
int adam_step(int64_t n, float *p, const float *g, float *m, float *v, float *vmax, const lv_adam_attr *a) {
  if (n < 0 || a->step < 1 || (a->amsgrad && n && !vmax))
    return fail(LVC_EVALUE, "adam: bad arguments (n %lld, step %lld; amsgrad needs max_exp_avg_sq)", (long long)n,
                (long long)a->step);
  if (n == 0) return 0;
  k_adam<<<grid_for(n), 256, 0, stream>>>(n, p, g, m, v, a->amsgrad ? vmax : nullptr, a->maximize ? -1.f : 1.f,
                                          lv_f_adam_consts(a->lr, a->beta1, a->beta2, a->step), a->beta1, a->beta2,
                                          a->eps, a->weight_decay);
  LVC_LAUNCHED("adam");
  return 0;
}

// ---------------------------------------------------------------- SGD (PyTorch formula)
__global__ void k_sgd(int64_t n, float *p, const float *g, float *buf, float sg, lv_sgd_attr a) {
  LVC_GRID_STRIDE(i, n) lv_f_sgd(&p[i], sg * g[i], buf ? &buf[i] : nullptr, a.lr, a.momentum, a.dampening,
                                 a.weight_decay, a.nesterov, a.first);
}
int sgd_step(int64_t n, float *p, const float *g, float *buf, const lv_sgd_attr *a) {
  if (n < 0 || (a->momentum != 0.f && n && !buf))
    return fail(LVC_EVALUE, "sgd: bad arguments (n %lld; momentum needs a buffer)", (long long)n);
  if (a->nesterov && (a->momentum <= 0.f || a->dampening != 0.f))
    return fail(LVC_EVALUE, "sgd: nesterov needs momentum > 0 and zero dampening");
  if (n == 0) return 0;
  k_sgd<<<grid_for(n), 256, 0, stream>>>(n, p, g, a->momentum != 0.f ? buf : nullptr, a->maximize ? -1.f : 1.f, *a);
  LVC_LAUNCHED("sgd");
  return 0;
}

// ---------------------------------------------------------------- training-loop helpers
// ring of pinned staging buffers; a buffer is reused only after its previous copy finished.
// stage_mu: held from taking a buffer to queuing its copy (common.cuh: threads)
static const int NSTAGE = 4;
static std::mutex stage_mu;
static float *stage[NSTAGE];
static size_t stage_n[NSTAGE];
static cudaEvent_t stage_ev[NSTAGE];
static bool stage_used[NSTAGE];
static int stage_next = 0;

int gather_rows(float *dst, const float *host_block, int64_t row, const int64_t *idx, int64_t nb) {
  if (init() < 0) return -1;
  size_t bytes = (size_t)(nb * row) * sizeof(float);
  if (bytes == 0) return 0;
  std::lock_guard<std::mutex> lk(stage_mu);
  int s = stage_next;
  stage_next = (stage_next + 1) % NSTAGE;
  if (stage_used[s]) LVC_WAIT(cudaEventSynchronize(stage_ev[s]), "batch staging");
  if (!stage_ev[s]) LVC_CHECK(cudaEventCreateWithFlags(&stage_ev[s], cudaEventDisableTiming), "batch staging");
  if (stage_n[s] < bytes) {
    if (stage[s]) cudaFreeHost(stage[s]);
    stage[s] = nullptr; stage_n[s] = 0;
    LVC_CHECK(cudaMallocHost((void **)&stage[s], bytes), "pinned staging buffer");
    stage_n[s] = bytes;
  }
  for (int64_t i = 0; i < nb; i++) memcpy(stage[s] + i * row, host_block + idx[i] * row, (size_t)row * sizeof(float));
  LVC_CHECK(cudaMemcpyAsync(dst, stage[s], bytes, cudaMemcpyHostToDevice, stream), "batch copy");
  LVC_CHECK(cudaEventRecord(stage_ev[s], stream), "batch staging");
  stage_used[s] = true;
  return 0;
}

// The loss accumulator belongs to the thread: a training loop (csrc/train.c) resets, adds and
// reads it from one thread, so two loops in two threads never mix their sums (no lock needed).
// Freed when the thread ends.
struct LossAcc {
  double *dev = nullptr;   // device
  double *host = nullptr;  // pinned
  ~LossAcc() {
    if (dev) dev_free(dev);
    if (host) cudaFreeHost(host);
  }
};
static thread_local LossAcc loss;
__global__ void k_loss_acc(double *acc, const float *v, int reset) {
  if (reset) *acc = 0.0;
  if (v) *acc += (double)*v;
}
int loss_accumulate(const float *val_dev, int reset) {
  if (init() < 0) return -1;
  if (!loss.dev) LVC_CHECK(dev_malloc((void **)&loss.dev, sizeof(double)), "loss accumulator");
  k_loss_acc<<<1, 1, 0, stream>>>(loss.dev, val_dev, reset);
  LVC_LAUNCHED("loss accumulator");
  return 0;
}
int loss_read(double *out) {
  if (init() < 0) return -1;
  if (!loss.dev) { *out = 0; return 0; }
  if (!loss.host) LVC_CHECK(cudaMallocHost((void **)&loss.host, sizeof(double)), "loss accumulator");
  LVC_CHECK(cudaMemcpyAsync(loss.host, loss.dev, sizeof(double), cudaMemcpyDeviceToHost, stream), "loss read");
  LVC_WAIT(cudaStreamSynchronize(stream), "loss read");
  *out = *loss.host;
  return 0;
}

// the staging ring (release_caches, after the stream finished)
void nn_release() {
  std::lock_guard<std::mutex> lk(stage_mu);
  for (int s = 0; s < NSTAGE; s++) {
    if (stage[s]) cudaFreeHost(stage[s]);
    if (stage_ev[s]) cudaEventDestroy(stage_ev[s]);
    stage[s] = nullptr; stage_n[s] = 0; stage_ev[s] = nullptr; stage_used[s] = false;
  }
  stage_next = 0;
}

}  // namespace lvc
