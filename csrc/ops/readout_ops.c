/* Gaussian readout ops (FullGaussian2d): sampled read positions and the bilinear read + per-neuron
 * channel map. Forward is re-runnable (captured-graph replay): the position op draws fresh noise
 * on every forward from one 64-bit seed taken from the global generator, so lv_manual_seed makes
 * a run reproducible and the draws do not depend on the number of threads.
 *
 * The read itself calls the CPU kernels lv_readout_forward / lv_readout_backward
 * (csrc/cpu/kernels.h, csrc/cpu/sample.c).
 *
 * CUDA: one dispatch branch at the top of each forward/backward calls the backend's table
 * (readout_pos_forward/backward, readout_forward/backward); aux buffers live on mu's device. The
 * GPU draws its position noise from a counter-based generator keyed by the same per-forward seed
 * (replays redraw, seeded runs repeat; the draws differ from the CPU's). */
#include "ops/readout_ops.h"
#include "cuda_dispatch.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHP(t, buf) lv_shape_str((t), (buf), sizeof(buf))

#include "cpu/kernels.h"

static int check_cpu_f32(const char *op, const char *what, const lv_tensor *t) {
  if (!t) return 0;
  if (t->dtype != LV_F32) return lv_set_error(LV_ETYPE, "%s: %s must be float32, got int64", op, what);
  if (t->st->device == LV_CUDA && !lv_cuda) return lv_set_error(LV_ERUNTIME, "%s: CUDA backend not loaded", op);
  return 0;
}

static int check_same_dev(const char *op, lv_tensor **ts, int n) {
  int dev = -1;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (dev < 0) dev = ts[i]->st->device;
    else if (ts[i]->st->device != dev)
      return lv_set_error(LV_EVALUE, "%s: expected all tensors on the same device, got cpu and cuda", op);
  }
  return 0;
}

/* ==================================== read positions ==================================== */
/* in: 0 mu, 1 sigma (or NULL). aux: 0 eps (B, N, 2) when sampling, 1 clamp mask like out.
 * ia: 0 batch, 1 sample, 2 gauss type, 3 project, 4 N. */
#define CHUNK 128

static inline void gauss_pair(lv_rng *r, float *e0, float *e1) {
  uint64_t u = lv_rng_u64(r);
  float u1 = (float)((u >> 40) + 1) * 0x1.0p-24f;            /* (0, 1] */
  float u2 = (float)((u >> 16) & 0xffffff) * 0x1.0p-24f;     /* [0, 1) */
  float rad = sqrtf(-2.f * logf(u1)), th = 6.2831853071795865f * u2;
  *e0 = rad * cosf(th);
  *e1 = rad * sinf(th);
}

