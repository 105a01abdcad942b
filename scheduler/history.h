#pragma once
// History as the selector learns from it: every measured (task, worker, arm) with its feature
// vector (data/features.h, the one definition) and its latency, read from the performance store.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/arm.h"
#include "data/features.h"
#include "data/hardware.h"
#include "data/store.h"
#include "data/task.h"

namespace eesched::scheduler {

// One task on one worker: what a policy sees (no measurements) and what replay scores it with.
struct TaskCase {
  int64_t task_id = 0;
  int64_t worker_id = 0;
  data::TaskSpec spec;
  data::ModelRow model;
  std::optional<data::ModelRow> draft;
  data::HardwareProfile hardware;
  data::Landmarks landmarks;
  std::vector<data::Arm> arms;             // applicable (model-free rules) and measured, by name
  std::map<std::string, double> latency;   // arm -> data::arm_latency_ms of its runs; timeouts count at their time
};

struct History {
  std::vector<TaskCase> cases;

  // Every (task, worker) of the store; `require_all` keeps only those with every applicable arm
  // measured, among the arms the store has runs of (what replay needs to know the oracle).
  static History load(data::Store& store, bool require_all);
  std::size_t runs() const;  // measured (case, arm) pairs
};

// Arms ranked by their mean slowdown against each case's best, over the cases where each was
// measured (total latency is not comparable when applicability differs): the single best arm's
// ranking, best first.
std::vector<std::string> arms_by_mean_slowdown(const History& history);

// The feature vector of one case and arm.
std::vector<double> case_features(const TaskCase& c, const data::Arm& arm);

}  // namespace eesched::scheduler
