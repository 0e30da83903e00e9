/* CPU backend: the generic elementwise op nodes (csrc/ops/elementwise.c): binary ops with NumPy
 * broadcasting and unary ops, forward and backward. The arithmetic is csrc/formulas.h; this file
 * only loops. Node attributes: ia[0] the op code (csrc/opdef.h), fa[0], fa[1] the unary p0, p1. */
#include "cpu/cpu_ops.h"
#include "backend.h" /* lv_broadcast_strides */
#include "formulas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Iterate over an output of shape oshape with two broadcast inputs: calls f on runs of the
 * innermost dimension. */
typedef void (*run_fn)(int64_t n, const float *a, int64_t sa, const float *b, int64_t sb, float *o,
                       int op);

static void bc_apply(int nd, const int64_t *oshape, const float *a, const int64_t *sa,
                     const float *b, const int64_t *sb, float *o, run_fn f, int op) {
  if (nd == 0) { f(1, a, 0, b, 0, o, op); return; }
  int64_t inner = oshape[nd - 1];
  int64_t outer = 1;
  for (int i = 0; i < nd - 1; i++) outer *= oshape[i];
  if (inner == 0 || outer == 0) return;
#pragma omp parallel for schedule(static) if (outer * inner > 32768)
  for (int64_t r = 0; r < outer; r++) {
    int64_t rem = r, oa = 0, ob = 0;
    for (int i = nd - 2; i >= 0; i--) {
      int64_t idx = rem % oshape[i];
      rem /= oshape[i];
      oa += idx * sa[i];
      ob += idx * sb[i];
    }
    f(inner, a + oa, sa[nd - 1], b + ob, sb[nd - 1], o + r * inner, op);
  }
}

/* the formula of each op (csrc/formulas.h) inlined into its own loop (op constant per loop) */
static void run_binop(int64_t n, const float *a, int64_t sa, const float *b, int64_t sb, float *o,
                      int op) {
#define CASE(name)                                                                      \
  case LV_##name:                                                                       \
    if (sa == 1 && sb == 1) {                                                           \
      for (int64_t i = 0; i < n; i++) o[i] = lv_f_binop(LV_##name, a[i], b[i]);         \
    } else {                                                                            \
      for (int64_t i = 0; i < n; i++) o[i] = lv_f_binop(LV_##name, a[i * sa], b[i * sb]); \
    }                                                                                   \
    break;
  switch (op) { LV_BINOP_LIST(CASE) }
#undef CASE
}

/* sum g (out shape) into dst (shape of t) over the broadcast dims */
static void reduce_into(const float *g, int nd, const int64_t *oshape, const int64_t *st, float *dst) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= oshape[i];
  int64_t idx[LV_MAXDIM] = {0};
  int64_t off = 0;
  for (int64_t k = 0; k < n; k++) {
    dst[off] += g[k];
    for (int i = nd - 1; i >= 0; i--) {
      idx[i]++;
      off += st[i];
      if (idx[i] < oshape[i]) break;
      off -= st[i] * oshape[i];
      idx[i] = 0;
    }
  }
}

int lv_cpu_binary_fwd(lv_node *n) {
  lv_tensor *a = n->in[0], *b = n->in[1], *o = n->out;
  int64_t sa[LV_MAXDIM], sb[LV_MAXDIM];
  lv_broadcast_strides(a, o->ndim, o->shape, sa);
  lv_broadcast_strides(b, o->ndim, o->shape, sb);
  int64_t N = lv_numel(o);
  int sa_same = lv_same_shape(a, o), sb_same = lv_same_shape(b, o), b_scalar = lv_numel(b) == 1;
  if (sa_same && (sb_same || b_scalar) && N > 65536) {
    /* contiguous fast path: split the flat range over the threads */
    const float *A = lv_f32(a), *B = lv_f32(b);
    float *O = lv_f32(o);
    int64_t chunk = 16384, nchunks = (N + chunk - 1) / chunk;
    int op = (int)n->ia[0];
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
      int64_t s0 = c * chunk, len = N - s0 < chunk ? N - s0 : chunk;
      run_binop(len, A + s0, 1, sb_same ? B + s0 : B, sb_same ? 1 : 0, O + s0, op);
    }
    return 0;
  }
  bc_apply(o->ndim, o->shape, lv_f32(a), sa, lv_f32(b), sb, lv_f32(o), run_binop, (int)n->ia[0]);
  return 0;
}

