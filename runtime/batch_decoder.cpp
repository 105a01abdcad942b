#include "runtime/batch_decoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "runtime/error.h"
#include "runtime/gemv.h"
#include "runtime/model.h"

namespace eesched::runtime {
namespace {

static_assert(BatchDecoder::kMaxBatch == kFewRows, "batch invariance holds up to kFewRows rows (runtime/gemv.h)");

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

BatchDecoder::BatchDecoder(const LlamaModel& model, BatchDecoderOptions options) : model_(model), options_(options) {
  if (options_.max_batch < 1 || options_.max_batch > kMaxBatch)
    throw Error("batch decoder: max_batch must be 1.." + std::to_string(kMaxBatch) + " (got " + std::to_string(options_.max_batch) + ")");
  if (options_.prefill_chunk < 1) throw Error("batch decoder: prefill_chunk must be at least 1");
  options_.context = std::min(options_.context, model_.config().max_position_embeddings);
  if (options_.context < 2) throw Error("batch decoder: context must be at least 2 positions");
  options_.prefill_budget = std::max(options_.prefill_budget, options_.prefill_chunk);
  cache_ = std::make_unique<KVCache>(model_.config(), options_.max_batch, options_.context);
  slot_used_.assign(static_cast<std::size_t>(options_.max_batch), false);
}

BatchDecoder::~BatchDecoder() = default;

int64_t BatchDecoder::cache_bytes() const { return cache_->bytes(); }

std::string BatchDecoder::refusal(const BatchRequest& r) const {
  const auto& config = model_.config();
  if (r.prompt.empty()) return "empty prompt";
  for (const auto id : r.prompt)
    if (id < 0 || id >= config.vocab_size)
      return "token id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(config.vocab_size);
  if (r.generation.max_new_tokens < 1) return "max_new_tokens must be at least 1";
  if (r.rng_skip < 0) return "a negative RNG skip";
  try {
    validate(r.generation);
  } catch (const std::exception& e) {
    return e.what();
  }
  // The last sampled token is never fed back: prompt + max_new_tokens - 1 positions.
  const int64_t positions = static_cast<int64_t>(r.prompt.size()) + r.generation.max_new_tokens - 1;
  if (positions > options_.context)
    return "a prompt of " + std::to_string(r.prompt.size()) + " tokens plus " + std::to_string(r.generation.max_new_tokens) +
           " new tokens exceeds the batch context of " + std::to_string(options_.context) + " positions";
  return "";
}

int64_t BatchDecoder::admit(BatchRequest request) {
  if (!has_free_slot()) throw Error("batch decoder: no free slot");
  if (auto why = refusal(request); !why.empty()) throw Error("batch decoder: " + why);
  auto s = std::make_unique<Sequence>();
  s->id = next_id_++;
  s->slot = std::find(slot_used_.begin(), slot_used_.end(), false) - slot_used_.begin();
  slot_used_[static_cast<std::size_t>(s->slot)] = true;
  cache_->set_length(s->slot, 0);
  // Seeded as generate() seeds a single prompt (row 0), so a sequence samples what it would alone.
  std::seed_seq seq{request.generation.seed, uint64_t{0}};
  s->rng.seed(seq);
  s->rng.discard(static_cast<unsigned long long>(request.rng_skip));
  s->request = std::move(request);
  s->result.tokens.resize(1);
  s->result.finish_reason.assign(1, "length");
  s->admitted = s->last_token = Clock::now();
  const int64_t id = s->id;
  sequences_.push_back(std::move(s));
  return id;
}

bool BatchDecoder::remove(int64_t id) {
  const auto it = std::find_if(sequences_.begin(), sequences_.end(), [&](const auto& s) { return s->id == id; });
  if (it == sequences_.end()) return false;
  slot_used_[static_cast<std::size_t>((*it)->slot)] = false;
  sequences_.erase(it);
  return true;
}

bool BatchDecoder::take_token(Sequence& s, const float* logits, SequenceUpdate& update) {
  const auto& gen = s.request.generation;
  const int64_t token = sample(logits, model_.config().vocab_size, gen, s.rng);
  const auto now = Clock::now();
  auto& out = s.result.tokens[0];
  // As generate(): a step's time runs from one sampled token to the next.
  if (out.empty()) s.result.ttft_ms = ms_between(s.admitted, now);
  else s.result.step_ms.push_back(ms_between(s.last_token, now));
  s.last_token = now;
  s.has_pending = false;
  if (std::find(gen.stop_ids.begin(), gen.stop_ids.end(), token) != gen.stop_ids.end()) {
    s.result.finish_reason[0] = "stop";
    return true;
  }
  out.push_back(token);
  update.new_tokens.push_back(token);
  if (static_cast<int64_t>(out.size()) >= gen.max_new_tokens) return true;  // "length"
  if (s.request.time_limit_ms > 0 && ms_between(s.admitted, now) > s.request.time_limit_ms) {
    s.result.finish_reason[0] = "timeout";
    return true;
  }
  s.pending = token;
  s.has_pending = true;
  return false;
}

// Ends the sequences whose update says so: their results move into the updates, their slots free.
void BatchDecoder::retire(std::vector<SequenceUpdate>& updates) {
  for (auto& u : updates) {
    if (!u.finished) continue;
    const auto it = std::find_if(sequences_.begin(), sequences_.end(), [&](const auto& s) { return s->id == u.id; });
    (*it)->result.total_ms = ms_between((*it)->admitted, Clock::now());
    u.result = std::move((*it)->result);
    remove(u.id);
  }
}

std::vector<SequenceUpdate> BatchDecoder::prefill() {
  c10::InferenceMode inference;
  std::vector<SequenceUpdate> updates;
  // Whole chunks at fixed offsets of each prompt, oldest newcomer first, while they fit the
  // budget (the first always runs): a newcomer's first token waits for no later one's prefill.
  int64_t budget = options_.prefill_budget;
  bool full = false;
  for (auto it = sequences_.begin(); it != sequences_.end() && !full; ++it) {
    Sequence& s = **it;
    const auto prompt_len = static_cast<int64_t>(s.request.prompt.size());
    while (s.prefilled < prompt_len) {
      const int64_t n = std::min(options_.prefill_chunk, prompt_len - s.prefilled);
      if (n > budget && budget < options_.prefill_budget) {
        full = true;
        break;
      }
      const auto first = s.request.prompt.begin() + s.prefilled;
      const auto ids = at::tensor(std::vector<int64_t>(first, first + n), at::kLong).view({1, n});
      const auto logits = model_.forward(ids, {n}, *cache_, {s.slot}, LogitsAt::Last).contiguous();
      s.prefilled += n;
      budget = std::max<int64_t>(0, budget - n);
      if (s.prefilled == prompt_len) {
        SequenceUpdate u{s.id, {}, false, {}};
        u.finished = take_token(s, logits.data_ptr<float>(), u);
        updates.push_back(std::move(u));
      }
    }
  }
  retire(updates);
  return updates;
}

std::vector<SequenceUpdate> BatchDecoder::decode() {
  c10::InferenceMode inference;
  std::vector<SequenceUpdate> updates;
  // Every sequence with a sampled token to feed, in admission order.
  std::vector<Sequence*> rows;
  for (auto& sp : sequences_)
    if (sp->has_pending) rows.push_back(sp.get());
  if (rows.empty()) return updates;
  const auto B = static_cast<int64_t>(rows.size());
  std::vector<int64_t> next, slots;
  for (auto* s : rows) next.push_back(s->pending), slots.push_back(s->slot);
  const auto logits =
      model_.forward(at::tensor(next, at::kLong).view({B, 1}), std::vector<int64_t>(rows.size(), 1), *cache_, slots, LogitsAt::Last)
          .contiguous();
  const float* data = logits.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = *rows[static_cast<std::size_t>(b)];
    SequenceUpdate u{s.id, {}, false, {}};
    u.finished = take_token(s, data + b * model_.config().vocab_size, u);
    updates.push_back(std::move(u));
  }
  retire(updates);
  return updates;
}

}  // namespace eesched::runtime
