#include "node/worker_daemon.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <nlohmann/json.hpp>

#include "accel/arm_cache.h"
#include "accel/registry.h"
#include "data/arm.h"
#include "data/hardware.h"
#include "data/sqlite.h"
#include "data/store.h"
#include "ee/manifest.h"
#include "ee/transform.h"
#include "net/auth.h"
#include "net/connection.h"
#include "net/protocol.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "node/task_runner.h"

namespace eesched::node {
namespace {

// "[a b c d e f ...] (n ids)": enough of an id list to recognise it in a log.
std::string preview(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size() && i < 6; ++i) {
    if (i > 0) s += ' ';
    s += std::to_string(ids[i]);
  }
  if (ids.size() > 6) s += " ...";
  return s + "] (" + std::to_string(ids.size()) + " ids)";
}


using asio::ip::tcp;
using std::chrono::milliseconds;

// A coordinator that accepts the TCP connection but never completes the handshake is dropped
// (and retried) after this long.
constexpr milliseconds kHandshakeTimeout{10000};
constexpr milliseconds kInitialBackoff{100};

std::string base_name(const std::filesystem::path& dir) {
  auto p = std::filesystem::absolute(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

struct LoadedModel {
  std::shared_ptr<const runtime::LlamaModel> model;  // null for a dry-run model
  net::ModelInfo info;
};

// An encrypted model directory, loaded and described as it is registered.
LoadedModel load_encrypted(const std::string& name, const std::filesystem::path& dir, bool draft) {
  if (!std::filesystem::is_directory(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  const auto manifest = ee::Manifest::read(dir);
  if (!manifest)
    throw std::runtime_error("model " + dir.string() + " is not encrypted (no ee.json): a worker serves encrypted models only");
  LoadedModel m;
  m.model = std::make_shared<const runtime::LlamaModel>(runtime::LlamaModel::load(dir));
  const auto& c = m.model->config();
  auto& row = m.info.row;
  row.name = name;
  row.fingerprint = ee::model_fingerprint(*m.model);
  row.layers = c.num_hidden_layers, row.hidden = c.hidden_size, row.intermediate = c.intermediate_size;
  row.heads = c.num_attention_heads, row.kv_heads = c.num_key_value_heads, row.vocab = c.vocab_size;
  row.parameters = c.parameter_count();
  row.weight_bytes = m.model->weight_bytes();
  row.dtype = "f32";  // computed in f32 whatever the file stores
  row.encrypted = true;
  row.quality = manifest->quality;  // measured by the owner on plaintext (ee.json)
  m.info.key_fingerprint = manifest->key_fingerprint;
  m.info.draft = draft;
  return m;
}

net::RunReport to_report(const RunMetrics& m) {
  net::RunReport r;
  static_cast<data::RunMeasurement&>(r) = m;
  r.tokens = m.tokens;
  return r;
}

std::string model_list(const std::vector<LoadedModel>& models) {
  std::string s;
  for (const auto& m : models) {
    if (!s.empty()) s += ", ";
    s += m.info.row.name + (m.info.draft ? " (draft)" : "");
  }
  return s.empty() ? "none" : s;
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
  struct Job {
    std::shared_ptr<net::Connection> conn;  // the connection that assigned it: the result goes back there only
    net::Assign assign;
  };

  explicit Impl(WorkerOptions o) : options(std::move(o)), token(net::Token::read_file(options.token_file)) {
    const int used = runtime::set_threads(options.threads);
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
    for (std::size_t i = 0; i < models.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (models[i].info.row.name == models[j].info.row.name && models[i].info.draft == models[j].info.draft)
          throw std::runtime_error("two models are named '" + models[i].info.row.name + "' (use --model NAME=DIR)");
    for (const auto& m : models) infos.push_back(m.info);
    hardware = data::load_or_measure_hardware(options.hardware_cache, used);
    name = options.name.empty() ? data::worker_name(hardware) : options.name;
    if (!options.db.empty()) {
      store.emplace(data::Store::open(options.db));
      store_worker_id = store->upsert_worker(data::worker_row(name, hardware));
      for (const auto& m : models) store_model_ids[m.info.row.fingerprint] = store->upsert_model(m.info.row);
    }
    backoff = std::min(kInitialBackoff, options.max_backoff);
  }

  ~Impl() {
    request_stop();
    if (executor.joinable()) executor.join();
  }

  // ---- configuration and models (read-only after construction) ----
  WorkerOptions options;
  net::Token token;
  data::HardwareProfile hardware;
  std::string name;
  std::vector<LoadedModel> models;  // targets, then the draft
  std::vector<net::ModelInfo> infos;
  accel::ArmCache cache;

  // ---- local run log: the executor thread, or the network thread in dry-run mode ----
  std::mutex store_mutex;
  std::optional<data::Store> store;
  int64_t store_worker_id = 0;
  std::map<std::string, int64_t> store_model_ids;  // fingerprint -> id

  std::atomic<bool> stopping{false};
  std::atomic<bool> started{false};
  std::atomic<int64_t> tasks_run{0};

  // ---- network thread only (io is run by run()'s thread alone, so handlers never overlap) ----
  // Declared before every object that uses it, so those are destroyed first.
  asio::io_context io;
  tcp::resolver resolver{io};
  asio::steady_timer connect_timer{io}, handshake_timer{io}, heartbeat_timer{io}, reconnect_timer{io};
  std::shared_ptr<tcp::socket> pending_socket;  // the connection attempt in progress
  milliseconds backoff{kInitialBackoff};
  milliseconds heartbeat{1000};
  std::string last_connect_error;  // of the current outage
  std::string my_nonce;  // our challenge, once Register is sent
  bool registered = false;
  int64_t worker_id = 0;
  std::optional<std::string> fatal;

  // The live connection; also read by stop() from other threads.
  std::mutex conn_mutex;
  std::shared_ptr<net::Connection> conn;

  // ---- executor ----
  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::deque<Job> queue;
  bool running_task = false;
  std::thread executor;

  std::shared_ptr<net::Connection> current() {
    std::lock_guard lock(conn_mutex);
    return conn;
  }

  // ---------------------------------------------------------------- lifecycle

  void run() {
    if (started.exchange(true)) throw std::logic_error("WorkerDaemon::run() called twice");
    if (stopping) return;
    if (!options.dry_run) executor = std::thread([this] { executor_loop(); });
    asio::post(io, [this] { start_connect(); });
    std::exception_ptr error;
    try {
      io.run();
      // Let the closes that shutdown started finish (flushes, close handlers) without waiting.
      io.restart();
      io.poll();
    } catch (...) {
      error = std::current_exception();
    }
    request_stop();
    if (executor.joinable()) executor.join();
    if (error) std::rethrow_exception(error);
    if (fatal) throw std::runtime_error(*fatal);
  }

  // Any thread. The executor finishes the task it is running; the network thread closes
  // everything and leaves io.run().
  void request_stop() {
    {
      std::lock_guard lock(queue_mutex);
      stopping = true;
      queue.clear();
    }
    queue_cv.notify_all();
    asio::post(io, [this] { shutdown_network(); });
  }

  void shutdown_network() {
    stopping = true;
    asio::error_code ec;
    connect_timer.cancel();
    handshake_timer.cancel();
    heartbeat_timer.cancel();
    reconnect_timer.cancel();
    resolver.cancel();
    if (pending_socket) pending_socket->close(ec);
    pending_socket.reset();
    std::shared_ptr<net::Connection> c;
    {
      std::lock_guard lock(conn_mutex);
      c = std::move(conn);
      conn.reset();
    }
    if (c) c->close("the worker is stopping");
    io.stop();
  }

  void fail_fatally(const std::string& why) {
    if (!fatal) fatal = why;
    {
      std::lock_guard lock(queue_mutex);
      stopping = true;
      queue.clear();
    }
    queue_cv.notify_all();
    shutdown_network();
  }

  // ---------------------------------------------------------------- connecting

  void start_connect() {
    if (stopping) return;
    auto socket = std::make_shared<tcp::socket>(asio::make_strand(io));
    pending_socket = socket;
    connect_timer.expires_after(options.connect_timeout);
    connect_timer.async_wait([this, socket](std::error_code ec) {
      if (ec) return;
      connect_failed(socket, "no connection within " + std::to_string(options.connect_timeout.count()) + " ms");
    });
    const auto& at = options.coordinator;
    resolver.async_resolve(at.host, std::to_string(at.port), [this, socket](std::error_code ec, tcp::resolver::results_type results) {
      if (pending_socket != socket) return;  // timed out or stopped meanwhile
      if (ec) return connect_failed(socket, ec.message());
      asio::async_connect(*socket, results, [this, socket](std::error_code ec2, const tcp::endpoint&) {
        if (pending_socket != socket) return;
        if (ec2) return connect_failed(socket, ec2.message());
        pending_socket.reset();
        connect_timer.cancel();
        connected(std::move(*socket));
      });
    });
  }

  void connect_failed(const std::shared_ptr<tcp::socket>& socket, const std::string& why) {
    if (pending_socket != socket) return;
    pending_socket.reset();
    connect_timer.cancel();
    resolver.cancel();
    asio::error_code ec;
    socket->close(ec);
    if (stopping) return;
    // One warning per outage (and per new reason), not one per attempt.
    const auto level = why == last_connect_error ? spdlog::level::debug : spdlog::level::warn;
    last_connect_error = why;
    spdlog::log(level, "cannot reach the coordinator {}: {}; retrying in {} ms", options.coordinator.str(), why, backoff.count());
    schedule_reconnect();
  }

  void schedule_reconnect() {
    reconnect_timer.expires_after(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
    reconnect_timer.async_wait([this](std::error_code ec) {
      if (!ec) start_connect();
    });
  }

  void connected(tcp::socket socket) {
    if (stopping) return;
    net::Connection::Options co;
    co.idle_timeout = milliseconds(0);  // until registered: then heartbeats are answered
    auto c = net::Connection::create(std::move(socket), co);
    {
      std::lock_guard lock(conn_mutex);
      conn = c;
    }
    registered = false;
    my_nonce.clear();
    spdlog::debug("connected to the coordinator {}", options.coordinator.str());
    handshake_timer.expires_after(kHandshakeTimeout);
    handshake_timer.async_wait([this, weak = std::weak_ptr<net::Connection>(c)](std::error_code ec) {
      auto c2 = weak.lock();
      if (ec || !c2 || c2 != current() || registered) return;
      c2->close("no registration within " + std::to_string(kHandshakeTimeout.count()) + " ms");
    });
    c->start([this](const std::shared_ptr<net::Connection>& from, net::Message m) { on_message(from, std::move(m)); },
             [this](const std::shared_ptr<net::Connection>& from, const std::string& reason) { on_close(from, reason); });
  }

  void on_close(const std::shared_ptr<net::Connection>& c, const std::string& reason) {
    {
      std::lock_guard lock(conn_mutex);
      if (c != conn) return;  // an old connection, or shutdown already let go of it
      conn.reset();
    }
    const bool was_registered = registered;
    registered = false;
    my_nonce.clear();
    handshake_timer.cancel();
    heartbeat_timer.cancel();
    std::size_t dropped = 0;
    {
      // Not-started tasks die with their connection: the coordinator reassigns them.
      std::lock_guard lock(queue_mutex);
      dropped = queue.size();
      queue.clear();
    }
    if (stopping) return;
    spdlog::warn("{} the coordinator {}: {}{}; reconnecting in {} ms", was_registered ? "lost" : "could not register with",
                 options.coordinator.str(), reason,
                 dropped ? " (" + std::to_string(dropped) + " queued task" + (dropped > 1 ? "s" : "") + " dropped)" : "",
                 backoff.count());
    schedule_reconnect();
  }

  // ---------------------------------------------------------------- messages

  void on_message(const std::shared_ptr<net::Connection>& c, net::Message m) {
    if (c != current()) return;
    try {
      switch (m.type) {
        case net::MessageType::Hello: return on_hello(c, net::read_message<net::Hello>(m.body));
        case net::MessageType::Registered: return on_registered(c, net::read_message<net::Registered>(m.body));
        case net::MessageType::Assign: return on_assign(c, net::read_message<net::Assign>(m.body));
        case net::MessageType::Cancel: return on_cancel(net::read_message<net::Cancel>(m.body));
        case net::MessageType::Heartbeat: return;  // the coordinator is alive; the idle timer restarted
        case net::MessageType::Error: return on_error(net::read_message<net::ErrorMsg>(m.body));
        default:
          return c->fail(net::codes::kUnexpected, std::string("a worker does not accept ") + net::message_type_name(m.type));
      }
    } catch (const net::ProtocolError& e) {
      c->fail(e.code(), e.what());
    } catch (const std::exception& e) {
      // Never let a handler's exception out into io.run().
      spdlog::warn("while handling a {} from the coordinator: {}", net::message_type_name(m.type), e.what());
    }
  }

  void on_hello(const std::shared_ptr<net::Connection>& c, const net::Hello& hello) {
    if (!my_nonce.empty()) return c->fail(net::codes::kUnexpected, "a second Hello");
    net::Register reg;
    reg.name = name;
    reg.hardware = hardware;
    reg.models = infos;
    reg.dry_run = options.dry_run;
    reg.nonce = my_nonce = net::make_nonce();
    reg.proof = token.proof(net::kWorkerProofLabel, hello.nonce, name);
    c->send(net::to_message(reg));
  }

  void on_registered(const std::shared_ptr<net::Connection>& c, const net::Registered& r) {
    if (my_nonce.empty() || registered) return c->fail(net::codes::kUnexpected, "Registered before Register, or twice");
    if (!token.verify(net::kCoordinatorProofLabel, my_nonce, name, r.proof))
      return fail_fatally("the coordinator at " + options.coordinator.str() + " could not prove it holds the token");
    registered = true;
    worker_id = r.worker_id;
    heartbeat = milliseconds(r.heartbeat_ms > 0 ? r.heartbeat_ms : 1000);
    backoff = std::min(kInitialBackoff, options.max_backoff);
    last_connect_error.clear();
    handshake_timer.cancel();
    // The coordinator answers every heartbeat: silence means a dead host or a cut link, which
    // TCP alone would report only minutes later.
    c->set_idle_timeout(std::max(4 * heartbeat, milliseconds(2000)));
    spdlog::info("registered with {} as {} (worker id {}): models {}{}", options.coordinator.str(), name, worker_id, model_list(models),
                 options.dry_run ? " (dry run)" : "");
    schedule_heartbeat(c);
  }

  void schedule_heartbeat(const std::shared_ptr<net::Connection>& c) {
    heartbeat_timer.expires_after(heartbeat);
    heartbeat_timer.async_wait([this, weak = std::weak_ptr<net::Connection>(c)](std::error_code ec) {
      auto c2 = weak.lock();
      if (ec || !c2 || c2 != current() || !registered) return;
      net::Heartbeat hb;
      {
        std::lock_guard lock(queue_mutex);
        hb.queued = static_cast<int64_t>(queue.size()) + (running_task ? 1 : 0);
      }
      c2->send(net::to_message(hb));
      schedule_heartbeat(c2);
    });
  }

  void on_assign(const std::shared_ptr<net::Connection>& c, net::Assign a) {
    if (!registered) return c->fail(net::codes::kUnexpected, "Assign before registration");
    if (options.dry_run) return answer_dry_run(c, a);
    spdlog::debug("task {} attempt {}: queued ({} arm {})", a.task_id, a.attempt, a.model, a.arm);
    {
      std::lock_guard lock(queue_mutex);
      if (stopping) return;
      queue.push_back(Job{c, std::move(a)});
    }
    queue_cv.notify_one();
  }

  void on_cancel(const net::Cancel& cancel) {
    std::size_t removed = 0;
    {
      std::lock_guard lock(queue_mutex);
      const auto before = queue.size();
      queue.erase(std::remove_if(queue.begin(), queue.end(), [&](const Job& j) { return j.assign.task_id == cancel.task_id; }),
                  queue.end());
      removed = before - queue.size();
    }
    spdlog::debug("task {}: cancelled{}", cancel.task_id, removed ? "" : " (not queued here: running or finished)");
  }

  void on_error(const net::ErrorMsg& e) {
    if (e.code == net::codes::kAuthFailed && !registered)
      return fail_fatally("coordinator " + options.coordinator.str() + " refused the token: " + e.message);
    spdlog::warn("the coordinator {} reports {}{}: {}", options.coordinator.str(), e.code,
                 e.task_id ? " for task " + std::to_string(*e.task_id) : "", e.message);
  }

  // ---------------------------------------------------------------- running tasks

  const LoadedModel* find_model(const std::string& model_name, bool draft) const {
    for (const auto& m : models)
      if (m.info.row.name == model_name && m.info.draft == draft) return &m;
    return nullptr;
  }

  // Dry run: the coordinator's overheads alone. A few copies of each row's last id stand in
  // for generated tokens.
  void answer_dry_run(const std::shared_ptr<net::Connection>& c, const net::Assign& a) {
    RunMetrics m;
    m.started_at = m.ended_at = data::iso_utc_now();
    if (!find_model(a.model, false)) {
      m.error = "this worker has no model '" + a.model + "'";
    } else {
      m.ok = true;
      const auto n = std::clamp<int64_t>(a.max_new_tokens, 0, 4);
      for (const auto& row : a.prompt_ids) {
        m.tokens.emplace_back(row.empty() ? 0 : static_cast<std::size_t>(n), row.empty() ? 0 : row.back());
        m.new_tokens += static_cast<int64_t>(m.tokens.back().size());
      }
    }
    send_result(c, a, m);
    spdlog::debug("task {} attempt {}: dry run, answered", a.task_id, a.attempt);
    log_run(a, m);
  }

  void executor_loop() {
    runtime::set_threads(options.threads);  // OpenMP's thread count is per calling thread
    for (;;) {
      Job job;
      {
        std::unique_lock lock(queue_mutex);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        job = std::move(queue.front());
        queue.pop_front();
        running_task = true;
      }
      const auto m = execute(job.assign);
      {
        std::lock_guard lock(queue_mutex);
        running_task = false;
      }
      const auto& a = job.assign;
      // The ids are what this worker sees: encrypted. Logged so anyone can check that.
      if (m.ok)
        spdlog::info("task {} attempt {}: arm {}, prompt {} -> {} tokens {} in {:.1f} ms", a.task_id, a.attempt, a.arm,
                     preview(a.prompt_ids.front()), m.new_tokens, m.tokens.empty() ? "[]" : preview(m.tokens.front()), m.latency_ms);
      else
        spdlog::warn("task {} attempt {}: arm {} failed: {}", a.task_id, a.attempt, a.arm, m.error);
      send_result(job.conn, a, m);
      log_run(a, m);
    }
  }

  RunMetrics execute(const net::Assign& a) {
    try {
      const auto* target = find_model(a.model, false);
      if (!target) throw std::runtime_error("this worker has no model '" + a.model + "'");
      const LoadedModel* draft = nullptr;
      if (!a.draft.empty()) {
        draft = find_model(a.draft, true);
        if (!draft) draft = find_model(a.draft, false);
        if (!draft) throw std::runtime_error("this worker has no draft model '" + a.draft + "'");
      }
      if (a.prompt_ids.empty()) throw std::runtime_error("the task has no prompt");
      const auto arm = data::parse_arm(a.arm);
      const auto spec = task_spec(a, arm);
      // The draft only matters to speculative arms: leaving it out of the others keeps one
      // prepared variant (e.g. one int8 copy) per target whatever draft the task names.
      if (!arm.needs_draft()) draft = nullptr;
      const accel::ModelPair pair{target->model, draft ? draft->model : nullptr, target->info.key_fingerprint,
                                  draft ? draft->info.key_fingerprint : ""};
      if (auto why = accel::arm_refusal(arm, spec, pair)) throw std::runtime_error("arm " + arm.name + " cannot run here: " + *why);
      const auto prepared =
          cache.get(target->info.row.fingerprint + "|" + (draft ? draft->info.row.fingerprint : ""), arm, pair);
      return execute_task(*prepared, spec, a.prompt_ids, RunLimits{a.time_limit_ms, a.stop_ids});
    } catch (const std::exception& e) {
      return failed_run(e.what());
    } catch (...) {
      return failed_run("unknown error");
    }
  }

  static RunMetrics failed_run(const std::string& why) {
    RunMetrics m;
    m.started_at = m.ended_at = data::iso_utc_now();
    m.error = why;
    return m;
  }

  std::string ext_id(const net::Assign& a) const { return options.coordinator.str() + "#" + std::to_string(a.task_id); }

  data::TaskSpec task_spec(const net::Assign& a, const data::Arm& arm) const {
    data::TaskSpec spec;
    spec.id = ext_id(a);
    spec.model = a.model;
    spec.draft = a.draft;
    for (const auto& row : a.prompt_ids) spec.prompt_tokens = std::max<int64_t>(spec.prompt_tokens, static_cast<int64_t>(row.size()));
    spec.max_new_tokens = a.max_new_tokens;
    spec.batch = static_cast<int64_t>(a.prompt_ids.size());
    spec.temperature = a.temperature;
    spec.top_p = a.top_p;
    spec.seed = a.seed;
    // The coordinator enforces the client's quality floor; a lossy arm was only assigned if the
    // client tolerates it.
    spec.quality = arm.lossless() ? data::Quality::Exact : data::Quality::Tolerant;
    return spec;
  }

  void send_result(const std::shared_ptr<net::Connection>& c, const net::Assign& a, const RunMetrics& m) {
    net::Result r;
    r.task_id = a.task_id;
    r.attempt = a.attempt;
    r.report = to_report(m);
    try {
      if (c->send(net::to_message(r))) {
        tasks_run++;
      } else {
        spdlog::debug("task {} attempt {}: result dropped, the connection that assigned it is gone", a.task_id, a.attempt);
      }
    } catch (const std::exception& e) {
      // Too large for a frame: say so, or the coordinator would wait out its timeout and retry.
      spdlog::warn("task {} attempt {}: cannot send the result: {}", a.task_id, a.attempt, e.what());
      r.report = net::RunReport{};
      r.report.error = std::string("the result cannot be sent: ") + e.what();
      try {
        c->send(net::to_message(r));
      } catch (const std::exception&) {
      }
    }
  }

  void log_run(const net::Assign& a, const RunMetrics& m) {
    if (!store) return;
    std::lock_guard lock(store_mutex);
    try {
      const auto* target = find_model(a.model, false);
      if (!target) return;  // nothing to attach the run to
      const LoadedModel* draft = a.draft.empty() ? nullptr : find_model(a.draft, true);
      if (!a.draft.empty() && !draft) draft = find_model(a.draft, false);
      std::optional<data::Arm> arm;
      try {
        arm = data::parse_arm(a.arm);
      } catch (const std::exception&) {
        // logged under the name as received
      }
      const std::string arm_name = arm ? arm->name : a.arm;
      int64_t task_id = 0;
      if (const auto existing = store->find_task_by_ext_id(ext_id(a))) {
        task_id = existing->id;
      } else {
        auto row = data::task_row(task_spec(a, arm.value_or(data::Arm{})), store_model_ids.at(target->info.row.fingerprint),
                                  draft ? std::optional<int64_t>(store_model_ids.at(draft->info.row.fingerprint)) : std::nullopt);
        row.prompt_ids = a.prompt_ids;  // encrypted, as received
        row.request = nlohmann::json{{"stop_ids", a.stop_ids}, {"seed", a.seed}, {"time_limit_ms", a.time_limit_ms}}.dump();
        task_id = store->insert_task(row);
      }
      const auto result = nlohmann::json{{"tokens", m.tokens}}.dump();
      const auto run = data::run_row(m, task_id, store_worker_id, arm_name, "coordinator", a.attempt);
      if (!store->finish_task_with_run(task_id, m.ok ? data::TaskStatus::Done : data::TaskStatus::Failed, result, run))
        spdlog::debug("task {} attempt {}: already logged in {}", a.task_id, a.attempt, store->path());
    } catch (const std::exception& e) {
      spdlog::warn("task {} attempt {}: cannot log the run in {}: {}", a.task_id, a.attempt, options.db.string(), e.what());
    }
  }
};

WorkerDaemon::WorkerDaemon(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

WorkerDaemon::~WorkerDaemon() = default;

void WorkerDaemon::run() { impl_->run(); }

void WorkerDaemon::stop() { impl_->request_stop(); }

const std::string& WorkerDaemon::name() const { return impl_->name; }

int64_t WorkerDaemon::tasks_run() const { return impl_->tasks_run.load(); }

}  // namespace eesched::node
