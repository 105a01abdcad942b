// Sampling, the generation loop's options, tokenizer, perplexity and training.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <fstream>
#include <numeric>

#include "runtime/error.h"
#include "runtime/generate.h"
#include "runtime/perplexity.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer.h"
#include "runtime/train.h"
#include "tests/test_helpers.h"

namespace rt = eesched::runtime;
using eesched::testing::sampling;
using eesched::testing::with_sampling;
using eesched::testing::TempDir;
using eesched::testing::tiny_model;
using ::testing::HasSubstr;

namespace {

using eesched::testing::error_of;


TEST(Sampling, GreedyIsArgmaxAndTemperatureZeroIgnoresRng) {
  std::vector<float> logits{0.1f, 2.5f, -1.0f, 2.4f};
  std::mt19937_64 rng(1);
  rt::GenerationParams p;
  EXPECT_EQ(rt::sample(logits.data(), 4, p, rng), 1);
  auto probs = rt::sampling_distribution(logits.data(), 4, p);
  EXPECT_EQ(probs, (std::vector<float>{0, 1, 0, 0}));
}

TEST(Sampling, TopKAndTopPKeepTheRightSet) {
  std::vector<float> logits{1.0f, 3.0f, 2.0f, 0.0f, -5.0f};
  const auto p = sampling(1.0, 2, 1.0, 0);
  auto probs = rt::sampling_distribution(logits.data(), 5, p);
  EXPECT_GT(probs[1], 0);
  EXPECT_GT(probs[2], 0);
  EXPECT_EQ(probs[0], 0);
  EXPECT_EQ(probs[3], 0);
  EXPECT_NEAR(probs[1] + probs[2], 1.0, 1e-6);
  EXPECT_NEAR(probs[1] / probs[2], std::exp(1.0), 1e-4);

  // Softmax of {3,2,1,0,-5}: 0.644, 0.237, 0.087, ... top-p 0.85 keeps the first two.
  const auto nucleus = sampling(1.0, 0, 0.85, 0);
  probs = rt::sampling_distribution(logits.data(), 5, nucleus);
  EXPECT_GT(probs[1], 0.7);
  EXPECT_GT(probs[2], 0.2);
  EXPECT_EQ(probs[0], 0);
  EXPECT_NEAR(std::accumulate(probs.begin(), probs.end(), 0.0), 1.0, 1e-6);
}

TEST(Sampling, DrawsFollowTheDistribution) {
  std::vector<float> logits{0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  const auto p = sampling(1.0, 0, 1.0, 0);
  std::mt19937_64 rng(42);
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += rt::sample(logits.data(), 2, p, rng) == 1;
  EXPECT_NEAR(ones / static_cast<double>(n), 0.75, 0.015);
}

TEST(Sampling, PermutedLogitsDrawThePermutedToken) {
  // The property EE relies on for sampled decoding: same RNG stream, permuted vocabulary.
  const int64_t n = 50;
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(n);
  for (auto& x : logits) x = normal(gen);
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), gen);
  std::vector<float> permuted(n);
  for (int64_t t = 0; t < n; ++t) permuted[perm[t]] = logits[t];
  const auto p = sampling(0.8, 20, 0.9, 0);
  std::mt19937_64 a(11), b(11);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(perm[rt::sample(logits.data(), n, p, a)], rt::sample(permuted.data(), n, p, b));
}

TEST(Sampling, RejectsBadParameters) {
  EXPECT_THROW(rt::validate(sampling(1.0, -1, 1.0, 0)), rt::Error);
  EXPECT_THROW(rt::validate(sampling(1.0, 0, 0.0, 0)), rt::Error);
  EXPECT_THROW(rt::validate(sampling(1.0, 0, 1.5, 0)), rt::Error);
}

TEST(Generate, DeterministicUnderASeedAndDifferentAcrossSeeds) {
  auto model = tiny_model();
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 24;
  o.generation = with_sampling(o.generation, 1.0, 0, 1.0, 1234);
  const std::vector<std::vector<int64_t>> prompt{{1, 50, 60, 70}};
  auto a = rt::generate(model, prompt, o);
  auto b = rt::generate(model, prompt, o);
  EXPECT_EQ(a.tokens, b.tokens);
  o.generation.seed = 99;
  auto c = rt::generate(model, prompt, o);
  EXPECT_NE(a.tokens, c.tokens);
}

