#pragma once
// Llama model hyper-parameters, read from and written to Hugging Face `config.json`
// (LlamaConfig keys). Validation rejects shapes the runtime cannot run.
#include <cstdint>
#include <filesystem>
#include <string>

namespace eesched::runtime {

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // == num_attention_heads when absent (no GQA)
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Number of parameters (the LM head counted once when tied).
  int64_t parameter_count() const;

  // Throws runtime::Error naming the first inconsistent field.
  void validate() const;

  static LlamaConfig from_json(const std::string& text, const std::string& origin = "config.json");
  static LlamaConfig load(const std::filesystem::path& path);
  std::string to_json() const;  // pretty-printed, HF key names, "architectures": ["LlamaForCausalLM"]
  void save(const std::filesystem::path& path) const;
};

}  // namespace eesched::runtime
