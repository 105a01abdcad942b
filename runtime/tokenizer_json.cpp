#include "runtime/tokenizer_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "runtime/error.h"

namespace eesched::runtime {
namespace {

using json = nlohmann::json;

// ---- UTF-8 -----------------------------------------------------------------------------------

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Length of the UTF-8 sequence starting at s[i] (1 for a stray byte).
std::size_t utf8_len(const std::string& s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1;
  return std::min(n, s.size() - i);
}

uint32_t decode_cp(const std::string& s, std::size_t i, std::size_t n) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (n == 1) return b;
  uint32_t cp = b & (0xFF >> (n + 1));
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto n = utf8_len(s, i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Bytes to text as the WHATWG TextDecoder (fatal: false) does: each maximal invalid subpart
// becomes one U+FFFD.
std::string decode_utf8_lossy(const std::string& in) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  std::string out;
  std::size_t i = 0;
  const std::size_t n = in.size();
  while (i < n) {
    const auto b = static_cast<unsigned char>(in[i]);
    if (b < 0x80) { out += static_cast<char>(b); ++i; continue; }
    int need = 0;
    unsigned lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) { need = 2; if (b == 0xE0) lower = 0xA0; if (b == 0xED) upper = 0x9F; }
    else if (b >= 0xF0 && b <= 0xF4) { need = 3; if (b == 0xF0) lower = 0x90; if (b == 0xF4) upper = 0x8F; }
    else { out += kReplacement; ++i; continue; }
    std::size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n) { ok = false; break; }
      const auto c = static_cast<unsigned char>(in[j]);
      if (c < lower || c > upper) { ok = false; break; }
      lower = 0x80; upper = 0xBF;
    }
    if (ok) { out.append(in, i, j - i); i = j; }
    else { out += kReplacement; i = j; }  // the offending byte (if any) is read again
  }
  return out;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos);
  s = std::move(out);
}

// JavaScript's \s (the reference's regexes run there), spelled for PCRE2.
const char* kJsSpace = "\\t\\n\\x{0B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

// The pattern the reference compiles: its rewrites of Hugging Face's patterns for JavaScript,
// and \s with JavaScript's meaning (PCRE2's Unicode \s differs at U+0085 and U+FEFF).
std::string js_compatible(std::string p) {
  replace_all(p, "\\#", "#");
  replace_all(p, "\\&", "&");
  replace_all(p, "\\~", "~");
  replace_all(p, "(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))");
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') out += in_class ? std::string(kJsSpace) : "[" + std::string(kJsSpace) + "]";
      else if (e == 'S' && !in_class) out += "[^" + std::string(kJsSpace) + "]";
      else { out += c; out += e; }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) in_class = true;
    else if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    const std::string p = js_compatible(pattern);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                          &err, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error("tokenizer.json: cannot compile the regex " + pattern + ": " + reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is the fallback
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code_); }

  // [begin, end) of every non-overlapping match, left to right (empty matches step one character).
  std::vector<std::pair<std::size_t, std::size_t>> matches(const std::string& s) const {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    std::size_t start = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) { pcre2_match_data_free(md); throw Error("tokenizer: regex match failed (" + std::to_string(rc) + ")"); }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const std::size_t b = ov[0], e = ov[1];
      out.emplace_back(b, e);
      start = e > b ? e : (b < s.size() ? b + utf8_len(s, b) : s.size() + 1);
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

// GPT-2's byte <-> printable character map (the ByteLevel pre-tokenizer and decoder).
struct ByteMap {
  std::array<std::string, 256> to_char;
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    std::vector<int> bs;
    for (int b = 33; b <= 126; ++b) bs.push_back(b);
    for (int b = 161; b <= 172; ++b) bs.push_back(b);
    for (int b = 174; b <= 255; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    int extra = 0;
    for (int b = 0; b < 256; ++b)
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) { bs.push_back(b); cs.push_back(256 + extra++); }
    for (std::size_t i = 0; i < bs.size(); ++i) {
      to_char[bs[i]] = utf8(static_cast<uint32_t>(cs[i]));
      to_byte[static_cast<uint32_t>(cs[i])] = static_cast<uint8_t>(bs[i]);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

std::string byte_level(const std::string& s) {
  std::string out;
  for (unsigned char b : s) out += byte_map().to_char[b];
  return out;
}

std::string nfc(const std::string& s) {
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return s;
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err)) throw Error(std::string("tokenizer: ICU NFC unavailable: ") + u_errorName(err));
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(s);
  icu::UnicodeString out = n->normalize(in, err);
  if (U_FAILURE(err)) throw Error(std::string("tokenizer: NFC failed: ") + u_errorName(err));
  std::string r;
  out.toUTF8String(r);
  return r;
}

