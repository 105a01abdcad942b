// data/: arms as an open set. The golden check pins, bit for bit, what every arm means to the
// selector (compute_features), to the roofline and to the model-free rules (lossless, needs a
// draft, quality key, refusals), so that changing how arms are described cannot move a shipped
// selector's inputs (models/selector.json was trained on these vectors).
//
// tests/golden/arm_effects.txt was written by this test, with
//   EESCHED_UPDATE_GOLDEN=1 build/tests/test_arms --gtest_filter='ArmGolden.*'
// before the arm grammar became a descriptor table (data/arm_components.h); regenerate it only
// for a deliberate change of the features (which means a new feature schema version). Schema 4
// appended the model's family and format; the file was regenerated after checking that the
// schema-3 prefix of every vector still matched the old file bit for bit. Schema 5 appended the
// machine's balance and the arm's roofline ratios to kv; regenerated the same way (the schema-4
// prefix, its first 46 features, matched bit for bit). When kv+bf16 and kv+f16 joined the
// catalog, the file was regenerated: every block is the same bit for bit, kv+bf16 moved up and
// kv+f16 was added.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/arm.h"
#include "data/arm_components.h"
#include "data/error.h"
#include "data/features.h"
#include "data/quality.h"
#include "data/roofline.h"
#include "tests/expect_error.h"

