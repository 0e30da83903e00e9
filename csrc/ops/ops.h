/* Tensor ops of the C core (CPU op table). Each returns a new tensor (new reference) or NULL
 * with the lv error set; gradients are recorded when an input requires grad. */
#ifndef LV_OPS_H
#define LV_OPS_H
#include "lv.h"

typedef enum {
  LV_ADD, LV_SUB, LV_MUL, LV_DIV, LV_POW, LV_MAXIMUM, LV_MINIMUM,
  LV_EQ, LV_NE, LV_LT, LV_LE, LV_GT, LV_GE
} lv_binop;

typedef enum {
  LV_NEG, LV_EXP, LV_LOG, LV_SQRT, LV_ABS, LV_SIGN, LV_ELU, LV_RELU, LV_TANH, LV_SIGMOID,
  LV_CLAMP,  /* p0 = min (or -inf), p1 = max (or +inf) */
  LV_AFFINE, /* p0 * x + p1 */
  LV_POWS,   /* x ** p0 */
  LV_RDIV,   /* p0 / x */
  LV_SQUARE, LV_LOG1P, LV_SOFTPLUS, LV_SIN, LV_COS
} lv_unop;

typedef enum { LV_RSUM, LV_RMEAN, LV_RVAR, LV_RSTD, LV_RMAX, LV_RMIN, LV_RARGMAX, LV_RARGMIN } lv_redop;

lv_tensor *lv_binary(lv_binop op, lv_tensor *a, lv_tensor *b);
lv_tensor *lv_unary(lv_unop op, lv_tensor *a, double p0, double p1);
/* dims: bitmask of reduced dims (0: all); correction for var/std */
lv_tensor *lv_reduce(lv_redop op, lv_tensor *a, uint32_t dims, int keepdim, double correction);
lv_tensor *lv_matmul(lv_tensor *a, lv_tensor *b);
lv_tensor *lv_reshape(lv_tensor *a, int ndim, const int64_t *shape); /* a view */
lv_tensor *lv_permute(lv_tensor *a, const int *perm);
/* per dim: start, step (>0), length */
lv_tensor *lv_slice(lv_tensor *a, const int64_t *start, const int64_t *step, const int64_t *len);
lv_tensor *lv_index_select(lv_tensor *a, int dim, lv_tensor *idx);
lv_tensor *lv_cat(int n, lv_tensor **ts, int dim);
lv_tensor *lv_expand(lv_tensor *a, int ndim, const int64_t *shape);
lv_tensor *lv_copy(lv_tensor *a); /* clone */
lv_tensor *lv_to_dtype(lv_tensor *a, int dtype);
/* broadcast shape of a and b into out; returns ndim or -1 */
int lv_broadcast_shape(const lv_tensor *a, const lv_tensor *b, int64_t *out);
#endif
