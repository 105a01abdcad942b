// eesched make-synthetic: a seeded random-init model of a realistic shape, for speed work.
#include <spdlog/spdlog.h>

#include <iostream>

#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct SyntheticArgs {
  std::string preset, out;
  uint64_t seed = 0;
};

void run(const SyntheticArgs& a) {
  auto config = runtime::synthetic_config(a.preset);
  auto model = runtime::random_model(config, a.seed);
  runtime::save_checkpoint(model, a.out);  // bf16 (and sharded over 1 GB) for the real-model presets
  std::cout << "wrote " << a.out << ": " << human_count(static_cast<double>(config.parameter_count())) << " parameters, "
            << config.num_hidden_layers << " layers, hidden " << config.hidden_size << ", heads "
            << config.num_attention_heads << "/" << config.num_key_value_heads << ", vocab " << config.vocab_size << std::endl;
}

}  // namespace

void register_make_synthetic(CLI::App& app) {
  auto args = std::make_shared<SyntheticArgs>();
  auto* cmd = app.add_subcommand("make-synthetic", "write a seeded random-init model (25m, 110m, 350m; real architectures: llama3.2-1b, qwen2.5-0.5b, qwen3-0.6b, smollm2-360m)");
  cmd->add_option("--preset", args->preset, "model size")->required()->check(CLI::IsMember(runtime::synthetic_presets()));
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
