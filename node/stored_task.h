#pragma once
// Re-executing a task recorded in the performance store (its stored prompt ids, encrypted ones
// for an encrypted history) with a given arm on this machine, and logging the run: what
// `eesched replay --live` does for each task its policy decides on.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "accel/arm_cache.h"
#include "data/arm.h"
#include "data/hardware.h"
#include "data/store.h"
#include "node/model_source.h"
#include "node/task_runner.h"

namespace eesched::node {

class StoredTaskRunner {
 public:
  // Models resolve as in the sweep; `key_file` must be the key the history was swept with when
  // it is encrypted (checked by model fingerprint). Sets `threads` intra-op threads and
  // registers this machine as a worker.
  StoredTaskRunner(data::Store& store, const std::filesystem::path& models_dir, const std::string& key_file, int threads,
                   const std::filesystem::path& hardware_cache = {});

  const data::HardwareProfile& hardware() const { return hardware_; }
  int64_t worker_id() const { return worker_id_; }

  // Runs the task with the arm (after a short warm-up) and records it under `policy`.
  RunMetrics run(const data::TaskRow& task, const data::Arm& arm, const std::string& policy, double time_limit_ms);

 private:
  const SweepModel& model(int64_t model_id);
  data::Store& store_;
  ModelSource source_;
  accel::ArmCache cache_;
  data::HardwareProfile hardware_;
  int64_t worker_id_ = 0;
};

}  // namespace eesched::node
