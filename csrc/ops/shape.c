/* Shape ops: reshape (a view), permute, slice, index_select, cat, expand, copy, dtype casts. */
#include "ops/ops.h"
#include "cuda_dispatch.h"
#include <stdlib.h>
#include <string.h>

/* ---- reshape: the output shares storage; forward has nothing to do ---- */
static int reshape_fwd(lv_node *n) { (void)n; return 0; }
static int reshape_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  if (lv_on_cuda(gout)) return lv_cuda->add_into(lv_f32(gin[0]), lv_f32(gout), lv_numel(gout));
  float *d = lv_f32(gin[0]);
  const float *g = lv_f32(gout);
  int64_t N = lv_numel(gout);
  for (int64_t i = 0; i < N; i++) d[i] += g[i];
  (void)n;
  return 0;
}
static const lv_op op_reshape = {"reshape", reshape_fwd, reshape_bwd, NULL};

lv_tensor *lv_reshape(lv_tensor *a, int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (ndim > LV_MAXDIM || n != lv_numel(a)) {
    char s1[128], s2[128];
    lv_set_error(LV_EVALUE, "shape %s is invalid for input of size %lld (shape %s)",
                 lv_shape_str2(ndim, shape, s1, sizeof s1), (long long)lv_numel(a), lv_shape_str(a, s2, sizeof s2));
    return NULL;
  }
  lv_tensor *in[1] = {a};
  lv_node *nd = lv_node_new(&op_reshape, 1, in);
  if (!nd) return NULL;
  lv_tensor *out = lv_tensor_view(a, ndim, shape, a->offset);
  if (!out) { lv_node_decref(nd); return NULL; }
  return lv_node_finish_out(nd, out);
}

/* ---- permute (copies) ---- */
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
static int permute_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->permute_fwd(n);
  int perm[LV_MAXDIM];
  for (int i = 0; i < n->in[0]->ndim; i++) perm[i] = (int)n->ia[i];
  permute_copy(n->in[0], perm, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype));
  return 0;
}
static int permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->permute_bwd(n, gout, gin);
  if (!gin[0]) return 0;
  int perm[LV_MAXDIM];
  for (int i = 0; i < n->in[0]->ndim; i++) perm[i] = (int)n->ia[i];
  permute_copy(n->in[0], perm, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
static const lv_op op_permute = {"permute", permute_fwd, permute_bwd, NULL};

lv_tensor *lv_permute(lv_tensor *a, const int *perm) {
  int seen[LV_MAXDIM] = {0};
  int64_t shape[LV_MAXDIM];
  for (int i = 0; i < a->ndim; i++) {
    if (perm[i] < 0 || perm[i] >= a->ndim || seen[perm[i]]) {
      lv_set_error(LV_EVALUE, "permute: dims must be a permutation of 0..%d", a->ndim - 1);
      return NULL;
    }
    seen[perm[i]] = 1;
    shape[i] = a->shape[perm[i]];
  }
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_permute, 1, in);
  if (!n) return NULL;
  for (int i = 0; i < a->ndim; i++) n->ia[i] = perm[i];
  return lv_node_finish(n, a->ndim, shape, a->dtype);
}

/* ---- slice: start/step/len per dim (copies) ---- */
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
static int slice_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->slice_fwd(n);
  slice_walk(n, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype)); return 0; }
static int slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->slice_bwd(n, gout, gin);
  if (gin[0]) slice_walk(n, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
static void free_extra(lv_node *n) { free(n->extra); n->extra = NULL; }
static const lv_op op_slice = {"slice", slice_fwd, slice_bwd, free_extra};

lv_tensor *lv_slice(lv_tensor *a, const int64_t *start, const int64_t *step, const int64_t *len) {
  int nd = a->ndim;
  for (int i = 0; i < nd; i++) {
    if (step[i] <= 0 || len[i] < 0 || (len[i] > 0 && (start[i] < 0 || start[i] + (len[i] - 1) * step[i] >= a->shape[i]))) {
      lv_set_error(LV_EINDEX, "slice: dimension %d (size %lld) indexed out of range", i, (long long)a->shape[i]);
      return NULL;
    }
  }
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_slice, 1, in);
  if (!n) return NULL;
  int64_t *st = malloc(sizeof(int64_t) * 3 * (size_t)(nd > 0 ? nd : 1));
  if (!st) { lv_node_decref(n); lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  for (int i = 0; i < nd; i++) { st[i] = start[i]; st[nd + i] = step[i]; st[2 * nd + i] = len[i]; }
  n->extra = st;
  return lv_node_finish(n, nd, len, a->dtype);
}

/* ---- index_select along dim with an int64 index tensor ---- */
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
static int isel_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->isel_fwd(n);
  isel_walk(n, lv_data(n->in[0]), lv_data(n->out), 0, lv_dtype_size(n->in[0]->dtype)); return 0; }
