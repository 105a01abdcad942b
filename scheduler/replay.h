#pragma once
// Replay: every policy picks an arm for every historical case whose applicable arms were all
// measured, and is scored against the measurements: top-1 accuracy (picked an arm as fast as
// the oracle's), slowdown vs the oracle (mean and p95), total latency, and the closed gap
// (SBS - policy) / (SBS - oracle) on total latency, SBS being the single best arm of training.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/history.h"
#include "scheduler/policies.h"

namespace eesched::scheduler {

struct Score {
  std::string label;  // policy name, or slice name ("model=target")
  int64_t cases = 0;
  double top1 = 0;           // fraction
  double within5 = 0;        // fraction within 5% of the oracle's latency (single measurements
                             // of near-equal arms make exact top-1 partly a coin toss)
  double mean_slowdown = 0;  // latency(pick) / latency(oracle), mean over cases
  double p95_slowdown = 0;
  double max_slowdown = 0;   // the worst pick: a selector must never be catastrophic
  double total_ms = 0;
  double closed_gap = 0;     // NaN when SBS equals the oracle (nothing to close)
};

struct PolicyReport {
  Score overall;
  std::vector<Score> slices;  // by model, batch, quality floor, worker threads, machine
};

struct ReplayReport {
  int64_t cases = 0;
  double oracle_total_ms = 0, sbs_total_ms = 0;
  std::vector<PolicyReport> policies;
};

// `policies` must be fitted (fit() on training history). The single-best and oracle totals are
// computed here from a single-best policy fitted on `train`.
ReplayReport replay(const History& train, const History& test, const std::vector<const Policy*>& policies, uint64_t seed);

// The same against a given, already fitted single-best reference (cross-validation passes an
// out-of-fold one, so that every case's reference was fitted without it).
ReplayReport replay(const Policy& single_best, const History& test, const std::vector<const Policy*>& policies, uint64_t seed);

}  // namespace eesched::scheduler
