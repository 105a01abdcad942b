#include "scheduler/task_table.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

namespace eesched::scheduler {

data::TaskOutcome outcome_of(const net::Result& r) {
  data::TaskOutcome o;
  o.tokens = r.report.tokens;
  o.error = r.report.error;
  o.worker = r.worker;
  o.arm = r.arm;
  o.explored = r.explored;
  o.attempts = r.attempts;
  o.predicted_ms = r.predicted_ms;
  o.ppl_ratio = r.ppl_ratio;
  return o;
}

net::Result stored_result(const data::TaskRow& row, const std::optional<data::RunRow>& run) {
  const auto& o = row.outcome;
  net::Result r;
  r.task_id = row.id;
  r.attempt = o.attempts;
  r.request_id = row.ext_id;
  r.status = data::task_status_name(row.status);
  r.worker = o.worker;
  r.arm = o.arm;
  r.explored = o.explored;
  r.attempts = o.attempts;
  r.predicted_ms = o.predicted_ms;
  r.ppl_ratio = o.ppl_ratio;
  r.report.ok = row.status == data::TaskStatus::Done;
  if (run) {
    auto& m = static_cast<data::RunMeasurement&>(r.report);
    m.ok = run->ok;
    m.started_at = run->started_at;
    m.ended_at = run->ended_at;
    m.latency_ms = run->latency_ms;
    m.ttft_ms = run->ttft_ms;
    m.ms_per_token = run->ms_per_token;
    m.tokens_per_s = run->tokens_per_s;
    m.new_tokens = run->new_tokens;
    m.peak_rss_bytes = run->peak_rss_bytes;
    m.acceptance_rate = run->acceptance_rate;
  }
  r.report.error = o.error;
  r.report.tokens = o.tokens;
  // The whole answer, earlier attempts' streamed ids included (the run measured its attempt only).
  if (!o.tokens.empty()) {
    r.report.new_tokens = 0;
    for (const auto& row : o.tokens) r.report.new_tokens += static_cast<int64_t>(row.size());
  }
  return r;
}

net::Tokens Task::record_tokens(const net::Tokens& tk) {
  net::Tokens out;
  out.task_id = tk.task_id;
  out.attempt = tk.attempt;
  out.offsets.resize(tk.tokens.size());
  out.tokens.resize(tk.tokens.size());
  if (streamed.size() < tk.tokens.size()) streamed.resize(tk.tokens.size());
  for (std::size_t r = 0; r < tk.tokens.size() && r < tk.offsets.size(); ++r) {
    auto& have = streamed[r];
    const int64_t start = resume_from + tk.offsets[r];
    for (std::size_t i = 0; i < tk.tokens[r].size(); ++i) {
      const int64_t pos = start + static_cast<int64_t>(i);
      const auto known = static_cast<int64_t>(have.size());
      if (pos < known) continue;  // relayed before (an earlier attempt's row that ran ahead)
      if (pos > known) break;     // a gap: nothing after it is in order
      have.push_back(tk.tokens[r][i]);
      out.tokens[r].push_back(tk.tokens[r][i]);
    }
    out.offsets[r] = static_cast<int64_t>(have.size() - out.tokens[r].size());
  }
  return out;
}

std::vector<std::vector<int64_t>> Task::committed() const {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& row : streamed) rows.emplace_back(row.begin(), row.begin() + std::min<std::ptrdiff_t>(resume_from, std::ssize(row)));
  return rows;
}

