#include "scheduler/selector.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <random>
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
  if (o.members < 1) throw std::runtime_error("a selector needs at least one member");
  if (o.risk < 0) throw std::runtime_error("risk must be >= 0");
  if (o.anchor_margin < 0) throw std::runtime_error("anchor margin must be >= 0");
  const bool relative = o.target == "log_ratio_to_kv";
  const data::Arm& kv = kv_arm();
  const auto& names = data::feature_names();
  const auto cols = static_cast<int64_t>(names.size());
  std::vector<std::size_t> excluded_columns;
  for (const auto& e : o.excluded) {
    const auto it = std::find(names.begin(), names.end(), e);
    if (it == names.end()) throw std::runtime_error("cannot exclude unknown feature '" + e + "'");
    excluded_columns.push_back(static_cast<std::size_t>(it - names.begin()));
  }
  const std::map<std::string, std::string> params = {
      {"objective", "reg:squarederror"}, {"tree_method", "hist"},        {"max_depth", std::to_string(o.max_depth)},
      {"eta", std::to_string(o.eta)},    {"subsample", std::to_string(o.subsample)}, {"seed", std::to_string(o.seed)},
      {"nthread", std::to_string(o.threads)}, {"verbosity", "0"}};
  // Rows of the arm model for one case (its features with the excluded ones missing), and of
  // the base model.
  std::vector<float> xb, yb;
  auto arm_rows = [&](const TaskCase& c, std::vector<float>& x, std::vector<float>& y) {
    const auto kv_ms = c.latency.find("kv");
    if (relative && kv_ms == c.latency.end()) return;  // no reference on this task
    const double ref = relative ? std::log(std::max(1e-3, kv_ms->second)) : 0.0;
    for (const auto& arm : c.arms) {
      auto f = case_features(c, arm);
      for (const auto col : excluded_columns) f[col] = std::numeric_limits<double>::quiet_NaN();
      append(x, f);
      y.push_back(static_cast<float>(std::log(std::max(1e-3, c.latency.at(arm.name))) - ref));
    }
  };
  std::vector<int64_t> tasks;
  std::map<int64_t, std::vector<const TaskCase*>> by_task;
  for (const auto& c : h.cases) by_task[c.task_id].push_back(&c);
  for (const auto& [task, cases] : by_task) tasks.push_back(task);
  Selector s;
  s.target_ = o.target;
  std::size_t runs = 0;
  for (int m = 0; m < o.members; ++m) {
    // Member 0 of a single-member selector sees every task once; members of an ensemble each see
    // a bootstrap resample of the tasks (all of a task's workers together).
    std::vector<float> x, y;
    std::mt19937_64 rng(o.seed + static_cast<uint64_t>(m) * 7919);
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const int64_t task = o.members == 1 ? tasks[i] : tasks[std::uniform_int_distribution<std::size_t>(0, tasks.size() - 1)(rng)];
      for (const auto* c : by_task.at(task)) arm_rows(*c, x, y);
    }
    if (y.empty()) throw std::runtime_error("no measured runs to train on (run eesched bench first)");
    if (m == 0) runs = y.size();
    auto params_m = params;
    params_m["seed"] = std::to_string(o.seed + static_cast<uint64_t>(m));
    s.models_.push_back(XgbModel::train(x, cols, y, params_m, o.rounds));
    s.ensembles_.push_back(TreeEnsemble::from_xgboost_json(nlohmann::json::parse(s.models_.back().to_json())));
  }
  if (relative) {
    for (const auto& c : h.cases) {
      const auto kv_ms = c.latency.find("kv");
      if (kv_ms == c.latency.end()) continue;
      append(xb, case_features(c, kv));
      yb.push_back(static_cast<float>(std::log(std::max(1e-3, kv_ms->second))));
    }
    s.base_ = XgbModel::train(xb, cols, yb, params, o.rounds);
    s.base_ensemble_ = TreeEnsemble::from_xgboost_json(nlohmann::json::parse(s.base_.to_json()));
  }
  s.feature_names_ = names;
  s.excluded_ = o.excluded;
  s.risk_ = o.risk;
  for (const auto& a : data::arm_catalog()) s.arms_.push_back(a.name);
  s.anchor_margin_ = o.anchor_margin;
  s.anchor_ranking_ = arms_by_mean_slowdown(h);  // also the coordinator's single-best fallback
  std::set<int64_t> workers;
  std::set<std::string> machines;
  for (const auto& c : h.cases) workers.insert(c.worker_id), machines.insert(c.machine);
  s.training_ = {{"cases", h.cases.size()},   {"runs", runs},            {"tasks", tasks.size()},
                 {"workers", workers.size()}, {"machines", machines},    {"rounds", o.rounds},
                 {"max_depth", o.max_depth},  {"eta", o.eta},            {"seed", o.seed},
                 {"target", o.target},        {"members", o.members},    {"anchor_margin", o.anchor_margin},
                 {"trained_at", data::iso_utc_now()}};
  return s;
}

