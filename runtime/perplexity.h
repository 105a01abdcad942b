#pragma once
// Perplexity of a model on a token stream, with a sliding window over the model's context:
// each window scores only the tokens the previous window did not, with up to
// (context - stride) tokens of left context (the Hugging Face recipe).
#include <cstdint>
#include <functional>
#include <vector>

namespace eesched::runtime {

class LlamaModel;

struct PerplexityOptions {
  int64_t context = 0;  // 0: the model's max_position_embeddings
  int64_t stride = 0;   // 0: context / 2
  std::function<void(int64_t done, int64_t total)> progress;  // tokens scored so far
  bool predictions = false;  // also return the argmax next token at every scored position
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;     // nats per token
  int64_t tokens = 0;      // tokens scored
  int64_t windows = 0;
  // With options.predictions: predictions[i] is the model's argmax for token i + 1, made from the
  // same left context its loss was (compare two models' top-1 choices position by position).
  std::vector<int64_t> predictions;
};

PerplexityResult perplexity(const LlamaModel& model, const std::vector<int64_t>& ids, const PerplexityOptions& options);

}  // namespace eesched::runtime
