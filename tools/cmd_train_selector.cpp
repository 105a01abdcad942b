// eesched train-selector: grouped cross-validation by task, then the selector trained on all of
// the history, saved as one JSON file.
#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/store.h"
#include "scheduler/cross_validation.h"
#include "scheduler/selector.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct TrainSelectorArgs {
  std::string db, out, decisions;
  int cv = 5, cv_repeats = 1;
  bool slices = true;
  scheduler::TrainOptions train;  // its defaults are the command's
};

std::string gap_text(double gap) { return std::isnan(gap) ? "-" : fmt::format("{:.3f}", gap); }

// Every case scored by models that never saw its task: the held-out figures.
void print_pooled(const scheduler::ReplayReport& r, bool slices) {
  std::cout << fmt::format("held out, all folds pooled ({} cases; oracle total {:.0f} ms, single best {:.0f} ms):\n", r.cases,
                           r.oracle_total_ms, r.sbs_total_ms);
  std::cout << fmt::format("  {:<12} {:>7} {:>6} {:>9} {:>9} {:>10}\n", "policy", "top-1", "<=5%", "slowdown", "p95", "closed gap");
  for (const auto& p : r.policies) {
    const auto& s = p.overall;
    std::cout << fmt::format("  {:<12} {:>7.3f} {:>6.3f} {:>9.3f} {:>9.3f} {:>10}\n", s.label, s.top1, s.within5, s.mean_slowdown,
                             s.p95_slowdown, gap_text(s.closed_gap));
  }
  if (!slices || r.policies.empty()) return;
  std::cout << "  meta by slice:\n";
  for (const auto& s : r.policies.front().slices)
    std::cout << fmt::format("    {:<16} {:>4} cases  top-1 {:.3f}  <=5% {:.3f}  slowdown {:.3f}\n", s.label, s.cases, s.top1, s.within5,
                             s.mean_slowdown);
}

// Repeated k-fold: the pooled held-out figures of `splits` fold splits (seeds seed, seed+1, ...).
void print_repeated(const std::vector<scheduler::ReplayReport>& pooled, int k, uint64_t first_seed) {
  std::cout << fmt::format("repeated {}-fold cross-validation over {} fold splits (seeds {}..{}), pooled held out: mean [min, max]\n", k,
                           pooled.size(), first_seed, first_seed + pooled.size() - 1);
  std::cout << fmt::format("  {:<12} {:>21} {:>21} {:>9} {:>24}\n", "policy", "top-1", "<=5%", "slowdown", "closed gap");
  auto range = [](const scheduler::RepeatedFigure& f) {
    return std::isnan(f.mean) ? std::string("-") : fmt::format("{:.3f} [{:.3f}, {:.3f}]", f.mean, f.min, f.max);
  };
  for (const auto& s : scheduler::summarize_splits(pooled))
    std::cout << fmt::format("  {:<12} {:>21} {:>21} {:>9.3f} {:>24}\n", s.label, range(s.top1), range(s.within5),
                             s.mean_slowdown.mean, range(s.closed_gap));
}

// One JSON object per held-out case: where the selector went wrong, and by how much.
void write_decisions(const std::string& path, const std::vector<scheduler::HeldOutDecision>& decisions) {
  const auto tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& d : decisions) {
      nlohmann::json arms = nlohmann::json::object();
      for (const auto& [arm, ms] : d.arms) arms[arm] = {{"measured_ms", ms.first}, {"predicted_ms", ms.second}};
      out << nlohmann::json{{"fold", d.fold},     {"task", d.task},       {"model", d.model},       {"worker_id", d.worker_id},
                            {"threads", d.threads}, {"picked", d.picked}, {"oracle", d.oracle}, {"slowdown", d.slowdown},
                            {"arms", arms}}
                 .dump()
          << '\n';
    }
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

