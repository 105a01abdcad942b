#include "runtime/model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/ffn_stats.h"
#include "runtime/gemv.h"
#include "runtime/safetensors.h"

namespace eesched::runtime {
namespace {

std::string layer_name(int64_t i, const char* suffix) {
  return "model.layers." + std::to_string(i) + "." + suffix;
}

// y = x W^T. At one row (batch-1 decoding) a matrix-vector product streams W exactly once
// (gemv.h); a GEMM with M=1 may pack (copy) W first, doubling the memory traffic of decoding.
// A bf16/f16 W always runs the kernels of gemv.h (which widen it in registers, or tile by tile
// for long inputs), never a whole-matrix f32 copy; only f32 models train (autograd).
at::Tensor dense(const at::Tensor& x, const at::Tensor& w) {
  const int64_t in = x.size(-1);
  const int64_t m = x.numel() / std::max<int64_t>(1, in);
  const bool wide = w.scalar_type() == at::kFloat;
  if (!wide || (m <= kFewRows && !x.requires_grad() && !w.requires_grad())) {
    auto sizes = x.sizes().vec();
    sizes.back() = w.size(0);
    if (m == 1) return gemv(w, x.reshape({in})).view(sizes);
    if (wide) return matmul_few_rows(w, x.reshape({m, in})).view(sizes);
    return matmul_float(w, x.reshape({m, in})).view(sizes);
  }
  return at::matmul(x, w.t());
}

// y = x W^T for int8 W: batch-1 decoding streams W once (gemv_int8); a few rows (speculative
// verification, small batches) reuse each weight row while it is in L1 (matmul_int8).
at::Tensor dense_int8(const at::Tensor& x, const QuantizedMatrix& w) {
  const int64_t in = x.size(-1);
  auto sizes = x.sizes().vec();
  sizes.back() = w.values.size(0);
  if (x.numel() == in) return gemv_int8(w, x.reshape({in})).view(sizes);
  return matmul_int8(w, x.reshape({-1, in})).view(sizes);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * at::rsqrt(variance + eps) * weight;
}

// HF convention: the two halves of each head form the rotated pairs (i, i + head_dim/2).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

void check_shape(const at::Tensor& t, const std::string& name, std::vector<int64_t> expected) {
  if (!t.defined()) throw Error("missing tensor '" + name + "'");
  if (t.sizes().vec() != expected) {
    auto fmt = [](const std::vector<int64_t>& v) {
      std::string s = "[";
      for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    throw Error("tensor '" + name + "' has shape " + fmt(t.sizes().vec()) + ", the config needs " + fmt(expected));
  }
}

at::Tensor as_f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

bool is_16bit(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// The dtype a weight is kept in when stored as it comes: f32, bf16 or f16; others as f32.
at::ScalarType kept_dtype(const std::vector<at::Tensor>& parts) {
  const auto t = parts.at(0).scalar_type();
  if (!is_16bit(t)) return at::kFloat;
  for (const auto& p : parts)
    if (p.scalar_type() != t) return at::kFloat;  // mixed: f32 holds both exactly
  return t;
}

// Parts stacked along dim 0 as one tensor of `dtype`: a view when they already lie back to back
// in one buffer of that dtype (read_weights lays q|k|v and gate|up out so), else a copy.
at::Tensor stacked(const std::vector<at::Tensor>& parts, at::ScalarType dtype = at::kFloat) {
  if (parts.size() == 1) return parts[0].to(dtype).contiguous();
  bool adjacent = true;
  int64_t rows = 0;
  for (std::size_t i = 0; i < parts.size() && adjacent; ++i) {
    const auto& t = parts[i];
    adjacent = t.scalar_type() == dtype && t.is_contiguous() && !t.requires_grad() &&
               t.sizes().slice(1) == parts[0].sizes().slice(1) && t.storage().is_alias_of(parts[0].storage()) &&
               (i == 0 || t.storage_offset() == parts[i - 1].storage_offset() + parts[i - 1].numel());
    rows += t.size(0);
  }
  if (!adjacent) {
    std::vector<at::Tensor> same;  // at::cat of mixed dtypes would promote, not convert
    for (const auto& p : parts) same.push_back(p.to(dtype));
    return at::cat(same, 0).contiguous();
  }
  auto sizes = parts[0].sizes().vec();
  sizes[0] = rows;
  return parts[0].as_strided(sizes, parts[0].strides());
}

const std::vector<std::pair<const char*, at::Tensor LayerWeights::*>>& optional_layer_tensors() {
  static const std::vector<std::pair<const char*, at::Tensor LayerWeights::*>> v = {
      {"self_attn.q_proj.bias", &LayerWeights::q_bias}, {"self_attn.k_proj.bias", &LayerWeights::k_bias},
      {"self_attn.v_proj.bias", &LayerWeights::v_bias}, {"self_attn.q_norm.weight", &LayerWeights::q_norm},
      {"self_attn.k_norm.weight", &LayerWeights::k_norm}};
  return v;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> LlamaWeights::named() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    const auto n = static_cast<int64_t>(i);
    out.emplace_back(layer_name(n, "input_layernorm.weight"), l.input_layernorm);
    out.emplace_back(layer_name(n, "self_attn.q_proj.weight"), l.q_proj);
    out.emplace_back(layer_name(n, "self_attn.k_proj.weight"), l.k_proj);
    out.emplace_back(layer_name(n, "self_attn.v_proj.weight"), l.v_proj);
    out.emplace_back(layer_name(n, "self_attn.o_proj.weight"), l.o_proj);
    for (const auto& [suffix, member] : optional_layer_tensors())
      if ((l.*member).defined()) out.emplace_back(layer_name(n, suffix), l.*member);
    out.emplace_back(layer_name(n, "post_attention_layernorm.weight"), l.post_attention_layernorm);
    out.emplace_back(layer_name(n, "mlp.gate_proj.weight"), l.gate_proj);
    out.emplace_back(layer_name(n, "mlp.up_proj.weight"), l.up_proj);
    out.emplace_back(layer_name(n, "mlp.down_proj.weight"), l.down_proj);
  }
  out.emplace_back("model.norm.weight", norm);
  if (lm_head.defined()) out.emplace_back("lm_head.weight", lm_head);
  return out;
}

KVCache::KVCache(const LlamaConfig& config, int64_t batch, int64_t capacity) : capacity_(capacity) {
  if (batch <= 0) throw Error("KV cache: batch must be positive");
  if (capacity <= 0 || capacity > config.max_position_embeddings)
    throw Error("KV cache: capacity " + std::to_string(capacity) + " outside 1.." +
                std::to_string(config.max_position_embeddings) + " (max_position_embeddings)");
  lengths_.assign(static_cast<std::size_t>(batch), 0);
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    k_.push_back(at::zeros({batch, config.num_key_value_heads, capacity, config.head_dim()}, opts));
    v_.push_back(at::zeros({batch, config.num_key_value_heads, capacity, config.head_dim()}, opts));
  }
}

void KVCache::set_length(int64_t b, int64_t n) {
  if (b < 0 || b >= batch()) throw Error("KV cache: no sequence " + std::to_string(b));
  if (n < 0 || n > capacity_) throw Error("KV cache: length " + std::to_string(n) + " outside capacity");
  lengths_[static_cast<std::size_t>(b)] = n;
}

int64_t KVCache::bytes() const {
  int64_t total = 0;
  for (const auto& t : k_) total += t.numel() * static_cast<int64_t>(t.element_size());
  for (const auto& t : v_) total += t.numel() * static_cast<int64_t>(t.element_size());
  return total;
}

LlamaModel::LlamaModel(LlamaConfig config, const LlamaWeights& w, const WeightFormatPolicy& formats)
    : config_(std::move(config)) {
  config_.validate();
  const int64_t d = config_.hidden_size, hd = config_.head_dim(), inter = config_.intermediate_size;
  const int64_t qd = config_.num_attention_heads * hd, kvd = config_.num_key_value_heads * hd;
  check_shape(w.embed_tokens, "model.embed_tokens.weight", {config_.vocab_size, d});
  check_shape(w.norm, "model.norm.weight", {d});
  if (static_cast<int64_t>(w.layers.size()) != config_.num_hidden_layers)
    throw Error("weights have " + std::to_string(w.layers.size()) + " layers, the config needs " +
                std::to_string(config_.num_hidden_layers));
  if (config_.tie_word_embeddings) {
    if (w.lm_head.defined() && !w.lm_head.is_same(w.embed_tokens) && !at::equal(w.lm_head, w.embed_tokens))
      throw Error("config ties the LM head to the embeddings, but lm_head.weight differs from them");
  } else {
    check_shape(w.lm_head, "lm_head.weight", {config_.vocab_size, d});
  }
  embed_ = stacked({w.embed_tokens}, kept_dtype({w.embed_tokens}));
  norm_ = as_f32(w.norm);
  // Consecutive parts of equal format share one block (one kernel call per token).
  auto linear = [&](const std::vector<std::pair<std::string, at::Tensor>>& parts) {
    Linear out;
    std::vector<at::Tensor> run;
    WeightFormat run_format = WeightFormat::AsStored;
    auto flush = [&]() {
      if (run.empty()) return;
      Linear::Block block;
      switch (run_format) {
        case WeightFormat::AsStored: block.dense = stacked(run, kept_dtype(run)); break;
        case WeightFormat::F32: block.dense = stacked(run, at::kFloat); break;
        case WeightFormat::BF16: block.dense = stacked(run, at::kBFloat16); break;
        case WeightFormat::F16: block.dense = stacked(run, at::kHalf); break;
        case WeightFormat::Int8: {
          // From the weights as they come (a bf16 model quantizes from its bf16 values), one
          // matrix at a time: quantize_rows_int8 widens only this one.
          block.int8 = quantize_rows_int8(stacked(run, kept_dtype(run)));
          break;
        }
      }
      block.rows = block.dense.defined() ? block.dense.size(0) : block.int8.values.size(0);
      out.blocks.push_back(std::move(block));
      run.clear();
    };
    for (const auto& [name, t] : parts) {
      const auto format = formats ? formats(name) : WeightFormat::AsStored;
      if (!run.empty() && format != run_format) flush();
      run_format = format;
      run.push_back(t);
    }
    flush();
    return out;
  };
  head_ = linear({{"lm_head.weight", config_.tie_word_embeddings ? embed_ : w.lm_head}});
  // Activation statistics come for every layer or none (a partial set is a broken file).
  const bool stats = std::any_of(w.layers.begin(), w.layers.end(), [](const LayerWeights& l) { return l.ffn_activation_ms.defined(); });
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const auto& l = w.layers[static_cast<std::size_t>(i)];
    check_shape(l.input_layernorm, layer_name(i, "input_layernorm.weight"), {d});
    check_shape(l.q_proj, layer_name(i, "self_attn.q_proj.weight"), {qd, d});
    check_shape(l.k_proj, layer_name(i, "self_attn.k_proj.weight"), {kvd, d});
    check_shape(l.v_proj, layer_name(i, "self_attn.v_proj.weight"), {kvd, d});
    check_shape(l.o_proj, layer_name(i, "self_attn.o_proj.weight"), {d, qd});
    check_shape(l.post_attention_layernorm, layer_name(i, "post_attention_layernorm.weight"), {d});
    check_shape(l.gate_proj, layer_name(i, "mlp.gate_proj.weight"), {inter, d});
    check_shape(l.up_proj, layer_name(i, "mlp.up_proj.weight"), {inter, d});
    check_shape(l.down_proj, layer_name(i, "mlp.down_proj.weight"), {d, inter});
    auto check_optional = [&](const at::Tensor& t, const char* suffix, bool wanted, int64_t size) {
      if (wanted) check_shape(t, layer_name(i, suffix), {size});
      else if (t.defined()) throw Error("tensor '" + layer_name(i, suffix) + "' is not used by a " + config_.model_type + " model");
    };
    check_optional(l.q_bias, "self_attn.q_proj.bias", config_.qkv_bias, qd);
    check_optional(l.k_bias, "self_attn.k_proj.bias", config_.qkv_bias, kvd);
    check_optional(l.v_bias, "self_attn.v_proj.bias", config_.qkv_bias, kvd);
    check_optional(l.q_norm, "self_attn.q_norm.weight", config_.qk_norm, hd);
    check_optional(l.k_norm, "self_attn.k_norm.weight", config_.qk_norm, hd);
    // Fused storage: q, k, v in one matrix and gate, up in another, so that decoding runs one
    // matrix-vector product for each instead of three and two. weights() hands out views.
    Layer layer;
    layer.input_norm = as_f32(l.input_layernorm);
    layer.wqkv = linear({{layer_name(i, "self_attn.q_proj.weight"), l.q_proj},
                         {layer_name(i, "self_attn.k_proj.weight"), l.k_proj},
                         {layer_name(i, "self_attn.v_proj.weight"), l.v_proj}});
    layer.wo = linear({{layer_name(i, "self_attn.o_proj.weight"), l.o_proj}});
    if (config_.qkv_bias) layer.bqkv = stacked({l.q_bias, l.k_bias, l.v_bias});
    if (config_.qk_norm) {
      layer.q_norm = as_f32(l.q_norm);
      layer.k_norm = as_f32(l.k_norm);
    }
    layer.post_norm = as_f32(l.post_attention_layernorm);
    layer.w_gate_up = linear({{layer_name(i, "mlp.gate_proj.weight"), l.gate_proj},
                              {layer_name(i, "mlp.up_proj.weight"), l.up_proj}});
    layer.w_down = linear({{layer_name(i, "mlp.down_proj.weight"), l.down_proj}});
    if (stats) {
      check_shape(l.ffn_activation_ms, layer_name(i, kFfnStatsSuffix), {inter});
      layer.ffn_activation_ms = l.ffn_activation_ms.to(at::kDouble).contiguous();
    }
    layers_.push_back(std::move(layer));
  }
  // RoPE tables, HF convention: inv_freq[i] = theta^(-2i/hd) (then rope_scaling), emb = cat(freqs, freqs).
  auto inv_freq = at::tensor(config_.rope_inv_freq(), at::kDouble);
  auto pos = at::arange(config_.max_position_embeddings, at::kDouble);
  auto freqs = at::outer(pos, inv_freq);
  auto emb = at::cat({freqs, freqs}, -1);
  rope_cos_ = emb.cos().to(at::kFloat).contiguous();
  rope_sin_ = emb.sin().to(at::kFloat).contiguous();
}

LlamaWeights LlamaModel::read_weights(const std::filesystem::path& path, const LlamaConfig& config) {
  // The files, and which one holds each tensor: one file, or the shards an index names.
  std::vector<SafetensorsFile> files;
  std::map<std::string, std::size_t> where;
  std::string origin = path.filename().string();
  if (path.extension() == ".json") {
    std::ifstream in(path);
    if (!in) throw Error("cannot open " + path.string());
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception&) {
      throw Error(path.string() + ": not valid JSON");
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(path.string() + ": no weight_map object");
    std::map<std::string, std::size_t> shard_index;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) throw Error(path.string() + ": weight_map entry '" + name + "' is not a file name");
      const auto file = shard.get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file == "..")
        throw Error(path.string() + ": shard name '" + file + "' is not a plain file name");
      auto [it, fresh] = shard_index.emplace(file, files.size());
      if (fresh) files.push_back(SafetensorsFile::open(path.parent_path() / file));
      where[name] = it->second;
    }
    for (const auto& [name, f] : where)
      if (!files[f].contains(name))
        throw Error(files[f].path().filename().string() + ": missing tensor '" + name + "' (the index places it there)");
    for (std::size_t f = 0; f < files.size(); ++f)
      for (const auto& info : files[f].tensors())
        if (!where.count(info.name)) where[info.name] = f;  // unindexed: reported as unexpected below
  } else {
    files.push_back(SafetensorsFile::open(path));
    for (const auto& info : files[0].tensors()) where[info.name] = 0;
  }
  std::map<std::string, bool> used;
  auto file_of = [&](const std::string& name) -> const SafetensorsFile& {
    auto it = where.find(name);
    if (it == where.end()) throw Error(origin + ": missing tensor '" + name + "'");
    const SafetensorsFile& file = files[it->second];
    const TensorInfo* info = file.find(name);
    if (info->dtype != DType::F32 && info->dtype != DType::F16 && info->dtype != DType::BF16)
      throw Error(file.path().filename().string() + ": tensor '" + name + "' has dtype " + dtype_name(info->dtype) +
                  " (F32, F16 or BF16 expected)");
    used[name] = true;
    return file;
  };
  // bf16 and f16 tensors stay in their dtype (copied straight from the mapping, never widened:
  // the kernels stream them as stored); f32 stays f32.
  auto kept = [](DType d) { return d == DType::BF16 ? at::kBFloat16 : d == DType::F16 ? at::kHalf : at::kFloat; };
  // One tensor per name; several names stacked along dim 0 in one buffer (fused layout), in
  // their common dtype (f32 when they differ).
  auto take_stacked = [&](const std::vector<std::string>& names) -> std::vector<at::Tensor> {
    std::vector<const TensorInfo*> infos;
    int64_t rows = 0;
    for (const auto& n : names) {
      const TensorInfo* info = file_of(n).find(n);
      if (info->shape.empty() || (!infos.empty() && std::vector<int64_t>(info->shape.begin() + 1, info->shape.end()) !=
                                                         std::vector<int64_t>(infos[0]->shape.begin() + 1, infos[0]->shape.end()))) {
        std::vector<at::Tensor> out;  // shapes that cannot stack: separate (the constructor names the bad one)
        for (const auto& m : names) {
          const auto& f = file_of(m);
          out.push_back(at::empty(f.find(m)->shape, kept(f.find(m)->dtype)));
          f.read_into(m, out.back());
        }
        return out;
      }
      infos.push_back(info);
      rows += info->shape[0];
    }
    auto sizes = infos[0]->shape;
    sizes[0] = rows;
    at::ScalarType dtype = kept(infos[0]->dtype);
    for (const auto* info : infos)
      if (kept(info->dtype) != dtype) dtype = at::kFloat;
    auto buffer = at::empty(sizes, dtype);
    std::vector<at::Tensor> out;
    int64_t offset = 0;
    for (std::size_t i = 0; i < names.size(); ++i) {
      auto part = buffer.narrow(0, offset, infos[i]->shape[0]);
      file_of(names[i]).read_into(names[i], part);
      out.push_back(part);
      offset += infos[i]->shape[0];
    }
    return out;
  };
  auto take = [&](const std::string& name) { return take_stacked({name})[0]; };
  LlamaWeights w;
  w.embed_tokens = take("model.embed_tokens.weight");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights l;
    l.input_layernorm = take(layer_name(i, "input_layernorm.weight"));
    auto qkv = take_stacked({layer_name(i, "self_attn.q_proj.weight"), layer_name(i, "self_attn.k_proj.weight"),
                             layer_name(i, "self_attn.v_proj.weight")});
    l.q_proj = qkv[0];
    l.k_proj = qkv[1];
    l.v_proj = qkv[2];
    if (config.qkv_bias) {
      auto b = take_stacked({layer_name(i, "self_attn.q_proj.bias"), layer_name(i, "self_attn.k_proj.bias"),
                             layer_name(i, "self_attn.v_proj.bias")});
      l.q_bias = b[0];
      l.k_bias = b[1];
      l.v_bias = b[2];
    }
    if (config.qk_norm) {
      l.q_norm = take(layer_name(i, "self_attn.q_norm.weight"));
      l.k_norm = take(layer_name(i, "self_attn.k_norm.weight"));
    }
    l.o_proj = take(layer_name(i, "self_attn.o_proj.weight"));
    l.post_attention_layernorm = take(layer_name(i, "post_attention_layernorm.weight"));
    auto gate_up = take_stacked({layer_name(i, "mlp.gate_proj.weight"), layer_name(i, "mlp.up_proj.weight")});
    l.gate_proj = gate_up[0];
    l.up_proj = gate_up[1];
    l.down_proj = take(layer_name(i, "mlp.down_proj.weight"));
    w.layers.push_back(std::move(l));
  }
  w.norm = take("model.norm.weight");
  if (!config.tie_word_embeddings) w.lm_head = take("lm_head.weight");
  else if (where.count("lm_head.weight")) used["lm_head.weight"] = true;  // tied: HF may store a copy
  for (const auto& [name, f] : where) {
    if (used.count(name)) continue;
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // older HF exports
    throw Error(files[f].path().filename().string() + ": unexpected tensor '" + name + "' for a " +
                std::to_string(config.num_hidden_layers) + "-layer " + config.model_type + " model");
  }
  // Shapes are checked against the config by the constructor, naming the tensor.
  return w;
}

