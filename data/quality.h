#pragma once
// The measured quality of lossy weight transforms, and the bound a `tolerant` task sets.
//
// A lossy arm changes the model (int8 weights, FFN pruning); decoding accelerations (the KV
// cache, speculative decoding, a self-drafting int8 copy) do not. So quality belongs to the
// transform, keyed by the arm's lossy components in canonical order ("int8", "prune20",
// "int8+prune20"): `kv+int8+spec4` is as good as `kv+int8`. The model owner measures it on
// held-out text against the lossless model (`eesched measure-quality`, or `encrypt-model`) and
// ships it in the model directory; workers report it at registration, the store keeps it with
// the model, and the coordinator, the sweep, replay and cross-validation admit an arm to a
// tolerant task only when its measured perplexity ratio is within the task's bound.
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "data/arm.h"
#include "data/task.h"

namespace eesched::data {

struct ArmQuality {
  double ppl_ratio = 0;       // perplexity of the transformed model / the lossless model's, held-out text
  double top1_agreement = 0;  // fraction of positions whose argmax next token equals the lossless model's
  bool operator==(const ArmQuality&) const = default;
};

// Lossy transform key ("int8", "prune30", "int8+prune30") -> its measurement.
using QualityTable = std::map<std::string, ArmQuality>;

// The key of an arm's lossy components; empty for a lossless arm.
std::string quality_key(const Arm& arm);

// Why `arm` may not serve `task` given the model's measured qualities, or nullopt when it may:
// lossless arms always may (the exact/tolerant rule itself is arm_refusal's); a lossy arm needs
// a measurement whose perplexity ratio is within task.max_ppl_ratio.
std::optional<std::string> quality_refusal(const Arm& arm, const TaskSpec& task, const QualityTable& measured);

// Both rules an arm must pass to serve `task` on a model with these measurements: arm_refusal
// (model-free capability and the exact/tolerant rule) and quality_refusal. The one check the
// coordinator, the sweep, replay and cross-validation share.
std::optional<std::string> admission_refusal(const Arm& arm, const TaskSpec& task, const QualityTable& measured);

// {"int8": {"ppl_ratio": 1.003, "top1_agreement": 0.97}, ...}; from_json refuses a ratio that is
// not a finite positive number or an agreement outside [0, 1], naming the key.
nlohmann::json quality_to_json(const QualityTable& table);
QualityTable quality_from_json(const nlohmann::json& j);

}  // namespace eesched::data
