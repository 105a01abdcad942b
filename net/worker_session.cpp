#include "net/worker_session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include "net/connection.h"
#include "net/protocol.h"

namespace eesched::net {
namespace {

using asio::ip::tcp;
using std::chrono::milliseconds;

// A coordinator that accepts the TCP connection but never completes the handshake is dropped
// (and retried) after this long.
constexpr milliseconds kHandshakeTimeout{10000};
constexpr milliseconds kInitialBackoff{100};

std::string model_list(const std::vector<ModelInfo>& models) {
  std::string s;
  for (const auto& m : models) {
    if (!s.empty()) s += ", ";
    s += m.row.name + (m.draft ? " (draft)" : "");
  }
  return s.empty() ? "none" : s;
}

}  // namespace

struct WorkerSession::Impl {
  Impl(WorkerSessionOptions o, Token t, Register r, Handlers h)
      : options(std::move(o)), token(std::move(t)), registration(std::move(r)), handlers(std::move(h)) {
    if (!handlers.on_assign) throw std::invalid_argument("WorkerSession: an on_assign handler is required");
    backoff = std::min(kInitialBackoff, options.max_backoff);
  }

  // ---- configuration (read-only after construction) ----
  WorkerSessionOptions options;
  Token token;
  Register registration;
  Handlers handlers;

  std::atomic<bool> stopping{false};
  std::atomic<bool> started{false};

  // ---- network thread only (io is run by run()'s thread alone, so handlers never overlap) ----
  // Declared before every object that uses it, so those are destroyed first.
  asio::io_context io;
  tcp::resolver resolver{io};
  asio::steady_timer connect_timer{io}, handshake_timer{io}, heartbeat_timer{io}, reconnect_timer{io}, drain_timer{io};
  std::shared_ptr<tcp::socket> pending_socket;  // the connection attempt in progress
  milliseconds backoff{kInitialBackoff};
  milliseconds heartbeat{1000};
  std::string last_connect_error;  // of the current outage
  std::string my_nonce;  // our challenge, once Register is sent
  bool registered = false;
  int64_t worker_id = 0;
  std::optional<std::string> fatal;
  bool draining = false;  // drain() called
  bool drained = false;   // on_drained called

  // The live connection; also read by stop() and send_result() from other threads.
  std::mutex conn_mutex;
  std::shared_ptr<Connection> conn;

  std::shared_ptr<Connection> current() {
    std::lock_guard lock(conn_mutex);
    return conn;
  }

  // ---------------------------------------------------------------- lifecycle

  void run() {
    if (started.exchange(true)) throw std::logic_error("WorkerSession::run() called twice");
    if (stopping) return;
    asio::post(io, [this] { start_connect(); });
    io.run();
    // Let the closes that shutdown started finish (flushes, close handlers) without waiting.
    io.restart();
    io.poll();
    if (fatal) throw std::runtime_error(*fatal);
  }

  // Any thread: the network thread closes everything and leaves io.run().
  void request_stop() {
    stopping = true;
    asio::post(io, [this] { shutdown(); });
  }

  void shutdown() {
    stopping = true;
    asio::error_code ec;
    connect_timer.cancel();
    handshake_timer.cancel();
    heartbeat_timer.cancel();
    reconnect_timer.cancel();
    drain_timer.cancel();
    resolver.cancel();
    if (pending_socket) pending_socket->close(ec);
    pending_socket.reset();
    std::shared_ptr<Connection> c;
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
    shutdown();
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
    Connection::Options co;
    co.idle_timeout = milliseconds(0);  // until registered: then heartbeats are answered
    auto c = Connection::create(std::move(socket), co);
    {
      std::lock_guard lock(conn_mutex);
      conn = c;
    }
    registered = false;
    my_nonce.clear();
    spdlog::debug("connected to the coordinator {}", options.coordinator.str());
    handshake_timer.expires_after(kHandshakeTimeout);
    handshake_timer.async_wait([this, weak = std::weak_ptr<Connection>(c)](std::error_code ec) {
      auto c2 = weak.lock();
      if (ec || !c2 || c2 != current() || registered) return;
      c2->close("no registration within " + std::to_string(kHandshakeTimeout.count()) + " ms");
    });
    c->start([this](const std::shared_ptr<Connection>& from, Message m) { on_message(from, std::move(m)); },
             [this](const std::shared_ptr<Connection>& from, const std::string& reason) { on_close(from, reason); });
  }

