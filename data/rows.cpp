#include "data/rows.h"

#include "data/error.h"

namespace eesched::data {

const char* task_status_name(TaskStatus s) {
  switch (s) {
    case TaskStatus::Pending: return "pending";
    case TaskStatus::Running: return "running";
    case TaskStatus::Done: return "done";
    case TaskStatus::Failed: return "failed";
    case TaskStatus::Cancelled: return "cancelled";
  }
  return "?";
}

TaskStatus parse_task_status(const std::string& name) {
  for (auto s : {TaskStatus::Pending, TaskStatus::Running, TaskStatus::Done, TaskStatus::Failed, TaskStatus::Cancelled})
    if (name == task_status_name(s)) return s;
  throw Error("task status must be pending, running, done, failed or cancelled, not '" + name + "'");
}

WorkerRow worker_row(const std::string& name, const HardwareProfile& hw) {
  WorkerRow w;
  w.name = name;
  w.hardware = hw;
  return w;
}

TaskSpec task_spec(const TaskRow& row) {
  TaskSpec s;
  s.id = row.ext_id;
  s.prompt_tokens = row.prompt_tokens;
  s.batch = row.batch;
  s.generation = row.generation;
  s.quality = row.quality;
  s.max_ppl_ratio = row.max_ppl_ratio;
  if (row.draft_model_id) s.draft = "draft";  // the arm rules only ask whether there is one
  return s;
}

RunRow run_row(const RunMeasurement& m, int64_t task_id, std::optional<int64_t> worker_id, const std::string& arm,
               const std::string& policy, int64_t repeat_index) {
  RunRow row;
  row.task_id = task_id;
  row.worker_id = worker_id;
  row.arm = arm;
  row.policy = policy;
  row.repeat_index = repeat_index;
  row.started_at = m.started_at.empty() ? iso_utc_now() : m.started_at;
  row.ended_at = m.ended_at.empty() ? row.started_at : m.ended_at;
  row.latency_ms = m.latency_ms;
  row.ttft_ms = m.ttft_ms;
  row.ms_per_token = m.ms_per_token;
  row.tokens_per_s = m.tokens_per_s;
  row.new_tokens = m.new_tokens;
  row.peak_rss_bytes = m.peak_rss_bytes;
  row.acceptance_rate = m.acceptance_rate;
  row.ok = m.ok;
  row.error = m.error;
  return row;
}

TaskRow task_row(const TaskSpec& spec, int64_t model_id, std::optional<int64_t> draft_model_id) {
  TaskRow t;
  t.ext_id = spec.id;
  t.model_id = model_id;
  t.draft_model_id = draft_model_id;
  t.prompt_tokens = spec.prompt_tokens;
  t.batch = spec.batch;
  t.generation = spec.generation;
  t.quality = spec.quality;
  t.max_ppl_ratio = spec.max_ppl_ratio;
  return t;
}

}  // namespace eesched::data
