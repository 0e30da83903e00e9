/* Autograd ops for neural networks: linear, conv2d, batch_norm (+ fused ELU), grid_sample,
 * avg_pool2d, pad, dropout, poisson_loss. Each op validates its arguments (messages name the op
 * and the shapes), and its forward is re-runnable on the same buffers (captured-graph replay):
 * per-forward state (batch statistics, dropout masks, loss gradients) lives in node->aux.
 *
 * Each forward/backward dispatches once through the backend of its tensors (csrc/backend.h:
 * lv_backend_of); op-owned buffers (aux) are allocated on the input's device. */
#include "ops/nn_ops.h"
#include "cpu/kernels.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHP(t, buf) lv_shape_str((t), (buf), sizeof(buf))

static int check_f32(const char *op, const char *what, const lv_tensor *t) {
  if (t->dtype != LV_F32) return lv_set_error(LV_ETYPE, "%s: %s must be float32, got int64", op, what);
  return 0;
}

static int check_dev(const char *op, lv_tensor **ts, int n) { return lv_check_devices(op, ts, NULL, n); }

static lv_tensor *aux_view(lv_tensor *t) { return t ? lv_tensor_detach(t) : NULL; }

/* ======================================== linear ======================================== */
static int linear_fwd(lv_node *n) { return lv_backend_of(n->out)->linear_fwd(n); }
static int linear_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->linear_bwd(n, gout, gin);
}

static const lv_op op_linear = {"Linear", linear_fwd, linear_bwd, NULL};
int lv_node_is_linear(const lv_node *n) { return n->op == &op_linear; }

lv_tensor *lv_linear(lv_tensor *x, lv_tensor *w, lv_tensor *b) {
  char s1[96], s2[96], s3[96];
  lv_tensor *all[3] = {x, w, b};
  if (check_f32("linear", "input", x) || check_f32("linear", "weight", w) ||
      (b && check_f32("linear", "bias", b)) || check_dev("linear", all, 3))
    return NULL;
  if (w->ndim != 2) { lv_set_error(LV_EVALUE, "linear: weight must be 2-d (out_features, in_features), got %s", SHP(w, s1)); return NULL; }
  if (x->ndim < 1) { lv_set_error(LV_EVALUE, "linear: input must have at least 1 dimension, got a scalar"); return NULL; }
  if (x->shape[x->ndim - 1] != w->shape[1]) {
    lv_set_error(LV_EVALUE, "linear: input has %lld features (input shape %s), weight %s expects %lld",
                 (long long)x->shape[x->ndim - 1], SHP(x, s1), SHP(w, s2), (long long)w->shape[1]);
    return NULL;
  }
  if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
    lv_set_error(LV_EVALUE, "linear: bias has shape %s, expected (%lld,) for weight %s", SHP(b, s3),
                 (long long)w->shape[0], SHP(w, s2));
    return NULL;
  }
  lv_tensor *in[3] = {x, w, b};
  lv_node *n = lv_node_new(&op_linear, 3, in);
  if (!n) return NULL;
  int64_t shape[LV_MAXDIM];
  for (int i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
  shape[x->ndim - 1] = w->shape[0];
  return lv_node_finish(n, x->ndim, shape, LV_F32);
}

/* ======================================== conv2d ======================================== */
/* ia: 0 sh, 1 sw, 2 ph, 3 pw, 4 dh, 5 dw, 6 groups. aux[0]: the kernel workspace (kept with the
 * node so that replays do not allocate; NULL when it would be large: the kernel allocates). */