namespace eesched::data {
namespace {

const char* kGolden = EESCHED_SOURCE_DIR "/tests/golden/arm_effects.txt";

// The arms pinned: the catalog and combinations of every component, at the ends of each range.
std::vector<std::string> golden_arms() {
  std::vector<std::string> out;
  for (const auto& a : arm_catalog()) out.push_back(a.name);
  for (const char* extra : {"kv+int8+prune20", "kv+prune10+spec2", "kv+qspec4", "kv+prune30+qspec4", "kv+int8+prune30+spec4",
                            "kv+prune5+spec1", "kv+prune90+qspec16", "kv+spec16", "kv+int8+spec1", "kv+qspec1", "kv+prune20",
                            "kv+int8+prune90", "kv+prune10", "kv+int8+prune10+spec8", "kv+bf16", "kv+f16+prune20",
                            "kv+bf16+qspec4", "kv+f16+spec2"})
    if (std::find(out.begin(), out.end(), extra) == out.end()) out.push_back(extra);  // kv+bf16 joined the catalog
  return out;
}

std::string bits(double x) {
  uint64_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, u);
  return buf;
}

// FNV-1a, 64 bits, as hex.
std::string fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

std::string golden_text() {
  std::ostringstream out;
  // Two models: a GQA model (the features test's) and an MHA one with 2-byte weights.
  ModelRow gqa, mha, draft;
  gqa.layers = 12, gqa.hidden = 768, gqa.intermediate = 2304, gqa.heads = 12, gqa.kv_heads = 4;
  gqa.vocab = 32000, gqa.parameters = 107'000'000, gqa.weight_bytes = 428'000'000, gqa.encrypted = true;
  mha.layers = 24, mha.hidden = 1024, mha.intermediate = 2816, mha.heads = 16, mha.kv_heads = 0;
  mha.vocab = 8192, mha.parameters = 350'000'000, mha.weight_bytes = 700'000'000;
  draft.layers = 2, draft.hidden = 256, draft.intermediate = 688, draft.heads = 4, draft.kv_heads = 4, draft.vocab = 32000;
  draft.parameters = 300'000, draft.weight_bytes = 1'200'000;
  HardwareProfile slow, fast;
  slow.threads = 2, slow.gflops = 50, slow.copy_gbps = 25, slow.mem_free_bytes = 8'000'000'000;
  fast.threads = 16, fast.gflops = 900, fast.copy_gbps = 120, fast.mem_free_bytes = 64'000'000'000;

  std::vector<TaskSpec> tasks(4);
  tasks[0].prompt_tokens = 100, tasks[0].generation.max_new_tokens = 32, tasks[0].generation.temperature = 0.7, tasks[0].generation.top_p = 0.9;
  tasks[0].quality = Quality::Tolerant;
  tasks[1].prompt_tokens = 1024, tasks[1].generation.max_new_tokens = 4, tasks[1].batch = 4, tasks[1].quality = Quality::Exact;
  tasks[1].draft = "d";
  tasks[2].prompt_tokens = 4, tasks[2].generation.max_new_tokens = 256, tasks[2].quality = Quality::Tolerant, tasks[2].draft = "d";
  tasks[3].prompt_tokens = 0, tasks[3].generation.max_new_tokens = 1, tasks[3].batch = 8, tasks[3].quality = Quality::Tolerant;

  const std::vector<Landmarks> landmarks = {{}, {0.6, std::nullopt}, {std::nullopt, 0.85}, {0.3, 0.97}, {1.0, 0.0}};
  for (const auto& name : golden_arms()) {
    const auto arm = parse_arm(name);
    out << "arm " << name << " canonical=" << arm.name << " components=";
    for (const auto& c : arm.components()) out << c << ";";
    out << " kv=" << arm.kv_cache << " lossless=" << arm.lossless() << " needs_draft=" << arm.needs_draft()
        << " quality_key=" << quality_key(arm) << "\n";
    for (std::size_t ti = 0; ti < tasks.size(); ++ti) {
      const auto why = arm_refusal(arm, tasks[ti]);
      out << "  refusal task" << ti << ": " << (why ? *why : "-") << "\n";
    }
    int m = 0;
    for (const ModelRow* model : {static_cast<const ModelRow*>(&gqa), static_cast<const ModelRow*>(&mha)}) {
      int h = 0;
      for (const HardwareProfile* hw : {static_cast<const HardwareProfile*>(&slow), static_cast<const HardwareProfile*>(&fast)}) {
        for (std::size_t ti = 0; ti < tasks.size(); ++ti) {
          for (const ModelRow* d : {static_cast<const ModelRow*>(nullptr), static_cast<const ModelRow*>(&draft)}) {
            // Every feature vector and roofline estimate of this case, bit for bit, hashed to
            // keep the file small; the line says which case moved.
            std::string detail;
            for (const auto& lm : landmarks) {
              FeatureInputs in{&tasks[ti], model, d, hw, &arm, lm};
              for (double x : compute_features(in)) detail += bits(x) + ' ';
              detail += '\n';
            }
            for (std::optional<double> acceptance : {std::optional<double>{}, std::optional<double>{0.0},
                                                     std::optional<double>{0.45}, std::optional<double>{1.0}}) {
              const auto e = estimate_roofline(tasks[ti], *model, d, *hw, arm, acceptance);
              for (double x : {e.weight_mb, e.step_ms, e.prefill_ms, e.forward_passes, e.total_ms}) detail += bits(x) + ' ';
              detail += '\n';
            }
            out << "  m" << m << " h" << h << " t" << ti << " d" << (d != nullptr) << ": " << fnv1a(detail) << "\n";
          }
        }
        ++h;
      }
      ++m;
    }
  }
  // The grammar's refusals, word for word.
  for (const char* bad : {"", "int8", "kv+int4", "kv+spec0", "kv+specx", "kv+spec", "kv+prune95", "kv+prune4", "kv+int8+int8",
                          "plain+kv", "kv+plain", "kv+kv", "kv+prune20+prune30", "kv+qspec4+qspec2", "kv+spec4+spec2",
                          "kv+spec4+qspec4", "kv+qspec4+spec2", "kv+int8+qspec4", "kv+qspec4+int8", "kv+qspec17", "kv+",
                          "kv++int8", "kv+INT8", "kv+int8+qspec4+spec2", "spec4", "kv+prune+30", "kv+prune030", "kv+spec-1", "kv+int8+bf16",
                          "kv+f16+bf16", "kv+bf16+bf16", "kv+bf8"}) {
    std::string why = "-";
    try {
      parse_arm(bad);
    } catch (const Error& e) {
      why = e.what();
    }
    out << "error '" << bad << "': " << why << "\n";
  }
  return out.str();
}

// Features, roofline estimates and the model-free rules of every pinned arm equal the golden
// file bit for bit.
TEST(ArmGolden, FeaturesRooflineAndRulesAreBitIdentical) {
  const auto text = golden_text();
  if (std::getenv("EESCHED_UPDATE_GOLDEN")) {
    std::ofstream(kGolden) << text;
    GTEST_SKIP() << "wrote " << kGolden;
  }
  std::ifstream in(kGolden);
  ASSERT_TRUE(in) << "missing " << kGolden;
  std::stringstream golden;
  golden << in.rdbuf();
  std::istringstream want(golden.str()), got(text);
  std::string w, g;
  int line = 0;
  while (true) {
    const bool more_w = static_cast<bool>(std::getline(want, w)), more_g = static_cast<bool>(std::getline(got, g));
    ++line;
    if (!more_w && !more_g) break;
    ASSERT_EQ(more_w, more_g) << "the golden file and the computed text differ in length at line " << line;
    ASSERT_EQ(w, g) << "line " << line;
  }
}

// Removes a registered component kind when the test ends, pass or fail.
struct Registered {
  explicit Registered(ComponentKind kind) : prefix(kind.prefix) { register_component(std::move(kind)); }
  ~Registered() { unregister_component(prefix); }
  std::string prefix;
};

std::string error_of(const std::function<void()>& f) { return eesched::testing::error_of_type<Error>(f); }

double feature(const std::vector<double>& f, const std::string& name) {
  const auto& names = feature_names();
  const auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) throw std::runtime_error("no feature " + name);
  return f[static_cast<std::size_t>(it - names.begin())];
}

