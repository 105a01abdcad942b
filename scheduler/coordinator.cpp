#include "scheduler/coordinator.h"

#include <asio/io_context.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "data/arm.h"
#include "data/error.h"
#include "data/features.h"
#include "data/store.h"
#include "net/auth.h"
#include "net/connection.h"
#include "net/listener.h"
#include "net/messages.h"
#include "scheduler/history.h"
#include "scheduler/placement.h"
#include "scheduler/policies.h"
#include "scheduler/online.h"
#include "scheduler/selector.h"
#include "scheduler/task_table.h"
#include "scheduler/worker_pool.h"

namespace eesched::scheduler {
namespace {

using ConnPtr = std::shared_ptr<net::Connection>;

double us_since(Clock::time_point t) { return std::chrono::duration<double, std::micro>(Clock::now() - t).count(); }

// What a connection is, once it says so.
enum class Role { Unknown, Worker, Client };
struct Peer {
  Role role = Role::Unknown;
  std::string nonce;  // our Hello challenge
  int waiting = 0;    // a client's unfinished tasks: while > 0 it may stay silent
};

}  // namespace

struct Coordinator::Impl {
  CoordinatorOptions options;
  asio::io_context io;
  std::optional<net::Listener> listener;
  asio::steady_timer sweep_timer{io};
  net::Token token;
  std::optional<Selector> selector;
  std::unique_ptr<Policy> policy;        // what decides placement (scheduler/placement.h)
  // Policy meta with a selector and options.online: the selector in use, each worker's
  // correction and retraining (scheduler/online.h); it then decides placement instead of `policy`.
  std::unique_ptr<OnlineLearner> learner;
  std::thread retrainer;                 // the retraining in flight, if any (never the network threads)
  bool retraining = false;               // io thread only
  std::string policy_label;              // recorded with each run: the policy's name, or "default"
  std::vector<data::Arm> candidates_arms;  // what the policy may choose from, catalog order

  mutable std::mutex mu;
  std::condition_variable state_cv;  // stop() requested, or a running task finished
  data::Store store;
  std::unique_ptr<data::IdPurger> purger;  // --retain-ids none or N days: its own thread and connection
  std::map<uint64_t, Peer> peers;        // by connection id
  WorkerPool workers{store};             // registered workers (scheduler/worker_pool.h)
  TaskTable tasks{store, options.max_attempts};  // unfinished tasks (scheduler/task_table.h)
  std::map<std::string, data::ModelRow> known_models;  // by name: the latest registered
  History train_history;  // --train-db: what single-best and knn were fitted on (knn answers from it)
  std::mt19937_64 rng;
  bool draining = false;    // stop() called: no new Submits, no new assignments
  bool force_stop = false;  // a second signal: do not wait for running tasks
  bool stopped = false;
  CoordinatorStats counters;

  explicit Impl(CoordinatorOptions o)
      : options(std::move(o)), token(net::Token::read_file(options.token_file)), store(data::Store::open(options.db)),
        rng(options.seed) {
    store.set_retention(options.retain_ids);
    if (!options.retain_ids.keeps_forever()) {
      const auto every = options.purge_every.count() > 0 ? options.purge_every : data::purge_period(options.retain_ids);
      purger = std::make_unique<data::IdPurger>(options.db, options.retain_ids, every, [](const std::string& message, bool error) {
        spdlog::log(error ? spdlog::level::err : spdlog::level::info, "{}", message);
      });
    }
    if (!options.selector.empty()) selector = Selector::load(options.selector);
    make_placement_policy();
    for (const auto& m : store.models()) known_models[m.name] = m;
    listener.emplace(io, options.listen, [this](asio::ip::tcp::socket s) { on_accept(std::move(s)); });
  }

  // The policy an operator asked for. Without a selector, `meta` means every task runs kv (the
  // policy recorded as "default"); baselines consider the selector's arms, or the catalog.
  void make_placement_policy() {
    policy_label = options.policy;
    if (options.policy == "meta" && !selector) {
      policy = make_single_best({"kv"});
      candidates_arms = {data::parse_arm("kv")};
      policy_label = "default";
      return;
    }
    for (const auto& arm : data::arm_catalog())
      if (!selector || std::find(selector->arms().begin(), selector->arms().end(), arm.name) != selector->arms().end())
        candidates_arms.push_back(arm);
    if (options.policy == "single-best" && options.train_db.empty()) {
      if (!selector) throw std::runtime_error("policy 'single-best' needs a ranking: give --selector or --train-db");
      policy = make_single_best(selector->single_best_ranking());
      return;
    }
    policy = make_policy(options.policy, selector ? &*selector : nullptr);
    if (options.policy == "meta" && selector && options.online) {
      OnlineOptions oo;
      oo.retrain_every = options.retrain_every;
      TrainOptions retrain = retrain_options(*selector);
      retrain.threads = 1;  // a core stays free for the network threads and workers
      learner_retrain = retrain;
      learner_options = oo;
    }
    if (policy->needs_outcome())
      throw std::runtime_error("policy '" + options.policy + "' needs each arm's measured latency: it scores replay, it cannot place tasks");
    if (!options.train_db.empty()) {
      auto train_store = data::Store::open(options.train_db);
      train_history = History::load(train_store, /*require_all=*/true);
      if (train_history.cases.empty()) throw std::runtime_error(options.train_db.string() + ": no complete case to learn from");
      policy->fit(train_history);
    } else if (options.policy == "knn") {
      throw std::runtime_error("policy 'knn' needs a training history: give --train-db");
    }
    if (learner_options)
      learner = std::make_unique<OnlineLearner>(*selector, train_history, *learner_retrain, *learner_options);
  }
  std::optional<TrainOptions> learner_retrain;
  std::optional<OnlineOptions> learner_options;

