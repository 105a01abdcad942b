#pragma once
// A chat turn as a prompt, on the client side: `--chat TEXT [--system TEXT]` as options of a
// subcommand, rendered by runtime/chat_prompt.h.
#include <string>

#include "runtime/chat_prompt.h"
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

// The --chat turn (and --system) rendered and encoded (runtime/chat_prompt.h): the tokenizer's
// template, or the plain format for a tokenizer without one.
runtime::ChatPrompt chat_prompt(const runtime::Tokenizer& tokenizer, const ChatOptions& options);

}  // namespace eesched::tools