// The built-in rows, as the grammar and the messages show them.
TEST(ArmComponents, TheTableHoldsTheBuiltins) {
  std::vector<std::string> patterns;
  for (const auto& kind : component_kinds()) patterns.push_back(kind->pattern());
  EXPECT_EQ(patterns, (std::vector<std::string>{"kv", "int8", "bf16", "f16", "pruneNN", "specK", "qspecK"}));
  EXPECT_EQ(known_components(), "plain, kv, int8, bf16, f16, pruneNN, specK, qspecK");
  EXPECT_EQ(lossy_components(), "int8, bf16, f16, pruneNN");
  // The columns components may set are feature columns.
  const auto& names = feature_names();
  for (const auto column : kArmFeatureNames) EXPECT_NE(std::find(names.begin(), names.end(), column), names.end()) << column;
  const auto m = match_component("prune30");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind->prefix, "prune");
  EXPECT_EQ(m->number, 30);
  EXPECT_EQ(m->name(), "prune30");
  EXPECT_FALSE(match_component("int4"));
  EXPECT_NE(error_of([] { match_component("spec17"); }).find("1..16"), std::string::npos);
}

TEST(ArmComponents, ARowMustBeWellFormed) {
  auto row = [](std::string prefix) {
    ComponentKind k;
    k.prefix = std::move(prefix);
    k.effects = [](int) { return ArmEffects{}; };
    return k;
  };
  EXPECT_NE(error_of([&] { register_component(row("int8")); }).find("already registered"), std::string::npos);
  EXPECT_NE(error_of([&] { register_component(row("plain")); }).find("'plain'"), std::string::npos);
  EXPECT_NE(error_of([&] { register_component(row("Fp16")); }).find("lowercase"), std::string::npos);
  EXPECT_NE(error_of([&] { register_component(row("")); }).find("prefix"), std::string::npos);
  auto no_effects = row("fp16");
  no_effects.effects = nullptr;
  EXPECT_NE(error_of([&] { register_component(no_effects); }).find("no effects"), std::string::npos);
  auto bad_range = row("lowrank");
  bad_range.number = ComponentKind::Number{50, 10, "NN"};
  EXPECT_NE(error_of([&] { register_component(bad_range); }).find("range"), std::string::npos);
  auto bad_exclusion = row("fp16");
  bad_exclusion.excludes = {{"int4", "why"}};
  EXPECT_NE(error_of([&] { register_component(bad_exclusion); }).find("no registered kind"), std::string::npos);
  EXPECT_FALSE(unregister_component("fp16"));  // none of them was added
  EXPECT_EQ(known_components(), "plain, kv, int8, bf16, f16, pruneNN, specK, qspecK");
}

