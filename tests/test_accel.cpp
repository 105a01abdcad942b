// accel/: every acceleration commutes with EE (prepared encrypted weights == encrypted prepared
// weights, decrypted outputs == plaintext outputs), speculative decoding keeps the target's
// output (greedy) and distribution (sampling), int8 stays close to f32, pruning shrinks, and
// arms that do not apply are refused with a reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "accel/arm_cache.h"
#include "accel/half_precision.h"
#include "accel/int8.h"
#include "accel/pruning.h"
#include "accel/quality.h"
#include "accel/registry.h"
#include "accel/run.h"
#include "accel/speculative.h"
#include "data/arm.h"
#include "data/arm_components.h"
#include "data/quality.h"
#include "data/error.h"
#include "ee/codec.h"
#include "ee/transform.h"
#include "runtime/ffn_stats.h"
#include "runtime/gemv.h"
#include "runtime/perplexity.h"
#include "runtime/sampling.h"
#include "runtime/synthetic.h"
#include "runtime/tokenizer.h"
#include "tests/ee_fixtures.h"
#include "tests/test_helpers.h"

namespace rt = eesched::runtime;
using eesched::testing::sampling;
using eesched::testing::with_sampling;
namespace ee = eesched::ee;
namespace accel = eesched::accel;
namespace data = eesched::data;
using eesched::testing::draft_model;
using eesched::testing::error_of;
using eesched::testing::fixed_key;
using eesched::testing::synthetic_gqa;
using eesched::testing::target_model;
using eesched::testing::varied_prompts;
using ::testing::HasSubstr;

namespace {

// The tensor a weight set holds under an HF name ("lm_head.weight" is the embedding when tied).
at::Tensor& slot(rt::LlamaWeights& w, const std::string& name) {
  if (name == "model.embed_tokens.weight") return w.embed_tokens;
  if (name == "lm_head.weight") return w.lm_head.defined() ? w.lm_head : w.embed_tokens;
  if (name == "model.norm.weight") return w.norm;
  const std::string prefix = "model.layers.";
  const auto dot = name.find('.', prefix.size());
  auto& l = w.layers.at(std::stoul(name.substr(prefix.size(), dot - prefix.size())));
  const auto field = name.substr(dot + 1);
  if (field == "self_attn.q_proj.weight") return l.q_proj;
  if (field == "self_attn.k_proj.weight") return l.k_proj;
  if (field == "self_attn.v_proj.weight") return l.v_proj;
  if (field == "self_attn.o_proj.weight") return l.o_proj;
  if (field == "mlp.gate_proj.weight") return l.gate_proj;
  if (field == "mlp.up_proj.weight") return l.up_proj;
  if (field == "mlp.down_proj.weight") return l.down_proj;
  if (field == "input_layernorm.weight") return l.input_layernorm;
  if (field == "post_attention_layernorm.weight") return l.post_attention_layernorm;
  throw std::runtime_error("no weight " + name);
}

rt::LlamaWeights deep_copy(const rt::LlamaWeights& w) {
  rt::LlamaWeights out = w;
  for (auto* t : {&out.embed_tokens, &out.norm, &out.lm_head})
    if (t->defined()) *t = t->clone();
  for (auto& l : out.layers)
    for (auto* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.post_attention_layernorm, &l.gate_proj,
                    &l.up_proj, &l.down_proj})
      *t = t->clone();
  return out;
}

accel::ModelPair pair_of(const rt::LlamaModel& target, const rt::LlamaModel* draft = nullptr, const std::string& key = "") {
  accel::ModelPair p;
  p.target = std::make_shared<const rt::LlamaModel>(target);
  if (draft) p.draft = std::make_shared<const rt::LlamaModel>(*draft);
  p.target_key = p.draft_key = key;
  return p;
}

// Both demo models encrypted under one key, so they share the vocabulary permutation.
struct EncryptedDemo {
  ee::Key key = fixed_key(1024, 3);
  rt::LlamaModel target = ee::encrypt_model(target_model(), key, ee::model_fingerprint(target_model()));
  rt::LlamaModel draft = ee::encrypt_model(draft_model(), key, ee::model_fingerprint(draft_model()));
};
const EncryptedDemo& encrypted_demo() {
  static const EncryptedDemo d;
  return d;
}

std::vector<std::vector<int64_t>> demo_prompts(int n) {
  // Real text makes the trained models confident: greedy choices are not near-ties.
  const std::vector<std::vector<int64_t>> seeds = varied_prompts(n, 1024, 5);
  std::vector<std::vector<int64_t>> out;
  for (int i = 0; i < n; ++i) {
    auto p = seeds[static_cast<std::size_t>(i)];
    p.resize(std::min<std::size_t>(p.size(), 1 + static_cast<std::size_t>(i % 24)));
    out.push_back(p);
  }
  return out;
}

// A small untied model over 32 tokens with a peaked, seed-dependent next-token distribution.
rt::LlamaModel small_lm(uint64_t seed) {
  auto c = eesched::testing::tiny_config(32);
  c.tie_word_embeddings = false;
  auto m = rt::random_model(c, seed);
  auto w = m.weights();
  w.lm_head = w.lm_head * 15.0;
  return rt::LlamaModel(c, w);
}

// Pearson's chi-square of observed frequencies (summing to 1 over n draws) against expected
// probabilities, bins with fewer than 5 expected draws pooled; true when it is below the 0.1%
// critical value (Wilson-Hilferty approximation), i.e. the sample is consistent with `expected`.
bool chi_square_consistent(const std::vector<double>& freq, const std::vector<double>& expected, int n) {
  double stat = 0, pooled_obs = 0, pooled_exp = 0;
  int bins = 0;
  for (std::size_t i = 0; i < freq.size(); ++i) {
    const double e = expected[i] * n, o = freq[i] * n;
    if (e < 5) {
      pooled_obs += o, pooled_exp += e;
      continue;
    }
    stat += (o - e) * (o - e) / e;
    ++bins;
  }
  if (pooled_exp > 0) {
    stat += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / std::max(pooled_exp, 1e-9);
    ++bins;
  }
  const double df = bins - 1, z = 3.09;
  const double critical = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  return stat < critical;
}

double total_variation(const std::vector<double>& a, const std::vector<double>& b) {
  double tv = 0;
  for (std::size_t i = 0; i < a.size(); ++i) tv += std::abs(a[i] - b[i]);
  return tv / 2;
}

// ---------------------------------------------------------------------------------------------
// int8

TEST(Int8, KernelsMatchTheDequantizedProduct) {
  c10::InferenceMode guard;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto w = at::empty({37, 72}, at::kFloat).normal_(0, 1, gen);
  const auto q = rt::quantize_rows_int8(w);
  const auto dequant = q.values.to(at::kFloat) * q.scales.unsqueeze(1);
  EXPECT_LE((dequant - w).abs().max().item<float>(), (q.scales.max() * 0.5001).item<float>());  // round-to-nearest
  for (int64_t m : std::initializer_list<int64_t>{1, 2, 5, 16, 17, rt::kInt8KernelRows, rt::kInt8KernelRows + 1, 40}) {
    const auto x = at::empty({m, 72}, at::kFloat).normal_(0, 1, gen);
    const auto expected = at::matmul(x, dequant.t());
    // The int8 kernels quantize each row of x to int16 (scale max|x| / 32767): the error bound is
    // sum_k |Wq[r, k]| * max|x| / 65534 (half a step per product), plus float rounding.
    const auto bound = at::outer(x.abs().amax(1) / 65534.0, dequant.abs().sum(1)) * 1.01 + 1e-4 * expected.abs() + 1e-5;
    EXPECT_TRUE(((rt::matmul_int8(q, x) - expected).abs() <= bound).all().item<bool>()) << "m = " << m;
    EXPECT_TRUE(((rt::gemv_int8(q, x[0]) - expected[0]).abs() <= bound[0]).all().item<bool>());
    EXPECT_TRUE(at::allclose(rt::matmul_few_rows(w, x.narrow(0, 0, std::min<int64_t>(m, rt::kFewRows))),
                             at::matmul(x.narrow(0, 0, std::min<int64_t>(m, rt::kFewRows)), w.t()), 1e-4, 1e-4));
  }
}

// Prefill of a matrix larger than one widening tile: every tile, the short last one included,
// lands in its own columns of the result.
TEST(Int8, TiledPrefillCoversEveryRowOfALargeMatrix) {
  c10::InferenceMode guard;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t cols = 72, tile_rows = rt::kWidenTileBytes / (4 * cols), rows = tile_rows + tile_rows / 3 + 1;
  const auto q = rt::quantize_rows_int8(at::empty({rows, cols}, at::kFloat).normal_(0, 1, gen));
  const auto dequant = q.values.to(at::kFloat) * q.scales.unsqueeze(1);
  const auto x = at::empty({rt::kInt8KernelRows + 1, cols}, at::kFloat).normal_(0, 1, gen);
  const auto expected = at::matmul(x, dequant.t());
  EXPECT_TRUE(at::allclose(rt::matmul_int8(q, x), expected, 1e-4, 1e-4));
}