int lv_cpu_binary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_tensor *a = n->in[0], *b = n->in[1], *o = n->out;
  int nd = o->ndim;
  int64_t sa[LV_MAXDIM], sb[LV_MAXDIM];
  lv_broadcast_strides(a, nd, o->shape, sa);
  lv_broadcast_strides(b, nd, o->shape, sb);
  int64_t N = lv_numel(o);
  int op = (int)n->ia[0];
  const float *A = lv_f32(a), *B = lv_f32(b), *O = lv_f32(o), *G = lv_f32(gout);
  int same_a = lv_same_shape(a, o), same_b = lv_same_shape(b, o);
  float *tmp = NULL;
  if ((gin[0] && !same_a) || (gin[1] && !same_b)) {
    tmp = malloc((size_t)(N ? N : 1) * sizeof(float));
    if (!tmp) return lv_set_error(LV_ENOMEM, "binary op backward: out of memory");
  }
  for (int side = 0; side < 2; side++) {
    if (!gin[side]) continue;
    int same = side == 0 ? same_a : same_b;
    float *dst = same ? lv_f32(gin[side]) : tmp;
    /* walk the output with offsets into a and b */
    int64_t idx[LV_MAXDIM] = {0}, oa = 0, ob = 0;
    for (int64_t k = 0; k < N; k++) {
      float r = lv_f_binop_grad(op, side, A[oa], B[ob], O[k], G[k]);
      if (same) dst[k] += r; else dst[k] = r;
      for (int i = nd - 1; i >= 0; i--) {
        idx[i]++; oa += sa[i]; ob += sb[i];
        if (idx[i] < o->shape[i]) break;
        oa -= sa[i] * o->shape[i]; ob -= sb[i] * o->shape[i]; idx[i] = 0;
      }
    }
    if (!same) reduce_into(tmp, nd, o->shape, side == 0 ? sa : sb, lv_f32(gin[side]));
  }
  free(tmp);
  return 0;
}

int lv_cpu_unary_fwd(lv_node *n) {
  const float *x = lv_f32(n->in[0]);
  float *y = lv_f32(n->out);
  int64_t N = lv_numel(n->out);
  float p0 = (float)n->fa[0], p1 = (float)n->fa[1];
  int op = (int)n->ia[0];
#define U(name) case LV_##name: \
  _Pragma("omp parallel for schedule(static) if (N > 65536)") \
  for (int64_t i = 0; i < N; i++) y[i] = lv_f_unop(LV_##name, x[i], p0, p1); \
  break;
  switch (op) { LV_UNOP_LIST(U) }
#undef U
  return 0;
}

int lv_cpu_unary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  const float *x = lv_f32(n->in[0]), *y = lv_f32(n->out), *g = lv_f32(gout);
  float *d = lv_f32(gin[0]);
  int64_t N = lv_numel(n->out);
  float p0 = (float)n->fa[0], p1 = (float)n->fa[1];
  int op = (int)n->ia[0];
#define U(name) case LV_##name: \
  _Pragma("omp parallel for schedule(static) if (N > 65536)") \
  for (int64_t i = 0; i < N; i++) d[i] += lv_f_unop_grad(LV_##name, x[i], y[i], g[i], p0, p1); \
  break;
  switch (op) { LV_UNOP_LIST(U) }
#undef U
  (void)p1;
  return 0;
}

