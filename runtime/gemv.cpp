#include "runtime/gemv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

// Row r of the result is dot(W[r], x) * scale[r] (no scale for float weights). The float kernels
// are written once for f32, bf16, f16 and int8 weights (int8 weights run the integer kernels
// further down at batch 1); 16-bit weights are widened to f32 in registers, exactly.
//
// The portable loop is for CPUs without AVX2, FMA and F16C.
template <typename T>
void gemv_rows_portable(const T* w, const float* scales, const float* x, float* y, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = w + r * cols;
    float s = 0.0f;
    for (int64_t k = 0; k < cols; ++k) s += static_cast<float>(row[k]) * x[k];
    y[r] = scales ? s * scales[r] : s;
  }
}

// The vector path needs AVX2, FMA and F16C (f16 weights; every AVX2 CPU has F16C, and the
// f32, bf16 and int8 instantiations emit no F16C instruction). An AVX-512 path is not written
// here: this machine cannot run it (issue 19 does AVX-512 where it can be tested).
#define EESCHED_VECTOR_TARGET __attribute__((target("avx2,fma,f16c")))

EESCHED_VECTOR_TARGET inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Eight weights as f32 lanes: a plain load; int8 sign-extended to int32 and converted; bf16
// zero-extended to 32 bits and shifted into the high half (bf16 is the top half of an f32);
// f16 converted by F16C. All exact.
EESCHED_VECTOR_TARGET inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
EESCHED_VECTOR_TARGET inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
EESCHED_VECTOR_TARGET inline __m256 load8(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
EESCHED_VECTOR_TARGET inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// How many rows one pass streams at once, and how far ahead it prefetches, per weight type.
// One core's bandwidth is bounded by the cache misses it keeps in flight, and the out-of-order
// window holds only so many loads. f32 weights bring a cache line per two loads: eight rows in
// flight reach 15-17 GB/s on one core here, four rows 13-14 (OpenBLAS's sgemv, four columns at a
// time, 13-15), and software prefetch does not help. 16-bit weights need twice the instructions
// per line (load, widen, FMA), so fewer lines fit in the window; there prefetching two groups
// ahead is what keeps the misses in flight, and more rows gain nothing (tools: bench-decode).
template <typename T>
struct RowBlocking {
  static constexpr int kRows = 4;
  static constexpr int64_t kPrefetchRows = 8;
};
template <>
struct RowBlocking<float> {
  static constexpr int kRows = 8;
  static constexpr int64_t kPrefetchRows = 0;
};

// Rows [r, r + R): one accumulator per row, eight columns (one vector) at a time, in column
// order. Every R and every weight type add a row's products in the same order, so a bf16 model
// computes bit for bit what its f32 widening computes, whichever blocking each type runs.
template <typename T, int R>
EESCHED_VECTOR_TARGET inline void gemv_block_avx2(const T* w, const float* scales, const float* x, float* y, int64_t cols,
                                                  int64_t r, const char* ahead) {
  constexpr int64_t kPrefetchRows = RowBlocking<T>::kPrefetchRows;
  const int64_t cols16 = cols - cols % 16, cols8 = cols - cols % 8;
  const T* row = w + r * cols;
  __m256 a[R];
  for (int i = 0; i < R; ++i) a[i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k < cols16; k += 16) {
    if constexpr (kPrefetchRows > 0) {
      // This step's share of the group kPrefetchRows ahead: R rows x 16 columns.
      for (int64_t line = 0; line < R * 16 * static_cast<int64_t>(sizeof(T)) / 64; ++line)
        _mm_prefetch(ahead + R * static_cast<int64_t>(sizeof(T)) * k + 64 * line, _MM_HINT_T0);
    }
    const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
    for (int i = 0; i < R; ++i) a[i] = _mm256_fmadd_ps(load8(row + i * cols + k), xa, a[i]);
    for (int i = 0; i < R; ++i) a[i] = _mm256_fmadd_ps(load8(row + i * cols + k + 8), xb, a[i]);
  }
  for (; k < cols8; k += 8) {
    const __m256 xa = _mm256_loadu_ps(x + k);
    for (int i = 0; i < R; ++i) a[i] = _mm256_fmadd_ps(load8(row + i * cols + k), xa, a[i]);
  }
  for (int i = 0; i < R; ++i) {
    float sum = horizontal_sum(a[i]);
    const T* ri = row + i * cols;
    for (int64_t c = cols8; c < cols; ++c) sum = std::fma(static_cast<float>(ri[c]), x[c], sum);  // explicit: same for every T
    y[r + i] = scales ? sum * scales[r + i] : sum;
  }
}

// Several rows of X at once (continuous batching, speculative verification): four weight rows
// times M rows of X, 4 x M accumulators, each added in column order exactly as
// gemv_block_avx2 adds it, so every row of X gets bit for bit what it gets alone. One row of X
// at a time would be one accumulator per dot product (four with four weight rows), bound by FMA
// latency rather than by memory: a batch of eight then cost four decoding steps instead of one.
template <typename T, int M>
EESCHED_VECTOR_TARGET inline void gemm_tile_avx2(const T* w, const float* scales, const float* const* xs, float* const* ys,
                                                 int64_t cols, int64_t r) {
  constexpr int R = 4;
  const int64_t cols8 = cols - cols % 8;
  const T* row = w + r * cols;
  __m256 a[R][M];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < M; ++j) a[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < cols8; k += 8) {
    __m256 xk[M];
    for (int j = 0; j < M; ++j) xk[j] = _mm256_loadu_ps(xs[j] + k);
    for (int i = 0; i < R; ++i) {
      const __m256 wk = load8(row + i * cols + k);
      for (int j = 0; j < M; ++j) a[i][j] = _mm256_fmadd_ps(wk, xk[j], a[i][j]);
    }
  }
  for (int i = 0; i < R; ++i) {
    const T* ri = row + i * cols;
    for (int j = 0; j < M; ++j) {
      float sum = horizontal_sum(a[i][j]);
      for (int64_t c = cols8; c < cols; ++c) sum = std::fma(static_cast<float>(ri[c]), xs[j][c], sum);
      ys[j][r + i] = scales ? sum * scales[r + i] : sum;
    }
  }
}

