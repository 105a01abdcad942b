#pragma once
// Small helpers shared by the subcommands.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace eesched::tools {

// Reads a whole file; throws std::runtime_error("cannot read PATH: reason").
std::string read_text_file(const std::filesystem::path& path);

// An API key file's secret: its first line, trailing whitespace dropped; a one-line error when
// the file cannot be read or the line is empty.
std::string read_api_key_file(const std::filesystem::path& path);

// "1,2,3" -> {1, 2, 3}; throws on anything else.
std::vector<int64_t> parse_id_list(const std::string& text);

// --model DIR: required, must be an existing directory. One definition so every subcommand
// refuses a missing model the same way.
CLI::Option* add_model_option(CLI::App* cmd, std::string& dir, const std::string& description);

// --key FILE: an existing EE key file (required unless `optional`).
CLI::Option* add_key_option(CLI::App* cmd, std::string& file, const std::string& description, bool optional = false);

// --retain-ids none|N|all (data/retention.h), validated with a one-line reason; `stored` says
// what keeps them ("the store keeps", "the run log (--db) keeps").
CLI::Option* add_retain_ids_option(CLI::App* cmd, std::string& value, const std::string& stored);

// Adds --threads N (default 0 = all cores) to a subcommand.
void add_threads_option(CLI::App* cmd, int& threads);

// Human-readable count: 4.43M, 110.2M.
std::string human_count(double n);

}  // namespace eesched::tools
