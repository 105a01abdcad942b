#include "node/runtime/gemv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>

#include "node/runtime/error.h"

namespace eesched::runtime {
namespace {

void gemv_rows_portable(const float* w, const float* x, float* y, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = w + r * cols;
    float s = 0.0f;
    for (int64_t k = 0; k < cols; ++k) s += row[k] * x[k];
    y[r] = s;
  }
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Four rows per pass: four independent read streams keep the memory system busy while x stays
// in L1, and the four FMA chains hide FMA latency.
__attribute__((target("avx2,fma"))) void gemv_rows_avx2(const float* w, const float* x, float* y, int64_t cols, int64_t r0,
                                                          int64_t r1) {
  const int64_t vec_cols = cols - cols % 8;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const float* w0 = w + r * cols;
    const float* w1 = w0 + cols;
    const float* w2 = w1 + cols;
    const float* w3 = w2 + cols;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t k = 0; k < vec_cols; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, a3);
    }
    float s0 = horizontal_sum(a0), s1 = horizontal_sum(a1), s2 = horizontal_sum(a2), s3 = horizontal_sum(a3);
    for (int64_t k = vec_cols; k < cols; ++k) {
      s0 += w0[k] * x[k];
      s1 += w1[k] * x[k];
      s2 += w2[k] * x[k];
      s3 += w3[k] * x[k];
    }
    y[r] = s0, y[r + 1] = s1, y[r + 2] = s2, y[r + 3] = s3;
  }
  gemv_rows_portable(w, x, y, cols, r, r1);
}

std::atomic<bool> blas_gemv{false};

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
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
  const auto xc = x.contiguous();
  const int64_t rows = wc.size(0), cols = wc.size(1);
  auto y = at::empty({rows}, at::kFloat);
  const float* wp = wc.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const auto kernel = has_avx2_fma() ? gemv_rows_avx2 : gemv_rows_portable;
  // Blocks of 4-row groups; the grain keeps tiny matrices on one thread.
  const int64_t groups = (rows + 3) / 4;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    kernel(wp, xp, yp, cols, begin * 4, std::min(end * 4, rows));
  });
  return y;
}

}  // namespace eesched::runtime
