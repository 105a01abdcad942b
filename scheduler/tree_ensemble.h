#pragma once
// A trained XGBoost regression model evaluated by our own code: the trees are read from
// XGBoost's JSON once, flattened, and walked directly. A decision scores ~6 arms; going through
// XGBoost's C API costs a DMatrix and a trip through its thread pool per call (p99 in the
// milliseconds when the machine is busy), the flat walk a few microseconds. Tests check it
// agrees with XGBoost's own predictions.
#include <cstdint>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace eesched::scheduler {

class TreeEnsemble {
 public:
  // From XGBoost's JSON model (gbtree, one target, numerical splits); throws otherwise.
  static TreeEnsemble from_xgboost_json(const nlohmann::json& model);

  // base_score + the sum of every tree's leaf for this row (NaN = missing: the default branch).
  float predict(const float* row) const;
  int64_t features() const { return features_; }
  std::size_t trees() const { return roots_.size(); }

 private:
  struct Node {
    int32_t feature = -1;  // -1: leaf
    float value = 0;       // split threshold (go left when x < value), or the leaf value
    int32_t left = -1, right = -1;
    bool default_left = false;
  };
  std::vector<Node> nodes_;
  std::vector<int32_t> roots_;
  float base_score_ = 0;
  int64_t features_ = 0;
};

}  // namespace eesched::scheduler
