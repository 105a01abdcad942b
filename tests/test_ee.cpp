// Equivariant Encryption: keys, the model transform, the codec, and the proof that encrypted
// inference decrypts to plaintext inference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "ee/attack_weights.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/manifest.h"
#include "ee/rotate.h"
#include "ee/transform.h"
#include "runtime/error.h"
#include "runtime/ffn_stats.h"
#include "runtime/generate.h"
#include "runtime/safetensors.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace rt = eesched::runtime;
using eesched::testing::sampling;
using eesched::testing::with_sampling;
namespace ee = eesched::ee;
using eesched::testing::error_of;
using eesched::testing::TempDir;
using ::testing::HasSubstr;

using eesched::testing::fixed_key;
using eesched::testing::gqa_config;
using eesched::testing::spread_model;
using eesched::testing::synthetic_gqa;
using eesched::testing::target_model;
using eesched::testing::varied_prompts;

namespace {

// Greedy generation of every prompt on the plaintext and the encrypted model (in batches):
// decrypting the encrypted output must give exactly the plaintext output.
void expect_equivariant_generation(const rt::LlamaModel& plain, const ee::Key& key,
                                   const std::vector<std::vector<int64_t>>& prompts, int64_t new_tokens) {
  const auto encrypted = ee::encrypt_model(plain, key, ee::model_fingerprint(plain));
  const ee::Codec codec(key);
  rt::GenerateOptions o;
  o.generation.max_new_tokens = new_tokens;
  o.generation.stop_ids = {2};
  rt::GenerateOptions oe = o;
  oe.generation.stop_ids = codec.encrypt(o.generation.stop_ids);
  int checked = 0;
  for (std::size_t start = 0; start < prompts.size(); start += 10) {
    std::vector<std::vector<int64_t>> batch(prompts.begin() + static_cast<std::ptrdiff_t>(start),
                                            prompts.begin() + static_cast<std::ptrdiff_t>(std::min(prompts.size(), start + 10)));
    std::vector<std::vector<int64_t>> wire;
    for (const auto& p : batch) wire.push_back(codec.encrypt(p));
    auto a = rt::generate(plain, batch, o);
    auto b = rt::generate(encrypted, wire, oe);
    for (std::size_t i = 0; i < batch.size(); ++i, ++checked) {
      EXPECT_EQ(codec.decrypt(b.tokens[i]), a.tokens[i]) << "prompt " << start + i << " of length " << batch[i].size();
      EXPECT_EQ(b.finish_reason[i], a.finish_reason[i]);
      // The wire never carries a plaintext prompt (beyond chance collisions of single ids).
    }
  }
  EXPECT_GE(checked, 50);
}

TEST(EeKey, PermutationsAreDeterministicPerLabelAndValid) {
  const auto key = fixed_key(1000);
  const auto p = key.permutation("vocab", 1000);
  EXPECT_EQ(p, key.permutation("vocab", 1000));
  EXPECT_NE(p, key.permutation("resid/abc", 1000));
  EXPECT_NE(p, fixed_key(1000, 8).permutation("vocab", 1000));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  int fixed_points = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed_points += p[static_cast<std::size_t>(i)] == i;
  EXPECT_LT(fixed_points, 8);  // a uniform permutation has ~1 fixed point
  const auto inv = ee::inverse(p);
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(inv[static_cast<std::size_t>(p[static_cast<std::size_t>(i)])], i);
  const auto angles = key.angles("qk", 64);
  for (double a : angles) {
    EXPECT_GE(a, 0.0);
    EXPECT_LT(a, 2 * M_PI);
  }
  EXPECT_NE(angles, key.angles("qk2", 64));
}

TEST(EeKey, VocabPermutationIsSharedAcrossModelsHiddenOnesAreNot) {
  const auto key = fixed_key(300);
  const auto c = synthetic_gqa(1).config();
  const auto a = ee::derive_secrets(key, c, "model-a");
  const auto b = ee::derive_secrets(key, c, "model-b");
  EXPECT_EQ(a.vocab, b.vocab);  // a draft and its target must agree on token ids
  EXPECT_NE(a.residual, b.residual);
  EXPECT_NE(a.layers[0].ffn, b.layers[0].ffn);
  // Every q head stays in the group of its kv head.
  for (const auto& layer : a.layers)
    for (int64_t h = 0; h < c.num_attention_heads; ++h)
      EXPECT_EQ(layer.q_heads[static_cast<std::size_t>(h)] / c.kv_groups(), layer.kv_heads[static_cast<std::size_t>(h / c.kv_groups())]);
}

TEST(EeKey, FileRoundTripModeAndRefusals) {
  TempDir dir;
  const auto key = ee::Key::generate(1024);
  const auto path = dir / "k.eekey";
  key.save(path, false);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto back = ee::Key::load(path);
  EXPECT_EQ(back.fingerprint(), key.fingerprint());
  EXPECT_EQ(back.permutation("vocab", 1024), key.permutation("vocab", 1024));
  EXPECT_EQ(key.fingerprint().size(), 32u);
  EXPECT_NE(ee::Key::generate(1024).fingerprint(), key.fingerprint());

  EXPECT_THAT(error_of([&] { key.save(path, false); }), HasSubstr("already exists"));
  key.save(path, true);

  const std::string text = eesched::testing::read_file(path);
  auto write = [&](const std::string& name, const std::string& body) {
    std::ofstream(dir / name) << body;
    return dir / name;
  };
  EXPECT_THAT(error_of([&] { ee::Key::load(write("trunc", text.substr(0, text.size() / 2))); }), HasSubstr("not a key file"));
  auto j = nlohmann::json::parse(text);
  auto bad_version = j;
  bad_version["version"] = 99;
  EXPECT_THAT(error_of([&] { ee::Key::load(write("v", bad_version.dump())); }), HasSubstr("version 99"));
  auto bad_secret = j;
  bad_secret["secret"] = std::string(63, 'a');
  EXPECT_THAT(error_of([&] { ee::Key::load(write("s", bad_secret.dump())); }), HasSubstr("hex digits"));
  auto flipped = j;
  auto s = flipped["secret"].get<std::string>();
  s[0] = s[0] == 'a' ? 'b' : 'a';
  flipped["secret"] = s;
  EXPECT_THAT(error_of([&] { ee::Key::load(write("f", flipped.dump())); }), HasSubstr("fingerprint does not match"));
  EXPECT_THAT(error_of([&] { ee::Key::load(dir / "absent"); }), HasSubstr("cannot read key file"));
}

TEST(EeCodec, RoundTripsAndRejectsOutOfRangeIds) {
  const auto key = fixed_key(50);
  const ee::Codec codec(key);
  std::vector<int64_t> ids{0, 1, 2, 49, 17, 17};
  const auto wire = codec.encrypt(ids);
  EXPECT_EQ(codec.decrypt(wire), ids);
  EXPECT_EQ(wire[4], wire[5]);  // a substitution: equal ids stay equal (see docs/ee.md)
  EXPECT_NE(wire, ids);
  EXPECT_THROW(codec.encrypt(50), rt::Error);
  EXPECT_THROW(codec.decrypt(-1), rt::Error);
}

TEST(EeTransform, LogitsArePermutedPlaintextLogitsAtEveryPosition) {
  for (bool use_target : {false, true}) {
    const auto plain = use_target ? rt::LlamaModel::load(eesched::testing::source_dir() / "models" / "target") : synthetic_gqa(5);
    const auto key = fixed_key(plain.config().vocab_size);
    const auto encrypted = ee::encrypt_model(plain, key, "m");
    const ee::Codec codec(key);
    const auto ids = varied_prompts(1, plain.config().vocab_size, 9)[0];
    std::vector<int64_t> long_ids = ids;
    while (long_ids.size() < 40) long_ids.push_back(static_cast<int64_t>(long_ids.size() * 13 % plain.config().vocab_size));
    c10::InferenceMode guard;
    auto a = plain.forward(at::tensor(long_ids, at::kLong).view({1, -1}))[0];
    auto b = encrypted.forward(at::tensor(codec.encrypt(long_ids), at::kLong).view({1, -1}))[0];
    // b[:, pv[t]] == a[:, t]
    std::vector<int64_t> pv(static_cast<std::size_t>(plain.config().vocab_size));
    for (int64_t t = 0; t < plain.config().vocab_size; ++t) pv[static_cast<std::size_t>(t)] = codec.encrypt(t);
    auto b_in_plain_order = b.index_select(1, at::tensor(pv, at::kLong));
    EXPECT_LT((b_in_plain_order - a).abs().max().item<double>(), 1e-4) << (use_target ? "target" : "synthetic");
    EXPECT_GT(a.abs().max().item<double>(), 0.5);  // logits are not trivially small
  }
}

TEST(EeTransform, GreedyGenerationDecryptsToPlaintextOnSyntheticGqa) {
  const auto plain = synthetic_gqa(11);
  expect_equivariant_generation(plain, fixed_key(plain.config().vocab_size), varied_prompts(50, plain.config().vocab_size, 3), 12);
}

TEST(EeTransform, GreedyGenerationDecryptsToPlaintextOnTargetModel) {
  const auto& plain = target_model();
  const auto tok = rt::Tokenizer::load(eesched::testing::tokenizer_path());
  const std::vector<std::string> texts = {
      "Fellow-Citizens of the Senate and House of Representatives:", "The state of the Union is strong.",
      "Our economy", "We must", "In the coming year, the Congress will be asked to consider the budget and the",
      "Peace", "The people of the United States have", "I recommend to the Congress", "Our foreign relations",
      "It is my duty to report that the public debt has been reduced by more than"};
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& t : texts) {
    const auto ids = tok.encode(t);
    for (std::size_t cut : {std::size_t{1}, std::size_t{2}, ids.size() / 2 + 1, ids.size(), ids.size()})
      prompts.emplace_back(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min(cut, ids.size())));
  }
  auto more = varied_prompts(10, plain.config().vocab_size, 21);  // long ones too
  prompts.insert(prompts.end(), more.begin(), more.end());
  ASSERT_GE(prompts.size(), 50u);
  expect_equivariant_generation(plain, fixed_key(plain.config().vocab_size), prompts, 16);
}

