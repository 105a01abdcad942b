#include "ee/transform.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>

#include "ee/key.h"
#include "ee/manifest.h"
#include "runtime/error.h"

namespace eesched::ee {
namespace {

using runtime::Error;
using runtime::LlamaConfig;
using runtime::LlamaWeights;

at::Tensor index(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

// W'[p[i]] = W[i] along `dim`, i.e. what was at i moves to p[i].
at::Tensor move(const at::Tensor& w, int64_t dim, const std::vector<int64_t>& p) {
  return w.index_select(dim, index(inverse(p))).contiguous();
}

std::string layer_label(const char* what, const std::string& model, int64_t layer) {
  return std::string(what) + "/" + model + "/" + std::to_string(layer);
}

// Rotates every RoPE pair (i, i + hd/2) of every head in `w` ([heads * hd, in], heads grouped
// by KV head: `per_group` consecutive heads share group g's angles).
//
// Why rotations, and only these, for q/k: RoPE rotates pair i of q and k by pos * f_i, with a
// different frequency per pair, so moving a dimension to another pair (or swapping the two
// halves of a pair, a reflection) would no longer commute with RoPE. A fixed 2x2 rotation R_i
// of each pair does: rotations of the plane commute, so rope(R q) = R rope(q), and applying the
// same R to q and k keeps every score q.k. The angles are shared by the q heads of a GQA group
// and their one k head.
//
// The angles are quarter turns (0, pi/2, pi, 3pi/2), or only 0 and pi for qk-norm models
// (derive_secrets): cos and sin are then exactly 0 or +-1, so every rotated row is another row of
// the pair, negated or not. That is exact in any dtype (the result keeps w's), and it commutes
// with every per-element or per-row rounding the weight-format arms apply (int8 with per-row
// scales, bf16, f16), so those arms convert q/k too and still give bitwise the encrypted image of
// what they give on the plaintext model. A generic angle would do neither.
at::Tensor rotate_pairs(const at::Tensor& w, int64_t per_group, int64_t hd, const std::vector<std::vector<double>>& angles) {
  const int64_t groups = static_cast<int64_t>(angles.size()), half = hd / 2, in = w.size(1);
  std::vector<double> flat;
  for (const auto& g : angles) flat.insert(flat.end(), g.begin(), g.end());
  auto theta = at::tensor(flat, at::kDouble).view({groups, 1, half, 1});
  // Exact zeros where the angle is a multiple of pi/2 (cos(pi/2) is 6e-17 in double).
  auto cos = theta.cos(), sin = theta.sin();
  cos = at::where(cos.abs() < 1e-12, at::zeros_like(cos), cos);
  sin = at::where(sin.abs() < 1e-12, at::zeros_like(sin), sin);
  const bool exact = ((cos.abs() == 0) | (cos.abs() == 1)).all().item<bool>() && ((sin.abs() == 0) | (sin.abs() == 1)).all().item<bool>();
  auto x = w.to(at::kDouble).view({groups, per_group, hd, in});
  auto a = x.narrow(2, 0, half), b = x.narrow(2, half, half);
  return at::cat({cos * a - sin * b, sin * a + cos * b}, 2)
      .view({groups * per_group * hd, in})
      .to(exact && w.scalar_type() != at::kDouble ? w.scalar_type() : at::kFloat);
}

// Hashes `t` as its f32 bytes, a slice of rows at a time: a bf16 model has the fingerprint of
// its f32 widening (what loading it gave before 16-bit weights were kept), without a full copy.
void hash_as_f32(crypto_generichash_state* st, const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat || t.dim() == 0) {
    auto c = t.to(at::kFloat).contiguous();
    crypto_generichash_update(st, static_cast<const unsigned char*>(c.data_ptr()), c.numel() * c.element_size());
    return;
  }
  const int64_t rows = t.size(0), per_row = std::max<int64_t>(1, t.numel() / std::max<int64_t>(1, rows));
  const int64_t step = std::max<int64_t>(1, (int64_t{1} << 22) / per_row);
  for (int64_t r = 0; r < rows; r += step) {
    auto c = t.narrow(0, r, std::min(step, rows - r)).to(at::kFloat).contiguous();
    crypto_generichash_update(st, static_cast<const unsigned char*>(c.data_ptr()), c.numel() * c.element_size());
  }
}

// n standard normal draws for this label: Box-Muller over two of the key's streams, a million
// at a time (each chunk its own label, so no stream is held whole).
at::Tensor gaussians(const Key& key, const std::string& label, int64_t n) {
  auto out = at::empty({n}, at::kDouble);
  double* o = out.data_ptr<double>();
  constexpr int64_t kChunk = int64_t{1} << 20;
  for (int64_t start = 0, chunk = 0; start < n; start += kChunk, ++chunk) {
    const int64_t m = std::min(kChunk, n - start);
    const auto l = label + "/" + std::to_string(chunk);
    const auto u = key.angles(l + "/radius", m), a = key.angles(l + "/angle", m);
    for (int64_t i = 0; i < m; ++i) {
      const auto k = static_cast<std::size_t>(i);
      o[start + i] = std::sqrt(-2.0 * std::log1p(-u[k] / (2 * std::numbers::pi))) * std::cos(a[k]);
    }
  }
  return out;
}

// A Haar-random orthogonal matrix: QR of a Gaussian one, with R's diagonal signs moved into Q
// (without them Q is not uniformly distributed).
at::Tensor haar_rotation(const Key& key, const std::string& label, int64_t d) {
  auto [q, r] = at::linalg_qr(gaussians(key, label, d * d).view({d, d}));
  return (q * r.diagonal().sign().unsqueeze(0)).contiguous();
}

// 16-bit weights keep their dtype after a dense transform (rounded again: the one place the
// rotate scheme is lossy beyond float rounding); everything else becomes f32.
at::Tensor like(const at::Tensor& result, const at::Tensor& source) {
  const auto d = source.scalar_type();
  return result.to(d == at::kBFloat16 || d == at::kHalf ? d : at::kFloat).contiguous();
}

// The same function with its residual stream turned by R (row convention, x -> x R): RMSNorm
// keeps rms(x R) = rms(x), so each norm's weight is folded into the matrices that read its
// output (W -> W diag(g) R) and becomes all ones; writers of the stream become R^T W; the
// embedding E R; the head H diag(g_final) R, a matrix of its own even when tied.
LlamaWeights rotated_weights(const LlamaWeights& w, const LlamaConfig& c, const at::Tensor& rotation) {
  c10::InferenceMode guard;
  const auto r = rotation.to(at::kFloat);
  auto reads = [&](const at::Tensor& m, const at::Tensor& norm) { return like((m.to(at::kFloat) * norm.to(at::kFloat).unsqueeze(0)).matmul(r), m); };
  auto writes = [&](const at::Tensor& m) { return like(r.t().matmul(m.to(at::kFloat)), m); };
  auto ones = [](const at::Tensor& norm) { return at::ones_like(norm); };
  LlamaWeights out;
  out.embed_tokens = like(w.embed_tokens.to(at::kFloat).matmul(r), w.embed_tokens);
  out.lm_head = reads(c.tie_word_embeddings || !w.lm_head.defined() ? w.embed_tokens : w.lm_head, w.norm);
  out.norm = ones(w.norm);
  for (const auto& in : w.layers) {
    runtime::LayerWeights o = in;  // biases, q/k norms and FFN statistics are not on the stream
    o.q_proj = reads(in.q_proj, in.input_layernorm);
    o.k_proj = reads(in.k_proj, in.input_layernorm);
    o.v_proj = reads(in.v_proj, in.input_layernorm);
    o.gate_proj = reads(in.gate_proj, in.post_attention_layernorm);
    o.up_proj = reads(in.up_proj, in.post_attention_layernorm);
    o.o_proj = writes(in.o_proj);
    o.down_proj = writes(in.down_proj);
    o.input_layernorm = ones(in.input_layernorm);
    o.post_attention_layernorm = ones(in.post_attention_layernorm);
    out.layers.push_back(std::move(o));
  }
  return out;
}

}  // namespace

Scheme make_scheme(const std::string& name, double noise) {
  if (name != "permute" && name != "rotate") throw Error("unknown EE scheme '" + name + "' (permute, rotate)");
  if (!(noise >= 0 && noise <= 10)) throw Error("--noise must be between 0 and 10 (relative to each row's RMS)");
  Scheme s;
  s.name = name;
  s.noise = noise;
  return s;
}

std::vector<std::string> transform_names(const LlamaConfig& c, const Scheme& scheme) {
  auto names = transform_names(c);
  if (scheme.rotates()) {
    std::replace(names.begin(), names.end(), std::string("residual_permutation"), std::string("residual_rotation"));
    names.push_back("norm_weights_folded");
  }
  if (scheme.noise > 0) names.push_back("embedding_head_noise=" + std::to_string(scheme.noise));
  return names;
}

Scheme scheme_of(const std::vector<std::string>& transforms) {
  Scheme s;
  const std::string noise = "embedding_head_noise=";
  for (const auto& t : transforms) {
    if (t == "residual_rotation") s.name = "rotate";
    if (t.rfind(noise, 0) != 0) continue;
    try {
      s.noise = std::stod(t.substr(noise.size()));
    } catch (const std::exception&) {
      throw Error("ee.json: malformed transform '" + t + "'");
    }
  }
  return s;
}

std::vector<std::string> transform_names() {
  return {"vocab_permutation", "residual_permutation", "ffn_permutation", "attention_head_permutation",
          "v_o_head_dim_permutation", "q_k_rope_pair_quarter_turn"};
}

bool pair_sign_flips_only(const LlamaConfig& c) { return c.qk_norm; }

std::vector<std::string> transform_names(const LlamaConfig& c) {
  auto names = transform_names();
  if (pair_sign_flips_only(c)) names.back() = "q_k_rope_pair_sign_flip";  // see derive_secrets
  if (c.qkv_bias) names.push_back("q_k_v_bias_rows");
  return names;
}

ModelSecrets derive_secrets(const Key& key, const LlamaConfig& c, const std::string& model) {
  if (key.vocab_size() != c.vocab_size)
    throw Error("the key is for a vocabulary of " + std::to_string(key.vocab_size()) + " tokens, the model has " +
                std::to_string(c.vocab_size));
  const int64_t hd = c.head_dim(), kv = c.num_key_value_heads, group = c.kv_groups();
  ModelSecrets s;
  s.vocab = key.permutation("vocab", c.vocab_size);
  s.residual = key.permutation("resid/" + model, c.hidden_size);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ModelSecrets::Layer layer;
    layer.ffn = key.permutation(layer_label("ffn", model, l), c.intermediate_size);
    layer.kv_heads = key.permutation(layer_label("kv-heads", model, l), kv);
    layer.q_heads.resize(static_cast<std::size_t>(c.num_attention_heads));
    for (int64_t g = 0; g < kv; ++g) {
      const std::string gl = layer_label("group", model, l) + "/" + std::to_string(g);
      const auto within = key.permutation("q-heads/" + gl, group);
      for (int64_t j = 0; j < group; ++j)
        layer.q_heads[static_cast<std::size_t>(g * group + j)] = layer.kv_heads[static_cast<std::size_t>(g)] * group + within[static_cast<std::size_t>(j)];
      layer.v_dims.push_back(key.permutation("v-dims/" + gl, hd));
      // q/k head-dim maps with per-head q/k RMSNorm (Qwen3). A map M of a head's dims must
      // (1) commute with RoPE: M acts on each pair (i, i + hd/2) as a rotation (rotate_pairs);
      // (2) keep scores: the same M on q and k, M orthogonal; and (3) commute with the norm
      //     x -> x / rms(x) * g: rms is kept by any orthogonal M, but the elementwise weight g
      //     ([hd], shared by every head) needs M diag(g) = diag(g') M, and a pair rotation by
      //     theta does that only when g_i == g_{i+hd/2} or theta is 0 or pi (then M = +-I on
      //     the pair, which commutes with every diagonal). Real q_norm/k_norm weights differ
      //     across a pair, so qk-norm models get only theta in {0, pi}: a secret sign flip per
      //     pair (shared by a GQA group's q heads and its k head), g unchanged. Head
      //     permutations stay (g is the same for every head); v/o head dims are not normed.
      // Every other model gets quarter turns, theta in {0, pi/2, pi, 3pi/2}: a secret
      // rotation of each pair that maps its rows onto each other exactly (rotate_pairs), so the
      // encrypted model keeps its dtype bit for bit (a bf16 model stays bf16) and int8/bf16/f16
      // arms can convert q/k like every other matrix. A continuous angle (what earlier versions
      // drew) is exact in neither case and hid nothing more from the threat models docs/ee.md
      // names: a worker holding the public weights solves each pair's angle, continuous or not,
      // by least squares, and one without them has nothing to compare the rows with.
      auto angles = key.angles("qk-rotation/" + gl, hd / 2);
      const double step = pair_sign_flips_only(c) ? std::numbers::pi : std::numbers::pi / 2;
      for (auto& a : angles) a = std::floor(a / step) * step;  // uniform over the allowed turns
      layer.qk_angles.push_back(std::move(angles));
    }
    s.layers.push_back(std::move(layer));
  }
  return s;
}

