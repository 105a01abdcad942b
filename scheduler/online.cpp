#include "scheduler/online.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "scheduler/placement.h"

namespace eesched::scheduler {
namespace {

double log_residual(double measured_ms, double predicted_ms) {
  return std::log(std::max(1e-3, measured_ms)) - std::log(std::max(1e-3, predicted_ms));
}

// Observations as training cases: one case per run (its own task id, below every stored one),
// its arm the only one measured. The log_ratio_to_kv target needs kv on the same case: where
// the run was not kv, kv's latency is the current selector's corrected prediction. That carries
// the worker's correction (its speed, learned from all its runs) into the retrained kv model,
// while the arm's own run teaches the arm model its ratio to kv there.
History as_history(const std::vector<Observation>& runs, const Selector& selector, const Correction& correction) {
  History h;
  int64_t id = -1;
  for (const auto& o : runs) {
    TaskCase c = o.task;
    c.task_id = id--;
    c.arms = {o.arm};
    c.latency = {{o.arm.name, o.measured_ms}};
    if (o.arm.name != "kv") {
      static const data::Arm kv = data::parse_arm("kv");
      c.latency["kv"] = selector.predict(c, {kv}, &correction)[0].ms;
    }
    h.cases.push_back(std::move(c));
  }
  return h;
}

}  // namespace

std::string WorkerCorrection::worker_key(const TaskCase& c) {
  // What placement knows of a worker (scheduler/placement.h builds cases from its state): its
  // name and measured profile.
  const auto& h = c.hardware;
  return data::worker_name(h) + "|" + h.cpu_model + "|" + std::to_string(h.gflops) + "|" + std::to_string(h.copy_gbps);
}

void WorkerCorrection::observe(const TaskCase& c, const data::Arm& arm, double predicted_ms, double measured_ms) {
  const double r = log_residual(measured_ms, predicted_ms);
  if (!std::isfinite(r)) return;
  const double decay = std::exp2(-1.0 / std::max(1e-6, options_.half_life));
  const auto worker = worker_key(c);
  for (const auto& key : {worker, worker + "|" + arm.name, worker + "|" + arm.name + "|" + c.model.fingerprint + c.model.name}) {
    auto& level = levels_[key];
    level.weight = level.weight * decay + 1;
    level.sum = level.sum * decay + r;
  }
}

double WorkerCorrection::estimate(const std::string& key, double parent, double prior) const {
  const auto it = levels_.find(key);
  if (it == levels_.end()) return parent;
  // The level's mean residual, shrunk toward its parent's by `prior` pseudo-runs at the parent.
  return (it->second.sum + prior * parent) / (it->second.weight + prior);
}

Adjustment WorkerCorrection::adjust(const TaskCase& c, const data::Arm& arm) const {
  if (levels_.empty()) return {};
  const auto worker = worker_key(c);
  const double w = estimate(worker, 0.0, options_.prior_runs);
  const double a = estimate(worker + "|" + arm.name, w, options_.arm_prior_runs);
  const auto leaf = worker + "|" + arm.name + "|" + c.model.fingerprint + c.model.name;
  const double m = estimate(leaf, a, options_.arm_prior_runs);
  const auto it = levels_.find(leaf);
  const double seen = it == levels_.end() ? 0.0 : it->second.weight;
  // What this worker showed of this arm on this model replaces the model's guess about it.
  return {m, std::sqrt(options_.arm_prior_runs / (options_.arm_prior_runs + seen))};
}

OnlineLearner::OnlineLearner(Selector selector, History base, TrainOptions train, OnlineOptions options)
    : selector_(std::make_unique<Selector>(std::move(selector))),
      base_(std::move(base)),
      train_(std::move(train)),
      options_(options),
      correction_(options) {
  if (options_.holdout <= 0 || options_.holdout >= 1) throw std::runtime_error("online: holdout must be in (0, 1)");
  train_.risk = selector_->risk();
  rebuild_policy();
}

void OnlineLearner::rebuild_policy() { policy_ = make_policy("meta", selector_.get(), &correction_); }

bool OnlineLearner::observe(const TaskCase& c, const data::Arm& arm, double measured_ms) {
  if (!(measured_ms > 0) || !std::isfinite(measured_ms)) return false;
  if (options_.correct) correction_.observe(c, arm, selector_->predict(c, {arm})[0].ms, measured_ms);
  window_.push_back({c, arm, measured_ms});
  while (window_.size() > options_.window) window_.pop_front();
  ++observed_;
  return options_.retrain_every > 0 && ++since_retrain_ >= options_.retrain_every;
}

OnlineLearner::RetrainJob OnlineLearner::retrain_job() {
  since_retrain_ = 0;
  RetrainJob job;
  job.options = train_;
  const auto n = window_.size();
  const auto held = std::max<std::size_t>(1, static_cast<std::size_t>(std::round(options_.holdout * static_cast<double>(n))));
  const std::vector<Observation> fit(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(n - std::min(n, held)));
  job.holdout.assign(window_.begin() + static_cast<std::ptrdiff_t>(n - std::min(n, held)), window_.end());
  job.train = base_;
  job.train.append(as_history(fit, *selector_, correction_));
  return job;
}

Selector OnlineLearner::train_candidate(const RetrainJob& job) { return Selector::train(job.train, job.options); }

TrainOptions retrain_options(const Selector& selector) {
  TrainOptions o;
  const auto& summary = selector.training_summary();
  o.rounds = summary.value("rounds", o.rounds);
  o.max_depth = summary.value("max_depth", o.max_depth);
  o.eta = summary.value("eta", o.eta);
  o.members = static_cast<int>(selector.members());
  o.target = selector.target();
  o.anchor_margin = selector.anchor_margin();
  o.excluded = selector.excluded();
  o.risk = selector.risk();
  return o;
}

double prediction_rmse(const Selector& selector, const std::vector<Observation>& runs) {
  double se = 0;
  for (const auto& o : runs) {
    const double e = log_residual(o.measured_ms, selector.predict(o.task, {o.arm})[0].ms);
    se += e * e;
  }
  return runs.empty() ? 0.0 : std::sqrt(se / static_cast<double>(runs.size()));
}

RetrainVerdict OnlineLearner::consider(Selector candidate, const std::vector<Observation>& holdout) {
  RetrainVerdict v;
  v.holdout_runs = static_cast<int64_t>(holdout.size());
  if (holdout.empty()) return v;
  v.current_rmse = prediction_rmse(*selector_, holdout);
  v.candidate_rmse = prediction_rmse(candidate, holdout);
  // A dozen runs, a few of them noisy, can favour either model by chance.
  v.swapped = holdout.size() >= options_.min_holdout && v.candidate_rmse < v.current_rmse * (1 - options_.min_gain);
  spdlog::info("selector retrained on {} cases: held-out log-latency RMSE {:.3f} (current {:.3f}) on the {} most recent runs: {}",
               candidate.training_summary().value("cases", 0), v.candidate_rmse, v.current_rmse, v.holdout_runs,
               v.swapped                                   ? "swapped in"
               : holdout.size() < options_.min_holdout ? "kept the current selector (too few held-out runs to judge)"
                                                       : "kept the current selector");
  if (!v.swapped) return v;
  candidate.set_risk(selector_->risk());
  selector_ = std::make_unique<Selector>(std::move(candidate));
  ++swaps_;
  // The residuals were against the old selector's predictions: measure them again against the new one.
  correction_.clear();
  if (options_.correct)
    for (const auto& o : window_) correction_.observe(o.task, o.arm, selector_->predict(o.task, {o.arm})[0].ms, o.measured_ms);
  rebuild_policy();
  return v;
}

RetrainVerdict OnlineLearner::retrain_now() {
  auto job = retrain_job();
  return consider(train_candidate(job), job.holdout);
}

OnlineReport replay_online(const std::vector<TaskCase>& stream, OnlineLearner& learner, double explore, uint64_t seed,
                           const std::function<void(const OnlineStep&, int64_t)>& progress) {
  OnlineReport report;
  std::mt19937_64 rng(seed);
  for (const auto& c : stream) {
    // The coordinator's decision: placement with the learner's policy, on the case's worker.
    const PlacementTask task{c.task_id, c.spec, "", c.latency};
    const auto choice = *place(task, {worker_state(c)}, c.arms, learner.policy(), explore, rng);
    const auto it = c.latency.find(choice.arm.name);
    if (it == c.latency.end()) throw std::runtime_error("online replay: " + choice.arm.name + " was not measured on " + c.spec.id);
    OnlineStep step{c.spec.id, data::worker_name(c.hardware), choice.arm.name, "", it->second, std::numeric_limits<double>::infinity(),
                    choice.explored};
    for (const auto& a : c.arms)
      if (c.latency.at(a.name) < step.oracle_ms) step.oracle_ms = c.latency.at(a.name), step.oracle = a.name;
    report.steps.push_back(step);
    if (progress) progress(step, static_cast<int64_t>(report.steps.size()));
    if (learner.observe(c, choice.arm, it->second)) report.retrains.push_back(learner.retrain_now());
  }
  return report;
}

}  // namespace eesched::scheduler
