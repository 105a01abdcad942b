#pragma once
// Decrypted ids in, text out, as a stream: what may be sent to the client so far, and where a
// stop string ends the answer. Text is released only when it is final:
//  - a token may end inside a multi-byte character (byte-level BPE): the decoded text then ends in
//    U+FFFD, which is held back until the next token completes it;
//  - text that could be the start of a stop string is held back until it is known not to be one
//    (as llama.cpp's server does), so a stop string is never sent, not even in part.
#include <cstdint>
#include <string>
#include <vector>

namespace eesched::runtime {
class Tokenizer;
}

namespace eesched::gateway {

class TextStream {
 public:
  TextStream(const runtime::Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  // Appends ids; returns the text that became final (possibly empty). After a stop string
  // matched, further ids are ignored.
  std::string push(const std::vector<int64_t>& ids);
  // The rest of the text at the end of the answer (what was held back), up to a stop string.
  std::string finish();

  bool stopped() const { return stopped_; }  // a stop string matched
  const std::vector<int64_t>& ids() const { return ids_; }
  const std::string& text() const { return sent_; }  // everything released so far

 private:
  std::string release(bool at_end);

  const runtime::Tokenizer& tokenizer_;
  std::vector<std::string> stops_;
  std::vector<int64_t> ids_;
  std::string sent_;
  bool stopped_ = false;
};

}  // namespace eesched::gateway
