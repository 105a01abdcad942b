#include "node/run_log.h"

#include <spdlog/spdlog.h>

#include <optional>

#include <nlohmann/json.hpp>

#include "data/arm.h"
#include "node/assignment.h"
#include "node/task_runner.h"

namespace eesched::node {

RunLog::RunLog(const std::filesystem::path& db, const std::string& worker_name, const data::HardwareProfile& hardware,
               const ModelSet& models, net::Endpoint coordinator, data::Retention retain_ids)
    : store_(data::Store::open(db)), models_(models), coordinator_(std::move(coordinator)) {
  store_.set_retention(retain_ids);
  if (!retain_ids.keeps_forever())
    purger_ = std::make_unique<data::IdPurger>(db, retain_ids, data::purge_period(retain_ids), [](const std::string& message, bool error) {
      spdlog::log(error ? spdlog::level::err : spdlog::level::info, "run log: {}", message);
    });
  worker_id_ = store_.upsert_worker(data::worker_row(worker_name, hardware));
  for (const auto& m : models_.all()) model_ids_[m.info.row.fingerprint] = store_.upsert_model(m.info.row);
}

void RunLog::record(const net::Assign& a, const RunMetrics& m) {
  std::lock_guard lock(mutex_);
  try {
    const auto* target = models_.find(a.model, false);
    if (!target) return;  // nothing to attach the run to
    const LoadedModel* draft = a.draft.empty() ? nullptr : models_.find_draft(a.draft);
    std::optional<data::Arm> arm;
    try {
      arm = data::parse_arm(a.arm);
    } catch (const std::exception&) {
      // logged under the name as received
    }
    const std::string arm_name = arm ? arm->name : a.arm;
    const bool keep_ids = store_.retention().mode != data::Retention::Mode::None;
    int64_t task_id = 0;
    if (const auto existing = store_.find_task_by_ext_id(external_task_id(coordinator_, a))) {
      task_id = existing->id;
    } else {
      auto row = data::task_row(task_spec(coordinator_, a, arm.value_or(data::Arm{})), model_ids_.at(target->info.row.fingerprint),
                                draft ? std::optional<int64_t>(model_ids_.at(draft->info.row.fingerprint)) : std::nullopt);
      if (keep_ids) {
        row.prompt_ids = a.prompt_ids;  // encrypted, as received
      } else {
        row.generation.stop_ids.clear();  // none: no encrypted id is ever written
      }
      task_id = store_.insert_task(row);
    }
    data::TaskOutcome outcome;
    if (keep_ids) outcome.tokens = m.tokens;  // encrypted
    outcome.error = m.error;
    outcome.arm = arm_name;
    outcome.attempts = a.attempt;
    const auto run = data::run_row(m, task_id, worker_id_, arm_name, "coordinator", a.attempt);
    if (!store_.finish_task_with_run(task_id, m.ok ? data::TaskStatus::Done : data::TaskStatus::Failed, outcome, run))
      spdlog::debug("task {} attempt {}: already logged in {}", a.task_id, a.attempt, store_.path());
  } catch (const std::exception& e) {
    spdlog::warn("task {} attempt {}: cannot log the run in {}: {}", a.task_id, a.attempt, store_.path(), e.what());
  }
}

}  // namespace eesched::node
