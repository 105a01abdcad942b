#pragma once
// A model's tokenizer: SentencePiece (tokenizer.model) or Hugging Face (tokenizer.json, see
// tokenizer_json.h), plus training a new SentencePiece model from a text corpus.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace eesched::runtime {

class SpmModule;
class HfTokenizer;

// The tokenizer file of a model directory: tokenizer.json when present, else tokenizer.model; a
// file is returned as it is. Throws a one-line error when a directory holds neither.
std::filesystem::path find_tokenizer_file(const std::filesystem::path& dir_or_file);

class Tokenizer {
 public:
  // A tokenizer.json, a tokenizer.model, or a directory holding one (tokenizer.json preferred).
  static Tokenizer load(const std::filesystem::path& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_bos: for tokenizer.json, run its post-processor (BOS exactly where Hugging Face adds it:
  // Llama 3.1 and Llama 2 yes, Qwen and the Llama 3.0 file no); special tokens written in the text
  // are parsed as the file says. For tokenizer.model, prepend BOS.
  std::vector<int64_t> encode(const std::string& text, bool add_bos = true) const;
  // A document: lines joined with spaces (as the tokenizer normalizes newlines anyway), each
  // blank-line-separated paragraph its own BOS-started piece, as documents were in training.
  std::vector<int64_t> encode_document(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // skips BOS/EOS/unknown control ids
  // As decode, but tokenizer.json's special tokens are kept when skip_special is false.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;
  // The Hugging Face tokenizer when loaded from tokenizer.json (its config, token lookups), else null.
  const HfTokenizer* hf() const;

 private:
  Tokenizer();
  std::unique_ptr<SpmModule> sp_;
  std::unique_ptr<HfTokenizer> hf_;
};

struct TokenizerTrainOptions {
  int64_t vocab_size = 1024;
  std::string model_type = "bpe";
  int64_t max_sentences = 200000;  // lines sampled from the corpus
  int threads = 2;
};

// Trains SentencePiece on a text file and writes `<out_prefix>.model` (and `.vocab`).
// Ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), matching Llama.
void train_tokenizer(const std::filesystem::path& corpus, const std::filesystem::path& out_prefix,
                     const TokenizerTrainOptions& options);

}  // namespace eesched::runtime
