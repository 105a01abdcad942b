// eesched generate: text in, text out, through the runtime's generation loop.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "node/runtime/generate.h"
#include "node/runtime/model.h"
#include "node/runtime/threads.h"
#include "node/runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct GenerateArgs {
  std::string model, prompt, tokenizer;
  int64_t max_new_tokens = 64;
  double temperature = 0.0, top_p = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;
  bool no_kv_cache = false, json = false, ignore_eos = false;
  int threads = 0;
};

void run(const GenerateArgs& a) {
  runtime::set_threads(a.threads);
  const std::filesystem::path dir(a.model);
  auto tokenizer = runtime::Tokenizer::load(a.tokenizer.empty() ? dir / "tokenizer.model" : std::filesystem::path(a.tokenizer));
  auto model = runtime::LlamaModel::load(dir);
  if (tokenizer.vocab_size() != model.config().vocab_size)
    throw std::runtime_error("tokenizer has " + std::to_string(tokenizer.vocab_size()) + " pieces, the model " +
                             std::to_string(model.config().vocab_size));

  runtime::GenerateOptions opts;
  opts.max_new_tokens = a.max_new_tokens;
  opts.sampling = {a.temperature, a.top_k, a.top_p, a.seed};
  opts.kv_cache = !a.no_kv_cache;
  opts.stop_ids = a.stop_ids;
  if (!a.ignore_eos) opts.stop_ids.push_back(tokenizer.eos_id());
  const auto prompt = tokenizer.encode(a.prompt);
  spdlog::debug("prompt: {} tokens", prompt.size());
  auto r = runtime::generate(model, {prompt}, opts);
  const auto text = tokenizer.decode(r.tokens[0]);
  if (a.json) {
    nlohmann::json j = {{"text", text},
                        {"ids", r.tokens[0]},
                        {"prompt_ids", prompt},
                        {"finish_reason", r.finish_reason[0]},
                        {"ttft_ms", r.ttft_ms},
                        {"ms_per_token", r.ms_per_token()},
                        {"tokens_per_s", r.tokens_per_s()}};
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << text << std::endl;
    spdlog::info("{} tokens; time to first token {:.1f} ms, {:.2f} ms/token, {:.1f} tokens/s", r.new_tokens(), r.ttft_ms,
                 r.ms_per_token(), r.tokens_per_s());
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "generate text from a prompt");
  cmd->add_option("--model", args->model, "model directory (config.json, model.safetensors, tokenizer.model)")
      ->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--prompt", args->prompt, "prompt text")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.model (default: MODEL/tokenizer.model)")->check(CLI::ExistingFile);
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate at most")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", args->temperature, "0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", args->top_k, "keep the k most likely tokens (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", args->top_p, "nucleus sampling mass (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", args->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--stop-id", args->stop_ids, "extra token ids that end generation (EOS always does)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "do not stop at the tokenizer's EOS");
  cmd->add_flag("--no-kv-cache", args->no_kv_cache, "recompute the whole sequence every step (the `plain` arm)");
  cmd->add_flag("--json", args->json, "print {text, ids, ttft_ms, ms_per_token, tokens_per_s} as JSON");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