static int conv_desc(const lv_node *n, lv_conv2d_desc *d) {
  const lv_tensor *x = n->in[0], *w = n->in[1];
  d->N = (int)x->shape[0]; d->C_in = (int)x->shape[1]; d->H = (int)x->shape[2]; d->W = (int)x->shape[3];
  d->C_out = (int)w->shape[0]; d->kh = (int)w->shape[2]; d->kw = (int)w->shape[3];
  d->sh = (int)n->ia[0]; d->sw = (int)n->ia[1]; d->ph = (int)n->ia[2]; d->pw = (int)n->ia[3];
  d->dh = (int)n->ia[4]; d->dw = (int)n->ia[5]; d->groups = (int)n->ia[6];
  return lv_conv2d_prepare(d);
}

static float *conv_ws(lv_node *n) { return n->aux[0] ? lv_f32(n->aux[0]) : NULL; }

static int conv_fwd(lv_node *n) {
  lv_conv2d_desc d;
  if (conv_desc(n, &d) < 0) return -1;
  return lv_backend_of(n->out)->conv2d_forward(&d, lv_f32(n->in[0]), lv_f32(n->in[1]),
                                               n->in[2] ? lv_f32(n->in[2]) : NULL, lv_f32(n->out), conv_ws(n));
}

static int conv_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_conv2d_desc d;
  if (conv_desc(n, &d) < 0) return -1;
  const lv_backend *be = lv_backend_of(gout);
  if (gin[0] && be->conv2d_backward_data(&d, lv_f32(gout), lv_f32(n->in[1]), lv_f32(gin[0]), conv_ws(n)) < 0)
    return -1;
  if (gin[1] || gin[2])
    return be->conv2d_backward_weight(&d, lv_f32(n->in[0]), lv_f32(gout), gin[1] ? lv_f32(gin[1]) : NULL,
                                      gin[2] ? lv_f32(gin[2]) : NULL, conv_ws(n));
  return 0;
}

static const lv_op op_conv2d = {"Conv2d", conv_fwd, conv_bwd, NULL};

lv_tensor *lv_conv2d(lv_tensor *x, lv_tensor *w, lv_tensor *b, int sh, int sw, int ph, int pw,
                     int dh, int dw, int groups) {
  char s1[96], s2[96];
  lv_tensor *all[3] = {x, w, b};
  if (check_f32("conv2d", "input", x) || check_f32("conv2d", "weight", w) ||
      (b && check_f32("conv2d", "bias", b)) || check_dev("conv2d", all, 3))
    return NULL;
  if (w->ndim != 4) {
    lv_set_error(LV_EVALUE, "conv2d: weight must be 4-d (out_channels, in_channels/groups, kh, kw), got %s", SHP(w, s1));
    return NULL;
  }
  if (x->ndim != 4) {
    lv_set_error(LV_EVALUE, "conv2d: expected a 4-d input (batch, channels, height, width), got shape %s", SHP(x, s1));
    return NULL;
  }
  if (groups < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0) {
    lv_set_error(LV_EVALUE, "conv2d: invalid arguments stride=(%d, %d) padding=(%d, %d) dilation=(%d, %d) groups=%d",
                 sh, sw, ph, pw, dh, dw, groups);
    return NULL;
  }
  int64_t C = x->shape[1], O = w->shape[0];
  if (O % groups) { lv_set_error(LV_EVALUE, "conv2d: out_channels %lld is not divisible by groups %d", (long long)O, groups); return NULL; }
  if (C != w->shape[1] * groups) {
    lv_set_error(LV_EVALUE, "conv2d: input has %lld channels, weight expects %lld (input shape %s, weight shape %s, groups=%d)",
                 (long long)C, (long long)(w->shape[1] * groups), SHP(x, s1), SHP(w, s2), groups);
    return NULL;
  }
  if (b && (b->ndim != 1 || b->shape[0] != O)) {
    lv_set_error(LV_EVALUE, "conv2d: bias has shape %s, expected (%lld,)", SHP(b, s1), (long long)O);
    return NULL;
  }
  int64_t ekh = (int64_t)dh * (w->shape[2] - 1) + 1, ekw = (int64_t)dw * (w->shape[3] - 1) + 1;
  int64_t Hp = x->shape[2] + 2 * ph, Wp = x->shape[3] + 2 * pw;
  if (Hp < ekh || Wp < ekw) {
    lv_set_error(LV_EVALUE, "conv2d: kernel size (%lld, %lld) (dilated) is larger than the padded input (%lld, %lld) (input shape %s)",
                 (long long)ekh, (long long)ekw, (long long)Hp, (long long)Wp, SHP(x, s1));
    return NULL;
  }
  lv_tensor *in[3] = {x, w, b};
  lv_node *n = lv_node_new(&op_conv2d, 3, in);
  if (!n) return NULL;
  n->ia[0] = sh; n->ia[1] = sw; n->ia[2] = ph; n->ia[3] = pw; n->ia[4] = dh; n->ia[5] = dw; n->ia[6] = groups;
  lv_conv2d_desc d;
  if (conv_desc(n, &d) < 0) { lv_node_decref(n); return NULL; }
  int64_t wsf = (int64_t)lv_backend_of(x)->conv2d_workspace_floats(&d);
  if (wsf > 1 && wsf <= ((int64_t)64 << 20)) { /* up to 256 MB kept with the node */
    n->aux[0] = lv_tensor_new(1, &wsf, LV_F32, x->st->device, 0);
    if (!n->aux[0]) lv_clear_error(); /* fall back to per-call allocation */
  }
  int64_t shape[4] = {x->shape[0], O, (Hp - ekh) / sh + 1, (Wp - ekw) / sw + 1};
  return lv_node_finish(n, 4, shape, LV_F32);
}