std::filesystem::path LlamaModel::checkpoint_path(const std::filesystem::path& dir) {
  const auto index = dir / "model.safetensors.index.json";
  if (!std::filesystem::exists(dir / "model.safetensors") && std::filesystem::exists(index)) return index;
  return dir / "model.safetensors";
}

LlamaModel LlamaModel::load(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw Error("model directory " + dir.string() + " does not exist");
  auto config = LlamaConfig::load(dir / "config.json");
  const auto checkpoint = checkpoint_path(dir);
  auto weights = read_weights(checkpoint, config);
  try {
    if (std::filesystem::exists(dir / kFfnStatsFile)) {
      auto stats = read_ffn_stats(dir / kFfnStatsFile, config);
      for (std::size_t i = 0; i < weights.layers.size(); ++i) weights.layers[i].ffn_activation_ms = std::move(stats[i]);
    }
  } catch (const Error& e) {
    throw Error((dir / kFfnStatsFile).string() + ": " + e.what());
  }
  try {
    return LlamaModel(config, weights);
  } catch (const Error& e) {
    throw Error(checkpoint.string() + ": " + e.what());
  }
}

void LlamaModel::save(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + dir.string() + ": " + ec.message());
  // Every tensor in the model's dtype. A bf16 model's norms and biases (held in f32) came from
  // bf16, or were permuted or sign-flipped from bf16 values, so narrowing them back is exact; one
  // that is not exactly representable (set by hand) stays f32 rather than being rounded.
  const auto dtype = this->dtype();
  auto named = weights().named();
  for (auto& [name, t] : named) {
    t = t.detach();
    if (t.scalar_type() == dtype) continue;
    auto narrow = t.to(dtype);
    if (dtype == at::kFloat || at::equal(narrow.to(t.scalar_type()), t)) t = narrow;
  }
  write_safetensors(dir / "model.safetensors", named, {{"format", "pt"}});
  LlamaConfig c = config_;
  c.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  c.save(dir / "config.json");
  // The directory mirrors the model: statistics of another model must not stay behind.
  if (has_ffn_stats()) {
    std::vector<at::Tensor> stats;
    for (const auto& l : layers_) stats.push_back(l.ffn_activation_ms);
    write_ffn_stats(dir / kFfnStatsFile, stats);
  } else {
    std::filesystem::remove(dir / kFfnStatsFile, ec);
  }
}

