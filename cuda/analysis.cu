// The CUDA entries of input optimisation and gradient RFs (csrc/analysis.c; semantics in
// csrc/backend.h, the CPU's in csrc/cpu/optin.c): picking/placing one neuron per row, the
// separable Gaussian blur of the gradient, the momentum step with clipping and the per-image L2
// renormalisation, all on the stream, so a model on the GPU is analysed without host copies.
#include "common.cuh"

namespace lvc {

namespace {
constexpr int kMaxTaps = 1025;  // r <= 512: far beyond any useful blur of an image
__constant__ float c_taps[kMaxTaps];

__global__ void k_index_cols(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put) {
  LVC_GRID_STRIDE(k, K) {
    if (put) mat[k * N + idx[k]] = vec[k];
    else vec[k] = mat[k * N + idx[k]];
  }
}

__global__ void k_blur_rows(int64_t total, int64_t W, int r, const float *g, float *t) {
  LVC_GRID_STRIDE(i, total) {
    int64_t x = i % W, row = i - x;
    float a = 0.f;
    for (int j = -r; j <= r; j++) {
      int64_t q = x + j;
      if (q >= 0 && q < W) a += c_taps[j + r] * g[row + q];
    }
    t[i] = a;
  }
}

__global__ void k_blur_cols(int64_t total, int64_t H, int64_t W, int r, const float *t, float *g) {
  LVC_GRID_STRIDE(i, total) {
    int64_t y = (i / W) % H, base = i - y * W;  // base: (plane, row 0, this column)
    float a = 0.f;
    for (int j = -r; j <= r; j++) {
      int64_t q = y + j;
      if (q >= 0 && q < H) a += c_taps[j + r] * t[base + q * W];
    }
    g[i] = a;
  }
}

__global__ void k_momentum(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip,
                           float lo, float hi) {
  LVC_GRID_STRIDE(i, n) {
    float b = momentum * buf[i] + g[i];
    buf[i] = b;
    float v = x[i] - lr * b;
    g[i] = 0.f;
    x[i] = clip ? (v < lo ? lo : (v > hi ? hi : v)) : v;
  }
}

// one block per row: the squares summed in double, then the row scaled
__global__ void k_renorm(int64_t D, float *x, double norm) {
  __shared__ double part[256];
  float *r = x + (int64_t)blockIdx.x * D;
  double s = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += (double)r[i] * r[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  float f = part[0] > 0 ? (float)(norm / sqrt(part[0])) : 1.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) r[i] *= f;
}
}  // namespace

int index_cols(int64_t K, int64_t N, float *mat, const int64_t *idx, float *vec, int put) {
  if (init() < 0) return -1;
  if (K <= 0) return 0;
  k_index_cols<<<grid_for(K), 256, 0, stream>>>(K, N, mat, idx, vec, put);
  LVC_LAUNCHED("index_cols");
  return 0;
}

int blur_planes(int64_t P, int64_t H, int64_t W, int r, const float *taps, float *g, float *tmp) {
  if (init() < 0) return -1;
  if (2 * r + 1 > kMaxTaps) return fail(LVC_EVALUE, "blur: sigma too large (%d taps, at most %d)", 2 * r + 1, kMaxTaps);
  int64_t total = P * H * W;
  if (total <= 0 || r < 1) return 0;
  // the taps are staged from host memory before the call returns; the kernels read them in order
  LVC_CHECK(cudaMemcpyToSymbolAsync(c_taps, taps, sizeof(float) * (size_t)(2 * r + 1), 0, cudaMemcpyHostToDevice,
                                    stream), "blur taps");
  k_blur_rows<<<grid_for(total), 256, 0, stream>>>(total, W, r, g, tmp);
  LVC_LAUNCHED("blur rows");
  k_blur_cols<<<grid_for(total), 256, 0, stream>>>(total, H, W, r, tmp, g);
  LVC_LAUNCHED("blur columns");
  return 0;
}

int momentum_step(int64_t n, float *x, float *g, float *buf, float lr, float momentum, int clip, float lo,
                  float hi) {
  if (init() < 0) return -1;
  if (n <= 0) return 0;
  k_momentum<<<grid_for(n), 256, 0, stream>>>(n, x, g, buf, lr, momentum, clip, lo, hi);
  LVC_LAUNCHED("momentum step");
  return 0;
}

int renorm_rows(int64_t K, int64_t D, float *x, double norm) {
  if (init() < 0) return -1;
  if (K <= 0 || D <= 0) return 0;
  if (K > 0x7fffffffLL) return fail(LVC_EVALUE, "renorm_rows: %lld rows", (long long)K);
  k_renorm<<<(unsigned)K, 256, 0, stream>>>(D, x, norm);
  LVC_LAUNCHED("renorm rows");
  return 0;
}

}  // namespace lvc
