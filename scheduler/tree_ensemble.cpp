#include "scheduler/tree_ensemble.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace eesched::scheduler {

TreeEnsemble TreeEnsemble::from_xgboost_json(const nlohmann::json& j) {
  TreeEnsemble e;
  try {
    const auto& learner = j.at("learner");
    const auto& params = learner.at("learner_model_param");
    e.base_score_ = std::stof(params.at("base_score").get<std::string>());
    e.features_ = std::stoll(params.at("num_feature").get<std::string>());
    if (params.value("num_class", "0") != "0" || params.value("num_target", "1") != "1")
      throw std::runtime_error("only single-target regression models are supported");
    const auto& booster = learner.at("gradient_booster");
    if (booster.at("name") != "gbtree") throw std::runtime_error("only gbtree models are supported");
    for (const auto& t : booster.at("model").at("trees")) {
      const auto left = t.at("left_children").get<std::vector<int32_t>>();
      const auto right = t.at("right_children").get<std::vector<int32_t>>();
      const auto cond = t.at("split_conditions").get<std::vector<float>>();
      const auto index = t.at("split_indices").get<std::vector<int32_t>>();
      const auto dleft = t.at("default_left").get<std::vector<int32_t>>();
      for (const auto type : t.value("split_type", std::vector<int32_t>{}))
        if (type != 0) throw std::runtime_error("categorical splits are not supported");
      const std::size_t count = left.size();
      if (right.size() != count || cond.size() != count || index.size() != count || dleft.size() != count || count == 0)
        throw std::runtime_error("a tree with inconsistent node arrays");
      // Breadth first from the root (node 0), each node's two children allocated side by side.
      const auto root = static_cast<int32_t>(e.nodes_.size());
      e.roots_.push_back(root);
      e.nodes_.emplace_back();
      std::vector<std::pair<int32_t, int32_t>> queue = {{0, root}};  // (XGBoost id, our index)
      for (std::size_t q = 0; q < queue.size(); ++q) {
        const auto [id, at] = queue[q];
        const auto n = static_cast<std::size_t>(id);
        Node node;
        node.value = cond[n];
        if (left[n] >= 0) {
          if (left[n] >= static_cast<int32_t>(count) || right[n] < 0 || right[n] >= static_cast<int32_t>(count) ||
              queue.size() > count)
            throw std::runtime_error("a tree whose children are out of range");
          if (index[n] < 0 || index[n] >= e.features_) throw std::runtime_error("split on feature " + std::to_string(index[n]));
          node.feature = index[n] | (dleft[n] != 0 ? kDefaultLeft : 0);
          node.left = static_cast<int32_t>(e.nodes_.size());
          e.nodes_.emplace_back();
          e.nodes_.emplace_back();
          queue.emplace_back(left[n], node.left);
          queue.emplace_back(right[n], node.left + 1);
        }
        e.nodes_[static_cast<std::size_t>(at)] = node;
      }
    }
  } catch (const nlohmann::json::exception& ex) {
    throw std::runtime_error(std::string("not an XGBoost JSON model: ") + ex.what());
  }
  return e;
}

float TreeEnsemble::walk(int32_t root, const float* row) const {
  const Node* n = &nodes_[static_cast<std::size_t>(root)];
  while (n->feature >= 0) {
    const float x = row[n->feature & kFeatureMask];
    const bool left = std::isnan(x) ? (n->feature & kDefaultLeft) != 0 : x < n->value;
    n = &nodes_[static_cast<std::size_t>(n->left + (left ? 0 : 1))];
  }
  return n->value;
}

float TreeEnsemble::predict(const float* row) const {
  float sum = base_score_;
  for (const auto root : roots_) sum += walk(root, row);
  return sum;
}

void TreeEnsemble::predict_rows(const float* rows, std::size_t n, float* out) const {
  for (std::size_t i = 0; i < n; ++i) out[i] = base_score_;
  const auto cols = static_cast<std::size_t>(features_);
  for (const auto root : roots_)
    for (std::size_t i = 0; i < n; ++i) out[i] += walk(root, rows + i * cols);
}

}  // namespace eesched::scheduler
