#pragma once
// FFN activation statistics: for every layer and FFN neuron j, the mean square of its activation
// a_j = silu(g_j . x) * (u_j . x) over calibration text. Activation-aware pruning
// (accel/pruning.h) scores a neuron by them; the model owner measures them on plaintext and ships
// them next to the weights as prune_stats.safetensors, in the model's own neuron order (an
// encrypted model's file holds them permuted by its FFN permutations). They describe the
// calibration text only through per-neuron averages, never tokens.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace eesched::runtime {

class LlamaModel;

inline constexpr const char* kFfnStatsFile = "prune_stats.safetensors";
// Tensor name per layer: "model.layers.N." + this.
inline constexpr const char* kFfnStatsSuffix = "mlp.activation_mean_square";

struct FfnStatsOptions {
  int64_t context = 256;  // window length; windows do not overlap, so every token counts once
  std::function<void(int64_t done, int64_t total)> progress;  // tokens seen so far
};

// Per layer [intermediate] f64: the mean over `ids` of each neuron's squared activation.
std::vector<at::Tensor> measure_ffn_stats(const LlamaModel& model, const std::vector<int64_t>& ids, const FfnStatsOptions& options);

// The same f32 model holding `stats` (per layer [intermediate]); empty `stats` drops them.
LlamaModel with_ffn_stats(const LlamaModel& model, const std::vector<at::Tensor>& stats);
// The statistics a model holds (empty when none).
std::vector<at::Tensor> ffn_stats_of(const LlamaModel& model);

// Reads a statistics file for a model of this config; throws runtime::Error (no path prefix:
// the caller names the file) on missing layers, wrong shapes or dtypes, negative or non-finite
// values, or unexpected tensors.
std::vector<at::Tensor> read_ffn_stats(const std::filesystem::path& path, const LlamaConfig& config);
void write_ffn_stats(const std::filesystem::path& path, const std::vector<at::Tensor>& stats);

}  // namespace eesched::runtime
