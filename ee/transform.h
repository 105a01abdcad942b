#pragma once
// The EE transform of one Llama model (DESIGN.md, "EE transform of one Llama model"): secret
// permutations of the vocabulary, the residual stream, each layer's FFN neurons, attention
// heads (GQA groups kept together) and v/o head dims, plus per-pair rotations of q/k head dims.
// The transformed model computes the same function up to those permutations, so
// decrypt(generate(encrypt(M), encrypt(prompt))) == generate(M, prompt).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/quality.h"
#include "runtime/config.h"
#include "runtime/model.h"

namespace eesched::ee {

class Key;

// Everything the transform applies to one model, derived from the key and a model label.
struct ModelSecrets {
  struct Layer {
    std::vector<int64_t> ffn;                  // [intermediate]
    std::vector<int64_t> kv_heads;             // [kv_heads]: group g moves to kv_heads[g]
    std::vector<int64_t> q_heads;              // [heads]: q head h moves to q_heads[h] (stays in its group)
    std::vector<std::vector<int64_t>> v_dims;  // [kv_heads][head_dim], by original kv head
    std::vector<std::vector<double>> qk_angles;// [kv_heads][head_dim / 2], by original kv head
  };
  std::vector<int64_t> vocab;                  // [vocab]: token t is sent as vocab[t]
  std::vector<int64_t> residual;               // [hidden]
  std::vector<Layer> layers;
  // Scheme "rotate" only: a Haar-random orthogonal [hidden, hidden] f64 matrix R; the residual
  // row x becomes x R, then its dims move by `residual`. Undefined for the default scheme.
  at::Tensor rotation;
};

// Which transform encrypt-model applies (`--scheme`, `--noise`).
//  - "permute" (the default): permutations and quarter turns only. Exact, bit for bit, in every
//    dtype; a worker holding the public base weights undoes it (docs/ee.md, weakness 2).
//  - "rotate": the residual stream is turned by a dense secret rotation instead of only
//    permuted, with the RMSNorm weights folded into the matrices that read the stream (their
//    norms become all ones) and the head untied. Exact up to float rounding; it defeats
//    sorted-row signatures but not the rotation-invariant ones (norms, Gram and eigen
//    structure: `eesched attack weights` measures that).
// `noise` (either scheme): secret Gaussian noise of this size relative to each row's RMS on the
// embedding and head rows, applied to the plaintext before encryption. Lossy: the encrypted
// model then decrypts to the noised plaintext model (noised_model), not to the original.
struct Scheme {
  std::string name = "permute";
  double noise = 0;
  bool rotates() const { return name == "rotate"; }
};
// Throws a one-line Error for an unknown name or a noise outside [0, 10].
Scheme make_scheme(const std::string& name, double noise);

// The names of the transforms, as listed in ee.json.
std::vector<std::string> transform_names();
// Those applied to a model of this config (q/k pairs turned by quarter turns, or only sign
// flips for qk-norm models; biased ones: bias rows).
std::vector<std::string> transform_names(const runtime::LlamaConfig& config);

// Whether q/k RoPE pairs get only secret sign flips (angles 0 or pi) instead of quarter turns
// (0, pi/2, pi, 3pi/2): for qk-norm models, where a turn that swaps a pair's two dims would not
// commute with the norm's per-dim weight. Both are exact in every dtype (derive_secrets).
// The transform name earlier versions wrote for continuous angles, which no arm converting q/k
// could keep exact: such a directory is refused with a request to re-encrypt.
inline constexpr const char* kContinuousRotationTransform = "q_k_rope_pair_rotation";
bool pair_sign_flips_only(const runtime::LlamaConfig& config);

// Derives the secrets for a model of this shape. `model_label` separates the hidden
// permutations of different models under one key; the vocabulary permutation depends on the
// key alone, so models that share a tokenizer (a draft and its target) share it.
ModelSecrets derive_secrets(const Key& key, const runtime::LlamaConfig& config, const std::string& model_label);
ModelSecrets derive_secrets(const Key& key, const runtime::LlamaConfig& config, const std::string& model_label, const Scheme& scheme);

// The plaintext model with the scheme's secret noise on its embedding and head rows (the head
// untied): what an encrypted model with noise decrypts to. The model itself when noise is 0.
runtime::LlamaModel noised_model(const runtime::LlamaModel& model, const Key& key, const std::string& model_label, double noise);
// The scheme an ee.json transform list records (the default scheme for an older list).
Scheme scheme_of(const std::vector<std::string>& transforms);
// The scheme's names as listed in ee.json.
std::vector<std::string> transform_names(const runtime::LlamaConfig& config, const Scheme& scheme);

// A content hash of a plaintext model (config and every weight), the default model label.
std::string model_fingerprint(const runtime::LlamaModel& model);

// The transformed weights (f32). The config is unchanged except bos/eos ids, which move to
// their encrypted ids (encrypt_config).
runtime::LlamaWeights encrypt_weights(const runtime::LlamaWeights& weights, const runtime::LlamaConfig& config,
                                      const ModelSecrets& secrets);
runtime::LlamaConfig encrypt_config(const runtime::LlamaConfig& config, const ModelSecrets& secrets);
// FFN activation statistics (per layer [intermediate]) in the encrypted neuron order.
std::vector<at::Tensor> encrypt_ffn_stats(const std::vector<at::Tensor>& stats, const ModelSecrets& secrets);

// The whole model, in memory.
runtime::LlamaModel encrypt_model(const runtime::LlamaModel& model, const Key& key, const std::string& model_label);
runtime::LlamaModel encrypt_model(const runtime::LlamaModel& model, const Key& key, const std::string& model_label, const Scheme& scheme);

struct EncryptDirResult {
  double seconds = 0;            // transform time, excluding load and save
  std::string key_fingerprint;
  int64_t parameters = 0;
};

struct EncryptDirOptions {
  bool force = false;                    // overwrite a model already in the output directory
  data::QualityTable quality;            // measured on the plaintext model, recorded in ee.json
  const runtime::LlamaModel* model = nullptr;  // the plaintext model as loaded from `in` (e.g. with
                                         // FFN statistics attached); null: load it from `in`
  Scheme scheme;
};

// eesched encrypt-model: plaintext model directory in, encrypted model directory out (config.json,
// model.safetensors, ee.json, and prune_stats.safetensors permuted when the model holds FFN
// statistics; no tokenizer, no key material). Refuses an encrypted input, a key for another
// vocabulary size, and (without `force`) an existing output model.
EncryptDirResult encrypt_model_dir(const std::filesystem::path& in, const Key& key, const std::filesystem::path& out,
                                   bool force);
EncryptDirResult encrypt_model_dir(const std::filesystem::path& in, const Key& key, const std::filesystem::path& out,
                                   const EncryptDirOptions& options);
// The refusals of encrypt_model_dir that need no model (an encrypted input, the output being the
// input, an existing output model without `force`): callers check before measuring anything.
void check_encrypt_dirs(const std::filesystem::path& in, const std::filesystem::path& out, bool force);

}  // namespace eesched::ee
