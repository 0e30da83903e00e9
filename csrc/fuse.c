/* Fused weight updates of the C training loop: one pass over a large weight matrix per step.
 *
 * A parameter qualifies when, in every training graph of the epoch, it is used only as the
 * weight of one Linear node and, optionally, by one abs node whose output only feeds one full sum
 * (an L1 regularizer: gamma * w.abs().sum()), and it is a 2-d float32 CPU leaf of the Adam
 * optimizer (once). Anything else (a weight shared by two layers, a view of it, an L2 term, a mean
 * in place of the sum, accumulation over batches, the GPU) leaves it to the unfused path.
 *
 * For a qualifying weight w the loop then
 *  - does not compute dW in the Linear's backward: it keeps the Linear's output gradient and input;
 *  - skips the abs and sum backward: it keeps the sum's output gradient (the L1 term's factor);
 *  - in the optimizer step runs lv_linear_adam_step: per tile of w, dW into cache, + the L1 term,
 *    Adam (lv_f_adam), and sum |w_new| in lv_sum_f64's order;
 *  - skips the abs forward and gives the sum node that value (no pass over w), or, when there is
 *    none yet (the epoch's first batch), lv_sum_f64 of |w| directly.
 * Each of these reproduces the unfused path's arithmetic element by element, so the weights and
 * the losses are the same bits (tests/test_fused_step.py). */
#include "fuse.h"
#include "backend.h"
#include "ops/ops.h"
#include "ops/nn_ops.h"
#include "cpu/kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lv_fuse {
  int slot;
  lv_tensor *w;          /* the parameter */
  int64_t O, K;
  lv_tensor *gy, *x;     /* this step's Linear output gradient and input (held) */
  int have_l1;
  float l1g;             /* this step's gradient of the sum (the L1 term's factor) */
  int sum_ok;
  float sum;             /* sum |w| of the current w (valid when sum_ok) */
  double *segsum;        /* O*K/LV_SUM_SEG segment sums (NULL: K not a multiple of LV_SUM_SEG) */
};

struct lv_fuse_plan {
  int n;
  struct lv_fuse **rec;  /* per optimizer slot, NULL: unfused */
  lv_node **marked;
  int nmarked, capmarked;
  float *ws;             /* lv_linear_adam_step's workspace, ws_floats of it */
  size_t ws_floats;
};

static int enabled = 1;
static int64_t nsteps = 0;
int lv_fuse_set_enabled(int on) { int old = enabled; enabled = on != 0; return old; }
int64_t lv_fuse_steps(void) { return __atomic_load_n(&nsteps, __ATOMIC_RELAXED); }

typedef struct { lv_node *lin, *abs, *sum; } match;

static int full_view(const lv_tensor *t, const lv_tensor *of) {
  return t->st == of->st && t->offset == of->offset && lv_same_shape(t, of);
}

static int graph_holds(const lv_graph *g, const lv_storage *st) {
  return (g->x && g->x->st == st) || (g->y && g->y->st == st) || (g->out && g->out->st == st) ||
         (g->loss && g->loss->st == st);
}

