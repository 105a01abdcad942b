#pragma once
// Hugging Face `tokenizer.json` (with `tokenizer_config.json` beside it when present), in plain
// C++: no LibTorch. What it implements is what the real Llama 3 / 3.1, Qwen2.5 / Qwen3 and
// Llama 2 / TinyLlama / Mistral files use, and it behaves as the reference (@lenml/tokenizers,
// a port of Hugging Face's tokenizers; tests/data/tokenizers/) does:
//  - added tokens (special or not) are cut out of the input first, leftmost-longest;
//  - normalizers: NFC (ICU), Prepend, Replace (string patterns), Sequence;
//  - pre-tokenizers: Split (regex, PCRE2 with Unicode classes; behaviour Isolated or Removed),
//    ByteLevel (use_regex false or true), Sequence;
//  - model: BPE (merge ranks, ignore_merges, byte_fallback to <0xNN> tokens, fuse_unk);
//  - post-processors: TemplateProcessing (single), ByteLevel (adds nothing), Sequence;
//  - decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip, Sequence; then, when the config
//    asks (clean_up_tokenization_spaces, true when absent), the " ." -> "." clean-up.
// Anything else in the file is refused with a one-line error naming it.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace eesched::runtime {

class HfTokenizer {
 public:
  // `tokenizer_json` is the file; the config is read from `tokenizer_config.json` in the same
  // directory when it exists (BOS/EOS names, additional special tokens, clean-up).
  static HfTokenizer load(const std::filesystem::path& tokenizer_json);
  HfTokenizer(HfTokenizer&&) noexcept;
  HfTokenizer& operator=(HfTokenizer&&) noexcept;
  ~HfTokenizer();

  // add_special_tokens: run the post-processor (Llama 3.1 / Llama 2 prepend BOS; Qwen and the
  // Llama 3.0 file add nothing), as Hugging Face's encode(text) does by default.
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  // skip_special_tokens drops special added tokens (and the config's additional special tokens).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // largest id + 1 (the model's vocabulary plus added tokens)
  int64_t bos_id() const;      // -1 when the config names none
  int64_t eos_id() const;
  std::optional<int64_t> token_to_id(const std::string& token) const;
  std::string id_to_token(int64_t id) const;  // "" when unknown
  bool is_special(int64_t id) const;
  // The raw text of tokenizer_config.json ("" when absent), for chat templates.
  const std::string& config_json() const;

 private:
  struct Impl;
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::runtime
