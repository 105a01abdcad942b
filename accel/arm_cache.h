#pragma once
// Workers build arms lazily and keep them: the first task that needs `kv+int8` on a model
// quantizes it; later ones reuse the prepared variant.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "accel/registry.h"

namespace eesched::accel {

class ArmCache {
 public:
  // The prepared arm for (model_id, arm), built from `base` on first use. model_id names the
  // base models (e.g. their fingerprints); thread-safe, and an arm is built once even when
  // several threads ask at the same time.
  std::shared_ptr<const PreparedArm> get(const std::string& model_id, const data::Arm& arm, const ModelPair& base);

  std::size_t size() const;
  void clear();

 private:
  struct Entry {
    std::once_flag once;
    std::shared_ptr<const PreparedArm> arm;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Entry>> entries_;
};

}  // namespace eesched::accel
