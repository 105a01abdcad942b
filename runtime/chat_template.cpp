#include "runtime/chat_template.h"

#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

using json = nlohmann::json;

const char* kSupported = "supported chat template families: llama3, chatml (Qwen), llama2, mistral (Nemo)";

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

// Qwen3's template without tools (thinking), Qwen2.5's (a default system turn) and plain ChatML.
std::string render_chatml(const std::vector<ChatMessage>& m, bool gen, const std::string& default_system, bool thinking) {
  std::string out;
  if (!m.empty() && m[0].role == "system") out += "<|im_start|>system\n" + m[0].content + "<|im_end|>\n";
  else if (!default_system.empty()) out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
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
    } else if (role == "assistant" && !thinking) {
      out += "<|im_start|>assistant\n" + m[i].content + "<|im_end|>\n";
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

// Hugging Face's Llama 2 template (LlamaTokenizer's default; add_generation_prompt does not change it).
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
    // Appends, not operator+ chains: GCC 12 warns (-Wrestrict, a false positive) on `" " + string`.
    if (m[i].role == "user") out.append(bos).append("[INST] ").append(py_strip(content)).append(" [/INST]");
    else if (m[i].role == "system") out.append("<<SYS>>\n").append(py_strip(content)).append("\n<</SYS>>\n\n");
    else if (m[i].role == "assistant") out.append(" ").append(py_strip(content)).append(" ").append(eos);
  }
  return out;
}

// Mistral Nemo's (Tekken) template without tools: BOS once, [INST]user[/INST]assistant</s>, the
// system message prepended to the user turn that ends the conversation (dropped otherwise).
std::string render_mistral(const std::vector<ChatMessage>& m, const std::string& bos, const std::string& eos) {
  if (m.empty()) throw Error("chat template: no messages");
  std::size_t first = 0;
  std::optional<std::string> system;
  if (m[0].role == "system") { system = m[0].content; first = 1; }
  std::size_t k = 0;
  for (std::size_t i = first; i < m.size(); ++i) {
    if (m[i].role == "tool" || m[i].role == "tool_results") continue;
    if ((m[i].role == "user") != (k++ % 2 == 0))
      throw Error("chat template: After the optional system message, conversation roles must alternate user/assistant/user/assistant/...");
  }
  std::string out = bos;
  for (std::size_t i = first; i < m.size(); ++i) {
    if (m[i].role == "user") {
      out += "[INST]" + (i + 1 == m.size() && system ? *system + "\n\n" : std::string()) + m[i].content + "[/INST]";
    } else if (m[i].role == "assistant") {
      out += m[i].content + eos;
    } else if (m[i].role == "tool" || m[i].role == "tool_results" || m[i].role == "tool_calls") {
      throw Error("chat template: Mistral tool messages need tool call ids, which a {role, content} message does not carry");
    } else {
      throw Error("chat template: Only user and assistant roles are supported, with the exception of an initial optional system message!");
    }
  }
  return out;
}

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// The text of a system turn a ChatML template writes as one literal, `<|im_start|>system\n...<|im_end|>`
// (Qwen2.5's default "You are Qwen, ..."); empty when it writes none (a turn built from the messages).
std::string chatml_default_system(const std::string& t) {
  const std::string open = "<|im_start|>system", close = "<|im_end|>";
  for (auto at = t.find(open); at != std::string::npos; at = t.find(open, at + 1)) {
    std::size_t from = at + open.size();
    if (t.compare(from, 2, "\\n") == 0) from += 2;
    else if (from < t.size() && t[from] == '\n') from += 1;
    else continue;
    const auto end = t.find(close, from);
    if (end == std::string::npos) continue;
    const std::string raw = t.substr(from, end - from);
    if (raw.empty() || raw.find_first_of("'\"+{}%") != std::string::npos) continue;
    std::string text;  // the literal's value: Jinja string escapes
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) {
        const char c = raw[++i];
        text += c == 'n' ? '\n' : c == 't' ? '\t' : c;
      } else {
        text += raw[i];
      }
    }
    return text;
  }
  return "";
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
    case ChatFamily::Mistral: return "mistral";
  }
  return "?";
}

ChatFamily chat_family_from_name(const std::string& name) {
  if (name == "llama3") return ChatFamily::Llama3;
  if (name == "chatml" || name == "qwen") return ChatFamily::ChatML;
  if (name == "llama2") return ChatFamily::Llama2;
  if (name == "mistral") return ChatFamily::Mistral;
  throw Error("unknown chat template '" + name + "'; " + kSupported);
}

std::optional<ChatFamily> detect_chat_family(const std::string& t) {
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFamily::Llama3;
  if (t.find("<|im_start|>") != std::string::npos) return ChatFamily::ChatML;
  if (!contains(t, "[INST]")) return std::nullopt;
  if (contains(t, "<<SYS>>")) return ChatFamily::Llama2;
  // Mistral's templates, told apart as llama.cpp does: Nemo's (Tekken) writes "[INST]" unspaced and
  // double-quoted. Mistral's other templates (v0.1, v0.3, v7's [SYSTEM_PROMPT]) space or mark their
  // turns otherwise; none is obtainable pinned to check a renderer against, so they are refused.
  if (contains(t, "\"[INST]\"") && !contains(t, " [INST]") && !contains(t, "[SYSTEM_PROMPT]")) return ChatFamily::Mistral;
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
  if (!family)
    throw Error(std::string("unrecognized chat template") +
                (contains(text, "[INST]") ? " (an [INST] template neither Llama 2's <<SYS>> one nor Mistral Nemo's)" : "") + "; " +
                kSupported);
  // Llama 3.0's base template appends the assistant header whatever add_generation_prompt says.
  const bool always = *family == ChatFamily::Llama3 && !text.empty() && text.find("add_generation_prompt") == std::string::npos;
  ChatTemplate t(*family, config_token(c, "bos_token"), config_token(c, "eos_token"), always);
  if (*family == ChatFamily::ChatML && !text.empty())
    t.with_default_system(chatml_default_system(text)).with_thinking(contains(text, "<think>"));
  return t;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  switch (family_) {
    case ChatFamily::Llama3: return render_llama3(messages, add_generation_prompt || always_generation_prompt_, bos_);
    case ChatFamily::ChatML: return render_chatml(messages, add_generation_prompt, default_system_, thinking_);
    case ChatFamily::Llama2: return render_llama2(messages, bos_, eos_);
    case ChatFamily::Mistral: return render_mistral(messages, bos_, eos_);
  }
  return "";
}

std::string ChatTemplate::end_of_turn() const {
  switch (family_) {
    case ChatFamily::Llama3: return "<|eot_id|>";
    case ChatFamily::ChatML: return "<|im_end|>";
    case ChatFamily::Llama2:
    case ChatFamily::Mistral: return eos_;
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
