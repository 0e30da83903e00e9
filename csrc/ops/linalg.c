/* matmul through the GEMM: (n,k)@(k,m) and batched (B,n,k)@(B|1,k,m) / (B|1,n,k)@(B,k,m). */
#include "ops/ops.h"
#include "cuda_dispatch.h"
#include <string.h>

static void dims3(const lv_tensor *t, int64_t *B, int64_t *r, int64_t *c) {
  if (t->ndim == 2) { *B = 1; *r = t->shape[0]; *c = t->shape[1]; }
  else { *B = t->shape[0]; *r = t->shape[1]; *c = t->shape[2]; }
}

static int mm_fwd(lv_node *n) {
  if (lv_on_cuda(n->out)) return lv_cuda->matmul_fwd(n);
  int64_t Ba, N, K, Bb, K2, M;
  dims3(n->in[0], &Ba, &N, &K);
  dims3(n->in[1], &Bb, &K2, &M);
  int64_t B = Ba > Bb ? Ba : Bb;
  const float *A = lv_f32(n->in[0]), *Bm = lv_f32(n->in[1]);
  float *C = lv_f32(n->out);
  if (Bb == 1 && Ba > 1) { /* fold the batch into rows */
    lv_sgemm(0, 0, Ba * N, M, K, 1.f, A, K, Bm, M, 0.f, C, M);
    return 0;
  }
  for (int64_t b = 0; b < B; b++)
    lv_sgemm(0, 0, N, M, K, 1.f, A + (Ba > 1 ? b * N * K : 0), K, Bm + (Bb > 1 ? b * K * M : 0), M, 0.f,
             C + b * N * M, M);
  return 0;
}

static int mm_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (lv_on_cuda(gout)) return lv_cuda->matmul_bwd(n, gout, gin);
  int64_t Ba, N, K, Bb, K2, M;
  dims3(n->in[0], &Ba, &N, &K);
  dims3(n->in[1], &Bb, &K2, &M);
  int64_t B = Ba > Bb ? Ba : Bb;
  const float *A = lv_f32(n->in[0]), *Bm = lv_f32(n->in[1]), *G = lv_f32(gout);
  if (gin[0]) { /* dA = G @ B^T */
    float *dA = lv_f32(gin[0]);
    if (Bb == 1 && Ba > 1) lv_sgemm(0, 1, Ba * N, K, M, 1.f, G, M, Bm, M, 1.f, dA, K);
    else
      for (int64_t b = 0; b < B; b++)
        lv_sgemm(0, 1, N, K, M, 1.f, G + b * N * M, M, Bm + (Bb > 1 ? b * K * M : 0), M, 1.f,
                 dA + (Ba > 1 ? b * N * K : 0), K);
  }
  if (gin[1]) { /* dB = A^T @ G */
    float *dB = lv_f32(gin[1]);
    if (Bb == 1 && Ba > 1) lv_sgemm(1, 0, K, M, Ba * N, 1.f, A, K, G, M, 1.f, dB, M);
    else
      for (int64_t b = 0; b < B; b++)
        lv_sgemm(1, 0, K, M, N, 1.f, A + (Ba > 1 ? b * N * K : 0), K, G + b * N * M, M, 1.f,
                 dB + (Bb > 1 ? b * K * M : 0), M);
  }
  return 0;
}

static const lv_op op_mm = {"matmul", mm_fwd, mm_bwd, NULL};

lv_tensor *lv_matmul(lv_tensor *a, lv_tensor *b) {
  char s1[96], s2[96];
  if (a->dtype != LV_F32 || b->dtype != LV_F32) { lv_set_error(LV_ETYPE, "matmul: expected float32 tensors"); return NULL; }
  if (a->st->device != b->st->device) { lv_set_error(LV_EVALUE, "matmul: expected both tensors on the same device, got %s and %s", a->st->device ? "cuda" : "cpu", b->st->device ? "cuda" : "cpu"); return NULL; }
  if (a->ndim < 2 || a->ndim > 3 || b->ndim < 2 || b->ndim > 3) {
    lv_set_error(LV_EVALUE, "matmul: expected 2-d or 3-d tensors, got %s and %s", lv_shape_str(a, s1, sizeof s1), lv_shape_str(b, s2, sizeof s2));
    return NULL;
  }
  int64_t Ba, N, K, Bb, K2, M;
  dims3(a, &Ba, &N, &K);
  dims3(b, &Bb, &K2, &M);
  if (K != K2 || (Ba != Bb && Ba != 1 && Bb != 1)) {
    lv_set_error(LV_EVALUE, "matmul: shapes %s and %s cannot be multiplied (%lldx%lld and %lldx%lld)",
                 lv_shape_str(a, s1, sizeof s1), lv_shape_str(b, s2, sizeof s2), (long long)N, (long long)K,
                 (long long)K2, (long long)M);
    return NULL;
  }
  lv_tensor *in[2] = {a, b};
  lv_node *n = lv_node_new(&op_mm, 2, in);
  if (!n) return NULL;
  int64_t shape[3];
  if (a->ndim == 2 && b->ndim == 2) { shape[0] = N; shape[1] = M; return lv_node_finish(n, 2, shape, LV_F32); }
  shape[0] = Ba > Bb ? Ba : Bb; shape[1] = N; shape[2] = M;
  return lv_node_finish(n, 3, shape, LV_F32);
}
