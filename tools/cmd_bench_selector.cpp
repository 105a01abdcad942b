// eesched bench-selector: the cost of one decision (features for every applicable arm, one
// prediction each, the argmin), measured over the cases of a store.
#include <algorithm>
#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/store.h"
#include "scheduler/history.h"
#include "scheduler/selector.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct BenchSelectorArgs {
  std::string selector, db;
  int decisions = 20000;
  bool json = false;
};

void run(const BenchSelectorArgs& a) {
  const auto selector = scheduler::Selector::load(a.selector);
  if (!std::filesystem::exists(a.db)) throw std::runtime_error("no store at " + a.db);
  auto store = data::Store::open(a.db);
  const auto history = scheduler::History::load(store, false);
  if (history.cases.empty()) throw std::runtime_error(a.db + " has no measured task to decide on");
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(a.decisions));
  std::size_t arms = 0;
  for (int i = 0; i < a.decisions + 200; ++i) {  // the first 200 warm caches
    const auto& c = history.cases[static_cast<std::size_t>(i) % history.cases.size()];
    const auto t0 = std::chrono::steady_clock::now();
    const auto pick = selector.choose(c, c.arms);
    const double t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 200) us.push_back(t), arms += c.arms.size();
    if (pick.name.empty()) throw std::runtime_error("empty choice");
  }
  std::sort(us.begin(), us.end());
  auto q = [&](double p) { return us[std::min(us.size() - 1, static_cast<std::size_t>(p * static_cast<double>(us.size())))]; };
  const double mean_arms = static_cast<double>(arms) / static_cast<double>(us.size());
  if (a.json) {
    std::cout << nlohmann::json{{"decisions", us.size()}, {"mean_arms", mean_arms}, {"p50_us", q(0.5)}, {"p99_us", q(0.99)},
                                {"max_us", us.back()}}.dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("{} decisions over {} cases ({:.1f} applicable arms each): p50 {:.1f} us, p99 {:.1f} us, max {:.1f} us\n",
                           us.size(), history.cases.size(), mean_arms, q(0.5), q(0.99), us.back());
}

}  // namespace

void register_bench_selector(CLI::App& app) {
  auto args = std::make_shared<BenchSelectorArgs>();
  auto* cmd = app.add_subcommand("bench-selector", "time one selector decision (features + prediction for every arm)");
  cmd->add_option("--selector", args->selector, "selector file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--db", args->db, "store whose tasks to decide on")->required();
  cmd->add_option("--decisions", args->decisions, "decisions to time")->capture_default_str()->check(CLI::Range(1, 10000000));
  cmd->add_flag("--json", args->json, "print {decisions, mean_arms, p50_us, p99_us, max_us}");
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
