#pragma once
// The policies replay compares: `meta` (the selector), and the baselines a skeptic would name —
// `random`, `single-best` (the arm best on the training data overall), `oracle` (the arm best as
// measured: the bound), `heuristic` (an expert's hand rules), `roofline` (an analytical cost
// model: data/roofline.h), and `knn` (a second learned baseline: the arm that did best on the k
// most similar training tasks).
//
// Every policy decides in two shapes from one definition: pick() chooses an arm for one case
// (replay, cross-validation) and choose() a (worker, arm) among live workers (the coordinator,
// through scheduler/placement.h); pick() is choose() on the case's own worker with nothing queued.
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "scheduler/history.h"
#include "scheduler/selector.h"

namespace eesched::scheduler {

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string name() const = 0;
  // Learns from training history (baselines that need it); default: nothing. `train` must
  // outlive the policy (knn answers from it).
  virtual void fit(const History& train);
  // Does it decide from the task alone? The oracle needs the measured outcome, so it scores
  // replay but cannot run a daemon.
  virtual bool needs_outcome() const { return false; }
  // Picks one of c.arms (never looks at c.latency, except the oracle): choose() on one worker.
  std::string pick(const TaskCase& c, std::mt19937_64& rng) const;
  // The (worker, arm) among `workers` (each with its own task.arms, none empty). Default: each
  // worker's arm_for(), scored by (queue + predict_ms) x cost weight.
  virtual Choice choose(const std::vector<WorkerOption>& workers, std::mt19937_64& rng) const;
  // Predicted latency of each arm on c, ms: what queues are weighed and accounted with. Default:
  // the roofline estimate (data/roofline.h), nothing learned.
  virtual std::vector<double> predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const;
  // Exploration (scheduler/placement.h): an arm of `on` to run instead of `chosen`, or none.
  // Default: any other arm, uniformly. The selector directs it at the arms it is least sure
  // are slower than its choice.
  virtual std::optional<data::Arm> explore_arm(const WorkerOption& on, const Choice& chosen, std::mt19937_64& rng) const;

 protected:
  // The arm this policy runs for c (one of c.arms) on c's worker.
  virtual std::string arm_for(const TaskCase& c, std::mt19937_64& rng) const = 0;
};

// "meta" needs `selector` (and decides with `correction`, when given: scheduler/online.h); the
// others ignore them. Throws on an unknown name.
std::unique_ptr<Policy> make_policy(const std::string& name, const Selector* selector, const Correction* correction = nullptr);
std::vector<std::string> policy_names();  // meta, random, single-best, oracle, heuristic, roofline, knn
// single-best from a known ranking (a selector's single_best_ranking()), without a history.
std::unique_ptr<Policy> make_single_best(std::vector<std::string> ranking);

}  // namespace eesched::scheduler
