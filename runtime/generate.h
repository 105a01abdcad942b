#pragma once
// The generation loop: prefill, then one token per step per sequence, with or without the KV
// cache, until the task's max_new_tokens or one of its stop ids. Works on plaintext and encrypted models alike: it
// only ever sees token ids.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/sampling.h"

namespace eesched::runtime {

class LlamaModel;

struct GenerateOptions {
  GenerationParams generation;    // the task's sampling and limits, as the client asked (data/generation.h)
  bool kv_cache = true;           // false: recompute the whole sequence every step (`plain`)
  double time_limit_ms = 0;       // > 0: stop after the step that crosses it, finish_reason "timeout"
  // Draws to discard from each row's RNG before the first sample: a resumed task continues the
  // stream of the attempt it replaces (whose new ids now end its prompts), so seeded sampling
  // goes on exactly as one uninterrupted run would (one draw per sampled token; greedy draws none).
  // The plain loop only: speculative decoding (accel/speculative.cpp) draws a varying number per
  // token and ignores it.
  int64_t rng_skip = 0;
  // Optional, for streaming: called on the generating thread after every step that produced a
  // token, with the ids each row produced in that step (one per row for the plain loop, the
  // accepted run of a speculative round), the stop id excluded and nothing for a row that has
  // finished. Concatenated over the calls, each row is GenerateResult::tokens exactly. It runs
  // between steps, so keep it short; an exception it throws ends the generation and propagates.
  std::function<void(const std::vector<std::vector<int64_t>>& new_ids_per_row)> on_tokens;
};

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // new tokens per sequence, stop id excluded
  std::vector<std::string> finish_reason;    // "stop", "length" or "timeout" per sequence
  double ttft_ms = 0;                        // start to the first sampled token (prefill)
  std::vector<double> step_ms;               // each later decoding step (whole batch)
  double total_ms = 0;

  int64_t new_tokens() const;                // summed over the batch
  double ms_per_token() const;               // mean decoding step, after the first token
  double tokens_per_s() const;               // new tokens / total wall time
};

GenerateResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                        const GenerateOptions& options);

}  // namespace eesched::runtime
