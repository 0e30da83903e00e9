/* Fused weight updates of the C training loop (csrc/fuse.c). */
#ifndef LV_FUSE_H
#define LV_FUSE_H
#include "train.h"

/* node roles (lv_node.fuse_role) */
enum { LV_FUSE_LINEAR = 1, LV_FUSE_ABS = 2, LV_FUSE_SUM = 3 };

typedef struct lv_fuse_plan lv_fuse_plan;

/* the process-wide switch (on by default); returns the previous setting */
int lv_fuse_set_enabled(int on);
/* fused weight steps taken so far in this process (one per weight and step) */
int64_t lv_fuse_steps(void);

/* The fusion plan of one epoch over the training graphs `full` and `rem` (nullable) with the
 * optimizer `a`: which parameters step through lv_linear_adam_step. *out is NULL when nothing
 * fuses (then the loop runs unfused). Marks the nodes; lv_fuse_plan_free unmarks them. 0 or -1. */
int lv_fuse_plan_new(lv_graph *full, lv_graph *rem, lv_adam *a, lv_fuse_plan **out);
void lv_fuse_plan_free(lv_fuse_plan *p);
/* Adam's step for optimizer slot i when the plan fuses it: 1 done, 0 not fused, -1 error */
int lv_fuse_step(lv_fuse_plan *p, int slot, lv_adam *a);

/* autograd's hooks for marked nodes (csrc/autograd.c) */
int lv_fuse_forward(lv_node *n);                  /* 1: done, skip the op; 0: run it; -1: error */
void lv_fuse_take_l1(lv_node *n, const lv_tensor *gout);   /* the sum's output gradient */
void lv_fuse_take_linear(lv_node *n, lv_tensor *gout);     /* the Linear's output gradient */
#endif
