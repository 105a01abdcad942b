// eesched coordinator: the scheduling daemon (scheduler/coordinator.h).
#include <optional>

#include <spdlog/spdlog.h>

#include "data/retention.h"
#include "scheduler/coordinator.h"
#include "scheduler/metrics_endpoint.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct CoordinatorArgs {
  std::string listen = "127.0.0.1:7700", db, selector, token_file, policy = "meta", train_db, metrics_listen, retain_ids = "all";
  int threads = 2, max_attempts = 3, max_outstanding = 32, retrain_every = 200;
  bool online = true;
  double explore = 0.02;
  int64_t heartbeat_ms = 1000, worker_timeout_ms = 5000, task_timeout_s = 300, drain_timeout_s = 30;
  uint64_t seed = 1;
};

void run(const CoordinatorArgs& a) {
  scheduler::CoordinatorOptions o;
  o.listen = net::parse_endpoint(a.listen);
  o.db = a.db;
  o.selector = a.selector;
  o.policy = a.policy;
  o.train_db = a.train_db;
  o.token_file = a.token_file;
  o.threads = a.threads;
  o.explore = a.explore;
  o.online = a.online;
  o.retrain_every = a.retrain_every;
  o.seed = a.seed;
  o.max_attempts = a.max_attempts;
  o.max_outstanding = a.max_outstanding;
  o.heartbeat = std::chrono::milliseconds(a.heartbeat_ms);
  o.worker_timeout = std::chrono::milliseconds(a.worker_timeout_ms);
  o.task_timeout = std::chrono::seconds(a.task_timeout_s);
  o.drain_timeout = std::chrono::seconds(a.drain_timeout_s);
  o.handle_signals = true;
  o.retain_ids = data::parse_retention(a.retain_ids);
  scheduler::Coordinator coordinator(o);
  std::optional<scheduler::MetricsEndpoint> metrics;
  if (!a.metrics_listen.empty()) {
    metrics.emplace(net::parse_endpoint(a.metrics_listen), coordinator);
    spdlog::info("metrics on http://{}:{}/metrics", net::parse_endpoint(a.metrics_listen).host, metrics->port());
  }
  coordinator.run();
}

}  // namespace

void register_coordinator(CLI::App& app) {
  auto a = std::make_shared<CoordinatorArgs>();
  auto* cmd = app.add_subcommand("coordinator",
                                 "run the coordinator daemon: accept workers and clients, choose (worker, arm) per task, log every run");
  cmd->add_option("--listen", a->listen, "HOST:PORT to listen on (port 0: any free port)")->capture_default_str();
  cmd->add_option("--metrics-listen", a->metrics_listen, "HOST:PORT to serve Prometheus GET /metrics on over HTTP (port 0: any free port); off when not given");
  cmd->add_option("--db", a->db, "performance store (SQLite; created if missing)")->required();
  cmd->add_option("--selector", a->selector, "selector file (train-selector); without one every task runs kv")
      ->check(CLI::ExistingFile);
  cmd->add_option("--policy", a->policy,
                  "placement policy: meta (the selector), or a baseline: random, single-best, heuristic, roofline, knn")
      ->capture_default_str()
      ->check(CLI::IsMember({"meta", "random", "single-best", "heuristic", "roofline", "knn"}));
  cmd->add_option("--train-db", a->train_db, "history to fit single-best (default: the selector's ranking) and knn on")
      ->check(CLI::ExistingFile);
  cmd->add_option("--token-file", a->token_file, "shared worker token (make-token)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--threads", a->threads, "network threads")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_flag("!--no-online", a->online,
                "policy meta: do not learn online (no per-worker correction of predictions by the worker's own runs, no retraining)");
  cmd->add_option("--retrain-every", a->retrain_every,
                  "policy meta: retrain the selector in the background every N runs on --train-db's history plus the recent runs, "
                  "swapped in only if it predicts the most recent runs better (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000000));
  cmd->add_option("--explore", a->explore, "probability of trying another arm than the predicted best")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->seed, "seed of the exploration draws")->capture_default_str();
  cmd->add_option("--max-attempts", a->max_attempts, "attempts per task before it fails")->capture_default_str()->check(CLI::Range(1, 100));
  cmd->add_option("--max-outstanding", a->max_outstanding, "assigned unfinished tasks per worker")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--heartbeat-ms", a->heartbeat_ms, "heartbeat period asked of workers")->capture_default_str()->check(CLI::Range(10, 600000));
  cmd->add_option("--worker-timeout-ms", a->worker_timeout_ms, "a worker silent this long is dead; its tasks move")
      ->capture_default_str()->check(CLI::Range(50, 3600000));
  cmd->add_option("--task-timeout-s", a->task_timeout_s, "an attempt running longer is reassigned")
      ->capture_default_str()->check(CLI::Range(1, 86400));
  cmd->add_option("--drain-timeout-s", a->drain_timeout_s, "on SIGINT/SIGTERM, wait this long for running tasks")
      ->capture_default_str()->check(CLI::Range(0, 86400));
  add_retain_ids_option(cmd, a->retain_ids, "the store keeps tasks'");
  cmd->callback([a] { run(*a); });
}

}  // namespace eesched::tools
