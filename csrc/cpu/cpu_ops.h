/* The CPU backend's node-level entries (csrc/backend.h "generic ops"): the loops behind the
 * generic op nodes of csrc/ops/. Only csrc/cpu/backend.c puts them in the table. */
#ifndef LV_CPU_OPS_H
#define LV_CPU_OPS_H
#include "lv.h"

int lv_cpu_binary_fwd(lv_node *n);
int lv_cpu_binary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_unary_fwd(lv_node *n);
int lv_cpu_unary_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_reduce_fwd(lv_node *n);
int lv_cpu_reduce_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_matmul_fwd(lv_node *n);
int lv_cpu_matmul_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_linear_fwd(lv_node *n);
int lv_cpu_linear_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_permute_fwd(lv_node *n);
int lv_cpu_permute_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_slice_fwd(lv_node *n);
int lv_cpu_slice_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_isel_fwd(lv_node *n);
int lv_cpu_isel_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_cat_fwd(lv_node *n);
int lv_cpu_cat_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
int lv_cpu_expand_fwd(lv_node *n);
int lv_cpu_expand_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin);
/* input optimisation and gradient RFs (csrc/cpu/optin.c; backend.h documents them) */
int lv_cpu_index_cols(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put);
int lv_cpu_blur_planes(int64_t P, int64_t H, int64_t W, int r, const float *taps, float *g, float *tmp);
int lv_cpu_momentum_step(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip,
                         float lo, float hi);
int lv_cpu_renorm_rows(int64_t K, int64_t D, float *x, double norm);
#endif
