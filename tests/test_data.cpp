// data/: the arm catalog and task types (the SQLite store has its own suite, test_store).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <map>
#include <set>

#include "data/arm.h"
#include "data/features.h"
#include "data/roofline.h"
#include "data/make_suite.h"
#include "data/suite.h"
#include "data/error.h"
#include "tests/expect_error.h"

namespace eesched::data {
namespace {

std::string error_of(const std::function<void()>& f) { return eesched::testing::error_of_type<Error>(f); }

TEST(Arm, ParsesAndCanonicalizes) {
  auto a = parse_arm("spec4+int8+kv");
  EXPECT_EQ(a.name, "kv+int8+spec4");
  EXPECT_TRUE(a.kv_cache);
  EXPECT_EQ(a.effects.feature(ArmFeature::Int8), 1);
  EXPECT_EQ(a.effects.weight_bytes, 1.0);
  EXPECT_EQ(a.effects.draft_tokens, 4);
  EXPECT_EQ(a.effects.ffn_prune_percent, 0);
  EXPECT_EQ(a.lossy_key, "int8");
  EXPECT_FALSE(a.lossless());
  EXPECT_TRUE(a.needs_draft());
  EXPECT_EQ(a.components(), (std::vector<std::string>{"kv", "int8", "spec4"}));

  auto p = parse_arm("plain");
  EXPECT_FALSE(p.kv_cache);
  EXPECT_TRUE(p.lossless());
  EXPECT_EQ(p.components(), std::vector<std::string>{"plain"});
  EXPECT_EQ(parse_arm(" kv+prune30 ").effects.ffn_prune_percent, 30);
  EXPECT_TRUE(parse_arm("kv+spec8").lossless());

  // Self-speculative: lossless, drafts with the target's int8 copy, so it needs no draft model.
  auto q = parse_arm("qspec6+kv");
  EXPECT_EQ(q.name, "kv+qspec6");
  EXPECT_EQ(q.effects.draft_tokens, 6);
  EXPECT_TRUE(q.effects.self_draft());
  EXPECT_TRUE(q.lossless());
  EXPECT_FALSE(q.needs_draft());
  EXPECT_FALSE(q.effects.weight_bytes);
  EXPECT_EQ(parse_arm("kv+prune30+qspec4").name, "kv+prune30+qspec4");
}

TEST(Arm, RejectsMalformedNamesWithAReason) {
  EXPECT_NE(error_of([] { parse_arm("int8"); }).find("must include 'kv'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+int4"); }).find("unknown component 'int4'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+spec0"); }).find("1..16"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+specx"); }).find("1..16"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+prune95"); }).find("5..90"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+int8+int8"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("plain+kv"); }).find("combines with nothing"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm(""); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm_list("kv,kv"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+qspec4+qspec2"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+spec4+qspec4"); }).find("drafts twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+qspec4+spec2"); }).find("drafts twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+int8+qspec4"); }).find("does not combine with int8"), std::string::npos);
  EXPECT_NE(error_of([] { parse_arm("kv+qspec17"); }).find("1..16"), std::string::npos);
}

TEST(Arm, CatalogIsCanonicalAndUnique) {
  const auto& arms = arm_catalog();
  ASSERT_GE(arms.size(), 6u);
  std::set<std::string> names;
  for (const auto& a : arms) {
    EXPECT_EQ(parse_arm(a.name).name, a.name);
    names.insert(a.name);
  }
  EXPECT_EQ(names.size(), arms.size());
  for (const char* required : {"plain", "kv", "kv+int8", "kv+spec4", "kv+prune30", "kv+int8+spec4"})
    EXPECT_TRUE(names.count(required)) << required;
  EXPECT_EQ(parse_arm_list("all").size(), arms.size());
  EXPECT_EQ(parse_arm_list("kv,kv+int8").size(), 2u);
}

