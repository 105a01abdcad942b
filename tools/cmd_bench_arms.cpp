// eesched bench-arms: one row per applicable arm on a model (and draft), measured side by side.
#include <spdlog/spdlog.h>

#include <iostream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "accel/bench_arms.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_loading.h"

namespace eesched::tools {
namespace {

struct BenchArmsArgs {
  std::string model, draft, key, tokenizer, arms = "all", heldout = "corpus/moby-dick.txt";
  int64_t tokens = 64, prompt_tokens = 32, ppl_tokens = 4096, ppl_context = 256;
  int repeats = 5;
  bool json = false;
  int threads = 0;
};

std::string opt(const std::optional<double>& v, const char* format) { return v ? fmt::format(fmt::runtime(format), *v) : "-"; }

void run(const BenchArmsArgs& a) {
  const int threads = runtime::set_threads(a.threads);
  const std::filesystem::path dir(a.model);
  auto loaded = load_models(dir, a.draft, a.key);
  const auto& config = loaded.models.target->config();

  accel::BenchArmsOptions o;
  o.arms = data::parse_arm_list(a.arms);
  o.tokens = a.tokens;
  o.repeats = a.repeats;
  o.ppl_context = a.ppl_context;
  // Held-out text needs a tokenizer: given, or the model's own. Without one (a synthetic model)
  // the prompt is random ids and perplexity is skipped.
  std::filesystem::path tok_path = a.tokenizer;
  if (tok_path.empty() && !loaded.codec && std::filesystem::exists(dir / "tokenizer.model")) tok_path = dir / "tokenizer.model";
  std::vector<int64_t> ids;
  if (!tok_path.empty() && std::filesystem::exists(a.heldout)) {
    const auto tokenizer = runtime::Tokenizer::load(tok_path);
    if (tokenizer.vocab_size() > config.vocab_size)
      throw std::runtime_error("the tokenizer has " + std::to_string(tokenizer.vocab_size()) + " pieces, more than the model's " +
                               std::to_string(config.vocab_size));
    ids = tokenizer.encode_document(read_text_file(a.heldout));
  } else if (!tok_path.empty()) {
    spdlog::warn("no held-out text at {} (make corpus fetches it): random prompt, no perplexity", a.heldout);
  }
  if (static_cast<int64_t>(ids.size()) >= a.ppl_tokens + a.prompt_tokens) {
    o.heldout.assign(ids.begin(), ids.begin() + a.ppl_tokens);
    o.prompt.assign(ids.begin() + a.ppl_tokens, ids.begin() + a.ppl_tokens + a.prompt_tokens);
  } else {
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int64_t> pick(3, config.vocab_size - 1);
    for (int64_t i = 0; i < a.prompt_tokens; ++i) o.prompt.push_back(pick(rng));
  }
  if (loaded.codec) {  // the client's side: the models only ever see encrypted ids
    o.prompt = loaded.codec->encrypt(o.prompt);
    o.heldout = loaded.codec->encrypt(o.heldout);
  }
  if (static_cast<int64_t>(o.prompt.size()) + a.tokens + 17 > config.max_position_embeddings)
    throw std::runtime_error("prompt + tokens exceed the model's context of " + std::to_string(config.max_position_embeddings));
  o.progress = [](const std::string& what) { spdlog::info("bench-arms: {}", what); };

  const auto r = accel::bench_arms(loaded.models, o);

  if (a.json) {
    nlohmann::json rows = nlohmann::json::array(), refused = nlohmann::json::array();
    for (const auto& row : r.rows) {
      if (row.refused) {
        refused.push_back({{"arm", row.arm}, {"reason", *row.refused}});
        continue;
      }
      nlohmann::json j = {{"arm", row.arm},
                          {"lossless", row.lossless},
                          {"ms_per_token", row.ms_per_token},
                          {"tokens_per_s", row.tokens_per_s},
                          {"ttft_ms", row.ttft_ms},
                          {"speedup_vs_kv", row.speedup_vs_kv},
                          {"weight_mb", row.weight_mb},
                          {"prepare_s", row.prepare_s}};
      j["acceptance_rate"] = row.acceptance_rate ? nlohmann::json(*row.acceptance_rate) : nlohmann::json();
      j["perplexity"] = row.perplexity ? nlohmann::json(*row.perplexity) : nlohmann::json();
      j["perplexity_ratio"] = row.perplexity_ratio ? nlohmann::json(*row.perplexity_ratio) : nlohmann::json();
      rows.push_back(j);
    }
    nlohmann::json out = {{"model", a.model},   {"draft", a.draft},     {"encrypted", loaded.codec.has_value()},
                          {"threads", threads}, {"tokens", a.tokens},   {"prompt_tokens", o.prompt.size()},
                          {"repeats", a.repeats}, {"rows", rows},       {"refused", refused}};
    out["base_perplexity"] = r.base_perplexity ? nlohmann::json(*r.base_perplexity) : nlohmann::json();
    std::cout << out.dump() << std::endl;
    return;
  }
  std::cout << fmt::format("{} ({} parameters){}{}, {} threads; {} tokens after a {}-token prompt, greedy, batch 1; median of {} "
                           "rounds\n",
                           a.model, human_count(static_cast<double>(config.parameter_count())),
                           a.draft.empty() ? "" : ", draft " + a.draft, loaded.codec ? ", encrypted" : "", threads, a.tokens,
                           o.prompt.size(), a.repeats);
  if (r.base_perplexity)
    std::cout << fmt::format("held-out perplexity of the unaccelerated model: {:.2f} ({} tokens of {}, context {})\n",
                             *r.base_perplexity, o.heldout.size(), a.heldout, a.ppl_context);
  std::cout << fmt::format("{:<18} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>8}\n", "arm", "ttft ms", "ms/token", "tokens/s",
                           "vs kv", "accept", "ppl ratio", "weights", "prepare");
  for (const auto& row : r.rows) {
    if (row.refused) continue;
    std::cout << fmt::format("{:<18} {:>9.1f} {:>9.3f} {:>9.1f} {:>7.2f}x {:>7} {:>9} {:>6.1f} MB {:>6.2f} s\n", row.arm,
                             row.ttft_ms, row.ms_per_token,
                             row.tokens_per_s, row.speedup_vs_kv, opt(row.acceptance_rate, "{:.2f}"),
                             row.lossless ? "lossless" : opt(row.perplexity_ratio, "{:.4f}"), row.weight_mb, row.prepare_s);
  }
  for (const auto& row : r.rows)
    if (row.refused) std::cout << fmt::format("{:<18} refused: {}\n", row.arm, *row.refused);
}

}  // namespace

void register_bench_arms(CLI::App& app) {
  auto args = std::make_shared<BenchArmsArgs>();
  auto* cmd = app.add_subcommand("bench-arms", "every applicable arm on one model, side by side: speed, acceptance, perplexity cost");
  add_model_option(cmd, args->model, "model directory (plaintext, or encrypted with --key)");
  cmd->add_option("--draft", args->draft, "draft model for speculative arms (same state as --model)")->check(CLI::ExistingDirectory);
  add_key_option(cmd, args->key, "EE key the model (and draft) are encrypted with", /*optional=*/true);
  cmd->add_option("--arms", args->arms, "'all' (the catalog) or a comma-separated list, e.g. kv,kv+int8,kv+spec4")->capture_default_str();
  cmd->add_option("--tokens", args->tokens, "new tokens per run")->capture_default_str()->check(CLI::Range(2, 4096));
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "prompt length")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--repeats", args->repeats, "measured rounds after a warm-up")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("--heldout", args->heldout, "held-out text for prompts and perplexity")->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.model (default: MODEL/tokenizer.model; needed for encrypted models)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--ppl-tokens", args->ppl_tokens, "held-out tokens scored for perplexity")->capture_default_str()->check(CLI::Range(16, 10000000));
  cmd->add_option("--ppl-context", args->ppl_context, "perplexity window")->capture_default_str()->check(CLI::Range(2, 100000));
  cmd->add_flag("--json", args->json, "print the figures as one JSON object");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
