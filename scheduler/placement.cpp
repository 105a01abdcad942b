#include "scheduler/placement.h"

#include <algorithm>
#include <iterator>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace eesched::scheduler {

// bench-dispatch's 16 identical workers cost one decision, not 16.
std::string profile_key(const WorkerState& w) {
  const auto& h = w.hardware;
  fmt::memory_buffer key;
  const auto opt = [](const std::optional<double>& v) { return v ? *v : -1.0; };
  fmt::format_to(std::back_inserter(key), "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}", h.threads, h.gflops, h.copy_gbps, h.mem_total_bytes,
                 h.mem_free_bytes, h.cpu_model, w.model.fingerprint, w.draft ? w.draft->fingerprint : "",
                 opt(w.landmarks.acceptance_rate), opt(w.landmarks.self_acceptance_rate), w.cost_weight);
  for (const auto& [transform, q] : w.model.quality) fmt::format_to(std::back_inserter(key), "|{}={}", transform, q.ppl_ratio);
  return fmt::to_string(key);
}

std::vector<data::Arm> admissible_arms(const std::vector<data::Arm>& candidates, const data::TaskSpec& spec,
                                       const data::QualityTable& quality, std::string* why_none) {
  std::vector<data::Arm> out;
  std::string first;
  for (const auto& arm : candidates) {
    const auto why = data::admission_refusal(arm, spec, quality);
    if (!why) {
      out.push_back(arm);
    } else if (first.empty()) {
      first = *why;
    }
  }
  if (out.empty() && why_none) *why_none = first.empty() ? "no arm to choose from" : first;
  return out;
}

TaskCase case_on(const PlacementTask& task, const WorkerState& w, std::vector<data::Arm> arms) {
  TaskCase c;
  c.task_id = task.task_id;
  c.worker_id = w.id;
  c.spec = task.spec;
  c.spec.draft = w.draft ? w.draft->name : "";
  c.model = w.model;
  c.draft = w.draft;
  c.hardware = w.hardware;
  c.landmarks = w.landmarks;
  c.latency = task.measured;
  c.arms = std::move(arms);
  return c;
}

WorkerState worker_state(const TaskCase& c) {
  WorkerState w;
  w.id = c.worker_id;
  w.hardware = c.hardware;
  w.model = c.model;
  w.draft = c.draft;
  w.landmarks = c.landmarks;
  return w;
}

std::optional<Choice> place(const PlacementTask& task, const std::vector<WorkerState>& workers,
                            const std::vector<data::Arm>& candidates, const Policy& policy, double explore,
                            std::mt19937_64& rng) {
  std::vector<const WorkerState*> pointers;
  pointers.reserve(workers.size());
  for (const auto& w : workers) pointers.push_back(&w);
  return place(task, pointers, candidates, policy, explore, rng);
}

std::optional<Choice> place(const PlacementTask& task, const std::vector<const WorkerState*>& workers,
                            const std::vector<data::Arm>& candidates, const Policy& policy, double explore,
                            std::mt19937_64& rng) {
  if (workers.empty()) return std::nullopt;
  std::vector<data::Arm> pinned;
  if (!task.pinned_arm.empty()) pinned.push_back(data::parse_arm(task.pinned_arm));
  const auto& arms = task.pinned_arm.empty() ? candidates : pinned;

  std::vector<WorkerOption> options;
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::map<std::string, std::size_t> by_profile;  // -> its option, or kNone when it admits no arm
  std::string why;
  for (const WorkerState* ws : workers) {
    const WorkerState& w = *ws;
    const auto [seen, fresh] = by_profile.emplace(w.profile.empty() ? profile_key(w) : w.profile, options.size());
    if (!fresh) {
      // The same decision either way: keep the one that is free sooner (the first on ties).
      if (seen->second != kNone) {
        auto& kept = options[seen->second];
        if (std::make_pair(w.queue_ms, w.occupancy) < std::make_pair(kept.queue_ms, kept.occupancy))
          kept.id = w.id, kept.queue_ms = w.queue_ms, kept.occupancy = w.occupancy, kept.task.worker_id = w.id;
      }
      continue;
    }
    TaskCase c = case_on(task, w, {});
    c.arms = admissible_arms(arms, c.spec, w.model.quality, &why);
    if (c.arms.empty()) {
      seen->second = kNone;  // its twins cannot run it either
      continue;
    }
    options.push_back(WorkerOption{w.id, std::move(c), w.queue_ms, w.cost_weight, w.occupancy});
  }
  if (options.empty()) {
    if (!task.pinned_arm.empty()) throw Unplaceable("arm " + task.pinned_arm + " does not apply: " + why);
    throw Unplaceable("no arm may serve this task: " + why);
  }

  Choice choice = policy.choose(options, rng);
  if (task.pinned_arm.empty() && explore > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < explore) {
    const auto& on = *std::find_if(options.begin(), options.end(), [&](const WorkerOption& o) { return o.id == choice.worker; });
    if (const auto other = policy.explore_arm(on, choice, rng); other && other->name != choice.arm.name) {
      choice.arm = *other;
      choice.predicted_ms = policy.predict_ms(on.task, {choice.arm})[0];
      choice.explored = true;
    }
  }
  return choice;
}

Choice place_case(const TaskCase& c, const Policy& policy, std::mt19937_64& rng) {
  const PlacementTask task{c.task_id, c.spec, "", c.latency};
  auto choice = place(task, {worker_state(c)}, c.arms, policy, 0.0, rng);
  return *choice;
}

}  // namespace eesched::scheduler
