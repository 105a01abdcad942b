// eesched encrypt-model: transform a plaintext model with a key into an encrypted model directory,
// recording the quality of its lossy transforms (measured on the plaintext) in ee.json.
#include <spdlog/spdlog.h>

#include <chrono>
#include <iostream>

#include <fmt/format.h>

#include "accel/quality.h"
#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/ffn_stats.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/owner_quality.h"

namespace eesched::tools {
namespace {

struct EncryptArgs {
  std::string model, key, out, scheme = "permute";
  double noise = 0;
  bool force = false, no_quality = false, remeasure = false;
  OwnerQualityArgs owner;
  int threads = 0;
};

// DIR/quality.json, when measure-quality wrote it for this model as it is now: it covers every
// transform asked for and is not older than the weights or the FFN statistics it was measured
// with (a retrained model or new statistics make it stale). Two seconds of slack: a copy or a
// checkout writes the files of a directory in no particular order.
std::optional<data::QualityTable> reusable_quality(const std::filesystem::path& dir, const std::vector<std::string>& wanted) {
  auto table = accel::read_quality_file(dir);
  if (!table) return std::nullopt;
  const auto written = std::filesystem::last_write_time(dir / accel::kQualityFile);
  for (const auto* file : {"model.safetensors", runtime::kFfnStatsFile})
    if (std::filesystem::exists(dir / file) && std::filesystem::last_write_time(dir / file) > written + std::chrono::seconds(2)) {
      spdlog::info("{} is older than {}: measuring again", (dir / accel::kQualityFile).string(), file);
      return std::nullopt;
    }
  for (const auto& key : wanted)
    if (!table->count(key)) {
      spdlog::info("{} has no figure for {}: measuring again", (dir / accel::kQualityFile).string(), key);
      return std::nullopt;
    }
  return table;
}

void run(const EncryptArgs& a) {
  runtime::set_threads(a.threads);
  const std::filesystem::path dir(a.model);
  const auto key = ee::Key::load(a.key);
  const auto scheme = ee::make_scheme(a.scheme, a.noise);
  const auto wanted = a.owner.transforms.empty() ? accel::default_quality_transforms() : accel::parse_quality_transforms(a.owner.transforms);
  ee::check_encrypt_dirs(dir, a.out, a.force);  // before spending time measuring
  auto plain = runtime::LlamaModel::load(dir);

  ee::EncryptDirOptions options;
  options.force = a.force;
  if (a.no_quality) {
    spdlog::warn("--no-quality: ee.json records no quality, so lossy arms will serve no tolerant task");
  } else if (auto reused = a.remeasure ? std::nullopt : reusable_quality(dir, wanted)) {
    spdlog::info("quality: {} (measured by measure-quality)", (dir / accel::kQualityFile).string());
    options.quality = std::move(*reused);
  } else {
    const auto inputs = owner_inputs(dir, a.owner, plain.config().vocab_size);
    if (!inputs.heldout) {
      spdlog::warn("no quality measured ({}): lossy arms will serve no tolerant task", inputs.heldout_why);
    } else {
      bool calibrated_here = false;
      if (!inputs.calibration && !plain.has_ffn_stats()) spdlog::warn("calibration: {}", inputs.calibration_why);
      plain = calibrated(plain, inputs.calibration, a.owner, calibrated_here);
      options.quality = measure_owner_quality(plain, *inputs.heldout, a.owner);
    }
  }
  options.model = &plain;
  options.scheme = scheme;
  if (scheme.noise > 0)
    spdlog::warn("--noise {}: the encrypted model decrypts to a noised copy of this model (lossy; quality figures in ee.json are "
                 "the plaintext model's)", scheme.noise);
  const auto r = ee::encrypt_model_dir(dir, key, a.out, options);
  std::cout << fmt::format("wrote {}: {} parameters transformed in {:.2f} s under key {}; pruning statistics: {}; quality: {}", a.out,
                           human_count(static_cast<double>(r.parameters)), r.seconds, r.key_fingerprint,
                           plain.has_ffn_stats() ? "yes" : "none", quality_summary(options.quality))
            << std::endl;
}

}  // namespace

void register_encrypt_model(CLI::App& app) {
  auto args = std::make_shared<EncryptArgs>();
  auto* cmd = app.add_subcommand(
      "encrypt-model",
      "write the EE-encrypted copy of a plaintext model, with the quality of its lossy transforms in ee.json (reused from "
      "MODEL/quality.json when it is current and complete, else measured here; the plaintext directory is never written)");
  add_model_option(cmd, args->model, "plaintext model directory");
  add_key_option(cmd, args->key, "key file from `eesched keygen`");
  cmd->add_option("--out", args->out, "encrypted model directory to write")->required();
  cmd->add_flag("--force", args->force, "overwrite an existing model in --out");
  cmd->add_option("--scheme", args->scheme,
                  "permute (default: exact, bit for bit) or rotate (a dense secret rotation of the residual stream, norm weights "
                  "folded, head untied: exact up to float rounding; docs/ee.md has what each hides)")
      ->check(CLI::IsMember({"permute", "rotate"}))
      ->capture_default_str();
  cmd->add_option("--noise", args->noise,
                  "secret Gaussian noise on embedding and head rows, relative to each row's RMS (lossy; 0 = none)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  cmd->add_flag("--no-quality", args->no_quality, "record no quality (lossy arms then serve no tolerant task)");
  cmd->add_flag("--remeasure", args->remeasure, "measure the quality even when MODEL/quality.json is current");
  add_owner_quality_options(cmd, args->owner);
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