TEST(Int8, EveryLinearWeightIsInt8AndWeightsShrink) {
  const auto& plain = target_model();
  const auto q = accel::quantize_int8(plain);
  std::set<std::string> names;
  for (const auto& [name, m] : q.int8_weights()) {
    names.insert(name);
    EXPECT_EQ(m.values.scalar_type(), at::kChar);
    EXPECT_EQ(m.scales.numel(), m.values.size(0));
  }
  const auto layers = plain.config().num_hidden_layers;
  EXPECT_EQ(names.size(), static_cast<std::size_t>(7 * layers + 1));  // q, k, v, o, gate, up, down per layer + head
  EXPECT_TRUE(names.count("lm_head.weight"));
  EXPECT_TRUE(names.count("model.layers.0.self_attn.v_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_LT(q.weight_bytes(), plain.weight_bytes() * 0.27);  // a byte per weight plus a scale per row, of four
  EXPECT_TRUE(plain.int8_weights().empty());
}

// int8(encrypt(M)) == encrypt(int8(M)) bitwise: int8 values and per-row scales embed exactly in
// f32, so encrypting them as if they were weights (a permutation, or for q/k a quarter turn of
// each RoPE pair, which moves rows onto rows with a sign) must give exactly what quantizing the
// encrypted model gives; a scale moved with a sign is the same scale.
void expect_int8_commutes(const rt::LlamaModel& plain, const ee::Key& key) {
  c10::InferenceMode guard;
  const auto secrets = ee::derive_secrets(key, plain.config(), "m");
  const auto encrypted = rt::LlamaModel(ee::encrypt_config(plain.config(), secrets),
                                        ee::encrypt_weights(plain.weights(), plain.config(), secrets));
  const auto q_plain = accel::quantize_int8(plain);
  const auto q_enc = accel::quantize_int8(encrypted);
  auto values = deep_copy(plain.weights()), scales = deep_copy(plain.weights());
  if (plain.config().tie_word_embeddings) values.lm_head = scales.lm_head = at::Tensor();
  for (const auto& [name, m] : q_plain.int8_weights()) {
    slot(values, name) = m.values.to(at::kFloat);
    slot(scales, name) = m.scales.unsqueeze(1).expand(m.values.sizes()).contiguous();
  }
  const auto ev = ee::encrypt_weights(values, plain.config(), secrets);
  const auto es = ee::encrypt_weights(scales, plain.config(), secrets);
  auto ev_mut = ev, es_mut = es;
  int compared = 0;
  for (const auto& [name, m] : q_enc.int8_weights()) {
    EXPECT_TRUE(at::equal(m.values.to(at::kFloat), slot(ev_mut, name))) << name;
    EXPECT_TRUE(at::equal(m.scales, slot(es_mut, name).select(1, 0).abs())) << name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(q_plain.int8_weights().size()));
  EXPECT_EQ(compared, 7 * plain.config().num_hidden_layers + 1);  // q/k included
  // The f32 rest (norms, embedding) is the encrypted model's, bit for bit.
  const auto wq = q_enc.weights(), we = encrypted.weights();
  for (std::size_t l = 0; l < wq.layers.size(); ++l) EXPECT_TRUE(at::equal(wq.layers[l].input_layernorm, we.layers[l].input_layernorm));
  EXPECT_TRUE(at::equal(wq.embed_tokens, we.embed_tokens));
}

TEST(Int8, QuantizationCommutesBitwiseWithEe) {
  const auto untied = synthetic_gqa(5);
  expect_int8_commutes(untied, fixed_key(untied.config().vocab_size));
  expect_int8_commutes(target_model(), fixed_key(1024));  // tied head
}

TEST(Int8, GroupwiseScalesAlongTheInputWouldNotCommute) {
  // The counterexample: scales per group of 8 input columns. Permuting the columns (what EE does
  // to every reader of the residual stream) regroups them, so the quantized matrices differ.
  c10::InferenceMode guard;
  const auto plain = synthetic_gqa(5);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto secrets = ee::derive_secrets(key, plain.config(), "m");
  const auto enc = ee::encrypt_weights(plain.weights(), plain.config(), secrets);
  auto groupwise = [](const at::Tensor& w) {
    const auto g = w.view({w.size(0), -1, 8});
    const auto s = (g.abs().amax(2, true) / 127.0).clamp_min(1e-12);
    return (at::round(g / s) * s).view(w.sizes());
  };
  auto perrow = [](const at::Tensor& w) {
    const auto q = rt::quantize_rows_int8(w);
    return q.values.to(at::kFloat) * q.scales.unsqueeze(1);
  };
  auto via_plain_g = deep_copy(plain.weights()), via_plain_r = deep_copy(plain.weights());
  via_plain_g.layers[0].gate_proj = groupwise(via_plain_g.layers[0].gate_proj);
  via_plain_r.layers[0].gate_proj = perrow(via_plain_r.layers[0].gate_proj);
  const auto eg = ee::encrypt_weights(via_plain_g, plain.config(), secrets);
  const auto er = ee::encrypt_weights(via_plain_r, plain.config(), secrets);
  EXPECT_TRUE(at::equal(perrow(enc.layers[0].gate_proj), er.layers[0].gate_proj));
  EXPECT_FALSE(at::allclose(groupwise(enc.layers[0].gate_proj), eg.layers[0].gate_proj, 0, 1e-6));
}

TEST(Int8, LogitsStayCloseToF32) {
  // Bound: on the demo target, every int8 logit is within 4% of the f32 logits' range (max -
  // min) at the same position, and the top-1 token agrees at >= 95% of positions.
  c10::InferenceMode guard;
  const auto& plain = target_model();
  const auto q = accel::quantize_int8(plain);
  int agree = 0, total = 0;
  for (const auto& p : demo_prompts(12)) {
    const auto ids = at::tensor(p, at::kLong).view({1, -1});
    const auto a = plain.forward(ids)[0], b = q.forward(ids)[0];
    const auto range = a.amax(-1) - a.amin(-1);
    EXPECT_LE(((a - b).abs().amax(-1) / range).max().item<float>(), 0.04f);
    agree += a.argmax(-1).eq(b.argmax(-1)).sum().item<int>();
    total += static_cast<int>(p.size());
  }
  EXPECT_GE(static_cast<double>(agree) / total, 0.95);
}

// ---------------------------------------------------------------------------------------------
// bf16 / f16 weights for an f32 model

TEST(HalfPrecision, EveryLinearWeightIs16BitAndBytesHalve) {
  const auto& plain = target_model();
  for (const auto format : {rt::WeightFormat::BF16, rt::WeightFormat::F16}) {
    const auto dtype = format == rt::WeightFormat::BF16 ? at::kBFloat16 : at::kHalf;
    const auto half = accel::to_half_precision(plain, format);
    const auto w = half.weights();
    for (const auto& l : w.layers) {
      for (const auto* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) EXPECT_EQ(t->scalar_type(), dtype);
      EXPECT_EQ(l.input_layernorm.scalar_type(), at::kFloat);
    }
    EXPECT_EQ(w.embed_tokens.scalar_type(), at::kFloat);  // one row read per token: left as it is
    EXPECT_TRUE(half.int8_weights().empty());
    EXPECT_LT(half.weight_bytes(), plain.weight_bytes() * 0.501);
    EXPECT_GT(half.weight_bytes(), plain.weight_bytes() * 0.499);
  }
}

// half(encrypt(M)) == encrypt(half(M)) bitwise: rounding is per element and sign-symmetric, so it
// commutes with EE's permutations and q/k pair quarter turns.
TEST(HalfPrecision, RoundingCommutesBitwiseWithEe) {
  c10::InferenceMode guard;
  for (const auto* plain : {&target_model(), static_cast<const rt::LlamaModel*>(nullptr)}) {
    const auto model = plain ? *plain : synthetic_gqa(5);
    const auto key = fixed_key(model.config().vocab_size, 7);
    const auto secrets = ee::derive_secrets(key, model.config(), "m");
    const auto encrypted = rt::LlamaModel(ee::encrypt_config(model.config(), secrets),
                                          ee::encrypt_weights(model.weights(), model.config(), secrets));
    for (const auto format : {rt::WeightFormat::BF16, rt::WeightFormat::F16}) {
      const auto via_plain = ee::encrypt_weights(eesched::testing::weights_in(accel::to_half_precision(model, format).weights(), at::kFloat),
                                                 model.config(), secrets);
      const auto via_enc = accel::to_half_precision(encrypted, format).weights();
      auto a = via_plain.named(), b = via_enc.named();
      ASSERT_EQ(a.size(), b.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        ASSERT_EQ(a[i].first, b[i].first);
        EXPECT_TRUE(at::equal(a[i].second, b[i].second.to(at::kFloat))) << a[i].first;
      }
    }
  }
}

TEST(HalfPrecision, ArmsDecryptToThePlaintextArmStayCloseToF32AndAreRefusedOn16BitModels) {
  const auto& enc = encrypted_demo();
  const ee::Codec codec(enc.key);
  const auto plain_pair = pair_of(target_model()), enc_pair = pair_of(enc.target, nullptr, enc.key.fingerprint());
  data::TaskSpec task;
  task.quality = data::Quality::Tolerant;
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 12;
  const auto kv = accel::build_arm(data::parse_arm("kv"), plain_pair);
  int same = 0, total = 0;
  for (const char* name : {"kv+bf16", "kv+f16", "kv+bf16+prune20", "kv+f16+qspec4"}) {
    SCOPED_TRACE(name);
    const auto arm = data::parse_arm(name);
    ASSERT_FALSE(accel::arm_refusal(arm, task, enc_pair));
    const auto pa = accel::build_arm(arm, plain_pair), ea = accel::build_arm(arm, enc_pair);
    for (const auto& p : demo_prompts(8)) {
      const auto a = accel::run_arm(pa, {p}, o);
      const auto b = accel::run_arm(ea, {codec.encrypt(p)}, o);
      EXPECT_EQ(codec.decrypt(b.generation.tokens[0]), a.generation.tokens[0]) << "prompt of " << p.size();
      if (arm.effects.ffn_prune_percent == 0) {
        const auto f32 = accel::run_arm(kv, {p}, o).generation.tokens[0];
        for (std::size_t i = 0; i < std::min(f32.size(), a.generation.tokens[0].size()) && f32[i] == a.generation.tokens[0][i]; ++i) ++same;
        total += static_cast<int>(f32.size());
      }
    }
  }
  // Near-lossless: greedy continuations of the trained target follow f32's for >= 90% of tokens
  // (counting only the common prefix, so one early divergence costs the rest of that answer).
  EXPECT_GE(static_cast<double>(same) / total, 0.9);

  // One weight format per arm; a 16-bit model is refused (kv already streams it as stored).
  EXPECT_THAT(eesched::testing::error_of_type<data::Error>([] { (void)data::parse_arm("kv+int8+bf16"); }), HasSubstr("two formats"));
  EXPECT_THAT(eesched::testing::error_of_type<data::Error>([] { (void)data::parse_arm("kv+bf16+f16"); }), HasSubstr("two formats"));
  const auto bf16_model = rt::LlamaModel(target_model().config(), eesched::testing::weights_in(target_model().weights(), at::kBFloat16));
  const auto why = accel::arm_refusal(data::parse_arm("kv+bf16"), task, pair_of(bf16_model));
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("already bf16"));
  data::TaskSpec exact;
  EXPECT_TRUE(accel::arm_refusal(data::parse_arm("kv+bf16"), exact, plain_pair));  // lossy: tolerant tasks only
}

// ---------------------------------------------------------------------------------------------
// pruning

TEST(Pruning, ShapesShrinkAsRequested) {
  const auto plain = synthetic_gqa(5);  // intermediate 80
  const auto pruned = accel::prune_ffn(plain, 30);
  EXPECT_EQ(pruned.model.config().intermediate_size, 56);
  const auto w = pruned.model.weights();
  for (const auto& l : w.layers) {
    EXPECT_EQ(l.gate_proj.sizes(), (std::vector<int64_t>{56, 48}));
    EXPECT_EQ(l.up_proj.sizes(), (std::vector<int64_t>{56, 48}));
    EXPECT_EQ(l.down_proj.sizes(), (std::vector<int64_t>{48, 56}));
  }
  EXPECT_LT(pruned.model.weight_bytes(), plain.weight_bytes());
  ASSERT_EQ(pruned.kept.size(), 3u);
  EXPECT_TRUE(std::is_sorted(pruned.kept[0].begin(), pruned.kept[0].end()));
  EXPECT_EQ(accel::pruned_intermediate(704, 30), 493);
  EXPECT_THAT(error_of([&] { accel::prune_ffn(plain, 100); }), HasSubstr("0..99"));
  // The kept neurons are the highest-scoring ones.
  const auto score = accel::ffn_neuron_scores(plain.weights().layers[1]);
  double min_kept = 1e300, max_dropped = 0;
  for (int64_t j = 0; j < 80; ++j) {
    const bool kept = std::binary_search(pruned.kept[1].begin(), pruned.kept[1].end(), j);
    (kept ? min_kept : max_dropped) = kept ? std::min(min_kept, score[static_cast<std::size_t>(j)])
                                           : std::max(max_dropped, score[static_cast<std::size_t>(j)]);
  }
  EXPECT_GT(min_kept, max_dropped);
}

// prune(encrypt(M)) == encrypt(prune(M)): the encrypted model keeps exactly the images of the
// neurons the plaintext model keeps, and its weights are the pruned plaintext weights encrypted
// under the permutation the FFN permutation induces on the kept neurons. Returns those weights.
rt::LlamaWeights expect_pruning_commutes(const accel::PrunedModel& pp, const accel::PrunedModel& pe, const ee::ModelSecrets& secrets) {
  auto induced = secrets;
  for (std::size_t l = 0; l < secrets.layers.size(); ++l) {
    const auto& kept = pp.kept[l];
    const auto& kept_enc = pe.kept[l];
    EXPECT_EQ(kept.size(), kept_enc.size());
    std::vector<int64_t> restricted;
    for (const auto j : kept) {
      const auto moved = secrets.layers[l].ffn[static_cast<std::size_t>(j)];
      const auto at = std::lower_bound(kept_enc.begin(), kept_enc.end(), moved);
      if (at == kept_enc.end() || *at != moved) {
        ADD_FAILURE() << "layer " << l << ": neuron " << j << " kept only in plaintext";
        return pe.model.weights();
      }
      restricted.push_back(at - kept_enc.begin());
    }
    induced.layers[l].ffn = restricted;
  }
  auto expected = ee::encrypt_weights(pp.model.weights(), pp.model.config(), induced);
  const auto a = pe.model.weights().named(), b = expected.named();
  EXPECT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  return expected;
}

TEST(Pruning, CommutesBitwiseWithEe) {
  // prune(encrypt(M)) == encrypt'(prune(M)), where encrypt' is the same transform with each
  // layer's FFN permutation restricted to the kept neurons.
  c10::InferenceMode guard;
  const auto plain = synthetic_gqa(9);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto secrets = ee::derive_secrets(key, plain.config(), "m");
  const auto encrypted = rt::LlamaModel(ee::encrypt_config(plain.config(), secrets),
                                        ee::encrypt_weights(plain.weights(), plain.config(), secrets));
  const auto pp = accel::prune_ffn(plain, 30), pe = accel::prune_ffn(encrypted, 30);
  expect_pruning_commutes(pp, pe, secrets);
}

// Calibration statistics: measured on a seeded stream of ids, so the tests reproduce.
std::vector<int64_t> seeded_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(3, vocab - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = pick(rng);
  return ids;
}

rt::LlamaModel with_calibration(const rt::LlamaModel& m, uint64_t seed = 11) {
  rt::FfnStatsOptions o;
  o.context = 64;
  return rt::with_ffn_stats(m, rt::measure_ffn_stats(m, seeded_ids(300, m.config().vocab_size, seed), o));
}

TEST(Pruning, ActivationStatisticsMatchAnIndependentReference) {
  // With layer 0's attention output zeroed, the residual stream entering layer 0's FFN is the
  // token's embedding, so each neuron's activation can be computed by hand in float64.
  c10::InferenceMode guard;
  const auto base = synthetic_gqa(4);
  auto w = base.weights();
  w.layers[0].o_proj = at::zeros_like(w.layers[0].o_proj);
  const rt::LlamaModel m(base.config(), w);
  const auto ids = seeded_ids(150, m.config().vocab_size, 2);
  rt::FfnStatsOptions o;
  o.context = 40;  // several windows, the last one short
  const auto stats = rt::measure_ffn_stats(m, ids, o);
  ASSERT_EQ(stats.size(), 3u);

  const auto& l = w.layers[0];
  const auto x = w.embed_tokens.to(at::kDouble).index_select(0, at::tensor(ids, at::kLong));  // [n, hidden]
  const auto h = x * at::rsqrt(x.pow(2).mean(-1, true) + m.config().rms_norm_eps) * l.post_attention_layernorm.to(at::kDouble);
  const auto act = at::silu(at::matmul(h, l.gate_proj.to(at::kDouble).t())) * at::matmul(h, l.up_proj.to(at::kDouble).t());
  const auto expected = act.pow(2).mean(0);
  EXPECT_TRUE(at::allclose(stats[0], expected, 1e-4, 1e-9)) << (stats[0] - expected).abs().max().item<double>();

  // The score is ||d_j|| * RMS(a_j).
  auto lw = l;
  lw.ffn_activation_ms = stats[0];
  const auto score = accel::ffn_activation_scores(lw);
  const auto ref = (l.down_proj.to(at::kDouble).pow(2).sum(0) * stats[0]).sqrt();
  for (int64_t j = 0; j < 80; ++j) EXPECT_NEAR(score[static_cast<std::size_t>(j)], ref[j].item<double>(), 1e-12 * (1 + ref[j].item<double>()));
  EXPECT_EQ(accel::ffn_neuron_scores(lw), score);           // statistics present: they decide
  lw.ffn_activation_ms = at::Tensor();
  EXPECT_EQ(accel::ffn_neuron_scores(lw), accel::ffn_weight_scores(lw));  // absent: weights
}

TEST(Pruning, ActivationScoresCommuteBitwiseWithEe) {
  // prune(encrypt(M), encrypted statistics) == encrypt'(prune(M, statistics)): the statistics are
  // measured on the plaintext and travel permuted by each layer's FFN permutation.
  c10::InferenceMode guard;
  const auto plain = with_calibration(synthetic_gqa(9));
  const auto key = fixed_key(plain.config().vocab_size);
  const auto secrets = ee::derive_secrets(key, plain.config(), "m");
  const auto encrypted = rt::LlamaModel(ee::encrypt_config(plain.config(), secrets),
                                        ee::encrypt_weights(plain.weights(), plain.config(), secrets));
  ASSERT_TRUE(encrypted.has_ffn_stats());
  const auto ps = rt::ffn_stats_of(plain), es = rt::ffn_stats_of(encrypted);
  for (std::size_t l = 0; l < ps.size(); ++l) {
    const auto inv = ee::inverse(secrets.layers[l].ffn);
    EXPECT_TRUE(at::equal(es[l], ps[l].index_select(0, at::tensor(inv, at::kLong)))) << "layer " << l;
  }

  const auto pp = accel::prune_ffn(plain, 30), pe = accel::prune_ffn(encrypted, 30);
  ASSERT_TRUE(pp.activation_scores && pe.activation_scores);
  // The statistics change the choice (else this test would prove nothing beyond the old one).
  const auto by_weights = accel::prune_ffn(rt::with_ffn_stats(plain, {}), 30);
  EXPECT_FALSE(by_weights.activation_scores);
  EXPECT_NE(by_weights.kept, pp.kept);

  const auto expected = expect_pruning_commutes(pp, pe, secrets);
  // The kept neurons keep their statistics, in the same (encrypted) order.
  const auto pruned_stats = rt::ffn_stats_of(pe.model);
  ASSERT_EQ(pruned_stats.size(), expected.layers.size());
  for (std::size_t l = 0; l < pruned_stats.size(); ++l) EXPECT_TRUE(at::equal(pruned_stats[l], expected.layers[l].ffn_activation_ms));
}

TEST(Pruning, ActivationScoresKeepTheTrainedTargetCloserThanWeightNorms) {
  // On the trained target, 30% of the FFN pruned by calibration statistics costs less perplexity
  // than pruned by weight norms, on other text than the calibration text (the repository's own
  // prose: English, unlike random ids).
  const auto& target = target_model();
  const auto tokenizer = rt::Tokenizer::load(eesched::testing::tokenizer_path());
  auto ids_of = [&](const std::string& file) {
    auto ids = tokenizer.encode_document(eesched::testing::read_file(eesched::testing::source_dir() / file));
    ids.resize(std::min<std::size_t>(ids.size(), 1200));
    return ids;
  };
  const auto calibration = ids_of("README.md"), heldout = ids_of("docs/ee.md");
  rt::FfnStatsOptions o;
  o.context = 256;
  const auto calibrated = rt::with_ffn_stats(target, rt::measure_ffn_stats(target, calibration, o));
  rt::PerplexityOptions po;
  po.context = 256;
  const double base = rt::perplexity(target, heldout, po).perplexity;
  const double act = rt::perplexity(accel::prune_ffn(calibrated, 30).model, heldout, po).perplexity;
  const double wts = rt::perplexity(accel::prune_ffn(target, 30).model, heldout, po).perplexity;
  EXPECT_LT(act, wts) << "ratios: activation " << act / base << ", weights " << wts / base;
}

// ---------------------------------------------------------------------------------------------
// quality of lossy transforms

TEST(Quality, DefaultTransformsAndParsing) {
  const auto keys = accel::default_quality_transforms();
  EXPECT_EQ(keys, (std::vector<std::string>{"bf16", "f16", "int8", "prune10", "int8+prune10", "prune20", "int8+prune20", "prune30",
                                            "int8+prune30"}));
  // Every catalog lossy arm has its key measured by default.
  for (const auto& arm : data::arm_catalog())
    if (!arm.lossless()) {
      EXPECT_NE(std::find(keys.begin(), keys.end(), data::quality_key(arm)), keys.end()) << arm.name;
    }
  const data::QualityTable t = {{"prune20", {}}, {"int8+prune20", {}}, {"int8", {}}, {"prune5", {}}};
  EXPECT_EQ(accel::ordered_keys(t), (std::vector<std::string>{"int8", "prune5", "prune20", "int8+prune20"}));
  EXPECT_EQ(accel::parse_quality_transforms("int8, prune20+int8 ,prune50"), (std::vector<std::string>{"int8", "int8+prune20", "prune50"}));
  using eesched::testing::error_of_type;
  EXPECT_THAT(error_of_type<data::Error>([] { accel::parse_quality_transforms("kv"); }), HasSubstr("'kv' is not a lossy"));
  EXPECT_THAT(error_of_type<data::Error>([] { accel::parse_quality_transforms("int8+spec4"); }), HasSubstr("not a lossy"));
  EXPECT_THAT(error_of_type<data::Error>([] { accel::parse_quality_transforms("int4"); }), HasSubstr("'int4'"));
  EXPECT_THAT(error_of_type<data::Error>([] { accel::parse_quality_transforms("int8,int8"); }), HasSubstr("twice"));
  EXPECT_THAT(error_of_type<data::Error>([] { accel::parse_quality_transforms("int8,"); }), HasSubstr("empty entry"));
}

TEST(Quality, RatioAndAgreementMatchAnIndependentReference) {
  // One window covers the ids, so the reference is one forward pass of each model, scored by hand.
  c10::InferenceMode guard;
  const auto model = with_calibration(eesched::testing::tiny_model(5));
  const auto ids = seeded_ids(100, 1024, 3);
  accel::QualityOptions o;
  o.transforms = {"int8", "prune30", "int8+prune30"};
  o.context = 128;
  int lines = 0;
  o.progress = [&](const std::string&) { ++lines; };
  const auto table = accel::measure_quality(model, ids, o);
  ASSERT_EQ(table.size(), 3u);
  EXPECT_EQ(lines, 4);  // the lossless model, then each transform

  auto score = [&](const rt::LlamaModel& m) {
    const auto logp = at::log_softmax(m.forward(at::tensor(ids, at::kLong).view({1, -1}))[0].to(at::kDouble), -1);
    double nll = 0;
    std::vector<int64_t> best;
    for (std::size_t t = 0; t + 1 < ids.size(); ++t) {
      nll -= logp[static_cast<int64_t>(t)][ids[t + 1]].item<double>();
      best.push_back(logp[static_cast<int64_t>(t)].argmax().item<int64_t>());
    }
    return std::make_pair(std::exp(nll / static_cast<double>(ids.size() - 1)), best);
  };
  const auto [ppl, best] = score(model);
  const auto pruned = accel::prune_ffn(model, 30).model;
  const std::map<std::string, rt::LlamaModel> variants = {
      {"int8", accel::quantize_int8(model)}, {"prune30", pruned}, {"int8+prune30", accel::quantize_int8(pruned)}};
  for (const auto& [key, m] : variants) {
    const auto [p, b] = score(m);
    int same = 0;
    for (std::size_t i = 0; i < b.size(); ++i) same += b[i] == best[i];
    EXPECT_NEAR(table.at(key).ppl_ratio, p / ppl, 1e-4) << key;
    EXPECT_DOUBLE_EQ(table.at(key).top1_agreement, static_cast<double>(same) / static_cast<double>(b.size())) << key;
  }
  EXPECT_THAT(error_of([&] { accel::measure_quality(model, {5}, o); }), HasSubstr("at least 2"));
  EXPECT_THAT(error_of([&] { accel::measure_quality(model, {5, 4096}, o); }), HasSubstr("outside the model's vocabulary"));
}

// A 16-bit checkpoint refuses kv+bf16 and kv+f16 (kv streams it as stored), so its owner's
// quality table leaves them out and the quality floor refuses them as the worker would.
TEST(Quality, ASixteenBitCheckpointRecordsNoSixteenBitTransform) {
  eesched::testing::TempDir dir;
  auto config = eesched::testing::family_config("llama3");
  config.torch_dtype = "bfloat16";
  rt::save_checkpoint(rt::LlamaModel(config, eesched::testing::family_model("llama3", 100).weights()), dir / "m");
  const auto model = rt::LlamaModel::load(dir / "m");
  std::vector<std::string> lines;
  accel::QualityOptions o;
  o.transforms = {"bf16", "f16", "int8"};
  o.context = 32;
  o.progress = [&](const std::string& line) { lines.push_back(line); };
  const auto table = accel::measure_quality(model, seeded_ids(40, config.vocab_size, 4), o);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(table.count("int8"));
  EXPECT_THAT(lines, ::testing::Contains(HasSubstr("not measuring f16: the model is already bf16")));
  data::TaskSpec task;
  task.quality = data::Quality::Tolerant;
  EXPECT_TRUE(data::quality_refusal(data::parse_arm("kv+bf16"), task, table));
  EXPECT_FALSE(data::quality_refusal(data::parse_arm("kv+int8"), task, table));
  // An f32 model measures both.
  EXPECT_EQ(accel::measure_quality(eesched::testing::family_model("llama3", 100), seeded_ids(40, config.vocab_size, 4), o).size(), 3u);
}

TEST(Quality, TheEncryptedModelOnEncryptedIdsMeasuresTheSame) {
  const auto& enc = encrypted_demo();
  const ee::Codec codec(enc.key);
  std::vector<int64_t> ids;
  for (const auto& p : demo_prompts(12)) ids.insert(ids.end(), p.begin(), p.end());
  accel::QualityOptions o;
  o.transforms = {"int8", "prune20"};
  o.context = 64;
  const auto plain = accel::measure_quality(target_model(), ids, o);
  const auto secret = accel::measure_quality(enc.target, codec.encrypt(ids), o);
  for (const auto& key : o.transforms) {
    EXPECT_NEAR(secret.at(key).ppl_ratio, plain.at(key).ppl_ratio, 1e-4) << key;
    EXPECT_NEAR(secret.at(key).top1_agreement, plain.at(key).top1_agreement, 1.5 / static_cast<double>(ids.size())) << key;
  }
}

TEST(Quality, QualityFileRoundTripsAndNamesABadOne) {
  eesched::testing::TempDir dir;
  EXPECT_FALSE(accel::read_quality_file(dir.path()));
  const data::QualityTable t = {{"int8", {1.004, 0.97}}, {"int8+prune20", {1.08, 0.81}}};
  accel::write_quality_file(dir.path(), t);
  EXPECT_EQ(accel::read_quality_file(dir.path()), t);
  std::ofstream(dir / "quality.json") << R"({"prune20": {"ppl_ratio": 0, "top1_agreement": 0.5}})";
  const auto why = error_of([&] { accel::read_quality_file(dir.path()); });
  EXPECT_THAT(why, HasSubstr("quality.json"));
  EXPECT_THAT(why, HasSubstr("prune20"));
  EXPECT_EQ(why.find('\n'), std::string::npos);
  std::ofstream(dir / "quality.json") << "{";
  EXPECT_THAT(error_of([&] { accel::read_quality_file(dir.path()); }), HasSubstr("malformed"));
}

// ---------------------------------------------------------------------------------------------
// every arm: the encrypted path decrypts to the plaintext path

TEST(Arms, EveryCatalogArmDecryptsToThePlaintextArm) {
  const auto& enc = encrypted_demo();
  const ee::Codec codec(enc.key);
  const auto plain_pair = pair_of(target_model(), &draft_model());
  const auto enc_pair = pair_of(enc.target, &enc.draft, enc.key.fingerprint());
  const auto prompts = demo_prompts(20);
  data::TaskSpec task;
  task.draft = "draft";
  task.quality = data::Quality::Tolerant;
  for (const auto& arm : data::arm_catalog()) {
    ASSERT_FALSE(accel::arm_refusal(arm, task, enc_pair)) << arm.name;
    const auto pa = accel::build_arm(arm, plain_pair), ea = accel::build_arm(arm, enc_pair);
    rt::GenerateOptions o;
    o.generation.max_new_tokens = 12;
    for (const auto& p : prompts) {
      const auto a = accel::run_arm(pa, {p}, o);
      const auto b = accel::run_arm(ea, {codec.encrypt(p)}, o);
      EXPECT_EQ(codec.decrypt(b.generation.tokens[0]), a.generation.tokens[0]) << arm.name << ", prompt of " << p.size();
      EXPECT_EQ(a.acceptance_rate.has_value(), arm.effects.draft_tokens > 0);
    }
  }
}

// Every arm on every family: a tiny model of each (tests/ee_fixtures.h: llama3 rope scaling with
// an explicit head_dim and a tied head, mistral, qwen2 biases, qwen3 q/k norms with head_dim !=
// hidden / heads), its target loaded from a bf16 checkpoint (int8 quantizes what bf16 holds), a
// smaller draft of the same family sharing the vocabulary, both encrypted under one key.
class FamilyArms : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyArms, EveryArmRunsPlaintextAndEncryptedAndDecryptsToThePlaintextArm) {
  const auto& family = GetParam();
  eesched::testing::TempDir dir;
  auto config = eesched::testing::family_config(family);
  config.torch_dtype = "bfloat16";
  rt::save_checkpoint(rt::LlamaModel(config, eesched::testing::family_model(family, 100).weights()), dir / "target");
  const auto target = rt::LlamaModel::load(dir / "target");
  ASSERT_EQ(target.config().torch_dtype, "bfloat16");
  ASSERT_EQ(target.config().model_type, config.model_type);
  const auto draft = eesched::testing::family_model(family, 200, /*draft=*/true);
  const auto key = fixed_key(target.config().vocab_size, 5);
  const ee::Codec codec(key);
  const auto enc_target = ee::encrypt_model(target, key, ee::model_fingerprint(target));
  const auto enc_draft = ee::encrypt_model(draft, key, ee::model_fingerprint(draft));
  const auto plain_pair = pair_of(target, &draft), enc_pair = pair_of(enc_target, &enc_draft, key.fingerprint());

  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : varied_prompts(5, target.config().vocab_size, 11))
    prompts.emplace_back(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(p.size(), 20)));
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 10;
  data::TaskSpec task;
  task.draft = "draft";
  task.quality = data::Quality::Tolerant;

  // The catalog, and the combinations of a self-drafting or drafted arm with pruning.
  auto arms = data::arm_catalog();
  for (const char* extra : {"kv+qspec2", "kv+prune30+qspec4", "kv+int8+prune30+spec2"}) arms.push_back(data::parse_arm(extra));
  // The lossless arms all give the f32 target's greedy output: plain kv's.
  const auto kv = accel::build_arm(data::parse_arm("kv"), plain_pair);
  std::vector<std::vector<int64_t>> expected;
  for (const auto& p : prompts) expected.push_back(accel::run_arm(kv, {p}, o).generation.tokens[0]);
  for (const auto& arm : arms) {
    SCOPED_TRACE(family + " " + arm.name);
    if (arm.effects.weight_bytes == 2.0) {  // kv+bf16, kv+f16: the target is 16-bit already
      EXPECT_TRUE(accel::arm_refusal(arm, task, plain_pair));
      EXPECT_TRUE(accel::arm_refusal(arm, task, enc_pair));
      continue;
    }
    ASSERT_FALSE(accel::arm_refusal(arm, task, plain_pair));
    ASSERT_FALSE(accel::arm_refusal(arm, task, enc_pair));
    const auto pa = accel::build_arm(arm, plain_pair), ea = accel::build_arm(arm, enc_pair);
    if (arm.effects.weight_bytes) {
      EXPECT_FALSE(pa.models.target->int8_weights().empty());
    }
    if (arm.effects.self_draft()) {
      EXPECT_FALSE(ea.models.draft->int8_weights().empty());
    }
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const auto a = accel::run_arm(pa, {prompts[i]}, o);
      const auto b = accel::run_arm(ea, {codec.encrypt(prompts[i])}, o);
      ASSERT_EQ(a.generation.tokens[0].size(), static_cast<std::size_t>(o.generation.max_new_tokens));
      EXPECT_EQ(codec.decrypt(b.generation.tokens[0]), a.generation.tokens[0]) << "prompt of " << prompts[i].size();
      if (arm.lossless()) {
        EXPECT_EQ(a.generation.tokens[0], expected[i]) << "prompt of " << prompts[i].size();
      }
      EXPECT_EQ(a.acceptance_rate.has_value(), arm.effects.draft_tokens > 0);
      EXPECT_EQ(b.acceptance_rate, a.acceptance_rate);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyArms, ::testing::ValuesIn(eesched::testing::family_names()),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// speculative decoding

void expect_speculative_greedy_matches(const rt::LlamaModel& target, const rt::LlamaModel& draft, int k, double min_accept) {
  const auto prompts = demo_prompts(32);
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 20;
  o.generation.stop_ids = {2};
  const auto plain = rt::generate(target, prompts, o);
  double accepted = 0, proposed = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    accel::SpeculativeStats stats;
    const auto spec = accel::speculative_generate(target, draft, prompts[i], o, k, &stats);
    EXPECT_EQ(spec.tokens[0], plain.tokens[i]) << "prompt " << i << ", k = " << k;
    EXPECT_EQ(spec.finish_reason[0], plain.finish_reason[i]);
    EXPECT_GE(stats.acceptance_rate(), 0.0);
    EXPECT_LE(stats.acceptance_rate(), 1.0);
    EXPECT_EQ(spec.step_ms.size() + 1, spec.tokens[0].size() + (spec.finish_reason[0] == "stop" && spec.tokens[0].empty()));
    accepted += static_cast<double>(stats.accepted);
    proposed += static_cast<double>(stats.proposed);
  }
  EXPECT_GE(accepted / proposed, min_accept);
}

