// The KV cache as an acceleration: every arm but `plain` builds on it. The cache itself lives in
// the runtime (runtime/model.h); it holds keys and values of the encrypted model, which
// are as encrypted as the model's activations.
#include "accel/registry_internal.h"

namespace eesched::accel {
namespace {

class KvCache final : public Acceleration {
 public:
  std::string name() const override { return "kv"; }
  int stage() const override { return kStageDecode; }
  void configure(DecodePlan& plan) const override { plan.kv_cache = true; }
};

}  // namespace

std::unique_ptr<Acceleration> make_kv_cache(const std::string& component) {
  if (!component_number(component, "kv")) return nullptr;
  return std::make_unique<KvCache>();
}

}  // namespace eesched::accel
