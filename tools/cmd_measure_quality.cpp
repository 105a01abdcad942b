// eesched measure-quality: the perplexity ratio and top-1 agreement of a model's lossy transforms
// on held-out text, recorded where workers and the sweep read it: DIR/quality.json for a
// plaintext model (with DIR/prune_stats.safetensors when the FFN statistics were measured here),
// ee.json (and the permuted prune_stats.safetensors) for an encrypted one, measured on its
// plaintext.
#include <spdlog/spdlog.h>

#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "accel/quality.h"
#include "ee/key.h"
#include "ee/manifest.h"
#include "ee/transform.h"
#include "runtime/ffn_stats.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/owner_quality.h"

namespace eesched::tools {
namespace {

struct MeasureQualityArgs {
  std::string model, plaintext, key, prune_scores = "activation";
  OwnerQualityArgs owner;
  bool json = false;
  int threads = 0;
};

// Whether two models hold the same weights, tensor for tensor (the FFN statistics aside).
bool same_weights(const runtime::LlamaModel& a, const runtime::LlamaModel& b) {
  const auto x = a.weights().named(), y = b.weights().named();
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i].first != y[i].first || !x[i].second.sizes().equals(y[i].second.sizes()) || !x[i].second.equal(y[i].second)) return false;
  return true;
}

void run(const MeasureQualityArgs& a) {
  runtime::set_threads(a.threads);
  if (!a.owner.transforms.empty()) accel::parse_quality_transforms(a.owner.transforms);  // refuse a bad list before any work
  const std::filesystem::path dir(a.model);
  const auto manifest = ee::Manifest::read(dir);
  if (manifest && a.plaintext.empty())
    throw std::runtime_error(dir.string() + " is encrypted: the owner measures on the plaintext (pass --plaintext PLAIN_DIR --key FILE)");
  if (!manifest && !a.plaintext.empty()) throw std::runtime_error("--plaintext is for an encrypted --model, and " + dir.string() + " has no ee.json");
  if (manifest && a.key.empty()) throw std::runtime_error("--plaintext needs --key: the FFN statistics are written in the encrypted order");
  const std::filesystem::path plain_dir = manifest ? std::filesystem::path(a.plaintext) : dir;
  if (manifest && ee::Manifest::read(plain_dir)) throw std::runtime_error("--plaintext " + plain_dir.string() + " is itself encrypted");
  const bool activation = a.prune_scores == "activation";

  auto plain = runtime::LlamaModel::load(plain_dir);
  // An encrypted directory: check it is PLAIN under this key before measuring anything.
  std::optional<ee::ModelSecrets> secrets;
  if (manifest) {
    const auto key = ee::Key::load(a.key);
    manifest->check_key(key);
    secrets = ee::derive_secrets(key, plain.config(), ee::model_fingerprint(plain));
    const runtime::LlamaModel expected(ee::encrypt_config(plain.config(), *secrets),
                                       ee::encrypt_weights(plain.weights(), plain.config(), *secrets));
    if (!same_weights(expected, runtime::LlamaModel::load(dir)))
      throw std::runtime_error(plain_dir.string() + " is not the plaintext of " + dir.string() + " under this key");
  }
  const auto inputs = owner_inputs(plain_dir, a.owner, plain.config().vocab_size);
  if (!inputs.heldout) throw std::runtime_error("no held-out ids: " + inputs.heldout_why);
  bool calibrated_here = false;
  if (activation) {
    if (!inputs.calibration && !plain.has_ffn_stats()) spdlog::warn("calibration: {}", inputs.calibration_why);
    plain = calibrated(plain, inputs.calibration, a.owner, calibrated_here);
  } else {
    plain = runtime::with_ffn_stats(plain, {});  // the workers' fallback, for comparison
  }

  const auto table = measure_owner_quality(plain, *inputs.heldout, a.owner);

  std::vector<std::string> wrote;
  if (!activation) {
    spdlog::info("--prune-scores weights: a comparison, nothing written");
  } else if (manifest) {
    // The encrypted directory's statistics are the ones its figures were measured with.
    const auto stats = runtime::ffn_stats_of(plain);
    if (!stats.empty()) {
      runtime::write_ffn_stats(dir / runtime::kFfnStatsFile, ee::encrypt_ffn_stats(stats, *secrets));
      wrote.push_back((dir / runtime::kFfnStatsFile).string());
    } else {
      std::filesystem::remove(dir / runtime::kFfnStatsFile);
    }
    auto m = *manifest;
    m.quality = table;
    m.write(dir);
    wrote.push_back((dir / "ee.json").string());
  } else {
    if (calibrated_here) {
      runtime::write_ffn_stats(dir / runtime::kFfnStatsFile, runtime::ffn_stats_of(plain));
      wrote.push_back((dir / runtime::kFfnStatsFile).string());
    } else if (!plain.has_ffn_stats()) {
      std::filesystem::remove(dir / runtime::kFfnStatsFile);  // --recalibrate without calibration text
    }
    accel::write_quality_file(dir, table);
    wrote.push_back((dir / accel::kQualityFile).string());
  }

  const std::string scores = activation && plain.has_ffn_stats() ? "activation" : "weights";
  if (a.json) {
    std::cout << nlohmann::json{{"model", a.model},
                                {"quality", data::quality_to_json(table)},
                                {"heldout_tokens", inputs.heldout->size()},
                                {"context", a.owner.context},
                                {"prune_scores", scores},
                                {"wrote", wrote}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("{}: {} held-out tokens, window {}; pruning scored by {}\n", a.model, inputs.heldout->size(),
                           a.owner.context, scores == "activation" ? "activation statistics" : "weight norms");
  std::cout << fmt::format("{:<14} {:>9} {:>14}\n", "transform", "ppl ratio", "top-1 agreement");
  for (const auto& key : accel::ordered_keys(table))
    std::cout << fmt::format("{:<14} {:>9.4f} {:>14.4f}\n", key, table.at(key).ppl_ratio, table.at(key).top1_agreement);
  for (const auto& path : wrote) std::cout << "wrote " << path << "\n";
  std::cout.flush();
}

}  // namespace

void register_measure_quality(CLI::App& app) {
  auto args = std::make_shared<MeasureQualityArgs>();
  auto* cmd = app.add_subcommand("measure-quality",
                                 "perplexity ratio and top-1 agreement of a model's lossy transforms on held-out text, recorded in "
                                 "the model directory (quality.json, or ee.json of an encrypted model)");
  add_model_option(cmd, args->model, "model directory: plaintext, or encrypted with --plaintext and --key");
  cmd->add_option("--plaintext", args->plaintext, "the plaintext of an encrypted --model, measured in its place")
      ->check(CLI::ExistingDirectory);
  add_key_option(cmd, args->key, "key the encrypted --model was made with (places its FFN statistics)", /*optional=*/true);
  cmd->add_option("--prune-scores", args->prune_scores,
                  "activation: score pruned neurons by calibration statistics (measured when the directory has none); "
                  "weights: by weight norms, as workers do without statistics (a comparison: writes nothing)")
      ->capture_default_str()
      ->check(CLI::IsMember({"activation", "weights"}));
  add_owner_quality_options(cmd, args->owner);
  cmd->add_flag("--json", args->json, "print {model, quality, heldout_tokens, context, prune_scores, wrote}");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
