#include "runtime/config.h"

#include <cmath>
#include <fstream>
#include <numbers>
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
  const int64_t qd = num_attention_heads * hd, kvd = num_key_value_heads * hd;
  const int64_t attn = hidden_size * qd * 2 + hidden_size * kvd * 2 + (qkv_bias ? qd + 2 * kvd : 0) + (qk_norm ? 2 * hd : 0);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return embed + (tie_word_embeddings ? 0 : embed) + num_hidden_layers * per_layer + hidden_size;
}

std::vector<double> LlamaConfig::rope_inv_freq() const {
  const int64_t hd = head_dim();
  std::vector<double> f(static_cast<std::size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) f[static_cast<std::size_t>(i)] = std::pow(rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
  const auto& s = rope_scaling;
  if (s.type == "linear") {
    for (auto& v : f) v /= s.factor;
  } else if (s.type == "llama3") {
    // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
    for (auto& v : f) {
      const double wavelen = 2.0 * std::numbers::pi / v;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        v /= s.factor;
        continue;
      }
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      v = (1.0 - smooth) * v / s.factor + smooth * v;
    }
  }
  return f;
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
  if (explicit_head_dim < 0) throw Error("config: head_dim must be positive");
  if (explicit_head_dim == 0 && hidden_size % num_attention_heads != 0)
    throw Error("config: hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
                std::to_string(num_attention_heads));
  if (head_dim() % 2 != 0) throw Error("config: head_dim " + std::to_string(head_dim()) + " must be even for RoPE");
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error("config: num_attention_heads " + std::to_string(num_attention_heads) +
                " is not a multiple of num_key_value_heads " + std::to_string(num_key_value_heads));
  if (!(rms_norm_eps > 0)) throw Error("config: rms_norm_eps must be positive");
  if (!(rope_theta > 0)) throw Error("config: rope_theta must be positive");
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2" && model_type != "qwen3")
    throw Error("config: model_type '" + model_type + "' is not supported (llama, mistral, qwen2, qwen3)");
  if (qkv_bias != (model_type == "qwen2")) throw Error("config: q/k/v biases come with model_type qwen2 (and only with it)");
  if (qk_norm != (model_type == "qwen3")) throw Error("config: q/k norms come with model_type qwen3 (and only with it)");
  const auto& s = rope_scaling;
  if (!s.type.empty() && s.type != "linear" && s.type != "llama3")
    throw Error("config: rope_scaling type '" + s.type + "' is not supported (linear, llama3)");
  if (!s.type.empty() && !(s.factor > 0)) throw Error("config: rope_scaling factor must be positive");
  if (s.type == "llama3" && !(s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor &&
                              s.original_max_position_embeddings > 0))
    throw Error("config: rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");
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
  // The family: model_type, else the first architecture.
  static const std::vector<std::pair<std::string, std::string>> kFamilies = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  std::string type = optional<std::string>(j, "model_type", "", origin);
  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && it->front().is_string())
    arch = it->front().get<std::string>();
  if (type.empty()) {
    for (const auto& [t, a] : kFamilies)
      if (a == arch) type = t;
    if (type.empty() && !arch.empty()) throw Error(origin + ": architecture '" + arch + "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)");
    if (type.empty()) type = "llama";
  }
  bool known = false;
  for (const auto& [t, a] : kFamilies) {
    if (t != type) continue;
    known = true;
    if (!arch.empty() && arch != a) throw Error(origin + ": architecture '" + arch + "' does not match model_type '" + type + "' (" + a + ")");
  }
  if (!known) throw Error(origin + ": model_type '" + type + "' is not supported (llama, mistral, qwen2, qwen3)");
  c.model_type = type;
  c.explicit_head_dim = optional<int64_t>(j, "head_dim", 0, origin);
  if (c.explicit_head_dim != 0 && c.explicit_head_dim * c.num_attention_heads == c.hidden_size) c.explicit_head_dim = 0;  // implied
  c.qkv_bias = type == "qwen2";  // Qwen2Attention: q/k/v always biased, o_proj never
  c.qk_norm = type == "qwen3";
  // attention_bias: Llama, Mistral and Qwen3 put a bias on o_proj too when it is set.
  if (type != "qwen2" && optional<bool>(j, "attention_bias", false, origin))
    throw Error(origin + ": attention_bias is not supported for " + type + " (it adds an o_proj bias)");
  if (optional<bool>(j, "mlp_bias", false, origin)) throw Error(origin + ": mlp_bias is not supported");
  if (j.value("hidden_act", std::string("silu")) != "silu")
    throw Error(origin + ": hidden_act '" + j.value("hidden_act", std::string()) + "' is not supported (silu only)");
  if (optional<double>(j, "pretraining_tp", 1.0, origin) != 1.0) throw Error(origin + ": pretraining_tp other than 1 is not supported");
  // Sliding-window attention changes the math only for contexts longer than the window.
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    const bool used = type == "mistral" ? true : type == "llama" ? false : optional<bool>(j, "use_sliding_window", false, origin);
    const auto window = optional<int64_t>(j, "sliding_window", 0, origin);
    if (used && window > 0 && window < c.max_position_embeddings)
      throw Error(origin + ": sliding_window " + std::to_string(window) + " is smaller than max_position_embeddings " +
                  std::to_string(c.max_position_embeddings) + " (sliding-window attention is not supported)");
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    const json& r = *it;
    if (!r.is_object()) throw Error(origin + ": rope_scaling must be an object");
    std::string rt = r.contains("rope_type") ? optional<std::string>(r, "rope_type", "", origin) : optional<std::string>(r, "type", "", origin);
    if (rt == "default") rt.clear();
    if (!rt.empty() && rt != "linear" && rt != "llama3")
      throw Error(origin + ": rope_scaling type '" + rt + "' is not supported (linear, llama3)");
    c.rope_scaling.type = rt;
    if (!rt.empty()) c.rope_scaling.factor = required<double>(r, "factor", origin + " rope_scaling");
    if (rt == "llama3") {
      c.rope_scaling.low_freq_factor = required<double>(r, "low_freq_factor", origin + " rope_scaling");
      c.rope_scaling.high_freq_factor = required<double>(r, "high_freq_factor", origin + " rope_scaling");
      c.rope_scaling.original_max_position_embeddings = required<int64_t>(r, "original_max_position_embeddings", origin + " rope_scaling");
    }
    if (r.contains("attention_factor") && !r["attention_factor"].is_null())
      throw Error(origin + ": rope_scaling attention_factor is not supported");
  }
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
  const char* arch = model_type == "mistral" ? "MistralForCausalLM"
                     : model_type == "qwen2" ? "Qwen2ForCausalLM"
                     : model_type == "qwen3" ? "Qwen3ForCausalLM"
                                             : "LlamaForCausalLM";
  json j = {
      {"architectures", {arch}},
      {"model_type", model_type},
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
  if (explicit_head_dim > 0) j["head_dim"] = explicit_head_dim;
  if (model_type == "qwen2" || model_type == "qwen3") j["use_sliding_window"] = false;
  if (!rope_scaling.type.empty()) {
    json r = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      r["low_freq_factor"] = rope_scaling.low_freq_factor;
      r["high_freq_factor"] = rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  return j.dump(2) + "\n";
}

void LlamaConfig::save(const std::filesystem::path& path) const {
  std::ofstream out(path);
  out << to_json();
  out.flush();
  if (!out) throw Error("cannot write " + path.string());
}

}  // namespace eesched::runtime
