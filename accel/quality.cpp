#include "accel/quality.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <tuple>

#include <nlohmann/json.hpp>

#include "accel/registry.h"
#include "accel/registry_internal.h"
#include "data/arm.h"
#include "data/error.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"

namespace eesched::accel {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// The arm that applies exactly this transform (kv + its lossy components).
data::Arm transform_arm(const std::string& key) { return data::parse_arm("kv+" + key); }

double agreement(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  if (a.size() != b.size() || a.empty()) throw runtime::Error("quality: predictions of different lengths");
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(a.size());
}

// A lossy transform split by stage: the components that change the model's shape (pruning) and
// those applied on top of it (int8): "int8+prune20" -> {"prune20", "int8"}.
struct Split {
  std::string shape, rest;
};
Split split_by_stage(const data::Arm& arm) {
  Split out;
  for (const auto& c : arm.components()) {
    const auto a = make_acceleration(c);
    if (a->lossless()) continue;
    auto& to = a->stage() == kStageShape ? out.shape : out.rest;
    to += (to.empty() ? "" : "+") + c;
  }
  return out;
}

// By pruning level (the FFN neurons removed), then fewer transforms first: int8, prune10,
// int8+prune10, ...
std::vector<std::string> in_order(std::vector<data::Arm> arms) {
  auto rank = [](const data::Arm& a) {
    return std::make_tuple(a.effects.ffn_prune_percent, std::count(a.lossy_key.begin(), a.lossy_key.end(), '+'), a.lossy_key);
  };
  std::sort(arms.begin(), arms.end(), [&](const data::Arm& a, const data::Arm& b) { return rank(a) < rank(b); });
  std::vector<std::string> keys;
  for (const auto& arm : arms) {
    const auto key = data::quality_key(arm);
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  }
  return keys;
}

}  // namespace

std::vector<std::string> default_quality_transforms() {
  std::vector<data::Arm> arms;
  for (const auto& arm : data::arm_catalog())
    if (!arm.lossless()) arms.push_back(transform_arm(data::quality_key(arm)));
  for (const char* key : {"int8", "bf16", "f16", "prune10", "prune20", "prune30", "int8+prune10", "int8+prune20", "int8+prune30"})
    arms.push_back(transform_arm(key));
  return in_order(arms);
}

std::vector<std::string> ordered_keys(const data::QualityTable& table) {
  std::vector<data::Arm> arms;
  for (const auto& [key, q] : table) arms.push_back(transform_arm(key));
  return in_order(arms);
}

std::vector<std::string> parse_quality_transforms(const std::string& list) {
  std::vector<std::string> keys;
  std::size_t start = 0;
  while (true) {
    const auto comma = list.find(',', start);
    const auto entry = trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    const std::string bad =
        "'" + entry + "' is not a lossy weight transform (" + data::lossy_components() + ", or several joined by '+')";
    if (entry.empty()) throw data::Error("empty entry in the transform list '" + list + "'");
    data::Arm arm;
    try {
      arm = transform_arm(entry);
    } catch (const data::Error&) {
      throw data::Error(bad);
    }
    const auto key = data::quality_key(arm);
    // Only weight transforms: "int8+spec4" names a decoding scheme too, whose quality is int8's.
    if (key.empty() || transform_arm(key).name != arm.name) throw data::Error(bad);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) throw data::Error("transform '" + key + "' listed twice");
    keys.push_back(key);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return keys;
}

data::QualityTable measure_quality(const runtime::LlamaModel& model, const std::vector<int64_t>& heldout,
                                   const QualityOptions& options) {
  const auto& c = model.config();
  if (heldout.size() < 2) throw runtime::Error("quality: need at least 2 held-out tokens");
  for (const auto id : heldout)
    if (id < 0 || id >= c.vocab_size)
      throw runtime::Error("quality: held-out token id " + std::to_string(id) + " outside the model's vocabulary of " +
                           std::to_string(c.vocab_size));
  if (options.context < 2) throw runtime::Error("quality: the perplexity window must be at least 2 tokens");
  std::vector<std::string> keys = options.transforms.empty() ? default_quality_transforms() : options.transforms;
  auto progress = [&](const std::string& what) {
    if (options.progress) options.progress(what);
  };
  ModelPair base;
  base.target = std::make_shared<const runtime::LlamaModel>(model);
  // A transform the model refuses (bf16 or f16 of a 16-bit checkpoint) is not measured: with no
  // figure recorded, the quality floor refuses its arm too, as the worker would.
  data::TaskSpec tolerant;
  tolerant.quality = data::Quality::Tolerant;
  // Grouped by their shape-changing part (the pruning level), so each pruned model is built once
  // and dropped before the next; the rest (int8) is applied on top of it.
  std::map<std::pair<int, std::string>, std::vector<data::Arm>> by_level;
  for (const auto& key : keys) {
    const auto arm = transform_arm(key);
    if (arm.lossless() || data::quality_key(arm) != key) throw runtime::Error("quality: '" + key + "' is not a canonical lossy transform");
    if (const auto why = arm_refusal(arm, tolerant, base)) {
      progress("not measuring " + key + ": " + *why);
      continue;
    }
    by_level[{arm.effects.ffn_prune_percent, split_by_stage(arm).shape}].push_back(arm);
  }

  runtime::PerplexityOptions po;
  po.context = std::min(options.context, c.max_position_embeddings);
  po.predictions = true;
  progress("scoring the lossless model on " + std::to_string(heldout.size()) + " held-out tokens");
  const auto reference = runtime::perplexity(*base.target, heldout, po);

  data::QualityTable table;
  for (const auto& [level_key, arms] : by_level) {
    const auto& shape = level_key.second;
    const ModelPair level = shape.empty() ? base : build_arm(transform_arm(shape), base).models;
    for (const auto& arm : arms) {
      const auto key = data::quality_key(arm);
      const auto rest = split_by_stage(arm).rest;
      const auto target = rest.empty() ? level.target : build_arm(transform_arm(rest), level).models.target;
      progress("scoring " + key);
      const auto r = runtime::perplexity(*target, heldout, po);
      table[key] = {r.perplexity / reference.perplexity, agreement(reference.predictions, r.predictions)};
    }
  }
  return table;
}

std::optional<data::QualityTable> read_quality_file(const std::filesystem::path& model_dir) {
  const auto path = model_dir / kQualityFile;
  if (!std::filesystem::exists(path)) return std::nullopt;
  std::ifstream in(path);
  try {
    return data::quality_from_json(nlohmann::json::parse(in));
  } catch (const nlohmann::json::exception&) {
    throw runtime::Error(path.string() + ": malformed JSON");
  } catch (const data::Error& e) {
    throw runtime::Error(path.string() + ": " + e.what());
  }
}

void write_quality_file(const std::filesystem::path& model_dir, const data::QualityTable& table) {
  const auto path = model_dir / kQualityFile;
  const auto tmp = model_dir / (std::string(kQualityFile) + ".tmp");
  {
    std::ofstream out(tmp);
    out << data::quality_to_json(table).dump(2) << "\n";
    out.flush();
    if (!out) throw runtime::Error("cannot write " + path.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw runtime::Error("cannot write " + path.string() + ": " + ec.message());
}

}  // namespace eesched::accel
