#pragma once
// eesched bench-arms: every applicable arm on one model (pair), measured side by side in one
// process: decoding speed, speedup over `kv`, acceptance rate of speculative arms, and the
// perplexity cost of lossy ones on held-out text.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "accel/acceleration.h"
#include "data/arm.h"

namespace eesched::accel {

struct BenchArmsOptions {
  std::vector<data::Arm> arms;   // `kv`, the reference, is added when missing
  int64_t tokens = 64;           // new tokens per run (greedy, no stop id)
  int repeats = 5;               // measured rounds, after one warm-up round
  std::vector<int64_t> prompt;   // ids as the models see them (encrypted for encrypted models)
  std::vector<int64_t> heldout;  // ids for perplexity, same convention; empty: no perplexity
  int64_t ppl_context = 256;
  std::function<void(const std::string&)> progress;
};

struct ArmBenchRow {
  std::string arm;
  bool lossless = true;
  std::optional<std::string> refused;     // why the arm does not apply (no figures then)
  double prepare_s = 0;                   // building the variant (quantizing, pruning)
  double weight_mb = 0;                   // bytes of the target's weights read per token
  double ttft_ms = 0;                     // medians over rounds
  double ms_per_token = 0;                // decoding, after the first token
  double tokens_per_s = 0;                // new tokens / whole run, prefill included
  double speedup_vs_kv = 0;               // median over rounds of kv ms/token / this arm's
  std::optional<double> acceptance_rate;  // speculative arms
  std::optional<double> perplexity;       // lossy arms, when held-out ids are given
  std::optional<double> perplexity_ratio; // vs the unaccelerated target
};

struct BenchArmsResult {
  std::vector<ArmBenchRow> rows;  // in the order asked, refused arms included
  std::optional<double> base_perplexity;
};

BenchArmsResult bench_arms(const ModelPair& base, const BenchArmsOptions& options);

}  // namespace eesched::accel