TEST(EeTransform, SamplingDistributionIsThePermutedPlaintextDistribution) {
  const auto plain = synthetic_gqa(13);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto encrypted = ee::encrypt_model(plain, key, "m");
  const ee::Codec codec(key);
  const std::vector<int64_t> prompt{1, 44, 45, 100, 7};
  c10::InferenceMode guard;
  auto a = plain.forward(at::tensor(prompt, at::kLong).view({1, -1}))[0][-1].contiguous();
  auto b = encrypted.forward(at::tensor(codec.encrypt(prompt), at::kLong).view({1, -1}))[0][-1].contiguous();
  const int64_t V = plain.config().vocab_size;
  for (const rt::GenerationParams& p : {sampling(1.0, 0, 1.0, 0), sampling(0.7, 40, 0.9, 0)}) {
    const auto pa = rt::sampling_distribution(a.data_ptr<float>(), V, p);
    const auto pb = rt::sampling_distribution(b.data_ptr<float>(), V, p);
    double mass = 0;
    for (int64_t t = 0; t < V; ++t) {
      EXPECT_NEAR(pb[static_cast<std::size_t>(codec.encrypt(t))], pa[static_cast<std::size_t>(t)], 1e-5);
      mass += pa[static_cast<std::size_t>(t)];
    }
    EXPECT_NEAR(mass, 1.0, 1e-4);
  }
  // And seeded sampling through the whole loop draws the permuted tokens.
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 20;
  o.generation = with_sampling(o.generation, 0.9, 0, 0.95, 77);
  auto sa = rt::generate(plain, {prompt}, o);
  auto sb = rt::generate(encrypted, {codec.encrypt(prompt)}, o);
  EXPECT_EQ(codec.decrypt(sb.tokens[0]), sa.tokens[0]);
}

TEST(EeTransform, EveryWeightChangesExceptTheInvariantOnes) {
  // The trained target model: all its norm weights are learned (non-constant), so every tensor,
  // norms included, must change. The one mathematically invariant case is a tensor that is
  // constant along the permuted axes, e.g. the all-ones norm weights of a freshly initialized
  // model: permuting a constant vector gives the same vector. We check that case separately.
  const auto& plain = target_model();
  const auto encrypted = ee::encrypt_model(plain, fixed_key(plain.config().vocab_size), "m");
  const auto a = plain.weights().named(), b = encrypted.weights().named();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.sizes(), b[i].second.sizes());
    EXPECT_FALSE(at::allclose(a[i].second, b[i].second)) << a[i].first << " did not change";
  }
  const auto fresh = rt::random_model(synthetic_gqa(1).config(), 3);
  const auto fe = ee::encrypt_model(fresh, fixed_key(300), "m");
  EXPECT_TRUE(at::equal(fresh.weights().norm, fe.weights().norm));                       // invariant: all ones
  EXPECT_FALSE(at::equal(fresh.weights().layers[0].q_proj, fe.weights().layers[0].q_proj));  // not invariant
}

