#include "node/task_runner.h"

#include <sys/resource.h>

#include <algorithm>
#include <exception>
#include <utility>
#include <random>

#include "accel/run.h"
#include "data/time.h"

namespace eesched::node {
namespace {

void stamp_end(RunMetrics& m) {
  m.ended_at = data::iso_utc_now();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  m.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

RunMetrics run_metrics(const runtime::GenerateResult& g, std::optional<double> acceptance_rate, double time_limit_ms,
                       std::string started_at) {
  RunMetrics m;
  m.started_at = std::move(started_at);
  m.latency_ms = g.total_ms;
  m.ttft_ms = g.ttft_ms;
  m.ms_per_token = g.ms_per_token();
  m.tokens_per_s = g.tokens_per_s();
  m.new_tokens = g.new_tokens();
  m.acceptance_rate = acceptance_rate;
  m.tokens = g.tokens;
  const bool timed_out = std::find(g.finish_reason.begin(), g.finish_reason.end(), "timeout") != g.finish_reason.end();
  m.ok = !timed_out;
  if (timed_out) m.error = "timeout after " + std::to_string(static_cast<int64_t>(time_limit_ms)) + " ms";
  stamp_end(m);
  return m;
}

RunMetrics execute_task(const accel::PreparedArm& arm, const data::TaskSpec& task,
                        const std::vector<std::vector<int64_t>>& prompts, double time_limit_ms, StepTokens on_tokens,
                        int64_t rng_skip) {
  const auto started_at = data::iso_utc_now();
  try {
    runtime::GenerateOptions o;
    o.generation = task.generation;
    o.time_limit_ms = time_limit_ms;
    o.on_tokens = std::move(on_tokens);
    o.rng_skip = rng_skip;
    const auto r = accel::run_arm(arm, prompts, o);
    return run_metrics(r.generation, r.acceptance_rate, time_limit_ms, started_at);
  } catch (const std::exception& e) {
    RunMetrics m;
    m.started_at = started_at;
    m.ok = false;
    m.error = e.what();
    stamp_end(m);
    return m;
  }
}

std::vector<int64_t> synthetic_prompt(const std::string& task_id, int64_t n, int64_t vocab) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across machines, unlike std::hash
  for (unsigned char c : task_id) h = (h ^ c) * 1099511628211ULL;
  std::mt19937_64 rng(h);
  std::uniform_int_distribution<int64_t> pick(std::min<int64_t>(3, vocab - 1), vocab - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = pick(rng);
  return ids;
}

}  // namespace eesched::node
