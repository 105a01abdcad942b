#include "node/dry_run_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "data/time.h"
#include "node/task_runner.h"

namespace eesched::node {

DryRunExecutor::DryRunExecutor(const ModelSet& models, RunDone done) : models_(models), done_(std::move(done)) {}

void DryRunExecutor::assign(net::Assign a, net::WorkerSession::ConnectionId from) {
  RunMetrics m;
  m.started_at = m.ended_at = data::iso_utc_now();
  if (!models_.find(a.model, false)) {
    m.error = "this worker has no model '" + a.model + "'";
  } else {
    m.ok = true;
    const auto n = std::clamp<int64_t>(a.generation.max_new_tokens, 0, 4);
    for (const auto& row : a.prompt_ids) {
      m.tokens.emplace_back(row.empty() ? 0 : static_cast<std::size_t>(n), row.empty() ? 0 : row.back());
      m.new_tokens += static_cast<int64_t>(m.tokens.back().size());
    }
  }
  done_(a, from, m);
  spdlog::debug("task {} attempt {}: dry run, answered", a.task_id, a.attempt);
}

void DryRunExecutor::cancel(int64_t task_id) {
  spdlog::debug("task {}: cancelled (not queued here: running or finished)", task_id);
}

}  // namespace eesched::node