TEST(Speculative, GreedyOutputIsTheTargetsGreedyOutput) {
  for (int k : {1, 4, 7}) expect_speculative_greedy_matches(target_model(), draft_model(), k, 0.2);
}

TEST(Speculative, GreedyOutputIsTheTargetsOnEncryptedModels) {
  const auto& enc = encrypted_demo();
  expect_speculative_greedy_matches(enc.target, enc.draft, 4, 0.2);
}

TEST(Speculative, DraftEqualToTargetAcceptsEverything) {
  expect_speculative_greedy_matches(draft_model(), draft_model(), 4, 0.99);
}

TEST(Speculative, SelfDraftIsTheTargetsInt8CopyAndKeepsItsGreedyOutput) {
  const auto base = pair_of(target_model(), nullptr, "key-fp");
  const auto arm = accel::build_arm(data::parse_arm("kv+qspec4"), base);
  EXPECT_EQ(arm.plan.spec_k, 4);
  EXPECT_EQ(arm.models.target, base.target);  // verified by the f32 model itself
  ASSERT_TRUE(arm.models.draft);
  EXPECT_FALSE(arm.models.draft->int8_weights().empty());
  EXPECT_EQ(arm.models.draft_key, "key-fp");
  // The int8 copy agrees with the f32 target on almost every token; the output is the target's.
  expect_speculative_greedy_matches(target_model(), *arm.models.draft, 4, 0.8);
  const auto& enc = encrypted_demo();
  const auto enc_arm = accel::build_arm(data::parse_arm("kv+qspec4"), pair_of(enc.target, nullptr, enc.key.fingerprint()));
  expect_speculative_greedy_matches(enc.target, *enc_arm.models.draft, 4, 0.8);
}

