#include "tools/chat_prompt.h"

#include <CLI/CLI.hpp>

#include <stdexcept>

#include "runtime/chat_template.h"
#include "runtime/tokenizer_json.h"

namespace eesched::tools {

void add_chat_options(CLI::App* cmd, ChatOptions& o) {
  cmd->add_option("--chat", o.chat, "a user turn, rendered with the tokenizer's chat template (instead of --prompt)");
  cmd->add_option("--system", o.system, "with --chat: a system turn before it");
  cmd->add_option("--chat-template", o.family, "with --chat: the template family instead of detecting it (llama3, chatml, llama2, mistral)");
}

ChatPrompt chat_prompt(const runtime::Tokenizer& tokenizer, const ChatOptions& o) {
  if (!tokenizer.hf())
    throw std::runtime_error("--chat needs a tokenizer.json with its tokenizer_config.json (the chat template); this is a tokenizer.model");
  const auto tmpl = runtime::ChatTemplate::from_config(tokenizer.hf()->config_json(), o.family);
  std::vector<runtime::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.chat});
  ChatPrompt p;
  p.text = tmpl.render(messages, /*add_generation_prompt=*/true);
  // The template writes BOS itself where its family has one: no post-processor BOS on top.
  p.ids = tokenizer.encode(p.text, /*add_bos=*/false);
  p.end_of_turn = tokenizer.hf()->token_to_id(tmpl.end_of_turn());
  return p;
}

}  // namespace eesched::tools
