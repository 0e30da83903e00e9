/* Elementwise ops with NumPy broadcasting, their gradients, and unary maths. */
#include "ops/ops.h"
#include "backend.h"
#include "formulas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *binop_name[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum",
                                   "eq", "ne", "lt", "le", "gt", "ge"};

int lv_broadcast_shape(const lv_tensor *a, const lv_tensor *b, int64_t *out) {
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < nd; i++) {
    int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
    int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) return -1;
    out[i] = da == 1 ? db : da;
  }
  return nd;
}

/* ---- where: a select, differentiable in a and b ---- */
static int where_fwd(lv_node *n) {
  return lv_backend_of(n->out)->where_fwd(lv_numel(n->out), lv_f32(n->in[0]), lv_f32(n->in[1]),
                                           lv_f32(n->in[2]), lv_f32(n->out));
}
static int where_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[1] && !gin[2]) return 0;  /* the condition gets no gradient */
  return lv_backend_of(gout)->where_bwd(lv_numel(gout), lv_f32(n->in[0]), lv_f32(gout),
                                         gin[1] ? lv_f32(gin[1]) : NULL, gin[2] ? lv_f32(gin[2]) : NULL);
}
static const lv_op op_where = {"where", where_fwd, where_bwd, NULL};

lv_tensor *lv_where(lv_tensor *c, lv_tensor *a, lv_tensor *b) {
  lv_tensor *all[3] = {c, a, b};
  for (int i = 0; i < 3; i++)
    if (all[i]->dtype != LV_F32) return lv_set_error(LV_ETYPE, "where: expected float32 tensors"), NULL;
  if (!lv_same_shape(c, a) || !lv_same_shape(c, b)) {
    char s1[96], s2[96], s3[96];
    lv_set_error(LV_EVALUE, "where: shapes %s, %s and %s differ (broadcast them first)", lv_shape_str(c, s1, sizeof s1),
                 lv_shape_str(a, s2, sizeof s2), lv_shape_str(b, s3, sizeof s3));
    return NULL;
  }
  if (lv_check_devices("where", all, NULL, 3) < 0) return NULL;
  lv_node *n = lv_node_new(&op_where, 3, all);
  if (!n) return NULL;
  return lv_node_finish(n, a->ndim, a->shape, LV_F32);
}

static int binary_fwd(lv_node *n) { return lv_backend_of(n->out)->binary_fwd(n); }
static int binary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->binary_bwd(n, gout, gin);
}
static const lv_op op_binary = {"binary", binary_fwd, binary_bwd, NULL};

static int check_pair(const char *name, lv_tensor *a, lv_tensor *b) {
  if (a->dtype != LV_F32 || b->dtype != LV_F32)
    return lv_set_error(LV_ETYPE, "%s: expected float32 tensors, got %s and %s", name,
                        a->dtype == LV_F32 ? "float32" : "int64", b->dtype == LV_F32 ? "float32" : "int64");
  lv_tensor *both[2] = {a, b};
  return lv_check_devices(name, both, NULL, 2);
}

lv_tensor *lv_binary(lv_binop op, lv_tensor *a, lv_tensor *b) {
  const char *name = binop_name[op];
  if (check_pair(name, a, b) < 0) return NULL;
  int64_t shape[LV_MAXDIM];
  int nd = lv_broadcast_shape(a, b, shape);
  if (nd < 0) {
    char s1[96], s2[96];
    lv_set_error(LV_EVALUE, "%s: shapes %s and %s cannot be broadcast together", name,
                 lv_shape_str(a, s1, sizeof s1), lv_shape_str(b, s2, sizeof s2));
    return NULL;
  }
  lv_tensor *in[2] = {a, b};
  lv_node *n = lv_node_new(&op_binary, 2, in);
  if (!n) return NULL;
  n->ia[0] = op;
  if (op >= LV_EQ) { /* comparisons are not differentiable */
    lv_tensor *nin[2] = {NULL, NULL};
    (void)nin;
  }
  lv_tensor *out = lv_node_finish(n, nd, shape, LV_F32);
  if (out && op >= LV_EQ && out->grad_fn) {
    lv_node_decref(out->grad_fn);
    out->grad_fn = NULL;
    out->requires_grad = 0;
  }
  return out;
}

/* ---------------- unary ---------------- */
static int unary_fwd(lv_node *n) { return lv_backend_of(n->out)->unary_fwd(n); }
static int unary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->unary_bwd(n, gout, gin);
}

static const lv_op op_unary = {"unary", unary_fwd, unary_bwd, NULL};
int lv_node_unop(const lv_node *n) { return n->op == &op_unary ? (int)n->ia[0] : -1; }

lv_tensor *lv_unary(lv_unop op, lv_tensor *a, double p0, double p1) {
  if (a->dtype != LV_F32) { lv_set_error(LV_ETYPE, "unary op: expected a float32 tensor, got int64"); return NULL; }
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_unary, 1, in);
  if (!n) return NULL;
  n->ia[0] = op;
  n->fa[0] = p0;
  n->fa[1] = p1;
  return lv_node_finish(n, a->ndim, a->shape, LV_F32);
}
