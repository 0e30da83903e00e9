/* GEMM through OpenBLAS (scipy-openblas32: DYNAMIC_ARCH picks the kernels for the CPU at run
 * time). One thread pool only: OpenBLAS runs single-threaded and lv_sgemm splits large products
 * over the OpenMP threads, so OpenBLAS's and OpenMP's spinning workers never fight over cores. */
#include "cpu/kernels.h"
#include <omp.h>
#include <cblas.h>

static int blas_ready = 0;

static void blas_init(void) {
  if (!blas_ready) {
    scipy_openblas_set_num_threads(1);
    blas_ready = 1;
  }
}

static void gemm1(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void lv_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  blas_init();
  int T = omp_in_parallel() ? 1 : omp_get_max_threads();
  double work = (double)M * (double)N * (double)K;
  if (T <= 1 || work < 2e6) { gemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); return; }
  int splitN = N >= M;
  int64_t len = splitN ? N : M;
  int64_t align = 16;
  int64_t chunk = ((len + T - 1) / T + align - 1) / align * align;
  if (chunk < align) chunk = align;
#pragma omp parallel num_threads(T)
  {
    int t = omp_get_thread_num();
    int64_t s = t * chunk, e = s + chunk < len ? s + chunk : len;
    if (s < e) {
      if (splitN)
        gemm1(ta, tb, M, e - s, K, alpha, A, lda, tb ? B + s * ldb : B + s, ldb, beta, C + s, ldc);
      else
        gemm1(ta, tb, e - s, N, K, alpha, ta ? A + s : A + s * lda, lda, B, ldb, beta, C + s * ldc, ldc);
    }
  }
}

int lv_num_threads(void) { return omp_get_max_threads(); }
