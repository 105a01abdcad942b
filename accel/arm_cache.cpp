#include "accel/arm_cache.h"

namespace eesched::accel {

std::shared_ptr<const PreparedArm> ArmCache::get(const std::string& model_id, const data::Arm& arm, const ModelPair& base) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard lock(mutex_);
    auto& slot = entries_[{model_id, arm.name}];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
  }
  // Built outside the map's lock: preparing one arm does not stall lookups of others. A build
  // that throws leaves the flag unset, so the next caller retries.
  std::call_once(entry->once, [&] { entry->arm = std::make_shared<const PreparedArm>(build_arm(arm, base)); });
  return entry->arm;
}

std::size_t ArmCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void ArmCache::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

}  // namespace eesched::accel
