/* CPU backend: the copying shape op nodes (csrc/ops/shape.c): permute (ia[0..nd) the
 * permutation), slice (extra: start, step, len per dim), index_select (ia[0] dim, in[1] the int64
 * indices), cat (ia[0] dim, up to LV_MAXIN inputs), expand (broadcast to out's shape). Forward
 * copies float32 or int64; backward accumulates float32 gradients. */
#include "cpu/cpu_ops.h"
#include "backend.h" /* lv_broadcast_strides */
#include <stdlib.h>
#include <string.h>

static void permute_copy(const lv_tensor *a, const int *perm, const void *src, void *dst, int back,
                         size_t es) {
  int nd = a->ndim;
  int64_t ist[LV_MAXDIM], oshape[LV_MAXDIM], pst[LV_MAXDIM];
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; i--) { ist[i] = s; s *= a->shape[i]; }
  for (int i = 0; i < nd; i++) { oshape[i] = a->shape[perm[i]]; pst[i] = ist[perm[i]]; }
  int64_t N = lv_numel(a), idx[LV_MAXDIM] = {0}, off = 0;
  for (int64_t k = 0; k < N; k++) {
    if (es == 4) {
      if (!back) ((float *)dst)[k] = ((const float *)src)[off];
      else ((float *)dst)[off] += ((const float *)src)[k];
    } else {
      ((int64_t *)dst)[k] = ((const int64_t *)src)[off];
    }
    for (int i = nd - 1; i >= 0; i--) {
      idx[i]++; off += pst[i];
      if (idx[i] < oshape[i]) break;
      off -= pst[i] * oshape[i]; idx[i] = 0;
    }
  }
}
int lv_cpu_permute_fwd(lv_node *n) {
  int perm[LV_MAXDIM];
  for (int i = 0; i < n->in[0]->ndim; i++) perm[i] = (int)n->ia[i];
  permute_copy(n->in[0], perm, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype));
  return 0;
}
int lv_cpu_permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  int perm[LV_MAXDIM];
  for (int i = 0; i < n->in[0]->ndim; i++) perm[i] = (int)n->ia[i];
  permute_copy(n->in[0], perm, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
static void slice_walk(lv_node *n, const void *src, void *dst, int back, size_t es) {
  lv_tensor *a = n->in[0];
  int nd = a->ndim;
  int64_t ist[LV_MAXDIM], len[LV_MAXDIM], base = 0, stp[LV_MAXDIM];
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; i--) { ist[i] = s; s *= a->shape[i]; }
  const int64_t *st = (const int64_t *)n->extra; /* [start(nd), step(nd), len(nd)] */
  for (int i = 0; i < nd; i++) { base += st[i] * ist[i]; stp[i] = st[nd + i] * ist[i]; len[i] = st[2 * nd + i]; }
  int64_t N = 1;
  for (int i = 0; i < nd; i++) N *= len[i];
  int64_t idx[LV_MAXDIM] = {0}, off = base;
  for (int64_t k = 0; k < N; k++) {
    if (es == 4) {
      if (!back) ((float *)dst)[k] = ((const float *)src)[off];
      else ((float *)dst)[off] += ((const float *)src)[k];
    } else ((int64_t *)dst)[k] = ((const int64_t *)src)[off];
    for (int i = nd - 1; i >= 0; i--) {
      idx[i]++; off += stp[i];
      if (idx[i] < len[i]) break;
      off -= stp[i] * len[i]; idx[i] = 0;
    }
  }
}
int lv_cpu_slice_fwd(lv_node *n) {
  slice_walk(n, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype)); return 0; }
