// eesched train-selector: grouped cross-validation by task, then the selector trained on all of
// the history, saved as one JSON file.
#include <spdlog/spdlog.h>

#include <cmath>
#include <iostream>

#include <fmt/format.h>

#include "data/store.h"
#include "scheduler/cross_validation.h"
#include "scheduler/selector.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct TrainSelectorArgs {
  std::string db, out, target = "log_latency";
  int cv = 5, rounds = 300, depth = 6, threads = 0;
  uint64_t seed = 1;
};

void run(const TrainSelectorArgs& a) {
  if (!std::filesystem::exists(a.db)) throw std::runtime_error("no store at " + a.db);
  auto store = data::Store::open(a.db);
  const auto history = scheduler::History::load(store, /*require_all=*/true);
  if (history.cases.empty()) throw std::runtime_error(a.db + " has no task with every applicable arm measured (run eesched bench)");
  scheduler::TrainOptions o;
  o.rounds = a.rounds;
  o.max_depth = a.depth;
  o.seed = a.seed;
  o.threads = a.threads;
  o.target = a.target;
  std::cout << fmt::format("{}: {} cases (task x worker), {} measured runs\n", a.db, history.cases.size(), history.runs());
  if (a.cv >= 2) {
    std::cout << fmt::format("{}-fold cross-validation grouped by task (seed {})\n", a.cv, a.seed);
    std::cout << fmt::format("{:>4} {:>6} {:>6} {:>9} {:>7} {:>6} {:>9} {:>9} {:>10} {:>9}\n", "fold", "train", "test", "rmse log",
                             "top-1", "<=5%", "slowdown", "p95", "closed gap", "SBS top-1");
    double top1 = 0, within5 = 0, gap = 0, slow = 0;
    int n = 0;
    for (const auto& f : scheduler::cross_validate(history, a.cv, o)) {
      std::cout << fmt::format("{:>4} {:>6} {:>6} {:>9.3f} {:>7.3f} {:>6.3f} {:>9.3f} {:>9.3f} {:>10.3f} {:>9.3f}\n", f.fold,
                               f.train_cases, f.test_cases, f.rmse_log_ms, f.meta.top1, f.meta.within5, f.meta.mean_slowdown,
                               f.meta.p95_slowdown, f.meta.closed_gap, f.single_best.top1);
      top1 += f.meta.top1, within5 += f.meta.within5, gap += std::isnan(f.meta.closed_gap) ? 0 : f.meta.closed_gap,
          slow += f.meta.mean_slowdown, ++n;
    }
    if (n)
      std::cout << fmt::format("mean: top-1 {:.3f} (within 5% of the oracle {:.3f}), mean slowdown {:.3f}, closed gap {:.3f}\n",
                               top1 / n, within5 / n, slow / n, gap / n);
  }
  const auto selector = scheduler::Selector::train(history, o);
  selector.save(a.out);
  std::cout << fmt::format("selector trained on all {} cases written to {}\n", history.cases.size(), a.out);
}

}  // namespace

void register_train_selector(CLI::App& app) {
  auto args = std::make_shared<TrainSelectorArgs>();
  auto* cmd = app.add_subcommand("train-selector", "train the XGBoost selector on a performance store, with grouped cross-validation");
  cmd->add_option("--db", args->db, "performance store")->required();
  cmd->add_option("--out", args->out, "selector file to write (JSON)")->required();
  cmd->add_option("--cv", args->cv, "folds of cross-validation grouped by task (0: none)")->capture_default_str()->check(CLI::Range(0, 100));
  cmd->add_option("--seed", args->seed, "seed of the fold split and of XGBoost")->capture_default_str();
  cmd->add_option("--rounds", args->rounds, "boosting rounds")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--max-depth", args->depth, "tree depth")->capture_default_str()->check(CLI::Range(1, 20));
  cmd->add_option("--threads", args->threads, "XGBoost threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--target", args->target, "log_latency, or log_ratio_to_kv (arm effect vs kv, plus a model of kv's latency)")
      ->capture_default_str()->check(CLI::IsMember({"log_ratio_to_kv", "log_latency"}));
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