TEST(EeTransform, DifferentKeyGivesDifferentWeightsAndGarbage) {
  const auto plain = synthetic_gqa(17);
  const auto k1 = fixed_key(300, 1), k2 = fixed_key(300, 2);
  const auto e1 = ee::encrypt_model(plain, k1, "m"), e2 = ee::encrypt_model(plain, k2, "m");
  EXPECT_FALSE(at::allclose(e1.weights().embed_tokens, e2.weights().embed_tokens));
  const std::vector<int64_t> prompt{1, 10, 20, 30, 40};
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 16;
  const auto truth = rt::generate(plain, {prompt}, o).tokens[0];
  // The right key's wire ids on the wrong key's model, decrypted with the right key.
  const auto wrong = ee::Codec(k1).decrypt(rt::generate(e2, {ee::Codec(k1).encrypt(prompt)}, o).tokens[0]);
  EXPECT_NE(wrong, truth);
}

using eesched::testing::family_model;

const std::vector<std::string> kFamilies = {"qwen2", "qwen3", "llama3", "mistral"};

TEST(EeFamilies, LogitsArePermutedPlaintextLogits) {
  uint64_t seed = 40;
  for (const auto& family : kFamilies) {
    SCOPED_TRACE(family);
    const auto plain = family_model(family, seed++);
    const auto key = fixed_key(plain.config().vocab_size);
    const auto encrypted = ee::encrypt_model(plain, key, "m-" + family);
    EXPECT_EQ(encrypted.config().model_type, plain.config().model_type);
    const ee::Codec codec(key);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % plain.config().vocab_size);
    c10::InferenceMode guard;
    auto a = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
    auto b = encrypted.forward(at::tensor(codec.encrypt(ids), at::kLong).view({1, -1}))[0];
    std::vector<int64_t> pv;
    for (int64_t t = 0; t < plain.config().vocab_size; ++t) pv.push_back(codec.encrypt(t));
    EXPECT_LT((b.index_select(1, at::tensor(pv, at::kLong)) - a).abs().max().item<double>(), 1e-4);
    EXPECT_GT(a.abs().max().item<double>(), 0.5);
    // The attention weights did change (biases and q/k rows included).
    const auto pw = plain.weights().layers[0], ew = encrypted.weights().layers[0];
    EXPECT_FALSE(at::allclose(pw.q_proj, ew.q_proj));
    EXPECT_FALSE(at::allclose(pw.v_proj, ew.v_proj));
    if (pw.q_bias.defined()) {
      EXPECT_FALSE(at::allclose(pw.q_bias, ew.q_bias));
      EXPECT_FALSE(at::allclose(pw.k_bias, ew.k_bias));
      EXPECT_FALSE(at::allclose(pw.v_bias, ew.v_bias));
    }
    if (pw.q_norm.defined()) {
      EXPECT_TRUE(at::equal(pw.q_norm, ew.q_norm));  // shared by heads, flips commute
    }
  }
}

TEST(EeFamilies, GreedyGenerationDecryptsToPlaintext) {
  uint64_t seed = 60;
  for (const auto& family : kFamilies) {
    SCOPED_TRACE(family);
    const auto plain = family_model(family, seed++);
    expect_equivariant_generation(plain, fixed_key(plain.config().vocab_size), varied_prompts(50, plain.config().vocab_size, 5), 10);
  }
}

// Why qk-norm models get sign flips, not rotations: a rotation of a RoPE pair does not commute
// with the per-head norm's elementwise weight, and the encrypted model would be wrong.
TEST(EeFamilies, PairRotationsWouldBreakQkNormSignFlipsDoNot) {
  const auto plain = family_model("qwen3", 80);
  const auto& c = plain.config();
  const auto key = fixed_key(c.vocab_size);
  auto secrets = ee::derive_secrets(key, c, "m");
  for (const auto& l : secrets.layers)
    for (const auto& g : l.qk_angles)
      for (double a : g) EXPECT_TRUE(a == 0.0 || a == M_PI) << a;
  const auto names = ee::transform_names(c);
  EXPECT_NE(std::find(names.begin(), names.end(), "q_k_rope_pair_sign_flip"), names.end());
  const ee::Codec codec(key);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 20; ++i) ids.push_back((i * 31 + 7) % c.vocab_size);
  c10::InferenceMode guard;
  const auto a = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
  std::vector<int64_t> pv;
  for (int64_t t = 0; t < c.vocab_size; ++t) pv.push_back(codec.encrypt(t));
  auto error_with = [&](const ee::ModelSecrets& s) {
    rt::LlamaModel e(ee::encrypt_config(c, s), ee::encrypt_weights(plain.weights(), c, s));
    const auto b = e.forward(at::tensor(codec.encrypt(ids), at::kLong).view({1, -1}))[0];
    return (b.index_select(1, at::tensor(pv, at::kLong)) - a).abs().max().item<double>();
  };
  EXPECT_LT(error_with(secrets), 1e-4);
  for (auto& l : secrets.layers)
    for (auto& g : l.qk_angles)
      for (auto& x : g) x = 0.7;  // a generic rotation
  EXPECT_GT(error_with(secrets), 1e-2);
}

// 16-bit models: the encrypted copy keeps the dtype (so it streams the same bytes per token) and
// is exact, because only permutations and per-pair quarter turns (sign flips for qk-norm) are
// applied, which map values onto values (a generic rotation would not be representable in bf16);
// logits are the permuted plaintext logits, greedy ids decrypt.
// Every q/k pair angle is a quarter turn (0, pi/2, pi, 3pi/2), all four drawn; qk-norm models
// get only 0 and pi. The manifest names which, and never a continuous rotation.
void expect_quarter_turns(const ee::ModelSecrets& secrets, const rt::LlamaConfig& c) {
  std::set<double> seen;
  for (const auto& l : secrets.layers)
    for (const auto& g : l.qk_angles)
      for (double a : g) {
        EXPECT_TRUE(a == 0.0 || a == M_PI / 2 || a == M_PI || a == 3 * M_PI / 2) << a;
        seen.insert(a);
      }
  EXPECT_EQ(seen.size(), c.qk_norm ? 2u : 4u);
  if (c.qk_norm) {
    EXPECT_EQ(seen, (std::set<double>{0.0, M_PI}));
  }
  const auto names = ee::transform_names(c);
  EXPECT_NE(std::find(names.begin(), names.end(), c.qk_norm ? "q_k_rope_pair_sign_flip" : "q_k_rope_pair_quarter_turn"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), std::string(ee::kContinuousRotationTransform)), names.end());
}

