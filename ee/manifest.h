#pragma once
// ee.json: what marks a model directory as encrypted, with which key (by fingerprint only), and
// the quality of its lossy transforms as the owner measured it on the plaintext model.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "data/quality.h"

namespace eesched::ee {

class Key;

struct Manifest {
  std::string scheme;
  int version = 0;
  std::string key_fingerprint;
  int64_t vocab_size = 0;
  std::vector<std::string> transforms;
  // data::quality_to_json's shape under "quality"; an older ee.json without it reads as empty.
  data::QualityTable quality;

  // DIR/ee.json if present (validated, a bad quality entry included: one line naming the file
  // and the entry), nullopt for a plaintext model directory.
  static std::optional<Manifest> read(const std::filesystem::path& model_dir);
  void write(const std::filesystem::path& model_dir) const;

  // Throws a clear Error unless `key` is the key this model was encrypted with.
  void check_key(const Key& key) const;
};

}  // namespace eesched::ee
