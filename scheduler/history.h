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
  // The machine it ran on, "<store>:<host>/threads=<n>": a store is one sitting of one machine,
  // and one machine at two thread counts is two hardware profiles (leave-one-machine-out holds
  // each out in turn).
  std::string machine;
  std::string started_at;  // its first run's start (ISO UTC): the order an online replay streams cases in
};

struct LoadOptions {
  bool require_all = false;      // keep only cases with every applicable arm measured
  std::string label;             // names the store in TaskCase::machine; empty: the file's stem
  int64_t min_code_version = 0;  // skip runs of older code (data/code_version.h); 0: every run
};

struct History {
  std::vector<TaskCase> cases;

  // Every (task, worker) of the store; `require_all` keeps only those with every applicable arm
  // measured, among the arms the store has runs of (what replay needs to know the oracle).
  static History load(data::Store& store, bool require_all);
  static History load(data::Store& store, const LoadOptions& options);
  // Several stores as one history (one per machine, say): worker and task ids are made distinct.
  void append(History other);
  // The distinct machines of its cases, in order of first appearance.
  std::vector<std::string> machines() const;
  std::size_t runs() const;  // measured (case, arm) pairs
};

// Arms ranked by their mean slowdown against each case's best, over the cases where each was
// measured (total latency is not comparable when applicability differs): the single best arm's
// ranking, best first.
std::vector<std::string> arms_by_mean_slowdown(const History& history);

// The feature vector of one case and arm.
std::vector<double> case_features(const TaskCase& c, const data::Arm& arm);

}  // namespace eesched::scheduler
