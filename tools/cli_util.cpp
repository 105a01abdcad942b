#include "tools/cli_util.h"

#include "data/retention.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace eesched::tools {

std::string read_text_file(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) throw std::runtime_error("cannot read " + path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string read_api_key_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the API key file " + path.string());
  std::string key;
  std::getline(in, key);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  if (key.empty()) throw std::runtime_error("the API key file " + path.string() + " has an empty first line");
  return key;
}

std::vector<int64_t> parse_id_list(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    try {
      ids.push_back(std::stoll(item, &used));
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size()) throw std::runtime_error("not a token id: '" + item + "' (expected e.g. 1,2,3)");
  }
  if (ids.empty()) throw std::runtime_error("empty id list");
  return ids;
}

CLI::Option* add_model_option(CLI::App* cmd, std::string& dir, const std::string& description) {
  return cmd->add_option("--model", dir, description)->required()->check(CLI::ExistingDirectory);
}

CLI::Option* add_key_option(CLI::App* cmd, std::string& file, const std::string& description, bool optional) {
  auto* opt = cmd->add_option("--key", file, description)->check(CLI::ExistingFile);
  return optional ? opt : opt->required();
}

CLI::Option* add_retain_ids_option(CLI::App* cmd, std::string& value, const std::string& stored) {
  const CLI::Validator retention(
      [](std::string& text) -> std::string {
        try {
          data::parse_retention(text);
          return "";
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      "none|N|all");
  return cmd
      ->add_option("--retain-ids", value,
                   "how long " + stored +
                       " encrypted prompt, stop and answer ids: all (forever), none (only while a task is unfinished), or N "
                       "days after it ended (purged at start and hourly)")
      ->capture_default_str()
      ->check(retention);
}

void add_threads_option(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "intra-op threads (0 = all cores)")->default_val(0)->check(CLI::NonNegativeNumber);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

}  // namespace eesched::tools
