// eesched keygen: a fresh EE key for a model's vocabulary.
#include <iostream>

#include "ee/key.h"
#include "runtime/config.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct KeygenArgs {
  std::string model, out;
  bool force = false;
};

void run(const KeygenArgs& a) {
  const auto config = runtime::LlamaConfig::load(std::filesystem::path(a.model) / "config.json");
  const auto key = ee::Key::generate(config.vocab_size);
  key.save(a.out, a.force);
  std::cout << "wrote " << a.out << " (mode 0600): vocabulary " << key.vocab_size() << ", fingerprint " << key.fingerprint()
            << std::endl;
}

}  // namespace

void register_keygen(CLI::App& app) {
  auto args = std::make_shared<KeygenArgs>();
  auto* cmd = app.add_subcommand("keygen", "create a secret EE key for a model's vocabulary");
  add_model_option(cmd, args->model, "plaintext model directory (for its vocabulary size)");
  cmd->add_option("--out", args->out, "key file to write (*.eekey, mode 0600)")->required();
  cmd->add_flag("--force", args->force, "overwrite an existing key file");
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
