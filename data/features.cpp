#include "data/features.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "data/error.h"
#include "data/roofline.h"

namespace eesched::data {
namespace {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

double log2p(double x) { return std::log2(1.0 + std::max(0.0, x)); }

double head_dim(const ModelRow& m) {
  if (m.head_dim > 0) return static_cast<double>(m.head_dim);
  return m.heads > 0 ? static_cast<double>(m.hidden) / static_cast<double>(m.heads) : kMissing;
}

double dtype_bytes(const std::string& dtype) {
  if (dtype == "f32") return 4;
  if (dtype == "bf16" || dtype == "f16") return 2;
  return kMissing;
}

}  // namespace

const std::vector<std::string>& feature_names() {
  static const std::vector<std::string> names = {
      // the task
      "prompt_tokens",        // prompt length
      "log2_prompt_tokens",   // the same on a log scale (prefill cost spans 4..1024)
      "new_tokens",           // max_new_tokens
      "log2_new_tokens",
      "batch",
      "greedy",               // 1 when temperature <= 0
      "temperature",
      "top_p",
      "quality_exact",        // 1: only lossless arms allowed
      // the model
      "parameters_m",         // millions of parameters
      "layers",
      "hidden",
      "intermediate",
      "heads",
      "kv_heads",
      "vocab",
      "weight_mb",            // bytes of weights read per token, MB
      "encrypted",
      "draft_parameters_m",   // NaN without a draft
      "draft_layers",         // NaN without a draft
      // the hardware
      "hw_threads",
      "hw_gflops",
      "hw_copy_gbps",
      "hw_mem_free_gb",
      "memory_bound_ms",      // weight_mb / copy GB/s: the bandwidth floor of one decoding step
      "compute_bound_ms",     // 2 * parameters * batch / GFLOP/s: the compute floor of one step
      // the arm
      "arm_kv_cache",
      "arm_int8",
      "arm_prune_percent",
      "arm_spec_k",
      "arm_lossless",
      // history
      "landmark_acceptance",  // measured acceptance rate of this draft/target pair; NaN if unknown
      // the roofline estimate of the arm on this task and hardware (data/roofline.h), schema 2
      "arm_weight_mb",        // target weights streamed per decoding step under the arm
      "arm_step_ms",          // one decoding step, the slower of bandwidth and compute
      "arm_prefill_ms",
      "arm_forward_passes",   // sequential passes: dispatch overhead, which dominates small models
      "log2_arm_roofline_ms", // the whole task
      "arm_roofline_vs_kv",   // that estimate over kv's on the same task: the arm's expected gain
      // the matmul regime (runtime/gemv.h): 1 row is a gemv, up to 16 rows stream the
      // weights once, more go tile by tile (int8 widens each tile to f32 first)
      "prefill_rows",         // prompt_tokens x batch
      "decode_rows",          // rows of one target decoding step: batch x (1 + spec_k)
      // schema 3: self-speculative arms (qspecK), whose draft is the target's int8 copy
      "arm_self_draft",
      "landmark_self_acceptance",  // measured acceptance rate of this target drafting itself; NaN if unknown
      // schema 4: the model's family and number format (ModelRow's architecture, head_dim, dtype).
      // Llama and Mistral compute alike (rope scaling changes no cost), so the architecture
      // enters as what it adds to the computation.
      "head_dim",             // attention head width: the config's head_dim, else hidden / heads
      "dtype_bytes",          // bytes per weight of the format the model computes in (f32 4, bf16/f16 2); NaN if unknown
      "arch_qkv_bias",        // 1: q/k/v projections carry biases (qwen2)
      "arch_qk_norm",         // 1: per-head RMSNorm on q and k before RoPE (qwen3)
      // schema 5: the hardware and the arm relative to the machine's speed, which transfer to a
      // machine history has not seen (absolute GFLOP/s and GB/s identify the few it has)
      "hw_flops_per_byte",    // GFLOP/s over copy GB/s: the machine's balance (the roofline's ridge point)
      "kv_compute_share",     // compute floor / (compute + bandwidth floors) of one kv decoding step
      "kv_prefill_share",     // kv's estimated prefill over its whole task: prefill- or decode-dominated
      "arm_step_vs_kv",       // the arm's decoding step over kv's (int8 streams fewer bytes, spec more rows)
      "arm_prefill_vs_kv",
      "arm_passes_vs_kv",     // sequential forward passes over kv's (speculative arms: fewer target steps, plus the draft's)
  };
  return names;
}

const std::vector<std::string>& machine_scale_features() {
  static const std::vector<std::string> names = {"hw_gflops",    "hw_copy_gbps",   "hw_mem_free_gb",       "memory_bound_ms",
                                                 "compute_bound_ms", "arm_step_ms", "arm_prefill_ms", "log2_arm_roofline_ms"};
  return names;
}

std::vector<double> compute_features(const FeatureInputs& in) {
  if (!in.task || !in.model || !in.hardware || !in.arm) throw Error("compute_features: task, model, hardware and arm are required");
  const auto& t = *in.task;
  const auto& m = *in.model;
  const auto& hw = *in.hardware;
  const auto& a = *in.arm;
  const auto& fx = a.effects;  // what the arm's components contribute (data/arm_components.h)
  const double prompt = static_cast<double>(t.prompt_tokens), fresh = static_cast<double>(t.generation.max_new_tokens);
  const double weight_mb = static_cast<double>(m.weight_bytes) / 1e6;
  const double params_m = static_cast<double>(m.parameters) / 1e6;
  std::vector<double> f = {
      prompt,
      log2p(prompt),
      fresh,
      log2p(fresh),
      static_cast<double>(t.batch),
      t.greedy() ? 1.0 : 0.0,
      t.generation.temperature,
      t.generation.top_p,
      t.quality == Quality::Exact ? 1.0 : 0.0,
      params_m,
      static_cast<double>(m.layers),
      static_cast<double>(m.hidden),
      static_cast<double>(m.intermediate),
      static_cast<double>(m.heads),
      static_cast<double>(m.kv_heads),
      static_cast<double>(m.vocab),
      weight_mb,
      m.encrypted ? 1.0 : 0.0,
      in.draft ? static_cast<double>(in.draft->parameters) / 1e6 : kMissing,
      in.draft ? static_cast<double>(in.draft->layers) : kMissing,
      static_cast<double>(hw.threads),
      hw.gflops,
      hw.copy_gbps,
      static_cast<double>(hw.mem_free_bytes) / 1e9,
      hw.copy_gbps > 0 ? weight_mb / hw.copy_gbps : kMissing,  // MB / (GB/s) = ms
      hw.gflops > 0 ? 2.0 * params_m * 1e6 * static_cast<double>(t.batch) / (hw.gflops * 1e9) * 1e3 : kMissing,
      a.kv_cache ? 1.0 : 0.0,
      fx.feature(ArmFeature::Int8),
      fx.feature(ArmFeature::PrunePercent),
      fx.feature(ArmFeature::SpecK),
      a.lossless() ? 1.0 : 0.0,
      in.landmarks.acceptance_rate ? *in.landmarks.acceptance_rate : kMissing,
  };
  const auto roofline = estimate_roofline(t, m, in.draft, hw, a, in.landmarks.acceptance_for(a));
  static const Arm kv_arm = parse_arm("kv");
  const auto kv = estimate_roofline(t, m, in.draft, hw, kv_arm, in.landmarks.acceptance_rate);
  f.insert(f.end(), {roofline.weight_mb, roofline.step_ms, roofline.prefill_ms, roofline.forward_passes,
                     std::log2(std::max(1e-6, roofline.total_ms)),
                     kv.total_ms > 0 ? roofline.total_ms / kv.total_ms : kMissing,
                     prompt * static_cast<double>(t.batch),
                     static_cast<double>(t.batch) * (1.0 + (a.kv_cache ? fx.draft_tokens : 0)),
                     fx.feature(ArmFeature::SelfDraft),
                     in.landmarks.self_acceptance_rate ? *in.landmarks.self_acceptance_rate : kMissing,
                     head_dim(m),
                     dtype_bytes(m.dtype),
                     m.architecture == "qwen2" ? 1.0 : 0.0,
                     m.architecture == "qwen3" ? 1.0 : 0.0});
  const auto ratio = [](double a, double b) { return b > 0 ? a / b : kMissing; };
  const double memory_floor = hw.copy_gbps > 0 ? weight_mb / hw.copy_gbps : kMissing;
  const double compute_floor = hw.gflops > 0 ? 2.0 * params_m * 1e6 * static_cast<double>(t.batch) / (hw.gflops * 1e9) * 1e3 : kMissing;
  f.insert(f.end(), {ratio(hw.gflops, hw.copy_gbps), ratio(compute_floor, compute_floor + memory_floor),
                     ratio(kv.prefill_ms, kv.total_ms), ratio(roofline.step_ms, kv.step_ms), ratio(roofline.prefill_ms, kv.prefill_ms),
                     ratio(roofline.forward_passes, kv.forward_passes)});
  if (f.size() != feature_names().size()) throw Error("compute_features: the vector and feature_names() disagree");
  return f;
}

}  // namespace eesched::data
