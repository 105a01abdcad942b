#pragma once
// Loading what a subcommand runs: a target model, optionally a draft, plaintext or encrypted.
// An encrypted directory (ee.json) needs the key it was encrypted with; the draft must be in
// the same state as the target (both plaintext, or both encrypted under that key).
#include <filesystem>
#include <optional>
#include <string>

#include "accel/acceleration.h"
#include "ee/codec.h"

namespace eesched::tools {

struct LoadedModels {
  accel::ModelPair models;
  std::optional<ee::Codec> codec;  // set with a key: encrypts ids for the models, decrypts back
};

// `key_file` empty: plaintext models. Throws with a one-line reason on any mismatch.
LoadedModels load_models(const std::filesystem::path& target, const std::filesystem::path& draft, const std::string& key_file);

// The tokenizer to use: `given`, else TARGET's own (tokenizer.json, else tokenizer.model); an
// encrypted target has none.
std::filesystem::path tokenizer_for(const std::filesystem::path& target, const std::string& given, bool encrypted);

}  // namespace eesched::tools
