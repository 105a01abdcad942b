#include "runtime/perplexity.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "runtime/error.h"
#include "runtime/model.h"

namespace eesched::runtime {

PerplexityResult perplexity(const LlamaModel& model, const std::vector<int64_t>& ids, const PerplexityOptions& options) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) throw Error("perplexity: need at least 2 tokens");
  const int64_t context = options.context > 0 ? options.context : model.config().max_position_embeddings;
  if (context < 2 || context > model.config().max_position_embeddings)
    throw Error("perplexity: context must be in 2.." + std::to_string(model.config().max_position_embeddings));
  const int64_t stride = options.stride > 0 ? options.stride : std::max<int64_t>(1, context / 2);
  if (stride > context) throw Error("perplexity: stride must not exceed the context");

  c10::InferenceMode inference;
  const auto all = at::tensor(ids, at::kLong);
  double nll = 0.0;
  int64_t scored = 0, windows = 0, prev_end = 1;  // token 0 has no prediction
  std::vector<int64_t> predictions;
  for (int64_t begin = 0; prev_end < n; begin += stride) {
    const int64_t end = std::min(begin + context, n);
    const int64_t fresh = end - prev_end;  // targets at positions prev_end..end-1
    if (fresh <= 0) continue;
    auto window = all.slice(0, begin, end).view({1, end - begin});
    auto logp = at::log_softmax(model.forward(window)[0], -1);  // [T, V]; row t predicts token t+1
    const int64_t first = prev_end - begin - 1;
    auto targets = all.slice(0, prev_end, end).view({fresh, 1});
    const auto scored_logp = logp.slice(0, first, first + fresh);
    nll -= scored_logp.gather(1, targets).sum().item<double>();
    if (options.predictions) {
      const auto best = scored_logp.argmax(-1).contiguous();
      predictions.insert(predictions.end(), best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + fresh);
    }
    scored += fresh;
    ++windows;
    prev_end = end;
    if (options.progress) options.progress(scored, n - 1);
  }
  PerplexityResult r;
  r.tokens = scored;
  r.windows = windows;
  r.mean_nll = nll / static_cast<double>(scored);
  r.perplexity = std::exp(r.mean_nll);
  r.predictions = std::move(predictions);
  return r;
}

}  // namespace eesched::runtime