// The pattern of a Split / Replace: {"String": s} or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;
  static Pattern from(const json& j) {
    Pattern p;
    if (j.contains("Regex")) p.regex = std::make_shared<Regex>(j.at("Regex").get<std::string>());
    else if (j.contains("String")) p.literal = j.at("String").get<std::string>();
    else throw Error("tokenizer.json: unknown pattern " + j.dump());
    return p;
  }
  std::string replace(const std::string& s, const std::string& content) const {
    if (!regex) { std::string r = s; replace_all(r, literal, content); return r; }
    std::string out;
    std::size_t pos = 0;
    for (auto [b, e] : regex->matches(s)) { out.append(s, pos, b - pos); out += content; pos = e; }
    out.append(s, pos);
    return out;
  }
  std::vector<std::pair<std::size_t, std::size_t>> matches(const std::string& s) const {
    if (regex) return regex->matches(s);
    std::vector<std::pair<std::size_t, std::size_t>> out;
    if (literal.empty()) return out;
    for (std::size_t pos = 0, hit; (hit = s.find(literal, pos)) != std::string::npos; pos = hit + literal.size())
      out.emplace_back(hit, hit + literal.size());
    return out;
  }
};

using Normalizer = std::function<std::string(const std::string&)>;
using PreTokenizer = std::function<std::vector<std::string>(const std::vector<std::string>&)>;
using Decoder = std::function<std::vector<std::string>(const std::vector<std::string>&)>;

Normalizer make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  const auto type = j.at("type").get<std::string>();
  if (type == "NFC") return [](const std::string& s) { return nfc(s); };
  if (type == "Prepend") {
    auto prefix = j.at("prepend").get<std::string>();
    return [prefix](const std::string& s) { return prefix + s; };
  }
  if (type == "Replace") {
    auto pattern = Pattern::from(j.at("pattern"));
    auto content = j.at("content").get<std::string>();
    return [pattern, content](const std::string& s) { return pattern.replace(s, content); };
  }
  if (type == "Sequence") {
    std::vector<Normalizer> steps;
    for (const auto& n : j.at("normalizers")) if (auto f = make_normalizer(n)) steps.push_back(f);
    return [steps](const std::string& s) {
      std::string r = s;
      for (const auto& f : steps) r = f(r);
      return r;
    };
  }
  throw Error("tokenizer.json: normalizer " + type + " is not supported (NFC, Prepend, Replace, Sequence are)");
}

const char* kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

PreTokenizer make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  const auto type = j.at("type").get<std::string>();
  if (type == "Split") {
    auto pattern = Pattern::from(j.at("pattern"));
    const bool invert = j.value("invert", false);
    std::string behavior = j.value("behavior", std::string("Isolated"));
    std::transform(behavior.begin(), behavior.end(), behavior.begin(), ::tolower);
    if (!invert && behavior != "isolated" && behavior != "removed")
      throw Error("tokenizer.json: Split behavior " + behavior + " is not supported (Isolated, Removed are)");
    return [pattern, invert, behavior](const std::vector<std::string>& in) {
      std::vector<std::string> out;
      for (const auto& s : in) {
        std::size_t pos = 0;
        for (auto [b, e] : pattern.matches(s)) {
          if (invert) { out.push_back(s.substr(b, e - b)); continue; }
          if (b > pos) out.push_back(s.substr(pos, b - pos));
          if (behavior == "isolated" && e > b) out.push_back(s.substr(b, e - b));
          pos = e;
        }
        if (!invert && pos < s.size()) out.push_back(s.substr(pos));
      }
      return out;
    };
  }
  if (type == "ByteLevel") {
    const bool prefix = j.value("add_prefix_space", false);
    const bool use_regex = j.value("use_regex", true);
    std::shared_ptr<Regex> regex = use_regex ? std::make_shared<Regex>(kGpt2Pattern) : nullptr;
    return [prefix, regex](const std::vector<std::string>& in) {
      std::vector<std::string> out;
      for (auto s : in) {
        if (prefix && (s.empty() || s[0] != ' ')) s = " " + s;
        if (!regex) { out.push_back(byte_level(s)); continue; }
        for (auto [b, e] : regex->matches(s)) out.push_back(byte_level(s.substr(b, e - b)));
      }
      return out;
    };
  }
  if (type == "Sequence") {
    std::vector<PreTokenizer> steps;
    for (const auto& p : j.at("pretokenizers")) if (auto f = make_pre_tokenizer(p)) steps.push_back(f);
    return [steps](const std::vector<std::string>& in) {
      std::vector<std::string> r = in;
      for (const auto& f : steps) r = f(r);
      return r;
    };
  }
  throw Error("tokenizer.json: pre-tokenizer " + type + " is not supported (Split, ByteLevel, Sequence are)");
}

}  // namespace

