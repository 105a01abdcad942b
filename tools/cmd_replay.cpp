// eesched replay: every policy against the measured history, with per-slice breakdowns.
#include <algorithm>
#include <cmath>
#include <tuple>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "data/store.h"
#include "scheduler/online.h"
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
  bool json = false, slices = true, live = false, online = false, resample = false;
  int stream = 200, explain = 0;
  double explore = 0.02, risk = -1;
  scheduler::OnlineOptions online_options;
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

// --online: the test history streamed through the learning loop the coordinator runs
// (scheduler/online.h), against the same selector without it.
void run_online(const ReplayArgs& a, const scheduler::History& train, const scheduler::History& test, scheduler::Selector selector) {
  std::vector<scheduler::TaskCase> stream = test.cases;
  std::sort(stream.begin(), stream.end(), [](const auto& x, const auto& y) { return std::tie(x.started_at, x.task_id) < std::tie(y.started_at, y.task_id); });
  if (a.resample) {
    // N tasks drawn with replacement (seeded) from the stored cases, when there are fewer.
    std::mt19937_64 rng(a.seed);
    std::vector<scheduler::TaskCase> drawn;
    for (int i = 0; i < a.stream; ++i) drawn.push_back(stream[std::uniform_int_distribution<std::size_t>(0, stream.size() - 1)(rng)]);
    stream = std::move(drawn);
  } else if (static_cast<int>(stream.size()) > a.stream) {
    stream.resize(static_cast<std::size_t>(a.stream));
  }
  const auto retrain = scheduler::retrain_options(selector);
  auto static_options = a.online_options;
  static_options.correct = false;
  static_options.retrain_every = 0;
  scheduler::OnlineLearner learner(selector, train, retrain, a.online_options);
  scheduler::OnlineLearner fixed(std::move(selector), train, retrain, static_options);
  const auto online = scheduler::replay_online(stream, learner, a.explore, a.seed, [&](const scheduler::OnlineStep&, int64_t n) {
    if (n % 25 == 0) spdlog::info("replay --online: {}/{} tasks", n, stream.size());
  });
  const auto still = scheduler::replay_online(stream, fixed, a.explore, a.seed);
  // Checkpoints: cumulative latency against the oracle's, from the start and after the first 50.
  nlohmann::json rows = nlohmann::json::array();
  std::cout << fmt::format("online replay of {} tasks from {} ({}), selector {} ({}), explore {}, retrain every {} runs\n", stream.size(),
                           a.test_db.empty() ? a.db : a.test_db, a.resample ? "drawn with replacement" : "in time order", a.selector,
                           train.cases.empty() ? "no base history" : "base history " + a.train_db, a.explore,
                           a.online_options.retrain_every);
  std::cout << fmt::format("{:>6} {:>12} {:>12} {:>14} {:>16} {:>16} {:>10}\n", "tasks", "oracle ms", "online ms", "online/oracle",
                           "after 50: online", "after 50: static", "explored");
  double o_ms = 0, l_ms = 0, s_ms = 0, o50 = 0, l50 = 0, s50 = 0;
  int64_t explored = 0;
  for (std::size_t i = 0; i < stream.size(); ++i) {
    o_ms += online.steps[i].oracle_ms, l_ms += online.steps[i].ms, s_ms += still.steps[i].ms;
    explored += online.steps[i].explored;
    if (i >= 50) o50 += online.steps[i].oracle_ms, l50 += online.steps[i].ms, s50 += still.steps[i].ms;
    const auto n = i + 1;
    if (n % 25 == 0 || n == stream.size()) {
      const double after_online = o50 > 0 ? l50 / o50 : std::nan(""), after_static = o50 > 0 ? s50 / o50 : std::nan("");
      std::cout << fmt::format("{:>6} {:>12.0f} {:>12.0f} {:>14.3f} {:>16.3f} {:>16.3f} {:>10}\n", n, o_ms, l_ms, l_ms / o_ms, after_online,
                               after_static, explored);
      rows.push_back({{"tasks", n}, {"oracle_ms", o_ms}, {"online_ms", l_ms}, {"static_ms", s_ms}, {"online_vs_oracle", l_ms / o_ms},
                      {"static_vs_oracle", s_ms / o_ms},
                      {"online_vs_oracle_after_50", o50 > 0 ? nlohmann::json(after_online) : nlohmann::json()},
                      {"static_vs_oracle_after_50", o50 > 0 ? nlohmann::json(after_static) : nlohmann::json()},
                      {"explored", explored}});
    }
  }
  nlohmann::json retrains = nlohmann::json::array();
  for (const auto& v : online.retrains) {
    std::cout << fmt::format("retrain: held-out RMSE {:.3f} vs current {:.3f} on {} runs: {}\n", v.candidate_rmse, v.current_rmse,
                             v.holdout_runs, v.swapped ? "swapped in" : "kept");
    retrains.push_back({{"swapped", v.swapped}, {"current_rmse", v.current_rmse}, {"candidate_rmse", v.candidate_rmse}, {"holdout_runs", v.holdout_runs}});
  }
  if (a.json)
    std::cout << nlohmann::json{{"stream", stream.size()}, {"checkpoints", rows}, {"retrains", retrains}, {"swaps", learner.swaps()}}.dump()
              << std::endl;
}

