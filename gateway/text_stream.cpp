#include "gateway/text_stream.h"

#include <algorithm>

#include "runtime/tokenizer.h"

namespace eesched::gateway {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD: an incomplete UTF-8 sequence decoded

// The length of the longest suffix of `text` that is a proper prefix of some stop string.
std::size_t partial_stop_length(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t best = 0;
  for (const auto& s : stops)
    for (std::size_t n = std::min(s.size() - 1, text.size()); n > best; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        best = n;
        break;
      }
  return best;
}

}  // namespace

TextStream::TextStream(const runtime::Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer), stops_(std::move(stop_strings)) {}

std::string TextStream::push(const std::vector<int64_t>& ids) {
  if (stopped_ || ids.empty()) return {};
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  return release(false);
}

std::string TextStream::finish() { return stopped_ ? std::string() : release(true); }

std::string TextStream::release(bool at_end) {
  // Decoding the whole answer each time keeps every tokenizer's rules (SentencePiece's leading
  // space, byte fallback, BPE merges across tokens) exactly as a one-shot decode applies them.
  std::string full = tokenizer_.decode(ids_);
  // What was sent stays sent; a decoder that rewrote earlier text (none known) would only lose
  // the rewrite.
  if (full.compare(0, sent_.size(), sent_) != 0) full = sent_ + (full.size() > sent_.size() ? full.substr(sent_.size()) : "");
  std::size_t end = full.size();
  // A stop string anywhere in the unsent text, or straddling the boundary with what was sent.
  std::size_t search_from = sent_.size();
  for (const auto& s : stops_) search_from = std::min(search_from, sent_.size() - std::min(sent_.size(), s.size() - 1));
  std::size_t stop_at = std::string::npos;
  for (const auto& s : stops_) {
    const auto p = full.find(s, search_from);
    if (p != std::string::npos) stop_at = std::min(stop_at, p);
  }
  if (stop_at != std::string::npos) {
    stopped_ = true;
    end = std::max(stop_at, sent_.size());
  } else if (!at_end) {
    if (full.size() >= kReplacement.size() && full.compare(full.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
      end -= kReplacement.size();
    end -= partial_stop_length(full.substr(0, end), stops_);
  }
  if (end <= sent_.size()) return {};
  std::string out = full.substr(sent_.size(), end - sent_.size());
  sent_ += out;
  return out;
}

}  // namespace eesched::gateway
