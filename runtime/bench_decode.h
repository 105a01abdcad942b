#pragma once
// Batch-1 decoding speed against this machine's memory roofline: decoding one token streams
// every weight once, so weight bytes x tokens/s can at best approach the copy bandwidth.
#include <cstdint>
#include <vector>

namespace eesched::runtime {

class LlamaModel;

struct DecodeBenchOptions {
  int64_t prompt_tokens = 128;
  int64_t new_tokens = 64;
  uint64_t seed = 0;
};

struct DecodeBenchResult {
  double prefill_tokens_per_s = 0;
  double decode_ms_per_token = 0;
  double decode_tokens_per_s = 0;
  double weight_bytes = 0;
  double decode_gb_per_s = 0;     // weight bytes streamed per second while decoding
  double blas_decode_ms_per_token = 0;  // the same decode with BLAS sgemv instead of gemv.h (0: a 16-bit model, none)
  double blas_roofline_fraction = 0;
  double copy_gb_per_s = 0;       // memory copy bandwidth, (read + written) bytes per second
  double roofline_fraction = 0;   // decode_gb_per_s / copy_gb_per_s
};

// Copies a buffer far larger than the caches with LibTorch's threads; best of `repeats`.
double measure_copy_bandwidth_gbps(int64_t bytes = int64_t{256} << 20, int repeats = 5);

DecodeBenchResult bench_decode(const LlamaModel& model, const DecodeBenchOptions& options);

// One decoding step of `batch` sequences at once (the KV cache path continuous batching runs),
// best of two generations of options.new_tokens tokens from prompts of options.prompt_tokens.
struct BatchStepResult {
  int64_t batch = 0;
  double step_ms = 0;        // the whole batch's step
  double tokens_per_s = 0;   // batch x 1000 / step_ms
};
std::vector<BatchStepResult> bench_batch_steps(const LlamaModel& model, const std::vector<int64_t>& batches,
                                               const DecodeBenchOptions& options);

}  // namespace eesched::runtime
