/* lviv_c C core: tensors, storage, autograd nodes (errors and random numbers: base.h). No
 * Python.h here. */
#ifndef LV_H
#define LV_H
#include <stddef.h>
#include <stdint.h>
#include "base.h"   /* errors, random numbers */
#include "opdef.h" /* LV_MAXDIM, op codes, typed op attributes */

#define LV_MAXIN 4
#define LV_MAXAUX 4

typedef enum { LV_F32 = 0, LV_I64 = 1 } lv_dtype;
typedef enum { LV_CPU = 0, LV_CUDA = 1 } lv_device;

/* ---- storage: a refcounted buffer; release() frees foreign memory (e.g. a NumPy array) ---- */
typedef struct lv_storage {
  long refcount;
  void *data;
  size_t nbytes;
  int device;
  void (*release)(void *ctx, void *data); /* NULL: free() / device free */
  void *ctx;
} lv_storage;

lv_storage *lv_storage_new(size_t nbytes, int device, int zero);
lv_storage *lv_storage_wrap(void *data, size_t nbytes, int device,
                            void (*release)(void *, void *), void *ctx);
void lv_storage_incref(lv_storage *s);
void lv_storage_decref(lv_storage *s);

struct lv_node;

/* ---- tensor: contiguous, row-major, shares storage with its views ---- */
typedef struct lv_tensor {
  long refcount;
  lv_storage *st;
  size_t offset; /* bytes into st->data */
  int ndim;
  int64_t shape[LV_MAXDIM];
  int dtype;
  int requires_grad;
  struct lv_tensor *grad;   /* accumulated gradient (leaf tensors) */
  struct lv_node *grad_fn;  /* node that produced it (non-leaf) */
  int grad_stale;           /* grad holds an old step's values: the next backward overwrites it
                               (an optimizer step sets this instead of zeroing) */
} lv_tensor;

static inline void *lv_data(const lv_tensor *t) { return (char *)t->st->data + t->offset; }
static inline float *lv_f32(const lv_tensor *t) { return (float *)lv_data(t); }
static inline int64_t *lv_i64(const lv_tensor *t) { return (int64_t *)lv_data(t); }
int64_t lv_numel(const lv_tensor *t);
size_t lv_dtype_size(int dtype);

lv_tensor *lv_tensor_new(int ndim, const int64_t *shape, int dtype, int device, int zero);
lv_tensor *lv_tensor_new_like(const lv_tensor *t, int zero);
lv_tensor *lv_tensor_view(lv_tensor *t, int ndim, const int64_t *shape, size_t offset_bytes);
lv_tensor *lv_tensor_detach(lv_tensor *t); /* shares storage, no grad_fn, no grad */
void lv_tensor_incref(lv_tensor *t);
void lv_tensor_decref(lv_tensor *t);
int lv_same_shape(const lv_tensor *a, const lv_tensor *b);
/* "(60, 1, 36, 64)" into buf; returns buf */
const char *lv_shape_str(const lv_tensor *t, char *buf, size_t n);
const char *lv_shape_str2(int ndim, const int64_t *shape, char *buf, size_t n);

/* ---- autograd ----
 * Every op is a node: forward() computes node->out from node->in; backward() computes input
 * gradients from the output gradient. Eager calls run forward once; a captured graph replays
 * the same nodes in order (training loop, evaluation, MEI), writing into the same buffers. */
typedef struct lv_node {
  long refcount;
  const struct lv_op *op;
  int n_in;
  lv_tensor *in[LV_MAXIN];          /* detached views of the inputs (share storage) */
  struct lv_node *next[LV_MAXIN];   /* grad_fn of input i, or NULL */
  lv_tensor *leaf[LV_MAXIN];        /* input i if it is a leaf that requires grad, else NULL */
  lv_tensor *out;                   /* detached view of the output */
  lv_tensor *aux[LV_MAXAUX];        /* op-owned saved buffers (batch stats, masks, ...) */
  int64_t ia[12];                   /* integer attributes */
  double fa[6];                     /* float attributes */
  void *extra;                      /* op-owned, freed by op->destroy */
  lv_tensor *gacc;                  /* gradient accumulator during backward */
  lv_tensor *gbuf[LV_MAXIN];        /* input-gradient buffers kept for the next backward */
  int topo_mark;
  int freed;                        /* a backward without retain_graph went through this node */
  lv_tensor **orig;                 /* the caller's inputs, valid only until lv_node_finish */
  struct lv_fuse *fuse;             /* set only while a C training loop fuses this node's weight
                                       update (csrc/fuse.c); fuse_role says which part it is */
  int fuse_role;
} lv_node;

typedef struct lv_op {
  const char *name;
  int (*forward)(lv_node *n);
  /* gin[i] is NULL when input i needs no gradient; else a zeroed tensor shaped like in[i]
   * into which backward writes (adds) the gradient. */
  int (*backward)(lv_node *n, lv_tensor *gout, lv_tensor **gin);
  void (*destroy)(lv_node *n); /* may be NULL */
} lv_op;

int lv_grad_enabled(void);
void lv_set_grad_enabled(int on);

/* Create a node for op with inputs (their refcounts are not taken: detached views are made),
 * allocate the output of the given shape, run forward, and attach the node to the output when
 * gradients are needed (or when a capture is recording). Returns the output (new reference). */
lv_node *lv_node_new(const lv_op *op, int n_in, lv_tensor **in);
lv_tensor *lv_node_finish(lv_node *n, int ndim, const int64_t *shape, int dtype);
/* the same with an output the caller made (e.g. a view sharing the input's storage) */
lv_tensor *lv_node_finish_out(lv_node *n, lv_tensor *out);
void lv_node_decref(lv_node *n);
int lv_needs_grad(int n_in, lv_tensor **in);

int lv_backward(lv_tensor *root, lv_tensor *grad /* NULL: ones for scalars */);
/* as PyTorch: without retain_graph the graph is spent (a second backward through it raises) */
int lv_backward_ex(lv_tensor *root, lv_tensor *grad, int retain_graph);

/* per-op timing of forward replays and backward passes (for bench/: time outside kernels) */
void lv_profile_enable(int on);
int lv_profiling(void);
double lv_prof_now(void);
void lv_profile_add(const struct lv_op *op, double fwd_s, double bwd_s);
int lv_profile_get(int i, const char **name, double *fwd_s, double *bwd_s, int64_t *calls);

/* capture: while recording, every node created is appended to the list (new reference) */
typedef struct lv_capture {
  lv_node **nodes;
  int n, cap;
} lv_capture;
void lv_capture_begin(lv_capture *c);
void lv_capture_end(void);
void lv_capture_free(lv_capture *c);
int lv_capture_replay(lv_capture *c);
int lv_capture_active(void);
/* the capture being recorded on this thread (the one place that holds it), or NULL */
lv_capture *lv_capture_current(void);

#endif
