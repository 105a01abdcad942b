#pragma once
// Matrix-vector product for batch-1 decoding, where every weight is read exactly once per token
// and speed is memory bandwidth: y = W x for a row-major W [rows, cols] in f32, bf16 or f16.
//
// Several rows are streamed at once with AVX2 FMA (eight for f32, four with prefetching for 16-bit
// weights): on one core as fast as OpenBLAS's sgemv or faster, and ~80-100% of the copy bandwidth
// (`eesched bench-decode` measures both side by side). 16-bit weights are
// streamed as stored and widened to f32 in registers (bf16: a 16-bit shift; f16: F16C), exactly,
// so a bf16 model reads half the bytes of its f32 copy and computes the same products.
// Accumulation is f32 throughout. CPUs without AVX2/FMA/F16C get a portable loop. (No AVX-512
// path here: it could not be tested on the machine this was written on.)
#include <ATen/core/Tensor.h>

namespace eesched::runtime {

// w: [rows, cols] f32, bf16 or f16; x: [cols] f32. Returns y: [rows] f32, computed over
// LibTorch's intra-op threads (contiguous row blocks per thread).
at::Tensor gemv(const at::Tensor& w, const at::Tensor& x);

// Y = X W^T for a few rows of X [m, cols] -> [m, rows] (m up to kFewRows): every group of four
// weight rows is multiplied with all m rows while it sits in L1 (two rows of X at a time, eight
// accumulators in flight), so W streams from memory once, as in gemv. Each row of Y is bit for
// bit what gemv gives its row of X alone (continuous batching relies on it). For speculative
// verification and small batches, where a GEMM would be memory-bound anyway and BLAS may first
// copy (pack) W.
inline constexpr int64_t kFewRows = 16;
at::Tensor matmul_few_rows(const at::Tensor& w, const at::Tensor& x);

// The same for any number of rows of X [m, cols] -> [m, rows] (prefill): up to kFewRows rows as
// matmul_few_rows; longer inputs with an f32 W go to BLAS, with a bf16/f16 W tile by tile (as
// matmul_int8 below: tiles of W widened to f32 in a scratch buffer, never the whole matrix).
at::Tensor matmul_float(const at::Tensor& w, const at::Tensor& x);

// Which kernel gemv() uses on this CPU: "avx2-fma-f16c" (f32, bf16, f16 and int8 weights),
// "portable", or "blas" when switched (f32 weights; 16-bit weights keep the streaming kernel).
const char* gemv_kernel();

// Symmetric per-output-channel (per-row) int8 quantization: scale[r] = max|W[r]| / 127,
// q = round(W / scale) in [-127, 127]. A row's scale depends only on the multiset of its values,
// so quantizing commutes exactly with permuting rows or columns (what EE does to weights).
struct QuantizedMatrix {
  at::Tensor values;  // [rows, cols] int8
  at::Tensor scales;  // [rows] f32
};
QuantizedMatrix quantize_rows_int8(const at::Tensor& w);

// y = (q x) * scale for an int8 matrix: streams one byte per weight instead of four, the point of
// int8 for memory-bound decoding. Products accumulate in f32 (x is not quantized).
at::Tensor gemv_int8(const QuantizedMatrix& w, const at::Tensor& x);

// Y = X W^T for int8 W and X [m, cols] -> [m, rows]. Up to kInt8KernelRows rows run the
// integer kernel, W streamed once as in matmul_few_rows (speculative verification, small
// batches); longer inputs (prefill) go tile by tile: kWidenTileBytes of W's rows are widened to
// f32 in a scratch buffer and multiplied by BLAS, so W is never widened whole (matmul_float
// shares this for bf16/f16 W).
inline constexpr int64_t kInt8KernelRows = 32;
inline constexpr int64_t kWidenTileBytes = int64_t{16} << 20;
at::Tensor matmul_int8(const QuantizedMatrix& w, const at::Tensor& x);

// The fused decoding step's vector kernels (runtime/decode_step.cpp), AVX2 where present:
// dot(a, b) over n floats, and y += alpha x.
float dot(const float* a, const float* b, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);

// Route gemv() through BLAS (at::mv) instead, process-wide: lets a benchmark compare the two
// kernels side by side in one run.
void use_blas_gemv(bool on);

}  // namespace eesched::runtime
