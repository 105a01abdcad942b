#include "data/arm.h"

#include <charconv>
#include <cmath>

#include "data/error.h"

namespace eesched::data {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "spec4" with prefix "spec" -> 4 when it lies in [lo, hi]; nullopt when the prefix differs.
std::optional<int> numbered(std::string_view part, std::string_view prefix, int lo, int hi, std::string_view arm) {
  if (part.substr(0, prefix.size()) != prefix) return std::nullopt;
  const auto digits = part.substr(prefix.size());
  int value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value < lo || value > hi)
    throw Error("arm '" + std::string(arm) + "': '" + std::string(part) + "' needs a number in " + std::to_string(lo) + ".." +
                std::to_string(hi) + " after '" + std::string(prefix) + "'");
  return value;
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
  std::vector<std::string> out{"kv"};
  if (int8) out.emplace_back("int8");
  if (prune_percent) out.push_back("prune" + std::to_string(prune_percent));
  if (spec_k) out.push_back((self_draft ? "qspec" : "spec") + std::to_string(spec_k));
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
  bool seen_kv = false;
  std::string_view rest = name;
  while (true) {
    const auto plus = rest.find('+');
    const auto part = rest.substr(0, plus);
    auto twice = [&](bool already) {
      if (already) throw Error("arm '" + std::string(name) + "' names '" + std::string(part) + "' twice");
    };
    // One drafting scheme per arm: specK (a separate model) or qspecK (the target's int8 copy).
    auto drafted = [&](bool self) {
      if (arm.spec_k == 0) return;
      if (arm.self_draft == self) twice(true);
      throw Error("arm '" + std::string(name) + "' drafts twice: specK drafts with a separate model, qspecK with the target's own int8 weights");
    };
    if (part == "kv") {
      twice(seen_kv);
      seen_kv = true;
    } else if (part == "int8") {
      twice(arm.int8);
      arm.int8 = true;
    } else if (auto p = numbered(part, "prune", 5, 90, name)) {
      twice(arm.prune_percent != 0);
      arm.prune_percent = *p;
    } else if (auto k = numbered(part, "spec", 1, 16, name)) {
      drafted(false);
      arm.spec_k = *k;
    } else if (auto q = numbered(part, "qspec", 1, 16, name)) {
      drafted(true);
      arm.spec_k = *q;
      arm.self_draft = true;
    } else if (part == "plain") {
      throw Error("arm '" + std::string(name) + "': 'plain' (no KV cache) combines with nothing");
    } else {
      throw Error("arm '" + std::string(name) + "': unknown component '" + std::string(part) +
                  "' (known: plain, kv, int8, pruneNN, specK, qspecK)");
    }
    if (plus == std::string_view::npos) break;
    rest = rest.substr(plus + 1);
  }
  if (arm.self_draft && arm.int8)
    throw Error("arm '" + std::string(name) + "': qspecK drafts with the int8 copy of an f32 target, so it does not combine with int8");
  if (!seen_kv)
    throw Error("arm '" + std::string(name) + "' must include 'kv' (every acceleration builds on the KV cache; 'plain' has none)");
  arm.kv_cache = true;
  std::string canonical;
  for (const auto& c : arm.components()) canonical += (canonical.empty() ? "" : "+") + c;
  arm.name = canonical;
  return arm;
}

const std::vector<Arm>& arm_catalog() {
  static const std::vector<Arm> arms = [] {
    std::vector<Arm> out;
    for (const char* name : {"plain", "kv", "kv+int8", "kv+prune30", "kv+spec2", "kv+spec4", "kv+int8+prune30",
                             "kv+int8+spec4", "kv+qspec6"})
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
  if (arm.spec_k > 0) {
    if (arm.needs_draft() && !task.has_draft()) return arm.name + " needs a draft model and the task names none";
    if (task.batch != 1) return arm.name + " runs batch 1 only (the task has batch " + std::to_string(task.batch) + ")";
  }
  return std::nullopt;
}

int64_t pruned_intermediate(int64_t intermediate, int percent) {
  return intermediate - static_cast<int64_t>(std::llround(static_cast<double>(intermediate) * percent / 100.0));
}

}  // namespace eesched::data