static int pos_fwd(lv_node *nd) {
  int64_t B = nd->ia[0], N = nd->ia[4];
  int sample = (int)nd->ia[1], type = (int)nd->ia[2];
  float *mu = lv_f32(nd->in[0]);
  float *sg = nd->in[1] ? lv_f32(nd->in[1]) : NULL;
  float *out = lv_f32(nd->out), *mask = lv_f32(nd->aux[1]);
  if (lv_on_cuda(nd->out))
    return lv_cuda->readout_pos_forward(B, N, sample, type, (int)nd->ia[3], mu, sg, sample ? lv_rng_next() : 0,
                                        sample ? lv_f32(nd->aux[0]) : NULL, mask, out);
  /* projection of the free parameters, in place */
  if (nd->ia[3] & 1)
    for (int64_t i = 0; i < 2 * N; i++) mu[i] = mu[i] < -1.f ? -1.f : (mu[i] > 1.f ? 1.f : mu[i]);
  if (nd->ia[3] & 2) {
    if (sg && type != LV_GAUSS_FULL) {
      int64_t m = lv_numel(nd->in[1]);
      for (int64_t i = 0; i < m; i++) if (sg[i] < 0.f) sg[i] = 0.f;
    }
  }
  if (!sample) {
    for (int64_t i = 0; i < 2 * N; i++) {
      float v = mu[i];
      mask[i] = (v >= -1.f && v <= 1.f) ? 1.f : 0.f;
      out[i] = v < -1.f ? -1.f : (v > 1.f ? 1.f : v);
    }
    return 0;
  }
  float *eps = lv_f32(nd->aux[0]);
  uint64_t seed = lv_rng_next();
  int64_t nchunks = (N + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (B * N > 20000)
  for (int64_t k = 0; k < nchunks; k++) {
    lv_rng r;
    lv_rng_seed(&r, seed ^ ((uint64_t)(k + 1) * 0x9E3779B97F4A7C15ULL));
    int64_t n0 = k * CHUNK, n1 = n0 + CHUNK < N ? n0 + CHUNK : N;
    for (int64_t b = 0; b < B; b++)
      for (int64_t n = n0; n < n1; n++) {
        size_t o = ((size_t)b * N + n) * 2;
        float e0, e1, v0, v1;
        gauss_pair(&r, &e0, &e1);
        eps[o] = e0;
        eps[o + 1] = e1;
        if (type == LV_GAUSS_FULL) {
          const float *s = sg + 4 * n; /* row-major 2x2: pos_c = sum_d s[c][d] eps_d */
          v0 = mu[2 * n] + s[0] * e0 + s[1] * e1;
          v1 = mu[2 * n + 1] + s[2] * e0 + s[3] * e1;
        } else if (type == LV_GAUSS_UNCORRELATED) {
          v0 = mu[2 * n] + sg[2 * n] * e0;
          v1 = mu[2 * n + 1] + sg[2 * n + 1] * e1;
        } else {
          v0 = mu[2 * n] + sg[n] * e0;
          v1 = mu[2 * n + 1] + sg[n] * e1;
        }
        mask[o] = (v0 >= -1.f && v0 <= 1.f) ? 1.f : 0.f;
        mask[o + 1] = (v1 >= -1.f && v1 <= 1.f) ? 1.f : 0.f;
        out[o] = v0 < -1.f ? -1.f : (v0 > 1.f ? 1.f : v0);
        out[o + 1] = v1 < -1.f ? -1.f : (v1 > 1.f ? 1.f : v1);
      }
  }
  return 0;
}

static int pos_bwd(lv_node *nd, lv_tensor *gout, lv_tensor **gin) {
  int64_t B = nd->ia[0], N = nd->ia[4];
  int sample = (int)nd->ia[1], type = (int)nd->ia[2];
  const float *g = lv_f32(gout), *mask = lv_f32(nd->aux[1]);
  float *gmu = gin[0] ? lv_f32(gin[0]) : NULL;
  float *gsg = gin[1] ? lv_f32(gin[1]) : NULL;
  if (lv_on_cuda(gout))
    return lv_cuda->readout_pos_backward(B, N, sample, type, g, mask, sample ? lv_f32(nd->aux[0]) : NULL, gmu, gsg);
  if (!sample) {
    if (gmu) for (int64_t i = 0; i < 2 * N; i++) gmu[i] += g[i] * mask[i];
    return 0;
  }
  const float *eps = lv_f32(nd->aux[0]);
#pragma omp parallel for schedule(static) if (B * N > 20000)
  for (int64_t n = 0; n < N; n++) {
    double m0 = 0, m1 = 0, s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int64_t b = 0; b < B; b++) {
      size_t o = ((size_t)b * N + n) * 2;
      float g0 = g[o] * mask[o], g1 = g[o + 1] * mask[o + 1];
      float e0 = eps[o], e1 = eps[o + 1];
      m0 += g0; m1 += g1;
      s00 += g0 * e0; s01 += g0 * e1; s10 += g1 * e0; s11 += g1 * e1;
    }
    if (gmu) { gmu[2 * n] += (float)m0; gmu[2 * n + 1] += (float)m1; }
    if (gsg) {
      if (type == LV_GAUSS_FULL) {
        float *d = gsg + 4 * n;
        d[0] += (float)s00; d[1] += (float)s01; d[2] += (float)s10; d[3] += (float)s11;
      } else if (type == LV_GAUSS_UNCORRELATED) {
        gsg[2 * n] += (float)s00;
        gsg[2 * n + 1] += (float)s11;
      } else {
        gsg[n] += (float)(s00 + s11);
      }
    }
  }
  return 0;
}

