// eesched attack frontier: each EE scheme and noise level measured side by side in one run —
// what the weights attack recovers (ee/attack_weights.h) against what the scheme costs
// (perplexity ratio on held-out text, decoding speed ratio) — the figures behind the choice of
// an opt-in scheme (docs/ee.md, "A stronger scheme?").
#include <spdlog/spdlog.h>

#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ee/attack_weights.h"
#include "ee/bench_ee.h"
#include "ee/codec.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/model.h"
#include "runtime/perplexity.h"
#include "runtime/threads.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_loading.h"

namespace eesched::tools {
namespace {

struct FrontierArgs {
  std::string model, text, key, tokenizer;
  std::vector<std::string> schemes{"permute", "rotate"};
  std::vector<double> noise{0, 0.05, 0.1, 0.2, 0.5, 1.0};
  int64_t max_tokens = 4096, context = 256, speed_tokens = 32;
  int pairs = 3, threads = 0;
  bool json = false;
};

// The goal for an opt-in scheme: at most 5% of a held-out text's tokens recovered, at a
// perplexity ratio of at most 1.05 and at least 0.95 of plaintext decoding speed.
bool meets_goal(double tokens_recovered, double ppl_ratio, double speed_ratio) {
  return tokens_recovered <= 0.05 && ppl_ratio <= 1.05 && speed_ratio >= 0.95;
}

void run(const FrontierArgs& a) {
  runtime::set_threads(a.threads);
  const auto plain = runtime::LlamaModel::load(a.model);
  const auto key = a.key.empty() ? ee::Key::generate(plain.config().vocab_size) : ee::Key::load(a.key);
  auto ids = runtime::Tokenizer::load(tokenizer_for(a.model, a.tokenizer, false)).encode_document(read_text_file(a.text));
  if (static_cast<int64_t>(ids.size()) > a.max_tokens) ids.resize(static_cast<std::size_t>(a.max_tokens));
  if (ids.size() < 2) throw std::runtime_error("--text " + a.text + " has fewer than 2 tokens");
  const ee::Codec codec(key);
  runtime::PerplexityOptions po;
  po.context = std::min<int64_t>(a.context, plain.config().max_position_embeddings);
  const double base_ppl = runtime::perplexity(plain, ids, po).perplexity;
  const auto label = ee::model_fingerprint(plain);
  nlohmann::json rows = nlohmann::json::array();
  if (!a.json)
    std::cout << fmt::format("{} ({} held-out tokens of {}, plaintext perplexity {:.3f}); the weights attack holds the public weights\n",
                             a.model, ids.size(), a.text, base_ppl)
              << fmt::format("| {:7} | {:>5} | {:>9} | {:>9} | {:>8} | {:>8} | {:>9} | {:>11} | {:>4} |\n", "scheme", "noise", "vocab rec",
                             "token rec", "resid rec", "ppl", "ppl ratio", "speed ratio", "goal")
              << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
  for (const auto& name : a.schemes)
    for (const double noise : a.noise) {
      const auto scheme = ee::make_scheme(name, noise);
      const auto t0 = std::chrono::steady_clock::now();
      const auto encrypted = ee::encrypt_model(plain, key, label, scheme);
      const auto truth = ee::derive_secrets(key, plain.config(), label, scheme);
      const auto score = ee::score_weights_attack(ee::attack_weights(encrypted.weights(), plain.weights()), truth, ids);
      const double ppl = runtime::perplexity(encrypted, codec.encrypt(ids), po).perplexity;
      const auto speed = ee::bench_ee(plain, encrypted, truth.vocab, a.speed_tokens, a.pairs);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const bool goal = meets_goal(score.tokens_recovered, ppl / base_ppl, speed.ratio);
      rows.push_back({{"scheme", name},
                      {"noise", noise},
                      {"vocab_recovered", score.vocab_recovered},
                      {"tokens_recovered", score.tokens_recovered},
                      {"residual_recovered", score.residual_recovered},
                      {"ffn_recovered", score.ffn_recovered},
                      {"perplexity", ppl},
                      {"perplexity_ratio", ppl / base_ppl},
                      {"speed_ratio", speed.ratio},
                      {"control_speed_ratio", speed.control_ratio},
                      {"meets_goal", goal},
                      {"seconds", seconds}});
      if (!a.json)
        std::cout << fmt::format("| {:7} | {:5.2f} | {:8.1f}% | {:8.1f}% | {:8.1f}% | {:8.3f} | {:9.3f} | {:11.3f} | {:4} |", name, noise,
                                 100 * score.vocab_recovered, 100 * score.tokens_recovered, 100 * score.residual_recovered, ppl,
                                 ppl / base_ppl, speed.ratio, goal ? "yes" : "no")
                  << std::endl;
    }
  if (a.json)
    std::cout << nlohmann::json{{"model", a.model}, {"text_tokens", ids.size()}, {"perplexity", base_ppl}, {"rows", rows}}.dump() << std::endl;
}

}  // namespace

void register_attack_frontier(CLI::App* attack) {
  auto args = std::make_shared<FrontierArgs>();
  auto* cmd = attack->add_subcommand(
      "frontier",
      "each scheme and noise level side by side: what the weights attack recovers against the perplexity and speed it costs");
  add_model_option(cmd, args->model, "the public plaintext model");
  cmd->add_option("--text", args->text, "held-out text (perplexity, and the tokens the recovery is weighted by)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--key", args->key, "key file (default: a fresh key, in memory only)")->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer for --text (default: the model's)");
  cmd->add_option("--schemes", args->schemes, "schemes to measure")->delimiter(',')->check(CLI::IsMember({"permute", "rotate"}))->capture_default_str();
  cmd->add_option("--noise", args->noise, "noise levels (relative to each embedding/head row's RMS)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  cmd->add_option("--max-tokens", args->max_tokens, "use at most this many tokens of --text")->check(CLI::Range(2, 1 << 24))->capture_default_str();
  cmd->add_option("--context", args->context, "perplexity window")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  cmd->add_option("--speed-tokens", args->speed_tokens, "tokens decoded per speed run")->check(CLI::Range(2, 100000))->capture_default_str();
  cmd->add_option("--pairs", args->pairs, "alternated plaintext/encrypted speed runs")->check(CLI::Range(1, 1000))->capture_default_str();
  add_threads_option(cmd, args->threads);
  cmd->add_flag("--json", args->json, "print {\"rows\": [{\"scheme\", \"noise\", \"vocab_recovered\", \"tokens_recovered\", \"perplexity_ratio\", \"speed_ratio\", ...}]}");
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