void run(const TrainSelectorArgs& a) {
  if (!std::filesystem::exists(a.db)) throw std::runtime_error("no store at " + a.db);
  auto store = data::Store::open(a.db);
  const auto history = scheduler::History::load(store, /*require_all=*/true);
  if (history.cases.empty()) throw std::runtime_error(a.db + " has no task with every applicable arm measured (run eesched bench)");
  const auto& o = a.train;
  std::cout << fmt::format("{}: {} cases (task x worker), {} measured (case, arm) pairs\n", a.db, history.cases.size(), history.runs());
  if (a.cv >= 2) {
    std::cout << fmt::format("{}-fold cross-validation grouped by task (seed {})\n", a.cv, o.seed);
    std::cout << fmt::format("{:>4} {:>6} {:>6} {:>9} {:>7} {:>6} {:>9} {:>9} {:>10} {:>9}\n", "fold", "train", "test", "rmse log",
                             "top-1", "<=5%", "slowdown", "p95", "closed gap", "SBS top-1");
    const auto cv = scheduler::cross_validate(history, a.cv, o);
    for (const auto& f : cv.folds)
      std::cout << fmt::format("{:>4} {:>6} {:>6} {:>9.3f} {:>7.3f} {:>6.3f} {:>9.3f} {:>9.3f} {:>10} {:>9.3f}\n", f.fold,
                               f.train_cases, f.test_cases, f.rmse_log_ms, f.meta.top1, f.meta.within5, f.meta.mean_slowdown,
                               f.meta.p95_slowdown, gap_text(f.meta.closed_gap), f.single_best.top1);
    print_pooled(cv.pooled, a.slices);
    if (!a.decisions.empty()) {
      write_decisions(a.decisions, cv.decisions);
      std::cout << fmt::format("{} held-out decisions written to {}\n", cv.decisions.size(), a.decisions);
    }
    if (a.cv_repeats > 1) {
      std::vector<scheduler::ReplayReport> pooled{cv.pooled};
      for (int r = 1; r < a.cv_repeats; ++r) {
        auto split = o;
        split.seed = o.seed + static_cast<uint64_t>(r);
        spdlog::info("train-selector: fold split {}/{} (seed {})", r + 1, a.cv_repeats, split.seed);
        pooled.push_back(scheduler::cross_validate(history, a.cv, split).pooled);
      }
      print_repeated(pooled, a.cv, o.seed);
    }
  } else if (!a.decisions.empty() || a.cv_repeats > 1) {
    throw std::runtime_error(std::string(a.decisions.empty() ? "--cv-repeats" : "--decisions") +
                             " needs cross-validation (--cv 2 or more)");
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
  cmd->add_option("--seed", args->train.seed, "seed of the fold split and of XGBoost")->capture_default_str();
  cmd->add_option("--cv-repeats", args->cv_repeats,
                  "repeated cross-validation: this many fold splits (seeds SEED, SEED+1, ...), summarized per policy as mean [min, max]")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--rounds", args->train.rounds, "boosting rounds")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--max-depth", args->train.max_depth, "tree depth")->capture_default_str()->check(CLI::Range(1, 20));
  cmd->add_option("--eta", args->train.eta, "learning rate (shrinkage per round)")->capture_default_str()->check(CLI::Range(0.001, 1.0));
  cmd->add_option("--anchor-margin", args->train.anchor_margin,
                  "choose another arm than the single best of the history only for a predicted gain beyond this fraction (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--decisions", args->decisions,
                  "write every held-out decision (predicted and measured ms of each arm, the pick, the oracle) as JSONL");
  cmd->add_flag("!--no-slices", args->slices, "omit the held-out per-slice breakdown");
  cmd->add_option("--threads", args->train.threads, "XGBoost threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--target", args->train.target,
                  "log_ratio_to_kv (each arm's effect against kv on the same task, plus a model of kv's latency) or log_latency")
      ->capture_default_str()->check(CLI::IsMember({"log_ratio_to_kv", "log_latency"}));
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
