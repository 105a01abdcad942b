#pragma once
// Grouped k-fold cross-validation of the selector: folds split by task, so a task is never in
// both training and test (its runs on every worker go to the same side). By machine as well
// (leave one machine out): each machine's cases are scored by selectors trained on the other
// machines only, on the other task folds, as a machine the shipped selector never saw is.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/history.h"
#include "scheduler/replay.h"
#include "scheduler/selector.h"

namespace eesched::scheduler {

struct FoldResult {
  int fold = 0;
  std::string machine;  // the machine held out (by machine), or empty
  int64_t train_cases = 0, test_cases = 0;
  double rmse_log_ms = 0;  // prediction error on the test runs, in log(ms)
  Score meta, single_best;
};

// The cases of `h` whose task falls in fold `fold` of `k` (tasks shuffled by `seed`), or the rest.
History fold_split(const History& h, int k, int fold, uint64_t seed, bool test_side);

// One held-out case as the fold's selector saw it: what it predicted for every arm, what it
// chose, and what was measured (the misses are where a selector is improved).
struct HeldOutDecision {
  int fold = 0;
  int64_t task_id = 0, worker_id = 0;
  std::string task, model;  // the task's suite id and model name
  std::string machine;
  int threads = 0;          // the worker's
  std::string picked, oracle;
  double slowdown = 1;      // measured latency of the pick over the oracle's
  std::map<std::string, std::pair<double, double>> arms;  // arm -> (measured ms, predicted ms)
};

struct CrossValidation {
  std::vector<FoldResult> folds;
  std::vector<HeldOutDecision> decisions;  // meta's, one per case, in fold order
  // Every case scored once, by the fold's selector (and single-best, knn and heuristic fitted on
  // the fold's training side) that never saw its task: the held-out figures, with slices.
  ReplayReport pooled;
};

CrossValidation cross_validate(const History& h, int k, const TrainOptions& options, bool by_machine = false);

// Repeated k-fold: the pooled figures of several cross-validations (each with its own fold split)
// summarized per policy. One split's figures move by about a point with the seed; their mean is
// the estimate, the range shows how much the split alone moves it.
struct RepeatedFigure {
  double mean = 0, min = 0, max = 0;
};
struct RepeatedScore {
  std::string label;  // policy
  int64_t splits = 0;
  RepeatedFigure top1, within5, mean_slowdown, closed_gap;  // closed gap over the splits where it is defined
};
std::vector<RepeatedScore> summarize_splits(const std::vector<ReplayReport>& pooled_per_split);

}  // namespace eesched::scheduler
