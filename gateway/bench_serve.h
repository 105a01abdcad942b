#pragma once
// A serving benchmark in the spirit of vLLM's benchmark_serving: closed-loop clients stream
// completions from an OpenAI-compatible server (`eesched serve`, or any other) at several
// concurrency levels, and the client side measures what users feel: request throughput, output
// tokens/s, time to first token (TTFT), time per output token after the first (TPOT) and the gaps
// between streamed chunks (ITL). Outputs have a fixed length (`eesched.ignore_eos`, which other
// servers ignore: their answers may then be shorter, and the token counts say so).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace eesched::gateway {

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8080";  // the server, without /v1
  std::string model;
  std::string api_key;
  std::vector<int> concurrency{1, 2, 4, 8, 16};
  int requests = 0;              // per level; 0: 4 x the level's concurrency, at least 8
  int64_t prompt_tokens = 64;    // about this many (calibrated against the server's usage count)
  int64_t output_tokens = 64;
  double timeout_s = 600;
  std::function<void(const std::string&)> progress;
};

struct BenchServeLevel {
  int concurrency = 0;
  int requests = 0, failed = 0;
  double duration_s = 0;
  double request_throughput = 0;     // requests/s
  double output_tokens_per_s = 0;
  double mean_prompt_tokens = 0, mean_output_tokens = 0;
  double ttft_ms_p50 = 0, ttft_ms_p99 = 0;
  double tpot_ms_p50 = 0, tpot_ms_p99 = 0;
  double itl_ms_p50 = 0, itl_ms_p99 = 0;
  std::string first_error;
};

// Throws std::runtime_error when the server cannot be reached or refuses the first request.
std::vector<BenchServeLevel> bench_serve(const BenchServeOptions& options);

// {"levels": [{"concurrency", "request_throughput", "output_tokens_per_s", "ttft_ms_p50", ...}]}
nlohmann::json to_json(const std::vector<BenchServeLevel>& levels);

}  // namespace eesched::gateway
