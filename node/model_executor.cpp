#include "node/model_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "accel/arm_cache.h"
#include "accel/registry.h"
#include "data/arm.h"
#include "data/time.h"
#include "node/assignment.h"
#include "node/task_runner.h"
#include "node/token_stream.h"
#include "runtime/batch_decoder.h"
#include "runtime/model.h"
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

// Whether the task may join a continuous batch: an arm that decodes one token per step with the
// KV cache and no draft, one prompt, and prompt + new tokens within the batch context.
bool batchable(const net::Assign& a, const BatchingOptions& batching) {
  if (batching.max_batch <= 1 || a.prompt_ids.size() != 1) return false;
  try {
    const auto arm = data::parse_arm(a.arm);
    if (!arm.kv_cache || arm.needs_draft() || arm.batch_one) return false;
  } catch (const std::exception&) {
    return false;  // runs alone, which reports the error
  }
  return static_cast<int64_t>(a.prompt_ids.front().size()) + a.generation.max_new_tokens - 1 <= batching.context;
}

}  // namespace

int64_t default_max_batch(const ModelSet& models, int64_t context, int64_t free_memory_bytes) {
  constexpr int64_t kPreferred = 8;
  int64_t per_sequence = 0;  // KV cache bytes of one sequence of `context` positions, largest model
  for (const auto& m : models.all()) {
    const auto& r = m.info.row;
    const int64_t head_dim = r.head_dim > 0 ? r.head_dim : r.heads > 0 ? r.hidden / r.heads : r.hidden;
    const int64_t kv_heads = r.kv_heads > 0 ? r.kv_heads : r.heads;
    per_sequence = std::max(per_sequence, 2 * r.layers * kv_heads * head_dim * 4 * context);
  }
  if (per_sequence <= 0 || free_memory_bytes <= 0) return kPreferred;
  return std::clamp<int64_t>(free_memory_bytes / 4 / per_sequence, 1, kPreferred);
}

struct ModelExecutor::Running {
  Job job;
  std::unique_ptr<TokenStream> stream;
  std::string started_at;
};

struct ModelExecutor::Batch {
  std::shared_ptr<const accel::PreparedArm> arm;
  std::unique_ptr<runtime::BatchDecoder> decoder;
  std::map<int64_t, Running> running;  // by the decoder's sequence id
};

ModelExecutor::ModelExecutor(const ModelSet& models, net::Endpoint coordinator, int threads, BatchingOptions batching,
                             RunDone done, TokensOut tokens)
    : models_(models),
      coordinator_(std::move(coordinator)),
      threads_(threads),
      batching_(batching),
      done_(std::move(done)),
      tokens_(std::move(tokens)),
      cache_(std::make_unique<accel::ArmCache>()) {
  if (batching_.max_batch < 1 || batching_.max_batch > runtime::BatchDecoder::kMaxBatch)
    throw std::runtime_error("--max-batch must be 1.." + std::to_string(runtime::BatchDecoder::kMaxBatch));
}

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
    running = running_.count(task_id) > 0;
    if (running) cancelled_.insert(task_id);
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
  return static_cast<int64_t>(queue_.size() + running_.size());
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

bool ModelExecutor::take_cancel(int64_t task_id) {
  std::lock_guard lock(mutex_);
  return cancelled_.erase(task_id) > 0;
}

void ModelExecutor::loop() {
  runtime::set_threads(threads_);  // OpenMP's thread count is per calling thread
  for (;;) {
    bool batched = false;
    for (const auto& [key, b] : batches_) batched = batched || !b->running.empty();
    {
      std::unique_lock lock(mutex_);
      // A running batch keeps stepping (after stop() too: its tasks finish); otherwise wait.
      if (!batched) cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && !batched) return;
    }
    if (auto job = admit()) {
      finish(*job, execute_alone(*job));
      continue;
    }
    step_batches();
  }
}

std::optional<ModelExecutor::Job> ModelExecutor::admit() {
  for (;;) {
    int64_t active = 0;
    for (const auto& [key, b] : batches_) active += static_cast<int64_t>(b->running.size());
    Job job;
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || queue_.empty() || active >= batching_.max_batch) return std::nullopt;
      const bool alone = !batchable(queue_.front().assign, batching_);
      if (alone && active > 0) return std::nullopt;  // it waits for the batch to drain, and so do those behind it
      job = std::move(queue_.front());
      queue_.pop_front();
      running_.insert(job.assign.task_id);
      if (alone) return job;
    }
    admit_to_batch(std::move(job));
  }
}

