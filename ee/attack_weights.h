#pragma once
// The weights attack (issue 21, threat model 1): a worker holds the encrypted model and the
// public base weights, and tries to recover the secret permutations. EE permutes rows and
// columns of every matrix without changing any value, so a row sorted is a signature that
// survives the column permutation: matching the sorted rows of the encrypted embedding (and
// head) against the public ones recovers the vocabulary permutation; with it, matched rows give
// the residual permutation column by column, and the sorted rows of each layer's gate
// projection give its FFN neuron permutation. The attack uses no key; the key only scores it.
#include <cstdint>
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
};

WeightsGuess attack_weights(const runtime::LlamaWeights& encrypted, const runtime::LlamaWeights& public_weights);

// The guess scored against the truth (ModelSecrets: token t is sent as vocab[t], residual dim i
// moves to residual[i], neuron i of a layer to ffn[i]).
struct WeightsAttackScore {
  double vocab_recovered = 0;     // fraction of the vocabulary mapped to its true id
  double tokens_recovered = 0;    // fraction of `text_ids` (plaintext) whose encryption is recovered; the
                                  // vocabulary fraction when no text is given
  double residual_recovered = 0;  // fraction of residual dims
  double ffn_recovered = 0;       // fraction of FFN neurons over every layer
};
WeightsAttackScore score_weights_attack(const WeightsGuess& guess, const ModelSecrets& truth, const std::vector<int64_t>& text_ids);

}  // namespace eesched::ee