/* ====================================== batch norm ====================================== */
/* in: x, weight, bias. aux: 0 running_mean, 1 running_var, 2 num_batches_tracked (int64),
 * 3 saved (3, C): batch mean, invstd, unbiased var. ia: 0 use_batch_stats, 1 fuse_elu.
 * fa: 0 eps, 1 momentum (< 0: cumulative average). */
static void bn_dims(const lv_tensor *x, int *N, int *C, int *HW) {
  *N = (int)x->shape[0];
  *C = (int)x->shape[1];
  int64_t hw = 1;
  for (int i = 2; i < x->ndim; i++) hw *= x->shape[i];
  *HW = (int)hw;
}

static int bn_fwd(lv_node *n) {
  int N, C, HW;
  bn_dims(n->in[0], &N, &C, &HW);
  if (lv_numel(n->in[0]) == 0) return 0;
  const float *x = lv_f32(n->in[0]);
  const float *g = n->in[1] ? lv_f32(n->in[1]) : NULL, *b = n->in[2] ? lv_f32(n->in[2]) : NULL;
  float eps = (float)n->fa[0];
  int elu = (int)n->ia[1];
  lv_tensor *rm = n->aux[0], *rv = n->aux[1], *nbt = n->aux[2];
  float *y = lv_f32(n->out);
  const lv_backend *be = lv_backend_of(n->out);
  if (!n->ia[0]) return be->bn_forward_eval(N, C, HW, x, g, b, lv_f32(rm), lv_f32(rv), eps, elu, y);
  float *sv = lv_f32(n->aux[3]); /* (3, C): mean, invstd, unbiased var */
  if (be->bn_forward_train(N, C, HW, x, g, b, eps, elu, y, sv, sv + C, sv + 2 * C) < 0) return -1;
  /* running stats and num_batches_tracked (on the GPU without host sync) */
  return be->bn_track(C, n->fa[1], sv, sv + 2 * C, rm ? lv_f32(rm) : NULL, rv ? lv_f32(rv) : NULL,
                      nbt ? lv_i64(nbt) : NULL);
}

