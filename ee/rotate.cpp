#include "ee/rotate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>

#include "ee/key.h"
#include "ee/manifest.h"
#include "ee/transform.h"
#include "runtime/error.h"

namespace eesched::ee {
namespace {

using runtime::Error;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The encrypted model with its vocabulary permutation undone: plaintext ids in and out, the old
// key's hidden maps still in place.
runtime::LlamaModel undo_vocab(const runtime::LlamaModel& encrypted, const Key& old_key) {
  c10::InferenceMode guard;
  const auto& config = encrypted.config();
  const auto pv = old_key.permutation("vocab", config.vocab_size);  // token t was sent as pv[t]
  const auto rows = at::tensor(pv, at::kLong);                     // plain row t = encrypted row pv[t]
  auto w = encrypted.weights();
  w.embed_tokens = w.embed_tokens.index_select(0, rows).contiguous();
  if (w.lm_head.defined()) w.lm_head = w.lm_head.index_select(0, rows).contiguous();
  auto c = config;
  const auto back = inverse(pv);
  auto map = [&](int64_t id) { return (id >= 0 && id < c.vocab_size) ? back[static_cast<std::size_t>(id)] : id; };
  c.bos_token_id = map(c.bos_token_id);
  c.eos_token_id = map(c.eos_token_id);
  return runtime::LlamaModel(c, w);
}

}  // namespace

runtime::LlamaModel rotate_model(const runtime::LlamaModel& encrypted, const Key& old_key, const Key& new_key) {
  if (old_key.vocab_size() != encrypted.config().vocab_size)
    throw Error("the old key is for a vocabulary of " + std::to_string(old_key.vocab_size()) + " tokens, the model has " +
                std::to_string(encrypted.config().vocab_size));
  if (old_key.fingerprint() == new_key.fingerprint()) throw Error("the new key is the old key: nothing would rotate");
  const auto hidden_only = undo_vocab(encrypted, old_key);
  return encrypt_model(hidden_only, new_key, "rotated/" + model_fingerprint(hidden_only));
}

int64_t directory_bytes(const std::filesystem::path& dir) {
  int64_t bytes = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) bytes += static_cast<int64_t>(e.file_size());
  return bytes;
}

RotateDirResult rotate_model_dir(const std::filesystem::path& in, const Key& old_key, const Key& new_key,
                                 const std::filesystem::path& out, bool force) {
  const auto manifest = Manifest::read(in);
  if (!manifest)
    throw Error(in.string() + " is not encrypted (no ee.json): encrypt the plaintext with the new key instead (eesched encrypt-model)");
  manifest->check_key(old_key);
  if (new_key.vocab_size() != manifest->vocab_size)
    throw Error("the new key is for a vocabulary of " + std::to_string(new_key.vocab_size()) + " tokens, " + in.string() + " has " +
                std::to_string(manifest->vocab_size));
  if (old_key.fingerprint() == new_key.fingerprint()) throw Error("the new key is the old key: nothing would rotate");
  std::error_code ec;
  if (std::filesystem::exists(out) && std::filesystem::equivalent(in, out, ec))
    throw Error("the output directory must differ from the input");
  if (!force && std::filesystem::exists(out / "model.safetensors"))
    throw Error(out.string() + " already holds a model (pass --force to overwrite)");

  RotateDirResult r;
  auto t0 = std::chrono::steady_clock::now();
  const auto encrypted = runtime::LlamaModel::load(in);
  r.load_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  auto rotated = rotate_model(encrypted, old_key, new_key);
  r.transform_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  std::filesystem::create_directories(out);
  rotated.save(out);
  Manifest m = *manifest;
  m.key_fingerprint = new_key.fingerprint();
  // The old scheme's dense rotation and noise stay under the new key's permutations.
  m.transforms = transform_names(rotated.config(), scheme_of(manifest->transforms));
  m.write(out);
  // What an encrypted directory never holds, and a stale shard index the single file replaces.
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"})
    std::filesystem::remove(out / f, ec);
  r.save_seconds = seconds_since(t0);
  r.old_fingerprint = old_key.fingerprint();
  r.new_fingerprint = new_key.fingerprint();
  r.parameters = encrypted.config().parameter_count();
  r.bytes = directory_bytes(out);
  return r;
}

}  // namespace eesched::ee