void Selector::save(const std::filesystem::path& path) const {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : models_) members.push_back(nlohmann::json::parse(m.to_json()));
  nlohmann::json j = {{"format", kFormat},
                      {"version", kSelectorFileVersion},
                      {"feature_schema", data::kFeatureSchemaVersion},
                      {"feature_names", feature_names_},
                      {"excluded", excluded_},
                      {"arms", arms_},
                      {"training", training_},
                      {"target", target_},
                      {"risk", risk_},
                      {"xgboost", members}};
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
                             ", this eesched reads " + std::to_string(kSelectorFileVersion) + ": retrain with eesched train-selector");
  Selector s;
  try {
    s.feature_names_ = j.at("feature_names").get<std::vector<std::string>>();
    if (s.feature_names_ != data::feature_names() || j.value("feature_schema", 0) != data::kFeatureSchemaVersion)
      throw std::runtime_error(path.string() + ": trained on feature schema " + std::to_string(j.value("feature_schema", 0)) + " (" +
                               std::to_string(s.feature_names_.size()) + " features), this eesched computes schema " +
                               std::to_string(data::kFeatureSchemaVersion) + " (" + std::to_string(data::feature_names().size()) +
                               "): retrain with eesched train-selector");
    s.arms_ = j.at("arms").get<std::vector<std::string>>();
    s.excluded_ = j.value("excluded", std::vector<std::string>{});
    s.training_ = j.value("training", nlohmann::json::object());
    if (j.contains("anchor")) {  // optional: selectors without it choose by prediction alone
      s.anchor_margin_ = j.at("anchor").at("margin").get<double>();
      s.anchor_ranking_ = j.at("anchor").at("ranking").get<std::vector<std::string>>();
      if (s.anchor_margin_ < 0) throw std::runtime_error(path.string() + ": negative anchor margin");
    }
    s.risk_ = j.value("risk", 0.0);
    if (!(s.risk_ >= 0)) throw std::runtime_error(path.string() + ": negative risk");
    s.target_ = j.value("target", "log_latency");
    if (s.target_ != "log_latency" && s.target_ != "log_ratio_to_kv")
      throw std::runtime_error(path.string() + ": unknown target '" + s.target_ + "'");
    const auto& members = j.at("xgboost");
    if (!members.is_array() || members.empty()) throw std::runtime_error(path.string() + ": no arm model");
    for (const auto& m : members) {
      s.models_.push_back(XgbModel::from_json(m.dump()));
      s.ensembles_.push_back(TreeEnsemble::from_xgboost_json(m));
      if (s.ensembles_.back().features() != static_cast<int64_t>(s.feature_names_.size()))
        throw std::runtime_error(path.string() + ": the model has " + std::to_string(s.ensembles_.back().features()) +
                                 " features, the file lists " + std::to_string(s.feature_names_.size()));
    }
    if (s.target_ == "log_ratio_to_kv") {
      s.base_ = XgbModel::from_json(j.at("xgboost_base").dump());
      s.base_ensemble_ = TreeEnsemble::from_xgboost_json(j.at("xgboost_base"));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": malformed selector file (" + e.what() + ")");
  }
  return s;
}

void Selector::set_risk(double risk) {
  if (!(risk >= 0)) throw std::runtime_error("risk must be >= 0");
  risk_ = risk;
}

double Selector::base_log_ms(const TaskCase& c) const {
  if (target_ != "log_ratio_to_kv") return 0;
  std::vector<float> row;
  row.reserve(feature_names_.size());
  append(row, case_features(c, kv_arm()));
  return base_ensemble_.predict(row.data());
}

