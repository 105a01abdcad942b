#include "scheduler/cross_validation.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>

#include "scheduler/placement.h"

namespace eesched::scheduler {

namespace {

std::map<int64_t, int> folds_of_tasks(const History& h, int k, uint64_t seed) {
  std::vector<int64_t> tasks;
  for (const auto& c : h.cases) tasks.push_back(c.task_id);
  std::sort(tasks.begin(), tasks.end());
  tasks.erase(std::unique(tasks.begin(), tasks.end()), tasks.end());
  std::mt19937_64 rng(seed);
  std::shuffle(tasks.begin(), tasks.end(), rng);
  std::map<int64_t, int> fold_of;
  for (std::size_t i = 0; i < tasks.size(); ++i) fold_of[tasks[i]] = static_cast<int>(i % static_cast<std::size_t>(k));
  return fold_of;
}

// A case as placement rebuilds it keeps its task and worker ids (a worker is one machine's profile).
std::string case_key(const TaskCase& c) { return std::to_string(c.worker_id) + "#" + std::to_string(c.task_id); }

// One policy per fold; a case is answered by the policy of the fold that held it out.
class OutOfFold final : public Policy {
 public:
  OutOfFold(std::string name, std::shared_ptr<const std::map<std::string, int>> fold_of) : name_(std::move(name)), fold_of_(std::move(fold_of)) {}
  std::string name() const override { return name_; }
  void add(std::unique_ptr<Policy> p) { per_fold_.push_back(std::move(p)); }
  Choice choose(const std::vector<WorkerOption>& workers, std::mt19937_64& rng) const override {
    return of(workers.at(0).task).choose(workers, rng);
  }
  std::vector<double> predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const override { return of(c).predict_ms(c, arms); }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64& rng) const override { return of(c).pick(c, rng); }

 private:
  const Policy& of(const TaskCase& c) const { return *per_fold_.at(static_cast<std::size_t>(fold_of_->at(case_key(c)))); }
  std::string name_;
  std::shared_ptr<const std::map<std::string, int>> fold_of_;
  std::vector<std::unique_ptr<Policy>> per_fold_;
};

}  // namespace

History fold_split(const History& h, int k, int fold, uint64_t seed, bool test_side) {
  const auto fold_of = folds_of_tasks(h, k, seed);
  History out;
  for (const auto& c : h.cases)
    if ((fold_of.at(c.task_id) == fold) == test_side) out.cases.push_back(c);
  return out;
}