// Two synthetic Qwen sizes sharing a tokenizer (vocabulary), encrypted under one key: they share
// the vocabulary permutation (it depends on the key alone) while their hidden ones are their
// own, and encrypted speculative decoding decrypts to the plaintext target's greedy output.
TEST(Speculative, QwenDraftAndTargetOfTwoSizesShareTheVocabularyPermutation) {
  for (const std::string family : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(family);
    const auto target = eesched::testing::family_model(family, 300), draft = eesched::testing::family_model(family, 301, true);
    ASSERT_NE(target.config().hidden_size, draft.config().hidden_size);
    ASSERT_EQ(target.config().vocab_size, draft.config().vocab_size);
    const auto key = fixed_key(target.config().vocab_size, 9);
    const auto ts = ee::derive_secrets(key, target.config(), ee::model_fingerprint(target));
    const auto ds = ee::derive_secrets(key, draft.config(), ee::model_fingerprint(draft));
    EXPECT_EQ(ts.vocab, ds.vocab);
    const ee::Codec codec(key);
    for (int64_t t = 0; t < target.config().vocab_size; ++t) ASSERT_EQ(ts.vocab[static_cast<std::size_t>(t)], codec.encrypt(t));
    // The encrypted embeddings moved by that permutation: row pv[t] of each holds token t (its
    // columns permuted by the model's own residual permutation).
    const auto enc_target = ee::encrypt_model(target, key, ee::model_fingerprint(target));
    const auto enc_draft = ee::encrypt_model(draft, key, ee::model_fingerprint(draft));
    const auto pv = at::tensor(ts.vocab, at::kLong);
    const auto moved = [&](const rt::LlamaModel& plain, const rt::LlamaModel& enc, const ee::ModelSecrets& s) {
      const auto rows = enc.weights().embed_tokens.index_select(0, pv);
      return at::equal(rows.index_select(1, at::tensor(s.residual, at::kLong)), plain.weights().embed_tokens) ||
             at::equal(rows, plain.weights().embed_tokens.index_select(1, at::tensor(s.residual, at::kLong)));
    };
    EXPECT_TRUE(moved(target, enc_target, ts));
    EXPECT_TRUE(moved(draft, enc_draft, ds));
    EXPECT_NE(ts.residual.size(), ds.residual.size());

    // The worker's arm accepts the pair under one key and refuses a draft under another.
    const auto enc_pair = pair_of(enc_target, &enc_draft, key.fingerprint());
    data::TaskSpec task;
    task.draft = "draft";
    const auto arm = data::parse_arm("kv+spec3");
    EXPECT_FALSE(accel::arm_refusal(arm, task, enc_pair));
    auto mixed = enc_pair;
    mixed.draft_key = fixed_key(target.config().vocab_size, 10).fingerprint();
    EXPECT_THAT(accel::arm_refusal(arm, task, mixed).value_or(""), HasSubstr("same key"));

    rt::GenerateOptions o;
    o.generation.max_new_tokens = 16;
    const auto prompts = varied_prompts(6, target.config().vocab_size, 13);
    const auto built = accel::build_arm(arm, enc_pair);
    for (const auto& p : prompts) {
      const auto plain = rt::generate(target, {p}, o).tokens[0];
      const auto spec = accel::run_arm(built, {codec.encrypt(p)}, o);
      EXPECT_EQ(codec.decrypt(spec.generation.tokens[0]), plain) << "prompt of " << p.size();
      ASSERT_TRUE(spec.acceptance_rate.has_value());
    }
  }
}