TEST(EeFamilies, EveryFamilyGetsQuarterTurnsOrSignFlips) {
  uint64_t seed = 85;
  for (const auto& family : kFamilies) {
    SCOPED_TRACE(family);
    const auto c = family_model(family, seed++).config();
    expect_quarter_turns(ee::derive_secrets(fixed_key(c.vocab_size), c, "m"), c);
  }
}

TEST(EeFamilies, HalfPrecisionModelsEncryptExactlyInTheirDtype) {
  uint64_t seed = 90;
  for (const auto& family : kFamilies) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      SCOPED_TRACE(family + (dtype == at::kHalf ? " f16" : " bf16"));
      const auto base = family_model(family, seed++);
      auto c = base.config();
      c.torch_dtype = dtype == at::kHalf ? "float16" : "bfloat16";
      const rt::LlamaModel plain(c, eesched::testing::weights_in(base.weights(), dtype));
      ASSERT_EQ(plain.dtype(), dtype);
      const rt::LlamaModel wide(c, eesched::testing::weights_in(plain.weights(), at::kFloat));
      // The fingerprint is that of the f32 widening (as before 16-bit weights were kept).
      EXPECT_EQ(ee::model_fingerprint(plain), ee::model_fingerprint(wide));
      const auto key = fixed_key(c.vocab_size);
      const auto secrets = ee::derive_secrets(key, c, "m");
      expect_quarter_turns(secrets, c);

      const rt::LlamaModel encrypted(ee::encrypt_config(c, secrets), ee::encrypt_weights(plain.weights(), c, secrets));
      EXPECT_EQ(encrypted.dtype(), dtype);
      EXPECT_EQ(encrypted.weight_bytes(), plain.weight_bytes());
      // Exact: the same values as the transform of the f32 widening, every tensor.
      const auto e16 = encrypted.weights().named();
      const auto e32 = ee::encrypt_weights(wide.weights(), c, secrets).named();
      ASSERT_EQ(e16.size(), e32.size());
      for (std::size_t i = 0; i < e16.size(); ++i) {
        EXPECT_EQ(e16[i].first, e32[i].first);
        EXPECT_TRUE(at::equal(e16[i].second.to(at::kFloat), e32[i].second.to(at::kFloat))) << e16[i].first;
        if (e16[i].first.find("proj.weight") != std::string::npos) {
          EXPECT_EQ(e16[i].second.scalar_type(), dtype) << e16[i].first;
        }
      }
      const auto pw = plain.weights().layers[0], ew = encrypted.weights().layers[0];
      EXPECT_FALSE(at::equal(pw.q_proj, ew.q_proj));
      EXPECT_FALSE(at::equal(pw.k_proj, ew.k_proj));

      const ee::Codec codec(key);
      std::vector<int64_t> ids;
      for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % c.vocab_size);
      c10::InferenceMode guard;
      auto a = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
      auto b = encrypted.forward(at::tensor(codec.encrypt(ids), at::kLong).view({1, -1}))[0];
      std::vector<int64_t> pv;
      for (int64_t t = 0; t < c.vocab_size; ++t) pv.push_back(codec.encrypt(t));
      EXPECT_LT((b.index_select(1, at::tensor(pv, at::kLong)) - a).abs().max().item<double>(), 1e-4);
      EXPECT_GT(a.abs().max().item<double>(), 0.5);
      if (dtype == at::kBFloat16)
        expect_equivariant_generation(plain, key, varied_prompts(50, c.vocab_size, seed), 8);
    }
  }
}

// `encrypt-model` on a bf16 directory: the encrypted directory is bf16 too, and lists the quarter turns.
TEST(EeModelDir, Bf16DirectoryEncryptsToBf16) {
  TempDir dir;
  const auto base = family_model("llama3", 95);
  auto c = base.config();
  c.torch_dtype = "bfloat16";
  const rt::LlamaModel plain(c, eesched::testing::weights_in(base.weights(), at::kBFloat16));
  plain.save(dir / "plain");
  EXPECT_EQ(rt::SafetensorsFile::open(dir / "plain" / "model.safetensors").tensors()[0].dtype, rt::DType::BF16);
  const auto key = fixed_key(c.vocab_size);
  ee::encrypt_model_dir(dir / "plain", key, dir / "enc", false);
  const auto file = rt::SafetensorsFile::open(dir / "enc" / "model.safetensors");
  for (const auto& info : file.tensors()) EXPECT_EQ(info.dtype, rt::DType::BF16) << info.name;
  const auto encrypted = rt::LlamaModel::load(dir / "enc");
  EXPECT_EQ(encrypted.config().torch_dtype, "bfloat16");
  EXPECT_EQ(encrypted.dtype(), at::kBFloat16);
  EXPECT_EQ(encrypted.weight_bytes(), plain.weight_bytes());
  const auto m = ee::Manifest::read(dir / "enc");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->transforms, ee::transform_names(c));
  EXPECT_NE(std::find(m->transforms.begin(), m->transforms.end(), "q_k_rope_pair_quarter_turn"), m->transforms.end());
  // What encrypt_model gives in memory, bit for bit.
  const auto reloaded = rt::LlamaModel::load(dir / "plain");
  const auto expected = ee::encrypt_model(reloaded, key, ee::model_fingerprint(reloaded));
  const auto x = expected.weights().named(), y = encrypted.weights().named();
  ASSERT_EQ(x.size(), y.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(at::equal(x[i].second, y[i].second.to(x[i].second.scalar_type()))) << x[i].first;
}