static const lv_op op_positions = {"ReadoutPositions", pos_fwd, pos_bwd, NULL};

lv_tensor *lv_readout_positions(lv_tensor *mu, lv_tensor *sigma, int64_t batch, int sample,
                                int gauss_type, int project) {
  const char *op = "readout_positions";
  char s1[96], s2[96];
  lv_tensor *both[2] = {mu, sample ? sigma : NULL};
  if (check_cpu_f32(op, "mu", mu) || check_cpu_f32(op, "sigma", sigma) || check_same_dev(op, both, 2)) return NULL;
  if (gauss_type < 0 || gauss_type > 2) {
    lv_set_error(LV_EVALUE, "%s: gauss_type must be 0 (full), 1 (uncorrelated) or 2 (isotropic), got %d", op, gauss_type);
    return NULL;
  }
  int64_t m = lv_numel(mu);
  if (m % 2) {
    lv_set_error(LV_EVALUE, "%s: mu must hold 2 values per neuron, got shape %s", op, SHP(mu, s1));
    return NULL;
  }
  int64_t N = m / 2;
  if (sample) {
    if (!sigma) { lv_set_error(LV_EVALUE, "%s: sampling needs sigma", op); return NULL; }
    if (batch < 1) { lv_set_error(LV_EVALUE, "%s: sampling needs a batch size >= 1, got %lld", op, (long long)batch); return NULL; }
  }
  if (sigma) {
    int64_t per = gauss_type == LV_GAUSS_FULL ? 4 : (gauss_type == LV_GAUSS_UNCORRELATED ? 2 : 1);
    if (lv_numel(sigma) != per * N) {
      lv_set_error(LV_EVALUE, "%s: sigma has shape %s, expected %lld values per neuron for %lld neurons (mu shape %s)",
                   op, SHP(sigma, s1), (long long)per, (long long)N, SHP(mu, s2));
      return NULL;
    }
  }
  if (((project & 1) && mu->grad_fn) || ((project & 2) && sigma && sigma->grad_fn)) {
    lv_set_error(LV_EVALUE, "%s: project clamps mu / sigma in place and needs leaf parameters", op);
    return NULL;
  }
  lv_tensor *in[2] = {mu, sample ? sigma : NULL};
  lv_node *nd = lv_node_new(&op_positions, 2, in);
  if (!nd) return NULL;
  nd->ia[0] = sample ? batch : 0;
  nd->ia[1] = sample ? 1 : 0;
  nd->ia[2] = gauss_type;
  nd->ia[3] = project & 3;
  nd->ia[4] = N;
  nd->training = sample ? 1 : 0;
  int64_t shape[3] = {batch, N, 2};
  int ndim = sample ? 3 : 2;
  const int64_t *shp = sample ? shape : shape + 1;
  if (sample) {
    nd->aux[0] = lv_tensor_new(3, shape, LV_F32, mu->st->device, 1);
    if (!nd->aux[0]) { lv_node_decref(nd); return NULL; }
  }
  nd->aux[1] = lv_tensor_new(ndim, shp, LV_F32, mu->st->device, 1);
  if (!nd->aux[1]) { lv_node_decref(nd); return NULL; }
  return lv_node_finish(nd, ndim, shp, LV_F32);
}

/* ============================== bilinear read + channel map ============================== */
/* in: 0 x (B, C, H, W), 1 pos, 2 feat (C, N), 3 bias (N) or NULL. ia: 0 shared */
#define RO_ARGS(nd)                                                                               \
  (int)(nd)->in[0]->shape[0], (int)(nd)->in[0]->shape[1], (int)(nd)->in[0]->shape[2],             \
      (int)(nd)->in[0]->shape[3], (int)(nd)->out->shape[1], (int)(nd)->ia[0]

