#include "node/runtime/gemv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "node/runtime/error.h"

namespace eesched::runtime {
namespace {

// Row r of the result is dot(W[r], x) * scale[r] (no scale for f32 weights). Weights are float
// or int8; the kernels below are written once for both.
template <typename T>
void gemv_rows_portable(const T* w, const float* scales, const float* x, float* y, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = w + r * cols;
    float s = 0.0f;
    for (int64_t k = 0; k < cols; ++k) s += static_cast<float>(row[k]) * x[k];
    y[r] = scales ? s * scales[r] : s;
  }
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Eight weights as f32 lanes: a plain load, or int8 sign-extended to int32 and converted.
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Four rows per pass: four independent read streams keep the memory system busy while x stays
// in L1, and the four FMA chains hide FMA latency.
template <typename T>
__attribute__((target("avx2,fma"))) void gemv_rows_avx2(const T* w, const float* scales, const float* x, float* y, int64_t cols,
                                                          int64_t r0, int64_t r1) {
  const int64_t vec_cols = cols - cols % 8;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const T* w0 = w + r * cols;
    const T* w1 = w0 + cols;
    const T* w2 = w1 + cols;
    const T* w3 = w2 + cols;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t k = 0; k < vec_cols; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      a0 = _mm256_fmadd_ps(load8(w0 + k), xv, a0);
      a1 = _mm256_fmadd_ps(load8(w1 + k), xv, a1);
      a2 = _mm256_fmadd_ps(load8(w2 + k), xv, a2);
      a3 = _mm256_fmadd_ps(load8(w3 + k), xv, a3);
    }
    float sum[4] = {horizontal_sum(a0), horizontal_sum(a1), horizontal_sum(a2), horizontal_sum(a3)};
    const T* rows[4] = {w0, w1, w2, w3};
    for (int i = 0; i < 4; ++i) {
      for (int64_t k = vec_cols; k < cols; ++k) sum[i] += static_cast<float>(rows[i][k]) * x[k];
      y[r + i] = scales ? sum[i] * scales[r + i] : sum[i];
    }
  }
  gemv_rows_portable(w, scales, x, y, cols, r, r1);
}

std::atomic<bool> blas_gemv{false};

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
    for (int64_t g = begin; g < end; ++g) {
      const int64_t r0 = g * 4, r1 = std::min(r0 + 4, rows);
      // The kernel indexes y by absolute row: hand it output row i's base.
      for (int64_t i = 0; i < m; ++i) kernel(w, scales, xp + i * cols, yp + i * rows, cols, r0, r1);
    }
  });
  return y;
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
  return has_avx2_fma() ? "avx2-fma" : "portable";
}

void use_blas_gemv(bool on) { blas_gemv = on; }

at::Tensor gemv(const at::Tensor& w, const at::Tensor& x) {
  if (w.dim() != 2 || x.dim() != 1 || w.size(1) != x.size(0) || w.scalar_type() != at::kFloat || x.scalar_type() != at::kFloat)
    throw Error("gemv: expected f32 W [rows, cols] and x [cols]");
  if (blas_gemv) return at::mv(w, x);
  const auto wc = w.contiguous();
  return run_rows(wc.data_ptr<float>(), nullptr, x, wc.size(0), wc.size(1));
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
  const auto qc = w.values.contiguous();
  const auto sc = w.scales.contiguous();
  return run_rows(qc.data_ptr<int8_t>(), sc.data_ptr<float>(), x, qc.size(0), qc.size(1));
}

at::Tensor matmul_few_rows(const at::Tensor& w, const at::Tensor& x) {
  if (w.dim() != 2 || x.dim() != 2 || w.size(1) != x.size(1) || w.scalar_type() != at::kFloat || x.scalar_type() != at::kFloat)
    throw Error("matmul_few_rows: expected f32 W [rows, cols] and X [m, cols]");
  const auto wc = w.contiguous();
  return run_rows(wc.data_ptr<float>(), nullptr, x, wc.size(0), wc.size(1));
}

at::Tensor matmul_int8(const QuantizedMatrix& w, const at::Tensor& x) {
  check_int8(w, x, 2, "matmul_int8");
  const auto qc = w.values.contiguous();
  const auto sc = w.scales.contiguous();
  const auto xc = x.contiguous();
  const int64_t m = xc.size(0), rows = qc.size(0), cols = qc.size(1);
  if (m == 0) return at::empty({0, rows}, at::kFloat);
  auto y = at::empty({m, rows}, at::kFloat);
  if (m <= kFewRows) return run_rows(qc.data_ptr<int8_t>(), sc.data_ptr<float>(), xc, rows, cols);
  // Tiles of ~256 KiB of f32 weights: widened once, then one BLAS call per tile.
  const int64_t tile = std::max<int64_t>(16, (256 * 1024) / (4 * cols));
  for (int64_t r = 0; r < rows; r += tile) {
    const int64_t n = std::min(tile, rows - r);
    auto wide = qc.narrow(0, r, n).to(at::kFloat).mul_(sc.narrow(0, r, n).unsqueeze(1));
    y.narrow(1, r, n).copy_(at::mm(xc, wide.t()));
  }
  return y;
}

}  // namespace eesched::runtime
