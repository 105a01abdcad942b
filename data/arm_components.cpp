#include "data/arm_components.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <mutex>

#include "data/error.h"

namespace eesched::data {
namespace {

// The drafting schemes share one group: an arm drafts one way or not at all.
const char* kTwoFormats = "stores its weights in two formats: int8, bf16 and f16 each replace the f32 weights";
// So do the weight formats: an arm stores its weights one way.
const char* kDraftsTwice = "drafts twice: specK drafts with a separate model, qspecK with the target's own int8 weights";

// The built-in components. A new acceleration adds its row here (and its implementation in
// accel/).
std::vector<ComponentKind> builtin_components() {
  std::vector<ComponentKind> rows;

  // kv: the KV cache every arm but `plain` builds on; contributes nothing beyond arm_kv_cache.
  ComponentKind kv;
  kv.prefix = "kv";
  kv.order = 0;
  kv.kv_cache = true;
  kv.effects = [](int) { return ArmEffects{}; };
  rows.push_back(std::move(kv));

  // int8: per-output-channel int8 weights for every matmul and the head.
  ComponentKind int8;
  int8.prefix = "int8";
  int8.order = 10;
  int8.group = "format";
  int8.group_conflict = kTwoFormats;
  int8.lossless = false;
  int8.effects = [](int) {
    ArmEffects e;
    e.set(ArmFeature::Int8, 1);
    e.weight_bytes = 1.0;
    return e;
  };
  rows.push_back(std::move(int8));

  // bf16, f16: an f32 model's weights (every matmul and the head) rounded once to 16 bits.
  for (const char* half : {"bf16", "f16"}) {
    ComponentKind k;
    k.prefix = half;
    k.order = 10;
    k.group = "format";
    k.group_conflict = kTwoFormats;
    k.lossless = false;
    k.effects = [](int) {
      ArmEffects e;
      e.weight_bytes = 2.0;
      return e;
    };
    rows.push_back(std::move(k));
  }

  // pruneNN: structured pruning of NN% of every layer's FFN neurons.
  ComponentKind prune;
  prune.prefix = "prune";
  prune.number = ComponentKind::Number{5, 90, "NN"};
  prune.order = 20;
  prune.lossless = false;
  prune.effects = [](int percent) {
    ArmEffects e;
    e.set(ArmFeature::PrunePercent, percent);
    e.ffn_prune_percent = percent;
    return e;
  };
  rows.push_back(std::move(prune));

  // specK: a separate, smaller draft model proposes K tokens per target pass; batch 1.
  ComponentKind spec;
  spec.prefix = "spec";
  spec.number = ComponentKind::Number{1, 16, "K"};
  spec.order = 30;
  spec.group = "draft";
  spec.group_conflict = kDraftsTwice;
  spec.needs_draft = true;
  spec.batch_one = true;
  spec.effects = [](int k) {
    ArmEffects e;
    e.set(ArmFeature::SpecK, k);
    e.draft_tokens = k;
    e.prior_acceptance = kPriorAcceptance;
    return e;
  };
  rows.push_back(std::move(spec));

  // qspecK: self-speculative; the target's own int8 copy drafts K tokens, the f32 target verifies.
  ComponentKind qspec;
  qspec.prefix = "qspec";
  qspec.number = ComponentKind::Number{1, 16, "K"};
  qspec.order = 30;
  qspec.group = "draft";
  qspec.group_conflict = kDraftsTwice;
  qspec.excludes = {{"int8", "qspecK drafts with the int8 copy of an f32 target, so it does not combine with int8"}};
  qspec.batch_one = true;
  qspec.effects = [](int k) {
    ArmEffects e;
    e.set(ArmFeature::SpecK, k).set(ArmFeature::SelfDraft, 1);
    e.draft_tokens = k;
    e.self_draft_weight_bytes = 1.0;
    e.prior_acceptance = kPriorSelfAcceptance;
    return e;
  };
  rows.push_back(std::move(qspec));

  return rows;
}

using Kinds = ComponentTable;

std::mutex& table_mutex() {
  static std::mutex m;
  return m;
}

void check_row(const ComponentKind& k, const Kinds& table) {
  const std::string who = "component kind '" + k.prefix + "'";
  if (k.prefix.empty()) throw Error("a component kind needs a prefix");
  for (const char c : k.prefix)
    if (!std::islower(static_cast<unsigned char>(c)) && !std::isdigit(static_cast<unsigned char>(c)))
      throw Error(who + ": a prefix is lowercase letters and digits");
  if (k.prefix == "plain") throw Error(who + ": 'plain' is the arm without a KV cache, not a component");
  if (k.number && (k.number->lo < 0 || k.number->lo > k.number->hi || k.number->symbol.empty()))
    throw Error(who + ": its number range needs 0 <= lo <= hi and a symbol for the number (\"NN\")");
  if (!k.effects) throw Error(who + " declares no effects");
  if (!k.group.empty() && k.group_conflict.empty()) throw Error(who + ": group '" + k.group + "' needs its conflict message");
  for (const auto& row : table)
    if (row->prefix == k.prefix) throw Error(who + " is already registered");
  for (const auto& exclusion : k.excludes) {
    const std::string& other = exclusion.first;  // not a structured binding: clang 14 (make fuzz) cannot capture one
    if (exclusion.second.empty()) throw Error(who + ": excluding '" + other + "' needs a reason");
    if (other != k.prefix && std::none_of(table.begin(), table.end(), [&](const auto& row) { return row->prefix == other; }))
      throw Error(who + " excludes '" + other + "', which is no registered kind");
  }
}

// The table: an immutable, sorted snapshot, replaced whole on (un)registration, so a parse holds
// one pointer rather than copying rows.
std::shared_ptr<const Kinds>& table() {
  static std::shared_ptr<const Kinds> kinds = [] {
    Kinds out;
    for (auto& row : builtin_components()) {
      check_row(row, out);
      out.push_back(std::make_shared<const ComponentKind>(std::move(row)));
    }
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->order < b->order; });
    return std::make_shared<const Kinds>(std::move(out));
  }();
  return kinds;
}