ModelSecrets derive_secrets(const Key& key, const LlamaConfig& c, const std::string& model, const Scheme& scheme) {
  auto s = derive_secrets(key, c, model);
  if (scheme.rotates()) s.rotation = haar_rotation(key, "rotation/" + model, c.hidden_size);
  return s;
}

runtime::LlamaModel noised_model(const runtime::LlamaModel& model, const Key& key, const std::string& label, double noise) {
  if (noise <= 0) return model;
  c10::InferenceMode guard;
  auto w = model.weights();
  auto config = model.config();
  // Each row gets N(0, (noise * rms(row))^2) per entry, from the key: the same key and model
  // give the same noised model on every machine.
  auto noisy = [&](const at::Tensor& t, const std::string& what) {
    const auto x = t.to(at::kFloat);
    const auto rms = x.pow(2).mean(1, true).sqrt();
    const auto g = gaussians(key, "noise-" + what + "/" + label, x.numel()).view(x.sizes()).to(at::kFloat);
    return like(x + noise * rms * g, t);
  };
  w.lm_head = noisy(config.tie_word_embeddings || !w.lm_head.defined() ? w.embed_tokens : w.lm_head, "head");
  w.embed_tokens = noisy(w.embed_tokens, "embed");
  config.tie_word_embeddings = false;
  return runtime::LlamaModel(config, w);
}

