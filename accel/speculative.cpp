#include "accel/speculative.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "accel/int8.h"
#include "accel/registry_internal.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/sampling.h"

namespace eesched::accel {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

at::Tensor row_tensor(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong).view({1, static_cast<int64_t>(ids.size())}); }

bool is_stop(const runtime::GenerateOptions& o, int64_t tok) {
  return std::find(o.generation.stop_ids.begin(), o.generation.stop_ids.end(), tok) != o.generation.stop_ids.end();
}

}  // namespace

int64_t verify_draft_token(const std::vector<float>& p, const std::vector<float>& q, int64_t d, std::mt19937_64& rng,
                           bool* accepted) {
  const auto ud = static_cast<std::size_t>(d);
  if (p.size() != q.size() || ud >= p.size()) throw runtime::Error("verify_draft_token: mismatched distributions");
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double ratio = q[ud] > 0 ? static_cast<double>(p[ud]) / static_cast<double>(q[ud]) : 0.0;
  if (uniform(rng) < ratio) {
    *accepted = true;
    return d;
  }
  *accepted = false;
  std::vector<float> residual(p.size());
  double total = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    residual[i] = std::max(0.0f, p[i] - q[i]);
    total += residual[i];
  }
  // p == q up to rounding: rejection then has probability ~0, and p itself is the right law.
  if (total <= 0) return runtime::draw(p, rng);
  for (auto& r : residual) r = static_cast<float>(r / total);
  return runtime::draw(residual, rng);
}

