// eesched bench: the sweep (node/sweep.h) — every applicable arm of every task of a suite,
// recorded in the performance store, with a progress bar; resumable, Ctrl-C stops cleanly.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <sstream>

#include <fmt/format.h>

#include "data/arm.h"
#include "node/sweep.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

std::atomic<bool> stop_requested{false};

extern "C" void on_interrupt(int) {
  stop_requested = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once (no partial row either way)
  std::signal(SIGTERM, SIG_DFL);
}

struct BenchArgs {
  std::string suite, db, arms = "all", threads, key, models_dir = "models";
  int repeats = 1;
  double race = 0, cap = 0, time_limit_s = 60;
};

std::string clock_text(double s) {
  const auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

void run(const BenchArgs& a) {
  node::SweepOptions o;
  o.suite = a.suite;
  o.db = a.db;
  o.models_dir = a.models_dir;
  o.arms = data::parse_arm_list(a.arms);
  if (!a.threads.empty())
    for (const auto id : parse_id_list(a.threads)) {
      if (id < 1 || id > 1024) throw std::runtime_error("--threads: " + std::to_string(id) + " is not a thread count");
      o.threads.push_back(static_cast<int>(id));
    }
  o.repeats = a.repeats;
  o.race = a.race;
  o.cap = a.cap;
  o.key_file = a.key;
  o.time_limit_s = a.time_limit_s;
  o.stop = &stop_requested;
  const bool tty = isatty(fileno(stderr));
  double last_log = -1e9;
  o.progress = [&](const node::SweepProgress& p) {
    const double pct = p.total ? 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total) : 100.0;
    const auto line = fmt::format("{}/{} runs ({:.1f}%), {} recorded, {} skipped, {} failed, elapsed {}, ETA {}  {}", p.done,
                                  p.total, pct, p.recorded, p.skipped, p.failed, clock_text(p.elapsed_s), clock_text(p.eta_s),
                                  p.current);
    if (tty) {
      std::fprintf(stderr, "\r%-150s", line.c_str());
    } else if (p.elapsed_s - last_log >= 30 || p.done == p.total) {
      spdlog::info("bench: {}", line);
      last_log = p.elapsed_s;
    }
  };
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const auto s = node::run_sweep(o);
  if (tty) std::fprintf(stderr, "\n");
  std::printf("%s: %lld runs planned, %lld recorded (%lld failed, %lld of them capped), %lld already recorded, %lld out of the "
              "race, %lld arm/task pairs refused, %.1f s\n",
              s.interrupted ? "interrupted" : "done", static_cast<long long>(s.planned), static_cast<long long>(s.recorded),
              static_cast<long long>(s.failed), static_cast<long long>(s.capped), static_cast<long long>(s.skipped),
              static_cast<long long>(s.raced_out), static_cast<long long>(s.refused), s.seconds);
  if (s.interrupted) {
    std::printf("rerun the same command to resume\n");
    std::exit(130);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "the sweep: every applicable arm of every task of a suite, recorded in the store");
  cmd->add_option("--suite", args->suite, "task suite (JSONL)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--db", args->db, "performance store (SQLite; created if missing)")->required();
  cmd->add_option("--arms", args->arms, "'all' (the catalog) or a comma-separated list")->capture_default_str();
  cmd->add_option("--threads", args->threads, "thread counts to measure at, e.g. 1,2 (default: all cores)");
  cmd->add_option("--repeat", args->repeats, "measured runs per task and arm (after a short warm-up)")->capture_default_str()->check(CLI::Range(1, 100));
  cmd->add_option("--race", args->race,
                  "with --repeat: after the first round re-measure only arms within RACE x the best median so far "
                  "(e.g. 1.2; 0: every arm every round)")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--cap", args->cap,
                  "adaptive capping: stop a run once it takes CAP x the best median so far on its task, recorded as a "
                  "timeout (e.g. 3; 0: off); the first round then runs the arms fastest-expected first")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  add_key_option(cmd, args->key, "EE key: encrypt every model on the fly and run encrypted", /*optional=*/true);
  cmd->add_option("--models-dir", args->models_dir, "where suite model names resolve (syn25m/syn110m/syn350m are built in memory)")
      ->capture_default_str();
  cmd->add_option("--time-limit", args->time_limit_s, "seconds per run; a longer run is recorded as failed (timeout)")
      ->capture_default_str()->check(CLI::Range(0.1, 86400.0));
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
