// GGUF block formats as data for kernels.cpp: one struct per format with its sizes, its scalar
// reference expansion, and the two pieces the SIMD paths (simd.h) assemble a block from.
//
// A block of kValues weights lies as the GGUF stores it: kBlockBytes bytes, its kHalves float16
// scales (d, or d and m / dmin, in GGUF order) at byte kHalvesAt (the block's start or its
// end), and its codes, the rest, contiguous at kCodesAt. Every format's weight is
// w = a * (q + kOffset) + o, q a code of kBits bits, with one (a, o) pair per kSpan weights:
//   scales<V>(codes, halves, a, o)  the float (a, o) of each span, exact products of the
//                                   float16 scales and the integer sub-scales;
//   codes<V, v0>(codes)             the integer codes q of weights v0 .. v0 + V::W - 1
//                                   (V: the vector traits of simd.h, W lanes).
// Each product a * q is exact in float32 (at most 24 significant bits; Q6_K's may round once,
// as gguf's does), so w = fma(q + kOffset, a, o) rounds once, like `gguf.dequantize`.
// `reference` computes the same weights in plain scalar code, straight from the GGUF layout
// description (ggml-quants.c / gguf-py's quants.py), for the portable path and the tests.

#pragma once

#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kGroup = 4;  // rows one pass reads side by side (simd.h)

// GGML type numbers (ggml.h); the kernel's qtype is the GGML type.
enum QType : int64_t {
  kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14,
};

inline uint32_t le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Scale j and min j (6 bits each) of a Q4_K / Q5_K super-block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Scale j (6 bits, less 32) of a Q3_K super-block's 12 scale bytes.
inline int scale_q3k(int j, const uint8_t* s) {
  const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// ---- 32-weight blocks: codes qs[16] hold weight j in the low nibble of byte j and weight
// j + 16 in its high nibble; Q5 formats put the fifth bits first, as one little-endian word.

// The nibble of weight v of 32 in qs, as V's `nibble`: exact, or on a table-lookup path with
// the other nibble still above it (the lookup reads only the low four bits).
template <class V, int v0>
inline typename V::I nibbles32(const uint8_t* qs) {
  const auto q = V::load_u8(qs + v0 % 16);
  if constexpr (v0 < 16) return V::nibble(q);
  else return V::template srl<4>(q);
}

template <class V, int v0>
inline typename V::I exact_nibbles32(const uint8_t* qs) {
  const auto q = V::load_u8(qs + v0 % 16);
  if constexpr (v0 < 16) return V::and_(q, 15);
  else return V::template srl<4>(q);
}

struct Q4_0 {
  static constexpr int64_t kQType = kQ4_0, kValues = 32, kCodeBytes = 16, kHalves = 1;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 4, kOffset = -8;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int j = 0; j < 16; ++j) {
      w[j] = h[0] * static_cast<float>((c[j] & 15) - 8);
      w[j + 16] = h[0] * static_cast<float>((c[j] >> 4) - 8);
    }
  }
  template <class V>
  static void scales(const uint8_t*, const float* h, float* a, float* o) { a[0] = h[0]; o[0] = 0; }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return nibbles32<V, v0>(c); }
};

struct Q4_1 {
  static constexpr int64_t kQType = kQ4_1, kValues = 32, kCodeBytes = 16, kHalves = 2;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 4, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int j = 0; j < 16; ++j) {
      w[j] = h[0] * static_cast<float>(c[j] & 15) + h[1];
      w[j + 16] = h[0] * static_cast<float>(c[j] >> 4) + h[1];
    }
  }
  template <class V>
  static void scales(const uint8_t*, const float* h, float* a, float* o) { a[0] = h[0]; o[0] = h[1]; }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return nibbles32<V, v0>(c); }
};

// Q5_0 / Q5_1: codes qh[4] (bit j: the fifth bit of weight j), then qs[16].
inline int q5_code(const uint8_t* c, int j) {
  const int nib = j < 16 ? c[4 + j] & 15 : c[4 + j - 16] >> 4;
  return nib | static_cast<int>(((le32(c) >> j) & 1) << 4);
}

template <class V, int v0>
inline typename V::I q5_codes(const uint8_t* c) {
  return V::template or_bits<16>(exact_nibbles32<V, v0>(c + 4), le32(c) >> v0);
}

