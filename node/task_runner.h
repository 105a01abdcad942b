#pragma once
// Executing one task with one prepared arm, as a worker (or the sweep) does: the prompt ids are
// the ones the model expects (encrypted for an encrypted model), the result is the new ids
// and the measurements the performance store records.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "accel/registry.h"
#include "data/store.h"
#include "data/task.h"

namespace eesched::node {

struct RunMetrics : data::RunMeasurement {
  std::vector<std::vector<int64_t>> tokens;  // per batch row
};

struct RunLimits {
  double time_limit_ms = 0;            // 0: none
  std::vector<int64_t> stop_ids;       // ids as the model sees them; empty: run to max_new_tokens
};

// Runs `task` (sampling, max_new_tokens) on `prompts` with the arm. Never throws for a failure
// of the run itself: that is recorded in the metrics.
RunMetrics execute_task(const accel::PreparedArm& arm, const data::TaskSpec& task,
                        const std::vector<std::vector<int64_t>>& prompts, const RunLimits& limits);


// The ids a task without text uses: `n` ids drawn from [3, vocab) seeded by the task id, so every
// run of the task (any arm, any machine) sees the same prompt.
std::vector<int64_t> synthetic_prompt(const std::string& task_id, int64_t n, int64_t vocab);

}  // namespace eesched::node
