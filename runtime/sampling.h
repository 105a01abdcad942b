#pragma once
// Token sampling from one row of logits: greedy, temperature, top-k, top-p, seeded.
// Candidates are ranked by probability (ties by id) before any filtering or drawing, so the
// choice depends only on the multiset of logits, not on their order: a permuted vocabulary
// (EE) draws the permuted token from the same RNG stream.
#include <cstdint>
#include <random>
#include <vector>

namespace eesched::runtime {

struct SamplingParams {
  double temperature = 0.0;  // <= 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0; }
  void validate() const;     // throws runtime::Error on out-of-range values
};

// Index of the largest logit (the lowest id among exact ties).
int64_t argmax(const float* logits, int64_t n);

// The distribution sampling draws from, after temperature, top-k and top-p: a dense vector of n
// probabilities summing to 1 (zero outside the kept set). Greedy puts all mass on argmax.
std::vector<float> sampling_distribution(const float* logits, int64_t n, const SamplingParams& params);

// Draws a token from `probs` with one uniform draw from rng, walking candidates in decreasing
// probability order.
int64_t draw(const std::vector<float>& probs, std::mt19937_64& rng);

int64_t sample(const float* logits, int64_t n, const SamplingParams& params, std::mt19937_64& rng);

}  // namespace eesched::runtime
