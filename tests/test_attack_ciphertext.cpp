// The ciphertext-only attack (ee/attack_ciphertext.h): it recovers a substitution when the
// statistics allow, little when they do not, its score means what it says, and
// `eesched attack ciphertext` keeps its contract.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "data/store.h"
#include "ee/attack_ciphertext.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "runtime/tokenizer.h"
#include "tests/test_helpers.h"

namespace ee = eesched::ee;
using eesched::testing::run_eesched;
using eesched::testing::TempDir;
using ::testing::HasSubstr;

namespace {

// A Markov source over a small vocabulary with strongly distinct frequencies: each token has a
// few successors with Zipf weights, and the tokens' overall rates fall off steeply.
struct MarkovSource {
  int64_t vocab;
  std::vector<std::vector<double>> next;  // [vocab][vocab] transition probabilities

  MarkovSource(int64_t v, uint64_t seed) : vocab(v), next(static_cast<std::size_t>(v), std::vector<double>(static_cast<std::size_t>(v), 0.0)) {
    std::mt19937_64 rng(seed);
    for (int64_t a = 0; a < v; ++a) {
      auto& row = next[static_cast<std::size_t>(a)];
      for (int64_t b = 0; b < v; ++b) row[static_cast<std::size_t>(b)] = 0.02 / static_cast<double>(b + 1);  // a global Zipf
      for (int k = 0; k < 4; ++k) row[rng() % static_cast<uint64_t>(v)] += 1.0 / (k + 1);                 // its own successors
      const double sum = std::accumulate(row.begin(), row.end(), 0.0);
      for (auto& p : row) p /= sum;
    }
  }
  std::vector<int64_t> draw(int64_t n, uint64_t seed) const {
    std::mt19937_64 rng(seed);
    std::vector<int64_t> out{0};
    while (static_cast<int64_t>(out.size()) < n) {
      const auto& row = next[static_cast<std::size_t>(out.back())];
      out.push_back(std::discrete_distribution<int64_t>(row.begin(), row.end())(rng));
    }
    return out;
  }
};

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), std::mt19937_64(seed));
  return p;
}

std::vector<int64_t> encrypt_ids(const std::vector<int64_t>& p, const std::vector<int64_t>& ids) {
  std::vector<int64_t> out;
  for (const int64_t t : ids) out.push_back(p[static_cast<std::size_t>(t)]);
  return out;
}

// The source itself, in cipher space, as a CipherLM (what an encrypted model is to its holder).
ee::CipherLM markov_lm(const MarkovSource& src, const std::vector<int64_t>& perm) {
  const auto inv = ee::inverse(perm);
  ee::CipherLM lm;
  lm.vocab_size = src.vocab;
  lm.bos = perm[0];
  lm.log_probs = [&src, perm, inv](const std::vector<std::vector<int64_t>>& rows) {
    const auto v = static_cast<std::size_t>(src.vocab);
    std::vector<float> out;
    for (const auto& row : rows)
      for (const int64_t c : row) {
        const auto& next = src.next[static_cast<std::size_t>(inv[static_cast<std::size_t>(c)])];
        const std::size_t at = out.size();
        out.resize(at + v);
        for (std::size_t p = 0; p < v; ++p) out[at + static_cast<std::size_t>(perm[p])] = static_cast<float>(std::log(next[p]));
      }
    return out;
  };
  lm.sample = [&src, perm](int64_t rows, int64_t length, uint64_t seed) {
    std::vector<std::vector<int64_t>> out;
    for (int64_t r = 0; r < rows; ++r) out.push_back(encrypt_ids(perm, src.draw(length, seed * 7919 + static_cast<uint64_t>(r))));
    return out;
  };
  return lm;
}

ee::CiphertextAttackOptions quick() {
  ee::CiphertextAttackOptions o;
  o.search_seconds = 1.0;
  o.sample_tokens = 20000;
  o.refine_tokens = 8192;
  return o;
}