scheduler::History load(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("no store at " + path);
  auto store = data::Store::open(path);
  return scheduler::History::load(store, /*require_all=*/true);
}

nlohmann::json to_json(const scheduler::Score& s) {
  return {{"label", s.label}, {"cases", s.cases}, {"top1", s.top1}, {"within5", s.within5}, {"mean_slowdown", s.mean_slowdown},
          {"p95_slowdown", s.p95_slowdown}, {"max_slowdown", s.max_slowdown}, {"total_ms", s.total_ms},
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
  if (selector && a.risk >= 0) selector->set_risk(a.risk);
  if (a.online) {
    if (!selector) throw std::runtime_error("--online needs --selector");
    return run_online(a, a.train_db.empty() ? scheduler::History{} : train, test, std::move(*selector));
  }
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
  std::cout << fmt::format("{:<12} {:>7} {:>8} {:>9} {:>9} {:>9} {:>12} {:>10}\n", "policy", "top-1", "<=5%", "slowdown", "p95", "max",
                           "total ms", "closed gap");
  for (const auto& p : r.policies) {
    const auto& s = p.overall;
    std::cout << fmt::format("{:<12} {:>7.3f} {:>8.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>12.0f} {:>10}\n", s.label, s.top1, s.within5,
                             s.mean_slowdown, s.p95_slowdown, s.max_slowdown,
                             s.total_ms, std::isnan(s.closed_gap) ? "-" : fmt::format("{:.3f}", s.closed_gap));
  }
  if (a.explain > 0 && selector) {
    std::cout << fmt::format("\nmean |SHAP| of the selector's arm model on {}'s cases (what moves its decisions there):\n", test_path);
    const auto phi = selector->feature_contributions(test.cases);
    for (std::size_t i = 0; i < phi.size() && i < static_cast<std::size_t>(a.explain); ++i)
      std::cout << fmt::format("  {:<26} {:.4f}\n", phi[i].first, phi[i].second);
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
  cmd->add_option("--risk", args->risk, "override the selector's risk weight (choose by exp(mean + RISK x sd))")->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--explain", args->explain, "print the N features of largest mean |SHAP| contribution on the test cases")
      ->check(CLI::Range(0, 1000));
  cmd->add_flag("--online", args->online,
                "stream the test history's tasks in time order through the coordinator's learning loop (per-worker correction, "
                "retraining, directed exploration) from --selector, and report cumulative latency against the oracle");
  cmd->add_option("--stream", args->stream, "--online: tasks to stream")->capture_default_str()->check(CLI::Range(1, 1000000));
  cmd->add_flag("--resample", args->resample, "--online: draw --stream tasks with replacement (seeded) from the stored ones");
  cmd->add_option("--explore", args->explore, "--online: probability of exploring")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--retrain-every", args->online_options.retrain_every, "--online: runs between retrainings (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
