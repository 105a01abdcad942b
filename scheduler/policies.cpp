#include "scheduler/policies.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include "data/features.h"
#include "data/roofline.h"

namespace eesched::scheduler {
namespace {

bool has(const TaskCase& c, const std::string& arm) {
  return std::any_of(c.arms.begin(), c.arms.end(), [&](const data::Arm& a) { return a.name == arm; });
}

std::string oracle_arm(const TaskCase& c) {
  std::string best;
  double ms = std::numeric_limits<double>::infinity();
  for (const auto& a : c.arms)
    if (c.latency.at(a.name) < ms) ms = c.latency.at(a.name), best = a.name;
  return best;
}

class Meta final : public Policy {
 public:
  Meta(const Selector* s, const Correction* correction) : s_(s), correction_(correction) {
    if (!s_) throw std::runtime_error("policy 'meta' needs a selector (--selector FILE)");
  }
  std::string name() const override { return "meta"; }
  Choice choose(const std::vector<WorkerOption>& workers, std::mt19937_64&) const override {
    return s_->choose_worker_arm(workers, correction_);
  }
  std::vector<double> predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const override {
    std::vector<double> out;
    for (const auto& p : s_->predict(c, arms, correction_)) out.push_back(p.ms);
    return out;
  }
  // Directed: each other arm with the chance, by the predictions' uncertainty, that it is faster
  // than the choice (both log-normal), so arms known to be slower are never tried and uncertain
  // contenders most often. None when no arm has even a 1% chance.
  std::optional<data::Arm> explore_arm(const WorkerOption& on, const Choice& chosen, std::mt19937_64& rng) const override {
    const auto& arms = on.task.arms;
    const auto predicted = s_->predict(on.task, arms, correction_);
    const auto at = std::find_if(arms.begin(), arms.end(), [&](const data::Arm& a) { return a.name == chosen.arm.name; }) - arms.begin();
    if (at == static_cast<std::ptrdiff_t>(arms.size())) return std::nullopt;
    const auto& c = predicted[static_cast<std::size_t>(at)];
    std::vector<double> chance(arms.size(), 0.0);
    for (std::size_t i = 0; i < arms.size(); ++i) {
      if (static_cast<std::ptrdiff_t>(i) == at) continue;
      const double sd = std::sqrt(predicted[i].log_sd * predicted[i].log_sd + c.log_sd * c.log_sd);
      const double gap = std::log(c.ms) - std::log(predicted[i].ms);  // > 0: predicted faster than the choice
      chance[i] = sd > 0 ? 0.5 * std::erfc(-gap / (sd * std::sqrt(2.0))) : (gap > 0 ? 1.0 : 0.0);
      if (chance[i] < 0.01) chance[i] = 0;
    }
    if (std::all_of(chance.begin(), chance.end(), [](double p) { return p == 0; })) return std::nullopt;
    return arms[std::discrete_distribution<std::size_t>(chance.begin(), chance.end())(rng)];
  }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override { return s_->choose(c, c.arms, correction_).name; }

 private:
  const Selector* s_;
  const Correction* correction_;
};

class Random final : public Policy {
 public:
  std::string name() const override { return "random"; }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64& rng) const override {
    return c.arms[std::uniform_int_distribution<std::size_t>(0, c.arms.size() - 1)(rng)].name;
  }
};

class Oracle final : public Policy {
 public:
  std::string name() const override { return "oracle"; }
  bool needs_outcome() const override { return true; }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override { return oracle_arm(c); }
};

// The best-ranked applicable arm by mean slowdown on the training history.
class SingleBest final : public Policy {
 public:
  SingleBest() = default;
  explicit SingleBest(std::vector<std::string> ranking) : ranking_(std::move(ranking)) {}
  std::string name() const override { return "single-best"; }
  void fit(const History& train) override { ranking_ = arms_by_mean_slowdown(train); }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override {
    for (const auto& arm : ranking_)
      if (has(c, arm)) return arm;
    return has(c, "kv") ? "kv" : c.arms.front().name;
  }

