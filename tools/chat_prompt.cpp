#include "tools/chat_prompt.h"

#include <CLI/CLI.hpp>

namespace eesched::tools {

void add_chat_options(CLI::App* cmd, ChatOptions& o) {
  cmd->add_option("--chat", o.chat, "a user turn, rendered with the tokenizer's chat template (instead of --prompt)");
  cmd->add_option("--system", o.system, "with --chat: a system turn before it");
  cmd->add_option("--chat-template", o.family, "with --chat: the template family instead of detecting it (llama3, chatml, llama2, mistral, plain)");
}

runtime::ChatPrompt chat_prompt(const runtime::Tokenizer& tokenizer, const ChatOptions& o) {
  std::vector<runtime::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.chat});
  return runtime::render_chat_prompt(tokenizer, messages, o.family);
}

}  // namespace eesched::tools
