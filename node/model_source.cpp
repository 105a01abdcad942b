#include "node/model_source.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "accel/quality.h"
#include "data/error.h"
#include "ee/manifest.h"
#include "ee/transform.h"
#include "node/model_row.h"
#include "runtime/synthetic.h"

namespace eesched::node {
namespace {

// A random-init preset has no text to be measured on and no directory to ship figures in: its
// catalog transforms are measured at load on this many seeded uniform token ids (one window),
// so the sweep can admit its lossy arms. A few forward passes: cheap next to the sweep.
constexpr int64_t kSyntheticQualityTokens = 256;

data::QualityTable synthetic_quality(const std::string& name, const runtime::LlamaModel& model) {
  const auto start = std::chrono::steady_clock::now();
  accel::QualityOptions options;
  for (const auto& arm : data::arm_catalog()) {
    const auto key = data::quality_key(arm);
    if (!key.empty() && std::find(options.transforms.begin(), options.transforms.end(), key) == options.transforms.end())
      options.transforms.push_back(key);
  }
  options.context = kSyntheticQualityTokens;
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, model.config().vocab_size - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(kSyntheticQualityTokens));
  for (auto& id : ids) id = pick(rng);
  auto table = accel::measure_quality(model, ids, options);
  spdlog::info("{}: quality of {} lossy transforms measured on {} seeded tokens in {:.1f} s", name, table.size(),
               kSyntheticQualityTokens, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return table;
}

}  // namespace

ModelSource::ModelSource(std::filesystem::path dir, std::optional<ee::Key> key) : dir_(std::move(dir)), key_(std::move(key)) {}

const SweepModel& ModelSource::get(const std::string& name, data::Store& store) {
  auto it = models_.find(name);
  if (it != models_.end()) return it->second;
  SweepModel m;
  const auto path = dir_ / name;
  std::shared_ptr<runtime::LlamaModel> plain;
  if (std::filesystem::is_directory(path)) {
    plain = std::make_shared<runtime::LlamaModel>(runtime::LlamaModel::load(path));
    if (std::filesystem::exists(path / "tokenizer.json") || std::filesystem::exists(path / "tokenizer.model"))
      m.tokenizer = runtime::Tokenizer::load(path);  // tokenizer.json preferred
    // What the owner measured: ee.json of an encrypted directory, quality.json of a plaintext one.
    if (const auto manifest = ee::Manifest::read(path)) m.row.quality = manifest->quality;
    else if (auto quality = accel::read_quality_file(path)) m.row.quality = std::move(*quality);
  } else if (name.rfind("syn", 0) == 0) {
    plain = std::make_shared<runtime::LlamaModel>(runtime::random_model(runtime::synthetic_config(name.substr(3)), 0));
    m.row.quality = synthetic_quality(name, *plain);
  } else {
    throw data::Error("model '" + name + "': no directory " + path.string() + " (and not a synthetic preset like syn110m)");
  }
  if (key_) {
    m.model = std::make_shared<const runtime::LlamaModel>(ee::encrypt_model(*plain, *key_, ee::model_fingerprint(*plain)));
  } else {
    m.model = plain;
  }
  auto quality = std::move(m.row.quality);
  m.row = model_row(name, ee::model_fingerprint(*m.model), m.model->config(), m.model->weight_bytes(), m.model->dtype_label(), key_.has_value());
  m.row.quality = std::move(quality);
  m.row.id = store.upsert_model(m.row);
  return models_.emplace(name, std::move(m)).first->second;
}

}  // namespace eesched::node
