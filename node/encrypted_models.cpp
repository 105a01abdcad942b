#include "node/encrypted_models.h"

#include <stdexcept>

#include "ee/manifest.h"
#include "ee/transform.h"
#include "runtime/model.h"

namespace eesched::node {

LoadedModel load_encrypted(const std::string& name, const std::filesystem::path& dir, bool draft) {
  if (!std::filesystem::is_directory(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  const auto manifest = ee::Manifest::read(dir);
  if (!manifest)
    throw std::runtime_error("model " + dir.string() + " is not encrypted (no ee.json): a worker serves encrypted models only");
  LoadedModel m;
  m.model = std::make_shared<const runtime::LlamaModel>(runtime::LlamaModel::load(dir));
  const auto& c = m.model->config();
  auto& row = m.info.row;
  row.name = name;
  row.fingerprint = ee::model_fingerprint(*m.model);
  row.layers = c.num_hidden_layers, row.hidden = c.hidden_size, row.intermediate = c.intermediate_size;
  row.heads = c.num_attention_heads, row.kv_heads = c.num_key_value_heads, row.vocab = c.vocab_size;
  row.parameters = c.parameter_count();
  row.weight_bytes = m.model->weight_bytes();
  row.dtype = "f32";  // computed in f32 whatever the file stores
  row.encrypted = true;
  row.quality = manifest->quality;  // measured by the owner on plaintext (ee.json)
  m.info.key_fingerprint = manifest->key_fingerprint;
  m.info.draft = draft;
  return m;
}

ModelSet::ModelSet(std::vector<LoadedModel> models) : models_(std::move(models)) {
  for (std::size_t i = 0; i < models_.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (models_[i].info.row.name == models_[j].info.row.name && models_[i].info.draft == models_[j].info.draft)
        throw std::runtime_error("two models are named '" + models_[i].info.row.name + "' (use --model NAME=DIR)");
}

const LoadedModel* ModelSet::find(const std::string& name, bool draft) const {
  for (const auto& m : models_)
    if (m.info.row.name == name && m.info.draft == draft) return &m;
  return nullptr;
}

const LoadedModel* ModelSet::find_draft(const std::string& name) const {
  const auto* draft = find(name, true);
  return draft ? draft : find(name, false);
}

std::vector<net::ModelInfo> ModelSet::infos() const {
  std::vector<net::ModelInfo> out;
  for (const auto& m : models_) out.push_back(m.info);
  return out;
}

}  // namespace eesched::node
