#include "scheduler/selector.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <fstream>
#include <sstream>
#include <set>
#include <stdexcept>

#include "data/features.h"
#include "data/roofline.h"
#include "data/time.h"

namespace eesched::scheduler {
namespace {

constexpr const char* kFormat = "eesched-selector";

// The reference arm of the log_ratio_to_kv target.
const data::Arm& kv_arm() {
  static const data::Arm kv = data::parse_arm("kv");
  return kv;
}

void append(std::vector<float>& x, const std::vector<double>& f) {
  for (const double v : f) x.push_back(static_cast<float>(v));
}

}  // namespace

Selector Selector::train(const History& h, const TrainOptions& o) {
  if (o.target != "log_latency" && o.target != "log_ratio_to_kv")
    throw std::runtime_error("unknown selector target '" + o.target + "' (log_latency or log_ratio_to_kv)");
  const bool relative = o.target == "log_ratio_to_kv";
  const data::Arm& kv = kv_arm();
  std::vector<float> x, y, xb, yb;
  for (const auto& c : h.cases) {
    const auto kv_ms = c.latency.find("kv");
    if (relative && kv_ms == c.latency.end()) continue;  // no reference on this task
    const double ref = relative ? std::log(std::max(1e-3, kv_ms->second)) : 0.0;
    for (const auto& arm : c.arms) {
      append(x, case_features(c, arm));
      y.push_back(static_cast<float>(std::log(std::max(1e-3, c.latency.at(arm.name))) - ref));
    }
    if (relative) {
      append(xb, case_features(c, kv));
      yb.push_back(static_cast<float>(ref));
    }
  }
  if (y.empty()) throw std::runtime_error("no measured runs to train on (run eesched bench first)");
  const auto cols = static_cast<int64_t>(data::feature_names().size());
  const std::map<std::string, std::string> params = {
      {"objective", "reg:squarederror"}, {"tree_method", "hist"},        {"max_depth", std::to_string(o.max_depth)},
      {"eta", std::to_string(o.eta)},    {"subsample", std::to_string(o.subsample)}, {"seed", std::to_string(o.seed)},
      {"nthread", std::to_string(o.threads)}, {"verbosity", "0"}};
  Selector s;
  s.target_ = o.target;
  s.model_ = XgbModel::train(x, cols, y, params, o.rounds);
  s.ensemble_ = TreeEnsemble::from_xgboost_json(nlohmann::json::parse(s.model_.to_json()));
  if (relative) {
    s.base_ = XgbModel::train(xb, cols, yb, params, o.rounds);
    s.base_ensemble_ = TreeEnsemble::from_xgboost_json(nlohmann::json::parse(s.base_.to_json()));
  }
  s.feature_names_ = data::feature_names();
  for (const auto& a : data::arm_catalog()) s.arms_.push_back(a.name);
  if (o.anchor_margin < 0) throw std::runtime_error("anchor margin must be >= 0");
  s.anchor_margin_ = o.anchor_margin;
  s.anchor_ranking_ = arms_by_mean_slowdown(h);  // also the coordinator's single-best fallback
  std::set<int64_t> tasks, workers;
  for (const auto& c : h.cases) tasks.insert(c.task_id), workers.insert(c.worker_id);
  s.training_ = {{"cases", h.cases.size()},   {"runs", y.size()},         {"tasks", tasks.size()},
                 {"workers", workers.size()}, {"rounds", o.rounds},      {"max_depth", o.max_depth},
                 {"eta", o.eta},              {"seed", o.seed},          {"target", o.target},
                 {"anchor_margin", o.anchor_margin},
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
                      {"target", target_},
                      {"xgboost", nlohmann::json::parse(model_.to_json())}};
  if (target_ == "log_ratio_to_kv") j["xgboost_base"] = nlohmann::json::parse(base_.to_json());
  j["anchor"] = {{"margin", anchor_margin_}, {"ranking", anchor_ranking_}};
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
  if (j.contains("anchor")) {  // optional: selectors without it choose by prediction alone
    s.anchor_margin_ = j.at("anchor").at("margin").get<double>();
    s.anchor_ranking_ = j.at("anchor").at("ranking").get<std::vector<std::string>>();
    if (s.anchor_margin_ < 0) throw std::runtime_error(path.string() + ": negative anchor margin");
  }
  s.target_ = j.value("target", "log_latency");
  if (s.target_ != "log_latency" && s.target_ != "log_ratio_to_kv")
    throw std::runtime_error(path.string() + ": unknown target '" + s.target_ + "'");
  s.model_ = XgbModel::from_json(j.at("xgboost").dump());
  s.ensemble_ = TreeEnsemble::from_xgboost_json(j.at("xgboost"));
  if (s.target_ == "log_ratio_to_kv") {
    s.base_ = XgbModel::from_json(j.at("xgboost_base").dump());
    s.base_ensemble_ = TreeEnsemble::from_xgboost_json(j.at("xgboost_base"));
  }
  if (s.ensemble_.features() != static_cast<int64_t>(s.feature_names_.size()))
    throw std::runtime_error(path.string() + ": the model has " + std::to_string(s.ensemble_.features()) + " features, the file lists " +
                             std::to_string(s.feature_names_.size()));
  return s;
}

std::vector<double> Selector::predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  std::vector<float> rows;
  rows.reserve((arms.size() + 1) * feature_names_.size());
  double base = 0;
  if (target_ == "log_ratio_to_kv") {
    append(rows, case_features(c, kv_arm()));
    base = base_ensemble_.predict(rows.data());
    rows.clear();
  }
  for (const auto& arm : arms) append(rows, case_features(c, arm));
  std::vector<float> log_ms(arms.size());
  ensemble_.predict_rows(rows.data(), arms.size(), log_ms.data());
  std::vector<double> out;
  out.reserve(arms.size());
  for (const float v : log_ms) out.push_back(std::exp(base + static_cast<double>(v)));
  return out;
}

