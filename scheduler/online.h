#pragma once
// Learning online (issue 22): what the scheduler learns from the runs it logs, so that a machine
// the selector never saw is calibrated after a handful of tasks.
//
// - WorkerCorrection: each worker's residual log(measured / predicted), per arm and per model
//   and arm, shrunk toward the coarser level while it has few runs and exponentially forgetting
//   old ones. It shifts that worker's predictions and shrinks their uncertainty.
// - OnlineLearner: the selector in use, the correction, and retraining. Every `retrain_every`
//   runs a candidate selector is trained on the base history plus the recent runs but the most
//   recent `holdout` share; it replaces the selector only if it predicts those held-out runs
//   better (the switch is logged). Training is a pure function of a snapshot, so the coordinator
//   runs it on a thread of its own and swaps on its network thread.
//
// The coordinator and `replay --online` run this same code; only the thread training runs on
// differs.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "data/arm.h"
#include "scheduler/history.h"
#include "scheduler/policies.h"
#include "scheduler/selector.h"

namespace eesched::scheduler {

struct OnlineOptions {
  double half_life = 16;       // runs of a level after which an older residual weighs half
  double prior_runs = 2;       // pseudo-runs pulling the worker's estimate toward no correction
  // ... and an arm's toward the worker's. Larger: the arm a decision picks is the one whose
  // prediction erred low (the optimizer's curse), so its first runs look slower than the model's
  // average error; trusted too soon, the correction turns near-ties over run after run.
  double arm_prior_runs = 8;
  int retrain_every = 50;      // runs between retrainings (0: never)
  double holdout = 0.25;       // most recent share of the window that judges a candidate
  double min_gain = 0.02;      // a candidate must cut the held-out error by this share to be swapped in
  std::size_t min_holdout = 20;  // fewer held-out runs than this decide nothing: the selector stays
  std::size_t window = 400;    // recent runs kept for retraining and for rebuilding the correction
  bool correct = true;         // false: no per-worker correction (the static selector, for comparison)
};

// One finished run as the learner keeps it.
struct Observation {
  TaskCase task;  // as placement saw it on the worker that ran it
  data::Arm arm;
  double measured_ms = 0;
};

class WorkerCorrection final : public Correction {
 public:
  explicit WorkerCorrection(OnlineOptions options = {}) : options_(options) {}
  // A run of `arm` on the case's worker took `measured_ms` where the selector, uncorrected,
  // predicted `predicted_ms`.
  void observe(const TaskCase& c, const data::Arm& arm, double predicted_ms, double measured_ms);
  Adjustment adjust(const TaskCase& c, const data::Arm& arm) const override;
  void clear() { levels_.clear(); }
  // The identity of a worker as corrections key it: its name and measured hardware profile.
  static std::string worker_key(const TaskCase& c);

 private:
  struct Level {
    double weight = 0;  // exponentially weighted count of runs
    double sum = 0;     // exponentially weighted sum of their residuals
  };
  double estimate(const std::string& key, double parent, double prior) const;
  OnlineOptions options_;
  std::map<std::string, Level> levels_;  // "worker", "worker|arm", "worker|arm|model"
};

// A retraining's verdict.
struct RetrainVerdict {
  bool swapped = false;
  int64_t holdout_runs = 0;
  double current_rmse = 0, candidate_rmse = 0;  // log-latency error on the held-out runs
};

class OnlineLearner {
 public:
  // `base`: the history the selector was trained on (or none), kept under every retraining.
  OnlineLearner(Selector selector, History base, TrainOptions train, OnlineOptions options = {});

  const Selector& selector() const { return *selector_; }
  const WorkerCorrection& correction() const { return correction_; }
  // The meta policy deciding with the current selector and correction (rebuilt on a swap).
  const Policy& policy() const { return *policy_; }

  // A finished run. Returns true when a retraining is due (retrain_every runs since the last).
  bool observe(const TaskCase& c, const data::Arm& arm, double measured_ms);

  // What a retraining trains on and is judged by: a copy, safe to hand to another thread.
  struct RetrainJob {
    History train;                     // base history + the window but its held-out tail
    std::vector<Observation> holdout;  // the window's most recent runs
    TrainOptions options;
  };
  RetrainJob retrain_job();
  static Selector train_candidate(const RetrainJob& job);  // pure: any thread
  // Swaps the candidate in only if it predicts the held-out runs better than the current selector.
  RetrainVerdict consider(Selector candidate, const std::vector<Observation>& holdout);
  // retrain_job + train_candidate + consider, on this thread.
  RetrainVerdict retrain_now();

  int64_t observed() const { return observed_; }
  int64_t swaps() const { return swaps_; }

 private:
  void rebuild_policy();
  std::unique_ptr<Selector> selector_;
  History base_;
  TrainOptions train_;
  OnlineOptions options_;
  WorkerCorrection correction_;
  std::unique_ptr<Policy> policy_;
  std::deque<Observation> window_;
  int64_t observed_ = 0, since_retrain_ = 0, swaps_ = 0;
};

// The training options that made `selector` (its file's summary), for retraining it alike.
TrainOptions retrain_options(const Selector& selector);

// Log-latency RMSE of a selector's uncorrected predictions on runs.
double prediction_rmse(const Selector& selector, const std::vector<Observation>& runs);

// `replay --online`: cases streamed in order through placement with the learner's policy and
// exploration, each observing the measured latency of the arm chosen; retraining runs inline.
struct OnlineStep {
  std::string task, worker, arm, oracle;
  double ms = 0, oracle_ms = 0;
  bool explored = false;
};
struct OnlineReport {
  std::vector<OnlineStep> steps;
  std::vector<RetrainVerdict> retrains;
};
OnlineReport replay_online(const std::vector<TaskCase>& stream, OnlineLearner& learner, double explore, uint64_t seed,
                           const std::function<void(const OnlineStep&, int64_t)>& progress = nullptr);

}  // namespace eesched::scheduler