TEST(Arm, RefusalsNameTheReason) {
  TaskSpec t;
  t.model = "m";
  t.quality = Quality::Exact;
  EXPECT_FALSE(arm_refusal(parse_arm("kv"), t));
  EXPECT_FALSE(arm_refusal(parse_arm("plain"), t));
  auto lossy = arm_refusal(parse_arm("kv+int8"), t);
  ASSERT_TRUE(lossy);
  EXPECT_NE(lossy->find("lossy"), std::string::npos);
  auto nodraft = arm_refusal(parse_arm("kv+spec4"), t);
  ASSERT_TRUE(nodraft);
  EXPECT_NE(nodraft->find("draft"), std::string::npos);
  t.draft = "d";
  EXPECT_FALSE(arm_refusal(parse_arm("kv+spec4"), t));
  t.batch = 4;
  auto batched = arm_refusal(parse_arm("kv+spec4"), t);
  ASSERT_TRUE(batched);
  EXPECT_NE(batched->find("batch 1"), std::string::npos);
  // The self-drafting arm needs no draft model, but still batch 1.
  batched = arm_refusal(parse_arm("kv+qspec6"), t);
  ASSERT_TRUE(batched);
  EXPECT_NE(batched->find("batch 1"), std::string::npos);
  t.batch = 1;
  t.draft.clear();
  EXPECT_FALSE(arm_refusal(parse_arm("kv+qspec6"), t));
  t.quality = Quality::Tolerant;
  EXPECT_FALSE(arm_refusal(parse_arm("kv+int8+prune30"), t));
}

TEST(Quality, RoundTrips) {
  EXPECT_EQ(parse_quality("exact"), Quality::Exact);
  EXPECT_STREQ(quality_name(parse_quality("tolerant")), "tolerant");
  EXPECT_NE(error_of([] { parse_quality("best"); }).find("'best'"), std::string::npos);
}

struct FeatureFixture {
  TaskSpec task;
  ModelRow model, draft;
  HardwareProfile hw;
  FeatureFixture() {
    task.prompt_tokens = 100;
    task.generation.max_new_tokens = 32;
    task.generation.temperature = 0.7;
    task.generation.top_p = 0.9;
    task.quality = Quality::Tolerant;
    model.layers = 12, model.hidden = 768, model.intermediate = 2304, model.heads = 12, model.kv_heads = 4;
    model.vocab = 32000, model.parameters = 107'000'000, model.weight_bytes = 428'000'000, model.encrypted = true;
    draft.layers = 2, draft.parameters = 300'000;
    hw.threads = 2, hw.gflops = 50, hw.copy_gbps = 25, hw.mem_free_bytes = 8'000'000'000;
  }
  std::vector<double> of(const std::string& arm, bool with_draft, std::optional<double> acceptance = std::nullopt) {
    const auto a = parse_arm(arm);
    FeatureInputs in{&task, &model, with_draft ? &draft : nullptr, &hw, &a, {.acceptance_rate = acceptance, .self_acceptance_rate = std::nullopt}};
    return compute_features(in);
  }
};

double feature(const std::vector<double>& f, const std::string& name) {
  const auto& names = feature_names();
  const auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) throw std::runtime_error("no feature " + name);
  return f[static_cast<std::size_t>(it - names.begin())];
}