Task* TaskTable::find(int64_t id) {
  const auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

Task& TaskTable::accept(net::TaskRequest r, const data::TaskSpec& spec, int64_t model_id, Clock::time_point received) {
  Task t;
  t.submitted_at = received;
  t.row = data::task_row(spec, model_id);
  t.row.from_client = true;
  t.row.key_fingerprint = r.key_fingerprint;
  t.row.pinned_arm = r.arm;
  t.row.prompt_ids = r.prompt_ids;      // encrypted, as the client sent them
  t.row.id = store_.insert_task(t.row);  // persisted before anything else happens to it
  t.row.prompt_ids.clear();             // the request keeps the one copy in memory
  t.request = std::move(r);
  const int64_t id = t.row.id;
  pending_.push_back(id);
  return tasks_.emplace(id, std::move(t)).first->second;
}

int64_t TaskTable::recover() {
  std::map<int64_t, std::string> model_names;
  for (const auto& m : store_.models()) model_names[m.id] = m.name;
  int64_t recovered = 0;
  for (const auto status : {data::TaskStatus::Running, data::TaskStatus::Pending}) {
    for (auto& row : store_.tasks_with_status(status)) {
      if (!row.from_client) continue;  // a sweep's or a worker's log, not ours to run
      Task t;
      auto& r = t.request;
      r.request_id = row.ext_id;
      r.model = model_names[row.model_id];
      r.key_fingerprint = row.key_fingerprint;
      r.prompt_ids = std::move(row.prompt_ids);
      r.generation = row.generation;
      r.quality = row.quality;
      r.max_ppl_ratio = row.max_ppl_ratio;
      r.arm = row.pinned_arm;
      if (r.model.empty() || r.prompt_ids.empty()) {
        spdlog::warn("task {} cannot be recovered (no model or no prompt); marking it failed", row.id);
        data::TaskOutcome o;
        o.error = "cannot be recovered after a restart";
        store_.finish_task(row.id, data::TaskStatus::Failed, o);
        continue;
      }
      row.prompt_ids.clear();  // the request keeps the one copy in memory
      t.row = std::move(row);
      t.submitted_at = Clock::now();
      const int64_t id = t.row.id;
      tasks_.emplace(id, std::move(t));
      pending_.push_back(id);
      ++recovered;
    }
  }
  std::sort(pending_.begin(), pending_.end());
  return recovered;
}

void TaskTable::drop_pending(int64_t id) { pending_.erase(std::remove(pending_.begin(), pending_.end(), id), pending_.end()); }

std::optional<Finished> TaskTable::retry(int64_t id, const std::string& error, std::optional<int64_t> failed_worker) {
  Task* t = find(id);
  if (!t) return std::nullopt;
  t->worker_conn.reset();
  t->last_error = error;
  if (failed_worker) t->failed_on.insert(*failed_worker);
  // The next attempt continues after what every row streamed (rows that ran ahead, or finished,
  // regenerate their later ids: the same ones under greedy decoding and seeded sampling).
  int64_t resume = t->streamed.size() == t->request.prompt_ids.size() ? std::numeric_limits<int64_t>::max() : 0;
  for (const auto& row : t->streamed) resume = std::min<int64_t>(resume, std::ssize(row));
  t->resume_from = std::min(resume, t->request.generation.max_new_tokens);
  if (t->resume_from > 0 && t->resume_from == t->request.generation.max_new_tokens) {
    // Every row streamed its whole budget before the attempt ended: that is the answer.
    spdlog::info("task {}: attempt {} ended ({}) after streaming the whole answer; done", id, t->attempts, error);
    net::Result res = result_of(*t, "done");
    res.report.ok = true;
    res.report.error.clear();
    res.report = whole_answer(*t, std::move(res.report));
    return finish(id, data::TaskStatus::Done, std::move(res), std::nullopt);
  }
  if (t->attempts >= max_attempts_) {
    net::Result res = result_of(*t, "failed");
    res.report.error = "failed after " + std::to_string(t->attempts) + " attempt(s): " + error;
    return finish(id, data::TaskStatus::Failed, std::move(res), std::nullopt);
  }
  pending_.push_front(id);  // it has waited longest
  return std::nullopt;
}

std::optional<Finished> TaskTable::fail_now(int64_t id, const std::string& error) {
  Task* t = find(id);
  if (!t) return std::nullopt;
  t->attempts = std::max<int64_t>(t->attempts, max_attempts_);
  return retry(id, error, std::nullopt);
}

Finished TaskTable::finish(int64_t id, data::TaskStatus status, net::Result result, const std::optional<data::RunRow>& run) {
  Finished out;
  out.task_id = id;
  const auto it = tasks_.find(id);
  if (it == tasks_.end()) return out;
  try {
    if (run) {
      store_.finish_task_with_run(id, status, outcome_of(result), *run);
    } else {
      store_.finish_task(id, status, outcome_of(result));
    }
  } catch (const std::exception& e) {
    // The client still gets its answer; the store will re-run the task after a restart.
    spdlog::error("task {}: cannot record its result: {}", id, e.what());
  }
  out.result = std::move(result);
  out.waiters = std::move(it->second.waiters);
  tasks_.erase(it);
  return out;
}

net::RunReport TaskTable::whole_answer(const Task& t, net::RunReport attempt) {
  if (t.resume_from > 0) {
    auto rows = t.committed();
    rows.resize(std::max(rows.size(), attempt.tokens.size()));
    for (std::size_t r = 0; r < attempt.tokens.size(); ++r) rows[r].insert(rows[r].end(), attempt.tokens[r].begin(), attempt.tokens[r].end());
    attempt.tokens = std::move(rows);
    attempt.new_tokens = 0;
    for (const auto& row : attempt.tokens) attempt.new_tokens += static_cast<int64_t>(row.size());
  }
  return attempt;
}

net::Result TaskTable::result_of(const Task& t, const std::string& status) const {
  net::Result r;
  r.task_id = t.row.id;
  r.attempt = t.attempts;
  r.request_id = t.request.request_id;
  r.status = status;
  r.worker = t.worker_name;
  r.arm = t.arm;
  r.explored = t.explored;
  r.attempts = t.attempts;
  r.predicted_ms = t.predicted_ms;
  r.ppl_ratio = t.ppl_ratio;
  r.report.error = t.last_error;
  return r;
}

}  // namespace eesched::scheduler
