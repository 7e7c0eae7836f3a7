// GGUF block-quantised matrices multiplied in float32 on the CPU (hive_core.model.packed).
//
// A matrix stays in its blocks of 32 weights, each weight d * q + m (Q4_1) or d * q (Q8_0,
// m = 0), re-laid out once at load as `tiles`: uint8 [rows / 4, tile bytes], one tile per
// four rows. A tile holds, for each block column, the four rows' codes as GGML stores them
// (Q4_1: 16 bytes of nibbles, low nibbles first; Q8_0: 32 int8), then every block's (d, m)
// as float16, row by row within a column: the GGUF's own bytes, so a decode step reads no
// more than the file holds, as one forward stream per thread. Nothing expands the matrix.
//
// Each output is one dot product, its blocks expanded to float32 in registers. With
// AVX-512 a Q4_1 block's 16 possible values are a 16-float table (d * i + m), indexed by the
// codes with one permute per 16 weights. A tile's expanded weights serve up to four input
// rows at once (prefill, speculative verification), and every output is summed by one
// thread in one fixed order: the result depends neither on the thread count nor on the
// other rows of the batch.
//
// Ops (namespace `cadencia`), qtype 0 = Q4_1, 1 = Q8_0:
//   block_linear(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor
//     x float32 [M, K]; returns float32 [M, rows] = x @ W.T.
//   block_dequantize(Tensor tiles, int rows, int qtype) -> Tensor   float32 W [rows, K]
//   block_linear_generic(...)   block_linear without SIMD, as built for CPUs without AVX-512
//   simd() -> int   512 when the AVX-512 path was compiled in, else 0.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kGroup = 32;           // weights per block
constexpr int64_t kTile = 4;             // rows per tile
constexpr int64_t kGrainTiles = 16;      // tiles per thread chunk, at least
enum QType : int64_t { kQ4_1 = 0, kQ8_0 = 1 };

int64_t code_bytes(int64_t qtype) { return qtype == kQ4_1 ? kGroup / 2 : kGroup; }
// Bytes of one block column of a tile: four rows' codes and four (d, m) float16 pairs.
int64_t column_bytes(int64_t qtype) { return kTile * (code_bytes(qtype) + 4); }

// Row i of block column b of the tile at p (nb columns) as 32 floats.
inline void expand_block(const uint8_t* p, int64_t nb, int64_t b, int i, int64_t qtype,
                         float* w) {
  const int64_t cb = code_bytes(qtype);
  const uint8_t* codes = p + (b * kTile + i) * cb;
  c10::Half sm[2];
  std::memcpy(sm, p + nb * kTile * cb + (b * kTile + i) * 4, 4);
  const float d = sm[0], m = sm[1];
  if (qtype == kQ4_1) {
    for (int j = 0; j < 16; ++j) {
      w[j] = d * static_cast<float>(codes[j] & 15) + m;
      w[j + 16] = d * static_cast<float>(codes[j] >> 4) + m;
    }
  } else {
    const int8_t* q = reinterpret_cast<const int8_t*>(codes);
    for (int j = 0; j < kGroup; ++j) w[j] = d * static_cast<float>(q[j]);
  }
}

// Rows [r0, r1) (r0 a multiple of kTile) as float32 [r1 - r0, K].
void dequantize_rows(const uint8_t* tiles, int64_t qtype, int64_t nb, int64_t r0, int64_t r1,
                     float* out) {
  const int64_t tb = nb * column_bytes(qtype);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < nb; ++b)
      expand_block(tiles + (r / kTile) * tb, nb, b, static_cast<int>(r % kTile), qtype,
                   out + ((r - r0) * nb + b) * kGroup);
}

// Portable dot products for tiles [t0, t1): expand a block, multiply, add.
void tiles_generic(const float* x, const uint8_t* tiles, int64_t qtype, int64_t nb, int64_t t0,
                   int64_t t1, float* y) {
  const int64_t tb = nb * column_bytes(qtype);
  float w[kGroup];
  for (int64_t t = t0; t < t1; ++t)
    for (int i = 0; i < kTile; ++i) {
      float acc[kGroup] = {};
      for (int64_t b = 0; b < nb; ++b) {
        expand_block(tiles + t * tb, nb, b, i, qtype, w);
        for (int j = 0; j < kGroup; ++j) acc[j] += w[j] * x[b * kGroup + j];
      }
      float s = 0;
      for (int j = 0; j < kGroup; ++j) s += acc[j];
      y[t * kTile + i] = s;
    }
}