std::vector<Prediction> Selector::predict(const TaskCase& c, const std::vector<data::Arm>& arms, const Correction* correction) const {
  const double base = base_log_ms(c);
  std::vector<float> rows;
  rows.reserve(arms.size() * feature_names_.size());
  for (const auto& arm : arms) append(rows, case_features(c, arm));
  // Welford over the members, arm by arm.
  std::vector<double> mean(arms.size(), 0.0), m2(arms.size(), 0.0);
  std::vector<float> member(arms.size());
  for (std::size_t k = 0; k < ensembles_.size(); ++k) {
    ensembles_[k].predict_rows(rows.data(), arms.size(), member.data());
    for (std::size_t i = 0; i < arms.size(); ++i) {
      const double v = member[i], d = v - mean[i];
      mean[i] += d / static_cast<double>(k + 1);
      m2[i] += d * (v - mean[i]);
    }
  }
  std::vector<Prediction> out;
  out.reserve(arms.size());
  const auto n = static_cast<double>(ensembles_.size());
  for (std::size_t i = 0; i < arms.size(); ++i) {
    Prediction p{std::exp(base + mean[i]), n > 1 ? std::sqrt(m2[i] / (n - 1)) : 0.0};
    if (correction) {
      const auto a = correction->adjust(c, arms[i]);
      p.ms *= std::exp(a.log_shift);
      p.log_sd *= a.sd_scale;
    }
    out.push_back(p);
  }
  return out;
}

std::vector<double> Selector::predict_ms(const TaskCase& c, const std::vector<data::Arm>& arms) const {
  std::vector<double> out;
  for (const auto& p : predict(c, arms)) out.push_back(p.ms);
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
  std::vector<double> mean(arms.size(), 0.0);
  for (const auto& m : models_) {
    const auto v = m.predict(x, cols);
    for (std::size_t i = 0; i < arms.size(); ++i) mean[i] += static_cast<double>(v[i]) / static_cast<double>(models_.size());
  }
  std::vector<double> out;
  for (const double v : mean) out.push_back(std::exp(base + v));
  return out;
}

double Selector::risk_score(const Prediction& p) const { return p.ms * std::exp(risk_ * p.log_sd); }

std::vector<std::pair<std::string, double>> Selector::feature_contributions(const std::vector<TaskCase>& cases) const {
  const auto cols = static_cast<int64_t>(feature_names_.size());
  std::vector<float> x;
  std::size_t rows = 0;
  for (const auto& c : cases)
    for (const auto& arm : c.arms) append(x, case_features(c, arm)), ++rows;
  std::vector<double> sum(feature_names_.size(), 0.0);
  if (rows == 0) return {};
  const auto phi = models_.at(0).contributions(x, cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t f = 0; f < feature_names_.size(); ++f) sum[f] += std::abs(phi[r * static_cast<std::size_t>(cols + 1) + f]);
  std::vector<std::pair<std::string, double>> out;
  for (std::size_t f = 0; f < sum.size(); ++f) out.emplace_back(feature_names_[f], sum[f] / static_cast<double>(rows));
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
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

data::Arm Selector::choose(const TaskCase& c, const std::vector<data::Arm>& arms, const Correction* correction) const {
  // choose_worker_arm() on one worker with nothing queued, without copying the case.
  if (arms.empty()) throw std::runtime_error("no applicable arm to choose from");
  const auto predicted = predict(c, arms, correction);
  std::vector<double> risky;
  for (const auto& p : predicted) risky.push_back(risk_score(p));
  const auto scores = anchored(arms, std::move(risky));
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

Choice Selector::choose_worker_arm(const std::vector<WorkerOption>& workers, const Correction* correction) const {
  if (workers.empty()) throw std::runtime_error("no live worker holds the model");
  Choice best;
  double best_score = std::numeric_limits<double>::infinity();
  for (const auto& w : workers) {
    const auto& arms = w.task.arms;
    if (arms.empty()) continue;
    const auto predicted = predict(w.task, arms, correction);
    std::vector<double> risky;
    for (const auto& p : predicted) risky.push_back(risk_score(p));
    const auto scores = anchored(arms, std::move(risky));
    for (std::size_t i = 0; i < arms.size(); ++i) {
      const double score = (w.queue_ms + scores[i] * batch_slowdown(w.task, arms[i], w.occupancy)) * w.cost_weight;
      if (score < best_score) best_score = score, best = {w.id, arms[i], predicted[i].ms, predicted[i].log_sd, false};
    }
  }
  if (best.arm.name.empty()) throw std::runtime_error("no applicable arm to choose from");
  return best;
}

}  // namespace eesched::scheduler
