#pragma once
// Where accelerations are registered and arms are built. Adding an acceleration: describe its
// component kind once, as a row of data/arm_components.cpp (name pattern, lossless, exclusions,
// refusal rules, feature and roofline effects: what the coordinator reads without LibTorch);
// implement Acceleration in its own accel/ file, with a factory that recognizes its components
// through that table (component_number in registry_internal.h); add the factory to the built-in
// list in registry.cpp (or register_acceleration it). The parser, the features and the runner
// stay as they are (README, "Accelerations and arms").
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accel/acceleration.h"
#include "data/arm.h"

namespace eesched::accel {

// Makes the acceleration for an arm component ("int8", "spec4"), or null if it is not its kind.
using Factory = std::function<std::unique_ptr<Acceleration>(const std::string& component)>;

// Adds a factory (e.g. an out-of-tree plugin) ahead of the built-in ones.
void register_acceleration(Factory factory);

// The acceleration for a component; throws runtime::Error when no factory knows it.
std::unique_ptr<Acceleration> make_acceleration(const std::string& component);

// An arm ready to run: its prepared models and decode plan.
struct PreparedArm {
  data::Arm arm;
  ModelPair models;
  DecodePlan plan;
  double prepare_seconds = 0;
};

// Why `arm` cannot run `task` on these models (data's rules, then each acceleration's), or
// nullopt when it applies.
std::optional<std::string> arm_refusal(const data::Arm& arm, const data::TaskSpec& task, const ModelPair& models);

// Prepares the arm's models from the base ones, component by component in stage order.
PreparedArm build_arm(const data::Arm& arm, const ModelPair& base);

// The arms of `arms` that apply, each with nullopt, or the reason it does not.
std::vector<std::pair<data::Arm, std::optional<std::string>>> applicable_arms(const std::vector<data::Arm>& arms,
                                                                              const data::TaskSpec& task,
                                                                              const ModelPair& models);

}  // namespace eesched::accel
