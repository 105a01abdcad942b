#include "scheduler/history.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <set>

#include "data/features.h"
#include "data/quality.h"

namespace eesched::scheduler {
namespace {

// A failed run that timed out is a lower bound on its latency and still says "slow"; other
// failures say nothing about speed.
bool counts(const data::RunRow& r) { return r.ok || r.error.rfind("timeout", 0) == 0; }

}  // namespace

History History::load(data::Store& store, bool require_all) {
  LoadOptions o;
  o.require_all = require_all;
  return load(store, o);
}

History History::load(data::Store& store, const LoadOptions& options) {
  const bool require_all = options.require_all;
  const std::string label = options.label.empty() ? std::filesystem::path(store.path()).stem().string() : options.label;
  std::map<int64_t, data::ModelRow> models;
  for (auto& m : store.models()) models[m.id] = m;
  std::map<int64_t, data::WorkerRow> workers;
  for (auto& w : store.workers()) workers[w.id] = w;
  std::map<int64_t, data::TaskRow> tasks;
  for (auto& row : store.latency_matrix()) tasks[row.task.id] = row.task;
  // (task, worker) -> arm -> latencies
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, std::vector<double>>> measured;
  std::map<std::pair<int64_t, int64_t>, std::string> first_start;
  for (const auto& r : store.runs_since("")) {
    if (!r.worker_id || !counts(r) || r.code_version < options.min_code_version) continue;
    const std::pair<int64_t, int64_t> key{r.task_id, *r.worker_id};
    measured[key][r.arm].push_back(r.latency_ms);
    auto& start = first_start[key];
    if (start.empty() || r.started_at < start) start = r.started_at;
  }
  // The arms this history knows: those measured anywhere in it (a sweep over a subset of the
  // catalog is complete when every applicable arm of that subset is measured).
  std::vector<data::Arm> universe;
  {
    std::set<std::string> names;
    for (const auto& [key, arms] : measured)
      for (const auto& [arm, ms] : arms) names.insert(arm);
    for (const auto& n : names) universe.push_back(data::parse_arm(n));
  }
  std::map<std::pair<int64_t, int64_t>, std::optional<double>> acceptance;
  std::map<int64_t, std::optional<double>> self_acceptance;
  History h;
  for (const auto& [key, arms] : measured) {
    const auto& task = tasks.at(key.first);
    TaskCase c;
    c.task_id = key.first;
    c.worker_id = key.second;
    c.spec = data::task_spec(task);
    c.model = models.at(task.model_id);
    if (task.draft_model_id) {
      c.draft = models.at(*task.draft_model_id);
      const std::pair<int64_t, int64_t> pair{task.model_id, *task.draft_model_id};
      if (!acceptance.count(pair)) acceptance[pair] = store.mean_acceptance(pair.first, pair.second);
      c.landmarks.acceptance_rate = acceptance[pair];
    }
    if (!self_acceptance.count(task.model_id)) self_acceptance[task.model_id] = store.mean_acceptance(task.model_id, std::nullopt);
    c.landmarks.self_acceptance_rate = self_acceptance[task.model_id];
    c.hardware = workers.at(key.second).hardware;
    c.machine = label + ":" + data::worker_name(c.hardware);
    c.started_at = first_start.at(key);
    for (const auto& [arm, ms] : arms) c.latency[arm] = data::arm_latency_ms(ms);
    bool complete = true;
    for (const auto& arm : universe) {
      // What may serve it: capability and the quality floor, as the coordinator decides.
      if (data::admission_refusal(arm, c.spec, c.model.quality)) continue;
      if (c.latency.count(arm.name)) c.arms.push_back(arm);
      else complete = false;
    }
    if (c.arms.empty() || (require_all && !complete)) continue;
    h.cases.push_back(std::move(c));
  }
  return h;
}

void History::append(History other) {
  // Ids of the appended store are shifted past this one's, so that no two cases of different
  // stores share a task or worker id (folds group by task, and knn by worker).
  if (other.cases.empty()) return;
  int64_t max_task = 0, max_worker = 0, min_task = other.cases[0].task_id, min_worker = other.cases[0].worker_id;
  for (const auto& c : cases) max_task = std::max(max_task, c.task_id), max_worker = std::max(max_worker, c.worker_id);
  for (const auto& c : other.cases) min_task = std::min(min_task, c.task_id), min_worker = std::min(min_worker, c.worker_id);
  for (auto& c : other.cases) {
    c.task_id += max_task - min_task + 1;
    c.worker_id += max_worker - min_worker + 1;
    cases.push_back(std::move(c));
  }
}

std::vector<std::string> History::machines() const {
  std::vector<std::string> out;
  for (const auto& c : cases)
    if (std::find(out.begin(), out.end(), c.machine) == out.end()) out.push_back(c.machine);
  return out;
}

std::size_t History::runs() const {
  std::size_t n = 0;
  for (const auto& c : cases) n += c.arms.size();
  return n;
}

std::vector<double> case_features(const TaskCase& c, const data::Arm& arm) {
  data::FeatureInputs in;
  in.task = &c.spec;
  in.model = &c.model;
  in.draft = c.draft ? &*c.draft : nullptr;
  in.hardware = &c.hardware;
  in.arm = &arm;
  in.landmarks = c.landmarks;
  return data::compute_features(in);
}

std::vector<std::string> arms_by_mean_slowdown(const History& history) {
  std::map<std::string, std::pair<double, int>> slow;  // arm -> (sum of slowdowns, cases)
  for (const auto& c : history.cases) {
    if (c.latency.empty()) continue;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& a : c.arms) best = std::min(best, c.latency.at(a.name));
    for (const auto& a : c.arms) {
      auto& [sum, n] = slow[a.name];
      sum += c.latency.at(a.name) / best;
      n += 1;
    }
  }
  std::vector<std::pair<double, std::string>> ranked;
  for (const auto& [arm, v] : slow) ranked.emplace_back(v.first / v.second, arm);
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> out;
  for (auto& [score, arm] : ranked) out.push_back(std::move(arm));
  return out;
}

}  // namespace eesched::scheduler