// Rows [r0, r1) of W times m rows of X (row i at x + i * cols, its output at y + i * y_stride).
template <typename T>
EESCHED_VECTOR_TARGET void gemm_rows_avx2(const T* w, const float* scales, const float* x, float* y, int64_t cols, int64_t y_stride,
                                          int64_t m, int64_t r0, int64_t r1) {
  constexpr int M = 2;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    int64_t i = 0;
    for (; i + M <= m; i += M) {
      const float* xs[M] = {x + i * cols, x + (i + 1) * cols};
      float* ys[M] = {y + i * y_stride, y + (i + 1) * y_stride};
      gemm_tile_avx2<T, M>(w, scales, xs, ys, cols, r);
    }
    for (; i < m; ++i) {
      const float* xs[1] = {x + i * cols};
      float* ys[1] = {y + i * y_stride};
      gemm_tile_avx2<T, 1>(w, scales, xs, ys, cols, r);
    }
  }
  for (; r < r1; ++r)
    for (int64_t i = 0; i < m; ++i) gemv_block_avx2<T, 1>(w, scales, x + i * cols, y + i * y_stride, cols, r, nullptr);
}

template <typename T>
EESCHED_VECTOR_TARGET void gemv_rows_avx2(const T* w, const float* scales, const float* x, float* y, int64_t cols,
                                          int64_t r0, int64_t r1) {
  constexpr int R = RowBlocking<T>::kRows;
  constexpr int64_t kPrefetchRows = RowBlocking<T>::kPrefetchRows;
  int64_t r = r0;
  for (; r + R <= r1; r += R) {
    const int64_t target = std::max<int64_t>(r, std::min(r + kPrefetchRows, r1 - R));
    gemv_block_avx2<T, R>(w, scales, x, y, cols, r, reinterpret_cast<const char*>(w + target * cols));
  }
  for (; r < r1; ++r) gemv_block_avx2<T, 1>(w, scales, x, y, cols, r, nullptr);
}

