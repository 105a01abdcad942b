// eesched make-synthetic: a seeded random-init model of a realistic shape, for speed work.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "runtime/model.h"
#include "runtime/synthetic.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct SyntheticArgs {
  std::string preset, out, tokenizer;
  int64_t shard_bytes = runtime::kDefaultShardBytes;
  uint64_t seed = 0;
};

// The tokenizer files of `dir` laid beside the weights, so the directory has the form of a hub
// download; refused when the tokenizer does not fit the model's vocabulary.
void copy_tokenizer(const std::filesystem::path& dir, const std::filesystem::path& out, int64_t vocab) {
  const auto tok = runtime::Tokenizer::load(dir);
  if (tok.vocab_size() > vocab)
    throw std::runtime_error("--tokenizer " + dir.string() + " has " + std::to_string(tok.vocab_size()) + " tokens, more than the preset's " +
                             std::to_string(vocab) + " embedding rows");
  int copied = 0;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"})
    if (std::filesystem::exists(dir / name)) {
      std::filesystem::copy_file(dir / name, out / name, std::filesystem::copy_options::overwrite_existing);
      ++copied;
    }
  spdlog::info("laid {} tokenizer file(s) from {} beside the weights", copied, dir.string());
}

void run(const SyntheticArgs& a) {
  if (!a.tokenizer.empty() && !std::filesystem::is_directory(a.tokenizer))
    throw std::runtime_error("--tokenizer must be a directory holding tokenizer.json (and tokenizer_config.json)");
  auto config = runtime::synthetic_config(a.preset);
  auto model = runtime::random_model(config, a.seed);
  runtime::save_checkpoint(model, a.out, a.shard_bytes);  // bf16 for the real-model presets
  if (!a.tokenizer.empty()) copy_tokenizer(a.tokenizer, a.out, config.vocab_size);
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
  cmd->add_option("--max-shard-bytes", args->shard_bytes,
                  "write shards of at most this many bytes (model.safetensors.index.json) when the weights are larger "
                  "(default: Hugging Face's 5 GB)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "a directory with the real tokenizer files (e.g. tokenizers/llama3 from make tokenizers) to lay beside the weights");
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