struct Q5_0 {
  static constexpr int64_t kQType = kQ5_0, kValues = 32, kCodeBytes = 20, kHalves = 1;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 5, kOffset = -16;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int j = 0; j < 32; ++j) w[j] = h[0] * static_cast<float>(q5_code(c, j) - 16);
  }
  template <class V>
  static void scales(const uint8_t*, const float* h, float* a, float* o) { a[0] = h[0]; o[0] = 0; }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return q5_codes<V, v0>(c); }
};

struct Q5_1 {
  static constexpr int64_t kQType = kQ5_1, kValues = 32, kCodeBytes = 20, kHalves = 2;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 5, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int j = 0; j < 32; ++j) w[j] = h[0] * static_cast<float>(q5_code(c, j)) + h[1];
  }
  template <class V>
  static void scales(const uint8_t*, const float* h, float* a, float* o) { a[0] = h[0]; o[0] = h[1]; }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return q5_codes<V, v0>(c); }
};

struct Q8_0 {
  static constexpr int64_t kQType = kQ8_0, kValues = 32, kCodeBytes = 32, kHalves = 1;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 8, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int j = 0; j < 32; ++j) w[j] = h[0] * static_cast<float>(static_cast<int8_t>(c[j]));
  }
  template <class V>
  static void scales(const uint8_t*, const float* h, float* a, float* o) { a[0] = h[0]; o[0] = 0; }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return V::load_i8(c + v0); }
};

// ---- 256-weight super-blocks (K-quants). Weight v = 128 n + 32 r + l (n < 2, r < 4,
// l < 32) of Q2_K, Q3_K and Q6_K takes its low bits from byte l of the n-th group of 32 (Q2_K,
// Q3_K: bits 2r, 2r + 1; Q6_K: 64-byte groups, nibble r / 2 of byte 32 (r % 2) + l); Q4_K and
// Q5_K weight 32 s + l takes nibble s % 2 of byte 32 (s / 2) + l.

// The 2-bit field r of byte l of group n (Q2_K, Q3_K): the low bits of weight v.
template <class V, int v0>
inline typename V::I crumbs(const uint8_t* qs) {
  constexpr int n = v0 / 128, r = v0 % 128 / 32, l = v0 % 32;
  return V::and_(V::template srl<2 * r>(V::load_u8(qs + 32 * n + l)), 3);
}

inline int crumb(const uint8_t* qs, int v) {
  return (qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32))) & 3;
}

// Q2_K: codes scales[16] (low nibble: scale, high: min, per 16 weights), qs[64]; halves d, dmin.
struct Q2_K {
  static constexpr int64_t kQType = kQ2_K, kValues = 256, kCodeBytes = 80, kHalves = 2;
  static constexpr int64_t kHalvesAt = 80;  // byte offset of the float16 scales
  static constexpr int kSpan = 16, kBits = 2, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int v = 0; v < 256; ++v) {
      const int s = c[v / 16];
      const float dl = h[0] * static_cast<float>(s & 15), ml = h[1] * static_cast<float>(s >> 4);
      w[v] = dl * static_cast<float>(crumb(c + 16, v)) - ml;
    }
  }
  template <class V>
  static void scales(const uint8_t* c, const float* h, float* a, float* o) {
    for (int s = 0; s < 16; s += V::W) {
      const auto b = V::load_u8(c + s);
      V::store(a + s, V::scaled(V::and_(b, 15), h[0]));
      V::store(o + s, V::scaled(V::template srl<4>(b), -h[1]));
    }
  }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return crumbs<V, v0>(c + 16); }
};

