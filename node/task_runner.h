#pragma once
// Executing one task with one prepared arm, as a worker (or the sweep) does: the prompt ids are
// the ones the model expects (encrypted for an encrypted model), the result is the new ids
// and the measurements the performance store records.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "accel/registry.h"
#include "data/store.h"
#include "data/task.h"
#include "runtime/generate.h"

namespace eesched::node {

struct RunMetrics : data::RunMeasurement {
  std::vector<std::vector<int64_t>> tokens;  // per batch row
};

// Called after each decoding step with the new ids of each row (runtime::GenerateOptions::on_tokens).
using StepTokens = std::function<void(const std::vector<std::vector<int64_t>>& new_ids_per_row)>;

// Runs `task` (its GenerationParams exactly as the client gave them) on `prompts` with the arm,
// stopping after the step that crosses time_limit_ms (0: none); on_tokens, when given, sees the
// tokens as they are produced. rng_skip: a resumed task's net::Assign::resume_from (the new ids
// earlier attempts produced, now ending each prompt), skipped in each row's sampling stream
// (runtime::GenerateOptions::rng_skip). Never throws for a failure of the run itself (an
// exception of on_tokens included: it ends the run): that is recorded in the metrics.
RunMetrics execute_task(const accel::PreparedArm& arm, const data::TaskSpec& task,
                        const std::vector<std::vector<int64_t>>& prompts, double time_limit_ms = 0,
                        StepTokens on_tokens = nullptr, int64_t rng_skip = 0);

// The measurements of a finished generation (one row per prompt), as execute_task records them:
// failed with "timeout after N ms" when a row timed out. Stamps ended_at and the peak RSS.
RunMetrics run_metrics(const runtime::GenerateResult& g, std::optional<double> acceptance_rate, double time_limit_ms,
                       std::string started_at);

// The ids a task without text uses: `n` ids drawn from [3, vocab) seeded by the task id, so every
// run of the task (any arm, any machine) sees the same prompt.
std::vector<int64_t> synthetic_prompt(const std::string& task_id, int64_t n, int64_t vocab);

}  // namespace eesched::node
