#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

// Ids sorted by decreasing value, ties by increasing id (a total order).
std::vector<int64_t> ranked(const float* values, int64_t n) {
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [values](int64_t a, int64_t b) { return values[a] > values[b]; });
  return order;
}

}  // namespace

void validate(const GenerationParams& params) {
  if (auto why = data::generation_refusal(params)) throw Error(*why);
}

int64_t argmax(const float* logits, int64_t n) {
  if (n <= 0) throw Error("argmax of an empty row");
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

std::vector<float> sampling_distribution(const float* logits, int64_t n, const GenerationParams& p) {
  std::vector<float> probs(static_cast<std::size_t>(n), 0.0f);
  if (p.greedy()) {
    probs[static_cast<std::size_t>(argmax(logits, n))] = 1.0f;
    return probs;
  }
  auto order = ranked(logits, n);
  int64_t keep = (p.top_k > 0) ? std::min<int64_t>(p.top_k, n) : n;
  // Softmax over the kept candidates in double, scaled by temperature.
  const double max_logit = logits[order[0]];
  std::vector<double> w(static_cast<std::size_t>(keep));
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    w[static_cast<std::size_t>(i)] = std::exp((logits[order[static_cast<std::size_t>(i)]] - max_logit) / p.temperature);
    total += w[static_cast<std::size_t>(i)];
  }
  if (p.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (always at least one token).
    double cum = 0.0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += w[static_cast<std::size_t>(i)] / total;
      if (cum >= p.top_p) { cut = i + 1; break; }
    }
    keep = cut;
    total = std::accumulate(w.begin(), w.begin() + keep, 0.0);
  }
  for (int64_t i = 0; i < keep; ++i)
    probs[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] = static_cast<float>(w[static_cast<std::size_t>(i)] / total);
  return probs;
}

int64_t draw(const std::vector<float>& probs, std::mt19937_64& rng) {
  const auto n = static_cast<int64_t>(probs.size());
  auto order = ranked(probs.data(), n);
  double total = 0.0;
  for (float q : probs) total += q;
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * total;
  double cum = 0.0;
  for (int64_t id : order) {
    if (probs[static_cast<std::size_t>(id)] <= 0.0f) break;
    cum += probs[static_cast<std::size_t>(id)];
    if (u < cum) return id;
  }
  return order[0];  // u fell past the last candidate through rounding
}

int64_t sample(const float* logits, int64_t n, const GenerationParams& params, std::mt19937_64& rng) {
  if (params.greedy()) return argmax(logits, n);
  return draw(sampling_distribution(logits, n, params), rng);
}

}  // namespace eesched::runtime
