#include "ee/manifest.h"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/error.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/error.h"

namespace eesched::ee {

std::optional<Manifest> Manifest::read(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "ee.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  std::ifstream in(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    Manifest m;
    m.scheme = j.at("scheme").get<std::string>();
    m.version = j.at("version").get<int>();
    m.key_fingerprint = j.at("key_fingerprint").get<std::string>();
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    m.transforms = j.at("transforms").get<std::vector<std::string>>();
    if (j.contains("quality")) {
      try {
        m.quality = data::quality_from_json(j.at("quality"));
      } catch (const data::Error& e) {
        throw runtime::Error(path.string() + ": " + e.what());
      }
    }
    if (m.scheme != kScheme) throw runtime::Error(path.string() + ": unknown scheme '" + m.scheme + "'");
    if (m.version != kSchemeVersion)
      throw runtime::Error(path.string() + ": EE scheme version " + std::to_string(m.version) + " is not supported");
    if (std::find(m.transforms.begin(), m.transforms.end(), kContinuousRotationTransform) != m.transforms.end())
      throw runtime::Error(path.string() + ": encrypted by an earlier eesched with continuous q/k rotations, which int8/bf16/f16 "
                                           "arms cannot keep exact: encrypt the plaintext model again (eesched encrypt-model)");
    return m;
  } catch (const nlohmann::json::exception&) {
    throw runtime::Error(path.string() + ": malformed EE manifest");
  }
}

void Manifest::write(const std::filesystem::path& model_dir) const {
  nlohmann::json j = {{"scheme", scheme},
                      {"version", version},
                      {"key_fingerprint", key_fingerprint},
                      {"vocab_size", vocab_size},
                      {"transforms", transforms},
                      {"quality", data::quality_to_json(quality)}};
  std::ofstream out(model_dir / "ee.json");
  out << j.dump(2) << "\n";
  out.flush();
  if (!out) throw runtime::Error("cannot write " + (model_dir / "ee.json").string());
}

void Manifest::check_key(const Key& key) const {
  if (key.fingerprint() != key_fingerprint)
    throw runtime::Error("wrong key: the model was encrypted with key " + key_fingerprint + ", this key is " + key.fingerprint());
}

}  // namespace eesched::ee
