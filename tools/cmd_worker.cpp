// eesched worker: serve encrypted models to a coordinator until SIGINT/SIGTERM.
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include "data/retention.h"
#include "net/endpoint.h"
#include "runtime/synthetic.h"
#include "node/worker_daemon.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct WorkerArgs {
  std::string coordinator, token_file, db, name, draft, key_fingerprint;
  std::vector<std::string> models;
  int threads = 0;
  int64_t max_batch = 0, batch_context = 4096, prefill_chunk = 128;
  bool dry_run = false;
  int64_t max_backoff_ms = 5000, drain_timeout_s = 600;
  std::string retain_ids = "all";
};

// A model a dry-run worker claims to hold: the shape of a synthetic preset ("syn110m"; any
// other name gets syn25m's), nothing loaded.
net::ModelInfo dry_run_model(const std::string& name, const std::string& key_fingerprint, bool draft) {
  runtime::LlamaConfig c;
  try {
    c = runtime::synthetic_config(name.rfind("syn", 0) == 0 ? name.substr(3) : "25m");
  } catch (const std::exception& e) {
    throw std::runtime_error("--dry-run model '" + name + "': a name starting with 'syn' must be a synthetic preset: " + e.what());
  }
  net::ModelInfo m;
  m.row.name = name;
  m.row.fingerprint = "dry-" + name;
  m.row.layers = c.num_hidden_layers, m.row.hidden = c.hidden_size, m.row.intermediate = c.intermediate_size;
  m.row.heads = c.num_attention_heads, m.row.kv_heads = c.num_key_value_heads, m.row.vocab = c.vocab_size;
  m.row.parameters = c.parameter_count();
  m.row.weight_bytes = c.parameter_count() * 4;
  m.row.dtype = "f32";
  m.row.encrypted = true;
  m.key_fingerprint = key_fingerprint;
  m.draft = draft;
  return m;
}

void run(const WorkerArgs& a) {
  node::WorkerOptions o;
  o.coordinator = net::parse_endpoint(a.coordinator);
  o.token_file = a.token_file;
  o.threads = a.threads;
  o.batching = node::BatchingOptions{a.max_batch, a.batch_context, a.prefill_chunk};
  o.db = a.db;
  o.retain_ids = data::parse_retention(a.retain_ids);
  if (a.db.empty() && a.retain_ids != "all") spdlog::info("--retain-ids {}: no --db, so nothing is stored anyway", a.retain_ids);
  o.name = a.name;
  o.max_backoff = std::chrono::milliseconds(a.max_backoff_ms);
  if (a.dry_run) {
    o.dry_run = true;
    const std::vector<std::string> names = a.models.empty() ? std::vector<std::string>{"syn25m"} : a.models;
    for (const auto& arg : names) o.dry_run_models.push_back(dry_run_model(node::parse_model_arg(arg).first, a.key_fingerprint, false));
    if (!a.draft.empty())
      o.dry_run_models.push_back(dry_run_model(node::parse_model_arg(a.draft).first, a.key_fingerprint, true));
  } else {
    if (a.models.empty()) throw std::runtime_error("pass --model ENC_DIR (an encrypted model directory), or --dry-run");
    if (!a.key_fingerprint.empty()) throw std::runtime_error("--key-fingerprint is for --dry-run (models carry theirs in ee.json)");
    for (const auto& arg : a.models) o.models.push_back(node::parse_model_arg(arg));
    o.draft = a.draft;
  }
  node::WorkerDaemon daemon(std::move(o));

  // Signals are waited for on a thread of their own; the first drains the daemon (no new task;
  // every task already assigned here finishes and its result goes out, then it leaves), a second
  // one exits at once.
  asio::io_context signal_io;
  asio::signal_set signals(signal_io, SIGINT, SIGTERM);
  bool signalled = false;
  std::function<void(const std::error_code&, int)> on_signal = [&](const std::error_code& ec, int sig) {
    if (ec) return;
    if (signalled) {
      spdlog::warn("{} again: exiting now", strsignal(sig));
      std::_Exit(1);
    }
    signalled = true;
    spdlog::info("{}: draining (again to exit at once)", strsignal(sig));
    daemon.drain(std::chrono::seconds(a.drain_timeout_s));
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  std::thread signal_thread([&] { signal_io.run(); });
  struct Joiner {
    asio::io_context& io;
    std::thread& t;
    ~Joiner() {
      io.stop();
      t.join();
    }
  } joiner{signal_io, signal_thread};
  daemon.run();
  spdlog::info("worker {} stopped after {} task(s)", daemon.name(), daemon.tasks_run());
}

}  // namespace

void register_worker(CLI::App& app) {
  auto args = std::make_shared<WorkerArgs>();
  auto* cmd = app.add_subcommand("worker", "serve encrypted models to a coordinator (runs until SIGINT/SIGTERM, which drains it)");
  cmd->add_option("--coordinator", args->coordinator, "the coordinator's HOST:PORT")->required();
  cmd->add_option("--model", args->models,
                  "encrypted model directory, as NAME=DIR or DIR (named after the directory); repeatable. "
                  "With --dry-run: just a model name (syn25m, syn110m, ... give its shape)");
  cmd->add_option("--draft", args->draft, "encrypted draft model directory for speculative arms (named after the directory)");
  cmd->add_option("--token-file", args->token_file, "the shared token the coordinator was started with")
      ->required()
      ->check(CLI::ExistingFile);
  add_threads_option(cmd, args->threads);
  cmd->add_option("--max-batch", args->max_batch,
                  "tasks decoded together in a continuous batch, 1..16 (1: one at a time; default 0: 8, fewer when "
                  "their KV caches would not fit in a quarter of the free memory)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{16}));
  cmd->add_option("--batch-context", args->batch_context,
                  "positions per batched task (prompt + new tokens); longer tasks run alone")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--prefill-chunk", args->prefill_chunk,
                  "prompt tokens prefilled per forward between decoding steps of the batch")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--db", args->db, "local performance store to log every run in (optional)");
  cmd->add_option("--name", args->name, "the name to register under (default: HOST/threads=N)");
  cmd->add_flag("--dry-run", args->dry_run, "answer every task at once without loading or running a model (measures the coordinator)");
  cmd->add_option("--key-fingerprint", args->key_fingerprint, "--dry-run: the key fingerprint its models claim");
  cmd->add_option("--max-backoff-ms", args->max_backoff_ms, "longest wait between reconnection attempts")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  cmd->add_option("--drain-timeout-s", args->drain_timeout_s,
                  "on SIGINT/SIGTERM: no new tasks; wait at most this long for the ones assigned here to finish and "
                  "reach the coordinator, then exit (a second signal exits at once)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{86400}));
  add_retain_ids_option(cmd, args->retain_ids, "the run log (--db) keeps");
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
