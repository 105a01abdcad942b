// eesched bench-decode: prefill and batch-1 decode speed, and decode bandwidth as a fraction of
// the copy bandwidth measured in the same run.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/bench_decode.h"
#include "runtime/gemv.h"
#include "runtime/model.h"
#include "runtime/threads.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace eesched::tools {
namespace {

struct BenchDecodeArgs {
  std::string model;
  int64_t tokens = 64, prompt = 128;
  bool json = false;
  int threads = 0;
};

void run(const BenchDecodeArgs& a) {
  const int threads = runtime::set_threads(a.threads);
  auto model = runtime::LlamaModel::load(a.model);
  runtime::DecodeBenchOptions o;
  o.prompt_tokens = a.prompt;
  o.new_tokens = a.tokens;
  auto r = runtime::bench_decode(model, o);
  if (a.json) {
    std::cout << nlohmann::json{{"model", a.model},
                                {"threads", threads},
                                {"parameters", model.config().parameter_count()},
                                {"weight_bytes", r.weight_bytes},
                                {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                                {"decode_ms_per_token", r.decode_ms_per_token},
                                {"decode_tokens_per_s", r.decode_tokens_per_s},
                                {"decode_gb_per_s", r.decode_gb_per_s},
                                {"copy_gb_per_s", r.copy_gb_per_s},
                                {"roofline_fraction", r.roofline_fraction},
                                {"gemv_kernel", runtime::gemv_kernel()},
                                {"blas_decode_ms_per_token", r.blas_decode_ms_per_token},
                                {"blas_roofline_fraction", r.blas_roofline_fraction},
                                {"blas", runtime::blas_backend()}}
                     .dump()
              << std::endl;
    return;
  }
  std::cout << fmt::format("model {} ({} parameters, {:.1f} MB of f32 weights), {} threads, BLAS {}\n", a.model,
                           human_count(static_cast<double>(model.config().parameter_count())), r.weight_bytes / 1e6, threads,
                           runtime::blas_backend())
            << fmt::format("prefill  {:>9.1f} tokens/s  ({} prompt tokens)\n", r.prefill_tokens_per_s, a.prompt)
            << fmt::format("decode   {:>9.1f} tokens/s  ({:.2f} ms/token, batch 1, {} tokens)\n", r.decode_tokens_per_s,
                           r.decode_ms_per_token, a.tokens)
            << fmt::format("stream   {:>9.2f} GB/s of weights = {:.0f}% of copy bandwidth {:.2f} GB/s ({} gemv)\n",
                           r.decode_gb_per_s, 100.0 * r.roofline_fraction, r.copy_gb_per_s, runtime::gemv_kernel())
            << fmt::format("vs BLAS  {:>9.1f} tokens/s with OpenBLAS sgemv = {:.0f}% of copy bandwidth; gemv speedup {:.2f}x\n",
                           1000.0 / r.blas_decode_ms_per_token, 100.0 * r.blas_roofline_fraction,
                           r.blas_decode_ms_per_token / r.decode_ms_per_token);
}

}  // namespace

void register_bench_decode(CLI::App& app) {
  auto args = std::make_shared<BenchDecodeArgs>();
  auto* cmd = app.add_subcommand("bench-decode", "measure prefill/decode speed against the memory-bandwidth roofline");
  add_model_option(cmd, args->model, "model directory");
  cmd->add_option("--tokens", args->tokens, "tokens to decode")->capture_default_str()->check(CLI::Range(2, 100000));
  cmd->add_option("--prompt-tokens", args->prompt, "prompt length for prefill")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--json", args->json, "print the figures as one JSON object");
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
