#include "runtime/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

using nlohmann::json;

template <typename T>
T required(const json& j, const char* key, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) throw Error(origin + ": missing required key '" + key + "'");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error(origin + ": key '" + key + "' has the wrong type");
  }
}

template <typename T>
T optional(const json& j, const char* key, T fallback, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error(origin + ": key '" + key + "' has the wrong type");
  }
}

}  // namespace

int64_t LlamaConfig::parameter_count() const {
  const int64_t hd = head_dim();
  const int64_t attn = hidden_size * num_attention_heads * hd * 2 + hidden_size * num_key_value_heads * hd * 2;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return embed + (tie_word_embeddings ? 0 : embed) + num_hidden_layers * per_layer + hidden_size;
}

void LlamaConfig::validate() const {
  auto positive = [](const char* key, int64_t v) {
    if (v <= 0) throw Error(std::string("config: ") + key + " must be positive, got " + std::to_string(v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("max_position_embeddings", max_position_embeddings);
  if (hidden_size % num_attention_heads != 0)
    throw Error("config: hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
                std::to_string(num_attention_heads));
  if (head_dim() % 2 != 0) throw Error("config: head_dim " + std::to_string(head_dim()) + " must be even for RoPE");
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error("config: num_attention_heads " + std::to_string(num_attention_heads) +
                " is not a multiple of num_key_value_heads " + std::to_string(num_key_value_heads));
  if (!(rms_norm_eps > 0)) throw Error("config: rms_norm_eps must be positive");
  if (!(rope_theta > 0)) throw Error("config: rope_theta must be positive");
}

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(origin + ": not valid JSON (" + std::string(e.what()).substr(0, 120) + ")");
  }
  if (!j.is_object()) throw Error(origin + ": expected a JSON object");
  LlamaConfig c;
  c.vocab_size = required<int64_t>(j, "vocab_size", origin);
  c.hidden_size = required<int64_t>(j, "hidden_size", origin);
  c.intermediate_size = required<int64_t>(j, "intermediate_size", origin);
  c.num_hidden_layers = required<int64_t>(j, "num_hidden_layers", origin);
  c.num_attention_heads = required<int64_t>(j, "num_attention_heads", origin);
  c.num_key_value_heads = optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, origin);
  c.max_position_embeddings = optional<int64_t>(j, "max_position_embeddings", 2048, origin);
  c.rms_norm_eps = optional<double>(j, "rms_norm_eps", 1e-6, origin);
  c.rope_theta = optional<double>(j, "rope_theta", 10000.0, origin);
  c.tie_word_embeddings = optional<bool>(j, "tie_word_embeddings", false, origin);
  c.bos_token_id = optional<int64_t>(j, "bos_token_id", 1, origin);
  c.eos_token_id = optional<int64_t>(j, "eos_token_id", 2, origin);
  c.torch_dtype = optional<std::string>(j, "torch_dtype", "float32", origin);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(origin + ": rope_scaling is not supported");
  if (j.value("hidden_act", std::string("silu")) != "silu")
    throw Error(origin + ": hidden_act '" + j.value("hidden_act", std::string()) + "' is not supported (silu only)");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(origin + ": " + std::string(e.what()).substr(8));  // drop the "config: " prefix
  }
  return c;
}

LlamaConfig LlamaConfig::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path.string());
}

std::string LlamaConfig::to_json() const {
  json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_act", "silu"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"torch_dtype", torch_dtype},
  };
  return j.dump(2) + "\n";
}

void LlamaConfig::save(const std::filesystem::path& path) const {
  std::ofstream out(path);
  out << to_json();
  out.flush();
  if (!out) throw Error("cannot write " + path.string());
}

}  // namespace eesched::runtime
