#pragma once
// The cost of EE at inference time: plaintext and encrypted decoding, alternated in one process.
#include <cstdint>
#include <memory>
#include <vector>

namespace eesched::runtime { class LlamaModel; }

namespace eesched::ee {

struct EeBenchResult {
  int pairs = 0;
  int64_t tokens = 0;                 // decoded per run
  double plain_tokens_per_s = 0;      // 1 / median decoding step over all plaintext runs
  double encrypted_tokens_per_s = 0;  // 1 / median decoding step over all encrypted runs
  // Ratios are medians of per-step paired ratios (speed of one over the other).
  double ratio = 0;                   // encrypted / plain
  double control_tokens_per_s = 0;    // a byte-identical copy of `plain`, allocated like `encrypted`
  double control_ratio = 0;           // copy / plain: the noise floor and memory-placement effect
  double ratio_vs_control = 0;        // encrypted / copy: EE's cost with placement factored out
  bool same_tokens = false;           // decrypted encrypted output == plaintext output, every pair
};

// `encrypted` must be `plain` under `vocab` (the key's vocabulary permutation). Runs one warm-up
// round, then `pairs` rounds of greedy decoding of `tokens` tokens from a fixed random prompt,
// in lockstep on three models: the plaintext one, a fresh copy of it (the control: same weights,
// new memory, like the encrypted model's) and the encrypted one.
EeBenchResult bench_ee(const runtime::LlamaModel& plain, const runtime::LlamaModel& encrypted, const std::vector<int64_t>& vocab,
                       int64_t tokens, int pairs);

}  // namespace eesched::ee