TEST(Speculative, VerificationRuleReproducesTheTargetDistribution) {
  // d ~ q, then verify: the output must be distributed as p exactly (Leviathan et al., thm 1).
  const std::vector<float> p{0.5f, 0.2f, 0.15f, 0.1f, 0.05f, 0.0f}, q{0.05f, 0.3f, 0.1f, 0.15f, 0.2f, 0.2f};
  std::mt19937_64 rng(42);
  const int n = 200000;
  std::vector<double> counts(p.size(), 0);
  int accepted = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t d = rt::draw(q, rng);
    bool ok = false;
    counts[static_cast<std::size_t>(accel::verify_draft_token(p, q, d, rng, &ok))] += 1.0 / n;
    accepted += ok;
  }
  const std::vector<double> pd(p.begin(), p.end()), qd(q.begin(), q.end());
  EXPECT_LT(total_variation(counts, pd), 0.005);
  EXPECT_GT(total_variation(qd, pd), 0.4);  // the test has power: q is far from p
  // Acceptance probability is sum min(p, q) = 1 - TV(p, q).
  EXPECT_NEAR(static_cast<double>(accepted) / n, 1.0 - total_variation(qd, pd), 0.005);
  EXPECT_EQ(counts[5], 0.0);  // a token p never emits is never emitted
}

