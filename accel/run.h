#pragma once
// Running a prepared arm: the plain generation loop, with or without the KV cache, or
// speculative decoding when the arm says so.
#include <optional>
#include <vector>

#include "accel/registry.h"
#include "runtime/generate.h"

namespace eesched::accel {

struct ArmResult {
  runtime::GenerateResult generation;
  std::optional<double> acceptance_rate;  // speculative arms only
};

// Generates with the arm's models and plan; options.kv_cache is the arm's. Speculative arms take
// exactly one prompt (arm_refusal says so before a task gets here). options.on_tokens streams
// every arm's tokens as they are produced (runtime/generate.h).
ArmResult run_arm(const PreparedArm& arm, const std::vector<std::vector<int64_t>>& prompts, runtime::GenerateOptions options);

}  // namespace eesched::accel