bool LlamaModel::has_ffn_stats() const {
  return !layers_.empty() && layers_.front().ffn_activation_ms.defined();
}

at::Tensor LlamaModel::Linear::apply(const at::Tensor& x) const {
  auto run = [&](const Block& b) { return b.dense.defined() ? dense(x, b.dense) : dense_int8(x, b.int8); };
  if (blocks.size() == 1) return run(blocks[0]);
  std::vector<at::Tensor> outs;
  for (const auto& b : blocks) outs.push_back(run(b));
  return at::cat(outs, -1);
}

at::Tensor LlamaModel::Linear::rows(int64_t start, int64_t n) const {
  std::vector<at::Tensor> parts;
  int64_t offset = 0;
  for (const auto& b : blocks) {
    const int64_t lo = std::max(start, offset), hi = std::min(start + n, offset + b.rows);
    if (lo < hi) {
      parts.push_back(b.dense.defined() ? b.dense.narrow(0, lo - offset, hi - lo)
                                      : b.int8.values.narrow(0, lo - offset, hi - lo).to(at::kFloat) *
                                            b.int8.scales.narrow(0, lo - offset, hi - lo).unsqueeze(1));
    }
    offset += b.rows;
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

const LlamaModel::Linear::Block* LlamaModel::Linear::block_at(int64_t start, int64_t n) const {
  int64_t offset = 0;
  for (const auto& b : blocks) {
    if (offset == start && b.rows == n) return &b;
    offset += b.rows;
  }
  return nullptr;
}

int64_t LlamaModel::Linear::bytes() const {
  int64_t total = 0;
  for (const auto& b : blocks)
    total += b.dense.defined() ? b.dense.numel() * static_cast<int64_t>(b.dense.element_size())
                               : b.int8.values.numel() + b.int8.scales.numel() * 4;
  return total;
}

LlamaWeights LlamaModel::weights() const {
  const int64_t hd = config_.head_dim();
  const int64_t qd = config_.num_attention_heads * hd, kvd = config_.num_key_value_heads * hd;
  const int64_t inter = config_.intermediate_size, d = config_.hidden_size;
  LlamaWeights w;
  w.embed_tokens = embed_;
  w.norm = norm_;
  if (!config_.tie_word_embeddings) w.lm_head = head_.rows(0, config_.vocab_size);
  for (const auto& l : layers_) {
    LayerWeights lw;
    lw.input_layernorm = l.input_norm;
    lw.q_proj = l.wqkv.rows(0, qd);
    lw.k_proj = l.wqkv.rows(qd, kvd);
    lw.v_proj = l.wqkv.rows(qd + kvd, kvd);
    lw.o_proj = l.wo.rows(0, d);
    if (l.bqkv.defined()) {
      lw.q_bias = l.bqkv.narrow(0, 0, qd);
      lw.k_bias = l.bqkv.narrow(0, qd, kvd);
      lw.v_bias = l.bqkv.narrow(0, qd + kvd, kvd);
    }
    lw.q_norm = l.q_norm;
    lw.k_norm = l.k_norm;
    lw.post_attention_layernorm = l.post_norm;
    lw.gate_proj = l.w_gate_up.rows(0, inter);
    lw.up_proj = l.w_gate_up.rows(inter, inter);
    lw.down_proj = l.w_down.rows(0, d);
    lw.ffn_activation_ms = l.ffn_activation_ms;
    w.layers.push_back(std::move(lw));
  }
  return w;
}

std::vector<std::pair<std::string, QuantizedMatrix>> LlamaModel::int8_weights() const {
  const int64_t hd = config_.head_dim();
  const int64_t qd = config_.num_attention_heads * hd, kvd = config_.num_key_value_heads * hd;
  const int64_t inter = config_.intermediate_size, d = config_.hidden_size;
  std::vector<std::pair<std::string, QuantizedMatrix>> out;
  // A matrix is int8 when its rows lie in an int8 block: alone, or fused with neighbours.
  auto add = [&](const std::string& name, const Linear& lin, int64_t start, int64_t n) {
    int64_t offset = 0;
    for (const auto& b : lin.blocks) {
      if (!b.dense.defined() && start >= offset && start + n <= offset + b.rows) {
        out.emplace_back(name, QuantizedMatrix{b.int8.values.narrow(0, start - offset, n), b.int8.scales.narrow(0, start - offset, n)});
        return;
      }
      offset += b.rows;
    }
  };
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    const auto n = static_cast<int64_t>(i);
    add(layer_name(n, "self_attn.q_proj.weight"), l.wqkv, 0, qd);
    add(layer_name(n, "self_attn.k_proj.weight"), l.wqkv, qd, kvd);
    add(layer_name(n, "self_attn.v_proj.weight"), l.wqkv, qd + kvd, kvd);
    add(layer_name(n, "self_attn.o_proj.weight"), l.wo, 0, d);
    add(layer_name(n, "mlp.gate_proj.weight"), l.w_gate_up, 0, inter);
    add(layer_name(n, "mlp.up_proj.weight"), l.w_gate_up, inter, inter);
    add(layer_name(n, "mlp.down_proj.weight"), l.w_down, 0, d);
  }
  add("lm_head.weight", head_, 0, config_.vocab_size);
  return out;
}

std::vector<at::Tensor> LlamaModel::parameters() const {
  if (embed_.scalar_type() != at::kFloat)
    throw Error("parameters(): the model holds 16-bit weights (training needs an f32 model)");
  std::vector<at::Tensor> p{embed_, norm_};
  auto add = [&](const Linear& lin) {
    for (const auto& b : lin.blocks) {
      if (!b.dense.defined()) throw Error("parameters(): the model holds int8 weights (training needs an f32 model)");
      if (b.dense.scalar_type() != at::kFloat)
        throw Error("parameters(): the model holds 16-bit weights (training needs an f32 model)");
      p.push_back(b.dense);
    }
  };
  if (!config_.tie_word_embeddings) add(head_);
  for (const auto& l : layers_) {
    p.insert(p.end(), {l.input_norm, l.post_norm});
    for (const auto* t : {&l.bqkv, &l.q_norm, &l.k_norm})
      if (t->defined()) p.push_back(*t);
    for (const auto* lin : {&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down}) add(*lin);
  }
  return p;
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = head_.bytes() + norm_.numel() * 4;
  for (const auto& l : layers_)
    total += (l.input_norm.numel() + l.post_norm.numel()) * 4 + l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() +
             l.w_down.bytes();
  for (const auto& l : layers_)
    for (const auto* t : {&l.bqkv, &l.q_norm, &l.k_norm})
      if (t->defined()) total += t->numel() * 4;
  return total;
}

std::string LlamaModel::dtype_label() const {
  switch (dtype()) {
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "f16";
    default: return "f32";
  }
}

at::ScalarType LlamaModel::dtype() const {
  const auto t = embed_.scalar_type();
  if (!is_16bit(t)) return at::kFloat;
  bool same = true;
  auto check = [&](const Linear& lin) {
    for (const auto& b : lin.blocks) same = same && b.dense.defined() && b.dense.scalar_type() == t;
  };
  check(head_);
  for (const auto& l : layers_)
    for (const auto* lin : {&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down}) check(*lin);
  return same ? t : at::kFloat;
}

at::Tensor LlamaModel::embed(const at::Tensor& ids) const {
  auto x = at::embedding(embed_, ids);
  return x.scalar_type() == at::kFloat ? x : x.to(at::kFloat);
}

at::Tensor LlamaModel::head(const at::Tensor& hidden) const {
  return head_.apply(rms_norm(hidden, norm_, config_.rms_norm_eps));
}

at::Tensor LlamaModel::mlp_block(const Layer& layer, const at::Tensor& x, int64_t index, const FfnObserver* observe) const {
  auto h = rms_norm(x, layer.post_norm, config_.rms_norm_eps);
  auto gate_up = layer.w_gate_up.apply(h);
  const int64_t inter = config_.intermediate_size;
  auto act = at::silu(gate_up.narrow(-1, 0, inter)) * gate_up.narrow(-1, inter, inter);
  if (observe && *observe) (*observe)(index, act);
  return x + layer.w_down.apply(act);
}

at::Tensor LlamaModel::attention_block(const Layer& layer, int64_t index, const at::Tensor& x, const at::Tensor& cos,
                                       const at::Tensor& sin, const at::Tensor& mask, KVCache* cache,
                                       const std::vector<int64_t>* n_new, const std::vector<int64_t>* slots) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = config_.num_attention_heads, KV = config_.num_key_value_heads, hd = config_.head_dim();
  const int64_t G = H / KV;
  auto h = rms_norm(x, layer.input_norm, config_.rms_norm_eps);
  auto qkv = layer.wqkv.apply(h);  // [B, T, (H + 2 KV) hd]
  if (layer.bqkv.defined()) qkv = qkv + layer.bqkv;  // after the kernel: the gemv paths stay as they are
  auto q = qkv.narrow(-1, 0, H * hd).view({B, T, H, hd});
  auto k = qkv.narrow(-1, H * hd, KV * hd).view({B, T, KV, hd});
  if (layer.q_norm.defined()) {  // Qwen3: RMSNorm over each head's vector, before RoPE
    q = rms_norm(q, layer.q_norm, config_.rms_norm_eps);
    k = rms_norm(k, layer.k_norm, config_.rms_norm_eps);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  auto v = qkv.narrow(-1, (H + KV) * hd, KV * hd).view({B, T, KV, hd}).transpose(1, 2);
  q = apply_rope(q, cos, sin) * (1.0 / std::sqrt(static_cast<double>(hd)));
  k = apply_rope(k, cos, sin);

  at::Tensor keys = k, values = v;
  if (cache) {
    auto& ck = cache->k_[static_cast<std::size_t>(index)];
    auto& cv = cache->v_[static_cast<std::size_t>(index)];
    int64_t span = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t slot = (*slots)[static_cast<std::size_t>(b)];
      const int64_t start = cache->length(slot), n = (*n_new)[static_cast<std::size_t>(b)];
      ck[slot].narrow(1, start, n).copy_(k[b].narrow(1, 0, n));
      cv[slot].narrow(1, start, n).copy_(v[b].narrow(1, 0, n));
      span = std::max(span, start + n);
    }
    keys = ck.narrow(2, 0, span);
    values = cv.narrow(2, 0, span);
    // Rows read their own sequences: a view when the slots are one ascending run (the whole
    // cache, or one sequence's prefill), else a copy of the rows' first `span` positions.
    const auto& sl = *slots;
    if (std::is_sorted(sl.begin(), sl.end()) && sl.back() - sl.front() == B - 1) {
      keys = keys.narrow(0, sl.front(), B);
      values = values.narrow(0, sl.front(), B);
    } else {
      const auto index = at::tensor(sl, at::kLong);
      keys = keys.index_select(0, index);
      values = values.index_select(0, index);
    }
  }
  const int64_t S = keys.size(2);
  // Grouped-query attention without repeating K/V: the G query heads that share a KV head are
  // stacked along the query axis, so one batched matmul per KV head covers the whole group.
  auto scores = at::matmul(q.reshape({B, KV, G * T, hd}), keys.transpose(-1, -2));  // [B, KV, G T, S]
  if (mask.defined()) scores = (scores.view({B, KV, G, T, S}) + mask.view({mask.size(0), 1, 1, T, S})).view({B, KV, G * T, S});
  auto probs = at::softmax(scores, -1);
  auto out = at::matmul(probs, values)  // [B, KV, G T, hd]
                 .view({B, H, T, hd})
                 .transpose(1, 2)
                 .reshape({B, T, H * hd});
  return x + layer.wo.apply(out);
}

