#include "node/assignment.h"

#include <algorithm>
#include <cstdint>

#include "node/task_runner.h"

namespace eesched::node {

std::string external_task_id(const net::Endpoint& coordinator, const net::Assign& a) {
  return coordinator.str() + "#" + std::to_string(a.task_id);
}

data::TaskSpec task_spec(const net::Endpoint& coordinator, const net::Assign& a, const data::Arm& arm) {
  data::TaskSpec spec;
  spec.id = external_task_id(coordinator, a);
  spec.model = a.model;
  spec.draft = a.draft;
  for (const auto& row : a.prompt_ids) spec.prompt_tokens = std::max<int64_t>(spec.prompt_tokens, static_cast<int64_t>(row.size()));
  spec.batch = static_cast<int64_t>(a.prompt_ids.size());
  spec.generation = a.generation;
  spec.quality = arm.lossless() ? data::Quality::Exact : data::Quality::Tolerant;
  return spec;
}

net::Result result_of(const net::Assign& a, const RunMetrics& m) {
  net::Result r;
  r.task_id = a.task_id;
  r.attempt = a.attempt;
  static_cast<data::RunMeasurement&>(r.report) = m;
  r.report.tokens = m.tokens;
  return r;
}

}  // namespace eesched::node
