#pragma once
// Where the sweep and live replay get models: a suite's model name resolves to MODELS_DIR/NAME
// (config.json, model.safetensors, maybe tokenizer.model), or, for "syn25m"/"syn110m"/"syn350m"
// without a directory, the seeded synthetic preset built in memory. With a key every model is
// encrypted on the fly (all under the same key, so drafts share their target's vocabulary
// permutation). Each model is loaded once and registered in the store, with the quality of its
// lossy transforms: from the directory (ee.json, else quality.json), or, for a synthetic preset,
// measured at load on a short seeded token sequence.
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "data/store.h"
#include "ee/key.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace eesched::node {

struct SweepModel {
  std::shared_ptr<const runtime::LlamaModel> model;  // encrypted when a key is given
  std::optional<runtime::Tokenizer> tokenizer;       // plaintext-side tokenizer, when the directory has one
  data::ModelRow row;                                // as registered in the store
};

class ModelSource {
 public:
  ModelSource(std::filesystem::path dir, std::optional<ee::Key> key);
  // Loads (once) and registers the model; throws data::Error for an unknown name.
  const SweepModel& get(const std::string& name, data::Store& store);

 private:
  std::filesystem::path dir_;
  std::optional<ee::Key> key_;
  std::map<std::string, SweepModel> models_;
};

}  // namespace eesched::node
