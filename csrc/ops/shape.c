/* Shape ops: reshape (a view), permute, slice, index_select, cat, expand, copy, dtype casts. */
#include "ops/ops.h"
#include "backend.h"
#include <stdlib.h>
#include <string.h>

/* ---- reshape: the output shares storage; forward has nothing to do ---- */
static int reshape_fwd(lv_node *n) { (void)n; return 0; }
static int reshape_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  (void)n;
  if (!gin[0]) return 0;
  return lv_backend_of(gout)->add_into(lv_f32(gin[0]), lv_f32(gout), lv_numel(gout));
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
static int permute_fwd(lv_node *n) { return lv_backend_of(n->out)->permute_fwd(n); }
static int permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->permute_bwd(n, gout, gin);
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

/* ---- slice: start/step/len per dim (a view when it is one contiguous block, else a copy) ---- */
static int slice_fwd(lv_node *n) { return lv_backend_of(n->out)->slice_fwd(n); }
static int slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->slice_bwd(n, gout, gin);
}
static void free_extra(lv_node *n) { free(n->extra); n->extra = NULL; }
static const lv_op op_slice = {"slice", slice_fwd, slice_bwd, free_extra};

/* A slice that is one contiguous block of a (the dims before the last partial one of length 1,
 * that one of step 1, the rest full) is a view at this element offset; else -1 (a copy). */
static int64_t slice_view_offset(const lv_tensor *a, const int64_t *start, const int64_t *step, const int64_t *len) {
  int nd = a->ndim, j = -1;
  for (int i = 0; i < nd; i++) {
    if (len[i] == 0) return -1;
    if (!(start[i] == 0 && step[i] == 1 && len[i] == a->shape[i])) j = i;
  }
  if (j >= 0 && step[j] != 1 && len[j] != 1) return -1;
  for (int i = 0; i < j; i++) if (len[i] != 1) return -1;
  int64_t off = 0, stride = 1;
  for (int i = nd - 1; i >= 0; i--) { off += start[i] * stride; stride *= a->shape[i]; }
  return off;
}
/* the view's backward: its gradient added into that block of the input's */
static int slice_view_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  return lv_backend_of(gout)->add_into(lv_f32(gin[0]) + n->ia[0], lv_f32(gout), lv_numel(gout));
}
static const lv_op op_slice_view = {"slice", reshape_fwd, slice_view_bwd, NULL};

lv_tensor *lv_slice(lv_tensor *a, const int64_t *start, const int64_t *step, const int64_t *len) {
  int nd = a->ndim;
  for (int i = 0; i < nd; i++) {
    if (step[i] <= 0 || len[i] < 0 || (len[i] > 0 && (start[i] < 0 || start[i] + (len[i] - 1) * step[i] >= a->shape[i]))) {
      lv_set_error(LV_EINDEX, "slice: dimension %d (size %lld) indexed out of range", i, (long long)a->shape[i]);
      return NULL;
    }
  }
  lv_tensor *in[1] = {a};
  int64_t off = slice_view_offset(a, start, step, len);
  if (off >= 0) { /* a contiguous block of a's storage: a view, as in PyTorch */
    lv_node *v = lv_node_new(&op_slice_view, 1, in);
    if (!v) return NULL;
    v->ia[0] = off;
    lv_tensor *out = lv_tensor_view(a, nd, len, a->offset + (size_t)off * lv_dtype_size(a->dtype));
    if (!out) { lv_node_decref(v); return NULL; }
    return lv_node_finish_out(v, out);
  }
  lv_node *n = lv_node_new(&op_slice, 1, in);
  if (!n) return NULL;
  int64_t *st = malloc(sizeof(int64_t) * 3 * (size_t)(nd > 0 ? nd : 1));
  if (!st) { lv_node_decref(n); lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  for (int i = 0; i < nd; i++) { st[i] = start[i]; st[nd + i] = step[i]; st[2 * nd + i] = len[i]; }
  n->extra = st;
  return lv_node_finish(n, nd, len, a->dtype);
}

/* ---- index_select along dim with an int64 index tensor ---- */
static int isel_fwd(lv_node *n) { return lv_backend_of(n->out)->isel_fwd(n); }
static int isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->isel_bwd(n, gout, gin);
}
static const lv_op op_isel = {"index_select", isel_fwd, isel_bwd, NULL};

