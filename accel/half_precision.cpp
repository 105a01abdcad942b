#include "accel/half_precision.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "accel/registry_internal.h"
#include "runtime/error.h"

namespace eesched::accel {

runtime::LlamaModel to_half_precision(const runtime::LlamaModel& model, runtime::WeightFormat format) {
  if (format != runtime::WeightFormat::BF16 && format != runtime::WeightFormat::F16)
    throw runtime::Error("to_half_precision: the format must be bf16 or f16");
  c10::InferenceMode guard;
  const auto weights = model.weights();
  if (format == runtime::WeightFormat::F16) {
    // f16 keeps 10 mantissa bits but only 5 exponent bits: a weight beyond 65504 would become
    // infinity, which no quality measurement should have to discover.
    for (const auto& [name, t] : weights.named())
      if (t.abs().max().item<double>() > 65504.0)
        throw runtime::Error("f16: weight '" + name + "' exceeds f16's range (65504); use bf16");
  }
  return runtime::LlamaModel(model.config(), weights, [format](const std::string&) { return format; });
}

namespace {

class HalfPrecisionWeights final : public Acceleration {
 public:
  HalfPrecisionWeights(std::string name, runtime::WeightFormat format) : name_(std::move(name)), format_(format) {}
  std::string name() const override { return name_; }
  int stage() const override { return kStageFormat; }
  // Rounding a model that is already 16-bit again would change nothing it streams (bf16) or lose
  // range (bf16 to f16): kv already runs it as stored.
  std::optional<std::string> refusal(const data::TaskSpec&, const ModelPair& models) const override {
    if (models.target->dtype() != at::kFloat)
      return "the model is already " + models.target->dtype_label() + ": kv streams its weights as stored";
    return std::nullopt;
  }
  // The target only, as int8: a draft is small enough that its speed is dispatch, not bytes.
  ModelPair prepare(const ModelPair& models) const override {
    ModelPair out = models;
    out.target = std::make_shared<const runtime::LlamaModel>(to_half_precision(*models.target, format_));
    return out;
  }

 private:
  std::string name_;
  runtime::WeightFormat format_;
};

}  // namespace

std::unique_ptr<Acceleration> make_half_precision(const std::string& component) {
  if (component_number(component, "bf16")) return std::make_unique<HalfPrecisionWeights>("bf16", runtime::WeightFormat::BF16);
  if (component_number(component, "f16")) return std::make_unique<HalfPrecisionWeights>("f16", runtime::WeightFormat::F16);
  return nullptr;
}

}  // namespace eesched::accel