#if defined(__AVX512F__)
constexpr int64_t kSimd = 512;
constexpr int64_t kPrefetch = 8;  // block columns ahead
constexpr int64_t kChunk = 32;    // block columns whose scales are expanded at a time

// One tile's four rows against M input rows (at x, row stride k): every product is
// summed in the same order whatever M is, so a row of a batch gets the bits it gets alone.
template <int64_t Q, int M>
inline void tile_simd(const float* x, int64_t k, const uint8_t* p, int64_t nb, float* y,
                      int64_t ldy) {
  constexpr int64_t cb = Q == kQ4_1 ? 16 : 32;
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const uint16_t* halves = reinterpret_cast<const uint16_t*>(p + nb * kTile * cb);
  alignas(64) float sm[kChunk * kTile * 2];
  __m512 acc[kTile][M];
  for (int i = 0; i < kTile; ++i)
    for (int j = 0; j < M; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < nb; b0 += kChunk) {
    const int64_t n = std::min(kChunk, nb - b0);
    const uint16_t* h = halves + b0 * kTile * 2;
    int64_t e = 0;  // n * 8 halves, 16 then 8 at a time
    for (; e + 16 <= n * 8; e += 16)
      _mm512_store_ps(sm + e, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + e))));
    if (e < n * 8)
      _mm256_store_ps(sm + e, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + e))));
    for (int64_t b = b0; b < b0 + n; ++b) {
      const uint8_t* c = p + b * kTile * cb;
      _mm_prefetch(reinterpret_cast<const char*>(c + kPrefetch * kTile * cb), _MM_HINT_T0);
      __m512 xl[M], xh[M];
      for (int j = 0; j < M; ++j) {
        xl[j] = _mm512_loadu_ps(x + j * k + kGroup * b);
        xh[j] = _mm512_loadu_ps(x + j * k + kGroup * b + 16);
      }
      const float* s = sm + (b - b0) * kTile * 2;
      for (int i = 0; i < kTile; ++i) {
        const __m128i* ci = reinterpret_cast<const __m128i*>(c + i * cb);
        if constexpr (Q == kQ4_1) {
          const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(ci));
          const __m512 table =
              _mm512_fmadd_ps(iota, _mm512_set1_ps(s[2 * i]), _mm512_set1_ps(s[2 * i + 1]));
          // permutexvar reads the low 4 bits of each index: the low nibble, then the high one.
          const __m512 lo = _mm512_permutexvar_ps(q, table);
          const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
          for (int j = 0; j < M; ++j) {
            acc[i][j] = _mm512_fmadd_ps(lo, xl[j], acc[i][j]);
            acc[i][j] = _mm512_fmadd_ps(hi, xh[j], acc[i][j]);
          }
        } else {
          const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(ci)));
          const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(ci + 1)));
          const __m512 d = _mm512_set1_ps(s[2 * i]);
          for (int j = 0; j < M; ++j)
            acc[i][j] = _mm512_fmadd_ps(d, _mm512_fmadd_ps(hi, xh[j], _mm512_mul_ps(lo, xl[j])),
                                        acc[i][j]);
        }
      }
    }
  }
  for (int i = 0; i < kTile; ++i)
    for (int j = 0; j < M; ++j) y[j * ldy + i] = _mm512_reduce_add_ps(acc[i][j]);
}

template <int64_t Q>
void tiles_simd_q(const float* x, int64_t m, int64_t k, const uint8_t* tiles, int64_t nb,
                  int64_t t0, int64_t t1, float* y, int64_t ldy) {
  const int64_t tb = nb * column_bytes(Q);
  for (int64_t t = t0; t < t1; ++t) {  // a tile stays in cache while the batch passes over it
    const uint8_t* p = tiles + t * tb;
    int64_t j = 0;
    for (; j + 4 <= m; j += 4) tile_simd<Q, 4>(x + j * k, k, p, nb, y + j * ldy + t * kTile, ldy);
    switch (m - j) {
      case 3: tile_simd<Q, 3>(x + j * k, k, p, nb, y + j * ldy + t * kTile, ldy); break;
      case 2: tile_simd<Q, 2>(x + j * k, k, p, nb, y + j * ldy + t * kTile, ldy); break;
      case 1: tile_simd<Q, 1>(x + j * k, k, p, nb, y + j * ldy + t * kTile, ldy); break;
      default: break;
    }
  }
}