// A run resumed after its first k ids (they end the prompts now, k draws skipped in each row's
// random stream) continues exactly as the uninterrupted run: what a retried task relies on.
TEST(Generate, ResumingAfterKTokensWithRngSkipContinuesTheSameRun) {
  auto model = tiny_model();
  const std::vector<std::vector<int64_t>> prompts{{1, 50, 60, 70}, {1, 9}};
  for (const bool kv : {true, false}) {
    for (const double temperature : {0.0, 4.0}) {  // hot: the tiny random model's distributions are peaked
      rt::GenerateOptions o;
      o.kv_cache = kv;
      o.generation.max_new_tokens = 24;
      o.generation = with_sampling(o.generation, temperature, 0, 1.0, 1234);
      const auto whole = rt::generate(model, prompts, o).tokens;
      ASSERT_EQ(whole[1].size(), 24u);
      constexpr int64_t k = 7;
      auto resumed_prompts = prompts;
      for (std::size_t r = 0; r < prompts.size(); ++r) resumed_prompts[r].insert(resumed_prompts[r].end(), whole[r].begin(), whole[r].begin() + k);
      o.generation.max_new_tokens -= k;
      o.rng_skip = k;
      const auto rest = rt::generate(model, resumed_prompts, o).tokens;
      for (std::size_t r = 0; r < prompts.size(); ++r) {
        EXPECT_EQ(rest[r], std::vector<int64_t>(whole[r].begin() + k, whole[r].end())) << "row " << r << " kv " << kv << " t " << temperature;
      }
      if (temperature > 0) {  // the skip is what makes it so
        o.rng_skip = 0;
        EXPECT_NE(rt::generate(model, resumed_prompts, o).tokens, rest);
      }
    }
  }
}

TEST(Generate, MaxNewTokensIsRespected) {
  auto model = tiny_model();
  for (int64_t n : {1, 5, 17}) {
    rt::GenerateOptions o;
    o.generation.max_new_tokens = n;
    auto r = rt::generate(model, {{1, 2, 3}, {1, 9}}, o);
    ASSERT_EQ(r.tokens.size(), 2u);
    for (const auto& t : r.tokens) EXPECT_EQ(static_cast<int64_t>(t.size()), n);
    EXPECT_EQ(r.finish_reason[0], "length");
    EXPECT_EQ(static_cast<int64_t>(r.step_ms.size()), n - 1);
    EXPECT_GT(r.ttft_ms, 0);
  }
}

TEST(Generate, StopIdsStopAndAreNotEmitted) {
  auto model = tiny_model();
  rt::GenerateOptions o;
  o.generation.max_new_tokens = 20;
  auto free_run = rt::generate(model, {{1, 5, 6}}, o).tokens[0];
  ASSERT_GE(free_run.size(), 6u);
  // Stop at the 4th token greedy decoding would produce (first occurrence).
  const int64_t stop = free_run[3];
  const auto first = std::find(free_run.begin(), free_run.end(), stop) - free_run.begin();
  o.generation.stop_ids = {stop};
  auto r = rt::generate(model, {{1, 5, 6}}, o);
  EXPECT_EQ(r.finish_reason[0], "stop");
  EXPECT_EQ(r.tokens[0], std::vector<int64_t>(free_run.begin(), free_run.begin() + first));
}

TEST(Generate, RejectsBadInput) {
  auto model = tiny_model();
  rt::GenerateOptions o;
  EXPECT_THAT(error_of([&] { rt::generate(model, {{}}, o); }), HasSubstr("empty prompt"));
  EXPECT_THAT(error_of([&] { rt::generate(model, {{1, 5000}}, o); }), HasSubstr("outside the vocabulary"));
  o.generation.max_new_tokens = 500;
  EXPECT_THAT(error_of([&] { rt::generate(model, {{1, 2}}, o); }), HasSubstr("exceeds the model's context"));
}

TEST(Tokenizer, RoundTripsTextAndKnowsSpecialIds) {
  auto tok = rt::Tokenizer::load(eesched::testing::tokenizer_path());
  EXPECT_EQ(tok.vocab_size(), 1024);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  const std::string text = "The Congress shall have power to lay and collect taxes, 1790 and 2024.";
  auto ids = tok.encode(text);
  ASSERT_GT(ids.size(), 5u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.encode(text, false).size(), ids.size() - 1);
  // Byte fallback: characters outside the training text still round-trip.
  EXPECT_EQ(tok.decode(tok.encode("naïve café ✓", false)), "naïve café ✓");
  EXPECT_THROW(tok.decode({5000}), rt::Error);
}

TEST(Tokenizer, MissingOrCorruptModelIsAnError) {
  TempDir dir;
  EXPECT_THAT(error_of([&] { rt::Tokenizer::load(dir / "absent.model"); }), HasSubstr("does not exist"));
  std::ofstream(dir / "bad.model") << "this is not a sentencepiece model";
  EXPECT_THAT(error_of([&] { rt::Tokenizer::load(dir / "bad.model"); }), HasSubstr("cannot load tokenizer"));
}