TEST(EeModelDir, EncryptedDirectoryHasManifestNoTokenizerNoKeyBytes) {
  TempDir dir;
  const auto plain_dir = dir / "plain";
  eesched::testing::tiny_model().save(plain_dir);
  std::filesystem::copy_file(eesched::testing::tokenizer_path(), plain_dir / "tokenizer.model");
  const auto key = ee::Key::generate(1024);
  key.save(dir / "k.eekey", false);
  const auto r = ee::encrypt_model_dir(plain_dir, key, dir / "enc", false);
  EXPECT_EQ(r.key_fingerprint, key.fingerprint());
  EXPECT_FALSE(std::filesystem::exists(dir / "enc" / "tokenizer.model"));
  const auto m = ee::Manifest::read(dir / "enc");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->key_fingerprint, key.fingerprint());
  EXPECT_EQ(m->transforms, ee::transform_names());
  EXPECT_NO_THROW(m->check_key(key));
  EXPECT_THAT(error_of([&] { m->check_key(ee::Key::generate(1024)); }), HasSubstr("wrong key"));

  // No key material anywhere in the directory: neither the secret's hex nor its raw bytes.
  const auto key_json = nlohmann::json::parse(eesched::testing::read_file(dir / "k.eekey"));
  const std::string hex = key_json["secret"];
  std::string raw;
  for (std::size_t i = 0; i < hex.size(); i += 2) raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  for (const auto& entry : std::filesystem::directory_iterator(dir / "enc")) {
    const auto bytes = eesched::testing::read_file(entry.path());
    EXPECT_EQ(bytes.find(hex), std::string::npos) << entry.path();
    EXPECT_EQ(bytes.find(raw), std::string::npos) << entry.path();
  }

  // Refusals: an encrypted input, an existing output, a key for another vocabulary.
  EXPECT_THAT(error_of([&] { ee::encrypt_model_dir(dir / "enc", key, dir / "enc2", false); }), HasSubstr("already encrypted"));
  EXPECT_THAT(error_of([&] { ee::encrypt_model_dir(plain_dir, key, dir / "enc", false); }), HasSubstr("already holds a model"));
  EXPECT_THAT(error_of([&] { ee::encrypt_model_dir(plain_dir, ee::Key::generate(999), dir / "enc3", false); }),
              HasSubstr("vocabulary of 999"));
}

}  // namespace

namespace {

TEST(EeModelDir, ManifestRoundTripsQualityAndRefusesABadEntryInOneLine) {
  TempDir dir;
  ee::Manifest m{ee::kScheme, ee::kSchemeVersion, "ab12", 1024, ee::transform_names(), {}};
  m.quality = {{"int8", {1.0031, 0.97}}, {"prune30", {1.21, 0.74}}, {"int8+prune30", {1.23, 0.72}}};
  m.write(dir.path());
  const auto back = ee::Manifest::read(dir.path());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->quality, m.quality);
  EXPECT_EQ(back->transforms, m.transforms);
  // No plaintext, no key material: the quality is a map of transform names to two numbers.
  auto j = nlohmann::json::parse(eesched::testing::read_file(dir / "ee.json"));
  EXPECT_EQ(j["quality"]["int8"]["ppl_ratio"], 1.0031);

  // An ee.json from before quality was recorded still loads, with none.
  j.erase("quality");
  std::ofstream(dir / "ee.json") << j.dump();
  ASSERT_TRUE(ee::Manifest::read(dir.path()));
  EXPECT_TRUE(ee::Manifest::read(dir.path())->quality.empty());

  // A directory encrypted by an earlier eesched, with continuous q/k rotations, is refused in one
  // line: int8/bf16/f16 arms convert q/k, which only the exact turns commute with.
  {
    auto old = j;
    old["transforms"] = {"vocab_permutation", "residual_permutation", "q_k_rope_pair_rotation"};
    std::ofstream(dir / "ee.json") << old.dump();
    const auto why = error_of([&] { ee::Manifest::read(dir.path()); });
    EXPECT_THAT(why, HasSubstr("continuous q/k rotations"));
    EXPECT_THAT(why, HasSubstr("encrypt-model"));
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  }

  // A bad entry is one line naming the file and the entry.
  for (const auto& [bad, needle] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"int8", {{"ppl_ratio", -1.0}, {"top1_agreement", 0.9}}}}, "'int8': ppl_ratio must be a positive number"},
           {{{"prune30", {{"ppl_ratio", 1.1}, {"top1_agreement", 1.5}}}}, "'prune30': top1_agreement"},
           {{{"kv", {{"ppl_ratio", 1.0}, {"top1_agreement", 1.0}}}}, "'kv'"},
           {{{"int8", {{"ppl_ratio", "low"}}}}, "'int8' needs numeric"},
           {nlohmann::json::array(), "must be an object"}}) {
    j["quality"] = bad;
    std::ofstream(dir / "ee.json") << j.dump();
    const auto why = error_of([&] { ee::Manifest::read(dir.path()); });
    EXPECT_THAT(why, HasSubstr("ee.json"));
    EXPECT_THAT(why, HasSubstr(needle));
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  }
}