TEST(Speculative, SampledTokensFollowTheTargetDistributionEndToEnd) {
  // Two different small models over 32 tokens: the first two emitted tokens' frequencies over
  // many seeds must match the target's own distribution (the second one marginalized over the
  // first, computed exactly), far from the draft's.
  c10::InferenceMode guard;
  const auto target = small_lm(11), draft = small_lm(12);
  const std::vector<int64_t> prompt{1, 7, 3};
  rt::GenerationParams sp;
  sp.temperature = 1.0;
  auto dist = [&](const rt::LlamaModel& m, const std::vector<int64_t>& ids) {
    const auto logits = m.forward(at::tensor(ids, at::kLong).view({1, -1}))[0][-1].contiguous();
    const auto d = rt::sampling_distribution(logits.data_ptr<float>(), 32, sp);
    return std::vector<double>(d.begin(), d.end());
  };
  const auto p1 = dist(target, prompt), q1 = dist(draft, prompt);
  std::vector<double> p2(32, 0);
  for (int64_t x = 0; x < 32; ++x) {
    auto ids = prompt;
    ids.push_back(x);
    const auto cond = dist(target, ids);
    for (int64_t y = 0; y < 32; ++y) p2[static_cast<std::size_t>(y)] += p1[static_cast<std::size_t>(x)] * cond[static_cast<std::size_t>(y)];
  }
  ASSERT_GT(total_variation(p1, q1), 0.2) << "the draft must differ from the target for the test to have power";
  ASSERT_GT(*std::max_element(p1.begin(), p1.end()), 0.1);
  const int n = 4000;
  std::vector<double> f1(32, 0), f2(32, 0);
  double accept = 0;
  for (int s = 0; s < n; ++s) {
    rt::GenerateOptions o;
    o.generation.max_new_tokens = 3;
    o.generation = with_sampling(o.generation, sp.temperature, sp.top_k, sp.top_p, sp.seed);
    o.generation.seed = static_cast<uint64_t>(s);
    accel::SpeculativeStats stats;
    const auto r = accel::speculative_generate(target, draft, prompt, o, 3, &stats);
    ASSERT_EQ(r.tokens[0].size(), 3u);
    f1[static_cast<std::size_t>(r.tokens[0][0])] += 1.0 / n;
    f2[static_cast<std::size_t>(r.tokens[0][1])] += 1.0 / n;
    accept += stats.acceptance_rate() / n;
  }
  EXPECT_TRUE(chi_square_consistent(f1, p1, n));
  EXPECT_TRUE(chi_square_consistent(f2, p2, n));
  EXPECT_FALSE(chi_square_consistent(f1, q1, n));  // and the test can tell the draft's law apart
  EXPECT_GT(accept, 0.05);
  EXPECT_LT(accept, 0.95);
}

