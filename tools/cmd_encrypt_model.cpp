// eesched encrypt-model: transform a plaintext model with a key into an encrypted model directory.
#include <iostream>

#include <fmt/format.h>

#include "ee/key.h"
#include "ee/transform.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct EncryptArgs {
  std::string model, key, out;
  bool force = false;
  int threads = 0;
};

void run(const EncryptArgs& a) {
  runtime::set_threads(a.threads);
  const auto key = ee::Key::load(a.key);
  const auto r = ee::encrypt_model_dir(a.model, key, a.out, a.force);
  std::cout << fmt::format("wrote {}: {} parameters transformed in {:.2f} s under key {}", a.out,
                           human_count(static_cast<double>(r.parameters)), r.seconds, r.key_fingerprint)
            << std::endl;
}

}  // namespace

void register_encrypt_model(CLI::App& app) {
  auto args = std::make_shared<EncryptArgs>();
  auto* cmd = app.add_subcommand("encrypt-model", "write the EE-encrypted copy of a plaintext model");
  add_model_option(cmd, args->model, "plaintext model directory");
  add_key_option(cmd, args->key, "key file from `eesched keygen`");
  cmd->add_option("--out", args->out, "encrypted model directory to write")->required();
  cmd->add_flag("--force", args->force, "overwrite an existing model in --out");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
