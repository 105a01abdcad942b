#include "accel/run.h"

#include "accel/speculative.h"
#include "runtime/error.h"
#include "runtime/model.h"

namespace eesched::accel {

ArmResult run_arm(const PreparedArm& arm, const std::vector<std::vector<int64_t>>& prompts, runtime::GenerateOptions options) {
  options.kv_cache = arm.plan.kv_cache;
  ArmResult out;
  if (arm.plan.spec_k > 0) {
    if (!arm.models.draft) throw runtime::Error(arm.arm.name + " needs a draft model");
    if (prompts.size() != 1) throw runtime::Error(arm.arm.name + " runs batch 1 only (got " + std::to_string(prompts.size()) + " prompts)");
    SpeculativeStats stats;
    out.generation = speculative_generate(*arm.models.target, *arm.models.draft, prompts[0], options, arm.plan.spec_k, &stats);
    out.acceptance_rate = stats.acceptance_rate();
    return out;
  }
  out.generation = runtime::generate(*arm.models.target, prompts, options);
  return out;
}

}  // namespace eesched::accel
