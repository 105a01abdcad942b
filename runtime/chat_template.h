#pragma once
// Chat templates without a Jinja engine (as llama.cpp does): the family is detected from the text
// of tokenizer_config.json's `chat_template`, and each family has a hand-written renderer that
// produces exactly what Hugging Face's apply_chat_template (jinja2) renders for that template
// (checked against jinja2 in tests/data/chat_templates/). Plain C++: no LibTorch.
//   llama3  <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> (Llama 3 / 3.1 / 3.2)
//   chatml  <|im_start|>role\ncontent<|im_end|>\n, with Qwen3's <think> handling (Qwen)
//   llama2  <s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] assistant </s> (Llama 2 / TinyLlama chat)
#include <optional>
#include <string>
#include <vector>

namespace eesched::runtime {

struct ChatMessage {
  std::string role;  // system, user, assistant (chatml also: tool)
  std::string content;
};

enum class ChatFamily { Llama3, ChatML, Llama2 };

const char* chat_family_name(ChatFamily f);
// "llama3", "chatml" (or "qwen"), "llama2"; a one-line error naming the supported ones otherwise.
ChatFamily chat_family_from_name(const std::string& name);
// From the template's text; nullopt when no family's markers are in it.
std::optional<ChatFamily> detect_chat_family(const std::string& template_text);

class ChatTemplate {
 public:
  // From tokenizer_config.json's text: its chat_template, bos_token, eos_token. `family_override`
  // (a name as chat_family_from_name takes) is used when non-empty, e.g. for a config without a
  // template. An unknown or missing template is a one-line error naming the supported families.
  static ChatTemplate from_config(const std::string& tokenizer_config_json, const std::string& family_override = "");
  ChatTemplate(ChatFamily family, std::string bos_token, std::string eos_token, bool always_generation_prompt = false);

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  ChatFamily family() const { return family_; }
  // The token that ends an assistant turn (<|eot_id|>, <|im_end|>, </s>): a stop token.
  std::string end_of_turn() const;

 private:
  ChatFamily family_;
  std::string bos_, eos_;
  bool always_generation_prompt_;  // the Llama 3.0 base template adds the assistant header unasked
};

// [{"role": ..., "content": ...}, ...] as JSON text; a one-line error otherwise.
std::vector<ChatMessage> parse_chat_messages(const std::string& json_text);

}  // namespace eesched::runtime