TEST(EeModelDir, PruneStatisticsTravelPermutedWithTheEncryptedModel) {
  TempDir dir;
  const auto plain_dir = dir / "plain";
  auto model = eesched::testing::tiny_model(4);
  std::vector<at::Tensor> stats;
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) stats.push_back(at::rand({model.config().intermediate_size}, at::kDouble));
  model = rt::with_ffn_stats(model, stats);
  model.save(plain_dir);
  ASSERT_TRUE(std::filesystem::exists(plain_dir / rt::kFfnStatsFile));
  const auto loaded = rt::LlamaModel::load(plain_dir);
  ASSERT_TRUE(loaded.has_ffn_stats());
  for (std::size_t l = 0; l < stats.size(); ++l) EXPECT_TRUE(at::equal(rt::ffn_stats_of(loaded)[l], stats[l]));

  const auto key = fixed_key(1024);
  ee::EncryptDirOptions options;
  options.quality = {{"prune20", {1.02, 0.9}}};
  ee::encrypt_model_dir(plain_dir, key, dir / "enc", options);
  EXPECT_EQ(ee::Manifest::read(dir / "enc")->quality, options.quality);
  const auto enc = rt::LlamaModel::load(dir / "enc");
  const auto secrets = ee::derive_secrets(key, model.config(), ee::model_fingerprint(model));
  for (std::size_t l = 0; l < stats.size(); ++l) {
    const auto moved = stats[l].index_select(0, at::tensor(ee::inverse(secrets.layers[l].ffn), at::kLong));
    EXPECT_TRUE(at::equal(rt::ffn_stats_of(enc)[l], moved)) << "layer " << l;
  }
  // The statistics do not enter the fingerprint, so the secrets do not depend on them.
  EXPECT_EQ(ee::model_fingerprint(model), ee::model_fingerprint(rt::with_ffn_stats(model, {})));

  // Saving a model without statistics removes a stale file; a broken file is one line naming it.
  rt::with_ffn_stats(model, {}).save(dir / "again");
  std::filesystem::copy_file(plain_dir / rt::kFfnStatsFile, dir / "again" / rt::kFfnStatsFile);
  rt::with_ffn_stats(model, {}).save(dir / "again");
  EXPECT_FALSE(std::filesystem::exists(dir / "again" / rt::kFfnStatsFile));
  rt::write_ffn_stats(plain_dir / rt::kFfnStatsFile, {stats[0]});  // one layer of two
  auto why = error_of([&] { rt::LlamaModel::load(plain_dir); });
  EXPECT_THAT(why, HasSubstr("prune_stats.safetensors"));
  EXPECT_THAT(why, HasSubstr("model.layers.1.mlp.activation_mean_square"));
  rt::write_ffn_stats(plain_dir / rt::kFfnStatsFile, {stats[0], -stats[1]});
  EXPECT_THAT(error_of([&] { rt::LlamaModel::load(plain_dir); }), HasSubstr("negative"));
  rt::write_ffn_stats(plain_dir / rt::kFfnStatsFile, {stats[0], stats[1].narrow(0, 0, 10)});
  EXPECT_THAT(error_of([&] { rt::LlamaModel::load(plain_dir); }), HasSubstr("FFN neurons"));
}

// The weights attack (threat model: the worker holds the public base weights). It must recover
// every permutation when the weights it holds are the ones encrypted, and nothing when they are
// not: a harness that scored 0% because it was broken could not pass the first, nor one that
// matched anything the second.
TEST(EeAttack, WeightsAttackRecoversEveryPermutationFromThePublicWeights) {
  const auto plain = synthetic_gqa(31);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto encrypted = ee::encrypt_model(plain, key, "m");
  const auto truth = ee::derive_secrets(key, plain.config(), "m");
  const auto guess = ee::attack_weights(encrypted.weights(), plain.weights());
  const std::vector<int64_t> text = {5, 5, 9, 200, 17, 5};
  const auto s = ee::score_weights_attack(guess, truth, text);
  EXPECT_EQ(s.vocab_recovered, 1.0);
  EXPECT_EQ(s.tokens_recovered, 1.0);
  EXPECT_EQ(s.residual_recovered, 1.0);
  EXPECT_EQ(s.ffn_recovered, 1.0);

  // Public weights of another model (private weights): nothing matches.
  const auto other = synthetic_gqa(32);
  // (Sorted rows then match nothing, so the attack tries the rotation path too: it finds no
  // structure to align, and its nearest rows are right by chance only, about 1 in 300.)
  const auto none = ee::score_weights_attack(ee::attack_weights(encrypted.weights(), other.weights()), truth, text);
  EXPECT_LT(none.vocab_recovered, 0.02);
  EXPECT_LE(none.tokens_recovered, 0.5);
  EXPECT_LT(none.ffn_recovered, 0.05);

  // Duplicate rows cannot be told apart: two tokens with one embedding (and head) row are
  // reported unrecovered, the rest still are.
  auto w = plain.weights();
  w.embed_tokens = w.embed_tokens.clone();
  w.lm_head = w.lm_head.clone();
  w.embed_tokens[7].copy_(w.embed_tokens[8]);
  w.lm_head[7].copy_(w.lm_head[8]);
  const rt::LlamaModel twins(plain.config(), w);
  const auto twins_enc = ee::encrypt_model(twins, key, "m");
  const auto partial = ee::score_weights_attack(ee::attack_weights(twins_enc.weights(), twins.weights()), truth, {});
  EXPECT_DOUBLE_EQ(partial.vocab_recovered, 1.0 - 2.0 / static_cast<double>(plain.config().vocab_size));
}

// The opt-in "rotate" scheme: a dense secret rotation of the residual stream with the norm
// weights folded in. Exact up to float rounding: the decrypted logits are the plaintext ones
// (to 1e-4 of their scale) and greedy answers are the same, in every family; the norms become
// ones and the head its own matrix.
TEST(EeScheme, RotateDecryptsToPlaintextUpToRoundingInEveryFamily) {
  uint64_t seed = 80;
  for (const auto& family : kFamilies) {
    SCOPED_TRACE(family);
    const auto plain = family_model(family, seed++);
    const auto key = fixed_key(plain.config().vocab_size);
    const auto scheme = ee::make_scheme("rotate", 0);
    const auto encrypted = ee::encrypt_model(plain, key, "m", scheme);
    EXPECT_FALSE(encrypted.config().tie_word_embeddings);
    const auto ew = encrypted.weights();
    EXPECT_TRUE(at::equal(ew.norm, at::ones_like(ew.norm)));
    EXPECT_TRUE(at::equal(ew.layers[0].input_layernorm, at::ones_like(ew.layers[0].input_layernorm)));
    // Every residual row is mixed: no row of the embedding is a permutation of a plaintext row.
    EXPECT_EQ(ee::attack_weights(ew, plain.weights()).method, "eigenvectors + procrustes");
    const ee::Codec codec(key);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % plain.config().vocab_size);
    c10::InferenceMode guard;
    const auto a = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
    const auto b = encrypted.forward(at::tensor(codec.encrypt(ids), at::kLong).view({1, -1}))[0];
    std::vector<int64_t> pv;
    for (int64_t t = 0; t < plain.config().vocab_size; ++t) pv.push_back(codec.encrypt(t));
    const double scale = a.abs().max().item<double>();
    EXPECT_GT(scale, 0.5);
    EXPECT_LT((b.index_select(1, at::tensor(pv, at::kLong)) - a).abs().max().item<double>(), 1e-4 * scale);
    EXPECT_FALSE(at::equal(b.index_select(1, at::tensor(pv, at::kLong)), a));  // rounding differs: not the permute scheme
    rt::GenerateOptions o;
    o.generation.max_new_tokens = 10;
    const auto prompts = varied_prompts(20, plain.config().vocab_size, 5);
    std::vector<std::vector<int64_t>> wire;
    for (const auto& p : prompts) wire.push_back(codec.encrypt(p));
    const auto pa = rt::generate(plain, prompts, o), pb = rt::generate(encrypted, wire, o);
    for (std::size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(codec.decrypt(pb.tokens[i]), pa.tokens[i]) << "prompt " << i;
  }
}

