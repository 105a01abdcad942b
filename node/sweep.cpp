#include "node/sweep.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "accel/arm_cache.h"
#include "data/error.h"
#include "data/hardware.h"
#include "data/roofline.h"
#include "data/quality.h"
#include "data/store.h"
#include "data/suite.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "node/model_source.h"
#include "node/task_runner.h"

namespace eesched::node {
namespace {

using Clock = std::chrono::steady_clock;

// One task, ready to run: its models and the prompt rows the models see.
struct PlannedTask {
  data::TaskSpec spec;
  const SweepModel* model = nullptr;
  const SweepModel* draft = nullptr;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<data::Arm> arms;  // applicable
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double best_median(const std::map<std::string, std::vector<double>>& measured);

// Racing: an arm stays in the race while its median so far is within `race` times the best
// median so far. One measurement of an arm twice as slow as the best already says it is not the
// oracle; repeats are spent where arms are close and noise decides the ranking.
bool is_contender(const std::map<std::string, std::vector<double>>& measured, const std::string& arm, double race) {
  if (race <= 0) return true;
  const auto it = measured.find(arm);
  if (it == measured.end() || it->second.empty()) return true;
  return median(it->second) <= race * best_median(measured);
}

double best_median(const std::map<std::string, std::vector<double>>& measured) {
  double best = std::numeric_limits<double>::infinity();
  for (const auto& [name, ms] : measured)
    if (!ms.empty()) best = std::min(best, median(ms));
  return best;
}

// Adaptive capping (as in SMAC and ParamILS): a run that has already taken `cap` times the best
// median of its task is no candidate for the oracle, so it is stopped there and recorded as a
// timeout, a lower bound the selector's history counts at its time. Without it `plain` (no KV
// cache) on long generations takes half of a full sweep's time to say "slowest".
double run_limit_ms(const std::map<std::string, std::vector<double>>& measured, double cap, double limit_ms) {
  if (cap <= 0) return limit_ms;
  return std::min(limit_ms, cap * best_median(measured));
}

}  // namespace

SweepSummary run_sweep(const SweepOptions& o) {
  const auto start = Clock::now();
  if (o.race != 0 && o.race < 1) throw data::Error("race factor " + std::to_string(o.race) + ": 0 (off) or at least 1");
  if (o.cap != 0 && o.cap < 1) throw data::Error("cap factor " + std::to_string(o.cap) + ": 0 (off) or at least 1");
  const auto tasks = data::read_suite(o.suite);
  auto store = data::Store::open(o.db);
  std::optional<ee::Key> key;
  std::optional<ee::Codec> codec;
  if (!o.key_file.empty()) {
    key = ee::Key::load(o.key_file);
    codec.emplace(*key);
  }
  ModelSource source(o.models_dir, key);
  const auto arms = o.arms.empty() ? data::arm_catalog() : o.arms;
  std::vector<int> threads = o.threads;
  if (threads.empty()) threads.push_back(static_cast<int>(std::thread::hardware_concurrency()));

  // Plan: every task's models, prompt and applicable arms, so progress knows the total.
  std::vector<PlannedTask> plan;
  SweepSummary summary;
  for (const auto& spec : tasks) {
    PlannedTask p;
    p.spec = spec;
    p.model = &source.get(spec.model, store);
    if (spec.has_draft()) p.draft = &source.get(spec.draft, store);
    const auto& config = p.model->model->config();
    std::vector<int64_t> ids;
    if (!spec.prompt.empty()) {
      if (!p.model->tokenizer) throw data::Error("task " + spec.id + ": model '" + spec.model + "' has no tokenizer for a text prompt");
      ids = p.model->tokenizer->encode(spec.prompt);
    } else {
      ids = synthetic_prompt(spec.id, spec.prompt_tokens, config.vocab_size);
    }
    // Keep the prompt's end when it would not fit with the new tokens (and speculative slack).
    const int64_t room = config.max_position_embeddings - spec.generation.max_new_tokens - 17;
    if (room < 1) throw data::Error("task " + spec.id + ": " + std::to_string(spec.generation.max_new_tokens) + " new tokens exceed the context");
    if (static_cast<int64_t>(ids.size()) > room) ids.erase(ids.begin(), ids.end() - room);
    if (codec) ids = codec->encrypt(ids);
    p.spec.prompt_tokens = static_cast<int64_t>(ids.size());
    p.prompts.assign(static_cast<std::size_t>(spec.batch), ids);
    accel::ModelPair pair{p.model->model, p.draft ? p.draft->model : nullptr, "", ""};
    for (const auto& arm : arms) {
      // The quality floor as the coordinator applies it: a lossy arm only within the task's
      // bound on the model's measured ratio.
      if (accel::arm_refusal(arm, p.spec, pair) || data::quality_refusal(arm, p.spec, p.model->row.quality)) summary.refused += 1;
      else p.arms.push_back(arm);
    }
    summary.planned += static_cast<int64_t>(p.arms.size()) * o.repeats * static_cast<int64_t>(threads.size());
    plan.push_back(std::move(p));
  }

  SweepProgress progress;
  progress.total = summary.planned;
  accel::ArmCache cache;
  const double limit_ms = o.time_limit_s * 1000.0;
  for (const int t : threads) {
    const int used = runtime::set_threads(t);
    const auto hw = data::load_or_measure_hardware(o.hardware_cache, used);
    const int64_t worker_id = store.upsert_worker(data::worker_row(data::worker_name(hw), hw));
    for (const auto& p : plan) {
      auto existing = store.find_task_by_ext_id(p.spec.id);
      int64_t task_id = 0;
      if (existing) {
        task_id = existing->id;
      } else {
        auto row = data::task_row(p.spec, p.model->row.id, p.draft ? std::optional<int64_t>(p.draft->row.id) : std::nullopt);
        row.prompt_ids = p.prompts;
        task_id = store.insert_task(row);
      }
      const accel::ModelPair pair{p.model->model, p.draft ? p.draft->model : nullptr, "", ""};
      const std::string models_id = p.spec.model + "|" + p.spec.draft;
      // Rounds, every arm once per round so that slow drifts of the machine hit all arms alike;
      // with racing, rounds after the first measure only the contenders.
      std::map<std::string, std::vector<double>> measured;  // arm -> latencies (ms) of this task here
      std::set<std::string> warmed;
      // With capping, the first round goes fastest-expected first (by the roofline estimate), so
      // that the cap has a good incumbent before the slow arms run.
      std::vector<const data::Arm*> order;
      for (const auto& arm : p.arms) order.push_back(&arm);
      if (o.cap > 0) {
        const data::ModelRow* draft_row = p.draft ? &p.draft->row : nullptr;
        std::stable_sort(order.begin(), order.end(), [&](const data::Arm* a, const data::Arm* b) {
          return data::estimate_roofline(p.spec, p.model->row, draft_row, hw, *a, std::nullopt).total_ms <
                 data::estimate_roofline(p.spec, p.model->row, draft_row, hw, *b, std::nullopt).total_ms;
        });
      }
      for (int r = 0; r < o.repeats; ++r) {
        std::vector<const data::Arm*> round;
        for (const auto* arm : order)
          if (r == 0 || is_contender(measured, arm->name, o.race)) round.push_back(arm);
        const auto dropped = static_cast<int64_t>(p.arms.size() - round.size());
        summary.raced_out += dropped;
        progress.total -= dropped;
        for (const auto* arm : round) {
          if (o.stop && o.stop->load()) {
            summary.interrupted = true;
            summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
            return summary;
          }
          progress.current = p.spec.id + " " + arm->name + " threads=" + std::to_string(used);
          if (const auto ms = store.run_latency(task_id, worker_id, arm->name, "sweep", r)) {
            measured[arm->name].push_back(*ms);
            summary.skipped += 1;
          } else {
            const auto prepared = cache.get(models_id, *arm, pair);
            const double run_limit = run_limit_ms(measured, o.cap, limit_ms);
            const bool capped = run_limit < limit_ms;
            if (warmed.insert(arm->name).second) {  // a short discarded run: first touch of the variant, allocator warm-up
              auto warm = p.spec;
              warm.generation.max_new_tokens = std::min<int64_t>(warm.generation.max_new_tokens, 4);
              execute_task(*prepared, warm, p.prompts, run_limit);
            }
            auto m = execute_task(*prepared, p.spec, p.prompts, run_limit);
            if (capped && !m.ok && m.error.rfind("timeout", 0) == 0) {
              std::ostringstream cap;
              cap << o.cap;  // "3", not to_string's "3.000000"
              m.error += " (adaptive cap: " + cap.str() + "x the best median so far)";
              summary.capped += 1;
            }
            measured[arm->name].push_back(m.latency_ms);
            if (store.insert_run(data::run_row(m, task_id, worker_id, arm->name, "sweep", r))) {
              summary.recorded += 1;
              if (!m.ok) summary.failed += 1;
            } else {
              summary.skipped += 1;
            }
          }
          progress.done += 1;
          progress.recorded = summary.recorded;
          progress.skipped = summary.skipped;
          progress.failed = summary.failed;
          progress.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
          const auto measured_runs = progress.done - progress.skipped;
          progress.eta_s = measured_runs > 0 ? progress.elapsed_s / static_cast<double>(measured_runs) *
                                                   static_cast<double>(progress.total - progress.done)
                                             : 0.0;
          if (o.progress) o.progress(progress);
        }
      }
      store.set_task_status(task_id, data::TaskStatus::Done);
    }
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

}  // namespace eesched::node
