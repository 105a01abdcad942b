#pragma once
// The policies replay compares: `meta` (the selector), and the baselines a skeptic would name —
// `random`, `single-best` (the arm best on the training data overall), `oracle` (the arm best as
// measured: the bound), `heuristic` (an expert's hand rules), `roofline` (an analytical cost
// model: data/roofline.h), and `knn` (a second learned baseline: the arm that did best on the k
// most similar training tasks).
#include <memory>
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
  // Picks one of c.arms (never looks at c.latency, except the oracle).
  virtual std::string pick(const TaskCase& c, std::mt19937_64& rng) const = 0;
};

// "meta" needs `selector`; the others ignore it. Throws on an unknown name.
std::unique_ptr<Policy> make_policy(const std::string& name, const Selector* selector);
std::vector<std::string> policy_names();  // meta, random, single-best, oracle, heuristic, roofline, knn

}  // namespace eesched::scheduler
