#include "runtime/train.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "runtime/threads.h"

namespace eesched::runtime {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double progress = static_cast<double>(step - o.warmup_steps) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

// Random windows of seq_len + 1 tokens; the batch of a step depends only on (seed, step), so a
// resumed run sees the same data as an uninterrupted one.
std::pair<torch::Tensor, torch::Tensor> batch_at(const std::vector<int64_t>& tokens, int64_t seq_len, int64_t batch,
                                                 uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(tokens.size()) - seq_len - 2);
  auto data = torch::empty({batch, seq_len + 1}, torch::kLong);
  auto acc = data.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t start = pick(rng);
    for (int64_t t = 0; t <= seq_len; ++t) acc[b][t] = tokens[static_cast<std::size_t>(start + t)];
  }
  return {data.narrow(1, 0, seq_len), data.narrow(1, 1, seq_len)};
}

torch::Tensor lm_loss(const LlamaModel& model, const torch::Tensor& inputs, const torch::Tensor& targets) {
  auto logits = model.forward(inputs);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

double validation_loss(const LlamaModel& model, const std::vector<int64_t>& val, const TrainOptions& o) {
  torch::NoGradGuard no_grad;
  double total = 0;
  for (int64_t i = 0; i < o.eval_batches; ++i) {
    auto [x, y] = batch_at(val, o.seq_len, o.batch_size, 0x5eedULL + static_cast<uint64_t>(i));
    total += lm_loss(model, x, y).item<double>();
  }
  return total / static_cast<double>(o.eval_batches);
}

void write_json(const std::filesystem::path& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error("cannot write " + path.string());
}

}  // namespace

TrainOptions load_train_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": not valid JSON");
  }
  if (!j.contains("model")) throw Error(path.string() + ": missing \"model\" (HF LlamaConfig keys)");
  TrainOptions o;
  o.model = LlamaConfig::from_json(j["model"].dump(), path.string() + ":model");
  const json t = j.value("train", json::object());
  try {
    o.seq_len = t.value("seq_len", o.seq_len);
    o.batch_size = t.value("batch_size", o.batch_size);
    o.steps = t.value("steps", o.steps);
    o.warmup_steps = t.value("warmup_steps", o.warmup_steps);
    o.lr = t.value("lr", o.lr);
    o.min_lr_ratio = t.value("min_lr_ratio", o.min_lr_ratio);
    o.weight_decay = t.value("weight_decay", o.weight_decay);
    o.beta1 = t.value("beta1", o.beta1);
    o.beta2 = t.value("beta2", o.beta2);
    o.grad_clip = t.value("grad_clip", o.grad_clip);
    o.eval_every = t.value("eval_every", o.eval_every);
    o.eval_batches = t.value("eval_batches", o.eval_batches);
    o.seed = t.value("seed", o.seed);
  } catch (const json::exception&) {
    throw Error(path.string() + ": a \"train\" option has the wrong type");
  }
  return o;
}

TrainSummary train_lm(const TrainOptions& o, const std::vector<int64_t>& train_tokens, const std::vector<int64_t>& val_tokens,
                      const std::filesystem::path& out_dir, bool resume,
                      const std::function<void(const TrainProgress&)>& progress) {
  o.model.validate();
  if (o.seq_len < 2 || o.seq_len > o.model.max_position_embeddings)
    throw Error("train: seq_len must be in 2..max_position_embeddings");
  if (o.batch_size < 1 || o.steps < 1 || o.warmup_steps < 0 || o.eval_every < 1)
    throw Error("train: batch_size, steps and eval_every must be positive");
  if (static_cast<int64_t>(train_tokens.size()) < o.seq_len + 2 || static_cast<int64_t>(val_tokens.size()) < o.seq_len + 2)
    throw Error("train: corpus too small for seq_len " + std::to_string(o.seq_len));
  for (auto id : train_tokens)
    if (id < 0 || id >= o.model.vocab_size) throw Error("train: token id " + std::to_string(id) + " outside the model vocabulary");
  set_threads(o.threads);

  const auto ckpt = out_dir / "checkpoint";
  std::filesystem::create_directories(out_dir);
  TrainSummary summary;
  int64_t start_step = 0;
  LlamaModel model = random_model(o.model, o.seed);
  if (resume && std::filesystem::exists(ckpt / "state.json")) {
    model = LlamaModel::load(ckpt);
    std::ifstream in(ckpt / "state.json");
    start_step = json::parse(in).at("step").get<int64_t>();
    summary.resumed = true;
  }

  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : model.parameters()) {
    p.set_requires_grad(true);
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups));
  if (summary.resumed) torch::load(optimizer, (ckpt / "optimizer.pt").string());

  auto all_params = model.parameters();
  const auto t0 = Clock::now();
  double loss_ema = 0;
  int64_t step = start_step;
  auto save_checkpoint = [&](int64_t at_step) {
    std::filesystem::create_directories(ckpt);
    model.save(ckpt);
    torch::save(optimizer, (ckpt / "optimizer.pt").string());
    write_json(ckpt / "state.json", {{"step", at_step}});
  };
  for (; step < o.steps; ++step) {
    const double lr = lr_at(o, step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    auto [x, y] = batch_at(train_tokens, o.seq_len, o.batch_size, o.seed * 1000003ULL + static_cast<uint64_t>(step));
    optimizer.zero_grad();
    auto loss = lm_loss(model, x, y);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(all_params, o.grad_clip);
    optimizer.step();
    const double l = loss.item<double>();
    loss_ema = (step == start_step) ? l : 0.95 * loss_ema + 0.05 * l;

    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t done = step + 1 - start_step;
    TrainProgress p;
    p.step = step + 1;
    p.steps = o.steps;
    p.loss = loss_ema;
    p.lr = lr;
    p.tokens_per_s = static_cast<double>(done * o.batch_size * o.seq_len) / elapsed;
    p.eta_s = elapsed / static_cast<double>(done) * static_cast<double>(o.steps - step - 1);
    const bool out_of_time = o.max_minutes > 0 && elapsed > o.max_minutes * 60.0;
    if ((step + 1) % o.eval_every == 0 || step + 1 == o.steps || out_of_time) {
      p.val_loss = validation_loss(model, val_tokens, o);
      save_checkpoint(step + 1);
    }
    if (progress) progress(p);
    summary.final_loss = loss_ema;
    if (p.val_loss >= 0) summary.val_loss = p.val_loss;
    if (out_of_time) { ++step; break; }
  }
  summary.steps = step;
  summary.tokens = (step - start_step) * o.batch_size * o.seq_len;
  summary.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  model.save(out_dir);
  return summary;
}

}  // namespace eesched::runtime