TEST(Perplexity, SingleWindowEqualsCrossEntropyOfOneForward) {
  auto model = tiny_model(3, 64);
  std::vector<int64_t> ids{1, 5, 9, 12, 33, 2, 7, 7, 40, 63, 0, 18};
  rt::PerplexityOptions o;
  o.context = 16;
  auto r = rt::perplexity(model, ids, o);
  EXPECT_EQ(r.tokens, static_cast<int64_t>(ids.size()) - 1);
  EXPECT_EQ(r.windows, 1);
  c10::InferenceMode guard;
  auto logp = at::log_softmax(model.forward(at::tensor(ids, at::kLong).view({1, -1}))[0], -1);
  double nll = 0;
  for (std::size_t t = 0; t + 1 < ids.size(); ++t) nll -= logp[static_cast<int64_t>(t)][ids[t + 1]].item<double>();
  EXPECT_NEAR(r.mean_nll, nll / static_cast<double>(ids.size() - 1), 1e-5);
  EXPECT_NEAR(r.perplexity, std::exp(r.mean_nll), 1e-9);
}

TEST(Perplexity, SlidingWindowScoresEveryTokenOnce) {
  auto model = tiny_model(3, 64);
  std::vector<int64_t> ids(100);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7) % 64);
  rt::PerplexityOptions o;
  o.context = 16;
  o.stride = 8;
  auto r = rt::perplexity(model, ids, o);
  EXPECT_EQ(r.tokens, 99);
  EXPECT_GT(r.windows, 10);
  EXPECT_TRUE(std::isfinite(r.perplexity));
  o.stride = 32;
  EXPECT_THROW(rt::perplexity(model, ids, o), rt::Error);
}

TEST(Train, LossFallsAndResumeContinues) {
  TempDir dir;
  rt::TrainOptions o;
  o.model = eesched::testing::tiny_config(32);
  o.seq_len = 16;
  o.batch_size = 4;
  o.steps = 30;
  o.warmup_steps = 3;
  o.lr = 1e-2;
  o.eval_every = 15;
  o.eval_batches = 2;
  o.threads = 1;
  // A learnable stream: a repeating pattern.
  std::vector<int64_t> data(2000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int64_t>((i * 5 + i / 7) % 32);
  std::vector<double> losses;
  auto summary = rt::train_lm(o, data, data, dir.path(), false, [&](const rt::TrainProgress& p) { losses.push_back(p.loss); });
  EXPECT_EQ(summary.steps, 30);
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_LT(losses.back(), losses.front() - 0.5);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoint" / "optimizer.pt"));
  auto trained = rt::LlamaModel::load(dir.path());
  EXPECT_EQ(trained.config().vocab_size, 32);

  // Resuming a finished run does nothing more; resuming with more steps continues from 30.
  o.steps = 36;
  std::vector<int64_t> steps_seen;
  auto resumed = rt::train_lm(o, data, data, dir.path(), true, [&](const rt::TrainProgress& p) { steps_seen.push_back(p.step); });
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(steps_seen.front(), 31);
  EXPECT_EQ(steps_seen.back(), 36);
}

TEST(Train, RejectsTokensOutsideTheVocabulary) {
  TempDir dir;
  rt::TrainOptions o;
  o.model = eesched::testing::tiny_config(32);
  o.seq_len = 8;
  std::vector<int64_t> data(100, 40);
  EXPECT_THAT(error_of([&] { rt::train_lm(o, data, data, dir.path(), false, nullptr); }), HasSubstr("outside the model vocabulary"));
}

TEST(Config, ParsesHfKeysAndRejectsBadOnes) {
  auto c = rt::LlamaConfig::from_json(R"({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
      "num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 500000.0})");
  EXPECT_EQ(c.num_key_value_heads, 2);  // absent: no GQA
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  auto round = rt::LlamaConfig::from_json(c.to_json());
  EXPECT_EQ(round.to_json(), c.to_json());
  EXPECT_THAT(error_of([] { rt::LlamaConfig::from_json("{\"hidden_size\": 8}"); }), HasSubstr("vocab_size"));
  EXPECT_THAT(error_of([] { rt::LlamaConfig::from_json("{not json"); }), HasSubstr("not valid JSON"));
  EXPECT_THAT(error_of([] {
                rt::LlamaConfig::from_json(R"({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
                    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 3})");
              }),
              HasSubstr("num_key_value_heads"));
}

}  // namespace
