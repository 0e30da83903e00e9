/* Gaussian readout ops (FullGaussian2d): sampled read positions and the bilinear read + per-neuron
 * channel map. Forward is re-runnable (captured-graph replay): the position op draws fresh noise
 * on every forward from one 64-bit seed taken from the global generator, so lv_manual_seed makes
 * a run reproducible and the draws do not depend on the number of threads.
 *
 * Each forward/backward dispatches once through the backend of its tensors (readout_pos_forward/
 * backward, readout_forward/backward); aux buffers live on mu's device. The GPU draws its position
 * noise from a counter-based generator keyed by the same per-forward seed (replays redraw, seeded
 * runs repeat; the draws differ from the CPU's). */
#include "ops/readout_ops.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHP(t, buf) lv_shape_str((t), (buf), sizeof(buf))

#include "cpu/kernels.h"

static int check_f32(const char *op, const char *what, const lv_tensor *t) {
  if (t && t->dtype != LV_F32) return lv_set_error(LV_ETYPE, "%s: %s must be float32, got int64", op, what);
  return 0;
}

static int check_same_dev(const char *op, lv_tensor **ts, int n) { return lv_check_devices(op, ts, NULL, n); }

/* ==================================== read positions ==================================== */
/* in: 0 mu, 1 sigma (or NULL). aux: 0 eps (B, N, 2) when sampling, 1 clamp mask like out.
 * ia: 0 batch, 1 sample, 2 gauss type, 3 project, 4 N. */
static int pos_fwd(lv_node *nd) {
  int sample = (int)nd->ia[1];
  return lv_backend_of(nd->out)->readout_pos_forward(
      nd->ia[0], nd->ia[4], sample, (int)nd->ia[2], (int)nd->ia[3], lv_f32(nd->in[0]),
      nd->in[1] ? lv_f32(nd->in[1]) : NULL, sample ? lv_rng_next() : 0, sample ? lv_f32(nd->aux[0]) : NULL,
      lv_f32(nd->aux[1]), lv_f32(nd->out));
}

static int pos_bwd(lv_node *nd, lv_tensor *gout, lv_tensor **gin) {
  int sample = (int)nd->ia[1];
  return lv_backend_of(gout)->readout_pos_backward(nd->ia[0], nd->ia[4], sample, (int)nd->ia[2], lv_f32(gout),
                                                   lv_f32(nd->aux[1]), sample ? lv_f32(nd->aux[0]) : NULL,
                                                   gin[0] ? lv_f32(gin[0]) : NULL, gin[1] ? lv_f32(gin[1]) : NULL);
}

static const lv_op op_positions = {"ReadoutPositions", pos_fwd, pos_bwd, NULL};

lv_tensor *lv_readout_positions(lv_tensor *mu, lv_tensor *sigma, int64_t batch, int sample,
                                int gauss_type, int project) {
  const char *op = "readout_positions";
  char s1[96], s2[96];
  lv_tensor *both[2] = {mu, sample ? sigma : NULL};
  if (check_f32(op, "mu", mu) || check_f32(op, "sigma", sigma) || check_same_dev(op, both, 2)) return NULL;
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
  return lv_backend_of(nd->out)->readout_forward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]),
                                                 lv_f32(nd->in[2]), bias, lv_f32(nd->out));
}

static int ro_bwd(lv_node *nd, lv_tensor *gout, lv_tensor **gin) {
  if (nd->out->shape[0] == 0 || nd->out->shape[1] == 0) return 0;
  float *g[4];
  for (int i = 0; i < 4; i++) g[i] = gin[i] ? lv_f32(gin[i]) : NULL;
  return lv_backend_of(gout)->readout_backward(RO_ARGS(nd), lv_f32(nd->in[0]), lv_f32(nd->in[1]), lv_f32(nd->in[2]),
                                               lv_f32(gout), g[0], g[1], g[2], g[3]);
}

static const lv_op op_readout = {"GaussianReadout", ro_fwd, ro_bwd, NULL};

lv_tensor *lv_gaussian_readout(lv_tensor *x, lv_tensor *pos, lv_tensor *feat, lv_tensor *bias) {
  const char *op = "gaussian_readout";
  char s1[96], s2[96], s3[96];
  if (check_f32(op, "input", x) || check_f32(op, "positions", pos) ||
      check_f32(op, "features", feat) || check_f32(op, "bias", bias))
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
