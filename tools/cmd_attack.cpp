// eesched attack weights: play the worker that holds the encrypted model and the public base
// weights, and measure how much of the secret permutations it recovers (ee/attack_weights.h).
// The key is read only to score the attack.
#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ee/attack_weights.h"
#include "ee/key.h"
#include "ee/manifest.h"
#include "ee/transform.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_loading.h"

namespace eesched::tools {
namespace {

struct AttackWeightsArgs {
  std::string encrypted, pub, key, text, tokenizer;
  bool json = false;
};

void run_weights(const AttackWeightsArgs& a) {
  if (!ee::Manifest::read(a.encrypted)) throw std::runtime_error("--encrypted " + a.encrypted + " is not an encrypted model directory (no ee.json)");
  const auto t0 = std::chrono::steady_clock::now();
  const auto encrypted = runtime::LlamaModel::load(a.encrypted);
  const auto pub = runtime::LlamaModel::load(a.pub);
  if (encrypted.config().vocab_size != pub.config().vocab_size || encrypted.config().hidden_size != pub.config().hidden_size)
    throw std::runtime_error("--public " + a.pub + " does not have the encrypted model's shape");
  const auto guess = ee::attack_weights(encrypted.weights(), pub.weights());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Scoring: the truth, from the key and the public model's label (ee/transform.h).
  const auto key = ee::Key::load(a.key);
  ee::Manifest::read(a.encrypted)->check_key(key);
  const auto truth = ee::derive_secrets(key, pub.config(), ee::model_fingerprint(pub));
  std::vector<int64_t> text_ids;
  if (!a.text.empty()) {
    std::ifstream in(a.text);
    if (!in) throw std::runtime_error("cannot read --text " + a.text);
    std::stringstream s;
    s << in.rdbuf();
    const auto tok = runtime::Tokenizer::load(tokenizer_for(a.pub, a.tokenizer, false));
    text_ids = tok.encode(s.str());
  }
  const auto score = ee::score_weights_attack(guess, truth, text_ids);
  if (a.json) {
    std::cout << nlohmann::json{{"attack", "weights"},
                                {"encrypted", a.encrypted},
                                {"public", a.pub},
                                {"vocab", pub.config().vocab_size},
                                {"vocab_recovered", score.vocab_recovered},
                                {"tokens_recovered", score.tokens_recovered},
                                {"text_tokens", text_ids.size()},
                                {"residual_recovered", score.residual_recovered},
                                {"ffn_recovered", score.ffn_recovered},
                                {"seconds", seconds}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("weights attack on {} with the public weights of {} ({:.1f} s, no key used):\n", a.encrypted, a.pub, seconds)
            << fmt::format("  vocabulary recovered  {:6.2f}% of {} ids\n", 100 * score.vocab_recovered, pub.config().vocab_size)
            << fmt::format("  tokens recovered      {:6.2f}% {}\n", 100 * score.tokens_recovered,
                           text_ids.empty() ? std::string("(no --text: the vocabulary, unweighted)")
                                            : fmt::format("of {} tokens of {}", text_ids.size(), a.text))
            << fmt::format("  residual dims         {:6.2f}%\n", 100 * score.residual_recovered)
            << fmt::format("  FFN neurons           {:6.2f}%\n", 100 * score.ffn_recovered);
}

}  // namespace

void register_attack(CLI::App& app) {
  auto* cmd = app.add_subcommand("attack", "measure what an honest-but-curious party recovers of the EE secrets");
  cmd->require_subcommand(1);
  auto args = std::make_shared<AttackWeightsArgs>();
  auto* w = cmd->add_subcommand("weights",
                                "a worker holding the encrypted model and the public base weights: match sorted rows to recover the "
                                "vocabulary, residual and FFN permutations (the key only scores it)");
  w->add_option("--encrypted", args->encrypted, "encrypted model directory")->required()->check(CLI::ExistingDirectory);
  w->add_option("--public", args->pub, "the public plaintext model it was encrypted from")->required()->check(CLI::ExistingDirectory);
  w->add_option("--key", args->key, "the key, to score the attack")->required()->check(CLI::ExistingFile);
  w->add_option("--text", args->text, "weight the recovered tokens by this text's tokens (held-out text)")->check(CLI::ExistingFile);
  w->add_option("--tokenizer", args->tokenizer, "tokenizer for --text (default: the public model's)");
  w->add_flag("--json", args->json, "print {\"vocab_recovered\", \"tokens_recovered\", \"residual_recovered\", \"ffn_recovered\", ...}");
  w->callback([args] { run_weights(*args); });
  register_attack_ciphertext(cmd);
}

}  // namespace eesched::tools
