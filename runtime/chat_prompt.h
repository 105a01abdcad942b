#pragma once
// A conversation as a prompt, on the client side (`eesched submit --chat`, the gateway): rendered
// with the tokenizer's chat template (chat_template.h) and encoded as Hugging Face's
// apply_chat_template(tokenize=True) does, with what ends the assistant's turn.
//
// A tokenizer without a chat template (a tokenizer.model, as the demo models of models/ have, or
// a tokenizer.json whose config has none) gets the plain format, documented in docs/gateway.md:
//   [System: <system>\n\n]User: <user>\n\nAssistant: <assistant>\n\nUser: <user>\n\nAssistant:
// encoded with BOS, ended by the stop string "User:" (the demo tokenizers turn newlines into
// spaces, so the stop string cannot rely on them).
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/chat_template.h"

namespace eesched::runtime {

class Tokenizer;

inline constexpr const char* kPlainChatFormat = "plain";

struct ChatPrompt {
  std::string format;                     // the template family's name, or "plain"
  std::string text;                       // the rendered conversation, ending with the assistant's header
  std::vector<int64_t> ids;               // plaintext ids
  std::vector<int64_t> stop_ids;          // the id that ends the assistant's turn, when the vocabulary has it
  std::vector<std::string> stop_strings;  // the plain format's turn marker
};

// `family` names the template family instead of detecting it ("plain" forces the plain format);
// empty: the tokenizer's template, else the plain format. A one-line error for an empty
// conversation or an unknown family.
ChatPrompt render_chat_prompt(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, const std::string& family);

}  // namespace eesched::runtime
