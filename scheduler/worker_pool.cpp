#include "scheduler/worker_pool.h"

#include <algorithm>

#include "net/connection.h"

namespace eesched::scheduler {

bool serves(const net::ModelInfo& m, const net::TaskRequest& r) {
  return m.row.name == r.model && (r.key_fingerprint.empty() || m.key_fingerprint.empty() || m.key_fingerprint == r.key_fingerprint);
}

Worker& WorkerPool::add(uint64_t conn_id, Worker w) {
  w.states.clear();
  for (const auto& m : w.models) {
    WorkerState s;
    s.id = static_cast<int64_t>(conn_id);
    s.hardware = w.hardware;
    s.model = m.row;
    if (w.draft) s.draft = w.draft->row;
    w.states.push_back(std::move(s));
  }
  w.landmarks_epoch = 0;
  auto& added = workers_[conn_id] = std::move(w);
  update_queue(added);
  refresh(added);
  return added;
}

std::optional<Worker> WorkerPool::remove(uint64_t conn_id) {
  const auto it = workers_.find(conn_id);
  if (it == workers_.end()) return std::nullopt;
  Worker w = std::move(it->second);
  workers_.erase(it);
  return w;
}

Worker* WorkerPool::find(uint64_t conn_id) {
  const auto it = workers_.find(conn_id);
  return it == workers_.end() ? nullptr : &it->second;
}

std::optional<double> WorkerPool::landmark(int64_t model_id, std::optional<int64_t> draft_id) {
  const auto key = std::make_pair(model_id, draft_id.value_or(-1));
  const auto it = acceptance_.find(key);
  if (it != acceptance_.end()) return it->second;
  return acceptance_[key] = store_.mean_acceptance(model_id, draft_id);
}

void WorkerPool::refresh(Worker& w) {
  if (w.landmarks_epoch == epoch_) return;
  for (std::size_t i = 0; i < w.states.size(); ++i) {
    auto& s = w.states[i];
    const int64_t model_id = w.models[i].row.id;
    // draft_id nullopt: the model drafting itself (qspecK arms).
    s.landmarks.acceptance_rate = w.draft ? landmark(model_id, w.draft->row.id) : std::nullopt;
    s.landmarks.self_acceptance_rate = landmark(model_id, std::nullopt);
    s.profile = profile_key(s);
  }
  w.landmarks_epoch = epoch_;
}

std::vector<const WorkerState*> WorkerPool::candidates(const net::TaskRequest& r, const std::set<int64_t>& failed_on,
                                                       int max_outstanding) {
  std::vector<const WorkerState*> fresh, failed;
  for (auto& [cid, w] : workers_) {
    if (w.draining || static_cast<int>(w.outstanding.size()) >= max_outstanding) continue;
    for (std::size_t i = 0; i < w.models.size(); ++i) {
      if (!serves(w.models[i], r)) continue;
      refresh(w);
      (failed_on.count(w.id) ? failed : fresh).push_back(&w.states[i]);
      break;
    }
  }
  // Prefer workers where it has not failed yet; fall back to them rather than wait forever.
  return fresh.empty() ? failed : fresh;
}

const net::ModelInfo& WorkerPool::model_for(const Worker& w, const net::TaskRequest& r) const {
  return *std::find_if(w.models.begin(), w.models.end(), [&](const net::ModelInfo& m) { return serves(m, r); });
}

const WorkerState* WorkerPool::state_for(const Worker& w, const net::TaskRequest& r) const {
  for (std::size_t i = 0; i < w.models.size() && i < w.states.size(); ++i)
    if (serves(w.models[i], r)) return &w.states[i];
  return nullptr;
}

void WorkerPool::update_queue(Worker& w) {
  const auto n = static_cast<int64_t>(w.outstanding.size());
  const int64_t slots = std::max<int64_t>(1, w.slots);
  const double wait = n < slots ? 0.0 : static_cast<double>(n - slots + 1) * (w.queue_ms / static_cast<double>(n)) / static_cast<double>(slots);
  for (auto& s : w.states) {
    s.queue_ms = wait;
    s.occupancy = std::min(n + 1, slots);
  }
}

void WorkerPool::assign(Worker& w, int64_t task_id, double predicted_ms) {
  w.outstanding.push_back(task_id);
  w.queue_ms += predicted_ms;
  update_queue(w);
}

std::optional<int64_t> WorkerPool::unassign(Worker& w, int64_t task_id, double predicted_ms) {
  const auto it = std::find(w.outstanding.begin(), w.outstanding.end(), task_id);
  if (it == w.outstanding.end()) return std::nullopt;
  w.outstanding.erase(it);
  w.queue_ms = w.outstanding.empty() ? 0.0 : std::max(0.0, w.queue_ms - predicted_ms);
  update_queue(w);
  // The task that took the freed slot, if any (the caller ignores one that had already started).
  const auto slot = static_cast<std::size_t>(std::max<int64_t>(1, w.slots) - 1);
  if (w.outstanding.size() <= slot) return std::nullopt;
  return w.outstanding[slot];
}

}  // namespace eesched::scheduler
