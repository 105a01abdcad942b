#pragma once
// The coordinator daemon: accepts workers (HMAC-authenticated) and clients on one TCP port,
// persists every submitted task before anything else, asks the selector for the (worker, arm)
// of least predicted latency among live workers that hold the task's model (under the client's
// key), assigns it, relays the worker's Tokens to the client as they come (never storing them),
// logs the run when the Result comes back and answers the client.
//
// Guarantees: a task whose worker dies (closed socket, or silent past worker_timeout) or runs
// past task_timeout is reassigned, up to max_attempts; exactly one result is recorded and
// returned (late results of superseded attempts are ignored); a restart re-queues every task
// that was accepted and not finished; a client that resubmits the same request_id is attached
// to the existing task (or handed its stored result).
//
// Workers that ask to drain (Heartbeat.draining: a worker's SIGTERM) get no new task; what they
// hold finishes there, and they leave once the coordinator's answer says nothing is outstanding.
// Old and new keys are served side by side (tasks go by model and key fingerprint), so a key
// rotation drains the old key's workers while the new key's take over.
//
// Threads: one io_context served by a small pool; all scheduling state sits behind one mutex
// and every operation under it is short (a selector decision is ~20 us, a store write ~50 us).
// No inference and no training ever run here.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/retention.h"
#include "net/endpoint.h"
#include "net/protocol.h"

namespace eesched::scheduler {

struct CoordinatorOptions {
  net::Endpoint listen{"127.0.0.1", 7700};
  std::filesystem::path db;
  std::filesystem::path selector;    // empty: policy meta runs `kv` for every task (recorded as "default")
  // Placement policy (scheduler/policies.h): meta (the selector), or a baseline an operator can
  // fall back to: random, single-best, heuristic, roofline, knn. Not oracle (it needs outcomes).
  std::string policy = "meta";
  std::filesystem::path train_db;    // history to fit single-best/knn on (single-best: else the selector's ranking)
  std::filesystem::path token_file;
  int threads = 2;                   // network threads
  double explore = 0.02;             // probability of exploring another arm
  uint64_t seed = 1;                 // exploration's random stream
  int max_attempts = 3;              // per task, before it is failed
  std::chrono::milliseconds heartbeat{1000};        // asked of workers
  std::chrono::milliseconds worker_timeout{5000};   // a silent worker is dead after this
  std::chrono::milliseconds task_timeout{300000};   // an attempt running longer is reassigned
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds drain_timeout{30000};   // stop(): wait this long for running tasks
  int max_outstanding = 32;          // assigned, unfinished tasks per worker
  std::size_t max_tasks = 100000;    // unfinished tasks held at once; beyond, Submit gets `overloaded`
  std::size_t max_frame_bytes = net::kDefaultMaxFrameBytes;
  bool record_timings = false;       // keep per-task dispatch overheads for stats()
  bool handle_signals = false;       // SIGINT/SIGTERM: stop() (drain); a second one: stop at once
  // How long the store keeps tasks' encrypted ids (data/retention.h): all (default), none (only
  // while unfinished: wiped as a task ends), or N days after it ended (purged at start and hourly).
  data::Retention retain_ids;
  std::chrono::milliseconds purge_every{0};  // the purge period; 0: data::purge_period(retain_ids)
  // Learning online (scheduler/online.h), policy meta with a selector only: each worker's
  // predictions corrected by its own runs, and a retraining every `retrain_every` runs (0: never)
  // on a thread of its own, swapped in only if better on the most recent runs.
  bool online = true;
  int retrain_every = 200;
};

struct CoordinatorStats {
  int64_t accepted = 0, completed = 0, failed = 0, cancelled = 0, reassigned = 0, recovered = 0;
  int64_t live_workers = 0, pending = 0, running = 0;
  std::map<std::string, int64_t> arms_chosen, arms_explored;  // placements by arm (explored: by exploration)
  int64_t retrains = 0, selector_swaps = 0;                   // online retrainings, and those swapped in
  std::map<std::string, int64_t> worker_tasks;                // tasks assigned to each live worker, unfinished
  std::map<std::string, int64_t> worker_running;              // of those, the ones in its running batch (at most its slots)
  std::map<std::string, int64_t> worker_slots;                // tasks each live worker decodes at once
  std::vector<double> submit_to_assign_us;  // record_timings only: Submit received -> Assign sent
  std::vector<double> result_to_reply_us;   // record_timings only: Result received -> client answered
};

class Coordinator {
 public:
  // Opens the store, loads the selector and token, binds the port. Throws a one-line
  // std::runtime_error / data::Error on a bad file or a port in use.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();

  uint16_t port() const;
  // Re-queues unfinished tasks from the store, then serves until stop(); returns once drained.
  void run();
  // Thread-safe; non-blocking. New Submits are refused; assigned tasks get drain_timeout to
  // finish; unassigned ones stay pending in the store for the next start.
  void stop();
  CoordinatorStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::scheduler
