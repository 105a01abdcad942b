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

// "1,2,3" -> {1, 2, 3}; throws on anything else.
std::vector<int64_t> parse_id_list(const std::string& text);

// Adds --threads N (default 0 = all cores) to a subcommand.
void add_threads_option(CLI::App* cmd, int& threads);

// Human-readable count: 4.43M, 110.2M.
std::string human_count(double n);

}  // namespace eesched::tools