TEST(Features, NamesAreUniqueAndTheirOrderIsStable) {
  const auto& names = feature_names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  // The contract with every saved selector: changing this list means a new schema version.
  const std::vector<std::string> expected = {
      "prompt_tokens", "log2_prompt_tokens", "new_tokens", "log2_new_tokens", "batch", "greedy", "temperature", "top_p",
      "quality_exact", "parameters_m", "layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", "weight_mb",
      "encrypted", "draft_parameters_m", "draft_layers", "hw_threads", "hw_gflops", "hw_copy_gbps", "hw_mem_free_gb",
      "memory_bound_ms", "compute_bound_ms", "arm_kv_cache", "arm_int8", "arm_prune_percent", "arm_spec_k", "arm_lossless",
      "landmark_acceptance", "arm_weight_mb", "arm_step_ms", "arm_prefill_ms", "arm_forward_passes", "log2_arm_roofline_ms",
      "arm_roofline_vs_kv", "prefill_rows", "decode_rows", "arm_self_draft", "landmark_self_acceptance",
      "head_dim", "dtype_bytes", "arch_qkv_bias", "arch_qk_norm",
      "hw_flops_per_byte", "kv_compute_share", "kv_prefill_share", "arm_step_vs_kv", "arm_prefill_vs_kv", "arm_passes_vs_kv"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(kFeatureSchemaVersion, 5);
  // What the arm model leaves out is a subset of the names.
  for (const auto& n : machine_scale_features()) EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

TEST(Features, AreDeterministicAndMeanWhatTheySay) {
  FeatureFixture fx;
  const auto a = fx.of("kv+int8+spec4", true, 0.6), b = fx.of("kv+int8+spec4", true, 0.6);
  ASSERT_EQ(a.size(), feature_names().size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)), 0);  // bit for bit
  EXPECT_EQ(feature(a, "prompt_tokens"), 100);
  EXPECT_EQ(feature(a, "greedy"), 0);
  EXPECT_EQ(feature(a, "quality_exact"), 0);
  EXPECT_EQ(feature(a, "encrypted"), 1);
  EXPECT_EQ(feature(a, "arm_int8"), 1);
  EXPECT_EQ(feature(a, "arm_spec_k"), 4);
  EXPECT_EQ(feature(a, "arm_lossless"), 0);
  EXPECT_NEAR(feature(a, "memory_bound_ms"), 428.0 / 25.0, 1e-9);
  EXPECT_DOUBLE_EQ(feature(a, "landmark_acceptance"), 0.6);
  EXPECT_DOUBLE_EQ(feature(a, "draft_parameters_m"), 0.3);
  EXPECT_NEAR(feature(a, "arm_weight_mb"), 107.15136, 1e-9);  // every matmul in int8
  EXPECT_EQ(feature(a, "prefill_rows"), 100);
  EXPECT_EQ(feature(a, "decode_rows"), 5);  // one token and four drafted ones
  EXPECT_DOUBLE_EQ(feature(fx.of("kv", false), "arm_roofline_vs_kv"), 1.0);
  EXPECT_LT(feature(fx.of("kv+int8", false), "arm_roofline_vs_kv"), 1.0);
  const auto plain = fx.of("plain", false);
  EXPECT_EQ(feature(plain, "arm_kv_cache"), 0);
  EXPECT_GT(feature(plain, "arm_roofline_vs_kv"), 1.0);
  EXPECT_TRUE(std::isnan(feature(plain, "draft_layers")));         // missing, not zero
  EXPECT_TRUE(std::isnan(feature(plain, "landmark_acceptance")));
  EXPECT_THROW(compute_features({}), Error);
  // Schema 5: relative to the machine and to kv.
  const auto kv = fx.of("kv", false), int8 = fx.of("kv+int8", false);
  EXPECT_DOUBLE_EQ(feature(kv, "hw_flops_per_byte"), fx.hw.gflops / fx.hw.copy_gbps);
  for (const char* name : {"arm_step_vs_kv", "arm_prefill_vs_kv", "arm_passes_vs_kv"}) EXPECT_DOUBLE_EQ(feature(kv, name), 1.0) << name;
  EXPECT_LT(feature(int8, "arm_step_vs_kv"), 1.0);  // a quarter of the bytes per step
  EXPECT_GT(feature(plain, "arm_passes_vs_kv"), 0.0);
  EXPECT_GT(feature(kv, "kv_compute_share"), 0.0);
  EXPECT_LT(feature(kv, "kv_compute_share"), 1.0);
  EXPECT_GT(feature(kv, "kv_prefill_share"), 0.0);
  EXPECT_LT(feature(kv, "kv_prefill_share"), 1.0);
  // The same task on a machine twice as fast in every way: the relative features do not move.
  auto fast = fx;
  fast.hw.gflops *= 2, fast.hw.copy_gbps *= 2;
  const auto kv_fast = fast.of("kv+int8", false);
  for (const char* name : {"hw_flops_per_byte", "kv_compute_share", "arm_step_vs_kv", "arm_roofline_vs_kv"})
    EXPECT_NEAR(feature(kv_fast, name), feature(int8, name), 1e-12) << name;
  EXPECT_NE(feature(kv_fast, "hw_gflops"), feature(int8, "hw_gflops"));
}

