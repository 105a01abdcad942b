#include "runtime/synthetic.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"

namespace eesched::runtime {

std::vector<std::string> synthetic_presets() {
  return {"25m", "110m", "350m", "llama3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b", "smollm2-360m"};
}

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
  } else if (preset == "llama3.2-1b") {  // meta-llama/Llama-3.2-1B-Instruct
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.explicit_head_dim = 64, c.tie_word_embeddings = true;
    c.max_position_embeddings = 131072, c.rope_theta = 500000.0, c.bos_token_id = 128000, c.eos_token_id = 128009;
    c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  } else if (preset == "qwen2.5-0.5b") {  // Qwen/Qwen2.5-0.5B-Instruct
    c.model_type = "qwen2", c.qkv_bias = true;
    c.vocab_size = 151936, c.hidden_size = 896, c.intermediate_size = 4864, c.num_hidden_layers = 24;
    c.num_attention_heads = 14, c.num_key_value_heads = 2, c.tie_word_embeddings = true;
    c.max_position_embeddings = 32768, c.rope_theta = 1000000.0, c.rms_norm_eps = 1e-6;
    c.bos_token_id = 151643, c.eos_token_id = 151645;
  } else if (preset == "qwen3-0.6b") {  // Qwen/Qwen3-0.6B
    c.model_type = "qwen3", c.qk_norm = true;
    c.vocab_size = 151936, c.hidden_size = 1024, c.intermediate_size = 3072, c.num_hidden_layers = 28;
    c.num_attention_heads = 16, c.num_key_value_heads = 8, c.explicit_head_dim = 128, c.tie_word_embeddings = true;
    c.max_position_embeddings = 40960, c.rope_theta = 1000000.0, c.rms_norm_eps = 1e-6;
    c.bos_token_id = 151643, c.eos_token_id = 151645;
  } else if (preset == "smollm2-360m") {  // HuggingFaceTB/SmolLM2-360M-Instruct
    c.vocab_size = 49152, c.hidden_size = 960, c.intermediate_size = 2560, c.num_hidden_layers = 32;
    c.num_attention_heads = 15, c.num_key_value_heads = 5, c.tie_word_embeddings = true;
    c.max_position_embeddings = 8192, c.rope_theta = 100000.0, c.bos_token_id = 1, c.eos_token_id = 2;
  } else {
    throw Error("unknown synthetic preset '" + preset + "' (choose 25m, 110m, 350m, llama3.2-1b, qwen2.5-0.5b, qwen3-0.6b, smollm2-360m)");
  }
  if (preset.find('-') != std::string::npos) c.torch_dtype = "bfloat16";
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
  // Matrices are drawn in f32 (the same draws whatever the dtype) and kept in the config's
  // dtype one by one, so a 16-bit preset is held in 16 bits as its checkpoint is: a 1B model
  // needs 2.5 GB, not its 5 GB f32 widening. Biases and norms stay f32, as the model holds them.
  const at::ScalarType dtype = config.torch_dtype == "bfloat16" ? at::kBFloat16
                               : config.torch_dtype == "float16" ? at::kHalf
                                                                 : at::kFloat;
  auto matrix = [&](std::vector<int64_t> shape, double s) { return normal(std::move(shape), s).to(dtype); };
  const int64_t d = config.hidden_size, hd = config.head_dim(), inter = config.intermediate_size;
  LlamaWeights w;
  w.embed_tokens = matrix({config.vocab_size, d}, std);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights l;
    l.input_layernorm = at::ones({d}, at::kFloat);
    l.q_proj = matrix({config.num_attention_heads * hd, d}, std);
    l.k_proj = matrix({config.num_key_value_heads * hd, d}, std);
    l.v_proj = matrix({config.num_key_value_heads * hd, d}, std);
    l.o_proj = matrix({d, config.num_attention_heads * hd}, out_std);
    l.post_attention_layernorm = at::ones({d}, at::kFloat);
    l.gate_proj = matrix({inter, d}, std);
    l.up_proj = matrix({inter, d}, std);
    l.down_proj = matrix({d, inter}, out_std);
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
  if (!config.tie_word_embeddings) w.lm_head = matrix({config.vocab_size, d}, std);
  return LlamaModel(config, w);
}

void save_checkpoint(const LlamaModel& model, const std::filesystem::path& dir, int64_t shard_bytes) {
  const auto& config = model.config();
  const at::ScalarType dtype = config.torch_dtype == "bfloat16" ? at::kBFloat16
                               : config.torch_dtype == "float16" ? at::kHalf
                               : config.torch_dtype == "float32" ? at::kFloat
                                                                 : throw Error("cannot write torch_dtype '" + config.torch_dtype + "'");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + dir.string() + ": " + ec.message());
  const auto named = model.weights().named();
  const int64_t element = dtype == at::kFloat ? 4 : 2;
  // Greedy shards in tensor order, each at most shard_bytes (a larger tensor gets its own).
  std::vector<std::vector<std::size_t>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (std::size_t i = 0; i < named.size(); ++i) {
    const int64_t bytes = named[i].second.numel() * element;
    if (!shards.back().empty() && in_shard + bytes > shard_bytes) shards.emplace_back(), in_shard = 0;
    shards.back().push_back(i);
    in_shard += bytes;
    total += bytes;
  }
  for (const char* stale : {"model.safetensors", "model.safetensors.index.json"}) std::filesystem::remove(dir / stale, ec);
  auto write = [&](const std::filesystem::path& path, const std::vector<std::size_t>& which) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (auto i : which) tensors.emplace_back(named[i].first, named[i].second.detach().to(dtype).contiguous());
    write_safetensors(path, tensors, {{"format", "pt"}});
  };
  if (shards.size() == 1) {
    write(dir / "model.safetensors", shards[0]);
  } else {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
    for (std::size_t s = 0; s < shards.size(); ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      write(dir / name, shards[s]);
      for (auto i : shards[s]) index["weight_map"][named[i].first] = name;
    }
    std::ofstream out(dir / "model.safetensors.index.json");
    out << index.dump(2) << "\n";
    if (!out) throw Error("cannot write " + (dir / "model.safetensors.index.json").string());
  }
  config.save(dir / "config.json");
}

}  // namespace eesched::runtime
