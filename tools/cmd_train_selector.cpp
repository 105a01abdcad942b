// eesched train-selector: grouped cross-validation by task, then the selector trained on all of
// the history, saved as one JSON file.
#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/code_version.h"
#include "data/store.h"
#include "scheduler/cross_validation.h"
#include "scheduler/selector.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct TrainSelectorArgs {
  std::vector<std::string> dbs;
  std::string out, decisions, cv_by = "auto", exclude;
  int cv = 5, cv_repeats = 1, explain = 0;
  bool slices = true, all_code_versions = false, machine_features = false;
  scheduler::TrainOptions train;  // its defaults are the command's
};

std::string gap_text(double gap) { return std::isnan(gap) ? "-" : fmt::format("{:.3f}", gap); }

// Every case scored by models that never saw its task: the held-out figures.
void print_pooled(const scheduler::ReplayReport& r, bool slices) {
  std::cout << fmt::format("held out, all folds pooled ({} cases; oracle total {:.0f} ms, single best {:.0f} ms):\n", r.cases,
                           r.oracle_total_ms, r.sbs_total_ms);
  std::cout << fmt::format("  {:<12} {:>7} {:>6} {:>9} {:>9} {:>9} {:>10}\n", "policy", "top-1", "<=5%", "slowdown", "p95", "max",
                           "closed gap");
  for (const auto& p : r.policies) {
    const auto& s = p.overall;
    std::cout << fmt::format("  {:<12} {:>7.3f} {:>6.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>10}\n", s.label, s.top1, s.within5, s.mean_slowdown,
                             s.p95_slowdown, s.max_slowdown, gap_text(s.closed_gap));
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
      out << nlohmann::json{{"fold", d.fold},     {"task", d.task},       {"model", d.model},       {"machine", d.machine}, {"worker_id", d.worker_id},
                            {"threads", d.threads}, {"picked", d.picked}, {"oracle", d.oracle}, {"slowdown", d.slowdown},
                            {"arms", arms}}
                 .dump()
          << '\n';
    }
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

// Every store is one sitting of one machine (TaskCase::machine: the file's stem and the worker profile).
scheduler::History load_histories(const TrainSelectorArgs& a) {
  scheduler::History history;
  for (const auto& db : a.dbs) {
    if (!std::filesystem::exists(db)) throw std::runtime_error("no store at " + db);
    auto store = data::Store::open(db);
    scheduler::LoadOptions lo;
    lo.require_all = true;
    lo.min_code_version = a.all_code_versions ? 0 : data::kOldestCompatibleCodeVersion;
    auto h = scheduler::History::load(store, lo);
    const auto all = scheduler::History::load(store, /*require_all=*/true);
    std::cout << fmt::format("{}: {} cases (task x worker), {} measured (case, arm) pairs", db, h.cases.size(), h.runs());
    if (all.cases.size() != h.cases.size())
      std::cout << fmt::format(" ({} cases of code older than version {} left out: --all-code-versions keeps them)",
                               all.cases.size() - h.cases.size(), data::kOldestCompatibleCodeVersion);
    std::cout << '\n';
    history.append(std::move(h));
  }
  if (history.cases.empty())
    throw std::runtime_error("no task with every applicable arm measured by compatible code (run eesched bench, or --all-code-versions)");
  return history;
}

void print_folds(const scheduler::CrossValidation& cv) {
  std::cout << fmt::format("{:>4} {:<20} {:>6} {:>6} {:>9} {:>7} {:>6} {:>9} {:>9} {:>10} {:>9}\n", "fold", "held-out machine", "train",
                           "test", "rmse log", "top-1", "<=5%", "slowdown", "p95", "closed gap", "SBS top-1");
  for (const auto& f : cv.folds) {
    if (f.test_cases == 0) continue;
    std::cout << fmt::format("{:>4} {:<20} {:>6} {:>6} {:>9.3f} {:>7.3f} {:>6.3f} {:>9.3f} {:>9.3f} {:>10} {:>9.3f}\n", f.fold,
                             f.machine.empty() ? "-" : f.machine, f.train_cases, f.test_cases, f.rmse_log_ms, f.meta.top1,
                             f.meta.within5, f.meta.mean_slowdown, f.meta.p95_slowdown, gap_text(f.meta.closed_gap), f.single_best.top1);
  }
}

void run(const TrainSelectorArgs& a) {
  const auto history = load_histories(a);
  auto o = a.train;
  if (a.machine_features) o.excluded.clear();
  std::stringstream more(a.exclude);
  for (std::string name; std::getline(more, name, ',');)
    if (!name.empty()) o.excluded.push_back(name);
  const auto machines = history.machines();
  const bool by_machine = a.cv_by == "machine" || a.cv_by == "both" || (a.cv_by == "auto" && machines.size() >= 2);
  const bool by_task = a.cv_by == "task" || a.cv_by == "both" || a.cv_by == "auto";
  if (a.cv >= 2) {
    if (by_machine) {
      std::cout << fmt::format("leave one machine out ({} machines), {}-fold by task within (seed {}): each machine scored by selectors "
                               "trained on the others\n",
                               machines.size(), a.cv, o.seed);
      const auto cv = scheduler::cross_validate(history, a.cv, o, /*by_machine=*/true);
      print_folds(cv);
      print_pooled(cv.pooled, a.slices);
      std::cout << "  meta by held-out machine:\n";
      for (const auto& s : cv.pooled.policies.front().slices)
        if (s.label.rfind("machine=", 0) == 0)
          std::cout << fmt::format("    {:<24} {:>4} cases  top-1 {:.3f}  slowdown {:.3f}  p95 {:.3f}  max {:.3f}\n", s.label, s.cases,
                                   s.top1, s.mean_slowdown, s.p95_slowdown, s.max_slowdown);
      if (!a.decisions.empty() && !by_task) {  // with both, the task folds' decisions are written below
        write_decisions(a.decisions, cv.decisions);
        std::cout << fmt::format("{} held-out decisions written to {}\n", cv.decisions.size(), a.decisions);
      }
    }
    if (by_task) {
      std::cout << fmt::format("{}-fold cross-validation grouped by task (seed {})\n", a.cv, o.seed);
      const auto cv = scheduler::cross_validate(history, a.cv, o);
      print_folds(cv);
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
    }
  } else if (!a.decisions.empty() || a.cv_repeats > 1) {
    throw std::runtime_error(std::string(a.decisions.empty() ? "--cv-repeats" : "--decisions") +
                             " needs cross-validation (--cv 2 or more)");
  }
  const auto selector = scheduler::Selector::train(history, o);
  selector.save(a.out);
  std::cout << fmt::format("selector trained on all {} cases ({} members, risk {}) written to {}\n", history.cases.size(),
                           selector.members(), selector.risk(), a.out);
  if (a.explain > 0) {
    // Which features move the arm model's predictions, machine by machine (TreeSHAP).
    for (const auto& machine : machines) {
      std::vector<scheduler::TaskCase> cases;
      for (const auto& c : history.cases)
        if (c.machine == machine) cases.push_back(c);
      std::cout << fmt::format("mean |SHAP| of the arm model's log latency on {}'s cases:\n", machine);
      const auto phi = selector.feature_contributions(cases);
      for (std::size_t i = 0; i < phi.size() && i < static_cast<std::size_t>(a.explain); ++i)
        std::cout << fmt::format("  {:<26} {:.4f}\n", phi[i].first, phi[i].second);
    }
  }
}

}  // namespace

void register_train_selector(CLI::App& app) {
  auto args = std::make_shared<TrainSelectorArgs>();
  auto* cmd = app.add_subcommand("train-selector", "train the XGBoost selector on a performance store, with grouped cross-validation");
  cmd->add_option("--db", args->dbs, "performance store; repeat it for several machines' histories (one store per machine)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--cv-by", args->cv_by,
                  "cross-validation grouping: task, machine (leave one machine out, task folds within), both, or auto "
                  "(both with several machines, else task)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "task", "machine", "both"}));
  cmd->add_option("--members", args->train.members, "bootstrap members of the arm model (their spread is the uncertainty)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--risk", args->train.risk, "choose by exp(mean + RISK x sd) of the predicted log latency (0: the mean)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_flag("--machine-features", args->machine_features,
                "let the arm model use the machine-scale features (absolute GFLOP/s, GB/s and times) it leaves out by default");
  cmd->add_option("--exclude", args->exclude, "more features to leave out of the arm model, comma-separated");
  cmd->add_flag("--all-code-versions", args->all_code_versions, "train on runs of every code version, not only compatible ones");
  cmd->add_option("--explain", args->explain, "print the N features of largest mean |SHAP| contribution, per machine")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
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
