// eesched db: looking into a performance store, forgetting runs a code change made stale, and
// recording models' measured quality.
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/arm.h"
#include "data/code_version.h"
#include "data/quality.h"
#include "data/retention.h"
#include "data/store.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

// "runs by code version: 2 (current): N (x.x%), 1: M (y.y%); training uses versions >= 2 ...",
// newest first, the current version even with no runs: how much of the history describes the
// code that runs now.
std::string code_version_line(std::map<int64_t, int64_t> by_version) {
  by_version.try_emplace(data::kCodeVersion, 0);
  int64_t runs = 0;
  for (const auto& [version, n] : by_version) runs += n;
  std::string line = "runs by code version: ";
  for (auto it = by_version.rbegin(); it != by_version.rend(); ++it)
    line += fmt::format("{}{}{}: {} ({:.1f}%)", it == by_version.rbegin() ? "" : ", ", it->first,
                        it->first == data::kCodeVersion ? " (current)" : "", it->second,
                        runs > 0 ? 100.0 * static_cast<double>(it->second) / static_cast<double>(runs) : 0.0);
  return line + fmt::format("; training uses versions >= {} unless train-selector --all-code-versions",
                            data::kOldestCompatibleCodeVersion);
}

void stats(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("no store at " + path);
  auto store = data::Store::open(path);
  const auto c = store.counts();
  std::cout << fmt::format("{}: {} tasks, {} runs, {} models, {} workers (schema v{})\n", path, c.tasks, c.runs, c.models, c.workers,
                           store.schema_version());
  if (c.runs > 0) std::cout << code_version_line(store.runs_by_code_version()) << "\n";
  for (const auto& m : store.models()) {
    std::string q;
    for (const auto& [key, v] : m.quality) q += fmt::format("{}{} {:.3f}", q.empty() ? "" : ", ", key, v.ppl_ratio);
    std::cout << fmt::format("model {}: {} parameters, {}; perplexity ratios: {}\n", m.name, m.parameters, m.dtype,
                             q.empty() ? "none measured (lossy arms not admitted)" : q);
  }
  for (const auto& w : store.workers())
    std::cout << fmt::format("worker {}: {} threads, {:.1f} GFLOP/s, {:.1f} GB/s, {}\n", w.name, w.hardware.threads,
                             w.hardware.gflops, w.hardware.copy_gbps, w.hardware.cpu_model);
  const auto ids = store.id_counts();
  std::cout << fmt::format("encrypted ids: {} of {} tasks hold them ({} unfinished, {} ended{})\n", ids.holding, c.tasks,
                           ids.unfinished, ids.ended,
                           ids.ended > 0 ? fmt::format("; eesched db purge-ids --db {} --all wipes the ended ones", path) : "");
  const auto arms = store.arm_summaries();
  if (arms.empty()) return;
  if (const auto a = store.round_agreement(); a.cases > 0)
    std::cout << fmt::format("rounds 0 and 1 name the same fastest arm in {} of {} cases ({:.1f}%): measurement noise caps top-1 "
                             "against a single round near this\n",
                             a.agreeing, a.cases, 100.0 * static_cast<double>(a.agreeing) / static_cast<double>(a.cases));
  std::cout << fmt::format("{:<18} {:>7} {:>7} {:>12} {:>6} {:>13}\n", "arm", "runs", "ok", "mean ms", "wins", "speedup vs kv");
  for (const auto& a : arms)
    std::cout << fmt::format("{:<18} {:>7} {:>7} {:>12} {:>6} {:>13}\n", a.arm, a.runs, a.ok_runs,
                             a.mean_latency_ms ? fmt::format("{:.1f}", *a.mean_latency_ms) : "-", a.wins,
                             a.mean_speedup_vs_kv ? fmt::format("{:.2f}x", *a.mean_speedup_vs_kv) : "-");
}

struct ForgetArgs {
  std::string path, arms, worker, model;
};

void forget(const ForgetArgs& a) {
  if (a.arms.empty() && a.model.empty())
    throw std::runtime_error("say what to forget: --arms A,B, --model NAME, or both (--arms all --model NAME)");
  if (!std::filesystem::exists(a.path)) throw std::runtime_error("no store at " + a.path);
  std::vector<std::string> arms;
  for (const auto& arm : data::parse_arm_list(a.arms.empty() ? "all" : a.arms)) arms.push_back(arm.name);
  auto store = data::Store::open(a.path);
  std::optional<int64_t> worker_id;
  if (!a.worker.empty()) {
    for (const auto& w : store.workers())
      if (w.name == a.worker) worker_id = w.id;
    if (!worker_id) throw std::runtime_error("no worker '" + a.worker + "' in " + a.path + " (see: eesched db stats)");
  }
  std::optional<std::string> model;
  if (!a.model.empty()) {
    bool known = false;
    for (const auto& m : store.models()) known = known || m.name == a.model;
    if (!known) throw std::runtime_error("no model '" + a.model + "' in " + a.path + " (see: eesched db stats)");
    model = a.model;
  }
  const auto n = store.forget_runs(arms, worker_id, model);
  std::cout << fmt::format("forgot {} runs of {} on {}{}; a resumed sweep (eesched bench --db {}) measures them again\n", n,
                           a.arms.empty() ? "every arm" : a.arms, a.worker.empty() ? "every worker" : a.worker,
                           a.model.empty() ? "" : ", tasks of model " + a.model, a.path);
}