static int isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->isel_bwd(n, gout, gin);
  if (gin[0]) isel_walk(n, lv_data(gout), lv_data(gin[0]), 1, 4);
  return 0;
}
static const lv_op op_isel = {"index_select", isel_fwd, isel_bwd, NULL};

lv_tensor *lv_index_select(lv_tensor *a, int dim, lv_tensor *idx) {
  if (dim < 0) dim += a->ndim;
  if (dim < 0 || dim >= a->ndim) { lv_set_error(LV_EINDEX, "index_select: dim out of range for a %d-d tensor", a->ndim); return NULL; }
  if (idx->dtype != LV_I64) { lv_set_error(LV_ETYPE, "index_select: indices must be int64"); return NULL; }
  if (a->st->device != idx->st->device) {
    lv_set_error(LV_EVALUE, "index_select: expected the tensor and the indices on the same device, got %s and %s",
                 a->st->device ? "cuda" : "cpu", idx->st->device ? "cuda" : "cpu");
    return NULL;
  }
  int64_t D = a->shape[dim], K = lv_numel(idx);
  const int64_t *id = lv_i64(idx);
  int64_t *hid = NULL;
  if (lv_on_cuda(idx)) { /* validate a host copy of the (small) index vector */
    hid = malloc((size_t)(K ? K : 1) * sizeof(int64_t));
    if (!hid) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
    if (lv_cuda->memcpy_d2h(hid, id, (size_t)K * sizeof(int64_t)) < 0) { free(hid); return NULL; }
    id = hid;
  }
  for (int64_t k = 0; k < K; k++)
    if (id[k] < -D || id[k] >= D) {
      lv_set_error(LV_EINDEX, "index %lld is out of bounds for dimension %d with size %lld", (long long)id[k], dim, (long long)D);
      free(hid);
      return NULL;
    }
  free(hid);
  int64_t shape[LV_MAXDIM];
  for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
  shape[dim] = K;
  lv_tensor *in[2] = {a, idx};
  lv_node *n = lv_node_new(&op_isel, 2, in);
  if (!n) return NULL;
  n->ia[0] = dim;
  return lv_node_finish(n, a->ndim, shape, a->dtype);
}

/* ---- cat along dim (up to LV_MAXIN inputs per node; more are chained) ---- */
static int cat_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->cat_fwd(n);
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
static int cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->cat_bwd(n, gout, gin);
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
static const lv_op op_cat = {"cat", cat_fwd, cat_bwd, NULL};

lv_tensor *lv_cat(int n, lv_tensor **ts, int dim) {
  if (n <= 0) { lv_set_error(LV_EVALUE, "cat: expected a non-empty list of tensors"); return NULL; }
  lv_tensor *a = ts[0];
  if (dim < 0) dim += a->ndim;
  if (dim < 0 || dim >= a->ndim) { lv_set_error(LV_EINDEX, "cat: dim out of range for a %d-d tensor", a->ndim); return NULL; }
  for (int t = 1; t < n; t++) {
    lv_tensor *b = ts[t];
    int bad = b->ndim != a->ndim || b->dtype != a->dtype || b->st->device != a->st->device;
    for (int i = 0; !bad && i < a->ndim; i++) if (i != dim && b->shape[i] != a->shape[i]) bad = 1;
    if (b->st->device != a->st->device) {
      lv_set_error(LV_EVALUE, "cat: expected all tensors on the same device, got %s (tensor 0) and %s (tensor %d)",
                   a->st->device ? "cuda" : "cpu", b->st->device ? "cuda" : "cpu", t);
      return NULL;
    }
    if (bad) {
      char s1[96], s2[96];
      lv_set_error(LV_EVALUE, "cat: tensor %d has shape %s, expected %s except in dimension %d", t,
                   lv_shape_str(b, s1, sizeof s1), lv_shape_str(a, s2, sizeof s2), dim);
      return NULL;
    }
  }
  if (n > LV_MAXIN) { /* chain in groups */
    int half = n / 2;
    lv_tensor *l = lv_cat(half, ts, dim);
    if (!l) return NULL;
    lv_tensor *r = lv_cat(n - half, ts + half, dim);
    if (!r) { lv_tensor_decref(l); return NULL; }
    lv_tensor *two[2] = {l, r};
    lv_tensor *o = lv_cat(2, two, dim);
    lv_tensor_decref(l); lv_tensor_decref(r);
    return o;
  }
  int64_t shape[LV_MAXDIM];
  for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
  shape[dim] = 0;
  for (int t = 0; t < n; t++) shape[dim] += ts[t]->shape[dim];
  lv_node *nd = lv_node_new(&op_cat, n, ts);
  if (!nd) return NULL;
  nd->ia[0] = dim;
  return lv_node_finish(nd, a->ndim, shape, a->dtype);
}

