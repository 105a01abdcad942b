#pragma once
// The acceleration plugin interface, in the spirit of ONNX Runtime's execution providers: each
// acceleration says when it applies, whether it is lossless, and how it transforms the models
// an arm runs or the way the arm decodes. An arm (data/arm.h) is a combination of them; workers
// hold only encrypted models, and every acceleration commutes with EE:
// accel(encrypt(M)) == encrypt(accel(M)).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "data/task.h"
#include "runtime/generate.h"

namespace eesched::runtime {
class LlamaModel;
}

namespace eesched::accel {

// The models an arm runs. Shared and immutable, so a cache can hand one prepared variant to
// many tasks. `*_key` is the fingerprint of the EE key a model is encrypted under ("" for
// plaintext): a draft must share its target's vocabulary permutation.
struct ModelPair {
  std::shared_ptr<const runtime::LlamaModel> target;
  std::shared_ptr<const runtime::LlamaModel> draft;  // null when none is available
  std::string target_key;
  std::string draft_key;
};

// How an arm decodes.
struct DecodePlan {
  bool kv_cache = false;
  int spec_k = 0;  // > 0: speculative decoding with this many draft tokens per step
};

class Acceleration {
 public:
  virtual ~Acceleration() = default;
  // The arm component it implements: "kv", "int8", "prune30", "spec4".
  virtual std::string name() const = 0;
  // Default: what the component's row in data/arm_components.h says (it is described once).
  virtual bool lossless() const;
  // Order of application: transforms that change shapes (pruning) run before those that change
  // storage formats (int8), which run before decoding hooks.
  virtual int stage() const = 0;
  // Why it cannot run this task on these models, or nullopt. The model-free rules (quality
  // floor, draft named, batch) are data::arm_refusal's; these are the ones that need the models.
  virtual std::optional<std::string> refusal(const data::TaskSpec& task, const ModelPair& models) const;
  // A new variant of the models (the inputs are shared and never modified). Default: unchanged.
  virtual ModelPair prepare(const ModelPair& models) const;
  // Adjusts how the arm decodes. Default: nothing.
  virtual void configure(DecodePlan& plan) const;
};

}  // namespace eesched::accel
