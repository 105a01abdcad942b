#include "data/arm.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "data/error.h"

namespace eesched::data {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Adds one component's effects to the arm's; a term two components set is refused (the table's
// groups and exclusions catch every built-in clash first, with their own reasons).
void merge(ArmEffects& into, const ArmEffects& e, std::string_view arm, const std::string& part) {
  auto clash = [&](std::string_view term) {
    throw Error("arm '" + std::string(arm) + "': '" + part + "' sets " + std::string(term) + ", which another of its components sets too");
  };
  for (std::size_t i = 0; i < kArmFeatureCount; ++i) {
    if (e.features[i] == 0) continue;
    if (into.features[i] != 0) clash(kArmFeatureNames[i]);
    into.features[i] = e.features[i];
  }
  auto take = [&](auto& to, const auto& from, bool set_to, bool set_from, std::string_view term) {
    if (!set_from) return;
    if (set_to) clash(term);
    to = from;
  };
  take(into.weight_bytes, e.weight_bytes, into.weight_bytes.has_value(), e.weight_bytes.has_value(), "the weight format");
  take(into.ffn_prune_percent, e.ffn_prune_percent, into.ffn_prune_percent != 0, e.ffn_prune_percent != 0, "the FFN width");
  take(into.draft_tokens, e.draft_tokens, into.draft_tokens != 0, e.draft_tokens != 0, "the draft tokens per step");
  take(into.self_draft_weight_bytes, e.self_draft_weight_bytes, into.self_draft_weight_bytes.has_value(),
       e.self_draft_weight_bytes.has_value(), "the self-draft's weight format");
  take(into.prior_acceptance, e.prior_acceptance, into.prior_acceptance.has_value(), e.prior_acceptance.has_value(),
       "the prior acceptance rate");
}

}  // namespace

const char* quality_name(Quality q) { return q == Quality::Exact ? "exact" : "tolerant"; }

Quality parse_quality(const std::string& name) {
  if (name == "exact") return Quality::Exact;
  if (name == "tolerant") return Quality::Tolerant;
  throw Error("quality must be 'exact' or 'tolerant', not '" + name + "'");
}

std::vector<std::string> Arm::components() const {
  if (!kv_cache) return {"plain"};
  std::vector<std::string> out;
  std::string_view rest = name;
  while (true) {
    const auto plus = rest.find('+');
    out.emplace_back(rest.substr(0, plus));
    if (plus == std::string_view::npos) break;
    rest = rest.substr(plus + 1);
  }
  return out;
}

Arm parse_arm(std::string_view text) {
  const auto name = trim(text);
  if (name.empty()) throw Error("empty arm name");
  Arm arm;
  if (name == "plain") {
    arm.name = "plain";
    return arm;
  }
  const std::string arm_name(name);
  const auto kinds = component_table();  // one snapshot for the whole name
  std::vector<ComponentMatch> parts;
  std::string_view rest = name;
  while (true) {
    const auto plus = rest.find('+');
    const auto part = rest.substr(0, plus);
    if (part == "plain") throw Error("arm '" + arm_name + "': 'plain' (no KV cache) combines with nothing");
    auto match = match_component(*kinds, part, name);
    if (!match) throw Error("arm '" + arm_name + "': unknown component '" + std::string(part) + "' (known: " + known_components() + ")");
    for (const auto& seen : parts) {
      if (seen.kind == match->kind) throw Error("arm '" + arm_name + "' names '" + std::string(part) + "' twice");
      if (!seen.kind->group.empty() && seen.kind->group == match->kind->group)
        throw Error("arm '" + arm_name + "' " + match->kind->group_conflict);
    }
    parts.push_back(std::move(*match));
    if (plus == std::string_view::npos) break;
    rest = rest.substr(plus + 1);
  }
  for (const auto& p : parts)
    for (const auto& exclusion : p.kind->excludes)  // (clang 14 cannot capture a structured binding)
      if (std::any_of(parts.begin(), parts.end(), [&](const ComponentMatch& q) { return q.kind->prefix == exclusion.first; }))
        throw Error("arm '" + arm_name + "': " + exclusion.second);
  if (std::none_of(parts.begin(), parts.end(), [](const ComponentMatch& p) { return p.kind->kv_cache; }))
    throw Error("arm '" + arm_name + "' must include 'kv' (every acceleration builds on the KV cache; 'plain' has none)");
  // Canonical order: the KV cache first, then by the table's order (ties by prefix).
  std::sort(parts.begin(), parts.end(), [](const ComponentMatch& a, const ComponentMatch& b) {
    return std::make_tuple(!a.kind->kv_cache, a.kind->order, a.kind->prefix) < std::make_tuple(!b.kind->kv_cache, b.kind->order, b.kind->prefix);
  });
  arm.kv_cache = true;
  for (const auto& p : parts) {
    const auto component = p.name();
    arm.name += (arm.name.empty() ? "" : "+") + component;
    if (!p.kind->lossless) arm.lossy_key += (arm.lossy_key.empty() ? "" : "+") + component;
    arm.separate_draft = arm.separate_draft || p.kind->needs_draft;
    arm.batch_one = arm.batch_one || p.kind->batch_one;
    merge(arm.effects, p.kind->effects(p.number), name, component);
  }
  return arm;
}

const std::vector<Arm>& arm_catalog() {
  static const std::vector<Arm> arms = [] {
    std::vector<Arm> out;
    // kv+bf16 and kv+f16 joined with the sweep that measured them (issue 22); they apply to f32
    // models only (a 16-bit checkpoint's kv already streams 16 bits).
    for (const char* name : {"plain", "kv", "kv+int8", "kv+prune30", "kv+spec2", "kv+spec4", "kv+int8+prune30",
                             "kv+int8+spec4", "kv+qspec6", "kv+bf16", "kv+f16"})
      out.push_back(parse_arm(name));
    return out;
  }();
  return arms;
}

std::vector<Arm> parse_arm_list(std::string_view list) {
  if (trim(list) == "all") return arm_catalog();
  std::vector<Arm> out;
  while (true) {
    const auto comma = list.find(',');
    auto arm = parse_arm(list.substr(0, comma));
    for (const auto& a : out)
      if (a.name == arm.name) throw Error("arm '" + arm.name + "' listed twice");
    out.push_back(std::move(arm));
    if (comma == std::string_view::npos) break;
    list = list.substr(comma + 1);
  }
  return out;
}

std::optional<std::string> arm_refusal(const Arm& arm, const TaskSpec& task) {
  if (task.quality == Quality::Exact && !arm.lossless())
    return "the task asks for exact quality and " + arm.name + " is lossy";
  if (arm.needs_draft() && !task.has_draft()) return arm.name + " needs a draft model and the task names none";
  if (arm.batch_one && task.batch != 1) return arm.name + " runs batch 1 only (the task has batch " + std::to_string(task.batch) + ")";
  return std::nullopt;
}

int64_t pruned_intermediate(int64_t intermediate, int percent) {
  return intermediate - static_cast<int64_t>(std::llround(static_cast<double>(intermediate) * percent / 100.0));
}

}  // namespace eesched::data