static int bn_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  int N, C, HW;
  bn_dims(n->in[0], &N, &C, &HW);
  if (lv_numel(n->in[0]) == 0) return 0;
  const float *x = lv_f32(n->in[0]), *y = lv_f32(n->out), *gy = lv_f32(gout);
  const float *g = n->in[1] ? lv_f32(n->in[1]) : NULL;
  float *gx = gin[0] ? lv_f32(gin[0]) : NULL, *gg = gin[1] ? lv_f32(gin[1]) : NULL,
        *gb = gin[2] ? lv_f32(gin[2]) : NULL;
  int elu = (int)n->ia[1];
  const lv_backend *be = lv_backend_of(gout);
  if (!n->ia[0])
    return be->bn_backward_eval(N, C, HW, x, y, gy, g, lv_f32(n->aux[0]), lv_f32(n->aux[1]), (float)n->fa[0], elu,
                                gx, gg, gb);
  const float *sv = lv_f32(n->aux[3]);
  return be->bn_backward_train(N, C, HW, x, y, gy, g, sv, sv + C, elu, gx, gg, gb);
}

static const lv_op op_bn = {"BatchNorm", bn_fwd, bn_bwd, NULL};

lv_tensor *lv_batch_norm(lv_tensor *x, lv_tensor *weight, lv_tensor *bias, lv_tensor *running_mean,
                         lv_tensor *running_var, lv_tensor *nbt, int use_batch_stats,
                         double momentum, double eps, int fuse_elu) {
  char s1[96], s2[96];
  const char *op = "batch_norm";
  lv_tensor *all[6] = {x, weight, bias, running_mean, running_var, nbt};
  if (check_f32(op, "input", x) || check_dev(op, all, 6)) return NULL;
  if (x->ndim < 2) { lv_set_error(LV_EVALUE, "%s: expected an input of at least 2 dims (N, C, ...), got shape %s", op, SHP(x, s1)); return NULL; }
  int64_t C = x->shape[1];
  const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
  lv_tensor *ps[4] = {weight, bias, running_mean, running_var};
  for (int i = 0; i < 4; i++) {
    if (!ps[i]) continue;
    if (check_f32(op, names[i], ps[i])) return NULL;
    if (lv_numel(ps[i]) != C) {
      lv_set_error(LV_EVALUE, "%s: %s has shape %s, expected (%lld,) for input shape %s (%lld channels)", op,
                   names[i], SHP(ps[i], s1), (long long)C, SHP(x, s2), (long long)C);
      return NULL;
    }
  }
  if (nbt && (nbt->dtype != LV_I64 || lv_numel(nbt) != 1)) {
    lv_set_error(LV_EVALUE, "%s: num_batches_tracked must be an int64 scalar", op);
    return NULL;
  }
  if (!use_batch_stats && (!running_mean || !running_var)) {
    lv_set_error(LV_EVALUE, "%s: running_mean and running_var are needed when not using batch statistics", op);
    return NULL;
  }
  if (use_batch_stats) {
    int64_t M = lv_numel(x) / (C ? C : 1);
    if (M <= 1) {
      lv_set_error(LV_EVALUE, "%s: expected more than 1 value per channel when training, got input shape %s", op, SHP(x, s1));
      return NULL;
    }
  }
  lv_tensor *in[3] = {x, weight, bias};
  lv_node *n = lv_node_new(&op_bn, 3, in);
  if (!n) return NULL;
  n->ia[0] = use_batch_stats ? 1 : 0;
  n->ia[1] = fuse_elu ? 1 : 0;
  n->fa[0] = eps;
  n->fa[1] = momentum;
  if (use_batch_stats) {
    n->aux[0] = aux_view(running_mean);
    n->aux[1] = aux_view(running_var);
    n->aux[2] = aux_view(nbt);
    int64_t sshape[2] = {3, C};
    n->aux[3] = lv_tensor_new(2, sshape, LV_F32, x->st->device, 1);
    if (!n->aux[3]) { lv_node_decref(n); return NULL; }
  } else {
    n->aux[0] = aux_view(running_mean);
    n->aux[1] = aux_view(running_var);
  }
  return lv_node_finish(n, x->ndim, x->shape, LV_F32);
}