std::string model_fingerprint(const runtime::LlamaModel& model) {
  c10::InferenceMode guard;
  std::array<unsigned char, 16> out{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, out.size());
  const auto cfg = model.config().to_json();
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(cfg.data()), cfg.size());
  for (const auto& [name, t] : model.weights().named()) {
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(name.data()), name.size());
    hash_as_f32(&st, t);
  }
  crypto_generichash_final(&st, out.data(), out.size());
  std::string hex(2 * out.size() + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), out.data(), out.size());
  hex.pop_back();
  return hex;
}

LlamaConfig encrypt_config(const LlamaConfig& config, const ModelSecrets& s) {
  LlamaConfig c = config;
  auto map = [&](int64_t id) { return (id >= 0 && id < c.vocab_size) ? s.vocab[static_cast<std::size_t>(id)] : id; };
  c.bos_token_id = map(c.bos_token_id);
  c.eos_token_id = map(c.eos_token_id);
  return c;
}

std::vector<at::Tensor> encrypt_ffn_stats(const std::vector<at::Tensor>& stats, const ModelSecrets& s) {
  if (stats.size() != s.layers.size()) throw Error("FFN statistics do not match the model's layers");
  std::vector<at::Tensor> out;
  for (std::size_t l = 0; l < stats.size(); ++l) out.push_back(move(stats[l].to(at::kDouble), 0, s.layers[l].ffn));
  return out;
}