 private:
  std::vector<std::string> ranking_;
};

// What an expert would write down from the literature and this machine's figures.
class Heuristic final : public Policy {
 public:
  std::string name() const override { return "heuristic"; }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override {
    const auto& t = c.spec;
    const bool tolerant = t.quality == data::Quality::Tolerant;
    const bool memory_bound = c.model.weight_bytes > 100'000'000;  // beyond L3: bytes per token rule
    // Speculative decoding pays off on long greedy generations with a draft that is accepted often.
    const bool good_draft = c.landmarks.acceptance_rate.value_or(0.0) >= 0.5;
    if (t.batch == 1 && t.greedy() && t.generation.max_new_tokens >= 32 && good_draft) {
      if (tolerant && has(c, "kv+int8+spec4")) return "kv+int8+spec4";
      if (has(c, "kv+spec4")) return "kv+spec4";
    }
    if (tolerant && memory_bound && has(c, "kv+int8")) return "kv+int8";
    // Lossless and memory-bound: the model's own int8 copy drafts ~4x cheaper than a step and is
    // almost always right, so long generations gain; the draft's extra prefill loses on short ones.
    if (t.batch == 1 && t.greedy() && t.generation.max_new_tokens >= 32 && memory_bound && has(c, "kv+qspec6")) return "kv+qspec6";
    if (t.generation.max_new_tokens <= 1 && has(c, "plain")) return "plain";  // one token: the cache buys nothing
    return has(c, "kv") ? "kv" : c.arms.front().name;
  }
};

// The analytical cost model a systems engineer would write: the arm of least roofline estimate
// (bytes streamed per step vs bandwidth, FLOPs vs GFLOP/s, forward passes; data/roofline.h).
class Roofline final : public Policy {
 public:
  std::string name() const override { return "roofline"; }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override {
    const auto ms = predict_ms(c, c.arms);
    return c.arms[static_cast<std::size_t>(std::min_element(ms.begin(), ms.end()) - ms.begin())].name;
  }
};

// k nearest training cases in the task/model/hardware features (standardized; arm features
// excluded), and among their arms the one with the least mean slowdown against each
// neighbour's best.
class Knn final : public Policy {
 public:
  std::string name() const override { return "knn"; }
  void fit(const History& train) override {
    train_ = &train;
    const auto& names = data::feature_names();
    columns_.clear();
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i].rfind("arm_", 0) != 0 && names[i] != "landmark_acceptance") columns_.push_back(i);
    rows_.clear();
    const data::Arm kv = data::parse_arm("kv");
    for (const auto& c : train.cases) rows_.push_back(project(case_features(c, kv)));
    mean_.assign(columns_.size(), 0);
    scale_.assign(columns_.size(), 0);
    for (const auto& r : rows_)
      for (std::size_t j = 0; j < r.size(); ++j) mean_[j] += r[j] / static_cast<double>(rows_.size());
    for (const auto& r : rows_)
      for (std::size_t j = 0; j < r.size(); ++j) scale_[j] += (r[j] - mean_[j]) * (r[j] - mean_[j]) / static_cast<double>(rows_.size());
    for (auto& s : scale_) s = s > 0 ? std::sqrt(s) : 1.0;
  }

 protected:
  std::string arm_for(const TaskCase& c, std::mt19937_64&) const override {
    if (!train_ || rows_.empty()) throw std::runtime_error("knn: not fitted (it needs a training history)");
    const auto q = project(case_features(c, data::parse_arm("kv")));
    std::vector<std::pair<double, std::size_t>> d;
    for (std::size_t i = 0; i < rows_.size(); ++i) {
      double s = 0;
      for (std::size_t j = 0; j < q.size(); ++j) {
        const double diff = (q[j] - rows_[i][j]) / scale_[j];
        s += diff * diff;
      }
      d.emplace_back(s, i);
    }
    const std::size_t k = std::min<std::size_t>(7, d.size());
    std::partial_sort(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(k), d.end());
    std::map<std::string, std::pair<double, int>> slow;
    for (std::size_t n = 0; n < k; ++n) {
      const auto& nb = train_->cases[d[n].second];
      const double best = nb.latency.at(oracle_arm(nb));
      for (const auto& a : nb.arms) {
        auto& [sum, cnt] = slow[a.name];
        sum += nb.latency.at(a.name) / best;
        cnt += 1;
      }
    }
    std::string best_arm;
    double best_score = std::numeric_limits<double>::infinity();
    for (const auto& a : c.arms) {
      const auto it = slow.find(a.name);
      if (it == slow.end()) continue;
      const double score = it->second.first / it->second.second;
      if (score < best_score) best_score = score, best_arm = a.name;
    }
    if (!best_arm.empty()) return best_arm;
    return has(c, "kv") ? "kv" : c.arms.front().name;
  }

 private:
  std::vector<double> project(const std::vector<double>& f) const {
    std::vector<double> out;
    for (const auto j : columns_) out.push_back(std::isnan(f[j]) ? -1.0 : f[j]);
    return out;
  }
  const History* train_ = nullptr;
  std::vector<std::size_t> columns_;
  std::vector<std::vector<double>> rows_;
  std::vector<double> mean_, scale_;
};

}  // namespace

