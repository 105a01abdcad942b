#include "data/quality.h"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "data/error.h"

namespace eesched::data {

// The lossy components in canonical order, as parse_arm derived them from the component table.
std::string quality_key(const Arm& arm) { return arm.lossy_key; }

std::optional<std::string> quality_refusal(const Arm& arm, const TaskSpec& task, const QualityTable& measured) {
  const std::string key = quality_key(arm);
  if (key.empty()) return std::nullopt;
  const auto it = measured.find(key);
  if (it == measured.end()) return arm.name + " has no measured quality on this model (measure-quality)";
  if (!(it->second.ppl_ratio <= task.max_ppl_ratio)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s costs a perplexity ratio of %.3f, beyond the task's bound %.3f", arm.name.c_str(),
                  it->second.ppl_ratio, task.max_ppl_ratio);
    return std::string(buf);
  }
  return std::nullopt;
}

std::optional<std::string> admission_refusal(const Arm& arm, const TaskSpec& task, const QualityTable& measured) {
  if (auto why = arm_refusal(arm, task)) return why;
  return quality_refusal(arm, task, measured);
}

nlohmann::json quality_to_json(const QualityTable& table) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, q] : table) j[key] = {{"ppl_ratio", q.ppl_ratio}, {"top1_agreement", q.top1_agreement}};
  return j;
}

QualityTable quality_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("quality must be an object of lossy transforms");
  QualityTable out;
  for (const auto& [key, v] : j.items()) {
    if (!v.is_object() || !v.contains("ppl_ratio") || !v["ppl_ratio"].is_number() || !v.contains("top1_agreement") ||
        !v["top1_agreement"].is_number())
      throw Error("quality '" + key + "' needs numeric ppl_ratio and top1_agreement");
    ArmQuality q{v["ppl_ratio"].get<double>(), v["top1_agreement"].get<double>()};
    if (!std::isfinite(q.ppl_ratio) || q.ppl_ratio <= 0) throw Error("quality '" + key + "': ppl_ratio must be a positive number");
    if (!(q.top1_agreement >= 0 && q.top1_agreement <= 1)) throw Error("quality '" + key + "': top1_agreement must be in [0, 1]");
    // The key must be what quality_key() makes of some lossy arm, so lookups cannot silently miss.
    Arm arm;
    try {
      arm = parse_arm("kv+" + key);
    } catch (const Error&) {
      throw Error("quality key '" + key + "' is not a lossy transform (" + lossy_components() + ", or several joined by '+')");
    }
    if (quality_key(arm) != key) throw Error("quality key '" + key + "' is not canonical (want '" + quality_key(arm) + "')");
    out[key] = q;
  }
  return out;
}

}  // namespace eesched::data