CrossValidation cross_validate(const History& h, int k, const TrainOptions& options, bool by_machine) {
  if (k < 2) throw std::runtime_error("cross-validation needs at least 2 folds");
  const auto task_fold = folds_of_tasks(h, k, options.seed);
  const auto machines = h.machines();
  if (by_machine && machines.size() < 2)
    throw std::runtime_error("leave-one-machine-out needs a history of at least two machines (give train-selector several --db)");
  // Split s holds out the cases of task fold s % k (on machine s / k when by machine); it trains
  // on the other task folds (of the other machines).
  const int splits = by_machine ? k * static_cast<int>(machines.size()) : k;
  auto split_of = std::make_shared<std::map<std::string, int>>();
  auto machine_index = [&](const TaskCase& c) {
    return static_cast<int>(std::find(machines.begin(), machines.end(), c.machine) - machines.begin());
  };
  for (const auto& c : h.cases) (*split_of)[case_key(c)] = (by_machine ? machine_index(c) * k : 0) + task_fold.at(c.task_id);
  // Selectors and training sides outlive the fold loop: the pooled policies point at them.
  std::vector<std::unique_ptr<Selector>> selectors;
  std::vector<std::unique_ptr<History>> trains;
  std::map<std::string, std::unique_ptr<OutOfFold>> pooled;
  for (const auto& name : {"meta", "single-best", "knn", "heuristic", "roofline"}) pooled[name] = std::make_unique<OutOfFold>(name, split_of);
  CrossValidation out;
  for (int f = 0; f < splits; ++f) {
    trains.push_back(std::make_unique<History>());
    History& train = *trains.back();
    History test;
    for (const auto& c : h.cases) {
      const int split = split_of->at(case_key(c));
      if (split == f) {
        test.cases.push_back(c);
      } else if (task_fold.at(c.task_id) != f % k && (!by_machine || machine_index(c) != f / k)) {
        train.cases.push_back(c);
      }
    }
    FoldResult r;
    r.fold = f;
    r.machine = by_machine ? machines[static_cast<std::size_t>(f / k)] : "";
    r.train_cases = static_cast<int64_t>(train.cases.size());
    if (train.cases.empty()) throw std::runtime_error("too few tasks for " + std::to_string(k) + " folds");
    selectors.push_back(std::make_unique<Selector>(Selector::train(train, options)));
    const Selector& selector = *selectors.back();
    for (auto& [name, policy] : pooled) {
      auto p = make_policy(name, &selector);
      p->fit(train);
      policy->add(std::move(p));
    }
    r.test_cases = static_cast<int64_t>(test.cases.size());
    if (test.cases.empty()) {  // a machine with fewer tasks than folds: nothing held out here
      out.folds.push_back(r);
      continue;
    }
    double se = 0;
    int64_t n = 0;
    const auto fold_meta = make_policy("meta", &selector);
    std::mt19937_64 unused(options.seed);
    for (const auto& c : test.cases) {
      const auto ms = selector.predict_ms(c, c.arms);
      HeldOutDecision d{f,          c.task_id, c.worker_id, c.spec.id, c.model.name, c.machine, c.hardware.threads,
                        place_case(c, *fold_meta, unused).arm.name, "", 1, {}};
      double best = std::numeric_limits<double>::infinity();
      for (std::size_t i = 0; i < c.arms.size(); ++i) {
        const double measured = c.latency.at(c.arms[i].name);
        const double e = std::log(ms[i]) - std::log(std::max(1e-3, measured));
        se += e * e;
        ++n;
        d.arms[c.arms[i].name] = {measured, ms[i]};
        if (measured < best) best = measured, d.oracle = c.arms[i].name;
      }
      d.slowdown = c.latency.at(d.picked) / best;
      out.decisions.push_back(std::move(d));
    }
    r.rmse_log_ms = std::sqrt(se / static_cast<double>(std::max<int64_t>(1, n)));
    auto sbs = make_policy("single-best", nullptr);
    sbs->fit(train);
    const auto report = replay(train, test, {fold_meta.get(), sbs.get()}, options.seed);
    r.meta = report.policies[0].overall;
    r.single_best = report.policies[1].overall;
    out.folds.push_back(r);
  }
  std::vector<const Policy*> scored;
  for (const auto& name : {"meta", "knn", "roofline", "heuristic", "single-best"}) scored.push_back(pooled.at(name).get());
  out.pooled = replay(*pooled.at("single-best"), h, scored, options.seed);
  return out;
}

std::vector<RepeatedScore> summarize_splits(const std::vector<ReplayReport>& pooled_per_split) {
  // label -> the figure's values over the splits
  std::map<std::string, std::array<std::vector<double>, 4>> values;
  std::vector<std::string> order;
  for (const auto& report : pooled_per_split)
    for (const auto& p : report.policies) {
      const auto& s = p.overall;
      if (!values.count(s.label)) order.push_back(s.label);
      auto& v = values[s.label];
      v[0].push_back(s.top1), v[1].push_back(s.within5), v[2].push_back(s.mean_slowdown);
      if (!std::isnan(s.closed_gap)) v[3].push_back(s.closed_gap);
    }
  auto figure = [](const std::vector<double>& v) {
    RepeatedFigure f;
    if (v.empty()) return RepeatedFigure{std::nan(""), std::nan(""), std::nan("")};
    f.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    f.min = *lo, f.max = *hi;
    return f;
  };
  std::vector<RepeatedScore> out;
  for (const auto& label : order) {
    const auto& v = values.at(label);
    out.push_back({label, static_cast<int64_t>(v[0].size()), figure(v[0]), figure(v[1]), figure(v[2]), figure(v[3])});
  }
  return out;
}

}  // namespace eesched::scheduler