void ModelExecutor::admit_to_batch(Job job) {
  const auto& a = job.assign;
  try {
    const auto* target = models_.find(a.model, false);
    if (!target) throw std::runtime_error("this worker has no model '" + a.model + "'");
    const auto arm = data::parse_arm(a.arm);
    const auto spec = task_spec(coordinator_, a, arm);
    const accel::ModelPair pair{target->model, nullptr, target->info.key_fingerprint, ""};
    if (auto why = accel::arm_refusal(arm, spec, pair)) throw std::runtime_error("arm " + arm.name + " cannot run here: " + *why);
    const std::string key = target->info.row.fingerprint + "|" + arm.name;
    auto found = batches_.find(key);
    if (found == batches_.end()) {
      // Built whole before it enters the map: a failure here leaves no half-made batch behind.
      auto fresh = std::make_unique<Batch>();
      fresh->arm = cache_->get(target->info.row.fingerprint + "|", arm, pair);
      fresh->decoder = std::make_unique<runtime::BatchDecoder>(
          *fresh->arm->models.target,
          runtime::BatchDecoderOptions{batching_.max_batch, batching_.context, batching_.prefill_chunk, batching_.prefill_chunk});
      // A new arm's batch: the idle batches of other arms give their KV caches back.
      for (auto it = batches_.begin(); it != batches_.end();) it = it->second->running.empty() ? batches_.erase(it) : std::next(it);
      found = batches_.emplace(key, std::move(fresh)).first;
    }
    auto& b = *found->second;
    runtime::BatchRequest request;
    request.prompt = a.prompt_ids.front();
    request.generation = spec.generation;
    request.time_limit_ms = a.time_limit_ms;
    request.rng_skip = a.resume_from;  // a resumed task continues its sampled stream
    if (auto why = b.decoder->refusal(request); !why.empty()) throw std::runtime_error(why);
    auto stream = std::make_unique<TokenStream>(a.task_id, a.attempt, 1, [this, from = job.from](const net::Tokens& t) {
      if (tokens_) tokens_(t, from);
    });
    const int64_t id = b.decoder->admit(std::move(request));
    spdlog::debug("task {} attempt {}: joins the {} batch ({} running)", a.task_id, a.attempt, arm.name, b.running.size() + 1);
    b.running.emplace(id, Running{std::move(job), std::move(stream), data::iso_utc_now()});
  } catch (const std::exception& e) {
    finish(job, failed_run(e.what()));
  }
}

void ModelExecutor::step_batches() {
  for (auto& [key, b] : batches_) {
    // Cancelled tasks leave before the step.
    for (auto it = b->running.begin(); it != b->running.end();) {
      if (!take_cancel(it->second.job.assign.task_id)) {
        ++it;
        continue;
      }
      b->decoder->remove(it->first);
      it->second.stream->flush();
      finish(it->second.job, failed_run("cancelled"));
      it = b->running.erase(it);
    }
    if (b->running.empty()) continue;
    // Newcomers' prefill, whose first tokens go out at once, then the batch's decoding step.
    for (const auto phase : {&runtime::BatchDecoder::prefill, &runtime::BatchDecoder::decode}) {
      std::vector<runtime::SequenceUpdate> updates;
      try {
        updates = (b->decoder.get()->*phase)();
      } catch (const std::exception& e) {
        // A failed forward (out of memory, say): every task of the batch fails with it.
        for (auto& [id, run] : b->running) {
          b->decoder->remove(id);
          finish(run.job, failed_run(e.what()));
        }
        b->running.clear();
        break;
      }
      for (auto& u : updates) {
        const auto it = b->running.find(u.id);
        if (it == b->running.end()) continue;
        auto& run = it->second;
        if (!u.new_tokens.empty()) run.stream->add({u.new_tokens});
        if (!u.finished) continue;
        run.stream->flush();
        finish(run.job, run_metrics(u.result, std::nullopt, run.job.assign.time_limit_ms, run.started_at));
        b->running.erase(it);
      }
    }
  }
}

void ModelExecutor::finish(const Job& job, const RunMetrics& m) {
  {
    std::lock_guard lock(mutex_);
    running_.erase(job.assign.task_id);
    cancelled_.erase(job.assign.task_id);
  }
  const auto& a = job.assign;
  // The ids are what this worker sees: encrypted. Logged so anyone can check that.
  if (m.ok)
    spdlog::info("task {} attempt {}: arm {}, prompt {} -> {} tokens {} in {:.1f} ms", a.task_id, a.attempt, a.arm,
                 a.prompt_ids.empty() ? "[]" : preview(a.prompt_ids.front()), m.new_tokens,
                 m.tokens.empty() ? "[]" : preview(m.tokens.front()), m.latency_ms);
  else if (m.error == "cancelled")
    spdlog::info("task {} attempt {}: cancelled while running", a.task_id, a.attempt);
  else
    spdlog::warn("task {} attempt {}: arm {} failed: {}", a.task_id, a.attempt, a.arm, m.error);
  done_(a, job.from, m);
}

RunMetrics ModelExecutor::execute_alone(const Job& job) {
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
    // Tokens go back to the connection the task came on, ahead of its Result (sent by finish()).
    TokenStream stream(a.task_id, a.attempt, a.prompt_ids.size(), [this, &job](const net::Tokens& t) {
      if (tokens_) tokens_(t, job.from);
    });
    auto m = execute_task(*prepared, spec, a.prompt_ids, a.time_limit_ms, [this, &stream, &a](const auto& step) {
      if (take_cancel(a.task_id)) throw std::runtime_error("cancelled");
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
