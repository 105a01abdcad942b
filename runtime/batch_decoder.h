#pragma once
// Continuous batching: up to max_batch sequences decode together, one token each per step, over
// one KV cache with a slot per sequence; sequences join and leave between steps. A newcomer's
// prompt is prefilled in chunks of prefill_chunk tokens between decoding steps (at least one
// chunk, and more while they fit in prefill_budget tokens), so a long prompt delays the others
// by a chunk at a time, not by its whole prefill.
//
// Batch invariance: a sequence's tokens do not depend on what else runs. Prefill runs each
// sequence alone, cut at fixed multiples of prefill_chunk whatever the budget left; a decoding
// step's kernels treat rows independently (runtime/gemv.h: each row is its own dot products, in
// the same order at any batch up to kFewRows), attention and sampling are per row, and each
// sequence draws from its own RNG, seeded as generate() seeds a single prompt. So a sequence
// decoded in a batch gives bit for bit what it gives alone, and what generate() gives when its
// prompt fits one chunk (tests/test_batching.cpp). Why max_batch is capped at kFewRows: past it,
// f32 products go to BLAS, whose blocking depends on the batch.
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/generate.h"
#include "runtime/sampling.h"

namespace eesched::runtime {

class KVCache;
class LlamaModel;

struct BatchDecoderOptions {
  int64_t max_batch = 8;        // sequences in flight, 1..kMaxBatch
  int64_t context = 4096;       // positions per sequence (prompt + new tokens); capped at the model's
  int64_t prefill_chunk = 128;  // prompt tokens per prefill forward
  int64_t prefill_budget = 128; // prompt tokens per prefill(), over all newcomers (at least one chunk)
};

// One sequence, as a task gives it.
struct BatchRequest {
  std::vector<int64_t> prompt;
  GenerationParams generation;
  double time_limit_ms = 0;  // > 0: finish "timeout" after the step that crosses it
  int64_t rng_skip = 0;      // draws to discard from the sequence's RNG first (GenerateOptions::rng_skip)
};

// What prefill() or decode() did to a sequence: the token it produced (none or one), and whether it ended.
struct SequenceUpdate {
  int64_t id = 0;
  std::vector<int64_t> new_tokens;
  bool finished = false;
  GenerateResult result;  // when finished: the whole answer, one row, timed from admission
};

class BatchDecoder {
 public:
  static constexpr int64_t kMaxBatch = 16;  // == kFewRows (runtime/gemv.h)

  // The model must outlive the decoder. Allocates the cache: max_batch x context positions.
  BatchDecoder(const LlamaModel& model, BatchDecoderOptions options);
  ~BatchDecoder();
  BatchDecoder(const BatchDecoder&) = delete;
  BatchDecoder& operator=(const BatchDecoder&) = delete;

  const BatchDecoderOptions& options() const { return options_; }
  // Sequences in flight (prefilling or decoding).
  int64_t active() const { return static_cast<int64_t>(sequences_.size()); }
  bool has_free_slot() const { return active() < options_.max_batch; }
  // Why `request` could never run here (empty prompt, ids outside the vocabulary, longer than
  // the context, bad sampling parameters), or empty when it can.
  std::string refusal(const BatchRequest& request) const;

  // Takes a free slot for the request (has_free_slot() must hold; refusal() must be empty, else
  // runtime::Error). Returns the sequence's id; it starts prefilling at the next prefill().
  int64_t admit(BatchRequest request);
  // Ends the sequence now (no result); false when it is not here.
  bool remove(int64_t id);

  // An iteration is prefill() then decode(), each returning an update per sequence that produced
  // a token (one at most) or ended; an ended sequence has left (its slot is free). Each does
  // nothing when it has nothing to do. Two calls, so a newcomer's first token can go out as soon
  // as its prefill ends, not after the others' step.
  //
  // Prefill chunks of the newcomers (oldest first, at most prefill_budget tokens); one that
  // completes its prompt samples its first token.
  std::vector<SequenceUpdate> prefill();
  // One decoding step of every sequence with a sampled token to feed.
  std::vector<SequenceUpdate> decode();

  // Bytes held by the KV cache.
  int64_t cache_bytes() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Sequence {
    int64_t id = 0, slot = 0;
    BatchRequest request;
    int64_t prefilled = 0;     // prompt tokens in the cache
    bool has_pending = false;  // a sampled token not yet fed to the model
    int64_t pending = 0;
    std::mt19937_64 rng;
    GenerateResult result;
    Clock::time_point admitted, last_token;
  };
  // Samples the sequence's next token from its logits row; true when the sequence ended.
  bool take_token(Sequence& s, const float* logits, SequenceUpdate& update);
  void retire(std::vector<SequenceUpdate>& updates);

  const LlamaModel& model_;
  BatchDecoderOptions options_;
  std::unique_ptr<KVCache> cache_;
  std::vector<std::unique_ptr<Sequence>> sequences_;  // in admission order
  std::vector<bool> slot_used_;
  int64_t next_id_ = 1;
};

}  // namespace eesched::runtime