// int8 weights times int16 activations, in integers: widening int8 to f32 costs two
// conversions per eight weights and made the kernel compute-bound; widening to int16 and
// multiplying with vpmaddwd does sixteen multiply-adds per instruction. x is quantized per
// vector with one scale, max|x| / 32767 (relative error 1.5e-5, far below the weights' int8
// error), which depends only on the multiset of x: the EE permutations still commute.
// Integer sums are exact; they are flushed to f32 every 256 columns, well before int32 could
// overflow (16 vpmaddwd results of at most 2 * 127 * 32767 per lane).
struct QuantizedVector {
  std::vector<int16_t> values;
  float scale = 1.0f;
};

QuantizedVector quantize_vector_int16(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::abs(x[k]));
  QuantizedVector q;
  q.values.resize(static_cast<std::size_t>(n));
  if (amax == 0.0f) return q;  // all zero: any scale gives zeros
  q.scale = amax / 32767.0f;
  const float inv = 32767.0f / amax;
  for (int64_t k = 0; k < n; ++k) q.values[static_cast<std::size_t>(k)] = static_cast<int16_t>(std::lrint(x[k] * inv));
  return q;
}

void gemv_int8_rows_portable(const int8_t* w, const float* scales, const QuantizedVector& x, float* y, int64_t cols, int64_t r0,
                             int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = w + r * cols;
    int64_t s = 0;
    for (int64_t k = 0; k < cols; ++k) s += static_cast<int64_t>(row[k]) * x.values[static_cast<std::size_t>(k)];
    y[r] = static_cast<float>(s) * x.scale * scales[r];
  }
}

// Sixteen int8 weights as int16 lanes.
EESCHED_VECTOR_TARGET inline __m256i widen16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

EESCHED_VECTOR_TARGET void gemv_int8_rows_avx2(const int8_t* w, const float* scales, const QuantizedVector& x,
                                                               float* y, int64_t cols, int64_t r0, int64_t r1) {
  constexpr int64_t kFlush = 256;
  // Each group prefetches the group two ahead, one cache line (4 rows x 16 columns) per step: an
  // int8 row of 1-3 KiB ends before the hardware prefetcher has ramped up on it, and without
  // this the kernel read W at half the f32 kernel's bandwidth (1.6-2.1x faster than f32 at one
  // thread instead of 3-4.5x).
  constexpr int64_t kPrefetchRows = 8;
  const int16_t* xv = x.values.data();
  const int64_t cols16 = cols - cols % 16;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int8_t* rows[4] = {w + r * cols, w + (r + 1) * cols, w + (r + 2) * cols, w + (r + 3) * cols};
    const char* ahead = reinterpret_cast<const char*>(w + std::min(r + kPrefetchRows, r1 - 4) * cols);
    __m256 f[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t c0 = 0; c0 < cols16; c0 += kFlush) {
      const int64_t c1 = std::min(c0 + kFlush, cols16);
      __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256(), a3 = _mm256_setzero_si256();
      for (int64_t k = c0; k < c1; k += 16) {
        _mm_prefetch(ahead + 4 * k, _MM_HINT_T0);
        const __m256i xk = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xv + k));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(widen16(rows[0] + k), xk));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(widen16(rows[1] + k), xk));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(widen16(rows[2] + k), xk));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(widen16(rows[3] + k), xk));
      }
      f[0] = _mm256_add_ps(f[0], _mm256_cvtepi32_ps(a0));
      f[1] = _mm256_add_ps(f[1], _mm256_cvtepi32_ps(a1));
      f[2] = _mm256_add_ps(f[2], _mm256_cvtepi32_ps(a2));
      f[3] = _mm256_add_ps(f[3], _mm256_cvtepi32_ps(a3));
    }
    for (int i = 0; i < 4; ++i) {
      int64_t tail = 0;
      for (int64_t k = cols16; k < cols; ++k) tail += static_cast<int64_t>(rows[i][k]) * xv[k];
      y[r + i] = (horizontal_sum(f[i]) + static_cast<float>(tail)) * x.scale * scales[r + i];
    }
  }
  gemv_int8_rows_portable(w, scales, x, y, cols, r, r1);
}

