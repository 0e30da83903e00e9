/* CPU backend: the GEMM op nodes. matmul (csrc/ops/linalg.c): (n,k)@(k,m) and batched
 * (B,n,k)@(B|1,k,m) / (B|1,n,k)@(B,k,m); linear (csrc/ops/nn_ops.c): y = x @ w^T + b with in[2]
 * the bias or NULL. Bias gradients are summed in double. */
#include "cpu/cpu_ops.h"
#include "backend.h" /* lv_matmul_dims */
#include "cpu/kernels.h"
#include <stdlib.h>
#include <string.h>

int lv_cpu_matmul_fwd(lv_node *n) {
  lv_matmul_shape S = lv_matmul_shape_of(n);
  int64_t Ba = S.Ba, Bb = S.Bb, B = S.B, N = S.N, K = S.K, M = S.M;
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

int lv_cpu_matmul_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_matmul_shape S = lv_matmul_shape_of(n);
  int64_t Ba = S.Ba, Bb = S.Bb, B = S.B, N = S.N, K = S.K, M = S.M;
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

int lv_cpu_linear_fwd(lv_node *n) {
  lv_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
  int64_t K = w->shape[1], O = w->shape[0], M = O ? lv_numel(n->out) / O : 0;
  float *y = lv_f32(n->out);
  if (K == 0) memset(y, 0, sizeof(float) * (size_t)(M * O));
  else lv_sgemm(0, 1, M, O, K, 1.f, lv_f32(x), K, lv_f32(w), K, 0.f, y, O);
  if (b) {
    const float *bb = lv_f32(b);
#pragma omp parallel for schedule(static) if (M * O > 65536)
    for (int64_t i = 0; i < M; i++)
      for (int64_t o = 0; o < O; o++) y[i * O + o] += bb[o];
  }
  return 0;
}

int lv_cpu_linear_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_tensor *x = n->in[0], *w = n->in[1];
  int64_t K = w->shape[1], O = w->shape[0], M = O ? lv_numel(gout) / O : 0;
  const float *g = lv_f32(gout);
  if (gin[0] && K) lv_sgemm(0, 0, M, K, O, 1.f, g, O, lv_f32(w), K, 1.f, lv_f32(gin[0]), K);
  if (gin[1] && K) lv_sgemm(1, 0, O, K, M, 1.f, g, O, lv_f32(x), K, 1.f, lv_f32(gin[1]), K);
  if (gin[2]) {
    float *gb = lv_f32(gin[2]);
    double *acc = calloc((size_t)(O ? O : 1), sizeof(double));
    if (!acc) return lv_set_error(LV_ENOMEM, "linear backward: out of memory");
    for (int64_t i = 0; i < M; i++)
      for (int64_t o = 0; o < O; o++) acc[o] += g[i * O + o];
    for (int64_t o = 0; o < O; o++) gb[o] += (float)acc[o];
    free(acc);
  }
  return 0;
}

