// eesched db: looking into a performance store.
#include <iostream>

#include <fmt/format.h>

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
  for (const auto& w : store.workers())
    std::cout << fmt::format("worker {}: {} threads, {:.1f} GFLOP/s, {:.1f} GB/s, {}\n", w.name, w.threads, w.gflops, w.copy_gbps,
                             w.cpu_model);
  const auto arms = store.arm_summaries();
  if (arms.empty()) return;
  std::cout << fmt::format("{:<18} {:>7} {:>7} {:>12} {:>6} {:>13}\n", "arm", "runs", "ok", "mean ms", "wins", "speedup vs kv");
  for (const auto& a : arms)
    std::cout << fmt::format("{:<18} {:>7} {:>7} {:>12} {:>6} {:>13}\n", a.arm, a.runs, a.ok_runs,
                             a.mean_latency_ms ? fmt::format("{:.1f}", *a.mean_latency_ms) : "-", a.wins,
                             a.mean_speedup_vs_kv ? fmt::format("{:.2f}x", *a.mean_speedup_vs_kv) : "-");
}

}  // namespace

void register_db(CLI::App& app) {
  auto* cmd = app.add_subcommand("db", "inspect a performance store");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto* st = cmd->add_subcommand("stats", "tasks, runs, workers, and per-arm win counts and mean speedups");
  st->add_option("--db", *path, "performance store")->required();
  st->callback([path] { stats(*path); });
}

}  // namespace eesched::tools