// Schema 4: the family and number format, from the model row.
TEST(Features, SayTheModelsFamilyHeadWidthAndFormat) {
  FeatureFixture fx;
  fx.model.dtype = "f32";
  auto a = fx.of("kv", false);
  EXPECT_EQ(feature(a, "head_dim"), 64);  // 768 / 12
  EXPECT_EQ(feature(a, "dtype_bytes"), 4);
  EXPECT_EQ(feature(a, "arch_qkv_bias"), 0);
  EXPECT_EQ(feature(a, "arch_qk_norm"), 0);
  fx.model.architecture = "qwen3", fx.model.head_dim = 128, fx.model.dtype = "bf16";
  a = fx.of("kv", false);
  EXPECT_EQ(feature(a, "head_dim"), 128);
  EXPECT_EQ(feature(a, "dtype_bytes"), 2);
  EXPECT_EQ(feature(a, "arch_qkv_bias"), 0);
  EXPECT_EQ(feature(a, "arch_qk_norm"), 1);
  fx.model.architecture = "qwen2", fx.model.head_dim = 0, fx.model.dtype = "";
  a = fx.of("kv", false);
  EXPECT_EQ(feature(a, "arch_qkv_bias"), 1);
  EXPECT_EQ(feature(a, "arch_qk_norm"), 0);
  EXPECT_TRUE(std::isnan(feature(a, "dtype_bytes")));  // unknown, not a guess
  fx.model.architecture = "mistral";
  const auto m = fx.of("kv", false);
  fx.model.architecture = "llama";
  const auto l = fx.of("kv", false);
  EXPECT_EQ(std::memcmp(m.data(), l.data(), m.size() * sizeof(double)), 0);  // they compute alike
}

TEST(Roofline, StreamsTheArmsBytesAndRanksArmsAsPhysicsSays) {
  FeatureFixture fx;
  const auto est = [&](const std::string& arm, std::optional<double> acceptance = std::nullopt) {
    return estimate_roofline(fx.task, fx.model, &fx.draft, fx.hw, parse_arm(arm), acceptance);
  };
  // 12 layers of q, k, v, o (k/v 256 wide: 4 of 12 heads) and a 2304-wide FFN, and the 32000 x 768
  // head: 107,151,360 matmul weights, 4 bytes each in f32.
  const auto kv = est("kv");
  EXPECT_NEAR(kv.weight_mb, 428.60544, 1e-9);
  EXPECT_NEAR(kv.step_ms, 428.60544 / 25.0, 1e-9);  // memory-bound at batch 1: 428.6 MB at 25 GB/s
  EXPECT_DOUBLE_EQ(kv.forward_passes, 32);
  EXPECT_NEAR(kv.total_ms, kv.prefill_ms + 31 * kv.step_ms, 1e-9);
  // Prefill of 100 tokens is compute-bound, so int8 streams fewer bytes but prefills as fast.
  const auto int8 = est("kv+int8");
  EXPECT_NEAR(int8.weight_mb, 107.15136, 1e-9);  // one byte per weight, q/k included
  EXPECT_DOUBLE_EQ(int8.prefill_ms, kv.prefill_ms);
  EXPECT_LT(int8.total_ms, kv.total_ms);
  // Pruning 30% leaves 1613 of 2304 FFN neurons.
  EXPECT_NEAR(est("kv+prune30").weight_mb, 4 * (9437184 + 12 * (768 * 256 + 768 * 768 + 3 * 768 * 1613.0) + 32000 * 768.0) / 1e6, 1e-9);
  EXPECT_LT(est("kv+int8+prune30").total_ms, int8.total_ms);
  // No cache: each token recomputes the sequence, far slower than kv on 32 tokens.
  EXPECT_GT(est("plain").total_ms, 10 * kv.total_ms);
  // Speculation pays with a draft that is accepted, not with one that never is.
  EXPECT_LT(est("kv+spec4", 0.9).total_ms, kv.total_ms);
  EXPECT_GT(est("kv+spec4", 0.0).total_ms, kv.total_ms);
  EXPECT_LT(est("kv+spec4", 0.9).total_ms, est("kv+spec4", 0.5).total_ms);
  EXPECT_DOUBLE_EQ(est("kv+spec4").total_ms, est("kv+spec4", kPriorAcceptance).total_ms);
  // A speculative arm without a draft is estimated as kv; a batch multiplies compute.
  EXPECT_DOUBLE_EQ(estimate_roofline(fx.task, fx.model, nullptr, fx.hw, parse_arm("kv+spec4"), 0.9).total_ms, kv.total_ms);
  // Self-drafting needs no draft model: its draft streams the int8 bytes. On this memory-bound
  // model it gains on a long generation and loses when the prompt dominates (the int8 copy
  // prefills the prompt too).
  const auto self = estimate_roofline(fx.task, fx.model, nullptr, fx.hw, parse_arm("kv+qspec6"), std::nullopt);
  EXPECT_DOUBLE_EQ(self.total_ms, est("kv+qspec6", kPriorSelfAcceptance).total_ms);
  EXPECT_GT(self.prefill_ms, kv.prefill_ms);
  fx.task.generation.max_new_tokens = 256;
  EXPECT_LT(est("kv+qspec6").total_ms, est("kv").total_ms);
  fx.task.prompt_tokens = 1000, fx.task.generation.max_new_tokens = 4;
  EXPECT_GT(est("kv+qspec6").total_ms, est("kv").total_ms);
  fx.task.batch = 8;
  EXPECT_GT(est("kv").step_ms, kv.step_ms);
}

