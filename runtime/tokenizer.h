#pragma once
// SentencePiece tokenizer (tokenizer.model), plus training a new one from a text corpus.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace eesched::runtime {

class SpmModule;

class Tokenizer {
 public:
  static Tokenizer load(const std::filesystem::path& model_file);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int64_t> encode(const std::string& text, bool add_bos = true) const;
  // A document: lines joined with spaces (as the tokenizer normalizes newlines anyway), each
  // blank-line-separated paragraph its own BOS-started piece, as documents were in training.
  std::vector<int64_t> encode_document(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // skips BOS/EOS/unknown control ids
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  Tokenizer();
  std::unique_ptr<SpmModule> sp_;
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