void Policy::fit(const History&) {}

std::string Policy::pick(const TaskCase& c, std::mt19937_64& rng) const { return choose({WorkerOption{c.worker_id, c, 0, 1}}, rng).arm.name; }

std::vector<double> Policy::predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  std::vector<double> out;
  out.reserve(arms.size());
  for (const auto& a : arms)
    out.push_back(data::estimate_roofline(c.spec, c.model, c.draft ? &*c.draft : nullptr, c.hardware, a, c.landmarks.acceptance_for(a))
                      .total_ms);
  return out;
}

Choice Policy::choose(const std::vector<WorkerOption>& workers, std::mt19937_64& rng) const {
  if (workers.empty()) throw std::runtime_error("no live worker holds the model");
  Choice best;
  double best_score = std::numeric_limits<double>::infinity();
  for (const auto& w : workers) {
    if (w.task.arms.empty()) continue;
    const std::string name = arm_for(w.task, rng);
    const auto arm = std::find_if(w.task.arms.begin(), w.task.arms.end(), [&](const data::Arm& a) { return a.name == name; });
    if (arm == w.task.arms.end()) throw std::runtime_error("policy " + this->name() + " picked " + name + ", which the worker may not run");
    const double ms = predict_ms(w.task, {*arm})[0];
    const double score = (w.queue_ms + ms * batch_slowdown(w.task, *arm, w.occupancy)) * w.cost_weight;
    if (score < best_score) best_score = score, best = {w.id, *arm, ms, 0.0, false};
  }
  if (best.arm.name.empty()) throw std::runtime_error("no applicable arm to choose from");
  return best;
}

std::optional<data::Arm> Policy::explore_arm(const WorkerOption& on, const Choice& chosen, std::mt19937_64& rng) const {
  const auto& own = on.task.arms;
  if (own.size() < 2) return std::nullopt;
  const auto at = static_cast<std::size_t>(std::find_if(own.begin(), own.end(), [&](const data::Arm& a) { return a.name == chosen.arm.name; }) -
                                           own.begin());
  auto other = std::uniform_int_distribution<std::size_t>(0, own.size() - 2)(rng);
  if (other >= at) ++other;  // any arm but the chosen one
  return own[std::min(other, own.size() - 1)];
}

std::unique_ptr<Policy> make_single_best(std::vector<std::string> ranking) { return std::make_unique<SingleBest>(std::move(ranking)); }

std::vector<std::string> policy_names() { return {"meta", "random", "single-best", "oracle", "heuristic", "roofline", "knn"}; }

std::unique_ptr<Policy> make_policy(const std::string& name, const Selector* selector, const Correction* correction) {
  if (name == "meta") return std::make_unique<Meta>(selector, correction);
  if (name == "random") return std::make_unique<Random>();
  if (name == "single-best") return std::make_unique<SingleBest>();
  if (name == "oracle") return std::make_unique<Oracle>();
  if (name == "heuristic") return std::make_unique<Heuristic>();
  if (name == "knn") return std::make_unique<Knn>();
  if (name == "roofline") return std::make_unique<Roofline>();
  throw std::runtime_error("unknown policy '" + name + "' (known: meta, random, single-best, oracle, heuristic, roofline, knn)");
}

}  // namespace eesched::scheduler
