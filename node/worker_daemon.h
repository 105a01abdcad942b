#pragma once
// The worker daemon: serves the encrypted models it holds to a coordinator, and never holds a
// key. It composes
//   - the coordinator session (net/worker_session.h): connecting with backoff, the mutual HMAC
//     handshake, registration, heartbeats, reconnecting;
//   - its models (encrypted_models.h), registered with its measured hardware;
//   - an executor that runs each assigned task, streams its encrypted output ids as they are
//     produced (Tokens) and reports them all with the run's measurements (Result):
//     model_executor.h (one task at a time on an executor thread; the network thread never runs
//     a model), or dry_run_executor.h with WorkerOptions::dry_run (a Result only);
//   - the local run log (run_log.h), when a store is given.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/retention.h"
#include "net/endpoint.h"
#include "net/messages.h"
#include "node/model_executor.h"

namespace eesched::node {

struct WorkerOptions {
  net::Endpoint coordinator;
  // (name, encrypted model directory). Plaintext directories are refused: a worker serves
  // encrypted models only.
  std::vector<std::pair<std::string, std::filesystem::path>> models;
  std::filesystem::path draft;        // optional encrypted draft (registered with draft = true)
  std::filesystem::path token_file;
  int threads = 0;                    // intra-op threads; 0: all cores
  // Continuous batching (node/model_executor.h); batching.max_batch 0: default_max_batch.
  BatchingOptions batching{0, 4096, 128};
  std::filesystem::path db;           // local run log; empty: none
  data::Retention retain_ids;         // how long the run log keeps encrypted ids (data/retention.h)
  std::string name;                   // empty: data::worker_name(hardware)
  std::filesystem::path hardware_cache;  // empty: the default cache directory
  // Dry run: answer every Assign at once without running a model (bench-dispatch measures the
  // coordinator alone). dry_run_models are registered as held without loading anything.
  bool dry_run = false;
  std::vector<net::ModelInfo> dry_run_models;
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds connect_timeout{3000};
};

// "NAME=DIR" or "DIR" (name: the directory's base name) -> (name, dir).
std::pair<std::string, std::filesystem::path> parse_model_arg(const std::string& arg);

class WorkerDaemon {
 public:
  // Loads every model (throws a one-line std::runtime_error for a missing, corrupt or
  // plaintext model directory, or an unreadable token file) and measures the hardware.
  explicit WorkerDaemon(WorkerOptions options);
  ~WorkerDaemon();

  // Connects, serves, reconnects; returns after stop(). Throws when the coordinator refuses
  // our token or cannot prove it holds the token (retrying would not help).
  void run();
  void stop();  // thread-safe; the task being run finishes first
  // Thread-safe, non-blocking: takes no new task (the coordinator is told), finishes every task
  // already assigned here, queued ones included, sends their results, then stops (run() returns):
  // what a worker of a retired key does on SIGTERM. After `timeout` it stops anyway.
  void drain(std::chrono::milliseconds timeout);

  const std::string& name() const;
  int64_t tasks_run() const;  // results sent, over the daemon's life

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::node