// Noise (either scheme) is lossy: the encrypted model decrypts to the noised plaintext model,
// which differs from the original; the noise comes from the key (the same key, the same model).
TEST(EeScheme, NoisedModelsDecryptToTheNoisedPlaintext) {
  const auto plain = synthetic_gqa(21);
  const auto key = fixed_key(plain.config().vocab_size);
  const ee::Codec codec(key);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 30; ++i) ids.push_back((i * 53 + 7) % plain.config().vocab_size);
  std::vector<int64_t> pv;
  for (int64_t t = 0; t < plain.config().vocab_size; ++t) pv.push_back(codec.encrypt(t));
  c10::InferenceMode guard;
  const auto original = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
  const auto noised = ee::noised_model(plain, key, "m", 0.2);
  const auto reference = noised.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
  EXPECT_TRUE(at::equal(ee::noised_model(plain, key, "m", 0.2).weights().embed_tokens, noised.weights().embed_tokens));
  EXPECT_GT((reference - original).abs().max().item<double>(), 1e-2);
  for (const char* name : {"permute", "rotate"}) {
    SCOPED_TRACE(name);
    const auto encrypted = ee::encrypt_model(plain, key, "m", ee::make_scheme(name, 0.2));
    const auto b = encrypted.forward(at::tensor(codec.encrypt(ids), at::kLong).view({1, -1}))[0].index_select(1, at::tensor(pv, at::kLong));
    EXPECT_LT((b - reference).abs().max().item<double>(), 1e-4 * reference.abs().max().item<double>());
  }
  EXPECT_THAT(error_of([] { ee::make_scheme("aloe", 0); }), HasSubstr("unknown EE scheme 'aloe'"));
  EXPECT_THAT(error_of([] { ee::make_scheme("rotate", -1); }), HasSubstr("--noise"));
}

// The rotation does not hide the vocabulary from a worker holding the public weights: the Gram
// matrix of a matrix that reads the stream is public up to the rotation, its eigenvectors align
// the bases, and every token goes to its nearest public row. Against other weights it finds
// nothing, so a harness that scored by chance could not pass.
TEST(EeAttack, RotationIsUndoneFromTheGramEigenvectors) {
  const auto plain = synthetic_gqa(33);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto scheme = ee::make_scheme("rotate", 0);
  const auto encrypted = ee::encrypt_model(plain, key, "m", scheme);
  const auto truth = ee::derive_secrets(key, plain.config(), "m", scheme);
  ASSERT_TRUE(truth.rotation.defined());
  const auto guess = ee::attack_weights(encrypted.weights(), plain.weights());
  EXPECT_EQ(guess.method, "eigenvectors + procrustes");
  const auto s = ee::score_weights_attack(guess, truth, {});
  EXPECT_GE(s.vocab_recovered, 0.99);
  EXPECT_GE(s.residual_recovered, 0.95);
  EXPECT_GE(s.ffn_recovered, 0.99);
  const auto none = ee::score_weights_attack(ee::attack_weights(encrypted.weights(), synthetic_gqa(34).weights()), truth, {});
  EXPECT_LT(none.vocab_recovered, 0.02);
  EXPECT_LT(none.residual_recovered, 0.1);
}

// Hidden states: the first layer's input at each position is the encrypted embedding row of the
// token sent; with the weights attack's residual map the worker reads every token of the prompt
// under either scheme. A map from other weights reads (almost) none.
TEST(EeAttack, HiddenStatesOfTheFirstLayerRevealThePrompt) {
  const auto plain = synthetic_gqa(35);
  const auto key = fixed_key(plain.config().vocab_size);
  const ee::Codec codec(key);
  const auto prompt = varied_prompts(3, plain.config().vocab_size, 60)[2];  // 75 tokens
  for (const char* name : {"permute", "rotate"}) {
    SCOPED_TRACE(name);
    const auto encrypted = ee::encrypt_model(plain, key, "m", ee::make_scheme(name, 0));
    const auto states = encrypted.weights().embed_tokens.index_select(0, at::tensor(codec.encrypt(prompt), at::kLong));
    const auto guess = ee::attack_weights(encrypted.weights(), plain.weights());
    EXPECT_EQ(ee::attack_hidden_states(states, plain.weights(), guess), prompt);
    const auto wrong = ee::attack_hidden_states(states, plain.weights(), ee::attack_weights(encrypted.weights(), synthetic_gqa(36).weights()));
    int64_t hits = 0;
    for (std::size_t i = 0; i < prompt.size(); ++i) hits += wrong[i] == prompt[i];
    EXPECT_LE(hits, static_cast<int64_t>(prompt.size()) / 10);
  }
}

// ---- key rotation (ee/rotate.h) ----------------------------------------------------------------

