#include "data/make_suite.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "data/error.h"

namespace eesched::data {
namespace {

int64_t log_uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  std::uniform_real_distribution<double> u(std::log(static_cast<double>(lo)), std::log(static_cast<double>(hi) + 1.0));
  return std::clamp<int64_t>(static_cast<int64_t>(std::exp(u(rng))), lo, hi);
}

std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace

std::vector<SuiteModel> default_suite_models() {
  return {{"target", "draft", true, 0.4}, {"syn25m", "", false, 0.25}, {"syn110m", "", false, 0.2}, {"syn350m", "", false, 0.15}};
}

std::vector<TaskSpec> make_suite(const MakeSuiteOptions& o) {
  if (o.count < 1) throw Error("make-suite: count must be positive");
  if (o.models.empty()) throw Error("make-suite: no models");
  if (o.min_prompt < 1 || o.min_prompt > o.max_prompt) throw Error("make-suite: prompt tokens need 1 <= low <= high");
  if (o.min_new < 1 || o.min_new > o.max_new) throw Error("make-suite: new tokens need 1 <= low <= high");
  if (o.max_batch < 1) throw Error("make-suite: the largest batch must be at least 1");
  std::mt19937_64 rng(o.seed);
  std::vector<double> weights;
  for (const auto& m : o.models) weights.push_back(m.weight);
  std::discrete_distribution<std::size_t> pick_model(weights.begin(), weights.end());
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<std::vector<std::string>> docs;
  for (const auto& d : o.documents) {
    auto w = words_of(d);
    if (w.size() >= 64) docs.push_back(std::move(w));
  }
  std::vector<TaskSpec> out;
  for (int i = 0; i < o.count; ++i) {
    const auto& m = o.models[pick_model(rng)];
    TaskSpec t;
    char number[16];
    std::snprintf(number, sizeof number, "-%04d", i);
    t.id = o.id_prefix + number;
    t.model = m.name;
    t.draft = m.draft;
    const int64_t tokens = log_uniform(rng, o.min_prompt, o.max_prompt);
    if (m.has_tokenizer) {
      if (docs.empty()) throw Error("make-suite: the corpus has no document of 64 words or more for text prompts");
      const auto& doc = docs[std::uniform_int_distribution<std::size_t>(0, docs.size() - 1)(rng)];
      // About 1.6 tokens per word with the demo tokenizer; the sweep records the exact count.
      const auto n = std::min<std::size_t>(doc.size(), static_cast<std::size_t>(std::max<int64_t>(1, tokens * 10 / 16)));
      const auto start = std::uniform_int_distribution<std::size_t>(0, doc.size() - n)(rng);
      for (std::size_t k = start; k < start + n; ++k) t.prompt += (k == start ? "" : " ") + doc[k];
    } else {
      t.prompt_tokens = tokens;
    }
    t.generation.max_new_tokens = log_uniform(rng, o.min_new, o.max_new);
    const double b = u01(rng);
    t.batch = std::min(o.max_batch, b < 0.6 ? 1 : b < 0.75 ? 2 : b < 0.9 ? 4 : 8);
    if (u01(rng) < 0.4) {
      t.generation.temperature = std::round((0.6 + 0.5 * u01(rng)) * 100) / 100;
      t.generation.top_p = u01(rng) < 0.5 ? 1.0 : 0.9;
    }
    t.quality = u01(rng) < 0.5 ? Quality::Exact : Quality::Tolerant;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace eesched::data