// A model with an explicit head width (Qwen3-0.6B: 16 heads of 128 over a 1024-wide residual,
// 8 KV heads) streams its real q/k/v/o shapes; naming the default width changes nothing.
TEST(Roofline, AnExplicitHeadWidthShapesQKVAndO) {
  FeatureFixture fx;
  ModelRow qwen3;
  qwen3.architecture = "qwen3";
  qwen3.layers = 28, qwen3.hidden = 1024, qwen3.intermediate = 3072, qwen3.heads = 16, qwen3.kv_heads = 8, qwen3.vocab = 151936;
  qwen3.head_dim = 128;
  // Per layer: q 1024x2048, k and v 1024x1024, o 2048x1024, the FFN 3 x 1024x3072; the tied head
  // 151936 x 1024 once.
  const double per_layer = 1024.0 * 2048 + 2 * 1024.0 * 1024 + 2048.0 * 1024 + 3 * 1024.0 * 3072;
  const double matmul_weights = 28 * per_layer + 151936.0 * 1024;
  qwen3.parameters = static_cast<int64_t>(matmul_weights), qwen3.weight_bytes = 2 * qwen3.parameters;  // bf16
  const auto kv = estimate_roofline(fx.task, qwen3, nullptr, fx.hw, parse_arm("kv"), std::nullopt);
  EXPECT_NEAR(kv.weight_mb, 2 * matmul_weights / 1e6, 1e-6);

  ModelRow named = fx.model, implicit = fx.model;
  named.head_dim = fx.model.hidden / fx.model.heads;
  for (const auto* arm : {"kv", "kv+int8", "kv+prune30", "plain"}) {
    const auto a = estimate_roofline(fx.task, named, &fx.draft, fx.hw, parse_arm(arm), 0.7);
    const auto b = estimate_roofline(fx.task, implicit, &fx.draft, fx.hw, parse_arm(arm), 0.7);
    EXPECT_EQ(a.total_ms, b.total_ms) << arm;
    EXPECT_EQ(a.weight_mb, b.weight_mb) << arm;
  }
}