EESCHED_VECTOR_TARGET float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
  }
  for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
  float s = horizontal_sum(_mm256_add_ps(s0, s1));
  for (; k < n; ++k) s = std::fma(a[k], b[k], s);
  return s;
}

EESCHED_VECTOR_TARGET void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(y + k, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
  for (; k < n; ++k) y[k] = std::fma(alpha, x[k], y[k]);
}

std::atomic<bool> blas_gemv{false};

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return yes;
}

// Y[i] = W X[i] for m rows of X [m, cols] -> Y [m, rows]. Rows of W are split over LibTorch's
// threads in 4-row groups; each group is multiplied with every row of X while it sits in L1, so W
// streams from memory once whatever m. The grain (in weight bytes) keeps small matrices on one
// thread.
template <typename T>
at::Tensor run_rows(const T* w, const float* scales, const at::Tensor& x, int64_t rows, int64_t cols) {
  const auto xc = x.contiguous();
  const int64_t m = x.dim() == 1 ? 1 : x.size(0);
  auto y = x.dim() == 1 ? at::empty({rows}, at::kFloat) : at::empty({m, rows}, at::kFloat);
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const auto kernel = has_avx2_fma() ? gemv_rows_avx2<T> : gemv_rows_portable<T>;
  const int64_t groups = (rows + 3) / 4;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, cols * static_cast<int64_t>(sizeof(T)) * m));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    if (m == 1) return kernel(w, scales, xp, yp, cols, begin * 4, std::min(end * 4, rows));
    if (has_avx2_fma()) return gemm_rows_avx2<T>(w, scales, xp, yp, cols, rows, m, begin * 4, std::min(end * 4, rows));
    for (int64_t g = begin; g < end; ++g) {
      const int64_t r0 = g * 4, r1 = std::min(r0 + 4, rows);
      // The kernel indexes y by absolute row: hand it output row i's base.
      for (int64_t i = 0; i < m; ++i) kernel(w, scales, xp + i * cols, yp + i * rows, cols, r0, r1);
    }
  });
  return y;
}

// run_rows for int8 weights: each row of X is quantized to int16 once, then the same 4-row
// blocking and threading.
at::Tensor run_rows_int8(const QuantizedMatrix& w, const at::Tensor& x) {
  const auto qc = w.values.contiguous();
  const auto sc = w.scales.contiguous();
  const auto xc = x.contiguous();
  const int64_t rows = qc.size(0), cols = qc.size(1);
  const int64_t m = x.dim() == 1 ? 1 : x.size(0);
  auto y = x.dim() == 1 ? at::empty({rows}, at::kFloat) : at::empty({m, rows}, at::kFloat);
  std::vector<QuantizedVector> xq;
  for (int64_t i = 0; i < m; ++i) xq.push_back(quantize_vector_int16(xc.data_ptr<float>() + i * cols, cols));
  const int8_t* wp = qc.data_ptr<int8_t>();
  const float* sp = sc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const auto kernel = has_avx2_fma() ? gemv_int8_rows_avx2 : gemv_int8_rows_portable;
  const int64_t groups = (rows + 3) / 4;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, cols * m));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    if (m == 1) return kernel(wp, sp, xq[0], yp, cols, begin * 4, std::min(end * 4, rows));
    for (int64_t g = begin; g < end; ++g) {
      const int64_t r0 = g * 4, r1 = std::min(r0 + 4, rows);
      for (int64_t i = 0; i < m; ++i) kernel(wp, sp, xq[static_cast<std::size_t>(i)], yp + i * rows, cols, r0, r1);
    }
  });
  return y;
}