struct HfTokenizer::Impl {
  struct Added {
    std::string content;
    int64_t id;
    bool special, lstrip, rstrip;
  };

  std::unordered_map<std::string, int64_t> token_to_id;  // model vocabulary and added tokens
  std::vector<std::string> id_to_token;
  std::vector<char> has_token;
  std::unordered_map<std::string, int> merge_rank;  // "a\0b"
  bool ignore_merges = false, byte_fallback = false, fuse_unk = false;
  std::string unk_token;  // empty: none
  std::vector<Added> added;
  std::array<std::vector<std::size_t>, 256> added_by_first;  // indexes into `added`, longest first
  std::unordered_set<std::string> special;  // token strings skipped by skip_special_tokens
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  std::vector<std::vector<int64_t>> template_single;  // items; {-1} stands for the sequence
  Decoder decoder;
  bool clean_up = true;
  int64_t bos = -1, eos = -1;
  std::string config_text;

  std::vector<std::string> split_added(const std::string& text) const {
    std::vector<std::string> parts;
    std::size_t start = 0, i = 0;
    while (i < text.size()) {
      const Added* match = nullptr;
      for (std::size_t k : added_by_first[static_cast<unsigned char>(text[i])]) {
        const auto& a = added[k];
        if (text.compare(i, a.content.size(), a.content) == 0) { match = &a; break; }
      }
      if (!match) { ++i; continue; }
      if (i > start) parts.push_back(text.substr(start, i - start));
      parts.push_back(match->content);
      i += match->content.size();
      start = i;
    }
    if (start < text.size()) parts.push_back(text.substr(start));
    return parts;
  }

  const Added* added_token(const std::string& s) const {
    if (s.empty()) return nullptr;
    for (std::size_t k : added_by_first[static_cast<unsigned char>(s[0])])
      if (added[k].content == s) return &added[k];
    return nullptr;
  }

  int rank(const std::string& a, const std::string& b) const {
    std::string key;
    key.reserve(a.size() + b.size() + 1);
    key += a;
    key += '\0';
    key += b;
    auto it = merge_rank.find(key);
    return it == merge_rank.end() ? INT_MAX : it->second;
  }

  std::vector<std::string> bpe(const std::string& word) const {
    std::vector<std::string> sym = code_points(word);
    if (sym.size() < 2) return sym;
    std::vector<int> r(sym.size() - 1);
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) r[i] = rank(sym[i], sym[i + 1]);
    while (!r.empty()) {
      const auto best = std::min_element(r.begin(), r.end());  // lowest rank, leftmost
      if (*best == INT_MAX) break;
      const std::size_t i = static_cast<std::size_t>(best - r.begin());
      sym[i] += sym[i + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      r.erase(r.begin() + static_cast<std::ptrdiff_t>(i));
      if (i > 0) r[i - 1] = rank(sym[i - 1], sym[i]);
      if (i < r.size()) r[i] = rank(sym[i], sym[i + 1]);
    }
    return sym;
  }

