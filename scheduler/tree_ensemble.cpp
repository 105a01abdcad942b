#include "scheduler/tree_ensemble.h"

#include <cmath>
#include <stdexcept>
#include <string>

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
      const auto offset = static_cast<int32_t>(e.nodes_.size());
      e.roots_.push_back(offset);
      for (std::size_t n = 0; n < left.size(); ++n) {
        Node node;
        node.value = cond.at(n);
        if (left[n] >= 0) {
          node.feature = index.at(n);
          if (node.feature < 0 || node.feature >= e.features_) throw std::runtime_error("split on feature " + std::to_string(node.feature));
          node.left = offset + left[n];
          node.right = offset + right.at(n);
          node.default_left = dleft.at(n) != 0;
        }
        e.nodes_.push_back(node);
      }
    }
  } catch (const nlohmann::json::exception& ex) {
    throw std::runtime_error(std::string("not an XGBoost JSON model: ") + ex.what());
  }
  return e;
}

float TreeEnsemble::predict(const float* row) const {
  float sum = base_score_;
  for (const auto root : roots_) {
    const Node* n = &nodes_[static_cast<std::size_t>(root)];
    while (n->feature >= 0) {
      const float x = row[n->feature];
      const bool left = std::isnan(x) ? n->default_left : x < n->value;
      n = &nodes_[static_cast<std::size_t>(left ? n->left : n->right)];
    }
    sum += n->value;
  }
  return sum;
}

}  // namespace eesched::scheduler