// The plaintext model's logits at every position are the rotated model's under the new key's
// vocabulary permutation, for every family and in 16-bit dtypes, kept exactly in their dtype.
TEST(EeRotate, RotatedModelIsAnEncryptionUnderTheNewKey) {
  uint64_t seed = 140;
  for (const auto& family : kFamilies) {
    for (const bool bf16 : {false, true}) {
      SCOPED_TRACE(family + (bf16 ? " bf16" : " f32"));
      auto plain = family_model(family, seed++);
      if (bf16) {
        auto c = plain.config();
        c.torch_dtype = "bfloat16";
        plain = rt::LlamaModel(c, eesched::testing::weights_in(plain.weights(), at::kBFloat16));
      }
      const int64_t vocab = plain.config().vocab_size;
      const auto old_key = fixed_key(vocab, 7), new_key = fixed_key(vocab, 9);
      const auto encrypted = ee::encrypt_model(plain, old_key, ee::model_fingerprint(plain));
      const auto rotated = ee::rotate_model(encrypted, old_key, new_key);
      EXPECT_EQ(rotated.dtype(), plain.dtype());
      EXPECT_EQ(rotated.weight_bytes(), plain.weight_bytes());
      const ee::Codec old_codec(old_key), new_codec(new_key);
      EXPECT_EQ(rotated.config().eos_token_id, new_codec.encrypt(plain.config().eos_token_id));
      EXPECT_EQ(rotated.config().bos_token_id, new_codec.encrypt(plain.config().bos_token_id));
      std::vector<int64_t> ids;
      for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % vocab);
      c10::InferenceMode guard;
      const auto a = plain.forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
      const auto b = rotated.forward(at::tensor(new_codec.encrypt(ids), at::kLong).view({1, -1}))[0];
      std::vector<int64_t> pv;
      for (int64_t t = 0; t < vocab; ++t) pv.push_back(new_codec.encrypt(t));
      EXPECT_LT((b.index_select(1, at::tensor(pv, at::kLong)) - a).abs().max().item<double>(), bf16 ? 1e-3 : 1e-4);
      EXPECT_GT(a.abs().max().item<double>(), 0.5);
      // Greedy answers decrypt to the plaintext ones.
      rt::GenerateOptions o;
      o.generation.max_new_tokens = 10;
      const auto prompts = varied_prompts(12, vocab, seed);
      std::vector<std::vector<int64_t>> wire;
      for (const auto& p : prompts) wire.push_back(new_codec.encrypt(p));
      const auto want = rt::generate(plain, prompts, o), got = rt::generate(rotated, wire, o);
      for (std::size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(new_codec.decrypt(got.tokens[i]), want.tokens[i]) << "prompt " << i;
      // The old key's view of it is garbage, and every matrix moved (no weight is left as the old
      // encryption had it, nor as a fresh encryption under the new key would have it).
      const auto old_view = rotated.forward(at::tensor(old_codec.encrypt(ids), at::kLong).view({1, -1}))[0];
      std::vector<int64_t> old_pv;
      for (int64_t t = 0; t < vocab; ++t) old_pv.push_back(old_codec.encrypt(t));
      EXPECT_GT((old_view.index_select(1, at::tensor(old_pv, at::kLong)) - a).abs().max().item<double>(), 0.5);
      const auto fresh = ee::encrypt_model(plain, new_key, ee::model_fingerprint(plain));
      const auto ew = encrypted.weights().layers[0], rw = rotated.weights().layers[0], fw = fresh.weights().layers[0];
      for (const auto pick : {&rt::LayerWeights::q_proj, &rt::LayerWeights::gate_proj, &rt::LayerWeights::down_proj}) {
        EXPECT_FALSE(at::equal(ew.*pick, rw.*pick));
        EXPECT_FALSE(at::equal(fw.*pick, rw.*pick));
      }
    }
  }
}

// rotate-key's directory form: quality figures and pruning statistics carried over, the new
// fingerprint in ee.json, the same file sizes; and every mistake refused before anything is written.
TEST(EeRotate, DirectoryRotationCarriesQualityAndStatisticsAndRefusesMistakes) {
  TempDir dir;
  auto model = eesched::testing::tiny_model(4);
  std::vector<at::Tensor> stats;
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) stats.push_back(at::rand({model.config().intermediate_size}, at::kDouble));
  model = rt::with_ffn_stats(model, stats);
  model.save(dir / "plain");
  const auto old_key = fixed_key(1024, 3), new_key = fixed_key(1024, 5);
  ee::EncryptDirOptions options;
  options.quality = {{"int8", {1.004, 0.97}}};
  ee::encrypt_model_dir(dir / "plain", old_key, dir / "enc", options);

  const auto r = ee::rotate_model_dir(dir / "enc", old_key, new_key, dir / "rot", false);
  EXPECT_EQ(r.old_fingerprint, old_key.fingerprint());
  EXPECT_EQ(r.new_fingerprint, new_key.fingerprint());
  EXPECT_EQ(r.bytes, ee::directory_bytes(dir / "rot"));
  EXPECT_EQ(r.bytes, ee::directory_bytes(dir / "enc"));  // the same tensors, shapes and dtypes; same-length JSON
  const auto m = ee::Manifest::read(dir / "rot");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->key_fingerprint, new_key.fingerprint());
  EXPECT_EQ(m->quality, options.quality);
  EXPECT_NO_THROW(m->check_key(new_key));
  EXPECT_THROW(m->check_key(old_key), rt::Error);
  const auto rotated = rt::LlamaModel::load(dir / "rot");
  ASSERT_TRUE(rotated.has_ffn_stats());
  // The statistics moved with the neurons: the same values, permuted.
  for (std::size_t l = 0; l < stats.size(); ++l) {
    auto a = std::get<0>(rt::ffn_stats_of(rotated)[l].sort()), b = std::get<0>(stats[l].sort());
    EXPECT_TRUE(at::equal(a, b)) << "layer " << l;
  }
  // Bit for bit what rotate_model gives in memory.
  const auto expected = ee::rotate_model(rt::LlamaModel::load(dir / "enc"), old_key, new_key);
  const auto x = expected.weights().named(), y = rotated.weights().named();
  ASSERT_EQ(x.size(), y.size());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(at::equal(x[i].second, y[i].second.to(x[i].second.scalar_type()))) << x[i].first;

  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "plain", old_key, new_key, dir / "x", false); }), HasSubstr("is not encrypted"));
  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "enc", new_key, old_key, dir / "x", false); }), HasSubstr("wrong key"));
  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "enc", old_key, old_key, dir / "x", false); }), HasSubstr("the new key is the old key"));
  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "enc", old_key, fixed_key(2048), dir / "x", false); }), HasSubstr("vocabulary of 2048"));
  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "enc", old_key, new_key, dir / "enc", true); }), HasSubstr("must differ"));
  EXPECT_THAT(error_of([&] { ee::rotate_model_dir(dir / "enc", old_key, new_key, dir / "rot", false); }), HasSubstr("--force"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x"));
  // Rotating again, from the rotated directory, to a third key works the same way.
  const auto third = fixed_key(1024, 11);
  ee::rotate_model_dir(dir / "rot", new_key, third, dir / "rot2", false);
  const auto twice = rt::LlamaModel::load(dir / "rot2");
  const ee::Codec codec(third);
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 8;
  const auto prompts = varied_prompts(6, 1024, 17);
  std::vector<std::vector<int64_t>> wire;
  for (const auto& p : prompts) wire.push_back(codec.encrypt(p));
  const auto want = rt::generate(model, prompts, o), got = rt::generate(twice, wire, o);
  for (std::size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(codec.decrypt(got.tokens[i]), want.tokens[i]) << "prompt " << i;
}

}  // namespace