  void on_close(const std::shared_ptr<Connection>& c, const std::string& reason) {
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
    // Tasks not yet started die with their connection: the coordinator reassigns them.
    const std::size_t dropped = was_registered && handlers.on_lost ? handlers.on_lost() : 0;
    if (stopping) return;
    if (draining) return finish_drain("the link to the coordinator dropped while draining: " + reason);
    spdlog::warn("{} the coordinator {}: {}{}; reconnecting in {} ms", was_registered ? "lost" : "could not register with",
                 options.coordinator.str(), reason,
                 dropped ? " (" + std::to_string(dropped) + " queued task" + (dropped > 1 ? "s" : "") + " dropped)" : "",
                 backoff.count());
    schedule_reconnect();
  }

  // ---------------------------------------------------------------- messages

  void on_message(const std::shared_ptr<Connection>& c, Message m) {
    if (c != current()) return;
    try {
      switch (m.type) {
        case MessageType::Hello: return on_hello(c, m.as<Hello>());
        case MessageType::Registered: return on_registered(c, m.as<Registered>());
        case MessageType::Assign: return on_assign(c, m.as<Assign>());
        case MessageType::Cancel: return on_cancel(m.as<Cancel>());
        case MessageType::Heartbeat: return on_heartbeat(m.as<Heartbeat>());  // alive: the idle timer restarted
        case MessageType::Error: return on_error(m.as<ErrorMsg>());
        default:
          return c->fail(codes::kUnexpected, std::string("a worker does not accept ") + message_type_name(m.type));
      }
    } catch (const ProtocolError& e) {
      c->fail(e.code(), e.what());
    } catch (const std::exception& e) {
      // Never let a handler's exception out into io.run().
      spdlog::warn("while handling a {} from the coordinator: {}", message_type_name(m.type), e.what());
    }
  }

  void on_hello(const std::shared_ptr<Connection>& c, const Hello& hello) {
    if (!my_nonce.empty()) return c->fail(codes::kUnexpected, "a second Hello");
    Register reg = registration;
    reg.nonce = my_nonce = make_nonce();
    reg.proof = token.proof(kWorkerProofLabel, hello.nonce, reg.name);
    c->send(to_message(reg));
  }

  void on_registered(const std::shared_ptr<Connection>& c, const Registered& r) {
    if (my_nonce.empty() || registered) return c->fail(codes::kUnexpected, "Registered before Register, or twice");
    if (!token.verify(kCoordinatorProofLabel, my_nonce, registration.name, r.proof))
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
    spdlog::info("registered with {} as {} (worker id {}): models {}{}", options.coordinator.str(), registration.name, worker_id,
                 model_list(registration.models), registration.dry_run ? " (dry run)" : "");
    schedule_heartbeat(c);
    if (handlers.on_registered) handlers.on_registered();
  }

  void schedule_heartbeat(const std::shared_ptr<Connection>& c) {
    heartbeat_timer.expires_after(heartbeat);
    heartbeat_timer.async_wait([this, weak = std::weak_ptr<Connection>(c)](std::error_code ec) {
      auto c2 = weak.lock();
      if (ec || !c2 || c2 != current() || !registered) return;
      send_heartbeat(*c2);
      schedule_heartbeat(c2);
    });
  }

  void send_heartbeat(Connection& c) {
    Heartbeat hb;
    hb.queued = handlers.queued ? handlers.queued() : 0;
    hb.draining = draining;
    c.send(to_message(hb));
  }

  // ---------------------------------------------------------------- draining

