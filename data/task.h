#pragma once
// A task as the scheduler sees it: which model, how long a prompt, how it generates (data/
// generation.h) and which quality floor it accepts. Plain data, no LibTorch: the coordinator uses
// it without a runtime.
#include <cstdint>
#include <string>

#include "data/generation.h"

namespace eesched::data {

// `exact` admits lossless arms only (bitwise the model's greedy output, or its exact sampling
// distribution); `tolerant` admits lossy ones (int8, pruning) too.
enum class Quality { Exact, Tolerant };

// What "tolerant" means when a task says no more: a lossy arm may cost at most 5% more
// perplexity on held-out text than the lossless model (data/quality.h).
inline constexpr double kDefaultMaxPplRatio = 1.05;

const char* quality_name(Quality q);
Quality parse_quality(const std::string& name);  // throws data::Error

struct TaskSpec {
  std::string id;
  std::string model;             // a model directory, or a name resolved under a models directory
  std::string draft;             // optional draft model for speculative arms (same rules)
  std::string prompt;            // prompt text; empty when only prompt_tokens is given
  int64_t prompt_tokens = 0;     // prompt length in tokens (filled in once tokenized)
  int64_t batch = 1;
  GenerationParams generation;   // sampling and limits, carried unchanged to the runtime
  Quality quality = Quality::Exact;
  double max_ppl_ratio = kDefaultMaxPplRatio;  // tolerant only: the bound on a lossy arm's measured ratio

  bool greedy() const { return generation.greedy(); }
  bool has_draft() const { return !draft.empty(); }
};

}  // namespace eesched::data
