#pragma once
// Placement: which worker runs a task, with which arm. One pure function, called by the
// coordinator for every dispatch and by replay and cross-validation for every historical case,
// so the figures they report describe the decisions the daemon makes: the same admissible arms
// (capability and quality floor), the same policy (the selector's anchored choice, or a
// baseline), the same exploration.
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/arm.h"
#include "data/features.h"
#include "data/hardware.h"
#include "data/quality.h"
#include "data/store.h"
#include "data/task.h"
#include "scheduler/history.h"
#include "scheduler/policies.h"
#include "scheduler/selector.h"

namespace eesched::scheduler {

// A live worker that holds the task's model and can take a task now.
struct WorkerState {
  int64_t id = 0;                       // the caller's handle for it (the coordinator: its connection)
  data::HardwareProfile hardware;
  data::ModelRow model;                 // the task's model as this worker holds it, with its measured quality
  std::optional<data::ModelRow> draft;  // the worker's draft model, if it has one
  data::Landmarks landmarks;            // measured acceptance rates of its draft pairs
  double queue_ms = 0;                  // predicted wait before a new task starts on it (worker_pool.h)
  int64_t occupancy = 1;                // tasks its batch would run with a new one in it
  double cost_weight = 1;
  std::string profile;                  // profile_key(*this), when the caller caches it; empty: computed per decision
};

// What makes two workers indistinguishable to a policy: every input of the task's features and
// of admissibility (not the queue). Alike workers are scored once.
std::string profile_key(const WorkerState& w);

struct PlacementTask {
  int64_t task_id = 0;
  data::TaskSpec spec;     // lengths, sampling, quality floor; spec.draft is set per worker
  std::string pinned_arm;  // a client's arm, or empty: the policy chooses
  // What replay knows and the daemon does not: each arm's measured latency (only the oracle
  // reads it).
  std::map<std::string, double> measured;
};

// Workers are there but none may ever run the task as asked (a pinned arm no worker can run, no
// arm within the quality floor): waiting for a free worker would not help.
class Unplaceable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The arms among `candidates` that may serve `spec` on a model with these measured qualities:
// the model-free rules (data::arm_refusal) and the quality floor (data::quality_refusal). When
// none remains and `why_none` is given, it gets the first refusal.
std::vector<data::Arm> admissible_arms(const std::vector<data::Arm>& candidates, const data::TaskSpec& spec,
                                       const data::QualityTable& quality, std::string* why_none = nullptr);

// The decision. nullopt when `workers` is empty. `candidates`: the arms the policy may consider
// (a selector's arms; ignored when the task pins one). With probability `explore` (unpinned
// tasks only) another admissible arm on the chosen worker is run instead (Policy::explore_arm: the
// selector's are directed at the arms it is least sure are slower), marked explored, so
// history keeps covering every arm. Workers alike in everything the policy sees are scored once.
// Throws Unplaceable (see above).
std::optional<Choice> place(const PlacementTask& task, const std::vector<const WorkerState*>& workers,
                            const std::vector<data::Arm>& candidates, const Policy& policy, double explore,
                            std::mt19937_64& rng);
std::optional<Choice> place(const PlacementTask& task, const std::vector<WorkerState>& workers,
                            const std::vector<data::Arm>& candidates, const Policy& policy, double explore,
                            std::mt19937_64& rng);

// A historical case placed as the coordinator would place it: on its own worker, nothing queued,
// no exploration, its measured arms as the candidates (replay and cross-validation).
Choice place_case(const TaskCase& c, const Policy& policy, std::mt19937_64& rng);

// The task on one worker, as a policy sees it there: its spec with the worker's draft, the
// worker's model, hardware and landmarks, and `arms`.
TaskCase case_on(const PlacementTask& task, const WorkerState& w, std::vector<data::Arm> arms);

// The worker state of a historical case (queue empty).
WorkerState worker_state(const TaskCase& c);

}  // namespace eesched::scheduler