int lv_cpu_slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (gin[0]) slice_walk(n, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
static void isel_walk(lv_node *n, const void *src, void *dst, int back, size_t es) {
  lv_tensor *a = n->in[0], *ix = n->in[1];
  int dim = (int)n->ia[0];
  int64_t outer = 1, inner = 1, D = a->shape[dim], K = lv_numel(ix);
  for (int i = 0; i < dim; i++) outer *= a->shape[i];
  for (int i = dim + 1; i < a->ndim; i++) inner *= a->shape[i];
  const int64_t *id = lv_i64(ix);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t k = 0; k < K; k++) {
      int64_t j = id[k] < 0 ? id[k] + D : id[k];
      size_t so = (size_t)((o * D + j) * inner), d0 = (size_t)((o * K + k) * inner);
      if (es == 4) {
        if (!back) memcpy((float *)dst + d0, (const float *)src + so, inner * 4);
        else { float *d = (float *)dst + so; const float *s = (const float *)src + d0; for (int64_t q = 0; q < inner; q++) d[q] += s[q]; }
      } else memcpy((int64_t *)dst + d0, (const int64_t *)src + so, inner * 8);
    }
}
int lv_cpu_isel_fwd(lv_node *n) {
  isel_walk(n, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype)); return 0; }
int lv_cpu_isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (gin[0]) isel_walk(n, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
int lv_cpu_cat_fwd(lv_node *n) {
  int dim = (int)n->ia[0];
  lv_tensor *o = n->out;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= o->shape[i];
  for (int i = dim + 1; i < o->ndim; i++) inner *= o->shape[i];
  size_t es = lv_dtype_size(o->dtype);
  int64_t pos = 0;
  for (int t = 0; t < n->n_in; t++) {
    lv_tensor *x = n->in[t];
    int64_t w = x->shape[dim] * inner;
    for (int64_t q = 0; q < outer; q++)
      memcpy((char *)lv_data(o) + (q * o->shape[dim] * inner + pos) * es, (char *)lv_data(x) + q * w * es, w * es);
    pos += w;
  }
  return 0;
}
int lv_cpu_cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  int dim = (int)n->ia[0];
  lv_tensor *o = n->out;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= o->shape[i];
  for (int i = dim + 1; i < o->ndim; i++) inner *= o->shape[i];
  int64_t pos = 0;
  for (int t = 0; t < n->n_in; t++) {
    int64_t w = n->in[t]->shape[dim] * inner;
    if (gin[t])
      for (int64_t q = 0; q < outer; q++) {
        float *d = lv_f32(gin[t]) + q * w;
        const float *g = lv_f32(gout) + q * o->shape[dim] * inner + pos;
        for (int64_t k = 0; k < w; k++) d[k] += g[k];
      }
    pos += w;
  }
  return 0;
}
int lv_cpu_expand_fwd(lv_node *n) {
  lv_tensor *o = n->out, *a = n->in[0];
  int64_t N = lv_numel(o), idx[LV_MAXDIM] = {0}, off = 0, st[LV_MAXDIM];
  lv_broadcast_strides(a, o->ndim, o->shape, st);
  const float *x = lv_f32(a);
  float *y = lv_f32(o);
  for (int64_t k = 0; k < N; k++) {
    y[k] = x[off];
    for (int i = o->ndim - 1; i >= 0; i--) {
      idx[i]++; off += st[i];
      if (idx[i] < o->shape[i]) break;
      off -= st[i] * o->shape[i]; idx[i] = 0;
    }
  }
  return 0;
}
int lv_cpu_expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_tensor *o = n->out, *a = n->in[0];
  int64_t N = lv_numel(o), idx[LV_MAXDIM] = {0}, off = 0, st[LV_MAXDIM];
  lv_broadcast_strides(a, o->ndim, o->shape, st);
  const float *g = lv_f32(gout);
  float *d = lv_f32(gin[0]);
  for (int64_t k = 0; k < N; k++) {
    d[off] += g[k];
    for (int i = o->ndim - 1; i >= 0; i--) {
      idx[i]++; off += st[i];
      if (idx[i] < o->shape[i]) break;
      off -= st[i] * o->shape[i]; idx[i] = 0;
    }
  }
  return 0;
}
