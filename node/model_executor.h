#pragma once
// Runs assigned tasks on the worker's encrypted models, on an executor thread of its own
// (inference uses every intra-op thread; the network thread never runs a model), in the order
// they came. Tasks whose arm decodes one token per step with the KV cache and no draft, with one
// prompt, run in a continuous batch (runtime/batch_decoder.h): up to max_batch of them at once,
// joining and leaving at step boundaries, one batch per prepared arm (tasks of different arms
// take turns step by step). A task that cannot batch (speculative, no cache, several prompts,
// longer than the batch context) runs alone: the batch drains first, and the tasks behind it
// wait, so the order they came in is kept. Arms are built lazily and cached (accel::ArmCache).
// A running task's tokens go out as they are produced (node/token_stream.h: batched, at most one
// message per step and per kTokensInterval, the rest flushed before the Result). A Cancel drops
// a queued task and stops a running one after its current step (its Result then fails with
// "cancelled"; the coordinator, which asked, no longer waits for it).
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "net/endpoint.h"
#include "node/encrypted_models.h"
#include "node/executor.h"

namespace eesched::accel {
class ArmCache;
}

namespace eesched::node {

// How a worker batches (`eesched worker --max-batch --batch-context --prefill-chunk`).
struct BatchingOptions {
  int64_t max_batch = 1;        // tasks decoded at once; 1: one at a time
  int64_t context = 4096;       // positions per batched task (prompt + new tokens); longer ones run alone
  int64_t prefill_chunk = 128;  // prompt tokens per prefill forward, between decoding steps
};

// The default --max-batch: 8 (a decoding step of a memory-bound model costs little more for 8
// rows than for 1), fewer when the KV caches of 8 full contexts of the largest model would take
// more than a quarter of the free memory.
int64_t default_max_batch(const ModelSet& models, int64_t context, int64_t free_memory_bytes);

class ModelExecutor final : public Executor {
 public:
  // `models` must outlive the executor; `threads` as runtime::set_threads takes it (0: all cores).
  // The coordinator's address names each task (node/assignment.h).
  ModelExecutor(const ModelSet& models, net::Endpoint coordinator, int threads, BatchingOptions batching, RunDone done,
                TokensOut tokens = nullptr);
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
  struct Batch;    // the running batch of one prepared arm
  struct Running;  // a task in a batch
  void loop();
  // Moves queued tasks into batches while there is room; returns a task that must run alone
  // (nothing else runs), or nothing.
  std::optional<Job> admit();
  // Admits one job to its arm's batch, or ends it at once with the reason it cannot run.
  void admit_to_batch(Job job);
  // One step of every batch; reports the tasks that ended.
  void step_batches();
  RunMetrics execute_alone(const Job& job);
  bool take_cancel(int64_t task_id);  // whether a Cancel came for it (and forgets it)
  void finish(const Job& job, const RunMetrics& m);

  const ModelSet& models_;
  const net::Endpoint coordinator_;
  const int threads_;
  const BatchingOptions batching_;
  RunDone done_;
  TokensOut tokens_;
  std::unique_ptr<accel::ArmCache> cache_;
  std::map<std::string, std::unique_ptr<Batch>> batches_;  // by prepared arm; executor thread only

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::set<int64_t> running_;    // task ids in a batch or running alone
  std::set<int64_t> cancelled_;  // running tasks a Cancel came for
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace eesched::node
