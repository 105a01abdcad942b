#pragma once
// Chat templates without a Jinja engine (as llama.cpp does): the family is detected from the text
// of tokenizer_config.json's `chat_template`, and each family has a hand-written renderer that
// produces exactly what Hugging Face's apply_chat_template (jinja2) renders for that template
// (checked against jinja2 in tests/data/chat_templates/). Plain C++: no LibTorch.
//   llama3  <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> (Llama 3 / 3.1 / 3.2)
//   chatml  <|im_start|>role\ncontent<|im_end|>\n (Qwen): Qwen3's <think> handling when the template
//           has it; a default system turn when the template writes one (Qwen2.5's "You are Qwen, ...")
//   llama2  <s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] assistant </s> (Llama 2 chat)
//   mistral <s>[INST]user[/INST]assistant</s>[INST]system\n\nlast user[/INST] (Mistral Nemo / Tekken:
//           no <<SYS>>, the system message prepended to the last user turn, contents unstripped)
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace eesched::runtime {

struct ChatMessage {
  std::string role;  // system, user, assistant (chatml also: tool)
  std::string content;
};

enum class ChatFamily { Llama3, ChatML, Llama2, Mistral };

const char* chat_family_name(ChatFamily f);
// "llama3", "chatml" (or "qwen"), "llama2", "mistral"; a one-line error naming the supported ones otherwise.
ChatFamily chat_family_from_name(const std::string& name);
// From the template's text, as llama.cpp does; nullopt when no supported family's markers are in it
// (an [INST] template needs Llama 2's <<SYS>> or Mistral Nemo's unspaced, double-quoted "[INST]";
// Mistral's other templates — v0.1, v0.3, v7's [SYSTEM_PROMPT] — are not supported).
std::optional<ChatFamily> detect_chat_family(const std::string& template_text);

class ChatTemplate {
 public:
  // From tokenizer_config.json's text: its chat_template, bos_token, eos_token. `family_override`
  // (a name as chat_family_from_name takes) is used when non-empty, e.g. for a config without a
  // template. An unknown or missing template is a one-line error naming the supported families.
  static ChatTemplate from_config(const std::string& tokenizer_config_json, const std::string& family_override = "");
  ChatTemplate(ChatFamily family, std::string bos_token, std::string eos_token, bool always_generation_prompt = false);

  // ChatML only: the system turn written when the conversation has none (Qwen2.5's template; empty:
  // none, as Qwen3's), and whether assistant turns get Qwen3's <think> handling.
  ChatTemplate& with_default_system(std::string text) { default_system_ = std::move(text); return *this; }
  ChatTemplate& with_thinking(bool on) { thinking_ = on; return *this; }
  const std::string& default_system() const { return default_system_; }

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  ChatFamily family() const { return family_; }
  // The token that ends an assistant turn (<|eot_id|>, <|im_end|>, the config's EOS): a stop token.
  std::string end_of_turn() const;

 private:
  ChatFamily family_;
  std::string bos_, eos_;
  bool always_generation_prompt_;  // the Llama 3.0 base template adds the assistant header unasked
  std::string default_system_;     // chatml
  bool thinking_ = true;           // chatml
};

// [{"role": ..., "content": ...}, ...] as JSON text; a one-line error otherwise.
std::vector<ChatMessage> parse_chat_messages(const std::string& json_text);

}  // namespace eesched::runtime
