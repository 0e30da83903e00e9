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
#endif
