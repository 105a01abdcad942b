#include "runtime/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "runtime/error.h"
#include "runtime/model.h"

namespace eesched::runtime {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Right-padded [B, T] id tensor from rows of different lengths.
at::Tensor pad_rows(const std::vector<std::vector<int64_t>>& rows) {
  std::size_t T = 0;
  for (const auto& r : rows) T = std::max(T, r.size());
  auto ids = at::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)}, at::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (std::size_t t = 0; t < rows[b].size(); ++t) acc[static_cast<int64_t>(b)][static_cast<int64_t>(t)] = rows[b][t];
  return ids;
}

}  // namespace

int64_t GenerateResult::new_tokens() const {
  int64_t n = 0;
  for (const auto& t : tokens) n += static_cast<int64_t>(t.size());
  return n;
}

double GenerateResult::ms_per_token() const {
  if (step_ms.empty()) return ttft_ms;
  return std::accumulate(step_ms.begin(), step_ms.end(), 0.0) / static_cast<double>(step_ms.size());
}

double GenerateResult::tokens_per_s() const { return total_ms > 0 ? 1000.0 * static_cast<double>(new_tokens()) / total_ms : 0.0; }

GenerateResult generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                        const GenerateOptions& options) {
  const auto& config = model.config();
  if (prompts.empty()) throw Error("generate: no prompts");
  if (options.generation.max_new_tokens < 1) throw Error("generate: max_new_tokens must be at least 1");
  if (options.rng_skip < 0) throw Error("generate: rng_skip must not be negative");
  validate(options.generation);
  std::size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("generate: empty prompt");
    for (auto id : p)
      if (id < 0 || id >= config.vocab_size)
        throw Error("generate: token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(config.vocab_size));
    longest = std::max(longest, p.size());
  }
  const int64_t capacity = static_cast<int64_t>(longest) + options.generation.max_new_tokens;
  if (capacity > config.max_position_embeddings)
    throw Error("generate: a prompt of " + std::to_string(longest) + " tokens plus " + std::to_string(options.generation.max_new_tokens) +
                " new tokens exceeds the model's context of " + std::to_string(config.max_position_embeddings));

  c10::InferenceMode inference;
  const auto B = static_cast<int64_t>(prompts.size());
  GenerateResult result;
  result.tokens.resize(prompts.size());
  result.finish_reason.assign(prompts.size(), "length");
  std::vector<bool> done(prompts.size(), false);
  std::vector<std::mt19937_64> rngs;
  for (int64_t b = 0; b < B; ++b) {
    std::seed_seq seq{options.generation.seed, static_cast<uint64_t>(b)};
    rngs.emplace_back(seq);
    rngs.back().discard(static_cast<unsigned long long>(options.rng_skip));
  }
  const auto start = Clock::now();

  std::vector<std::vector<int64_t>> history = prompts;  // only used without the cache
  std::unique_ptr<KVCache> cache;
  at::Tensor logits;  // [B, vocab]: the next-token logits of every row
  auto last_logits_full = [&]() {
    auto all = model.forward(pad_rows(history));
    std::vector<int64_t> last(prompts.size());
    for (std::size_t b = 0; b < history.size(); ++b) last[b] = static_cast<int64_t>(history[b].size()) - 1;
    auto index = at::tensor(last, at::kLong).view({B, 1, 1}).expand({B, 1, all.size(2)});
    return all.gather(1, index).view({B, all.size(2)});
  };
  if (options.kv_cache) {
    cache = std::make_unique<KVCache>(config, B, capacity);
    std::vector<int64_t> n_new(prompts.size());
    for (std::size_t b = 0; b < prompts.size(); ++b) n_new[b] = static_cast<int64_t>(prompts[b].size());
    logits = model.forward(pad_rows(prompts), n_new, *cache, LogitsAt::Last);
  } else {
    logits = last_logits_full();
  }

  const std::vector<int64_t> ones(prompts.size(), 1);
  auto last_token = start;
  for (int64_t step = 0; step < options.generation.max_new_tokens; ++step) {
    logits = logits.contiguous();
    const float* data = logits.data_ptr<float>();
    std::vector<int64_t> next(prompts.size(), 0);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const auto ub = static_cast<std::size_t>(b);
      if (done[ub]) continue;
      const int64_t tok = sample(data + b * config.vocab_size, config.vocab_size, options.generation, rngs[ub]);
      if (std::find(options.generation.stop_ids.begin(), options.generation.stop_ids.end(), tok) != options.generation.stop_ids.end()) {
        done[ub] = true;
        result.finish_reason[ub] = "stop";
        continue;
      }
      result.tokens[ub].push_back(tok);
      next[ub] = tok;
      all_done = false;
    }
    // A step's time runs from one sampled token to the next: forward plus sampling.
    if (step == 0) result.ttft_ms = ms_since(start);
    else result.step_ms.push_back(ms_since(last_token));
    last_token = Clock::now();
    if (options.on_tokens && !all_done) {
      std::vector<std::vector<int64_t>> produced(prompts.size());
      for (std::size_t b = 0; b < prompts.size(); ++b)
        if (result.tokens[b].size() == static_cast<std::size_t>(step) + 1) produced[b].push_back(result.tokens[b].back());
      options.on_tokens(produced);
    }
    if (all_done || step + 1 == options.generation.max_new_tokens) break;
    if (options.time_limit_ms > 0 && ms_since(start) > options.time_limit_ms) {
      for (int64_t b = 0; b < B; ++b)
        if (!done[static_cast<std::size_t>(b)]) result.finish_reason[static_cast<std::size_t>(b)] = "timeout";
      break;
    }

    // Finished rows keep decoding a filler token so the batch stays rectangular.
    if (options.kv_cache) {
      logits = model.forward(at::tensor(next, at::kLong).view({B, 1}), ones, *cache, LogitsAt::Last);
    } else {
      for (std::size_t b = 0; b < history.size(); ++b) history[b].push_back(next[b]);
      logits = last_logits_full();
    }
  }
  result.total_ms = ms_since(start);
  return result;
}

}  // namespace eesched::runtime