/* ===================================== grid_sample ===================================== */
static int gs_fwd(lv_node *n) {
  lv_tensor *x = n->in[0], *gr = n->in[1];
  return lv_backend_of(n->out)->grid_sample_forward((int)x->shape[0], (int)x->shape[1], (int)x->shape[2],
                                                    (int)x->shape[3], (int)gr->shape[1], (int)gr->shape[2],
                                                    (int)n->ia[0], lv_f32(x), lv_f32(gr), lv_f32(n->out));
}
static int gs_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_tensor *x = n->in[0], *gr = n->in[1];
  return lv_backend_of(gout)->grid_sample_backward((int)x->shape[0], (int)x->shape[1], (int)x->shape[2],
                                                   (int)x->shape[3], (int)gr->shape[1], (int)gr->shape[2],
                                                   (int)n->ia[0], lv_f32(x), lv_f32(gr), lv_f32(gout),
                                                   gin[0] ? lv_f32(gin[0]) : NULL, gin[1] ? lv_f32(gin[1]) : NULL);
}
static const lv_op op_gs = {"GridSampler2D", gs_fwd, gs_bwd, NULL};

lv_tensor *lv_grid_sample(lv_tensor *x, lv_tensor *grid, int align_corners) {
  char s1[96], s2[96];
  lv_tensor *all[2] = {x, grid};
  if (check_f32("grid_sample", "input", x) || check_f32("grid_sample", "grid", grid) ||
      check_dev("grid_sample", all, 2))
    return NULL;
  if (x->ndim != 4 || grid->ndim != 4 || grid->shape[3] != 2 || grid->shape[0] != x->shape[0]) {
    lv_set_error(LV_EVALUE, "grid_sample: expected input (N, C, H, W) and grid (N, H_out, W_out, 2) with the same N, got input shape %s and grid shape %s",
                 SHP(x, s1), SHP(grid, s2));
    return NULL;
  }
  lv_tensor *in[2] = {x, grid};
  lv_node *n = lv_node_new(&op_gs, 2, in);
  if (!n) return NULL;
  n->ia[0] = align_corners ? 1 : 0;
  int64_t shape[4] = {x->shape[0], x->shape[1], grid->shape[1], grid->shape[2]};
  return lv_node_finish(n, 4, shape, LV_F32);
}

/* ===================================== avg_pool2d ===================================== */
/* ia: kh kw sh sw ph pw */
static lv_pool2d_desc ap_desc(const lv_node *n) {
  const lv_tensor *x = n->in[0];
  int64_t hw = x->shape[x->ndim - 1] * x->shape[x->ndim - 2];
  lv_pool2d_desc d = {(int)(hw > 0 ? lv_numel(x) / hw : 0), (int)x->shape[x->ndim - 2], (int)x->shape[x->ndim - 1],
                      (int)n->ia[0], (int)n->ia[1], (int)n->ia[2], (int)n->ia[3], (int)n->ia[4], (int)n->ia[5]};
  return d;
}
static int ap_fwd(lv_node *n) {
  lv_pool2d_desc d = ap_desc(n);
  return lv_backend_of(n->out)->avg_pool2d_forward(&d, lv_f32(n->in[0]), lv_f32(n->out));
}
static int ap_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_pool2d_desc d = ap_desc(n);
  return lv_backend_of(gout)->avg_pool2d_backward(&d, lv_f32(gout), lv_f32(gin[0]));
}
static const lv_op op_ap = {"AvgPool2D", ap_fwd, ap_bwd, NULL};

