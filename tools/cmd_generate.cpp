// eesched generate: text in, text out, through the runtime's generation loop. With --key the
// model is an encrypted one and this process plays both sides of EE: the client tokenizes and
// encrypts, the (encrypted) model runs on encrypted ids only, the client decrypts.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "accel/registry.h"
#include "accel/run.h"
#include "data/arm.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/chat_prompt.h"
#include "tools/commands.h"
#include "tools/model_loading.h"

namespace eesched::tools {
namespace {

data::GenerationParams with_max_new_tokens(int64_t n) {
  data::GenerationParams g;
  g.max_new_tokens = n;
  return g;
}

struct GenerateArgs {
  std::string model, prompt, tokenizer, key, draft, arm = "kv";
  data::GenerationParams generation = with_max_new_tokens(64);  // its stop ids: plaintext extras (EOS is added)
  ChatOptions chat;
  bool no_kv_cache = false, json = false, ignore_eos = false, show_wire = false;
  int threads = 0;
};

void run(const GenerateArgs& a) {
  runtime::set_threads(a.threads);
  if (a.no_kv_cache && a.arm != "kv" && a.arm != "plain")
    throw std::runtime_error("--no-kv-cache is the arm 'plain'; it does not combine with --arm " + a.arm);
  const auto arm = data::parse_arm(a.no_kv_cache ? "plain" : a.arm);
  const std::filesystem::path dir(a.model);
  if (a.show_wire && a.key.empty()) throw std::runtime_error("--show-wire needs an encrypted model and --key");
  auto loaded = load_models(dir, a.draft, a.key);
  const auto& codec = loaded.codec;
  auto tokenizer = runtime::Tokenizer::load(tokenizer_for(dir, a.tokenizer, codec.has_value()));
  const auto& model = *loaded.models.target;
  // Real checkpoints pad their embedding past the tokenizer (Qwen: 151,669 tokens, 151,936 rows).
  if (tokenizer.vocab_size() > model.config().vocab_size)
    throw std::runtime_error("tokenizer has " + std::to_string(tokenizer.vocab_size()) + " tokens, more than the model's " +
                             std::to_string(model.config().vocab_size) + " embedding rows: not this model's tokenizer");
  data::TaskSpec task;
  task.model = a.model;
  task.draft = a.draft;
  task.generation = a.generation;
  task.quality = data::Quality::Tolerant;  // asking for an arm by name accepts its quality
  if (auto why = accel::arm_refusal(arm, task, loaded.models)) throw std::runtime_error("arm " + arm.name + " does not apply: " + *why);
  const auto prepared = accel::build_arm(arm, loaded.models);
  if (prepared.prepare_seconds > 0.05) spdlog::info("prepared arm {} in {:.2f} s", arm.name, prepared.prepare_seconds);

  // Client side: plaintext ids, then (with a key) their encrypted form for the model.
  auto stops = a.generation.stop_ids;
  if (!a.ignore_eos) stops.push_back(tokenizer.eos_id());
  std::vector<int64_t> prompt;
  if (!a.chat.chat.empty()) {
    auto chat = chat_prompt(tokenizer, a.chat);
    prompt = std::move(chat.ids);
    if (!a.ignore_eos) stops.insert(stops.end(), chat.stop_ids.begin(), chat.stop_ids.end());  // the assistant's turn ends there
  } else {
    prompt = tokenizer.encode(a.prompt);
  }
  runtime::GenerateOptions opts;
  opts.generation = a.generation;
  opts.generation.stop_ids = codec ? codec->encrypt(stops) : stops;
  const auto wire_prompt = codec ? codec->encrypt(prompt) : prompt;

  // Worker side: only wire ids.
  const auto ran = accel::run_arm(prepared, {wire_prompt}, opts);
  const auto& r = ran.generation;

  const auto& wire_out = r.tokens[0];
  const auto ids = codec ? codec->decrypt(wire_out) : wire_out;
  const auto text = tokenizer.decode(ids);
  if (a.show_wire) {
    std::fprintf(stderr, "wire -> worker: prompt %s, stop ids %s\n", fmt::format("{}", wire_prompt).c_str(),
                 fmt::format("{}", opts.generation.stop_ids).c_str());
    std::fprintf(stderr, "wire <- worker: %s\n", fmt::format("{}", wire_out).c_str());
  }
  if (a.json) {
    nlohmann::json j = {{"text", text},
                        {"ids", ids},
                        {"prompt_ids", prompt},
                        {"finish_reason", r.finish_reason[0]},
                        {"ttft_ms", r.ttft_ms},
                        {"ms_per_token", r.ms_per_token()},
                        {"tokens_per_s", r.tokens_per_s()},
                        {"arm", arm.name}};
    if (ran.acceptance_rate) j["acceptance_rate"] = *ran.acceptance_rate;
    if (codec) j["wire"] = {{"to_worker", wire_prompt}, {"stop_ids", opts.generation.stop_ids}, {"from_worker", wire_out}};
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << text << std::endl;
    spdlog::info("{} tokens with arm {}; time to first token {:.1f} ms, {:.2f} ms/token, {:.1f} tokens/s{}{}", r.new_tokens(),
                 arm.name, r.ttft_ms, r.ms_per_token(), r.tokens_per_s(),
                 ran.acceptance_rate ? fmt::format(", acceptance {:.2f}", *ran.acceptance_rate) : "",
                 codec ? " (encrypted model)" : "");
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "generate text from a prompt (plaintext, or encrypted with --key)");
  add_model_option(cmd, args->model, "model directory (config.json, model.safetensors, tokenizer.model or ee.json)");
  auto* prompt = cmd->add_option("--prompt", args->prompt, "prompt text (or --chat)");
  add_chat_options(cmd, args->chat);
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, tokenizer.model or a directory holding one (default: MODEL's; required with --key)")
      ->check(CLI::ExistingPath);
  add_key_option(cmd, args->key, "EE key: MODEL is encrypted with it; ids are encrypted before and decrypted after", /*optional=*/true);
  cmd->add_flag("--show-wire", args->show_wire, "print (to stderr) the encrypted ids that cross the wire each way");
  cmd->add_option("--max-new-tokens", args->generation.max_new_tokens, "tokens to generate at most")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", args->generation.temperature, "0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", args->generation.top_k, "keep the k most likely tokens (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", args->generation.top_p, "nucleus sampling mass (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", args->generation.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--stop-id", args->generation.stop_ids, "extra (plaintext) token ids that end generation (EOS always does)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "do not stop at the tokenizer's EOS");
  cmd->add_option("--arm", args->arm, "acceleration arm: plain, kv, kv+int8, kv+prune30, kv+spec4, kv+int8+spec4, ...")
      ->capture_default_str();
  cmd->add_option("--draft", args->draft, "draft model directory for speculative arms (encrypted under the same key with --key)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--no-kv-cache", args->no_kv_cache, "recompute the whole sequence every step (same as --arm plain)");
  cmd->add_flag("--json", args->json, "print {text, ids, ttft_ms, ms_per_token, tokens_per_s, arm, acceptance_rate} as JSON");
  add_threads_option(cmd, args->threads);
  cmd->callback([args, prompt] {
    if ((prompt->count() > 0) == !args->chat.chat.empty()) throw std::runtime_error("generate: give --prompt TEXT or --chat TEXT (one of them)");
    run(*args);
  });
}

}  // namespace eesched::tools
