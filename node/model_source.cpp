#include "node/model_source.h"

#include "data/error.h"
#include "ee/transform.h"
#include "runtime/synthetic.h"

namespace eesched::node {

ModelSource::ModelSource(std::filesystem::path dir, std::optional<ee::Key> key) : dir_(std::move(dir)), key_(std::move(key)) {}

const SweepModel& ModelSource::get(const std::string& name, data::Store& store) {
  auto it = models_.find(name);
  if (it != models_.end()) return it->second;
  SweepModel m;
  const auto path = dir_ / name;
  std::shared_ptr<runtime::LlamaModel> plain;
  if (std::filesystem::is_directory(path)) {
    plain = std::make_shared<runtime::LlamaModel>(runtime::LlamaModel::load(path));
    if (std::filesystem::exists(path / "tokenizer.model")) m.tokenizer = runtime::Tokenizer::load(path / "tokenizer.model");
  } else if (name.rfind("syn", 0) == 0) {
    plain = std::make_shared<runtime::LlamaModel>(runtime::random_model(runtime::synthetic_config(name.substr(3)), 0));
  } else {
    throw data::Error("model '" + name + "': no directory " + path.string() + " (and not a synthetic preset like syn110m)");
  }
  if (key_) {
    m.model = std::make_shared<const runtime::LlamaModel>(ee::encrypt_model(*plain, *key_, ee::model_fingerprint(*plain)));
  } else {
    m.model = plain;
  }
  const auto& c = m.model->config();
  m.row.name = name;
  m.row.fingerprint = ee::model_fingerprint(*m.model);
  m.row.layers = c.num_hidden_layers, m.row.hidden = c.hidden_size, m.row.intermediate = c.intermediate_size;
  m.row.heads = c.num_attention_heads, m.row.kv_heads = c.num_key_value_heads, m.row.vocab = c.vocab_size;
  m.row.parameters = c.parameter_count();
  m.row.weight_bytes = m.model->weight_bytes();
  m.row.dtype = "f32";
  m.row.encrypted = key_.has_value();
  m.row.id = store.upsert_model(m.row);
  return models_.emplace(name, std::move(m)).first->second;
}

}  // namespace eesched::node