// out[r - r0] = W[r] (* scale[r] for int8) widened to f32, for rows [r0, r1), in one pass over
// LibTorch's threads.
template <typename T>
void widen_rows(const T* w, const float* scales, int64_t cols, int64_t r0, int64_t r1, float* out) {
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, cols));
  at::parallel_for(r0, r1, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* src = w + r * cols;
      float* dst = out + (r - r0) * cols;
      if (scales) {
        const float s = scales[r];
        for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<float>(src[c]) * s;
      } else {
        for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<float>(src[c]);
      }
    }
  });
}

// Y = X W^T for a long X (prefill) and W not in f32: tiles of W's rows are widened to f32 in a
// scratch buffer and multiplied by BLAS, so W is never widened whole. A tile must be wide for
// BLAS to reach its speed: at 2 threads, 256 KiB tiles (85 rows of a 768-wide matrix) cost
// 1.5-2.9x an f32 matmul, 1-2 MiB tiles 1.1-1.4x, 16 MiB tiles (whole 110m/350m matrices)
// 0.95-1.14x.
template <typename T>
at::Tensor matmul_widened_tiles(const T* w, const float* scales, const at::Tensor& xc, int64_t rows, int64_t cols) {
  const int64_t m = xc.size(0);
  const int64_t tile = std::min(rows, std::max<int64_t>(64, kWidenTileBytes / (4 * cols)));
  auto wide = at::empty({tile, cols}, at::kFloat);
  if (tile == rows) {
    widen_rows(w, scales, cols, 0, rows, wide.data_ptr<float>());
    return at::mm(xc, wide.t());
  }
  auto y = at::empty({m, rows}, at::kFloat);
  for (int64_t r = 0; r < rows; r += tile) {
    const int64_t n = std::min(tile, rows - r);
    auto part = wide.narrow(0, 0, n);
    widen_rows(w, scales, cols, r, r + n, part.data_ptr<float>());
    y.narrow(1, r, n).copy_(at::mm(xc, part.t()));
  }
  return y;
}

bool is_float_weight(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

// run_rows on a float matrix in its own dtype.
at::Tensor run_float_rows(const at::Tensor& w, const at::Tensor& x) {
  const auto wc = w.contiguous();
  const int64_t rows = wc.size(0), cols = wc.size(1);
  switch (wc.scalar_type()) {
    case at::kBFloat16: return run_rows(wc.data_ptr<c10::BFloat16>(), nullptr, x, rows, cols);
    case at::kHalf: return run_rows(wc.data_ptr<c10::Half>(), nullptr, x, rows, cols);
    default: return run_rows(wc.data_ptr<float>(), nullptr, x, rows, cols);
  }
}

void check_int8(const QuantizedMatrix& w, const at::Tensor& x, int64_t x_dim, const char* what) {
  const auto& q = w.values;
  if (q.dim() != 2 || q.scalar_type() != at::kChar || w.scales.scalar_type() != at::kFloat || w.scales.numel() != q.size(0) ||
      x.dim() != x_dim || x.size(-1) != q.size(1) || x.scalar_type() != at::kFloat)
    throw Error(std::string(what) + ": expected int8 W [rows, cols], f32 scales [rows] and f32 x [..., cols]");
}

}  // namespace

const char* gemv_kernel() {
  if (blas_gemv) return "blas";
  return has_avx2_fma() ? "avx2-fma-f16c" : "portable";
}

void use_blas_gemv(bool on) { blas_gemv = on; }

