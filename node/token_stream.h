#pragma once
// A running task's tokens, batched into Tokens messages for the coordinator: each decoding step's
// new ids are added as they come; a message goes out at once for the first step (the time to
// first token is what a streaming client feels), then at most one per min_interval, so a tiny
// model that decodes a step in a fraction of a millisecond does not send a frame per step. What
// is pending when the run ends is flushed before its Result.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "net/messages.h"

namespace eesched::node {

// At most one Tokens message per task per 5 ms: a few hundred frames a second at the most, far
// below what a person reads and what the coordinator relays easily, and still well under a
// typical decoding step of a real model (so those stream one message per step).
inline constexpr std::chrono::microseconds kTokensInterval{5000};

class TokenStream {
 public:
  using Send = std::function<void(const net::Tokens&)>;

  // `rows`: the task's batch. `send` gets each message (task_id, attempt, offsets, tokens).
  TokenStream(int64_t task_id, int64_t attempt, std::size_t rows, Send send,
              std::chrono::microseconds min_interval = kTokensInterval);

  // One decoding step's new ids per row (runtime::GenerateOptions::on_tokens). Sends what is
  // pending when the last message is at least min_interval old (or there was none): at most one
  // message per step.
  void add(const std::vector<std::vector<int64_t>>& step);
  // Sends what is pending, if anything (before the Result).
  void flush();

  int64_t messages() const { return messages_; }

 private:
  using Clock = std::chrono::steady_clock;
  net::Tokens next_;                     // offsets: ids sent per row; tokens: pending per row
  std::vector<int64_t> sent_;            // ids sent so far, per row
  Send send_;
  std::chrono::microseconds min_interval_;
  std::optional<Clock::time_point> last_sent_;
  int64_t messages_ = 0;
};

}  // namespace eesched::node