  void model(const std::vector<std::string>& words, std::vector<int64_t>& ids) const {
    const auto unk = unk_token.empty() ? token_to_id.end() : token_to_id.find(unk_token);
    auto push_unk = [&] {
      if (unk == token_to_id.end()) throw Error("tokenizer: a piece is not in the vocabulary and the model has no unk token");
      if (fuse_unk && !ids.empty() && ids.back() == unk->second) return;
      ids.push_back(unk->second);
    };
    for (const auto& w : words) {
      if (w.empty()) continue;
      if (ignore_merges) {
        if (auto it = token_to_id.find(w); it != token_to_id.end()) { ids.push_back(it->second); continue; }
      }
      for (const auto& piece : bpe(w)) {
        if (auto it = token_to_id.find(piece); it != token_to_id.end()) { ids.push_back(it->second); continue; }
        if (byte_fallback) {
          std::vector<int64_t> bytes;
          for (unsigned char b : piece) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", b);
            auto it = token_to_id.find(name);
            if (it == token_to_id.end()) { bytes.clear(); break; }
            bytes.push_back(it->second);
          }
          if (!bytes.empty()) { ids.insert(ids.end(), bytes.begin(), bytes.end()); continue; }
        }
        push_unk();
      }
    }
  }

  std::vector<int64_t> encode(const std::string& text, bool add_special) const {
    auto parts = split_added(text);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const Added* a = added_token(parts[i]);
      if (!a) continue;
      static const char* ws = " \t\n\v\f\r";
      if (a->lstrip && i > 0) parts[i - 1].erase(parts[i - 1].find_last_not_of(ws) + 1);
      if (a->rstrip && i + 1 < parts.size()) parts[i + 1].erase(0, parts[i + 1].find_first_not_of(ws));
    }
    std::vector<int64_t> ids;
    for (auto& part : parts) {
      if (part.empty()) continue;
      if (const Added* a = added_token(part)) { ids.push_back(a->id); continue; }
      std::string s = normalizer ? normalizer(part) : part;
      if (s.empty()) continue;
      model(pre_tokenizer ? pre_tokenizer({s}) : std::vector<std::string>{s}, ids);
    }
    if (!add_special || template_single.empty()) return ids;
    std::vector<int64_t> out;
    for (const auto& item : template_single) {
      if (item.size() == 1 && item[0] == -1) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), item.begin(), item.end());
    }
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (auto id : ids) {
      if (id < 0 || id >= static_cast<int64_t>(id_to_token.size()))
        throw Error("tokenizer: id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(id_to_token.size()));
      const std::string& t = has_token[static_cast<std::size_t>(id)] ? id_to_token[static_cast<std::size_t>(id)] : unk_token;
      if (skip_special && special.count(t)) continue;
      tokens.push_back(t);
    }
    std::string text;
    if (decoder) for (const auto& t : decoder(tokens)) text += t;
    else for (std::size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    if (clean_up) {
      for (auto [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                              {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
        replace_all(text, from, to);
    }
    return text;
  }

  Decoder make_decoder(const json& j) const {
    if (j.is_null()) return nullptr;
    const auto type = j.at("type").get<std::string>();
    if (type == "ByteLevel") {
      return [this](const std::vector<std::string>& in) {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          std::string bytes;
          for (std::size_t i = 0; i < pending.size();) {
            const auto n = utf8_len(pending, i);
            auto it = byte_map().to_byte.find(decode_cp(pending, i, n));
            bytes += static_cast<char>(it == byte_map().to_byte.end() ? 0 : it->second);
            i += n;
          }
          out.push_back(decode_utf8_lossy(bytes));
          pending.clear();
        };
        for (const auto& t : in) {
          if (added_token(t)) { flush(); out.push_back(t); }
          else pending += t;
        }
        flush();
        return out;
      };
    }
    if (type == "Replace") {
      auto pattern = Pattern::from(j.at("pattern"));
      auto content = j.at("content").get<std::string>();
      return [pattern, content](const std::vector<std::string>& in) {
        std::vector<std::string> out;
        for (const auto& t : in) out.push_back(pattern.replace(t, content));
        return out;
      };
    }
    if (type == "ByteFallback") {
      return [](const std::vector<std::string>& in) {
        std::vector<std::string> out;
        std::string bytes;
        auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
        for (const auto& t : in) {
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3])) {
            bytes += static_cast<char>(std::stoi(t.substr(3, hex(t[4]) ? 2 : 1), nullptr, 16));
            continue;
          }
          if (!bytes.empty()) { out.push_back(decode_utf8_lossy(bytes)); bytes.clear(); }
          out.push_back(t);
        }
        if (!bytes.empty()) out.push_back(decode_utf8_lossy(bytes));
        return out;
      };
    }
    if (type == "Fuse") {
      return [](const std::vector<std::string>& in) {
        std::string all;
        for (const auto& t : in) all += t;
        return std::vector<std::string>{all};
      };
    }
    if (type == "Strip") {
      const auto content = j.at("content").get<std::string>();
      const int start = j.value("start", 0), stop = j.value("stop", 0);
      return [content, start, stop](const std::vector<std::string>& in) {
        std::vector<std::string> out;
        for (auto t : in) {
          for (int i = 0; i < start && t.compare(0, content.size(), content) == 0 && !content.empty(); ++i) t.erase(0, content.size());
          for (int i = 0; i < stop && !content.empty() && t.size() >= content.size() &&
                          t.compare(t.size() - content.size(), content.size(), content) == 0; ++i)
            t.erase(t.size() - content.size());
          out.push_back(t);
        }
        return out;
      };
    }
    if (type == "Sequence") {
      std::vector<Decoder> steps;
      for (const auto& d : j.at("decoders")) if (auto f = make_decoder(d)) steps.push_back(f);
      return [steps](const std::vector<std::string>& in) {
        std::vector<std::string> r = in;
        for (const auto& f : steps) r = f(r);
        return r;
      };
    }
    throw Error("tokenizer.json: decoder " + type + " is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Sequence are)");
  }

  void post_processor(const json& j) {
    if (j.is_null()) return;
    const auto type = j.at("type").get<std::string>();
    if (type == "ByteLevel") return;
    if (type == "Sequence") {
      for (const auto& p : j.at("processors")) post_processor(p);
      return;
    }
    if (type != "TemplateProcessing")
      throw Error("tokenizer.json: post-processor " + type + " is not supported (TemplateProcessing, ByteLevel, Sequence are)");
    template_single.clear();
    const auto& specials = j.at("special_tokens");
    for (const auto& item : j.at("single")) {
      if (item.contains("Sequence")) { template_single.push_back({-1}); continue; }
      const auto name = item.at("SpecialToken").at("id").get<std::string>();
      if (!specials.contains(name)) throw Error("tokenizer.json: template names an unknown special token " + name);
      template_single.push_back(specials.at(name).at("ids").get<std::vector<int64_t>>());
    }
  }
};

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("cannot open " + p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A config token: "text" or {"content": "text", ...}; "" when absent or null.
std::string config_token(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
  return "";
}

}  // namespace

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;
HfTokenizer::~HfTokenizer() = default;