TEST(MakeSuite, IsSeededVariedAndReadsBack) {
  MakeSuiteOptions o;
  o.count = 300;
  o.models = default_suite_models();
  std::string doc;
  for (int i = 0; i < 400; ++i) doc += "word" + std::to_string(i) + " ";
  o.documents = {doc, "too short"};
  const auto a = make_suite(o), b = make_suite(o);
  ASSERT_EQ(a.size(), 300u);
  std::set<std::string> models, ids;
  std::set<int64_t> batches;
  int sampled = 0, exact = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(task_to_json(a[i]), task_to_json(b[i]));  // same seed, same suite
    const auto& t = a[i];
    ids.insert(t.id);
    models.insert(t.model);
    batches.insert(t.batch);
    sampled += !t.greedy();
    exact += t.quality == Quality::Exact;
    EXPECT_GE(t.generation.max_new_tokens, 1);
    EXPECT_LE(t.generation.max_new_tokens, 256);
    if (t.model == "target") {
      EXPECT_FALSE(t.prompt.empty());
      EXPECT_EQ(t.draft, "draft");
    } else {
      EXPECT_GE(t.prompt_tokens, 4);
      EXPECT_LE(t.prompt_tokens, 1024);
    }
  }
  EXPECT_EQ(ids.size(), a.size());
  EXPECT_EQ(models.size(), 4u);
  EXPECT_EQ(batches, (std::set<int64_t>{1, 2, 4, 8}));
  EXPECT_GT(sampled, 60);
  EXPECT_GT(exact, 100);
  o.seed = 2;
  EXPECT_NE(task_to_json(make_suite(o)[0]), task_to_json(a[0]));
  // The committed dev suite parses and is big enough.
  const auto dev = read_suite(std::filesystem::path(EESCHED_SOURCE_DIR) / "data/tasks/dev.jsonl");
  EXPECT_GE(dev.size(), 200u);
}

TEST(MakeSuite, NamedModelsRangesBatchCapAndIdsFollowTheOptions) {
  MakeSuiteOptions o;
  o.count = 200;
  o.models = {{"a", "", false, 1.0}, {"b", "d", false, 1.0}};
  o.min_prompt = 4, o.max_prompt = 128, o.min_new = 1, o.max_new = 48, o.max_batch = 2, o.id_prefix = "preset";
  const auto tasks = make_suite(o);
  ASSERT_EQ(tasks.size(), 200u);
  EXPECT_EQ(tasks.front().id, "preset-0000");
  EXPECT_EQ(tasks.back().id, "preset-0199");
  std::set<int64_t> batches, prompts, news;
  std::map<std::string, int> per_model;
  for (const auto& t : tasks) {
    batches.insert(t.batch);
    prompts.insert(t.prompt_tokens);
    news.insert(t.generation.max_new_tokens);
    per_model[t.model] += 1;
    EXPECT_TRUE(t.prompt.empty());
    EXPECT_EQ(t.draft, t.model == "b" ? "d" : "");
  }
  EXPECT_EQ(batches, (std::set<int64_t>{1, 2}));
  EXPECT_GE(*prompts.begin(), 4);
  EXPECT_LE(*prompts.rbegin(), 128);
  EXPECT_GT(prompts.size(), 40u);
  EXPECT_GE(*news.begin(), 1);
  EXPECT_LE(*news.rbegin(), 48);
  EXPECT_GT(per_model["a"], 70);
  EXPECT_GT(per_model["b"], 70);
  o.min_new = 50;
  EXPECT_THROW(make_suite(o), Error);
  o.min_new = 1, o.max_batch = 0;
  EXPECT_THROW(make_suite(o), Error);

  // The committed presets suite is this generator's output (README: its make-suite command).
  MakeSuiteOptions p;
  p.seed = 29, p.count = 24, p.models = {{"llama3.2-1b", "", false, 1.0}, {"qwen2.5-0.5b", "", false, 1.0}};
  p.min_prompt = 4, p.max_prompt = 128, p.min_new = 1, p.max_new = 48, p.max_batch = 2, p.id_prefix = "preset";
  const auto made = make_suite(p);
  const auto committed = read_suite(std::filesystem::path(EESCHED_SOURCE_DIR) / "data/tasks/presets.jsonl");
  ASSERT_EQ(committed.size(), made.size());
  for (std::size_t i = 0; i < made.size(); ++i) EXPECT_EQ(task_to_json(committed[i]), task_to_json(made[i])) << i;
}

}  // namespace
}  // namespace eesched::data
