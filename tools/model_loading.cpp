#include "tools/model_loading.h"

#include <stdexcept>

#include "ee/key.h"
#include "ee/manifest.h"
#include "runtime/model.h"

namespace eesched::tools {
namespace {

// The key fingerprint a directory is encrypted under ("" when plaintext), checked against `key`.
std::string check_encryption(const std::filesystem::path& dir, const std::optional<ee::Key>& key, const char* role) {
  const auto manifest = ee::Manifest::read(dir);
  if (manifest && !key) throw std::runtime_error("the " + std::string(role) + " " + dir.string() + " is an encrypted model: pass --key (and --tokenizer)");
  if (!manifest && key)
    throw std::runtime_error("--key given but the " + std::string(role) + " " + dir.string() + " is not encrypted (no ee.json)");
  if (manifest) manifest->check_key(*key);
  return manifest ? manifest->key_fingerprint : "";
}

}  // namespace

LoadedModels load_models(const std::filesystem::path& target, const std::filesystem::path& draft, const std::string& key_file) {
  std::optional<ee::Key> key;
  if (!key_file.empty()) key = ee::Key::load(key_file);
  LoadedModels out;
  out.models.target_key = check_encryption(target, key, "model");
  out.models.target = std::make_shared<const runtime::LlamaModel>(runtime::LlamaModel::load(target));
  if (!draft.empty()) {
    out.models.draft_key = check_encryption(draft, key, "draft");
    out.models.draft = std::make_shared<const runtime::LlamaModel>(runtime::LlamaModel::load(draft));
    if (out.models.draft->config().vocab_size != out.models.target->config().vocab_size)
      throw std::runtime_error("the draft " + draft.string() + " has a vocabulary of " +
                               std::to_string(out.models.draft->config().vocab_size) + ", the model " +
                               std::to_string(out.models.target->config().vocab_size));
  }
  if (key) out.codec.emplace(*key);
  return out;
}

std::filesystem::path tokenizer_for(const std::filesystem::path& target, const std::string& given, bool encrypted) {
  if (!given.empty()) return given;
  if (encrypted) throw std::runtime_error("an encrypted model has no tokenizer: pass --tokenizer PLAIN_DIR (or its tokenizer.json / tokenizer.model)");
  return target;  // runtime::Tokenizer::load finds tokenizer.json, else tokenizer.model
}

}  // namespace eesched::tools
