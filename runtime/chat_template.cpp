#include "runtime/chat_template.h"

#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

using json = nlohmann::json;

const char* kSupported = "supported chat template families: llama3, chatml (Qwen), llama2";

bool py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// The code points of s with their byte offsets.
std::vector<std::pair<std::size_t, uint32_t>> cps(const std::string& s) {
  std::vector<std::pair<std::size_t, uint32_t>> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - i);
    uint32_t cp = n == 1 ? b : (b & (0xFF >> (n + 1)));
    for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.emplace_back(i, cp);
    i += n;
  }
  return out;
}

// Python's str.strip() / lstrip() / rstrip() without arguments (Unicode whitespace).
std::string py_strip(const std::string& s, bool left = true, bool right = true) {
  const auto c = cps(s);
  std::size_t b = 0, e = c.size();
  if (left) while (b < e && py_space(c[b].second)) ++b;
  if (right) while (e > b && py_space(c[e - 1].second)) --e;
  const std::size_t from = b < c.size() ? c[b].first : s.size();
  const std::size_t to = e < c.size() ? c[e].first : s.size();
  return s.substr(from, to - from);
}

std::string strip_char(const std::string& s, char ch, bool left, bool right) {
  std::size_t b = 0, e = s.size();
  if (left) while (b < e && s[b] == ch) ++b;
  if (right) while (e > b && s[e - 1] == ch) --e;
  return s.substr(b, e - b);
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::string render_llama3(const std::vector<ChatMessage>& m, bool gen, const std::string& bos) {
  std::string out;
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + m[i].role + "<|end_header_id|>\n\n" + py_strip(m[i].content) + "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Qwen3's template without tools.
std::string render_chatml(const std::vector<ChatMessage>& m, bool gen) {
  std::string out;
  if (!m.empty() && m[0].role == "system") out += "<|im_start|>system\n" + m[0].content + "<|im_end|>\n";
  bool multi_step_tool = true;
  long last_query = static_cast<long>(m.size()) - 1;
  for (long i = static_cast<long>(m.size()) - 1; i >= 0; --i) {
    const auto& c = m[static_cast<std::size_t>(i)].content;
    if (multi_step_tool && m[static_cast<std::size_t>(i)].role == "user" &&
        !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
      multi_step_tool = false;
      last_query = i;
    }
  }
  for (std::size_t i = 0; i < m.size(); ++i) {
    const auto& role = m[i].role;
    if (role == "user" || (role == "system" && i != 0)) {
      out += "<|im_start|>" + role + "\n" + m[i].content + "<|im_end|>\n";
    } else if (role == "assistant") {
      std::string content = m[i].content, reasoning;
      if (const auto close = content.rfind("</think>"); close != std::string::npos) {
        const std::string original = content;
        content = strip_char(original.substr(close + 8), '\n', true, false);
        std::string before = strip_char(original.substr(0, original.find("</think>")), '\n', false, true);
        const auto open = before.rfind("<think>");
        if (open != std::string::npos) before = before.substr(open + 7);
        reasoning = strip_char(before, '\n', true, false);
      }
      if (static_cast<long>(i) > last_query && (i + 1 == m.size() || !reasoning.empty()))
        out += "<|im_start|>assistant\n<think>\n" + strip_char(reasoning, '\n', true, true) + "\n</think>\n\n" +
               strip_char(content, '\n', true, false);
      else
        out += "<|im_start|>assistant\n" + content;
      out += "<|im_end|>\n";
    } else if (role == "tool") {
      if (i == 0 || m[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m[i].content + "\n</tool_response>";
      if (i + 1 == m.size() || m[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// Hugging Face's Llama-2-chat template (add_generation_prompt does not change it).
std::string render_llama2(const std::vector<ChatMessage>& m, const std::string& bos, const std::string& eos) {
  std::size_t first = 0;
  std::optional<std::string> system;
  if (!m.empty() && m[0].role == "system") { system = m[0].content; first = 1; }
  std::string out;
  for (std::size_t i = first; i < m.size(); ++i) {
    const std::size_t k = i - first;
    if ((m[i].role == "user") != (k % 2 == 0))
      throw Error("chat template: Conversation roles must alternate user/assistant/user/assistant/...");
    std::string content = m[i].content;
    if (k == 0 && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
    if (m[i].role == "user") out += bos + "[INST] " + py_strip(content) + " [/INST]";
    else if (m[i].role == "assistant") out += " " + py_strip(content) + " " + eos;
  }
  return out;
}

std::string config_token(const json& c, const char* key) {
  if (!c.contains(key)) return "";
  const auto& v = c.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return "";
}

}  // namespace

const char* chat_family_name(ChatFamily f) {
  switch (f) {
    case ChatFamily::Llama3: return "llama3";
    case ChatFamily::ChatML: return "chatml";
    case ChatFamily::Llama2: return "llama2";
  }
  return "?";
}

ChatFamily chat_family_from_name(const std::string& name) {
  if (name == "llama3") return ChatFamily::Llama3;
  if (name == "chatml" || name == "qwen") return ChatFamily::ChatML;
  if (name == "llama2") return ChatFamily::Llama2;
  throw Error("unknown chat template '" + name + "'; " + kSupported);
}

std::optional<ChatFamily> detect_chat_family(const std::string& t) {
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFamily::Llama3;
  if (t.find("<|im_start|>") != std::string::npos) return ChatFamily::ChatML;
  if (t.find("[INST]") != std::string::npos) return ChatFamily::Llama2;
  return std::nullopt;
}

ChatTemplate::ChatTemplate(ChatFamily family, std::string bos, std::string eos, bool always_generation_prompt)
    : family_(family), bos_(std::move(bos)), eos_(std::move(eos)), always_generation_prompt_(always_generation_prompt) {}

ChatTemplate ChatTemplate::from_config(const std::string& config_text, const std::string& family_override) {
  json c;
  try {
    c = json::parse(config_text.empty() ? "{}" : config_text);
  } catch (const json::exception& e) {
    throw Error(std::string("tokenizer_config.json is not valid JSON: ") + e.what());
  }
  std::string text;
  if (c.contains("chat_template") && c.at("chat_template").is_string()) text = c.at("chat_template").get<std::string>();
  std::optional<ChatFamily> family;
  if (!family_override.empty()) family = chat_family_from_name(family_override);
  else if (text.empty()) throw Error(std::string("the tokenizer config has no chat_template (give --chat-template); ") + kSupported);
  else family = detect_chat_family(text);
  if (!family) throw Error(std::string("unrecognized chat template; ") + kSupported);
  // Llama 3.0's base template appends the assistant header whatever add_generation_prompt says.
  const bool always = *family == ChatFamily::Llama3 && !text.empty() && text.find("add_generation_prompt") == std::string::npos;
  return ChatTemplate(*family, config_token(c, "bos_token"), config_token(c, "eos_token"), always);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  switch (family_) {
    case ChatFamily::Llama3: return render_llama3(messages, add_generation_prompt || always_generation_prompt_, bos_);
    case ChatFamily::ChatML: return render_chatml(messages, add_generation_prompt);
    case ChatFamily::Llama2: return render_llama2(messages, bos_, eos_);
  }
  return "";
}

std::string ChatTemplate::end_of_turn() const {
  switch (family_) {
    case ChatFamily::Llama3: return "<|eot_id|>";
    case ChatFamily::ChatML: return "<|im_end|>";
    case ChatFamily::Llama2: return eos_;
  }
  return "";
}

std::vector<ChatMessage> parse_chat_messages(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(std::string("chat: not valid JSON: ") + e.what());
  }
  if (!j.is_array()) throw Error("chat: expected a JSON array of {\"role\", \"content\"} objects");
  std::vector<ChatMessage> out;
  for (const auto& m : j) {
    if (!m.is_object() || !m.contains("role") || !m.at("role").is_string() || !m.contains("content") ||
        !m.at("content").is_string())
      throw Error("chat: every message needs string \"role\" and \"content\": " + m.dump());
    out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  }
  return out;
}

}  // namespace eesched::runtime