  const Policy& placement_policy() const { return learner ? learner->policy() : *policy; }

  // A finished run teaches the learner about its worker. Runs that shared a batch are left out:
  // their latency includes the other tasks' (placement accounts for that separately).
  void learn_from(const Worker& w, const Task& t, double latency_ms) {
    if (!learner || t.shared || t.arm.empty()) return;
    const WorkerState* ws = workers.state_for(w, t.request);
    if (!ws) return;
    const PlacementTask task{t.row.id, spec_of(t.request), "", {}};
    const auto arm = data::parse_arm(t.arm);
    if (!learner->observe(case_on(task, *ws, {arm}), arm, latency_ms) || retraining) return;
    // Train on a thread of its own; judge and swap on this one.
    retraining = true;
    ++counters.retrains;
    if (retrainer.joinable()) retrainer.join();  // the previous one has posted its verdict already
    auto job = std::make_shared<OnlineLearner::RetrainJob>(learner->retrain_job());
    retrainer = std::thread([this, job] {
      std::shared_ptr<Selector> candidate;
      std::string error;
      try {
        candidate = std::make_shared<Selector>(OnlineLearner::train_candidate(*job));
      } catch (const std::exception& e) {
        error = e.what();
      }
      asio::post(io, [this, job, candidate, error] {
        std::lock_guard lock(mu);
        retraining = false;
        if (!candidate) {
          spdlog::warn("selector retraining failed: {}", error);
          return;
        }
        try {
          if (learner->consider(std::move(*candidate), job->holdout).swapped) ++counters.selector_swaps;
        } catch (const std::exception& e) {
          spdlog::warn("judging the retrained selector failed: {}", e.what());
        }
      });
    });
  }

  // ---- connections and roles ---------------------------------------------------------------

  void on_accept(asio::ip::tcp::socket socket) {
    net::Connection::Options co;
    co.max_frame_bytes = options.max_frame_bytes;
    co.idle_timeout = options.handshake_timeout;  // until it registers or submits
    auto conn = net::Connection::create(std::move(socket), co);
    const std::string nonce = net::make_nonce();
    {
      std::lock_guard lock(mu);
      peers[conn->id()] = Peer{Role::Unknown, nonce};
    }
    conn->start([this](const ConnPtr& c, net::Message m) { on_message(c, std::move(m)); },
                [this](const ConnPtr& c, const std::string& reason) { on_close(c, reason); });
    conn->send(net::to_message(net::Hello{nonce, "eesched-coordinator"}));
  }

  // Each message was decoded once, by the connection (net/messages.h); here it meets its role.
  void on_message(const ConnPtr& conn, net::Message m) {
    std::unique_lock lock(mu);
    auto peer = peers.find(conn->id());
    if (peer == peers.end()) return;  // closing
    try {
      switch (m.type) {
        case net::MessageType::Register: return on_register(conn, peer->second, std::move(m.as<net::Register>()));
        case net::MessageType::Heartbeat:
          if (peer->second.role != Role::Worker) return conn->fail(net::codes::kUnexpected, "Heartbeat before Register");
          return on_heartbeat(conn, m.as<net::Heartbeat>());
        case net::MessageType::Submit:
          if (peer->second.role == Role::Worker) return conn->fail(net::codes::kUnexpected, "a worker cannot submit tasks");
          peer->second.role = Role::Client;
          return on_submit(conn, peer->second, std::move(m.as<net::Submit>().task));
        case net::MessageType::Tokens:
          if (peer->second.role != Role::Worker) return conn->fail(net::codes::kUnexpected, "only a registered worker sends Tokens");
          return on_tokens(conn, std::move(m.as<net::Tokens>()));
        case net::MessageType::Result:
          if (peer->second.role != Role::Worker) return conn->fail(net::codes::kUnexpected, "only a registered worker sends Result");
          return on_result(conn, m.as<net::Result>());
        case net::MessageType::Cancel:
          if (peer->second.role == Role::Worker) return conn->fail(net::codes::kUnexpected, "a worker cannot cancel tasks");
          return on_cancel(conn, m.as<net::Cancel>());
        case net::MessageType::Status:
          if (peer->second.role == Role::Worker) return conn->fail(net::codes::kUnexpected, "a worker cannot ask for the status");
          conn->send(net::to_message(status()));
          return;
        case net::MessageType::Error: {
          const auto& e = m.as<net::ErrorMsg>();
          spdlog::warn("{} reported an error: {}: {}", conn->peer(), e.code, e.message);
          return;
        }
        default:
          return conn->fail(net::codes::kUnexpected, std::string(net::message_type_name(m.type)) + " is not sent to a coordinator");
      }
    } catch (const net::ProtocolError& e) {
      conn->fail(e.code(), e.what());
    } catch (const std::exception& e) {
      // A store failure (disk full, ...) concerns this request, not the daemon.
      spdlog::error("{}: {}", conn->peer(), e.what());
      conn->send(net::make_error(net::codes::kInternal, e.what()));
    }
  }

