// GGUF block-quantised matrices multiplied in float32 on the CPU (hive_core.model.packed).
//
// A matrix stays in its GGUF blocks (formats.h: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 of 32 weights;
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K of 256), re-laid out once at load as `tiles`: uint8 [rows / 4,
// tile bytes], one tile per four rows. A tile holds, for each block column, the four rows'
// codes (each block without its float16 scales, in GGUF order), then every block's float16
// scales, row by row within a column: the GGUF's own bytes, so a decode step reads no more
// than the file holds, as one forward stream per thread. Nothing expands the matrix.
//
// Each output is one dot product, its blocks expanded to float32 in registers (simd.h: AVX-512,
// AVX2, or portable C++ vectors, chosen when the library is built for this CPU; the scalar
// reference below, block_linear_generic, is what the tests hold every path to). A tile's
// expanded weights
// serve several input rows at once (prefill, speculative verification), and every output is
// summed by one thread in one fixed order: the result depends neither on the thread count nor
// on the other rows of the batch.
//
// Ops (namespace `cadencia`, or CADENCIA_OPS for a second build loaded beside it), qtype = the
// GGML type number:
//   block_linear(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor
//     x float32 [M, K]; returns float32 [M, rows] = x @ W.T.
//   block_linear_generic(...)   block_linear by the scalar reference of each format (slow)
//   block_dequantize(Tensor tiles, int rows, int qtype) -> Tensor   float32 W [rows, K]
//   block_format(int qtype) -> int[]   [weights, code bytes, float16 scales] of a block
//   simd() -> int   512 (AVX-512), 256 (AVX2) or 0 (portable): the path block_linear takes

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "formats.h"
#include "simd.h"

#ifndef CADENCIA_OPS
#define CADENCIA_OPS cadencia
#endif
#define CADENCIA_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

namespace {

constexpr int64_t kGrainTiles = 16;  // tiles per thread chunk, at least

template <class Fm>
constexpr int64_t column_bytes() { return kTile * (Fm::kCodeBytes + 2 * Fm::kHalves); }

// Row i of block column b of the tile at p (nb columns) as kValues floats, by the reference.
template <class Fm>
inline void expand_block(const uint8_t* p, int64_t nb, int64_t b, int i, float* w) {
  const uint8_t* codes = p + (b * kTile + i) * Fm::kCodeBytes;
  c10::Half raw[2];
  std::memcpy(raw, p + nb * kTile * Fm::kCodeBytes + (b * kTile + i) * 2 * Fm::kHalves,
              2 * Fm::kHalves);
  float h[2] = {raw[0], Fm::kHalves > 1 ? static_cast<float>(raw[1]) : 0.0f};
  Fm::reference(codes, h, w);
}

// Reference dot products for tiles [t0, t1): expand a block by the format's scalar
// reference, multiply, add into 32 partial sums, then add those in order.
template <class Fm>
void tiles_reference(const float* x, const uint8_t* tiles, int64_t nb, int64_t t0, int64_t t1,
                    float* y) {
  constexpr int64_t qk = Fm::kValues;
  float w[qk];
  for (int64_t t = t0; t < t1; ++t)
    for (int i = 0; i < kTile; ++i) {
      float acc[32] = {};
      for (int64_t b = 0; b < nb; ++b) {
        expand_block<Fm>(tiles + t * nb * column_bytes<Fm>(), nb, b, i, w);
        for (int64_t c = 0; c < qk; c += 32)
          for (int j = 0; j < 32; ++j) acc[j] += w[c + j] * x[b * qk + c + j];
      }
      float s = 0;
      for (int j = 0; j < 32; ++j) s += acc[j];
      y[t * kTile + i] = s;
    }
}

struct Shape {
  int64_t values, code_bytes, halves;
};

Shape format_shape(int64_t qtype) {
  Shape s{};
  const bool known = with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    s = {Fm::kValues, Fm::kCodeBytes, Fm::kHalves};
  });
  TORCH_CHECK(known, "block_linear: unknown qtype ", qtype);
  return s;
}