runtime::GenerateResult speculative_generate(const runtime::LlamaModel& target, const runtime::LlamaModel& draft,
                                             const std::vector<int64_t>& prompt, const runtime::GenerateOptions& options,
                                             int k, SpeculativeStats* stats) {
  const auto& tc = target.config();
  if (k < 1) throw runtime::Error("speculative decoding needs k >= 1 draft tokens");
  if (draft.config().vocab_size != tc.vocab_size)
    throw runtime::Error("the draft's vocabulary (" + std::to_string(draft.config().vocab_size) + ") differs from the target's (" +
                         std::to_string(tc.vocab_size) + ")");
  if (prompt.empty()) throw runtime::Error("generate: empty prompt");
  if (options.generation.max_new_tokens < 1) throw runtime::Error("generate: max_new_tokens must be at least 1");
  runtime::validate(options.generation);
  for (auto id : prompt)
    if (id < 0 || id >= tc.vocab_size)
      throw runtime::Error("generate: token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(tc.vocab_size));
  const auto n = static_cast<int64_t>(prompt.size());
  const int64_t context = std::min(tc.max_position_embeddings, draft.config().max_position_embeddings);
  if (n + options.generation.max_new_tokens > context)
    throw runtime::Error("generate: a prompt of " + std::to_string(n) + " tokens plus " + std::to_string(options.generation.max_new_tokens) +
                         " new tokens exceeds the context of " + std::to_string(context));

  c10::InferenceMode inference;
  const int64_t V = tc.vocab_size;
  const auto& sp = options.generation;
  const int64_t capacity = std::min(context, n + options.generation.max_new_tokens + k + 1);
  runtime::KVCache tcache(tc, 1, capacity), dcache(draft.config(), 1, capacity);
  std::seed_seq seq{sp.seed, uint64_t{0}};
  std::mt19937_64 rng(seq);
  SpeculativeStats local;
  runtime::GenerateResult result;
  result.tokens.resize(1);
  result.finish_reason.assign(1, "length");
  auto& out = result.tokens[0];
  const auto start = Clock::now();

  // Prefill the target and take its first token, as runtime::generate does.
  auto logits = target.forward(row_tensor(prompt), {n}, tcache, runtime::LogitsAt::Last).contiguous();
  const int64_t first = runtime::sample(logits.data_ptr<float>(), V, sp, rng);
  result.ttft_ms = ms_since(start);
  if (is_stop(options, first)) {
    result.finish_reason[0] = "stop";
    result.total_ms = ms_since(start);
    return result;
  }
  out.push_back(first);
  if (options.on_tokens) options.on_tokens(std::vector<std::vector<int64_t>>{std::vector<int64_t>{first}});
  // The draft catches up on the prompt here, outside the time to first token.
  std::vector<int64_t> seqn = prompt;  // everything committed; its last token is pending
  seqn.push_back(first);
  if (n > 1) draft.forward(row_tensor(std::vector<int64_t>(prompt.begin(), prompt.end() - 1)), {n - 1}, dcache, runtime::LogitsAt::Last);

  bool stopped = false;
  while (!stopped && static_cast<int64_t>(out.size()) < options.generation.max_new_tokens) {
    if (options.time_limit_ms > 0 && ms_since(start) > options.time_limit_ms) {
      result.finish_reason[0] = "timeout";
      break;
    }
    const auto round_start = Clock::now();
    const auto c = static_cast<int64_t>(seqn.size());  // target cache holds c - 1 tokens
    const int64_t remaining = options.generation.max_new_tokens - static_cast<int64_t>(out.size());
    const int64_t kr = std::min<int64_t>({k, remaining - 1, capacity - c});

    // Draft: catch up on committed tokens it has not seen, then propose kr tokens.
    std::vector<int64_t> proposals;
    std::vector<std::vector<float>> q;
    if (kr > 0) {
      std::vector<int64_t> feed(seqn.begin() + dcache.length(0), seqn.end());
      for (int64_t i = 0; i < kr; ++i) {
        auto dl = draft.forward(row_tensor(feed), {static_cast<int64_t>(feed.size())}, dcache, runtime::LogitsAt::Last).contiguous();
        int64_t d = 0;
        if (sp.greedy()) {
          d = runtime::argmax(dl.data_ptr<float>(), V);
        } else {
          q.push_back(runtime::sampling_distribution(dl.data_ptr<float>(), V, sp));
          d = runtime::draw(q.back(), rng);
        }
        proposals.push_back(d);
        feed.assign(1, d);
      }
    }

    // Target: the pending token and every proposal in one forward; row i predicts token i + 1.
    std::vector<int64_t> verify{seqn.back()};
    verify.insert(verify.end(), proposals.begin(), proposals.end());
    auto tl = target.forward(row_tensor(verify), {kr + 1}, tcache, runtime::LogitsAt::All).contiguous();
    const float* tp = tl.data_ptr<float>();

    std::vector<int64_t> fresh;
    int64_t accepted = 0;
    bool rejected = false;
    for (int64_t i = 0; i < kr; ++i) {
      const float* row = tp + i * V;
      const int64_t d = proposals[static_cast<std::size_t>(i)];
      if (sp.greedy()) {
        const int64_t best = runtime::argmax(row, V);
        if (best != d) {
          fresh.push_back(best);
          rejected = true;
          break;
        }
        fresh.push_back(d);
      } else {
        bool ok = false;
        const auto p = runtime::sampling_distribution(row, V, sp);
        fresh.push_back(verify_draft_token(p, q[static_cast<std::size_t>(i)], d, rng, &ok));
        if (!ok) {
          rejected = true;
          break;
        }
      }
      ++accepted;
    }
    // Every proposal kept: the target's prediction after the last one comes for free.
    if (!rejected) fresh.push_back(runtime::sample(tp + kr * V, V, sp, rng));

    local.rounds += 1;
    local.proposed += kr;
    local.accepted += accepted;
    // Roll both caches back to the accepted prefix: the target holds everything up to and
    // including the last accepted proposal; the draft at most that.
    tcache.set_length(0, c + accepted);
    dcache.set_length(0, std::min(dcache.length(0), c + accepted));

    int64_t emitted = 0;
    for (const auto tok : fresh) {
      if (is_stop(options, tok)) {
        stopped = true;
        result.finish_reason[0] = "stop";
        break;
      }
      out.push_back(tok);
      seqn.push_back(tok);
      ++emitted;
      if (static_cast<int64_t>(out.size()) == options.generation.max_new_tokens) break;
    }
    // One decoding step per emitted token, sharing the round's time.
    const double round_ms = ms_since(round_start);
    for (int64_t i = 0; i < emitted; ++i) result.step_ms.push_back(round_ms / static_cast<double>(emitted));
    if (options.on_tokens && emitted > 0)
      options.on_tokens(std::vector<std::vector<int64_t>>{std::vector<int64_t>(out.end() - static_cast<std::ptrdiff_t>(emitted), out.end())});
  }
  result.total_ms = ms_since(start);
  if (stats) *stats = local;
  return result;
}

namespace {

// What both drafting schemes share: k draft tokens per target pass, lossless, batch 1.
class Speculation : public Acceleration {
 public:
  Speculation(std::string prefix, int k) : prefix_(std::move(prefix)), k_(k) {}
  std::string name() const override { return prefix_ + std::to_string(k_); }
  int stage() const override { return kStageDecode; }
  void configure(DecodePlan& plan) const override { plan.spec_k = k_; }

 protected:
  std::optional<std::string> batch_refusal(const data::TaskSpec& task) const {
    if (task.batch != 1) return name() + " runs batch 1 only (the task has batch " + std::to_string(task.batch) + ")";
    return std::nullopt;
  }

 private:
  std::string prefix_;
  int k_;
};

// specK: a separate, smaller draft model encrypted under the target's key.
class SpeculativeDecoding final : public Speculation {
 public:
  explicit SpeculativeDecoding(int k) : Speculation("spec", k) {}
  std::optional<std::string> refusal(const data::TaskSpec& task, const ModelPair& models) const override {
    if (!models.draft) return name() + " needs a draft model and none is loaded";
    if (auto why = batch_refusal(task)) return why;
    const auto &t = models.target->config(), &d = models.draft->config();
    if (t.vocab_size != d.vocab_size)
      return "the draft's vocabulary (" + std::to_string(d.vocab_size) + ") differs from the target's (" +
             std::to_string(t.vocab_size) + ")";
    if (models.draft_key != models.target_key)
      return "the draft and the target are not encrypted under the same key, so their vocabularies are permuted differently";
    return std::nullopt;
  }
};

// qspecK, self-speculative decoding: the draft is the target's own weights in int8 (accel/int8.h),
// built when the arm is. On a memory-bound model it streams ~3x fewer bytes per step than the f32
// target and agrees with its argmax almost always, so one f32 pass verifies several tokens; the
// output is still the f32 target's. Quantization is per output row, so it commutes with EE and
// the draft is encrypted under the target's key by construction.
class SelfSpeculativeDecoding final : public Speculation {
 public:
  explicit SelfSpeculativeDecoding(int k) : Speculation("qspec", k) {}
  std::optional<std::string> refusal(const data::TaskSpec& task, const ModelPair&) const override { return batch_refusal(task); }
  ModelPair prepare(const ModelPair& models) const override {
    ModelPair out = models;
    out.draft = std::make_shared<const runtime::LlamaModel>(quantize_int8(*models.target));
    out.draft_key = models.target_key;
    return out;
  }
};

}  // namespace

std::unique_ptr<Acceleration> make_speculative(const std::string& component) {
  // The range of K (1..16) is the component table's.
  if (const auto k = component_number(component, "spec")) return std::make_unique<SpeculativeDecoding>(*k);
  if (const auto k = component_number(component, "qspec")) return std::make_unique<SelfSpeculativeDecoding>(*k);
  return nullptr;
}

}  // namespace eesched::accel
