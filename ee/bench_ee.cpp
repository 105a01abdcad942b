#include "ee/bench_ee.h"

#include <random>

#include "ee/key.h"
#include "node/runtime/error.h"
#include "node/runtime/generate.h"
#include "node/runtime/model.h"

namespace eesched::ee {

EeBenchResult bench_ee(const runtime::LlamaModel& plain, const runtime::LlamaModel& encrypted, const std::vector<int64_t>& vocab,
                       int64_t tokens, int pairs) {
  if (pairs < 1 || tokens < 2) throw runtime::Error("bench-ee: need at least one pair and two tokens");
  const auto& c = plain.config();
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, c.vocab_size - 1);
  std::vector<int64_t> prompt(16);
  for (auto& id : prompt) id = pick(rng);
  std::vector<int64_t> wire_prompt;
  for (auto id : prompt) wire_prompt.push_back(vocab[static_cast<std::size_t>(id)]);
  const auto back = inverse(vocab);

  runtime::GenerateOptions o;
  o.max_new_tokens = tokens;
  double plain_ms = 0, enc_ms = 0;
  int64_t plain_steps = 0, enc_steps = 0;
  EeBenchResult r;
  r.pairs = pairs;
  r.tokens = tokens;
  r.same_tokens = true;
  for (int i = -1; i < pairs; ++i) {  // i = -1: warm-up, not counted
    runtime::GenerateResult p, e;
    if (i % 2 == 0) {
      p = runtime::generate(plain, {prompt}, o);
      e = runtime::generate(encrypted, {wire_prompt}, o);
    } else {
      e = runtime::generate(encrypted, {wire_prompt}, o);
      p = runtime::generate(plain, {prompt}, o);
    }
    std::vector<int64_t> decrypted;
    for (auto id : e.tokens[0]) decrypted.push_back(back[static_cast<std::size_t>(id)]);
    r.same_tokens = r.same_tokens && decrypted == p.tokens[0];
    if (i < 0) continue;
    for (double ms : p.step_ms) plain_ms += ms;
    for (double ms : e.step_ms) enc_ms += ms;
    plain_steps += static_cast<int64_t>(p.step_ms.size());
    enc_steps += static_cast<int64_t>(e.step_ms.size());
  }
  r.plain_tokens_per_s = 1000.0 * static_cast<double>(plain_steps) / plain_ms;
  r.encrypted_tokens_per_s = 1000.0 * static_cast<double>(enc_steps) / enc_ms;
  r.ratio = r.encrypted_tokens_per_s / r.plain_tokens_per_s;
  return r;
}

}  // namespace eesched::ee
