#pragma once
// A worker's side of its link to the coordinator, torch-free: connects (exponential backoff,
// 100 ms doubling to max_backoff), authenticates both ways (an HMAC over the coordinator's nonce;
// the coordinator's proof over ours is checked), registers, sends heartbeats, treats a
// coordinator silent for 4 x heartbeat_ms (at least 2 s) as gone, and reconnects and registers
// again whenever the link drops. What to run is the caller's business: it gets typed callbacks
// and answers with send_tokens() as a task runs and send_result() when it ends. docs/protocol.md
// ("Worker authentication", "Liveness") has the rules this follows.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "net/auth.h"
#include "net/endpoint.h"
#include "net/messages.h"

namespace eesched::net {

struct WorkerSessionOptions {
  Endpoint coordinator;
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds connect_timeout{3000};
};

class WorkerSession {
 public:
  // Which connection an Assign came on (Connection::id()). Its result goes back on that
  // connection only: once the link has dropped, the coordinator reassigns the task elsewhere.
  using ConnectionId = uint64_t;

  // All run on the network thread and must return at once (never run a model in them).
  // on_assign is required; the others may be left empty.
  struct Handlers {
    std::function<void(Assign, ConnectionId from)> on_assign;
    std::function<void(const Cancel&)> on_cancel;
    std::function<void()> on_registered;
    // A registered connection is gone. Returns how many queued tasks the worker dropped with it
    // (the coordinator reassigns them), for the log.
    std::function<std::size_t()> on_lost;
    std::function<int64_t()> queued;  // tasks queued or running here, sent in each Heartbeat (empty: 0)
    // drain() is over: the coordinator awaits nothing more from us and nothing runs here (or the
    // link is gone, or the drain timed out). The caller stops; the session does not by itself.
    std::function<void()> on_drained;
  };

  // `registration` is what Register says (name, hardware, models, dry_run); its nonce and proof
  // are made afresh for each connection.
  WorkerSession(WorkerSessionOptions options, Token token, Register registration, Handlers handlers);
  ~WorkerSession();
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  // Connects, serves, reconnects; returns after stop(). Throws std::runtime_error when the
  // coordinator refuses our token or cannot prove it holds the token (retrying would not help).
  // At most once per session.
  void run();
  void stop();  // any thread; also before run()
  // Any thread, without waiting: asks the coordinator for no new task (Heartbeat.draining, now
  // and in every beat), keeps serving what it assigned, and calls on_drained once the
  // coordinator's answer says nothing is outstanding and queued() is 0 — or when the link drops,
  // or after `timeout`, whichever comes first. Not registered: on_drained at once.
  void drain(std::chrono::milliseconds timeout);

  // Any thread. Sends the result on connection `to` if it is still the live one; true when it
  // was queued for sending. A result too large for a frame is replaced by a failed report that
  // says so (and false is returned), or the coordinator would wait out its timeout and retry.
  bool send_result(const Result& result, ConnectionId to);
  // Any thread. Sends a running task's Tokens on connection `to` if it is still the live one, in
  // order with the results sent there; true when it was queued. A chunk that cannot be sent is
  // dropped (the Result carries the whole answer anyway).
  bool send_tokens(const Tokens& tokens, ConnectionId to);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::net
