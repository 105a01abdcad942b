#include "node/token_stream.h"

#include <utility>

namespace eesched::node {

TokenStream::TokenStream(int64_t task_id, int64_t attempt, std::size_t rows, Send send, std::chrono::microseconds min_interval)
    : sent_(rows, 0), send_(std::move(send)), min_interval_(min_interval) {
  next_.task_id = task_id;
  next_.attempt = attempt;
  next_.tokens.resize(rows);
}

void TokenStream::add(const std::vector<std::vector<int64_t>>& step) {
  if (step.size() > next_.tokens.size()) {  // never for a well-formed run; keeps every row anyway
    next_.tokens.resize(step.size());
    sent_.resize(step.size(), 0);
  }
  for (std::size_t r = 0; r < step.size(); ++r) next_.tokens[r].insert(next_.tokens[r].end(), step[r].begin(), step[r].end());
  if (!last_sent_ || Clock::now() - *last_sent_ >= min_interval_) flush();
}

void TokenStream::flush() {
  bool any = false;
  for (const auto& row : next_.tokens) any = any || !row.empty();
  if (!any) return;
  next_.offsets = sent_;
  for (std::size_t r = 0; r < sent_.size(); ++r) sent_[r] += static_cast<int64_t>(next_.tokens[r].size());
  last_sent_ = Clock::now();
  ++messages_;
  if (send_) send_(next_);
  for (auto& row : next_.tokens) row.clear();
}

}  // namespace eesched::node
