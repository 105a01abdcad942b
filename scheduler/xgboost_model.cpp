#include "scheduler/xgboost_model.h"

#include <xgboost/c_api.h>

#include <cmath>
#include <limits>
#include <stdexcept>

namespace eesched::scheduler {
namespace {

void check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string("XGBoost ") + what + ": " + XGBGetLastError());
}

// A DMatrix freed on scope exit.
struct Matrix {
  DMatrixHandle h = nullptr;
  Matrix(const std::vector<float>& x, int64_t cols) {
    const auto rows = cols ? x.size() / static_cast<std::size_t>(cols) : 0;
    check(XGDMatrixCreateFromMat(x.data(), rows, static_cast<bst_ulong>(cols), std::numeric_limits<float>::quiet_NaN(), &h),
          "DMatrix");
  }
  ~Matrix() {
    if (h) XGDMatrixFree(h);
  }
};

}  // namespace

XgbModel::XgbModel() = default;
XgbModel::~XgbModel() {
  if (booster_) XGBoosterFree(booster_);
}
XgbModel::XgbModel(XgbModel&& o) noexcept : booster_(o.booster_) { o.booster_ = nullptr; }
XgbModel& XgbModel::operator=(XgbModel&& o) noexcept {
  if (this != &o) {
    if (booster_) XGBoosterFree(booster_);
    booster_ = o.booster_;
    o.booster_ = nullptr;
  }
  return *this;
}

XgbModel XgbModel::train(const std::vector<float>& x, int64_t cols, const std::vector<float>& y,
                         const std::map<std::string, std::string>& params, int rounds) {
  if (cols <= 0 || x.size() != y.size() * static_cast<std::size_t>(cols) || y.empty())
    throw std::runtime_error("XGBoost training: " + std::to_string(y.size()) + " targets for " + std::to_string(x.size()) +
                             " values in " + std::to_string(cols) + " columns");
  Matrix m(x, cols);
  check(XGDMatrixSetFloatInfo(m.h, "label", y.data(), y.size()), "labels");
  XgbModel out;
  check(XGBoosterCreate(&m.h, 1, &out.booster_), "booster");
  for (const auto& [k, v] : params) check(XGBoosterSetParam(out.booster_, k.c_str(), v.c_str()), ("parameter " + k).c_str());
  for (int i = 0; i < rounds; ++i) check(XGBoosterUpdateOneIter(out.booster_, i, m.h), "training round");
  return out;
}

std::vector<float> XgbModel::predict_as(const std::vector<float>& x, int64_t cols, int type, std::size_t per_row) const {
  if (!booster_) throw std::runtime_error("XGBoost: no model");
  Matrix m(x, cols);
  const std::string config = R"({"type": )" + std::to_string(type) +
                             R"(, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false})";
  bst_ulong const* shape = nullptr;
  bst_ulong dim = 0;
  float const* result = nullptr;
  check(XGBoosterPredictFromDMatrix(booster_, m.h, config.c_str(), &shape, &dim, &result), "prediction");
  const auto rows = x.size() / static_cast<std::size_t>(cols);
  return std::vector<float>(result, result + rows * per_row);
}

std::vector<float> XgbModel::predict(const std::vector<float>& x, int64_t cols) const { return predict_as(x, cols, 0, 1); }

// type 2: SHAP values (TreeSHAP), one per feature plus the bias, summing to the prediction.
std::vector<float> XgbModel::contributions(const std::vector<float>& x, int64_t cols) const {
  return predict_as(x, cols, 2, static_cast<std::size_t>(cols + 1));
}

XgbModel::XgbModel(const XgbModel& other) : XgbModel() {
  if (other.booster_) *this = from_json(other.to_json());
}

XgbModel& XgbModel::operator=(const XgbModel& other) {
  if (this != &other) *this = other.booster_ ? from_json(other.to_json()) : XgbModel();
  return *this;
}

std::string XgbModel::to_json() const {
  if (!booster_) throw std::runtime_error("XGBoost: no model");
  bst_ulong len = 0;
  const char* data = nullptr;
  check(XGBoosterSaveModelToBuffer(booster_, R"({"format": "json"})", &len, &data), "save");
  return std::string(data, len);
}

XgbModel XgbModel::from_json(const std::string& json) {
  XgbModel out;
  check(XGBoosterCreate(nullptr, 0, &out.booster_), "booster");
  check(XGBoosterLoadModelFromBuffer(out.booster_, json.data(), json.size()), "load");
  return out;
}

}  // namespace eesched::scheduler