  void on_close(const ConnPtr& conn, const std::string& reason) {
    std::lock_guard lock(mu);
    try {
      forget(conn, reason);
    } catch (const std::exception& e) {
      spdlog::error("after {} closed: {}", conn->peer(), e.what());
    }
  }

  void forget(const ConnPtr& conn, const std::string& reason) {
    peers.erase(conn->id());
    const auto w = workers.remove(conn->id());
    if (!w) return;
    if (w->draining && w->outstanding.empty()) {
      spdlog::info("worker {} drained and left", w->name);
      dispatch();
      return;
    }
    spdlog::warn("worker {} is gone ({}); {} task(s) to reassign", w->name, reason, w->outstanding.size());
    for (const int64_t id : w->outstanding) {
      if (Task* t = tasks.find(id)) t->worker_conn.reset();
      retry(id, "worker " + conn->peer() + " lost: " + reason, std::nullopt);
    }
    dispatch();
  }

  // A client waiting on a task may stay silent as long as it takes; an idle one is closed after
  // the handshake timeout, so refused or finished clients cannot pile up connections.
  void add_waiter(Task& t, const ConnPtr& conn, Peer& peer) {
    t.waiters.push_back(conn);
    if (++peer.waiting == 1) conn->set_idle_timeout(std::chrono::milliseconds(0));
  }
  void drop_waiter(const ConnPtr& conn) {
    const auto peer = peers.find(conn->id());
    if (peer != peers.end() && --peer->second.waiting == 0) conn->set_idle_timeout(options.handshake_timeout);
  }

  // ---- workers -----------------------------------------------------------------------------

  void on_register(const ConnPtr& conn, Peer& peer, net::Register r) {
    if (peer.role != Role::Unknown) return conn->fail(net::codes::kUnexpected, "Register sent twice");
    if (!token.verify(net::kWorkerProofLabel, peer.nonce, r.name, r.proof)) {
      spdlog::warn("{}: worker '{}' failed authentication", conn->peer(), r.name);
      return conn->fail(net::codes::kAuthFailed, "authentication failed: the worker does not hold the coordinator's token");
    }
    if (r.models.empty()) return conn->fail(net::codes::kBadMessage, "a worker must hold at least one model");
    Worker w;
    w.conn = conn;
    w.name = r.name;
    w.hardware = r.hardware;
    w.dry_run = r.dry_run;
    w.slots = std::max<int64_t>(1, r.slots);
    w.id = store.upsert_worker(data::worker_row(r.name, r.hardware));
    for (auto& m : r.models) {
      m.row.id = store.upsert_model(m.row);
      known_models[m.row.name] = m.row;
      if (m.draft) {
        w.draft = m;
      } else {
        w.models.push_back(m);
      }
    }
    peer.role = Role::Worker;
    conn->set_idle_timeout(options.worker_timeout);  // heartbeats keep it alive; silence is death
    // Up to max_outstanding Assigns may wait in its socket at once.
    conn->set_max_queued_bytes(std::max<std::size_t>(std::size_t{64} << 20,
                                                     (static_cast<std::size_t>(options.max_outstanding) + 2) * options.max_frame_bytes));
    conn->send(net::to_message(net::Registered{w.id, token.proof(net::kCoordinatorProofLabel, r.nonce, r.name),
                                               options.heartbeat.count()}));
    std::string names;
    for (const auto& m : w.models) names += (names.empty() ? "" : ", ") + m.row.name;
    spdlog::info("worker {} registered from {} ({} threads, {:.0f} GFLOP/s, {} slot{}): {}{}{}", w.name, conn->peer(),
                 w.hardware.threads, w.hardware.gflops, w.slots, w.slots > 1 ? "s" : "", names, w.draft ? ", draft " + w.draft->row.name : "", w.dry_run ? " [dry run]" : "");
    workers.add(conn->id(), std::move(w));
    dispatch();
  }

