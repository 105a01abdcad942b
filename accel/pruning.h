#pragma once
// Structured FFN pruning: removes a fraction of each layer's FFN neurons (a row of gate and up,
// the matching column of down), so the matrices physically shrink and decoding streams fewer
// bytes.
//
// The score of neuron j is ||g_j|| * ||u_j|| * ||d_j||, where g_j and u_j are its gate and up rows
// times the post-attention norm weights (what the neuron really sees) and d_j its down column.
// Each norm is a function of a multiset of values, summed in a fixed (sorted) order, so the
// score is bitwise the same after any EE permutation: the encrypted model keeps exactly the
// encrypted images of the neurons the plaintext model keeps. (Exact ties between neurons fall
// back to the index and could differ; with real-valued weights they do not occur.)
#include <cstdint>
#include <vector>

#include "data/arm.h"
#include "runtime/model.h"

namespace eesched::accel {

struct PrunedModel {
  runtime::LlamaModel model;
  std::vector<std::vector<int64_t>> kept;  // per layer: the kept neurons, ascending original index
};

// Per-neuron scores of one layer, [intermediate] (exposed for tests).
std::vector<double> ffn_neuron_scores(const runtime::LayerWeights& layer);

// Removes round(intermediate * percent / 100) neurons of lowest score in every layer; throws
// runtime::Error when that would leave none.
PrunedModel prune_ffn(const runtime::LlamaModel& model, int percent);

// The intermediate size prune_ffn leaves: data::pruned_intermediate (the selector's features
// compute it without LibTorch).
using data::pruned_intermediate;

}  // namespace eesched::accel
