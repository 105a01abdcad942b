#include "runtime/bench_decode.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "runtime/error.h"
#include "runtime/gemv.h"
#include "runtime/generate.h"
#include "runtime/model.h"

namespace eesched::runtime {
namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

double measure_copy_bandwidth_gbps(int64_t bytes, int repeats) {
  c10::InferenceMode guard;
  auto src = at::ones({bytes / 4}, at::kFloat);
  auto dst = at::empty_like(src);
  dst.copy_(src);  // fault the pages in before timing
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto t = Clock::now();
    dst.copy_(src);
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t) / 1e9);
  }
  return best;
}

DecodeBenchResult bench_decode(const LlamaModel& model, const DecodeBenchOptions& o) {
  const auto& c = model.config();
  if (o.prompt_tokens < 1 || o.new_tokens < 2) throw Error("bench-decode: need at least 1 prompt token and 2 new tokens");
  if (o.prompt_tokens + o.new_tokens > c.max_position_embeddings)
    throw Error("bench-decode: prompt + new tokens exceed max_position_embeddings " + std::to_string(c.max_position_embeddings));
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> pick(0, c.vocab_size - 1);
  std::vector<int64_t> prompt(static_cast<std::size_t>(o.prompt_tokens));
  for (auto& id : prompt) id = pick(rng);

  DecodeBenchResult r;
  r.copy_gb_per_s = measure_copy_bandwidth_gbps();
  r.weight_bytes = static_cast<double>(model.weight_bytes());

  GenerateOptions g;
  g.generation.max_new_tokens = std::min<int64_t>(8, o.new_tokens);
  generate(model, {prompt}, g);  // warm-up: allocator, thread pools, page faults

  {
    c10::InferenceMode guard;
    KVCache cache(c, 1, o.prompt_tokens);
    const auto t = Clock::now();
    model.forward(at::tensor(prompt, at::kLong).view({1, -1}), {o.prompt_tokens}, cache, LogitsAt::Last);
    r.prefill_tokens_per_s = static_cast<double>(o.prompt_tokens) / seconds_since(t);
  }
  g.generation.max_new_tokens = o.new_tokens;
  // Our kernel and BLAS's, alternated (best of three each) so both see the same machine state.
  // BLAS's sgemv takes f32 weights only: a 16-bit model has no BLAS figure (left 0).
  const bool compare_blas = model.dtype() == at::kFloat;
  double ours = 1e30, blas = 1e30;
  for (int i = 0; i < 3; ++i) {
    if (compare_blas) {
      use_blas_gemv(true);
      blas = std::min(blas, generate(model, {prompt}, g).ms_per_token());
      use_blas_gemv(false);
    }
    ours = std::min(ours, generate(model, {prompt}, g).ms_per_token());
  }
  if (compare_blas) {
    r.blas_decode_ms_per_token = blas;
    r.blas_roofline_fraction = r.weight_bytes / (blas / 1000.0) / 1e9 / r.copy_gb_per_s;
  }
  r.decode_ms_per_token = ours;
  r.decode_tokens_per_s = 1000.0 / r.decode_ms_per_token;
  r.decode_gb_per_s = r.weight_bytes * r.decode_tokens_per_s / 1e9;
  r.roofline_fraction = r.decode_gb_per_s / r.copy_gb_per_s;
  return r;
}

std::vector<BatchStepResult> bench_batch_steps(const LlamaModel& model, const std::vector<int64_t>& batches,
                                               const DecodeBenchOptions& o) {
  const auto& c = model.config();
  if (o.prompt_tokens + o.new_tokens > c.max_position_embeddings)
    throw Error("bench-decode: prompt + new tokens exceed max_position_embeddings " + std::to_string(c.max_position_embeddings));
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> pick(0, c.vocab_size - 1);
  std::vector<BatchStepResult> out;
  for (const int64_t b : batches) {
    if (b < 1 || b > kFewRows) throw Error("bench-decode: batch sizes must be 1.." + std::to_string(kFewRows));
    std::vector<std::vector<int64_t>> prompts(static_cast<std::size_t>(b), std::vector<int64_t>(static_cast<std::size_t>(o.prompt_tokens)));
    for (auto& p : prompts)
      for (auto& id : p) id = pick(rng);
    GenerateOptions g;
    g.generation.max_new_tokens = o.new_tokens;
    double best = 1e30;
    for (int i = 0; i < 2; ++i) best = std::min(best, generate(model, prompts, g).ms_per_token());
    out.push_back({b, best, 1000.0 * static_cast<double>(b) / best});
  }
  return out;
}

}  // namespace eesched::runtime
