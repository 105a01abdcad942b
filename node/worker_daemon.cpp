#include "node/worker_daemon.h"

#include <exception>
#include <optional>
#include <stdexcept>

#include "data/hardware.h"
#include "node/assignment.h"
#include "node/dry_run_executor.h"
#include "node/encrypted_models.h"
#include "node/model_executor.h"
#include "node/run_log.h"
#include "node/task_runner.h"
#include "net/auth.h"
#include "net/worker_session.h"
#include "runtime/threads.h"

namespace eesched::node {
namespace {

std::string base_name(const std::filesystem::path& dir) {
  auto p = std::filesystem::absolute(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

// The models the options name: loaded from their encrypted directories, or for a dry run the
// descriptions alone.
std::vector<LoadedModel> models_of(const WorkerOptions& options) {
  std::vector<LoadedModel> models;
  if (options.dry_run) {
    if (!options.models.empty() || !options.draft.empty())
      throw std::runtime_error("a dry-run worker loads no model: name its models in dry_run_models");
    if (options.dry_run_models.empty()) throw std::runtime_error("a dry-run worker needs at least one model name");
    for (const auto& info : options.dry_run_models) models.push_back(LoadedModel{nullptr, info});
  } else {
    if (options.models.empty()) throw std::runtime_error("a worker needs at least one encrypted model (--model ENC_DIR)");
    for (const auto& [name, dir] : options.models) models.push_back(load_encrypted(name, dir, false));
    if (!options.draft.empty()) models.push_back(load_encrypted(base_name(options.draft), options.draft, true));
  }
  return models;
}

}  // namespace

std::pair<std::string, std::filesystem::path> parse_model_arg(const std::string& arg) {
  if (arg.empty()) throw std::runtime_error("--model: empty argument (expected NAME=DIR or DIR)");
  const auto eq = arg.find('=');
  // A '=' inside a path ("runs/a=b/model") does not start a name.
  if (eq != std::string::npos && arg.find('/') > eq) {
    const std::string name = arg.substr(0, eq), dir = arg.substr(eq + 1);
    if (name.empty()) throw std::runtime_error("--model " + arg + ": empty name before '='");
    if (dir.empty()) throw std::runtime_error("--model " + arg + ": no directory after '='");
    return {name, dir};
  }
  const std::string name = base_name(arg);
  if (name.empty()) throw std::runtime_error("--model " + arg + ": cannot name a model after this directory (use NAME=DIR)");
  return {name, arg};
}

struct WorkerDaemon::Impl {
  explicit Impl(WorkerOptions o) : options(std::move(o)) {
    auto token = net::Token::read_file(options.token_file);
    const int used = runtime::set_threads(options.threads);
    models.emplace(models_of(options));
    hardware = data::load_or_measure_hardware(options.hardware_cache, used);
    name = options.name.empty() ? data::worker_name(hardware) : options.name;
    if (!options.db.empty()) run_log.emplace(options.db, name, hardware, *models, options.coordinator, options.retain_ids);

    auto done = [this](const net::Assign& a, net::WorkerSession::ConnectionId from, const RunMetrics& m) { finished(a, from, m); };
    if (options.batching.max_batch == 0)
      options.batching.max_batch = options.dry_run ? 1 : default_max_batch(*models, options.batching.context, hardware.mem_free_bytes);
    if (options.dry_run)
      executor = std::make_unique<DryRunExecutor>(*models, done);
    else
      executor = std::make_unique<ModelExecutor>(*models, options.coordinator, options.threads, options.batching, done,
                                                 [this](const net::Tokens& t, net::WorkerSession::ConnectionId to) {
                                                   session->send_tokens(t, to);
                                                 });

    net::Register registration;
    registration.name = name;
    registration.hardware = hardware;
    registration.models = models->infos();
    registration.dry_run = options.dry_run;
    registration.slots = options.batching.max_batch;
    net::WorkerSession::Handlers handlers;
    handlers.on_assign = [this](net::Assign a, net::WorkerSession::ConnectionId from) { executor->assign(std::move(a), from); };
    handlers.on_cancel = [this](const net::Cancel& c) { executor->cancel(c.task_id); };
    // Tasks not yet started die with their connection: the coordinator reassigns them.
    handlers.on_lost = [this] { return executor->drop_queued(); };
    handlers.queued = [this] { return executor->queued(); };
    handlers.on_drained = [this] { request_stop(); };
    session = std::make_unique<net::WorkerSession>(
        net::WorkerSessionOptions{options.coordinator, options.max_backoff, options.connect_timeout}, std::move(token),
        std::move(registration), std::move(handlers));
  }

  ~Impl() {
    request_stop();
    executor->join();  // before the session it sends results through goes
  }

  WorkerOptions options;
  std::optional<ModelSet> models;  // targets, then the draft
  data::HardwareProfile hardware;
  std::string name;
  std::optional<RunLog> run_log;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<net::WorkerSession> session;

  std::atomic<bool> stopping{false};
  std::atomic<bool> started{false};
  std::atomic<int64_t> tasks_run{0};

  void run() {
    if (started.exchange(true)) throw std::logic_error("WorkerDaemon::run() called twice");
    if (stopping) return;
    executor->start();
    std::exception_ptr error;
    try {
      session->run();
    } catch (...) {
      error = std::current_exception();
    }
    request_stop();
    executor->join();
    if (error) std::rethrow_exception(error);
  }

  // Any thread. The executor finishes the task it is running; the session closes everything.
  void request_stop() {
    stopping = true;
    executor->stop();
    session->stop();
  }

  // The executor's thread (the network thread in a dry run).
  void finished(const net::Assign& a, net::WorkerSession::ConnectionId from, const RunMetrics& m) {
    if (session->send_result(result_of(a, m), from)) tasks_run++;
    if (run_log) run_log->record(a, m);
  }
};

WorkerDaemon::WorkerDaemon(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

WorkerDaemon::~WorkerDaemon() = default;

void WorkerDaemon::run() { impl_->run(); }

void WorkerDaemon::stop() { impl_->request_stop(); }

void WorkerDaemon::drain(std::chrono::milliseconds timeout) { impl_->session->drain(timeout); }

const std::string& WorkerDaemon::name() const { return impl_->name; }

int64_t WorkerDaemon::tasks_run() const { return impl_->tasks_run.load(); }

}  // namespace eesched::node