// The open set: two new kinds, added as rows at run time, are parsed, canonicalized, refused,
// featured and estimated from their rows alone; the parser, the features and the roofline
// are not touched. (tests/test_accel.cpp adds an implementation too, and runs one.)
TEST(ArmComponents, NewKindsAreParsedFeaturedAndEstimatedFromTheirRows) {
  // A weight format: every matmul but q/k in 2 bytes; lossy, and one format per arm.
  ComponentKind fp16;
  fp16.prefix = "fp16";
  fp16.order = 11;
  fp16.lossless = false;
  fp16.excludes = {{"int8", "fp16 and int8 are both weight formats"}};
  fp16.effects = [](int) {
    ArmEffects e;
    e.weight_bytes = 2.0;
    return e;
  };
  // A drafting scheme: the f32 target drafts K tokens itself (lookahead decoding), batch 1, one
  // drafting scheme per arm.
  ComponentKind lookahead;
  lookahead.prefix = "lookahead";
  lookahead.number = ComponentKind::Number{2, 8, "K"};
  lookahead.order = 30;
  lookahead.group = "draft";
  lookahead.group_conflict = "drafts twice: lookaheadK drafts with the target itself";
  lookahead.batch_one = true;
  lookahead.effects = [](int k) {
    ArmEffects e;
    e.set(ArmFeature::SpecK, k);
    e.draft_tokens = k;
    e.self_draft_weight_bytes = 4.0;
    e.prior_acceptance = 0.7;
    return e;
  };
  const Registered r1(fp16), r2(lookahead);

  EXPECT_EQ(known_components(), "plain, kv, int8, bf16, f16, fp16, pruneNN, specK, qspecK, lookaheadK");
  EXPECT_EQ(lossy_components(), "int8, bf16, f16, fp16, pruneNN");
  const auto a = parse_arm("lookahead3+prune20+fp16+kv");
  EXPECT_EQ(a.name, "kv+fp16+prune20+lookahead3");
  EXPECT_EQ(a.components(), (std::vector<std::string>{"kv", "fp16", "prune20", "lookahead3"}));
  EXPECT_FALSE(a.lossless());
  EXPECT_FALSE(a.needs_draft());
  EXPECT_EQ(quality_key(a), "fp16+prune20");
  EXPECT_EQ(parse_arm_list("kv,kv+fp16").size(), 2u);
  EXPECT_EQ(quality_from_json(nlohmann::json{{"fp16", {{"ppl_ratio", 1.001}, {"top1_agreement", 0.99}}}}).count("fp16"), 1u);
  EXPECT_NE(error_of([] { parse_arm("kv+int8+fp16"); }).find("arm 'kv+int8+fp16': fp16 and int8 are both weight formats"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+spec4+lookahead3"); }).find("drafts twice: lookaheadK"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+lookahead9"); }).find("2..8"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+fp16+fp16"); }).find("twice"), std::string::npos);

  TaskSpec task;
  task.prompt_tokens = 100, task.generation.max_new_tokens = 32, task.quality = Quality::Tolerant;
  EXPECT_FALSE(arm_refusal(a, task));
  task.batch = 2;
  EXPECT_NE(arm_refusal(a, task).value_or("").find("batch 1"), std::string::npos);
  task.batch = 1;
  task.quality = Quality::Exact;
  EXPECT_NE(arm_refusal(parse_arm("kv+fp16"), task).value_or("").find("lossy"), std::string::npos);
  EXPECT_FALSE(arm_refusal(parse_arm("kv+lookahead4"), task));
  task.quality = Quality::Tolerant;

  // Features and roofline take the declared terms. The features test's model: 12 layers, hidden
  // 768, k/v 256 wide, FFN 2304, vocab 32000, 4 bytes a weight: q/k hold 9,437,184 weights,
  // the other matmuls 97,714,176.
  ModelRow model;
  model.layers = 12, model.hidden = 768, model.intermediate = 2304, model.heads = 12, model.kv_heads = 4;
  model.vocab = 32000, model.parameters = 107'000'000, model.weight_bytes = 428'000'000;
  HardwareProfile hw;
  hw.threads = 2, hw.gflops = 50, hw.copy_gbps = 25;
  auto features_of = [&](const Arm& arm) {
    FeatureInputs in{&task, &model, nullptr, &hw, &arm, {}};
    return compute_features(in);
  };
  const auto f = features_of(parse_arm("kv+fp16"));
  EXPECT_DOUBLE_EQ(feature(f, "arm_weight_mb"), 2.0 * (9437184 + 97714176) / 1e6);
  EXPECT_EQ(feature(f, "arm_int8"), 0);
  EXPECT_EQ(feature(f, "arm_lossless"), 0);
  EXPECT_LT(feature(f, "arm_roofline_vs_kv"), 1.0);
  EXPECT_GT(feature(f, "arm_roofline_vs_kv"), feature(features_of(parse_arm("kv+int8")), "arm_roofline_vs_kv"));
  const auto g = features_of(parse_arm("kv+lookahead4"));
  EXPECT_EQ(feature(g, "arm_spec_k"), 4);
  EXPECT_EQ(feature(g, "decode_rows"), 5);
  EXPECT_EQ(feature(g, "arm_self_draft"), 0);  // the column qspecK sets; this row does not
  EXPECT_EQ(feature(g, "arm_lossless"), 1);
  // Its roofline: the target drafts itself at 4 bytes a weight with the prior 0.7 until measured.
  const auto est = estimate_roofline(task, model, nullptr, hw, parse_arm("kv+lookahead4"), std::nullopt);
  const double per_iteration = (1 - std::pow(0.7, 5)) / (1 - 0.7), iterations = 31 / per_iteration;
  EXPECT_DOUBLE_EQ(est.forward_passes, 2 + iterations * 5);
  EXPECT_DOUBLE_EQ(est.total_ms, estimate_roofline(task, model, nullptr, hw, parse_arm("kv+lookahead4"), 0.7).total_ms);
  EXPECT_NE(est.total_ms, estimate_roofline(task, model, nullptr, hw, parse_arm("kv+lookahead4"), 0.5).total_ms);
}

// After the kinds are gone, the grammar is the built-in one again.
TEST(ArmComponents, AnUnregisteredKindIsUnknownAgain) {
  {
    ComponentKind k;
    k.prefix = "fp16";
    k.effects = [](int) { return ArmEffects{}; };
    const Registered r(k);
    EXPECT_EQ(parse_arm("kv+fp16").name, "kv+fp16");
  }
  EXPECT_NE(error_of([] { parse_arm("kv+fp16"); }).find("unknown component 'fp16' (known: plain, kv, int8, bf16, f16, pruneNN, specK, qspecK)"),
            std::string::npos);
}

}  // namespace
}  // namespace eesched::data
