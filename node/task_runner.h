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

// Runs `task` (its GenerationParams exactly as the client gave them) on `prompts` with the arm,
// stopping after the step that crosses time_limit_ms (0: none). Never throws for a failure of the
// run itself: that is recorded in the metrics.
RunMetrics execute_task(const accel::PreparedArm& arm, const data::TaskSpec& task,
                        const std::vector<std::vector<int64_t>>& prompts, double time_limit_ms = 0);


// The ids a task without text uses: `n` ids drawn from [3, vocab) seeded by the task id, so every
// run of the task (any arm, any machine) sees the same prompt.
std::vector<int64_t> synthetic_prompt(const std::string& task_id, int64_t n, int64_t vocab);

}  // namespace eesched::node