float dot(const float* a, const float* b, int64_t n) {
  if (has_avx2_fma()) return dot_avx2(a, b, n);
  float s = 0.0f;
  for (int64_t k = 0; k < n; ++k) s = std::fma(a[k], b[k], s);
  return s;
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  if (has_avx2_fma()) return axpy_avx2(alpha, x, y, n);
  for (int64_t k = 0; k < n; ++k) y[k] = std::fma(alpha, x[k], y[k]);
}

at::Tensor gemv(const at::Tensor& w, const at::Tensor& x) {
  if (w.dim() != 2 || x.dim() != 1 || w.size(1) != x.size(0) || !is_float_weight(w.scalar_type()) || x.scalar_type() != at::kFloat)
    throw Error("gemv: expected W [rows, cols] in f32, bf16 or f16 and f32 x [cols]");
  if (blas_gemv && w.scalar_type() == at::kFloat) return at::mv(w, x);
  return run_float_rows(w, x);
}

QuantizedMatrix quantize_rows_int8(const at::Tensor& w) {
  if (w.dim() != 2) throw Error("quantize_rows_int8: expected a matrix");
  const auto wf = w.to(at::kFloat).contiguous();
  // An all-zero row gets scale 1 (its values quantize to 0 either way).
  auto scales = wf.abs().amax(1) / 127.0;
  scales = at::where(scales > 0, scales, at::ones_like(scales));
  auto values = at::round(wf / scales.unsqueeze(1)).clamp(-127, 127).to(at::kChar).contiguous();
  return {values, scales.contiguous()};
}

at::Tensor gemv_int8(const QuantizedMatrix& w, const at::Tensor& x) {
  check_int8(w, x, 1, "gemv_int8");
  return run_rows_int8(w, x);
}

at::Tensor matmul_few_rows(const at::Tensor& w, const at::Tensor& x) {
  if (w.dim() != 2 || x.dim() != 2 || w.size(1) != x.size(1) || !is_float_weight(w.scalar_type()) || x.scalar_type() != at::kFloat)
    throw Error("matmul_few_rows: expected W [rows, cols] in f32, bf16 or f16 and f32 X [m, cols]");
  return run_float_rows(w, x);
}

at::Tensor matmul_int8(const QuantizedMatrix& w, const at::Tensor& x) {
  check_int8(w, x, 2, "matmul_int8");
  const auto qc = w.values.contiguous();
  const auto sc = w.scales.contiguous();
  const auto xc = x.contiguous();
  const int64_t m = xc.size(0), rows = qc.size(0), cols = qc.size(1);
  if (m == 0) return at::empty({0, rows}, at::kFloat);
  if (m <= kInt8KernelRows) return run_rows_int8(w, xc);
  return matmul_widened_tiles(qc.data_ptr<int8_t>(), sc.data_ptr<float>(), xc, rows, cols);
}

at::Tensor matmul_float(const at::Tensor& w, const at::Tensor& x) {
  if (w.dim() != 2 || x.dim() != 2 || w.size(1) != x.size(1) || !is_float_weight(w.scalar_type()) || x.scalar_type() != at::kFloat)
    throw Error("matmul_float: expected W [rows, cols] in f32, bf16 or f16 and f32 X [m, cols]");
  const int64_t m = x.size(0), rows = w.size(0), cols = w.size(1);
  if (m <= kFewRows) return matmul_few_rows(w, x);
  const auto xc = x.contiguous();
  if (w.scalar_type() == at::kFloat) return at::mm(xc, w.t());
  const auto wc = w.contiguous();
  if (w.scalar_type() == at::kBFloat16) return matmul_widened_tiles(wc.data_ptr<c10::BFloat16>(), nullptr, xc, rows, cols);
  return matmul_widened_tiles(wc.data_ptr<c10::Half>(), nullptr, xc, rows, cols);
}

}  // namespace eesched::runtime