TEST(Speculative, EncryptedSamplingDecryptsToPlaintextSamplingForTheSameSeed) {
  c10::InferenceMode guard;
  const auto target = small_lm(11), draft = small_lm(12);
  const auto key = fixed_key(32, 9);
  const auto et = ee::encrypt_model(target, key, "t"), ed = ee::encrypt_model(draft, key, "d");
  const ee::Codec codec(key);
  for (uint64_t seed = 0; seed < 30; ++seed) {
    rt::GenerateOptions o;
    o.generation.max_new_tokens = 10;
    o.generation.temperature = 0.8;
    o.generation.top_p = 0.95;
    o.generation.seed = seed;
    const auto a = accel::speculative_generate(target, draft, {1, 5, 9}, o, 3);
    const auto b = accel::speculative_generate(et, ed, codec.encrypt({1, 5, 9}), o, 3);
    EXPECT_EQ(codec.decrypt(b.tokens[0]), a.tokens[0]) << "seed " << seed;
  }
}

TEST(Speculative, StopsAtStopIdsAndRespectsTheBudget) {
  const auto& t = target_model();
  const auto prompt = demo_prompts(3)[2];
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 9;
  const auto plain = rt::generate(t, {prompt}, o);
  const auto spec = accel::speculative_generate(t, draft_model(), prompt, o, 8);
  EXPECT_EQ(spec.tokens[0], plain.tokens[0]);
  EXPECT_EQ(spec.tokens[0].size(), 9u);
  ASSERT_GE(plain.tokens[0].size(), 4u);
  o.generation.stop_ids = {plain.tokens[0][3]};
  const auto stopped = accel::speculative_generate(t, draft_model(), prompt, o, 8);
  const auto plain_stopped = rt::generate(t, {prompt}, o);
  EXPECT_EQ(stopped.tokens[0], plain_stopped.tokens[0]);
  EXPECT_EQ(stopped.finish_reason[0], "stop");
}

// ---------------------------------------------------------------------------------------------
// streaming: GenerateOptions::on_tokens

struct Streamed {
  accel::ArmResult result;
  std::vector<std::vector<std::vector<int64_t>>> calls;  // what each on_tokens call was given
};

Streamed run_streamed(const accel::PreparedArm& arm, const std::vector<std::vector<int64_t>>& prompts, rt::GenerateOptions o) {
  Streamed s;
  o.on_tokens = [&s](const std::vector<std::vector<int64_t>>& step) { s.calls.push_back(step); };
  s.result = accel::run_arm(arm, prompts, o);
  return s;
}

// The chunks, concatenated per row, are the result's tokens; every call brings a token; a row
// that got nothing in a call has finished and gets nothing after; no stop id is ever reported.
void expect_stream_is_the_result(const Streamed& s, const std::vector<int64_t>& stop_ids, const std::string& what) {
  const auto& g = s.result.generation;
  std::vector<std::vector<int64_t>> joined(g.tokens.size());
  std::vector<bool> finished(g.tokens.size(), false);
  for (std::size_t c = 0; c < s.calls.size(); ++c) {
    const auto& step = s.calls[c];
    ASSERT_EQ(step.size(), g.tokens.size()) << what << ": call " << c;
    bool any = false;
    for (std::size_t r = 0; r < step.size(); ++r) {
      if (finished[r]) {
        EXPECT_TRUE(step[r].empty()) << what << ": row " << r << " got tokens after it finished (call " << c << ")";
      }
      if (step[r].empty()) finished[r] = true;
      for (const auto id : step[r]) {
        EXPECT_EQ(std::count(stop_ids.begin(), stop_ids.end(), id), 0) << what << ": a stop id was streamed";
      }
      joined[r].insert(joined[r].end(), step[r].begin(), step[r].end());
      any = any || !step[r].empty();
    }
    EXPECT_TRUE(any) << what << ": call " << c << " brought no token";
  }
  EXPECT_EQ(joined, g.tokens) << what;
}

// The first position k >= min_k at which `ids` holds a token it did not hold before and `other`
// never holds, or -1: as a stop id, it ends this row there and leaves the other row running.
int64_t private_first(const std::vector<int64_t>& ids, const std::vector<int64_t>& other, std::size_t min_k) {
  for (std::size_t k = min_k; k < ids.size(); ++k) {
    const auto t = ids[k];
    if (std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), t) == ids.begin() + static_cast<std::ptrdiff_t>(k) &&
        std::find(other.begin(), other.end(), t) == other.end())
      return static_cast<int64_t>(k);
  }
  return -1;
}