struct QualityArgs {
  std::string path, model, from;
};

// Records a model's measured qualities on its rows (every row of that name: a model may have been
// registered plaintext and encrypted): what replay and cross-validation need to apply the quality
// floor to a history swept before the model's quality was measured.
void record_quality(const QualityArgs& a) {
  if (!std::filesystem::exists(a.path)) throw std::runtime_error("no store at " + a.path);
  std::ifstream in(a.from);
  if (!in) throw std::runtime_error("cannot read " + a.from);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(a.from + ": not JSON");
  }
  if (j.contains("quality")) j = j["quality"];  // an ee.json
  data::QualityTable table;
  try {
    table = data::quality_from_json(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(a.from + ": " + e.what());
  }
  if (table.empty()) throw std::runtime_error(a.from + " measures no lossy transform");
  auto store = data::Store::open(a.path);
  int n = 0;
  for (auto m : store.models())
    if (m.name == a.model) {
      m.quality = table;
      store.upsert_model(m);
      ++n;
    }
  if (n == 0) throw std::runtime_error("no model '" + a.model + "' in " + a.path + " (see: eesched db stats)");
  std::cout << fmt::format("recorded {} measured transform(s) on {} row(s) of model {}\n", table.size(), n, a.model);
}

struct PurgeArgs {
  std::string path;
  int64_t older_than_days = 0;
  bool all = false;
};

// Offline: wipes the encrypted ids of ended tasks, then rebuilds the file so no free page or
// free space inside a page keeps their bytes (a store written without secure_delete may hold
// copies of rows rewritten since). Unfinished tasks keep theirs: a coordinator needs them.
void purge_ids(const PurgeArgs& a) {
  if (a.all == (a.older_than_days > 0)) throw std::runtime_error("say which ended tasks: --older-than-days N or --all");
  if (!std::filesystem::exists(a.path)) throw std::runtime_error("no store at " + a.path);
  auto store = data::Store::open(a.path);
  store.set_retention(a.all ? data::Retention::none() : data::Retention::for_days(a.older_than_days));
  const auto cutoff = data::retention_cutoff(store.retention(), std::chrono::system_clock::now());
  const auto n = store.purge_ids(cutoff);
  store.vacuum();
  store.truncate_wal();
  const auto left = store.id_counts();
  std::cout << fmt::format("wiped the encrypted ids of {} task(s) that ended{} in {}, and rebuilt the file; {} task(s) still hold ids "
                           "({} unfinished, {} ended)\n",
                           n, cutoff ? " before " + *cutoff : "", a.path, left.holding, left.unfinished, left.ended);
}

}  // namespace

void register_db(CLI::App& app) {
  auto* cmd = app.add_subcommand("db", "inspect a performance store, forget stale runs, or purge encrypted ids");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto* st = cmd->add_subcommand("stats", "tasks, runs (and how many each code version recorded), workers, tasks still holding encrypted ids, and per-arm "
                                   "win counts and mean speedups");
  st->add_option("--db", *path, "performance store")->required();
  st->callback([path] { stats(*path); });

  auto fa = std::make_shared<ForgetArgs>();
  auto* fg = cmd->add_subcommand("forget",
                                 "delete the runs of some arms or of one model's tasks (after a kernel change made them stale, or "
                                 "to re-sweep a model's cases in one sitting)");
  fg->add_option("--db", fa->path, "performance store")->required();
  fg->add_option("--arms", fa->arms, "comma-separated arms, e.g. kv+int8,kv+int8+prune30, or 'all' (default with --model: all)");
  fg->add_option("--model", fa->model, "only the runs of tasks of this model (name as in db stats, e.g. target)");
  fg->add_option("--worker", fa->worker, "only this worker's runs (default: every worker)");
  fg->callback([fa] { forget(*fa); });

  auto qa = std::make_shared<QualityArgs>();
  auto* qu = cmd->add_subcommand("quality", "record a model's measured quality (measure-quality's quality.json, or an ee.json) in a store");
  qu->add_option("--db", qa->path, "performance store")->required();
  qu->add_option("--model", qa->model, "model name, as in db stats")->required();
  qu->add_option("--from", qa->from, "quality.json or ee.json holding the measurements")->required();
  qu->callback([qa] { record_quality(*qa); });

  auto pa = std::make_shared<PurgeArgs>();
  auto* pu = cmd->add_subcommand("purge-ids",
                                 "wipe the encrypted prompt, stop and answer ids of ended tasks (done, failed, cancelled) in a store "
                                 "whose daemon is stopped, and rebuild the file so none of their bytes remain; unfinished tasks "
                                 "keep theirs (what --retain-ids does on a running coordinator or worker)");
  pu->add_option("--db", pa->path, "performance store (the coordinator's --db, or a worker's run log)")->required();
  pu->add_option("--older-than-days", pa->older_than_days, "only tasks that ended more than N days ago")
      ->check(CLI::Range(int64_t{1}, int64_t{36500}));
  pu->add_flag("--all", pa->all, "every ended task");
  pu->callback([pa] { purge_ids(*pa); });
}

}  // namespace eesched::tools
