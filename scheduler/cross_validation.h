#pragma once
// Grouped k-fold cross-validation of the selector: folds split by task, so a task is never in
// both training and test (its runs on every worker go to the same side).
#include <cstdint>
#include <vector>

#include "scheduler/history.h"
#include "scheduler/replay.h"
#include "scheduler/selector.h"

namespace eesched::scheduler {

struct FoldResult {
  int fold = 0;
  int64_t train_cases = 0, test_cases = 0;
  double rmse_log_ms = 0;  // prediction error on the test runs, in log(ms)
  Score meta, single_best;
};

// The cases of `h` whose task falls in fold `fold` of `k` (tasks shuffled by `seed`), or the rest.
History fold_split(const History& h, int k, int fold, uint64_t seed, bool test_side);

struct CrossValidation {
  std::vector<FoldResult> folds;
  // Every case scored once, by the fold's selector (and single-best, knn and heuristic fitted on
  // the fold's training side) that never saw its task: the held-out figures, with slices.
  ReplayReport pooled;
};

CrossValidation cross_validate(const History& h, int k, const TrainOptions& options);

}  // namespace eesched::scheduler
