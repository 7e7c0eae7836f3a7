// GGUF block-quantised matrices multiplied in float32 on the CPU (hive_core.model.packed).
//
// A matrix stays where the GGUF holds it (formats.h: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 blocks of 32
// weights; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K of 256): `data` is any uint8 tensor holding its bytes,
// usually the whole model file memory-mapped, and `offsets` says where each row's first block
// lies in it. Rows are read as the file stores them (row-major blocks, scales inside), four row
// streams a pass, so a load copies nothing and a decode step reads the file's bytes and no
// more; offsets in any order pick, permute or join rows (q/k un-permutation, q|k|v fused) for
// free. Nothing expands the matrix.
//
// Each output is one dot product, its blocks expanded to float32 in registers (simd.h: AVX-512,
// AVX2, or portable C++ vectors, chosen when the library is built for this CPU; the scalar
// reference below, block_linear_generic, is what the tests hold every path to). Four rows'
// expanded weights serve several input rows at once (prefill, speculative verification), and
// every output is summed by one thread in one fixed order: the result depends neither on the
// thread count nor on the other rows of the batch.
//
// Ops (namespace `cadencia`, or CADENCIA_OPS for a second build loaded beside it), qtype = the
// GGML type number:
//   block_linear(Tensor x, Tensor data, Tensor offsets, int cols, int qtype) -> Tensor
//     x float32 [M, cols], offsets int64 [rows]; returns float32 [M, rows] = x @ W.T.
//   block_linear_generic(...)   block_linear by the scalar reference of each format (slow)
//   block_dequantize(Tensor data, Tensor offsets, int cols, int qtype) -> Tensor   W [rows, cols]
//   block_format(int qtype) -> int[]   [weights, bytes, float16 scales, their byte offset]
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

constexpr int64_t kGrainGroups = 16;  // row groups per thread chunk, at least

// Reference dot products of rows [r0, r1) (row n at data + offsets[n]) with one input row x:
// expand a block by the format's scalar reference, multiply, add into 32 partial sums, then
// add those in order.
template <class Fm>
void rows_reference(const float* x, const uint8_t* data, const int64_t* offsets, int64_t nb,
                    int64_t r0, int64_t r1, float* y) {
  constexpr int64_t qk = Fm::kValues;
  float w[qk];
  for (int64_t r = r0; r < r1; ++r) {
    float acc[32] = {};
    for (int64_t b = 0; b < nb; ++b) {
      expand_block<Fm>(data + offsets[r] + b * block_bytes<Fm>(), w);
      for (int64_t c = 0; c < qk; c += 32)
        for (int j = 0; j < 32; ++j) acc[j] += w[c + j] * x[b * qk + c + j];
    }
    float s = 0;
    for (int j = 0; j < 32; ++j) s += acc[j];
    y[r] = s;
  }
}

struct Shape {
  int64_t values, bytes, halves, halves_at;
};

Shape format_shape(int64_t qtype) {
  Shape s{};
  const bool known = with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    s = {Fm::kValues, block_bytes<Fm>(), Fm::kHalves, Fm::kHalvesAt};
  });
  TORCH_CHECK(known, "block_linear: unknown qtype ", qtype);
  return s;
}

// Checks that every row of a `cols`-wide matrix of `qtype` lies inside `data`.
void check_matrix(const at::Tensor& data, const at::Tensor& offsets, int64_t cols,
                  int64_t qtype) {
  const Shape s = format_shape(qtype);
  TORCH_CHECK(data.scalar_type() == at::kByte && data.is_contiguous() && data.device().is_cpu(),
              "block_linear: data must be a contiguous CPU uint8 tensor");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.dim() == 1 &&
                  offsets.is_contiguous() && offsets.device().is_cpu(),
              "block_linear: offsets must be a contiguous CPU int64 [rows]");
  TORCH_CHECK(cols > 0 && cols % s.values == 0, "block_linear: rows of ", cols,
              " weights are not whole blocks of ", s.values, " for qtype ", qtype);
  const int64_t last = data.numel() - cols / s.values * s.bytes;  // the last row start that fits
  const int64_t* op = offsets.data_ptr<int64_t>();
  for (int64_t r = 0; r < offsets.numel(); ++r)
    TORCH_CHECK(op[r] >= 0 && op[r] <= last, "block_linear: row ", r, " at byte ", op[r],
                " does not fit in the ", data.numel(), " bytes of data");
}

