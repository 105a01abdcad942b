#pragma once
// Runs assigned tasks on the worker's encrypted models: one at a time, on an executor thread of
// its own (inference uses every intra-op thread; the network thread never runs a model), in the
// order they came. Arms are built lazily from the models and cached (accel::ArmCache). A running
// task's tokens go out as they are produced (node/token_stream.h: batched, at most one message
// per step and per kTokensInterval, the rest flushed before the Result). A Cancel drops a queued
// task and stops a running one after its current decoding step (its Result then fails with
// "cancelled"; the coordinator, which asked, no longer waits for it).
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "net/endpoint.h"
#include "node/encrypted_models.h"
#include "node/executor.h"

namespace eesched::accel {
class ArmCache;
}

namespace eesched::node {

class ModelExecutor final : public Executor {
 public:
  // `models` must outlive the executor; `threads` as runtime::set_threads takes it (0: all cores).
  // The coordinator's address names each task (node/assignment.h).
  ModelExecutor(const ModelSet& models, net::Endpoint coordinator, int threads, RunDone done, TokensOut tokens = nullptr);
  ~ModelExecutor() override;  // stops, and waits for the running task

  void start() override;
  void assign(net::Assign a, net::WorkerSession::ConnectionId from) override;
  void cancel(int64_t task_id) override;
  std::size_t drop_queued() override;
  int64_t queued() const override;
  void stop() override;
  void join() override;

 private:
  struct Job {
    net::WorkerSession::ConnectionId from;  // the result goes back there only
    net::Assign assign;
  };
  void loop();
  RunMetrics execute(const Job& job);

  const ModelSet& models_;
  const net::Endpoint coordinator_;
  const int threads_;
  RunDone done_;
  TokensOut tokens_;
  std::unique_ptr<accel::ArmCache> cache_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool running_task_ = false;
  int64_t running_task_id_ = 0;
  std::atomic<bool> cancel_running_{false};  // set by cancel(); the running task stops at its next step
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace eesched::node
