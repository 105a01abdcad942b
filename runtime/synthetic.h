#pragma once
// Seeded random-init Llama models of realistic shapes, for speed work (not for text).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace eesched::runtime {

class LlamaModel;

// "25m", "110m", "350m": Llama-style shapes with grouped-query attention and a 32000 vocabulary.
// "llama3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b", "smollm2-360m": the real models' architectures,
// shapes, vocabularies and config keys (bf16 on disk), random weights.
LlamaConfig synthetic_config(const std::string& preset);
std::vector<std::string> synthetic_presets();

// Normal(0, 0.02) linear and embedding weights (output projections scaled by 1/sqrt(2 layers),
// as GPT-2 does), unit norm weights. The same seed gives the same model. Linear weights and the
// embedding are held in the config's torch_dtype (a 16-bit preset: bf16), as loading its
// checkpoint would hold them.
LlamaModel random_model(const LlamaConfig& config, uint64_t seed);

// Writes DIR/config.json (torch_dtype = config's) and the weights in that dtype ("float32",
// "bfloat16" or "float16"): one model.safetensors, or shards of at most `shard_bytes` with
// model.safetensors.index.json (HF names: model-00001-of-0000N.safetensors) when larger. The
// default is Hugging Face save_pretrained's max_shard_size, 5 GB: a 1B bf16 model is one file,
// as its published checkpoint is.
inline constexpr int64_t kDefaultShardBytes = 5'000'000'000;
void save_checkpoint(const LlamaModel& model, const std::filesystem::path& dir, int64_t shard_bytes = kDefaultShardBytes);

}  // namespace eesched::runtime
