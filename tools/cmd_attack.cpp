// eesched attack weights: play the worker that holds the encrypted model and the public base
// weights, and measure how much of the secret permutations it recovers (ee/attack_weights.h).
// The key is read only to score the attack.
#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

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

std::string read_text(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(std::string("cannot read ") + flag + " " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Both models, checked to be an encrypted model and a plaintext one of the same shape.
std::pair<runtime::LlamaModel, runtime::LlamaModel> load_pair(const std::string& encrypted_dir, const std::string& public_dir) {
  if (!ee::Manifest::read(encrypted_dir)) throw std::runtime_error("--encrypted " + encrypted_dir + " is not an encrypted model directory (no ee.json)");
  if (ee::Manifest::read(public_dir)) throw std::runtime_error("--public " + public_dir + " is an encrypted model, not the public plaintext one");
  auto encrypted = runtime::LlamaModel::load(encrypted_dir);
  auto pub = runtime::LlamaModel::load(public_dir);
  if (encrypted.config().vocab_size != pub.config().vocab_size || encrypted.config().hidden_size != pub.config().hidden_size ||
      encrypted.config().num_hidden_layers != pub.config().num_hidden_layers)
    throw std::runtime_error("--public " + public_dir + " does not have the encrypted model's shape");
  return {std::move(encrypted), std::move(pub)};
}

struct AttackWeightsArgs {
  std::string encrypted, pub, key, text, tokenizer;
  bool json = false;
};

void run_weights(const AttackWeightsArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto [encrypted, pub] = load_pair(a.encrypted, a.pub);
  const auto guess = ee::attack_weights(encrypted.weights(), pub.weights());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Scoring: the truth, from the key and the public model's label (ee/transform.h).
  const auto key = ee::Key::load(a.key);
  const auto manifest = ee::Manifest::read(a.encrypted);
  manifest->check_key(key);
  const auto truth = ee::derive_secrets(key, pub.config(), ee::model_fingerprint(pub), ee::scheme_of(manifest->transforms));
  std::vector<int64_t> text_ids;
  if (!a.text.empty()) text_ids = runtime::Tokenizer::load(tokenizer_for(a.pub, a.tokenizer, false)).encode(read_text(a.text, "--text"));
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
                                {"method", guess.method},
                                {"seconds", seconds}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("weights attack on {} with the public weights of {} ({}, {:.1f} s, no key used):\n", a.encrypted, a.pub,
                           guess.method, seconds)
            << fmt::format("  vocabulary recovered  {:6.2f}% of {} ids\n", 100 * score.vocab_recovered, pub.config().vocab_size)
            << fmt::format("  tokens recovered      {:6.2f}% {}\n", 100 * score.tokens_recovered,
                           text_ids.empty() ? std::string("(no --text: the vocabulary, unweighted)")
                                            : fmt::format("of {} tokens of {}", text_ids.size(), a.text))
            << fmt::format("  residual dims         {:6.2f}%\n", 100 * score.residual_recovered)
            << fmt::format("  FFN neurons           {:6.2f}%\n", 100 * score.ffn_recovered);
}

struct AttackHiddenArgs {
  std::string encrypted, pub, key, prompt, text, tokenizer;
  int64_t max_tokens = 256, shortlist = 16;
  bool json = false;
};

void run_hidden(const AttackHiddenArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto [encrypted, pub] = load_pair(a.encrypted, a.pub);
  const auto tok = runtime::Tokenizer::load(tokenizer_for(a.pub, a.tokenizer, false));
  auto ids = tok.encode(a.text.empty() ? a.prompt : read_text(a.text, "--text"));
  if (ids.empty()) throw std::runtime_error("the prompt has no tokens");
  if (static_cast<int64_t>(ids.size()) > a.max_tokens) ids.resize(static_cast<std::size_t>(a.max_tokens));
  // The client's side: the key encrypts the prompt (and, after, scores the attack).
  const auto key = ee::Key::load(a.key);
  ee::Manifest::read(a.encrypted)->check_key(key);
  const auto truth = ee::derive_secrets(key, pub.config(), ee::model_fingerprint(pub));
  std::vector<int64_t> sent;
  for (const auto id : ids) sent.push_back(truth.vocab[static_cast<std::size_t>(id)]);
  // The worker's side: it runs the encrypted model and keeps the states; it has the public weights.
  const auto ids_sent = at::tensor(sent, at::kLong);
  const auto input = encrypted.weights().embed_tokens.index_select(0, ids_sent);  // the first layer's input
  const auto output = ee::first_layer_output(encrypted, ids_sent.unsqueeze(0));
  const auto guess = ee::attack_weights(encrypted.weights(), pub.weights());
  auto score = [&](const std::vector<int64_t>& read) {
    std::set<int64_t> types, types_hit;
    int64_t hit = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      types.insert(ids[i]);
      if (read[i] == ids[i]) ++hit, types_hit.insert(ids[i]);
    }
    return std::pair{static_cast<double>(hit) / static_cast<double>(ids.size()),
                     static_cast<double>(types_hit.size()) / static_cast<double>(types.size())};
  };
  const auto [tokens_in, vocab_in] = score(ee::attack_hidden_states(input, pub.weights(), guess));
  const auto after = output.defined() ? score(ee::attack_hidden_after_first_layer(output[0], pub, guess, a.shortlist)) : std::pair{0.0, 0.0};
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.json) {
    std::cout << nlohmann::json{{"attack", "hidden"},
                                {"encrypted", a.encrypted},
                                {"public", a.pub},
                                {"prompt_tokens", ids.size()},
                                {"tokens_recovered", tokens_in},
                                {"vocab_recovered", vocab_in},
                                {"after_layer0_tokens_recovered", after.first},
                                {"after_layer0_vocab_recovered", after.second},
                                {"weights_method", guess.method},
                                {"seconds", seconds}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("hidden-states attack on {} ({} prompt tokens, public weights of {}, {:.1f} s, no key used):\n", a.encrypted,
                           ids.size(), a.pub, seconds)
            << fmt::format("  first layer's input   {:6.2f}% of prompt tokens, {:6.2f}% of their distinct ids\n", 100 * tokens_in, 100 * vocab_in)
            << fmt::format("  first layer's output  {:6.2f}% of prompt tokens, {:6.2f}% of their distinct ids\n", 100 * after.first,
                           100 * after.second);
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

  auto h_args = std::make_shared<AttackHiddenArgs>();
  auto* h = cmd->add_subcommand("hidden",
                                "a worker that records the residual stream of a run and holds the public weights: read the prompt's tokens "
                                "off the first layer's states (the key encrypts the prompt and scores the attack)");
  h->add_option("--encrypted", h_args->encrypted, "encrypted model directory")->required()->check(CLI::ExistingDirectory);
  h->add_option("--public", h_args->pub, "the public plaintext model it was encrypted from")->required()->check(CLI::ExistingDirectory);
  h->add_option("--key", h_args->key, "the key, to encrypt the prompt and score the attack")->required()->check(CLI::ExistingFile);
  auto* prompt = h->add_option("--prompt", h_args->prompt, "the prompt the client sends");
  auto* text = h->add_option("--text", h_args->text, "read the prompt from this file")->check(CLI::ExistingFile);
  prompt->excludes(text);
  h->add_option("--max-tokens", h_args->max_tokens, "use at most this many of the prompt's tokens")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  h->add_option("--tokenizer", h_args->tokenizer, "tokenizer (default: the public model's)");
  h->add_option("--shortlist", h_args->shortlist, "after the first layer: candidates per position checked against the public model")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  h->add_flag("--json", h_args->json, "print {\"vocab_recovered\", \"tokens_recovered\", ...} (the first layer's input; after_layer0_* for its output)");
  register_attack_frontier(cmd);
  h->callback([h_args, prompt, text] {
    if (prompt->count() + text->count() == 0) throw CLI::ValidationError("--prompt or --text", "one of them is required");
    run_hidden(*h_args);
  });
  register_attack_ciphertext(cmd);
}

}  // namespace eesched::tools
