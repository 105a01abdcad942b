#include "accel/pruning.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "accel/registry_internal.h"
#include "runtime/error.h"

namespace eesched::accel {
namespace {

// Sum of squares of each row of m [n, k], over the row's values in sorted order: the same
// multiset gives the same bits whatever order the columns come in.
std::vector<double> sorted_row_sq_norms(const at::Tensor& m) {
  const auto sq = m.to(at::kDouble).pow(2);
  const auto sorted = std::get<0>(sq.sort(1)).contiguous();
  const int64_t n = sorted.size(0), k = sorted.size(1);
  const double* p = sorted.data_ptr<double>();
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += p[i * k + j];
    out[static_cast<std::size_t>(i)] = s;
  }
  return out;
}

}  // namespace

std::vector<double> ffn_neuron_scores(const runtime::LayerWeights& l) {
  return l.ffn_activation_ms.defined() ? ffn_activation_scores(l) : ffn_weight_scores(l);
}

std::vector<double> ffn_activation_scores(const runtime::LayerWeights& l) {
  c10::InferenceMode guard;
  if (!l.ffn_activation_ms.defined()) throw runtime::Error("pruning: the layer has no FFN activation statistics");
  const auto d = sorted_row_sq_norms(l.down_proj.t());
  const auto ms = l.ffn_activation_ms.to(at::kDouble).contiguous();
  if (ms.numel() != static_cast<int64_t>(d.size())) throw runtime::Error("pruning: FFN statistics do not match the layer");
  const double* a = ms.data_ptr<double>();
  std::vector<double> score(d.size());
  for (std::size_t j = 0; j < d.size(); ++j) score[j] = std::sqrt(d[j] * a[j]);
  return score;
}

std::vector<double> ffn_weight_scores(const runtime::LayerWeights& l) {
  c10::InferenceMode guard;
  const auto norm = l.post_attention_layernorm.to(at::kFloat).unsqueeze(0);
  const auto g = sorted_row_sq_norms(l.gate_proj * norm);
  const auto u = sorted_row_sq_norms(l.up_proj * norm);
  const auto d = sorted_row_sq_norms(l.down_proj.t());
  std::vector<double> score(g.size());
  for (std::size_t j = 0; j < g.size(); ++j) score[j] = std::sqrt(g[j] * u[j] * d[j]);
  return score;
}

PrunedModel prune_ffn(const runtime::LlamaModel& model, int percent) {
  c10::InferenceMode guard;
  if (percent < 0 || percent >= 100) throw runtime::Error("pruning: percent must be in 0..99");
  auto config = model.config();
  const int64_t keep = pruned_intermediate(config.intermediate_size, percent);
  if (keep < 1)
    throw runtime::Error("pruning " + std::to_string(percent) + "% of " + std::to_string(config.intermediate_size) +
                         " FFN neurons would leave none");
  auto weights = model.weights();
  std::vector<std::vector<int64_t>> kept;
  const bool activation = model.has_ffn_stats();
  for (auto& layer : weights.layers) {
    const auto score = ffn_neuron_scores(layer);
    std::vector<int64_t> order(score.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
    });
    order.resize(static_cast<std::size_t>(keep));
    std::sort(order.begin(), order.end());
    const auto index = at::tensor(order, at::kLong);
    layer.gate_proj = layer.gate_proj.index_select(0, index).contiguous();
    layer.up_proj = layer.up_proj.index_select(0, index).contiguous();
    layer.down_proj = layer.down_proj.index_select(1, index).contiguous();
    if (layer.ffn_activation_ms.defined()) layer.ffn_activation_ms = layer.ffn_activation_ms.index_select(0, index).contiguous();
    kept.push_back(std::move(order));
  }
  config.intermediate_size = keep;
  return {runtime::LlamaModel(config, weights), std::move(kept), activation};
}

namespace {

class FfnPruning final : public Acceleration {
 public:
  explicit FfnPruning(int percent) : percent_(percent) {}
  std::string name() const override { return "prune" + std::to_string(percent_); }
  int stage() const override { return kStageShape; }
  std::optional<std::string> refusal(const data::TaskSpec&, const ModelPair& models) const override {
    const auto inter = models.target->config().intermediate_size;
    if (pruned_intermediate(inter, percent_) < 1)
      return name() + " would leave no FFN neurons of " + std::to_string(inter);
    return std::nullopt;
  }
  // The target only: the draft is already small, and its quality sets the acceptance rate.
  ModelPair prepare(const ModelPair& models) const override {
    ModelPair out = models;
    auto pruned = prune_ffn(*models.target, percent_);
    spdlog::info("{}: FFN neurons scored by {}", name(),
                 pruned.activation_scores ? "calibration activation statistics (prune_stats.safetensors)"
                                          : "weight norms (no calibration statistics came with the model)");
    out.target = std::make_shared<const runtime::LlamaModel>(std::move(pruned.model));
    return out;
  }

 private:
  int percent_;
};

}  // namespace

std::unique_ptr<Acceleration> make_pruning(const std::string& component) {
  const auto percent = component_number(component, "prune");
  if (!percent) return nullptr;  // its range (5..90) is the table's
  return std::make_unique<FfnPruning>(*percent);
}

}  // namespace eesched::accel
