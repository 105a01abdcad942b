#include "data/roofline.h"

#include <algorithm>
#include <cmath>

namespace eesched::data {
namespace {

// The shapes of one model under an arm's weight transformations.
struct Shape {
  double linear_params = 0;  // every matmul weight, lm_head included (it runs every step)
  double bytes = 0;          // those weights as the arm stores them
  double layers = 0;
  double attention_width = 0;  // heads x head_dim: the width q.k and the weighted sum of v run over
};

// `bytes_per_weight`: bytes per weight of every matmul and the head (unset: the model's own format);
// `prune_percent`: FFN neurons removed.
Shape shape_of(const ModelRow& m, std::optional<double> bytes_per_weight, int prune_percent) {
  const double h = static_cast<double>(m.hidden), layers = static_cast<double>(m.layers);
  // An explicit head_dim (Qwen3: 128 with hidden 1024 and 16 heads) makes q and o wider than
  // the residual stream; without one, heads x head_dim is the hidden size.
  const bool explicit_head_dim = m.head_dim > 0 && m.head_dim * m.heads != m.hidden;
  const double head_dim = explicit_head_dim ? static_cast<double>(m.head_dim) : m.heads > 0 ? h / static_cast<double>(m.heads) : h;
  const double q_dim = explicit_head_dim ? head_dim * static_cast<double>(m.heads) : h;
  const double kv_dim = head_dim * static_cast<double>(m.kv_heads > 0 ? m.kv_heads : m.heads);
  const double ffn = static_cast<double>(pruned_intermediate(m.intermediate, prune_percent));
  // q, k, v, o, the FFN, and the head
  const double linear = layers * (2 * h * q_dim + 2 * h * kv_dim + 3 * h * ffn) + static_cast<double>(m.vocab) * h;
  const double own_bytes = m.parameters > 0 ? static_cast<double>(m.weight_bytes) / static_cast<double>(m.parameters) : 4.0;
  Shape s;
  s.linear_params = linear;
  s.bytes = (bytes_per_weight ? *bytes_per_weight : own_bytes) * linear;
  s.layers = layers;
  s.attention_width = q_dim;
  return s;
}

// One forward pass over `tokens` new positions per sequence, `batch` sequences, attending to
// `context` positions on average: the slower of streaming the weights and computing.
double pass_ms(const Shape& s, double tokens, double batch, double context, const HardwareProfile& hw) {
  const double flops = batch * tokens * (2 * s.linear_params + 4 * s.layers * s.attention_width * context);
  const double compute_ms = hw.gflops > 0 ? flops / (hw.gflops * 1e6) : 0;
  const double memory_ms = hw.copy_gbps > 0 ? s.bytes / (hw.copy_gbps * 1e6) : 0;
  return std::max(compute_ms, memory_ms);
}

}  // namespace

RooflineEstimate estimate_roofline(const TaskSpec& task, const ModelRow& model, const ModelRow* draft, const HardwareProfile& hw,
                                   const Arm& arm, std::optional<double> acceptance) {
  const auto& fx = arm.effects;  // the roofline terms of the arm's components (data/arm_components.h)
  const Shape target = shape_of(model, fx.weight_bytes, fx.ffn_prune_percent);
  const double prompt = static_cast<double>(std::max<int64_t>(1, task.prompt_tokens));
  const double fresh = static_cast<double>(std::max<int64_t>(1, task.generation.max_new_tokens));
  const double batch = static_cast<double>(std::max<int64_t>(1, task.batch));
  const double mid_context = prompt + fresh / 2;
  RooflineEstimate e;
  e.weight_mb = target.bytes / 1e6;
  e.step_ms = pass_ms(target, 1, batch, mid_context, hw);
  e.prefill_ms = pass_ms(target, prompt, batch, prompt / 2, hw);
  if (!arm.kv_cache) {
    // No cache: every new token recomputes the whole sequence so far.
    e.forward_passes = fresh;
    e.total_ms = fresh * pass_ms(target, mid_context, batch, mid_context / 2, hw);
    return e;
  }
  if (fx.draft_tokens > 0 && (draft || fx.self_draft())) {
    // Each iteration: k draft steps, one target pass verifying k + 1 positions; it yields
    // (1 - a^(k+1)) / (1 - a) tokens on average when each draft token is accepted with rate a.
    const double k = fx.draft_tokens;
    const double a = std::clamp(acceptance.value_or(fx.prior_acceptance.value_or(kPriorAcceptance)), 0.0, 0.999);
    const double per_iteration = (1 - std::pow(a, k + 1)) / (1 - a);
    const double iterations = std::max(0.0, fresh - 1) / per_iteration;
    const Shape d = fx.self_draft() ? shape_of(model, fx.self_draft_weight_bytes, fx.ffn_prune_percent) : shape_of(*draft, std::nullopt, 0);
    e.prefill_ms += pass_ms(d, prompt, batch, prompt / 2, hw);
    const double iteration_ms = pass_ms(target, k + 1, batch, mid_context, hw) + k * pass_ms(d, 1, batch, mid_context, hw);
    e.forward_passes = 2 + iterations * (1 + k);
    e.total_ms = e.prefill_ms + iterations * iteration_ms;
    return e;
  }
  e.forward_passes = fresh;
  e.total_ms = e.prefill_ms + (fresh - 1) * e.step_ms;
  return e;
}

}  // namespace eesched::data
