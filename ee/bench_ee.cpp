#include "ee/bench_ee.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <random>

#include "ee/key.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/sampling.h"

namespace eesched::ee {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// One model's greedy decoding, advanced one token at a time by the benchmark.
struct Stream {
  explicit Stream(const runtime::LlamaModel* m) : model(m) {}
  const runtime::LlamaModel* model;
  std::unique_ptr<runtime::KVCache> cache;
  int64_t next = 0;
  std::vector<int64_t> tokens;
  std::vector<double> step_ms;

  void start(const std::vector<int64_t>& prompt, int64_t capacity) {
    cache = std::make_unique<runtime::KVCache>(model->config(), 1, capacity);
    tokens.clear();
    auto logits = model->forward(at::tensor(prompt, at::kLong).view({1, -1}), {static_cast<int64_t>(prompt.size())}, *cache,
                                 runtime::LogitsAt::Last).contiguous();
    next = runtime::argmax(logits.data_ptr<float>(), logits.size(1));
    tokens.push_back(next);
  }
  double step() {
    const auto t0 = Clock::now();
    auto logits = model->forward(at::tensor({next}, at::kLong).view({1, 1}), {1}, *cache, runtime::LogitsAt::Last).contiguous();
    next = runtime::argmax(logits.data_ptr<float>(), logits.size(1));
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    tokens.push_back(next);
    return ms;
  }
};

}  // namespace

EeBenchResult bench_ee(const runtime::LlamaModel& plain, const runtime::LlamaModel& encrypted, const std::vector<int64_t>& vocab,
                       int64_t tokens, int pairs) {
  if (pairs < 1 || tokens < 2) throw runtime::Error("bench-ee: need at least one pair and two tokens");
  const auto& c = plain.config();
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, c.vocab_size - 1);
  std::vector<int64_t> prompt(16);
  for (auto& id : prompt) id = pick(rng);
  if (static_cast<int64_t>(prompt.size()) + tokens + 1 > c.max_position_embeddings)
    throw runtime::Error("bench-ee: prompt + tokens exceed max_position_embeddings");
  std::vector<int64_t> wire_prompt;
  for (auto id : prompt) wire_prompt.push_back(vocab[static_cast<std::size_t>(id)]);
  const auto back = inverse(vocab);

  // The control: the plaintext weights copied into fresh memory, as the encrypted model's are.
  auto copied = plain.weights();
  copied.embed_tokens = copied.embed_tokens.clone();
  copied.norm = copied.norm.clone();
  if (copied.lm_head.defined()) copied.lm_head = copied.lm_head.clone();
  for (auto& l : copied.layers)
    for (at::Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.post_attention_layernorm,
                          &l.gate_proj, &l.up_proj, &l.down_proj})
      *t = t->clone();
  const runtime::LlamaModel control(plain.config(), copied);

  c10::InferenceMode guard;
  std::array<Stream, 3> s{Stream(&plain), Stream(&control), Stream(&encrypted)};
  std::vector<double> enc_speedup, control_speedup, enc_vs_control;  // paired, per step
  EeBenchResult r;
  r.pairs = pairs;
  r.tokens = tokens;
  r.same_tokens = true;
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + tokens + 1;
  for (int round = -1; round < pairs; ++round) {  // round -1: warm-up, not counted
    s[0].start(prompt, capacity);
    s[1].start(prompt, capacity);
    s[2].start(wire_prompt, capacity);
    // Lockstep: each iteration decodes one token on each model, in rotating order, so the three
    // timings of an iteration see the same machine state and their ratios cancel drift.
    for (int64_t t = 0; t < tokens; ++t) {
      std::array<double, 3> ms{};
      for (int k = 0; k < 3; ++k) {
        const auto m = static_cast<std::size_t>((t + k) % 3);
        ms[m] = s[m].step();
      }
      if (round < 0) continue;
      for (int m = 0; m < 3; ++m) s[static_cast<std::size_t>(m)].step_ms.push_back(ms[static_cast<std::size_t>(m)]);
      enc_speedup.push_back(ms[0] / ms[2]);
      control_speedup.push_back(ms[0] / ms[1]);
      enc_vs_control.push_back(ms[1] / ms[2]);
    }
    std::vector<int64_t> decrypted;
    for (auto id : s[2].tokens) decrypted.push_back(back[static_cast<std::size_t>(id)]);
    r.same_tokens = r.same_tokens && decrypted == s[0].tokens && s[1].tokens == s[0].tokens;
  }
  r.plain_tokens_per_s = 1000.0 / median(s[0].step_ms);
  r.control_tokens_per_s = 1000.0 / median(s[1].step_ms);
  r.encrypted_tokens_per_s = 1000.0 / median(s[2].step_ms);
  r.ratio = median(enc_speedup);
  r.control_ratio = median(control_speedup);
  r.ratio_vs_control = median(enc_vs_control);
  return r;
}

}  // namespace eesched::ee