// Every kind of arm, greedy and seeded sampling: what on_tokens reports is exactly the answer,
// one token per row per step for the plain loop (batch 3, rows finishing at different steps),
// accepted runs for speculative rounds (batch 1).
TEST(Streaming, OnTokensConcatenatedIsTheResultForEveryKindOfArm) {
  const auto pair = pair_of(target_model(), &draft_model());
  const auto prompts = demo_prompts(3);
  const auto sampled = with_sampling({}, 0.8, 40, 0.95, 1234);
  for (const std::string name : {"plain", "kv", "kv+int8", "kv+spec4", "kv+qspec4"}) {
    const auto arm = accel::build_arm(data::parse_arm(name), pair);
    const bool speculative = arm.plan.spec_k > 0;
    const std::vector<std::vector<int64_t>> batch = speculative ? std::vector<std::vector<int64_t>>{prompts[2]} : prompts;
    for (const bool greedy : {true, false}) {
      const std::string what = name + (greedy ? ", greedy" : ", sampled");
      rt::GenerateOptions o;
      if (!greedy) o.generation = sampled;
      o.generation.max_new_tokens = 24;
      const auto free_run = run_streamed(arm, batch, o);
      expect_stream_is_the_result(free_run, {}, what + ", no stop");
      const auto& u = free_run.result.generation.tokens;
      if (!speculative) {
        EXPECT_EQ(free_run.calls.size(), 24u) << what << ": one call per step";
        for (const auto& step : free_run.calls)
          for (const auto& row : step) EXPECT_EQ(row.size(), 1u) << what;
      } else if (greedy) {
        EXPECT_LT(free_run.calls.size(), u[0].size()) << what << ": accepted drafts come several to a call";
      }

      // A stop id that ends row 0 early while row 1 (if any) runs to the limit.
      const auto k = private_first(u[0], batch.size() > 1 ? u[1] : std::vector<int64_t>{}, 3);
      ASSERT_GE(k, 0) << what << ": no usable stop id in " << ::testing::PrintToString(u[0]);
      o.generation.stop_ids = {u[0][static_cast<std::size_t>(k)]};
      const auto stopped = run_streamed(arm, batch, o);
      expect_stream_is_the_result(stopped, o.generation.stop_ids, what + ", stopped");
      const auto& st = stopped.result.generation;
      EXPECT_EQ(st.tokens[0], std::vector<int64_t>(u[0].begin(), u[0].begin() + k)) << what;
      EXPECT_EQ(st.finish_reason[0], "stop") << what;
      if (batch.size() > 1) {
        EXPECT_EQ(st.tokens[1], u[1]) << what;
        EXPECT_LT(st.tokens[0].size(), st.tokens[1].size()) << what << ": the rows must finish at different steps";
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// registry, refusals, cache

TEST(Arms, RefusalsGiveAClearReason) {
  const auto plain_pair = pair_of(target_model(), &draft_model());
  const auto no_draft = pair_of(target_model());
  data::TaskSpec task;
  task.draft = "draft";
  task.quality = data::Quality::Tolerant;
  EXPECT_FALSE(accel::arm_refusal(data::parse_arm("kv+spec4"), task, plain_pair));
  auto why = accel::arm_refusal(data::parse_arm("kv+spec4"), task, no_draft);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("needs a draft"));
  task.batch = 2;
  why = accel::arm_refusal(data::parse_arm("kv+spec4"), task, plain_pair);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("batch 1"));
  task.batch = 1;
  auto mixed = plain_pair;
  mixed.draft_key = "another-key";
  why = accel::arm_refusal(data::parse_arm("kv+spec4"), task, mixed);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("same key"));
  auto other_vocab = pair_of(target_model(), nullptr);
  other_vocab.draft = std::make_shared<const rt::LlamaModel>(synthetic_gqa(1));
  why = accel::arm_refusal(data::parse_arm("kv+spec2"), task, other_vocab);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("vocabulary"));
  task.quality = data::Quality::Exact;
  why = accel::arm_refusal(data::parse_arm("kv+int8"), task, plain_pair);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("lossy"));
  EXPECT_FALSE(accel::arm_refusal(data::parse_arm("kv+spec4"), task, plain_pair));  // lossless
  EXPECT_FALSE(accel::arm_refusal(data::parse_arm("kv+qspec6"), task, no_draft));   // lossless, drafts itself
  task.batch = 3;
  why = accel::arm_refusal(data::parse_arm("kv+qspec6"), task, no_draft);
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("batch 1"));
  task.batch = 1;
  EXPECT_THAT(error_of([] { accel::make_acceleration("int4"); }), HasSubstr("no acceleration implements"));
  // run_arm refuses what the capability check would have.
  const auto spec = accel::build_arm(data::parse_arm("kv+spec2"), plain_pair);
  EXPECT_THAT(error_of([&] { accel::run_arm(spec, {{1, 2}, {1, 3}}, {}); }), HasSubstr("batch 1"));
}

TEST(Arms, BuildOrderAndPlans) {
  const auto base = pair_of(target_model(), &draft_model());
  const auto plain = accel::build_arm(data::parse_arm("plain"), base);
  EXPECT_FALSE(plain.plan.kv_cache);
  EXPECT_EQ(plain.models.target, base.target);  // nothing to prepare: shared, not copied
  const auto both = accel::build_arm(data::parse_arm("kv+int8+prune30+spec4"), base);
  EXPECT_TRUE(both.plan.kv_cache);
  EXPECT_EQ(both.plan.spec_k, 4);
  // Pruned first, then quantized: the int8 matrices have the pruned shape.
  EXPECT_EQ(both.models.target->config().intermediate_size, accel::pruned_intermediate(704, 30));
  EXPECT_FALSE(both.models.target->int8_weights().empty());
  EXPECT_EQ(both.models.draft, base.draft);  // the draft is used as is
}

TEST(Arms, CacheBuildsEachArmOnce) {
  accel::ArmCache cache;
  const auto base = pair_of(eesched::testing::tiny_model(3));
  const auto a = cache.get("m", data::parse_arm("kv+int8"), base);
  const auto b = cache.get("m", data::parse_arm("int8+kv"), base);
  EXPECT_EQ(a.get(), b.get());
  const auto c = cache.get("other", data::parse_arm("kv+int8"), base);
  EXPECT_NE(a.get(), c.get());
  EXPECT_EQ(cache.size(), 2u);
  std::vector<std::thread> threads;
  std::vector<const accel::PreparedArm*> seen(4);
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] { seen[static_cast<std::size_t>(i)] = cache.get("m", data::parse_arm("kv+prune50"), base).get(); });
  for (auto& t : threads) t.join();
  for (auto* p : seen) EXPECT_EQ(p, seen[0]);
}

// The open set: an acceleration is its row in data/'s component table and its factory here. This
// one (a test plugin) rounds every weight to fp16 precision; nothing in the parser, the features,
// the roofline or the runner knows it, yet its arm parses, builds, runs, commutes with EE, and is
// refused where a lossy arm is.
class Fp16Rounding final : public accel::Acceleration {
 public:
  std::string name() const override { return "fp16"; }
  int stage() const override { return 1; }  // a storage format, after shape changes
  accel::ModelPair prepare(const accel::ModelPair& models) const override {
    auto w = models.target->weights();
    for (const auto& [name, t] : w.named()) slot(w, name) = t.to(at::kHalf).to(at::kFloat);
    accel::ModelPair out = models;
    out.target = std::make_shared<const rt::LlamaModel>(models.target->config(), w);
    return out;
  }
};

TEST(Arms, ANewAccelerationIsItsTableRowAndItsFactory) {
  using eesched::testing::error_of_type;
  c10::InferenceMode guard;
  data::ComponentKind row;
  row.prefix = "fp16";
  row.order = 11;
  row.lossless = false;
  row.excludes = {{"int8", "fp16 and int8 are both weight formats"}};
  row.effects = [](int) {
    data::ArmEffects e;
    e.weight_bytes = 2.0;
    return e;
  };
  data::register_component(row);
  struct Unregister {
    ~Unregister() { data::unregister_component("fp16"); }
  } unregister;
  accel::register_acceleration([](const std::string& c) -> std::unique_ptr<accel::Acceleration> {
    if (c != "fp16") return nullptr;
    return std::make_unique<Fp16Rounding>();
  });

  const auto arm = data::parse_arm("fp16+kv");
  EXPECT_EQ(arm.name, "kv+fp16");
  EXPECT_FALSE(arm.lossless());
  EXPECT_EQ(data::quality_key(arm), "fp16");
  EXPECT_FALSE(accel::make_acceleration("fp16")->lossless());  // the table's word, not repeated in the plugin
  EXPECT_THAT(error_of_type<data::Error>([] { data::parse_arm("kv+int8+fp16"); }), HasSubstr("both weight formats"));

  const auto& enc = encrypted_demo();
  const ee::Codec codec(enc.key);
  const auto pa = accel::build_arm(arm, pair_of(target_model()));
  const auto ea = accel::build_arm(arm, pair_of(enc.target, nullptr, enc.key.fingerprint()));
  for (const auto& [name, t] : pa.models.target->weights().named()) EXPECT_TRUE(at::equal(t, t.to(at::kHalf).to(at::kFloat))) << name;
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 8;
  for (const auto& p : demo_prompts(6)) {
    const auto a = accel::run_arm(pa, {p}, o);
    const auto b = accel::run_arm(ea, {codec.encrypt(p)}, o);
    EXPECT_EQ(codec.decrypt(b.generation.tokens[0]), a.generation.tokens[0]);
  }
  data::TaskSpec task;
  task.quality = data::Quality::Exact;
  const auto why = accel::arm_refusal(arm, task, pair_of(target_model()));
  ASSERT_TRUE(why);
  EXPECT_THAT(*why, HasSubstr("lossy"));
  task.quality = data::Quality::Tolerant;
  EXPECT_FALSE(accel::arm_refusal(arm, task, pair_of(target_model())));
}

// Every built-in acceleration says what its row says, and each row has an implementation.
TEST(Arms, EveryTableRowHasAnAcceleration) {
  for (const auto& kind : data::component_kinds()) {
    const auto component = kind->component_name(kind->number ? kind->number->lo : 0);
    const auto a = accel::make_acceleration(component);
    EXPECT_EQ(a->name(), component);
    EXPECT_EQ(a->lossless(), kind->lossless) << component;
  }
}

}  // namespace