lv_tensor *lv_avg_pool2d(lv_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw) {
  char s1[96];
  lv_tensor *all[1] = {x};
  if (check_f32("avg_pool2d", "input", x) || check_dev("avg_pool2d", all, 1)) return NULL;
  if (x->ndim != 3 && x->ndim != 4) {
    lv_set_error(LV_EVALUE, "avg_pool2d: expected a 3-d or 4-d input, got shape %s", SHP(x, s1));
    return NULL;
  }
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
    lv_set_error(LV_EVALUE, "avg_pool2d: invalid kernel_size=(%d, %d) stride=(%d, %d) padding=(%d, %d) (padding must be at most half the kernel size)",
                 kh, kw, sh, sw, ph, pw);
    return NULL;
  }
  int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
  if (H + 2 * ph < kh || W + 2 * pw < kw) {
    lv_set_error(LV_EVALUE, "avg_pool2d: kernel (%d, %d) is larger than the padded input (input shape %s)", kh, kw, SHP(x, s1));
    return NULL;
  }
  lv_tensor *in[1] = {x};
  lv_node *n = lv_node_new(&op_ap, 1, in);
  if (!n) return NULL;
  n->ia[0] = kh; n->ia[1] = kw; n->ia[2] = sh; n->ia[3] = sw; n->ia[4] = ph; n->ia[5] = pw;
  int64_t shape[4];
  for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
  shape[x->ndim - 2] = (H + 2 * ph - kh) / sh + 1;
  shape[x->ndim - 1] = (W + 2 * pw - kw) / sw + 1;
  return lv_node_finish(n, x->ndim, shape, LV_F32);
}

/* ========================================= pad ========================================= */
/* ia[0..7]: leading pad ("before") per dim of the input; fa[0]: value. Output dims are input
 * dims + before + after. */
static void pad_desc(const lv_node *n, lv_pad_desc *d) {
  d->nd = n->in[0]->ndim;
  for (int i = 0; i < d->nd; i++) {
    d->in[i] = n->in[0]->shape[i];
    d->before[i] = n->ia[i];
    d->out[i] = n->out->shape[i];
  }
}
static int pad_fwd(lv_node *n) {
  lv_pad_desc d;
  pad_desc(n, &d);
  return lv_backend_of(n->out)->pad_forward(&d, (float)n->fa[0], lv_f32(n->in[0]), lv_f32(n->out));
}
static int pad_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_pad_desc d;
  pad_desc(n, &d);
  return lv_backend_of(gout)->pad_backward(&d, lv_f32(gout), lv_f32(gin[0]));
}
static const lv_op op_pad = {"ConstantPadNd", pad_fwd, pad_bwd, NULL};

lv_tensor *lv_pad(lv_tensor *x, int npairs, const int64_t *pads, double value) {
  char s1[96];
  lv_tensor *all[1] = {x};
  if (check_f32("pad", "input", x) || check_dev("pad", all, 1)) return NULL;
  if (npairs > x->ndim) {
    lv_set_error(LV_EVALUE, "pad: padding length %d is too large for a %d-d input (shape %s)", 2 * npairs, x->ndim, SHP(x, s1));
    return NULL;
  }
  int64_t shape[LV_MAXDIM];
  lv_tensor *in[1] = {x};
  lv_node *n = lv_node_new(&op_pad, 1, in);
  if (!n) return NULL;
  for (int i = 0; i < x->ndim; i++) { shape[i] = x->shape[i]; n->ia[i] = 0; }
  for (int k = 0; k < npairs; k++) {
    int d = x->ndim - 1 - k;
    if (pads[2 * k] < 0 || pads[2 * k + 1] < 0) {
      lv_node_decref(n);
      lv_set_error(LV_EVALUE, "pad: negative padding is not supported (got %lld, %lld for dim %d)",
                   (long long)pads[2 * k], (long long)pads[2 * k + 1], d);
      return NULL;
    }
    n->ia[d] = pads[2 * k];
    shape[d] += pads[2 * k] + pads[2 * k + 1];
  }
  n->fa[0] = value;
  return lv_node_finish(n, x->ndim, shape, LV_F32);
}

