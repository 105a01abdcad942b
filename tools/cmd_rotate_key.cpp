// eesched rotate-key: a new EE key, and the owner's encrypted models re-encrypted under it from
// their encrypted directories and the old key (ee/rotate.h: the plaintext is not needed).
#include <chrono>
#include <iostream>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "ee/key.h"
#include "ee/manifest.h"
#include "ee/rotate.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct RotateArgs {
  std::string key, out_key, new_key, out;
  std::vector<std::string> models;
  bool force = false;
  int threads = 0;
};

std::string human_bytes(int64_t b) {
  const double x = static_cast<double>(b);
  if (x >= 1e9) return fmt::format("{:.2f} GB", x / 1e9);
  if (x >= 1e6) return fmt::format("{:.1f} MB", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.1f} kB", x / 1e3);
  return fmt::format("{} B", b);
}

std::filesystem::path base_name(const std::filesystem::path& dir) {
  auto p = std::filesystem::absolute(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename();
}

void run(const RotateArgs& a) {
  if (a.out_key.empty() == a.new_key.empty())
    throw std::runtime_error("give exactly one of --out-key FILE (a new key is made) and --new-key FILE (an existing key)");
  runtime::set_threads(a.threads);
  const auto old_key = ee::Key::load(a.key);
  // Everything checked before any work: each input encrypted under the old key, distinct names.
  std::map<std::filesystem::path, std::filesystem::path> plan;  // out dir -> in dir
  for (const auto& m : a.models) {
    const auto manifest = ee::Manifest::read(m);
    if (!manifest)
      throw std::runtime_error(m + " is not encrypted (no ee.json): encrypt the plaintext with the new key instead (eesched encrypt-model)");
    manifest->check_key(old_key);
    const auto out = std::filesystem::path(a.out) / base_name(m);
    if (!plan.emplace(out, m).second) throw std::runtime_error("two --model directories are named " + base_name(m).string());
    if (!a.force && std::filesystem::exists(out / "model.safetensors"))
      throw std::runtime_error(out.string() + " already holds a model (pass --force to overwrite)");
  }
  std::optional<ee::Key> made;
  if (!a.out_key.empty()) {
    made = ee::Key::generate(old_key.vocab_size());
    made->save(a.out_key, a.force);  // first: models under a key must never outlive the key
    std::cout << fmt::format("wrote {} (mode 0600): new key {}, vocabulary {} (the old key was {})\n", a.out_key, made->fingerprint(),
                             made->vocab_size(), old_key.fingerprint());
  } else {
    made = ee::Key::load(a.new_key);
    std::cout << fmt::format("new key {} from {} (the old key was {})\n", made->fingerprint(), a.new_key, old_key.fingerprint());
  }
  const auto t0 = std::chrono::steady_clock::now();
  int64_t bytes = 0;
  double transform = 0;
  for (const auto& m : a.models) {
    const auto out = std::filesystem::path(a.out) / base_name(m);
    const auto r = ee::rotate_model_dir(m, old_key, *made, out, a.force);
    bytes += r.bytes;
    transform += r.transform_seconds;
    std::cout << fmt::format("{} -> {}: {} parameters; load {:.2f} s, re-encryption {:.2f} s, save {:.2f} s; {} to ship\n", m,
                             out.string(), human_count(static_cast<double>(r.parameters)), r.load_seconds, r.transform_seconds,
                             r.save_seconds, human_bytes(r.bytes));
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << fmt::format("rotated {} model(s) in {:.2f} s ({:.2f} s re-encrypting, the rest loading and saving); bytes to ship: {} "
                           "({} bytes, the new encrypted directories)\n",
                           a.models.size(), wall, transform, human_bytes(bytes), bytes);
  std::cout << "serve them next to the old ones: start workers on the new directories, move clients to the new key, then drain "
               "the old key's workers (SIGTERM)\n";
}

}  // namespace

void register_rotate_key(CLI::App& app) {
  auto a = std::make_shared<RotateArgs>();
  auto* cmd = app.add_subcommand(
      "rotate-key",
      "make a new EE key and re-encrypt encrypted models under it, from their encrypted directories and the old key (no "
      "plaintext needed: the old vocabulary permutation is undone, the new key's transform composed on top); prints the "
      "re-encryption time and the bytes to ship");
  add_key_option(cmd, a->key, "the old key file: the one the --model directories were encrypted with");
  cmd->add_option("--model", a->models,
                  "encrypted model directory (ee.json under the old key); repeatable: a target and its draft must rotate "
                  "together, they share the vocabulary permutation")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--out", a->out, "directory to write the re-encrypted models into, one subdirectory per --model, named as it")
      ->required();
  cmd->add_option("--out-key", a->out_key, "new key file to create (*.eekey, mode 0600)");
  cmd->add_option("--new-key", a->new_key, "an existing key to rotate to instead (e.g. from keygen, or an earlier rotate-key)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--force", a->force, "overwrite an existing --out-key and models in --out");
  add_threads_option(cmd, a->threads);
  cmd->callback([a] { run(*a); });
}

}  // namespace eesched::tools
