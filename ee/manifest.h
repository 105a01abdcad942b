#pragma once
// ee.json: what marks a model directory as encrypted, and with which key (by fingerprint only).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace eesched::ee {

class Key;

struct Manifest {
  std::string scheme;
  int version = 0;
  std::string key_fingerprint;
  int64_t vocab_size = 0;
  std::vector<std::string> transforms;

  // DIR/ee.json if present (validated), nullopt for a plaintext model directory.
  static std::optional<Manifest> read(const std::filesystem::path& model_dir);
  void write(const std::filesystem::path& model_dir) const;

  // Throws a clear Error unless `key` is the key this model was encrypted with.
  void check_key(const Key& key) const;
};

}  // namespace eesched::ee
