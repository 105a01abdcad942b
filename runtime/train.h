#pragma once
// Language-model training with LibTorch autograd: AdamW, linear warmup then cosine decay,
// gradient clipping, periodic validation and checkpoints, resumable.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace eesched::runtime {

struct TrainOptions {
  LlamaConfig model;
  int64_t seq_len = 256;
  int64_t batch_size = 16;
  int64_t steps = 2000;
  int64_t warmup_steps = 100;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;     // the cosine ends at lr * min_lr_ratio
  double weight_decay = 0.1;     // matrices only; norms are not decayed
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;
  int64_t eval_every = 200;      // steps between validation passes (and checkpoints)
  int64_t eval_batches = 8;
  uint64_t seed = 1234;
  int threads = 0;               // 0: all cores
  double max_minutes = 0;        // > 0: stop (and save) once this much wall time has passed
};

struct TrainProgress {
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, tokens_per_s = 0, eta_s = 0;
  double val_loss = -1;          // >= 0 on steps that ran validation
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t tokens = 0;
  double wall_s = 0;
  double final_loss = 0;
  double val_loss = 0;
  bool resumed = false;
};

// Trains from scratch or, when out_dir/checkpoint exists and `resume` is set, from the last
// checkpoint. Writes out_dir/config.json and out_dir/model.safetensors at the end and
// out_dir/checkpoint/ every eval_every steps.
TrainSummary train_lm(const TrainOptions& options, const std::vector<int64_t>& train_tokens,
                      const std::vector<int64_t>& val_tokens, const std::filesystem::path& out_dir, bool resume,
                      const std::function<void(const TrainProgress&)>& progress);

// Reads a training config file: {"model": {HF LlamaConfig keys}, "train": {option: value}}.
TrainOptions load_train_config(const std::filesystem::path& path);

}  // namespace eesched::runtime