lv_tensor *lv_index_select(lv_tensor *a, int dim, lv_tensor *idx) {
  if (dim < 0) dim += a->ndim;
  if (dim < 0 || dim >= a->ndim) { lv_set_error(LV_EINDEX, "index_select: dim out of range for a %d-d tensor", a->ndim); return NULL; }
  if (idx->dtype != LV_I64) { lv_set_error(LV_ETYPE, "index_select: indices must be int64"); return NULL; }
  lv_tensor *both[2] = {a, idx};
  static const char *const what[2] = {"input", "indices"};
  if (lv_check_devices("index_select", both, what, 2) < 0) return NULL;
  int64_t D = a->shape[dim], K = lv_numel(idx);
  /* validate a host copy of the (small) index vector, wherever it lives */
  int64_t *id = malloc((size_t)(K ? K : 1) * sizeof(int64_t));
  if (!id) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  if (lv_copy_bytes(id, LV_CPU, lv_i64(idx), idx->st->device, (size_t)K * sizeof(int64_t)) < 0) { free(id); return NULL; }
  for (int64_t k = 0; k < K; k++)
    if (id[k] < -D || id[k] >= D) {
      lv_set_error(LV_EINDEX, "index %lld is out of bounds for dimension %d with size %lld", (long long)id[k], dim, (long long)D);
      free(id);
      return NULL;
    }
  free(id);
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
static int cat_fwd(lv_node *n) { return lv_backend_of(n->out)->cat_fwd(n); }
static int cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->cat_bwd(n, gout, gin);
}
static const lv_op op_cat = {"cat", cat_fwd, cat_bwd, NULL};

lv_tensor *lv_cat(int n, lv_tensor **ts, int dim) {
  if (n <= 0) { lv_set_error(LV_EVALUE, "cat: expected a non-empty list of tensors"); return NULL; }
  lv_tensor *a = ts[0];
  if (dim < 0) dim += a->ndim;
  if (dim < 0 || dim >= a->ndim) { lv_set_error(LV_EINDEX, "cat: dim out of range for a %d-d tensor", a->ndim); return NULL; }
  if (lv_check_devices("cat", ts, NULL, n) < 0) return NULL;
  for (int t = 1; t < n; t++) {
    lv_tensor *b = ts[t];
    int bad = b->ndim != a->ndim || b->dtype != a->dtype;
    for (int i = 0; !bad && i < a->ndim; i++) if (i != dim && b->shape[i] != a->shape[i]) bad = 1;
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
static int expand_fwd(lv_node *n) { return lv_backend_of(n->out)->expand_fwd(n); }
static int expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->expand_bwd(n, gout, gin);
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
  return lv_backend_of(n->out)->memcpy_d2d(lv_data(n->out), lv_data(n->in[0]),
                                            lv_numel(n->out) * lv_dtype_size(n->out->dtype));
}
static const lv_op op_copy = {"clone", copy_fwd, reshape_bwd, NULL};
lv_tensor *lv_copy(lv_tensor *a) {
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_copy, 1, in);
  if (!n) return NULL;
  return lv_node_finish(n, a->ndim, a->shape, a->dtype);
}

/* ---- device copy (differentiable, like torch's .to(device)) ---- */
static int todev_fwd(lv_node *n) {
  return lv_copy_bytes(lv_data(n->out), n->out->st->device, lv_data(n->in[0]), n->in[0]->st->device,
                       (size_t)lv_numel(n->out) * lv_dtype_size(n->out->dtype));
}
static int todev_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  (void)n;
  if (!gin[0]) return 0;
  lv_tensor *g = lv_tensor_to_device(gout, gin[0]->st->device);
  if (!g) return -1;
  int rc = lv_backend_of(gin[0])->add_into(lv_f32(gin[0]), lv_f32(g), lv_numel(g));
  lv_tensor_decref(g);
  return rc;
}
static const lv_op op_to_device = {"to_device", todev_fwd, todev_bwd, NULL};
lv_tensor *lv_to_device(lv_tensor *a, int device) {
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_to_device, 1, in);
  if (!n) return NULL;
  lv_tensor *out = lv_tensor_new(a->ndim, a->shape, a->dtype, device, 0);
  if (!out) { lv_node_decref(n); return NULL; }
  return lv_node_finish_out(n, out);
}

/* ---- dtype cast (not differentiable) ---- */
lv_tensor *lv_to_dtype(lv_tensor *a, int dtype) {
  lv_tensor *o = lv_tensor_new(a->ndim, a->shape, dtype, a->st->device, 0);
  if (!o) return NULL;
  int64_t N = lv_numel(a);
  if (lv_backend_of(a)->cast(lv_data(o), dtype, lv_data(a), a->dtype, N) < 0) { lv_tensor_decref(o); return NULL; }
  return o;
}
