// The fast paths of kernels.cpp: vector traits for AVX-512 (16 floats), AVX2 with FMA and F16C
// (8 floats), or else plain C++ arrays of 8 lanes that the compiler vectorises for the CPU it
// builds for (the portable path), and one kernel written over them for every format of
// formats.h.
//
// A pass reads four rows of the matrix side by side, each a stream of GGUF blocks where the
// file has them, and takes each block column in turn: the four rows' (a, o) scales of the
// column (exact), then, W weights at a time, the inputs' W floats and, per row, its W weights
// expanded in registers. Each weight meets every input row of the pass (up to four; AVX2, with
// 16 registers, two) in the same order, so a row's sum does not depend on the rows beside it.
//
// AVX-512 looks codes of up to five bits up in a table of their weights (a i + o, i = 0..15,
// or two such tables for five bits: one permute per 16 weights); wider codes, and the other
// paths, convert the codes and multiply: fma(q, a, o).

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "formats.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#define CADENCIA_X86_SIMD 1
#endif

namespace {


#if defined(__AVX512F__)
constexpr int64_t kSimd = 512;

struct Vec {
  static constexpr bool kFma = true;  // fma(q, a, o) rounds once: offsets fold into o
  using F = __m512;
  using I = __m512i;
  static constexpr int W = 16;
  static constexpr int kRows = 4;  // input rows one pass over a tile serves
  static constexpr bool kLookup = true;

  static I load_u8(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I load_i8(const uint8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I and_(I a, int m) { return _mm512_and_si512(a, _mm512_set1_epi32(m)); }
  static I nibble(I a) { return a; }  // the table lookup reads the low four bits alone
  template <int N> static I srl(I a) { return _mm512_srli_epi32(a, N); }
  template <int N> static I sll(I a) { return _mm512_slli_epi32(a, N); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I add(I a, int n) { return _mm512_add_epi32(a, _mm512_set1_epi32(n)); }
  // Lane j of q, plus V where bit j of word is set.
  template <int V>
  static I or_bits(I q, uint32_t word) {
    return _mm512_mask_or_epi32(q, static_cast<__mmask16>(word), q, _mm512_set1_epi32(V));
  }
  static F scaled(I q, float d) { return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d)); }
  static F weights(I q, float a, float o) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(a), _mm512_set1_ps(o));
  }
  // a q + o for codes of Bits <= 5 bits, read from a table of a i + o (i = 0 .. 2^Bits - 1):
  // the permutes read the low four (one table) or five (two tables) bits of each lane.
  template <int Bits>
  static F lookup(I q, float a, float o) {
    const __m512 i = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 va = _mm512_set1_ps(a), vo = _mm512_set1_ps(o);
    const __m512 low = _mm512_fmadd_ps(i, va, vo);
    if constexpr (Bits <= 4) {
      return _mm512_permutexvar_ps(q, low);
    } else {
      const __m512 high = _mm512_fmadd_ps(_mm512_add_ps(i, _mm512_set1_ps(16)), va, vo);
      return _mm512_permutex2var_ps(low, q, high);
    }
  }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F zero() { return _mm512_setzero_ps(); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(F a) { return _mm512_reduce_add_ps(a); }
  // The float16 scales of the GGUF block at p (F16C).
  template <class Fm>
  static void block_scales(const uint8_t* p, float* h) {
    uint16_t raw[2] = {};
    std::memcpy(raw, p + Fm::kHalvesAt, 2 * Fm::kHalves);
    h[0] = _cvtsh_ss(raw[0]);
    h[1] = Fm::kHalves > 1 ? _cvtsh_ss(raw[1]) : 0.0f;
  }
};
#elif defined(CADENCIA_X86_SIMD)
constexpr int64_t kSimd = 256;

struct Vec {
  static constexpr bool kFma = true;
  using F = __m256;
  using I = __m256i;
  static constexpr int W = 8;
  static constexpr int kRows = 2;  // 4 x 2 accumulators and the inputs fit 16 registers
  static constexpr bool kLookup = false;