TEST(AttackCiphertext, ScoringAPerfectGuessIsOneAndAShuffledOneNearZero) {
  const int64_t v = 500;
  const auto truth = permutation(v, 3);
  const std::vector<std::vector<int64_t>> observed{encrypt_ids(truth, {1, 2, 3, 3, 3, 4}), encrypt_ids(truth, {5, 1})};
  const auto perfect = ee::inverse(truth);
  auto s = ee::score_ciphertext_attack(perfect, truth, observed);
  EXPECT_EQ(s.vocab_recovered, 1.0);
  EXPECT_EQ(s.tokens_recovered, 1.0);
  EXPECT_EQ(s.observed_vocab_recovered, 1.0);
  EXPECT_EQ(s.observed_tokens, 8);
  EXPECT_EQ(s.observed_distinct, 5);

  // A guess that is another random permutation gets about 1 of 500 right.
  s = ee::score_ciphertext_attack(ee::inverse(permutation(v, 4)), truth, observed);
  EXPECT_LT(s.vocab_recovered, 0.02);
  // Frequency weighted: only token 3 (3 of the 8 observed tokens) right.
  auto one = std::vector<int64_t>(static_cast<std::size_t>(v), -1);
  one[static_cast<std::size_t>(truth[3])] = 3;
  s = ee::score_ciphertext_attack(one, truth, observed);
  EXPECT_DOUBLE_EQ(s.tokens_recovered, 3.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.observed_vocab_recovered, 1.0 / 5.0);
  EXPECT_DOUBLE_EQ(s.vocab_recovered, 1.0 / 500.0);
}

TEST(AttackCiphertext, ALargeSampleOfTheCorpusLanguageFallsToFrequencyAndBigrams) {
  const MarkovSource src(64, 11);
  const auto truth = permutation(64, 12);
  const auto corpus = src.draw(60000, 1);
  std::vector<std::vector<int64_t>> observed;
  for (uint64_t r = 0; r < 100; ++r) observed.push_back(encrypt_ids(truth, src.draw(400, 100 + r)));
  const auto result = ee::attack_ciphertext(observed, corpus, 64, nullptr, quick());
  const auto s = ee::score_ciphertext_attack(result.guess, truth, observed);
  EXPECT_GE(s.tokens_recovered, 0.9);
  EXPECT_GE(s.observed_vocab_recovered, 0.7);
  EXPECT_FALSE(result.model_used);
  EXPECT_EQ(result.observed_tokens, 40000);
}

TEST(AttackCiphertext, AFewTokensRevealLittleWithoutTheModelAndAlmostAllWithIt) {
  const MarkovSource src(64, 21);
  const auto truth = permutation(64, 22);
  const auto corpus = src.draw(60000, 2);
  const std::vector<std::vector<int64_t>> observed{encrypt_ids(truth, src.draw(12, 300))};
  const auto blind = ee::attack_ciphertext(observed, corpus, 64, nullptr, quick());
  const auto s_blind = ee::score_ciphertext_attack(blind.guess, truth, observed);
  EXPECT_LT(s_blind.vocab_recovered, 0.25);  // at most the dozen observed ids
  EXPECT_EQ(blind.observed_tokens, 12);

  // The model in cipher space is unlimited ciphertext and a predictor to refine with.
  const auto lm = markov_lm(src, truth);
  auto o = quick();
  o.known = {{0, truth[0]}};
  const auto seen = ee::attack_ciphertext(observed, corpus, 64, &lm, o);
  const auto s_seen = ee::score_ciphertext_attack(seen.guess, truth, observed);
  EXPECT_TRUE(seen.model_used);
  EXPECT_GT(seen.sampled_tokens, 0);
  EXPECT_GE(seen.refine_passes, 1);
  EXPECT_GE(s_seen.vocab_recovered, 0.9);
  EXPECT_GE(s_seen.tokens_recovered, 0.9);
}

TEST(AttackCiphertext, RefusesIdsOutsideTheVocabulary) {
  const std::vector<int64_t> corpus{1, 2, 3, 1, 2};
  EXPECT_THROW(ee::attack_ciphertext({{1, 2, 9}}, corpus, 8, nullptr, quick()), std::invalid_argument);
  EXPECT_THROW(ee::attack_ciphertext({{1, 2}}, {1}, 8, nullptr, quick()), std::invalid_argument);
}

