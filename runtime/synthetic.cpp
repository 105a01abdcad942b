#include "runtime/synthetic.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "runtime/error.h"
#include "runtime/model.h"

namespace eesched::runtime {

std::vector<std::string> synthetic_presets() { return {"25m", "110m", "350m"}; }

LlamaConfig synthetic_config(const std::string& preset) {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.max_position_embeddings = 2048;
  c.rms_norm_eps = 1e-5;
  if (preset == "25m") {
    c.hidden_size = 384, c.intermediate_size = 1024, c.num_hidden_layers = 8;
    c.num_attention_heads = 6, c.num_key_value_heads = 2, c.tie_word_embeddings = true;
  } else if (preset == "110m") {
    c.hidden_size = 768, c.intermediate_size = 2304, c.num_hidden_layers = 12;
    c.num_attention_heads = 12, c.num_key_value_heads = 4, c.tie_word_embeddings = true;
  } else if (preset == "350m") {
    c.hidden_size = 1024, c.intermediate_size = 2816, c.num_hidden_layers = 24;
    c.num_attention_heads = 16, c.num_key_value_heads = 4, c.tie_word_embeddings = false;
  } else {
    throw Error("unknown synthetic preset '" + preset + "' (choose 25m, 110m or 350m)");
  }
  c.validate();
  return c;
}

LlamaModel random_model(const LlamaConfig& config, uint64_t seed) {
  config.validate();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.num_hidden_layers));
  auto normal = [&](std::vector<int64_t> shape, double s) {
    return at::empty(shape, at::kFloat).normal_(0.0, s, gen);
  };
  const int64_t d = config.hidden_size, hd = config.head_dim(), inter = config.intermediate_size;
  LlamaWeights w;
  w.embed_tokens = normal({config.vocab_size, d}, std);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights l;
    l.input_layernorm = at::ones({d}, at::kFloat);
    l.q_proj = normal({config.num_attention_heads * hd, d}, std);
    l.k_proj = normal({config.num_key_value_heads * hd, d}, std);
    l.v_proj = normal({config.num_key_value_heads * hd, d}, std);
    l.o_proj = normal({d, config.num_attention_heads * hd}, out_std);
    l.post_attention_layernorm = at::ones({d}, at::kFloat);
    l.gate_proj = normal({inter, d}, std);
    l.up_proj = normal({inter, d}, std);
    l.down_proj = normal({d, inter}, out_std);
    if (config.qkv_bias) {
      l.q_bias = normal({config.num_attention_heads * hd}, std);
      l.k_bias = normal({config.num_key_value_heads * hd}, std);
      l.v_bias = normal({config.num_key_value_heads * hd}, std);
    }
    if (config.qk_norm) {
      l.q_norm = at::ones({hd}, at::kFloat);
      l.k_norm = at::ones({hd}, at::kFloat);
    }
    w.layers.push_back(std::move(l));
  }
  w.norm = at::ones({d}, at::kFloat);
  if (!config.tie_word_embeddings) w.lm_head = normal({config.vocab_size, d}, std);
  return LlamaModel(config, w);
}

}  // namespace eesched::runtime
