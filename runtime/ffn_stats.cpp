#include "runtime/ffn_stats.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"

namespace eesched::runtime {
namespace {

std::string stats_name(std::size_t layer) { return "model.layers." + std::to_string(layer) + "." + kFfnStatsSuffix; }

}  // namespace

std::vector<at::Tensor> measure_ffn_stats(const LlamaModel& model, const std::vector<int64_t>& ids, const FfnStatsOptions& options) {
  const auto& c = model.config();
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 1) throw Error("FFN statistics: no calibration tokens");
  const int64_t context = options.context > 0 ? std::min(options.context, c.max_position_embeddings) : c.max_position_embeddings;
  for (const auto id : ids)
    if (id < 0 || id >= c.vocab_size) throw Error("FFN statistics: token id " + std::to_string(id) + " outside the vocabulary");
  c10::InferenceMode guard;
  // Sums of squares in f64: thousands of tokens of f32 squares would lose the small neurons.
  std::vector<at::Tensor> sums(static_cast<std::size_t>(c.num_hidden_layers));
  for (auto& s : sums) s = at::zeros({c.intermediate_size}, at::kDouble);
  const FfnObserver observe = [&](int64_t layer, const at::Tensor& act) {
    sums[static_cast<std::size_t>(layer)] += act.to(at::kDouble).reshape({-1, act.size(-1)}).pow(2).sum(0);
  };
  const auto all = at::tensor(ids, at::kLong);
  for (int64_t begin = 0; begin < n; begin += context) {
    const int64_t end = std::min(begin + context, n);
    model.forward(all.slice(0, begin, end).view({1, end - begin}), observe);
    if (options.progress) options.progress(end, n);
  }
  for (auto& s : sums) s /= static_cast<double>(n);
  return sums;
}

LlamaModel with_ffn_stats(const LlamaModel& model, const std::vector<at::Tensor>& stats) {
  auto w = model.weights();
  if (!stats.empty() && stats.size() != w.layers.size())
    throw Error("FFN statistics for " + std::to_string(stats.size()) + " layers, the model has " + std::to_string(w.layers.size()));
  for (std::size_t i = 0; i < w.layers.size(); ++i) w.layers[i].ffn_activation_ms = stats.empty() ? at::Tensor() : stats[i];
  return LlamaModel(model.config(), w);
}

std::vector<at::Tensor> ffn_stats_of(const LlamaModel& model) {
  std::vector<at::Tensor> out;
  if (!model.has_ffn_stats()) return out;
  for (const auto& l : model.weights().layers) out.push_back(l.ffn_activation_ms);
  return out;
}

std::vector<at::Tensor> read_ffn_stats(const std::filesystem::path& path, const LlamaConfig& config) {
  const auto file = SafetensorsFile::open(path);
  std::vector<at::Tensor> out;
  std::set<std::string> expected;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const auto name = stats_name(static_cast<std::size_t>(i));
    expected.insert(name);
    const auto* info = file.find(name);
    if (!info) throw Error("missing tensor '" + name + "'");
    if (info->dtype != DType::F64 && info->dtype != DType::F32)
      throw Error("tensor '" + name + "' has dtype " + dtype_name(info->dtype) + " (F64 or F32 expected)");
    if (info->shape != std::vector<int64_t>{config.intermediate_size})
      throw Error("tensor '" + name + "' does not have the model's " + std::to_string(config.intermediate_size) + " FFN neurons");
    auto t = file.load(name).to(at::kDouble).contiguous();
    if (!at::isfinite(t).all().item<bool>() || (t < 0).any().item<bool>())
      throw Error("tensor '" + name + "' holds negative or non-finite mean squares");
    out.push_back(std::move(t));
  }
  for (const auto& info : file.tensors())
    if (!expected.count(info.name)) throw Error("unexpected tensor '" + info.name + "'");
  return out;
}

void write_ffn_stats(const std::filesystem::path& path, const std::vector<at::Tensor>& stats) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (std::size_t i = 0; i < stats.size(); ++i) named.emplace_back(stats_name(i), stats[i].to(at::kDouble).contiguous());
  write_safetensors(path, named, {{"statistic", "mean square of silu(gate x) * (up x) per FFN neuron"}});
}

}  // namespace eesched::runtime
