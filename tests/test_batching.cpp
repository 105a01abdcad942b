// Continuous batching (runtime/batch_decoder.h): a sequence decoded among others gives exactly
// what it gives alone, on plaintext and encrypted models, whatever joins or leaves meanwhile.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <map>
#include <random>

#include "ee/codec.h"
#include "ee/transform.h"
#include "runtime/batch_decoder.h"
#include "runtime/error.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "tests/ee_fixtures.h"

namespace rt = eesched::runtime;
namespace ee = eesched::ee;
using eesched::testing::error_of;
using eesched::testing::family_model;
using eesched::testing::family_names;
using eesched::testing::fixed_key;
using eesched::testing::synthetic_gqa;
using ::testing::HasSubstr;

namespace {

// What a sequence produced: the tokens its updates streamed, and its final result.
struct Outcome {
  std::vector<int64_t> streamed;
  rt::GenerateResult result;
  bool finished = false;
};

struct Job {
  rt::BatchRequest request;
  int64_t join_at_step = 0;  // the decoder step before which it is admitted (when a slot is free)
};

// Runs `jobs` through one decoder, admitting each at its step (or as soon as a slot frees after
// it), until all end. Returns the outcomes in job order.
std::vector<Outcome> run_batched(const rt::LlamaModel& model, const std::vector<Job>& jobs, rt::BatchDecoderOptions options) {
  rt::BatchDecoder decoder(model, options);
  std::vector<Outcome> out(jobs.size());
  std::map<int64_t, std::size_t> job_of;
  std::size_t next = 0;
  for (int64_t step = 0; step < 100000; ++step) {
    while (next < jobs.size() && jobs[next].join_at_step <= step && decoder.has_free_slot()) {
      EXPECT_EQ(decoder.refusal(jobs[next].request), "");
      job_of[decoder.admit(jobs[next].request)] = next;
      ++next;
    }
    if (next == jobs.size() && decoder.active() == 0) break;
    for (const auto phase : {&rt::BatchDecoder::prefill, &rt::BatchDecoder::decode})
      for (auto& u : (decoder.*phase)()) {
        auto& o = out[job_of.at(u.id)];
        EXPECT_FALSE(o.finished) << "an update after the end";
        EXPECT_LE(u.new_tokens.size(), 1u);
        o.streamed.insert(o.streamed.end(), u.new_tokens.begin(), u.new_tokens.end());
        if (u.finished) o.finished = true, o.result = std::move(u.result);
      }
  }
  for (const auto& o : out) {
    EXPECT_TRUE(o.finished);
    EXPECT_EQ(o.streamed, o.result.tokens.at(0)) << "the streamed tokens are the answer";
  }
  return out;
}

rt::GenerateResult alone(const rt::LlamaModel& model, const rt::BatchRequest& r) {
  rt::GenerateOptions o;
  o.generation = r.generation;
  return rt::generate(model, {r.prompt}, o);
}

// Prompts of 1..max_len ids, max_new_tokens 1..24, greedy or seeded sampling, joining over time.
std::vector<Job> varied_jobs(int n, int64_t vocab, int64_t max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(3, vocab - 1);
  std::vector<Job> jobs;
  for (int i = 0; i < n; ++i) {
    Job j;
    const int64_t len = 1 + (i * 29 + 7) % max_len;
    for (int64_t t = 0; t < len; ++t) j.request.prompt.push_back(id(rng));
    j.request.generation.max_new_tokens = 1 + (i * 11) % 24;
    j.request.generation.stop_ids = {2};
    if (i % 3 == 1) {
      j.request.generation.temperature = 0.9;
      j.request.generation.top_k = 40;
      j.request.generation.seed = 100 + static_cast<uint64_t>(i);
    }
    j.join_at_step = (i * 3) % 17;
    jobs.push_back(std::move(j));
  }
  return jobs;
}

TEST(BatchedForward, EachRowComputesBitForBitWhatItComputesAlone) {
  c10::InferenceMode guard;
  const auto model = synthetic_gqa(5);
  const std::vector<std::vector<int64_t>> prompts = {{5, 9, 11}, {7}, {3, 4, 5, 6, 7, 8, 9, 10, 11}, {12, 13}};
  rt::KVCache shared(model.config(), 4, 32);
  std::vector<std::unique_ptr<rt::KVCache>> own;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto n = static_cast<int64_t>(prompts[i].size());
    const auto ids = at::tensor(prompts[i], at::kLong).view({1, n});
    // Slot i + 1 mod 4: the shared cache's rows are not the prompts' order.
    const int64_t slot = static_cast<int64_t>((i + 1) % 4);
    const auto a = model.forward(ids, {n}, shared, {slot}, rt::LogitsAt::Last);
    own.push_back(std::make_unique<rt::KVCache>(model.config(), 1, 32));
    const auto b = model.forward(ids, {n}, *own.back(), rt::LogitsAt::Last);
    EXPECT_TRUE(at::equal(a, b)) << "prefill of prompt " << i;
  }
  // Decoding steps over subsets of the slots, in any order.
  const std::vector<std::vector<int64_t>> subsets = {{2, 0, 3}, {1}, {3, 1, 2, 0}, {0, 2}};
  for (const auto& slots : subsets) {
    std::vector<int64_t> next;
    for (const auto s : slots) next.push_back(20 + s);
    const auto B = static_cast<int64_t>(slots.size());
    const auto batched = model.forward(at::tensor(next, at::kLong).view({B, 1}), std::vector<int64_t>(slots.size(), 1), shared,
                                       slots, rt::LogitsAt::Last);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t slot = slots[static_cast<std::size_t>(b)];
      const auto prompt = static_cast<std::size_t>((slot + 3) % 4);  // slot (i + 1) % 4 holds prompt i
      const auto solo = model.forward(at::tensor(std::vector<int64_t>{20 + slot}, at::kLong).view({1, 1}), {1}, *own[prompt],
                                      rt::LogitsAt::Last);
      EXPECT_TRUE(at::equal(batched[b], solo[0])) << "slot " << slot;
      EXPECT_EQ(shared.length(slot), own[prompt]->length(0));
    }
  }
  EXPECT_THAT(error_of([&] { model.forward(at::ones({2, 1}, at::kLong), {1, 1}, shared, {1, 1}); }), HasSubstr("named twice"));
  EXPECT_THAT(error_of([&] { model.forward(at::ones({1, 1}, at::kLong), {1}, shared, {4}); }), HasSubstr("out of range"));
}

