/* Portable SIMD helpers for the CPU kernels: GCC vector extensions (no intrinsics). Hot
 * functions are compiled twice (x86-64 baseline and x86-64-v3: AVX2+FMA) and the clone is
 * picked at load time from the CPU features (target_clones / ifunc; "arch=x86-64-v3" dispatches on
 * feature bits, unlike "arch=haswell" which tests the CPU model and misses AMD parts). */
#ifndef LV_CPU_SIMD_H
#define LV_CPU_SIMD_H
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float lv_v8f __attribute__((vector_size(32)));
typedef float lv_v8fu __attribute__((vector_size(32), aligned(4))); /* unaligned access */
typedef int lv_v8i __attribute__((vector_size(32)));

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LVIV_NO_CLONES)
#define LV_HOT __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
/* same, for kernels built on per-element broadcasts (lv_bc8 of consecutive floats): without SLP
 * vectorisation, which would otherwise load 8 neighbours at once and rebuild each broadcast by
 * permutes instead of emitting one vbroadcastss per element */
#define LV_HOT_BC __attribute__((target_clones("arch=x86-64-v3", "default"), \
                                 optimize("fp-contract=fast", "no-tree-slp-vectorize")))
#else
#define LV_HOT
#define LV_HOT_BC
#endif

static inline __attribute__((always_inline)) lv_v8f lv_ld8(const float *p) { return *(const lv_v8fu *)p; }
static inline __attribute__((always_inline)) void lv_st8(float *p, lv_v8f v) { *(lv_v8fu *)p = v; }
/* broadcast: written as a shuffle of lane 0, which GCC emits as one vbroadcastss; the braced
 * {s, s, ...} form can come out as four vinsertps + vinsertf128 inside target_clones functions */
static inline __attribute__((always_inline)) lv_v8f lv_bc8(float s) {
  return __builtin_shuffle((lv_v8f){s}, (lv_v8i){0, 0, 0, 0, 0, 0, 0, 0});
}
static inline __attribute__((always_inline)) float lv_hsum8(lv_v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* in-place 8x8 transpose: r[i][j] <- r[j][i] (unpack / shuffle / 128-bit lane swaps) */
static inline __attribute__((always_inline)) void lv_tr8x8(lv_v8f r[8]) {
  lv_v8f t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], (lv_v8i){0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (lv_v8i){2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = __builtin_shuffle(t[i], t[i + 2], (lv_v8i){0, 1, 8, 9, 4, 5, 12, 13});
    s[i + 1] = __builtin_shuffle(t[i], t[i + 2], (lv_v8i){2, 3, 10, 11, 6, 7, 14, 15});
    s[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], (lv_v8i){0, 1, 8, 9, 4, 5, 12, 13});
    s[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], (lv_v8i){2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int i = 0; i < 4; i++) {
    r[i] = __builtin_shuffle(s[i], s[i + 4], (lv_v8i){0, 1, 2, 3, 8, 9, 10, 11});
    r[i + 4] = __builtin_shuffle(s[i], s[i + 4], (lv_v8i){4, 5, 6, 7, 12, 13, 14, 15});
  }
}
#endif
