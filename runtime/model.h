#pragma once
// The Llama decoder on LibTorch: weights in Hugging Face layout, a forward pass without cache
// (autograd-friendly, used for training, perplexity and the `plain` arm) and one that appends
// to a per-sequence KV cache (used for prefill and decoding).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/config.h"
#include "runtime/gemv.h"

namespace eesched::runtime {

// One decoder layer, HF names and shapes ([out, in] for linear weights).
struct LayerWeights {
  at::Tensor input_layernorm;           // [hidden]
  at::Tensor q_proj;                    // [heads*head_dim, hidden]
  at::Tensor k_proj;                    // [kv_heads*head_dim, hidden]
  at::Tensor v_proj;                    // [kv_heads*head_dim, hidden]
  at::Tensor o_proj;                    // [hidden, heads*head_dim]
  at::Tensor post_attention_layernorm;  // [hidden]
  at::Tensor gate_proj;                 // [intermediate, hidden]
  at::Tensor up_proj;                   // [intermediate, hidden]
  at::Tensor down_proj;                 // [hidden, intermediate]
  // Optional by family (undefined otherwise): q/k/v biases (qwen2), per-head RMSNorm weights
  // of q and k applied before RoPE (qwen3).
  at::Tensor q_bias;                    // [heads*head_dim]
  at::Tensor k_bias;                    // [kv_heads*head_dim]
  at::Tensor v_bias;                    // [kv_heads*head_dim]
  at::Tensor q_norm;                    // [head_dim]
  at::Tensor k_norm;                    // [head_dim]
  // Not a weight: the mean square of each FFN neuron's activation over calibration text
  // ([intermediate] f64; runtime/ffn_stats.h), or undefined when none was measured. It moves
  // with its neuron (EE, pruning), forward() never reads it, and named() leaves it out.
  at::Tensor ffn_activation_ms;
};

// The whole model's weights: the interchange format for loading, saving and transforming
// (EE, quantization, pruning work on this, then build a LlamaModel from it).
struct LlamaWeights {
  at::Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  at::Tensor norm;          // [hidden]
  at::Tensor lm_head;       // [vocab, hidden]; undefined when the head is tied to embed_tokens

  // HF tensor names in a stable order (lm_head omitted when tied).
  std::vector<std::pair<std::string, at::Tensor>> named() const;
};

// Per-sequence KV cache, preallocated to `capacity` positions. Sequence b holds length(b)
// positions; set_length() rolls a sequence back (e.g. rejected speculative tokens).
class KVCache {
 public:
  KVCache(const LlamaConfig& config, int64_t batch, int64_t capacity);
  int64_t batch() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t length(int64_t b) const { return lengths_.at(static_cast<std::size_t>(b)); }
  void set_length(int64_t b, int64_t n);
  // Bytes held by the cache tensors.
  int64_t bytes() const;

 private:
  friend class LlamaModel;
  int64_t capacity_;
  std::vector<int64_t> lengths_;
  std::vector<at::Tensor> k_, v_;  // per layer: [batch, kv_heads, capacity, head_dim]
};

enum class LogitsAt { All, Last };

// How the model stores a linear weight, i.e. what a kernel streams per token: as the weight
// comes (f32, bf16 or f16 kept in that dtype; any other dtype as f32), converted to f32, bf16 or
// f16, or int8 with one f32 scale per output row (gemv.h). Chosen per matrix by its HF name
// ("model.layers.3.mlp.up_proj.weight", "lm_head.weight" also for a tied head). The embedding
// table is kept as it comes too (a lookup widens the rows it picks); norms, biases and q/k norm
// weights (tiny) are always f32.
enum class WeightFormat { AsStored, F32, BF16, F16, Int8 };
using WeightFormatPolicy = std::function<WeightFormat(const std::string& hf_name)>;

// Sees each layer's FFN activations silu(gate x) * (up x), [B, T, intermediate], during a
// forward without cache: how calibration statistics are measured (runtime/ffn_stats.h).
using FfnObserver = std::function<void(int64_t layer, const at::Tensor& activations)>;

class LlamaModel {
 public:
  // Validates every shape against the config and takes the weights (f32, bf16 or f16 on CPU),
  // storing each linear weight in the format `formats` picks (AsStored when empty: f32 weights
  // give an f32 model, bf16 weights a bf16 one).
  LlamaModel(LlamaConfig config, const LlamaWeights& weights, const WeightFormatPolicy& formats = {});

  // Reads DIR/config.json and DIR/model.safetensors, or the shards that
  // DIR/model.safetensors.index.json names (f32, f16 or bf16, kept in their dtype: the kernels
  // stream bf16/f16 weights as stored; copied tensor by tensor from the memory-mapped files, so
  // loading holds about one copy of the weights), and DIR/prune_stats.safetensors when present
  // (FFN activation statistics, runtime/ffn_stats.h).
  static LlamaModel load(const std::filesystem::path& dir);
  // Writes DIR/config.json and DIR/model.safetensors (in dtype(): a bf16 model saves bf16, with
  // torch_dtype to match), and DIR/prune_stats.safetensors
  // when the model holds FFN activation statistics (else removes a stale one). Creates DIR.
  void save(const std::filesystem::path& dir) const;
  // `path`: a .safetensors file or a model.safetensors.index.json. Returns bf16/f16 tensors in
  // their stored dtype, anything else as f32; q|k|v and gate|up are laid out fused (adjacent
  // views of one buffer, in one dtype) so the constructor takes them without another copy.
  static LlamaWeights read_weights(const std::filesystem::path& path, const LlamaConfig& config);
  // DIR/model.safetensors, or DIR/model.safetensors.index.json when only that exists.
  static std::filesystem::path checkpoint_path(const std::filesystem::path& dir);