TEST(BatchDecoder, SequencesJoiningAndLeavingGiveWhatGenerateGivesAlone) {
  const auto model = synthetic_gqa(11);
  rt::BatchDecoderOptions o;
  o.max_batch = 4;
  o.context = 96;
  o.prefill_chunk = 64;  // every prompt fits one chunk: prefill is generate()'s
  const auto jobs = varied_jobs(14, model.config().vocab_size, 60, 3);
  const auto out = run_batched(model, jobs, o);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto ref = alone(model, jobs[i].request);
    EXPECT_EQ(out[i].result.tokens[0], ref.tokens[0]) << "job " << i;
    EXPECT_EQ(out[i].result.finish_reason[0], ref.finish_reason[0]) << "job " << i;
  }
}

TEST(BatchDecoder, EveryFamilyBatchesExactly) {
  for (const auto& family : family_names()) {
    const auto model = family_model(family, 21);
    rt::BatchDecoderOptions o;
    o.max_batch = 3;
    o.context = 96;
    const auto jobs = varied_jobs(6, model.config().vocab_size, 40, 9);
    const auto out = run_batched(model, jobs, o);
    for (std::size_t i = 0; i < jobs.size(); ++i)
      EXPECT_EQ(out[i].result.tokens[0], alone(model, jobs[i].request).tokens[0]) << family << " job " << i;
  }
}

// Long prompts are prefilled in chunks between decoding steps: a sequence gives what the same
// decoder gives it alone (chunks cut at the same places), and the same greedy ids as generate().
TEST(BatchDecoder, ChunkedPrefillIsBatchInvariant) {
  const auto model = synthetic_gqa(13);
  rt::BatchDecoderOptions o;
  o.max_batch = 5;
  o.context = 128;
  o.prefill_chunk = 8;
  o.prefill_budget = 16;
  auto jobs = varied_jobs(10, model.config().vocab_size, 90, 4);
  const auto batched = run_batched(model, jobs, o);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    auto solo_job = jobs[i];
    solo_job.join_at_step = 0;
    const auto solo = run_batched(model, {solo_job}, o);
    EXPECT_EQ(batched[i].result.tokens[0], solo[0].result.tokens[0]) << "job " << i;
    if (jobs[i].request.generation.temperature == 0) {
      EXPECT_EQ(batched[i].result.tokens[0], alone(model, jobs[i].request).tokens[0]) << "job " << i;
    }
  }
}