  static I load_u8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static I load_i8(const uint8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static I and_(I a, int m) { return _mm256_and_si256(a, _mm256_set1_epi32(m)); }
  static I nibble(I a) { return and_(a, 15); }
  template <int N> static I srl(I a) { return _mm256_srli_epi32(a, N); }
  template <int N> static I sll(I a) { return _mm256_slli_epi32(a, N); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I add(I a, int n) { return _mm256_add_epi32(a, _mm256_set1_epi32(n)); }
  template <int V>
  static I or_bits(I q, uint32_t word) {
    // V is a power of two: lane j shifts bit j of (word << log2 V) down to V's place.
    static_assert(V > 0 && (V & (V - 1)) == 0, "or_bits sets one bit");
    const __m256i shifts = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i moved = _mm256_set1_epi32(static_cast<int>((word & 0xffu) << __builtin_ctz(V)));
    return _mm256_or_si256(q, and_(_mm256_srlv_epi32(moved, shifts), V));
  }
  static F scaled(I q, float d) { return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(d)); }
  static F weights(I q, float a, float o) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(a), _mm256_set1_ps(o));
  }
  template <int Bits>
  static F lookup(I q, float a, float o) { return weights(q, a, o); }  // no table path
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F zero() { return _mm256_setzero_ps(); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(F a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  // The float16 scales of the GGUF block at p (F16C).
  template <class Fm>
  static void block_scales(const uint8_t* p, float* h) {
    uint16_t raw[2] = {};
    std::memcpy(raw, p + Fm::kHalvesAt, 2 * Fm::kHalves);
    h[0] = _cvtsh_ss(raw[0]);
    h[1] = Fm::kHalves > 1 ? _cvtsh_ss(raw[1]) : 0.0f;
  }
};
#else
constexpr int64_t kSimd = 0;

// Lanes as plain arrays: loops the compiler turns into the vector instructions of the CPU it
// builds for (NEON, SSE, ...). Without a fused multiply-add, a q + o rounds after the add only
// because a q is exact; so the offset stays in the integer code (a (q + offset) is exact too).
struct Vec {
  static constexpr bool kFma = false;
  static constexpr int W = 8;
  static constexpr int kRows = 4;
  static constexpr bool kLookup = false;
  struct I {
    int32_t v[W];
  };
  struct F {
    float v[W];
  };

  template <class Fn>
  static I map(Fn fn) {
    I r;
    for (int j = 0; j < W; ++j) r.v[j] = fn(j);
    return r;
  }
  static I load_u8(const uint8_t* p) { return map([&](int j) { return int32_t{p[j]}; }); }
  static I load_i8(const uint8_t* p) {
    return map([&](int j) { return int32_t{static_cast<int8_t>(p[j])}; });
  }
  static I and_(I a, int m) { return map([&](int j) { return a.v[j] & m; }); }
  static I nibble(I a) { return and_(a, 15); }
  template <int N> static I srl(I a) { return map([&](int j) { return a.v[j] >> N; }); }
  template <int N> static I sll(I a) { return map([&](int j) { return a.v[j] << N; }); }
  static I or_(I a, I b) { return map([&](int j) { return a.v[j] | b.v[j]; }); }
  template <int V>
  static I or_bits(I q, uint32_t word) {
    return map([&](int j) { return q.v[j] | (((word >> j) & 1) ? V : 0); });
  }
  static I add(I a, int n) { return map([&](int j) { return a.v[j] + n; }); }
  static F scaled(I q, float d) {
    F r;
    for (int j = 0; j < W; ++j) r.v[j] = static_cast<float>(q.v[j]) * d;
    return r;
  }
  static F weights(I q, float a, float o) {
    F r;
    for (int j = 0; j < W; ++j) r.v[j] = static_cast<float>(q.v[j]) * a + o;
    return r;
  }
  template <int Bits>
  static F lookup(I q, float a, float o) { return weights(q, a, o); }  // no table path
  static F load(const float* p) {
    F r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static void store(float* p, F v) { std::memcpy(p, v.v, sizeof v.v); }
  static F zero() { return F{}; }
  static F fma(F a, F b, F c) {
    for (int j = 0; j < W; ++j) c.v[j] += a.v[j] * b.v[j];
    return c;
  }
  static float reduce(F a) {
    float s = 0;
    for (int j = 0; j < W; ++j) s += a.v[j];
    return s;
  }
  template <class Fm>
  static void block_scales(const uint8_t* p, float* h) { block_halves<Fm>(p, h); }
};
#endif

#define CADENCIA_INLINE inline __attribute__((always_inline))

// Weights v0 .. v0 + W - 1 of one block of each of the kGroup rows (codes at c[i]) against M
// input rows, added to acc. A function rather than a lambda: the accumulators must stay in
// registers, and GCC keeps an array a lambda captures in memory.
template <class Fm, int M, int v0>
CADENCIA_INLINE void group(const uint8_t* const (&c)[kGroup], const float* xb, int64_t k,
                           const float (&a)[kGroup][Fm::kValues / Fm::kSpan],
                           const float (&o)[kGroup][Fm::kValues / Fm::kSpan],
                           typename Vec::F (&acc)[kGroup][M]) {
  constexpr int s = v0 / Fm::kSpan;
  typename Vec::F xv[M];
  for (int j = 0; j < M; ++j) xv[j] = Vec::load(xb + j * k + v0);
  for (int i = 0; i < kGroup; ++i) {
    const auto q = Fm::template codes<Vec, v0>(c[i]);
    typename Vec::F w;
    if constexpr (Vec::kLookup && Fm::kBits <= 5)
      w = Vec::template lookup<Fm::kBits>(q, a[i][s], o[i][s]);
    else if constexpr (!Vec::kFma && Fm::kOffset != 0)
      w = Vec::weights(Vec::add(q, Fm::kOffset), a[i][s], o[i][s]);
    else
      w = Vec::weights(q, a[i][s], o[i][s]);
    for (int j = 0; j < M; ++j) acc[i][j] = Vec::fma(w, xv[j], acc[i][j]);
  }
}

template <class Fm, int M, int... G>
CADENCIA_INLINE void column(std::integer_sequence<int, G...>, const uint8_t* const (&c)[kGroup],
                            const float* xb, int64_t k,
                            const float (&a)[kGroup][Fm::kValues / Fm::kSpan],
                            const float (&o)[kGroup][Fm::kValues / Fm::kSpan],
                            typename Vec::F (&acc)[kGroup][M]) {
  (group<Fm, M, G * Vec::W>(c, xb, k, a, o, acc), ...);
}

// kGroup rows (row i's blocks from r[i], as the GGUF lays them out) against M input rows (at
// x, row stride k), into y[j * ldy + i] for i < live, prefetching the next group's rows (nx).
// Block column by block column: each row's (a, o) scales of the block (exact), then, W weights
// at a time, the inputs' W floats and, per row, its W weights expanded in registers.
template <class Fm, int M>
inline void rows_simd(const float* x, int64_t k, const uint8_t* const (&r)[kGroup], int64_t nb,
                      float* y, int64_t ldy, int live, const uint8_t* const (&nx)[kGroup]) {
  constexpr int64_t bb = block_bytes<Fm>();
  constexpr int spans = Fm::kValues / Fm::kSpan;
  typename Vec::F acc[kGroup][M];
  for (int i = 0; i < kGroup; ++i)
    for (int j = 0; j < M; ++j) acc[i][j] = Vec::zero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* c[kGroup];
    alignas(64) float a[kGroup][spans], o[kGroup][spans];
    for (int i = 0; i < kGroup; ++i) {
      const uint8_t* blk = r[i] + b * bb;
      // The same block of the next group's row, each of its cache lines once (blocks of 32
      // weights are short): a whole pass ahead, however short or scattered the rows. (A
      // fixed distance ahead in the row itself left 1.3 to 2 times less bandwidth.)
      const uint8_t* pf = nx[i] + b * bb;
      if constexpr (bb >= 64) {
        for (int64_t line = 0; line < bb; line += 64) __builtin_prefetch(pf + line);
      } else if ((reinterpret_cast<uintptr_t>(pf) & 63) < bb) {
        __builtin_prefetch(pf);
      }
      c[i] = blk + codes_at<Fm>();
      float h[2];
      Vec::template block_scales<Fm>(blk, h);
      Fm::template scales<Vec>(c[i], h, a[i], o[i]);
      // a (q + offset) + o = a q + (o + a offset): a times a power of two is exact, and o is
      // zero wherever the offset is not, so the weights round once as before.
      if constexpr (Vec::kFma && Fm::kOffset != 0)
        for (int s = 0; s < spans; ++s) o[i][s] += a[i][s] * static_cast<float>(Fm::kOffset);
    }
    column<Fm, M>(std::make_integer_sequence<int, Fm::kValues / Vec::W>{}, c,
                  x + b * Fm::kValues, k, a, o, acc);
  }
  for (int i = 0; i < live; ++i)
    for (int j = 0; j < M; ++j) y[j * ldy + i] = Vec::reduce(acc[i][j]);
}

// Row groups [g0, g1) of the matrix whose row n starts at data + offsets[n] (rows in all)
// against the m input rows at x: y [m, rows] gets those groups' columns. A group's rows stay
// in cache while the batch passes over them, Vec::kRows input rows a pass.
template <class Fm>
void groups_simd(const float* x, int64_t m, int64_t k, const uint8_t* data,
                 const int64_t* offsets, int64_t rows, int64_t g0, int64_t g1, float* y) {
  constexpr int R = Vec::kRows;
  const int64_t nb = k / Fm::kValues;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t first = g * kGroup;
    const int live = static_cast<int>(std::min<int64_t>(kGroup, rows - first));
    const uint8_t* r[kGroup];
    for (int i = 0; i < kGroup; ++i) r[i] = data + offsets[first + std::min(i, live - 1)];
    const uint8_t* nx[kGroup];
    const int64_t next = first + kGroup;
    for (int i = 0; i < kGroup; ++i)
      nx[i] = next < rows ? data + offsets[std::min(next + i, rows - 1)] : r[i];
    float* yg = y + first;
    int64_t j = 0;
    for (; j + R <= m; j += R) rows_simd<Fm, R>(x + j * k, k, r, nb, yg + j * rows, rows, live, nx);
    if constexpr (R == 4) {
      switch (m - j) {
        case 3: rows_simd<Fm, 3>(x + j * k, k, r, nb, yg + j * rows, rows, live, nx); break;
        case 2: rows_simd<Fm, 2>(x + j * k, k, r, nb, yg + j * rows, rows, live, nx); break;
        case 1: rows_simd<Fm, 1>(x + j * k, k, r, nb, yg + j * rows, rows, live, nx); break;
        default: break;
      }
    } else {
      if (j < m) rows_simd<Fm, 1>(x + j * k, k, r, nb, yg + j * rows, rows, live, nx);
    }
  }
}

}  // namespace
