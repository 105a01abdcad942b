// eesched replay: every policy against the measured history, with per-slice breakdowns.
#include <cmath>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/store.h"
#include "scheduler/policies.h"
#include "scheduler/replay.h"
#include "scheduler/selector.h"
#include "node/stored_task.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct ReplayArgs {
  std::string db, selector, policies = "meta,random,single-best,oracle,heuristic,roofline,knn", train_db, test_db;
  bool json = false, slices = true, live = false;
  uint64_t seed = 1;
  std::string models_dir = "models", key;
  int threads = 0, tasks = 20;
  double time_limit_s = 60;
};

// --live: the first policy decides each task again on this machine, the task runs with its
// stored prompt ids, and the run is compared with what history recorded for that arm.
void run_live(const ReplayArgs& a, const scheduler::Policy& policy) {
  auto store = data::Store::open(a.db);
  const auto history = scheduler::History::load(store, /*require_all=*/true);
  // Tasks whose ids a retention policy wiped (--retain-ids, db purge-ids) cannot run again: said
  // up front, by name, and skipped.
  std::vector<std::string> no_ids;
  std::set<std::string> checked;
  for (const auto& c : history.cases) {
    if (!checked.insert(c.spec.id).second) continue;
    const auto task = store.find_task_by_ext_id(c.spec.id);
    if (!task || task->prompt_ids.empty()) no_ids.push_back(c.spec.id);
  }
  if (!no_ids.empty()) {
    std::string names;
    for (std::size_t i = 0; i < no_ids.size() && i < 10; ++i) names += (i ? ", " : "") + no_ids[i];
    if (no_ids.size() > 10) names += ", ...";
    std::cerr << fmt::format("{} of {} tasks have no stored prompt ids (wiped by --retain-ids or db purge-ids) and are skipped: {}\n",
                             no_ids.size(), checked.size(), names);
    if (no_ids.size() == checked.size())
      throw std::runtime_error("no task in " + a.db + " holds its prompt ids any more: nothing to re-execute");
  }
  const std::set<std::string> skip(no_ids.begin(), no_ids.end());
  node::StoredTaskRunner runner(store, a.models_dir, a.key, a.threads);
  std::set<int64_t> seen;
  std::mt19937_64 rng(a.seed);
  int n = 0;
  double live_total = 0, recorded_total = 0, oracle_total = 0;
  std::cout << fmt::format("{:<10} {:<18} {:>10} {:>12} {:>12}  {}\n", "task", "arm", "live ms", "recorded ms", "oracle ms",
                           "recorded on");
  for (const auto& c0 : history.cases) {
    if (n >= a.tasks || skip.count(c0.spec.id) || !seen.insert(c0.task_id).second) continue;
    auto c = c0;
    c.hardware = runner.hardware();  // decide for this machine
    const auto arm = data::parse_arm(policy.pick(c, rng));
    const auto task = store.find_task_by_ext_id(c.spec.id);
    const auto m = runner.run(*task, arm, "replay-" + policy.name(), a.time_limit_s * 1000);
    double oracle = 1e300;
    for (const auto& [name, ms] : c0.latency) oracle = std::min(oracle, ms);
    const double recorded = c0.latency.count(arm.name) ? c0.latency.at(arm.name) : std::nan("");
    std::cout << fmt::format("{:<10} {:<18} {:>10.1f} {:>12.1f} {:>12.1f}  worker {}{}\n", c.spec.id, arm.name, m.latency_ms, recorded,
                             oracle, c0.worker_id, m.ok ? "" : " (" + m.error + ")");
    live_total += m.latency_ms, recorded_total += recorded, oracle_total += oracle, ++n;
  }
  std::cout << fmt::format("{} tasks re-executed with policy {}: live total {:.0f} ms, recorded total for the same arms {:.0f} ms "
                           "(live/recorded {:.3f}), recorded oracle total {:.0f} ms\n",
                           n, policy.name(), live_total, recorded_total, recorded_total > 0 ? live_total / recorded_total : 0.0,
                           oracle_total);
}

scheduler::History load(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("no store at " + path);
  auto store = data::Store::open(path);
  return scheduler::History::load(store, /*require_all=*/true);
}

nlohmann::json to_json(const scheduler::Score& s) {
  return {{"label", s.label}, {"cases", s.cases}, {"top1", s.top1}, {"within5", s.within5}, {"mean_slowdown", s.mean_slowdown},
          {"p95_slowdown", s.p95_slowdown}, {"total_ms", s.total_ms},
          {"closed_gap", std::isnan(s.closed_gap) ? nlohmann::json() : nlohmann::json(s.closed_gap)}};
}