// Tiles [t0, t1) against the m input rows at x: y [m, ldy] gets columns 4 t0 .. 4 t1.
void tiles_simd(const float* x, int64_t m, int64_t k, const uint8_t* tiles, int64_t qtype,
                int64_t nb, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  if (qtype == kQ4_1)
    tiles_simd_q<kQ4_1>(x, m, k, tiles, nb, t0, t1, y, ldy);
  else
    tiles_simd_q<kQ8_0>(x, m, k, tiles, nb, t0, t1, y, ldy);
}
#else
constexpr int64_t kSimd = 0;
void tiles_simd(const float* x, int64_t m, int64_t k, const uint8_t* tiles, int64_t qtype,
                int64_t nb, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  for (int64_t j = 0; j < m; ++j) tiles_generic(x + j * k, tiles, qtype, nb, t0, t1, y + j * ldy);
}
#endif

// Block columns of a checked `tiles` for `rows` rows.
int64_t check_tiles(const at::Tensor& tiles, int64_t rows, int64_t qtype) {
  TORCH_CHECK(qtype == kQ4_1 || qtype == kQ8_0, "block_linear: unknown qtype ", qtype);
  TORCH_CHECK(tiles.scalar_type() == at::kByte && tiles.dim() == 2 && tiles.is_contiguous() &&
                  tiles.device().is_cpu(),
              "block_linear: tiles must be a contiguous CPU uint8 [tiles, bytes]");
  TORCH_CHECK(tiles.size(1) % column_bytes(qtype) == 0, "block_linear: a tile of ",
              tiles.size(1), " bytes is not whole block columns for qtype ", qtype);
  TORCH_CHECK(rows >= 0 && (rows + kTile - 1) / kTile == tiles.size(0), "block_linear: ",
              tiles.size(0), " tiles cannot hold ", rows, " rows");
  return tiles.size(1) / column_bytes(qtype);
}

const at::Tensor checked_input(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == k &&
                  x.device().is_cpu(),
              "block_linear: x must be CPU float32 [rows, ", k, "]");
  return x.contiguous();
}

at::Tensor block_dequantize(const at::Tensor& tiles, int64_t rows, int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), k = nb * kGroup;
  auto out = at::empty({rows, k}, at::kFloat);
  const uint8_t* tp = tiles.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    dequantize_rows(tp, qtype, nb, r0, r1, op + r0 * k);
  });
  return out;
}

at::Tensor block_linear(const at::Tensor& x, const at::Tensor& tiles, int64_t rows,
                        int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), k = nb * kGroup, n = tiles.size(0);
  const at::Tensor xc = checked_input(x, k);
  const int64_t m = xc.size(0);
  if (m == 0 || rows == 0) return at::zeros({m, rows}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const uint8_t* tp = tiles.data_ptr<uint8_t>();
  auto out = at::empty({m, n * kTile}, xc.options());
  float* yp = out.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, kGrainTiles / m), [&](int64_t t0, int64_t t1) {
    tiles_simd(xp, m, k, tp, qtype, nb, t0, t1, yp, n * kTile);
  });
  return n * kTile == rows ? out : out.narrow(1, 0, rows).contiguous();
}

at::Tensor block_linear_generic(const at::Tensor& x, const at::Tensor& tiles, int64_t rows,
                                int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), k = nb * kGroup, n = tiles.size(0);
  const at::Tensor xc = checked_input(x, k);
  auto out = at::empty({xc.size(0), n * kTile}, xc.options());
  for (int64_t i = 0; i < xc.size(0); ++i)
    tiles_generic(xc.data_ptr<float>() + i * k, tiles.data_ptr<uint8_t>(), qtype, nb, 0, n,
                  out.data_ptr<float>() + i * n * kTile);
  return out.narrow(1, 0, rows).contiguous();
}

int64_t simd() { return kSimd; }

}  // namespace

TORCH_LIBRARY(cadencia, m) {
  m.def("block_linear(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor", &block_linear);
  m.def("block_linear_generic(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor",
        &block_linear_generic);
  m.def("block_dequantize(Tensor tiles, int rows, int qtype) -> Tensor", &block_dequantize);
  m.def("simd() -> int", &simd);
}