at::Tensor LlamaModel::forward(const at::Tensor& ids) const { return forward(ids, FfnObserver{}); }

at::Tensor LlamaModel::forward(const at::Tensor& ids, const FfnObserver& observe) const {
  if (ids.dim() != 2) throw Error("forward: ids must be [batch, time]");
  const int64_t T = ids.size(1);
  if (T > config_.max_position_embeddings)
    throw Error("forward: " + std::to_string(T) + " positions exceed max_position_embeddings " +
                std::to_string(config_.max_position_embeddings));
  auto x = embed(ids);
  auto cos = rope_cos_.narrow(0, 0, T).view({1, 1, T, -1});
  auto sin = rope_sin_.narrow(0, 0, T).view({1, 1, T, -1});
  at::Tensor mask;
  if (T > 1) mask = at::full({T, T}, -std::numeric_limits<float>::infinity(), at::kFloat).triu(1).view({1, T, T});
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    x = attention_block(layers_[i], static_cast<int64_t>(i), x, cos, sin, mask, nullptr, nullptr, nullptr);
    x = mlp_block(layers_[i], x, static_cast<int64_t>(i), &observe);
  }
  return head(x);
}

at::Tensor LlamaModel::forward(const at::Tensor& ids, const std::vector<int64_t>& n_new, KVCache& cache,
                               LogitsAt which) const {
  if (ids.dim() != 2) throw Error("forward: ids must be [batch, time]");
  if (ids.size(0) != cache.batch())
    throw Error("forward: batch " + std::to_string(ids.size(0)) + " does not match the cache (" + std::to_string(cache.batch()) + ")");
  std::vector<int64_t> slots(static_cast<std::size_t>(ids.size(0)));
  std::iota(slots.begin(), slots.end(), int64_t{0});
  return forward(ids, n_new, cache, slots, which);
}

