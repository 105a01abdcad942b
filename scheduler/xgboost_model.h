#pragma once
// A thin RAII wrapper over XGBoost's C API (Debian's CMake config for XGBoost is broken; we link
// the library directly): train a regressor on a dense matrix, predict, and round-trip the model
// as XGBoost's own JSON.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace eesched::scheduler {

class XgbModel {
 public:
  XgbModel();
  ~XgbModel();
  XgbModel(XgbModel&& other) noexcept;
  XgbModel& operator=(XgbModel&& other) noexcept;
  // A copy is a new booster loaded from this one's JSON (milliseconds: a retraining's candidate
  // and the learner that judges it each hold one).
  XgbModel(const XgbModel& other);
  XgbModel& operator=(const XgbModel& other);

  // Trains `rounds` boosting rounds on rows x (n x cols, row-major, NaN = missing) and targets y.
  static XgbModel train(const std::vector<float>& x, int64_t cols, const std::vector<float>& y,
                        const std::map<std::string, std::string>& params, int rounds);
  // One prediction per row.
  std::vector<float> predict(const std::vector<float>& x, int64_t cols) const;
  // SHAP contributions (XGBoost's TreeSHAP): per row, one value per feature and the bias last
  // (rows x (cols + 1)); each row sums to its prediction.
  std::vector<float> contributions(const std::vector<float>& x, int64_t cols) const;

  std::string to_json() const;
  static XgbModel from_json(const std::string& json);

 private:
  // XGBoost's prediction of `type` (0 values, 2 contributions), `per_row` floats per row.
  std::vector<float> predict_as(const std::vector<float>& x, int64_t cols, int type, std::size_t per_row) const;
  void* booster_ = nullptr;
};

}  // namespace eesched::scheduler