const at::Tensor checked_input(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == k &&
                  x.device().is_cpu(),
              "block_linear: x must be CPU float32 [rows, ", k, "]");
  return x.contiguous();
}

at::Tensor block_dequantize(const at::Tensor& data, const at::Tensor& offsets, int64_t cols,
                            int64_t qtype) {
  check_matrix(data, offsets, cols, qtype);
  const int64_t rows = offsets.numel();
  auto out = at::empty({rows, cols}, at::kFloat);
  const uint8_t* dp = data.data_ptr<uint8_t>();
  const int64_t* op = offsets.data_ptr<int64_t>();
  float* yp = out.data_ptr<float>();
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    const int64_t nb = cols / Fm::kValues;
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t b = 0; b < nb; ++b)
          expand_block<Fm>(dp + op[r] + b * block_bytes<Fm>(), yp + r * cols + b * Fm::kValues);
    });
  });
  return out;
}

at::Tensor block_linear(const at::Tensor& x, const at::Tensor& data, const at::Tensor& offsets,
                        int64_t cols, int64_t qtype) {
  check_matrix(data, offsets, cols, qtype);
  const at::Tensor xc = checked_input(x, cols);
  const int64_t m = xc.size(0), rows = offsets.numel();
  if (m == 0 || rows == 0) return at::zeros({m, rows}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const uint8_t* dp = data.data_ptr<uint8_t>();
  const int64_t* op = offsets.data_ptr<int64_t>();
  auto out = at::empty({m, rows}, xc.options());
  float* yp = out.data_ptr<float>();
  const int64_t groups = (rows + kGroup - 1) / kGroup;
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    at::parallel_for(0, groups, std::max<int64_t>(1, kGrainGroups / m),
                     [&](int64_t g0, int64_t g1) {
                       groups_simd<Fm>(xp, m, cols, dp, op, rows, g0, g1, yp);
                     });
  });
  return out;
}

at::Tensor block_linear_generic(const at::Tensor& x, const at::Tensor& data,
                                const at::Tensor& offsets, int64_t cols, int64_t qtype) {
  check_matrix(data, offsets, cols, qtype);
  const at::Tensor xc = checked_input(x, cols);
  const int64_t rows = offsets.numel();
  auto out = at::empty({xc.size(0), rows}, xc.options());
  with_format(qtype, [&](auto f) {
    using Fm = decltype(f);
    for (int64_t i = 0; i < xc.size(0); ++i)
      rows_reference<Fm>(xc.data_ptr<float>() + i * cols, data.data_ptr<uint8_t>(),
                         offsets.data_ptr<int64_t>(), cols / Fm::kValues, 0, rows,
                         out.data_ptr<float>() + i * rows);
  });
  return out;
}

std::vector<int64_t> block_format(int64_t qtype) {
  const Shape s = format_shape(qtype);
  return {s.values, s.bytes, s.halves, s.halves_at};
}

int64_t simd() { return kSimd; }

}  // namespace

CADENCIA_LIBRARY(CADENCIA_OPS, m) {
  m.def("block_linear(Tensor x, Tensor data, Tensor offsets, int cols, int qtype) -> Tensor",
        &block_linear);
  m.def("block_linear_generic(Tensor x, Tensor data, Tensor offsets, int cols, int qtype) -> "
        "Tensor",
        &block_linear_generic);
  m.def("block_dequantize(Tensor data, Tensor offsets, int cols, int qtype) -> Tensor",
        &block_dequantize);
  m.def("block_format(int qtype) -> int[]", &block_format);
  m.def("simd() -> int", &simd);
}
