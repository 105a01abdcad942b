#pragma once
// Decoder hyper-parameters, read from and written to Hugging Face `config.json`: the Llama
// family as the runtime runs it. model_type llama (LlamaForCausalLM), mistral, qwen2 (q/k/v
// bias) and qwen3 (per-head RMSNorm on q and k, explicit head_dim); rope_scaling of type
// llama3 or linear. Keys that would change the math in a way the runtime does not model are
// refused in one line naming them; keys that do not change it are ignored.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace eesched::runtime {

// RoPE frequency scaling (`rope_scaling` in config.json). type "" means none.
struct RopeScaling {
  std::string type;                 // "", "linear" or "llama3"
  double factor = 1.0;              // linear, llama3
  double low_freq_factor = 1.0;     // llama3
  double high_freq_factor = 4.0;    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
  bool operator==(const RopeScaling&) const = default;
};

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
  std::string model_type = "llama";  // llama, mistral, qwen2, qwen3 (decides "architectures")
  int64_t explicit_head_dim = 0;     // config.json "head_dim"; 0: hidden_size / num_attention_heads
  bool qkv_bias = false;             // q/k/v projections carry a bias (qwen2; attention_bias on llama-likes is refused: o_proj would too)
  bool qk_norm = false;              // per-head RMSNorm on q and k before RoPE (qwen3)
  RopeScaling rope_scaling;

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads; }
  // RoPE inverse frequencies [head_dim / 2], rope_scaling applied (HF's _compute_*_parameters).
  std::vector<double> rope_inv_freq() const;
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