std::vector<double> Selector::predict_ms_xgboost(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  const auto cols = static_cast<int64_t>(feature_names_.size());
  std::vector<float> x;
  for (const auto& arm : arms) append(x, case_features(c, arm));
  double base = 0;
  if (target_ == "log_ratio_to_kv") {
    std::vector<float> xb;
    append(xb, case_features(c, kv_arm()));
    base = base_.predict(xb, cols)[0];
  }
  std::vector<double> out;
  for (const float v : model_.predict(x, cols)) out.push_back(std::exp(base + static_cast<double>(v)));
  return out;
}

std::vector<double> Selector::anchored(const std::vector<data::Arm>& arms, std::vector<double> ms) const {
  if (anchor_margin_ <= 0) return ms;
  for (const auto& name : anchor_ranking_) {
    const auto it = std::find_if(arms.begin(), arms.end(), [&](const data::Arm& a) { return a.name == name; });
    if (it == arms.end()) continue;
    for (std::size_t i = 0; i < arms.size(); ++i)
      if (arms[i].name != name) ms[i] *= 1 + anchor_margin_;
    break;
  }
  return ms;
}

data::Arm Selector::choose(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  // choose_worker_arm() on one worker with nothing queued, without copying the case.
  if (arms.empty()) throw std::runtime_error("no applicable arm to choose from");
  const auto scores = anchored(arms, predict_ms(c, arms));
  return arms[static_cast<std::size_t>(std::min_element(scores.begin(), scores.end()) - scores.begin())];
}

double batch_slowdown(const TaskCase& c, const data::Arm& arm, int64_t occupancy) {
  if (occupancy <= 1 || !arm.kv_cache || arm.batch_one || c.spec.batch != 1) return 1.0;
  auto spec = c.spec;
  const auto alone = data::estimate_roofline(spec, c.model, nullptr, c.hardware, arm, std::nullopt).step_ms;
  spec.batch = occupancy;
  const auto shared = data::estimate_roofline(spec, c.model, nullptr, c.hardware, arm, std::nullopt).step_ms;
  return alone > 0 ? std::max(1.0, shared / alone) : 1.0;
}

Choice Selector::choose_worker_arm(const std::vector<WorkerOption>& workers) const {
  if (workers.empty()) throw std::runtime_error("no live worker holds the model");
  Choice best;
  double best_score = std::numeric_limits<double>::infinity();
  for (const auto& w : workers) {
    const auto& arms = w.task.arms;
    if (arms.empty()) continue;
    const auto ms = predict_ms(w.task, arms);
    const auto scores = anchored(arms, ms);
    for (std::size_t i = 0; i < arms.size(); ++i) {
      const double score = (w.queue_ms + scores[i] * batch_slowdown(w.task, arms[i], w.occupancy)) * w.cost_weight;
      if (score < best_score) best_score = score, best = {w.id, arms[i], ms[i], false};
    }
  }
  if (best.arm.name.empty()) throw std::runtime_error("no applicable arm to choose from");
  return best;
}

}  // namespace eesched::scheduler
