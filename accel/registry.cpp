#include "accel/registry.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include "accel/registry_internal.h"
#include "data/arm_components.h"
#include "runtime/error.h"
#include "runtime/model.h"

namespace eesched::accel {
namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::vector<Factory>& factories() {
  static std::vector<Factory> list{make_kv_cache, make_int8, make_half_precision, make_pruning, make_speculative};
  return list;
}

}  // namespace

std::optional<std::string> Acceleration::refusal(const data::TaskSpec&, const ModelPair&) const { return std::nullopt; }
ModelPair Acceleration::prepare(const ModelPair& models) const { return models; }
void Acceleration::configure(DecodePlan&) const {}

bool Acceleration::lossless() const {
  const auto component = name();
  const auto match = data::match_component(component);
  if (!match) throw runtime::Error("the acceleration '" + component + "' has no row in the component table (data/arm_components.h)");
  return match->kind->lossless;
}

std::optional<int> component_number(const std::string& component, const std::string& prefix) {
  const auto match = data::match_component(component);
  if (!match || match->kind->prefix != prefix) return std::nullopt;
  return match->number;
}

void register_acceleration(Factory factory) {
  std::lock_guard lock(registry_mutex());
  factories().insert(factories().begin(), std::move(factory));
}

std::unique_ptr<Acceleration> make_acceleration(const std::string& component) {
  std::lock_guard lock(registry_mutex());
  for (const auto& f : factories())
    if (auto a = f(component)) return a;
  throw runtime::Error("no acceleration implements the arm component '" + component + "'");
}

namespace {

// The arm's accelerations in the order they apply ("plain" has none).
std::vector<std::unique_ptr<Acceleration>> accelerations_of(const data::Arm& arm) {
  std::vector<std::unique_ptr<Acceleration>> out;
  if (!arm.kv_cache) return out;
  for (const auto& c : arm.components()) out.push_back(make_acceleration(c));
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->stage() < b->stage(); });
  return out;
}

}  // namespace

std::optional<std::string> arm_refusal(const data::Arm& arm, const data::TaskSpec& task, const ModelPair& models) {
  if (!models.target) throw runtime::Error("arm_refusal: no target model");
  if (auto why = data::arm_refusal(arm, task)) return why;
  for (const auto& a : accelerations_of(arm))
    if (auto why = a->refusal(task, models)) return why;
  return std::nullopt;
}

PreparedArm build_arm(const data::Arm& arm, const ModelPair& base) {
  if (!base.target) throw runtime::Error("build_arm: no target model");
  const auto start = std::chrono::steady_clock::now();
  PreparedArm out{arm, base, {}, 0.0};
  for (const auto& a : accelerations_of(arm)) {
    out.models = a->prepare(out.models);
    a->configure(out.plan);
  }
  out.prepare_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

std::vector<std::pair<data::Arm, std::optional<std::string>>> applicable_arms(const std::vector<data::Arm>& arms,
                                                                              const data::TaskSpec& task,
                                                                              const ModelPair& models) {
  std::vector<std::pair<data::Arm, std::optional<std::string>>> out;
  for (const auto& arm : arms) out.emplace_back(arm, arm_refusal(arm, task, models));
  return out;
}

}  // namespace eesched::accel
