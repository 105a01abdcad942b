#include "runtime/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "runtime/error.h"
#include "runtime/spm_module.h"
#include "runtime/tokenizer_json.h"

#ifndef EESCHED_SPM_MODULE
#define EESCHED_SPM_MODULE "libeesched_spm.so"
#endif

namespace eesched::runtime {
namespace {

// Loads the sentencepiece module once per process (see spm_module.h for why it is separate).
// $EESCHED_SPM_MODULE overrides the path the build recorded.
std::unique_ptr<SpmModule> new_spm_module() {
  static std::once_flag once;
  static SpmModule* (*create)() = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    const char* env = std::getenv("EESCHED_SPM_MODULE");
    const std::string path = env && *env ? env : EESCHED_SPM_MODULE;
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) { failure = std::string("cannot load the tokenizer module: ") + dlerror(); return; }
    create = reinterpret_cast<SpmModule* (*)()>(dlsym(handle, "eesched_spm_module_create"));
    if (!create) failure = "tokenizer module " + path + " lacks eesched_spm_module_create";
  });
  if (!create) throw Error(failure);
  return std::unique_ptr<SpmModule>(create());
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::filesystem::path find_tokenizer_file(const std::filesystem::path& path) {
  if (!std::filesystem::is_directory(path)) return path;
  for (const char* name : {"tokenizer.json", "tokenizer.model"})
    if (std::filesystem::is_regular_file(path / name)) return path / name;
  throw Error("tokenizer: " + path.string() + " holds neither tokenizer.json nor tokenizer.model");
}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  const auto model_file = find_tokenizer_file(path);
  if (!std::filesystem::is_regular_file(model_file)) throw Error("tokenizer " + model_file.string() + " does not exist");
  Tokenizer t;
  if (model_file.extension() == ".json") {
    t.hf_ = std::make_unique<HfTokenizer>(HfTokenizer::load(model_file));
    return t;
  }
  t.sp_ = new_spm_module();
  if (auto err = t.sp_->load(model_file.string()); !err.empty())
    throw Error("cannot load tokenizer " + model_file.string() + ": " + err);
  return t;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  if (hf_) return hf_->encode(text, add_bos);
  std::vector<int> pieces;
  if (auto err = sp_->encode(text, pieces); !err.empty()) throw Error("tokenizer: " + err);
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + 1);
  if (add_bos && sp_->bos_id() >= 0) ids.push_back(sp_->bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  if (hf_) return hf_->decode(ids, skip_special);
  return decode(ids);
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  if (hf_) return hf_->decode(ids, true);
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  const int64_t n = vocab_size();
  for (auto id : ids) {
    if (id < 0 || id >= n) throw Error("tokenizer: id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(n));
    if (sp_->is_control(static_cast<int>(id))) continue;
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  if (auto err = sp_->decode(pieces, text); !err.empty()) throw Error("tokenizer: " + err);
  return text;
}

int64_t Tokenizer::vocab_size() const { return hf_ ? hf_->vocab_size() : sp_->piece_size(); }
int64_t Tokenizer::bos_id() const { return hf_ ? hf_->bos_id() : sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return hf_ ? hf_->eos_id() : sp_->eos_id(); }
const HfTokenizer* Tokenizer::hf() const { return hf_.get(); }

namespace {

// SentencePiece skips input lines longer than max_sentence_length (4 KB); corpora with one
// document per line (like ours) would be skipped whole. Re-split into sentence-sized lines.
std::filesystem::path sentence_file(const std::filesystem::path& corpus, const std::filesystem::path& dir) {
  std::ifstream in(corpus);
  if (!in) throw Error("cannot open " + corpus.string());
  auto path = dir / ("sentences." + std::to_string(::getpid()) + ".txt");
  std::ofstream out(path);
  std::string line;
  while (std::getline(in, line)) {
    std::size_t begin = 0;
    while (begin < line.size()) {
      std::size_t end = line.find(". ", begin);
      end = (end == std::string::npos || end - begin > 2000) ? std::min(line.size(), begin + 2000) : end + 1;
      if (end > begin + 1) out << line.substr(begin, end - begin) << "\n";
      begin = end;
      while (begin < line.size() && line[begin] == ' ') ++begin;
    }
  }
  out.flush();
  if (!out) throw Error("cannot write " + path.string());
  return path;
}

}  // namespace

void train_tokenizer(const std::filesystem::path& corpus, const std::filesystem::path& out_prefix,
                     const TokenizerTrainOptions& o) {
  if (!std::filesystem::is_regular_file(corpus)) throw Error("corpus " + corpus.string() + " does not exist");
  const auto sentences = sentence_file(corpus, out_prefix.parent_path().empty() ? "." : out_prefix.parent_path());
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::error_code ec; std::filesystem::remove(p, ec); }
  } cleanup{sentences};
  const std::string args = "--input=" + sentences.string() + " --model_prefix=" + out_prefix.string() +
                           " --vocab_size=" + std::to_string(o.vocab_size) + " --model_type=" + o.model_type +
                           " --character_coverage=1.0 --byte_fallback=true --split_digits=true"
                           " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
                           " --input_sentence_size=" + std::to_string(o.max_sentences) +
                           " --shuffle_input_sentence=true --num_threads=" + std::to_string(o.threads) +
                           " --minloglevel=2";
  if (auto err = new_spm_module()->train(args); !err.empty()) throw Error("tokenizer training failed: " + err);
}

std::vector<int64_t> Tokenizer::encode_document(const std::string& text) const {
  std::vector<int64_t> ids;
  std::stringstream in(text);
  std::string line, paragraph;
  auto flush = [&] {
    if (paragraph.find_first_not_of(' ') != std::string::npos) {
      const auto p = encode(paragraph, true);
      ids.insert(ids.end(), p.begin(), p.end());
    }
    paragraph.clear();
  };
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) flush();
    else paragraph += (paragraph.empty() ? "" : " ") + line;
  }
  flush();
  return ids;
}

}  // namespace eesched::runtime