  const LlamaConfig& config() const { return config_; }
  // The dtype the model's float weights are stored in: bf16 or f16 when the embedding and every
  // linear weight are held in it, else f32 (also for a model with int8 weights).
  at::ScalarType dtype() const;
  // dtype() as the store and the selector's features spell it: "f32", "bf16" or "f16".
  std::string dtype_label() const;
  // Named views into the model's own storage (no copy), each in its stored dtype (linear weights
  // and the embedding of a bf16 model are bf16; norms and biases f32); int8 weights come back
  // dequantized (values * scale, an f32 copy).
  LlamaWeights weights() const;
  // The int8 weights by HF name (empty for an all-f32 model); a tied head is "lm_head.weight".
  std::vector<std::pair<std::string, QuantizedMatrix>> int8_weights() const;
  // The tensors that hold every weight exactly once (for optimizers). f32 models only (throws
  // for int8 or 16-bit weights).
  std::vector<at::Tensor> parameters() const;
  // Bytes of weights read per decoding step at batch 1 (every matrix once, plus the head).
  int64_t weight_bytes() const;

  // Causal forward over ids [B, T] at positions 0..T-1, no cache. Returns logits [B, T, vocab].
  // Rows may be right-padded: a position never attends to later ones.
  at::Tensor forward(const at::Tensor& ids) const;
  // The same, showing every layer's FFN activations to `observe`.
  at::Tensor forward(const at::Tensor& ids, const FfnObserver& observe) const;
  // Whether every layer holds FFN activation statistics.
  bool has_ffn_stats() const;

  // Appends ids [B, T] to the cache: row b adds its first n_new[b] tokens (>= 1) at positions
  // cache.length(b)...; the rest of the row is padding. Returns logits [B, T, vocab] (All) or
  // the logits of each row's last new token, [B, vocab] (Last).
  at::Tensor forward(const at::Tensor& ids, const std::vector<int64_t>& n_new, KVCache& cache,
                     LogitsAt which = LogitsAt::All) const;
  // The same over some of the cache's sequences: row b of ids extends sequence slots[b] (distinct
  // slots; the others are left as they are). Continuous batching (runtime/batch_decoder.h) runs
  // the sequences in flight over a cache sized for the most it admits. Each row computes exactly
  // what it would alone: the decoding step's kernels treat rows independently.
  at::Tensor forward(const at::Tensor& ids, const std::vector<int64_t>& n_new, KVCache& cache,
                     const std::vector<int64_t>& slots, LogitsAt which = LogitsAt::All) const;

 private:
  // A linear weight [out, in] stored as row blocks, each float (f32, bf16 or f16) or int8; the output is the
  // blocks' outputs side by side. Fused matrices (q|k|v, gate|up) whose parts differ in format
  // get one block per run of equal formats.
  struct Linear {
    struct Block {
      at::Tensor dense;      // [rows, in] f32, bf16 or f16, or undefined when int8
      QuantizedMatrix int8;  // used when dense is undefined
      int64_t rows = 0;
    };
    std::vector<Block> blocks;
    at::Tensor apply(const at::Tensor& x) const;  // x [..., in] -> [..., out]
    at::Tensor rows(int64_t start, int64_t n) const;               // view in its dtype, or dequantized
    const Block* block_at(int64_t start, int64_t n) const;         // the block spanning exactly these rows
    int64_t bytes() const;
  };
  struct Layer {
    at::Tensor input_norm, post_norm;
    Linear wqkv, wo, w_gate_up, w_down;
    at::Tensor bqkv;              // [(H + 2 KV) hd] q|k|v bias, or undefined
    at::Tensor q_norm, k_norm;    // [hd] per-head RMSNorm weights, or undefined
    at::Tensor ffn_activation_ms;  // [intermediate] f64, or undefined
  };
  at::Tensor attention_block(const Layer& layer, int64_t index, const at::Tensor& x, const at::Tensor& cos,
                             const at::Tensor& sin, const at::Tensor& mask, KVCache* cache,
                             const std::vector<int64_t>* n_new, const std::vector<int64_t>* slots) const;
  at::Tensor mlp_block(const Layer& layer, const at::Tensor& x, int64_t index = -1, const FfnObserver* observe = nullptr) const;
  at::Tensor head(const at::Tensor& hidden) const;
  // forward() with cache for one new token per row (decoding): the same layers as plain loops
  // over raw buffers around the matrix kernels, with no per-operation dispatch
  // (runtime/decode_step.cpp).
  at::Tensor decode_step(const at::Tensor& ids, KVCache& cache, const std::vector<int64_t>& slots, LogitsAt which) const;
  at::Tensor embed(const at::Tensor& ids) const;  // f32 rows of the embedding table

  LlamaConfig config_;
  at::Tensor embed_, norm_;
  Linear head_;                        // lm_head, or the embedding when tied (shares its storage when
                                       // it is stored as the embedding is)
  std::vector<Layer> layers_;
  at::Tensor rope_cos_, rope_sin_;     // [max_position_embeddings, head_dim]
};

}  // namespace eesched::runtime
