/* Tensor ops of the C core (CPU op table). Each returns a new tensor (new reference) or NULL
 * with the lv error set; gradients are recorded when an input requires grad. */
#ifndef LV_OPS_H
#define LV_OPS_H
#include "lv.h"

/* op codes: csrc/opdef.h */

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
/* torch.where on same-shaped float32 tensors (the caller broadcasts): c != 0 ? a : b */
lv_tensor *lv_where(lv_tensor *c, lv_tensor *a, lv_tensor *b);
/* a copy on `device` (LV_CPU / LV_CUDA), differentiable: the gradient goes back to a's device */
lv_tensor *lv_to_device(lv_tensor *a, int device);
lv_tensor *lv_to_dtype(lv_tensor *a, int dtype);
/* the op code of a node made by lv_unary / lv_reduce, else -1 */
int lv_node_unop(const lv_node *n);
int lv_node_redop(const lv_node *n);
/* broadcast shape of a and b into out; returns ndim or -1 */
int lv_broadcast_shape(const lv_tensor *a, const lv_tensor *b, int64_t *out);
#endif
