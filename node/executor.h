#pragma once
// Where the worker daemon hands its assigned tasks: the model executor (model_executor.h) in
// production, the dry-run executor (dry_run_executor.h) when only the coordinator is measured.
// Each reports every finished run through a RunDone (and the model executor its tokens as they
// are produced, through a TokensOut).
#include <cstddef>
#include <cstdint>
#include <functional>

#include "net/messages.h"
#include "net/worker_session.h"

namespace eesched::node {

struct RunMetrics;

// A finished run of `assign`, which came on connection `from`: the daemon sends its result back
// there and logs the run. Called on the thread that ran the task.
using RunDone = std::function<void(const net::Assign& assign, net::WorkerSession::ConnectionId from, const RunMetrics& m)>;
// A running task's tokens so far (node/token_stream.h batches them), for the connection `to` its
// Assign came on; the daemon sends them there ahead of the Result. Called on the thread that runs
// the task.
using TokensOut = std::function<void(const net::Tokens& tokens, net::WorkerSession::ConnectionId to)>;

class Executor {
 public:
  virtual ~Executor() = default;

  virtual void start() = 0;  // once, before the first assign()
  // Called on the network thread; they return at once.
  virtual void assign(net::Assign a, net::WorkerSession::ConnectionId from) = 0;
  virtual void cancel(int64_t task_id) = 0;  // a queued task is dropped; a running one stops if it can
  virtual std::size_t drop_queued() = 0;     // the connection is gone; returns how many were dropped
  virtual int64_t queued() const = 0;        // tasks queued or running, for the heartbeat
  // Any thread, without waiting: no further task starts (the running one finishes). join()
  // then waits for it.
  virtual void stop() = 0;
  virtual void join() = 0;
};

}  // namespace eesched::node
