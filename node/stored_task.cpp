#include "node/stored_task.h"

#include "data/error.h"
#include "runtime/threads.h"

namespace eesched::node {
namespace {

std::optional<ee::Key> load_key(const std::string& file) {
  if (file.empty()) return std::nullopt;
  return ee::Key::load(file);
}

}  // namespace

StoredTaskRunner::StoredTaskRunner(data::Store& store, const std::filesystem::path& models_dir, const std::string& key_file,
                                   int threads, const std::filesystem::path& hardware_cache)
    : store_(store), source_(models_dir, load_key(key_file)) {
  const int used = runtime::set_threads(threads);
  hardware_ = data::load_or_measure_hardware(hardware_cache, used);
  worker_id_ = store_.upsert_worker(data::worker_row(data::worker_name(hardware_), hardware_));
}

const SweepModel& StoredTaskRunner::model(int64_t model_id) {
  for (const auto& row : store_.models()) {
    if (row.id != model_id) continue;
    const auto& m = source_.get(row.name, store_);
    if (m.row.fingerprint != row.fingerprint)
      throw data::Error("model '" + row.name + "' here is not the one the history was measured with (fingerprint " +
                        m.row.fingerprint.substr(0, 12) + " vs " + row.fingerprint.substr(0, 12) + ")" +
                        (row.encrypted ? ": pass the --key the sweep used" : ""));
    return m;
  }
  throw data::Error("the store has no model " + std::to_string(model_id));
}

RunMetrics StoredTaskRunner::run(const data::TaskRow& task, const data::Arm& arm, const std::string& policy, double time_limit_ms) {
  if (task.prompt_ids.empty()) throw data::Error("task " + task.ext_id + " has no stored prompt ids (wiped by --retain-ids or db purge-ids)");
  const auto& target = model(task.model_id);
  const SweepModel* draft = task.draft_model_id ? &model(*task.draft_model_id) : nullptr;
  const auto spec = data::task_spec(task);
  const accel::ModelPair pair{target.model, draft ? draft->model : nullptr, "", ""};
  const auto prepared = cache_.get(std::to_string(task.model_id) + "|" + (draft ? std::to_string(*task.draft_model_id) : ""), arm, pair);
  auto warm = spec;
  warm.generation.max_new_tokens = std::min<int64_t>(spec.generation.max_new_tokens, 4);
  execute_task(*prepared, warm, task.prompt_ids, time_limit_ms);
  const auto m = execute_task(*prepared, spec, task.prompt_ids, time_limit_ms);
  auto row = data::run_row(m, task.id, worker_id_, arm.name, policy, 0);
  // Replays of the same task accumulate: the next free repeat index.
  for (row.repeat_index = 0; !store_.insert_run(row); ++row.repeat_index) {
  }
  return m;
}

}  // namespace eesched::node
