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
  // The same for `n` rows (row-major, features() each) into out[0..n): tree by tree, so that each
  // tree's nodes are fetched once for all the arms of a decision.
  void predict_rows(const float* rows, std::size_t n, float* out) const;
  int64_t features() const { return features_; }
  std::size_t trees() const { return roots_.size(); }

 private:
  // 12 bytes, children side by side (right = left + 1), laid out breadth first per tree: a
  // decision walks ~1,500 nodes per arm, and the walk is bound by fetching them.
  static constexpr int32_t kDefaultLeft = 1 << 30;  // flag in `feature`: missing goes left
  static constexpr int32_t kFeatureMask = kDefaultLeft - 1;
  struct Node {
    int32_t feature = -1;  // < 0: leaf; else the feature index, | kDefaultLeft
    float value = 0;       // split threshold (go left when x < value), or the leaf value
    int32_t left = -1;     // index of the left child; the right one follows it
  };
  float walk(int32_t root, const float* row) const;
  std::vector<Node> nodes_;
  std::vector<int32_t> roots_;
  float base_score_ = 0;
  int64_t features_ = 0;
};

}  // namespace eesched::scheduler
