// eesched bench-ee: decode speed of a plaintext model and its encryption, side by side.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ee/bench_ee.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct BenchEeArgs {
  std::string model, key;
  int64_t tokens = 64;
  int pairs = 6;
  bool json = false;
  int threads = 0;
};

void run(const BenchEeArgs& a) {
  const int threads = runtime::set_threads(a.threads);
  const auto key = ee::Key::load(a.key);
  const auto plain = runtime::LlamaModel::load(a.model);
  const auto secrets = ee::derive_secrets(key, plain.config(), ee::model_fingerprint(plain));
  const runtime::LlamaModel encrypted(ee::encrypt_config(plain.config(), secrets),
                                      ee::encrypt_weights(plain.weights(), plain.config(), secrets));
  const auto r = ee::bench_ee(plain, encrypted, secrets.vocab, a.tokens, a.pairs);
  if (a.json) {
    std::cout << nlohmann::json{{"model", a.model},          {"threads", threads},
                                {"pairs", r.pairs},          {"tokens", r.tokens},
                                {"plain_tokens_per_s", r.plain_tokens_per_s},
                                {"encrypted_tokens_per_s", r.encrypted_tokens_per_s},
                                {"ratio", r.ratio},          {"same_tokens", r.same_tokens},
                                {"control_tokens_per_s", r.control_tokens_per_s},
                                {"control_ratio", r.control_ratio},
                                {"ratio_vs_control", r.ratio_vs_control}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("model {}, {} threads, {} pairs of {} tokens (greedy, batch 1, after a warm-up pair)\n", a.model,
                           threads, r.pairs, r.tokens)
            << fmt::format("plaintext  {:>9.1f} tokens/s  (median decoding step)\n", r.plain_tokens_per_s)
            << fmt::format("copy       {:>9.1f} tokens/s  (control: the plaintext weights in fresh memory)\n",
                           r.control_tokens_per_s)
            << fmt::format("encrypted  {:>9.1f} tokens/s\n", r.encrypted_tokens_per_s)
            << fmt::format("ratio      {:>9.4f}  encrypted / plaintext (decrypted output {} the plaintext output)\n", r.ratio,
                           r.same_tokens ? "equals" : "DIFFERS FROM")
            << fmt::format("control    {:>9.4f}  copy / plaintext: what memory placement and noise alone give\n", r.control_ratio)
            << fmt::format("EE cost    {:>9.4f}  encrypted / copy\n", r.ratio_vs_control);
}

}  // namespace

void register_bench_ee(CLI::App& app) {
  auto args = std::make_shared<BenchEeArgs>();
  auto* cmd = app.add_subcommand("bench-ee", "decode speed of plaintext vs EE-encrypted model, alternated in one process");
  add_model_option(cmd, args->model, "plaintext model directory");
  add_key_option(cmd, args->key, "key file");
  cmd->add_option("--tokens", args->tokens, "tokens per decode")->capture_default_str()->check(CLI::Range(2, 100000));
  cmd->add_option("--pairs", args->pairs, "measured plaintext/encrypted pairs (at least 5)")->capture_default_str()->check(CLI::Range(5, 1000));
  cmd->add_flag("--json", args->json, "print the figures as one JSON object");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
