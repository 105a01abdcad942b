#include "scheduler/selector.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <set>
#include <stdexcept>

#include "data/features.h"
#include "data/sqlite.h"

namespace eesched::scheduler {
namespace {

constexpr const char* kFormat = "eesched-selector";

void append(std::vector<float>& x, const std::vector<double>& f) {
  for (const double v : f) x.push_back(static_cast<float>(v));
}

}  // namespace

Selector Selector::train(const History& h, const TrainOptions& o) {
  std::vector<float> x, y;
  for (const auto& c : h.cases)
    for (const auto& arm : c.arms) {
      append(x, case_features(c, arm));
      y.push_back(static_cast<float>(std::log(std::max(1e-3, c.latency.at(arm.name)))));
    }
  if (y.empty()) throw std::runtime_error("no measured runs to train on (run eesched bench first)");
  const auto cols = static_cast<int64_t>(data::feature_names().size());
  const std::map<std::string, std::string> params = {
      {"objective", "reg:squarederror"}, {"tree_method", "hist"},        {"max_depth", std::to_string(o.max_depth)},
      {"eta", std::to_string(o.eta)},    {"subsample", std::to_string(o.subsample)}, {"seed", std::to_string(o.seed)},
      {"nthread", std::to_string(o.threads)}, {"verbosity", "0"}};
  Selector s;
  s.model_ = XgbModel::train(x, cols, y, params, o.rounds);
  s.ensemble_ = TreeEnsemble::from_xgboost_json(nlohmann::json::parse(s.model_.to_json()));
  s.feature_names_ = data::feature_names();
  for (const auto& a : data::arm_catalog()) s.arms_.push_back(a.name);
  std::set<int64_t> tasks, workers;
  for (const auto& c : h.cases) tasks.insert(c.task_id), workers.insert(c.worker_id);
  s.training_ = {{"cases", h.cases.size()},   {"runs", y.size()},         {"tasks", tasks.size()},
                 {"workers", workers.size()}, {"rounds", o.rounds},      {"max_depth", o.max_depth},
                 {"eta", o.eta},              {"seed", o.seed},          {"target", "log(latency_ms)"},
                 {"trained_at", data::iso_utc_now()}};
  return s;
}

void Selector::save(const std::filesystem::path& path) const {
  nlohmann::json j = {{"format", kFormat},
                      {"version", kSelectorFileVersion},
                      {"feature_schema", data::kFeatureSchemaVersion},
                      {"feature_names", feature_names_},
                      {"arms", arms_},
                      {"training", training_},
                      {"xgboost", nlohmann::json::parse(model_.to_json())}};
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << j.dump() << '\n';
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

Selector Selector::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read selector " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(path.string() + " is not a selector file (not JSON)");
  }
  if (!j.is_object() || j.value("format", "") != kFormat) throw std::runtime_error(path.string() + " is not an eesched selector file");
  if (j.value("version", 0) != kSelectorFileVersion)
    throw std::runtime_error(path.string() + ": selector file version " + std::to_string(j.value("version", 0)) +
                             ", this eesched reads " + std::to_string(kSelectorFileVersion));
  Selector s;
  s.feature_names_ = j.at("feature_names").get<std::vector<std::string>>();
  if (s.feature_names_ != data::feature_names() || j.value("feature_schema", 0) != data::kFeatureSchemaVersion)
    throw std::runtime_error(path.string() + ": trained on feature schema " + std::to_string(j.value("feature_schema", 0)) + " (" +
                             std::to_string(s.feature_names_.size()) + " features), this eesched computes schema " +
                             std::to_string(data::kFeatureSchemaVersion) + " (" + std::to_string(data::feature_names().size()) +
                             "): retrain with eesched train-selector");
  s.arms_ = j.at("arms").get<std::vector<std::string>>();
  s.training_ = j.value("training", nlohmann::json::object());
  s.model_ = XgbModel::from_json(j.at("xgboost").dump());
  s.ensemble_ = TreeEnsemble::from_xgboost_json(j.at("xgboost"));
  if (s.ensemble_.features() != static_cast<int64_t>(s.feature_names_.size()))
    throw std::runtime_error(path.string() + ": the model has " + std::to_string(s.ensemble_.features()) + " features, the file lists " +
                             std::to_string(s.feature_names_.size()));
  return s;
}

std::vector<double> Selector::predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  std::vector<double> out;
  std::vector<float> row;
  for (const auto& arm : arms) {
    row.clear();
    append(row, case_features(c, arm));
    out.push_back(std::exp(static_cast<double>(ensemble_.predict(row.data()))));
  }
  return out;
}

std::vector<double> Selector::predict_ms_xgboost(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  std::vector<float> x;
  for (const auto& arm : arms) append(x, case_features(c, arm));
  std::vector<double> out;
  for (const float v : model_.predict(x, static_cast<int64_t>(feature_names_.size()))) out.push_back(std::exp(static_cast<double>(v)));
  return out;
}

data::Arm Selector::choose(const TaskCase& c, const std::vector<data::Arm>& arms, double explore, std::mt19937_64* rng,
                           bool* explored) const {
  if (arms.empty()) throw std::runtime_error("no applicable arm to choose from");
  if (explored) *explored = false;
  const auto ms = predict_ms(c, arms);
  const auto best = static_cast<std::size_t>(std::min_element(ms.begin(), ms.end()) - ms.begin());
  // Exploration keeps history covering every arm: another arm than the predicted best, uniformly.
  if (rng && explore > 0 && arms.size() > 1 && std::uniform_real_distribution<double>(0, 1)(*rng) < explore) {
    if (explored) *explored = true;
    auto other = std::uniform_int_distribution<std::size_t>(0, arms.size() - 2)(*rng);
    return arms[other >= best ? other + 1 : other];
  }
  return arms[best];
}

}  // namespace eesched::scheduler
