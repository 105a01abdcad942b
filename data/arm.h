#pragma once
// The arm catalog: the names, components and properties of every acceleration combination,
// without LibTorch (the coordinator and the selector need them; accel/ implements them).
//
// Grammar: `plain` (no KV cache) or `kv` followed by any of `+int8`, `+pruneNN` (NN = percent of
// FFN neurons removed, 5..90), `+specK` (K = draft tokens per step, 1..16, drafted by a separate
// small model) or `+qspecK` (self-speculative: the target's own int8 weights draft K tokens and
// the f32 target verifies them, so the output stays exactly the target's). Components may be
// written in any order; the canonical name orders them kv, int8, prune, spec: `kv+int8+spec4`.
// Every component kind, its pattern, order, exclusions and effects are rows of one table
// (data/arm_components.h); the parser reads only the table.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/arm_components.h"
#include "data/task.h"

namespace eesched::data {

struct Arm {
  std::string name;  // canonical
  bool kv_cache = false;
  // Its lossy components in canonical order, '+'-joined ("int8+prune30"): what the model's
  // measured quality of this arm is keyed by (data/quality.h). Empty for a lossless arm.
  std::string lossy_key;
  bool separate_draft = false;  // some component drafts with a separate draft model
  bool batch_one = false;       // some component runs batch 1 only
  // What its components contribute to the features and the roofline, merged.
  ArmEffects effects;

  // Lossless arms give the model's own output: greedy token for token, sampling with the same
  // distribution. int8 and pruning change the model.
  bool lossless() const { return lossy_key.empty(); }
  // A separate draft model; a self-drafting arm builds its draft from the target.
  bool needs_draft() const { return separate_draft; }
  // The components in canonical order: {"plain"} or e.g. {"kv", "int8", "spec4"}.
  std::vector<std::string> components() const;
};

// Parses and canonicalizes an arm name; throws data::Error naming what is wrong.
Arm parse_arm(std::string_view name);

// The arms the sweep and the scheduler consider by default.
const std::vector<Arm>& arm_catalog();

// "all" -> the catalog; otherwise a comma-separated list of arm names.
std::vector<Arm> parse_arm_list(std::string_view list);

// The FFN width structured pruning of `percent`% leaves (accel/pruning.h builds exactly this).
int64_t pruned_intermediate(int64_t intermediate, int percent);

// Why `arm` cannot run `task` (quality floor, missing draft, batch > 1 for speculative), or
// nullopt when it applies. Checks that need the model itself (shapes, a draft's vocabulary) are
// accel/'s, on top of these.
std::optional<std::string> arm_refusal(const Arm& arm, const TaskSpec& task);

}  // namespace eesched::data
