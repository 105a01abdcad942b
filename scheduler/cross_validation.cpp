#include "scheduler/cross_validation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <stdexcept>

namespace eesched::scheduler {

History fold_split(const History& h, int k, int fold, uint64_t seed, bool test_side) {
  std::vector<int64_t> tasks;
  for (const auto& c : h.cases) tasks.push_back(c.task_id);
  std::sort(tasks.begin(), tasks.end());
  tasks.erase(std::unique(tasks.begin(), tasks.end()), tasks.end());
  std::mt19937_64 rng(seed);
  std::shuffle(tasks.begin(), tasks.end(), rng);
  std::map<int64_t, int> fold_of;
  for (std::size_t i = 0; i < tasks.size(); ++i) fold_of[tasks[i]] = static_cast<int>(i % static_cast<std::size_t>(k));
  History out;
  for (const auto& c : h.cases)
    if ((fold_of.at(c.task_id) == fold) == test_side) out.cases.push_back(c);
  return out;
}

std::vector<FoldResult> cross_validate(const History& h, int k, const TrainOptions& options) {
  if (k < 2) throw std::runtime_error("cross-validation needs at least 2 folds");
  std::vector<FoldResult> out;
  for (int f = 0; f < k; ++f) {
    const auto train = fold_split(h, k, f, options.seed, false);
    auto test = fold_split(h, k, f, options.seed, true);
    FoldResult r;
    r.fold = f;
    r.train_cases = static_cast<int64_t>(train.cases.size());
    if (train.cases.empty() || test.cases.empty()) continue;
    const auto selector = Selector::train(train, options);
    double se = 0;
    int64_t n = 0;
    for (const auto& c : test.cases) {
      const auto ms = selector.predict_ms(c, c.arms);
      for (std::size_t i = 0; i < c.arms.size(); ++i) {
        const double d = std::log(ms[i]) - std::log(std::max(1e-3, c.latency.at(c.arms[i].name)));
        se += d * d;
        ++n;
      }
    }
    r.rmse_log_ms = std::sqrt(se / static_cast<double>(std::max<int64_t>(1, n)));
    r.test_cases = static_cast<int64_t>(test.cases.size());
    const auto meta = make_policy("meta", &selector);
    auto sbs = make_policy("single-best", nullptr);
    sbs->fit(train);
    const auto report = replay(train, test, {meta.get(), sbs.get()}, options.seed);
    r.meta = report.policies[0].overall;
    r.single_best = report.policies[1].overall;
    out.push_back(r);
  }
  return out;
}

}  // namespace eesched::scheduler