/* the uses of p in g: one Linear weight, optionally abs -> full sum; 0 when anything else */
static int match_param(const lv_graph *g, lv_tensor *p, match *mt) {
  memset(mt, 0, sizeof *mt);
  if (graph_holds(g, p->st)) return 0;
  for (int k = 0; k < g->cap.n; k++) {
    lv_node *nd = g->cap.nodes[k];
    if (nd->out && nd->out->st == p->st) return 0;
    for (int j = 0; j < nd->n_in; j++) {
      lv_tensor *t = nd->in[j];
      if (!t || t->st != p->st) continue;
      if (nd->fuse) return 0; /* claimed for another weight */
      if (lv_node_is_linear(nd) && j == 1 && nd->leaf[1] == p && full_view(t, p) && !mt->lin) mt->lin = nd;
      else if (lv_node_unop(nd) == LV_ABS && j == 0 && nd->leaf[0] == p && full_view(t, p) && !mt->abs) mt->abs = nd;
      else return 0;
    }
  }
  if (!mt->lin) return 0;
  if (!mt->abs) return 1;
  const lv_tensor *ao = mt->abs->out;
  if (graph_holds(g, ao->st)) return 0;
  for (int k = 0; k < g->cap.n; k++) {
    lv_node *nd = g->cap.nodes[k];
    if (nd == mt->abs) continue;
    if (nd->out && nd->out->st == ao->st) return 0;
    for (int j = 0; j < nd->n_in; j++) {
      if (nd->next[j] != mt->abs && !(nd->in[j] && nd->in[j]->st == ao->st)) continue;
      if (mt->sum || nd->fuse || j != 0 || lv_node_redop(nd) != LV_RSUM || nd->next[0] != mt->abs ||
          !full_view(nd->in[0], ao) || lv_numel(nd->out) != 1)
        return 0;
      mt->sum = nd;
    }
  }
  return mt->sum != NULL;
}

static int mark(lv_fuse_plan *pl, lv_node *n, struct lv_fuse *f, int role) {
  if (!n) return 0;
  if (pl->nmarked == pl->capmarked) {
    int cap = pl->capmarked ? 2 * pl->capmarked : 16;
    lv_node **m = realloc(pl->marked, (size_t)cap * sizeof *m);
    if (!m) return lv_set_error(LV_ENOMEM, "out of memory");
    pl->marked = m; pl->capmarked = cap;
  }
  pl->marked[pl->nmarked++] = n;
  n->fuse = f;
  n->fuse_role = role;
  return 0;
}

void lv_fuse_plan_free(lv_fuse_plan *pl) {
  if (!pl) return;
  for (int i = 0; i < pl->nmarked; i++) { pl->marked[i]->fuse = NULL; pl->marked[i]->fuse_role = 0; }
  for (int i = 0; i < pl->n; i++) {
    struct lv_fuse *f = pl->rec[i];
    if (!f) continue;
    lv_tensor_decref(f->gy);
    lv_tensor_decref(f->x);
    free(f->segsum);
    free(f);
  }
  free(pl->rec);
  free(pl->marked);
  free(pl->ws);
  free(pl);
}

int lv_fuse_plan_new(lv_graph *full, lv_graph *rem, lv_adam *a, lv_fuse_plan **out) {
  *out = NULL;
  if (!enabled || lv_on_cuda(full->loss) || (rem && lv_on_cuda(rem->loss))) return 0;
  lv_fuse_plan *pl = NULL;
  for (int i = 0; i < a->n; i++) {
    lv_tensor *p = a->p[i];
    if (p->st->device != LV_CPU || p->dtype != LV_F32 || p->ndim != 2 || !p->requires_grad || p->grad_fn)
      continue;
    int dup = 0;
    for (int j = 0; j < a->n; j++) if (j != i && a->p[j]->st == p->st) dup = 1;
    match mf, mr;
    if (dup || !match_param(full, p, &mf)) continue;
    if (rem && (!match_param(rem, p, &mr) || !mr.abs != !mf.abs)) continue;
    if (!pl) {
      pl = calloc(1, sizeof *pl);
      if (pl) { pl->n = a->n; pl->rec = calloc((size_t)a->n, sizeof *pl->rec); }
      if (!pl || !pl->rec) { free(pl); return lv_set_error(LV_ENOMEM, "out of memory"); }
    }
    struct lv_fuse *f = calloc(1, sizeof *f);
    if (!f) { lv_fuse_plan_free(pl); return lv_set_error(LV_ENOMEM, "out of memory"); }
    pl->rec[i] = f;
    f->slot = i; f->w = p; f->O = p->shape[0]; f->K = p->shape[1];
    if (mf.abs && f->K % LV_SUM_SEG == 0 && f->O * f->K > 0) {
      f->segsum = malloc((size_t)(f->O * f->K / LV_SUM_SEG) * sizeof(double));
      if (!f->segsum) { lv_fuse_plan_free(pl); return lv_set_error(LV_ENOMEM, "out of memory"); }
    }
    if (mark(pl, mf.lin, f, LV_FUSE_LINEAR) || mark(pl, mf.abs, f, LV_FUSE_ABS) || mark(pl, mf.sum, f, LV_FUSE_SUM) ||
        (rem && (mark(pl, mr.lin, f, LV_FUSE_LINEAR) || mark(pl, mr.abs, f, LV_FUSE_ABS) ||
                 mark(pl, mr.sum, f, LV_FUSE_SUM)))) {
      lv_fuse_plan_free(pl);
      return -1;
    }
  }
  *out = pl;
  return 0;
}

