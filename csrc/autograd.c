/* Reverse-mode autograd: nodes, the backward pass, and graph capture/replay. */
#include "lv.h"
#include "backend.h"
#include "fuse.h"
#include <stdlib.h>
#include <string.h>

#include <time.h>
static _Thread_local int grad_enabled = 1;
static int profiling = 0;
static double prof_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
void prof_add(const struct lv_op *op, double f, double b);
static const lv_op op_zero = {"zero-grad", NULL, NULL, NULL};
int lv_grad_enabled(void) { return grad_enabled; }
void lv_set_grad_enabled(int on) { grad_enabled = on; }

static _Thread_local lv_capture *recording = NULL;
int lv_capture_active(void) { return recording != NULL; }
lv_capture *lv_capture_current(void) { return recording; }

int lv_needs_grad(int n_in, lv_tensor **in) {
  if (!grad_enabled) return 0;
  for (int i = 0; i < n_in; i++)
    if (in[i] && (in[i]->requires_grad)) return 1;
  return 0;
}

lv_node *lv_node_new(const lv_op *op, int n_in, lv_tensor **in) {
  lv_node *n = calloc(1, sizeof *n);
  if (!n) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  n->refcount = 1;
  n->op = op;
  n->n_in = n_in;
  n->orig = in;
  for (int i = 0; i < n_in; i++) {
    if (!in[i]) continue;
    n->in[i] = lv_tensor_detach(in[i]);
    if (!n->in[i]) { lv_node_decref(n); return NULL; }
  }
  return n;
}

static void link_inputs(lv_node *n, lv_tensor **orig) {
  for (int i = 0; i < n->n_in; i++) {
    lv_tensor *t = orig[i];
    if (!t || !t->requires_grad) continue;
    if (t->grad_fn) { n->next[i] = t->grad_fn; __atomic_add_fetch(&t->grad_fn->refcount, 1, __ATOMIC_RELAXED); }
    else { n->leaf[i] = t; lv_tensor_incref(t); }
  }
}