// Q3_K: codes hmask[32] (bit v / 32 of byte v % 32: 1 adds 4), qs[64], scales[12]; halves d.
struct Q3_K {
  static constexpr int64_t kQType = kQ3_K, kValues = 256, kCodeBytes = 108, kHalves = 1;
  static constexpr int64_t kHalvesAt = 108;  // byte offset of the float16 scales
  static constexpr int kSpan = 16, kBits = 3, kOffset = -4;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int v = 0; v < 256; ++v) {
      const float dl = h[0] * static_cast<float>(scale_q3k(v / 16, c + 96));
      const int high = (c[v % 32] >> (v / 32)) & 1;
      w[v] = dl * static_cast<float>(crumb(c + 32, v) - (high ? 0 : 4));
    }
  }
  template <class V>
  static void scales(const uint8_t* c, const float* h, float* a, float* o) {
    // The 16 six-bit scales unpacked with word operations (`scale_q3k` is the reference).
    uint32_t u[4];
    std::memcpy(u, c + 96, 12);
    constexpr uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t high = u[2];
    u[2] = ((u[0] >> 4) & m4) | (((high >> 4) & m2) << 4);
    u[3] = ((u[1] >> 4) & m4) | (((high >> 6) & m2) << 4);
    u[0] = (u[0] & m4) | ((high & m2) << 4);
    u[1] = (u[1] & m4) | (((high >> 2) & m2) << 4);
    uint8_t sc[16];
    std::memcpy(sc, u, 16);
    for (int s = 0; s < 16; ++s) {
      a[s] = h[0] * static_cast<float>(static_cast<int>(sc[s]) - 32);
      o[s] = 0;
    }
  }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) {
    const auto high = V::and_(V::template srl<v0 / 32>(V::load_u8(c + v0 % 32)), 1);
    return V::or_(crumbs<V, v0>(c + 32), V::template sll<2>(high));
  }
};

inline int nibble_k(const uint8_t* qs, int v) {
  const int b = qs[32 * (v / 64) + v % 32];
  return v / 32 % 2 ? b >> 4 : b & 15;
}

template <class V, int v0, bool kExact>
inline typename V::I nibbles_k(const uint8_t* qs) {
  const auto q = V::load_u8(qs + 32 * (v0 / 64) + v0 % 32);
  if constexpr (v0 / 32 % 2) return V::template srl<4>(q);
  else if constexpr (kExact) return V::and_(q, 15);
  else return V::nibble(q);
}

// The 8 scales, then the 8 mins, of a Q4_K / Q5_K super-block's 12 scale bytes, unpacked
// with word operations (as ggml's kernels do; `scale_min_k4` is the reference).
inline void unpack_k4(const uint8_t* s, uint8_t* out) {
  uint32_t u[4];
  std::memcpy(u, s, 12);
  constexpr uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
  u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
  const uint32_t mins = u[1] & m6;
  u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);
  u[2] = mins;
  u[0] &= m6;
  std::memcpy(out, u, 16);
}

inline void scales_k4(const uint8_t* s, const float* h, float* a, float* o) {
  uint8_t u[16];
  unpack_k4(s, u);
  for (int j = 0; j < 8; ++j) {
    a[j] = h[0] * static_cast<float>(u[j]);
    o[j] = -(h[1] * static_cast<float>(u[j + 8]));
  }
}

// Q4_K: codes scales[12], qs[128]; halves d, dmin. w = d sc q - dmin m per 32 weights.
struct Q4_K {
  static constexpr int64_t kQType = kQ4_K, kValues = 256, kCodeBytes = 140, kHalves = 2;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 4, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int v = 0; v < 256; ++v) {
      int sc, m;
      scale_min_k4(v / 32, c, sc, m);
      const float d = h[0] * static_cast<float>(sc), dm = h[1] * static_cast<float>(m);
      w[v] = d * static_cast<float>(nibble_k(c + 12, v)) - dm;
    }
  }
  template <class V>
  static void scales(const uint8_t* c, const float* h, float* a, float* o) { scales_k4(c, h, a, o); }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) { return nibbles_k<V, v0, false>(c + 12); }
};

// Q5_K: codes scales[12], qh[32] (bit v / 32 of byte v % 32: the fifth bit), qs[128].
struct Q5_K {
  static constexpr int64_t kQType = kQ5_K, kValues = 256, kCodeBytes = 172, kHalves = 2;
  static constexpr int64_t kHalvesAt = 0;  // byte offset of the float16 scales
  static constexpr int kSpan = 32, kBits = 5, kOffset = 0;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int v = 0; v < 256; ++v) {
      int sc, m;
      scale_min_k4(v / 32, c, sc, m);
      const float d = h[0] * static_cast<float>(sc), dm = h[1] * static_cast<float>(m);
      const int q = nibble_k(c + 44, v) | (((c[12 + v % 32] >> (v / 32)) & 1) << 4);
      w[v] = d * static_cast<float>(q) - dm;
    }
  }
  template <class V>
  static void scales(const uint8_t* c, const float* h, float* a, float* o) { scales_k4(c, h, a, o); }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) {
    const auto high = V::and_(V::template srl<v0 / 32>(V::load_u8(c + 12 + v0 % 32)), 1);
    return V::or_(nibbles_k<V, v0, true>(c + 44), V::template sll<4>(high));
  }
};

