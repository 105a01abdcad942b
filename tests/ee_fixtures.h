#pragma once
// Models and keys shared by the EE and acceleration suites.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ee/key.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "tests/test_helpers.h"

namespace eesched::testing {

// A key from fixed secret bytes, so failures reproduce.
inline ee::Key fixed_key(int64_t vocab, uint8_t fill = 7) {
  std::array<uint8_t, ee::Key::kSecretBytes> secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(fill * 31 + i * 17);
  return ee::Key::from_secret(secret, vocab);
}

// The tiny GQA shape the EE tests use (untied head); family tests vary it.
inline runtime::LlamaConfig gqa_config() {
  runtime::LlamaConfig c;
  c.vocab_size = 300;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 256;
  c.tie_word_embeddings = false;
  return c;
}

// A random model of `c` whose weights are spread enough that greedy choices are not near-ties
// and every norm weight (q/k norms included, differing across each RoPE pair as real ones do)
// and bias is non-trivial.
inline runtime::LlamaModel spread_model(const runtime::LlamaConfig& c, uint64_t seed) {
  auto m = runtime::random_model(c, seed);
  auto w = m.weights();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  auto jitter = [&](const at::Tensor& t) { return 1.0 + 0.2 * at::empty(t.sizes(), at::kFloat).normal_(0, 1, gen); };
  w.embed_tokens = w.embed_tokens * 10;
  if (w.lm_head.defined()) w.lm_head = w.lm_head * 10;
  w.norm = jitter(w.norm);
  for (auto& l : w.layers) {
    l.input_layernorm = jitter(l.input_layernorm);
    l.post_attention_layernorm = jitter(l.post_attention_layernorm);
    l.q_proj = l.q_proj * 5;
    l.k_proj = l.k_proj * 5;
    for (at::Tensor* b : {&l.q_bias, &l.k_bias, &l.v_bias})
      if (b->defined()) *b = at::empty(b->sizes(), at::kFloat).normal_(0, 1, gen);
    for (at::Tensor* n : {&l.q_norm, &l.k_norm})
      if (n->defined()) *n = jitter(*n);
  }
  return runtime::LlamaModel(c, w);
}

inline runtime::LlamaModel synthetic_gqa(uint64_t seed) { return spread_model(gqa_config(), seed); }

// The families the runtime supports, each as a tiny config (gqa_config's shape, or a smaller
// one for a draft: a draft and its target share the vocabulary, not the shape):
//   llama3:  rope_scaling llama3, an explicit head_dim (heads x head_dim != hidden), tied head;
//   mistral: linear rope_scaling, untied head;
//   qwen2:   q/k/v biases, untied head;
//   qwen3:   per-head q/k RMSNorm, head_dim != hidden / heads, tied head.
inline const std::vector<std::string>& family_names() {
  static const std::vector<std::string> names = {"llama3", "mistral", "qwen2", "qwen3"};
  return names;
}

inline runtime::LlamaConfig family_config(const std::string& family, bool draft = false) {
  auto c = gqa_config();
  c.tie_word_embeddings = true;
  if (draft) c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 1, c.num_attention_heads = 4;
  if (family == "qwen2") {
    c.model_type = "qwen2", c.qkv_bias = true, c.tie_word_embeddings = false;
  } else if (family == "qwen3") {
    c.model_type = "qwen3", c.qk_norm = true, c.explicit_head_dim = 16;  // 6 x 16 = 96 != 48 (draft: 4 x 16 != 32)
  } else if (family == "llama3") {
    c.explicit_head_dim = 12;
    c.rope_scaling.type = "llama3", c.rope_scaling.factor = 8, c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4, c.rope_scaling.original_max_position_embeddings = 64;
  } else if (family == "mistral") {
    c.model_type = "mistral", c.tie_word_embeddings = false;
    c.rope_scaling.type = "linear", c.rope_scaling.factor = 2;
  } else {
    throw std::invalid_argument("no family " + family);
  }
  return c;
}

// Weights spread (spread_model) so greedy choices are not ties.
inline runtime::LlamaModel family_model(const std::string& family, uint64_t seed, bool draft = false) {
  return spread_model(family_config(family, draft), seed);
}

inline const runtime::LlamaModel& target_model() {
  static const runtime::LlamaModel m = runtime::LlamaModel::load(source_dir() / "models" / "target");
  return m;
}

inline std::vector<std::vector<int64_t>> varied_prompts(int n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(3, vocab - 1);
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < n; ++i) {
    const int len = 1 + (i * 37) % 90;  // 1..90 tokens
    std::vector<int64_t> p{1};
    for (int t = 1; t < len; ++t) p.push_back(id(rng));
    prompts.push_back(p);
  }
  return prompts;
}


// The committed draft model (models/draft): same tokenizer as target_model().
inline const runtime::LlamaModel& draft_model() {
  static const runtime::LlamaModel m = runtime::LlamaModel::load(source_dir() / "models" / "draft");
  return m;
}

}  // namespace eesched::testing