  // Answered, so the worker can tell a silent coordinator from an idle one: with the tasks it
  // still owes us, and whether it is draining. A worker that asks to drain gets nothing new from
  // here on; every Assign sent before this answer precedes it on the socket, so an answer that
  // says draining with nothing outstanding tells the worker it may leave.
  void on_heartbeat(const ConnPtr& conn, const net::Heartbeat& hb) {
    Worker* w = workers.find(conn->id());
    if (!w) return;
    if (hb.draining && !w->draining) {
      w->draining = true;
      spdlog::info("worker {} is draining: {} task(s) to finish there, none new", w->name, w->outstanding.size());
    }
    net::Heartbeat answer;
    answer.queued = static_cast<int64_t>(w->outstanding.size());
    answer.draining = w->draining;
    conn->send(net::to_message(answer));
  }

  // ---- clients -----------------------------------------------------------------------------

  // The model row a new task refers to, or why it cannot be accepted.
  std::optional<data::ModelRow> model_for(const net::TaskRequest& r, std::string& why) {
    std::string other_key;
    bool draining = false;  // only draining workers hold it under this key
    for (const auto& [id, w] : workers.all())
      for (const auto& m : w.models) {
        if (serves(m, r)) {
          if (!w.draining) return m.row;
          draining = true;
        } else if (m.row.name == r.model) {
          other_key = m.key_fingerprint;
        }
      }
    if (draining) {
      why = "the workers holding model '" + r.model + "' under key " + r.key_fingerprint.substr(0, 12) +
            " are draining (a key rotation?): " + (other_key.empty() ? "no other worker holds it"
                                                                        : "others hold it under key " + other_key.substr(0, 12));
      return std::nullopt;
    }
    if (!other_key.empty()) {
      why = "no worker holds model '" + r.model + "' encrypted under key " + r.key_fingerprint.substr(0, 12) +
            " (workers hold it under key " + other_key.substr(0, 12) + "): wrong key?";
      return std::nullopt;
    }
    const auto known = known_models.find(r.model);
    if (known != known_models.end()) return known->second;  // a worker that held it may come back
    why = "no worker has registered model '" + r.model + "'";
    return std::nullopt;
  }

  void on_submit(const ConnPtr& conn, Peer& peer, net::TaskRequest r) {
    const auto received = Clock::now();
    if (draining) return void(conn->send(net::make_error(net::codes::kShuttingDown, "the coordinator is shutting down")));
    if (!r.arm.empty()) {
      try {
        r.arm = data::parse_arm(r.arm).name;
      } catch (const data::Error& e) {
        return void(conn->send(net::make_error(net::codes::kBadMessage, e.what())));
      }
    }
    if (!r.request_id.empty()) {
      if (auto existing = store.find_task_by_ext_id(r.request_id)) return reattach(conn, peer, *existing);
    }
    if (tasks.size() >= options.max_tasks)
      return void(conn->send(net::make_error(net::codes::kOverloaded, "the coordinator holds " + std::to_string(tasks.size()) +
                                                                           " unfinished tasks; try again later")));
    std::string why;
    const auto model = model_for(r, why);
    if (!model) return void(conn->send(net::make_error(net::codes::kNoWorker, why)));
    if (r.request_id.empty()) r.request_id = "req-" + net::make_nonce().substr(0, 24);
    const auto spec = spec_of(r);
    Task& t = tasks.accept(std::move(r), spec, model->id, received);
    add_waiter(t, conn, peer);
    ++counters.accepted;
    conn->send(net::to_message(net::Accepted{t.row.id, t.request.request_id}));
    dispatch();
  }

  // A request_id we know: wait with the others, or the answer rebuilt from the stored task.
  void reattach(const ConnPtr& conn, Peer& peer, const data::TaskRow& row) {
    if (Task* live = tasks.find(row.id)) {
      add_waiter(*live, conn, peer);
      conn->send(net::to_message(net::Accepted{row.id, row.ext_id}));
      return;
    }
    const bool finished = row.status == data::TaskStatus::Done || row.status == data::TaskStatus::Failed ||
                          row.status == data::TaskStatus::Cancelled;
    if (finished && row.from_client && row.status == data::TaskStatus::Done && row.outcome.tokens.empty() &&
        row.prompt_ids.empty()) {
      // Its ids were wiped (retention): a Result without them would read as an empty answer.
      conn->send(net::make_error(net::codes::kNotFound,
                                 "task '" + row.ext_id + "' is done, but its encrypted ids are no longer kept (retention: " +
                                     data::retention_name(store.retention()) + "): the answer is gone",
                                 row.id));
      return;
    }
    if (finished && row.from_client) {
      const auto run = row.outcome.run_id ? store.find_run(*row.outcome.run_id) : std::nullopt;
      conn->send(net::to_message(net::Accepted{row.id, row.ext_id}));
      conn->send(net::to_message(stored_result(row, run)));
      return;
    }
    conn->send(net::make_error(net::codes::kNotFound, "task '" + row.ext_id + "' is " + data::task_status_name(row.status) +
                                                          " and has no result", row.id));
  }

