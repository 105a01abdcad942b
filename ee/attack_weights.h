#pragma once
// The weights attack (issue 21, threat model 1): a worker holds the encrypted model and the
// public base weights, and tries to recover the secret permutations. EE permutes rows and
// columns of every matrix without changing any value, so a row sorted is a signature that
// survives the column permutation: matching the sorted rows of the encrypted embedding (and
// head) against the public ones recovers the vocabulary permutation; with it, matched rows give
// the residual permutation column by column, and the sorted rows of each layer's gate
// projection give its FFN neuron permutation. The attack uses no key; the key only scores it.
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model.h"

namespace eesched::ee {

struct ModelSecrets;

// What the attacker guesses: for each encrypted index, the plaintext index, or -1 (no unique
// match).
struct WeightsGuess {
  std::vector<int64_t> vocab;               // encrypted token id -> plaintext id
  std::vector<int64_t> residual;            // encrypted residual dim -> plaintext dim
  std::vector<std::vector<int64_t>> ffn;    // per layer: encrypted neuron -> plaintext neuron
  // When sorted rows do not match (a dense rotation of the residual: the "rotate" scheme), the
  // residual map solved instead: [hidden, hidden] f64, plaintext row x -> encrypted x M.
  at::Tensor rotation;
  std::string method;                       // "sorted rows" or "eigenvectors + procrustes"
};

// Tries the sorted-row match first; when it matches under half the vocabulary, solves the
// residual as a rotation: the Gram matrix G^T G of a matrix G that reads the stream (layer 0's
// gate projection, norm weight folded) is public up to that rotation, so its eigenvectors
// align the two bases (signs from the sorted projected columns), orthogonal Procrustes over the
// best nearest-neighbour matches of embedding and head rows refines it, and every token then
// goes to its nearest public row (cosine, embedding and head together).
WeightsGuess attack_weights(const runtime::LlamaWeights& encrypted, const runtime::LlamaWeights& public_weights);

// The hidden-states attack (threat model 3): a worker records the residual stream at some layer
// for each prompt position ([positions, hidden], in the encrypted basis) and, with the weights
// attack's residual map, reads each position's token as the public embedding row nearest (cosine).
std::vector<int64_t> attack_hidden_states(const at::Tensor& states, const runtime::LlamaWeights& public_weights, const WeightsGuess& weights);

// The residual stream after the first layer, RMS-normalized, for ids [B, T]: [B, T, hidden].
// It comes out of the runtime's own forward, on a one-layer copy of `model` whose head is the
// identity on the first `hidden` logits. Undefined when the vocabulary is smaller than hidden.
at::Tensor first_layer_output(const runtime::LlamaModel& model, const at::Tensor& ids);

// The same attack on the first layer's output, which attention has mixed with the earlier
// positions: for each position, a shortlist of `shortlist` tokens (centred cosine to each
// token's first-layer output alone at position 0), then the one whose first-layer output under the public model (given the tokens read so far) is
// nearest to the state observed. Returns a plaintext id per position.
std::vector<int64_t> attack_hidden_after_first_layer(const at::Tensor& states, const runtime::LlamaModel& public_model,
                                                     const WeightsGuess& weights, int64_t shortlist);

// The guess scored against the truth (ModelSecrets: token t is sent as vocab[t], residual dim i
// moves to residual[i], neuron i of a layer to ffn[i]).
struct WeightsAttackScore {
  double vocab_recovered = 0;     // fraction of the vocabulary mapped to its true id
  double tokens_recovered = 0;    // fraction of `text_ids` (plaintext) whose encryption is recovered; the
                                  // vocabulary fraction when no text is given
  double residual_recovered = 0;  // fraction of residual dims (for a rotation: whose row of the map
                                  // is within cosine 0.99 of the truth)
  double ffn_recovered = 0;       // fraction of FFN neurons over every layer
};
WeightsAttackScore score_weights_attack(const WeightsGuess& guess, const ModelSecrets& truth, const std::vector<int64_t>& text_ids);

}  // namespace eesched::ee
