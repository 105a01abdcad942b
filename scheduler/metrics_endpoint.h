#pragma once
// The coordinator's GET /metrics over HTTP (`eesched coordinator --metrics-listen HOST:PORT`):
// its counters and gauges in the Prometheus text format, rendered from Coordinator::stats() at
// each scrape. Names are listed in docs/protocol.md ("Metrics").
#include <cstdint>
#include <memory>
#include <string>

#include "net/endpoint.h"

namespace eesched::scheduler {

class Coordinator;
struct CoordinatorStats;

std::string render_coordinator_metrics(const CoordinatorStats& stats);

class MetricsEndpoint {
 public:
  // Binds `listen` (port 0: any free port) and serves from a thread of its own until destroyed.
  // Throws a one-line std::runtime_error when it cannot bind.
  MetricsEndpoint(const net::Endpoint& listen, const Coordinator& coordinator);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::scheduler