// Q6_K: codes ql[128], qh[64], scales[16] (int8, per 16 weights); halves d.
struct Q6_K {
  static constexpr int64_t kQType = kQ6_K, kValues = 256, kCodeBytes = 208, kHalves = 1;
  static constexpr int64_t kHalvesAt = 208;  // byte offset of the float16 scales
  static constexpr int kSpan = 16, kBits = 6, kOffset = -32;
  static void reference(const uint8_t* c, const float* h, float* w) {
    for (int v = 0; v < 256; ++v) {
      const int n = v / 128, r = v % 128 / 32, l = v % 32;
      const int b = c[64 * n + 32 * (r % 2) + l];
      const int low = r < 2 ? b & 15 : b >> 4;
      const int high = (c[128 + 32 * n + l] >> (2 * r)) & 3;
      const float d = h[0] * static_cast<float>(static_cast<int8_t>(c[192 + v / 16]));
      w[v] = d * static_cast<float>((low | (high << 4)) - 32);
    }
  }
  template <class V>
  static void scales(const uint8_t* c, const float* h, float* a, float* o) {
    for (int s = 0; s < 16; s += V::W) {
      V::store(a + s, V::scaled(V::load_i8(c + 192 + s), h[0]));
      V::store(o + s, V::zero());
    }
  }
  template <class V, int v0>
  static typename V::I codes(const uint8_t* c) {
    constexpr int n = v0 / 128, r = v0 % 128 / 32, l = v0 % 32;
    const auto b = V::load_u8(c + 64 * n + 32 * (r % 2) + l);
    const auto low = r < 2 ? V::and_(b, 15) : V::template srl<4>(b);
    // The two high bits (2r, 2r + 1 of their byte) moved straight to bits 4 and 5.
    const auto hb = V::load_u8(c + 128 + 32 * n + l);
    const auto high = [&] {
      if constexpr (r >= 2) return V::template srl<2 * r - 4>(hb);
      else return V::template sll<4 - 2 * r>(hb);
    }();
    return V::or_(low, V::and_(high, 48));
  }
};

// Bytes of a block of Fm in the GGUF, and where its codes start (after scales at its start).
template <class Fm>
constexpr int64_t block_bytes() { return Fm::kCodeBytes + 2 * Fm::kHalves; }
template <class Fm>
constexpr int64_t codes_at() { return Fm::kHalvesAt == 0 ? 2 * Fm::kHalves : 0; }

// The float16 scales of the block at p, as float32 (the second 0 where there is one).
template <class Fm>
inline void block_halves(const uint8_t* p, float* h) {
  c10::Half raw[2] = {};
  std::memcpy(raw, p + Fm::kHalvesAt, 2 * Fm::kHalves);
  h[0] = raw[0];
  h[1] = Fm::kHalves > 1 ? static_cast<float>(raw[1]) : 0.0f;
}

// The kValues weights of the GGUF block at p, by the format's scalar reference.
template <class Fm>
inline void expand_block(const uint8_t* p, float* w) {
  float h[2];
  block_halves<Fm>(p, h);
  Fm::reference(p + codes_at<Fm>(), h, w);
}

// Runs fn(F{}) for the format struct of `qtype`; false when there is none.
template <class Fn>
bool with_format(int64_t qtype, Fn&& fn) {
  switch (qtype) {
    case kQ4_0: fn(Q4_0{}); return true;
    case kQ4_1: fn(Q4_1{}); return true;
    case kQ5_0: fn(Q5_0{}); return true;
    case kQ5_1: fn(Q5_1{}); return true;
    case kQ8_0: fn(Q8_0{}); return true;
    case kQ2_K: fn(Q2_K{}); return true;
    case kQ3_K: fn(Q3_K{}); return true;
    case kQ4_K: fn(Q4_K{}); return true;
    case kQ5_K: fn(Q5_K{}); return true;
    case kQ6_K: fn(Q6_K{}); return true;
    default: return false;
  }
}

}  // namespace