at::Tensor LlamaModel::forward(const at::Tensor& ids, const std::vector<int64_t>& n_new, KVCache& cache,
                               const std::vector<int64_t>& slots, LogitsAt which) const {
  if (ids.dim() != 2) throw Error("forward: ids must be [batch, time]");
  const int64_t B = ids.size(0), T = ids.size(1);
  if (B < 1 || static_cast<int64_t>(n_new.size()) != B || static_cast<int64_t>(slots.size()) != B)
    throw Error("forward: " + std::to_string(B) + " rows need as many token counts and cache sequences");
  std::vector<bool> taken(static_cast<std::size_t>(cache.batch()), false);
  for (const auto slot : slots) {
    if (slot < 0 || slot >= cache.batch() || taken[static_cast<std::size_t>(slot)])
      throw Error("forward: cache sequence " + std::to_string(slot) + " is out of range or named twice");
    taken[static_cast<std::size_t>(slot)] = true;
  }
  std::vector<int64_t> starts(static_cast<std::size_t>(B));
  bool uniform = true;
  for (int64_t b = 0; b < B; ++b) {
    const auto n = n_new[static_cast<std::size_t>(b)];
    const auto slot = slots[static_cast<std::size_t>(b)];
    starts[static_cast<std::size_t>(b)] = cache.length(slot);
    if (n < 1 || n > T) throw Error("forward: row " + std::to_string(b) + " adds " + std::to_string(n) + " tokens of " + std::to_string(T));
    if (cache.length(slot) + n > cache.capacity())
      throw Error("forward: sequence " + std::to_string(slot) + " would exceed the KV cache capacity of " +
                  std::to_string(cache.capacity()) + " positions");
    uniform = uniform && n == T && starts[static_cast<std::size_t>(b)] == starts[0];
  }
  // Decoding (one new token per row): the fused step, without per-operation dispatch.
  if (T == 1 && !embed_.requires_grad()) return decode_step(ids, cache, slots, which);
  // Positions: row b, column t sits at starts[b] + t (clamped for padding columns).
  auto start_t = at::tensor(starts, at::kLong).view({B, 1});
  auto pos = (start_t + at::arange(T, at::kLong).view({1, T})).clamp_max(config_.max_position_embeddings - 1);
  auto cos = rope_cos_.index_select(0, pos.view(-1)).view({B, 1, T, -1});
  auto sin = rope_sin_.index_select(0, pos.view(-1)).view({B, 1, T, -1});

  // Key j is visible to (b, t) iff j <= starts[b] + t and j is a real token of row b. A single
  // new token per uniform row sees everything cached: no mask needed (the decoding fast path).
  at::Tensor mask;
  if (!(uniform && T == 1)) {
    int64_t span = 0;
    for (int64_t b = 0; b < B; ++b) span = std::max(span, starts[static_cast<std::size_t>(b)] + n_new[static_cast<std::size_t>(b)]);
    auto last_real = (start_t + at::tensor(n_new, at::kLong).view({B, 1}) - 1).view({B, 1, 1});
    auto limit = at::minimum(pos.view({B, T, 1}), last_real);  // [B, T, 1]
    auto visible = at::arange(span, at::kLong).view({1, 1, span}).le(limit);
    mask = at::zeros({B, T, span}, at::kFloat).masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity());
  }

  auto x = embed(ids);
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    x = attention_block(layers_[i], static_cast<int64_t>(i), x, cos, sin, mask, &cache, &n_new, &slots);
    x = mlp_block(layers_[i], x);
  }
  for (int64_t b = 0; b < B; ++b)
    cache.set_length(slots[static_cast<std::size_t>(b)], starts[static_cast<std::size_t>(b)] + n_new[static_cast<std::size_t>(b)]);

  if (which == LogitsAt::All) return head(x);
  // Only each row's last real position goes through the LM head: prefill of a long prompt
  // would otherwise spend T x vocab x hidden FLOPs on logits nobody reads.
  auto last = (at::tensor(n_new, at::kLong) - 1).view({B, 1, 1}).expand({B, 1, x.size(2)});
  return head(x.gather(1, last).view({B, x.size(2)}));
}

}  // namespace eesched::runtime