/* ---- expand: broadcast to a shape (copies) ---- */
static int expand_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->expand_fwd(n);
  lv_tensor *o = n->out, *a = n->in[0];
  int64_t N = lv_numel(o), idx[LV_MAXDIM] = {0}, off = 0, st[LV_MAXDIM], s = 1;
  for (int i = o->ndim - 1; i >= 0; i--) {
    int ia = a->ndim - o->ndim + i;
    int64_t d = ia >= 0 ? a->shape[ia] : 1;
    st[i] = d == 1 ? 0 : s;
    s *= d;
  }
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
static int expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->expand_bwd(n, gout, gin);
  if (!gin[0]) return 0;
  lv_tensor *o = n->out, *a = n->in[0];
  int64_t N = lv_numel(o), idx[LV_MAXDIM] = {0}, off = 0, st[LV_MAXDIM], s = 1;
  for (int i = o->ndim - 1; i >= 0; i--) {
    int ia = a->ndim - o->ndim + i;
    int64_t d = ia >= 0 ? a->shape[ia] : 1;
    st[i] = d == 1 ? 0 : s;
    s *= d;
  }
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
static const lv_op op_expand = {"expand", expand_fwd, expand_bwd, NULL};

lv_tensor *lv_expand(lv_tensor *a, int ndim, const int64_t *shape) {
  int ok = ndim >= a->ndim && ndim <= LV_MAXDIM && a->dtype == LV_F32;
  for (int i = 0; ok && i < a->ndim; i++) {
    int64_t d = a->shape[i], t = shape[ndim - a->ndim + i];
    if (d != t && d != 1) ok = 0;
  }
  if (!ok) {
    char s1[96], s2[96];
    lv_set_error(LV_EVALUE, "expand: cannot expand shape %s to %s", lv_shape_str(a, s1, sizeof s1),
                 lv_shape_str2(ndim, shape, s2, sizeof s2));
    return NULL;
  }
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_expand, 1, in);
  if (!n) return NULL;
  return lv_node_finish(n, ndim, shape, LV_F32);
}

/* ---- copy (clone) ---- */
static int copy_fwd(lv_node *n) {
  if (lv_on_cuda(n->out))
    return lv_cuda->memcpy_d2d(lv_data(n->out), lv_data(n->in[0]), lv_numel(n->out) * lv_dtype_size(n->out->dtype));
  memcpy(lv_data(n->out), lv_data(n->in[0]), lv_numel(n->out) * lv_dtype_size(n->out->dtype));
  return 0;
}
static const lv_op op_copy = {"clone", copy_fwd, reshape_bwd, NULL};
lv_tensor *lv_copy(lv_tensor *a) {
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_copy, 1, in);
  if (!n) return NULL;
  return lv_node_finish(n, a->ndim, a->shape, a->dtype);
}

/* ---- dtype cast (not differentiable) ---- */
lv_tensor *lv_to_dtype(lv_tensor *a, int dtype) {
  lv_tensor *o = lv_tensor_new(a->ndim, a->shape, dtype, a->st->device, 0);
  if (!o) return NULL;
  int64_t N = lv_numel(a);
  if (lv_on_cuda(a)) {
    if (lv_cuda->cast(lv_data(o), dtype, lv_data(a), a->dtype, N) < 0) { lv_tensor_decref(o); return NULL; }
    return o;
  }
  if (a->dtype == dtype) memcpy(lv_data(o), lv_data(a), N * lv_dtype_size(dtype));
  else if (dtype == LV_F32) { const int64_t *s = lv_i64(a); float *d = lv_f32(o); for (int64_t i = 0; i < N; i++) d[i] = (float)s[i]; }
  else { const float *s = lv_f32(a); int64_t *d = lv_i64(o); for (int64_t i = 0; i < N; i++) d[i] = (int64_t)s[i]; }
  return o;
}
