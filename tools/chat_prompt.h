#pragma once
// A chat turn as a prompt, on the client side: `--chat TEXT [--system TEXT]` rendered with the
// tokenizer directory's chat template (runtime/chat_template.h), encoded as Hugging Face's
// apply_chat_template(tokenize=True) does, with the template's end-of-turn token as a stop id.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tokenizer.h"

namespace CLI {
class App;
}

namespace eesched::tools {

struct ChatOptions {
  std::string chat;      // the user's turn; empty: no chat (the plain --prompt is used)
  std::string system;    // an optional system turn
  std::string family;    // --chat-template: the family instead of detecting it
};

// Adds --chat, --system and --chat-template to a subcommand.
void add_chat_options(CLI::App* cmd, ChatOptions& options);

struct ChatPrompt {
  std::string text;                   // the rendered conversation, ending with the assistant's header
  std::vector<int64_t> ids;           // plaintext ids
  std::optional<int64_t> end_of_turn; // the id that ends the assistant's turn, when the vocabulary has it
};

// Throws a one-line error when the tokenizer has no chat template (a tokenizer.model, or a
// tokenizer.json without tokenizer_config.json's template) and no family is named.
ChatPrompt chat_prompt(const runtime::Tokenizer& tokenizer, const ChatOptions& options);

}  // namespace eesched::tools
