// eesched bench-decode: prefill and batch-1 decode speed, and decode bandwidth as a fraction of
// the copy bandwidth measured in the same run; also what it took to get there (load time and the
// process's peak RSS once loaded, against the checkpoint's size on disk) and how much of each
// token's weight traffic is the LM head.
#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/arm.h"
#include "data/hardware.h"
#include "data/roofline.h"
#include "node/model_row.h"
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
  std::vector<int64_t> batches;
};

// The roofline's decoding step (data/roofline.h) for `batch` sequences on this machine, the
// figure the coordinator's queue model scales a batched task by (scheduler::batch_slowdown).
double roofline_step_ms(const runtime::LlamaModel& model, const data::HardwareProfile& hw, int64_t prompt, int64_t tokens,
                        int64_t batch) {
  const auto row = node::model_row("bench", "", model.config(), model.weight_bytes(), model.dtype_label(), false);
  data::TaskSpec spec;
  spec.prompt_tokens = prompt;
  spec.generation.max_new_tokens = tokens;
  spec.batch = batch;
  return data::estimate_roofline(spec, row, nullptr, hw, data::parse_arm("kv"), std::nullopt).step_ms;
}

// --batch: the step of each batch size against batch 1, measured and as the roofline predicts.
void print_batches(const runtime::LlamaModel& model, const BenchDecodeArgs& a, int threads) {
  runtime::DecodeBenchOptions o;
  o.prompt_tokens = a.prompt;
  o.new_tokens = a.tokens;
  const auto steps = runtime::bench_batch_steps(model, a.batches, o);
  const auto hw = data::load_or_measure_hardware({}, threads);
  const double base = steps.front().step_ms;
  const double base_roofline = roofline_step_ms(model, hw, a.prompt, a.tokens, steps.front().batch);
  nlohmann::json levels = nlohmann::json::array();
  if (!a.json)
    std::cout << fmt::format("{:>5} {:>10} {:>10} {:>14} {:>16}\n", "batch", "step ms", "tokens/s", "step x first", "roofline x first");
  for (const auto& s : steps) {
    const double predicted = roofline_step_ms(model, hw, a.prompt, a.tokens, s.batch) / base_roofline;
    if (a.json)
      levels.push_back({{"batch", s.batch}, {"step_ms", s.step_ms}, {"tokens_per_s", s.tokens_per_s},
                        {"step_ratio", s.step_ms / base}, {"roofline_step_ratio", predicted}});
    else
      std::cout << fmt::format("{:>5} {:>10.2f} {:>10.1f} {:>14.2f} {:>16.2f}\n", s.batch, s.step_ms, s.tokens_per_s, s.step_ms / base,
                               predicted);
  }
  if (a.json)
    std::cout << nlohmann::json{{"model", a.model}, {"threads", threads}, {"gflops", hw.gflops}, {"copy_gbps", hw.copy_gbps},
                                {"batches", levels}}
                     .dump()
              << std::endl;
}

// Bytes of the checkpoint's tensor files (one file or every shard).
double checkpoint_bytes(const std::filesystem::path& dir) {
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    if (entry.is_regular_file() && name.starts_with("model") && name.ends_with(".safetensors")) total += entry.file_size();
  }
  return total;
}

double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

// The LM head's share of the weights a decoding step streams, by weight count (every matrix
// of a layer once, plus the head): the same share of bytes when all are stored alike.
double head_share(const runtime::LlamaConfig& c) {
  const double hd = static_cast<double>(c.head_dim());
  const double attention = c.hidden_size * hd * (2.0 * c.num_attention_heads + 2.0 * c.num_key_value_heads);
  const double ffn = 3.0 * c.hidden_size * c.intermediate_size;
  const double head = static_cast<double>(c.vocab_size) * c.hidden_size;
  return head / (c.num_hidden_layers * (attention + ffn) + head);
}

void run(const BenchDecodeArgs& a) {
  const int threads = runtime::set_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  auto model = runtime::LlamaModel::load(a.model);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.batches.empty()) return print_batches(model, a, threads);
  const double rss_after_load = peak_rss_bytes(), on_disk = checkpoint_bytes(a.model);
  const double head = head_share(model.config());
  runtime::DecodeBenchOptions o;
  o.prompt_tokens = a.prompt;
  o.new_tokens = a.tokens;
  auto r = runtime::bench_decode(model, o);
  if (a.json) {
    std::cout << nlohmann::json{{"model", a.model},
                                {"threads", threads},
                                {"parameters", model.config().parameter_count()},
                                {"weight_bytes", r.weight_bytes},
                                {"dtype", model.dtype_label()},
                                {"checkpoint_bytes", on_disk},
                                {"load_s", load_s},
                                {"peak_rss_bytes_after_load", rss_after_load},
                                {"head_share", head},
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
  std::cout << fmt::format("model {} ({} parameters, {:.1f} MB of {} weights per token), {} threads, BLAS {}\n", a.model,
                           human_count(static_cast<double>(model.config().parameter_count())), r.weight_bytes / 1e6, model.dtype_label(), threads,
                           runtime::blas_backend())
            << fmt::format("load     {:>9.2f} s  ({:.2f} GB on disk; peak RSS once loaded {:.2f} GB)\n", load_s, on_disk / 1e9,
                           rss_after_load / 1e9)
            << fmt::format("LM head  {:>9.1f}% of the weights streamed per token\n", 100.0 * head)
            << fmt::format("prefill  {:>9.1f} tokens/s  ({} prompt tokens)\n", r.prefill_tokens_per_s, a.prompt)
            << fmt::format("decode   {:>9.1f} tokens/s  ({:.2f} ms/token, batch 1, {} tokens)\n", r.decode_tokens_per_s,
                           r.decode_ms_per_token, a.tokens)
            << fmt::format("stream   {:>9.2f} GB/s of weights = {:.0f}% of copy bandwidth {:.2f} GB/s ({} gemv)\n",
                           r.decode_gb_per_s, 100.0 * r.roofline_fraction, r.copy_gb_per_s, runtime::gemv_kernel())
            ;
  if (r.blas_decode_ms_per_token > 0)
    std::cout << fmt::format("vs BLAS  {:>9.1f} tokens/s with OpenBLAS sgemv = {:.0f}% of copy bandwidth; gemv speedup {:.2f}x\n",
                             1000.0 / r.blas_decode_ms_per_token, 100.0 * r.blas_roofline_fraction,
                             r.blas_decode_ms_per_token / r.decode_ms_per_token);
  else
    std::cout << fmt::format("vs BLAS        n/a  (BLAS sgemv takes f32 weights; these are {})\n", model.dtype_label());
}

}  // namespace

void register_bench_decode(CLI::App& app) {
  auto args = std::make_shared<BenchDecodeArgs>();
  auto* cmd = app.add_subcommand("bench-decode", "measure prefill/decode speed against the memory-bandwidth roofline");
  add_model_option(cmd, args->model, "model directory");
  cmd->add_option("--tokens", args->tokens, "tokens to decode")->capture_default_str()->check(CLI::Range(2, 100000));
  cmd->add_option("--prompt-tokens", args->prompt, "prompt length for prefill")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--json", args->json, "print the figures as one JSON object");
  cmd->add_option("--batch", args->batches,
                  "instead: the decoding step of each of these batch sizes (comma-separated, 1..16) against the first, "
                  "measured and as the roofline predicts (what the coordinator's queue model assumes)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{16}));
  add_threads_option(cmd, args->threads);
  cmd->callback([args] { run(*args); });
}

}  // namespace eesched::tools