void run(const ReplayArgs& a) {
  const std::string test_path = !a.test_db.empty() ? a.test_db : a.db;
  const std::string train_path = !a.train_db.empty() ? a.train_db : test_path;
  if (test_path.empty()) throw std::runtime_error("pass --db FILE (or --train-db A --test-db B)");
  const auto test = load(test_path);
  const auto train = train_path == test_path ? test : load(train_path);
  if (test.cases.empty()) throw std::runtime_error(test_path + " has no task with every applicable arm measured");
  std::optional<scheduler::Selector> selector;
  if (!a.selector.empty()) selector = scheduler::Selector::load(a.selector);
  std::vector<std::unique_ptr<scheduler::Policy>> owned;
  std::vector<const scheduler::Policy*> policies;
  std::stringstream list(a.policies);
  for (std::string name; std::getline(list, name, ',');) {
    owned.push_back(scheduler::make_policy(name, selector ? &*selector : nullptr));
    owned.back()->fit(train);
    policies.push_back(owned.back().get());
  }
  if (a.live) return run_live(a, *policies.front());
  const auto r = scheduler::replay(train, test, policies, a.seed);
  if (a.json) {
    nlohmann::json j = {{"test_db", test_path}, {"train_db", train_path}, {"cases", r.cases}, {"oracle_total_ms", r.oracle_total_ms},
                        {"sbs_total_ms", r.sbs_total_ms}, {"policies", nlohmann::json::array()}};
    for (const auto& p : r.policies) {
      auto pj = to_json(p.overall);
      pj["policy"] = p.overall.label;
      pj["slices"] = nlohmann::json::array();
      for (const auto& s : p.slices) pj["slices"].push_back(to_json(s));
      j["policies"].push_back(pj);
    }
    std::cout << j.dump() << std::endl;
    return;
  }
  std::cout << fmt::format("replay of {} cases from {}{}; oracle total {:.0f} ms, single best arm (of training) {:.0f} ms\n", r.cases,
                           test_path, train_path == test_path ? "" : " (baselines fitted on " + train_path + ")", r.oracle_total_ms,
                           r.sbs_total_ms);
  std::cout << fmt::format("{:<12} {:>7} {:>8} {:>9} {:>9} {:>12} {:>10}\n", "policy", "top-1", "<=5%", "slowdown", "p95", "total ms",
                           "closed gap");
  for (const auto& p : r.policies) {
    const auto& s = p.overall;
    std::cout << fmt::format("{:<12} {:>7.3f} {:>8.3f} {:>9.3f} {:>9.3f} {:>12.0f} {:>10}\n", s.label, s.top1, s.within5, s.mean_slowdown,
                             s.p95_slowdown,
                             s.total_ms, std::isnan(s.closed_gap) ? "-" : fmt::format("{:.3f}", s.closed_gap));
  }
  if (!a.slices) return;
  for (const auto& p : r.policies) {
    std::cout << fmt::format("\n{} by slice:\n", p.overall.label);
    for (const auto& s : p.slices)
      std::cout << fmt::format("  {:<18} {:>5} cases  top-1 {:.3f}  slowdown {:.3f}  total {:.0f} ms\n", s.label, s.cases, s.top1,
                               s.mean_slowdown, s.total_ms);
  }
}

}  // namespace

void register_replay(CLI::App& app) {
  auto args = std::make_shared<ReplayArgs>();
  auto* cmd = app.add_subcommand("replay", "score policies (meta, random, single-best, oracle, heuristic, roofline, knn) on measured history");
  cmd->add_option("--db", args->db, "performance store to replay (baselines are fitted on it too unless --train-db)");
  cmd->add_option("--selector", args->selector, "selector file (needed by the meta policy)")->check(CLI::ExistingFile);
  cmd->add_option("--policies", args->policies, "comma-separated policies")->capture_default_str();
  cmd->add_option("--train-db", args->train_db, "history the baselines are fitted on (e.g. another machine's)");
  cmd->add_option("--test-db", args->test_db, "history replayed (default: --db)");
  cmd->add_option("--seed", args->seed, "seed of the random policy")->capture_default_str();
  cmd->add_flag("--json", args->json, "print the report as JSON");
  cmd->add_flag("!--no-slices", args->slices, "omit the per-slice breakdowns");
  cmd->add_flag("--live", args->live, "re-execute the tasks (their stored prompt ids) with the first policy on this machine, "
                                      "log the runs and compare with the recorded ones");
  cmd->add_option("--models-dir", args->models_dir, "--live: where model names resolve (as in bench)")->capture_default_str();
  add_key_option(cmd, args->key, "--live: the key an encrypted history was swept with", /*optional=*/true);
  cmd->add_option("--threads", args->threads, "--live: intra-op threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--tasks", args->tasks, "--live: tasks to re-execute")->capture_default_str()->check(CLI::Range(1, 1000000));
  cmd->add_option("--time-limit", args->time_limit_s, "--live: seconds per run")->capture_default_str()->check(CLI::Range(0.1, 86400.0));
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