int lv_fuse_forward(lv_node *n) {
  struct lv_fuse *f = n->fuse;
  if (n->fuse_role == LV_FUSE_ABS) return 1; /* its only reader, the sum, is given its value */
  if (n->fuse_role != LV_FUSE_SUM) return 0;
  if (!f->sum_ok) {
    double s;
    if (lv_sum_f64(lv_f32(f->w), lv_numel(f->w), 1, &s) < 0) return -1;
    f->sum = (float)s;
    f->sum_ok = 1;
  }
  lv_f32(n->out)[0] = f->sum;
  return 1;
}

void lv_fuse_take_l1(lv_node *n, const lv_tensor *gout) {
  n->fuse->l1g = lv_f32(gout)[0];
  n->fuse->have_l1 = 1;
}

void lv_fuse_take_linear(lv_node *n, lv_tensor *gout) {
  struct lv_fuse *f = n->fuse;
  lv_tensor_incref(gout);
  lv_tensor_decref(f->gy);
  f->gy = gout;
  lv_tensor_incref(n->in[0]);
  lv_tensor_decref(f->x);
  f->x = n->in[0];
}

static const lv_op op_fused_prof = {"Linear+Adam (fused)", NULL, NULL, NULL};

int lv_fuse_step(lv_fuse_plan *pl, int slot, lv_adam *a) {
  struct lv_fuse *f = pl ? pl->rec[slot] : NULL;
  if (!f) return 0;
  if (!f->gy && !f->have_l1) return 1; /* no gradient reached w this step */
  double t0 = lv_profiling() ? lv_prof_now() : 0;
  lv_adam_attr at = {(float)a->lr, (float)a->beta1, (float)a->beta2, (float)a->eps, (float)a->weight_decay,
                     a->step, 0, 0};
  int64_t M = f->x ? lv_numel(f->x) / (f->K ? f->K : 1) : 0;
  size_t need = lv_linear_adam_ws_floats(M);
  if (need > pl->ws_floats) {
    free(pl->ws);
    pl->ws = malloc(need * sizeof(float));
    pl->ws_floats = pl->ws ? need : 0;
    if (!pl->ws) return lv_set_error(LV_ENOMEM, "out of memory");
  }
  double s = NAN;
  int rc = lv_linear_adam_step(f->O, f->K, M, f->gy ? lv_f32(f->gy) : NULL, f->x ? lv_f32(f->x) : NULL,
                               lv_f32(f->w), a->m[slot], a->v[slot], f->have_l1, f->l1g, &at, pl->ws,
                               f->segsum, f->segsum ? &s : NULL);
  lv_tensor_decref(f->gy); f->gy = NULL;
  lv_tensor_decref(f->x); f->x = NULL;
  f->have_l1 = 0;
  f->sum_ok = rc == 0 && !isnan(s);
  f->sum = (float)s;
  if (f->w->grad) f->w->grad_stale = 1;
  __atomic_add_fetch(&nsteps, 1, __ATOMIC_RELAXED);
  if (lv_profiling()) lv_profile_add(&op_fused_prof, 0, lv_prof_now() - t0);
  return rc < 0 ? -1 : 1;
}
