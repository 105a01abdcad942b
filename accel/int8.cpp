#include "accel/int8.h"

#include <c10/core/InferenceMode.h>

#include "accel/registry_internal.h"

namespace eesched::accel {

runtime::LlamaModel quantize_int8(const runtime::LlamaModel& model) {
  c10::InferenceMode guard;
  return runtime::LlamaModel(model.config(), model.weights(), [](const std::string&) { return runtime::WeightFormat::Int8; });
}

namespace {

class Int8Weights final : public Acceleration {
 public:
  std::string name() const override { return "int8"; }
  int stage() const override { return kStageFormat; }
  // The target only: a draft is small enough that its speed is dispatch, not bytes.
  ModelPair prepare(const ModelPair& models) const override {
    ModelPair out = models;
    out.target = std::make_shared<const runtime::LlamaModel>(quantize_int8(*models.target));
    return out;
  }
};

}  // namespace

std::unique_ptr<Acceleration> make_int8(const std::string& component) {
  if (!component_number(component, "int8")) return nullptr;
  return std::make_unique<Int8Weights>();
}

}  // namespace eesched::accel
