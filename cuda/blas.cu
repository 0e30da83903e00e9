// matmul on cuBLAS: (n,k)@(k,m) and batched (B,n,k)@(B|1,k,m) / (B|1,n,k)@(B,k,m), same cases
// as csrc/ops/linalg.c. TF32 is off unless lviv_c.backends.cuda.matmul.allow_tf32 is set (the
// core's matmul_allow_tf32 switch, read at every call). One stream and one handle: cuBLAS gives
// the same bits on every run on the same GPU model. Threads: blas_mu over the handle and its math
// mode, held while a GEMM is queued (common.cuh).
#include <cublas_v2.h>
#include <climits>
#include "common.cuh"

namespace lvc {

static std::mutex blas_mu;
static cublasHandle_t handle = nullptr;

static const char *cublas_str(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}
#define CB(call, what)                                                           \
  do {                                                                           \
    cublasStatus_t s_ = (call);                                                  \
    if (s_ != CUBLAS_STATUS_SUCCESS) return lib_fail("cuBLAS " what, cublas_str(s_)); \
  } while (0)

// blas_mu held
static int get_handle() {
  if (init() < 0) return -1;
  if (!handle) {
    CB(cublasCreate(&handle), "create");
    cublasStatus_t st = cublasSetStream(handle, stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(handle);
      handle = nullptr;
      return lib_fail("cuBLAS set stream", cublas_str(st));
    }
  }
  // pedantic FP32 unless TF32 was allowed (CUBLAS_DEFAULT_MATH never uses TF32 either, but
  // pedantic also rules out reduced-precision reductions)
  CB(cublasSetMathMode(handle, flags().matmul_allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH),
     "math mode");
  return 0;
}

static bool fits(int64_t v) { return v >= 0 && v <= INT_MAX; }

// row-major C(M,N) = alpha op(A) op(B) + beta C  ==  column-major C^T = op(B)^T op(A)^T
int sgemm_rm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M == 0 || N == 0) return 0;
  if (!fits(M) || !fits(N) || !fits(K) || !fits(lda) || !fits(ldb) || !fits(ldc))
    return fail(LVC_EVALUE, "matmul: dimensions exceed the 32-bit limit of cuBLAS");
  std::lock_guard<std::mutex> lk(blas_mu);
  if (get_handle() < 0) return -1;
  CB(cublasSgemm(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
                 (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc),
     "sgemm");
  LVC_LAUNCHED("matmul (cuBLAS sgemm)");
  return 0;
}

static int sgemm_batched(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                         int64_t sA, const float *B, int64_t ldb, int64_t sB, float beta, float *C,
                         int64_t ldc, int64_t sC, int64_t batch) {
  if (M == 0 || N == 0 || batch == 0) return 0;
  if (!fits(M) || !fits(N) || !fits(K) || !fits(batch))
    return fail(LVC_EVALUE, "matmul: dimensions exceed the 32-bit limit of cuBLAS");
  std::lock_guard<std::mutex> lk(blas_mu);
  if (get_handle() < 0) return -1;
  float alpha = 1.f;
  CB(cublasSgemmStridedBatched(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               (int)N, (int)M, (int)K, &alpha, B, (int)ldb, sB, A, (int)lda, sA, &beta, C,
                               (int)ldc, sC, (int)batch),
     "sgemm batched");
  LVC_LAUNCHED("matmul (cuBLAS batched sgemm)");
  return 0;
}

int matmul_fwd(lv_node *n) {
  lv_matmul_shape S = lv_matmul_shape_of(n);
  int64_t Ba = S.Ba, Bb = S.Bb, B = S.B, N = S.N, K = S.K, M = S.M;
  const float *A = lv_f32(n->in[0]), *Bm = lv_f32(n->in[1]);
  float *C = lv_f32(n->out);
  if (K == 0) {  // empty inner dimension: zeros, like the CPU GEMM with beta 0
    LVC_CHECK(cudaMemsetAsync(C, 0, (size_t)(B * N * M) * sizeof(float), stream), "matmul");
    return 0;
  }
  if (Bb == 1) return sgemm_rm(0, 0, Ba * N, M, K, 1.f, A, K, Bm, M, 0.f, C, M);  // fold the batch into rows
  return sgemm_batched(0, 0, N, M, K, A, K, Ba > 1 ? N * K : 0, Bm, M, K * M, 0.f, C, M, N * M, B);
}

int matmul_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  lv_matmul_shape S = lv_matmul_shape_of(n);
  int64_t Ba = S.Ba, Bb = S.Bb, B = S.B, N = S.N, K = S.K, M = S.M;
  const float *A = lv_f32(n->in[0]), *Bm = lv_f32(n->in[1]), *G = lv_f32(gout);
  if (M == 0) return 0;
  if (gin[0]) {  // dA += G @ B^T
    float *dA = lv_f32(gin[0]);
    if (Bb == 1) { if (sgemm_rm(0, 1, Ba * N, K, M, 1.f, G, M, Bm, M, 1.f, dA, K) < 0) return -1; }
    else if (Ba > 1) { if (sgemm_batched(0, 1, N, K, M, G, M, N * M, Bm, M, K * M, 1.f, dA, K, N * K, B) < 0) return -1; }
    else {  // A broadcast over the batch: sum the per-batch products (sequential, deterministic)
      for (int64_t b = 0; b < B; b++)
        if (sgemm_rm(0, 1, N, K, M, 1.f, G + b * N * M, M, Bm + b * K * M, M, 1.f, dA, K) < 0) return -1;
    }
  }
  if (gin[1]) {  // dB += A^T @ G
    float *dB = lv_f32(gin[1]);
    if (Bb == 1) { if (sgemm_rm(1, 0, K, M, Ba * N, 1.f, A, K, G, M, 1.f, dB, M) < 0) return -1; }
    else if (Ba > 1) { if (sgemm_batched(1, 0, K, M, N, A, K, N * K, G, M, N * M, 1.f, dB, M, K * M, B) < 0) return -1; }
    else {
      if (sgemm_batched(1, 0, K, M, N, A, K, 0, G, M, N * M, 1.f, dB, M, K * M, B) < 0) return -1;
    }
  }
  return 0;
}

void blas_release() {
  std::lock_guard<std::mutex> lk(blas_mu);
  if (handle) cublasDestroy(handle);
  handle = nullptr;
}

}  // namespace lvc
