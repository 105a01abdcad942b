#pragma once
// The cost of EE at inference time: plaintext and encrypted decoding, alternated in one process.
#include <cstdint>
#include <vector>

namespace eesched::runtime { class LlamaModel; }

namespace eesched::ee {

struct EeBenchResult {
  int pairs = 0;
  int64_t tokens = 0;                 // decoded per run
  double plain_tokens_per_s = 0;      // over all plaintext runs
  double encrypted_tokens_per_s = 0;  // over all encrypted runs
  double ratio = 0;                   // encrypted / plain
  bool same_tokens = false;           // decrypted encrypted output == plaintext output, every pair
};

// `encrypted` must be `plain` under `vocab` (the key's vocabulary permutation). Runs one warm-up
// pair, then `pairs` pairs of greedy decodes of `tokens` tokens from a fixed random prompt,
// alternating which goes first so neither side always gets the warmer cache.
EeBenchResult bench_ee(const runtime::LlamaModel& plain, const runtime::LlamaModel& encrypted, const std::vector<int64_t>& vocab,
                       int64_t tokens, int pairs);

}  // namespace eesched::ee
