#include "accel/bench_arms.h"

#include <algorithm>
#include <map>

#include "accel/registry.h"
#include "accel/run.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"

namespace eesched::accel {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Decoding time per token after the first: for speculative arms the rounds emit several tokens
// at once, so this is the run's decoding time over its decoded tokens.
double decode_ms_per_token(const runtime::GenerateResult& r) {
  const auto n = r.new_tokens();
  return n > 1 ? (r.total_ms - r.ttft_ms) / static_cast<double>(n - 1) : r.ttft_ms;
}

}  // namespace

BenchArmsResult bench_arms(const ModelPair& base, const BenchArmsOptions& options) {
  if (!base.target) throw runtime::Error("bench-arms: no model");
  if (options.tokens < 2 || options.repeats < 1) throw runtime::Error("bench-arms: need at least 2 tokens and 1 round");
  if (options.prompt.empty()) throw runtime::Error("bench-arms: empty prompt");
  auto progress = [&](const std::string& what) {
    if (options.progress) options.progress(what);
  };
  std::vector<data::Arm> arms = options.arms.empty() ? data::arm_catalog() : options.arms;
  if (std::none_of(arms.begin(), arms.end(), [](const data::Arm& a) { return a.name == "kv"; }))
    arms.insert(arms.begin(), data::parse_arm("kv"));

  data::TaskSpec task;  // what these runs are: batch 1, greedy, any quality
  task.id = "bench-arms";
  task.draft = base.draft ? "draft" : "";
  task.prompt_tokens = static_cast<int64_t>(options.prompt.size());
  task.generation.max_new_tokens = options.tokens;
  task.quality = data::Quality::Tolerant;

  BenchArmsResult result;
  std::vector<PreparedArm> prepared;
  std::vector<std::size_t> row_of;  // prepared index -> row
  for (const auto& arm : arms) {
    ArmBenchRow row;
    row.arm = arm.name;
    row.lossless = arm.lossless();
    row.refused = arm_refusal(arm, task, base);
    if (!row.refused) {
      progress("preparing " + arm.name);
      prepared.push_back(build_arm(arm, base));
      row.prepare_s = prepared.back().prepare_seconds;
      row.weight_mb = static_cast<double>(prepared.back().models.target->weight_bytes()) / 1e6;
      row_of.push_back(result.rows.size());
    }
    result.rows.push_back(row);
  }
  const std::size_t kv = static_cast<std::size_t>(
      std::find_if(prepared.begin(), prepared.end(), [](const PreparedArm& p) { return p.arm.name == "kv"; }) - prepared.begin());

  runtime::GenerateOptions gen;
  gen.generation.max_new_tokens = options.tokens;
  const std::size_t n = prepared.size();
  std::vector<std::vector<double>> ms(n), ttft(n), tps(n), speedup(n), accept(n);
  for (int round = -1; round < options.repeats; ++round) {  // round -1 warms caches and allocators
    progress(round < 0 ? "warm-up round" : "round " + std::to_string(round + 1) + " of " + std::to_string(options.repeats));
    std::vector<double> round_ms(n);
    // Rotating start: no arm always runs first (or right after the slowest one).
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (k + static_cast<std::size_t>(std::max(round, 0))) % n;
      const auto r = run_arm(prepared[i], {options.prompt}, gen);
      round_ms[i] = decode_ms_per_token(r.generation);
      if (round < 0) continue;
      ms[i].push_back(round_ms[i]);
      ttft[i].push_back(r.generation.ttft_ms);
      tps[i].push_back(r.generation.tokens_per_s());
      if (r.acceptance_rate) accept[i].push_back(*r.acceptance_rate);
    }
    if (round < 0) continue;
    for (std::size_t i = 0; i < n; ++i) speedup[i].push_back(round_ms[kv] / round_ms[i]);
  }
  for (std::size_t i = 0; i < n; ++i) {
    auto& row = result.rows[row_of[i]];
    row.ms_per_token = median(ms[i]);
    row.ttft_ms = median(ttft[i]);
    row.tokens_per_s = median(tps[i]);
    row.speedup_vs_kv = median(speedup[i]);
    if (!accept[i].empty()) row.acceptance_rate = median(accept[i]);
  }

  if (!options.heldout.empty()) {
    runtime::PerplexityOptions po;
    po.context = std::min(options.ppl_context, base.target->config().max_position_embeddings);
    progress("perplexity of the unaccelerated model");
    result.base_perplexity = runtime::perplexity(*base.target, options.heldout, po).perplexity;
    for (std::size_t i = 0; i < n; ++i) {
      if (prepared[i].arm.lossless()) continue;
      progress("perplexity of " + prepared[i].arm.name);
      auto& row = result.rows[row_of[i]];
      row.perplexity = runtime::perplexity(*prepared[i].models.target, options.heldout, po).perplexity;
      row.perplexity_ratio = *row.perplexity / *result.base_perplexity;
    }
  }
  return result;
}

}  // namespace eesched::accel