LlamaWeights encrypt_weights(const LlamaWeights& w, const LlamaConfig& c, const ModelSecrets& s) {
  c10::InferenceMode guard;
  const int64_t hd = c.head_dim(), kv = c.num_key_value_heads, heads = c.num_attention_heads, group = c.kv_groups();
  if (static_cast<int64_t>(s.layers.size()) != c.num_hidden_layers) throw Error("EE secrets do not match the model's layers");
  // Weights keep their dtype (bf16 and f16 too: permutations and sign flips are exact in it, so
  // an encrypted 16-bit model streams as many bytes as its plaintext); others become f32.
  auto f32 = [](const at::Tensor& t) {
    const auto d = t.scalar_type();
    return d == at::kFloat || d == at::kBFloat16 || d == at::kHalf ? t : t.to(at::kFloat);
  };
  // Readers of the residual stream have their input columns moved; writers their output rows.
  auto reads = [&](const at::Tensor& t) { return move(f32(t), 1, s.residual); };
  auto writes = [&](const at::Tensor& t) { return move(f32(t), 0, s.residual); };

  LlamaWeights out;
  out.embed_tokens = move(move(f32(w.embed_tokens), 0, s.vocab), 1, s.residual);
  if (w.lm_head.defined()) out.lm_head = move(move(f32(w.lm_head), 0, s.vocab), 1, s.residual);
  out.norm = move(f32(w.norm), 0, s.residual);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& in = w.layers[static_cast<std::size_t>(l)];
    const auto& sec = s.layers[static_cast<std::size_t>(l)];
    // Row maps of q (heads * hd), k and v (kv * hd), and the column map of o (heads * hd).
    std::vector<int64_t> q_rows, k_rows, v_rows, o_cols;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < hd; ++d) {
        q_rows.push_back(sec.q_heads[static_cast<std::size_t>(h)] * hd + d);
        o_cols.push_back(sec.q_heads[static_cast<std::size_t>(h)] * hd + sec.v_dims[static_cast<std::size_t>(h / group)][static_cast<std::size_t>(d)]);
      }
    for (int64_t g = 0; g < kv; ++g)
      for (int64_t d = 0; d < hd; ++d) {
        k_rows.push_back(sec.kv_heads[static_cast<std::size_t>(g)] * hd + d);
        v_rows.push_back(sec.kv_heads[static_cast<std::size_t>(g)] * hd + sec.v_dims[static_cast<std::size_t>(g)][static_cast<std::size_t>(d)]);
      }
    runtime::LayerWeights o;
    o.input_layernorm = move(f32(in.input_layernorm), 0, s.residual);
    o.post_attention_layernorm = move(f32(in.post_attention_layernorm), 0, s.residual);
    o.q_proj = move(rotate_pairs(reads(in.q_proj), group, hd, sec.qk_angles), 0, q_rows);
    o.k_proj = move(rotate_pairs(reads(in.k_proj), 1, hd, sec.qk_angles), 0, k_rows);
    o.v_proj = move(reads(in.v_proj), 0, v_rows);
    // Biases are one more input column of their matrix: they take the rows' maps (rotation of
    // q/k pairs, then the head moves; v's head-dim permutation), never the residual's.
    auto column = [](const at::Tensor& b) { return b.to(at::kFloat).view({-1, 1}); };
    if (in.q_bias.defined()) o.q_bias = move(rotate_pairs(column(in.q_bias), group, hd, sec.qk_angles), 0, q_rows).view({-1});
    if (in.k_bias.defined()) o.k_bias = move(rotate_pairs(column(in.k_bias), 1, hd, sec.qk_angles), 0, k_rows).view({-1});
    if (in.v_bias.defined()) o.v_bias = move(column(in.v_bias), 0, v_rows).view({-1});
    // Per-head norm weights: shared by all heads and untouched by sign flips (see derive_secrets).
    if (in.q_norm.defined()) o.q_norm = f32(in.q_norm).clone();
    if (in.k_norm.defined()) o.k_norm = f32(in.k_norm).clone();
    o.o_proj = move(writes(in.o_proj), 1, o_cols);
    o.gate_proj = move(reads(in.gate_proj), 0, sec.ffn);
    o.up_proj = move(reads(in.up_proj), 0, sec.ffn);
    o.down_proj = move(writes(in.down_proj), 1, sec.ffn);
    // Calibration statistics move with their neurons, so pruning the encrypted model keeps the
    // images of the neurons the plaintext model keeps (accel/pruning.h).
    if (in.ffn_activation_ms.defined()) o.ffn_activation_ms = move(in.ffn_activation_ms.to(at::kDouble), 0, sec.ffn);
    out.layers.push_back(std::move(o));
  }
  return out;
}

