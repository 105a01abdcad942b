#include "scheduler/metrics_endpoint.h"

#include <httplib.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "net/metrics.h"
#include "scheduler/coordinator.h"

namespace eesched::scheduler {

std::string render_coordinator_metrics(const CoordinatorStats& s) {
  using K = net::Metrics::Kind;
  net::Metrics m;
  m.declare("eesched_coordinator_tasks_total", K::Counter, "tasks by how they ended (accepted: every task taken in)");
  m.add("eesched_coordinator_tasks_total", {{"status", "accepted"}}, static_cast<double>(s.accepted));
  m.add("eesched_coordinator_tasks_total", {{"status", "done"}}, static_cast<double>(s.completed));
  m.add("eesched_coordinator_tasks_total", {{"status", "failed"}}, static_cast<double>(s.failed));
  m.add("eesched_coordinator_tasks_total", {{"status", "cancelled"}}, static_cast<double>(s.cancelled));
  m.declare("eesched_coordinator_reassignments_total", K::Counter, "attempts moved to another worker (death, timeout, failure)");
  m.add("eesched_coordinator_reassignments_total", {}, static_cast<double>(s.reassigned));
  m.declare("eesched_coordinator_recovered_tasks_total", K::Counter, "unfinished tasks re-queued from the store at start");
  m.add("eesched_coordinator_recovered_tasks_total", {}, static_cast<double>(s.recovered));
  m.declare("eesched_coordinator_decisions_total", K::Counter, "placements by the arm chosen and whether it was explored");
  for (const auto& [arm, n] : s.arms_chosen) m.add("eesched_coordinator_decisions_total", {{"arm", arm}, {"explored", "false"}}, static_cast<double>(n));
  for (const auto& [arm, n] : s.arms_explored) m.add("eesched_coordinator_decisions_total", {{"arm", arm}, {"explored", "true"}}, static_cast<double>(n));
  m.declare("eesched_coordinator_selector_retrains_total", K::Counter, "online retrainings of the selector started (coordinator --retrain-every)");
  m.add("eesched_coordinator_selector_retrains_total", {}, static_cast<double>(s.retrains));
  m.declare("eesched_coordinator_selector_swaps_total", K::Counter, "retrained selectors swapped in (better on the most recent runs)");
  m.add("eesched_coordinator_selector_swaps_total", {}, static_cast<double>(s.selector_swaps));
  m.declare("eesched_coordinator_live_workers", K::Gauge, "registered workers with a live connection");
  m.set("eesched_coordinator_live_workers", {}, static_cast<double>(s.live_workers));
  m.declare("eesched_coordinator_queue_depth", K::Gauge, "accepted tasks waiting for a worker");
  m.set("eesched_coordinator_queue_depth", {}, static_cast<double>(s.pending));
  m.declare("eesched_coordinator_tasks_running", K::Gauge, "tasks assigned to a worker and not finished");
  m.set("eesched_coordinator_tasks_running", {}, static_cast<double>(s.running));
  m.declare("eesched_coordinator_worker_tasks", K::Gauge, "tasks a worker is running or holds queued, by worker");
  for (const auto& [worker, n] : s.worker_tasks) m.set("eesched_coordinator_worker_tasks", {{"worker", worker}}, static_cast<double>(n));
  m.declare("eesched_coordinator_worker_running_batch", K::Gauge,
            "tasks in a worker's running batch: its unfinished tasks up to its slots, by worker");
  for (const auto& [worker, n] : s.worker_running)
    m.set("eesched_coordinator_worker_running_batch", {{"worker", worker}}, static_cast<double>(n));
  m.declare("eesched_coordinator_worker_slots", K::Gauge, "tasks a worker decodes at once (its --max-batch), by worker");
  for (const auto& [worker, n] : s.worker_slots) m.set("eesched_coordinator_worker_slots", {{"worker", worker}}, static_cast<double>(n));
  return m.render();
}

struct MetricsEndpoint::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
};

MetricsEndpoint::MetricsEndpoint(const net::Endpoint& listen, const Coordinator& coordinator) : impl_(std::make_unique<Impl>()) {
  impl_->server.Get("/metrics", [&coordinator](const httplib::Request&, httplib::Response& r) {
    r.set_content(render_coordinator_metrics(coordinator.stats()), "text/plain; version=0.0.4");
  });
  impl_->port = listen.port == 0 ? impl_->server.bind_to_any_port(listen.host)
                                 : (impl_->server.bind_to_port(listen.host, listen.port) ? listen.port : -1);
  if (impl_->port <= 0) throw std::runtime_error("coordinator: cannot serve metrics on " + listen.str() + " (in use, or not an address here)");
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // stop() before the loop runs would be lost (and the destructor's join would hang).
  while (!impl_->server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

MetricsEndpoint::~MetricsEndpoint() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t MetricsEndpoint::port() const { return static_cast<uint16_t>(impl_->port); }

}  // namespace eesched::scheduler