  void on_cancel(const ConnPtr& conn, const net::Cancel& c) {
    int64_t id = c.task_id;
    if (id <= 0) {
      const auto row = store.find_task_by_ext_id(c.request_id);
      if (row) id = row->id;
    }
    Task* t = tasks.find(id);
    if (!t) return void(conn->send(net::make_error(net::codes::kNotFound, "no unfinished task to cancel", id)));
    // Task ids are sequential, so anyone could name one: by id, only a client waiting on the
    // task may cancel it; a request id is the client's own secret-enough handle.
    const bool waiter = std::any_of(t->waiters.begin(), t->waiters.end(), [&](const std::weak_ptr<net::Connection>& w) {
      const auto c = w.lock();
      return c && c->id() == conn->id();
    });
    if (c.request_id.empty() && !waiter)
      return void(conn->send(net::make_error(net::codes::kNotFound, "no unfinished task of this connection to cancel", id)));
    if (t->worker_conn) {
      if (Worker* w = workers.find(*t->worker_conn)) {
        w->conn->send(net::to_message(net::Cancel{id, ""}));
        unassign(*w, *t);
      }
    }
    tasks.drop_pending(id);
    net::Result res = tasks.result_of(*t, "cancelled");
    res.report.error = "cancelled";
    answer(tasks.finish(id, data::TaskStatus::Cancelled, std::move(res), std::nullopt));
    ++counters.cancelled;
    dispatch();
  }

  // ---- results -----------------------------------------------------------------------------

  // A running attempt's tokens: kept with the task (a retry continues after them) and relayed to
  // every client waiting on the task, request_id filled in, offsets made positions in the whole
  // answer (the attempt's resume_from added), what earlier attempts relayed left out; never
  // stored (only the Result is). Only the worker holding the current attempt is heard, as for
  // results; the relay keeps the worker's order, so all of an attempt's Tokens reach a client
  // before its Result. A client that is gone is skipped.
  void on_tokens(const ConnPtr& conn, net::Tokens tk) {
    Task* t = tasks.find(tk.task_id);
    if (!t || t->worker_conn != conn->id() || t->attempts != tk.attempt) {
      spdlog::trace("dropping stale tokens of task {} attempt {}", tk.task_id, tk.attempt);
      return;
    }
    if (tk.tokens.size() != t->request.prompt_ids.size()) {
      spdlog::warn("task {} attempt {}: tokens for {} rows from a task of {}; dropped", tk.task_id, tk.attempt, tk.tokens.size(),
                   t->request.prompt_ids.size());
      return;
    }
    net::Tokens out = t->record_tokens(tk);
    if (t->waiters.empty()) return;
    if (std::all_of(out.tokens.begin(), out.tokens.end(), [](const auto& row) { return row.empty(); })) return;
    out.request_id = t->request.request_id;
    nlohmann::json body;
    try {
      body = net::to_message(out);
      for (const auto& weak : t->waiters)
        if (const auto c = weak.lock()) c->send(body);
    } catch (const net::ProtocolError& e) {  // the request id pushed it over the frame limit: the Result has them all
      spdlog::debug("task {}: tokens not relayed: {}", tk.task_id, e.what());
    }
  }

  void on_result(const ConnPtr& conn, const net::Result& r) {
    const auto received = Clock::now();
    Worker* w = workers.find(conn->id());
    if (!w) return;
    Task* t = tasks.find(r.task_id);
    // Late answers of superseded attempts (reassigned, cancelled) are dropped: one result per task.
    if (!t || t->worker_conn != conn->id() || t->attempts != r.attempt) {
      spdlog::debug("dropping a stale result for task {} attempt {} from {}", r.task_id, r.attempt, w->name);
      return;
    }
    unassign(*w, *t);
    auto run = data::run_row(r.report, t->row.id, w->id, t->arm, t->policy, t->attempts);  // one row per attempt
    run.explored = t->explored;
    if (!r.report.ok) {
      spdlog::warn("task {} attempt {} failed on {} ({}): {}", t->row.id, t->attempts, w->name, t->arm, r.report.error);
      store.insert_run(run);
      retry(t->row.id, r.report.error, w->id);
      dispatch();
      return;
    }
    if (r.report.acceptance_rate) workers.landmarks_changed();
    net::Result res = tasks.result_of(*t, "done");
    res.report = TaskTable::whole_answer(*t, r.report);  // earlier attempts' streamed ids first
    learn_from(*w, *t, run.latency_ms);
    answer(tasks.finish(t->row.id, data::TaskStatus::Done, std::move(res), run));
    ++counters.completed;
    if (options.record_timings) counters.result_to_reply_us.push_back(us_since(received));
    dispatch();
  }