HfTokenizer HfTokenizer::load(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path)) throw Error("tokenizer " + path.string() + " does not exist");
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error("tokenizer " + path.string() + " is not valid JSON: " + e.what());
  }
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  try {
    const auto& m = j.at("model");
    const auto mtype = m.value("type", std::string("BPE"));
    if (mtype != "BPE") throw Error("tokenizer.json: model " + mtype + " is not supported (BPE is)");
    if (!m.value("continuing_subword_prefix", json()).is_null() && !m.at("continuing_subword_prefix").get<std::string>().empty())
      throw Error("tokenizer.json: continuing_subword_prefix is not supported");
    if (!m.value("end_of_word_suffix", json()).is_null() && !m.at("end_of_word_suffix").get<std::string>().empty())
      throw Error("tokenizer.json: end_of_word_suffix is not supported");
    t.ignore_merges = m.value("ignore_merges", false);
    t.byte_fallback = m.value("byte_fallback", false);
    t.fuse_unk = m.value("fuse_unk", false);
    if (m.contains("unk_token") && m.at("unk_token").is_string()) t.unk_token = m.at("unk_token").get<std::string>();
    int64_t max_id = -1;
    for (const auto& [tok, id] : m.at("vocab").items()) {
      t.token_to_id[tok] = id.get<int64_t>();
      max_id = std::max(max_id, id.get<int64_t>());
    }
    for (const auto& a : j.at("added_tokens")) {
      Impl::Added x{a.at("content").get<std::string>(), a.at("id").get<int64_t>(), a.value("special", false),
                    a.value("lstrip", false), a.value("rstrip", false)};
      if (x.content.empty()) continue;
      t.token_to_id[x.content] = x.id;
      max_id = std::max(max_id, x.id);
      if (x.special) t.special.insert(x.content);
      t.added.push_back(std::move(x));
    }
    t.id_to_token.assign(static_cast<std::size_t>(max_id + 1), "");
    t.has_token.assign(static_cast<std::size_t>(max_id + 1), 0);
    for (const auto& [tok, id] : t.token_to_id) {
      t.id_to_token[static_cast<std::size_t>(id)] = tok;
      t.has_token[static_cast<std::size_t>(id)] = 1;
    }
    for (const auto& a : t.added) {  // an added token wins over a model token with its id
      t.id_to_token[static_cast<std::size_t>(a.id)] = a.content;
    }
    for (std::size_t k = 0; k < t.added.size(); ++k)
      t.added_by_first[static_cast<unsigned char>(t.added[k].content[0])].push_back(k);
    for (auto& list : t.added_by_first)
      std::stable_sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) { return t.added[a].content.size() > t.added[b].content.size(); });

    const auto& merges = m.at("merges");
    t.merge_rank.reserve(merges.size());
    int rank = 0;
    for (const auto& mg : merges) {
      std::string a, b;
      if (mg.is_array()) { a = mg.at(0).get<std::string>(); b = mg.at(1).get<std::string>(); }
      else {
        const auto s = mg.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos) throw Error("tokenizer.json: merge without a space: " + s);
        a = s.substr(0, sp);
        const auto sp2 = s.find(' ', sp + 1);
        b = s.substr(sp + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp - 1);
      }
      t.merge_rank.emplace(a + '\0' + b, rank++);
    }

    t.normalizer = make_normalizer(j.value("normalizer", json()));
    t.pre_tokenizer = make_pre_tokenizer(j.value("pre_tokenizer", json()));
    t.post_processor(j.value("post_processor", json()));
    t.decoder = t.make_decoder(j.value("decoder", json()));
  } catch (const json::exception& e) {
    throw Error("tokenizer " + path.string() + ": unexpected structure: " + e.what());
  }

  const auto config_path = path.parent_path() / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(config_path)) {
    t.config_text = read_file(config_path);
    json c;
    try {
      c = json::parse(t.config_text);
    } catch (const json::exception& e) {
      throw Error("tokenizer config " + config_path.string() + " is not valid JSON: " + e.what());
    }
    if (c.contains("additional_special_tokens") && c.at("additional_special_tokens").is_array())
      for (const auto& s : c.at("additional_special_tokens")) {
        if (s.is_string()) t.special.insert(s.get<std::string>());
        else if (s.is_object() && s.contains("content")) t.special.insert(s.at("content").get<std::string>());
      }
    if (c.contains("clean_up_tokenization_spaces") && c.at("clean_up_tokenization_spaces").is_boolean())
      t.clean_up = c.at("clean_up_tokenization_spaces").get<bool>();
    auto id_of = [&](const std::string& name) -> int64_t {
      if (name.empty()) return -1;
      auto it = t.token_to_id.find(name);
      return it == t.token_to_id.end() ? -1 : it->second;
    };
    t.bos = id_of(config_token(c, "bos_token"));
    t.eos = id_of(config_token(c, "eos_token"));
  }
  return HfTokenizer(std::move(impl));
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}
std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}
int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
int64_t HfTokenizer::bos_id() const { return impl_->bos; }
int64_t HfTokenizer::eos_id() const { return impl_->eos; }
std::optional<int64_t> HfTokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->token_to_id.find(token);
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}
std::string HfTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->id_to_token[static_cast<std::size_t>(id)];
}
bool HfTokenizer::is_special(int64_t id) const { return impl_->special.count(id_to_token(id)) > 0; }
const std::string& HfTokenizer::config_json() const { return impl_->config_text; }

}  // namespace eesched::runtime
