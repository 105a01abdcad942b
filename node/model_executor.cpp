#include "node/model_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "accel/arm_cache.h"
#include "accel/registry.h"
#include "data/arm.h"
#include "data/time.h"
#include "node/assignment.h"
#include "node/task_runner.h"
#include "node/token_stream.h"
#include "runtime/threads.h"

namespace eesched::node {
namespace {

// "[a b c d e f ...] (n ids)": enough of an id list to recognise it in a log.
std::string preview(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size() && i < 6; ++i) {
    if (i > 0) s += ' ';
    s += std::to_string(ids[i]);
  }
  if (ids.size() > 6) s += " ...";
  return s + "] (" + std::to_string(ids.size()) + " ids)";
}

RunMetrics failed_run(const std::string& why) {
  RunMetrics m;
  m.started_at = m.ended_at = data::iso_utc_now();
  m.error = why;
  return m;
}

}  // namespace

ModelExecutor::ModelExecutor(const ModelSet& models, net::Endpoint coordinator, int threads, RunDone done, TokensOut tokens)
    : models_(models),
      coordinator_(std::move(coordinator)),
      threads_(threads),
      done_(std::move(done)),
      tokens_(std::move(tokens)),
      cache_(std::make_unique<accel::ArmCache>()) {}

ModelExecutor::~ModelExecutor() {
  stop();
  join();
}

void ModelExecutor::start() {
  thread_ = std::thread([this] { loop(); });
}

void ModelExecutor::assign(net::Assign a, net::WorkerSession::ConnectionId from) {
  spdlog::debug("task {} attempt {}: queued ({} arm {})", a.task_id, a.attempt, a.model, a.arm);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    queue_.push_back(Job{from, std::move(a)});
  }
  cv_.notify_one();
}

void ModelExecutor::cancel(int64_t task_id) {
  std::size_t removed = 0;
  bool running = false;
  {
    std::lock_guard lock(mutex_);
    const auto before = queue_.size();
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.assign.task_id == task_id; }),
                 queue_.end());
    removed = before - queue_.size();
    running = running_task_ && running_task_id_ == task_id;
    if (running) cancel_running_ = true;
  }
  spdlog::debug("task {}: cancelled{}", task_id,
                running ? " (running: it stops after this step)" : removed ? "" : " (not here: finished)");
}

std::size_t ModelExecutor::drop_queued() {
  std::lock_guard lock(mutex_);
  const auto dropped = queue_.size();
  queue_.clear();
  return dropped;
}

int64_t ModelExecutor::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int64_t>(queue_.size()) + (running_task_ ? 1 : 0);
}

void ModelExecutor::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
}

void ModelExecutor::join() {
  if (thread_.joinable()) thread_.join();
}

void ModelExecutor::loop() {
  runtime::set_threads(threads_);  // OpenMP's thread count is per calling thread
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_task_ = true;
      running_task_id_ = job.assign.task_id;
      cancel_running_ = false;
    }
    const auto m = execute(job);
    {
      std::lock_guard lock(mutex_);
      running_task_ = false;
    }
    const auto& a = job.assign;
    // The ids are what this worker sees: encrypted. Logged so anyone can check that.
    if (m.ok)
      spdlog::info("task {} attempt {}: arm {}, prompt {} -> {} tokens {} in {:.1f} ms", a.task_id, a.attempt, a.arm,
                   preview(a.prompt_ids.front()), m.new_tokens, m.tokens.empty() ? "[]" : preview(m.tokens.front()), m.latency_ms);
    else if (m.error == "cancelled")
      spdlog::info("task {} attempt {}: cancelled while running", a.task_id, a.attempt);
    else
      spdlog::warn("task {} attempt {}: arm {} failed: {}", a.task_id, a.attempt, a.arm, m.error);
    done_(a, job.from, m);
  }
}

RunMetrics ModelExecutor::execute(const Job& job) {
  const auto& a = job.assign;
  try {
    const auto* target = models_.find(a.model, false);
    if (!target) throw std::runtime_error("this worker has no model '" + a.model + "'");
    const LoadedModel* draft = nullptr;
    if (!a.draft.empty()) {
      draft = models_.find_draft(a.draft);
      if (!draft) throw std::runtime_error("this worker has no draft model '" + a.draft + "'");
    }
    if (a.prompt_ids.empty()) throw std::runtime_error("the task has no prompt");
    const auto arm = data::parse_arm(a.arm);
    const auto spec = task_spec(coordinator_, a, arm);
    // The draft only matters to speculative arms: leaving it out of the others keeps one
    // prepared variant (e.g. one int8 copy) per target whatever draft the task names.
    if (!arm.needs_draft()) draft = nullptr;
    const accel::ModelPair pair{target->model, draft ? draft->model : nullptr, target->info.key_fingerprint,
                                draft ? draft->info.key_fingerprint : ""};
    if (auto why = accel::arm_refusal(arm, spec, pair)) throw std::runtime_error("arm " + arm.name + " cannot run here: " + *why);
    const auto prepared = cache_->get(target->info.row.fingerprint + "|" + (draft ? draft->info.row.fingerprint : ""), arm, pair);
    // Tokens go back to the connection the task came on, ahead of its Result (sent by loop()).
    TokenStream stream(a.task_id, a.attempt, a.prompt_ids.size(), [this, &job](const net::Tokens& t) {
      if (tokens_) tokens_(t, job.from);
    });
    auto m = execute_task(*prepared, spec, a.prompt_ids, a.time_limit_ms, [this, &stream](const auto& step) {
      if (cancel_running_) throw std::runtime_error("cancelled");
      stream.add(step);
    }, a.resume_from);
    stream.flush();
    return m;
  } catch (const std::exception& e) {
    return failed_run(e.what());
  } catch (...) {
    return failed_run("unknown error");
  }
}

}  // namespace eesched::node
