#pragma once
// The arm components, described once: a per-kind traits table (in the spirit of ggml's
// type_traits) of every acceleration an arm can combine. One row per kind gives its name
// pattern, canonical place, whether it is lossless, what it does not combine with, its
// model-free refusal rules, and what it contributes to the features and the roofline. The arm
// grammar (data/arm.cpp), the features (data/features.cpp), the roofline (data/roofline.cpp) and
// the quality key (data/quality.cpp) read only this table and the effects it derives; accel/'s
// factories take their name patterns from it. No LibTorch: the coordinator links it.
//
// Adding an acceleration: its row in builtin_components() (data/arm_components.cpp), or
// register_component() at run time, plus its implementation in accel/ (README, "Accelerations
// and arms").
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace eesched::data {

// The arm columns of the feature vector (data/features.cpp) that components set. The feature
// schema fixes them: a component sets some of these to a value, or a new column is a new
// feature schema version.
enum class ArmFeature { Int8, PrunePercent, SpecK, SelfDraft };
inline constexpr std::size_t kArmFeatureCount = 4;
// Their names in feature_names(), by ArmFeature.
inline constexpr std::array<std::string_view, kArmFeatureCount> kArmFeatureNames = {"arm_int8", "arm_prune_percent", "arm_spec_k",
                                                                                    "arm_self_draft"};

// The prior acceptance rates of the drafting schemes, before any measurement: a separately
// trained small draft agrees with the target about half the time, the target's own int8 copy
// almost always.
inline constexpr double kPriorAcceptance = 0.5;
inline constexpr double kPriorSelfAcceptance = 0.9;

// What a component contributes to the features and to the roofline estimate; an arm's effects
// are its components' merged (a term set by two components of one arm is refused). Unset terms
// are 0 or empty.
struct ArmEffects {
  std::array<double, kArmFeatureCount> features{};  // by ArmFeature; 0 = not set
  // The roofline terms (data/roofline.h):
  std::optional<double> weight_bytes;  // bytes per weight of every matmul and the head; unset: the model's own format
  int ffn_prune_percent = 0;           // FFN neurons removed from every layer, percent
  int draft_tokens = 0;                // speculative decoding: tokens drafted per target pass; 0 = none
  // With draft_tokens: set when the draft is the target itself (in the arm's shape) with every
  // matmul at this many bytes per weight; unset: a separate draft model drafts.
  std::optional<double> self_draft_weight_bytes;
  // With draft_tokens: the acceptance rate assumed before any measurement (unset: kPriorAcceptance).
  std::optional<double> prior_acceptance;

  double feature(ArmFeature f) const { return features[static_cast<std::size_t>(f)]; }
  ArmEffects& set(ArmFeature f, double value) {
    features[static_cast<std::size_t>(f)] = value;
    return *this;
  }
  bool self_draft() const { return self_draft_weight_bytes.has_value(); }
};

// One kind of component: `int8`, or `pruneNN` for every NN in its range.
struct ComponentKind {
  // The name is `prefix`, or `prefix` followed by a number in [lo, hi] for a numbered kind.
  // The prefix is the kind's identity: accel/ factories name the kind they implement by it.
  std::string prefix;
  struct Number {
    int lo = 0, hi = 0;
    std::string symbol;  // how the grammar writes the number: "NN" in "pruneNN"
  };
  std::optional<Number> number;
  int order = 0;            // canonical position in an arm's name: kv 0, int8 10, prune 20, spec/qspec 30
  bool kv_cache = false;    // the KV cache itself, which every arm but `plain` must include
  bool lossless = true;     // false: it changes the model, so the model's measured quality is keyed by it
  // At most one component of a non-empty group per arm; `group_conflict` ends the message
  // "arm 'NAME' <group_conflict>" when an arm has two different kinds of one group (two of the
  // same kind are "named twice").
  std::string group;
  std::string group_conflict;
  // Kinds (by prefix) this one never combines with, each with the reason, which ends the
  // message "arm 'NAME': <reason>". Checked once the whole name is read.
  std::vector<std::pair<std::string, std::string>> excludes;
  // Model-free refusal rules (data::arm_refusal): a separate draft model the task must name,
  // batch 1 only.
  bool needs_draft = false;
  bool batch_one = false;
  // What the component with number n (0 for an unnumbered kind) contributes.
  std::function<ArmEffects(int n)> effects;

  // "int8", "pruneNN": how the grammar writes the kind.
  std::string pattern() const { return prefix + (number ? number->symbol : ""); }
  // The canonical name of the component with number n: "int8", "prune30".
  std::string component_name(int n) const { return number ? prefix + std::to_string(n) : prefix; }
};

// The kinds, in canonical order (then registration order).
using ComponentTable = std::vector<std::shared_ptr<const ComponentKind>>;
// The current table: an immutable snapshot, safe to hold while others register.
std::shared_ptr<const ComponentTable> component_table();
// The same, copied.
ComponentTable component_kinds();

// Adds a kind (an out-of-tree acceleration, a test). Throws data::Error when the row is not
// well formed: an empty or non-alphanumeric prefix, `plain`, a prefix already taken, a bad
// number range, no effects function, an exclusion of an unknown kind.
void register_component(ComponentKind kind);
// Removes a registered kind; false when there is none by that prefix. Arms already parsed keep
// what they were parsed with.
bool unregister_component(std::string_view prefix);

// A component name resolved against the table.
struct ComponentMatch {
  std::shared_ptr<const ComponentKind> kind;
  int number = 0;  // 0 for an unnumbered kind
  std::string name() const { return kind->component_name(number); }
};
// The kind `part` names: an unnumbered kind's exact prefix, else the numbered kind with the
// longest prefix it starts with; nullopt when none matches. A numbered kind whose prefix
// matches but without a number in its range throws data::Error, naming `arm` ("arm 'ARM': 'PART'
// needs a number in LO..HI after 'PREFIX'").
std::optional<ComponentMatch> match_component(std::string_view part, std::string_view arm);
// The same against one snapshot of the table.
std::optional<ComponentMatch> match_component(const ComponentTable& kinds, std::string_view part, std::string_view arm);
inline std::optional<ComponentMatch> match_component(std::string_view part) { return match_component(part, part); }

// "plain, kv, int8, pruneNN, specK, qspecK": every name the grammar knows, for messages.
std::string known_components();
// "int8, pruneNN": the lossy kinds, whose combinations key a model's measured quality.
std::string lossy_components();

}  // namespace eesched::data