  // An attempt ended without a result: try again elsewhere, or fail the task.
  void retry(int64_t id, const std::string& error, std::optional<int64_t> failed_worker) {
    const bool known = tasks.find(id) != nullptr;
    if (auto done = tasks.retry(id, error, failed_worker)) {
      ended(std::move(*done));
    } else if (known) {
      ++counters.reassigned;
    }
  }

  // A task that retry() or fail_now() finished: failed, or done when every row had streamed its
  // whole budget before the attempt ended.
  void ended(Finished done) {
    ++(done.result.status == "done" ? counters.completed : counters.failed);
    answer(done);
  }

  // Answers every client waiting on a finished task.
  void answer(const Finished& f) {
    if (draining) state_cv.notify_all();
    if (f.waiters.empty()) return;
    const auto body = net::to_message(f.result);
    for (const auto& weak : f.waiters) {
      const auto c = weak.lock();
      if (!c) continue;
      drop_waiter(c);
      try {
        c->send(body);
      } catch (const net::ProtocolError& e) {  // a result over the frame limit
        c->send(net::make_error(net::codes::kTaskFailed, std::string("the result cannot be sent: ") + e.what(), f.task_id));
      }
    }
  }

  void unassign(Worker& w, Task& t) {
    const auto next = workers.unassign(w, t.row.id, t.predicted_ms);
    t.worker_conn.reset();
    t.started_at.reset();
    if (next) {  // the next one on that worker starts now
      Task* n = tasks.find(*next);
      if (n && !n->started_at) n->started_at = Clock::now();
    }
  }

  // What the live workers hold, per (model, key): the gateway's /health asks (net::Status).
  net::StatusReply status() {
    net::StatusReply reply;
    reply.queued = static_cast<int64_t>(tasks.pending_count());
    std::map<std::pair<std::string, std::string>, net::ServedModel> held;
    for (const auto& [conn, w] : workers.all()) {
      if (w.draining) continue;  // leaving: it serves no new task
      ++reply.workers;
      for (const auto& m : w.models) {
        auto& s = held[{m.row.name, m.key_fingerprint}];
        s.name = m.row.name;
        s.key_fingerprint = m.key_fingerprint;
        ++s.workers;
        s.slots += w.slots;
      }
    }
    for (auto& [key, s] : held) reply.models.push_back(std::move(s));
    return reply;
  }

  // ---- placement ---------------------------------------------------------------------------

  static data::TaskSpec spec_of(const net::TaskRequest& r) {
    data::TaskSpec s;
    s.id = r.request_id;
    s.model = r.model;
    s.prompt_tokens = r.prompt_ids.empty() ? 0 : static_cast<int64_t>(r.prompt_ids.front().size());
    s.batch = static_cast<int64_t>(r.prompt_ids.size());
    s.generation = r.generation;
    s.quality = r.quality;
    s.max_ppl_ratio = r.max_ppl_ratio;
    return s;
  }

  struct Pick {
    Worker* worker = nullptr;
    Choice choice;
    std::optional<double> ppl_ratio;  // the arm's measured ratio on that worker's model (lossy arms)
  };

  // The (worker, arm) for a task among the workers that can take it now, or none: placement
  // (scheduler/placement.h) decides, exactly as replay and cross-validation evaluate it.
  std::optional<Pick> pick(const Task& t) {
    const auto candidates = workers.candidates(t.request, t.failed_on, options.max_outstanding);
    if (candidates.empty()) return std::nullopt;
    const PlacementTask task{t.row.id, spec_of(t.request), t.request.arm, {}};
    const auto choice = place(task, candidates, candidates_arms, placement_policy(), options.explore, rng);
    if (!choice) return std::nullopt;
    Pick p;
    p.worker = workers.find(static_cast<uint64_t>(choice->worker));
    p.choice = *choice;
    const auto& quality = workers.model_for(*p.worker, t.request).row.quality;
    const auto q = quality.find(data::quality_key(choice->arm));
    if (q != quality.end()) p.ppl_ratio = q->second.ppl_ratio;
    return p;
  }