runtime::LlamaModel encrypt_model(const runtime::LlamaModel& model, const Key& key, const std::string& model_label) {
  const auto secrets = derive_secrets(key, model.config(), model_label);
  return runtime::LlamaModel(encrypt_config(model.config(), secrets), encrypt_weights(model.weights(), model.config(), secrets));
}

runtime::LlamaModel encrypt_model(const runtime::LlamaModel& model, const Key& key, const std::string& model_label, const Scheme& scheme) {
  if (!scheme.rotates() && scheme.noise <= 0) return encrypt_model(model, key, model_label);
  const auto secrets = derive_secrets(key, model.config(), model_label, scheme);
  const auto noisy = noised_model(model, key, model_label, scheme.noise);
  auto config = noisy.config();
  auto weights = noisy.weights();
  if (scheme.rotates()) {
    weights = rotated_weights(weights, config, secrets.rotation);
    config.tie_word_embeddings = false;
  }
  return runtime::LlamaModel(encrypt_config(config, secrets), encrypt_weights(weights, config, secrets));
}

void check_encrypt_dirs(const std::filesystem::path& in, const std::filesystem::path& out, bool force) {
  if (Manifest::read(in)) throw Error(in.string() + " is already encrypted (it has ee.json)");
  std::error_code ec;
  if (std::filesystem::exists(out) && std::filesystem::equivalent(in, out, ec))
    throw Error("the output directory must differ from the input");
  if (!force && std::filesystem::exists(out / "model.safetensors"))
    throw Error(out.string() + " already holds a model (pass --force to overwrite)");
}

