#pragma once
// How a task generates: its sampling and its limits. ONE type, carried unchanged from the
// client's request through Submit, the store, Assign and the worker into the runtime's
// generation loop (as vLLM carries its SamplingParams), so a field added here reaches every
// stage. Header-only and plain, so the runtime uses it without linking data/.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace eesched::data {

inline constexpr int64_t kMaxNewTokens = int64_t{1} << 20;

struct GenerationParams {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;       // <= 0: greedy (argmax)
  int64_t top_k = 0;              // 0: off
  double top_p = 1.0;             // 1: off
  uint64_t seed = 0;              // the same seed draws the same sample
  std::vector<int64_t> stop_ids;  // a sequence ends at any of these (not emitted); ids as the model sees them

  bool greedy() const { return temperature <= 0.0; }
  bool operator==(const GenerationParams&) const = default;
};

// Why `p` is out of range, naming the field, or nullopt. The wire, the suite reader and the
// runtime all refuse with this one rule.
inline std::optional<std::string> generation_refusal(const GenerationParams& p) {
  if (p.max_new_tokens < 0 || p.max_new_tokens > kMaxNewTokens) return "max_new_tokens must be in [0, 1048576]";
  if (!(p.temperature >= 0) || p.temperature > 100) return "temperature must be in [0, 100]";
  if (p.top_k < 0) return "top_k must not be negative";
  if (!(p.top_p > 0) || p.top_p > 1) return "top_p must be in (0, 1]";
  for (const int64_t id : p.stop_ids)
    if (id < 0) return "stop_ids must hold non-negative ids";
  return std::nullopt;
}

}  // namespace eesched::data
