#pragma once
// Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes
// k tokens one by one, the target scores all of them in one forward pass, and a prefix is
// accepted. Greedy: a draft token is kept while it equals the target's argmax, so the output is
// the target's greedy output. Sampling: draft token d ~ q is kept with probability
// min(1, p(d)/q(d)), and on rejection a token is drawn from normalize(max(0, p - q)), so every
// emitted token is distributed exactly as the target's p. Batch 1.
//
// Under EE the draft must be encrypted with the same key (same vocabulary permutation; DESIGN.md,
// "Key file"). Sampling walks probabilities in ranked order (runtime/sampling.h), so the
// encrypted run draws the encrypted images of the plaintext run's tokens from the same seed.
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/generate.h"

namespace eesched::runtime {
class LlamaModel;
}

namespace eesched::accel {

struct SpeculativeStats {
  int64_t rounds = 0;
  int64_t proposed = 0;  // draft tokens offered to the target
  int64_t accepted = 0;  // of which the target kept
  double acceptance_rate() const { return proposed ? static_cast<double>(accepted) / static_cast<double>(proposed) : 0.0; }
};

// The verification rule for one draft token d drawn from q: returns d when accepted (and sets
// *accepted), otherwise a token drawn from normalize(max(0, p - q)). p and q are the target's
// and the draft's sampling distributions over the same vocabulary.
int64_t verify_draft_token(const std::vector<float>& p, const std::vector<float>& q, int64_t d, std::mt19937_64& rng,
                           bool* accepted);

// Generates from one prompt with the draft proposing up to k tokens per target forward. Same
// options and result as runtime::generate (options.kv_cache is implied); the first token comes
// from the target's prefill exactly as in runtime::generate. options.on_tokens gets the first
// token, then each round's accepted tokens (the target's correction or bonus token included).
runtime::GenerateResult speculative_generate(const runtime::LlamaModel& target, const runtime::LlamaModel& draft,
                                             const std::vector<int64_t>& prompt, const runtime::GenerateOptions& options,
                                             int k, SpeculativeStats* stats = nullptr);

}  // namespace eesched::accel
