#include "node/encrypted_models.h"

#include <stdexcept>

#include "ee/manifest.h"
#include "ee/transform.h"
#include "node/model_row.h"
#include "runtime/model.h"

namespace eesched::node {

LoadedModel load_encrypted(const std::string& name, const std::filesystem::path& dir, bool draft) {
  if (!std::filesystem::is_directory(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  const auto manifest = ee::Manifest::read(dir);
  if (!manifest)
    throw std::runtime_error("model " + dir.string() + " is not encrypted (no ee.json): a worker serves encrypted models only");
  LoadedModel m;
  m.model = std::make_shared<const runtime::LlamaModel>(runtime::LlamaModel::load(dir));
  auto& row = m.info.row;
  row = model_row(name, ee::model_fingerprint(*m.model), m.model->config(), m.model->weight_bytes(), m.model->dtype_label(), /*encrypted=*/true);
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