TEST(BatchDecoder, EncryptedBatchDecryptsToThePlaintextBatch) {
  const auto plain = synthetic_gqa(17);
  const auto key = fixed_key(plain.config().vocab_size);
  const auto encrypted = ee::encrypt_model(plain, key, "m");
  const ee::Codec codec(key);
  rt::BatchDecoderOptions o;
  o.max_batch = 4;
  o.context = 128;
  o.prefill_chunk = 16;
  const auto jobs = varied_jobs(10, plain.config().vocab_size, 70, 5);
  auto wire = jobs;
  for (auto& j : wire) {
    j.request.prompt = codec.encrypt(j.request.prompt);
    j.request.generation.stop_ids = codec.encrypt(j.request.generation.stop_ids);
  }
  const auto a = run_batched(plain, jobs, o);
  const auto b = run_batched(encrypted, wire, o);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(codec.decrypt(b[i].result.tokens[0]), a[i].result.tokens[0]) << "job " << i;
    EXPECT_EQ(b[i].result.finish_reason[0], a[i].result.finish_reason[0]) << "job " << i;
  }
}

TEST(BatchDecoder, RngSkipContinuesTheSampledStream) {
  const auto model = synthetic_gqa(19);
  rt::BatchRequest r;
  r.prompt = {5, 6, 7, 8};
  r.generation.max_new_tokens = 12;
  r.generation.temperature = 1.0;
  r.generation.seed = 42;
  rt::BatchDecoderOptions o;
  o.context = 64;
  const auto whole = run_batched(model, {Job{r, 0}}, o)[0].result.tokens[0];
  ASSERT_EQ(whole.size(), 12u);
  // Resume after 5 tokens: they join the prompt, and the RNG skips the 5 draws they took.
  auto rest = r;
  rest.prompt.insert(rest.prompt.end(), whole.begin(), whole.begin() + 5);
  rest.generation.max_new_tokens = 7;
  rest.rng_skip = 5;
  const auto tail = run_batched(model, {Job{rest, 0}}, o)[0].result.tokens[0];
  EXPECT_EQ(tail, std::vector<int64_t>(whole.begin() + 5, whole.end()));
}

TEST(BatchDecoder, RefusesWhatCannotRunAndRemovesOnRequest) {
  const auto model = synthetic_gqa(23);
  EXPECT_THAT(error_of([&] { rt::BatchDecoder(model, rt::BatchDecoderOptions{17, 64, 8, 8}); }), HasSubstr("max_batch must be 1..16"));
  rt::BatchDecoder d(model, rt::BatchDecoderOptions{2, 32, 8, 8});
  rt::BatchRequest r;
  EXPECT_EQ(d.refusal(r), "empty prompt");
  r.prompt = {1, 2, 300};
  EXPECT_THAT(d.refusal(r), HasSubstr("outside the vocabulary"));
  r.prompt = std::vector<int64_t>(30, 4);
  r.generation.max_new_tokens = 4;
  EXPECT_THAT(d.refusal(r), HasSubstr("exceeds the batch context of 32"));
  EXPECT_THAT(error_of([&] { d.admit(r); }), HasSubstr("exceeds the batch context"));
  r.generation.max_new_tokens = 3;  // 30 + 3 - 1 = 32 positions: fits
  EXPECT_EQ(d.refusal(r), "");
  const auto a = d.admit(r);
  const auto b = d.admit(r);
  EXPECT_FALSE(d.has_free_slot());
  EXPECT_THAT(error_of([&] { d.admit(r); }), HasSubstr("no free slot"));
  EXPECT_TRUE(d.remove(a));
  EXPECT_FALSE(d.remove(a));
  std::vector<int64_t> got;
  bool ended = false;
  while (!ended) {
    auto updates = d.prefill();
    for (auto& u : d.decode()) updates.push_back(std::move(u));
    for (auto& u : updates) {
      EXPECT_EQ(u.id, b);
      got.insert(got.end(), u.new_tokens.begin(), u.new_tokens.end());
      ended = u.finished;
    }
  }
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(d.active(), 0);
  EXPECT_TRUE(d.prefill().empty());
  EXPECT_TRUE(d.decode().empty());
}

}  // namespace