/* ======================================= dropout ======================================= */
/* aux[0]: mask (0 or 1/(1-p)), redrawn on every forward: one seed from the global seeded
 * generator per forward, on every device (replays redraw, seeded runs repeat, and the CPU and
 * the GPU draw the same masks: csrc/formulas.h lv_f_dropout_mask); fa[0]: p */
static int do_fwd(lv_node *n) {
  uint64_t seed = lv_rng_next();
  return lv_backend_of(n->out)->dropout_forward(lv_numel(n->in[0]), lv_f32(n->in[0]), n->fa[0], seed,
                                                lv_f32(n->aux[0]), lv_f32(n->out));
}
static int do_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  return lv_backend_of(gout)->mul_add(lv_f32(gin[0]), lv_f32(gout), lv_f32(n->aux[0]), lv_numel(n->in[0]));
}
static const lv_op op_dropout = {"Dropout", do_fwd, do_bwd, NULL};

lv_tensor *lv_dropout(lv_tensor *x, double p) {
  lv_tensor *all[1] = {x};
  if (check_f32("dropout", "input", x) || check_dev("dropout", all, 1)) return NULL;
  if (!(p >= 0 && p <= 1)) { lv_set_error(LV_EVALUE, "dropout probability has to be between 0 and 1, but got %g", p); return NULL; }
  lv_tensor *in[1] = {x};
  lv_node *n = lv_node_new(&op_dropout, 1, in);
  if (!n) return NULL;
  n->fa[0] = p;
  n->aux[0] = lv_tensor_new_like(x, 0);
  if (!n->aux[0]) { lv_node_decref(n); return NULL; }
  return lv_node_finish(n, x->ndim, x->shape, LV_F32);
}

/* ==================================== poisson loss ==================================== */
/* in: yhat, y. aux[0]: d loss / d yhat (refreshed every forward). fa: 0 eps, 1 scale. The loss
 * stays in the backend's memory (no host sync on the GPU). */
static int pl_fwd(lv_node *n) {
  return lv_backend_of(n->out)->poisson_loss(lv_numel(n->in[0]), lv_f32(n->in[0]), lv_f32(n->in[1]), (float)n->fa[0],
                                             (float)n->fa[1], lv_f32(n->out), lv_f32(n->aux[0]));
}
static int pl_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->poisson_loss_backward(lv_numel(n->in[0]), lv_f32(gout), lv_f32(n->aux[0]),
                                                    lv_f32(n->in[0]), (float)n->fa[0], (float)n->fa[1],
                                                    gin[0] ? lv_f32(gin[0]) : NULL, gin[1] ? lv_f32(gin[1]) : NULL);
}
static const lv_op op_poisson = {"PoissonLoss", pl_fwd, pl_bwd, NULL};

lv_tensor *lv_poisson_loss_op(lv_tensor *yhat, lv_tensor *y, double eps, int mean) {
  char s1[96], s2[96];
  lv_tensor *all[2] = {yhat, y};
  if (check_f32("poisson_loss", "output", yhat) || check_f32("poisson_loss", "target", y) ||
      check_dev("poisson_loss", all, 2))
    return NULL;
  if (!lv_same_shape(yhat, y)) {
    lv_set_error(LV_EVALUE, "poisson_loss: output shape %s and target shape %s differ", SHP(yhat, s1), SHP(y, s2));
    return NULL;
  }
  lv_tensor *in[2] = {yhat, y};
  lv_node *n = lv_node_new(&op_poisson, 2, in);
  if (!n) return NULL;
  int64_t N = lv_numel(yhat);
  n->fa[0] = eps;
  n->fa[1] = mean ? 1.0 / (double)(N ? N : 1) : 1.0;
  n->aux[0] = lv_tensor_new_like(yhat, 0);
  if (!n->aux[0]) { lv_node_decref(n); return NULL; }
  return lv_node_finish(n, 0, NULL, LV_F32);
}