void replace_table(Kinds kinds) {
  std::stable_sort(kinds.begin(), kinds.end(), [](const auto& a, const auto& b) { return a->order < b->order; });
  table() = std::make_shared<const Kinds>(std::move(kinds));
}

}  // namespace

std::shared_ptr<const ComponentTable> component_table() {
  std::lock_guard lock(table_mutex());
  return table();
}

ComponentTable component_kinds() { return *component_table(); }

void register_component(ComponentKind kind) {
  std::lock_guard lock(table_mutex());
  check_row(kind, *table());
  Kinds next = *table();
  next.push_back(std::make_shared<const ComponentKind>(std::move(kind)));
  replace_table(std::move(next));
}

bool unregister_component(std::string_view prefix) {
  std::lock_guard lock(table_mutex());
  Kinds next = *table();
  const auto it = std::find_if(next.begin(), next.end(), [&](const auto& row) { return row->prefix == prefix; });
  if (it == next.end()) return false;
  next.erase(it);
  replace_table(std::move(next));
  return true;
}

std::optional<ComponentMatch> match_component(const ComponentTable& kinds, std::string_view part, std::string_view arm) {
  std::shared_ptr<const ComponentKind> best;
  for (const auto& kind : kinds) {
    if (!kind->number) {
      if (part == kind->prefix) return ComponentMatch{kind, 0};
      continue;
    }
    if (part.substr(0, kind->prefix.size()) == kind->prefix && (!best || kind->prefix.size() > best->prefix.size())) best = kind;
  }
  if (!best) return std::nullopt;
  const auto& range = *best->number;
  const auto digits = part.substr(best->prefix.size());
  int value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value < range.lo || value > range.hi)
    throw Error("arm '" + std::string(arm) + "': '" + std::string(part) + "' needs a number in " + std::to_string(range.lo) + ".." +
                std::to_string(range.hi) + " after '" + best->prefix + "'");
  return ComponentMatch{best, value};
}

std::optional<ComponentMatch> match_component(std::string_view part, std::string_view arm) {
  return match_component(*component_table(), part, arm);
}

std::string known_components() {
  std::string out = "plain";
  for (const auto& kind : component_kinds()) out += ", " + kind->pattern();
  return out;
}

std::string lossy_components() {
  std::string out;
  for (const auto& kind : component_kinds())
    if (!kind->lossless) out += (out.empty() ? "" : ", ") + kind->pattern();
  return out;
}

}  // namespace eesched::data