EncryptDirResult encrypt_model_dir(const std::filesystem::path& in, const Key& key, const std::filesystem::path& out, bool force) {
  EncryptDirOptions options;
  options.force = force;
  return encrypt_model_dir(in, key, out, options);
}

EncryptDirResult encrypt_model_dir(const std::filesystem::path& in, const Key& key, const std::filesystem::path& out,
                                   const EncryptDirOptions& options) {
  check_encrypt_dirs(in, out, options.force);
  std::error_code ec;
  const auto model = options.model ? *options.model : runtime::LlamaModel::load(in);
  if (key.vocab_size() != model.config().vocab_size)
    throw Error("the key is for a vocabulary of " + std::to_string(key.vocab_size()) + " tokens, " + in.string() + " has " +
                std::to_string(model.config().vocab_size));
  const auto t0 = std::chrono::steady_clock::now();
  auto encrypted = encrypt_model(model, key, model_fingerprint(model), options.scheme);
  EncryptDirResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.key_fingerprint = key.fingerprint();
  r.parameters = model.config().parameter_count();
  encrypted.save(out);
  Manifest m{kScheme, kSchemeVersion, r.key_fingerprint, model.config().vocab_size, transform_names(model.config(), options.scheme),
             options.quality};
  m.write(out);
  // An encrypted directory carries no tokenizer: that would hand the worker the vocabulary.
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"})
    std::filesystem::remove(out / f, ec);
  return r;
}

}  // namespace eesched::ee
