#include "runtime/chat_prompt.h"

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_json.h"

namespace eesched::runtime {
namespace {

bool has_chat_template(const Tokenizer& tokenizer) {
  if (!tokenizer.hf() || tokenizer.hf()->config_json().empty()) return false;
  const auto config = nlohmann::json::parse(tokenizer.hf()->config_json(), nullptr, /*allow_exceptions=*/false);
  return config.is_object() && config.contains("chat_template") && !config["chat_template"].is_null();
}

ChatPrompt render_plain(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages) {
  ChatPrompt p;
  p.format = kPlainChatFormat;
  for (const auto& m : messages) {
    if (m.role == "system") p.text += "System: " + m.content + "\n\n";
    else if (m.role == "user") p.text += "User: " + m.content + "\n\n";
    else if (m.role == "assistant") p.text += "Assistant: " + m.content + "\n\n";
    else throw Error("chat: the plain format has no role '" + m.role + "' (system, user, assistant)");
  }
  p.text += "Assistant:";
  p.ids = tokenizer.encode(p.text, /*add_bos=*/true);
  p.stop_strings = {"User:"};
  return p;
}

}  // namespace

ChatPrompt render_chat_prompt(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, const std::string& family) {
  if (messages.empty()) throw Error("chat: the conversation has no message");
  if (family == kPlainChatFormat || (family.empty() && !has_chat_template(tokenizer))) return render_plain(tokenizer, messages);
  if (!tokenizer.hf())
    throw Error("chat: the " + family + " template needs a tokenizer.json; this is a tokenizer.model (use the plain format)");
  const auto tmpl = ChatTemplate::from_config(tokenizer.hf()->config_json(), family);
  ChatPrompt p;
  p.format = chat_family_name(tmpl.family());
  p.text = tmpl.render(messages, /*add_generation_prompt=*/true);
  // The template writes BOS itself where its family has one: no post-processor BOS on top.
  p.ids = tokenizer.encode(p.text, /*add_bos=*/false);
  if (const auto eot = tokenizer.hf()->token_to_id(tmpl.end_of_turn())) p.stop_ids.push_back(*eot);
  return p;
}

}  // namespace eesched::runtime