  void start_drain(milliseconds timeout) {
    if (stopping || draining) return;
    draining = true;
    const auto c = current();
    if (!c || !registered) return finish_drain("not registered with a coordinator");
    spdlog::info("draining: no new tasks; finishing the {} held here, then leaving (at most {} s)",
                 handlers.queued ? handlers.queued() : 0, timeout.count() / 1000);
    drain_timer.expires_after(timeout);
    drain_timer.async_wait([this, timeout](std::error_code ec) {
      if (!ec) finish_drain("the drain timed out after " + std::to_string(timeout.count() / 1000) + " s");
    });
    send_heartbeat(*c);  // asks now rather than at the next beat
  }

  // The coordinator's answer: once it knows we drain and awaits nothing, and nothing runs here.
  void on_heartbeat(const Heartbeat& hb) {
    if (!draining || drained || !hb.draining) return;
    const int64_t here = handlers.queued ? handlers.queued() : 0;
    if (hb.queued == 0 && here == 0) finish_drain("");
  }

  void finish_drain(const std::string& why) {
    if (drained) return;
    drained = true;
    drain_timer.cancel();
    if (why.empty())
      spdlog::info("drained: every task held here has finished and reached the coordinator");
    else
      spdlog::warn("drain ended: {}", why);
    if (handlers.on_drained) handlers.on_drained();
  }

  void on_assign(const std::shared_ptr<Connection>& c, Assign a) {
    if (!registered) return c->fail(codes::kUnexpected, "Assign before registration");
    handlers.on_assign(std::move(a), c->id());
  }

  void on_cancel(const Cancel& cancel) {
    if (handlers.on_cancel) handlers.on_cancel(cancel);
  }

  void on_error(const ErrorMsg& e) {
    if (e.code == codes::kAuthFailed && !registered)
      return fail_fatally("coordinator " + options.coordinator.str() + " refused the token: " + e.message);
    spdlog::warn("the coordinator {} reports {}{}: {}", options.coordinator.str(), e.code,
                 e.task_id ? " for task " + std::to_string(*e.task_id) : "", e.message);
  }

  // ---------------------------------------------------------------- results (any thread)

  bool send_result(const Result& r, ConnectionId to) {
    const auto c = current();
    try {
      if (c && c->id() == to && c->send(to_message(r))) return true;
      spdlog::debug("task {} attempt {}: result dropped, the connection that assigned it is gone", r.task_id, r.attempt);
    } catch (const std::exception& e) {
      // Too large for a frame: say so, or the coordinator would wait out its timeout and retry.
      spdlog::warn("task {} attempt {}: cannot send the result: {}", r.task_id, r.attempt, e.what());
      Result failed = r;
      failed.report = RunReport{};
      failed.report.error = std::string("the result cannot be sent: ") + e.what();
      try {
        c->send(to_message(failed));
      } catch (const std::exception&) {
      }
    }
    return false;
  }

  bool send_tokens(const Tokens& t, ConnectionId to) {
    const auto c = current();
    try {
      if (c && c->id() == to && c->send(to_message(t))) return true;
    } catch (const std::exception& e) {
      spdlog::debug("task {} attempt {}: tokens dropped: {}", t.task_id, t.attempt, e.what());
    }
    return false;
  }
};

WorkerSession::WorkerSession(WorkerSessionOptions options, Token token, Register registration, Handlers handlers)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(token), std::move(registration), std::move(handlers))) {}

WorkerSession::~WorkerSession() = default;

void WorkerSession::run() { impl_->run(); }

void WorkerSession::stop() { impl_->request_stop(); }

void WorkerSession::drain(std::chrono::milliseconds timeout) {
  asio::post(impl_->io, [impl = impl_.get(), timeout] { impl->start_drain(timeout); });
}

bool WorkerSession::send_result(const Result& result, ConnectionId to) { return impl_->send_result(result, to); }

bool WorkerSession::send_tokens(const Tokens& tokens, ConnectionId to) { return impl_->send_tokens(tokens, to); }

}  // namespace eesched::net