  // Assigns as many pending tasks as workers can take, oldest first.
  void dispatch() {
    if (draining) return;
    std::deque<int64_t> queue = tasks.take_pending(), waiting;
    std::set<std::string> blocked;  // (model, key) with no worker free this pass: skip their other tasks
    while (!queue.empty()) {
      const int64_t id = queue.front();
      queue.pop_front();
      Task* t = tasks.find(id);
      if (!t) continue;
      const std::string group = t->request.model + "/" + t->request.key_fingerprint;
      if (blocked.count(group)) {
        waiting.push_back(id);
        continue;
      }
      try {
        const auto p = pick(*t);
        if (p) {
          assign(*t, *p);
          continue;
        }
        // Tasks that failed on every free worker may still fit elsewhere; others of the group cannot.
        if (t->failed_on.empty()) blocked.insert(group);
        waiting.push_back(id);
      } catch (const std::exception& e) {
        // No worker can ever run it (an arm that does not apply, a broken selector input):
        // fail this task now; the others go on.
        try {
          if (auto done = tasks.fail_now(id, std::string("cannot schedule: ") + e.what())) {
            ended(std::move(*done));
          }
        } catch (const std::exception& again) {
          spdlog::error("task {}: {}", id, again.what());
        }
      }
    }
    // What retries re-queued meanwhile goes first: it has waited longest.
    auto requeued = tasks.take_pending();
    requeued.insert(requeued.end(), waiting.begin(), waiting.end());
    tasks.requeue(std::move(requeued));
  }

  void assign(Task& t, const Pick& p) {
    Worker& w = *p.worker;
    ++t.attempts;
    t.worker_conn = w.conn->id();
    t.worker_name = w.name;
    t.arm = p.choice.arm.name;
    t.explored = p.choice.explored;
    ++(t.explored ? counters.arms_explored : counters.arms_chosen)[p.choice.arm.name];
    t.predicted_ms = p.choice.predicted_ms;
    t.ppl_ratio = p.ppl_ratio;
    t.policy = !t.request.arm.empty() ? "client" : policy_label;
    if (static_cast<int64_t>(w.outstanding.size()) < w.slots) t.started_at = Clock::now();  // a free slot: it runs now
    t.shared = !w.outstanding.empty();
    for (const int64_t other : w.outstanding)
      if (Task* o = tasks.find(other)) o->shared = true;
    workers.assign(w, t.row.id, p.choice.predicted_ms);
    // The store keeps such a task `pending` until its result: a restart re-queues it either way,
    // and one write fewer per task is throughput.

    net::Assign a;
    a.task_id = t.row.id;
    a.attempt = t.attempts;
    a.arm = p.choice.arm.name;
    a.model = t.request.model;
    if (p.choice.arm.needs_draft() && w.draft) a.draft = w.draft->row.name;
    a.prompt_ids = t.request.prompt_ids;
    a.generation = t.request.generation;  // the client's, unchanged unless resumed
    if (t.resume_from > 0) {
      // A retry continues after what earlier attempts streamed (TaskTable::retry): those ids end
      // each prompt row, and only the rest of the budget is left.
      const auto done = t.committed();
      for (std::size_t r = 0; r < a.prompt_ids.size() && r < done.size(); ++r)
        a.prompt_ids[r].insert(a.prompt_ids[r].end(), done[r].begin(), done[r].end());
      a.generation.max_new_tokens -= t.resume_from;
      a.resume_from = t.resume_from;
    }
    a.time_limit_ms = static_cast<double>(options.task_timeout.count());
    try {
      w.conn->send(net::to_message(a));
    } catch (const net::ProtocolError& e) {
      unassign(w, t);
      if (auto done = tasks.fail_now(t.row.id, std::string("the task cannot be sent to a worker: ") + e.what())) {
        ended(std::move(*done));
      }
      return;
    }
    if (options.record_timings) counters.submit_to_assign_us.push_back(us_since(t.submitted_at));
    spdlog::debug("task {} attempt {} -> {} ({}, predicted {:.1f} ms{}{})", t.row.id, t.attempts, w.name, t.arm, t.predicted_ms,
                  t.explored ? ", explored" : "", t.resume_from > 0 ? ", resuming after " + std::to_string(t.resume_from) + " tokens" : "");
  }

  // ---- deadlines and recovery --------------------------------------------------------------

  // Every 250 ms: attempts past task_timeout are reassigned.
  void sweep() {
    sweep_timer.expires_after(std::chrono::milliseconds(250));
    sweep_timer.async_wait([this](std::error_code ec) {
      if (ec) return;
      {
        std::lock_guard lock(mu);
        try {
          reassign_late();
        } catch (const std::exception& e) {
          spdlog::error("checking task deadlines: {}", e.what());
        }
        if (stopped) return;
      }
      sweep();
    });
  }

