// eesched db: looking into a performance store, forgetting runs a code change made stale, and
// recording models' measured quality.
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/arm.h"
#include "data/quality.h"
#include "data/store.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

void stats(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("no store at " + path);
  auto store = data::Store::open(path);
  const auto c = store.counts();
  std::cout << fmt::format("{}: {} tasks, {} runs, {} models, {} workers (schema v{})\n", path, c.tasks, c.runs, c.models, c.workers,
                           store.schema_version());
  for (const auto& m : store.models()) {
    std::string q;
    for (const auto& [key, v] : m.quality) q += fmt::format("{}{} {:.3f}", q.empty() ? "" : ", ", key, v.ppl_ratio);
    std::cout << fmt::format("model {}: {} parameters, {}; perplexity ratios: {}\n", m.name, m.parameters, m.dtype,
                             q.empty() ? "none measured (lossy arms not admitted)" : q);
  }
  for (const auto& w : store.workers())
    std::cout << fmt::format("worker {}: {} threads, {:.1f} GFLOP/s, {:.1f} GB/s, {}\n", w.name, w.hardware.threads,
                             w.hardware.gflops, w.hardware.copy_gbps, w.hardware.cpu_model);
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

}  // namespace

void register_db(CLI::App& app) {
  auto* cmd = app.add_subcommand("db", "inspect a performance store, or forget stale runs");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto* st = cmd->add_subcommand("stats", "tasks, runs, workers, and per-arm win counts and mean speedups");
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
}

}  // namespace eesched::tools