void lv_node_decref(lv_node *n) {
  if (!n) return;
  if (__atomic_sub_fetch(&n->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (n->op && n->op->destroy) n->op->destroy(n);
  for (int i = 0; i < LV_MAXIN; i++) {
    lv_tensor_decref(n->in[i]);
    lv_tensor_decref(n->leaf[i]);
    if (n->next[i]) lv_node_decref(n->next[i]);
  }
  for (int i = 0; i < LV_MAXAUX; i++) lv_tensor_decref(n->aux[i]);
  for (int i = 0; i < LV_MAXIN; i++) lv_tensor_decref(n->gbuf[i]);
  lv_tensor_decref(n->out);
  lv_tensor_decref(n->gacc);
  free(n);
}


lv_tensor *lv_node_finish(lv_node *n, int ndim, const int64_t *shape, int dtype) {
  int device = LV_CPU;
  for (int i = 0; i < n->n_in; i++) if (n->in[i]) { device = n->in[i]->st->device; break; }
  lv_tensor *out = lv_tensor_new(ndim, shape, dtype, device, 0);
  if (!out) { lv_node_decref(n); return NULL; }
  return lv_node_finish_out(n, out);
}

lv_tensor *lv_node_finish_out(lv_node *n, lv_tensor *out) {
  int dtype = out->dtype;
  n->out = lv_tensor_detach(out);
  if (!n->out) { lv_tensor_decref(out); lv_node_decref(n); return NULL; }
  if (n->op->forward(n) < 0) { lv_tensor_decref(out); lv_node_decref(n); return NULL; }
  lv_tensor **orig = n->orig;
  n->orig = NULL;
  int need = 0;
  if (grad_enabled && orig)
    for (int i = 0; i < n->n_in; i++) if (orig[i] && orig[i]->requires_grad) need = 1;
  if (need && dtype == LV_F32) {
    link_inputs(n, orig);
    out->requires_grad = 1;
    out->grad_fn = n;
    n->refcount++;
  }
  if (recording) {
    if (recording->n == recording->cap) {
      int cap = recording->cap ? recording->cap * 2 : 64;
      lv_node **p = realloc(recording->nodes, cap * sizeof *p);
      if (!p) { lv_tensor_decref(out); lv_node_decref(n); lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
      recording->nodes = p; recording->cap = cap;
    }
    recording->nodes[recording->n++] = n;
    n->refcount++;
  }
  lv_node_decref(n);
  return out;
}

/* ---- backward ---- */
typedef struct { lv_node **v; int n, cap; } nodevec;
static int push(nodevec *s, lv_node *x) {
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 64;
    lv_node **p = realloc(s->v, cap * sizeof *p);
    if (!p) return lv_set_error(LV_ENOMEM, "out of memory in backward");
    s->v = p; s->cap = cap;
  }
  s->v[s->n++] = x;
  return 0;
}

static int accumulate(lv_tensor **dst, lv_tensor *g) {
  if (!*dst) { lv_tensor_incref(g); *dst = g; return 0; }
  return lv_backend_of(*dst)->add_into(lv_f32(*dst), lv_f32(g), lv_numel(g));
}

/* leaf gradients accumulate into a fresh tensor, never into one that a user holds as a result */
static int accumulate_leaf(lv_tensor *leaf, lv_tensor *g) {
  if (!leaf->grad) {
    lv_tensor *c = lv_tensor_new_like(leaf, 0);
    if (!c) return -1;
    if (lv_copy_bytes(lv_data(c), c->st->device, lv_data(g), g->st->device,
                      lv_numel(g) * sizeof(float)) < 0) { lv_tensor_decref(c); return -1; }
    leaf->grad = c;
    return 0;
  }
  return lv_backend_of(leaf->grad)->add_into(lv_f32(leaf->grad), lv_f32(g), lv_numel(g));
}

/* C callers (the training and analysis loops) replay captured graphs and run backward through
 * them again and again: they retain the graph */
int lv_backward(lv_tensor *root, lv_tensor *grad) { return lv_backward_ex(root, grad, 1); }

int lv_backward_ex(lv_tensor *root, lv_tensor *grad, int retain_graph) {
  if (!root->requires_grad)
    return lv_set_error(LV_ERUNTIME, "element 0 of tensors does not require grad and does not have a grad_fn");
  lv_tensor *g0;
  if (grad) {
    if (!lv_same_shape(grad, root)) {
      char a[96], b[96];
      return lv_set_error(LV_EVALUE, "backward: gradient has shape %s, the tensor has shape %s",
                          lv_shape_str(grad, a, sizeof a), lv_shape_str(root, b, sizeof b));
    }
    if (grad->st->device != root->st->device)
      return lv_set_error(LV_EVALUE, "backward: gradient is on %s, the tensor on %s",
                          grad->st->device ? "cuda" : "cpu", root->st->device ? "cuda" : "cpu");
    g0 = lv_tensor_new_like(root, 0);
    if (!g0) return -1;
    if (lv_copy_bytes(lv_data(g0), g0->st->device, lv_data(grad), grad->st->device,
                      lv_numel(root) * lv_dtype_size(root->dtype)) < 0) { lv_tensor_decref(g0); return -1; }
  } else {
    if (lv_numel(root) != 1)
      return lv_set_error(LV_ERUNTIME, "grad can be implicitly created only for scalar outputs");
    g0 = lv_tensor_new_like(root, 0);
    if (!g0) return -1;
    if (lv_backend_of(g0)->fill_f32(lv_f32(g0), 1.f, 1) < 0) { lv_tensor_decref(g0); return -1; }
  }
  if (!root->grad_fn) { int r = accumulate_leaf(root, g0); lv_tensor_decref(g0); return r; }

  /* topological order by iterative DFS (post-order) */
  nodevec order = {0}, stack = {0};
  int rc = 0;
  static _Thread_local int mark_gen = 0;
  int gen = ++mark_gen;
  if (push(&stack, root->grad_fn) < 0) { lv_tensor_decref(g0); return -1; }
  /* two-phase marks: gen*2 = visiting, gen*2+1 = done */
  while (stack.n) {
    lv_node *x = stack.v[stack.n - 1];
    if (x->topo_mark == gen * 2 + 1) { stack.n--; continue; }
    if (x->topo_mark != gen * 2) {
      x->topo_mark = gen * 2;
      for (int i = 0; i < x->n_in; i++)
        if (x->next[i] && x->next[i]->topo_mark != gen * 2 + 1 && x->next[i]->topo_mark != gen * 2)
          if (push(&stack, x->next[i]) < 0) { rc = -1; goto done; }
    } else {
      x->topo_mark = gen * 2 + 1;
      stack.n--;
      if (push(&order, x) < 0) { rc = -1; goto done; }
    }
  }
  for (int k = 0; k < order.n; k++)
    if (order.v[k]->freed) {
      rc = lv_set_error(LV_ERUNTIME, "Trying to backward through the graph a second time (or "
                        "directly access saved tensors after they have already been freed). "
                        "Specify retain_graph=True if you need to backward through the graph a "
                        "second time");
      goto done;
    }
  root->grad_fn->gacc = g0;
  g0 = NULL;
  for (int k = order.n - 1; k >= 0; k--) {
    lv_node *x = order.v[k];
    lv_tensor *gout = x->gacc;
    if (!gout) continue;
    /* a fused weight update (csrc/fuse.c) takes the L1 sum's gradient here and does the abs
     * backward itself, and computes the Linear's weight gradient in the optimizer step */
    int role = x->fuse ? x->fuse_role : 0;
    if (role == LV_FUSE_SUM) {
      lv_fuse_take_l1(x, gout);
      lv_tensor_decref(x->gacc);
      x->gacc = NULL;
      continue;
    }
    if (role == LV_FUSE_LINEAR && x->gbuf[1]) { lv_tensor_decref(x->gbuf[1]); x->gbuf[1] = NULL; }
    lv_tensor *gin[LV_MAXIN] = {0};
    for (int i = 0; i < x->n_in; i++)
      if ((x->next[i] || x->leaf[i]) && !(role == LV_FUSE_LINEAR && i == 1)) {
        /* reuse the buffer of the previous backward when nobody else holds it */
        lv_tensor *b = x->gbuf[i];
        if (b && b->refcount == 1 && lv_same_shape(b, x->in[i])) {
          double tz = profiling ? prof_now() : 0;
          if (lv_backend_of(b)->memset0(lv_data(b), (size_t)lv_numel(b) * sizeof(float)) < 0) { rc = -1; break; }
          if (profiling) prof_add(&op_zero, 0, prof_now() - tz);
        } else {
          lv_tensor_decref(b);
          b = x->gbuf[i] = lv_tensor_new_like(x->in[i], 1);
          if (!b) { rc = -1; break; }
        }
        gin[i] = b;
        lv_tensor_incref(b);
      }
    double t0 = profiling ? prof_now() : 0;
    if (rc == 0 && x->op->backward(x, gout, gin) < 0) rc = -1;
    if (rc == 0 && role == LV_FUSE_LINEAR) lv_fuse_take_linear(x, gout);
    if (profiling) prof_add(x->op, 0, prof_now() - t0);
    for (int i = 0; i < x->n_in && rc == 0; i++) {
      if (!gin[i]) continue;
      if (x->next[i]) rc = accumulate(&x->next[i]->gacc, gin[i]);
      else if (x->leaf[i]) {
        lv_tensor *leaf = x->leaf[i];
        /* hand the fresh buffer to the leaf instead of copying it when the leaf's gradient is
         * absent or stale and nobody else holds either buffer */
        if (gin[i] == x->gbuf[i] && gin[i]->refcount == 2 && lv_same_shape(gin[i], leaf) &&
            (!leaf->grad || (leaf->grad_stale && leaf->grad->refcount == 1 && lv_same_shape(leaf->grad, leaf)))) {
          lv_tensor *old = leaf->grad;
          leaf->grad = x->gbuf[i];   /* the node's reference moves to the leaf */
          x->gbuf[i] = old;          /* the stale buffer is zeroed before its next use */
          leaf->grad_stale = 0;
        } else if (leaf->grad_stale && leaf->grad) {
          if (lv_backend_of(leaf->grad)->memcpy_d2d(lv_data(leaf->grad), lv_data(gin[i]),
                                                    (size_t)lv_numel(gin[i]) * sizeof(float)) < 0) { rc = -1; break; }
          leaf->grad_stale = 0;
        } else {
          rc = accumulate_leaf(leaf, gin[i]);
        }
      }
    }
    for (int i = 0; i < x->n_in; i++) lv_tensor_decref(gin[i]);
    lv_tensor_decref(x->gacc);
    x->gacc = NULL;
    if (rc) break;
  }
  if (rc == 0 && !retain_graph)
    for (int k = 0; k < order.n; k++) order.v[k]->freed = 1;
done:
  for (int k = 0; k < order.n; k++) { lv_tensor_decref(order.v[k]->gacc); order.v[k]->gacc = NULL; }
  lv_tensor_decref(g0);
  free(order.v); free(stack.v);
  return rc;
}

/* ---- capture / replay ---- */
void lv_capture_begin(lv_capture *c) { memset(c, 0, sizeof *c); recording = c; }
void lv_capture_end(void) { recording = NULL; }
void lv_capture_free(lv_capture *c) {
  for (int i = 0; i < c->n; i++) lv_node_decref(c->nodes[i]);
  free(c->nodes);
  memset(c, 0, sizeof *c);
}
int lv_capture_replay(lv_capture *c) {
  for (int i = 0; i < c->n; i++) {
    double t0 = profiling ? prof_now() : 0;
    int done = c->nodes[i]->fuse ? lv_fuse_forward(c->nodes[i]) : 0; /* csrc/fuse.c */
    if (done < 0) return -1;
    if (!done && c->nodes[i]->op->forward(c->nodes[i]) < 0) return -1;
    c->nodes[i]->freed = 0;   /* a fresh forward: the graph can be backpropagated again */
    if (profiling) prof_add(c->nodes[i]->op, prof_now() - t0, 0);
  }
  return 0;
}

/* ---- profiling ---- */
#define PROF_MAX 64
static struct { const lv_op *op; double f, b; int64_t calls; } prof[PROF_MAX];
static int nprof = 0;
int lv_profiling(void) { return profiling; }
double lv_prof_now(void) { return prof_now(); }
void lv_profile_add(const lv_op *op, double f, double b) { prof_add(op, f, b); }
void lv_profile_enable(int on) {
  profiling = on;
  if (on) { nprof = 0; memset(prof, 0, sizeof prof); }
}
int lv_profile_get(int i, const char **name, double *fwd_s, double *bwd_s, int64_t *calls) {
  if (i < 0 || i >= nprof) return 0;
  *name = prof[i].op->name; *fwd_s = prof[i].f; *bwd_s = prof[i].b; *calls = prof[i].calls;
  return 1;
}
void prof_add(const lv_op *op, double f, double b) {
  int i = 0;
  while (i < nprof && prof[i].op != op) i++;
  if (i == nprof) { if (nprof == PROF_MAX) return; prof[nprof++].op = op; }
  prof[i].f += f; prof[i].b += b;
  if (f > 0) prof[i].calls++;
}
