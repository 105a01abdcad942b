#pragma once
// Token sampling from one row of logits: greedy, temperature, top-k, top-p, seeded.
// Candidates are ranked by probability (ties by id) before any filtering or drawing, so the
// choice depends only on the multiset of logits, not on their order: a permuted vocabulary
// (EE) draws the permuted token from the same RNG stream.
#include <cstdint>
#include <random>
#include <vector>

#include "data/generation.h"

namespace eesched::runtime {

// Sampling reads temperature, top_k, top_p and seed of the task's one GenerationParams.
using data::GenerationParams;

// Throws runtime::Error naming the field when `params` is out of range (data::generation_refusal).
void validate(const GenerationParams& params);

// Index of the largest logit (the lowest id among exact ties).
int64_t argmax(const float* logits, int64_t n);

// The distribution sampling draws from, after temperature, top-k and top-p: a dense vector of n
// probabilities summing to 1 (zero outside the kept set). Greedy puts all mass on argmax.
std::vector<float> sampling_distribution(const float* logits, int64_t n, const GenerationParams& params);

// Draws a token from `probs` with one uniform draw from rng, walking candidates in decreasing
// probability order.
int64_t draw(const std::vector<float>& probs, std::mt19937_64& rng);

int64_t sample(const float* logits, int64_t n, const GenerationParams& params, std::mt19937_64& rng);

}  // namespace eesched::runtime
