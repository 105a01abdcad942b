#pragma once
// The coordinator's live workers: who holds which model, what is queued on each, and each
// (worker, model)'s placement state (scheduler/placement.h), built once at registration and
// refreshed only when what it holds changes (its queue, a newly measured acceptance rate), so a
// decision copies no model rows or hardware profiles.
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/store.h"
#include "net/messages.h"
#include "scheduler/placement.h"

namespace eesched::net {
class Connection;
}

namespace eesched::scheduler {

struct Worker {
  std::shared_ptr<net::Connection> conn;
  int64_t id = 0;  // store id
  std::string name;
  data::HardwareProfile hardware;
  std::vector<net::ModelInfo> models;  // row.id set to the store id
  std::optional<net::ModelInfo> draft;
  bool dry_run = false;
  std::deque<int64_t> outstanding;     // task ids assigned and unfinished, in assignment order
  double queue_ms = 0;                 // predicted work outstanding (each task's time alone, summed)
  int64_t slots = 1;                   // tasks it decodes at once (Register.slots)
  bool draining = false;               // asked to drain (Heartbeat.draining): no new task, its own finish

  // Placement's view of each model (index-aligned with `models`); queue_ms is kept current.
  std::vector<WorkerState> states;
  uint64_t landmarks_epoch = 0;        // of the acceptance rates in `states`
};

// Does a worker's model serve this request (name, and key when both sides name one)?
bool serves(const net::ModelInfo& m, const net::TaskRequest& r);

class WorkerPool {
 public:
  explicit WorkerPool(data::Store& store) : store_(store) {}

  // A registered worker under its connection id; its placement states are built here.
  Worker& add(uint64_t conn_id, Worker w);
  // Removes it and returns what it held (its outstanding tasks are the caller's to retry).
  std::optional<Worker> remove(uint64_t conn_id);
  Worker* find(uint64_t conn_id);
  std::map<uint64_t, Worker>& all() { return workers_; }
  std::size_t size() const { return workers_.size(); }

  // The placement states of the workers that can take `r` now (not draining, below max_outstanding, holding
  // its model under its key), preferring those where it has not failed yet. Valid until the
  // pool changes.
  std::vector<const WorkerState*> candidates(const net::TaskRequest& r, const std::set<int64_t>& failed_on, int max_outstanding);
  // The model of `w` that serves `r` (the one candidates() chose).
  const net::ModelInfo& model_for(const Worker& w, const net::TaskRequest& r) const;
  // Placement's state of that model on `w`, or null when `w` holds no model serving `r`.
  const WorkerState* state_for(const Worker& w, const net::TaskRequest& r) const;

  // Queue accounting of one assignment. The queue model placement sees (WorkerState): a worker
  // with n tasks outstanding and S slots starts a new task at once while n < S, sharing its batch
  // with min(n + 1, S) tasks; otherwise after the n - S + 1 tasks ahead of it have left, which
  // its S slots drain in parallel: (n - S + 1) x (mean predicted task) / S. With one slot that is
  // the whole queue, as before batching.
  void assign(Worker& w, int64_t task_id, double predicted_ms);
  // Returns the task that the freed slot goes to (it runs next, or already runs), if any.
  std::optional<int64_t> unassign(Worker& w, int64_t task_id, double predicted_ms);

  // A run measured an acceptance rate: every cached landmark is stale.
  void landmarks_changed() {
    acceptance_.clear();
    ++epoch_;
  }

 private:
  std::optional<double> landmark(int64_t model_id, std::optional<int64_t> draft_id);
  void refresh(Worker& w);
  static void update_queue(Worker& w);

  data::Store& store_;
  std::map<uint64_t, Worker> workers_;  // by connection id
  std::map<std::pair<int64_t, int64_t>, std::optional<double>> acceptance_;  // (model, draft or -1) -> rate
  uint64_t epoch_ = 1;
};

}  // namespace eesched::scheduler