  // Attempts running past task_timeout: cancelled on their worker and retried elsewhere.
  void reassign_late() {
    const auto now = Clock::now();
    std::vector<int64_t> late;
    for (auto& [id, t] : tasks.tasks())
      if (t.worker_conn && t.started_at && now - *t.started_at > options.task_timeout) late.push_back(id);
    for (const int64_t id : late) {
      Task& t = *tasks.find(id);
      int64_t wid = 0;
      if (Worker* w = workers.find(*t.worker_conn)) {
        w->conn->send(net::to_message(net::Cancel{id, ""}));
        wid = w->id;
        unassign(*w, t);
      }
      spdlog::warn("task {} attempt {} timed out on {}", id, t.attempts, t.worker_name);
      retry(id, "timed out after " + std::to_string(options.task_timeout.count()) + " ms on " + t.worker_name, wid);
    }
    if (!late.empty()) dispatch();
  }

  // Tasks accepted before a crash or stop and never finished: back in the queue.
  void recover() {
    std::lock_guard lock(mu);
    counters.recovered = tasks.recover();
    if (counters.recovered > 0) spdlog::info("recovered {} unfinished task(s) from {}", counters.recovered, store.path());
  }
};

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Coordinator::~Coordinator() {
  if (impl_ && impl_->retrainer.joinable()) impl_->retrainer.join();
}

uint16_t Coordinator::port() const { return impl_->listener->port(); }

void Coordinator::run() {
  auto& s = *impl_;
  s.recover();
  s.sweep();
  asio::signal_set signals(s.io);
  if (s.options.handle_signals) {
    signals.add(SIGINT);
    signals.add(SIGTERM);
    signals.async_wait([this, &signals](std::error_code ec, int sig) {
      if (ec) return;
      spdlog::info("signal {}: draining (send it again to stop at once)", sig);
      stop();
      signals.async_wait([this](std::error_code e, int) {
        if (e) return;
        std::lock_guard lock(impl_->mu);
        impl_->force_stop = true;
        impl_->state_cv.notify_all();
      });
    });
  }
  spdlog::info("coordinator listening on {}:{} (store {}, selector {}, policy {})", s.options.listen.host, port(), s.store.path(),
               s.selector ? s.options.selector.string() : "none", s.policy_label);
  // Keeps the pool alive until the end, even when no socket is open (the posts below need it).
  auto work = asio::make_work_guard(s.io);
  std::vector<std::thread> pool;
  for (int i = 0; i < std::max(1, s.options.threads); ++i)
    pool.emplace_back([&s] {
      // Handlers catch their own errors; this is the last line, so one bad handler never takes
      // the daemon down.
      while (true) {
        try {
          s.io.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("a network handler failed: {}", e.what());
        }
      }
    });
  {
    std::unique_lock lock(s.mu);
    s.state_cv.wait(lock, [&s] { return s.draining; });
  }
  // The acceptor and the signal set belong to the network threads: close them there.
  std::promise<void> closed;
  asio::post(s.io, [&] {
    s.listener->close();
    closed.set_value();
  });
  closed.get_future().wait();
  {
    // This thread drains: running tasks get drain_timeout to report; pending ones stay in the
    // store for the next start.
    std::unique_lock lock(s.mu);
    const auto idle = [&s] {
      return std::none_of(s.tasks.tasks().begin(), s.tasks.tasks().end(),
                          [](const auto& kv) { return kv.second.worker_conn.has_value(); });
    };
    if (!idle()) spdlog::info("draining: waiting up to {} ms for running tasks", s.options.drain_timeout.count());
    const auto deadline = std::chrono::steady_clock::now() + s.options.drain_timeout;
    while (!idle() && !s.force_stop && std::chrono::steady_clock::now() < deadline) s.state_cv.wait_for(lock, std::chrono::milliseconds(100));
    s.stopped = true;
    for (auto& [id, w] : s.workers.all()) w.conn->close("coordinator stopping");
    s.sweep_timer.cancel();
    spdlog::info("stopped; {} unfinished task(s) kept for the next start", s.tasks.size());
  }
  std::promise<void> cancelled;
  asio::post(s.io, [&] {
    signals.cancel();
    cancelled.set_value();
  });
  cancelled.get_future().wait();
  work.reset();
  s.io.stop();
  for (auto& t : pool) t.join();
}

void Coordinator::stop() {
  std::lock_guard lock(impl_->mu);
  impl_->draining = true;
  impl_->state_cv.notify_all();
}

CoordinatorStats Coordinator::stats() const {
  std::lock_guard lock(impl_->mu);
  CoordinatorStats st = impl_->counters;
  st.live_workers = static_cast<int64_t>(impl_->workers.size());
  st.pending = static_cast<int64_t>(impl_->tasks.pending_count());
  st.running = static_cast<int64_t>(impl_->tasks.size()) - st.pending;
  for (const auto& [conn, w] : impl_->workers.all()) {
    const auto n = static_cast<int64_t>(w.outstanding.size());
    st.worker_tasks[w.name] += n;
    st.worker_running[w.name] += std::min(n, w.slots);
    st.worker_slots[w.name] += w.slots;
  }
  return st;
}

}  // namespace eesched::scheduler
