#pragma once
// The feature vector: ONE definition of what the selector sees about a (task, model, hardware,
// arm) combination, used by the sweep, the trainer, replay and the coordinator alike. Names and
// order are a contract (a selector file records them and refuses a mismatch): append new
// features at the end and bump kFeatureSchemaVersion.
//
// Missing values (no draft, no measured acceptance yet) are NaN, which XGBoost treats as
// missing, rather than a made-up number.
#include <optional>
#include <string>
#include <vector>

#include "data/arm.h"
#include "data/hardware.h"
#include "data/store.h"
#include "data/task.h"

namespace eesched::data {

inline constexpr int kFeatureSchemaVersion = 5;

// What history says about this combination, where it knows.
struct Landmarks {
  std::optional<double> acceptance_rate;       // measured for this draft/target pair (specK arms)
  std::optional<double> self_acceptance_rate;  // measured for this target drafting itself (qspecK arms)
  // The one that applies to `arm`.
  std::optional<double> acceptance_for(const Arm& arm) const { return arm.effects.self_draft() ? self_acceptance_rate : acceptance_rate; }
};

struct FeatureInputs {
  const TaskSpec* task = nullptr;
  const ModelRow* model = nullptr;
  const ModelRow* draft = nullptr;  // optional
  const HardwareProfile* hardware = nullptr;
  const Arm* arm = nullptr;
  Landmarks landmarks;
};

// The names, in order (documented one by one in features.cpp).
const std::vector<std::string>& feature_names();

// The features that scale with a machine's absolute speed (its probes, and times estimated from
// them): on a history of a few machines they identify a worker rather than describe it, so trees
// splitting on them do not transfer to the next machine. The selector's arm-choice model leaves
// them out (scheduler/selector.h); the ratios and thread count describe the same hardware.
const std::vector<std::string>& machine_scale_features();

// The vector, in feature_names() order. Deterministic: the same inputs give the same bits.
std::vector<double> compute_features(const FeatureInputs& in);

}  // namespace eesched::data