static int ro_fwd(lv_node *nd) {
  const float *bias = nd->in[3] ? lv_f32(nd->in[3]) : NULL;
  if (nd->out->shape[0] == 0 || nd->out->shape[1] == 0) return 0;
  if (lv_on_cuda(nd->out))
    return lv_cuda->readout_forward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]), lv_f32(nd->in[2]), bias,
                                    lv_f32(nd->out));
  return lv_readout_forward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]), lv_f32(nd->in[2]),
                            bias, lv_f32(nd->out));
}

static int ro_bwd(lv_node *nd, lv_tensor *gout, lv_tensor **gin) {
  if (nd->out->shape[0] == 0 || nd->out->shape[1] == 0) return 0;
  float *g[4];
  for (int i = 0; i < 4; i++) g[i] = gin[i] ? lv_f32(gin[i]) : NULL;
  if (lv_on_cuda(gout))
    return lv_cuda->readout_backward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]), lv_f32(nd->in[2]),
                                     lv_f32(gout), g[0], g[1], g[2], g[3]);
  return lv_readout_backward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]), lv_f32(nd->in[2]),
                             lv_f32(gout), g[0], g[1], g[2], g[3]);
}

static const lv_op op_readout = {"GaussianReadout", ro_fwd, ro_bwd, NULL};

lv_tensor *lv_gaussian_readout(lv_tensor *x, lv_tensor *pos, lv_tensor *feat, lv_tensor *bias) {
  const char *op = "gaussian_readout";
  char s1[96], s2[96], s3[96];
  if (check_cpu_f32(op, "input", x) || check_cpu_f32(op, "positions", pos) ||
      check_cpu_f32(op, "features", feat) || check_cpu_f32(op, "bias", bias))
    return NULL;
  lv_tensor *all[4] = {x, pos, feat, bias};
  if (check_same_dev(op, all, 4)) return NULL;
  if (x->ndim != 4) {
    lv_set_error(LV_EVALUE, "%s: expected a 4-d input (batch, channels, height, width), got shape %s", op, SHP(x, s1));
    return NULL;
  }
  int64_t B = x->shape[0], C = x->shape[1];
  int shared;
  int64_t N;
  if (pos->ndim == 2 && pos->shape[1] == 2) { shared = 1; N = pos->shape[0]; }
  else if (pos->ndim == 3 && pos->shape[2] == 2 && pos->shape[0] == B) { shared = 0; N = pos->shape[1]; }
  else {
    lv_set_error(LV_EVALUE, "%s: positions must be (neurons, 2) or (batch, neurons, 2) with batch %lld, got shape %s (input shape %s)",
                 op, (long long)B, SHP(pos, s1), SHP(x, s2));
    return NULL;
  }
  if (lv_numel(feat) != C * N) {
    lv_set_error(LV_EVALUE, "%s: features have shape %s, expected %lld x %lld values (channels x neurons) for input %s and positions %s",
                 op, SHP(feat, s1), (long long)C, (long long)N, SHP(x, s2), SHP(pos, s3));
    return NULL;
  }
  if (bias && lv_numel(bias) != N) {
    lv_set_error(LV_EVALUE, "%s: bias has shape %s, expected (%lld,)", op, SHP(bias, s1), (long long)N);
    return NULL;
  }
  if (x->shape[2] < 1 || x->shape[3] < 1) {
    lv_set_error(LV_EVALUE, "%s: empty feature map %s", op, SHP(x, s1));
    return NULL;
  }
  lv_tensor *in[4] = {x, pos, feat, bias};
  lv_node *nd = lv_node_new(&op_readout, 4, in);
  if (!nd) return NULL;
  nd->ia[0] = shared;
  int64_t shape[2] = {B, N};
  return lv_node_finish(nd, 2, shape, LV_F32);
}
