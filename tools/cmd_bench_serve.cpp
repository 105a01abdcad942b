// eesched bench-serve: the serving benchmark (gateway/bench_serve.h) against a running
// OpenAI-compatible server, at several concurrency levels.
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gateway/bench_serve.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct BenchServeArgs {
  gateway::BenchServeOptions o;
  std::string concurrency = "1,2,4,8,16", api_key_file;
  bool json = false;
};

std::vector<int> parse_levels(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      std::size_t used = 0;
      const int c = std::stoi(item, &used);
      if (used != item.size() || c < 1 || c > 4096) throw std::invalid_argument(item);
      out.push_back(c);
    } catch (const std::exception&) {
      throw std::runtime_error("bench-serve: --concurrency takes a list like 1,2,4,8 (each 1..4096), got '" + text + "'");
    }
  }
  if (out.empty()) throw std::runtime_error("bench-serve: --concurrency is empty");
  return out;
}

void run(BenchServeArgs& a) {
  a.o.concurrency = parse_levels(a.concurrency);
  if (!a.api_key_file.empty()) a.o.api_key = read_api_key_file(a.api_key_file);
  a.o.progress = [](const std::string& s) { spdlog::info("bench-serve: {}", s); };
  const auto levels = gateway::bench_serve(a.o);
  if (a.json) {
    std::cout << gateway::to_json(levels).dump() << "\n";
    return;
  }
  std::cout << fmt::format("{:>5} {:>8} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "conc", "req/s", "out tok/s", "ok/total",
                           "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p50", "ITL p99");
  for (const auto& l : levels)
    std::cout << fmt::format("{:>5} {:>8.2f} {:>9.1f} {:>11} {:>7.1f}ms {:>7.1f}ms {:>7.2f}ms {:>7.2f}ms {:>7.2f}ms {:>7.2f}ms\n", l.concurrency,
                             l.request_throughput, l.output_tokens_per_s, fmt::format("{}/{}", l.requests - l.failed, l.requests),
                             l.ttft_ms_p50, l.ttft_ms_p99, l.tpot_ms_p50, l.tpot_ms_p99, l.itl_ms_p50, l.itl_ms_p99);
  if (levels.size() > 1 && levels.front().output_tokens_per_s > 0)
    std::cout << fmt::format("output tokens/s at concurrency {} = {:.2f}x concurrency {}\n", levels.back().concurrency,
                             levels.back().output_tokens_per_s / levels.front().output_tokens_per_s, levels.front().concurrency);
  for (const auto& l : levels)
    if (l.failed) std::cout << fmt::format("concurrency {}: {} failed, first: {}\n", l.concurrency, l.failed, l.first_error);
}

}  // namespace

void register_bench_serve(CLI::App& app) {
  auto a = std::make_shared<BenchServeArgs>();
  auto* cmd = app.add_subcommand("bench-serve", "serving benchmark against an OpenAI-compatible server: throughput, TTFT, TPOT, ITL per concurrency");
  cmd->add_option("--url", a->o.url, "the server (http://HOST:PORT)")->capture_default_str();
  cmd->add_option("--model", a->o.model, "model name as the server lists it")->required();
  cmd->add_option("--concurrency", a->concurrency, "comma-separated concurrency levels")->capture_default_str();
  cmd->add_option("--requests", a->o.requests, "requests per level (0: 4 x concurrency, at least 8)")->capture_default_str()->check(CLI::Range(0, 1000000));
  cmd->add_option("--prompt-tokens", a->o.prompt_tokens, "prompt length in tokens (about)")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--output-tokens", a->o.output_tokens, "tokens generated per request")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--api-key-file", a->api_key_file, "send 'Authorization: Bearer <first line>'")->check(CLI::ExistingFile);
  cmd->add_option("--timeout-s", a->o.timeout_s, "per request")->capture_default_str()->check(CLI::Range(1.0, 86400.0));
  cmd->add_flag("--json", a->json, "print {\"levels\": [{concurrency, request_throughput, output_tokens_per_s, ttft_ms_p50, ...}]}");
  cmd->callback([a] { run(*a); });
}

}  // namespace eesched::tools
