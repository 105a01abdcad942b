#pragma once
// The worker's local run log: each task it ran (its encrypted ids, as received, as long as
// --retain-ids says) and the run's
// measurements, in a performance store of its own (data/store.h), so a worker's history can be
// studied without the coordinator's.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "data/hardware.h"
#include "data/retention.h"
#include "data/store.h"
#include "net/endpoint.h"
#include "net/messages.h"
#include "node/encrypted_models.h"

namespace eesched::node {

struct RunMetrics;

class RunLog {
 public:
  // Opens or creates the store and records this worker and its models in it. `models` must
  // outlive the log.
  // `retain_ids` (data/retention.h): all keeps the encrypted prompt, stop and answer ids of each
  // run; none never writes them (a worker needs no ids once a task has run); N days purges them
  // N days after the run, at startup and hourly.
  RunLog(const std::filesystem::path& db, const std::string& worker_name, const data::HardwareProfile& hardware,
         const ModelSet& models, net::Endpoint coordinator, data::Retention retain_ids = data::Retention::all());

  // Any thread. Records the task (once, by its external id) and the run with the task's final
  // status. Never throws: a run that cannot be logged is a warning.
  void record(const net::Assign& a, const RunMetrics& m);

 private:
  std::mutex mutex_;
  data::Store store_;
  const ModelSet& models_;
  net::Endpoint coordinator_;
  int64_t worker_id_ = 0;
  std::map<std::string, int64_t> model_ids_;  // fingerprint -> id in store_
  std::unique_ptr<data::IdPurger> purger_;    // N days
};

}  // namespace eesched::node