// The command line, on a tiny model with the committed tokenizer and text written here.
class AttackCiphertextCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    key_ = dir_->path() / "k.eekey";
    ee::Key::generate(1024).save(key_, false);
    corpus_ = dir_->path() / "corpus.txt";
    observed_ = dir_->path() / "observed.jsonl";
    std::string text;
    const char* lines[] = {"The state of the Union is strong, and our economy grows every year.",
                           "We must keep faith with the people who sent us here to work for them.",
                           "Our nation is a nation of laws, and the law must apply to all of us.",
                           "The people of this country want jobs, schools and safe streets."};
    for (int i = 0; i < 60; ++i) text += std::string(lines[i % 4]) + (i % 3 == 2 ? "\n\n" : "\n");
    std::ofstream(corpus_) << text;
    const auto tok = eesched::runtime::Tokenizer::load(eesched::testing::tokenizer_path());
    const ee::Codec codec(ee::Key::load(key_));
    std::ofstream obs(observed_);
    for (int i = 0; i < 8; ++i) {
      const auto ids = codec.encrypt(tok.encode(lines[i % 4]));
      if (i % 2) obs << nlohmann::json(ids).dump() << "\n";
      else obs << nlohmann::json{{"ids", ids}}.dump() << "\n";
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string base() {
    return "attack ciphertext --corpus " + corpus_.string() + " --key " + key_.string() + " --tokenizer " +
           eesched::testing::tokenizer_path().string() + " --search-seconds 0.2 ";
  }
  static void expect_one_line_error(const std::string& args, const std::string& needle) {
    const auto r = run_eesched(args, true);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_THAT(r.output, HasSubstr(needle)) << args;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }

  static inline TempDir* dir_ = nullptr;
  static inline std::filesystem::path key_, corpus_, observed_;
};

TEST_F(AttackCiphertextCli, JsonHasTheContractFields) {
  const auto r = run_eesched(base() + "--observed " + observed_.string() + " --requests 6 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  for (const char* k : {"attack", "vocab_recovered", "tokens_recovered", "observed_vocab_recovered", "requests", "observed_tokens",
                        "model_used", "seconds"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["attack"], "ciphertext");
  EXPECT_EQ(j["requests"], 6);
  EXPECT_FALSE(j["model_used"].get<bool>());
  EXPECT_GT(j["observed_tokens"].get<int64_t>(), 40);
  EXPECT_GE(j["tokens_recovered"].get<double>(), 0.0);
  EXPECT_LE(j["tokens_recovered"].get<double>(), 1.0);
  EXPECT_LT(j["vocab_recovered"].get<double>(), 0.1);  // a few dozen ids seen of 1024

  // With the encrypted model (random weights: a meaningless LM, but the path runs).
  TempDir d;
  eesched::testing::tiny_model().save(d / "model");
  const auto enc = (d / "enc").string();
  ASSERT_EQ(run_eesched("encrypt-model --model " + (d / "model").string() + " --key " + key_.string() + " --out " + enc).exit_code, 0);
  const auto m = run_eesched(base() + "--observed " + observed_.string() + " --encrypted " + enc +
                             " --sample-tokens 256 --refine-passes 1 --json");
  ASSERT_EQ(m.exit_code, 0) << m.output;
  const auto mj = nlohmann::json::parse(m.output);
  EXPECT_TRUE(mj["model_used"].get<bool>());
  EXPECT_GT(mj["sampled_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(mj["refine_passes"], 1);
}

TEST_F(AttackCiphertextCli, ReadsTheStoresTasks) {
  TempDir d;
  const auto db = d / "store.db";
  {
    auto store = eesched::data::Store::open(db);
    eesched::data::ModelRow model;
    model.name = "m";
    model.fingerprint = "fp";
    const auto model_id = store.upsert_model(model);
    const auto tok = eesched::runtime::Tokenizer::load(eesched::testing::tokenizer_path());
    const ee::Codec codec(ee::Key::load(key_));
    for (int i = 0; i < 3; ++i) {
      eesched::data::TaskRow t;
      t.ext_id = "t" + std::to_string(i);
      t.model_id = model_id;
      t.prompt_ids = {codec.encrypt(tok.encode("The state of the Union is strong."))};
      store.insert_task(t);
    }
  }
  const auto r = run_eesched(base() + "--db " + db.string() + " --requests 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["requests"], 2);
  EXPECT_GT(j["observed_tokens"].get<int64_t>(), 10);

  // An empty store is refused in one line.
  const auto empty = d / "empty.db";
  eesched::data::Store::open(empty);
  expect_one_line_error(base() + "--db " + empty.string(), "holds no tasks");
}

TEST_F(AttackCiphertextCli, BadInputIsOneLine) {
  TempDir d;
  expect_one_line_error(base(), "--db STORE or --observed");
  expect_one_line_error(base() + "--observed " + (d / "missing.jsonl").string(), "cannot read --observed");
  std::ofstream(d / "bad.jsonl") << "[1, 2, 3]\n{\"ids\": [1, \n";
  expect_one_line_error(base() + "--observed " + (d / "bad.jsonl").string(), "line 2");
  std::ofstream(d / "big.jsonl") << "[1, 2, 99999]\n";
  expect_one_line_error(base() + "--observed " + (d / "big.jsonl").string(), "outside the vocabulary");
}

}  // namespace
