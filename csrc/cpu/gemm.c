/* GEMM through OpenBLAS (scipy-openblas32: DYNAMIC_ARCH picks the kernels for the CPU at run time) */
#include "lv.h"
#include <omp.h>
#include <cblas.h>

void lv_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

int lv_num_threads(void) { return omp_get_max_threads(); }
