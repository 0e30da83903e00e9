/* matmul through the GEMM: (n,k)@(k,m) and batched (B,n,k)@(B|1,k,m) / (B|1,n,k)@(B,k,m). */
#include "ops/ops.h"
#include "backend.h"
#include <string.h>

static int mm_fwd(lv_node *n) { return lv_backend_of(n->out)->matmul_fwd(n); }
static int mm_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  return lv_backend_of(gout)->matmul_bwd(n, gout, gin);
}

static const lv_op op_mm = {"matmul", mm_fwd, mm_bwd, NULL};

lv_tensor *lv_matmul(lv_tensor *a, lv_tensor *b) {
  char s1[96], s2[96];
  if (a->dtype != LV_F32 || b->dtype != LV_F32) { lv_set_error(LV_ETYPE, "matmul: expected float32 tensors"); return NULL; }
  lv_tensor *both[2] = {a, b};
  if (lv_check_devices("matmul", both, NULL, 2) < 0) return NULL;
  if (a->ndim < 2 || a->ndim > 3 || b->ndim < 2 || b->ndim > 3) {
    lv_set_error(LV_EVALUE, "matmul: expected 2-d or 3-d tensors, got %s and %s", lv_shape_str(a, s1, sizeof s1), lv_shape_str(b, s2, sizeof s2));
    return NULL;
  }
  int64_t Ba, N, K, Bb, K2, M;
  lv_matmul_dims(a, &Ba, &N, &K);
  lv_matmul_dims(b, &Bb, &K2, &M);
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