// Block columns of a checked `tiles` for `rows` rows.
int64_t check_tiles(const at::Tensor& tiles, int64_t rows, int64_t qtype) {
  const Shape s = format_shape(qtype);
  const int64_t column = kTile * (s.code_bytes + 2 * s.halves);
  TORCH_CHECK(tiles.scalar_type() == at::kByte && tiles.dim() == 2 && tiles.is_contiguous() &&
                  tiles.device().is_cpu(),
              "block_linear: tiles must be a contiguous CPU uint8 [tiles, bytes]");
  TORCH_CHECK(tiles.size(1) % column == 0, "block_linear: a tile of ", tiles.size(1),
              " bytes is not whole block columns for qtype ", qtype);
  TORCH_CHECK(rows >= 0 && (rows + kTile - 1) / kTile == tiles.size(0), "block_linear: ",
              tiles.size(0), " tiles cannot hold ", rows, " rows");
  return tiles.size(1) / column;
}

const at::Tensor checked_input(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == k &&
                  x.device().is_cpu(),
              "block_linear: x must be CPU float32 [rows, ", k, "]");
  return x.contiguous();
}

at::Tensor block_dequantize(const at::Tensor& tiles, int64_t rows, int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), k = nb * format_shape(qtype).values;
  auto out = at::empty({rows, k}, at::kFloat);
  const uint8_t* tp = tiles.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t b = 0; b < nb; ++b)
          expand_block<Fm>(tp + (r / kTile) * nb * column_bytes<Fm>(), nb, b,
                           static_cast<int>(r % kTile), op + r * k + b * Fm::kValues);
    });
  });
  return out;
}

at::Tensor block_linear(const at::Tensor& x, const at::Tensor& tiles, int64_t rows,
                        int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), n = tiles.size(0);
  const int64_t k = nb * format_shape(qtype).values;
  const at::Tensor xc = checked_input(x, k);
  const int64_t m = xc.size(0);
  if (m == 0 || rows == 0) return at::zeros({m, rows}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const uint8_t* tp = tiles.data_ptr<uint8_t>();
  auto out = at::empty({m, n * kTile}, xc.options());
  float* yp = out.data_ptr<float>();
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    at::parallel_for(0, n, std::max<int64_t>(1, kGrainTiles / m), [&](int64_t t0, int64_t t1) {
      tiles_simd<Fm>(xp, m, k, tp, nb, t0, t1, yp, n * kTile);
    });
  });
  return n * kTile == rows ? out : out.narrow(1, 0, rows).contiguous();
}

at::Tensor block_linear_generic(const at::Tensor& x, const at::Tensor& tiles, int64_t rows,
                                int64_t qtype) {
  const int64_t nb = check_tiles(tiles, rows, qtype), n = tiles.size(0);
  const at::Tensor xc = checked_input(x, nb * format_shape(qtype).values);
  auto out = at::empty({xc.size(0), n * kTile}, xc.options());
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    for (int64_t i = 0; i < xc.size(0); ++i)
      tiles_reference<Fm>(xc.data_ptr<float>() + i * xc.size(1), tiles.data_ptr<uint8_t>(), nb,
                         0, n, out.data_ptr<float>() + i * n * kTile);
  });
  return out.narrow(1, 0, rows).contiguous();
}

std::vector<int64_t> block_format(int64_t qtype) {
  const Shape s = format_shape(qtype);
  return {s.values, s.code_bytes, s.halves};
}

int64_t simd() { return kSimd; }

}  // namespace

CADENCIA_LIBRARY(CADENCIA_OPS, m) {
  m.def("block_linear(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor", &block_linear);
  m.def("block_linear_generic(Tensor x, Tensor tiles, int rows, int qtype) -> Tensor",
        &block_linear_generic);
  m.def("block_dequantize(Tensor tiles, int rows, int qtype) -> Tensor", &block_dequantize);
  m.def("block_format(int qtype) -> int[]", &block_format);
  m.def("simd() -> int", &simd);
}
