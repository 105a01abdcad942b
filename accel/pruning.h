#pragma once
// Structured FFN pruning: removes a fraction of each layer's FFN neurons (a row of gate and up,
// the matching column of down), so the matrices physically shrink and decoding streams fewer
// bytes.
//
// Which neurons go: those of least score. With calibration statistics (the model directory's
// prune_stats.safetensors, runtime/ffn_stats.h) the score of neuron j is ||d_j|| * ||a_j||, its
// down column's norm times the RMS of its activation a_j = silu(g_j . x) * (u_j . x) over
// calibration text: the expected size of what removing it subtracts from the residual stream
// (Wanda's |W| * ||X|| for a whole neuron; Sun et al. 2023). Without them it falls back to
// weights alone, ||g_j|| * ||u_j|| * ||d_j|| with g_j and u_j times the post-attention norm weights
// (what the neuron really sees), which ignores how the inputs are distributed: on the trained
// target, pruning 30% that way costs a perplexity ratio of 1.40.
//
// Both commute with EE bitwise: each norm is a function of a multiset of values, summed in a
// fixed (sorted) order, and the statistics are shipped permuted with their neurons, so the
// encrypted model keeps exactly the encrypted images of the neurons the plaintext model keeps.
// (Exact ties between neurons fall back to the index and could differ; with real-valued weights
// they do not occur.)
#include <cstdint>
#include <vector>

#include "data/arm.h"
#include "runtime/model.h"

namespace eesched::accel {

struct PrunedModel {
  runtime::LlamaModel model;
  std::vector<std::vector<int64_t>> kept;  // per layer: the kept neurons, ascending original index
  bool activation_scores = false;          // scored by calibration statistics (else by weights)
};

// Per-neuron scores of one layer, [intermediate] (exposed for tests): by activation statistics
// when the layer holds them, else by weights.
std::vector<double> ffn_neuron_scores(const runtime::LayerWeights& layer);
// The two scores by name; the activation score needs layer.ffn_activation_ms.
std::vector<double> ffn_weight_scores(const runtime::LayerWeights& layer);
std::vector<double> ffn_activation_scores(const runtime::LayerWeights& layer);

// Removes round(intermediate * percent / 100) neurons of lowest score in every layer (the kept
// neurons keep their statistics); throws runtime::Error when that would leave none.
PrunedModel prune_ffn(const runtime::LlamaModel& model, int percent);

// The intermediate size prune_ffn leaves: data::pruned_intermediate (the selector's features
// compute it without LibTorch).
using data::pruned_intermediate;

}  // namespace eesched::accel
