/* Reductions over a set of dimensions: sum, mean, var, std, max, min, argmax, argmin. */
#include "ops/ops.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int reduce_fwd(lv_node *n) { return lv_backend_of(n->out)->reduce_fwd(n); }
static int reduce_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->reduce_bwd(n, gout, gin);
}

static const lv_op op_reduce = {"reduce", reduce_fwd, reduce_bwd, NULL};
int lv_node_redop(const lv_node *n) { return n->op == &op_reduce ? (int)n->ia[0] : -1; }
static const char *redname[] = {"sum", "mean", "var", "std", "max", "min", "argmax", "argmin"};

lv_tensor *lv_reduce(lv_redop op, lv_tensor *a, uint32_t dims, int keepdim, double correction) {
  if (a->dtype != LV_F32) { lv_set_error(LV_ETYPE, "%s: expected a float32 tensor, got int64", redname[op]); return NULL; }
  if (dims == 0) dims = a->ndim ? (uint32_t)((1u << a->ndim) - 1) : 0;
  for (int i = 0; i < a->ndim; i++)
    if ((dims & (1u << i)) && a->shape[i] == 0 && (op >= LV_RMAX)) {
      lv_set_error(LV_EINDEX, "%s: cannot reduce over an empty dimension %d", redname[op], i);
      return NULL;
    }
  if (dims >> a->ndim) { lv_set_error(LV_EINDEX, "%s: dimension out of range for a %d-d tensor", redname[op], a->ndim); return NULL; }
  int64_t shape[LV_MAXDIM];
  int nd = 0;
  for (int i = 0; i < a->ndim; i++) {
    if (dims & (1u << i)) { if (keepdim) shape[nd++] = 1; }
    else shape[nd++] = a->shape[i];
  }
  lv_tensor *in[1] = {a};
  lv_node *n = lv_node_new(&op_reduce, 1, in);
  if (!n) return NULL;
  n->ia[0] = op;
  n->ia[1] = dims;
  n->fa[0] = correction;
  if (op == LV_RVAR || op == LV_RSTD || op == LV_RMAX || op == LV_RMIN) {
    n->aux[0] = lv_tensor_new(nd, shape, (op == LV_RMAX || op == LV_RMIN) ? LV_I64 : LV_F32, a->st->device, 0);
    if (!n->aux[0]) { lv_node_decref(n); return NULL; }
  }
  int dt = (op == LV_RARGMAX || op == LV_RARGMIN) ? LV_I64 : LV_F32;
  return lv_node_finish(n, nd, shape, dt);
}
